//! The data plane's cores: how many there are, and which one the running thread is.
//!
//! The api listener runs one thread per core, each with a current-thread tokio runtime that
//! owns the connections it accepted and everything they start (the listener's module docs,
//! `listener::cores`, say how). Per-core state below the listener, such as the upstream
//! connection pools ([`crate::upstream::Upstream`]), picks its share with [`current`]: a
//! request then never leaves the thread that accepted its connection, and a connection made
//! for it is driven by that same thread.
//!
//! Everything else (the admin and connect listeners, the admin socket, background flushes)
//! runs on the process's main runtime, where [`current`] is `None`.

use std::cell::Cell;
use std::num::NonZeroUsize;

thread_local! {
    static CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The data-plane core this thread serves, counted from 0; `None` off the data plane.
pub fn current() -> Option<usize> {
    CORE.with(Cell::get)
}

/// The CPUs this process may use: its affinity mask and its cgroup's CPU quota, rounded
/// down (std's `available_parallelism`), at least 1. The default number of cores.
pub fn usable_cpus() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Which of `shares` per-core things (one for the main runtime, then one per core) this
/// thread uses: 0 off the data plane, else 1 + its core, wrapped into range.
pub(crate) fn share(shares: usize) -> usize {
    match (current(), shares) {
        (_, 0 | 1) | (None, _) => 0,
        (Some(core), n) => 1 + core % (n - 1),
    }
}
