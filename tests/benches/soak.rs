//! Soak benchmark: the release relayd (separate process, embedded store) under long, wide and
//! hostile load, watching its memory and what it keeps. Not part of `cargo test`.
//!
//! Run: `cargo bench -p relayd-tests --bench soak`. Phases:
//! 1. warm-up (`SOAK_WARMUP_SECS`, default 30) and then `SOAK_SECS` (default 600) of
//!    `SOAK_STREAMS` (default 1000) concurrent Anthropic streams against a mock that streams 20
//!    chunks `SOAK_GAP_MS` (default 50) apart; every stream must end with `message_stop`;
//! 2. `SOAK_IDLE` (default 2000) idle client connections held open while relayd must keep
//!    answering;
//! 3. the model-name flood: `SOAK_FLOOD` (default 2000) requests with distinct 16 KB model names,
//!    half served by a pattern, half not served at all.
//!
//! relayd's VmRSS is sampled every second. Reported, and checked: errors 0, every slot free at
//! the end, RSS at the end within 10% of RSS after warm-up, `/metrics` and the store directory
//! grown by at most a fixed bound over the flood. The mock runs in this process (on the same
//! runtime as the load), so relayd is the only other process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use relayd_tests::bench::{Pipe, Process, RssSampler, build_relayd, env_number, proc_status_kb};
use relayd_tests::http::Admin;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// Bounds over the model-name flood (2,000 distinct 16 KB names would be 32 MB if kept).
const MAX_METRICS_GROWTH: u64 = 64 * 1024;
const MAX_STORE_GROWTH: u64 = 8 * 1024 * 1024;

fn main() -> Result<()> {
    let warmup = Duration::from_secs(env_number("SOAK_WARMUP_SECS", 30)?);
    let soak = Duration::from_secs(env_number("SOAK_SECS", 600)?);
    let streams = usize::try_from(env_number("SOAK_STREAMS", 1000)?)?;
    let idle = usize::try_from(env_number("SOAK_IDLE", 2000)?)?;
    let flood = usize::try_from(env_number("SOAK_FLOOD", 2000)?)?;
    let gap = Duration::from_millis(env_number("SOAK_GAP_MS", 50)?);
    let relayd = build_relayd()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&relayd, warmup, soak, streams, idle, flood, gap))
}

async fn run(
    relayd: &Path,
    warmup: Duration,
    soak: Duration,
    streams: usize,
    idle: usize,
    flood: usize,
    gap: Duration,
) -> Result<()> {
    let mock = start_mock(gap).await?;
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let relay = Process::start(
        Command::new(relayd)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env_remove("RELAYD_ENCRYPTION_KEY")
            .env_remove("RELAYD_ADMIN_TOKEN")
            .env_remove("RELAYD_STORE")
            .env_remove("RELAYD_CONFIG")
            // The default level: "listening on ADDR" is an info line, as are the request lines.
            .env("RELAYD_LOG", "info")
            .env("RELAYD_ROUTING__QUEUE_SIZE", "10000"),
        Pipe::Stderr,
    )?;
    let pid = relay.child.id();
    let base = format!("http://{}", relay.addr);
    let token = std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_owned();
    let admin = Admin::new(&base, &token);
    let created = admin
        .post(
            "/accounts",
            &json!({"name": "mock", "endpoint": format!("http://{mock}/v1"),
                    "deploymentName": "mock-model", "concurrency": 5000,
                    "supportedModels": [MODEL, "flood-*"]}),
        )
        .await;
    if created.status != 201 {
        bail!("create account: {}", created.text);
    }
    let key = admin.post("/keys", &json!({"name": "soak"})).await.json["secret"]
        .as_str()
        .context("key secret")?
        .to_owned();
    let samples = RssSampler::start(pid);
    println!(
        "soak: relayd pid {pid}, {streams} concurrent streams (20 chunks, {} ms apart), warm-up {}s, soak {}s",
        gap.as_millis(),
        warmup.as_secs(),
        soak.as_secs()
    );

    let warm = stream_load(&base, &key, streams, warmup).await;
    let rss_warm = proc_status_kb(pid, "VmRSS:").unwrap_or(0);
    println!(
        "warm-up: {} streams, {} errors; VmRSS {} MB",
        warm.done,
        warm.errors,
        rss_warm / 1024
    );
    let started = Instant::now();
    let load = stream_load(&base, &key, streams, soak).await;
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after_streams = proc_status_kb(pid, "VmRSS:").unwrap_or(0);
    println!(
        "streams: {} completed in {elapsed:.0}s ({:.0}/s), {} errors; VmRSS {} MB",
        load.done,
        load.done as f64 / elapsed,
        load.errors,
        rss_after_streams / 1024,
    );
    let slots_after_streams = in_flight(&admin).await;

    let idle_result = idle_connections(relay.addr, pid, &base, idle).await;
    println!(
        "idle: {} connections held open; VmRSS {} MB with them; relayd answered meanwhile: {}",
        idle_result.0,
        idle_result.1 / 1024,
        idle_result.2
    );

    let metrics_before = metrics_size(&base, &token).await;
    let store_before = dir_size(&data);
    let flood_errors = model_flood(&base, &key, flood).await;
    let metrics_after = metrics_size(&base, &token).await;
    // The usage writer flushes every second; give it two before measuring the store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let store_after = dir_size(&data);
    let rss_end = proc_status_kb(pid, "VmRSS:").unwrap_or(0);
    let rss_max = samples.stop();
    println!(
        "flood: {flood} distinct 16 KB model names, {flood_errors} unexpected answers; /metrics {metrics_before} -> {metrics_after} bytes; store {store_before} -> {store_after} bytes"
    );
    let slots_end = in_flight(&admin).await;
    let drift = (rss_end as f64 - rss_warm as f64) / rss_warm.max(1) as f64;
    println!(
        "end: VmRSS {} MB ({:+.1}% vs after warm-up), max {} MB, VmHWM {} MB; slots in flight {slots_after_streams} after the streams, {slots_end} at the end",
        rss_end / 1024,
        drift * 100.0,
        rss_max / 1024,
        proc_status_kb(pid, "VmHWM:").unwrap_or(0) / 1024
    );

    let mut failed = Vec::new();
    if load.errors + warm.errors + flood_errors > 0 {
        failed.push("errors");
    }
    if slots_after_streams != 0 || slots_end != 0 {
        failed.push("slots");
    }
    if drift > 0.10 {
        failed.push("rss drift");
    }
    if metrics_after.saturating_sub(metrics_before) > MAX_METRICS_GROWTH {
        failed.push("metrics growth");
    }
    if store_after.saturating_sub(store_before) > MAX_STORE_GROWTH {
        failed.push("store growth");
    }
    if !idle_result.2 {
        failed.push("idle connections");
    }
    if failed.is_empty() {
        println!("soak: all checks met");
        Ok(())
    } else {
        bail!("soak: not met: {}", failed.join(", "))
    }
}

/// The mock upstream: every request is answered with a 20-chunk stream, `gap` between chunks.
async fn start_mock(gap: Duration) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |body: Bytes| async move {
        let streaming =
            serde_json::from_slice::<Value>(&body).is_ok_and(|request| request["stream"] == true);
        if streaming {
            mock_stream(gap)
        } else {
            mock_completion()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn mock_completion() -> Response {
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1}});
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn mock_stream(gap: Duration) -> Response {
    let chunk = |delta: Value, finish: Value| {
        Bytes::from(format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        ))
    };
    let mut pieces: Vec<Bytes> = (0..19)
        .map(|i| chunk(json!({"content": format!("word{i} ")}), Value::Null))
        .collect();
    pieces.push(chunk(json!({}), json!("stop")));
    pieces.push(Bytes::from(format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20}})
    )));
    let body = futures_util::stream::iter(pieces.into_iter().enumerate()).then(
        move |(i, piece)| async move {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, std::convert::Infallible>(piece)
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

#[derive(Debug, Default)]
struct Load {
    done: u64,
    errors: u64,
}

/// `streams` clients, each sending one streaming request after another until `duration` ends.
async fn stream_load(base: &str, key: &str, streams: usize, duration: Duration) -> Load {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + duration;
    let body = serde_json::to_vec(&json!({
        "model": MODEL, "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "tell me more"}]
    }))
    .unwrap_or_default();
    // One client: each of its requests in flight holds a connection of its own, and a finished
    // one goes back to the pool for the next request, as a client would keep it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(streams)
        .build()
        .unwrap_or_default();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (done, errors) = (Arc::clone(&done), Arc::clone(&errors));
            let (url, key, body) = (format!("{base}/v1/messages"), key.to_owned(), body.clone());
            let client = client.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    let ok = match client
                        .post(&url)
                        .header("x-api-key", &key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => r
                            .text()
                            .await
                            .is_ok_and(|t| t.contains("event: message_stop")),
                        _ => false,
                    };
                    let counter = if ok { &done } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            println!("a load task failed: {e}");
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Load {
        done: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Opens `count` idle connections, checks relayd still answers, and closes them. Returns how
/// many were open, relayd's VmRSS meanwhile, and whether it answered.
async fn idle_connections(
    addr: SocketAddr,
    pid: u32,
    base: &str,
    count: usize,
) -> (usize, u64, bool) {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => open.push(tcp),
            Err(e) => {
                println!("idle: connection {} refused: {e}", open.len() + 1);
                break;
            }
        }
    }
    let answered = reqwest::Client::new()
        .head(format!("{base}/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200);
    let rss = proc_status_kb(pid, "VmRSS:").unwrap_or(0);
    let n = open.len();
    drop(open);
    (n, rss, answered)
}

/// Requests with distinct random 16 KB model names; half match the account's `flood-*`
/// pattern. Returns how many were answered other than expected (200 / 404).
async fn model_flood(base: &str, key: &str, count: usize) -> u64 {
    let client = reqwest::Client::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut unexpected = 0;
    for i in 0..count {
        let mut name = String::with_capacity(16 * 1024);
        name.push_str(if i % 2 == 0 { "flood-" } else { "nobody-" });
        while name.len() < 16 * 1024 {
            // xorshift64: distinct names without a dependency.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            name.push_str(&format!("{seed:016x}"));
        }
        let expected = if i % 2 == 0 { 200 } else { 404 };
        let status = client
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .json(&json!({"model": name, "max_tokens": 8,
                          "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status != expected {
            unexpected += 1;
        }
    }
    unexpected
}

async fn in_flight(admin: &Admin) -> u64 {
    admin.get("/status").await.json["inFlight"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

async fn metrics_size(base: &str, token: &str) -> u64 {
    let response = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await;
    match response {
        Ok(r) => r.bytes().await.map_or(0, |b| b.len() as u64),
        Err(_) => 0,
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
