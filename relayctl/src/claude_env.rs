//! The environment that points Claude Code at relayd, with the context window it must plan for.
//!
//! Claude Code assumes a 200k-token window for Claude model names and compacts a conversation
//! on its own only when it knows a smaller one. Facts about Claude Code 2.1.x this rule is built
//! on (read from its behaviour and its bundled code):
//! - `CLAUDE_CODE_AUTO_COMPACT_WINDOW` sets the window, but never below 100,000 tokens;
//! - it plans with that window minus its output reserve, min(its max output tokens, 20,000),
//!   and compacts at the smaller of 13,000 below that and `CLAUDE_AUTOCOMPACT_PCT_OVERRIDE`
//!   percent of it.
//!
//! So a window of 100k or more is passed as it is, and a smaller one as the 100k floor with a
//! percentage that puts the compaction point where the real window needs it: a quarter of the
//! window (at least `MIN_ANSWER` tokens) stays free for the next turn's tool results and the
//! answer. The output reserve is pinned with `CLAUDE_CODE_MAX_OUTPUT_TOKENS` so that the
//! arithmetic does not depend on Claude Code's per-model default.

/// Claude Code's floor for `CLAUDE_CODE_AUTO_COMPACT_WINDOW`.
pub const CLAUDE_CODE_MIN_WINDOW: u32 = 100_000;
/// The most Claude Code reserves for output when planning.
const CLAUDE_CODE_MAX_RESERVE: u32 = 20_000;
/// Tokens always left for the answer (relayd's default `context.min_output_tokens`).
const MIN_ANSWER: u32 = 1_024;

/// The variables for one model name served through relayd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaudeEnv {
    /// `name=value` pairs, in the order they are printed.
    pub vars: Vec<(&'static str, String)>,
}

impl ClaudeEnv {
    /// The environment for `model` at `server`, authenticated with `secret` (a placeholder
    /// when not given), for a smallest serving window of `window` tokens (when known).
    pub fn new(server: &str, secret: Option<&str>, model: &str, window: Option<u32>) -> Self {
        let mut vars = vec![
            (
                "ANTHROPIC_BASE_URL",
                server.trim_end_matches('/').to_owned(),
            ),
            (
                "ANTHROPIC_AUTH_TOKEN",
                secret.unwrap_or("<your relay key>").to_owned(),
            ),
            ("ANTHROPIC_MODEL", model.to_owned()),
            // Background work (titles, summaries of tool output) asks for a small model; the
            // same name keeps it on accounts that serve this one.
            ("ANTHROPIC_DEFAULT_HAIKU_MODEL", model.to_owned()),
        ];
        if let Some(window) = window {
            vars.extend(window_vars(window));
        }
        Self { vars }
    }
}

/// The variables that make Claude Code compact before a `window`-token upstream overflows.
pub fn window_vars(window: u32) -> Vec<(&'static str, String)> {
    if window >= CLAUDE_CODE_MIN_WINDOW {
        return vec![("CLAUDE_CODE_AUTO_COMPACT_WINDOW", window.to_string())];
    }
    let reserve = (window / 4).clamp(MIN_ANSWER, CLAUDE_CODE_MAX_RESERVE);
    let planned = CLAUDE_CODE_MIN_WINDOW - reserve;
    // Compact once the conversation reaches three quarters of the real window (the quarter
    // left takes the next turn's growth and the answer).
    let target = u64::from(window) - u64::from((window / 4).max(MIN_ANSWER));
    let percent = (target * 100 / u64::from(planned)).max(1);
    vec![
        (
            "CLAUDE_CODE_AUTO_COMPACT_WINDOW",
            CLAUDE_CODE_MIN_WINDOW.to_string(),
        ),
        ("CLAUDE_AUTOCOMPACT_PCT_OVERRIDE", percent.to_string()),
        ("CLAUDE_CODE_MAX_OUTPUT_TOKENS", reserve.to_string()),
    ]
}

/// The compaction point Claude Code derives from `vars` (for tests and for the note printed
/// next to the variables): the conversation size, in tokens, at which it compacts.
pub fn compaction_point(vars: &[(&'static str, String)]) -> Option<u64> {
    let get = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let window = get("CLAUDE_CODE_AUTO_COMPACT_WINDOW")?;
    let reserve = get("CLAUDE_CODE_MAX_OUTPUT_TOKENS")
        .unwrap_or(u64::from(CLAUDE_CODE_MAX_RESERVE))
        .min(u64::from(CLAUDE_CODE_MAX_RESERVE));
    let planned = window - reserve;
    let default = planned.saturating_sub(13_000);
    Some(match get("CLAUDE_AUTOCOMPACT_PCT_OVERRIDE") {
        Some(percent) => (planned * percent / 100).min(default),
        None => default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_window_is_passed_as_it_is() {
        let env = ClaudeEnv::new(
            "http://127.0.0.1:3000/",
            Some("rk-1"),
            "claude-x",
            Some(131_072),
        );
        assert!(
            env.vars
                .contains(&("ANTHROPIC_BASE_URL", "http://127.0.0.1:3000".into()))
        );
        assert!(
            env.vars
                .contains(&("CLAUDE_CODE_AUTO_COMPACT_WINDOW", "131072".into()))
        );
        assert_eq!(compaction_point(&env.vars), Some(131_072 - 20_000 - 13_000));
    }

    #[test]
    fn a_small_window_compacts_at_three_quarters_of_it() {
        for window in [8_192u32, 16_384, 32_768, 65_536] {
            let env = ClaudeEnv::new("http://h", None, "m", Some(window));
            let point = compaction_point(&env.vars).unwrap();
            let target = u64::from(window) * 3 / 4;
            assert!(
                point <= target && point + 1_000 >= target,
                "window {window}: compacts at {point}, wanted about {target}"
            );
        }
    }

    #[test]
    fn near_the_floor_claude_codes_own_buffer_compacts_earlier_still() {
        let env = ClaudeEnv::new("http://h", None, "m", Some(99_999));
        assert!(compaction_point(&env.vars).unwrap() <= 75_000);
    }

    #[test]
    fn no_window_no_compaction_variables() {
        let env = ClaudeEnv::new("http://h", None, "m", None);
        assert!(env.vars.iter().all(|(n, _)| !n.contains("COMPACT")));
        assert!(
            env.vars
                .contains(&("ANTHROPIC_AUTH_TOKEN", "<your relay key>".into()))
        );
    }
}
