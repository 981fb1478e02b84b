//! What one client may hold: how many connections each listener keeps open (in total, and
//! per client identity on the api listener), and how long a connection may sit without a
//! request or take to send a request head (`[connections]`, `api.handshake_timeout_ms`,
//! `api.header_read_timeout_ms`).
//!
//! | piece | counts or watches | on the limit |
//! |---|---|---|
//! | [`Gate`] | open connections of one listener, from the TCP accept; per client identity | the TCP connection is closed at once; past the per-client cap, answered 503 |
//! | [`Activity`] | one connection: requests in flight, when it went idle, when a head began | [`serve`] closes it (an HTTP/2 one with a GOAWAY) |
//! | [`Watched`] | the bytes a connection reads, for the start of a request head | |
//! | [`Tracked`] | a response body: the request is in flight until it is sent | |
//!
//! Every deadline is counted from a moment taken before the change it follows becomes
//! visible in the metrics (the accept before `connections_open` rises, the end of an answer
//! before `requests_in_flight` falls), so a test that waits for the metric and then moves a
//! [`crate::clock::ManualClock`] sees the deadline exactly where the config puts it.
//!
//! The limits are read from the runtime in force at each accept; the counts live in the
//! [`Gate`] for the whole process, so a reload changes the caps without forgetting who is
//! connected.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::{ConnectionReasonLabels, ListenerLabels, Metrics};

/// The open connections of one listener.
#[derive(Debug)]
pub(super) struct Gate {
    listener: &'static str,
    open: AtomicUsize,
    /// Open connections per client identity (only identities with one or more).
    clients: Mutex<HashMap<Arc<str>, usize>>,
    /// Woken when `open` falls to 0.
    drained: Notify,
    open_gauge: Gauge,
    in_flight_gauge: Gauge,
    metrics: Arc<Metrics>,
}

impl Gate {
    pub(super) fn new(listener: &'static str, metrics: &Arc<Metrics>) -> Arc<Gate> {
        let labels = ListenerLabels { listener };
        Arc::new(Gate {
            listener,
            open: AtomicUsize::new(0),
            clients: Mutex::default(),
            drained: Notify::new(),
            open_gauge: metrics.connections.open.get_or_create(&labels).clone(),
            in_flight_gauge: metrics
                .connections
                .requests_in_flight
                .get_or_create(&labels)
                .clone(),
            metrics: metrics.clone(),
        })
    }

    /// A new connection, just accepted: a permit while fewer than `max` are open, else
    /// counted as refused (`reason="total"`).
    pub(super) fn admit(self: &Arc<Self>, max: usize) -> Option<Permit> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.refused("total");
            return None;
        }
        self.open_gauge.inc();
        Some(Permit { gate: self.clone() })
    }

    /// The connection's client identity, once known: a permit while it has fewer than `max`
    /// connections open, else counted as refused (`reason="per-client"`).
    pub(super) fn admit_client(
        self: &Arc<Self>,
        client: &Arc<str>,
        max: usize,
    ) -> Option<ClientPermit> {
        let mut clients = self.lock_clients();
        let open = clients.entry(client.clone()).or_insert(0);
        if *open >= max {
            drop(clients);
            self.refused("per-client");
            return None;
        }
        *open += 1;
        Some(ClientPermit {
            gate: self.clone(),
            client: client.clone(),
        })
    }

    /// Completes once no connection of this listener is open.
    pub(super) async fn drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }

    /// The bookkeeping of one connection's requests and idle time, from `accepted` on.
    pub(super) fn activity(&self, clock: &Clock, accepted: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            clock: clock.clone(),
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: accepted,
                head_since: None,
            }),
            watch_heads: AtomicBool::new(false),
            heads_watched: AtomicBool::new(false),
            changed: Notify::new(),
            in_flight_gauge: self.in_flight_gauge.clone(),
        })
    }

    /// Counts a connection patgate closed because its client took too long.
    pub(super) fn closed(&self, reason: &'static str) -> Counter {
        self.metrics
            .connections
            .closed
            .get_or_create(&ConnectionReasonLabels {
                listener: self.listener,
                reason,
            })
            .clone()
    }

    /// Counts a TLS handshake refused for `reason` (one of
    /// [`crate::metrics::HANDSHAKE_REFUSAL_REASONS`]).
    pub(super) fn handshake_refused(&self, reason: &'static str) {
        self.metrics
            .connections
            .handshake_refusals
            .get_or_create(&ConnectionReasonLabels {
                listener: self.listener,
                reason,
            })
            .inc();
    }

    fn refused(&self, reason: &'static str) {
        self.metrics
            .connections
            .refused
            .get_or_create(&ConnectionReasonLabels {
                listener: self.listener,
                reason,
            })
            .inc();
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Every update is one insert or decrement: a panic cannot leave it half-done.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open connection of a [`Gate`]; dropping it closes the count.
#[derive(Debug)]
pub(super) struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.open_gauge.dec();
        if self.gate.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gate.drained.notify_waiters();
        }
    }
}

/// One open connection of a client identity.
#[derive(Debug)]
pub(super) struct ClientPermit {
    gate: Arc<Gate>,
    client: Arc<str>,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut clients = self.gate.lock_clients();
        if let Some(open) = clients.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// How long a connection may go without a request, from the config in force at its accept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) handshake: Duration,
    /// No request in flight and no head begun.
    pub(super) idle: Duration,
    /// A request head, from its first byte (HTTP/1.1).
    pub(super) head: Duration,
}

impl Timeouts {
    pub(super) fn of(config: &Config) -> Timeouts {
        Timeouts {
            handshake: config.api.handshake_timeout,
            idle: config.connections.idle_timeout,
            head: config.api.header_read_timeout,
        }
    }

    /// How long what remains of the handshake may take, counted from `accepted`.
    pub(super) fn handshake_left(&self, clock: &Clock, accepted: Duration) -> Duration {
        (accepted + self.handshake).saturating_sub(clock.elapsed())
    }
}

/// Why [`serve`] closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No request in flight for `idle_timeout_ms`.
    Idle,
    /// A request head begun and not finished within `header_read_timeout_ms`.
    Head,
}

impl Expiry {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Expiry::Idle => "idle-timeout",
            Expiry::Head => "header-timeout",
        }
    }
}

/// One connection's requests and idle time.
#[derive(Debug)]
pub(super) struct Activity {
    clock: Clock,
    state: Mutex<State>,
    /// Set while idle and no byte has arrived since: the next byte read begins a head.
    watch_heads: AtomicBool,
    /// Whether heads are timed at all: HTTP/1.1. An HTTP/2 connection sends frames of its
    /// own (PING, SETTINGS) between requests, so it is held to the idle timeout only.
    heads_watched: AtomicBool,
    changed: Notify,
    in_flight_gauge: Gauge,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// When the last request ended (or the connection was accepted), on the clock.
    idle_since: Duration,
    /// When the first byte arrived after `idle_since`, if one did.
    head_since: Option<Duration>,
}

impl Activity {
    /// Times request heads from their first byte from now on (an HTTP/1.1 connection).
    pub(super) fn watch_heads(&self) {
        self.heads_watched.store(true, Ordering::Release);
        let state = self.lock();
        if state.in_flight == 0 && state.head_since.is_none() {
            self.watch_heads.store(true, Ordering::Release);
        }
    }

    /// A request arrived: in flight until the returned guard drops (with the answer's body).
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        {
            let mut state = self.lock();
            state.in_flight += 1;
            state.head_since = None;
        }
        self.watch_heads.store(false, Ordering::Release);
        self.in_flight_gauge.inc();
        self.changed.notify_one();
        InFlight {
            activity: self.clone(),
        }
    }

    fn request_done(&self) {
        {
            let mut state = self.lock();
            state.in_flight -= 1;
            if state.in_flight == 0 {
                state.idle_since = self.clock.elapsed();
                state.head_since = None;
                self.watch_heads.store(
                    self.heads_watched.load(Ordering::Acquire),
                    Ordering::Release,
                );
            }
        }
        self.in_flight_gauge.dec();
        self.changed.notify_one();
    }

    fn bytes_read(&self) {
        if !self.watch_heads.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(self.clock.elapsed());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed if nothing changes, and why; `None` while a
    /// request is in flight.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Duration, Expiry)> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_since {
            Some(begun) => (begun + timeouts.head, Expiry::Head),
            None => (state.idle_since + timeouts.idle, Expiry::Idle),
        })
    }

    /// Completes when the connection has been idle, or on a request head, for too long.
    // Owned and boxed, so [`Served`] holds it without borrowing.
    fn expired(
        self: Arc<Self>,
        timeouts: Timeouts,
    ) -> Pin<Box<dyn Future<Output = Expiry> + Send>> {
        Box::pin(async move {
            loop {
                let changed = self.changed.notified();
                match self.deadline(&timeouts) {
                    None => changed.await,
                    Some((at, expiry)) => {
                        let now = self.clock.elapsed();
                        if at <= now {
                            return expiry;
                        }
                        tokio::select! {
                            () = self.clock.sleep(at - now) => {}
                            () = changed => {}
                        }
                    }
                }
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a few plain assignments: a panic cannot leave it half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub(super) struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.request_done();
    }
}

/// The body deadline of a request arriving now: `connections.body_read_timeout` from now on
/// the runtime's clock, for `inbound::read_body` to find among the request's extensions.
pub(super) fn body_deadline(runtime: &crate::runtime::Runtime) -> crate::inbound::BodyDeadline {
    let arrived = runtime.clock().elapsed();
    crate::inbound::BodyDeadline::new(
        runtime.clock(),
        arrived + runtime.config().connections.body_read_timeout,
    )
}

/// How long, and how much, a refused TLS handshake's connection is read after the alert.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// Closes a connection whose TLS handshake was refused so that the client reads the alert:
/// the write side is shut (the alert is out, then FIN) and what the client still sends (in
/// TLS 1.3, its first request right after its certificate) is read and dropped until it
/// closes, for at most [`LINGER`] and [`LINGER_BYTES`]. Closing at once with that request
/// unread makes the kernel answer with a reset, which can reach the client before it has
/// read the alert: it would see "connection closed" instead of "unknown CA".
pub(super) async fn linger(mut tcp: tokio::net::TcpStream, clock: &Clock) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if tcp.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = clock.timeout(LINGER, drain).await;
}
/// Serves `conn` until it ends, the server stops (`stop` turns true: a graceful close) or
/// its client has been idle or slow for too long ([`Activity`]). An idle connection gets a
/// graceful close (HTTP/2: GOAWAY) and `timeouts.head` more to let go before it is
/// dropped; one past its head deadline is dropped at once.
pub(super) fn serve<C, E>(
    conn: C,
    close: fn(Pin<&mut C>),
    activity: Arc<Activity>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
    gate: Arc<Gate>,
) -> Served<C>
where
    C: Future<Output = Result<(), E>>,
{
    Served {
        conn: Box::pin(conn),
        close,
        stopping: Box::pin(async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        }),
        expiry: activity.clone().expired(timeouts),
        phase: Phase::Serving,
        activity,
        timeouts,
        gate,
    }
}

/// The future of [`serve`]. Written out rather than an `async fn`: the async version,
/// generic over hyper's connection types, fails rustc's higher-ranked `Send` check once
/// spawned.
pub(super) struct Served<C> {
    conn: Pin<Box<C>>,
    close: fn(Pin<&mut C>),
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    expiry: Pin<Box<dyn Future<Output = Expiry> + Send>>,
    phase: Phase,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    gate: Arc<Gate>,
}

enum Phase {
    Serving,
    /// The server is stopping: requests in flight finish (the shutdown grace bounds them).
    Stopping,
    /// Closed for a timeout: the client has until this sleep to let go.
    Closing(Pin<Box<crate::clock::Sleep>>),
}

impl<C, E> Future for Served<C>
where
    C: Future<Output = Result<(), E>>,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            match &mut this.phase {
                Phase::Serving => {
                    if this.stopping.as_mut().poll(cx).is_ready() {
                        (this.close)(this.conn.as_mut());
                        this.phase = Phase::Stopping;
                    } else if let Poll::Ready(expiry) = this.expiry.as_mut().poll(cx) {
                        this.gate.closed(expiry.reason()).inc();
                        tracing::debug!(
                            listener = this.gate.listener,
                            reason = expiry.reason(),
                            "closing a connection"
                        );
                        if expiry == Expiry::Head {
                            // Mid-head there is nothing to finish: hyper would wait for the
                            // rest of it before closing.
                            return Poll::Ready(Ok(()));
                        }
                        (this.close)(this.conn.as_mut());
                        let sleep = this.activity.clock.sleep(this.timeouts.head);
                        this.phase = Phase::Closing(Box::pin(sleep));
                    } else {
                        return Poll::Pending;
                    }
                    // The close may let the connection finish at once: poll it again.
                }
                Phase::Stopping => return Poll::Pending,
                Phase::Closing(sleep) => {
                    return match sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// A connection's byte stream, telling its [`Activity`] when bytes arrive.
#[derive(Debug)]
pub(super) struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub(super) fn new(io: IO, activity: Arc<Activity>) -> Watched<IO> {
        Watched { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request [`InFlight`] until it is sent in full (or
/// dropped), so a connection streaming an answer is never idle.
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    pub(super) fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            body,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the process's descriptor limit allows against what the connection caps need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptors {
    /// The soft RLIMIT_NOFILE before patgate raised it (`None`: unlimited).
    pub(crate) before: Option<u64>,
    /// The soft limit now.
    pub(crate) now: Option<u64>,
    pub(crate) needed: u64,
}

impl Descriptors {
    pub(crate) fn enough(&self) -> bool {
        self.now.is_none_or(|now| now >= self.needed)
    }
}

/// The soft limit to ask for: `needed`, as far as the hard limit allows; `None` when the
/// soft limit is enough already.
fn soft_limit_to_ask(soft: Option<u64>, hard: Option<u64>, needed: u64) -> Option<u64> {
    let soft = soft?;
    if soft >= needed {
        return None;
    }
    let target = hard.map_or(needed, |hard| hard.min(needed));
    (target > soft).then_some(target)
}

/// Raises the soft RLIMIT_NOFILE to what `[connections]` needs
/// ([`crate::config::ConnectionLimits::descriptors_needed`]) where the hard limit allows, and
/// logs a warning when the process still has fewer: past the limit, accepts fail with
/// "Too many open files" and every client waits, whatever the caps say.
pub(crate) fn ensure_descriptors(limits: &crate::config::ConnectionLimits) -> Descriptors {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let needed = limits.descriptors_needed();
    let before = getrlimit(Resource::Nofile);
    if let Some(target) = soft_limit_to_ask(before.current, before.maximum, needed) {
        let raised = Rlimit {
            current: Some(target),
            maximum: before.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %err, "cannot raise RLIMIT_NOFILE");
        }
    }
    let check = Descriptors {
        before: before.current,
        now: getrlimit(Resource::Nofile).current,
        needed,
    };
    let show = |limit: Option<u64>| limit.map_or("unlimited".to_string(), |l| l.to_string());
    if !check.enough() {
        tracing::warn!(
            limit = %show(check.now),
            needed,
            "the open-file limit (RLIMIT_NOFILE) is below what [connections] needs (2 x max_api + max_connect + max_admin + 256): raise LimitNOFILE in the systemd unit (or ulimit -n), or lower the caps"
        );
    } else if check.before != check.now {
        tracing::info!(
            from = %show(check.before),
            to = %show(check.now),
            "raised the open-file limit (RLIMIT_NOFILE) for [connections]"
        );
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_descriptor_limit_is_raised_only_as_far_as_needed_and_allowed() {
        assert_eq!(
            soft_limit_to_ask(Some(1024), Some(524_288), 8_736),
            Some(8_736)
        );
        assert_eq!(
            soft_limit_to_ask(Some(1024), Some(4_096), 8_736),
            Some(4_096)
        );
        assert_eq!(soft_limit_to_ask(Some(1024), None, 8_736), Some(8_736));
        assert_eq!(soft_limit_to_ask(Some(16_384), Some(16_384), 8_736), None);
        assert_eq!(soft_limit_to_ask(None, None, 8_736), None);
        assert_eq!(soft_limit_to_ask(Some(1024), Some(1024), 8_736), None);
    }

    #[test]
    fn a_limit_below_the_caps_is_reported() {
        let limits = crate::config::ConnectionLimits::default();
        let check = ensure_descriptors(&limits);
        assert_eq!(check.needed, limits.descriptors_needed());
        // This process may or may not be allowed that many; either way the check says
        // which, and agrees with the limit in force.
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        assert_eq!(check.now, now);
        assert_eq!(check.enough(), now.is_none_or(|n| n >= check.needed));
    }
}
