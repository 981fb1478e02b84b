//! The connect page's listener: server TLS only (browsers have no client certificate), with
//! the certificate current at each handshake; every request to [`crate::connect`] with the
//! runtime current then. The same connection limits as the api listener
//! ([`super::limits`]), with its own cap (`connections.max_connect`) and none per client: a
//! browser has no identity before it opens a link.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::runtime::Current;

use super::limits::{self, Gate, Timeouts, Tracked, Watched};

/// Accepts until `stop` changes; every connection is counted by `gate` and cut when `cut`
/// turns true.
pub(super) async fn serve(
    current: Arc<Current>,
    listener: TcpListener,
    gate: Arc<Gate>,
    mut stop: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    loop {
        let admitted = tokio::select! {
            admitted = super::admit_next(&listener, "connect listener", &current, &gate, super::MAX_CONNECT) => admitted,
            _ = stop.changed() => break,
        };
        let super::Admitted {
            tcp,
            peer,
            permit,
            activity,
            accepted,
        } = admitted;
        let current = current.clone();
        let gate = gate.clone();
        let stop = stop.clone();
        let mut cut = cut.clone();
        let connection = async move {
            let at_handshake = current.load();
            // `[connect]` cannot come or go without a restart, so its TLS is always there.
            let Some(tls) = at_handshake.connect_tls().cloned() else {
                return;
            };
            let clock = at_handshake.clock().clone();
            let timeouts = Timeouts::of(at_handshake.config());
            let handshake = clock
                .timeout(
                    timeouts.handshake_left(&clock, accepted),
                    TlsAcceptor::from(tls).accept(tcp),
                )
                .await;
            let builder = super::http::builder(
                &at_handshake.config().api,
                &at_handshake.config().connections,
                &clock,
            );
            drop(at_handshake);
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    let reason = crate::tls::handshake_refusal_reason(&err);
                    gate.handshake_refused(reason);
                    tracing::debug!(%peer, error = %err, reason, "connect listener: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    gate.closed("handshake-timeout").inc();
                    gate.handshake_refused("timeout");
                    tracing::debug!(%peer, "connect listener: TLS handshake timed out");
                    return;
                }
            };
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                activity.watch_heads();
            }
            let service = {
                let activity = activity.clone();
                service_fn(move |mut req: Request<Incoming>| {
                    let runtime = current.load();
                    req.extensions_mut().insert(limits::body_deadline(&runtime));
                    let in_flight = activity.request();
                    async move {
                        let response = crate::connect::handle(&runtime, req).await;
                        Ok::<_, std::convert::Infallible>(
                            response.map(|body| Tracked::new(body, in_flight)),
                        )
                    }
                })
            };
            let io = TokioIo::new(Watched::new(tls, activity.clone()));
            let conn = builder.serve_connection(io, service).into_owned();
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
                tracing::debug!(%peer, error = %err, "connect connection ended with an error");
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                _ = cut.changed() => {}
            }
            drop(permit);
        });
    }
}
