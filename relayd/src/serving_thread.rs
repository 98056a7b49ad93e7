//! Which serving thread the current code runs on. A low-level primitive on purpose: the serving
//! threads ([`crate::workers`]) set it, and the per-thread resources below them (the upstream
//! client pools, the Redis coordinator's connections) read it without depending on the server.

use std::cell::Cell;

thread_local! {
    /// 0 outside the serving threads; `i + 1` on serving thread `i`.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Which serving thread this is: `1..=workers` on the serving threads, 0 anywhere else (the
/// main runtime, tests). Per-thread resources are indexed by it.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the calling thread as serving thread `i` (0-based), once, when it starts.
pub(crate) fn enter(i: usize) {
    INDEX.with(|w| w.set(i + 1));
}
