//! Host adapters: what each git host's requests mean, and how its credentials are applied.
//!
//! Everything here is pure: classification reads the method, the raw path, the query, the
//! headers (CodeCommit: `X-Amz-Target`) and (where a host needs it) the body; credential
//! application edits the final request (CodeCommit signs it with SigV4 and the current
//! time). Sockets live in [`crate::upstream`]; the requests patgate sends on its own behalf
//! (who-am-I, the TFS release probe) are sent by `host_calls`.
//!
//! Paths are handled as the raw bytes the app sent. Nothing is percent-decoded or
//! normalised: GitLab, for one, needs `%2F` to reach it intact, and a decoded path could be
//! classified differently from what the host later executes. Classification fails closed: a
//! path that does not match a known action exactly is an [`Operation::OtherWrite`] unless the
//! method is a read.

pub mod azure;
pub mod codecommit;
pub mod github;
pub mod gitlab;
pub mod web;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

use crate::config::{HostKind, Integration};
use crate::policy::Operation;
use crate::vault::Credential;

/// A git host kind: the host-specific half of forwarding a request.
///
/// Adding a host kind is one module implementing this trait plus one line in
/// [`adapter_for`]; the policy, the vault and the proxy do not change. Implementations are
/// pure: no sockets, no clock reads except where a credential scheme signs with the time.
pub trait HostAdapter: Send + Sync + std::fmt::Debug {
    /// What the request does. `path` is the raw path after `/git/{integration}`; `body` is
    /// the whole request body (for hosts whose actions are told apart by it).
    fn classify(&self, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Operation;

    /// False for hosts that have no personal access tokens (TFS 2013 and 2015).
    fn supports_pats(&self) -> bool {
        true
    }

    /// Query parameters that carry credentials on this host; they are removed.
    fn credential_query_params(&self) -> &'static [&'static str] {
        &[]
    }

    /// Request headers that carry credentials on this host, beyond
    /// [`COMMON_CREDENTIAL_HEADERS`]; they are removed.
    fn credential_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether this host can use `credential` at all (checked before it is stored).
    fn accepts(&self, credential: &Credential) -> Result<(), UnsupportedCredential>;

    /// Puts `credential` on the outgoing request in the host's own scheme. The request is
    /// final (absolute URI, headers, body), so schemes that sign the whole request can.
    fn apply_credential(
        &self,
        request: &mut Request<Bytes>,
        credential: &Credential,
    ) -> Result<(), UnsupportedCredential>;

    /// Headers every request to this host gets when the app did not set them.
    fn default_headers(&self, _headers: &mut HeaderMap) {}

    /// The "who am I" request, without a credential. A path-only URI is resolved against the
    /// integration's base URL; the caller then applies the credential being checked.
    fn who_am_i_request(&self) -> Request<Bytes>;

    /// Reads the host's answer to [`HostAdapter::who_am_i_request`].
    fn who_am_i_answer(
        &self,
        status: http::StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HostIdentity, WhoAmIError>;

    /// For integration credentials only: a second who-am-I request to send when the host
    /// answered [`HostAdapter::who_am_i_request`] with `status`, for credentials that belong
    /// to no user (GitHub App installation tokens get 403 on `GET /user`). `None`: the first
    /// answer stands.
    fn integration_who_am_i_fallback(
        &self,
        _status: http::StatusCode,
        _headers: &HeaderMap,
    ) -> Option<Request<Bytes>> {
        None
    }

    /// Reads the answer to [`HostAdapter::integration_who_am_i_fallback`].
    fn integration_who_am_i_fallback_answer(
        &self,
        status: http::StatusCode,
        _headers: &HeaderMap,
        _body: &[u8],
    ) -> Result<HostIdentity, WhoAmIError> {
        Err(WhoAmIError::UnexpectedAnswer(format!(
            "the second who-am-I request answered {status}"
        )))
    }

    /// Where on the host a user makes a token, and what it needs (for users and docs).
    fn token_help(&self) -> &'static str;

    /// Whether the host's answer to a request made with a user's PAT says that the PAT
    /// itself was refused (invalid, expired, revoked), as opposed to the request. GitHub,
    /// GitLab and Azure DevOps / TFS (with `X-TFS-FedAuthRedirect: Suppress`, which patgate
    /// always sends) answer such a token 401.
    fn refuses_credential(&self, status: http::StatusCode, _headers: &HeaderMap) -> bool {
        status == http::StatusCode::UNAUTHORIZED
    }

    /// GitHub: the answer says the token must first be authorised for an organisation's SAML
    /// single sign-on; the URL where the user does so, exactly as the host sent it.
    fn sso_authorization_url(
        &self,
        _status: http::StatusCode,
        _headers: &HeaderMap,
    ) -> Option<String> {
        None
    }

    /// When the credential the request was made with expires, if the answer's headers say
    /// (Unix seconds).
    fn credential_expiry(&self, _headers: &HeaderMap) -> Option<u64> {
        None
    }

    /// A request asking the host when the token expires, for hosts that say it only there
    /// (GitLab's `/personal_access_tokens/self`); sent after a successful who-am-I.
    fn token_expiry_request(&self) -> Option<Request<Bytes>> {
        None
    }

    /// Reads the answer to [`HostAdapter::token_expiry_request`]; `None`: not said (an older
    /// release, a token without expiry).
    fn token_expiry_answer(&self, _status: http::StatusCode, _body: &[u8]) -> Option<u64> {
        None
    }
}

/// The adapter for an integration's host kind.
pub fn adapter_for(integration: &Integration) -> std::sync::Arc<dyn HostAdapter> {
    match integration.kind {
        HostKind::Github => std::sync::Arc::new(github::Github::new(&integration.base_url)),
        HostKind::Codecommit => std::sync::Arc::new(codecommit::CodeCommit::new(integration)),
        HostKind::Gitlab => std::sync::Arc::new(gitlab::Gitlab),
        HostKind::AzureDevops | HostKind::Tfs => {
            std::sync::Arc::new(azure::Azure::new(integration))
        }
    }
}

/// Credential headers removed from every inbound request, whatever the host: the app never
/// chooses the credential, patgate does.
pub const COMMON_CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "private-token",
    "job-token",
    "sudo",
    "x-amz-security-token",
    // Atlassian API tokens Forge adds to a Forge Remote call (app system, user).
    "x-forge-oauth-system",
    "x-forge-oauth-user",
];

/// Who a credential belongs to, as the host says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub login: String,
    /// Scopes (classic tokens) or permissions the host reported; empty when it reports none.
    pub scopes: Vec<String>,
}

/// The credential kind does not fit the host (e.g. an AWS key pair for GitHub).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a {0} credential cannot be used with this host")]
pub struct UnsupportedCredential(pub &'static str);

/// Why a token could not be confirmed by the host.
#[derive(Debug, thiserror::Error)]
pub enum WhoAmIError {
    #[error("the git host refused the token: {0}")]
    Rejected(String),
    #[error("the token lacks {needed}; it has: {has}")]
    InsufficientScope { needed: String, has: String },
    #[error("the git host gave an unexpected answer: {0}")]
    UnexpectedAnswer(String),
    #[error(transparent)]
    UnsupportedCredential(#[from] UnsupportedCredential),
}

/// Removes the query parameters named in `names` from a raw query string, keeping every
/// other byte as it was. Names are compared after percent-decoding, so `access%5Ftoken`
/// is caught too. Returns `None` when nothing is left.
pub fn strip_query_params<'q>(query: &'q str, names: &[&str]) -> Option<std::borrow::Cow<'q, str>> {
    use std::borrow::Cow;
    if names.is_empty() {
        return (!query.is_empty()).then_some(Cow::Borrowed(query));
    }
    let is_credential = |pair: &str| {
        let name = pair.split('=').next().unwrap_or("");
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let decoded = decoded.replace('+', " ");
        names.iter().any(|n| decoded.eq_ignore_ascii_case(n))
    };
    if !query.split('&').any(is_credential) {
        return (!query.is_empty()).then_some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_credential(p)).collect();
    let joined = kept.join("&");
    (!joined.is_empty()).then_some(Cow::Owned(joined))
}

/// For hosts that take tokens only (PATs, app and OAuth tokens): GitHub, GitLab.
pub fn accepts_token_only(credential: &Credential) -> Result<(), UnsupportedCredential> {
    match credential {
        Credential::Token(_) => Ok(()),
        other => Err(UnsupportedCredential(other.kind_name())),
    }
}

/// Sets `name` to `value` unless the request already has it.
pub(crate) fn set_default(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    headers
        .entry(name)
        .or_insert_with(|| HeaderValue::from_static(value));
}

/// Splits a raw path into segments without decoding. `"/a/b/"` gives `["a", "b", ""]`.
/// A path that does not start with `/` is not a path below the base URL (the proxy never
/// makes one, but the classifiers are public): it has no segments, so no action matches it
/// (found by fuzz/ classify_github and classify_gitlab: `repos/…` without its slash was
/// classified like `/repos/…`).
pub(crate) fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/')
        .map(|rest| rest.split('/'))
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression inputs of fuzz/ classify_github and classify_gitlab.
    #[test]
    fn a_path_without_its_leading_slash_is_never_an_action() {
        use crate::policy::Operation;
        let delete = Method::DELETE;
        let post = Method::POST;
        assert_eq!(
            github::classify(&delete, "repos/acme/api/git/refs/heads/f/2", b""),
            Operation::OtherWrite
        );
        assert_eq!(
            github::classify(&delete, "/repos/acme/api/git/refs/heads/f/2", b""),
            Operation::DeleteBranch
        );
        assert_eq!(
            gitlab::classify(
                &post,
                "api/v4/projects/acme%2Fplatform%2Fapi/repository/branches",
                b"branch=PROJ-1&ref=main"
            ),
            Operation::OtherWrite
        );
        assert_eq!(
            azure::classify(
                &post,
                "Fabrikam/_apis/git/repositories/api/pullrequests",
                b"{}"
            ),
            Operation::OtherWrite
        );
        assert_eq!(segments("").count(), 0);
        assert_eq!(segments("/").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn strips_credential_params_and_keeps_the_rest_byte_for_byte() {
        let q = "per_page=100&access_token=abc&ref=a%2Fb";
        assert_eq!(
            strip_query_params(q, &["access_token"]).as_deref(),
            Some("per_page=100&ref=a%2Fb")
        );
        assert_eq!(
            strip_query_params("access%5Ftoken=abc", &["access_token"]),
            None
        );
        assert_eq!(
            strip_query_params("ACCESS_TOKEN=x&a=1", &["access_token"]).as_deref(),
            Some("a=1")
        );
        // Untouched queries are borrowed, not rebuilt.
        assert!(matches!(
            strip_query_params("a=%2F&b", &["access_token"]),
            Some(std::borrow::Cow::Borrowed("a=%2F&b"))
        ));
    }
}
