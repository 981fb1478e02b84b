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

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `stop` turns true, then closes idle connections and lets the ones
/// mid-request finish.
pub(super) async fn serve(
    listener: TcpListener,
    current: Arc<Current>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let current = current.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let timer = current.load().clock().timer();
            let service = service_fn(move |req| {
                let runtime = current.load();
                async move { Ok::<_, Infallible>(crate::admin::answer(&runtime, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(timer)
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "admin connection ended with an error");
            }
        });
    }
}
