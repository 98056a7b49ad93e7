//! Timestamps: milliseconds since the Unix epoch, UTC. One integer type everywhere keeps the
//! stores, the admin API and the CLI free of time-zone and format questions. Calendar arithmetic
//! and RFC 3339 parsing are the `time` crate's; this module only fixes our formats and the
//! time arguments the CLI and the admin API accept.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMillis = i64;

/// The current time as [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One hour in milliseconds.
pub const HOUR_MS: UnixMillis = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: UnixMillis = 86_400_000;

/// Why a time argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a time: expected Unix milliseconds, an RFC 3339 time \
     (2025-01-31T12:00:00Z or 2025-01-31), or an age such as 30m, 24h, 7d or 2w"
)]
pub struct TimeSpecError {
    /// What was given.
    pub input: String,
}

/// Parses a time given on a command line or in a query string, relative to `now`:
/// Unix milliseconds (`1735689600000`), RFC 3339 (`2025-01-01T00:00:00Z`, offsets and fractions
/// allowed, or a bare date meaning its UTC midnight), or an age before `now` (`30m`, `24h`, `7d`,
/// `2w`).
pub fn parse_time_spec(input: &str, now: UnixMillis) -> Result<UnixMillis, TimeSpecError> {
    let s = input.trim();
    let err = || TimeSpecError {
        input: input.to_owned(),
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| err());
    }
    if let Some(unit) = s.chars().last().filter(char::is_ascii_alphabetic) {
        let digits = &s[..s.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = digits.parse().map_err(|_| err())?;
            let unit_ms = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => HOUR_MS,
                'd' => DAY_MS,
                'w' => 7 * DAY_MS,
                _ => return Err(err()),
            };
            return n
                .checked_mul(unit_ms)
                .and_then(|age| now.checked_sub(age))
                .ok_or_else(err);
        }
    }
    parse_rfc3339(s).ok_or_else(err)
}

/// Parses an RFC 3339 timestamp (`2025-01-31T12:00:00Z`, `2025-01-31T13:00:00.250+01:00`) or a bare
/// date (`2025-01-31`, UTC midnight). `t`, `z` and a space separator are accepted too; digits
/// past the millisecond are dropped. A leap second (`23:59:60` at the end of a UTC month) reads
/// as the last millisecond before the next minute, as the `time` crate reads it.
pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    let full;
    let text = match s.as_bytes().get(10) {
        // A bare date is the start of its UTC day.
        None => {
            full = format!("{s}T00:00:00Z");
            &full
        }
        // RFC 3339 allows any separator; we keep to the usual three.
        Some(b'T' | b't' | b' ') => s,
        Some(_) => return None,
    };
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC; milliseconds dropped).
pub fn format_rfc3339(ms: UnixMillis) -> String {
    let at = utc(ms);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        format_date(ms),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `YYYY-MM-DD` of the UTC day `ms` falls in.
pub fn format_date(ms: UnixMillis) -> String {
    let date = utc(ms).date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The start of the UTC hour `ms` falls in.
pub fn hour_start(ms: UnixMillis) -> UnixMillis {
    ms - ms.rem_euclid(HOUR_MS)
}

/// The start of the UTC day `ms` falls in.
pub fn day_start(ms: UnixMillis) -> UnixMillis {
    ms - ms.rem_euclid(DAY_MS)
}

/// The date `(year, month, day)` of a day number since 1970-01-01 (proleptic Gregorian), for
/// callers that format a time their own way. Clamped to the years -9999..=9999.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let julian = days.saturating_add(UNIX_EPOCH_JULIAN_DAY);
    let date = i32::try_from(julian)
        .ok()
        .and_then(|day| Date::from_julian_day(day).ok())
        .unwrap_or(if julian < 0 { Date::MIN } else { Date::MAX });
    (
        i64::from(date.year()),
        i64::from(u8::from(date.month())),
        i64::from(date.day()),
    )
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// `ms` as a UTC date and time, clamped to the years -9999..=9999 the `time` crate covers.
fn utc(ms: UnixMillis) -> OffsetDateTime {
    let secs = ms.div_euclid(1000);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        PrimitiveDateTime::MIN.assume_utc()
    } else {
        PrimitiveDateTime::MAX.assume_utc()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_honours_offsets() {
        let t = parse_rfc3339("2024-02-29T12:34:56Z").unwrap();
        assert_eq!(t, 1_709_210_096_000);
        assert_eq!(format_rfc3339(t), "2024-02-29T12:34:56Z");
        assert_eq!(parse_rfc3339("2024-02-29T13:34:56.5+01:00"), Some(t + 500));
        assert_eq!(parse_rfc3339("2024-02-29T12:04:56-00:30"), Some(t));
        assert_eq!(parse_rfc3339("1970-01-01"), Some(0));
        assert_eq!(format_date(t), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01X00:00:00Z",
            "2024-01-01T00:00:00Z ",
            "2024-01-01T00:00:00+24:00",
            "24-01-01",
            "yesterday",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_specs_accept_millis_dates_and_ages() {
        let now = 10 * DAY_MS;
        assert_eq!(parse_time_spec("1234", now), Ok(1234));
        assert_eq!(parse_time_spec("24h", now), Ok(9 * DAY_MS));
        assert_eq!(parse_time_spec("7d", now), Ok(3 * DAY_MS));
        assert_eq!(parse_time_spec("1w", now), Ok(3 * DAY_MS));
        assert_eq!(parse_time_spec("30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_time_spec("1970-01-02", now), Ok(DAY_MS));
        for bad in ["7x", "h", "-5", "soon", "99999999999999999999d"] {
            let err = parse_time_spec(bad, now).unwrap_err();
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn periods_start_on_utc_boundaries() {
        let t = parse_rfc3339("2024-02-29T12:34:56Z").unwrap();
        assert_eq!(format_rfc3339(hour_start(t)), "2024-02-29T12:00:00Z");
        assert_eq!(format_rfc3339(day_start(t)), "2024-02-29T00:00:00Z");
        assert_eq!(day_start(-1), -DAY_MS);
    }

    #[test]
    fn dates_before_the_epoch_and_far_ahead_are_proleptic_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z"), Some(-1));
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(parse_rfc3339("2000-03-01t00:00:00z"), Some(11_017 * DAY_MS));
        assert_eq!(parse_rfc3339("2000-03-01 00:00:00Z"), Some(11_017 * DAY_MS));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z").map(|t| t - 1)
        );
    }
}
