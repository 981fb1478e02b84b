//! Every error a client can see, mapped to an HTTP status and a stable problem+json `code`
//! (RFC 9457) in exactly this one place.
//!
//! Modules keep their own error enums; the `From` impls at the bottom decide what each of
//! them means on the wire. Nothing here formats a secret: module errors never carry one, and
//! `detail` strings are built from those errors' `Display`.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::{full, ResponseBody};

/// The stable error codes of the contract with the Jira app (docs/protocol.md).
///
/// The string form never changes once published; add codes, never rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
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
    HeadersTooLarge,
    RateLimited,
    HostRateLimited,
    UpstreamUnreachable,
    UpstreamTls,
    UpstreamTimeout,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation tests.
    pub const ALL: [ErrorCode; 24] = [
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
        Self::HeadersTooLarge,
        Self::RateLimited,
        Self::HostRateLimited,
        Self::UpstreamUnreachable,
        Self::UpstreamTls,
        Self::UpstreamTimeout,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The `code` member of the problem document.
    pub fn as_str(self) -> &'static str {
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
            Self::HeadersTooLarge => "headers-too-large",
            Self::RateLimited => "rate-limited",
            Self::HostRateLimited => "host-rate-limited",
            Self::UpstreamUnreachable => "upstream-unreachable",
            Self::UpstreamTls => "upstream-tls",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::SignatureMissing
            | Self::SignatureInvalid
            | Self::SignatureExpired
            | Self::SignatureReplayed
            | Self::UnknownKey => StatusCode::UNAUTHORIZED,
            Self::ClientNotAllowed
            | Self::OperationNotAllowed
            | Self::UserPatRequired
            | Self::PatUnsupportedByHost => StatusCode::FORBIDDEN,
            Self::UnknownIntegration | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PatInvalid | Self::PatInsufficientScope => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited | Self::HostRateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnreachable | Self::UpstreamTls => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed summary of the problem type (the problem document's `title`).
    pub fn title(self) -> &'static str {
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
            Self::HeadersTooLarge => "Request headers are too large",
            Self::RateLimited => "Rate limit exceeded",
            Self::HostRateLimited => "The git host is rate limiting this credential",
            Self::UpstreamUnreachable => "The git host could not be reached",
            Self::UpstreamTls => "TLS with the git host failed",
            Self::UpstreamTimeout => "The git host did not answer in time",
            Self::Unavailable => "patgate is not ready to serve this request",
            Self::Internal => "Internal error",
        }
    }
}

/// A problem+json answer: the one shape every refusal takes.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    /// For `user-pat-required`: where the user can enter a PAT.
    pub setup_url: Option<String>,
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
    request_id: Option<&'a str>,
}

/// Prefix of the problem `type` URIs. They name the problem type and are not meant to be
/// fetched (RFC 9457 §3.1.1 allows that); docs/protocol.md describes each code.
pub const PROBLEM_TYPE_BASE: &str = "urn:patgate:problem:";

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
            setup_url: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body, with the request id when known so users can quote it to admins.
    pub fn to_json(&self, request_id: Option<&str>) -> Vec<u8> {
        let body = ProblemBody {
            kind: format!("{PROBLEM_TYPE_BASE}{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            code: self.code.as_str(),
            detail: &self.detail,
            setup_url: self.setup_url.as_deref(),
            request_id,
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }

    pub fn into_response(self, request_id: Option<&str>) -> Response<ResponseBody> {
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

impl From<crate::signature::SignatureError> for Problem {
    fn from(err: crate::signature::SignatureError) -> Self {
        use crate::signature::SignatureError as E;
        let code = match &err {
            E::Missing => ErrorCode::SignatureMissing,
            E::Invalid(_) | E::DigestMismatch | E::DigestInvalid(_) => ErrorCode::SignatureInvalid,
            E::Expired(_) => ErrorCode::SignatureExpired,
            E::Replayed => ErrorCode::SignatureReplayed,
            E::UnknownKey(_) => ErrorCode::UnknownKey,
            E::NonceCacheFull => {
                return Problem {
                    retry_after: Some(1),
                    ..Problem::new(ErrorCode::Unavailable, err.to_string())
                }
            }
        };
        Problem::new(code, err.to_string())
    }
}

impl From<crate::vault::VaultError> for Problem {
    fn from(err: crate::vault::VaultError) -> Self {
        use crate::vault::VaultError as E;
        match err {
            E::InvalidId { .. } => Problem::new(ErrorCode::BadRequest, err.to_string()),
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

impl From<crate::upstream::UpstreamError> for Problem {
    fn from(err: crate::upstream::UpstreamError) -> Self {
        use crate::upstream::UpstreamError as E;
        let code = match &err {
            E::Unreachable(_) | E::Protocol(_) => ErrorCode::UpstreamUnreachable,
            E::Tls(_) => ErrorCode::UpstreamTls,
            E::Timeout { .. } => ErrorCode::UpstreamTimeout,
        };
        Problem::new(code, err.to_string())
    }
}

impl From<crate::policy::Refusal> for Problem {
    fn from(refusal: crate::policy::Refusal) -> Self {
        use crate::policy::Refusal as R;
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

impl From<crate::hosts::WhoAmIError> for Problem {
    fn from(err: crate::hosts::WhoAmIError) -> Self {
        use crate::hosts::WhoAmIError as E;
        match err {
            E::Rejected(_) => Problem::new(ErrorCode::PatInvalid, err.to_string()),
            E::InsufficientScope { .. } => {
                Problem::new(ErrorCode::PatInsufficientScope, err.to_string())
            }
            E::Upstream(inner) => inner.into(),
            E::UnexpectedAnswer(_) => Problem::new(ErrorCode::UpstreamUnreachable, err.to_string()),
            E::UnsupportedCredential(_) => Problem::new(ErrorCode::BadRequest, err.to_string()),
        }
    }
}

impl From<crate::pat::StoreError> for Problem {
    fn from(err: crate::pat::StoreError) -> Self {
        match err {
            crate::pat::StoreError::Host(e) => e.into(),
            crate::pat::StoreError::Vault(e) => e.into(),
        }
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
        let mut p = Problem::new(ErrorCode::UserPatRequired, "no PAT");
        p.setup_url = Some("https://patgate.example/connect/abc".into());
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
}
