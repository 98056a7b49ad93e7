//! Tests of the text output: times, durations, reset messages and terminal escaping.

use shared::admin::{AccountState, CooldownReset};

use super::accounts::cooldown_reset_text;
use super::*;

#[test]
fn times_are_utc_dates() {
    assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
    assert_eq!(format_time(1_709_210_096_000), "2024-02-29 12:34 UTC");
}

#[test]
fn a_reset_says_what_ended_and_whether_the_account_routes() {
    let reset = |ended, state| CooldownReset {
        id: shared::account::AccountId("acc_1".into()),
        name: "box".into(),
        ended,
        state,
    };
    let ended = Some(shared::admin::EndedCooldown {
        until: 1_709_210_096_000,
        reason: "HTTP 429".into(),
    });
    assert_eq!(
        cooldown_reset_text(&reset(ended, AccountState::Ok)),
        "account box: cooldown ended (it was cooling down until 2024-02-29 12:34 UTC: HTTP 429)\n"
    );
    let text = cooldown_reset_text(&reset(None, AccountState::Disabled));
    assert!(
        text.starts_with("account box: was not cooling down\n"),
        "{text}"
    );
    assert!(text.contains("relayctl accounts enable box"), "{text}");
}

#[test]
fn terminal_safe_escapes_what_a_terminal_acts_on() {
    assert!(matches!(terminal_safe("plain\nlines ✓"), Cow::Borrowed(_)));
    assert_eq!(
        terminal_safe("a\u{1b}[2Jb\rc\u{7}d\te\u{9b}f\u{7f}g\u{202e}h"),
        "a\\u{1b}[2Jb\\rc\\u{7}d\\te\\u{9b}f\\u{7f}g\\u{202e}h"
    );
}

#[test]
fn durations_are_short() {
    assert_eq!(format_duration(59), "0m 59s");
    assert_eq!(format_duration(3_661), "1h 1m");
    assert_eq!(format_duration(90_061), "1d 1h 1m");
}
