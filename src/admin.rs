//! The admin listener: plain HTTP/1.1 on a loopback address (`admin.listen`; the config
//! refuses any other) for operators and their tools.
//!
//! | path | answer |
//! |---|---|
//! | `/live` | 200 while the process serves (this listener answers last at shutdown) |
//! | `/ready` | 200 while patgate accepts requests (`patgate_ready` is 1), else 503 |
//! | `/metrics` | the Prometheus exposition of [`crate::metrics::Metrics`] |
//!
//! Other paths are 404, methods other than GET and HEAD 405. No TLS and no authentication:
//! the address is loopback only, and nothing served here is secret (metric labels carry
//! integration ids, operations and kinds, never an account or a credential).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::{unix_now, Runtime};

/// The content type of `/metrics`: prometheus-client writes the OpenMetrics text format
/// (it ends with `# EOF`), which Prometheus negotiates and parses.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime requests are served with now (it changes on reload; metrics live on).
pub type CurrentRuntime = Arc<dyn Fn() -> Arc<Runtime> + Send + Sync>;

/// Serves the admin listener until `stop` turns true, then closes idle connections and lets
/// the ones mid-request finish.
pub async fn serve(
    listener: TcpListener,
    current: CurrentRuntime,
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
            let service = service_fn(move |req| {
                let runtime = current();
                async move { Ok::<_, Infallible>(answer(&runtime, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
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

/// One admin request. HEAD gets GET's head (hyper leaves the body out).
async fn answer(runtime: &Arc<Runtime>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/live" | "/ready" | "/metrics") {
        return text(
            StatusCode::NOT_FOUND,
            "patgate's admin listener serves /live, /ready and /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if runtime.metrics.ready.get() == 1 => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {
            refresh_gauges(runtime).await;
            let mut response = Response::new(Full::new(Bytes::from(runtime.metrics.encode())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}

/// The gauges that are read at scrape time rather than kept up to date: the certificate's
/// remaining lifetime, and the vault's record counts (a key-only scan that decrypts
/// nothing, on a blocking thread so the scan never holds up a request).
async fn refresh_gauges(runtime: &Arc<Runtime>) {
    let metrics = &runtime.metrics;
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    metrics
        .server_cert_expiry_seconds
        .set(runtime.api_cert_not_after.saturating_sub(now));
    let vault = runtime.vault.clone();
    match tokio::task::spawn_blocking(move || vault.count_by_kind()).await {
        Ok(Ok(counts)) => {
            for (kind, n) in [
                ("integration-secret", counts.integration_secrets),
                ("user-pat", counts.user_pats),
            ] {
                metrics
                    .vault_records
                    .get_or_create(&crate::metrics::VaultLabels { kind: kind.into() })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "counting vault records for /metrics failed"),
        Err(err) => tracing::warn!(error = %err, "counting vault records for /metrics failed"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
