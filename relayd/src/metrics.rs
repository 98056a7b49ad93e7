//! Prometheus metrics: a small registry of counters and histograms keyed by label values, and
//! the text exposition format (version 0.0.4) rendered on scrape.
//!
//! Hand-written rather than a metrics crate: the set is small and fixed, the hot path is one
//! short mutex section per finished request, and rendering stays dependency-free. Gauges that
//! describe current state (in flight, cooldowns, queue) are not stored here; the scrape handler
//! reads them from live state and passes them to [`Metrics::render`].
//!
//! The same section also adds each request into cumulative totals per account and per relay key,
//! which the admin snapshot (`GET /admin/v1/snapshot`, `relayctl top`) reads: the snapshot costs
//! the request path nothing beyond a few additions under the lock it already takes.
//!
//! Every label value comes from a bounded set — protocols, statuses, account names and the
//! configured model names and patterns (`other` for the rest, see `proxy::trace`) — because a
//! series, once created, is kept for the life of the process.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use shared::key::KeyId;
use shared::usage::TokenCounts;

/// Upper bounds (seconds) of the latency histogram buckets: LLM answers take from milliseconds
/// (errors, cached) to many minutes (long generations).
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds (seconds) of the buckets of every histogram here, the per-account ones included.
pub const HISTOGRAM_BOUNDS: &[f64] = &LATENCY_BUCKETS;

/// Observations by bucket: `buckets[i]` counts those at most [`HISTOGRAM_BOUNDS`]`[i]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Histogram {
    /// Observations at most each bound (cumulative, as Prometheus exposes them).
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    /// Every observation.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Labels of a finished request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RequestLabels {
    protocol: &'static str,
    model: String,
    account: String,
    status: u16,
}

#[derive(Debug, Default)]
struct Registry {
    requests: BTreeMap<RequestLabels, u64>,
    latency: BTreeMap<&'static str, Histogram>,
    ttfb: BTreeMap<&'static str, Histogram>,
    tokens: BTreeMap<(String, String, &'static str), u64>,
    upstream_errors: BTreeMap<(String, &'static str), u64>,
    /// By account name (names are unique; a renamed account starts again from zero).
    accounts: HashMap<String, AccountTotals>,
    /// By key id (names of keys need not be unique).
    keys: HashMap<KeyId, KeyTotals>,
}

/// What one account did since start, for the admin snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AccountTotals {
    /// Client requests whose last attempt went to it.
    pub requests: u64,
    /// Of those, the ones not answered with a 2xx.
    pub errors: u64,
    /// Failed upstream attempts on it, failed over or not.
    pub failed_attempts: u64,
    /// Tokens of its answers.
    pub tokens: TokenCounts,
    /// Time to first byte of its 2xx answers.
    pub ttfb: Histogram,
    /// Arrival to last byte, summed over its requests, in seconds.
    pub latency_seconds: f64,
}

/// What one relay key did since start, for the admin snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTotals {
    /// Client requests made with it.
    pub requests: u64,
    /// Of those, the ones not answered with a 2xx.
    pub errors: u64,
    /// Tokens of their answers.
    pub tokens: TokenCounts,
}

/// What one finished client request contributes.
#[derive(Debug, Clone)]
pub struct RequestObservation<'a> {
    /// `anthropic` or `openai`.
    pub protocol: &'static str,
    /// Model label: the configured exact name or `*` pattern that routed the request, or
    /// `other` — never the client's string, so the series stay bounded by configuration.
    pub model: &'a str,
    /// Account that served it (empty when none was chosen).
    pub account: &'a str,
    /// The relay key it came with.
    pub key: &'a KeyId,
    /// Status sent to the client (499 when the client left first).
    pub status: u16,
    /// Arrival to last byte.
    pub latency: Duration,
    /// Arrival to first byte, when a byte was sent.
    pub ttfb: Option<Duration>,
    /// Input, output and cache-read tokens.
    pub tokens: shared::usage::TokenCounts,
}

/// A gauge value read from live state at scrape time.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: f64,
}

/// The process-wide metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        // Short sections only, never across an await; a poisoned lock still holds valid counts.
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut registry)
    }

    /// Records a finished client request.
    pub fn observe_request(&self, o: &RequestObservation<'_>) {
        self.with(|r| {
            *r.requests
                .entry(RequestLabels {
                    protocol: o.protocol,
                    model: o.model.to_owned(),
                    account: o.account.to_owned(),
                    status: o.status,
                })
                .or_default() += 1;
            r.latency
                .entry(o.protocol)
                .or_default()
                .observe(o.latency.as_secs_f64());
            if let Some(ttfb) = o.ttfb {
                r.ttfb
                    .entry(o.protocol)
                    .or_default()
                    .observe(ttfb.as_secs_f64());
            }
            for (direction, n) in [
                ("input", o.tokens.input_tokens),
                ("output", o.tokens.output_tokens),
                ("cache_read", o.tokens.cache_read_tokens),
            ] {
                if n > 0 {
                    *r.tokens
                        .entry((o.model.to_owned(), o.account.to_owned(), direction))
                        .or_default() += n;
                }
            }
            let failed = !(200..300).contains(&o.status);
            if !o.account.is_empty() {
                update(&mut r.accounts, o.account, |totals: &mut AccountTotals| {
                    totals.requests += 1;
                    totals.errors += u64::from(failed);
                    totals.tokens.add(&o.tokens);
                    totals.latency_seconds += o.latency.as_secs_f64();
                    if let Some(ttfb) = o.ttfb.filter(|_| !failed) {
                        totals.ttfb.observe(ttfb.as_secs_f64());
                    }
                });
            }
            update(&mut r.keys, o.key, |totals: &mut KeyTotals| {
                totals.requests += 1;
                totals.errors += u64::from(failed);
                totals.tokens.add(&o.tokens);
            });
        });
    }

    /// The totals of `accounts` (names) and `keys`, in the order given; zero for those that
    /// served nothing yet. One short section under the lock the request path takes.
    pub fn totals(
        &self,
        accounts: &[&str],
        keys: &[&KeyId],
    ) -> (Vec<AccountTotals>, Vec<KeyTotals>) {
        self.with(|r| {
            (
                accounts
                    .iter()
                    .map(|a| r.accounts.get(*a).copied().unwrap_or_default())
                    .collect(),
                keys.iter()
                    .map(|k| r.keys.get(*k).copied().unwrap_or_default())
                    .collect(),
            )
        })
    }

    /// Records a failed upstream attempt (`cause`: connect, timeout, status_5xx, status_429,
    /// auth, …).
    pub fn observe_upstream_error(&self, account: &str, cause: &'static str) {
        self.with(|r| {
            *r.upstream_errors
                .entry((account.to_owned(), cause))
                .or_default() += 1;
            update(&mut r.accounts, account, |t: &mut AccountTotals| {
                t.failed_attempts += 1;
            });
        });
    }

    /// Renders everything, plus `gauges`, in the Prometheus text format.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::with_capacity(4096);
        self.with(|r| {
            header(
                &mut out,
                "relayd_requests_total",
                "counter",
                "Client requests by protocol, model, account and status.",
            );
            for (l, n) in &r.requests {
                let status = l.status.to_string();
                line(
                    &mut out,
                    "relayd_requests_total",
                    &[
                        ("protocol", l.protocol),
                        ("model", &l.model),
                        ("account", &l.account),
                        ("status", &status),
                    ],
                    *n as f64,
                );
            }
            histogram(
                &mut out,
                "relayd_request_duration_seconds",
                "Time from request arrival to the last byte.",
                &r.latency,
            );
            histogram(
                &mut out,
                "relayd_time_to_first_byte_seconds",
                "Time from request arrival to the first byte sent to the client.",
                &r.ttfb,
            );
            header(
                &mut out,
                "relayd_tokens_total",
                "counter",
                "Tokens by model, account and direction (input, output, cache_read).",
            );
            for ((model, account, direction), n) in &r.tokens {
                line(
                    &mut out,
                    "relayd_tokens_total",
                    &[
                        ("model", model),
                        ("account", account),
                        ("direction", direction),
                    ],
                    *n as f64,
                );
            }
            header(
                &mut out,
                "relayd_upstream_errors_total",
                "counter",
                "Failed upstream attempts by account and cause.",
            );
            for ((account, cause), n) in &r.upstream_errors {
                line(
                    &mut out,
                    "relayd_upstream_errors_total",
                    &[("account", account), ("cause", cause)],
                    *n as f64,
                );
            }
        });
        let mut last = "";
        for g in gauges {
            if g.name != last {
                header(&mut out, g.name, "gauge", g.help);
                last = g.name;
            }
            let labels: Vec<(&str, &str)> =
                g.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            line(&mut out, g.name, &labels, g.value);
        }
        out
    }
}

/// Applies `update` to the entry of `id`, created on its first use: looked up by reference
/// first, so the id is copied once per account or key, not once per request as `entry` would.
fn update<K, Q, T>(map: &mut HashMap<K, T>, id: &Q, update: impl FnOnce(&mut T))
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    T: Default,
{
    if let Some(entry) = map.get_mut(id) {
        update(entry);
        return;
    }
    let mut entry = T::default();
    update(&mut entry);
    map.insert(id.to_owned(), entry);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, series: &BTreeMap<&'static str, Histogram>) {
    header(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (protocol, h) in series {
        for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
            let le = bound.to_string();
            line(
                out,
                &bucket,
                &[("protocol", protocol), ("le", &le)],
                n as f64,
            );
        }
        line(
            out,
            &bucket,
            &[("protocol", protocol), ("le", "+Inf")],
            h.count as f64,
        );
        line(
            out,
            &format!("{name}_sum"),
            &[("protocol", protocol)],
            h.sum,
        );
        line(
            out,
            &format!("{name}_count"),
            &[("protocol", protocol)],
            h.count as f64,
        );
    }
}

/// Label values escaped as the text format requires (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        let key = KeyId("key_1".into());
        m.observe_request(&RequestObservation {
            protocol: "anthropic",
            model: "claude-\"x\"",
            account: "a",
            key: &key,
            status: 200,
            latency: Duration::from_millis(30),
            ttfb: Some(Duration::from_millis(3)),
            tokens: shared::usage::TokenCounts {
                input_tokens: 5,
                output_tokens: 7,
                cache_read_tokens: 0,
            },
        });
        m.observe_upstream_error("a", "connect");
        let text = m.render(&[Gauge {
            name: "relayd_account_in_flight",
            help: "Requests in flight per account.",
            labels: vec![("account", "a".to_owned())],
            value: 2.0,
        }]);
        assert!(text.contains(r#"relayd_requests_total{protocol="anthropic",model="claude-\"x\"",account="a",status="200"} 1"#), "{text}");
        assert!(text.contains(
            r#"relayd_request_duration_seconds_bucket{protocol="anthropic",le="0.05"} 1"#
        ));
        assert!(text.contains(
            r#"relayd_request_duration_seconds_bucket{protocol="anthropic",le="0.025"} 0"#
        ));
        assert!(text.contains(
            r#"relayd_tokens_total{model="claude-\"x\"",account="a",direction="output"} 7"#
        ));
        assert!(text.contains(r#"relayd_upstream_errors_total{account="a",cause="connect"} 1"#));
        assert!(text.contains("relayd_account_in_flight{account=\"a\"} 2"));
    }

    #[test]
    fn totals_per_account_and_key_add_up_requests_errors_tokens_and_ttfb() {
        let m = Metrics::new();
        let (alice, bob) = (KeyId("key_a".into()), KeyId("key_b".into()));
        let observe = |account: &'static str, key: &KeyId, status: u16, ttfb_ms: Option<u64>| {
            m.observe_request(&RequestObservation {
                protocol: "openai",
                model: "m",
                account,
                key,
                status,
                latency: Duration::from_millis(500),
                ttfb: ttfb_ms.map(Duration::from_millis),
                tokens: TokenCounts {
                    input_tokens: 10,
                    output_tokens: 5,
                    cache_read_tokens: 1,
                },
            });
        };
        observe("a", &alice, 200, Some(3));
        observe("a", &bob, 200, Some(40));
        observe("a", &alice, 502, Some(1));
        observe("", &bob, 404, Some(1));
        m.observe_upstream_error("a", "status_5xx");
        m.observe_upstream_error("b", "connect");
        let unknown = KeyId("key_none".into());
        let (accounts, keys) = m.totals(&["a", "b", "c"], &[&alice, &bob, &unknown]);
        let a = accounts[0];
        assert_eq!((a.requests, a.errors, a.failed_attempts), (3, 1, 1));
        assert_eq!(a.tokens.input_tokens, 30);
        assert_eq!(a.tokens.output_tokens, 15);
        assert!((a.latency_seconds - 1.5).abs() < 1e-9);
        // Only the 2xx answers' first bytes: 3 ms and 40 ms.
        assert_eq!(a.ttfb.count, 2);
        let at = |bound: f64| HISTOGRAM_BOUNDS.iter().position(|b| *b == bound).unwrap();
        assert_eq!(a.ttfb.buckets[at(0.005)], 1);
        assert_eq!(a.ttfb.buckets[at(0.05)], 2);
        assert_eq!(accounts[1].requests, 0, "b only failed attempts");
        assert_eq!(accounts[1].failed_attempts, 1);
        assert_eq!(accounts[2], AccountTotals::default());
        assert_eq!((keys[0].requests, keys[0].errors), (2, 1));
        assert_eq!(
            (keys[1].requests, keys[1].errors),
            (2, 1),
            "refused before routing too"
        );
        assert_eq!(keys[1].tokens.cache_read_tokens, 2);
        assert_eq!(keys[2], KeyTotals::default());
    }
}
