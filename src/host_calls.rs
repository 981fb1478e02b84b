//! Calls patgate makes to a git host on its own behalf, not forwarding the app's: whose
//! credential this is (who-am-I, before a credential is stored), which release a TFS
//! server is (at start, for `version = "auto"`), and a GitHub App's installation and its
//! installation tokens (with the App's JWT).
//!
//! The host adapters say what to send and how to read each answer; [`crate::hosts`] stays
//! pure. This is the one place that sends those requests: it resolves the adapter's
//! path-only URI against the integration's base URL, applies the credential being asked
//! about, sends through the integration's [`Upstream`], and reads a bounded answer.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};

use crate::hosts::azure::{self, DetectError, Detected, ProbeStep, VersionProbe};
use crate::hosts::github::{self, AppInstallation, Github, InstallationToken};
use crate::hosts::{HostAdapter, HostIdentity, UnsupportedCredential, WhoAmIError};
use crate::upstream::{Upstream, UpstreamError};
use crate::vault::Credential;

/// The most of a who-am-I answer read.
const WHO_AM_I_LIMIT: usize = 256 * 1024;

/// Why a call to the host did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum HostCallError {
    /// The host answered, and its answer refuses or does not say (see [`WhoAmIError`]).
    #[error(transparent)]
    WhoAmI(#[from] WhoAmIError),
    /// The TFS release probe's answers say no release.
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// No answer: connect, TLS, timeout.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    UnsupportedCredential(#[from] UnsupportedCredential),
    #[error("cannot build the URL of {what}: {why}")]
    Url { what: &'static str, why: String },
}

/// Who a user's PAT belongs to, and when it expires where the host says so: in the who-am-I
/// answer's headers (GitHub), or in the answer to a second request (GitLab). A second answer
/// that says nothing, or fails, leaves the expiry unknown; it never refuses the PAT.
pub(crate) async fn who_am_i_pat(
    adapter: &dyn HostAdapter,
    upstream: &Upstream,
    credential: &Credential,
) -> Result<(HostIdentity, Option<u64>), HostCallError> {
    let (identity, _, headers) = ask_who_am_i(adapter, upstream, credential).await?;
    let identity = identity?;
    let mut expires_at = adapter.credential_expiry(&headers);
    if expires_at.is_none() {
        if let Some(request) = adapter.token_expiry_request() {
            if let Ok((status, _, body)) =
                exchange(adapter, upstream, request, credential, WHO_AM_I).await
            {
                expires_at = adapter.token_expiry_answer(status, &body);
            }
        }
    }
    Ok((identity, expires_at))
}

/// The host's who-am-I answer as the adapter reads it, and the status and headers it came
/// with.
async fn ask_who_am_i(
    adapter: &dyn HostAdapter,
    upstream: &Upstream,
    credential: &Credential,
) -> Result<(Result<HostIdentity, WhoAmIError>, StatusCode, HeaderMap), HostCallError> {
    let request = adapter.who_am_i_request();
    let (status, headers, body) =
        exchange(adapter, upstream, request, credential, WHO_AM_I).await?;
    Ok((
        adapter.who_am_i_answer(status, &headers, &body),
        status,
        headers,
    ))
}

/// Asks the host whose integration credential this is. Beyond [`who_am_i`], an integration
/// credential may be one that no user owns (a GitHub App installation token, refused on
/// `/user`): when the host's answer calls for it, the adapter's second request decides.
pub(crate) async fn who_am_i_integration(
    adapter: &dyn HostAdapter,
    upstream: &Upstream,
    credential: &Credential,
) -> Result<HostIdentity, HostCallError> {
    let (first, status, headers) = ask_who_am_i(adapter, upstream, credential).await?;
    let Some(fallback) = adapter.integration_who_am_i_fallback(status, &headers) else {
        return Ok(first?);
    };
    let (status, headers, body) =
        exchange(adapter, upstream, fallback, credential, WHO_AM_I).await?;
    adapter
        .integration_who_am_i_fallback_answer(status, &headers, &body)
        .map_err(|second| match (first, second) {
            (Err(WhoAmIError::Rejected(a)), WhoAmIError::Rejected(b)) => {
                WhoAmIError::Rejected(format!("{a}; and {b}"))
            }
            (_, second) => second,
        })
        .map_err(HostCallError::from)
}

/// Asks a TFS / Azure DevOps Server which release it is, with the integration's credential
/// (see [`VersionProbe`] for what is asked and how the answers are read).
pub(crate) async fn detect_release(
    adapter: &dyn HostAdapter,
    upstream: &Upstream,
    credential: &Credential,
) -> Result<Detected, HostCallError> {
    let (mut probe, mut request) = VersionProbe::start();
    loop {
        adapter.default_headers(request.headers_mut());
        let (status, _, body) =
            exchange(adapter, upstream, request, credential, RELEASE_PROBE).await?;
        match probe.answer(status, &body) {
            ProbeStep::Send(next) => request = *next,
            ProbeStep::Done(done) => return Ok(done?),
        }
    }
}

/// `GET /app/installations/{id}` with the App's JWT (`jwt`, a bearer token).
pub(crate) async fn github_app_installation(
    github: &Github,
    upstream: &Upstream,
    jwt: &Credential,
    app_id: u64,
    installation_id: u64,
) -> Result<AppInstallation, HostCallError> {
    let request = github.app_installation_request(installation_id);
    let (status, headers, body) = exchange(github, upstream, request, jwt, APP_CALL).await?;
    Ok(github::app_installation_answer(
        status,
        &headers,
        &body,
        app_id,
        installation_id,
    )?)
}

/// `POST /app/installations/{id}/access_tokens` with the App's JWT: a new installation
/// token.
pub(crate) async fn github_installation_token(
    github: &Github,
    upstream: &Upstream,
    jwt: &Credential,
    app_id: u64,
    installation_id: u64,
) -> Result<InstallationToken, HostCallError> {
    let request = github.access_token_request(installation_id);
    let (status, headers, body) = exchange(github, upstream, request, jwt, APP_CALL).await?;
    Ok(github::access_token_answer(
        status,
        &headers,
        &body,
        app_id,
        installation_id,
    )?)
}

/// What an exchange reads: its name in errors and how much of the answer.
struct Answer {
    what: &'static str,
    limit: usize,
}

const WHO_AM_I: Answer = Answer {
    what: "the who-am-I answer",
    limit: WHO_AM_I_LIMIT,
};

const APP_CALL: Answer = Answer {
    what: "GitHub's answer to the App",
    limit: WHO_AM_I_LIMIT,
};

const RELEASE_PROBE: Answer = Answer {
    what: "the version probe",
    limit: azure::PROBE_LIMIT,
};

/// Sends one request with `credential` applied; answers status, headers and body.
async fn exchange(
    adapter: &dyn HostAdapter,
    upstream: &Upstream,
    mut request: Request<Bytes>,
    credential: &Credential,
    answer: Answer,
) -> Result<(StatusCode, HeaderMap, Bytes), HostCallError> {
    if request.uri().scheme().is_none() {
        let (path, query) = {
            let uri = request.uri();
            (uri.path().to_string(), uri.query().map(str::to_string))
        };
        *request.uri_mut() =
            upstream
                .uri(&path, query.as_deref())
                .map_err(|e| HostCallError::Url {
                    what: answer.what,
                    why: e.to_string(),
                })?;
    }
    adapter.apply_credential(&mut request, credential)?;
    let response = upstream.send(request).await?;
    let (head, body) = response.into_parts();
    let body = upstream
        .read_to_end(body, answer.limit, answer.what)
        .await?;
    Ok((head.status, head.headers, body))
}
