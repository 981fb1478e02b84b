//! The HTTP side of the api and connect listeners, made per connection from the config in
//! force at its handshake (so a reload changes the timeouts and limits of new connections).

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

use crate::clock::Clock;
use crate::config::{ApiListener, ConnectionLimits};

/// HTTP/1.1 and HTTP/2 with the api listener's limits; hyper's timers read `clock`.
///
/// The idle and request-head timeouts are enforced around the connection
/// ([`super::limits::serve`]): hyper starts its own header timer when it waits for a head,
/// idle time included, so here it is only a backstop that never fires first.
pub(super) fn builder(
    api: &ApiListener,
    limits: &ConnectionLimits,
    clock: &Clock,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(clock.timer())
        .header_read_timeout(limits.idle_timeout + api.header_read_timeout)
        .max_buf_size(api.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(clock.timer())
        .max_header_list_size(u32::try_from(api.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // Caps the number of streams a client can reset without them ever being answered
        // (CVE-2023-44487, "rapid reset").
        .max_pending_accept_reset_streams(64);
    builder
}
