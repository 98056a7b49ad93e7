//! Usage accounting in the store conformance suite: every case runs against the embedded and the
//! Redis backend. Aggregation across hours and days, idempotent re-recording, filters and
//! grouping, pruning, and what a crash between flushes can and cannot lose.

use std::time::Duration;

use shared::time::parse_rfc3339;
use shared::usage::{TokenCounts, UsageGroupBy, UsageQuery, UsageRecord, UsageReport};

use crate::store_conformance::{Fixture, conformance, redis_conn};

const KEEP: Duration = Duration::from_secs(3600);

conformance!(
    usage_aggregates_across_hours_and_days,
    usage_rerecord_never_double_counts,
    usage_filters_and_grouping,
    usage_prune_deletes_raw_records_and_keeps_aggregates,
    usage_prune_splits_a_busy_hour_at_the_given_time,
    usage_crash_between_flushes_loses_only_unflushed_records,
);

fn t(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

/// A request: `status`, tokens `input`/`output`/`cache`, estimated or not.
#[expect(clippy::too_many_arguments, reason = "a compact table of test records")]
fn rec(
    id: &str,
    at: &str,
    key: &str,
    account: Option<&str>,
    model: &str,
    status: u16,
    (input, output, cache): (u64, u64, u64),
    estimated: bool,
) -> UsageRecord {
    UsageRecord {
        request_id: id.to_owned(),
        at: t(at),
        key: key.to_owned(),
        account: account.map(str::to_owned),
        model: model.to_owned(),
        upstream_model: Some(format!("{model}-upstream")),
        tokens: TokenCounts {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache,
        },
        estimated,
        status,
        streamed: status == 200,
        latency_ms: 100,
        ttfb_ms: Some(10),
    }
}

/// Two days, three hours on the first, two keys, two accounts, two models, one request that
/// never reached an account.
fn mixed() -> Vec<UsageRecord> {
    vec![
        rec(
            "r1",
            "2025-01-01T10:15:00Z",
            "alice",
            Some("qwen"),
            "gpt-4o",
            200,
            (100, 10, 5),
            false,
        ),
        rec(
            "r2",
            "2025-01-01T10:45:00Z",
            "alice",
            Some("glm"),
            "gpt-4o",
            500,
            (50, 0, 0),
            false,
        ),
        rec(
            "r3",
            "2025-01-01T11:05:00Z",
            "bob",
            Some("qwen"),
            "claude-x",
            200,
            (7, 3, 0),
            true,
        ),
        rec(
            "r4",
            "2025-01-01T23:59:59Z",
            "bob",
            None,
            "claude-x",
            404,
            (0, 0, 0),
            false,
        ),
        rec(
            "r5",
            "2025-01-02T00:30:00Z",
            "alice",
            Some("qwen"),
            "claude-x",
            499,
            (20, 1, 0),
            true,
        ),
    ]
}

fn q(group_by: Option<UsageGroupBy>) -> UsageQuery {
    UsageQuery {
        group_by,
        ..UsageQuery::default()
    }
}

/// `(group, requests, errors, input, output, cache, estimated)` per group, then the total.
fn rows(report: &UsageReport) -> Vec<(String, u64, u64, u64, u64, u64, u64)> {
    report
        .groups
        .iter()
        .chain(std::iter::once(&report.total))
        .map(|g| {
            (
                g.group.clone(),
                g.requests,
                g.errors,
                g.tokens.input_tokens,
                g.tokens.output_tokens,
                g.tokens.cache_read_tokens,
                g.estimated,
            )
        })
        .collect()
}

fn row(
    g: &str,
    r: u64,
    e: u64,
    i: u64,
    o: u64,
    c: u64,
    x: u64,
) -> (String, u64, u64, u64, u64, u64, u64) {
    (g.to_owned(), r, e, i, o, c, x)
}

async fn usage_aggregates_across_hours_and_days(f: Fixture) {
    let store = f.open().await;
    let write = store.record_usage(&mixed(), KEEP).await.unwrap();
    assert_eq!((write.recorded, write.duplicates), (5, 0));

    let total = row("total", 5, 3, 177, 14, 5, 2);
    let by_hour = store
        .usage_totals(&q(Some(UsageGroupBy::Hour)))
        .await
        .unwrap();
    assert_eq!(
        rows(&by_hour),
        vec![
            row("2025-01-01T10:00:00Z", 2, 1, 150, 10, 5, 0),
            row("2025-01-01T11:00:00Z", 1, 0, 7, 3, 0, 1),
            row("2025-01-01T23:00:00Z", 1, 1, 0, 0, 0, 0),
            row("2025-01-02T00:00:00Z", 1, 1, 20, 1, 0, 1),
            total.clone(),
        ]
    );
    let by_day = store
        .usage_totals(&q(Some(UsageGroupBy::Day)))
        .await
        .unwrap();
    assert_eq!(
        rows(&by_day),
        vec![
            row("2025-01-01", 4, 2, 157, 13, 5, 1),
            row("2025-01-02", 1, 1, 20, 1, 0, 1),
            total.clone(),
        ]
    );
    // No grouping: only the total.
    assert_eq!(
        rows(&store.usage_totals(&q(None)).await.unwrap()),
        vec![total]
    );

    // A whole-day range reads the daily cells; an unaligned one the hourly cells, rounded out
    // to whole hours: 10:30 .. 11:00:01 covers the 10:00 and 11:00 hours.
    let day_two = UsageQuery {
        since: Some(t("2025-01-02")),
        until: Some(t("2025-01-03")),
        ..q(Some(UsageGroupBy::Day))
    };
    assert_eq!(
        rows(&store.usage_totals(&day_two).await.unwrap()),
        vec![
            row("2025-01-02", 1, 1, 20, 1, 0, 1),
            row("total", 1, 1, 20, 1, 0, 1)
        ]
    );
    let hours = UsageQuery {
        since: Some(t("2025-01-01T10:30:00Z")),
        until: Some(t("2025-01-01T11:00:01Z")),
        ..q(Some(UsageGroupBy::Day))
    };
    assert_eq!(
        rows(&store.usage_totals(&hours).await.unwrap()),
        vec![
            row("2025-01-01", 3, 1, 157, 13, 5, 1),
            row("total", 3, 1, 157, 13, 5, 1)
        ]
    );
    // `until` is exclusive on a period boundary.
    let first_hour = UsageQuery {
        since: Some(t("2025-01-01T10:00:00Z")),
        until: Some(t("2025-01-01T11:00:00Z")),
        ..q(None)
    };
    assert_eq!(
        store
            .usage_totals(&first_hour)
            .await
            .unwrap()
            .total
            .requests,
        2
    );
    let nothing = UsageQuery {
        since: Some(t("2026-01-01")),
        ..q(Some(UsageGroupBy::Key))
    };
    let report = store.usage_totals(&nothing).await.unwrap();
    assert!(report.groups.is_empty());
    assert_eq!(report.total.requests, 0);
}

async fn usage_rerecord_never_double_counts(f: Fixture) {
    let store = f.open().await;
    let records = mixed();
    store.record_usage(&records[..3], KEEP).await.unwrap();
    // A retried flush (the first acknowledgement was lost) carrying the same three and two new.
    let write = store.record_usage(&records, KEEP).await.unwrap();
    assert_eq!((write.recorded, write.duplicates), (2, 3));
    // A duplicate inside one batch counts once too.
    let mut twice = rec(
        "r6",
        "2025-01-01T10:20:00Z",
        "carol",
        Some("qwen"),
        "gpt-4o",
        200,
        (1, 1, 0),
        false,
    );
    let write = store
        .record_usage(&[twice.clone(), twice.clone()], KEEP)
        .await
        .unwrap();
    assert_eq!((write.recorded, write.duplicates), (1, 1));
    // Same id, different content: still the first one wins.
    twice.tokens.input_tokens = 1000;
    store.record_usage(&[twice], KEEP).await.unwrap();

    let report = store
        .usage_totals(&q(Some(UsageGroupBy::Hour)))
        .await
        .unwrap();
    assert_eq!(report.total.requests, 6);
    assert_eq!(report.total.tokens.input_tokens, 178);
    assert_eq!(
        rows(&report)[0],
        row("2025-01-01T10:00:00Z", 3, 1, 151, 11, 5, 0)
    );
    let by_day = store
        .usage_totals(&q(Some(UsageGroupBy::Day)))
        .await
        .unwrap();
    assert_eq!(by_day.total, report.total);
}

async fn usage_filters_and_grouping(f: Fixture) {
    let store = f.open().await;
    store.record_usage(&mixed(), KEEP).await.unwrap();

    let by = async |g| store.usage_totals(&q(Some(g))).await;
    assert_eq!(
        rows(&by(UsageGroupBy::Key).await.unwrap()),
        vec![
            row("alice", 3, 2, 170, 11, 5, 1),
            row("bob", 2, 1, 7, 3, 0, 1),
            row("total", 5, 3, 177, 14, 5, 2),
        ]
    );
    assert_eq!(
        rows(&by(UsageGroupBy::Account).await.unwrap()),
        vec![
            row("(none)", 1, 1, 0, 0, 0, 0),
            row("glm", 1, 1, 50, 0, 0, 0),
            row("qwen", 3, 1, 127, 14, 5, 2),
            row("total", 5, 3, 177, 14, 5, 2),
        ]
    );
    assert_eq!(
        rows(&by(UsageGroupBy::Model).await.unwrap()),
        vec![
            row("claude-x", 3, 2, 27, 4, 0, 2),
            row("gpt-4o", 2, 1, 150, 10, 5, 0),
            row("total", 5, 3, 177, 14, 5, 2),
        ]
    );

    let filtered = UsageQuery {
        key: Some("alice".into()),
        model: Some("claude-x".into()),
        ..q(Some(UsageGroupBy::Account))
    };
    assert_eq!(
        rows(&store.usage_totals(&filtered).await.unwrap()),
        vec![
            row("qwen", 1, 1, 20, 1, 0, 1),
            row("total", 1, 1, 20, 1, 0, 1)
        ]
    );
    let qwen_by_day = UsageQuery {
        account: Some("qwen".into()),
        ..q(Some(UsageGroupBy::Day))
    };
    assert_eq!(
        rows(&store.usage_totals(&qwen_by_day).await.unwrap()),
        vec![
            row("2025-01-01", 2, 0, 107, 13, 5, 1),
            row("2025-01-02", 1, 1, 20, 1, 0, 1),
            row("total", 3, 1, 127, 14, 5, 2),
        ]
    );
    let no_account = UsageQuery {
        account: Some("(none)".into()),
        ..q(None)
    };
    assert_eq!(
        store
            .usage_totals(&no_account)
            .await
            .unwrap()
            .total
            .requests,
        1
    );
    let unknown = UsageQuery {
        key: Some("mallory".into()),
        ..q(Some(UsageGroupBy::Key))
    };
    let report = store.usage_totals(&unknown).await.unwrap();
    assert!(report.groups.is_empty());
    assert_eq!(report.total.requests, 0);
    // The report echoes the query it answers.
    assert_eq!(report.query, unknown);
}

async fn usage_prune_deletes_raw_records_and_keeps_aggregates(f: Fixture) {
    let store = f.open().await;
    store.record_usage(&mixed(), KEEP).await.unwrap();
    let before = store
        .usage_totals(&q(Some(UsageGroupBy::Hour)))
        .await
        .unwrap();

    // r1..r3 arrived before 12:00 on the first day.
    assert_eq!(
        store.prune_usage(t("2025-01-01T12:00:00Z")).await.unwrap(),
        3
    );
    assert_eq!(
        store.prune_usage(t("2025-01-01T12:00:00Z")).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .usage_totals(&q(Some(UsageGroupBy::Hour)))
            .await
            .unwrap(),
        before
    );
    // The records still held keep guarding against double counting.
    let write = store.record_usage(&mixed()[3..], KEEP).await.unwrap();
    assert_eq!((write.recorded, write.duplicates), (0, 2));
    assert_eq!(store.prune_usage(t("2030-01-01")).await.unwrap(), 2);
    assert_eq!(
        store
            .usage_totals(&q(Some(UsageGroupBy::Hour)))
            .await
            .unwrap(),
        before
    );
}

/// Pruning inside one hour that holds more records than one pruning step takes: exactly the
/// earlier ones go, however many steps that needs.
async fn usage_prune_splits_a_busy_hour_at_the_given_time(f: Fixture) {
    let store = f.open().await;
    let ten = t("2025-01-01T10:00:00Z");
    let records: Vec<UsageRecord> = (0..2500)
        .map(|i| UsageRecord {
            request_id: format!("busy-{i}"),
            at: ten + i * 1000,
            ..mixed()[0].clone()
        })
        .collect();
    let write = store.record_usage(&records, KEEP).await.unwrap();
    assert_eq!(write.recorded, 2500);

    // 10:20:00 is 1200 s into the hour: records 0..1200 arrived before it.
    assert_eq!(
        store.prune_usage(t("2025-01-01T10:20:00Z")).await.unwrap(),
        1200
    );
    assert_eq!(
        store.prune_usage(t("2025-01-01T10:20:00Z")).await.unwrap(),
        0
    );
    let again = store.record_usage(&records[1200..], KEEP).await.unwrap();
    assert_eq!(
        (again.recorded, again.duplicates),
        (0, 1300),
        "the later records are kept"
    );
    assert_eq!(store.prune_usage(t("2030-01-01")).await.unwrap(), 1300);
    assert_eq!(
        store.usage_totals(&q(None)).await.unwrap().total.requests,
        2500
    );
}

/// The recorder's crash contract at the store level: a flushed batch is durable and counted once
/// (even when it is re-sent after the restart because its acknowledgement never arrived);
/// records that were only in memory are gone, and nothing else is.
async fn usage_crash_between_flushes_loses_only_unflushed_records(f: Fixture) {
    let records = mixed();
    let (flushed, unflushed) = records.split_at(3);
    {
        let store = f.open().await;
        store.record_usage(flushed, KEEP).await.unwrap();
        // `unflushed` was still in the recorder's memory when the process died: never written.
        let _ = unflushed;
    } // "crash": the handle goes away without anything else being written.

    let store = f.open().await;
    let after_restart = store
        .usage_totals(&q(Some(UsageGroupBy::Key)))
        .await
        .unwrap();
    assert_eq!(
        rows(&after_restart),
        vec![
            row("alice", 2, 1, 150, 10, 5, 0),
            row("bob", 1, 0, 7, 3, 0, 1),
            row("total", 3, 1, 157, 13, 5, 1),
        ]
    );
    // The batch committed just before the crash is sent again, together with new traffic.
    let again = [flushed, &unflushed[..1]].concat();
    let write = store.record_usage(&again, KEEP).await.unwrap();
    assert_eq!((write.recorded, write.duplicates), (1, 3));
    let report = store.usage_totals(&q(None)).await.unwrap();
    assert_eq!(report.total.requests, 4);
    assert_eq!(report.total.tokens.input_tokens, 157);
}

/// Raw records kept the way earlier versions kept them on Redis (a key per record, indexed in one
/// set for every hour, later in one set per hour) are still pruned by arrival time, next to the
/// hourly hashes of today's layout.
#[tokio::test]
async fn redis_prune_reads_the_layouts_of_earlier_stores() {
    let fixture = Fixture::redis();
    let store = fixture.open().await;
    store.record_usage(&mixed(), KEEP).await.unwrap();
    let Fixture::Redis { server, prefix } = &fixture else {
        unreachable!("a Redis fixture")
    };
    let mut conn = redis_conn(server).await;
    let ten = t("2025-01-01T10:00:00Z");
    let written: i64 = ::redis::cmd("EVAL")
        .arg(
            r"
local p = ARGV[1]
redis.call('SET', p .. 'usage:rec:old-1', '{}', 'PX', 3600000)
redis.call('ZADD', p .. 'usage:recs', ARGV[2], 'old-1')
redis.call('SET', p .. 'usage:rec:old-2', '{}', 'PX', 3600000)
redis.call('ZADD', p .. 'usage:recs:' .. ARGV[4], ARGV[3], 'old-2')
redis.call('ZADD', p .. 'usage:rechours', ARGV[4], ARGV[4])
return 2
",
        )
        .arg(0)
        .arg(prefix)
        .arg(t("2025-01-01T09:30:00Z"))
        .arg(t("2025-01-01T10:20:00Z"))
        .arg(ten)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(written, 2);

    // old-1 (09:30), old-2 (10:20) and r1 (10:15), but not r2 (10:45) of the same hour.
    assert_eq!(
        store.prune_usage(t("2025-01-01T10:30:00Z")).await.unwrap(),
        3
    );
    let left: Vec<i64> = ::redis::pipe()
        .exists(format!("{prefix}usage:rec:old-1"))
        .exists(format!("{prefix}usage:rec:old-2"))
        .zcard(format!("{prefix}usage:rechours"))
        .hlen(format!("{prefix}usage:raw:{ten}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, [0, 0, 0, 1]);
    assert_eq!(store.prune_usage(t("2030-01-01")).await.unwrap(), 4);
    let hours: i64 = ::redis::cmd("ZCARD")
        .arg(format!("{prefix}usage:rawhours"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hours, 0, "pruned hours leave the index");
    let write = store.record_usage(&mixed(), KEEP).await.unwrap();
    assert_eq!(
        (write.recorded, write.duplicates),
        (5, 0),
        "pruned records are gone"
    );
}

/// A raw hash gets an expiry from the retention, counted from the end of its hour or from now,
/// whichever is later, so an old record written late is still kept for the whole retention.
#[tokio::test]
async fn redis_raw_hours_expire_after_the_retention() {
    let fixture = Fixture::redis();
    let store = fixture.open().await;
    let keep = Duration::from_secs(7 * 86_400);
    let before = shared::time::now_millis();
    store.record_usage(&mixed()[..1], keep).await.unwrap();
    let Fixture::Redis { server, prefix } = &fixture else {
        unreachable!("a Redis fixture")
    };
    let expires: i64 = ::redis::cmd("PEXPIRETIME")
        .arg(format!("{prefix}usage:raw:{}", t("2025-01-01T10:00:00Z")))
        .query_async(&mut redis_conn(server).await)
        .await
        .unwrap();
    let keep_ms = i64::try_from(keep.as_millis()).unwrap();
    assert!(
        expires >= before + keep_ms && expires <= shared::time::now_millis() + keep_ms,
        "expires at {expires}, written after {before}"
    );
}
