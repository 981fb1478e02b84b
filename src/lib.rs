#![forbid(unsafe_code)]
//! patgate: a self-hosted credential gateway between Git Integration for Jira (a cloud app)
//! and a git host inside the customer's network.
//!
//! The app calls patgate over mutual TLS with RFC 9421 signed requests; patgate decides which
//! credential the host must see (the integration token, or with *Require User PAT* the acting
//! Jira user's own personal access token), takes it from an encrypted local vault, and
//! forwards the request to the host.
//!
//! # Layout
//! Modules follow a request, in layers whose imports point down only (docs/architecture.md
//! traces one request through them):
//!
//! | layer | modules |
//! |---|---|
//! | command line, systemd | `cli`, `service` |
//! | listeners: accept loops, TLS, routing | [`listener`] |
//! | endpoints: the `/git` pipeline, `/v1`, the connect page, admin, the admin socket | `pipeline`, `api`, `connect`, `admin`, [`adminsock`] |
//! | every error as an answer, in one place | `error` |
//! | storing credentials after asking the host | `pat` |
//! | what the service runs with, swapped on reload | [`runtime`] |
//! | edge parsing; calls patgate makes to a host; GitHub App installation tokens | `inbound`, `host_calls`, `app_tokens` |
//! | who is calling; host adapters (pure); the connector to hosts; rate limits and holds | [`authn`], [`hosts`], [`upstream`], [`ratelimit`] |
//! | the encrypted vault; connect links; what replicas would share | [`vault`], [`links`], [`store`] |
//! | signatures (pure); the credential policy (pure); the config; JWT cryptography | [`signature`], [`policy`], [`config`], `jwt` |
//! | time, the data plane's cores, ids, TLS material, metrics, logs, audit | [`clock`], [`cores`], [`ids`], [`tls`], [`metrics`], [`telemetry`], `audit` |
//! | development: the signing client, dev PKI, keys, the demo host | [`client`], [`devpki`], [`keys`], `demo` |

mod admin;
pub mod adminsock;
mod api;
mod app_tokens;
mod audit;
pub mod authn;
mod body;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
mod connect;
pub mod cores;
mod demo;
pub mod devpki;
mod error;
mod host_calls;
pub mod hosts;
pub mod ids;
mod inbound;
mod jwt;
pub mod keys;
pub mod links;
pub mod listener;
pub mod metrics;
mod pat;
mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod runtime;
mod service;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod vault;

/// For the fuzz targets in `fuzz/` only; not part of patgate's API. Each item is a private
/// step of the request flow, unchanged, so a target can drive it the way the proxy does.
#[doc(hidden)]
pub mod fuzzing {
    /// The proxy's gate in front of every host classifier: true when the path below
    /// `/git/{integration}` is refused (400 bad-request) before it is classified, because a
    /// segment is `.` or `..` in some spelling.
    pub fn path_is_refused(host_path: &str) -> bool {
        crate::inbound::refuse_dot_segments(host_path).is_err()
    }

    /// What the connect listener makes of a request, step by step as it serves it: the
    /// route (`style`, `link:{token}`, `save`, `remove`, `not-found`), the reload-cookie
    /// proofs it would check, whether a form `POST` counts as sent from the page itself
    /// (for `public_url`), and the form's fields.
    pub fn connect_request(
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        public_url: &str,
        body: &[u8],
    ) -> (String, Vec<String>, bool, Vec<(String, String)>) {
        use crate::connect::Route;
        let route = match crate::connect::route(method, path) {
            Route::Style => "style".to_string(),
            Route::Link(token) => format!("link:{token}"),
            Route::Save => "save".to_string(),
            Route::Remove => "remove".to_string(),
            Route::NotFound => "not-found".to_string(),
        };
        let mut fields: Vec<(String, String)> = crate::connect::form_fields(body)
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        fields.sort();
        (
            route,
            crate::connect::reload_proofs(headers),
            crate::connect::same_origin(headers, public_url),
            fields,
        )
    }

    /// What the `/v1` router makes of a request: `Ok((integration, account, resource))`
    /// where the request reaches an integration's handler (the account may still be
    /// refused there: `Err` in the middle), or the problem code and status it is refused
    /// with before that (`not-found` for a path outside the API, `method-not-allowed`).
    #[allow(clippy::type_complexity)]
    pub fn v1_route<'a>(
        method: &http::Method,
        path: &'a str,
    ) -> Result<(&'a str, Result<String, ()>, &'static str), (u16, &'static str)> {
        let refused = |e: crate::error::RequestError| {
            let problem = crate::error::Problem::of(&e);
            (problem.status().as_u16(), problem.code.as_str())
        };
        let route = crate::api::route(path).map_err(refused)?;
        route.resource.allows(method).map_err(refused)?;
        let resource = match route.resource {
            crate::api::Resource::Pat => "pat",
            crate::api::Resource::ConnectLink => "connect-link",
        };
        Ok((
            route.integration,
            route.account.map(|a| a.as_str().to_owned()).map_err(|_| ()),
            resource,
        ))
    }
}
