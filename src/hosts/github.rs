//! GitHub, in the three places it runs:
//!
//! | flavour | base URL | REST root |
//! |---|---|---|
//! | Enterprise Server | `https://ghe.example.com` | `/api/v3` |
//! | github.com | `https://api.github.com` | `/` |
//! | Enterprise Cloud with data residency (GHE.com) | `https://api.{subdomain}.ghe.com` | `/` |
//!
//! Paths below are relative to the REST root.
//!
//! | operation | request |
//! |---|---|
//! | create branch | `POST /repos/{o}/{r}/git/refs` with `"ref": "refs/heads/…"` |
//! | delete branch | `DELETE /repos/{o}/{r}/git/refs/heads/…` |
//! | create pull request | `POST /repos/{o}/{r}/pulls` |
//! | who am I | `GET /user`; for integration credentials refused there with 403, `GET /installation/repositories` (GitHub App installation tokens) |
//!
//! A GitHub App as the integration account ([`Credential::GithubApp`]) is asked with the
//! App's JWT: `GET /app/installations/{id}` says which App and account the installation is
//! (its who-am-I), and `POST /app/installations/{id}/access_tokens` mints the installation
//! token that then goes on requests as any token does. This module builds those requests
//! and reads their answers; signing and sending are elsewhere.
//!
//! The same endpoint that creates a branch also creates tags (`refs/tags/…`); only
//! `refs/heads/` counts as a branch, anything else is an other-write.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use http::{Method, Request, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use super::{segments, set_default, HostAdapter, HostIdentity, UnsupportedCredential, WhoAmIError};
use crate::policy::Operation;
use crate::vault::Credential;

/// `access_token` in the query was GitHub's (long removed) way to pass a token.
pub const CREDENTIAL_QUERY_PARAMS: &[&str] = &["access_token"];

/// Shown to users and admins where a PAT is asked for.
pub const TOKEN_HELP: &str = "Create a token on GitHub under Settings → Developer settings → Personal access tokens. \
A classic token needs the “repo” scope; a fine-grained token needs Contents and Pull requests: read and write on the repositories you work with.";

/// The scope a classic PAT needs for the three actions on private repositories.
const REQUIRED_CLASSIC_SCOPE: &str = "repo";

pub use crate::config::GithubFlavour as Flavour;

impl Flavour {
    /// Where the REST API starts below the base URL.
    pub fn api_prefix(self) -> &'static str {
        match self {
            Flavour::Server => "/api/v3",
            Flavour::Cloud | Flavour::DataResidency => "",
        }
    }

    /// What to call it where people read it.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Server => "GitHub Enterprise Server",
            Flavour::Cloud => "GitHub",
            Flavour::DataResidency => "GitHub Enterprise Cloud (GHE.com)",
        }
    }
}

/// The GitHub adapter's per-integration data.
#[derive(Debug, Clone)]
pub struct Github {
    flavour: Flavour,
}

impl Github {
    pub fn new(base_url: &http::Uri) -> Github {
        Github {
            flavour: Flavour::of(base_url),
        }
    }

    fn api_prefix(&self) -> &'static str {
        self.flavour.api_prefix()
    }
}

impl HostAdapter for Github {
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

    /// Tokens, and GitHub Apps (exchanged for installation tokens before a request is sent).
    fn accepts(&self, credential: &Credential) -> Result<(), UnsupportedCredential> {
        match credential {
            Credential::GithubApp { .. } => Ok(()),
            other => super::accepts_token_only(other),
        }
    }

    fn apply_credential(
        &self,
        request: &mut Request<Bytes>,
        credential: &Credential,
    ) -> Result<(), UnsupportedCredential> {
        apply_credential(request.headers_mut(), credential)
    }

    fn default_headers(&self, headers: &mut HeaderMap) {
        default_headers(headers)
    }

    /// `GET /user` (under `/api/v3` on Enterprise Server; at the root on github.com and GHE.com).
    fn who_am_i_request(&self) -> Request<Bytes> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = format!("{}/user", self.api_prefix())
            .parse()
            .expect("a fixed path is a valid URI");
        default_headers(request.headers_mut());
        request
    }

    fn who_am_i_answer(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HostIdentity, WhoAmIError> {
        who_am_i_answer(status, headers, body)
    }

    /// GitHub App installation tokens get 403 on `/user`; `/installation/repositories`
    /// confirms them. Not for a rate-limited 403, which says nothing about the token.
    fn integration_who_am_i_fallback(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Request<Bytes>> {
        if status != StatusCode::FORBIDDEN || is_rate_limited(headers) {
            return None;
        }
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = format!("{}/installation/repositories?per_page=1", self.api_prefix())
            .parse()
            .expect("a fixed path is a valid URI");
        default_headers(request.headers_mut());
        Some(request)
    }

    fn integration_who_am_i_fallback_answer(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HostIdentity, WhoAmIError> {
        installation_answer(status, headers, body)
    }

    fn token_help(&self) -> &'static str {
        TOKEN_HELP
    }

    /// `403` with `X-GitHub-SSO: required; url=…` (GitHub's REST docs, "Authenticating to
    /// the REST API": a token not authorised for an organisation that enforces SAML SSO). The
    /// `partial-results; organizations=…` form comes on successful list answers, which
    /// pass through.
    fn sso_authorization_url(&self, status: StatusCode, headers: &HeaderMap) -> Option<String> {
        if status != StatusCode::FORBIDDEN {
            return None;
        }
        let value = headers.get("x-github-sso")?.to_str().ok()?;
        let (kind, rest) = value.split_once(';')?;
        if !kind.trim().eq_ignore_ascii_case("required") {
            return None;
        }
        let url = rest.trim().strip_prefix("url=")?.trim();
        url.starts_with("https://").then(|| url.to_string())
    }

    /// `GitHub-Authentication-Token-Expiration: 2026-12-31 23:59:59 UTC`, sent on answers to
    /// requests made with a token that expires (fine-grained and classic PATs with an
    /// expiry; GitHub's "Token expiration and revocation").
    fn credential_expiry(&self, headers: &HeaderMap) -> Option<u64> {
        parse_token_expiration(
            headers
                .get("github-authentication-token-expiration")?
                .to_str()
                .ok()?,
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, or with a numeric offset (`-0800`) in place of `UTC`.
fn parse_token_expiration(value: &str) -> Option<u64> {
    let (local, zone) = value.trim().rsplit_once(' ')?;
    let offset: i64 = match zone {
        "UTC" | "Z" | "+0000" | "-0000" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hours: i64 = z[1..3].parse().ok()?;
            let minutes: i64 = z[3..5].parse().ok()?;
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    let at = humantime::parse_rfc3339_weak(local).ok()?;
    let secs = i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()).ok()?;
    u64::try_from(secs - offset).ok()
}

/// What `GET /app/installations/{id}` says of an installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInstallation {
    /// The App's slug (its URL name, e.g. `jira-patgate`).
    pub app_slug: String,
    /// The user or organisation the App is installed on.
    pub account: String,
    /// The installation's permissions as `name:level` (`contents:write`, …), sorted.
    pub permissions: Vec<String>,
}

impl AppInstallation {
    /// Who the integration account is, as `patgate integration set-secret` shows it.
    pub fn identity(&self, app_id: u64, installation_id: u64) -> HostIdentity {
        HostIdentity {
            login: format!(
                "GitHub App `{}` (id {app_id}), installation {installation_id} on {}",
                self.app_slug, self.account
            ),
            scopes: self.permissions.clone(),
        }
    }
}

/// An installation access token and when it expires (Unix seconds).
#[derive(Debug)]
pub struct InstallationToken {
    pub token: SecretString,
    pub expires_at: u64,
}

/// The permissions the three actions need; `metadata: read` comes with every App.
const REQUIRED_APP_PERMISSIONS: &[(&str, &str)] =
    &[("contents", "write"), ("pull_requests", "write")];

impl Github {
    /// `GET /app/installations/{id}`, to send with the App's JWT.
    pub fn app_installation_request(&self, installation_id: u64) -> Request<Bytes> {
        self.app_request(
            Method::GET,
            &format!("/app/installations/{installation_id}"),
        )
    }

    /// `POST /app/installations/{id}/access_tokens`, to send with the App's JWT.
    pub fn access_token_request(&self, installation_id: u64) -> Request<Bytes> {
        self.app_request(
            Method::POST,
            &format!("/app/installations/{installation_id}/access_tokens"),
        )
    }

    fn app_request(&self, method: Method, path: &str) -> Request<Bytes> {
        let mut request = Request::new(Bytes::new());
        *request.method_mut() = method;
        *request.uri_mut() = format!("{}{path}", self.api_prefix())
            .parse()
            .expect("a path made of fixed text and numbers is a valid URI");
        default_headers(request.headers_mut());
        request
    }
}

/// Why GitHub refused an App's JWT, by status; `None` for statuses that say nothing of it.
fn app_refusal(
    status: StatusCode,
    headers: &HeaderMap,
    app_id: u64,
    installation_id: u64,
) -> Option<WhoAmIError> {
    Some(match status {
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS if is_rate_limited(headers) => {
            WhoAmIError::UnexpectedAnswer("GitHub is rate limiting this App; try again later".into())
        }
        StatusCode::UNAUTHORIZED => WhoAmIError::Rejected(format!(
            "GitHub answered 401 to the JWT of App {app_id}: the private key is not this App's, the App id is wrong, or this machine's clock is off by more than a minute"
        )),
        StatusCode::NOT_FOUND => WhoAmIError::Rejected(format!(
            "GitHub answered 404: App {app_id} has no installation {installation_id} (a wrong installation id, or the App was uninstalled)"
        )),
        StatusCode::FORBIDDEN => WhoAmIError::Rejected(format!(
            "GitHub answered 403 for installation {installation_id}: it is suspended, or this address is not on the account's IP allow-list"
        )),
        _ => return None,
    })
}

/// Reads `GET /app/installations/{id}`: the App's slug, the account, the permissions (which
/// must allow the three actions).
pub fn app_installation_answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    app_id: u64,
    installation_id: u64,
) -> Result<AppInstallation, WhoAmIError> {
    if let Some(refused) = app_refusal(status, headers, app_id, installation_id) {
        return Err(refused);
    }
    if status != StatusCode::OK {
        return Err(WhoAmIError::UnexpectedAnswer(format!(
            "GET /app/installations/{installation_id} answered {status}"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Account {
        login: String,
    }
    #[derive(serde::Deserialize)]
    struct Installation {
        app_slug: String,
        account: Account,
        #[serde(default)]
        permissions: std::collections::BTreeMap<String, String>,
    }
    let installation: Installation = serde_json::from_slice(body).map_err(|_| {
        WhoAmIError::UnexpectedAnswer(format!(
            "GET /app/installations/{installation_id} did not return an installation with app_slug and account.login"
        ))
    })?;
    let level = |name: &str| installation.permissions.get(name).map(String::as_str);
    let missing: Vec<String> = REQUIRED_APP_PERMISSIONS
        .iter()
        .filter(|(name, needed)| level(name) != Some(*needed))
        .map(|(name, _)| name.to_string())
        .collect();
    let permissions: Vec<String> = installation
        .permissions
        .iter()
        .map(|(name, level)| format!("{name}:{level}"))
        .collect();
    if !missing.is_empty() {
        return Err(WhoAmIError::InsufficientScope {
            needed: "the App permissions Contents: read and write and Pull requests: read and write (the installation must accept them too)".into(),
            has: if permissions.is_empty() {
                "no permissions".into()
            } else {
                permissions.join(", ")
            },
        });
    }
    Ok(AppInstallation {
        app_slug: installation.app_slug,
        account: installation.account.login,
        permissions,
    })
}

/// Reads `POST /app/installations/{id}/access_tokens` (201): the token and its
/// `expires_at` (RFC 3339).
pub fn access_token_answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    app_id: u64,
    installation_id: u64,
) -> Result<InstallationToken, WhoAmIError> {
    if let Some(refused) = app_refusal(status, headers, app_id, installation_id) {
        return Err(refused);
    }
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return Err(WhoAmIError::UnexpectedAnswer(format!(
            "POST /app/installations/{installation_id}/access_tokens answered {status}"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        token: SecretString,
        #[serde(borrow)]
        expires_at: std::borrow::Cow<'a, str>,
    }
    let unexpected = || {
        WhoAmIError::UnexpectedAnswer(format!(
            "POST /app/installations/{installation_id}/access_tokens did not return a token with an RFC 3339 expires_at"
        ))
    };
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(|_| unexpected())?;
    let expires_at = humantime::parse_rfc3339(&answer.expires_at)
        .map_err(|_| unexpected())?
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| unexpected())?
        .as_secs();
    Ok(InstallationToken {
        token: answer.token,
        expires_at,
    })
}

/// Reads `GET /installation/repositories`: an installation token's identity is
/// `installation (N repositories)`, N being the repositories it may reach.
pub fn installation_answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HostIdentity, WhoAmIError> {
    match status {
        StatusCode::OK => {}
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS if is_rate_limited(headers) => {
            return Err(WhoAmIError::UnexpectedAnswer(
                "GitHub is rate limiting this token; try again later".into(),
            ))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
            return Err(WhoAmIError::Rejected(format!(
                "GET /installation/repositories answered {status}: not an app installation token either"
            )))
        }
        other => {
            return Err(WhoAmIError::UnexpectedAnswer(format!(
                "GET /installation/repositories answered {other}"
            )))
        }
    }
    #[derive(serde::Deserialize)]
    struct Installation {
        total_count: u64,
    }
    let installation: Installation = serde_json::from_slice(body).map_err(|_| {
        WhoAmIError::UnexpectedAnswer(
            "GET /installation/repositories did not return a total_count".into(),
        )
    })?;
    let n = installation.total_count;
    Ok(HostIdentity {
        login: format!(
            "installation ({n} {})",
            if n == 1 { "repository" } else { "repositories" }
        ),
        scopes: Vec::new(),
    })
}

/// Classifies a request; `path` is the raw path below the integration (GHES paths keep
/// their `/api/v3`).
pub fn classify(method: &Method, path: &str, body: &[u8]) -> Operation {
    if method == Method::GET || method == Method::HEAD {
        return Operation::Read;
    }
    // `/api/v3` is a whole prefix (GHES), never the start of a longer segment: the host
    // would not read `/api/v3repos/…` as `/repos/…` (found by fuzz/ classify_github).
    let path = path
        .strip_prefix("/api/v3")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(path);
    let segs: Vec<&str> = segments(path).collect();
    // Tolerate one trailing slash, as GitHub does.
    let segs = match segs.split_last() {
        Some((&"", rest)) => rest,
        _ => &segs[..],
    };
    let repo_path = match segs {
        ["repos", owner, repo, rest @ ..] if !owner.is_empty() && !repo.is_empty() => rest,
        _ => return Operation::OtherWrite,
    };
    match (method, repo_path) {
        (&Method::POST, ["git", "refs"]) if creates_a_branch(body) => Operation::CreateBranch,
        (&Method::DELETE, ["git", "refs", "heads", branch @ ..])
            if !branch.is_empty() && branch.iter().all(|s| !s.is_empty()) =>
        {
            Operation::DeleteBranch
        }
        (&Method::POST, ["pulls"]) => Operation::CreatePullRequest,
        _ => Operation::OtherWrite,
    }
}

/// `POST /git/refs` creates a branch when its `ref` is under `refs/heads/`.
fn creates_a_branch(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct CreateRef<'a> {
        #[serde(rename = "ref", borrow)]
        reference: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_slice::<CreateRef<'_>>(body) {
        Ok(create) => create
            .reference
            .strip_prefix("refs/heads/")
            .is_some_and(|name| !name.is_empty()),
        Err(_) => false,
    }
}

/// `Authorization: Bearer <token>`, marked sensitive so HTTP/2 never indexes it.
#[allow(
    clippy::disallowed_methods,
    reason = "the token is written onto the upstream request here"
)]
pub fn apply_credential(
    headers: &mut HeaderMap,
    credential: &Credential,
) -> Result<(), UnsupportedCredential> {
    // A GitHub App is exchanged for an installation token before anything is sent.
    let Credential::Token(token) = credential else {
        return Err(UnsupportedCredential(credential.kind_name()));
    };
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
        .map_err(|_| UnsupportedCredential("token with characters not allowed in a header"))?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// GitHub's media type unless the app asked for another. (GitHub refuses requests without a
/// User-Agent: the upstream client sets patgate's on every request that has none.)
pub fn default_headers(headers: &mut HeaderMap) {
    set_default(headers, ACCEPT, "application/vnd.github+json");
}

/// Reads `GET /user`: the login, and for classic tokens the scopes from `X-OAuth-Scopes`.
pub fn who_am_i_answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HostIdentity, WhoAmIError> {
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => {
            return Err(WhoAmIError::Rejected(
                "GitHub answered 401: the token is wrong, expired or revoked".into(),
            ))
        }
        StatusCode::FORBIDDEN if is_rate_limited(headers) => {
            return Err(WhoAmIError::UnexpectedAnswer(
                "GitHub is rate limiting this token; try again later".into(),
            ))
        }
        StatusCode::FORBIDDEN => {
            return Err(WhoAmIError::Rejected(
                "GitHub answered 403: the token may not use the API (SSO authorisation or IP allow-list?)".into(),
            ))
        }
        other => {
            return Err(WhoAmIError::UnexpectedAnswer(format!(
                "GET /user answered {other}"
            )))
        }
    }
    #[derive(serde::Deserialize)]
    struct User {
        login: String,
    }
    let user: User = serde_json::from_slice(body).map_err(|_| {
        WhoAmIError::UnexpectedAnswer("GET /user did not return a user with a login".into())
    })?;
    // Classic tokens list their scopes; fine-grained tokens have no such header and GitHub
    // checks their permissions on each request.
    let scopes: Option<Vec<String>> = headers
        .get("x-oauth-scopes")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        });
    if let Some(scopes) = &scopes {
        if !scopes.iter().any(|s| s == REQUIRED_CLASSIC_SCOPE) {
            return Err(WhoAmIError::InsufficientScope {
                needed: "the `repo` scope".into(),
                has: if scopes.is_empty() {
                    "no scopes".into()
                } else {
                    scopes.join(", ")
                },
            });
        }
    }
    Ok(HostIdentity {
        login: user.login,
        scopes: scopes.unwrap_or_default(),
    })
}

/// GitHub signals rate limits with 403 or 429 and these headers.
pub fn is_rate_limited(headers: &HeaderMap) -> bool {
    headers
        .get("x-ratelimit-remaining")
        .is_some_and(|v| v.as_bytes() == b"0")
        || headers.contains_key(http::header::RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRANCH: &[u8] =
        br#"{"ref":"refs/heads/PROJ-1","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;

    #[test]
    fn classifies_ghes_and_github_com_paths() {
        for prefix in ["/api/v3", ""] {
            let p = |rest: &str| format!("{prefix}{rest}");
            assert_eq!(
                classify(&Method::POST, &p("/repos/acme/api/git/refs"), BRANCH),
                Operation::CreateBranch
            );
            assert_eq!(
                classify(
                    &Method::DELETE,
                    &p("/repos/acme/api/git/refs/heads/feature/x"),
                    b""
                ),
                Operation::DeleteBranch
            );
            assert_eq!(
                classify(&Method::POST, &p("/repos/acme/api/pulls"), b"{}"),
                Operation::CreatePullRequest
            );
            assert_eq!(
                classify(&Method::POST, &p("/repos/acme/api/pulls/"), b"{}"),
                Operation::CreatePullRequest
            );
            assert_eq!(
                classify(&Method::GET, &p("/repos/acme/api/git/refs"), b""),
                Operation::Read
            );
            assert_eq!(classify(&Method::HEAD, &p("/user"), b""), Operation::Read);
        }
    }

    /// Found by `fuzz/run.sh` (classify_github): `/api/v3` used to be stripped as a string
    /// prefix, so `/api/v3repos/…` was classified as `/repos/…` and became an action.
    #[test]
    fn api_v3_is_stripped_only_as_a_whole_segment() {
        for (method, path, body) in [
            (
                Method::DELETE,
                "/api/v3repos/acme/api/git/refs/heads/feature/PROJPO",
                &b""[..],
            ),
            (Method::POST, "/api/v3repos/acme/api/git/refs", BRANCH),
            (Method::POST, "/api/v3repos/acme/api/pulls", b"{}"),
        ] {
            assert_eq!(
                classify(&method, path, body),
                Operation::OtherWrite,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn everything_else_is_an_other_write() {
        let cases: &[(Method, &str, &[u8])] = &[
            (
                Method::POST,
                "/api/v3/repos/acme/api/git/refs",
                br#"{"ref":"refs/tags/v1","sha":"a"}"#,
            ),
            (
                Method::POST,
                "/api/v3/repos/acme/api/git/refs",
                br#"{"ref":"refs/heads/"}"#,
            ),
            (Method::POST, "/api/v3/repos/acme/api/git/refs", b"not json"),
            (
                Method::PATCH,
                "/api/v3/repos/acme/api/git/refs/heads/main",
                b"{}",
            ),
            (
                Method::DELETE,
                "/api/v3/repos/acme/api/git/refs/tags/v1",
                b"",
            ),
            (
                Method::DELETE,
                "/api/v3/repos/acme/api/git/refs/heads/",
                b"",
            ),
            (Method::DELETE, "/api/v3/repos/acme/api", b""),
            (Method::PUT, "/api/v3/repos/acme/api/pulls/1/merge", b"{}"),
            (Method::POST, "/api/v3/repos/acme/api/pulls/1/merge", b"{}"),
            (Method::POST, "/api/v3/repos//api/pulls", b"{}"),
            (Method::POST, "/api/v3/repos/acme/api/%70ulls", b"{}"),
            (Method::POST, "/graphql", b"{}"),
            (Method::OPTIONS, "/api/v3/repos/acme/api", b""),
        ];
        for (method, path, body) in cases {
            assert_eq!(
                classify(method, path, body),
                Operation::OtherWrite,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn bearer_credential_is_sensitive() {
        let mut headers = HeaderMap::new();
        apply_credential(&mut headers, &Credential::Token("ghp_x".to_string().into())).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer ghp_x");
        assert!(headers[AUTHORIZATION].is_sensitive());
        let pw = Credential::UsernamePassword {
            username: "u".into(),
            password: "p".to_string().into(),
        };
        assert!(apply_credential(&mut headers, &pw).is_err());
    }

    #[test]
    fn who_am_i_reads_login_and_checks_classic_scopes() {
        let mut headers = HeaderMap::new();
        headers.insert("x-oauth-scopes", HeaderValue::from_static("repo, read:org"));
        let id = who_am_i_answer(StatusCode::OK, &headers, br#"{"login":"alice","id":1}"#).unwrap();
        assert_eq!(id.login, "alice");
        assert_eq!(id.scopes, ["repo", "read:org"]);

        headers.insert("x-oauth-scopes", HeaderValue::from_static("read:user"));
        let err = who_am_i_answer(StatusCode::OK, &headers, br#"{"login":"alice"}"#).unwrap_err();
        assert!(
            matches!(err, WhoAmIError::InsufficientScope { .. }),
            "{err}"
        );

        // Fine-grained: no scopes header.
        let id = who_am_i_answer(StatusCode::OK, &HeaderMap::new(), br#"{"login":"bob"}"#).unwrap();
        assert!(id.scopes.is_empty());

        let err = who_am_i_answer(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"{}").unwrap_err();
        assert!(matches!(err, WhoAmIError::Rejected(_)));
    }

    #[test]
    fn installation_tokens_are_confirmed_on_installation_repositories() {
        let gh = Github::new(&"https://ghe.example.com".parse().unwrap());
        let fallback = gh
            .integration_who_am_i_fallback(StatusCode::FORBIDDEN, &HeaderMap::new())
            .unwrap();
        assert_eq!(
            fallback.uri(),
            "/api/v3/installation/repositories?per_page=1"
        );
        assert!(gh
            .integration_who_am_i_fallback(StatusCode::UNAUTHORIZED, &HeaderMap::new())
            .is_none());
        let mut limited = HeaderMap::new();
        limited.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert!(gh
            .integration_who_am_i_fallback(StatusCode::FORBIDDEN, &limited)
            .is_none());

        let id = installation_answer(
            StatusCode::OK,
            &HeaderMap::new(),
            br#"{"total_count":3,"repositories":[{"id":1}]}"#,
        )
        .unwrap();
        assert_eq!(id.login, "installation (3 repositories)");
        let err = installation_answer(StatusCode::FORBIDDEN, &HeaderMap::new(), b"{}").unwrap_err();
        assert!(matches!(err, WhoAmIError::Rejected(_)), "{err}");
    }

    #[test]
    fn app_requests_follow_the_flavour() {
        let ghes = Github::new(&"https://ghe.example.com".parse().unwrap());
        let dotcom = Github::new(&"https://api.github.com".parse().unwrap());
        let residency = Github::new(&"https://api.octocorp.ghe.com".parse().unwrap());
        let token = ghes.access_token_request(45);
        assert_eq!(token.method(), Method::POST);
        assert_eq!(token.uri(), "/api/v3/app/installations/45/access_tokens");
        assert_eq!(token.headers()[ACCEPT], "application/vnd.github+json");
        assert_eq!(
            ghes.app_installation_request(45).uri(),
            "/api/v3/app/installations/45"
        );
        for root in [&dotcom, &residency] {
            assert_eq!(
                root.access_token_request(45).uri(),
                "/app/installations/45/access_tokens"
            );
            assert_eq!(root.app_installation_request(45).method(), Method::GET);
            assert_eq!(
                root.app_installation_request(45).uri(),
                "/app/installations/45"
            );
        }
    }

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "the test reads the token it parsed"
    )]
    fn access_token_answers() {
        let ok = access_token_answer(
            StatusCode::CREATED,
            &HeaderMap::new(),
            br#"{"token":"ghs_16C7e42F292c6912E7710c838347Ae178B4a","expires_at":"2016-07-11T22:14:10Z","permissions":{"contents":"write"},"repository_selection":"selected"}"#,
            1,
            2,
        )
        .unwrap();
        assert_eq!(ok.expires_at, 1_468_275_250);
        assert_eq!(
            ok.token.expose_secret(),
            "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
        );
        for (status, body, what) in [
            (StatusCode::UNAUTHORIZED, "{}", "401 to the JWT of App 1"),
            (StatusCode::NOT_FOUND, "{}", "no installation 2"),
            (StatusCode::FORBIDDEN, "{}", "suspended"),
            (
                StatusCode::CREATED,
                r#"{"token":"x"}"#,
                "did not return a token",
            ),
            (
                StatusCode::CREATED,
                r#"{"token":"x","expires_at":"tomorrow"}"#,
                "did not return a token",
            ),
            (StatusCode::INTERNAL_SERVER_ERROR, "{}", "answered 500"),
        ] {
            let err = access_token_answer(status, &HeaderMap::new(), body.as_bytes(), 1, 2)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{status}: {err}");
        }
    }

    #[test]
    fn app_installation_answers_and_permissions() {
        let body = br#"{"id":2,"app_id":1,"app_slug":"jira-patgate","account":{"login":"acme"},"permissions":{"contents":"write","metadata":"read","pull_requests":"write"}}"#;
        let installation =
            app_installation_answer(StatusCode::OK, &HeaderMap::new(), body, 1, 2).unwrap();
        assert_eq!(installation.app_slug, "jira-patgate");
        assert_eq!(installation.account, "acme");
        assert_eq!(
            installation.permissions,
            ["contents:write", "metadata:read", "pull_requests:write"]
        );
        assert_eq!(
            installation.identity(1, 2).login,
            "GitHub App `jira-patgate` (id 1), installation 2 on acme"
        );
        let read_only = br#"{"app_slug":"a","account":{"login":"acme"},"permissions":{"contents":"read","metadata":"read","pull_requests":"write"}}"#;
        let err = app_installation_answer(StatusCode::OK, &HeaderMap::new(), read_only, 1, 2)
            .unwrap_err();
        assert!(
            matches!(err, WhoAmIError::InsufficientScope { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("contents:read"), "{err}");
        let mut limited = HeaderMap::new();
        limited.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let err =
            app_installation_answer(StatusCode::FORBIDDEN, &limited, b"{}", 1, 2).unwrap_err();
        assert!(matches!(err, WhoAmIError::UnexpectedAnswer(_)), "{err}");
    }

    #[test]
    fn github_accepts_tokens_and_apps_and_sends_only_tokens() {
        let gh = Github::new(&"https://ghe.example.com".parse().unwrap());
        let app = Credential::GithubApp {
            app_id: 1,
            installation_id: 2,
            private_key: "k".to_string().into(),
        };
        assert!(gh.accepts(&app).is_ok());
        assert!(gh
            .accepts(&Credential::Token("t".to_string().into()))
            .is_ok());
        let mut headers = HeaderMap::new();
        assert!(apply_credential(&mut headers, &app).is_err());
        assert!(headers.is_empty());
    }

    #[test]
    fn api_prefix_follows_the_host() {
        let ghes = Github::new(&"https://ghe.example.com".parse().unwrap());
        let dotcom = Github::new(&"https://api.github.com".parse().unwrap());
        let residency = Github::new(&"https://api.octocorp.ghe.com".parse().unwrap());
        assert_eq!(ghes.who_am_i_request().uri(), "/api/v3/user");
        assert_eq!(dotcom.who_am_i_request().uri(), "/user");
        assert_eq!(residency.who_am_i_request().uri(), "/user");
        assert_eq!(
            residency
                .integration_who_am_i_fallback(StatusCode::FORBIDDEN, &HeaderMap::new())
                .unwrap()
                .uri(),
            "/installation/repositories?per_page=1"
        );
    }

    #[test]
    fn sso_and_expiry_headers() {
        let gh = Github::new(&"https://api.github.com".parse().unwrap());
        let mut h = HeaderMap::new();
        let url = "https://github.com/orgs/octo-org/sso?authorization_request=A1B2C3";
        h.insert(
            "x-github-sso",
            HeaderValue::from_str(&format!("required; url={url}")).unwrap(),
        );
        assert_eq!(
            gh.sso_authorization_url(StatusCode::FORBIDDEN, &h)
                .as_deref(),
            Some(url)
        );
        assert_eq!(gh.sso_authorization_url(StatusCode::OK, &h), None);
        h.insert(
            "x-github-sso",
            HeaderValue::from_static("partial-results; organizations=21955855,20582480"),
        );
        assert_eq!(gh.sso_authorization_url(StatusCode::FORBIDDEN, &h), None);
        // Only an https URL is handed to the app (a link it shows a user).
        for bad in [
            "required; url=http://github.com/orgs/octo-org/sso",
            "required; url=javascript:alert(1)",
            "required; url=",
        ] {
            h.insert("x-github-sso", HeaderValue::from_static(bad));
            assert_eq!(
                gh.sso_authorization_url(StatusCode::FORBIDDEN, &h),
                None,
                "{bad}"
            );
        }

        for (value, at) in [
            ("2026-12-31 23:59:59 UTC", Some(1_798_761_599)),
            ("2026-12-31 15:59:59 -0800", Some(1_798_761_599)),
            ("2027-01-01 00:59:59 +0100", Some(1_798_761_599)),
            ("2026-12-31T23:59:59Z", None),
            ("soon", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                "github-authentication-token-expiration",
                HeaderValue::from_static(value),
            );
            assert_eq!(gh.credential_expiry(&h), at, "{value}");
        }
        assert_eq!(gh.credential_expiry(&HeaderMap::new()), None);
    }

    #[test]
    fn flavours_by_host() {
        for (url, flavour) in [
            ("https://api.github.com", Flavour::Cloud),
            ("https://API.GitHub.com", Flavour::Cloud),
            ("https://api.octocorp.ghe.com", Flavour::DataResidency),
            ("https://api.octocorp.ghe.com:443", Flavour::DataResidency),
            ("https://API.Octocorp.GHE.com", Flavour::DataResidency),
            // Not GHE.com's API host: a server that happens to live under ghe.com names.
            ("https://octocorp.ghe.com", Flavour::Server),
            ("https://api.a.b.ghe.com", Flavour::Server),
            ("https://api..ghe.com", Flavour::Server),
            ("https://api.octocorp.ghe.com.example.net", Flavour::Server),
            ("https://ghe.example.com", Flavour::Server),
            ("https://github.example.com/github", Flavour::Server),
        ] {
            assert_eq!(Flavour::of(&url.parse().unwrap()), flavour, "{url}");
        }
    }
}
