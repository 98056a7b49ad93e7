//! The usage page: requests and tokens per hour or day, stacked by key, model or account, over
//! a range chosen with a plain GET form (`range`, `step`, `by`).
//!
//! Read from the store's usage aggregates with the admin API's own query: the totals per series
//! over the range, then each of the largest series per bucket, then all traffic per bucket, so
//! the rest (smaller series, requests refused before an account was chosen) is drawn as one
//! remaining segment and every bar adds up to the real total.

use std::collections::HashMap;
use std::fmt::Write as _;

use shared::time::{UnixMillis, day_start, format_date, format_rfc3339, hour_start};
use shared::usage::{NO_ACCOUNT, UsageGroupBy, UsageQuery, UsageReport, UsageTotals};

use super::chart::{PALETTE, Series, StackedBars};
use super::html::esc;
use crate::error::ApiError;
use crate::state::AppState;

/// The ranges offered, as `(value, label, milliseconds)`.
const RANGES: &[(&str, &str, i64)] = &[
    ("6h", "last 6 hours", 6 * HOUR),
    ("24h", "last 24 hours", 24 * HOUR),
    ("48h", "last 48 hours", 48 * HOUR),
    ("7d", "last 7 days", 7 * DAY),
    ("30d", "last 30 days", 30 * DAY),
    ("90d", "last 90 days", 90 * DAY),
];
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Most bars one chart draws: a month of hours.
const MAX_BUCKETS: usize = 745;
/// The name of the remaining segment.
const REST: &str = "(rest)";

/// What the form asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChartRequest {
    range: usize,
    step: UsageGroupBy,
    by: UsageGroupBy,
}

impl Default for ChartRequest {
    fn default() -> Self {
        Self {
            range: 1,
            step: UsageGroupBy::Hour,
            by: UsageGroupBy::Key,
        }
    }
}

/// Reads the query string's pairs; a bad one is an error naming it (the form's own choices
/// never are one, a hand-edited URL may be).
pub(super) fn parse(pairs: &[(String, String)]) -> Result<ChartRequest, String> {
    let mut request = ChartRequest::default();
    let mut step = None;
    for (name, value) in pairs {
        match name.as_str() {
            "range" => {
                request.range =
                    RANGES
                        .iter()
                        .position(|(v, _, _)| v == value)
                        .ok_or_else(|| {
                            let known: Vec<&str> = RANGES.iter().map(|r| r.0).collect();
                            format!("parameter `range`: expected one of {}", known.join(", "))
                        })?;
            }
            "step" => {
                step = Some(match value.as_str() {
                    "hour" => UsageGroupBy::Hour,
                    "day" => UsageGroupBy::Day,
                    _ => return Err("parameter `step`: expected hour or day".to_owned()),
                });
            }
            "by" => {
                request.by = match value.as_str() {
                    "key" => UsageGroupBy::Key,
                    "model" => UsageGroupBy::Model,
                    "account" => UsageGroupBy::Account,
                    _ => return Err("parameter `by`: expected key, model or account".to_owned()),
                };
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`; expected range, step or by"
                ));
            }
        }
    }
    let span = RANGES[request.range].2;
    // Without a step: hours up to two days, days beyond.
    request.step = step.unwrap_or(if span <= 48 * HOUR {
        UsageGroupBy::Hour
    } else {
        UsageGroupBy::Day
    });
    if request.step == UsageGroupBy::Hour && span / HOUR > MAX_BUCKETS as i64 {
        return Err(format!(
            "parameter `step`: hourly bars over the {} would be {} bars; choose step=day",
            RANGES[request.range].1,
            span / HOUR
        ));
    }
    Ok(request)
}

/// The buckets from the range's start to `now`: their usage-report labels, and short labels.
fn buckets(request: ChartRequest, now: UnixMillis) -> (UnixMillis, Vec<String>, Vec<String>) {
    let since = now - RANGES[request.range].2;
    let (start, width) = match request.step {
        UsageGroupBy::Day => (day_start(since), DAY),
        _ => (hour_start(since + HOUR - 1), HOUR),
    };
    let mut labels = Vec::new();
    let mut ticks = Vec::new();
    let mut at = start;
    while at <= now && labels.len() < MAX_BUCKETS {
        if request.step == UsageGroupBy::Day {
            labels.push(format_date(at));
            ticks.push(format_date(at)[5..].to_owned());
        } else {
            let full = format_rfc3339(at);
            // Midnight shows the date, other hours the time.
            ticks.push(if at % DAY == 0 {
                full[5..10].to_owned()
            } else {
                full[11..16].to_owned()
            });
            labels.push(full);
        }
        at += width;
    }
    (start, labels, ticks)
}

/// Requests and tokens of one series in each bucket.
fn per_bucket(report: &UsageReport, index: &HashMap<&str, usize>) -> (Vec<u64>, Vec<u64>) {
    let mut requests = vec![0; index.len()];
    let mut tokens = vec![0; index.len()];
    for g in &report.groups {
        if let Some(&i) = index.get(g.group.as_str()) {
            requests[i] = g.requests;
            tokens[i] = g.tokens.total();
        }
    }
    (requests, tokens)
}

/// The usage page's body: the form, then a chart of requests and one of tokens.
pub(super) async fn body(
    state: &AppState,
    request: ChartRequest,
    now: UnixMillis,
) -> Result<String, ApiError> {
    let (since, labels, ticks) = buckets(request, now);
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let query = |group_by| UsageQuery {
        since: Some(since),
        group_by: Some(group_by),
        ..UsageQuery::default()
    };
    let overall = crate::admin::usage_totals(state, &query(request.by)).await?;
    let mut groups: Vec<&UsageTotals> = overall
        .groups
        .iter()
        .filter(|g| g.group != NO_ACCOUNT)
        .collect();
    groups.sort_by(|a, b| {
        (b.requests, b.tokens.total())
            .cmp(&(a.requests, a.tokens.total()))
            .then_with(|| a.group.cmp(&b.group))
    });
    // The palette's last colour is the rest's.
    groups.truncate(PALETTE - 1);
    let mut requests = Vec::new();
    let mut tokens = Vec::new();
    for g in &groups {
        let mut q = query(request.step);
        let name = Some(g.group.clone());
        match request.by {
            UsageGroupBy::Model => q.model = name,
            UsageGroupBy::Account => q.account = name,
            _ => q.key = name,
        }
        let report = crate::admin::usage_totals(state, &q).await?;
        let (r, t) = per_bucket(&report, &index);
        requests.push(Series {
            name: g.group.clone(),
            values: r,
        });
        tokens.push(Series {
            name: g.group.clone(),
            values: t,
        });
    }
    let all = crate::admin::usage_totals(state, &query(request.step)).await?;
    let (all_requests, all_tokens) = per_bucket(&all, &index);
    for (series, all) in [(&mut requests, all_requests), (&mut tokens, all_tokens)] {
        let rest: Vec<u64> = all
            .iter()
            .enumerate()
            .map(|(i, total)| total.saturating_sub(series.iter().map(|s| s.values[i]).sum()))
            .collect();
        if rest.iter().any(|&v| v > 0) {
            series.push(Series {
                name: REST.to_owned(),
                values: rest,
            });
        }
    }

    let mut out = form(request);
    let step = if request.step == UsageGroupBy::Day {
        "day"
    } else {
        "hour"
    };
    let x_title = format!("{step} (UTC)");
    for (title, unit, series) in [
        ("Requests", "requests", &requests),
        ("Tokens", "tokens", &tokens),
    ] {
        let _ = write!(
            out,
            "<section class=\"panel\" id=\"{unit}\"><h2>{title} per {step}, by {}</h2>{}</section>",
            request.by.as_str(),
            StackedBars {
                unit,
                buckets: &labels,
                ticks: &ticks,
                x_title: &x_title,
                series,
            }
            .render()
        );
    }
    let _ = write!(
        out,
        "<p class=\"hint\">From {} (UTC). Tokens are input + output + cache reads. Usage reaches \
         the store within <code>usage.flush_interval_ms</code>.</p>",
        esc(&format_rfc3339(since))
    );
    Ok(out)
}

/// The GET form, with the current choices selected.
fn form(request: ChartRequest) -> String {
    let mut out = String::from("<form method=\"get\" action=\"/ui/usage\" class=\"controls\">");
    let select =
        |out: &mut String, name: &str, label: &str, options: &[(&str, &str)], chosen: &str| {
            let _ = write!(out, "<label>{label} <select name=\"{name}\">");
            for (value, text) in options {
                let selected = if *value == chosen { " selected" } else { "" };
                let _ = write!(out, "<option value=\"{value}\"{selected}>{text}</option>");
            }
            out.push_str("</select></label>");
        };
    let ranges: Vec<(&str, &str)> = RANGES.iter().map(|(v, l, _)| (*v, *l)).collect();
    select(&mut out, "range", "Range", &ranges, RANGES[request.range].0);
    select(
        &mut out,
        "step",
        "Per",
        &[("hour", "hour"), ("day", "day")],
        request.step.as_str(),
    );
    select(
        &mut out,
        "by",
        "Stacked by",
        &[("key", "key"), ("model", "model"), ("account", "account")],
        request.by.as_str(),
    );
    out.push_str("<button type=\"submit\">Show</button></form>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_parameters_and_their_errors() {
        assert_eq!(parse(&[]), Ok(ChartRequest::default()));
        let r = parse(&pairs(&[("range", "30d"), ("by", "model")])).unwrap();
        assert_eq!((r.step, r.by), (UsageGroupBy::Day, UsageGroupBy::Model));
        let r = parse(&pairs(&[("range", "7d"), ("step", "hour")])).unwrap();
        assert_eq!(r.step, UsageGroupBy::Hour);
        let e = parse(&pairs(&[("range", "1y")])).unwrap_err();
        assert!(e.starts_with("parameter `range`"), "{e}");
        let e = parse(&pairs(&[("range", "90d"), ("step", "hour")])).unwrap_err();
        assert!(e.contains("step=day"), "{e}");
        let e = parse(&pairs(&[("group", "key")])).unwrap_err();
        assert!(e.contains("`group`"), "{e}");
    }

    #[test]
    fn buckets_end_at_now_and_match_the_report_labels() {
        let now = 10 * DAY + 5 * HOUR + 1234;
        let (since, labels, ticks) = buckets(ChartRequest::default(), now);
        assert_eq!(labels.len(), 24);
        assert_eq!(since, 9 * DAY + 6 * HOUR);
        assert_eq!(labels.last().unwrap(), "1970-01-11T05:00:00Z");
        assert_eq!(ticks[18], "01-11", "midnight shows the date");
        assert_eq!(ticks[19], "01:00");
        let week = parse(&pairs(&[("range", "7d")])).unwrap();
        let (_, labels, _) = buckets(week, now);
        assert_eq!(labels.len(), 8, "the partial first day and today");
        assert_eq!(labels[0], "1970-01-04");
    }
}
