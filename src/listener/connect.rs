//! The connect page's listener: server TLS only (browsers have no client certificate), with
//! the certificate current at each handshake; every request to [`crate::connect`] with the
//! runtime current then.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::runtime::Current;

/// Accepts until `stop` changes; every connection is cut when `cut` turns true.
pub(super) async fn serve(
    current: Arc<Current>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "connect listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let current = current.clone();
        let mut cut = cut.clone();
        let connection = async move {
            let at_handshake = current.load();
            // `[connect]` cannot come or go without a restart, so its TLS is always there.
            let Some(tls) = at_handshake.connect_tls().cloned() else {
                return;
            };
            let handshake = at_handshake
                .clock()
                .timeout(
                    at_handshake.config().api.handshake_timeout,
                    TlsAcceptor::from(tls).accept(tcp),
                )
                .await;
            let builder = super::http::builder(&at_handshake.config().api, at_handshake.clock());
            drop(at_handshake);
            let Ok(Ok(tls)) = handshake else {
                tracing::debug!(%peer, "connect listener: TLS handshake failed");
                return;
            };
            let service = service_fn(move |req| {
                let runtime = current.load();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::connect::handle(&runtime, req).await)
                }
            });
            if let Err(err) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %err, "connect connection ended with an error");
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                _ = cut.changed() => {}
            }
        });
    }
}
