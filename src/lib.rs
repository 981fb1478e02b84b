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
//! Modules follow a request, and dependencies point down the flow:
//!
//! | step | module |
//! |---|---|
//! | configuration, validated once | [`config`] |
//! | api listener: TLS with client certificates, accept loop | [`tls`], [`server`] |
//! | reload on SIGHUP, systemd notify and watchdog | [`reload`], [`service`] |
//! | per-request flow | [`proxy`] (git host paths), [`api`] (patgate's own `/v1`) |
//! | the connect page where users enter their PAT (own listener, one-time links) | [`connect`] |
//! | RFC 9421 signatures, RFC 9530 digests, replay cache | [`signature`] |
//! | what a request does on the host, credential schemes | [`hosts`] (pure) |
//! | rate limits (tiers, shadow mode) and holds when the host throttles | [`ratelimit`] |
//! | which credential, or which refusal | [`policy`] (pure) |
//! | encrypted credential store | [`vault`] |
//! | PAT validation with the host, then storage | [`pat`] |
//! | upstream connector: pooled, rustls, timeouts | [`upstream`] |
//! | every error as problem+json, in one place | [`error`] |
//! | logs, the audit stream, Prometheus metrics | [`telemetry`], [`audit`], [`metrics`] |
//! | admin listener on loopback: `/live`, `/ready`, `/metrics` | [`admin`] |
//! | the admin socket the command line reaches the running service on | [`adminsock`] |
//! | command line, quickstart, demo host | [`cli`], [`demo`], [`devpki`], [`keys`], [`client`] |

pub mod admin;
pub mod adminsock;
pub mod api;
pub mod audit;
pub mod authn;
pub mod body;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod connect;
pub mod demo;
pub mod devpki;
pub mod error;
pub mod host_calls;
pub mod hosts;
pub mod ids;
pub mod inbound;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod pat;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod runtime;
pub mod service;
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
}
