//! The Forge caller, through the wire: a real patgate whose api listener takes calls without
//! a client certificate, Forge Invocation Tokens signed by the test's own RSA keys (with the
//! `rsa` crate, independently of the code that verifies them), a JWKS file or a small HTTPS
//! JWKS server on 127.0.0.1, and the recording git host. Each refusal asserts the status,
//! the problem `code`, and that the host received nothing.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use patgate::client::{Outgoing, SignedClient};
use patgate::clock::ManualClock;
use patgate::devpki::DevCa;
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const APP_ID: &str = "ari:cloud:ecosystem::app/3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44";
const OTHER_APP_ID: &str = "ari:cloud:ecosystem::app/0b9d7c1e-6a2f-4e8d-b3c5-7f1a2e4d6c88";
const INSTALLATION: &str = "ari:cloud:ecosystem::installation/7a1e0c55-2f4b-4d3e-8b6a-0c9d1e2f3a4b";
const OTHER_INSTALLATION: &str =
    "ari:cloud:ecosystem::installation/5c2d8e1f-9a3b-4c7d-8e6f-1a2b3c4d5e6f";
const KID1: &str = "forge/invocation-token/wf-1d4c7b2a-0000-4000-8000-000000000001";
const KID2: &str = "forge/invocation-token/wf-1d4c7b2a-0000-4000-8000-000000000002";
const KID3: &str = "forge/invocation-token/wf-1d4c7b2a-0000-4000-8000-000000000003";
/// The Atlassian API tokens Forge adds: never forwarded, never logged.
const OAUTH_SYSTEM: &str = "forgeSystemTokenDoNotLeak0123456789abcdef";
const OAUTH_USER: &str = "forgeUserTokenDoNotLeak0123456789abcdef";
const FILE: &str = "forge-jwks.json";

// ---- keys and tokens ---------------------------------------------------------------------

/// The test's RSA keys (2048 bits), made once per test binary.
fn rsa_key(index: usize) -> &'static RsaPrivateKey {
    static KEYS: [OnceLock<RsaPrivateKey>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    KEYS[index].get_or_init(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())
}

/// A JWKS document with `(kid, key index)` pairs.
fn jwks(keys: &[(&str, usize)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, index)| {
            let key = rsa_key(*index).to_public_key();
            json!({
                "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                "n": B64.encode(key.n().to_bytes_be()),
                "e": B64.encode(key.e().to_bytes_be()),
            })
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// How a test token is signed.
enum Alg {
    /// RS256 with this key and `kid`.
    Rs256(usize, &'static str),
    /// `alg: none`, empty signature.
    None(&'static str),
    /// HS256 with this secret: the attack that takes an RSA public key for an HMAC secret.
    Hs256(Vec<u8>, &'static str),
}

/// Signs a JWS signing input.
type Sign = dyn Fn(&[u8]) -> Vec<u8>;

/// A compact JWS, built by hand so every attack can be spelled.
fn jwt(claims: &Value, alg: Alg) -> String {
    let (header, sign): (Value, Box<Sign>) = match alg {
        Alg::Rs256(index, kid) => (
            json!({"alg": "RS256", "kid": kid, "typ": "JWT"}),
            Box::new(move |input| {
                RsaSigningKey::<sha2::Sha256>::new(rsa_key(index).clone())
                    .sign(input)
                    .to_vec()
            }),
        ),
        Alg::None(kid) => (
            json!({"alg": "none", "kid": kid, "typ": "JWT"}),
            Box::new(|_| Vec::new()),
        ),
        Alg::Hs256(secret, kid) => (
            json!({"alg": "HS256", "kid": kid, "typ": "JWT"}),
            Box::new(move |input| {
                use hmac::Mac as _;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
                mac.update(input);
                mac.finalize().into_bytes().to_vec()
            }),
        ),
    };
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature))
}

/// The claims of a FIT from a Jira UI module of the production environment, valid from
/// `now` for 25 s, for `principal` (`None`: a system call).
fn claims(now: u64, principal: Option<&str>) -> Value {
    static JTI: AtomicUsize = AtomicUsize::new(0);
    let mut claims = json!({
        "iss": "forge/invocation-token",
        "aud": APP_ID,
        "iat": now, "nbf": now, "exp": now + 25,
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "app": {
            "id": APP_ID,
            "appVersion": "2.14.0",
            "installationId": INSTALLATION,
            "apiBaseUrl": "https://api.atlassian.com/ex/jira/5e3b6c2d-0000-4000-8000-00000000cafe",
            "environment": {"type": "PRODUCTION", "id": "ari:cloud:ecosystem::environment/3f6c8e2a/prod"},
            "module": {"type": "jira:issuePanel", "key": "git-integration-panel"},
            "installation": {
                "id": INSTALLATION,
                "contexts": ["ari:cloud:jira::site/5e3b6c2d-0000-4000-8000-00000000cafe"]
            }
        },
        "context": {"cloudId": "5e3b6c2d-0000-4000-8000-00000000cafe"}
    });
    if let Some(principal) = principal {
        claims["principal"] = json!(principal);
    }
    claims
}

fn fit(now: u64, principal: Option<&str>) -> String {
    jwt(&claims(now, principal), Alg::Rs256(0, KID1))
}

/// `fit(now, Some(ACCOUNT_A))` with its claims edited.
fn edited(now: u64, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = claims(now, Some(ACCOUNT_A));
    edit(&mut claims);
    jwt(&claims, Alg::Rs256(0, KID1))
}

// ---- the JWKS server and the egress proxy --------------------------------------------------

/// An HTTPS server on 127.0.0.1 serving a JWKS document the test changes.
#[derive(Clone)]
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<String>>,
    up: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(ca: &DevCa, document: String) -> JwksServer {
        let issued = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&issued)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            document: Arc::new(Mutex::new(document)),
            up: Arc::new(AtomicBool::new(true)),
            fetches: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if !state.up.load(Ordering::SeqCst) {
                    // Down: the connection is closed at once.
                    drop(tcp);
                    continue;
                }
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        state.fetches.fetch_add(1, Ordering::SeqCst);
                        let mut response = Response::new(Full::new(Bytes::from(
                            state.document.lock().unwrap().clone(),
                        )));
                        if !state.up.load(Ordering::SeqCst) {
                            // Down on a connection kept from before: an error answer.
                            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        server
    }

    fn url(&self) -> String {
        format!(
            "https://localhost:{}/.well-known/jwks.json",
            self.addr.port()
        )
    }

    fn serve(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

// ---- the gateway -----------------------------------------------------------------------------

/// Where the gateway's Forge keys come from.
enum Keys {
    /// A pinned file with this document.
    File(String),
    /// This URL (and optional proxy) only.
    Url(String, Option<SocketAddr>),
}

struct Setup {
    keys: Keys,
    require_signature: bool,
    require_user_pat: bool,
    client_certificate: &'static str,
    /// More keys in `[api]`.
    api: String,
    /// More keys in `[forge]` (e.g. `leeway_seconds`).
    forge: String,
    /// Which installations the app allows (`installation_ids` and/or `cloud_ids`).
    allowed: String,
    /// More keys in the app's `[[forge.apps]]` (e.g. `signature_keyids`).
    app: String,
    /// More TOML after `[forge]` (e.g. `[rate_limits.client]`).
    extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            keys: Keys::File(jwks(&[(KID1, 0)])),
            require_signature: true,
            require_user_pat: true,
            client_certificate: "optional",
            api: String::new(),
            forge: String::new(),
            allowed: format!("installation_ids = [\"{INSTALLATION}\"]\n"),
            app: String::new(),
            extra: String::new(),
        }
    }
}

struct Forge {
    gw: Gateway,
    host: RecordingHost,
    manual: ManualClock,
    /// The Forge app's backend: no client certificate, the app's Ed25519 key.
    client: SignedClient,
}

async fn start_with(ca: Arc<DevCa>, setup: Setup) -> Forge {
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let manual = ManualClock::new();
    let source = match &setup.keys {
        Keys::File(document) => {
            write(dir.path(), FILE, document);
            format!("jwks_url = \"\"\njwks_file = \"{FILE}\"\n")
        }
        Keys::Url(url, proxy) => format!(
            "jwks_url = \"{url}\"\njwks_roots = \"none\"\njwks_extra_ca = \"ca.pem\"\njwks_proxy = \"{}\"\n",
            proxy.map(|p| format!("http://{p}")).unwrap_or_default()
        ),
    };
    let opts = Options {
        require_user_pat: setup.require_user_pat,
        clock: Some(manual.clone()),
        connect_ttl_seconds: Some(900),
        request_timeout_ms: 5_000,
        api_toml: format!(
            "client_certificate = \"{}\"\n{}",
            setup.client_certificate, setup.api
        ),
        extra_toml: format!(
            "[forge]\n{source}{}[[forge.apps]]\nid = \"{APP_ID}\"\n{}require_signature = {}\n{}{}",
            setup.forge, setup.allowed, setup.require_signature, setup.app, setup.extra
        ),
        ..Options::default()
    };
    let files = common::Setup::with_ca(dir, ca, &host, &opts).await;
    let gw = files.start().await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client =
        SignedClient::without_certificate(&gw.path("ca.pem"), gw.signing_key.clone(), false)
            .unwrap()
            .with_clock(gw.clock.clone());
    Forge {
        gw,
        host,
        manual,
        client,
    }
}

async fn start(setup: Setup) -> Forge {
    start_with(Arc::new(DevCa::generate("patgate test CA").unwrap()), setup).await
}

impl Forge {
    fn now(&self) -> u64 {
        self.gw.clock.unix_now()
    }

    /// `out` with the token and the headers Forge adds.
    fn with_token(&self, mut out: Outgoing, token: &str) -> Outgoing {
        out.headers.extend([
            ("authorization".to_string(), format!("Bearer {token}")),
            (
                "x-b3-traceid".to_string(),
                "463ac35c9f6413ad48485a3953bb6124".to_string(),
            ),
            ("x-b3-spanid".to_string(), "a2fb4a1d1a96d312".to_string()),
            ("x-forge-oauth-system".to_string(), OAUTH_SYSTEM.to_string()),
            ("x-forge-oauth-user".to_string(), OAUTH_USER.to_string()),
        ]);
        out
    }

    /// A read of branches, signed, with `token` (whose principal must be A).
    async fn read(&self, token: &str) -> Response<Bytes> {
        let out = Outgoing {
            account: Some(ACCOUNT_A.into()),
            ..self.with_token(
                self.gw.get("/git/ghe/api/v3/repos/acme/api/branches"),
                token,
            )
        };
        self.client.send(&out).await.unwrap()
    }

    /// A create branch for `account`, signed, with `token`.
    async fn create_branch(&self, account: Option<&str>, token: &str) -> Response<Bytes> {
        let out = self.with_token(self.gw.create_branch(account), token);
        self.client.send(&out).await.unwrap()
    }

    /// `out` with `token`, without an RFC 9421 signature.
    async fn unsigned(&self, out: Outgoing) -> Response<Bytes> {
        let mut request = self.client.sign(&out).unwrap();
        request.headers_mut().remove("signature");
        request.headers_mut().remove("signature-input");
        self.client.send_signed(request).await.unwrap()
    }
}

/// The status and code of a refusal; the host must have received nothing.
#[track_caller]
fn refused(forge: &Forge, response: &Response<Bytes>, status: u16, code: &str) {
    refused_case(forge, "", response, status, code);
}

/// [`refused`], for one case of a table: a failure names the case.
#[track_caller]
fn refused_case(forge: &Forge, case: &str, response: &Response<Bytes>, status: u16, code: &str) {
    assert_eq!(
        (response.status().as_u16(), problem_code(response).as_str()),
        (status, code),
        "{case}: {}",
        String::from_utf8_lossy(response.body())
    );
    assert!(
        forge.host.requests().is_empty(),
        "{case}: the host received {:?}",
        forge.host.requests()
    );
}

// ---- the cases -------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_token_with_the_signature_reaches_the_host_without_forges_tokens() {
    let logs = logs::global("debug");
    let forge = start(Setup::default()).await;
    let response = forge.read(&fit(forge.now(), Some(ACCOUNT_A))).await;
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    let got = forge.host.last();
    // A read uses the integration token; nothing Forge sent as a credential reaches the host.
    assert_eq!(
        got.authorization(),
        Some(format!("Bearer {INTEGRATION_TOKEN}").as_str())
    );
    for name in [
        "x-forge-oauth-system",
        "x-forge-oauth-user",
        "signature",
        "patgate-account",
    ] {
        assert!(got.headers.get(name).is_none(), "the host got {name}");
    }
    assert_eq!(
        got.headers["x-b3-traceid"],
        "463ac35c9f6413ad48485a3953bb6124"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let line = logs.lines(&[&request_id, "patgate::access"]).join("\n");
    assert!(line.contains("auth=\"forge-token+signature\""), "{line}");
    // Counted like any other caller's request.
    let metrics = forge.gw.metrics().await;
    assert!(
        metrics.contains(
            "patgate_requests_total{integration=\"ghe\",operation=\"read\",credential=\"integration\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        line.contains("client=forge:3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44:7a1e0c55"),
        "{line}"
    );
    let all = logs.text();
    assert!(
        !all.contains(OAUTH_SYSTEM) && !all.contains(OAUTH_USER),
        "a Forge token was logged"
    );
}

#[tokio::test]
async fn tokens_that_are_not_valid_are_refused_with_401() {
    let forge = start(Setup::default()).await;
    let now = forge.now();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(now, Some(ACCOUNT_A));
        edit(&mut c);
        jwt(&c, Alg::Rs256(0, KID1))
    };
    let public_der = {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        rsa_key(0)
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| {
                c["exp"] = json!(now - 30);
                c["iat"] = json!(now - 55);
                c["nbf"] = json!(now - 55)
            }),
            "forge-token-expired",
        ),
        (
            "not yet valid",
            with(&|c| {
                c["nbf"] = json!(now + 60);
                c["iat"] = json!(now + 60);
                c["exp"] = json!(now + 85)
            }),
            "forge-token-expired",
        ),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("forge/some-other-issuer")),
            "forge-token-invalid",
        ),
        (
            "wrong aud",
            with(&|c| {
                c["aud"] = json!(OTHER_APP_ID);
                c["app"]["id"] = json!(OTHER_APP_ID)
            }),
            "forge-token-invalid",
        ),
        (
            "aud and app.id differ",
            with(&|c| c["app"]["id"] = json!(OTHER_APP_ID)),
            "forge-token-invalid",
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            "forge-token-invalid",
        ),
        (
            "unknown kid",
            jwt(&claims(now, Some(ACCOUNT_A)), Alg::Rs256(0, KID2)),
            "forge-token-invalid",
        ),
        (
            "signed by another key",
            jwt(&claims(now, Some(ACCOUNT_A)), Alg::Rs256(1, KID1)),
            "forge-token-invalid",
        ),
        (
            "alg none",
            jwt(&claims(now, Some(ACCOUNT_A)), Alg::None(KID1)),
            "forge-token-invalid",
        ),
        (
            // The one HS* case: every HS256 token stops at the algorithm, whatever the secret.
            "HS256 with the RSA public key as the HMAC secret",
            jwt(&claims(now, Some(ACCOUNT_A)), Alg::Hs256(public_der, KID1)),
            "forge-token-invalid",
        ),
        (
            "not a JWT",
            "not-a-token".to_string(),
            "forge-token-invalid",
        ),
    ];
    for (case, token, code) in cases {
        let response = forge.read(&token).await;
        refused_case(&forge, case, &response, 401, code);
    }
}

#[tokio::test]
async fn the_default_leeway_of_five_seconds_is_the_edge() {
    // `forge.leeway_seconds` is not set: the documented default, 5 s, applies to `exp`,
    // `nbf` and `iat`. The gateway's clock stands still, so the edges are exact.
    let forge = start(Setup::default()).await;
    let now = forge.now();
    let at = |exp: u64, nbf: u64, iat: u64| {
        edited(now, |c| {
            c["exp"] = json!(exp);
            c["nbf"] = json!(nbf);
            c["iat"] = json!(iat);
        })
    };
    let accepted = [
        ("expired 2 s ago", at(now - 2, now - 27, now - 27)),
        ("expired 5 s ago", at(now - 5, now - 30, now - 30)),
        ("iat 5 s ahead", at(now + 25, now, now + 5)),
        ("nbf 5 s ahead", at(now + 30, now + 5, now)),
    ];
    for (i, (case, token)) in accepted.iter().enumerate() {
        let response = forge.read(token).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{case}: {}",
            String::from_utf8_lossy(response.body())
        );
        assert_eq!(forge.host.requests().len(), i + 1, "{case}");
    }
    forge.host.requests.lock().unwrap().clear();
    for (case, token) in [
        ("expired 6 s ago", at(now - 6, now - 31, now - 31)),
        ("expired 10 s ago", at(now - 10, now - 35, now - 35)),
        (
            "only iat in the future, 6 s ahead",
            at(now + 25, now, now + 6),
        ),
        (
            "only nbf in the future, 6 s ahead",
            at(now + 31, now + 6, now),
        ),
    ] {
        let response = forge.read(&token).await;
        refused_case(&forge, case, &response, 401, "forge-token-expired");
    }
}

#[tokio::test]
async fn another_installation_or_environment_is_403() {
    let forge = start(Setup::default()).await;
    let now = forge.now();
    let mut elsewhere = claims(now, Some(ACCOUNT_A));
    elsewhere["app"]["installationId"] = json!(OTHER_INSTALLATION);
    elsewhere["app"]["installation"]["id"] = json!(OTHER_INSTALLATION);
    let response = forge.read(&jwt(&elsewhere, Alg::Rs256(0, KID1))).await;
    refused(&forge, &response, 403, "forge-installation-not-allowed");
    let mut development = claims(now, Some(ACCOUNT_A));
    development["app"]["environment"]["type"] = json!("DEVELOPMENT");
    let response = forge.read(&jwt(&development, Alg::Rs256(0, KID1))).await;
    refused(&forge, &response, 403, "forge-installation-not-allowed");
}

/// The Jira site of [`claims`].
const CLOUD_ID: &str = "5e3b6c2d-0000-4000-8000-00000000cafe";
const OTHER_CLOUD_ID: &str = "9a7f3e1d-0000-4000-8000-00000000beef";

/// A FIT of the app installed on the site `cloud`, its installation's contexts `contexts`.
fn on_site(now: u64, cloud: &str, contexts: Value) -> String {
    edited(now, |c| {
        c["app"]["installation"]["contexts"] = contexts;
        c["app"]["apiBaseUrl"] = json!(format!("https://api.atlassian.com/ex/jira/{cloud}"));
        c["context"]["cloudId"] = json!(cloud);
    })
}

#[tokio::test]
async fn an_app_allowed_by_cloud_id_takes_that_site_only() {
    let forge = start(Setup {
        allowed: format!("cloud_ids = [\"{CLOUD_ID}\"]\n"),
        ..Setup::default()
    })
    .await;
    let now = forge.now();
    // No installation id is allowed: only the site, named by an installation context as an
    // ARI or as an object with `cloudId`, lets the token in.
    let site = |cloud: &str| json!([format!("ari:cloud:jira::site/{cloud}")]);
    let object = |cloud: &str| json!([{ "cloudId": cloud }]);
    for (i, (case, contexts)) in [("site ARI", site(CLOUD_ID)), ("object", object(CLOUD_ID))]
        .into_iter()
        .enumerate()
    {
        let response = forge.read(&on_site(now, CLOUD_ID, contexts)).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{case}: {}",
            String::from_utf8_lossy(response.body())
        );
        assert_eq!(forge.host.requests().len(), i + 1, "{case}");
    }
    forge.host.requests.lock().unwrap().clear();
    for (case, contexts) in [
        ("another site's ARI", site(OTHER_CLOUD_ID)),
        ("another site's object", object(OTHER_CLOUD_ID)),
    ] {
        let response = forge.read(&on_site(now, OTHER_CLOUD_ID, contexts)).await;
        refused_case(
            &forge,
            case,
            &response,
            403,
            "forge-installation-not-allowed",
        );
    }
}

#[tokio::test]
async fn the_principal_is_the_acting_user() {
    let forge = start(Setup::default()).await;
    let now = forge.now();
    // Patgate-Account (signed) names B, the token A.
    let response = forge
        .create_branch(Some(ACCOUNT_B), &fit(now, Some(ACCOUNT_A)))
        .await;
    refused(&forge, &response, 403, "forge-account-mismatch");
    // A signed call for a user must name the principal, so the signature covers it.
    let response = forge.create_branch(None, &fit(now, Some(ACCOUNT_A))).await;
    refused(&forge, &response, 403, "forge-account-mismatch");
    // A system call names no user.
    let response = forge.create_branch(Some(ACCOUNT_A), &fit(now, None)).await;
    refused(&forge, &response, 403, "forge-account-mismatch");
    // /v1 only for the principal: A's token asks for the PAT status of `of`.
    let pat_status = |of: &str| Outgoing {
        account: Some(ACCOUNT_A.into()),
        ..forge.with_token(
            forge
                .gw
                .get(&format!("/v1/integrations/ghe/users/{of}/pat")),
            &fit(now, Some(ACCOUNT_A)),
        )
    };
    let response = forge.client.send(&pat_status(ACCOUNT_B)).await.unwrap();
    refused(&forge, &response, 403, "forge-account-mismatch");
    let response = forge.client.send(&pat_status(ACCOUNT_A)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&response)["configured"], true, "{:?}", json(&response));
}

#[tokio::test]
async fn a_forge_caller_stores_a_pat_for_its_principal_only() {
    const NEW_PAT_A: &str = "ghp_UserANewPatDoNotLeak0123456789abcdef";
    let logs = logs::global("debug");
    let forge = start(Setup::default()).await;
    forge.host.add_user(NEW_PAT_A, "alice-forge-put", "repo");
    let now = forge.now();
    // A's token, A in Patgate-Account, a PUT of the PAT of `of`.
    let put = |of: &str, pat: &str| Outgoing {
        account: Some(ACCOUNT_A.into()),
        ..forge.with_token(forge.gw.put_pat(of, pat), &fit(now, Some(ACCOUNT_A)))
    };
    // Another user's PAT: refused before the host is asked to check it.
    let response = forge.client.send(&put(ACCOUNT_B, PAT_B)).await.unwrap();
    refused(&forge, &response, 403, "forge-account-mismatch");
    // B still has none.
    let response = forge
        .create_branch(Some(ACCOUNT_B), &fit(now, Some(ACCOUNT_B)))
        .await;
    refused(&forge, &response, 403, "user-pat-required");
    // The principal's own: checked with the host, stored, and used for A's next action.
    let response = forge.client.send(&put(ACCOUNT_A, NEW_PAT_A)).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(
        forge.host.last().authorization(),
        Some(format!("Bearer {NEW_PAT_A}").as_str())
    );
    // The audit event says how the caller was authenticated and who it was.
    let stored = logs
        .lines(&["event=\"pat-stored\"", "alice-forge-put"])
        .join("\n");
    assert!(
        stored.contains("auth=\"forge-token+signature\""),
        "{stored}"
    );
    assert!(
        stored.contains("actor=\"forge:3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44:7a1e0c55-2f4b-4d3e-8b6a-0c9d1e2f3a4b\" key_id=\"app-ed25519\""),
        "{stored}"
    );
    assert!(!stored.contains(NEW_PAT_A), "{stored}");
    let response = forge
        .create_branch(Some(ACCOUNT_A), &fit(now, Some(ACCOUNT_A)))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(
        forge.host.last().authorization(),
        Some(format!("Bearer {NEW_PAT_A}").as_str())
    );
}

#[tokio::test]
async fn the_client_tier_counts_per_app_installation() {
    let forge = start(Setup {
        allowed: format!("installation_ids = [\"{INSTALLATION}\", \"{OTHER_INSTALLATION}\"]\n"),
        extra: "[rate_limits.client]\nreads = { requests = 2, window_seconds = 60 }\n".into(),
        ..Setup::default()
    })
    .await;
    let now = forge.now();
    for _ in 0..2 {
        assert_eq!(
            forge.read(&fit(now, Some(ACCOUNT_A))).await.status(),
            StatusCode::OK
        );
    }
    // The third read of this installation, for A, then as a system call: one client.
    let system = forge.with_token(
        forge.gw.get("/git/ghe/api/v3/repos/acme/api/branches"),
        &fit(now, None),
    );
    for (case, response) in [
        ("for A", forge.read(&fit(now, Some(ACCOUNT_A))).await),
        ("system call", forge.client.send(&system).await.unwrap()),
    ] {
        assert_eq!(
            (response.status().as_u16(), problem_code(&response).as_str()),
            (429, "rate-limited"),
            "{case}: {}",
            String::from_utf8_lossy(response.body())
        );
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"client-reads\";q=2;w=60",
            "{case}"
        );
        assert_eq!(forge.host.requests().len(), 2, "{case} reached the host");
    }
    assert!(forge
        .gw
        .metrics()
        .await
        .contains("patgate_rate_limited_total{tier=\"client\",shadow=\"false\"} 2\n"));
    // Another installation of the same app is another client.
    let mut elsewhere = claims(now, Some(ACCOUNT_A));
    elsewhere["app"]["installationId"] = json!(OTHER_INSTALLATION);
    elsewhere["app"]["installation"]["id"] = json!(OTHER_INSTALLATION);
    let response = forge.read(&jwt(&elsewhere, Alg::Rs256(0, KID1))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(forge.host.requests().len(), 3);
}

#[tokio::test]
async fn a_forge_only_listener_needs_the_token() {
    let forge = start(Setup {
        client_certificate: "none",
        ..Setup::default()
    })
    .await;
    // Signed by the app's key, but no token.
    let response = forge
        .client
        .send(&forge.gw.get("/git/ghe/api/v3/repos/acme/api/branches"))
        .await
        .unwrap();
    refused(&forge, &response, 401, "forge-token-missing");
    let out = forge.gw.get("/git/ghe/api/v3/repos/acme/api/branches");
    let mut basic = out.clone();
    basic
        .headers
        .push(("authorization".into(), "Basic YTpi".into()));
    let response = forge.client.send(&basic).await.unwrap();
    refused(&forge, &response, 401, "forge-token-missing");
    // The Connect-era client's certificate is not asked for: it is a Forge caller here.
    let response = forge.gw.client().send(&out).await.unwrap();
    refused(&forge, &response, 401, "forge-token-missing");
    let response = forge.read(&fit(forge.now(), Some(ACCOUNT_A))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_on_a_listener_without_forge_gets_nowhere() {
    let forge = start(Setup {
        client_certificate: "required",
        ..Setup::default()
    })
    .await;
    let token = fit(forge.now(), Some(ACCOUNT_A));
    // Without a client certificate there is no TLS session, so no HTTP answer at all.
    let err = forge
        .client
        .send(&forge.with_token(forge.gw.get("/git/ghe/api/v3/user"), &token))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sending failed"), "{err}");
    // With the Connect-era certificate, a token is no signature.
    let response = forge
        .gw
        .client()
        .send_signed({
            let mut r = forge
                .gw
                .client()
                .sign(&forge.with_token(forge.gw.get("/git/ghe/api/v3/user"), &token))
                .unwrap();
            r.headers_mut().remove("signature");
            r.headers_mut().remove("signature-input");
            r
        })
        .await
        .unwrap();
    refused(&forge, &response, 401, "signature-missing");
}

#[tokio::test]
async fn a_tampered_body_is_refused_by_the_signature_not_with_401() {
    let forge = start(Setup::default()).await;
    let out = forge.with_token(
        forge.gw.create_branch(Some(ACCOUNT_A)),
        &fit(forge.now(), Some(ACCOUNT_A)),
    );
    let mut request = forge.client.sign(&out).unwrap();
    *request.body_mut() = Full::new(Bytes::from_static(
        br#"{"ref":"refs/heads/main","sha":"0000000000000000000000000000000000000000"}"#,
    ));
    let response = forge.client.send_signed(request).await.unwrap();
    refused(&forge, &response, 403, "forge-signature-invalid");
    // No signature at all on an app that requires it.
    let out = Outgoing {
        account: Some(ACCOUNT_A.into()),
        ..forge.with_token(
            forge.gw.get("/git/ghe/api/v3/user"),
            &fit(forge.now(), Some(ACCOUNT_A)),
        )
    };
    let response = forge.unsigned(out).await;
    refused(&forge, &response, 403, "forge-signature-invalid");
    // A replayed signature.
    let out = forge.with_token(
        forge.gw.get("/git/ghe/api/v3/user"),
        &fit(forge.now(), Some(ACCOUNT_A)),
    );
    let out = Outgoing {
        account: Some(ACCOUNT_A.into()),
        ..out
    };
    let request = forge.client.sign(&out).unwrap();
    let again = replay_of(&request);
    assert_eq!(
        forge.client.send_signed(request).await.unwrap().status(),
        StatusCode::OK
    );
    forge.host.requests.lock().unwrap().clear();
    let response = forge.client.send_signed(again).await.unwrap();
    refused(&forge, &response, 403, "forge-signature-invalid");
}

#[tokio::test]
async fn signature_keyids_refuse_another_app_key() {
    // The app signs with the HMAC key only; the Ed25519 key is configured in [[app_keys]]
    // (the Connect-era app's) but not this app's.
    let forge = start(Setup {
        app: format!("signature_keyids = [\"{HMAC_KEYID}\"]\n"),
        ..Setup::default()
    })
    .await;
    let now = forge.now();
    let response = forge.read(&fit(now, Some(ACCOUNT_A))).await;
    refused(&forge, &response, 403, "forge-signature-invalid");
    assert!(
        String::from_utf8_lossy(response.body()).contains("signature_keyids"),
        "{}",
        String::from_utf8_lossy(response.body())
    );
    let hmac =
        SignedClient::without_certificate(&forge.gw.path("ca.pem"), forge.gw.hmac_key(), false)
            .unwrap()
            .with_clock(forge.gw.clock.clone());
    let out = Outgoing {
        account: Some(ACCOUNT_A.into()),
        ..forge.with_token(
            forge.gw.get("/git/ghe/api/v3/repos/acme/api/branches"),
            &fit(now, Some(ACCOUNT_A)),
        )
    };
    let response = hmac.send(&out).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(forge.host.requests().len(), 1);
}

#[tokio::test]
async fn without_the_signature_a_token_carries_one_request_of_any_shape() {
    let forge = start(Setup {
        require_signature: false,
        require_user_pat: false,
        ..Setup::default()
    })
    .await;
    let token = fit(forge.now(), Some(ACCOUNT_A));
    // The documented residual: nothing binds the request to the token, so whoever presents
    // it first chooses method, path and body (here a body the app never sent).
    let tampered =
        br#"{"ref":"refs/heads/attacker","sha":"0000000000000000000000000000000000000000"}"#;
    let out = Outgoing {
        body: Some(Bytes::from_static(tampered)),
        ..forge.with_token(forge.gw.create_branch(Some(ACCOUNT_A)), &token)
    };
    let response = forge.unsigned(out).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(forge.host.last().body.as_ref(), tampered);
    // ... once: any later request with the same token is refused, here a create branch
    // with the app's own body, then a read.
    forge.host.requests.lock().unwrap().clear();
    let response = forge
        .unsigned(forge.with_token(forge.gw.create_branch(Some(ACCOUNT_A)), &token))
        .await;
    refused(&forge, &response, 401, "forge-token-replayed");
    let response = forge
        .unsigned(forge.with_token(forge.gw.get("/git/ghe/api/v3/user"), &token))
        .await;
    refused(&forge, &response, 401, "forge-token-replayed");
    // And Patgate-Account must still agree with the principal.
    let out = Outgoing {
        account: Some(ACCOUNT_B.into()),
        ..forge.with_token(
            forge.gw.get("/git/ghe/api/v3/user"),
            &fit(forge.now(), Some(ACCOUNT_A)),
        )
    };
    let response = forge.unsigned(out).await;
    refused(&forge, &response, 403, "forge-account-mismatch");
}

#[tokio::test]
async fn create_branch_as_the_principal_uses_their_pat_or_asks_for_one() {
    let forge = start(Setup::default()).await;
    let now = forge.now();
    let response = forge
        .create_branch(Some(ACCOUNT_A), &fit(now, Some(ACCOUNT_A)))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(
        forge.host.last().authorization(),
        Some(format!("Bearer {PAT_A}").as_str())
    );
    forge.host.requests.lock().unwrap().clear();
    // B has no PAT: setup required, with the link to the connect page.
    let response = forge
        .create_branch(Some(ACCOUNT_B), &fit(now, Some(ACCOUNT_B)))
        .await;
    refused(&forge, &response, 403, "user-pat-required");
    let setup_url = json(&response)["setup_url"].as_str().unwrap().to_string();
    assert!(
        setup_url.starts_with("https://localhost:") && setup_url.contains("/connect/"),
        "{setup_url}"
    );
    // A system call (no principal) acts only as the integration account may: not here.
    let response = forge.create_branch(None, &fit(now, None)).await;
    refused(&forge, &response, 403, "user-pat-required");
}

#[tokio::test]
async fn with_require_user_pat_off_actions_use_the_integration_account() {
    let forge = start(Setup {
        require_user_pat: false,
        ..Setup::default()
    })
    .await;
    let now = forge.now();
    for (account, token) in [
        (Some(ACCOUNT_B), fit(now, Some(ACCOUNT_B))),
        (None, fit(now, None)),
    ] {
        let response = forge.create_branch(account, &token).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{account:?}");
        assert_eq!(response.headers()["patgate-credential"], "integration");
        assert_eq!(
            forge.host.last().authorization(),
            Some(format!("Bearer {INTEGRATION_TOKEN}").as_str())
        );
    }
}

#[tokio::test]
async fn a_system_call_reads_with_the_integration_token() {
    let forge = start(Setup::default()).await;
    // No principal, so no Patgate-Account: the app itself reads.
    let out = forge.with_token(
        forge.gw.get("/git/ghe/api/v3/repos/acme/api/branches"),
        &fit(forge.now(), None),
    );
    let response = forge.client.send(&out).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(response.headers()["patgate-credential"], "integration");
    assert_eq!(forge.host.requests().len(), 1);
    assert_eq!(
        forge.host.last().authorization(),
        Some(format!("Bearer {INTEGRATION_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn the_hosts_401_reaches_a_forge_caller_as_403() {
    let forge = start(Setup::default()).await;
    // Refused with the user's PAT: the user is asked for a new one (never a 401).
    forge.host.answer_next(StatusCode::UNAUTHORIZED, &[]);
    let response = forge
        .create_branch(Some(ACCOUNT_A), &fit(forge.now(), Some(ACCOUNT_A)))
        .await;
    assert_eq!(
        (response.status().as_u16(), problem_code(&response).as_str()),
        (403, "user-pat-refused")
    );
    assert_eq!(forge.host.requests().len(), 1);
    // Refused with the integration's token (a read): an admin matter.
    forge.host.answer_next(StatusCode::UNAUTHORIZED, &[]);
    let response = forge.read(&fit(forge.now(), Some(ACCOUNT_A))).await;
    assert_eq!(
        (response.status().as_u16(), problem_code(&response).as_str()),
        (403, "host-credential-refused")
    );
    assert!(String::from_utf8_lossy(response.body()).contains("integration"));
    assert_eq!(forge.host.requests().len(), 2);
}

#[tokio::test]
async fn source_ranges_close_other_addresses() {
    let forge = start(Setup {
        client_certificate: "none",
        api: "forge_source_cidrs = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n".into(),
        ..Setup::default()
    })
    .await;
    let err = forge
        .client
        .send(&forge.with_token(
            forge.gw.get("/git/ghe/api/v3/user"),
            &fit(forge.now(), Some(ACCOUNT_A)),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sending failed"), "{err}");
    assert!(forge.host.requests().is_empty());
    let open = start(Setup {
        client_certificate: "none",
        api: "forge_source_cidrs = [\"127.0.0.0/8\"]\n".into(),
        ..Setup::default()
    })
    .await;
    let response = open.read(&fit(open.now(), Some(ACCOUNT_A))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_listener_says_at_start_where_forge_calls_may_come_from() {
    let logs = logs::global("debug");
    // The line is logged before the listener accepts: once a call is answered, it is there.
    let ranges = start(Setup {
        api: "forge_source_cidrs = [\"127.0.0.0/8\", \"203.0.113.77/32\"]\n".into(),
        ..Setup::default()
    })
    .await;
    assert_eq!(
        ranges
            .read(&fit(ranges.now(), Some(ACCOUNT_A)))
            .await
            .status(),
        StatusCode::OK
    );
    let lines = logs.lines(&[
        "takes Forge calls without a client certificate from these ranges only",
        "sources=127.0.0.0/8,203.0.113.77/32",
    ]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("client_certificate=\"optional\""),
        "{}",
        lines[0]
    );
    // Without ranges, a warning. It names no listener, and other gateways of this binary
    // log it too: this checks its level and wording.
    let any = start(Setup {
        client_certificate: "none",
        ..Setup::default()
    })
    .await;
    assert_eq!(
        any.read(&fit(any.now(), Some(ACCOUNT_A))).await.status(),
        StatusCode::OK
    );
    let lines = logs.lines(&[
        "WARN",
        "client_certificate=\"none\"",
        "takes Forge calls without a client certificate from any address (api.forge_source_cidrs is empty)",
    ]);
    assert!(!lines.is_empty(), "{}", logs.text());
}

#[tokio::test]
async fn a_new_key_in_the_pinned_file_counts_after_a_reload() {
    let forge = start(Setup::default()).await;
    let now = forge.now();
    let new = jwt(&claims(now, Some(ACCOUNT_A)), Alg::Rs256(1, KID2));
    // Precondition of the reload check below, not a case of its own (the unknown kid is one
    // of `tokens_that_are_not_valid_are_refused_with_401`): before the reload the new key's
    // token is refused, so its 200 after the reload is the reload's doing.
    refused(&forge, &forge.read(&new).await, 401, "forge-token-invalid");
    // Both keys, then the new one alone.
    write(forge.gw.dir.path(), FILE, &jwks(&[(KID1, 0), (KID2, 1)]));
    forge.gw.handle.reload().await.unwrap();
    assert_eq!(forge.read(&new).await.status(), StatusCode::OK);
    assert_eq!(
        forge.read(&fit(now, Some(ACCOUNT_A))).await.status(),
        StatusCode::OK
    );
    write(forge.gw.dir.path(), FILE, &jwks(&[(KID2, 1)]));
    forge.gw.handle.reload().await.unwrap();
    forge.host.requests.lock().unwrap().clear();
    refused(
        &forge,
        &forge.read(&fit(now, Some(ACCOUNT_A))).await,
        401,
        "forge-token-invalid",
    );
    // A file without a usable key is refused at reload; the keys before keep serving.
    write(
        forge.gw.dir.path(),
        FILE,
        r#"{"keys":[{"kty":"oct","kid":"x","k":"c2VjcmV0"}]}"#,
    );
    let err = forge.gw.handle.reload().await.unwrap_err();
    assert_eq!(err.key, "forge.jwks_file", "{err}");
    assert_eq!(forge.read(&new).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_url_is_fetched_again_for_an_unknown_kid_once_per_cooldown() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let server = JwksServer::start(&ca, jwks(&[(KID1, 0)])).await;
    let forge = start_with(
        ca,
        Setup {
            keys: Keys::Url(server.url(), None),
            ..Setup::default()
        },
    )
    .await;
    assert_eq!(server.fetches(), 1, "fetched at start");
    assert_eq!(
        forge
            .read(&fit(forge.now(), Some(ACCOUNT_A)))
            .await
            .status(),
        StatusCode::OK
    );
    // Rotation: the set now holds the new key only. (The fetch at start began a cool-down.)
    server.serve(jwks(&[(KID2, 1)]));
    forge.manual.advance(Duration::from_secs(61));
    let now = forge.now();
    let new = jwt(&claims(now, Some(ACCOUNT_A)), Alg::Rs256(1, KID2));
    assert_eq!(forge.read(&new).await.status(), StatusCode::OK);
    assert_eq!(server.fetches(), 2);
    forge.host.requests.lock().unwrap().clear();
    // The old key is gone with the old set.
    refused(
        &forge,
        &forge.read(&fit(now, Some(ACCOUNT_A))).await,
        401,
        "forge-token-invalid",
    );
    // A third key within the cool-down: no fetch, refused; after it, fetched and accepted.
    server.serve(jwks(&[(KID2, 1), (KID3, 2)]));
    let third = jwt(&claims(now, Some(ACCOUNT_A)), Alg::Rs256(2, KID3));
    refused(
        &forge,
        &forge.read(&third).await,
        401,
        "forge-token-invalid",
    );
    assert_eq!(
        server.fetches(),
        2,
        "an unknown kid fetches at most once per cool-down"
    );
    forge.manual.advance(Duration::from_secs(61));
    let third = jwt(&claims(forge.now(), Some(ACCOUNT_A)), Alg::Rs256(2, KID3));
    assert_eq!(forge.read(&third).await.status(), StatusCode::OK);
    assert_eq!(server.fetches(), 3);
    assert!(forge
        .gw
        .metrics()
        .await
        .contains("patgate_forge_jwks_fetches_total{result=\"ok\"} 3"));
}

#[tokio::test]
async fn the_url_is_fetched_again_once_the_set_is_older_than_its_max_age() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let server = JwksServer::start(&ca, jwks(&[(KID1, 0)])).await;
    let forge = start_with(
        ca,
        Setup {
            keys: Keys::Url(server.url(), None),
            forge: "jwks_max_age_seconds = 120\n".into(),
            ..Setup::default()
        },
    )
    .await;
    assert_eq!(server.fetches(), 1, "fetched at start");
    // Rotation at Atlassian; nothing asks for the new kid.
    server.serve(jwks(&[(KID2, 1)]));
    // Past the cool-down, within the age: the set is kept, /ready fetches nothing.
    forge.manual.advance(Duration::from_secs(61));
    assert_eq!(
        forge.gw.admin_request(Method::GET, "/ready").await.status(),
        StatusCode::OK
    );
    assert_eq!(server.fetches(), 1);
    assert_eq!(
        forge
            .read(&fit(forge.now(), Some(ACCOUNT_A)))
            .await
            .status(),
        StatusCode::OK
    );
    // Past the age: /ready fetches the set again, which replaces the old one.
    forge.manual.advance(Duration::from_secs(60));
    assert_eq!(
        forge.gw.admin_request(Method::GET, "/ready").await.status(),
        StatusCode::OK
    );
    assert_eq!(server.fetches(), 2);
    let now = forge.now();
    let new = jwt(&claims(now, Some(ACCOUNT_A)), Alg::Rs256(1, KID2));
    assert_eq!(forge.read(&new).await.status(), StatusCode::OK);
    forge.host.requests.lock().unwrap().clear();
    refused(
        &forge,
        &forge.read(&fit(now, Some(ACCOUNT_A))).await,
        401,
        "forge-token-invalid",
    );
    assert_eq!(server.fetches(), 2, "no fetch within the cool-down");
}

#[tokio::test]
async fn the_url_down_at_start_and_later() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let server = JwksServer::start(&ca, jwks(&[(KID1, 0)])).await;
    server.up.store(false, Ordering::SeqCst);
    let forge = start_with(
        ca,
        Setup {
            keys: Keys::Url(server.url(), None),
            ..Setup::default()
        },
    )
    .await;
    // Started, but not ready, and says why.
    let ready = forge.gw.admin_request(Method::GET, "/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(ready.body()).contains("Forge signing keys"));
    let metrics = forge.gw.metrics().await;
    assert!(metrics.contains("patgate_forge_keys 0"), "{metrics}");
    assert!(
        metrics.contains("patgate_forge_jwks_fetches_total{result=\"error\"} 1"),
        "{metrics}"
    );
    let response = forge.read(&fit(forge.now(), Some(ACCOUNT_A))).await;
    refused(&forge, &response, 503, "forge-keys-unavailable");
    assert!(response.headers().contains_key("retry-after"));
    // Up again: after the cool-down, /ready fetches and is ready.
    server.up.store(true, Ordering::SeqCst);
    forge.manual.advance(Duration::from_secs(61));
    assert_eq!(
        forge.gw.admin_request(Method::GET, "/ready").await.status(),
        StatusCode::OK
    );
    assert!(forge.gw.metrics().await.contains("patgate_forge_keys 1"));
    assert_eq!(
        forge
            .read(&fit(forge.now(), Some(ACCOUNT_A)))
            .await
            .status(),
        StatusCode::OK
    );
    // Down later: a fetch that fails keeps the last good set.
    server.up.store(false, Ordering::SeqCst);
    forge.manual.advance(Duration::from_secs(61));
    let unknown = jwt(&claims(forge.now(), Some(ACCOUNT_A)), Alg::Rs256(1, KID2));
    forge.host.requests.lock().unwrap().clear();
    refused(
        &forge,
        &forge.read(&unknown).await,
        401,
        "forge-token-invalid",
    );
    let metrics = forge.gw.metrics().await;
    assert!(
        metrics.contains("patgate_forge_jwks_fetches_total{result=\"error\"} 2"),
        "{metrics}"
    );
    assert_eq!(
        forge
            .read(&fit(forge.now(), Some(ACCOUNT_A)))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        forge.gw.admin_request(Method::GET, "/ready").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_url_is_fetched_through_the_egress_proxy() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let server = JwksServer::start(&ca, jwks(&[(KID1, 0)])).await;
    let (proxy, targets) = connect_proxy(None).await;
    let forge = start_with(
        ca,
        Setup {
            keys: Keys::Url(server.url(), Some(proxy)),
            ..Setup::default()
        },
    )
    .await;
    assert_eq!(
        forge
            .read(&fit(forge.now(), Some(ACCOUNT_A)))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        targets.lock().unwrap().as_slice(),
        [format!("CONNECT localhost:{} HTTP/1.1", server.addr.port())]
    );
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_token_made_by_pyjwt_is_accepted() {
    let interpreter = std::env::var("PATGATE_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    // The token's times must be the gateway's: a placeholder key set first, then PyJWT's.
    let forge = start_with(ca, Setup::default()).await;
    let input = json!({"kid": KID3, "claims": claims(forge.now(), Some(ACCOUNT_A))});
    let mut child = Command::new(&interpreter)
        .arg("tests/interop/forge_fit_with_pyjwt.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {interpreter} ({e})"));
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the PyJWT helper failed; tests/run.sh installs PyJWT and cryptography:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    write(forge.gw.dir.path(), FILE, &made["jwks"].to_string());
    forge.gw.handle.reload().await.unwrap();
    let token = made["token"].as_str().unwrap();
    let response = forge.create_branch(Some(ACCOUNT_A), token).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(
        forge.host.last().authorization(),
        Some(format!("Bearer {PAT_A}").as_str())
    );
}

/// A Forge caller's whole request gets 24 s, whatever it waits for: here a body that never
/// arrives in full. The body's own deadline (`connections.body_read_timeout_ms`, 30 s) would
/// answer 408 after Forge gave up (25 s); the app gets `504 upstream-timeout` first.
#[tokio::test]
async fn a_forge_call_is_answered_within_24_seconds_whatever_it_waits_for() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let forge = start(Setup::default()).await;
    let out = forge.with_token(
        forge.gw.create_branch(Some(ACCOUNT_A)),
        &fit(forge.now(), Some(ACCOUNT_A)),
    );
    let body = out.body.clone().unwrap();
    let request = forge.client.sign(&out).unwrap();
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: localhost:{}\r\n",
        request.uri().path_and_query().unwrap(),
        forge.gw.addr.port()
    );
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    if !request.headers().contains_key(http::header::CONTENT_LENGTH) {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");

    // A TLS connection without a client certificate, as Forge makes.
    let roots = patgate::tls::root_store(&forge.gw.path("ca.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(forge.gw.addr).await.unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    // The head and one byte of the body; the rest never comes.
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..1]).await.unwrap();
    conn.flush().await.unwrap();

    let started = forge.gw.clock.elapsed();
    let mut answer = Vec::new();
    let read = forge
        .gw
        .while_time_moves(Duration::from_millis(500), async {
            let mut chunk = [0u8; 4096];
            loop {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&chunk[..n]);
                        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let text = String::from_utf8_lossy(&answer);
                            let length: usize = text
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length: ")
                                        .map(|v| v.trim().parse().unwrap())
                                })
                                .unwrap_or(0);
                            if answer.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                }
            }
            forge.gw.clock.elapsed()
        });
    let answered = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("no answer while the clock moved");
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let problem: Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["code"], "upstream-timeout", "{body}");
    // Not before 24 s of the clock (and well before the body's own 30 s).
    let waited = answered - started;
    assert!(waited >= Duration::from_secs(24), "{waited:?}");
    assert!(forge.host.requests().is_empty());
}

/// Isolated Cloud is not supported (docs/protocol.md): an `icLabel` claim selects no other
/// key set. A token carrying one verifies only with a key patgate was given; one signed by a
/// key it does not hold is refused like any unknown key.
#[tokio::test]
async fn an_isolated_cloud_label_selects_no_other_key_set() {
    let forge = start(Setup::default()).await;
    let now = forge.now();
    let with_label = |kid_key: Alg| {
        let mut claims = claims(now, Some(ACCOUNT_A));
        claims["icLabel"] = json!("ic-example");
        jwt(&claims, kid_key)
    };
    let response = forge.read(&with_label(Alg::Rs256(1, KID2))).await;
    refused(&forge, &response, 401, "forge-token-invalid");
    let response = forge.read(&with_label(Alg::Rs256(0, KID1))).await;
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
}
