//! Usage accounting logic shared by both backends, so they agree by construction: the aggregate
//! cell a record lands in, which table (hourly or daily) answers a query over which period range,
//! and how cells are filtered and summed into a [`UsageReport`].
//!
//! A backend only stores cells — `(period start, key, account, model) → counters` — and hands the
//! ones in a period range back; filtering and grouping happen here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::time::{
    DAY_MS, HOUR_MS, UnixMillis, day_start, format_date, format_rfc3339, hour_start,
};
use shared::usage::{
    NO_ACCOUNT, TOTAL_GROUP, UsageGroupBy, UsageQuery, UsageRecord, UsageReport, UsageTotals,
};

use super::{StoreError, StoreResult};

/// What one [`super::Store::record_usage`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageWrite {
    /// Records stored and counted now.
    pub recorded: u64,
    /// Records skipped because their request id was already stored (a retried flush).
    pub duplicates: u64,
}

/// The counters of one aggregate cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounters {
    /// Requests.
    #[serde(rename = "r", default)]
    pub requests: u64,
    /// Requests not answered with a 2xx.
    #[serde(rename = "e", default)]
    pub errors: u64,
    /// Input tokens.
    #[serde(rename = "i", default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(rename = "o", default)]
    pub output_tokens: u64,
    /// Cache-read tokens.
    #[serde(rename = "c", default)]
    pub cache_read_tokens: u64,
    /// Requests whose tokens are estimated.
    #[serde(rename = "x", default)]
    pub estimated: u64,
}

impl UsageCounters {
    /// The counters one record contributes.
    pub fn of(record: &UsageRecord) -> Self {
        Self {
            requests: 1,
            errors: u64::from(record.is_error()),
            input_tokens: record.tokens.input_tokens,
            output_tokens: record.tokens.output_tokens,
            cache_read_tokens: record.tokens.cache_read_tokens,
            estimated: u64::from(record.estimated),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.estimated += other.estimated;
    }

    /// The counters as `(name, value)` pairs, with the short names the Redis hash fields use.
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("r", self.requests),
            ("e", self.errors),
            ("i", self.input_tokens),
            ("o", self.output_tokens),
            ("c", self.cache_read_tokens),
            ("x", self.estimated),
        ]
    }

    /// Sets the counter called `name` (see [`Self::fields`]); `false` for an unknown name.
    pub fn set_field(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "r" => &mut self.requests,
            "e" => &mut self.errors,
            "i" => &mut self.input_tokens,
            "o" => &mut self.output_tokens,
            "c" => &mut self.cache_read_tokens,
            "x" => &mut self.estimated,
            _ => return false,
        };
        *slot = value;
        true
    }

    fn add_to(&self, totals: &mut UsageTotals) {
        totals.requests += self.requests;
        totals.errors += self.errors;
        totals.tokens.input_tokens += self.input_tokens;
        totals.tokens.output_tokens += self.output_tokens;
        totals.tokens.cache_read_tokens += self.cache_read_tokens;
        totals.estimated += self.estimated;
    }
}

/// The period length of an aggregate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
}

impl Granularity {
    /// Both, in the order records are written into them.
    pub const ALL: [Self; 2] = [Self::Hour, Self::Day];

    /// The period's length.
    pub fn millis(self) -> UnixMillis {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }

    /// The start of the period `at` falls in.
    pub fn start(self, at: UnixMillis) -> UnixMillis {
        match self {
            Self::Hour => hour_start(at),
            Self::Day => day_start(at),
        }
    }

    /// `hour` or `day`, for key names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// Who and what an aggregate cell counts. `account` is empty when no account was chosen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellDims {
    /// Relay key name.
    pub key: String,
    /// Account name, or empty.
    pub account: String,
    /// Requested model.
    pub model: String,
}

impl CellDims {
    /// The cell a record counts in.
    pub fn of(record: &UsageRecord) -> Self {
        Self {
            key: record.key.clone(),
            account: record.account.clone().unwrap_or_default(),
            model: record.model.clone(),
        }
    }

    /// A JSON array `[key, account, model]`: unambiguous whatever characters the names hold
    /// (model names come from clients), and free of raw control characters.
    pub fn encode(&self) -> String {
        serde_json::Value::from(vec![
            self.key.as_str(),
            self.account.as_str(),
            self.model.as_str(),
        ])
        .to_string()
    }

    /// The inverse of [`Self::encode`].
    pub fn decode(text: &str) -> StoreResult<Self> {
        let [key, account, model]: [String; 3] =
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                what: format!("usage cell {text}"),
                detail: e.to_string(),
            })?;
        Ok(Self {
            key,
            account,
            model,
        })
    }
}

/// One aggregate cell as a backend hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCell {
    /// Start of the cell's period.
    pub period: UnixMillis,
    /// Who and what.
    pub dims: CellDims,
    /// The counts.
    pub counters: UsageCounters,
}

/// Which table a query reads, and the range of period starts: `from <= start < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePlan {
    /// Hourly or daily cells.
    pub granularity: Granularity,
    /// First period start included.
    pub from: Option<UnixMillis>,
    /// First period start excluded.
    pub to: Option<UnixMillis>,
}

impl UsagePlan {
    /// Daily cells when the range is whole days (or open) and hours are not asked for; hourly
    /// otherwise. `since` is rounded down and `until` up to the chosen period.
    pub fn for_query(query: &UsageQuery) -> Self {
        let day_aligned = |t: Option<UnixMillis>| t.is_none_or(|t| t.rem_euclid(DAY_MS) == 0);
        let granularity = if query.group_by != Some(UsageGroupBy::Hour)
            && day_aligned(query.since)
            && day_aligned(query.until)
        {
            Granularity::Day
        } else {
            Granularity::Hour
        };
        let len = granularity.millis();
        Self {
            granularity,
            from: query.since.map(|t| granularity.start(t)),
            to: query.until.map(|t| {
                let start = granularity.start(t);
                if start == t {
                    t
                } else {
                    start.saturating_add(len)
                }
            }),
        }
    }
}

/// The key of a cell in an ordered table: the period start as 20 zero-padded digits (so keys
/// sort by time and a period range is a key range), `|`, then the encoded dimensions.
pub fn cell_key(period: UnixMillis, dims: &CellDims) -> String {
    format!("{}{}", period_prefix(period), dims.encode())
}

/// The first key of the cells of `period` (and the end of the range of earlier periods).
pub fn period_prefix(period: UnixMillis) -> String {
    // Periods before 1970 cannot occur (records carry arrival times); clamping keeps the
    // fixed-width encoding valid anyway.
    format!("{:020}|", u64::try_from(period).unwrap_or(0))
}

/// Splits a key made by [`cell_key`].
pub fn parse_cell_key(key: &str) -> StoreResult<(UnixMillis, CellDims)> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        what: format!("usage cell key {key:?}"),
        detail: detail.to_owned(),
    };
    let (period, dims) = key.split_once('|').ok_or_else(|| corrupt("no separator"))?;
    let period = period
        .parse::<UnixMillis>()
        .map_err(|_| corrupt("bad period"))?;
    Ok((period, CellDims::decode(dims)?))
}

/// Filters `cells` by the query and adds them up per group and overall. Groups of names are
/// ordered by name; hours and days by time.
pub fn summarise(query: &UsageQuery, cells: impl IntoIterator<Item = UsageCell>) -> UsageReport {
    let account_matches = |stored: &str, wanted: &str| {
        stored == wanted || (stored.is_empty() && wanted == NO_ACCOUNT)
    };
    let mut total = UsageTotals::named(TOTAL_GROUP);
    // Keyed by a sort key that puts periods in time order and names in name order.
    let mut groups: BTreeMap<(UnixMillis, String), UsageTotals> = BTreeMap::new();
    for cell in cells {
        let d = &cell.dims;
        if query.key.as_ref().is_some_and(|k| *k != d.key)
            || query.model.as_ref().is_some_and(|m| *m != d.model)
            || query
                .account
                .as_ref()
                .is_some_and(|a| !account_matches(&d.account, a))
        {
            continue;
        }
        cell.counters.add_to(&mut total);
        let Some(group_by) = query.group_by else {
            continue;
        };
        let sort_key = match group_by {
            UsageGroupBy::Key => (0, d.key.clone()),
            UsageGroupBy::Account if d.account.is_empty() => (0, NO_ACCOUNT.to_owned()),
            UsageGroupBy::Account => (0, d.account.clone()),
            UsageGroupBy::Model => (0, d.model.clone()),
            UsageGroupBy::Hour => (hour_start(cell.period), String::new()),
            UsageGroupBy::Day => (day_start(cell.period), String::new()),
        };
        let entry = groups.entry(sort_key).or_insert_with_key(|(t, name)| {
            UsageTotals::named(match group_by {
                UsageGroupBy::Hour => format_rfc3339(*t),
                UsageGroupBy::Day => format_date(*t),
                _ => name.clone(),
            })
        });
        cell.counters.add_to(entry);
    }
    UsageReport {
        query: query.clone(),
        groups: groups.into_values().collect(),
        total,
    }
}

#[cfg(test)]
mod tests {
    use shared::time::parse_rfc3339;

    use super::*;

    fn t(s: &str) -> UnixMillis {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn plan_uses_days_only_for_whole_days() {
        let q = |since, until, group_by| UsageQuery {
            since,
            until,
            group_by,
            ..UsageQuery::default()
        };
        let p = UsagePlan::for_query(&q(None, None, None));
        assert_eq!(p.granularity, Granularity::Day);
        let p = UsagePlan::for_query(&q(None, None, Some(UsageGroupBy::Hour)));
        assert_eq!(p.granularity, Granularity::Hour);
        let p = UsagePlan::for_query(&q(
            Some(t("2025-01-01")),
            Some(t("2025-01-03")),
            Some(UsageGroupBy::Day),
        ));
        assert_eq!(
            (p.granularity, p.from, p.to),
            (
                Granularity::Day,
                Some(t("2025-01-01")),
                Some(t("2025-01-03"))
            )
        );
        let p = UsagePlan::for_query(&q(
            Some(t("2025-01-01T10:30:00Z")),
            Some(t("2025-01-01T12:00:01Z")),
            Some(UsageGroupBy::Day),
        ));
        assert_eq!(
            (p.granularity, p.from, p.to),
            (
                Granularity::Hour,
                Some(t("2025-01-01T10:00:00Z")),
                Some(t("2025-01-01T13:00:00Z"))
            )
        );
    }

    #[test]
    fn cell_keys_sort_by_time_and_round_trip() {
        let dims = CellDims {
            key: "a|b\"c".into(),
            account: String::new(),
            model: "m\u{0}".into(),
        };
        let k1 = cell_key(9 * HOUR_MS, &dims);
        let k2 = cell_key(10 * HOUR_MS, &dims);
        assert!(k1 < k2);
        assert!(k1 < period_prefix(10 * HOUR_MS));
        assert_eq!(parse_cell_key(&k1).unwrap(), (9 * HOUR_MS, dims));
        assert!(parse_cell_key("nonsense").is_err());
    }
}
