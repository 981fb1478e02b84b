//! The admin listener's accept loop: plain HTTP/1.1 on a loopback address (the config
//! refuses any other), each request answered by [`crate::admin`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::runtime::Current;

use super::limits::{self, Gate, Timeouts, Tracked, Watched};

/// How long a client may take to send a request's head, from its first byte.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `stop` turns true, then closes idle connections and lets the ones
/// mid-request finish. Connections are counted by `gate` (`connections.max_admin`) and
/// closed when idle like the other listeners' ([`super::limits`]).
pub(super) async fn serve(
    listener: TcpListener,
    current: Arc<Current>,
    gate: Arc<Gate>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let admitted = tokio::select! {
            admitted = super::admit_next(&listener, "admin listener", &current, &gate, super::MAX_ADMIN) => admitted,
            _ = stop.changed() => break,
        };
        let super::Admitted {
            tcp,
            peer,
            permit,
            activity,
            ..
        } = admitted;
        let runtime = current.load();
        activity.watch_heads();
        let timeouts = Timeouts {
            head: HEADER_READ_TIMEOUT,
            ..Timeouts::of(runtime.config())
        };
        let timer = runtime.clock().timer();
        drop(runtime);
        let current = current.clone();
        let gate = gate.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = {
                let activity = activity.clone();
                service_fn(move |req| {
                    let runtime = current.load();
                    let in_flight = activity.request();
                    async move {
                        let response = crate::admin::answer(&runtime, &req).await;
                        Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
                    }
                })
            };
            let io = TokioIo::new(Watched::new(tcp, activity.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(timer)
                // A backstop: `limits::serve` times heads and idle time first.
                .header_read_timeout(timeouts.idle + HEADER_READ_TIMEOUT)
                .serve_connection(io, service);
            let served = limits::serve(
                conn,
                |conn| conn.graceful_shutdown(),
                activity.clone(),
                timeouts,
                stop,
                gate.clone(),
            )
            .await;
            if let Err(err) = served {
                tracing::debug!(%peer, error = %err, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
}
