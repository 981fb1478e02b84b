//! systemd integration (`Type=notify`): readiness, reload and stop notices, `STATUS=` lines,
//! and watchdog pings.
//!
//! Each notice is one datagram to `$NOTIFY_SOCKET`; without it (not under systemd) nothing is
//! sent. A notice that cannot be sent is logged and otherwise ignored: the service serves the
//! same either way.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::listener::ServerHandle;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// The `STATUS=` line while serving.
pub(crate) fn serving_status(handle: &ServerHandle) -> String {
    let runtime = handle.runtime();
    format!("serving {} integrations", runtime.integration_count())
}

/// `READY=1`: the listeners are bound and the vault is open (at start), or a reload is over
/// (whether it was applied or refused: either way a config is serving).
pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=`, which systemd 253+ uses to match the reload it
/// asked for; older versions ignore it.
pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// `STOPPING=1`: shutdown has begun.
pub(crate) fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing requests in flight"),
    ]);
}

/// When systemd set `WATCHDOG_USEC` for this process: pings `WATCHDOG=1` at half of it, from
/// a task on the async runtime that first takes the runtime in force, so a ping shows that
/// the scheduler runs and requests can get a runtime. Answers the period.
pub(crate) fn spawn_watchdog(handle: ServerHandle) -> Option<Duration> {
    let period = sd_notify::watchdog_enabled()? / 2;
    if period.is_zero() {
        return None;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            drop(handle.runtime());
            notify(&[NotifyState::Watchdog]);
        }
    });
    Some(period)
}
