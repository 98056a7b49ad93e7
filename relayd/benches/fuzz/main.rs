//! Property-based fuzzing of relayd's untrusted-input code on the stable toolchain: proptest
//! generates the inputs (structure-aware, mutated recordings, raw bytes), each target checks its
//! properties, and a failing input is shrunk to a minimal one and printed.
//!
//! Targets (one module each; the module docs say what is generated and what is checked):
//! `request` (Anthropic request translation and token counting), `response` (OpenAI completion
//! → Anthropic message), `openai` (the OpenAI passthrough, both ways), `stream` (SSE decoding +
//! stream translation with arbitrary read boundaries), `tap` (the OpenAI stream tap, same),
//! `sse` (the SSE decoder against a reference), `import` (the batch-import validator), `config`
//! (configuration from TOML text and the environment).
//!
//! Two runs from one file, so the short and the long run share every generator and property:
//! - `cargo test -p relayd --bench fuzz` (and `cargo test --workspace`): a short run, a fixed
//!   seed and [`SHORT_CASES`] cases per target ([`SHORT_CASES_REQUEST`] for `request`), in the
//!   test profile.
//! - `cargo bench -p relayd --bench fuzz`: the long run, each target's `long_cases` (10.5 million
//!   in all) with a new seed each time (release profile), printing cases and cases per second per
//!   target.
//!
//! `FUZZ_CASES` sets the cases of every target, `FUZZ_SEED` the seed (printed by every run, so a
//! failure can be replayed), `FUZZ_THREADS` the threads; arguments that are not flags pick the
//! targets (`cargo bench -p relayd --bench fuzz -- stream tap`). Exits with status 1 when a
//! property fails.
//!
//! Cases run on threads with relayd's serving threads' stack size, so input that recurses too
//! deeply for relayd crashes the run the way it would crash relayd. A stack overflow aborts the
//! process and cannot be shrunk: replay it with the printed `FUZZ_SEED`, one target and
//! `FUZZ_THREADS=1` (batches get their seeds from the run's seed, the target and their number).

mod config;
mod import;
mod inputs;
mod passthrough;
mod request;
mod response;
mod sse;
mod stream;

use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// The allocator relayd runs with (its binary sets the same).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cases per target in the short run (`cargo test`): a few seconds in all, in the debug profile.
const SHORT_CASES: u64 = 200;

/// Cases of `request` in the short run: in the debug profile its recorded 80–120 KB bodies make
/// a case some 20 times dearer than other targets' cases.
const SHORT_CASES_REQUEST: u64 = 50;

/// Cases one runner generates before the next one takes over with the next seed.
const BATCH: u64 = 5_000;

/// relayd's serving threads are spawned with Rust's default stack size (`workers.rs`).
const STACK_SIZE: usize = 2 << 20;

/// One fuzz target: a name, its cases in the short and the long run, and a run of
/// `runner.config().cases`.
struct Target {
    name: &'static str,
    short_cases: u64,
    /// Spread by cost and by how much there is to find: 10.5 million in all, about half an hour
    /// on two cores.
    long_cases: u64,
    run: fn(&mut TestRunner) -> Result<(), String>,
}

const TARGETS: &[Target] = &[
    Target {
        name: "request",
        short_cases: SHORT_CASES_REQUEST,
        long_cases: 1_000_000,
        run: |r| run(r, &request::cases(), request::check),
    },
    Target {
        name: "response",
        short_cases: SHORT_CASES,
        long_cases: 1_500_000,
        run: |r| run(r, &response::cases(), response::check),
    },
    Target {
        name: "openai",
        short_cases: SHORT_CASES,
        long_cases: 1_000_000,
        run: |r| run(r, &passthrough::cases(), passthrough::check),
    },
    Target {
        name: "stream",
        short_cases: SHORT_CASES,
        long_cases: 1_500_000,
        run: |r| run(r, &stream::cases(), stream::check),
    },
    Target {
        name: "tap",
        short_cases: SHORT_CASES,
        long_cases: 1_000_000,
        run: |r| run(r, &stream::tap_cases(), stream::check_tap),
    },
    Target {
        name: "sse",
        short_cases: SHORT_CASES,
        long_cases: 2_500_000,
        run: |r| run(r, &sse::cases(), sse::check),
    },
    Target {
        name: "import",
        short_cases: SHORT_CASES,
        long_cases: 1_000_000,
        run: |r| run(r, &import::cases(), import::check),
    },
    Target {
        name: "config",
        short_cases: SHORT_CASES,
        long_cases: 1_000_000,
        run: |r| run(r, &config::cases(), config::check),
    },
];

/// Runs `check` on the runner's number of cases from `strategy`; a failure is described with
/// its shrunk input.
fn run<T: Debug>(
    runner: &mut TestRunner,
    strategy: &BoxedStrategy<T>,
    check: fn(&T) -> Result<(), TestCaseError>,
) -> Result<(), String> {
    runner
        .run(strategy, |case| check(&case))
        .map_err(|e| e.to_string())
}

/// A runner for `cases` cases from a seed derived from the run's seed, the target and the batch.
fn runner(cases: u64, seed: u64, target: &str, batch: u64) -> TestRunner {
    let mut state = seed ^ batch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in target.bytes() {
        state = splitmix(state ^ u64::from(b));
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix(state).to_le_bytes());
    bytes[8..].copy_from_slice(&splitmix(state ^ 1).to_le_bytes());
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::XorShift, &bytes))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().replace('_', "").parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("{name}={value:?} is not a number");
            std::process::exit(2);
        }
    }
}

/// What one target did.
struct Outcome {
    cases: u64,
    elapsed: Duration,
    failure: Option<String>,
}

/// Runs `cases` cases of `target` in batches over `threads` threads; stops at the first failure.
fn fuzz(target: &Target, cases: u64, seed: u64, threads: u64, verbose: bool) -> Outcome {
    let batches = cases.div_ceil(BATCH);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let worker = || {
                loop {
                    let batch = next.fetch_add(1, Ordering::Relaxed);
                    let failed = failure.lock().map_or(true, |f| f.is_some());
                    if batch >= batches || failed {
                        break;
                    }
                    let n = BATCH.min(cases - batch * BATCH);
                    let mut runner = runner(n, seed, target.name, batch);
                    if let Err(e) = (target.run)(&mut runner) {
                        if let Ok(mut failure) = failure.lock() {
                            failure.get_or_insert(format!("batch {batch}: {e}"));
                        }
                        break;
                    }
                    let total = done.fetch_add(n, Ordering::Relaxed) + n;
                    if verbose && (batch + 1).is_multiple_of(40) {
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!("  {} … {total} cases, {secs:.0} s", target.name);
                    }
                }
            };
            std::thread::Builder::new()
                .name(format!("fuzz-{}", target.name))
                .stack_size(STACK_SIZE)
                .spawn_scoped(scope, worker)
                .expect("a fuzz thread starts");
        }
    });
    Outcome {
        cases: done.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        failure: failure.into_inner().ok().flatten(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test` does not.
    let long = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let fixed_cases = env_u64("FUZZ_CASES");
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        if long {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| splitmix(d.as_nanos() as u64))
        } else {
            // The short run is a test: the same cases every time.
            0x5eed
        }
    });
    let threads = env_u64("FUZZ_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
        .max(1);
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f)))
        .collect();
    println!(
        "fuzz: {} run, seed {seed}, {threads} threads",
        if long { "long" } else { "short" }
    );
    let mut total = 0;
    let mut total_time = Duration::ZERO;
    let mut failed = false;
    for target in targets {
        let cases = fixed_cases.unwrap_or(if long {
            target.long_cases
        } else {
            target.short_cases
        });
        let outcome = fuzz(target, cases, seed, threads, long);
        let secs = outcome.elapsed.as_secs_f64();
        println!(
            "{:<9} {:>10} cases {:>9.1} s {:>10.0} cases/s",
            target.name,
            outcome.cases,
            secs,
            outcome.cases as f64 / secs.max(1e-9)
        );
        total += outcome.cases;
        total_time += outcome.elapsed;
        if let Some(failure) = outcome.failure {
            println!("FAILED {} (FUZZ_SEED={seed}): {failure}", target.name);
            failed = true;
        }
    }
    let secs = total_time.as_secs_f64();
    println!(
        "total     {total:>10} cases {secs:>9.1} s {:>10.0} cases/s",
        total as f64 / secs.max(1e-9)
    );
    if failed {
        std::process::exit(1);
    }
}
