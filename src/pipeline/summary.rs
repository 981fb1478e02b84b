//! What the decision log line and the request metrics say about one request on the api
//! listener. The steps fill it in as they learn things; the listener records it once the
//! answer is known.

use std::time::Duration;

use crate::authn::AuthMethod;
use crate::ids::AccountId;
use crate::metrics::{LatencyLabels, Metrics, RequestLabels};
use crate::policy::{Decision, Operation};

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Set only from the config's integrations (never from the URL as sent), so metric
    /// labels stay bounded.
    pub integration: Option<String>,
    pub account: Option<AccountId>,
    pub operation: Option<Operation>,
    /// A call to patgate's own `/v1` API rather than a proxied one.
    pub api: bool,
    pub credential: Option<Decision>,
    /// How the caller was authenticated, once it was.
    pub auth: Option<AuthMethod>,
    /// The caller's client identity, once authenticated (a certificate's subject, or a Forge
    /// app and installation).
    pub client: Option<std::sync::Arc<str>>,
    /// The host's status, when the host answered (patgate's own differs when it refused).
    pub upstream_status: Option<u16>,
}

/// The answer, as the log line and the metrics record it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    pub status: u16,
    /// The problem `code`, when patgate refused.
    pub code: Option<&'static str>,
    /// Whose fault a refusal is, when patgate refused.
    pub blame: Option<&'static str>,
    pub latency: Duration,
    pub request_id: &'a str,
    pub client: &'a str,
    pub method: &'a http::Method,
    pub path: &'a str,
}

impl Summary {
    /// `read`, `create-branch`, …; `pat-api` for `/v1`; `-` when refused before either.
    pub(crate) fn operation_label(&self) -> &'static str {
        match self.operation {
            Some(operation) => operation.as_str(),
            None if self.api => "pat-api",
            None => "-",
        }
    }

    /// The decision line on `patgate::access`, `patgate_requests_total` and
    /// `patgate_request_duration_seconds`. Metric label values come from the config and
    /// fixed names only, never an account.
    pub(crate) fn record(&self, metrics: &Metrics, outcome: Outcome<'_>) {
        let integration = self.integration.as_deref().unwrap_or("-");
        let operation = self.operation_label();
        let credential = self.credential.map_or("-", Decision::as_str);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                integration: integration.to_string(),
                operation: operation.to_string(),
                credential: credential.to_string(),
                status: outcome.status,
            })
            .inc();
        metrics
            .latency
            .get_or_create(&LatencyLabels {
                integration: integration.to_string(),
                operation: operation.to_string(),
            })
            .observe(outcome.latency.as_secs_f64());
        tracing::info!(
            target: "patgate::access",
            request_id = %outcome.request_id,
            client = %outcome.client,
            auth = self.auth.map_or("-", AuthMethod::as_str),
            method = %outcome.method,
            path = %outcome.path,
            integration,
            account = self.account.as_ref().map_or("-", AccountId::as_str),
            operation,
            credential,
            status = outcome.status,
            upstream_status = self.upstream_status,
            code = outcome.code.unwrap_or("-"),
            blame = outcome.blame.unwrap_or("-"),
            latency_us = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
}
