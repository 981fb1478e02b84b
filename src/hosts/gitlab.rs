//! GitLab self-managed and gitlab.com: REST API v4 under `/api/v4` (the base URL is the
//! instance, with its relative URL root if it has one).
//!
//! | operation | request |
//! |---|---|
//! | create branch | `POST /api/v4/projects/{id}/repository/branches` |
//! | delete branch | `DELETE /api/v4/projects/{id}/repository/branches/{branch}` |
//! | create merge request | `POST /api/v4/projects/{id}/merge_requests` |
//! | who am I | `GET /api/v4/user` |
//!
//! `{id}` is a numeric id or the URL-encoded full path (`group%2Fproject`), and a branch with
//! a `/` is sent as `feature%2Fx`: each is exactly one raw path segment. A raw `/` in either
//! does not route on GitLab, so such paths are other-writes (fail closed), and nothing is
//! decoded on the way to the host.
//!
//! GitLab reads credentials from headers (`PRIVATE-TOKEN`, `JOB-TOKEN`, `Authorization`,
//! `Sudo`) and from request *parameters*, which include the query and form or JSON bodies.
//! The headers and query parameters are stripped; a write whose body names one of those
//! parameters is an other-write, so it never rides on a user's or the integration's token.
//!
//! Scopes: the actions need the `api` scope. patgate validates a PAT with `GET /api/v4/user`
//! only. A token without read access to the API (e.g. only `read_repository`) is refused
//! there with `403 insufficient_scope`, which becomes `pat-insufficient-scope`. A token
//! that can read `/user` but not write (`read_user`, `read_api`) is stored, and GitLab
//! refuses the action itself with its own `403 insufficient_scope`, passed through to the
//! app. `GET /api/v4/personal_access_tokens/self` would list the scopes, but it exists only
//! from GitLab 15.5, answers for personal tokens only (not for project, group or OAuth
//! tokens) and would take a second round trip that the one-request who-am-I step does not
//! have; the honest report is the host's own answer to the action.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use secrecy::ExposeSecret;

use super::{
    segments, strip_query_params, HostAdapter, HostIdentity, UnsupportedCredential, WhoAmIError,
};
use crate::policy::Operation;
use crate::vault::Credential;

/// Query (and body) parameters GitLab reads credentials or impersonation from.
pub const CREDENTIAL_QUERY_PARAMS: &[&str] =
    &["private_token", "access_token", "job_token", "sudo"];

/// The header GitLab takes a personal, project or group access token in.
pub const TOKEN_HEADER: &str = "private-token";

/// Shown to users and admins where a PAT is asked for.
pub const TOKEN_HELP: &str = "Create a token in GitLab under Edit profile → Access tokens → Add new token, with the “api” scope.";

/// The GitLab adapter. It has no per-integration data: paths carry their `/api/v4`.
#[derive(Debug, Clone, Default)]
pub struct Gitlab;

impl HostAdapter for Gitlab {
    fn classify(
        &self,
        method: &Method,
        path: &str,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Operation {
        classify(method, path, body)
    }

    fn credential_query_params(&self) -> &'static [&'static str] {
        CREDENTIAL_QUERY_PARAMS
    }

    fn accepts(&self, credential: &Credential) -> Result<(), UnsupportedCredential> {
        super::accepts_token_only(credential)
    }

    fn apply_credential(
        &self,
        request: &mut Request<Bytes>,
        credential: &Credential,
    ) -> Result<(), UnsupportedCredential> {
        apply_credential(request.headers_mut(), credential)
    }

    fn who_am_i_request(&self) -> Request<Bytes> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = http::Uri::from_static("/api/v4/user");
        request
    }

    fn who_am_i_answer(
        &self,
        status: StatusCode,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HostIdentity, WhoAmIError> {
        who_am_i_answer(status, body)
    }

    fn token_help(&self) -> &'static str {
        TOKEN_HELP
    }

    /// `GET /api/v4/personal_access_tokens/self` (GitLab 15.5 and later; GitLab's REST docs,
    /// "Personal access tokens API"): its `expires_at` is a date, the token expiring at its
    /// start, 00:00 UTC. Older releases answer 404: unknown.
    fn token_expiry_request(&self) -> Option<Request<Bytes>> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = http::Uri::from_static("/api/v4/personal_access_tokens/self");
        Some(request)
    }

    fn token_expiry_answer(&self, status: StatusCode, body: &[u8]) -> Option<u64> {
        #[derive(serde::Deserialize)]
        struct TokenSelf {
            expires_at: Option<String>,
        }
        if status != StatusCode::OK {
            return None;
        }
        let date = serde_json::from_slice::<TokenSelf>(body).ok()?.expires_at?;
        let at = humantime::parse_rfc3339_weak(&format!("{date} 00:00:00")).ok()?;
        Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
    }
}

/// Classifies a request; `path` is the raw path below the integration's base URL.
pub fn classify(method: &Method, path: &str, body: &[u8]) -> Operation {
    if method == Method::GET || method == Method::HEAD {
        return Operation::Read;
    }
    if names_a_credential(body) {
        return Operation::OtherWrite;
    }
    let segs: Vec<&str> = segments(path).collect();
    let project = match segs.as_slice() {
        ["api", "v4", "projects", id, rest @ ..] if !id.is_empty() => rest,
        _ => return Operation::OtherWrite,
    };
    match (method, project) {
        (&Method::POST, ["repository", "branches"]) => Operation::CreateBranch,
        (&Method::DELETE, ["repository", "branches", branch]) if !branch.is_empty() => {
            Operation::DeleteBranch
        }
        (&Method::POST, ["merge_requests"]) => Operation::CreatePullRequest,
        _ => Operation::OtherWrite,
    }
}

/// Whether a body passes a credential or `sudo` as a parameter: top-level JSON keys, or
/// `name=value` pairs of a form body.
fn names_a_credential(body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    let is_credential = |name: &str| {
        CREDENTIAL_QUERY_PARAMS
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c))
    };
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
        return map.keys().any(|k| is_credential(k));
    }
    match std::str::from_utf8(body) {
        // The text comes back borrowed, untouched, exactly when no pair names a credential.
        Ok(text) => !matches!(
            strip_query_params(text, CREDENTIAL_QUERY_PARAMS),
            Some(std::borrow::Cow::Borrowed(_))
        ),
        // Not text: GitLab would not read parameters from it.
        Err(_) => false,
    }
}

/// `PRIVATE-TOKEN: <token>`, marked sensitive so HTTP/2 never indexes it.
#[allow(
    clippy::disallowed_methods,
    reason = "the credential is written onto the upstream request here"
)]
pub fn apply_credential(
    headers: &mut HeaderMap,
    credential: &Credential,
) -> Result<(), UnsupportedCredential> {
    let Credential::Token(token) = credential else {
        return Err(UnsupportedCredential(credential.kind_name()));
    };
    let mut value = HeaderValue::try_from(token.expose_secret())
        .map_err(|_| UnsupportedCredential("token with characters not allowed in a header"))?;
    value.set_sensitive(true);
    headers.insert(TOKEN_HEADER, value);
    Ok(())
}

/// Reads `GET /api/v4/user`.
pub fn who_am_i_answer(status: StatusCode, body: &[u8]) -> Result<HostIdentity, WhoAmIError> {
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => {
            return Err(WhoAmIError::Rejected(
                "GitLab answered 401: the token is wrong, expired or revoked".into(),
            ))
        }
        StatusCode::FORBIDDEN if is_insufficient_scope(body) => {
            return Err(WhoAmIError::InsufficientScope {
                needed: "the `api` scope".into(),
                has: "a scope that cannot use the REST API".into(),
            })
        }
        StatusCode::FORBIDDEN => {
            return Err(WhoAmIError::Rejected(
                "GitLab answered 403: the account may be blocked or not allowed to use the API"
                    .into(),
            ))
        }
        other => {
            return Err(WhoAmIError::UnexpectedAnswer(format!(
                "GET /api/v4/user answered {other}"
            )))
        }
    }
    #[derive(serde::Deserialize)]
    struct User {
        username: String,
    }
    let user: User = serde_json::from_slice(body).map_err(|_| {
        WhoAmIError::UnexpectedAnswer(
            "GET /api/v4/user did not return a user with a username".into(),
        )
    })?;
    Ok(HostIdentity {
        login: user.username,
        scopes: Vec::new(),
    })
}

/// GitLab's answer to a token whose scopes do not cover the endpoint:
/// `403 {"error": "insufficient_scope", ...}`.
fn is_insufficient_scope(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Error {
        error: String,
    }
    serde_json::from_slice::<Error>(body).is_ok_and(|e| e.error == "insufficient_scope")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_actions() {
        let p = "/api/v4/projects";
        assert_eq!(
            classify(
                &Method::POST,
                &format!("{p}/42/repository/branches"),
                br#"{"branch":"x","ref":"main"}"#
            ),
            Operation::CreateBranch
        );
        assert_eq!(
            classify(
                &Method::POST,
                &format!("{p}/acme%2Fapi/repository/branches"),
                b""
            ),
            Operation::CreateBranch
        );
        assert_eq!(
            classify(
                &Method::DELETE,
                &format!("{p}/acme%2Fapi/repository/branches/feature%2FPROJ-1"),
                b""
            ),
            Operation::DeleteBranch
        );
        assert_eq!(
            classify(
                &Method::POST,
                &format!("{p}/acme%2Fsub%2Fapi/merge_requests"),
                br#"{"title":"t"}"#
            ),
            Operation::CreatePullRequest
        );
        assert_eq!(
            classify(&Method::GET, &format!("{p}/42/repository/branches"), b""),
            Operation::Read
        );
        assert_eq!(
            classify(&Method::HEAD, "/api/v4/user", b""),
            Operation::Read
        );
    }

    #[test]
    fn lookalikes_are_other_writes() {
        let cases: &[(Method, &str, &[u8])] = &[
            // A raw slash in the project or the branch does not route on GitLab.
            (
                Method::POST,
                "/api/v4/projects/acme/api/repository/branches",
                b"",
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/repository/branches/feature/x",
                b"",
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/repository/branches/",
                b"",
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/repository/branches",
                b"",
            ),
            (Method::POST, "/api/v4/projects//repository/branches", b""),
            (
                Method::PUT,
                "/api/v4/projects/42/repository/branches/x",
                b"",
            ),
            (
                Method::POST,
                "/api/v4/projects/42/repository/branches/x/protect",
                b"",
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/repository/merged_branches",
                b"",
            ),
            (Method::POST, "/api/v4/projects/42/repository/tags", b""),
            (
                Method::POST,
                "/api/v4/projects/42/repository/commits",
                b"{}",
            ),
            (
                Method::PUT,
                "/api/v4/projects/42/merge_requests/1/merge",
                b"{}",
            ),
            (
                Method::POST,
                "/api/v4/projects/42/merge_requests/1/notes",
                b"{}",
            ),
            (
                Method::POST,
                "/api/v4/projects/42/merge_requests.json",
                b"{}",
            ),
            (Method::POST, "/api/v4/projects/42/%6Derge_requests", b"{}"),
            (Method::POST, "/api/v3/projects/42/merge_requests", b"{}"),
            (Method::POST, "/api/v4/projects/42/Merge_Requests", b"{}"),
            (Method::DELETE, "/api/v4/projects/42", b""),
            (Method::POST, "/api/graphql", b"{}"),
            (Method::OPTIONS, "/api/v4/projects/42/merge_requests", b""),
            // Credentials or impersonation in the body.
            (
                Method::POST,
                "/api/v4/projects/42/merge_requests",
                br#"{"title":"t","sudo":"root"}"#,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/repository/branches",
                br#"{"branch":"x","ref":"m","PRIVATE_TOKEN":"t"}"#,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/repository/branches",
                b"branch=x&ref=main&sudo=1",
            ),
            (
                Method::POST,
                "/api/v4/projects/42/repository/branches",
                b"branch=x&job%5Ftoken=t",
            ),
        ];
        for (method, path, body) in cases {
            assert_eq!(
                classify(method, path, body),
                Operation::OtherWrite,
                "{method} {path} {}",
                String::from_utf8_lossy(body)
            );
        }
        // A form body without credentials is fine.
        assert_eq!(
            classify(
                &Method::POST,
                "/api/v4/projects/42/repository/branches",
                b"branch=x&ref=main"
            ),
            Operation::CreateBranch
        );
    }

    #[test]
    fn private_token_header_is_sensitive_and_tokens_only() {
        let mut headers = HeaderMap::new();
        apply_credential(
            &mut headers,
            &Credential::Token("glpat-x".to_string().into()),
        )
        .unwrap();
        assert_eq!(headers[TOKEN_HEADER], "glpat-x");
        assert!(headers[TOKEN_HEADER].is_sensitive());
        assert!(headers.get("authorization").is_none());
        let pw = Credential::UsernamePassword {
            username: "u".into(),
            password: "p".to_string().into(),
        };
        assert!(apply_credential(&mut headers, &pw).is_err());
        assert!(Gitlab.accepts(&pw).is_err());
    }

    #[test]
    fn who_am_i_reads_the_username_and_scope_refusals() {
        let id = who_am_i_answer(
            StatusCode::OK,
            br#"{"id":7,"username":"alice","name":"Alice"}"#,
        )
        .unwrap();
        assert_eq!(id.login, "alice");
        let err = who_am_i_answer(
            StatusCode::UNAUTHORIZED,
            br#"{"message":"401 Unauthorized"}"#,
        )
        .unwrap_err();
        assert!(matches!(err, WhoAmIError::Rejected(_)), "{err}");
        let err = who_am_i_answer(
            StatusCode::FORBIDDEN,
            br#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api read_user"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, WhoAmIError::InsufficientScope { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`api`"), "{err}");
        let err =
            who_am_i_answer(StatusCode::FORBIDDEN, br#"{"message":"403 Forbidden"}"#).unwrap_err();
        assert!(matches!(err, WhoAmIError::Rejected(_)), "{err}");
        let err = who_am_i_answer(StatusCode::OK, b"<html>").unwrap_err();
        assert!(matches!(err, WhoAmIError::UnexpectedAnswer(_)), "{err}");
    }

    #[test]
    fn who_am_i_is_api_v4_user() {
        assert_eq!(Gitlab.who_am_i_request().uri(), "/api/v4/user");
        assert_eq!(Gitlab.who_am_i_request().method(), Method::GET);
    }
}
