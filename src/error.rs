//! Every error a client can see, mapped to an HTTP status, a stable problem+json `code`
//! (RFC 9457) and a detail, in exactly this one place.
//!
//! Modules keep their own error enums ([`crate::authn::AuthError`],
//! [`crate::inbound::InboundError`], [`crate::vault::VaultError`],
//! [`crate::upstream::UpstreamError`], [`crate::host_calls::HostCallError`],
//! [`crate::policy::Refusal`], [`crate::ratelimit::Refusal`], …); the refusals that belong
//! to a request rather than to a module ([`RequestError`] on the api listener, [`AdminError`]
//! on the admin socket) are defined here, beside the mapping. The `From` impls below decide
//! what each means on the wire, and which party is to blame ([`Blame`], as Pingora records
//! it): the caller, the git host, or patgate itself. Errors that are patgate's fault are
//! logged here, once, with their whole message; the caller gets a detail that does not help
//! probe the store.
//!
//! Nothing here formats a secret: module errors never carry one, and details are built from
//! those errors' `Display`.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::app_tokens::AppTokenError;
use crate::authn::{AuthError, ForgeError};
use crate::body::{full, ResponseBody};
use crate::host_calls::HostCallError;
use crate::hosts::{UnsupportedCredential, WhoAmIError};
use crate::ids::InvalidId;
use crate::inbound::InboundError;
use crate::links::LinkError;
use crate::pat::SaveError;
use crate::signature::SignatureError;
use crate::store::{NonceError, PgError, StoreError};
use crate::upstream::UpstreamError;
use crate::vault::VaultError;
use crate::{policy, ratelimit};

/// The stable error codes of the contract with the Jira app (docs/protocol.md).
///
/// The string form never changes once published; add codes, never rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorCode {
    BadRequest,
    SignatureMissing,
    SignatureInvalid,
    SignatureExpired,
    SignatureReplayed,
    UnknownKey,
    ClientNotAllowed,
    OperationNotAllowed,
    UserPatRequired,
    PatUnsupportedByHost,
    UnknownIntegration,
    NotFound,
    MethodNotAllowed,
    PatInvalid,
    PatInsufficientScope,
    BodyTooLarge,
    BodyTimeout,
    MethodOverride,
    TooManyConnections,
    RateLimited,
    HostRateLimited,
    UpstreamUnreachable,
    UpstreamTls,
    UpstreamTimeout,
    Unavailable,
    Internal,
    ForgeTokenMissing,
    ForgeTokenInvalid,
    ForgeTokenExpired,
    ForgeTokenReplayed,
    ForgeInstallationNotAllowed,
    ForgeAccountMismatch,
    ForgeSignatureInvalid,
    ForgeKeysUnavailable,
    HostCredentialRefused,
    UserPatRefused,
    GithubSsoRequired,
    HostHasNoPats,
}

impl ErrorCode {
    /// Every code, for documentation tests.
    #[cfg(test)]
    pub(crate) const ALL: [ErrorCode; 38] = [
        Self::BadRequest,
        Self::SignatureMissing,
        Self::SignatureInvalid,
        Self::SignatureExpired,
        Self::SignatureReplayed,
        Self::UnknownKey,
        Self::ClientNotAllowed,
        Self::OperationNotAllowed,
        Self::UserPatRequired,
        Self::PatUnsupportedByHost,
        Self::UnknownIntegration,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PatInvalid,
        Self::PatInsufficientScope,
        Self::BodyTooLarge,
        Self::BodyTimeout,
        Self::MethodOverride,
        Self::TooManyConnections,
        Self::RateLimited,
        Self::HostRateLimited,
        Self::UpstreamUnreachable,
        Self::UpstreamTls,
        Self::UpstreamTimeout,
        Self::Unavailable,
        Self::Internal,
        Self::ForgeTokenMissing,
        Self::ForgeTokenInvalid,
        Self::ForgeTokenExpired,
        Self::ForgeTokenReplayed,
        Self::ForgeInstallationNotAllowed,
        Self::ForgeAccountMismatch,
        Self::ForgeSignatureInvalid,
        Self::ForgeKeysUnavailable,
        Self::HostCredentialRefused,
        Self::UserPatRefused,
        Self::GithubSsoRequired,
        Self::HostHasNoPats,
    ];

    /// The `code` member of the problem document.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::SignatureMissing => "signature-missing",
            Self::SignatureInvalid => "signature-invalid",
            Self::SignatureExpired => "signature-expired",
            Self::SignatureReplayed => "signature-replayed",
            Self::UnknownKey => "unknown-key",
            Self::ClientNotAllowed => "client-not-allowed",
            Self::OperationNotAllowed => "operation-not-allowed",
            Self::UserPatRequired => "user-pat-required",
            Self::PatUnsupportedByHost => "pat-unsupported-by-host",
            Self::UnknownIntegration => "unknown-integration",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::PatInvalid => "pat-invalid",
            Self::PatInsufficientScope => "pat-insufficient-scope",
            Self::BodyTooLarge => "body-too-large",
            Self::BodyTimeout => "body-timeout",
            Self::MethodOverride => "method-override",
            Self::TooManyConnections => "too-many-connections",
            Self::RateLimited => "rate-limited",
            Self::HostRateLimited => "host-rate-limited",
            Self::UpstreamUnreachable => "upstream-unreachable",
            Self::UpstreamTls => "upstream-tls",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::ForgeTokenMissing => "forge-token-missing",
            Self::ForgeTokenInvalid => "forge-token-invalid",
            Self::ForgeTokenExpired => "forge-token-expired",
            Self::ForgeTokenReplayed => "forge-token-replayed",
            Self::ForgeInstallationNotAllowed => "forge-installation-not-allowed",
            Self::ForgeAccountMismatch => "forge-account-mismatch",
            Self::ForgeSignatureInvalid => "forge-signature-invalid",
            Self::ForgeKeysUnavailable => "forge-keys-unavailable",
            Self::HostCredentialRefused => "host-credential-refused",
            Self::UserPatRefused => "user-pat-refused",
            Self::GithubSsoRequired => "github-sso-required",
            Self::HostHasNoPats => "host-has-no-pats",
        }
    }

    /// The HTTP status that goes with the code.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::SignatureMissing
            | Self::SignatureInvalid
            | Self::SignatureExpired
            | Self::SignatureReplayed
            | Self::UnknownKey
            | Self::ForgeTokenMissing
            | Self::ForgeTokenInvalid
            | Self::ForgeTokenExpired
            | Self::ForgeTokenReplayed => StatusCode::UNAUTHORIZED,
            Self::ClientNotAllowed
            | Self::OperationNotAllowed
            | Self::UserPatRequired
            | Self::PatUnsupportedByHost
            | Self::ForgeInstallationNotAllowed
            | Self::ForgeAccountMismatch
            | Self::ForgeSignatureInvalid
            | Self::HostCredentialRefused
            | Self::UserPatRefused
            | Self::GithubSsoRequired => StatusCode::FORBIDDEN,
            Self::UnknownIntegration | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::HostHasNoPats => StatusCode::CONFLICT,
            Self::PatInvalid | Self::PatInsufficientScope => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MethodOverride => StatusCode::BAD_REQUEST,
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited | Self::HostRateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnreachable | Self::UpstreamTls => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable | Self::ForgeKeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed summary of the problem type (the problem document's `title`).
    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Malformed request",
            Self::SignatureMissing => "Request is not signed",
            Self::SignatureInvalid => "Request signature is invalid",
            Self::SignatureExpired => "Request signature is outside its validity window",
            Self::SignatureReplayed => "Request signature was already used",
            Self::UnknownKey => "Request is signed with an unknown key",
            Self::ClientNotAllowed => "Client certificate is not allowed",
            Self::OperationNotAllowed => "Operation is not allowed through patgate",
            Self::UserPatRequired => "This user must set up a personal access token",
            Self::PatUnsupportedByHost => "The git host does not support personal access tokens",
            Self::UnknownIntegration => "No such integration",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PatInvalid => "The personal access token was refused by the git host",
            Self::PatInsufficientScope => "The personal access token lacks required rights",
            Self::BodyTooLarge => "Request body is too large",
            Self::BodyTimeout => "Request body did not arrive in time",
            Self::MethodOverride => "Method override is not allowed",
            Self::TooManyConnections => "Too many connections from this client",
            Self::RateLimited => "Rate limit exceeded",
            Self::HostRateLimited => "The git host is rate limiting this credential",
            Self::UpstreamUnreachable => "The git host could not be reached",
            Self::UpstreamTls => "TLS with the git host failed",
            Self::UpstreamTimeout => "The git host did not answer in time",
            Self::Unavailable => "patgate is not ready to serve this request",
            Self::Internal => "Internal error",
            Self::ForgeTokenMissing => "No Forge Invocation Token",
            Self::ForgeTokenInvalid => "The Forge Invocation Token is invalid",
            Self::ForgeTokenExpired => "The Forge Invocation Token is outside its validity",
            Self::ForgeTokenReplayed => "The Forge Invocation Token was already used",
            Self::ForgeInstallationNotAllowed => {
                "This Forge installation or environment is not allowed"
            }
            Self::ForgeAccountMismatch => "Patgate-Account disagrees with the token's principal",
            Self::ForgeSignatureInvalid => "The Forge call's request signature was refused",
            Self::ForgeKeysUnavailable => "patgate has no Forge signing keys loaded",
            Self::HostCredentialRefused => "The git host refused the credential",
            Self::UserPatRefused => "The git host refused this user's personal access token",
            Self::GithubSsoRequired => {
                "The token must be authorised for the organisation's single sign-on"
            }
            Self::HostHasNoPats => "This git host has no personal access tokens",
        }
    }
}

/// Whose fault a refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The request (or its sender) is wrong or not allowed: fixing it is the caller's.
    Caller,
    /// The git host failed, or told patgate to wait.
    Host,
    /// patgate itself: its store, its configuration, its own limits of capacity.
    Patgate,
}

impl Blame {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Blame::Caller => "caller",
            Blame::Host => "host",
            Blame::Patgate => "patgate",
        }
    }
}

/// A problem+json answer: the one shape every refusal takes.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    pub blame: Blame,
    /// For `user-pat-required` and `user-pat-refused`: where the user can enter a PAT.
    pub setup_url: Option<String>,
    /// For `github-sso-required`: where the user authorises the token, as GitHub sent it.
    pub sso_url: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// More response fields, e.g. `RateLimit-Policy` and `RateLimit` on `rate-limited`.
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    code: &'static str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    setup_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sso_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// Prefix of the problem `type` URIs. They name the problem type and are not meant to be
/// fetched (RFC 9457 §3.1.1 allows that); docs/protocol.md describes each code.
pub(crate) const PROBLEM_TYPE_BASE: &str = "urn:patgate:problem:";

impl Problem {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let blame = match code.status().as_u16() {
            502 | 504 => Blame::Host,
            500..=599 => Blame::Patgate,
            _ => Blame::Caller,
        };
        Problem {
            code,
            detail: detail.into(),
            blame,
            setup_url: None,
            sso_url: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    fn blamed(mut self, blame: Blame) -> Self {
        self.blame = blame;
        self
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The problem an error means on the wire.
    pub(crate) fn of<'e, E>(err: &'e E) -> Problem
    where
        Problem: From<&'e E>,
    {
        Problem::from(err)
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body, with the request id when known so users can quote it to admins.
    pub(crate) fn to_json(&self, request_id: Option<&str>) -> Vec<u8> {
        let body = ProblemBody {
            kind: format!("{PROBLEM_TYPE_BASE}{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            code: self.code.as_str(),
            detail: &self.detail,
            setup_url: self.setup_url.as_deref(),
            sso_url: self.sso_url.as_deref(),
            request_id,
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }

    pub(crate) fn into_response(self, request_id: Option<&str>) -> Response<ResponseBody> {
        let mut response = Response::new(full(Bytes::from(self.to_json(request_id))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

// ---- the refusals of a request -------------------------------------------------------

/// Why a request on the api listener (`/git/…` through the pipeline, `/v1/…`) was refused,
/// or its answer not received.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error(transparent)]
    Inbound(#[from] InboundError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The api listener serves `/git/…` and `/v1/…` only.
    #[error("patgate serves /git/{{integration}}/… and /v1/…")]
    NotFound,
    /// A `/v1` path that names no resource.
    #[error("the /v1 API serves /v1/integrations/{{id}}/users/{{account}}/pat and …/connect-link")]
    ApiNotFound,
    #[error("no integration `{0}` is configured")]
    UnknownIntegration(String),
    /// An action must name the user it acts for.
    #[error("create branch, delete branch and create pull request must name the acting Jira user in Patgate-Account")]
    AccountRequired,
    /// The account in a `/v1` path.
    #[error("the account in the path is not an Atlassian accountId: {0}")]
    PathAccount(InvalidId),
    #[error("use {0}")]
    MethodNotAllowed(&'static str),
    #[error("no connect page is configured on this patgate ([connect] in its config)")]
    NoConnectPage,
    /// serde's message names the field, never the value.
    #[error("the body must be {{\"token\": \"…\"}} (CodeCommit: {{\"access_key_id\": \"…\", \"secret_access_key\": \"…\"}}): {0}")]
    BadBody(String),
    /// The fields sent do not make a credential; says which, never a value.
    #[error("{0}")]
    BadCredential(String),
    #[error(transparent)]
    RateLimited(#[from] ratelimit::Refusal),
    #[error(transparent)]
    HostHeld(#[from] ratelimit::HoldRefusal),
    /// The policy refused; for `user-pat-required`, where the user can enter a PAT.
    #[error("{refusal}")]
    Policy {
        refusal: policy::Refusal,
        setup_url: Option<String>,
    },
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Save(#[from] SaveError),
    /// The integration's account is a GitHub App and no installation token could be had.
    #[error("{0}; an admin must check the App's id, installation and key (`patgate integration set-secret --type github-app`)")]
    AppToken(std::sync::Arc<crate::app_tokens::AppTokenError>),
    /// The integration's own credential was never stored.
    #[error("integration `{0}` has no secret in the vault; an admin must run `patgate integration set-secret {0}`")]
    NoSecret(String),
    #[error("the stored credential does not fit this host: {0}")]
    CredentialMismatch(UnsupportedCredential),
    #[error("the path cannot be forwarded: {0}")]
    Unforwardable(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the answer could not be written: {0}")]
    Encode(String),
    /// For a Forge caller, the host's own 401 (which Forge would take for a refused token).
    #[error("the git host answered 401 to the {credential} credential patgate sent{hint}", hint = if *credential == "user" { "; the user's PAT may be revoked or expired: they can replace it on the connect page" } else { "; an admin must check the integration's secret" })]
    HostUnauthorized { credential: &'static str },
    /// The host refused the user's PAT on an action (expired, revoked); the PAT is marked.
    #[error("the git host answered {host_status} to this user's personal access token: it may have expired or been revoked (Azure DevOps answers the same to a token without a scope it needs). The user can enter a new one on the connect page{}", if setup_url.is_some() { " (setup_url)" } else { "" })]
    UserPatRefused {
        host_status: u16,
        setup_url: Option<String>,
    },
    /// GitHub: the PAT is not authorised for the organisation's SAML single sign-on.
    #[error("GitHub requires this user's token to be authorised for the organisation's SAML single sign-on: the user opens sso_url, authorises the token, and tries again")]
    GithubSsoRequired { url: String },
    /// The connection is past `connections.max_api_per_client`.
    #[error("this client already has {0} connections open to patgate (connections.max_api_per_client); reuse them or close some")]
    TooManyConnections(usize),
}

/// Why a request on the admin socket was refused. The admin socket is the service user's
/// own channel, so vault errors are shown whole.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("uid {peer_uid} may not use the admin socket: only the service user (uid {service_uid}) and root may")]
    PeerRefused { peer_uid: u32, service_uid: u32 },
    #[error("the admin socket serves /v1/vault/records, /v1/vault/rotate-key, /v1/integrations/{{id}}/secret and /v1/integrations/{{id}}/users/{{account}}/pat")]
    NotFound,
    #[error("the running service has no integration `{0}`")]
    UnknownIntegration(String),
    #[error("the account is not an Atlassian accountId: {0}")]
    BadAccount(InvalidId),
    #[error("use {0}")]
    MethodNotAllowed(&'static str),
    #[error(transparent)]
    Inbound(#[from] InboundError),
    /// serde's message names the field and position, never the value of a secret field.
    #[error("the request body is not what this request takes: {0}")]
    BadBody(String),
    #[error("{0}")]
    BadCredential(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error("the answer could not be written: {0}")]
    Encode(String),
}

// ---- the mapping -----------------------------------------------------------------------

impl From<&RequestError> for Problem {
    fn from(err: &RequestError) -> Problem {
        use RequestError as E;
        let detail = err.to_string();
        match err {
            E::Inbound(e) => e.into(),
            E::Auth(e) => e.into(),
            E::NotFound | E::ApiNotFound | E::NoConnectPage => {
                Problem::new(ErrorCode::NotFound, detail)
            }
            E::UnknownIntegration(_) => Problem::new(ErrorCode::UnknownIntegration, detail),
            E::AccountRequired
            | E::PathAccount(_)
            | E::BadBody(_)
            | E::BadCredential(_)
            | E::Unforwardable(_) => Problem::new(ErrorCode::BadRequest, detail),
            E::MethodNotAllowed(_) => Problem::new(ErrorCode::MethodNotAllowed, detail),
            E::RateLimited(e) => e.into(),
            E::HostHeld(e) => e.into(),
            E::Policy { refusal, setup_url } => Problem {
                setup_url: setup_url.clone(),
                ..refusal.into()
            },
            E::Vault(e) => e.into(),
            E::Store(e) => e.into(),
            E::Save(e) => e.into(),
            E::NoSecret(_) => Problem::new(ErrorCode::Unavailable, detail),
            E::AppToken(_) => Problem::new(ErrorCode::Unavailable, detail),
            E::CredentialMismatch(_) => Problem::new(ErrorCode::Unavailable, detail),
            E::Upstream(e) => e.into(),
            E::Encode(_) => Problem::new(ErrorCode::Internal, detail),
            E::UserPatRefused { setup_url, .. } => Problem {
                setup_url: setup_url.clone(),
                ..Problem::new(ErrorCode::UserPatRefused, detail)
            },
            E::GithubSsoRequired { url } => Problem {
                sso_url: Some(url.clone()),
                ..Problem::new(ErrorCode::GithubSsoRequired, detail)
            },
            E::TooManyConnections(_) => Problem::new(ErrorCode::TooManyConnections, detail)
                .blamed(Blame::Caller)
                .retry_after(1),
            E::HostUnauthorized { .. } => {
                Problem::new(ErrorCode::HostCredentialRefused, detail).blamed(Blame::Host)
            }
        }
    }
}

impl Problem {
    /// The problem as a caller authenticated with `method` sees it. Forge reserves 401 for
    /// its invocation token: for a Forge caller, a 401 about anything else (the request's
    /// RFC 9421 signature or body digest, found after the caller was authenticated) becomes
    /// 403 `forge-signature-invalid` with the same detail.
    pub(crate) fn for_caller(self, method: Option<crate::authn::AuthMethod>) -> Problem {
        let forge_token_code = matches!(
            self.code,
            ErrorCode::ForgeTokenMissing
                | ErrorCode::ForgeTokenInvalid
                | ErrorCode::ForgeTokenExpired
                | ErrorCode::ForgeTokenReplayed
        );
        if method.is_some_and(crate::authn::AuthMethod::is_forge)
            && self.status() == StatusCode::UNAUTHORIZED
            && !forge_token_code
        {
            return Problem {
                code: ErrorCode::ForgeSignatureInvalid,
                ..self
            };
        }
        self
    }
}

impl From<&ForgeError> for Problem {
    fn from(err: &ForgeError) -> Problem {
        use ForgeError as E;
        let detail = err.to_string();
        match err {
            E::TokenMissing => Problem::new(ErrorCode::ForgeTokenMissing, detail),
            E::TokenInvalid(_) => Problem::new(ErrorCode::ForgeTokenInvalid, detail),
            E::TokenExpired(_) => Problem::new(ErrorCode::ForgeTokenExpired, detail),
            E::TokenReplayed => Problem::new(ErrorCode::ForgeTokenReplayed, detail),
            E::KeysUnavailable => Problem::new(ErrorCode::ForgeKeysUnavailable, detail)
                .blamed(Blame::Patgate)
                .retry_after(5),
            E::NotAllowed(_) => Problem::new(ErrorCode::ForgeInstallationNotAllowed, detail),
            E::AccountMismatch(_) => Problem::new(ErrorCode::ForgeAccountMismatch, detail),
            E::Signature(_) => Problem::new(ErrorCode::ForgeSignatureInvalid, detail),
            // The replay cache failing is patgate's, whatever the caller.
            E::SignatureNonce(e @ (NonceError::Full | NonceError::Store(_)))
            | E::TokenNonce(e @ (NonceError::Full | NonceError::Store(_))) => e.into(),
            E::SignatureNonce(_) => Problem::new(ErrorCode::ForgeSignatureInvalid, detail),
            E::TokenNonce(_) => Problem::new(ErrorCode::ForgeTokenReplayed, detail),
        }
    }
}

impl From<&AdminError> for Problem {
    fn from(err: &AdminError) -> Problem {
        use AdminError as E;
        let detail = err.to_string();
        match err {
            E::PeerRefused { .. } => Problem::new(ErrorCode::ClientNotAllowed, detail),
            E::NotFound => Problem::new(ErrorCode::NotFound, detail),
            E::UnknownIntegration(_) => Problem::new(ErrorCode::UnknownIntegration, detail),
            E::BadAccount(_) | E::BadBody(_) | E::BadCredential(_) => {
                Problem::new(ErrorCode::BadRequest, detail)
            }
            E::MethodNotAllowed(_) => Problem::new(ErrorCode::MethodNotAllowed, detail),
            E::Inbound(e) => e.into(),
            E::Vault(e) | E::Save(SaveError::Vault(e)) => admin_vault_problem(e),
            E::Save(e) => e.into(),
            E::Encode(_) => Problem::new(ErrorCode::Internal, detail),
        }
    }
}

/// A vault error as the admin sees it: the whole message (vault errors never carry a
/// secret).
fn admin_vault_problem(err: &VaultError) -> Problem {
    let code = match err {
        VaultError::InvalidId { .. }
        | VaultError::SameKey
        | VaultError::RotationInProgress { .. }
        | VaultError::MasterKeyInvalid { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::Unavailable,
    };
    Problem::new(code, err.to_string())
}

impl From<&InboundError> for Problem {
    fn from(err: &InboundError) -> Problem {
        use InboundError as E;
        match err {
            E::BodyTooLarge { .. } => Problem::new(ErrorCode::BodyTooLarge, err.to_string()),
            E::BodyTimeout => Problem::new(ErrorCode::BodyTimeout, err.to_string()),
            E::MethodOverride(_) => Problem::new(ErrorCode::MethodOverride, err.to_string()),
            E::NoDigest | E::DigestNotAscii | E::TwoDigests => {
                Problem::new(ErrorCode::SignatureInvalid, err.to_string())
            }
            E::Digest(e) => e.into(),
            _ => Problem::new(ErrorCode::BadRequest, err.to_string()),
        }
    }
}

impl From<&AuthError> for Problem {
    fn from(err: &AuthError) -> Problem {
        match err {
            AuthError::ClientNotAllowed | AuthError::NoClientCertificate => {
                Problem::new(ErrorCode::ClientNotAllowed, err.to_string())
            }
            AuthError::Signature(e) => e.into(),
            AuthError::Nonce(e) => e.into(),
            AuthError::Forge(e) => e.into(),
        }
    }
}

impl From<&SignatureError> for Problem {
    fn from(err: &SignatureError) -> Problem {
        use SignatureError as E;
        let code = match err {
            E::Missing => ErrorCode::SignatureMissing,
            E::Invalid(_) | E::DigestMismatch | E::DigestInvalid(_) => ErrorCode::SignatureInvalid,
            E::Expired(_) => ErrorCode::SignatureExpired,
            E::UnknownKey(_) => ErrorCode::UnknownKey,
        };
        Problem::new(code, err.to_string())
    }
}

impl From<&NonceError> for Problem {
    fn from(err: &NonceError) -> Problem {
        match err {
            NonceError::Replayed => Problem::new(
                ErrorCode::SignatureReplayed,
                format!("signature replayed: {err}"),
            ),
            NonceError::BeforeHorizon => Problem::new(
                ErrorCode::SignatureExpired,
                format!("signature expired: {err}"),
            ),
            NonceError::Full => Problem::new(ErrorCode::Unavailable, err.to_string())
                .blamed(Blame::Patgate)
                .retry_after(1),
            NonceError::Store(e) => e.into(),
        }
    }
}

impl From<&StoreError> for Problem {
    fn from(err: &StoreError) -> Problem {
        // The store failing, not the caller: the log line has the whole error, the caller a
        // detail that does not help probe it. A retry may succeed. A store that does not
        // answer logged the outage once, when it began: not again for each request.
        if err.unreachable {
            tracing::debug!(error = %err, "store error");
            return Problem::new(
                ErrorCode::Unavailable,
                format!(
                    "patgate's {} store does not answer; try again later",
                    err.store
                ),
            )
            .retry_after(1);
        }
        tracing::error!(error = %err, "store error");
        Problem::new(
            ErrorCode::Unavailable,
            format!("patgate's {} store failed; see the patgate log", err.store),
        )
        .retry_after(1)
    }
}

impl From<&VaultError> for Problem {
    fn from(err: &VaultError) -> Problem {
        match err {
            VaultError::InvalidId { .. } => Problem::new(ErrorCode::BadRequest, err.to_string()),
            // A shared store that does not answer: its outage was logged once, when it began.
            other if store_unreachable(other) => {
                tracing::debug!(error = %other, "vault error");
                Problem::new(
                    ErrorCode::Unavailable,
                    "the credential vault's shared store does not answer; try again later",
                )
                .retry_after(1)
            }
            // Anything else is the vault failing, not the client: say so without detail that
            // could help an attacker probe the store; the log line carries the full error.
            other => {
                tracing::error!(error = %other, "vault error");
                Problem::new(
                    ErrorCode::Unavailable,
                    "the credential vault failed; see the patgate log",
                )
            }
        }
    }
}

/// Whether the vault failed because its shared store's database did not answer.
fn store_unreachable(err: &VaultError) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(pg) = e.downcast_ref::<PgError>() {
            return pg.is_unreachable();
        }
        source = e.source();
    }
    false
}

impl From<&UpstreamError> for Problem {
    fn from(err: &UpstreamError) -> Problem {
        use UpstreamError as E;
        let code = match err {
            E::Unreachable(_) | E::Protocol(_) => ErrorCode::UpstreamUnreachable,
            E::Tls(_) => ErrorCode::UpstreamTls,
            E::Timeout { .. } => ErrorCode::UpstreamTimeout,
        };
        Problem::new(code, err.to_string())
    }
}

impl From<&policy::Refusal> for Problem {
    fn from(refusal: &policy::Refusal) -> Problem {
        use policy::Refusal as R;
        match refusal {
            R::UserPatRequired => Problem::new(
                ErrorCode::UserPatRequired,
                "Require User PAT is on for this integration and this user has not stored a personal access token yet",
            ),
            R::PatUnsupportedByHost => Problem::new(
                ErrorCode::PatUnsupportedByHost,
                "TFS 2013 and TFS 2015 do not support personal access tokens. With Require User PAT on, branches and pull requests cannot be created or deleted through this integration.",
            ),
            R::OperationNotAllowed => Problem::new(
                ErrorCode::OperationNotAllowed,
                "only reads, create branch, delete branch and create pull request pass through patgate",
            ),
        }
    }
}

impl From<&ratelimit::Refusal> for Problem {
    fn from(refusal: &ratelimit::Refusal) -> Problem {
        let mut problem = Problem::new(
            ErrorCode::RateLimited,
            format!(
                "over the per-{} limit for {}: {} requests per {} s (burst {}); retry in {} s",
                refusal.tier.as_str(),
                refusal.class.as_str(),
                refusal.quota.requests,
                refusal.quota.window_seconds,
                refusal.quota.burst,
                refusal.retry_after
            ),
        )
        .retry_after(refusal.retry_after);
        for (name, value) in [
            ("ratelimit-policy", refusal.policy_field()),
            ("ratelimit", refusal.limit_field()),
        ] {
            // Built from integers and fixed names: always a valid field value.
            if let Ok(value) = HeaderValue::try_from(value) {
                problem
                    .headers
                    .push((http::HeaderName::from_static(name), value));
            }
        }
        problem
    }
}

impl From<&ratelimit::HoldRefusal> for Problem {
    fn from(hold: &ratelimit::HoldRefusal) -> Problem {
        match hold {
            ratelimit::HoldRefusal::Held { retry_after, .. } => {
                Problem::new(ErrorCode::HostRateLimited, hold.to_string())
                    .blamed(Blame::Host)
                    .retry_after(*retry_after)
            }
            ratelimit::HoldRefusal::Store(e) => e.into(),
        }
    }
}

impl From<&SaveError> for Problem {
    fn from(err: &SaveError) -> Problem {
        match err {
            SaveError::Host(e) => e.into(),
            SaveError::Vault(e) => e.into(),
            SaveError::HostHasNoPats { .. } => {
                Problem::new(ErrorCode::HostHasNoPats, err.to_string())
            }
            SaveError::App(e @ AppTokenError::Key { .. }) => {
                Problem::new(ErrorCode::BadRequest, e.to_string())
            }
            SaveError::App(AppTokenError::Host { source, .. }) => {
                let problem = Problem::from(source);
                Problem::new(problem.code, err.to_string())
            }
        }
    }
}

impl From<&HostCallError> for Problem {
    fn from(err: &HostCallError) -> Problem {
        use HostCallError as E;
        match err {
            E::WhoAmI(e) => e.into(),
            E::Upstream(e) => e.into(),
            E::UnsupportedCredential(_) => Problem::new(ErrorCode::BadRequest, err.to_string()),
            E::Detect(_) | E::Url { .. } => {
                Problem::new(ErrorCode::UpstreamUnreachable, err.to_string())
            }
        }
    }
}

impl From<&WhoAmIError> for Problem {
    fn from(err: &WhoAmIError) -> Problem {
        use WhoAmIError as E;
        let code = match err {
            E::Rejected(_) => ErrorCode::PatInvalid,
            E::InsufficientScope { .. } => ErrorCode::PatInsufficientScope,
            E::UnexpectedAnswer(_) => ErrorCode::UpstreamUnreachable,
            E::UnsupportedCredential(_) => ErrorCode::BadRequest,
        };
        Problem::new(code, err.to_string())
    }
}

/// The status of the connect page's answer to a link it cannot use (the page is HTML, not
/// problem+json; its wording is the page's).
pub(crate) fn link_status(err: &LinkError) -> StatusCode {
    match err {
        LinkError::Invalid => StatusCode::NOT_FOUND,
        LinkError::Expired | LinkError::Used => StatusCode::GONE,
        LinkError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        LinkError::Store(e) => Problem::of(e).status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        }
    }

    #[test]
    fn the_protocol_document_lists_every_code() {
        let doc = include_str!("../docs/protocol.md");
        for code in ErrorCode::ALL {
            let row = format!("| {} | `{}` |", code.status().as_u16(), code.as_str());
            assert!(doc.contains(&row), "docs/protocol.md has no row `{row}`");
        }
    }

    #[test]
    fn problem_body_is_rfc9457() {
        let p = Problem::of(&RequestError::Policy {
            refusal: policy::Refusal::UserPatRequired,
            setup_url: Some("https://patgate.example/connect/abc".into()),
        });
        let v: serde_json::Value = serde_json::from_slice(&p.to_json(Some("req-1"))).unwrap();
        assert_eq!(v["status"], 403);
        assert_eq!(v["code"], "user-pat-required");
        assert_eq!(v["type"], "urn:patgate:problem:user-pat-required");
        assert_eq!(v["setup_url"], "https://patgate.example/connect/abc");
        assert_eq!(v["request_id"], "req-1");
        let resp = p.into_response(None);
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn a_rate_limit_refusal_carries_the_draft_headers() {
        let refusal = ratelimit::Refusal {
            tier: ratelimit::Tier::Integration,
            class: ratelimit::Class::Reads,
            quota: crate::config::QuotaSettings {
                requests: 5000,
                window_seconds: 3600,
                burst: 100,
            },
            retry_after: 12,
        };
        let problem = Problem::of(&RequestError::RateLimited(refusal));
        assert_eq!(problem.code, ErrorCode::RateLimited);
        let response = problem.into_response(None);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "12");
        assert_eq!(
            response.headers()["ratelimit-policy"],
            r#""integration-reads";q=5000;w=3600"#
        );
        assert_eq!(
            response.headers()["ratelimit"],
            r#""integration-reads";r=0;t=12"#
        );
    }

    #[test]
    fn a_shared_store_that_does_not_answer_is_503_unavailable_with_retry_after() {
        let unreachable = PgError::Unreachable {
            location: "postgresql://db:5432/patgate".into(),
            during: "checking a nonce",
            reason: "connection refused".into(),
        };
        let refused = PgError::Database {
            location: "postgresql://db:5432/patgate".into(),
            during: "writing a record",
            reason: "25006: cannot execute INSERT in a read-only transaction".into(),
        };
        let vault = |e: PgError| VaultError::Storage {
            path: "postgresql://db:5432/patgate".into(),
            source: crate::store::RecordStoreError::Failed(Box::new(e)),
        };
        let outage = [
            Problem::of(&AuthError::Nonce(NonceError::Store(
                unreachable.clone().into(),
            ))),
            Problem::of(&vault(unreachable)),
        ];
        for problem in outage {
            assert_eq!(problem.code, ErrorCode::Unavailable, "{problem:?}");
            assert_eq!(problem.retry_after, Some(1), "{problem:?}");
            assert!(problem.detail.contains("does not answer"), "{problem:?}");
        }
        // A database that answered with an error is no outage: the detail points at the log.
        let failed = Problem::of(&vault(refused));
        assert_eq!(failed.code, ErrorCode::Unavailable);
        assert!(failed.detail.contains("see the patgate log"), "{failed:?}");
    }

    #[test]
    fn blame_follows_whose_fault_it_is() {
        let cases: [(Problem, ErrorCode, Blame); 5] = [
            (
                Problem::of(&RequestError::UnknownIntegration("x".into())),
                ErrorCode::UnknownIntegration,
                Blame::Caller,
            ),
            (
                Problem::of(&RequestError::Upstream(UpstreamError::Timeout {
                    after: std::time::Duration::from_secs(1),
                })),
                ErrorCode::UpstreamTimeout,
                Blame::Host,
            ),
            (
                Problem::of(&RequestError::NoSecret("ghe".into())),
                ErrorCode::Unavailable,
                Blame::Patgate,
            ),
            (
                Problem::of(&AuthError::Nonce(NonceError::Full)),
                ErrorCode::Unavailable,
                Blame::Patgate,
            ),
            (
                Problem::of(&AuthError::Nonce(NonceError::Replayed)),
                ErrorCode::SignatureReplayed,
                Blame::Caller,
            ),
        ];
        for (problem, code, blame) in cases {
            assert_eq!((problem.code, problem.blame), (code, blame), "{problem:?}");
        }
    }
}
