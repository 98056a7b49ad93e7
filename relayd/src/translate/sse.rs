//! Incremental Server-Sent Events decoding over arbitrary byte chunks.
//!
//! Hand-written rather than a crate: the proxy needs a plain `push(&[u8])` API usable from both the
//! translating path and the byte-forwarding tap ([`LineSplitter`] is shared with
//! [`super::OpenAiStreamTap`], which must see each line's exact bytes to forward them unchanged), and
//! the usual crates are tied to a `Stream` of `Bytes` or to `reqwest` and would add a dependency for
//! ~150 lines. The decoder follows the WHATWG event-stream rules: CRLF, LF and lone CR line ends,
//! `field: value` with one optional space, multi-line `data`, `:` comments, dispatch on a blank line.
//!
//! Complexity: every byte is scanned once. The buffer keeps only the unfinished line, and the scan
//! resumes where the last one stopped, so a line of many megabytes arriving in small reads stays
//! linear. Lines are split on bytes (`\r`/`\n` never occur inside a multi-byte UTF-8 sequence), and
//! text is only decoded once a line is complete, so characters split across reads are safe.

use std::ops::Range;

/// Splits a byte stream into lines, keeping each line's terminator length.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Start of the first unconsumed line.
    start: usize,
    /// Where the search for the next line end resumes (≥ `start`).
    scan: usize,
}

/// One line found by [`LineSplitter`], as ranges into its buffer.
#[derive(Debug, Clone)]
pub struct Line {
    /// The line without its terminator.
    pub content: Range<usize>,
    /// The line including its terminator.
    pub whole: Range<usize>,
}

impl LineSplitter {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop consumed lines before growing; what remains is one unfinished line (or a few short
        // ones), so this copy is bounded by the data not yet consumed.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line. With `at_eof`, a final line without terminator counts too (and a
    /// trailing lone `\r` is taken as a line end rather than waiting for a `\n`).
    pub fn next_line(&mut self, at_eof: bool) -> Option<Line> {
        let rest = &self.buf[self.scan..];
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(offset) => {
                let end = self.scan + offset;
                let term = if self.buf[end] == b'\r' {
                    match self.buf.get(end + 1).copied() {
                        Some(b'\n') => 2,
                        Some(_) => 1,
                        // A CR at the end of the buffer may be the first half of a CRLF.
                        None if at_eof => 1,
                        None => {
                            self.scan = end;
                            return None;
                        }
                    }
                } else {
                    1
                };
                let line = Line {
                    content: self.start..end,
                    whole: self.start..end + term,
                };
                self.start = end + term;
                self.scan = self.start;
                Some(line)
            }
            None => {
                self.scan = self.buf.len();
                if at_eof && self.start < self.buf.len() {
                    let line = Line {
                        content: self.start..self.buf.len(),
                        whole: self.start..self.buf.len(),
                    };
                    self.start = self.buf.len();
                    Some(line)
                } else {
                    None
                }
            }
        }
    }

    /// Bytes buffered but not yet returned as a line: the unfinished line, which a caller bounds
    /// so that an upstream sending one endless line cannot take all memory.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The bytes of a range returned by [`LineSplitter::next_line`] (valid until the next push).
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }
}

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `"message"` when absent (as the SSE spec says).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental SSE decoder: [`SseDecoder::push`] bytes as they arrive, then drain
/// [`SseDecoder::next_event`] until it returns `None`.
#[derive(Debug, Default)]
pub struct SseDecoder {
    lines: LineSplitter,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    eof: bool,
}

impl SseDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
    }

    /// The next complete event, if one is buffered.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(line) = self.lines.next_line(self.eof) {
            let content = line.content;
            if content.is_empty() {
                if let Some(event) = self.dispatch() {
                    return Some(event);
                }
                continue;
            }
            let bytes = self.lines.bytes(content);
            if bytes[0] == b':' {
                continue; // comment (keep-alive)
            }
            let (field, value) = match bytes.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &bytes[colon + 1..];
                    (&bytes[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (bytes, &b""[..]),
            };
            match field {
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {} // id, retry and unknown fields do not matter to us
            }
        }
        if self.eof { self.dispatch() } else { None }
    }

    /// Bytes held for events not yet complete (the unfinished line and the `data` collected for
    /// the current event), for the caller to bound.
    pub fn pending_bytes(&self) -> usize {
        self.lines.pending_bytes() + self.data.len()
    }

    /// The stream ended: makes a last event without a trailing blank line available to
    /// [`SseDecoder::next_event`] (lenient: upstreams that close right after their last `data:` line
    /// still get it delivered).
    pub fn finish(&mut self) {
        self.eof = true;
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data);
        let data = String::from_utf8(data)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Some(SseEvent {
            event: event.unwrap_or_else(|| "message".to_owned()),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            decoder.push(chunk);
            while let Some(e) = decoder.next_event() {
                events.push(e);
            }
        }
        decoder.finish();
        while let Some(e) = decoder.next_event() {
            events.push(e);
        }
        events
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn line_endings_comments_multiline_any_split() {
        let input = b": keep-alive\r\ndata: a\r\n\r\nevent: x\ndata:b\ndata:  c\n\ndata: d\r\rid: 1\nretry: 5\ndata\n\n";
        let expected = vec![
            ev("message", "a"),
            ev("x", "b\n c"),
            ev("message", "d"),
            ev("message", ""),
        ];
        for piece in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input, piece),
                expected,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn utf8_split_across_reads() {
        let input = "data: {\"t\":\"héllo 🦀\"}\n\n".as_bytes();
        let crab = input.iter().position(|&b| b == 0xf0).unwrap_or(0);
        let mut decoder = SseDecoder::new();
        decoder.push(&input[..crab + 2]);
        assert_eq!(decoder.next_event(), None);
        decoder.push(&input[crab + 2..]);
        assert_eq!(
            decoder.next_event(),
            Some(ev("message", "{\"t\":\"héllo 🦀\"}"))
        );
    }

    #[test]
    fn last_event_without_blank_line_is_delivered_at_eof() {
        assert_eq!(
            decode_in_pieces(b"data: [DONE]", 3),
            vec![ev("message", "[DONE]")]
        );
        assert_eq!(
            decode_in_pieces(b"data: x\r", 100),
            vec![ev("message", "x")]
        );
    }

    #[test]
    fn huge_line_in_small_reads_is_linear() {
        // 8 MiB in 1 KiB reads: quadratic rescanning would take minutes; linear takes milliseconds.
        let payload = "a".repeat(8 << 20);
        let input = format!("data: {payload}\n\n");
        let started = std::time::Instant::now();
        let events = decode_in_pieces(input.as_bytes(), 1024);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), payload.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
