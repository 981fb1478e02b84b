//! Azure DevOps Services (`https://dev.azure.com/{org}`, legacy `https://{org}.visualstudio.com`)
//! and Azure DevOps Server / Team Foundation Server 2013 to 2022 (the collection URL,
//! `https://{server}/tfs/{collection}` or `https://{server}/{collection}`).
//!
//! The base URL is the organisation or collection; the app's paths below it are
//! `/{project}/_apis/…` (or `/_apis/…` with a repository id).
//!
//! | operation | request |
//! |---|---|
//! | create branch | `POST …/_apis/git/repositories/{repo}/refs`, every element `oldObjectId` = 40 zeros |
//! | delete branch | the same endpoint, every element `newObjectId` = 40 zeros |
//! | create pull request | `POST …/_apis/git/repositories/{repo}/pullrequests` |
//! | who am I | `GET {org or collection}/_apis/connectionData` |
//!
//! The refs endpoint takes an array of ref updates and does creates, deletes and moves
//! alike, so the body decides. A request is a create (or a delete) only when *every*
//! element is one, on a branch (`refs/heads/…`), with well-formed object ids. Anything else
//! is an other-write: a move of an existing ref (it rewrites history that someone else
//! pushed), a mix of creates and deletes (the policy decides per action, and one request
//! must not carry two), tags and other non-branch refs, an empty array, `isLocked`, a body
//! that is not a JSON array. TFVC (`_apis/tfvc/…`) writes are other-writes like any path
//! not listed above.
//!
//! Azure DevOps routes are case-insensitive (`pullRequests` and `pullrequests` are the same
//! endpoint), so the fixed segments are compared ignoring ASCII case; percent-encoded
//! letters are not decoded and make the request an other-write (fail closed).
//!
//! Credentials: `Authorization: Basic base64(":" + PAT)` (any user name is accepted), or
//! `Basic base64(user:password)` for an integration account on a server (TFS 2013 and 2015
//! have no PATs; that needs IIS Basic authentication; NTLM and Negotiate are not
//! supported). Every request carries `X-TFS-FedAuthRedirect: Suppress` so that bad
//! credentials answer 401 instead of a 203 sign-in page.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use http::{Method, Request, StatusCode};
use secrecy::ExposeSecret;

use super::{segments, set_default, HostAdapter, HostIdentity, UnsupportedCredential, WhoAmIError};
use crate::config::{HostKind, Integration, TfsRelease, TfsVersion};
use crate::policy::Operation;
use crate::vault::Credential;

/// Asks Azure DevOps to answer bad credentials with 401, not a 203 sign-in page.
pub const FED_AUTH_REDIRECT: &str = "x-tfs-fedauthredirect";

/// An object id of 40 zeros: "no object" (the ref does not exist before / after).
pub const ZERO_OBJECT_ID: &str = "0000000000000000000000000000000000000000";

/// The user id Azure DevOps gives anonymous callers of `connectionData`.
const ANONYMOUS_USER_ID: &str = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";

/// Shown to users and admins where a PAT is asked for.
pub const TOKEN_HELP: &str =
    "Create a token in Azure DevOps under User settings → Personal access tokens, \
with the Code: Read & write scope (Code: Read, write & manage also works).";

/// Services, or a server of a known (or not yet detected) release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    Services,
    /// `None` only before `version = "auto"` was detected; adapters that serve requests are
    /// built after detection ([`crate::runtime::Runtime::start`]).
    Server(Option<TfsRelease>),
}

/// The Azure DevOps / TFS adapter.
#[derive(Debug, Clone)]
pub struct Azure {
    deployment: Deployment,
}

impl Azure {
    pub fn new(integration: &Integration) -> Azure {
        let deployment = match (integration.kind, integration.tfs_version) {
            (HostKind::Tfs, Some(TfsVersion::Release(release))) => {
                Deployment::Server(Some(release))
            }
            (HostKind::Tfs, _) => Deployment::Server(None),
            _ => Deployment::Services,
        };
        Azure { deployment }
    }

    pub fn deployment(&self) -> Deployment {
        self.deployment
    }
}

impl HostAdapter for Azure {
    fn classify(
        &self,
        method: &Method,
        path: &str,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Operation {
        classify(method, path, body)
    }

    /// TFS 2013 and 2015 have no PATs. An undetected release answers false too: the
    /// fail-closed answer, never reached by a running service.
    fn supports_pats(&self) -> bool {
        match self.deployment {
            Deployment::Services => true,
            Deployment::Server(release) => release.is_some_and(TfsRelease::has_pats),
        }
    }

    fn accepts(&self, credential: &Credential) -> Result<(), UnsupportedCredential> {
        match (self.deployment, credential) {
            (Deployment::Services, Credential::Token(_)) => Ok(()),
            (Deployment::Server(Some(release)), Credential::Token(_)) if !release.has_pats() => {
                Err(UnsupportedCredential(
                    "token (TFS 2013 and 2015 have no personal access tokens: store a user name and password)",
                ))
            }
            (Deployment::Server(_), Credential::Token(_) | Credential::UsernamePassword { .. }) => {
                Ok(())
            }
            (_, other) => Err(UnsupportedCredential(other.kind_name())),
        }
    }

    fn apply_credential(
        &self,
        request: &mut Request<Bytes>,
        credential: &Credential,
    ) -> Result<(), UnsupportedCredential> {
        self.accepts(credential)?;
        apply_credential(request.headers_mut(), credential)
    }

    fn default_headers(&self, headers: &mut HeaderMap) {
        default_headers(headers)
    }

    fn who_am_i_request(&self) -> Request<Bytes> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = http::Uri::from_static("/_apis/connectionData");
        default_headers(request.headers_mut());
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
}

/// Classifies a request; `path` is the raw path below the organisation or collection.
pub fn classify(method: &Method, path: &str, body: &[u8]) -> Operation {
    if method == Method::GET || method == Method::HEAD {
        return Operation::Read;
    }
    let segs: Vec<&str> = segments(path).collect();
    let Some(apis) = segs.iter().position(|s| s.eq_ignore_ascii_case("_apis")) else {
        return Operation::OtherWrite;
    };
    // Before `_apis`: nothing, the project, or (with a server's root as base URL) the
    // collection and the project.
    if apis > 2 || segs[..apis].iter().any(|s| s.is_empty()) {
        return Operation::OtherWrite;
    }
    let rest = &segs[apis + 1..];
    let rest = match rest.split_last() {
        Some((&"", before)) => before,
        _ => rest,
    };
    let is = |segment: &str, literal: &str| segment.eq_ignore_ascii_case(literal);
    match (method, rest) {
        (&Method::POST, [git, repositories, repo, endpoint])
            if is(git, "git") && is(repositories, "repositories") && !repo.is_empty() =>
        {
            if is(endpoint, "refs") {
                classify_ref_updates(body)
            } else if is(endpoint, "pullrequests") {
                Operation::CreatePullRequest
            } else {
                Operation::OtherWrite
            }
        }
        _ => Operation::OtherWrite,
    }
}

/// The body of `POST …/refs`: create when every element creates a branch, delete when every
/// element deletes one, other-write otherwise.
pub fn classify_ref_updates(body: &[u8]) -> Operation {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RefUpdate<'a> {
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        old_object_id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        new_object_id: std::borrow::Cow<'a, str>,
        is_locked: Option<serde_json::Value>,
    }
    let Ok(updates) = serde_json::from_slice::<Vec<RefUpdate<'_>>>(body) else {
        return Operation::OtherWrite;
    };
    let is_object_id = |id: &str| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let well_formed = |u: &RefUpdate<'_>| {
        u.is_locked.is_none()
            && u.name
                .strip_prefix("refs/heads/")
                .is_some_and(|branch| !branch.is_empty())
            && is_object_id(&u.old_object_id)
            && is_object_id(&u.new_object_id)
    };
    if updates.is_empty() || !updates.iter().all(well_formed) {
        return Operation::OtherWrite;
    }
    let zero = |id: &str| id == ZERO_OBJECT_ID;
    if updates
        .iter()
        .all(|u| zero(&u.old_object_id) && !zero(&u.new_object_id))
    {
        Operation::CreateBranch
    } else if updates
        .iter()
        .all(|u| zero(&u.new_object_id) && !zero(&u.old_object_id))
    {
        Operation::DeleteBranch
    } else {
        Operation::OtherWrite
    }
}

/// `Authorization: Basic …`: `":" + PAT` for a token, `user:password` for an account.
/// Marked sensitive so HTTP/2 never indexes it.
#[allow(
    clippy::disallowed_methods,
    reason = "the credential is written onto the upstream request here"
)]
pub fn apply_credential(
    headers: &mut HeaderMap,
    credential: &Credential,
) -> Result<(), UnsupportedCredential> {
    let pair = match credential {
        Credential::Token(token) => zeroize::Zeroizing::new(format!(":{}", token.expose_secret())),
        Credential::UsernamePassword { username, password } => {
            zeroize::Zeroizing::new(format!("{username}:{}", password.expose_secret()))
        }
        other => return Err(UnsupportedCredential(other.kind_name())),
    };
    let encoded = zeroize::Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ));
    let mut value = HeaderValue::try_from(encoded.as_str())
        .map_err(|_| UnsupportedCredential("credential with characters not allowed in a header"))?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// `X-TFS-FedAuthRedirect: Suppress` always (the app cannot turn it off: a 203 sign-in page
/// would look like success to a client), and JSON unless the app asked otherwise.
pub fn default_headers(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static(FED_AUTH_REDIRECT),
        HeaderValue::from_static("Suppress"),
    );
    set_default(headers, ACCEPT, "application/json");
}

/// Reads `GET …/_apis/connectionData`.
pub fn who_am_i_answer(status: StatusCode, body: &[u8]) -> Result<HostIdentity, WhoAmIError> {
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => {
            return Err(WhoAmIError::Rejected(
                "Azure DevOps answered 401: the token is wrong, expired or revoked".into(),
            ))
        }
        StatusCode::NON_AUTHORITATIVE_INFORMATION => {
            return Err(WhoAmIError::Rejected(
                "Azure DevOps answered 203 with a sign-in page: the credentials were not accepted"
                    .into(),
            ))
        }
        StatusCode::FORBIDDEN => {
            return Err(WhoAmIError::Rejected(
                "Azure DevOps answered 403: the token may not use this organisation or collection"
                    .into(),
            ))
        }
        other => {
            return Err(WhoAmIError::UnexpectedAnswer(format!(
                "GET _apis/connectionData answered {other}"
            )))
        }
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConnectionData {
        authenticated_user: Identity,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Identity {
        id: Option<String>,
        provider_display_name: Option<String>,
        #[serde(default)]
        properties: Properties,
    }
    #[derive(serde::Deserialize, Default)]
    struct Properties {
        #[serde(rename = "Account")]
        account: Option<Property>,
    }
    #[derive(serde::Deserialize)]
    struct Property {
        #[serde(rename = "$value")]
        value: Option<String>,
    }
    let data: ConnectionData = serde_json::from_slice(body).map_err(|_| {
        WhoAmIError::UnexpectedAnswer(
            "GET _apis/connectionData did not return an authenticated user".into(),
        )
    })?;
    let user = data.authenticated_user;
    if user
        .id
        .as_deref()
        .is_some_and(|id| id.eq_ignore_ascii_case(ANONYMOUS_USER_ID))
    {
        return Err(WhoAmIError::Rejected(
            "Azure DevOps treated the request as anonymous: the credentials were not accepted"
                .into(),
        ));
    }
    let login = user
        .properties
        .account
        .and_then(|a| a.value)
        .or(user.provider_display_name)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            WhoAmIError::UnexpectedAnswer(
                "GET _apis/connectionData named no account for the user".into(),
            )
        })?;
    // Azure DevOps does not report a PAT's scopes; an action it lacks rights for is refused
    // by the host itself.
    Ok(HostIdentity {
        login,
        scopes: Vec::new(),
    })
}

// ---- TFS version detection -------------------------------------------------------------

/// Why the server's release could not be told from its answers.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("the server refused the integration's credentials (HTTP {0}); check `patgate integration set-secret`")]
    Refused(StatusCode),
    #[error("the server did not say which REST API versions it supports ({0}); set `version` to the server's release")]
    Unrecognised(String),
}

/// How the release was found, for the start log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub release: TfsRelease,
    /// The highest REST API version the server reported, e.g. `4.1`.
    pub api_version: String,
    /// Which probe answered.
    pub probe: &'static str,
}

/// The most of a probe's answer read.
pub const PROBE_LIMIT: usize = 4 * 1024 * 1024;

/// What to do after a probe's answer.
#[derive(Debug)]
pub enum ProbeStep {
    /// Send this request (path-only URI, resolved against the integration's base URL; the
    /// caller applies the integration's credential) and hand its answer to
    /// [`VersionProbe::answer`].
    Send(Box<Request<Bytes>>),
    Done(Result<Detected, DetectError>),
}

/// Asks the server which release it is, with the integration's credential, as a
/// conversation without I/O: [`VersionProbe::start`] gives the first request and each
/// answer gives the next step (`host_calls` sends them).
///
/// 1. `OPTIONS {collection}/_apis` lists every resource with its `maxVersion`; the highest
///    gives the release.
/// 2. When that gives no list (a proxy that refuses OPTIONS, say),
///    `GET {collection}/_apis/projects?api-version=99.0` answers 400 with "the latest REST
///    API version this server supports is X.Y".
///
/// api-version per release: TFS 2015 2.x, 2017 3.x, 2018 4.x, 2019 5.x, 2020 6.x, 2022 7.x.
/// TFS 2013 is the release whose highest version is below 2.0 (its REST API was only ever
/// `1.0-preview`); a 2013 server that answers neither probe must be configured with
/// `version = 2013`. Nothing else is guessed: no answer is an error.
#[derive(Debug, Default)]
pub struct VersionProbe {
    /// The status `OPTIONS _apis` answered, once it did.
    options_status: Option<StatusCode>,
}

impl VersionProbe {
    /// The probe and its first request.
    pub fn start() -> (VersionProbe, Request<Bytes>) {
        (
            VersionProbe::default(),
            probe_request(Method::OPTIONS, "/_apis"),
        )
    }

    /// Reads the answer to the last request sent.
    pub fn answer(&mut self, status: StatusCode, body: &[u8]) -> ProbeStep {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::NON_AUTHORITATIVE_INFORMATION
        {
            return ProbeStep::Done(Err(DetectError::Refused(status)));
        }
        let Some(options_status) = self.options_status else {
            self.options_status = Some(status);
            if let Some(detected) =
                highest_location_version(status, body).and_then(|v| detected(v, "OPTIONS _apis"))
            {
                return ProbeStep::Done(Ok(detected));
            }
            return ProbeStep::Send(Box::new(probe_request(
                Method::GET,
                "/_apis/projects?api-version=99.0",
            )));
        };
        ProbeStep::Done(
            version_from_out_of_range(body)
                .and_then(|v| detected(v, "GET _apis/projects?api-version=99.0"))
                .ok_or_else(|| {
                    DetectError::Unrecognised(format!(
                        "OPTIONS _apis answered {options_status}, GET _apis/projects?api-version=99.0 answered {status}"
                    ))
                }),
        )
    }
}

fn detected(api_version: String, probe: &'static str) -> Option<Detected> {
    release_for_api_version(&api_version).map(|release| Detected {
        release,
        api_version,
        probe,
    })
}

fn probe_request(method: Method, path_and_query: &'static str) -> Request<Bytes> {
    let mut request = Request::new(Bytes::new());
    *request.method_mut() = method;
    *request.uri_mut() = http::Uri::from_static(path_and_query);
    request
}

/// The highest `maxVersion` in an `OPTIONS _apis` answer (`{"count": n, "value": [...]}`).
pub fn highest_location_version(status: StatusCode, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Locations {
        value: Vec<Location>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Location {
        max_version: Option<String>,
    }
    if status != StatusCode::OK {
        return None;
    }
    let locations: Locations = serde_json::from_slice(body).ok()?;
    locations
        .value
        .into_iter()
        .filter_map(|l| l.max_version)
        .filter_map(|v| parse_version(&v))
        .max()
        .map(|(major, minor)| format!("{major}.{minor}"))
}

/// The version named in Azure DevOps' out-of-range answer: "… The latest REST API version
/// this server supports is 4.1."
pub fn version_from_out_of_range(body: &[u8]) -> Option<String> {
    const MARKER: &str = "latest REST API version this server supports is ";
    let text = String::from_utf8_lossy(body);
    let start = text.find(MARKER)? + MARKER.len();
    let version: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.').to_string();
    parse_version(&version).map(|_| version)
}

/// `major.minor` as a number pair; `"4.1-preview"` reads as (4, 1).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let text = text.split('-').next()?;
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The release for the highest REST API version a server supports. Versions above 7 are
/// newer servers; they have PATs, like 2022, and are treated as 2022.
pub fn release_for_api_version(version: &str) -> Option<TfsRelease> {
    let (major, _) = parse_version(version)?;
    Some(match major {
        0 => return None,
        1 => TfsRelease::Tfs2013,
        2 => TfsRelease::Tfs2015,
        3 => TfsRelease::Tfs2017,
        4 => TfsRelease::Tfs2018,
        5 => TfsRelease::Server2019,
        6 => TfsRelease::Server2020,
        _ => TfsRelease::Server2022,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "aa218f56b14c9653891f9e74264a383fa43fefbd";
    const NEW: &str = "bb218f56b14c9653891f9e74264a383fa43fefbd";
    const REFS: &str = "/Fabrikam/_apis/git/repositories/api/refs";

    fn update(name: &str, old: &str, new: &str) -> String {
        format!(r#"{{"name":"{name}","oldObjectId":"{old}","newObjectId":"{new}"}}"#)
    }

    fn refs(body: &str) -> Operation {
        classify(&Method::POST, REFS, body.as_bytes())
    }

    #[test]
    fn ref_update_bodies() {
        let create = update("refs/heads/PROJ-1", ZERO_OBJECT_ID, NEW);
        let create2 = update("refs/heads/feature/PROJ-2", ZERO_OBJECT_ID, NEW);
        let delete = update("refs/heads/PROJ-1", OLD, ZERO_OBJECT_ID);
        let delete2 = update("refs/heads/PROJ-2", OLD, ZERO_OBJECT_ID);
        assert_eq!(refs(&format!("[{create}]")), Operation::CreateBranch);
        assert_eq!(
            refs(&format!("[{create},{create2}]")),
            Operation::CreateBranch
        );
        assert_eq!(refs(&format!("[{delete}]")), Operation::DeleteBranch);
        assert_eq!(
            refs(&format!("[{delete},{delete2}]")),
            Operation::DeleteBranch
        );
        let other = [
            format!("[{create},{delete}]"),                         // a mix
            format!("[{}]", update("refs/heads/PROJ-1", OLD, NEW)), // a move
            format!("[{}]", update("refs/tags/v1", ZERO_OBJECT_ID, NEW)),
            format!("[{}]", update("refs/heads/", ZERO_OBJECT_ID, NEW)),
            format!(
                "[{}]",
                update("refs/heads/x", ZERO_OBJECT_ID, ZERO_OBJECT_ID)
            ),
            format!("[{}]", update("refs/heads/x", "0000", NEW)),
            format!(
                "[{}]",
                update(
                    "refs/heads/x",
                    ZERO_OBJECT_ID,
                    "not-a-sha-not-a-sha-not-a-sha-not-a-sha"
                )
            ),
            format!("[{}]", update("refs/pull/1/merge", OLD, ZERO_OBJECT_ID)),
            format!(
                r#"[{{"name":"refs/heads/x","oldObjectId":"{ZERO_OBJECT_ID}","newObjectId":"{NEW}","isLocked":true}}]"#
            ),
            // A duplicated key: the host might read either value.
            format!(
                r#"[{{"name":"refs/heads/x","oldObjectId":"{OLD}","oldObjectId":"{ZERO_OBJECT_ID}","newObjectId":"{NEW}"}}]"#
            ),
            format!(r#"[{{"name":"refs/heads/x","newObjectId":"{NEW}"}}]"#),
            create.clone(), // an object, not an array
            "[]".into(),
            "not json".into(),
            String::new(),
        ];
        for body in other {
            assert_eq!(refs(&body), Operation::OtherWrite, "{body}");
        }
    }

    #[test]
    fn classifies_paths() {
        let create = format!("[{}]", update("refs/heads/x", ZERO_OBJECT_ID, NEW));
        let create = create.as_bytes();
        for path in [
            "/Fabrikam/_apis/git/repositories/api/refs",
            "/Fabrikam/_apis/git/repositories/api/refs/",
            "/_apis/git/repositories/3411ebc1-d5aa-464f-9615-0b527bc66719/refs",
            "/DefaultCollection/Fabrikam/_apis/git/repositories/api/refs",
            "/Fabrikam%20Fiber/_APIS/Git/Repositories/api/Refs",
        ] {
            assert_eq!(
                classify(&Method::POST, path, create),
                Operation::CreateBranch,
                "{path}"
            );
        }
        for path in [
            "/Fabrikam/_apis/git/repositories/api/pullrequests",
            "/Fabrikam/_apis/git/repositories/api/pullRequests",
            "/_apis/git/repositories/api/pullrequests",
        ] {
            assert_eq!(
                classify(&Method::POST, path, b"{}"),
                Operation::CreatePullRequest,
                "{path}"
            );
        }
        assert_eq!(classify(&Method::GET, REFS, b""), Operation::Read);
        let other: &[(Method, &str, &[u8])] = &[
            (Method::PATCH, REFS, create),
            (Method::PUT, REFS, create),
            (
                Method::POST,
                "/a/b/c/_apis/git/repositories/api/refs",
                create,
            ),
            (Method::POST, "//_apis/git/repositories/api/refs", create),
            (
                Method::POST,
                "/Fabrikam/_apis/git/repositories//refs",
                create,
            ),
            (
                Method::POST,
                "/Fabrikam/_apis/git/repositories/api/%72efs",
                create,
            ),
            (
                Method::POST,
                "/Fabrikam/_apis/git/repositories/api/pushes",
                b"{}",
            ),
            (
                Method::POST,
                "/Fabrikam/_apis/git/repositories/api/pullrequests/1/reviewers",
                b"{}",
            ),
            (
                Method::PATCH,
                "/Fabrikam/_apis/git/repositories/api/pullrequests/1",
                b"{}",
            ),
            (Method::POST, "/Fabrikam/_apis/git/repositories", b"{}"),
            (Method::DELETE, "/Fabrikam/_apis/git/repositories/api", b""),
            (Method::POST, "/Fabrikam/_apis/tfvc/changesets", b"{}"),
            (Method::POST, "/Fabrikam/_apis/tfvc/labels", b"{}"),
            (Method::POST, "/Fabrikam/_apis/git/refs", create),
            (Method::POST, "/Fabrikam/git/repositories/api/refs", create),
            (Method::OPTIONS, REFS, b""),
        ];
        for (method, path, body) in other {
            assert_eq!(
                classify(method, path, body),
                Operation::OtherWrite,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn basic_credentials() {
        let mut headers = HeaderMap::new();
        apply_credential(
            &mut headers,
            &Credential::Token("pat123".to_string().into()),
        )
        .unwrap();
        // base64(":pat123")
        assert_eq!(headers[AUTHORIZATION], "Basic OnBhdDEyMw==");
        assert!(headers[AUTHORIZATION].is_sensitive());
        let account = Credential::UsernamePassword {
            username: "CORP\\svc".into(),
            password: "pw".to_string().into(),
        };
        apply_credential(&mut headers, &account).unwrap();
        // base64("CORP\svc:pw")
        assert_eq!(headers[AUTHORIZATION], "Basic Q09SUFxzdmM6cHc=");
    }

    fn adapter(kind: HostKind, version: Option<TfsVersion>) -> Azure {
        let text = format!(
            "state_dir = \"s\"\n[master_key]\nfile = \"k\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n[[integrations]]\nid = \"a\"\nkind = \"{}\"\nbase_url = \"https://x.example/c\"\n",
            kind.as_str()
        );
        let mut integration = crate::config::Config::parse(std::path::Path::new("x.toml"), &text)
            .unwrap()
            .integrations
            .remove(0);
        integration.tfs_version = version;
        Azure::new(&integration)
    }

    #[test]
    fn pats_and_credentials_by_release() {
        let token = Credential::Token("t".to_string().into());
        let account = Credential::UsernamePassword {
            username: "u".into(),
            password: "p".to_string().into(),
        };
        let services = adapter(HostKind::AzureDevops, None);
        assert!(services.supports_pats());
        assert!(services.accepts(&token).is_ok());
        assert!(services.accepts(&account).is_err());
        for release in TfsRelease::ALL {
            let server = adapter(HostKind::Tfs, Some(TfsVersion::Release(release)));
            let old = matches!(release, TfsRelease::Tfs2013 | TfsRelease::Tfs2015);
            assert_eq!(server.supports_pats(), !old, "{release}");
            assert_eq!(server.accepts(&token).is_ok(), !old, "{release}");
            assert!(server.accepts(&account).is_ok(), "{release}");
            // A token is never put on the wire for a server that has no tokens.
            let mut request = Request::new(Bytes::new());
            assert_eq!(server.apply_credential(&mut request, &token).is_ok(), !old);
        }
        assert!(!adapter(HostKind::Tfs, Some(TfsVersion::Auto)).supports_pats());
    }

    #[test]
    fn who_am_i_reads_connection_data() {
        let body = br#"{"authenticatedUser":{"id":"4c1a1b7e-0000-0000-0000-000000000001","descriptor":"x","providerDisplayName":"Alice Smith","properties":{"Account":{"$type":"System.String","$value":"alice@fabrikam.com"}}},"authorizedUser":{},"instanceId":"i","deploymentType":"hosted"}"#;
        assert_eq!(
            who_am_i_answer(StatusCode::OK, body).unwrap().login,
            "alice@fabrikam.com"
        );
        let no_account = br#"{"authenticatedUser":{"id":"1","providerDisplayName":"FABRIKAM\\alice","properties":{}}}"#;
        assert_eq!(
            who_am_i_answer(StatusCode::OK, no_account).unwrap().login,
            "FABRIKAM\\alice"
        );
        let anonymous = br#"{"authenticatedUser":{"id":"aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa","providerDisplayName":"Anonymous","properties":{}}}"#;
        assert!(matches!(
            who_am_i_answer(StatusCode::OK, anonymous),
            Err(WhoAmIError::Rejected(_))
        ));
        for status in [
            StatusCode::UNAUTHORIZED,
            StatusCode::NON_AUTHORITATIVE_INFORMATION,
        ] {
            let err = who_am_i_answer(status, b"<html>sign in</html>").unwrap_err();
            assert!(matches!(err, WhoAmIError::Rejected(_)), "{status}: {err}");
        }
        assert!(matches!(
            who_am_i_answer(StatusCode::OK, b"<html>"),
            Err(WhoAmIError::UnexpectedAnswer(_))
        ));
    }

    #[test]
    fn suppress_header_is_forced() {
        let mut headers = HeaderMap::new();
        headers.insert(FED_AUTH_REDIRECT, HeaderValue::from_static("Allow"));
        default_headers(&mut headers);
        assert_eq!(headers[FED_AUTH_REDIRECT], "Suppress");
        let request = adapter(HostKind::AzureDevops, None).who_am_i_request();
        assert_eq!(request.uri(), "/_apis/connectionData");
        assert_eq!(request.headers()[FED_AUTH_REDIRECT], "Suppress");
    }

    #[test]
    fn version_detection_parsing() {
        let locations = br#"{"count":3,"value":[{"id":"1","area":"git","resourceName":"refs","maxVersion":"4.1","releasedVersion":"4.0"},{"id":"2","maxVersion":"4.1-preview"},{"id":"3","maxVersion":"1.0"}]}"#;
        assert_eq!(
            highest_location_version(StatusCode::OK, locations).as_deref(),
            Some("4.1")
        );
        assert_eq!(
            highest_location_version(StatusCode::NOT_FOUND, locations),
            None
        );
        assert_eq!(highest_location_version(StatusCode::OK, b"<html>"), None);
        let error = br#"{"$id":"1","innerException":null,"message":"The requested REST API version of 99.0 is out of range for this server. The latest REST API version this server supports is 3.2.","typeName":"Microsoft.VisualStudio.Services.WebApi.VssVersionOutOfRangeException","typeKey":"VssVersionOutOfRangeException","errorCode":0}"#;
        assert_eq!(version_from_out_of_range(error).as_deref(), Some("3.2"));
        assert_eq!(version_from_out_of_range(b"Bad Request"), None);
        for (version, release) in [
            ("1.0-preview", TfsRelease::Tfs2013),
            ("2.3", TfsRelease::Tfs2015),
            ("3.2", TfsRelease::Tfs2017),
            ("4.1", TfsRelease::Tfs2018),
            ("5.1", TfsRelease::Server2019),
            ("6.0", TfsRelease::Server2020),
            ("7.1", TfsRelease::Server2022),
        ] {
            assert_eq!(release_for_api_version(version), Some(release), "{version}");
        }
        assert_eq!(release_for_api_version("x"), None);
    }
}
