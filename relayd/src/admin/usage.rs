//! `GET /admin/v1/usage`: usage totals from the store's aggregates, filtered by key, account,
//! model and time, grouped by key, account, model, hour or day.
//!
//! Query parameters: `since`, `until` (Unix milliseconds, RFC 3339, or an age before now such as
//! `24h` or `7d`), `key`, `account`, `model`, `group_by`. A bad or unknown parameter is a 400 that
//! names it. Records reach the store within `usage.flush_interval_ms`, so the last moments of
//! traffic may not be counted yet.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use shared::error::FieldError;
use shared::time::{now_millis, parse_time_spec};
use shared::usage::{UsageGroupBy, UsageQuery, UsageReport};

use crate::error::{AdminApiError, ApiError, ErrorKind};
use crate::state::AppState;
use crate::store::StoreError;

pub(super) async fn report(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<UsageReport>, AdminApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let query = parse_query(&pairs, now_millis()).map_err(bad_parameters)?;
    Ok(Json(totals(&state, &query).await?))
}

/// Usage totals as `query` asks, a failing store mapped to a 503 that says so: for the
/// endpoint and for the status page's charts.
pub(crate) async fn totals(state: &AppState, query: &UsageQuery) -> Result<UsageReport, ApiError> {
    state.store.usage_totals(query).await.map_err(|e| match e {
        StoreError::Backend { .. } => {
            tracing::error!(error = %e, "reading usage failed");
            ApiError::new(
                ErrorKind::Unavailable,
                "the store is unavailable; usage could not be read",
            )
            .with_retry_after(1)
        }
        other => ApiError::from(other),
    })
}

/// A 400 whose message names every bad parameter, with the details attached.
fn bad_parameters(details: Vec<FieldError>) -> ApiError {
    let message = details
        .iter()
        .map(|d| {
            format!(
                "parameter `{}`: {}",
                d.field.as_deref().unwrap_or("?"),
                d.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    ApiError {
        details,
        ..ApiError::invalid(message)
    }
}

/// Turns query-string pairs into a [`UsageQuery`], collecting one error per bad parameter.
fn parse_query(
    pairs: &[(String, String)],
    now: shared::time::UnixMillis,
) -> Result<UsageQuery, Vec<FieldError>> {
    let mut query = UsageQuery::default();
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            row: None,
            name: None,
            field: Some(field.to_owned()),
            message,
        });
    };
    for (name, value) in pairs {
        let text = || (!value.trim().is_empty()).then(|| value.trim().to_owned());
        match name.as_str() {
            "since" | "until" => match parse_time_spec(value, now) {
                Ok(t) if name == "since" => query.since = Some(t),
                Ok(t) => query.until = Some(t),
                Err(e) => bad(name, e.to_string()),
            },
            "key" => query.key = text(),
            "account" => query.account = text(),
            "model" => query.model = text(),
            "group_by" | "groupBy" => match value.parse::<UsageGroupBy>() {
                Ok(g) => query.group_by = Some(g),
                Err(e) => bad("group_by", e),
            },
            other => bad(
                other,
                "unknown parameter; expected since, until, key, account, model or group_by"
                    .to_owned(),
            ),
        }
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && until < since
    {
        bad("until", "is before since".to_owned());
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(errors)
    }
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
    fn parses_every_parameter() {
        let now = 10 * 86_400_000;
        let q = parse_query(
            &pairs(&[
                ("since", "7d"),
                ("until", "1970-01-10T12:00:00Z"),
                ("key", "alice"),
                ("account", "qwen"),
                ("model", " "),
                ("group_by", "Model"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(q.since, Some(3 * 86_400_000));
        assert_eq!(q.until, Some(9 * 86_400_000 + 43_200_000));
        assert_eq!(q.key.as_deref(), Some("alice"));
        assert_eq!(q.account.as_deref(), Some("qwen"));
        assert_eq!(q.model, None);
        assert_eq!(q.group_by, Some(UsageGroupBy::Model));
    }

    #[test]
    fn names_each_bad_parameter() {
        let errors = parse_query(
            &pairs(&[("since", "yesterday"), ("group_by", "week"), ("limit", "5")]),
            0,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["since", "group_by", "limit"]);
        let errors = parse_query(&pairs(&[("since", "2000"), ("until", "1000")]), 0).unwrap_err();
        assert_eq!(errors[0].field.as_deref(), Some("until"));
        let message = bad_parameters(errors).message;
        assert_eq!(message, "parameter `until`: is before since");
    }
}
