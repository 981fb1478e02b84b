//! AWS CodeCommit through the wire: every policy row for a codecommit integration, against
//! an in-process CodeCommit + STS host that verifies each SigV4 signature it receives with
//! botocore (PyPI) — an independent signer — before it answers.
//!
//! Also the conformance of what reaches the host with the botocore service model in
//! `tests/specs/codecommit/` (read at test time): the target and content type the
//! model's metadata prescribes, and request bodies with the input shape's required members
//! and JSON types.

mod common;
mod sigv4;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use patgate::client::Outgoing;
use patgate::devpki::DevCa;
use patgate::vault::Credential;
use serde_json::{json, Value};
use sigv4::{botocore_sign, parse_authorization, Key};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const REGION: &str = "us-east-1";
const INTEGRATION: AwsUser = AwsUser {
    access_key_id: "AKIAINTEGRATION00001",
    secret: "IntegrationSecretDoNotLeak/0123456789abc",
    session_token: None,
    arn: "arn:aws:iam::111122223333:user/jira-integration",
};
/// Alice uses temporary credentials: the session token must travel, signed.
const ALICE: AwsUser = AwsUser {
    access_key_id: "ASIAALICE00000000001",
    secret: "AliceSecretDoNotLeak/0123456789abcdefghi",
    session_token: Some("AliceSessionTokenDoNotLeak//////////wEaCXVzLWVhc3Qx"),
    arn: "arn:aws:sts::111122223333:assumed-role/developer/alice",
};
const CREATE_BRANCH: &str = r#"{"repositoryName":"api","branchName":"PROJ-1-fix","commitId":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;
const DELETE_BRANCH: &str = r#"{"repositoryName":"api","branchName":"PROJ-1-fix"}"#;
const CREATE_PULL_REQUEST: &str = r#"{"title":"PROJ-1 fix","description":"From Jira","targets":[{"repositoryName":"api","sourceReference":"PROJ-1-fix","destinationReference":"main"}],"clientRequestToken":"0b6a6f2e-8f3c-4d0a-9f1e-3a4b5c6d7e8f"}"#;
const GET_BRANCH: &str = r#"{"repositoryName":"api","branchName":"main"}"#;

#[derive(Debug, Clone, Copy)]
struct AwsUser {
    access_key_id: &'static str,
    secret: &'static str,
    session_token: Option<&'static str>,
    arn: &'static str,
}

impl AwsUser {
    fn credential(&self) -> Credential {
        Credential::Aws {
            access_key_id: self.access_key_id.into(),
            secret_access_key: self.secret.to_string().into(),
            session_token: self.session_token.map(|t| t.to_string().into()),
            region: REGION.into(),
        }
    }

    /// The `/v1` PUT body for this key pair.
    fn put_body(&self) -> String {
        let mut body = json!({
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret,
        });
        if let Some(token) = self.session_token {
            body["session_token"] = json!(token);
        }
        body.to_string()
    }
}

// ---- the CodeCommit + STS host ---------------------------------------------------------------

/// One request as the host got it, and what its signature check found.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    /// `codecommit`, or `sts` for GetCallerIdentity.
    service: &'static str,
    /// The ARN whose key made a valid signature; `None` when it did not verify.
    signed_by: Option<&'static str>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone)]
struct CodeCommitHost {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    users: Arc<HashMap<&'static str, AwsUser>>,
}

impl CodeCommitHost {
    async fn start(ca: &DevCa) -> CodeCommitHost {
        let issued = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&issued)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let users = [INTEGRATION, ALICE]
            .into_iter()
            .map(|u| (u.access_key_id, u))
            .collect();
        let host = CodeCommitHost {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            users: Arc::new(users),
        };
        let state = host.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        host
    }

    fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the host got no request")
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let service = if parts.headers.contains_key("x-amz-target") {
            "codecommit"
        } else {
            "sts"
        };
        let authority = parts
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let url = format!("https://{authority}{path_and_query}");
        let signed_by = self
            .verify(&parts.method, &url, &parts.headers, &body, service)
            .await;
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.clone(),
            path_and_query,
            headers: parts.headers.clone(),
            body: body.clone(),
            service,
            signed_by,
        });
        match (service, signed_by) {
            ("sts", Some(arn)) => respond(
                200,
                "text/xml",
                &format!("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AIDEXAMPLE</UserId><Account>111122223333</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"),
            ),
            ("sts", None) => respond(
                403,
                "text/xml",
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error></ErrorResponse>",
            ),
            (_, Some(arn)) => {
                let mut r = respond(200, "application/x-amz-json-1.1", &json!({ "actedAs": arn }).to_string());
                r.headers_mut().insert("x-host-saw-arn", arn.parse().unwrap());
                r
            }
            (_, None) => respond(
                403,
                "application/x-amz-json-1.1",
                r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match the signature you provided."}"#,
            ),
        }
    }

    /// Recomputes the signature with botocore from what arrived: the key named in the
    /// credential scope, the headers named in SignedHeaders, the time in X-Amz-Date.
    async fn verify(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        body: &Bytes,
        service: &'static str,
    ) -> Option<&'static str> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let authorization = text("authorization")?;
        if headers.get_all("authorization").iter().count() != 1 {
            return None;
        }
        let parsed = parse_authorization(&authorization)?;
        let user = *self.users.get(parsed.access_key_id.as_str())?;
        if parsed.region != REGION || parsed.service != service {
            return None;
        }
        if text("x-amz-security-token").as_deref() != user.session_token {
            return None;
        }
        let amz_date = text("x-amz-date")?;
        let mut signed = Vec::new();
        for name in &parsed.signed_headers {
            if matches!(
                name.as_str(),
                "host" | "x-amz-date" | "x-amz-security-token"
            ) {
                continue;
            }
            signed.push((name.clone(), text(name)?));
        }
        let (method, url, body) = (method.to_string(), url.to_string(), body.clone());
        let expected = tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str)> = signed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            botocore_sign(
                &method,
                &url,
                &pairs,
                &body,
                Key {
                    access_key_id: user.access_key_id,
                    secret_access_key: user.secret,
                    session_token: user.session_token,
                },
                REGION,
                service,
                &amz_date,
            )
        })
        .await
        .unwrap();
        (expected.authorization == authorization).then_some(user.arn)
    }
}

fn respond(status: u16, content_type: &str, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

// ---- patgate in front of it ------------------------------------------------------------------

struct Policy {
    require_user_pat: bool,
    allow_other_writes: bool,
}

/// A gateway with a `cc` integration on the CodeCommit host (its STS endpoint too), the
/// integration's key pair in the vault.
async fn start(policy: Policy) -> (Gateway, CodeCommitHost) {
    let (setup, host) = setup(policy).await;
    let gw = setup.start().await;
    gw.runtime
        .vault()
        .put_integration_secret("cc", &INTEGRATION.credential())
        .await
        .unwrap();
    (gw, host)
}

async fn setup(policy: Policy) -> (Setup, CodeCommitHost) {
    setup_with(policy, None).await
}

async fn setup_with(policy: Policy, connect_ttl_seconds: Option<u64>) -> (Setup, CodeCommitHost) {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let host = CodeCommitHost::start(&ca).await;
    let github = RecordingHost::start(&ca, HostMode::Normal).await;
    let extra_toml = format!(
        r#"
[[integrations]]
id = "cc"
kind = "codecommit"
base_url = "{base}"
region = "{REGION}"
sts_endpoint = "{base}"
roots = "none"
extra_ca = "ca.pem"
require_user_pat = {rup}
allow_other_writes = {aow}
"#,
        base = host.base_url(),
        rup = policy.require_user_pat,
        aow = policy.allow_other_writes,
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let opts = Options {
        extra_toml,
        connect_ttl_seconds,
        ..Options::default()
    };
    (Setup::with_ca(dir, ca, &github, &opts).await, host)
}

/// A CodeCommit call as the app sends it, with stale signature fields of its own that
/// patgate must replace.
fn call(gw: &Gateway, operation: &str, body: &str, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url("/git/cc/"),
        headers: vec![
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amz-target".into(), format!("CodeCommit_20150413.{operation}")),
            (
                "authorization".into(),
                "AWS4-HMAC-SHA256 Credential=AKIAAPPKEY/20200101/us-east-1/codecommit/aws4_request, SignedHeaders=host, Signature=00".into(),
            ),
            ("x-amz-security-token".into(), "AppSessionToken".into()),
            ("x-amz-date".into(), "20200101T000000Z".into()),
        ],
        body: Some(Bytes::from(body.to_string())),
        account: account.map(str::to_string),
    }
}

async fn store_key_pair(gw: &Gateway, account: &str, user: &AwsUser) -> Response<Bytes> {
    gw.client()
        .send(&Outgoing {
            method: Method::PUT,
            url: gw.url(&format!("/v1/integrations/cc/users/{account}/pat")),
            body: Some(Bytes::from(user.put_body())),
            ..Outgoing::default()
        })
        .await
        .unwrap()
}

fn body_text(r: &Response<Bytes>) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

/// What the host saw is patgate's signature, not the app's: one Authorization, for `user`,
/// verified; the app's X-Amz-Date and X-Amz-Security-Token gone.
fn assert_signed_by(seen: &Seen, user: &AwsUser) {
    assert_eq!(
        seen.signed_by,
        Some(user.arn),
        "signature did not verify: {seen:?}"
    );
    let authorization = seen.header("authorization").unwrap();
    assert!(
        authorization.contains(&format!("Credential={}/", user.access_key_id)),
        "{authorization}"
    );
    assert!(!authorization.contains("AKIAAPPKEY"));
    assert_ne!(seen.header("x-amz-date"), Some("20200101T000000Z"));
    assert_eq!(seen.header("x-amz-security-token"), user.session_token);
    assert!(seen
        .headers
        .iter()
        .all(|(_, v)| !v.as_bytes().windows(15).any(|w| w == b"AppSessionToken")));
    for secret in [INTEGRATION.secret, ALICE.secret] {
        assert!(seen
            .headers
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v.as_bytes()).contains(secret)));
    }
}

// ---- conformance with the botocore model -----------------------------------------------------

fn model() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/specs/codecommit/codecommit-2015-04-13.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The request the host got is what the model says `operation` looks like: `POST /`, the
/// target `{targetPrefix}.{operation}`, `application/x-amz-json-{jsonVersion}`, and a body
/// with the input shape's required members, no unknown ones, each of the right JSON type.
fn assert_conforms(model: &Value, operation: &str, seen: &Seen) {
    let meta = &model["metadata"];
    assert_eq!(meta["protocol"], "json");
    let op = &model["operations"][operation];
    assert_eq!(seen.method.as_str(), op["http"]["method"].as_str().unwrap());
    assert_eq!(
        seen.path_and_query,
        op["http"]["requestUri"].as_str().unwrap()
    );
    assert_eq!(
        seen.header("x-amz-target").unwrap(),
        format!("{}.{operation}", meta["targetPrefix"].as_str().unwrap())
    );
    assert_eq!(
        seen.header("content-type").unwrap(),
        format!(
            "application/x-amz-json-{}",
            meta["jsonVersion"].as_str().unwrap()
        )
    );
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    let shape = op["input"]["shape"].as_str().unwrap();
    check_shape(model, shape, &body, operation);
}

fn check_shape(model: &Value, shape_name: &str, value: &Value, at: &str) {
    let shape = &model["shapes"][shape_name];
    let ok = match shape["type"].as_str().unwrap() {
        "structure" => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object"));
            for required in shape["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                assert!(object.contains_key(name), "{at}: required `{name}` missing");
            }
            for (name, member) in object {
                let member_shape = shape["members"][name]["shape"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: `{name}` is not in the model"));
                check_shape(model, member_shape, member, &format!("{at}.{name}"));
            }
            true
        }
        "list" => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"));
            let member = shape["member"]["shape"].as_str().unwrap();
            for (i, item) in items.iter().enumerate() {
                check_shape(model, member, item, &format!("{at}[{i}]"));
            }
            true
        }
        "map" => value.is_object(),
        "string" | "blob" => value.is_string(),
        "integer" | "long" | "float" | "double" => value.is_number(),
        "boolean" => value.is_boolean(),
        "timestamp" => value.is_number() || value.is_string(),
        other => panic!("{at}: shape type {other} not handled"),
    };
    assert!(ok, "{at}: {value} is not a {shape_name}");
}

// ---- policy rows -----------------------------------------------------------------------------

// Row 1: a read uses the integration's key pair, with or without Require User PAT and an
// account, even when the user has a key pair stored.
#[tokio::test]
async fn read_uses_the_integration_key_pair() {
    let model = model();
    for require_user_pat in [false, true] {
        let (gw, host) = start(Policy {
            require_user_pat,
            allow_other_writes: false,
        })
        .await;
        let stored = store_key_pair(&gw, ACCOUNT_A, &ALICE).await;
        assert_eq!(stored.status(), 200, "{}", body_text(&stored));
        for account in [None, Some(ACCOUNT_A)] {
            let response = gw
                .client()
                .send(&call(&gw, "GetBranch", GET_BRANCH, account))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", body_text(&response));
            assert_eq!(response.headers()["patgate-credential"], "integration");
            assert_eq!(response.headers()["x-host-saw-arn"], INTEGRATION.arn);
            let seen = host.last();
            assert_signed_by(&seen, &INTEGRATION);
            // Set after the signature, which does not cover it: the host still verified it.
            assert_eq!(seen.headers["user-agent"], PATGATE_USER_AGENT);
            assert_eq!(seen.body, GET_BRANCH.as_bytes());
            assert_conforms(&model, "GetBranch", &seen);
        }
        gw.stop().await;
    }
}

// Row 2: Require User PAT off: the actions use the integration's key pair, even when the
// user has one.
#[tokio::test]
async fn actions_without_require_user_pat_use_the_integration_key_pair() {
    let (gw, host) = start(Policy {
        require_user_pat: false,
        allow_other_writes: false,
    })
    .await;
    assert_eq!(store_key_pair(&gw, ACCOUNT_A, &ALICE).await.status(), 200);
    for (operation, body) in [
        ("CreateBranch", CREATE_BRANCH),
        ("DeleteBranch", DELETE_BRANCH),
        ("CreatePullRequest", CREATE_PULL_REQUEST),
    ] {
        let response = gw
            .client()
            .send(&call(&gw, operation, body, Some(ACCOUNT_A)))
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "{operation}: {}",
            body_text(&response)
        );
        assert_eq!(response.headers()["patgate-credential"], "integration");
        assert_signed_by(&host.last(), &INTEGRATION);
    }
    gw.stop().await;
}

// Row 4 (row 3, TFS 2013/2015, does not apply: CodeCommit users have key pairs): Require
// User PAT on and a stored key pair: each action is signed with the user's own key pair,
// session token included; bodies and targets are the model's.
#[tokio::test]
async fn actions_with_require_user_pat_are_signed_with_the_users_key_pair() {
    let model = model();
    let (gw, host) = start(Policy {
        require_user_pat: true,
        allow_other_writes: false,
    })
    .await;
    // Stored through /v1, after STS said whose key it is.
    let stored = store_key_pair(&gw, ACCOUNT_A, &ALICE).await;
    assert_eq!(stored.status(), 200, "{}", body_text(&stored));
    let status = json(&stored);
    assert_eq!(status["host_login"], ALICE.arn);
    assert_eq!(status["configured"], true);
    let sts = host.last();
    assert_eq!(sts.service, "sts");
    assert_eq!(sts.signed_by, Some(ALICE.arn));
    assert_eq!(sts.body, "Action=GetCallerIdentity&Version=2011-06-15");

    for (operation, body) in [
        ("CreateBranch", CREATE_BRANCH),
        ("DeleteBranch", DELETE_BRANCH),
        ("CreatePullRequest", CREATE_PULL_REQUEST),
    ] {
        let response = gw
            .client()
            .send(&call(&gw, operation, body, Some(ACCOUNT_A)))
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "{operation}: {}",
            body_text(&response)
        );
        assert_eq!(response.headers()["patgate-credential"], "user");
        assert_eq!(response.headers()["x-host-saw-arn"], ALICE.arn);
        let seen = host.last();
        assert_signed_by(&seen, &ALICE);
        assert_eq!(
            seen.body,
            body.as_bytes(),
            "{operation}: body changed on the way"
        );
        assert_conforms(&model, operation, &seen);
    }
    assert_eq!(host.seen().len(), 4);
    gw.stop().await;
}

// Row 5: Require User PAT on and no key pair: 403 user-pat-required, nothing reaches AWS.
#[tokio::test]
async fn action_without_a_key_pair_is_refused_before_the_host() {
    let (gw, host) = start(Policy {
        require_user_pat: true,
        allow_other_writes: false,
    })
    .await;
    for (operation, body) in [
        ("CreateBranch", CREATE_BRANCH),
        ("DeleteBranch", DELETE_BRANCH),
        ("CreatePullRequest", CREATE_PULL_REQUEST),
    ] {
        let response = gw
            .client()
            .send(&call(&gw, operation, body, Some(ACCOUNT_A)))
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(problem_code(&response), "user-pat-required");
    }
    assert!(host.seen().is_empty());
    gw.stop().await;
}

// Row 6: other writes, and anything whose target cannot be trusted, are refused; with
// allow_other_writes they go out with the integration's key pair.
#[tokio::test]
async fn other_writes_are_refused_unless_allowed() {
    let (gw, host) = start(Policy {
        require_user_pat: true,
        allow_other_writes: false,
    })
    .await;
    let client = gw.client();
    let delete_repo = call(
        &gw,
        "DeleteRepository",
        r#"{"repositoryName":"api"}"#,
        Some(ACCOUNT_A),
    );
    let mut no_target = call(&gw, "GetBranch", GET_BRANCH, None);
    no_target.headers.retain(|(k, _)| k != "x-amz-target");
    let mut two_targets = call(&gw, "GetBranch", GET_BRANCH, None);
    two_targets.headers.push((
        "x-amz-target".into(),
        "CodeCommit_20150413.DeleteRepository".into(),
    ));
    let bad_target = call(&gw, "Get Branch", GET_BRANCH, None);
    let mut get = call(&gw, "GetBranch", GET_BRANCH, None);
    get.method = Method::GET;
    get.body = None;
    let mut other_path = call(&gw, "GetBranch", GET_BRANCH, None);
    other_path.url = gw.url("/git/cc/x");
    for out in [
        &delete_repo,
        &no_target,
        &two_targets,
        &bad_target,
        &get,
        &other_path,
    ] {
        let response = client.send(out).await.unwrap();
        assert_eq!(response.status(), 403, "{:?}", out.headers);
        assert_eq!(problem_code(&response), "operation-not-allowed");
    }
    assert!(host.seen().is_empty());
    gw.stop().await;

    let (gw, host) = start(Policy {
        require_user_pat: true,
        allow_other_writes: true,
    })
    .await;
    let delete_repo = call(
        &gw,
        "DeleteRepository",
        r#"{"repositoryName":"api"}"#,
        Some(ACCOUNT_A),
    );
    let response = gw.client().send(&delete_repo).await.unwrap();
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    assert_eq!(response.headers()["patgate-credential"], "integration");
    assert_signed_by(&host.last(), &INTEGRATION);
    gw.stop().await;
}

// ---- storing key pairs -----------------------------------------------------------------------

#[tokio::test]
async fn a_key_pair_sts_refuses_is_not_stored() {
    let (gw, host) = start(Policy {
        require_user_pat: true,
        allow_other_writes: false,
    })
    .await;
    let wrong = AwsUser {
        secret: "NotAlicesSecret/0123456789abcdefghijklm",
        ..ALICE
    };
    let response = store_key_pair(&gw, ACCOUNT_A, &wrong).await;
    assert_eq!(response.status(), 422, "{}", body_text(&response));
    assert_eq!(problem_code(&response), "pat-invalid");
    assert!(body_text(&response).contains("SignatureDoesNotMatch"));
    assert!(!body_text(&response).contains(wrong.secret));
    assert_eq!(host.last().service, "sts");
    let status = gw
        .client()
        .send(&gw.get(&format!("/v1/integrations/cc/users/{ACCOUNT_A}/pat")))
        .await
        .unwrap();
    assert_eq!(json(&status)["configured"], false);

    // A token is not a CodeCommit credential; half a key pair is not a body.
    for body in [
        r#"{"token":"ghp_x"}"#,
        r#"{"access_key_id":"AKIA"}"#,
        r#"{"token":"x","access_key_id":"AKIA","secret_access_key":"s"}"#,
    ] {
        let response = gw
            .client()
            .send(&Outgoing {
                method: Method::PUT,
                url: gw.url(&format!("/v1/integrations/cc/users/{ACCOUNT_A}/pat")),
                body: Some(Bytes::from(body)),
                ..Outgoing::default()
            })
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}: {}", body_text(&response));
        assert_eq!(problem_code(&response), "bad-request");
    }
    gw.stop().await;
}

/// `patgate integration set-secret --type aws` asks STS before it stores; the region comes
/// from the integration.
#[tokio::test]
async fn integration_key_pair_is_validated_by_the_cli() {
    let (setup, host) = setup(Policy {
        require_user_pat: false,
        allow_other_writes: false,
    })
    .await;
    let config = setup.config_path.to_str().unwrap().to_string();
    let run = |access_key_id: &'static str, secret: &'static str| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
                .args([
                    "integration",
                    "set-secret",
                    "cc",
                    "--type",
                    "aws",
                    "--access-key-id",
                    access_key_id,
                    "--config",
                    &config,
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{secret}\n").as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
    };
    let out = run(INTEGRATION.access_key_id, "WrongSecret").await.unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not stored") && text.contains("SignatureDoesNotMatch"),
        "{text}"
    );

    let out = run(INTEGRATION.access_key_id, INTEGRATION.secret)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(INTEGRATION.arn), "{text}");
    assert_eq!(host.last().signed_by, Some(INTEGRATION.arn));

    // The stored key pair is the one requests are signed with.
    let gw = setup.start().await;
    let response = gw
        .client()
        .send(&call(&gw, "GetBranch", GET_BRANCH, None))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    assert_signed_by(&host.last(), &INTEGRATION);
    gw.stop().await;
}

#[tokio::test]
async fn the_connect_page_takes_a_users_key_pair_and_checks_it_with_sts() {
    let (setup, _host) = setup_with(
        Policy {
            require_user_pat: true,
            allow_other_writes: false,
        },
        Some(900),
    )
    .await;
    let gw = setup.start().await;
    let client = gw.client();
    let link = client
        .send(&Outgoing {
            method: Method::POST,
            url: gw.url(&format!(
                "/v1/integrations/cc/users/{ACCOUNT_A}/connect-link"
            )),
            ..Outgoing::default()
        })
        .await
        .unwrap();
    let url = json(&link)["url"].as_str().unwrap().to_string();
    let page = client
        .send_signed(
            http::Request::get(&url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let html = body_text(&page);
    assert!(html.contains("name=\"secret_access_key\""), "{html}");
    assert!(!html.contains("name=\"token\""), "{html}");
    let marker = "name=\"page\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let page_token = &html[start..][..html[start..].find('"').unwrap()];
    let origin = url.split("/connect/").next().unwrap();
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let form = format!(
        "page={page_token}&access_key_id={}&secret_access_key={}&session_token={}",
        ALICE.access_key_id,
        enc(ALICE.secret),
        enc(ALICE.session_token.unwrap())
    );
    let stored = client
        .send_signed(
            http::Request::post(format!("{origin}/connect/pat"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", origin)
                .body(Full::new(Bytes::from(form)))
                .unwrap(),
        )
        .await
        .unwrap();
    let html = body_text(&stored);
    assert_eq!(stored.status(), 200, "{html}");
    assert!(html.contains(ALICE.arn), "{html}");
    assert!(!html.contains(ALICE.secret), "{html}");
    let meta = gw
        .runtime
        .vault()
        .user_pat_meta("cc", ACCOUNT_A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.host_login, ALICE.arn);
    gw.stop().await;
}
