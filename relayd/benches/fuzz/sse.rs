//! Fuzz target `sse`: `SseDecoder` alone, on byte streams cut into reads at arbitrary points,
//! against a reference decoder written straight from the event-stream rules.
//!
//! Streams are lines made of field names (`data`, `event`, `id`, `retry`, unknown ones, a comment
//! colon, none), values with every byte (invalid UTF-8 included), with and without the space
//! after the colon, ended by `\n`, `\r\n`, a lone `\r` or nothing; and raw bytes.
//!
//! Properties: nothing panics; the events are the same however the input is cut (one read, the
//! generated cuts, one byte at a time), and are the reference decoder's events.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use relayd::translate::{SseDecoder, SseEvent};

use crate::inputs::{Shown, Splits, pieces, raw_bytes, splits};

/// One generated case.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    stream: Shown,
    splits: Splits,
}

const FIELDS: &[&[u8]] = &[
    b"data", b"data", b"data", b"event", b"id", b"retry", b"", b"dat", b"data ", b"DATA", b"\xff",
];

const COLONS: &[&[u8]] = &[b":", b": ", b"", b"::"];

const VALUES: &[&[u8]] = &[
    b"",
    b"[DONE]",
    b"{\"choices\":[]}",
    b" leading space",
    b"a:b",
    b"\xc3\xa9",
    b"\xc3",
    b"\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xf0\x9f",
    b"\xff\xfe",
    b"message",
    b"error",
    b"\x00",
];

const ENDINGS: &[&[u8]] = &[
    b"\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"\r\n\r\n",
    b"\r\r",
    b"",
];

/// One line: field, colon, value, ending.
fn line() -> BoxedStrategy<Vec<u8>> {
    (
        select(FIELDS),
        select(COLONS),
        prop::collection::vec(select(VALUES), 0..3),
        select(ENDINGS),
    )
        .prop_map(|(field, colon, value, ending)| [field, colon, &value.concat(), ending].concat())
        .boxed()
}

fn stream() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(line(), 0..12).prop_map(|lines| lines.concat()),
        1 => raw_bytes(),
    ]
    .boxed()
}

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    (stream(), splits())
        .prop_map(|(stream, splits)| Case {
            stream: Shown(stream),
            splits,
        })
        .boxed()
}

/// Every event `reads` decode to, with the end of the stream after the last read.
fn decode(reads: &[&[u8]]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for read in reads {
        decoder.push(read);
        while let Some(event) = decoder.next_event() {
            events.push(event);
        }
    }
    decoder.finish();
    while let Some(event) = decoder.next_event() {
        events.push(event);
    }
    events
}

/// The lines of a whole stream as the event-stream rules split them (`\r\n`, `\n`, `\r`), plus
/// a last line without an ending.
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&bytes[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&bytes[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        lines.push(&bytes[start..]);
    }
    lines
}

/// How many lines `bytes` holds (a last line without an ending counts).
pub(crate) fn count_lines(bytes: &[u8]) -> usize {
    lines(bytes).len()
}

/// The reference: the WHATWG event-stream interpretation, applied to the whole stream at once,
/// with relayd's one leniency (an event not followed by a blank line is still dispatched at the
/// end of the stream).
fn reference(bytes: &[u8]) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let mut event_type: Option<String> = None;
    let mut data: Option<Vec<u8>> = None;
    let mut dispatch = |event_type: &mut Option<String>, data: &mut Option<Vec<u8>>| {
        let name = event_type.take();
        if let Some(data) = data.take() {
            events.push(SseEvent {
                event: name.unwrap_or_else(|| "message".to_owned()),
                data: String::from_utf8_lossy(&data).into_owned(),
            });
        }
    };
    for line in lines(bytes) {
        if line.is_empty() {
            dispatch(&mut event_type, &mut data);
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            // Each data line adds its value and a newline; the last newline is removed when the
            // event is dispatched: values joined with newlines.
            b"data" => match &mut data {
                Some(buffer) => {
                    buffer.push(b'\n');
                    buffer.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            },
            b"event" => event_type = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
    dispatch(&mut event_type, &mut data);
    events
}

/// Checks every property on one case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    let bytes = &case.stream.0;
    let expected = reference(bytes);
    prop_assert_eq!(&decode(&[bytes]), &expected, "one read");
    prop_assert_eq!(
        &decode(&pieces(bytes, &case.splits)),
        &expected,
        "cut into reads"
    );
    if bytes.len() <= 256 {
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&decode(&bytewise), &expected, "one byte at a time");
    }
    Ok(())
}
