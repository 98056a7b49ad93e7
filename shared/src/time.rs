//! Timestamps: milliseconds since the Unix epoch, UTC. One integer type everywhere keeps the
//! stores, the admin API and the CLI free of time-zone and format questions.

use std::time::{SystemTime, UNIX_EPOCH};

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
/// date (`2025-01-31`, UTC midnight). `t`, `z` and a space separator are accepted too.
pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date_ms = days_from_civil(year, month, day) * DAY_MS;
    if b.len() == 10 {
        return Some(date_ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // 60 allows a leap second, folded into the next one as Unix time does.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Only the first three digits matter for milliseconds.
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10_i64.pow(3 - u32::try_from(frac.len()).ok()?);
    }
    let offset_ms = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = (oh * 60 + om) * 60_000;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    Some(date_ms + ((hour * 60 + minute) * 60 + second) * 1000 + millis - offset_ms)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC; milliseconds dropped).
pub fn format_rfc3339(ms: UnixMillis) -> String {
    let (date, rem) = split_day(ms);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / HOUR_MS,
        rem / 60_000 % 60,
        rem / 1000 % 60
    )
}

/// `YYYY-MM-DD` of the UTC day `ms` falls in.
pub fn format_date(ms: UnixMillis) -> String {
    split_day(ms).0
}

/// The start of the UTC hour `ms` falls in.
pub fn hour_start(ms: UnixMillis) -> UnixMillis {
    ms - ms.rem_euclid(HOUR_MS)
}

/// The start of the UTC day `ms` falls in.
pub fn day_start(ms: UnixMillis) -> UnixMillis {
    ms - ms.rem_euclid(DAY_MS)
}

fn split_day(ms: UnixMillis) -> (String, i64) {
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY_MS));
    (
        format!("{year:04}-{month:02}-{day:02}"),
        ms.rem_euclid(DAY_MS),
    )
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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
}
