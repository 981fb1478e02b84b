//! Time, from one source: the system clock in the service, a clock that a test moves by hand.
//!
//! Everything in patgate that reads the time or waits on it goes through a [`Clock`]: the
//! signature window, vault timestamps, connect-link expiry, rate limits and host holds
//! (governor reads a [`Clock`] as its clock), and the timeouts of connections and requests
//! (hyper's timer is [`Clock::timer`]). A test makes a [`ManualClock`] and calls
//! [`ManualClock::advance`]: nothing then sleeps on the wall clock, and what depends on time
//! happens at the moment the test says.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::nanos::Nanos;

/// Seconds since the Unix epoch by the system clock: for code outside the service (the
/// command line's signing client, benchmarks). The service reads [`Clock::unix_now`].
pub fn unix_now() -> u64 {
    seconds_since_epoch(SystemTime::now())
}

fn seconds_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Where the service reads the time. Cheap to clone; the clones read one source.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    /// The system's clocks; the instant is when this clock was made (governor's zero).
    System(Instant),
    Manual(Arc<Manual>),
}

impl Clock {
    /// The system clock (wall time) and the monotonic clock (waits and rate limits).
    pub fn system() -> Clock {
        Clock(Source::System(Instant::now()))
    }

    /// The wall-clock time now.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            Source::System(_) => SystemTime::now(),
            Source::Manual(manual) => {
                let state = manual.lock();
                manual.start + state.elapsed
            }
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_now(&self) -> u64 {
        seconds_since_epoch(self.now())
    }

    /// Monotonic time since this clock was made: never goes back, whatever the wall clock
    /// does.
    pub fn elapsed(&self) -> Duration {
        match &self.0 {
            Source::System(start) => start.elapsed(),
            Source::Manual(manual) => manual.lock().elapsed,
        }
    }

    /// Completes once `duration` has passed on this clock.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        match &self.0 {
            Source::System(_) => Sleep(SleepInner::System(Box::pin(tokio::time::sleep(duration)))),
            Source::Manual(manual) => {
                let deadline = manual.lock().elapsed.saturating_add(duration);
                Sleep(SleepInner::Manual(manual.sleeper(deadline)))
            }
        }
    }

    /// `future`, or [`Elapsed`] once `duration` has passed on this clock.
    pub async fn timeout<F: Future>(
        &self,
        duration: Duration,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        tokio::select! {
            biased;
            output = future => Ok(output),
            () = self.sleep(duration) => Err(Elapsed(duration)),
        }
    }

    /// This clock as hyper's timer (header read timeouts, keep-alive pings).
    pub fn timer(&self) -> Timer {
        Timer(self.clone())
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.elapsed())
    }
}

/// A [`Clock::timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {}s", .0.as_secs_f64())]
pub struct Elapsed(pub Duration);

/// A clock that stands still until [`ManualClock::advance`] moves it (for tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Manual>);

impl ManualClock {
    /// A clock that reads `start` until it is advanced.
    pub fn starting_at(start: SystemTime) -> ManualClock {
        ManualClock(Arc::new(Manual {
            start,
            base: Instant::now(),
            state: Mutex::new(ManualState::default()),
        }))
    }

    /// Starts at the system's time now.
    pub fn new() -> ManualClock {
        Self::starting_at(SystemTime::now())
    }

    /// The clock to hand to the service.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(self.0.clone()))
    }

    /// Moves time forward: every sleep whose deadline is reached completes.
    pub fn advance(&self, by: Duration) {
        let wakers: Vec<Waker> = {
            let mut state = self.0.lock();
            state.elapsed = state.elapsed.saturating_add(by);
            let now = state.elapsed;
            let due: Vec<u64> = state
                .sleepers
                .iter()
                .filter(|(_, (deadline, _))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            due.iter()
                .filter_map(|id| state.sleepers.remove(id))
                .filter_map(|(_, waker)| waker)
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// How many sleeps are waiting on this clock (a test can wait until the service is
    /// waiting before it advances).
    pub fn sleepers(&self) -> usize {
        self.0.lock().sleepers.len()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Manual {
    /// The wall time at `elapsed == 0`.
    start: SystemTime,
    /// The `Instant` that stands for `elapsed == 0` in hyper's timer.
    base: Instant,
    state: Mutex<ManualState>,
}

#[derive(Debug, Default)]
struct ManualState {
    elapsed: Duration,
    next_id: u64,
    /// Sleeps not yet due: id → (deadline, the waker of its last poll).
    sleepers: HashMap<u64, (Duration, Option<Waker>)>,
}

impl Manual {
    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        // Every update is a few plain assignments: a panic cannot leave it half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleeper(self: &Arc<Self>, deadline: Duration) -> ManualSleep {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        if deadline > state.elapsed {
            state.sleepers.insert(id, (deadline, None));
        }
        ManualSleep {
            clock: self.clone(),
            id,
            deadline,
        }
    }
}

/// A wait on a [`Clock`].
#[derive(Debug)]
pub struct Sleep(SleepInner);

impl Sleep {
    /// Waits `duration` from now instead, reusing this wait (the system clock's timer entry
    /// is reset in place, as `tokio::time::Sleep::reset` does: no allocation).
    pub fn reset(&mut self, duration: Duration) {
        match &mut self.0 {
            SleepInner::System(sleep) => {
                sleep.as_mut().reset(tokio::time::Instant::now() + duration)
            }
            SleepInner::Manual(sleep) => {
                let clock = sleep.clock.clone();
                let deadline = clock.lock().elapsed.saturating_add(duration);
                *sleep = clock.sleeper(deadline);
            }
        }
    }
}

#[derive(Debug)]
enum SleepInner {
    System(Pin<Box<tokio::time::Sleep>>),
    Manual(ManualSleep),
}

#[derive(Debug)]
struct ManualSleep {
    clock: Arc<Manual>,
    id: u64,
    deadline: Duration,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            SleepInner::System(sleep) => sleep.as_mut().poll(cx),
            SleepInner::Manual(sleep) => {
                let mut state = sleep.clock.lock();
                if state.elapsed >= sleep.deadline {
                    state.sleepers.remove(&sleep.id);
                    return Poll::Ready(());
                }
                state
                    .sleepers
                    .insert(sleep.id, (sleep.deadline, Some(cx.waker().clone())));
                Poll::Pending
            }
        }
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        self.clock.lock().sleepers.remove(&self.id);
    }
}

impl hyper::rt::Sleep for Sleep {}

/// A [`Clock`] as hyper's [`hyper::rt::Timer`].
#[derive(Debug, Clone)]
pub struct Timer(Clock);

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.sleep(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let duration = deadline.saturating_duration_since(hyper::rt::Timer::now(self));
        Box::pin(self.0.sleep(duration))
    }

    fn now(&self) -> Instant {
        match &self.0 .0 {
            Source::System(_) => Instant::now(),
            Source::Manual(manual) => manual.base + manual.lock().elapsed,
        }
    }
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-11-24T16:02:11Z` (what every answer, listing
/// and page shows for a time).
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_completes_sleeps_when_advanced_past_them() {
        let manual = ManualClock::starting_at(UNIX_EPOCH + Duration::from_secs(1_000));
        let clock = manual.clock();
        assert_eq!(clock.unix_now(), 1_000);
        let mut short = Box::pin(clock.sleep(Duration::from_secs(5)));
        let mut long = Box::pin(clock.sleep(Duration::from_secs(60)));
        let poll = |sleep: &mut Pin<Box<Sleep>>| {
            sleep
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_ready()
        };
        assert!(!poll(&mut short) && !poll(&mut long));
        assert_eq!(manual.sleepers(), 2);
        manual.advance(Duration::from_secs(5));
        assert!(poll(&mut short));
        assert!(!poll(&mut long));
        assert_eq!(clock.unix_now(), 1_005);
        assert_eq!(clock.elapsed(), Duration::from_secs(5));
        drop(long);
        assert_eq!(manual.sleepers(), 0, "a dropped sleep is forgotten");
        assert!(poll(&mut Box::pin(clock.sleep(Duration::ZERO))));
    }

    #[tokio::test]
    async fn a_timeout_on_a_manual_clock_fires_only_when_advanced() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move {
                clock
                    .timeout(Duration::from_secs(30), std::future::pending::<()>())
                    .await
            }
        });
        while manual.sleepers() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        manual.advance(Duration::from_secs(30));
        assert_eq!(
            waiting.await.unwrap(),
            Err(Elapsed(Duration::from_secs(30)))
        );
    }

    #[test]
    fn hyper_deadlines_are_read_on_the_manual_clock() {
        use hyper::rt::Timer as _;
        let manual = ManualClock::new();
        let timer = manual.clock().timer();
        let before = timer.now();
        manual.advance(Duration::from_millis(1_500));
        assert_eq!(timer.now() - before, Duration::from_millis(1_500));
    }
}
