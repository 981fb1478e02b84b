//! The test harness: a real patgate on 127.0.0.1:0 with rcgen certificates, a real sled
//! vault in a temp dir, and an in-process TLS git host that records every request it gets.
//!
//! Nothing of patgate is mocked: tests drive it over real sockets with the same signed mTLS
//! client the app would use.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of the harness

pub mod conformance;
pub mod logs;
pub mod postgres;
pub mod process;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use patgate::client::{Outgoing, SignedClient};
use patgate::clock::{Clock, ManualClock};
use patgate::devpki::{ClientName, DevCa, Issued};
use patgate::listener::{AdminSocket, ApiSockets, Listeners, Server, ServerHandle};
use patgate::runtime::Runtime;
use patgate::signature::SigningKey;
use patgate::vault::{Credential, MasterKey, Vault};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

pub const ACCOUNT_A: &str = "5b10ac8d82e05b22cc7d4ef5";
pub const ACCOUNT_B: &str = "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077";
pub const INTEGRATION_TOKEN: &str = "ghs_IntegrationTokenDoNotLeak0123456789";
pub const PAT_A: &str = "ghp_UserAPatDoNotLeak0123456789abcdefghij";
pub const PAT_B: &str = "ghp_UserBPatDoNotLeak0123456789abcdefghij";
pub const APP_KEYID: &str = "app-ed25519";
/// What patgate sends as `User-Agent` when the app sent none, to every host.
pub const PATGATE_USER_AGENT: &str = concat!("patgate/", env!("CARGO_PKG_VERSION"));
pub const HMAC_KEYID: &str = "app-hmac";
/// The integration every test gateway has, whatever its kind.
pub const INTEGRATION_ID: &str = "ghe";
pub const BRANCH_BODY: &str =
    r#"{"ref":"refs/heads/PROJ-1-fix","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;

// ---- the git host ------------------------------------------------------------------------

/// One request as the git host received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Raw path and query, exactly as they arrived.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
    }
}

/// How the host behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMode {
    /// Answers like GitHub for the calls the tests make.
    Normal,
    /// Accepts connections and requests and never answers.
    Silent,
    /// Holds each request until the test lets one through ([`RecordingHost::release`]).
    Held,
}

/// What the host says when patgate asks a TFS server for its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TfsProbe {
    /// `OPTIONS …/_apis` lists resource locations whose highest `maxVersion` is this.
    Locations(&'static str),
    /// `OPTIONS` is refused (405); `GET …/_apis/projects?api-version=99.0` answers 400
    /// naming this as the latest version.
    OutOfRange(&'static str),
    /// Neither probe answers (404).
    Nothing,
}

/// An answer the host gives instead of its normal one: status and headers.
pub type Scripted = (StatusCode, Vec<(String, String)>);

/// An in-process TLS git host that records what it receives.
#[derive(Debug, Clone)]
pub struct RecordingHost {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// credential → (login, scopes) for the who-am-I calls. The credential is a token
    /// (`Bearer`, `PRIVATE-TOKEN`, or the password of `Basic`), or `user:password`.
    pub users: Arc<Mutex<HashMap<String, (String, String)>>>,
    pub tfs_probe: Arc<Mutex<TfsProbe>>,
    /// One permit per request received (await one with [`RecordingHost::arrival`]).
    arrived: Arc<tokio::sync::Semaphore>,
    /// `HostMode::Held`: one permit per request let through.
    gate: Arc<tokio::sync::Semaphore>,
    /// Answers given, in order, to the next requests instead of the normal ones (status,
    /// headers): e.g. a 429 with `Retry-After` to throttle.
    pub scripted: Arc<Mutex<std::collections::VecDeque<Scripted>>>,
    /// token → when it expires (Unix seconds): GitHub answers requests made with it with
    /// `GitHub-Authentication-Token-Expiration`, GitLab's `/personal_access_tokens/self`
    /// says its `expires_at` date.
    pub expiries: Arc<Mutex<HashMap<String, u64>>>,
    /// Answers like GitLab before 15.5, which has no `/personal_access_tokens/self` (404).
    pub gitlab_before_15_5: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingHost {
    pub async fn start(ca: &DevCa, mode: HostMode) -> RecordingHost {
        // Also GHE_COM_API: the GHE.com integration reaches this host through a proxy.
        let issued = ca
            .issue_server(&["localhost", "127.0.0.1", GHE_COM_API])
            .unwrap();
        let tls = server_config(&issued);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = RecordingHost {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            users: Arc::default(),
            tfs_probe: Arc::new(Mutex::new(TfsProbe::Nothing)),
            arrived: Arc::new(tokio::sync::Semaphore::new(0)),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            scripted: Arc::default(),
            expiries: Arc::default(),
            gitlab_before_15_5: Arc::default(),
        };
        host.add_user(INTEGRATION_TOKEN, "integration-bot", "repo");
        host.add_user(PAT_A, "alice", "repo, read:org");
        host.add_user(PAT_B, "bob", "repo");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let state = host.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(req, mode).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        host
    }

    pub fn add_user(&self, token: &str, login: &str, scopes: &str) {
        self.users
            .lock()
            .unwrap()
            .insert(token.to_string(), (login.to_string(), scopes.to_string()));
    }

    /// Waits until the host has received one more request.
    pub async fn arrival(&self) {
        self.arrived.acquire().await.unwrap().forget();
    }

    /// `HostMode::Held`: lets one held request be answered.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// The next request (after those already scripted) gets this answer, whatever it is.
    pub fn answer_next(&self, status: StatusCode, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.scripted.lock().unwrap().push_back((status, headers));
    }

    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .last()
            .cloned()
            .expect("the host received no request")
    }

    async fn answer(&self, req: Request<Incoming>, mode: HostMode) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let recorded = Recorded {
            method: parts.method.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body,
        };
        self.requests.lock().unwrap().push(recorded.clone());
        self.arrived.add_permits(1);
        match mode {
            HostMode::Silent => std::future::pending::<()>().await,
            HostMode::Held => self.gate.acquire().await.unwrap().forget(),
            HostMode::Normal => {}
        }
        let scripted = self.scripted.lock().unwrap().pop_front();
        if let Some((status, headers)) = scripted {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            return respond(status, &headers, r#"{"message":"scripted answer"}"#);
        }
        let user = self.authenticate(&recorded.headers);
        let expiry = token_of(&recorded.headers)
            .and_then(|token| self.expiries.lock().unwrap().get(&token).copied());
        if parts
            .uri
            .path()
            .ends_with("/api/v4/personal_access_tokens/self")
            && user.is_some()
        {
            if self
                .gitlab_before_15_5
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return respond(StatusCode::NOT_FOUND, &[], r#"{"error":"404 Not Found"}"#);
            }
            let date = expiry.map(|at| rfc3339(at)[..10].to_string());
            return respond(
                StatusCode::OK,
                &[],
                &serde_json::json!({"id": 1, "name": "jira", "revoked": false, "active": true, "scopes": ["api"], "expires_at": date}).to_string(),
            );
        }
        let expiration = expiry.map(|at| rfc3339(at).replace('T', " ").replace('Z', " UTC"));
        let expiration: Vec<(&str, &str)> = expiration
            .iter()
            .map(|value| ("github-authentication-token-expiration", value.as_str()))
            .collect();
        let Some((login, scopes)) = user else {
            return respond(
                StatusCode::UNAUTHORIZED,
                &[],
                r#"{"message":"Bad credentials"}"#,
            );
        };
        let path = parts.uri.path();
        let status = match parts.method {
            Method::GET | Method::HEAD => StatusCode::OK,
            Method::POST => StatusCode::CREATED,
            Method::DELETE => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        };
        if let Some(answer) =
            self.answer_gitlab_or_azure(&parts.method, &parts.uri, &login, &scopes)
        {
            return answer;
        }
        if path.ends_with("/user") {
            let mut headers = vec![("x-oauth-scopes", scopes.as_str())];
            headers.extend(&expiration);
            return respond(
                StatusCode::OK,
                &headers,
                &format!(r#"{{"login":"{login}"}}"#),
            );
        }
        let mut headers = vec![("x-host-saw-login", login.as_str())];
        headers.extend(&expiration);
        respond(status, &headers, &format!(r#"{{"acted_as":"{login}"}}"#))
    }
}

/// The token a request carries (`Authorization: Bearer` or `PRIVATE-TOKEN`).
fn token_of(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .or_else(|| header("private-token"))
        .map(str::to_string)
}

/// `2026-12-31T23:59:59Z` for Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

impl RecordingHost {
    /// The user a request's credential names: `Authorization: Bearer` (GitHub),
    /// `PRIVATE-TOKEN` (GitLab), or `Authorization: Basic` (Azure DevOps: any user name and a
    /// PAT, or a TFS account's `user:password`).
    fn authenticate(&self, headers: &HeaderMap) -> Option<(String, String)> {
        use base64::Engine as _;
        let users = self.users.lock().unwrap();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(token) = header("authorization").and_then(|a| a.strip_prefix("Bearer ")) {
            return users.get(token).cloned();
        }
        if let Some(token) = header("private-token") {
            return users.get(token).cloned();
        }
        let basic = header("authorization").and_then(|a| a.strip_prefix("Basic "))?;
        let pair = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()?;
        let pair = String::from_utf8(pair).ok()?;
        if let Some(user) = users.get(&pair) {
            return Some(user.clone());
        }
        let (_, password) = pair.split_once(':')?;
        users.get(password).cloned()
    }

    /// GitLab's `GET /api/v4/user`, Azure DevOps' `GET …/_apis/connectionData`, and the TFS
    /// release probes.
    fn answer_gitlab_or_azure(
        &self,
        method: &Method,
        uri: &http::Uri,
        login: &str,
        scopes: &str,
    ) -> Option<Response<Full<Bytes>>> {
        let path = uri.path();
        if method == Method::GET && path.ends_with("/api/v4/user") {
            if scopes == "read_repository" {
                return Some(respond(
                    StatusCode::FORBIDDEN,
                    &[],
                    r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api read_user"}"#,
                ));
            }
            return Some(respond(
                StatusCode::OK,
                &[],
                &serde_json::json!({"id": 7, "username": login, "name": login}).to_string(),
            ));
        }
        if method == Method::GET && path.ends_with("/_apis/connectionData") {
            let body = serde_json::json!({
                "authenticatedUser": {
                    "id": "4c1a1b7e-1111-4f1e-9d4a-000000000007",
                    "descriptor": "Microsoft.IdentityModel.Claims.ClaimsIdentity;x",
                    "providerDisplayName": login,
                    "isActive": true,
                    "properties": {"Account": {"$type": "System.String", "$value": login}}
                },
                "authorizedUser": {"id": "4c1a1b7e-1111-4f1e-9d4a-000000000007", "providerDisplayName": login},
                "instanceId": "5a1d3b1e-0000-0000-0000-000000000000",
                "deploymentType": "onPremises"
            });
            return Some(respond(StatusCode::OK, &[], &body.to_string()));
        }
        let probe = *self.tfs_probe.lock().unwrap();
        if method == Method::OPTIONS && path.ends_with("/_apis") {
            return Some(match probe {
                TfsProbe::Locations(max) => {
                    let body = serde_json::json!({"count": 2, "value": [
                        {"id": "1", "area": "git", "resourceName": "refs", "routeTemplate": "{project}/_apis/git/repositories/{repositoryId}/refs", "resourceVersion": 1, "minVersion": "1.0", "maxVersion": "1.0", "releasedVersion": "1.0"},
                        {"id": "2", "area": "git", "resourceName": "pullRequests", "routeTemplate": "{project}/_apis/git/repositories/{repositoryId}/pullRequests", "resourceVersion": 1, "minVersion": "1.0", "maxVersion": max, "releasedVersion": "1.0"}
                    ]});
                    respond(StatusCode::OK, &[], &body.to_string())
                }
                TfsProbe::OutOfRange(_) => respond(StatusCode::METHOD_NOT_ALLOWED, &[], "{}"),
                TfsProbe::Nothing => respond(StatusCode::NOT_FOUND, &[], "{}"),
            });
        }
        if method == Method::GET
            && path.ends_with("/_apis/projects")
            && uri.query() == Some("api-version=99.0")
        {
            return Some(match probe {
                TfsProbe::OutOfRange(latest) => respond(
                    StatusCode::BAD_REQUEST,
                    &[],
                    &serde_json::json!({
                        "$id": "1",
                        "message": format!("The requested REST API version of 99.0 is out of range for this server. The latest REST API version this server supports is {latest}."),
                        "typeKey": "VssVersionOutOfRangeException",
                        "errorCode": 0
                    })
                    .to_string(),
                ),
                _ => respond(StatusCode::NOT_FOUND, &[], "{}"),
            });
        }
        None
    }
}

fn respond(status: StatusCode, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in headers {
        r.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

pub fn server_config(issued: &Issued) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(patgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

// ---- patgate -----------------------------------------------------------------------------

/// Options for one test gateway.
#[derive(Debug, Clone)]
pub struct Options {
    pub require_user_pat: bool,
    pub allow_other_writes: bool,
    pub allowed_client_sans: Vec<String>,
    /// Overrides the integration's base URL (e.g. a closed port).
    pub base_url: Option<String>,
    pub request_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub max_body_bytes: usize,
    pub log_level: String,
    /// Extra TOML appended to the config.
    pub extra_toml: String,
    /// Extra keys inside the `[api]` table (e.g. `client_certificate = "none"`).
    pub api_toml: String,
    /// The integration's `kind`.
    pub kind: &'static str,
    /// Extra keys inside the integration's table (e.g. `version = 2015`).
    pub integration_toml: String,
    /// The integration's secret; `Token(INTEGRATION_TOKEN)` when not set.
    pub integration_secret: Option<Credential>,
    /// Adds a `[connect]` listener on a free port with this link TTL in seconds.
    pub connect_ttl_seconds: Option<u64>,
    /// `service.shutdown_grace_seconds`.
    pub shutdown_grace_seconds: u64,
    /// The gateway reads the time from this clock, which the test advances by hand, instead
    /// of the system's (the app's client signs with it too).
    pub clock: Option<ManualClock>,
    /// Keeps the state in the PostgreSQL database at this URL (`[store] kind = "postgres"`,
    /// the schema migrated, no TLS) instead of sled files.
    pub store_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            require_user_pat: true,
            allow_other_writes: false,
            allowed_client_sans: Vec::new(),
            base_url: None,
            request_timeout_ms: 5_000,
            header_read_timeout_ms: 10_000,
            max_body_bytes: 1024 * 1024,
            log_level: "info".into(),
            extra_toml: String::new(),
            api_toml: String::new(),
            kind: "github",
            integration_toml: String::new(),
            integration_secret: None,
            connect_ttl_seconds: None,
            shutdown_grace_seconds: 2,
            clock: None,
            store_url: None,
        }
    }
}

/// A running patgate plus everything a test needs to call it.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    /// The admin listener (`/live`, `/ready`, `/metrics`).
    pub admin: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    pub ca: Arc<DevCa>,
    pub signing_key: SigningKey,
    pub config_path: PathBuf,
    pub runtime: Arc<Runtime>,
    /// Reloads the running gateway (what SIGHUP does in `patgate run`).
    pub handle: ServerHandle,
    /// The clock the gateway reads (a manual one when [`Options::clock`] was set).
    pub clock: Clock,
    /// [`Options::clock`], to move by hand.
    pub manual_clock: Option<ManualClock>,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<()>>,
}

/// Everything on disk for a gateway: kept apart so a test can restart on the same files.
#[derive(Debug)]
pub struct Setup {
    pub dir: Arc<tempfile::TempDir>,
    pub ca: Arc<DevCa>,
    pub config_path: PathBuf,
    pub signing_key_pem: String,
    /// [`Options::clock`].
    pub clock: Option<ManualClock>,
    /// The connect listener, bound before the config was written (its `public_url` names
    /// the port); the first start takes it, a restart binds the same port again.
    connect: Mutex<Option<std::net::TcpListener>>,
    connect_port: Option<u16>,
}

impl Setup {
    /// Writes certificates, keys, master key and config, and makes the vault with the
    /// integration token in it.
    pub async fn new(host: &RecordingHost, opts: &Options) -> Setup {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
        Setup::with_ca(dir, ca, host, opts).await
    }

    /// Like [`Setup::new`], with the CA that also signed the host's certificate.
    pub async fn with_ca(
        dir: Arc<tempfile::TempDir>,
        ca: Arc<DevCa>,
        host: &RecordingHost,
        opts: &Options,
    ) -> Setup {
        let d = dir.path();
        write(d, "ca.pem", ca.cert_pem());
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        write(d, "server.pem", &server.cert_pem);
        write_private(d, "server-key.pem", &server.key_pem);
        let client = ca
            .issue_client(
                "jira-app test",
                &[
                    ClientName::Dns("jira-app.test"),
                    ClientName::Uri("spiffe://acme/jira"),
                ],
            )
            .unwrap();
        write_private(
            d,
            "client.pem",
            &format!("{}{}", client.cert_pem, client.key_pem),
        );
        let generated = patgate::keys::generate(APP_KEYID, d, false).unwrap();
        let hmac = patgate::keys::generate(HMAC_KEYID, d, true).unwrap();
        MasterKey::generate()
            .write_new(&d.join("master-key"))
            .unwrap();
        let sans = opts
            .allowed_client_sans
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            r#"state_dir = "state"
[master_key]
file = "master-key"
[api]
listen = "127.0.0.1:0"
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
allowed_client_sans = [{sans}]
header_read_timeout_ms = {hrt}
{api_toml}
{ed}
{hmac}
[[integrations]]
id = "ghe"
kind = "{kind}"
base_url = "{base}"
roots = "none"
extra_ca = "ca.pem"
require_user_pat = {rup}
allow_other_writes = {aow}
connect_timeout_ms = 2000
request_timeout_ms = {rt}
max_body_bytes = {mb}
{integration_toml}

[admin]
listen = "127.0.0.1:0"

[service]
shutdown_grace_seconds = {grace}

[log]
level = "{level}"
{extra}
"#,
            grace = opts.shutdown_grace_seconds,
            ed = generated.config_snippet,
            hmac = hmac.config_snippet,
            base = opts.base_url.clone().unwrap_or_else(|| host.base_url()),
            rup = opts.require_user_pat,
            aow = opts.allow_other_writes,
            rt = opts.request_timeout_ms,
            hrt = opts.header_read_timeout_ms,
            mb = opts.max_body_bytes,
            level = opts.log_level,
            extra = opts.extra_toml,
            api_toml = opts.api_toml,
            kind = opts.kind,
            integration_toml = opts.integration_toml,
        );
        let mut config = config;
        let connect = opts.connect_ttl_seconds.map(|ttl| {
            // public_url must name the port: bind first, write the config with its port.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            config.push_str(&format!(
                "[connect]\nlisten = \"127.0.0.1:{port}\"\ncert = \"server.pem\"\nkey = \"server-key.pem\"\npublic_url = \"https://localhost:{port}\"\nlink_ttl_seconds = {ttl}\n"
            ));
            (listener, port)
        });
        if let Some(url) = &opts.store_url {
            write_private(d, "store-url", url);
            config.push_str(
                "[store]\nkind = \"postgres\"\nurl_file = \"store-url\"\ntls = \"disable\"\n",
            );
        }
        let config_path = d.join("patgate.toml");
        write(d, "patgate.toml", &config);
        let key = MasterKey::load_file(&d.join("master-key")).unwrap();
        let vault = match &opts.store_url {
            None => Vault::init(&d.join("state"), &key).await.unwrap(),
            Some(_) => {
                let config = patgate::config::Config::load(&config_path).unwrap();
                let db = open_postgres(&config);
                db.migrate().await.unwrap();
                Vault::init_in(Box::new(db.records()), &key).await.unwrap()
            }
        };
        vault
            .put_integration_secret(
                "ghe",
                &opts
                    .integration_secret
                    .clone()
                    .unwrap_or_else(|| Credential::Token(INTEGRATION_TOKEN.to_string().into())),
            )
            .await
            .unwrap();
        drop(vault);
        Setup {
            signing_key_pem: std::fs::read_to_string(d.join(format!("{APP_KEYID}.pem"))).unwrap(),
            dir,
            ca,
            config_path,
            clock: opts.clock.clone(),
            connect_port: connect.as_ref().map(|(_, port)| *port),
            connect: Mutex::new(connect.map(|(listener, _)| listener)),
        }
    }

    /// Starts patgate on these files.
    pub async fn start(&self) -> Gateway {
        self.try_start().await.unwrap()
    }

    /// Starts patgate on these files, or says why it would not start (as `patgate run`
    /// would print it).
    pub async fn try_start(&self) -> Result<Gateway, String> {
        let config = patgate::config::Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let key = MasterKey::load_file(&self.dir.path().join("master-key")).unwrap();
        if let patgate::config::StoreSettings::Postgres(_) = &config.store {
            // What `patgate run` does with `[store] kind = "postgres"`.
            let db = open_postgres(&config);
            db.check_schema().await.map_err(|e| e.to_string())?;
            let vault = Vault::open_in(Box::new(db.records()), &key)
                .await
                .map_err(|e| format!("opening the vault: {e}"))?;
            let stores = patgate::runtime::shared_stores(&config, &db, &key);
            return self.serve(config, Arc::new(vault), stores).await;
        }
        let vault = Arc::new(
            open_vault(&config.state_dir, &key)
                .await
                .map_err(|e| format!("opening the vault: {e}"))?,
        );
        let stores = patgate::store::Stores::embedded(config.signatures.nonce_cache_entries);
        self.serve(config, vault, stores).await
    }

    /// Builds the runtime on `vault` and `stores` and serves it.
    async fn serve(
        &self,
        config: patgate::config::Config,
        vault: Arc<Vault>,
        stores: patgate::store::Stores,
    ) -> Result<Gateway, String> {
        let clock = self
            .clock
            .as_ref()
            .map_or_else(Clock::system, ManualClock::clock);
        // The same start step as `patgate run`: TFS releases are detected first.
        let runtime = Runtime::start_with(config, vault, clock.clone(), stores)
            .await
            .map_err(|e| e.to_string())?;
        let listeners = self.listeners(&runtime).await;
        let addr = listeners.api_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let server = Server::new(runtime);
        let handle = server.handle();
        let runtime = handle.runtime();
        let (tx, rx) = oneshot::channel();
        let stopped = tokio::spawn(server.run(listeners, async {
            let _ = rx.await;
        }));
        Ok(Gateway {
            addr,
            admin,
            dir: self.dir.clone(),
            ca: self.ca.clone(),
            signing_key: SigningKey::ed25519_from_pkcs8_pem(APP_KEYID, &self.signing_key_pem)
                .unwrap(),
            config_path: self.config_path.clone(),
            runtime,
            handle,
            clock,
            manual_clock: self.clock.clone(),
            shutdown: Some(tx),
            stopped: Some(stopped),
        })
    }

    /// A second replica of this setup: the same certificates, keys, master key and config
    /// (so the same database when the store is PostgreSQL) in a directory of its own, with
    /// a connect listener of its own.
    pub fn replica(&self) -> Setup {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let to = dir.path().join(entry.file_name());
                std::fs::copy(entry.path(), &to).unwrap();
            }
        }
        let config_path = dir.path().join("patgate.toml");
        let connect = self.connect_port.map(|old| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            edit_config(
                &config_path,
                &format!("127.0.0.1:{old}"),
                &format!("127.0.0.1:{port}"),
            );
            edit_config(
                &config_path,
                &format!("localhost:{old}"),
                &format!("localhost:{port}"),
            );
            (listener, port)
        });
        Setup {
            dir,
            ca: self.ca.clone(),
            config_path,
            signing_key_pem: self.signing_key_pem.clone(),
            clock: self.clock.clone(),
            connect_port: connect.as_ref().map(|(_, port)| *port),
            connect: Mutex::new(connect.map(|(listener, _)| listener)),
        }
    }

    /// The connect listener bound by [`Setup::with_ca`], the first time only.
    fn take_connect_listener(&self) -> Option<std::net::TcpListener> {
        self.connect.lock().unwrap().take()
    }

    /// What the gateway listens on: the api and admin listeners on ports of their own, the
    /// connect listener on the port its `public_url` names.
    async fn listeners(&self, runtime: &Runtime) -> Listeners {
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let connect = match self.connect_port {
            None => None,
            Some(port) => Some(match self.take_connect_listener() {
                Some(listener) => {
                    listener.set_nonblocking(true).unwrap();
                    tokio::net::TcpListener::from_std(listener).unwrap()
                }
                None => tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap(),
            }),
        };
        Listeners {
            api: ApiSockets::bind(
                "127.0.0.1:0".parse().unwrap(),
                runtime.config().service.workers,
            )
            .unwrap(),
            connect,
            admin: Some(bind().await),
            admin_socket: AdminSocket::bind(&runtime.config().admin.socket)
                .await
                .unwrap(),
        }
    }
}

/// The pool `[store]` names, as `patgate run` makes it.
fn open_postgres(config: &patgate::config::Config) -> patgate::store::Postgres {
    let patgate::config::StoreSettings::Postgres(settings) = &config.store else {
        panic!("not a postgres config");
    };
    patgate::runtime::connect_postgres(&config.source, settings, config.service.workers).unwrap()
}

impl Gateway {
    /// A host and a gateway in front of it, with default options.
    pub async fn start(opts: Options) -> (Gateway, RecordingHost) {
        let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
        let host = RecordingHost::start(&ca, HostMode::Normal).await;
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let setup = Setup::with_ca(dir, ca, &host, &opts).await;
        (setup.start().await, host)
    }

    /// Begins the shutdown (SIGTERM in `patgate run`) without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// A plain HTTP/1.1 request to the admin listener.
    pub async fn admin_request(&self, method: Method, path: &str) -> Response<Bytes> {
        admin_request(self.admin, method, path).await.unwrap()
    }

    /// `GET /metrics` on the admin listener, as text.
    pub async fn metrics(&self) -> String {
        let response = self.admin_request(Method::GET, "/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        String::from_utf8(response.body().to_vec()).unwrap()
    }

    /// Stops the server and waits until it let go of the vault.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(handle) = self.stopped.take() {
            handle.await.unwrap();
        }
        // The runtime holds the vault; wait until every other holder has dropped it.
        drop(self.runtime);
    }

    /// Runs `future` while the gateway's manual clock moves on by `step` every few
    /// milliseconds of real time: a timeout of patgate's fires within a step of its start
    /// without the test sleeping through it.
    pub async fn while_time_moves<T>(&self, step: Duration, future: impl Future<Output = T>) -> T {
        let clock = self
            .manual_clock
            .as_ref()
            .expect("while_time_moves needs a gateway started with Options::clock");
        while_time_moves(clock, step, future).await
    }

    /// Sends `out` (a request the host never answers) and moves the gateway's manual clock
    /// on by `step` once the host has it: the answer is the one patgate gives when its
    /// request timeout runs out.
    pub async fn send_until_timeout(
        &self,
        host: &RecordingHost,
        out: &Outgoing,
        step: Duration,
    ) -> Response<Bytes> {
        let client = self.client();
        let requests_before = host.requests().len();
        while_time_moves_once(
            self.manual_clock
                .as_ref()
                .expect("send_until_timeout needs a gateway started with Options::clock"),
            step,
            || host.requests().len() > requests_before,
            client.send(out),
        )
        .await
        .unwrap()
    }

    /// `PUT /v1/…/users/{account}/pat` with `token`, as the app sends it.
    pub fn put_pat(&self, account: &str, token: &str) -> Outgoing {
        Outgoing {
            method: Method::PUT,
            url: self.url(&format!("/v1/integrations/ghe/users/{account}/pat")),
            body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
            ..Outgoing::default()
        }
    }

    /// Stores `token` for `account` through the API, as the app does, and asserts the 200.
    pub async fn put_pat_ok(&self, account: &str, token: &str) {
        let stored = self
            .client()
            .send(&self.put_pat(account, token))
            .await
            .unwrap();
        assert_eq!(
            stored.status(),
            200,
            "{account}: {}",
            String::from_utf8_lossy(stored.body())
        );
    }

    /// `POST /v1/…/users/{account}/connect-link`, as the app sends it.
    pub fn connect_link(&self, account: &str) -> Outgoing {
        Outgoing {
            method: Method::POST,
            url: self.url(&format!(
                "/v1/integrations/ghe/users/{account}/connect-link"
            )),
            body: Some(Bytes::new()),
            ..Outgoing::default()
        }
    }

    /// `DELETE /v1/…/users/{account}/pat`, as the app sends it.
    pub fn delete_pat(&self, account: &str) -> Outgoing {
        Outgoing {
            method: Method::DELETE,
            url: self.url(&format!("/v1/integrations/ghe/users/{account}/pat")),
            ..Outgoing::default()
        }
    }

    /// The app's client, signing with the app key on the gateway's clock, but presenting the
    /// certificate `issued` (written as `{name}.pem` in the gateway's directory).
    pub fn client_with_certificate(&self, name: &str, issued: &Issued) -> SignedClient {
        write_private(
            self.dir.path(),
            &format!("{name}.pem"),
            &format!("{}{}", issued.cert_pem, issued.key_pem),
        );
        SignedClient::new(
            &self.path("ca.pem"),
            &self.path(&format!("{name}.pem")),
            None,
            self.signing_key.clone(),
            false,
        )
        .unwrap()
        .with_clock(self.clock.clone())
    }

    /// A raw TLS connection to the api listener with the client certificate (and key) in
    /// `cert_file`, offering `alpn`, for tests that write the bytes themselves. Flushed once:
    /// with TLS 1.3 the client is done before the server has read its Finished, and a write
    /// makes a refused handshake show here rather than on the first read.
    pub async fn raw_tls(
        &self,
        cert_file: &Path,
        alpn: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        use rustls::pki_types::ServerName;
        use tokio::io::AsyncWriteExt as _;
        let roots = patgate::tls::root_store(&self.path("ca.pem")).unwrap();
        let chain = patgate::tls::load_certs(cert_file).unwrap();
        let key = patgate::tls::load_private_key(cert_file).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        tls.flush().await?;
        Ok(tls)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The app's client: the right CA, client certificate and Ed25519 key; it signs with
    /// the gateway's clock.
    pub fn client(&self) -> SignedClient {
        self.client_with(self.signing_key.clone(), false)
    }

    pub fn client_with(&self, key: SigningKey, http2: bool) -> SignedClient {
        SignedClient::new(
            &self.path("ca.pem"),
            &self.path("client.pem"),
            None,
            key,
            http2,
        )
        .unwrap()
        .with_clock(self.clock.clone())
    }

    /// The app's HMAC key.
    pub fn hmac_key(&self) -> SigningKey {
        let secret =
            patgate::runtime::read_private_base64_file(&self.path(&format!("{HMAC_KEYID}.hmac")))
                .unwrap();
        SigningKey::hmac(HMAC_KEYID, &secret).unwrap()
    }

    /// Stores a PAT straight into the running vault.
    pub async fn store_pat(&self, account: &str, token: &str) {
        self.store_pat_with(account, token, &pat_meta()).await;
    }

    /// [`Gateway::store_pat`] with this metadata.
    pub async fn store_pat_with(&self, account: &str, token: &str, meta: &patgate::vault::PatMeta) {
        self.runtime
            .vault()
            .put_user_pat(
                "ghe",
                account,
                &Credential::Token(token.to_string().into()),
                meta,
            )
            .await
            .unwrap();
    }

    pub fn get(&self, path: &str) -> Outgoing {
        Outgoing {
            method: Method::GET,
            url: self.url(path),
            ..Outgoing::default()
        }
    }

    pub fn create_branch(&self, account: Option<&str>) -> Outgoing {
        Outgoing {
            method: Method::POST,
            url: self.url("/git/ghe/api/v3/repos/acme/api/git/refs"),
            body: Some(Bytes::from_static(BRANCH_BODY.as_bytes())),
            account: account.map(str::to_string),
            ..Outgoing::default()
        }
    }
}

/// A plain HTTP/1.1 request on a new connection (the admin listener speaks no TLS).
pub async fn admin_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> std::io::Result<Response<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// The `code` of a problem+json answer.
pub fn problem_code(response: &Response<Bytes>) -> String {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "not a problem: {} {}",
        response.status(),
        String::from_utf8_lossy(response.body())
    );
    let v: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    v["code"].as_str().unwrap().to_string()
}

pub fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body())
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(response.body())))
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

pub fn write_private(dir: &Path, name: &str, text: &str) {
    patgate::keys::write_private(&dir.join(name), text.as_bytes()).unwrap();
}

/// A request signed and then changed, for tamper tests.
pub fn signed(client: &SignedClient, out: &Outgoing) -> Request<Full<Bytes>> {
    client.sign(out).unwrap()
}

/// Runs the `patgate` binary with `args` (no stdin, no `PATGATE_CONFIG` from the
/// environment) and waits for it.
pub fn patgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(args)
        .env_remove("PATGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The same signed request again, byte for byte (a replay).
pub fn replay_of(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut again = Request::new(request.body().clone());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.headers_mut() = request.headers().clone();
    again
}

/// Replaces the first `from` with `to` in a config file (which must contain `from`).
pub fn edit_config(config_path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config_path).unwrap();
    assert!(text.contains(from), "the config has no `{from}`");
    std::fs::write(config_path, text.replacen(from, to, 1)).unwrap();
}

/// The metadata [`Gateway::store_pat`] stores: host login `test`, scope `repo`, no expiry.
pub fn pat_meta() -> patgate::vault::PatMeta {
    patgate::vault::PatMeta {
        host_login: "test".into(),
        scopes: vec!["repo".into()],
        validated_at: 0,
        created_at: 0,
        updated_at: 0,
        last_used_at: None,
        refused: None,
        expires_at: None,
    }
}

/// Runs `future` while `clock` moves on by `step` every 10 ms of real time (see
/// [`Gateway::while_time_moves`]).
pub async fn while_time_moves<T>(
    clock: &ManualClock,
    step: Duration,
    future: impl Future<Output = T>,
) -> T {
    while_time_moves_once(clock, step, || true, future).await
}

/// [`while_time_moves`], with the clock standing still until `ready` holds (the host has
/// the request, say): what patgate waits for must have begun before its timeout runs out.
pub async fn while_time_moves_once<T>(
    clock: &ManualClock,
    step: Duration,
    ready: impl Fn() -> bool,
    future: impl Future<Output = T>,
) -> T {
    let mut future = std::pin::pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return output,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                if ready() {
                    clock.advance(step);
                }
            }
        }
    }
}

/// A GitHub Enterprise Cloud (data residency) API host name; [`RecordingHost`]'s certificate
/// names it too, and [`connect_proxy`] can route it there.
pub const GHE_COM_API: &str = "api.octocorp.ghe.com";

/// An HTTP CONNECT proxy on 127.0.0.1 that records the request line of each tunnel it opens
/// (`CONNECT host:port HTTP/1.1`) and tunnels to that target, or to `route_to` when set (so
/// a name that does not resolve here, such as [`GHE_COM_API`], reaches a local host).
pub async fn connect_proxy(route_to: Option<SocketAddr>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let targets: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = targets.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                seen.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_string());
                let upstream = match route_to {
                    Some(addr) => tokio::net::TcpStream::connect(addr).await,
                    None => tokio::net::TcpStream::connect(&target).await,
                };
                let Ok(mut upstream) = upstream else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, targets)
}

/// `open()` again, every 20 ms for up to 10 s, while `locked` says what it answered is a
/// lock held. In a test process a store dropped a moment ago may still look locked: a
/// concurrent test spawning a child process gives the child a copy of every open descriptor
/// (the lock files' too, and so their locks) until the child's exec, and sled's background
/// I/O lets go of its own file a moment after the last handle.
pub async fn retry_locked<T, E, F>(
    locked: impl Fn(&E) -> bool,
    mut open: impl FnMut() -> F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open().await {
            Err(e) if locked(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// [`Vault::open`] of a vault this test process (or a gateway it stopped) just let go of
/// (see [`retry_locked`]).
pub async fn open_vault(
    dir: &std::path::Path,
    key: &MasterKey,
) -> Result<Vault, patgate::vault::VaultError> {
    retry_locked(
        |e| matches!(e, patgate::vault::VaultError::Locked { .. }),
        || Vault::open(dir, key),
    )
    .await
}
