//! Printing relay keys: the key list, one key, a newly created key with its secret, and the
//! environment that points Claude Code at relayd with a key.

use std::io;

use serde_json::json;
use shared::admin::KeyList;
use shared::key::{CreatedKey, RelayKey};
use shared::time::now_millis;

use super::{
    Printer, add_row, all_or, format_time, key_value, print_table, stdout, table, terminal_safe,
};
use crate::claude_env::{ClaudeEnv, compaction_point};

impl Printer {
    /// Relay keys, without secrets.
    pub fn key_list(self, list: &KeyList) -> io::Result<()> {
        if self.is_json() {
            return self.json(list);
        }
        if list.keys.is_empty() {
            return stdout("no relay keys; create one with `relayctl keys create --name NAME`\n");
        }
        let mut table = table(&[
            "ID", "NAME", "STATE", "MODELS", "ACCOUNTS", "LIMITS", "EXPIRES",
        ]);
        let now = now_millis();
        for k in &list.keys {
            add_row(
                &mut table,
                vec![
                    k.id.to_string(),
                    k.name.clone(),
                    k.refusal(now).unwrap_or("active").to_owned(),
                    all_or(&k.allowed_models),
                    all_or(&k.bound_accounts),
                    limits_text(k),
                    k.expires_at.map_or_else(|| "never".to_owned(), format_time),
                ],
            );
        }
        print_table(&table)
    }

    /// One relay key.
    pub fn key(self, key: &RelayKey) -> io::Result<()> {
        if self.is_json() {
            return self.json(key);
        }
        let rows = [
            ("id", key.id.to_string()),
            ("name", key.name.clone()),
            (
                "state",
                key.refusal(now_millis()).unwrap_or("active").to_owned(),
            ),
            ("allowed models", all_or(&key.allowed_models)),
            ("bound accounts", all_or(&key.bound_accounts)),
            ("limits", limits_text(key)),
            (
                "expires",
                key.expires_at
                    .map_or_else(|| "never".to_owned(), format_time),
            ),
            ("created", format_time(key.created_at)),
        ];
        print_table(&key_value(&rows))
    }

    /// A new key: its secret (the only time it is shown) and how to use it, with `window` —
    /// the variables that tell Claude Code the context window of the key's models, when known.
    pub fn created_key(
        self,
        created: &CreatedKey,
        server: &str,
        window: &[(&'static str, String)],
    ) -> io::Result<()> {
        let window_words: String = window
            .iter()
            .map(|(name, value)| format!("{name}={} ", shell_quote(value)))
            .collect();
        let anthropic = format!(
            "ANTHROPIC_BASE_URL={server} ANTHROPIC_AUTH_TOKEN={} {window_words}claude",
            created.secret
        );
        let openai = format!(
            "OPENAI_BASE_URL={server}/v1 OPENAI_API_KEY={}",
            created.secret
        );
        if self.is_json() {
            let env: serde_json::Map<String, serde_json::Value> = window
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!(value)))
                .collect();
            return self.json(&json!({
                "key": created.key,
                "secret": created.secret,
                "usage": { "anthropic": anthropic, "openai": openai },
                "claudeCodeEnv": env,
            }));
        }
        let window_note = match compaction_point(window) {
            Some(point) => format!(
                "  (the smallest context window of this key's models is known: Claude Code will compact at about {point} tokens)\n"
            ),
            None => "  (no context window is known for this key's models yet: relayctl accounts probe --all, or set contextWindow)\n".to_owned(),
        };
        stdout(&format!(
            "created key {} ({})\n\
             secret (shown only now; store it safely):\n  {}\n\n\
             Claude Code:\n  {anthropic}\n{window_note}\
             \x20 (for one model: eval \"$(relayctl env --model NAME --key SECRET)\")\n\
             OpenAI-compatible clients:\n  {openai}\n",
            created.key.name, created.key.id, created.secret
        ))
    }
}

impl Printer {
    /// The environment for Claude Code: `export` lines (shell-quoted) and notes on stderr, or
    /// the variables as one JSON object.
    pub fn claude_env(self, model: &str, env: &ClaudeEnv, unknown: &[&str]) -> io::Result<()> {
        if self.is_json() {
            let vars: serde_json::Map<String, serde_json::Value> = env
                .vars
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!(value)))
                .collect();
            return self.json(&json!({ "model": model, "env": vars, "unknownWindows": unknown }));
        }
        let mut text = String::new();
        for (name, value) in &env.vars {
            text.push_str(&format!("export {name}={}\n", shell_quote(value)));
        }
        stdout(&text)?;
        let note = match compaction_point(&env.vars) {
            Some(point) => format!(
                "# Claude Code will compact conversations at about {point} tokens for {model}"
            ),
            None => format!(
                "# no context window is known for {model}: run relayctl accounts probe --all, or set contextWindow"
            ),
        };
        let mut notes = vec![note];
        if !unknown.is_empty() {
            notes.push(format!(
                "# window unknown (left out) for: {}",
                unknown.join(", ")
            ));
        }
        eprintln!("{}", terminal_safe(&notes.join("\n")));
        Ok(())
    }
}

/// `value` as one POSIX shell word.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

fn limits_text(key: &RelayKey) -> String {
    let l = &key.limits;
    let mut parts = Vec::new();
    if let Some(n) = l.requests_per_minute {
        parts.push(format!("{n} rpm"));
    }
    if let Some(n) = l.tokens_per_day {
        parts.push(format!("{n} tokens/day"));
    }
    if let Some(n) = l.concurrency {
        parts.push(format!("{n} concurrent"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}
