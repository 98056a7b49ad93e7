//! The read-only pages: overview, accounts, routing table and keys, rendered from the admin
//! API's own data (the live snapshot, the routing table, the key registry).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use shared::admin::{AccountState, LiveState, Snapshot};
use shared::time::{UnixMillis, format_rfc3339};

use super::html::{duration_text, esc};

/// The overview's request rate: the counters at the previous overview read, so a rate is the
/// difference of two reads over the time between them (nothing is sampled in the background).
#[derive(Debug, Default)]
pub(super) struct RateSampler {
    last: Mutex<Option<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: UnixMillis,
    requests: u64,
    errors: u64,
}

/// Requests per second and the share of them that failed, over `seconds`.
struct Rate {
    per_second: f64,
    error_share: Option<f64>,
    seconds: f64,
}

/// Reads closer than this reuse the older baseline, so quick reloads do not shrink the window
/// to nothing; reads further apart than the longest window start over.
const SHORTEST_WINDOW_MS: i64 = 1000;
const LONGEST_WINDOW_MS: i64 = 600_000;

impl RateSampler {
    fn rate(&self, now: Sample) -> Option<Rate> {
        // A short critical section, never held across an await.
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = *last;
        let window = previous.map(|p| now.at - p.at);
        if window.is_none_or(|w| w >= SHORTEST_WINDOW_MS) {
            *last = Some(now);
        }
        let previous = previous?;
        let millis = now.at - previous.at;
        if !(SHORTEST_WINDOW_MS..=LONGEST_WINDOW_MS).contains(&millis) {
            return None;
        }
        // Counters restart with relayd; a smaller one is a fresh start, not a negative rate.
        let requests = now.requests.checked_sub(previous.requests)?;
        let errors = now.errors.saturating_sub(previous.errors);
        let seconds = millis as f64 / 1000.0;
        Some(Rate {
            per_second: requests as f64 / seconds,
            error_share: (requests > 0).then(|| errors as f64 / requests as f64),
            seconds,
        })
    }
}

/// `ok`, `full`, `disabled`, `cooling 12s (HTTP 500)`, and its CSS class suffix.
fn live_state(state: &LiveState, now: UnixMillis) -> (String, &'static str) {
    match state {
        LiveState::Ok => ("ok".to_owned(), "ok"),
        LiveState::Full => ("full".to_owned(), "full"),
        LiveState::Disabled => ("disabled".to_owned(), "disabled"),
        LiveState::CoolingDown { until, reason } => {
            let left = u64::try_from((until - now).max(0))
                .unwrap_or(0)
                .div_ceil(1000);
            (
                format!("cooling {} ({reason})", duration_text(left)),
                "cooling",
            )
        }
    }
}

fn card(out: &mut String, id: &str, label: &str, value: &str) {
    let _ = write!(
        out,
        "<div class=\"card\" id=\"{id}\"><div class=\"label\">{label}</div>\
         <div class=\"value\">{}</div></div>",
        esc(value)
    );
}

/// The overview: the process, the request rate and error share, and account health counts.
pub(super) fn overview(snapshot: &Snapshot, rates: &RateSampler) -> String {
    let s = &snapshot.server;
    let requests: u64 = snapshot.accounts.iter().map(|a| a.requests).sum();
    let errors: u64 = snapshot.accounts.iter().map(|a| a.errors).sum();
    let rate = rates.rate(Sample {
        at: snapshot.at,
        requests,
        errors,
    });
    let mut out = String::from("<div class=\"cards\">");
    card(&mut out, "version", "Version", &s.version);
    card(
        &mut out,
        "uptime",
        "Uptime",
        &duration_text(s.uptime_seconds),
    );
    card(&mut out, "store", "Store", &s.store);
    card(&mut out, "in-flight", "In flight", &s.in_flight.to_string());
    card(&mut out, "queued", "Queued", &s.queue_depth.to_string());
    let (per_second, error_rate) = match &rate {
        Some(r) => (
            format!("{:.2}", r.per_second),
            r.error_share
                .map_or_else(|| "-".to_owned(), |e| format!("{:.1}%", e * 100.0)),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    };
    card(&mut out, "requests-per-second", "Requests/s", &per_second);
    card(&mut out, "error-rate", "Error rate", &error_rate);
    out.push_str("</div>");
    let _ = write!(
        out,
        "<p class=\"hint\">{}</p>",
        esc(&match &rate {
            Some(r) => format!(
                "Rates over the last {:.0}s: the difference of this read of the counters and \
                 the previous one.",
                r.seconds
            ),
            None => format!(
                "Rates need two reads at least a second apart; reload. Since start: {requests} \
                 requests, {errors} not answered with a 2xx."
            ),
        })
    );
    let mut counts: [(&str, usize); 4] = [("ok", 0), ("full", 0), ("cooling", 0), ("disabled", 0)];
    for a in &snapshot.accounts {
        let (_, class) = live_state(&a.state, snapshot.at);
        if let Some(c) = counts.iter_mut().find(|(name, _)| *name == class) {
            c.1 += 1;
        }
    }
    out.push_str("<h2>Accounts</h2><div class=\"cards\">");
    for (name, n) in counts {
        card(&mut out, &format!("accounts-{name}"), name, &n.to_string());
    }
    out.push_str("</div>");
    // The table too: which upstreams are up and how loaded is what the overview is for.
    if !snapshot.accounts.is_empty() {
        out.push_str("<div class=\"spaced\">");
        out.push_str(&accounts(snapshot));
        out.push_str("</div>");
    }
    let _ = write!(
        out,
        "<p class=\"hint\">{} accounts, {} relay keys in use. Snapshot taken {}.</p>",
        snapshot.accounts.len(),
        snapshot.keys.len(),
        esc(&format_rfc3339(snapshot.at))
    );
    out
}

/// The accounts table: state, slots, profile and counters since start.
pub(super) fn accounts(snapshot: &Snapshot) -> String {
    if snapshot.accounts.is_empty() {
        return "<p>No accounts yet: add one with <code>relayctl add-model</code>.</p>".to_owned();
    }
    let mut out = String::from(
        "<table class=\"data\" id=\"accounts\"><thead><tr><th>Account</th><th>State</th>\
         <th>In flight</th><th>Priority</th><th>Server</th><th>Window</th><th>Requests</th>\
         <th>Errors</th><th>Failed attempts</th><th>Tokens in / out</th><th>p50 TTFB</th>\
         </tr></thead><tbody>",
    );
    for a in &snapshot.accounts {
        let (state, class) = live_state(&a.state, snapshot.at);
        let p50 = a
            .ttfb
            .quantile(&snapshot.ttfb_bounds, 0.5)
            .map_or_else(|| "-".to_owned(), |s| format!("{:.0} ms", s * 1000.0));
        let _ = write!(
            out,
            "<tr data-account=\"{name}\"><td>{name}</td>\
             <td class=\"state state-{class}\" data-state=\"{class}\">{state}</td>\
             <td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{} / {}</td><td class=\"num\">{}</td></tr>",
            a.in_flight,
            a.concurrency,
            a.priority,
            a.family.map_or("-", |f| f.as_str()),
            a.context_window
                .map_or_else(|| "-".to_owned(), |w| w.to_string()),
            a.requests,
            a.errors,
            a.failed_attempts,
            a.tokens.input_tokens,
            a.tokens.output_tokens,
            esc(&p50),
            name = esc(&a.name),
            state = esc(&state),
        );
    }
    out.push_str(
        "</tbody></table><p class=\"hint\">In flight and cooldowns are cluster-wide with the \
         Redis store; counters are this instance's since it started.</p>",
    );
    out
}

/// The routing table: each client-facing model and its accounts in routing order.
pub(super) fn routing(table: &shared::admin::RoutingTable, now: UnixMillis) -> String {
    if table.models.is_empty() {
        return "<p>No models are routed yet.</p>".to_owned();
    }
    let mut out = String::from(
        "<table class=\"data\" id=\"routing\"><thead><tr><th>Model</th><th>Order</th>\
         <th>Account</th><th>Matched</th><th>Priority</th><th>In flight</th><th>Window</th>\
         <th>State</th></tr></thead><tbody>",
    );
    for model in &table.models {
        let label = if model.pattern {
            format!("{} (pattern)", model.model)
        } else {
            model.model.clone()
        };
        for (i, entry) in model.accounts.iter().enumerate() {
            let state = match &entry.state {
                AccountState::Ok => LiveState::Ok,
                AccountState::Disabled => LiveState::Disabled,
                AccountState::CoolingDown { until, reason } => LiveState::CoolingDown {
                    until: *until,
                    reason: reason.clone(),
                },
            };
            let (state, class) = live_state(&state, now);
            let model_cell = if i == 0 { esc(&label) } else { String::new() };
            let _ = write!(
                out,
                "<tr data-model=\"{}\" data-account=\"{}\"><td>{model_cell}</td>\
                 <td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}/{}</td><td class=\"num\">{}</td>\
                 <td class=\"state state-{class}\">{}{}</td></tr>",
                esc(&model.model),
                esc(&entry.name),
                i + 1,
                esc(&entry.name),
                esc(&entry.matched),
                entry.priority,
                entry.in_flight,
                entry.concurrency,
                entry
                    .context_window
                    .map_or_else(|| "-".to_owned(), |w| w.to_string()),
                esc(&state),
                if entry.anthropic_only {
                    " · Anthropic clients only"
                } else {
                    ""
                },
            );
        }
    }
    out.push_str("</tbody></table>");
    if let Some(rule) = &table.affinity {
        let _ = write!(
            out,
            "<p class=\"hint\">Conversation affinity: prefix affinity {}, load bound {}, a moved \
             conversation stays {}s.</p>",
            if rule.prefix_affinity { "on" } else { "off" },
            rule.load_bound,
            rule.moved_ttl_secs
        );
    }
    out
}

/// The keys table: limits and use, never a secret (the registry holds only hashes).
pub(super) fn keys(keys: &[shared::key::RelayKey], snapshot: &Snapshot) -> String {
    let live: HashMap<_, _> = snapshot.keys.iter().map(|k| (&k.id, k)).collect();
    let shown: Vec<_> = keys.iter().filter(|k| k.revoked_at.is_none()).collect();
    if shown.is_empty() {
        return "<p>No relay keys yet: create one with <code>relayctl keys create</code>.</p>"
            .to_owned();
    }
    let mut out = String::from(
        "<table class=\"data\" id=\"keys\"><thead><tr><th>Key</th><th>Id</th><th>State</th>\
         <th>Requests/min</th><th>Tokens/day</th><th>Concurrency</th><th>Expires</th>\
         <th>Tokens today</th><th>Requests</th><th>Errors</th></tr></thead><tbody>",
    );
    let limit = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for k in shown {
        let live = live.get(&k.id);
        let today = match (live.and_then(|l| l.tokens_today), k.limits.tokens_per_day) {
            (None, _) => "?".to_owned(),
            (Some(t), Some(max)) => format!(
                "{t} ({:.0}%)",
                (t as f64 * 100.0 / max.max(1) as f64).round()
            ),
            (Some(t), None) => t.to_string(),
        };
        let _ = write!(
            out,
            "<tr data-key=\"{name}\"><td>{name}</td><td><code>{}</code></td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            esc(&k.id.to_string()),
            esc(live.map_or("active", |l| l.state.as_str())),
            limit(k.limits.requests_per_minute.map(|v| v.to_string())),
            limit(k.limits.tokens_per_day.map(|v| v.to_string())),
            limit(k.limits.concurrency.map(|v| v.to_string())),
            esc(&limit(k.expires_at.map(format_rfc3339))),
            esc(&today),
            live.map_or(0, |l| l.requests),
            live.map_or(0, |l| l.errors),
            name = esc(&k.name),
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_reads_a_second_or_more_apart() {
        let sampler = RateSampler::default();
        let at = |at, requests, errors| Sample {
            at,
            requests,
            errors,
        };
        assert!(sampler.rate(at(0, 10, 0)).is_none(), "one read is no rate");
        assert!(sampler.rate(at(500, 12, 0)).is_none(), "too close");
        let r = sampler.rate(at(2000, 30, 5)).expect("a rate");
        assert!((r.per_second - 10.0).abs() < 1e-9);
        assert_eq!(r.error_share, Some(0.25));
        assert!(sampler.rate(at(3000, 1, 0)).is_none(), "a restart");
        assert!(
            sampler.rate(at(4000 + LONGEST_WINDOW_MS, 9, 0)).is_none(),
            "stale"
        );
    }
}
