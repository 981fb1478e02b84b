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

/// Marks this thread as core `index` of the data plane, for as long as it lives.
pub(crate) fn enter(index: usize) {
    CORE.with(|core| core.set(Some(index)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_off_the_data_plane_uses_the_main_share() {
        assert_eq!(current(), None);
        assert_eq!(share(3), 0);
    }

    #[test]
    fn a_core_uses_its_own_share_and_wraps_when_there_are_fewer() {
        std::thread::spawn(|| {
            enter(1);
            assert_eq!(current(), Some(1));
            assert_eq!(share(3), 2);
            assert_eq!(share(2), 1);
            assert_eq!(share(1), 0);
        })
        .join()
        .unwrap();
    }
}
