//! What the admin listener answers (`admin.listen`, plain HTTP/1.1 on loopback; its accept
//! loop is [`crate::listener`]), for operators and their tools.
//!
//! | path | answer |
//! |---|---|
//! | `/live` | 200 while the process serves (this listener answers last at shutdown) |
//! | `/ready` | 200 while patgate accepts requests (`patgate_ready` is 1), with `[store] kind = "postgres"` its database answers (a `SELECT 1` at most once a second, within 2 s; `patgate_store_up`), with `[forge]` has Forge's signing keys (`patgate_forge_keys` above 0), and every integration whose account is a GitHub App has an installation token; else 503 saying why |
//! | `/metrics` | the Prometheus exposition of [`crate::metrics::Metrics`] |
//!
//! Other paths are 404, methods other than GET and HEAD 405. No TLS and no authentication:
//! the address is loopback only, and nothing served here is secret (metric labels carry
//! integration ids, operations and kinds, never an account or a credential).

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::runtime::Runtime;

/// The content type of `/metrics`: prometheus-client writes the OpenMetrics text format
/// (it ends with `# EOF`), which Prometheus negotiates and parses.
pub(crate) const METRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One admin request. HEAD gets GET's head (hyper leaves the body out).
pub(crate) async fn answer(runtime: &Runtime, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
        // With `[forge]`, ready only once Forge's keys are loaded (asking for them, once per
        // cool-down, while they are not: a balancer that waits for ready sends no call that
        // would).
        "/ready" if runtime.metrics().ready.get() == 1 => {
            // Every signed request needs the shared replay cache: without its database
            // nothing on the api listener can be served.
            if let Some(db) = runtime.database() {
                if let Err(e) = db.probe().await {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: the shared store does not answer: {e}\n"),
                    );
                }
            }
            if !runtime.load_forge_keys().await {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no usable Forge signing keys are loaded (see the log for why forge.jwks_url could not be fetched)\n",
                );
            }
            // Asked (at most once per retry interval after a failure) while a GitHub App
            // integration has no token: its requests would all answer 503.
            let failing = runtime.github_apps_without_token().await;
            if failing.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", failing.join("\n")),
                )
            }
        }
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {
            refresh_gauges(runtime).await;
            let mut response = Response::new(Full::new(Bytes::from(runtime.metrics().encode())));
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
/// remaining lifetime, the shared store's pool, and the vault's record counts (a key-only
/// scan that decrypts nothing, which the store runs off the request threads).
///
/// While the shared store does not answer, the gauges read from the vault keep their last
/// values: a scrape waits for no more than the readiness probe and logs nothing more.
async fn refresh_gauges(runtime: &Runtime) {
    let metrics = runtime.metrics();
    let now = i64::try_from(runtime.clock().unix_now()).unwrap_or(i64::MAX);
    metrics
        .server_cert_expiry_seconds
        .set(runtime.api_cert_not_after().saturating_sub(now));
    if let Some(forge) = runtime.forge() {
        metrics
            .forge_keys
            .set(i64::try_from(forge.usable_keys()).unwrap_or(i64::MAX));
    }
    if let Some(db) = runtime.database() {
        db.observe_pool();
        // The probe (bounded, shared with `/ready`) tells when it answers again.
        if !db.answering() && db.probe().await.is_err() {
            return;
        }
    }
    match runtime.vault().count_by_kind().await {
        Ok(counts) => {
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
        Err(err) => tracing::warn!(error = %err, "counting vault records for /metrics failed"),
    }
    count_expiring_pats(runtime).await;
    match runtime.integrations_without_secret().await {
        Ok(missing) => {
            for integration in runtime.integrations() {
                metrics
                    .integration_secret_missing
                    .get_or_create(&crate::metrics::IntegrationLabels {
                        integration: integration.id().to_string(),
                    })
                    .set(i64::from(missing.iter().any(|id| id == integration.id())));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "checking integration secrets for /metrics failed")
        }
    }
}

/// `patgate_user_pats_expiring`: a scan of each integration's PAT metadata (nothing is
/// decrypted), at most once a minute whatever the scrape interval.
async fn count_expiring_pats(runtime: &Runtime) {
    use std::sync::atomic::Ordering;
    const DAY: u64 = 86_400;
    let metrics = runtime.metrics();
    let now = runtime.clock().unix_now();
    let last = metrics
        .user_pats_expiring_counted_at
        .load(Ordering::Relaxed);
    if last != 0 && now < last.saturating_add(60) {
        return;
    }
    metrics
        .user_pats_expiring_counted_at
        .store(now, Ordering::Relaxed);
    for integration in runtime.integrations() {
        let pats = match runtime.vault().list_user_pats(integration.id()).await {
            Ok(pats) => pats,
            Err(err) => {
                tracing::warn!(integration = %integration.id(), error = %err, "counting expiring PATs for /metrics failed");
                continue;
            }
        };
        let expiries: Vec<u64> = pats.iter().filter_map(|p| p.expires_at).collect();
        for (within, n) in [
            ("expired", expiries.iter().filter(|&&at| at <= now).count()),
            (
                "7d",
                expiries
                    .iter()
                    .filter(|&&at| at > now && at <= now + 7 * DAY)
                    .count(),
            ),
            (
                "30d",
                expiries
                    .iter()
                    .filter(|&&at| at > now && at <= now + 30 * DAY)
                    .count(),
            ),
        ] {
            metrics
                .user_pats_expiring
                .get_or_create(&crate::metrics::ExpiringLabels {
                    integration: integration.id().to_string(),
                    within: within.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
