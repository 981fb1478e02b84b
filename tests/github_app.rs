//! A GitHub App as the integration account: patgate signs the App's JWT, buys installation
//! tokens from `POST /app/installations/{id}/access_tokens`, sends them as the integration's
//! `Bearer` token, renews them before they expire (one renewal however many requests wait)
//! and once after the host refuses one (401), and answers 503 `unavailable` naming the
//! integration when no token can be had.
//!
//! The host here is a GHES stand-in that checks each JWT with the App's public key (the `rsa`
//! crate, not patgate's code): RS256, `iss` = the App id, `iat` in the past, `exp` ahead and
//! at most ten minutes after `iat`. It issues tokens that live [`TOKEN_LIFETIME`] seconds on
//! the test's manual clock, and records every request with its `Authorization`.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use patgate::clock::{Clock, ManualClock};
use patgate::devpki::DevCa;
use patgate::vault::Credential;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::LineEnding;
use rsa::signature::Verifier as _;
use rsa::RsaPrivateKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;
/// How long the host's installation tokens live (GitHub's: an hour).
const TOKEN_LIFETIME: u64 = 20 * 60;
/// patgate renews this long before a token expires.
const RENEW_BEFORE: u64 = 5 * 60;

fn app_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())
}

fn other_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())
}

/// The App's private key as GitHub hands it out (PKCS#1 PEM).
fn pem(key: &RsaPrivateKey) -> String {
    key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string()
}

/// A line from the middle of the PEM's body: if it shows anywhere, the key leaked.
fn key_fragment(pem: &str) -> String {
    pem.lines().nth(5).unwrap().to_string()
}

fn app_credential() -> Credential {
    Credential::GithubApp {
        app_id: APP_ID,
        installation_id: INSTALLATION_ID,
        private_key: pem(app_key()).into(),
    }
}

/// One request the host got.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    authorization: String,
}

/// The App host's state.
#[derive(Debug)]
struct AppHost {
    clock: Clock,
    /// The API's root: `/api/v3` for GitHub Enterprise Server, empty for api.github.com.
    prefix: &'static str,
    seen: Mutex<Vec<Seen>>,
    /// Installation tokens it issued, in order.
    issued: Mutex<Vec<String>>,
    /// Tokens it accepts (issued and not revoked).
    valid: Mutex<HashSet<String>>,
    /// While set, `POST …/access_tokens` answers this status instead of a token.
    refuse_mint: Mutex<Option<StatusCode>>,
    /// Mints wait for a permit while `hold_mints` is set.
    hold_mints: Mutex<bool>,
    /// While set, the installation grants contents read only (no write).
    read_only: Mutex<bool>,
    mint_gate: tokio::sync::Semaphore,
    mint_arrived: tokio::sync::Semaphore,
}

impl AppHost {
    fn mints(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with("/access_tokens"))
            .count()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    fn revoke(&self, token: &str) {
        self.valid.lock().unwrap().remove(token);
    }

    /// Whether `jwt` is a JWT of the App, valid now: signature, `iss`, `iat`, `exp`.
    fn check_jwt(&self, jwt: &str) -> Result<(), &'static str> {
        let (signed, sig) = jwt.rsplit_once('.').ok_or("not a JWS")?;
        let (header, claims) = signed.split_once('.').ok_or("not a JWS")?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(|_| "header")?)
                .map_err(|_| "header")?;
        if header["alg"] != "RS256" {
            return Err("alg");
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "signature")?;
        let sig = rsa::pkcs1v15::Signature::try_from(&sig[..]).map_err(|_| "signature")?;
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(app_key().to_public_key())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| "signature")?;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).map_err(|_| "claims")?)
                .map_err(|_| "claims")?;
        let now = self.clock.unix_now();
        let (iat, exp) = (
            claims["iat"].as_u64().ok_or("iat")?,
            claims["exp"].as_u64().ok_or("exp")?,
        );
        // A string, as JWT wants (RFC 7519: StringOrURI).
        if claims["iss"].as_str() != Some(APP_ID.to_string().as_str()) {
            return Err("iss");
        }
        // GitHub: iat a little in the past (clock drift), exp at most 10 minutes ahead.
        // patgate backdates iat by 60 s: a token whose iat is not at least 30 s old is refused here.
        if iat + 30 > now || now - iat > 120 || exp <= now || exp - iat > 600 || exp > now + 600 {
            return Err("iat/exp");
        }
        Ok(())
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let _ = req.into_body().collect().await;
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
        });
        let bearer = authorization.strip_prefix("Bearer ").unwrap_or("");
        let installation = format!("{}/app/installations/{INSTALLATION_ID}", self.prefix);
        let tokens = format!("{installation}/access_tokens");
        if path.starts_with(&format!("{}/app/", self.prefix)) {
            if let Err(why) = self.check_jwt(bearer) {
                return respond(
                    StatusCode::UNAUTHORIZED,
                    &format!(r#"{{"message":"A JSON web token could not be decoded ({why})"}}"#),
                );
            }
            if method == "GET" && path == installation {
                let contents = if *self.read_only.lock().unwrap() {
                    "read"
                } else {
                    "write"
                };
                return respond(
                    StatusCode::OK,
                    &serde_json::json!({
                        "id": INSTALLATION_ID,
                        "app_id": APP_ID,
                        "app_slug": "jira-patgate",
                        "account": {"login": "acme", "type": "Organization"},
                        "permissions": {"contents": contents, "metadata": "read", "pull_requests": "write"},
                        "repository_selection": "selected"
                    })
                    .to_string(),
                );
            }
            if method == "POST" && path == tokens {
                self.mint_arrived.add_permits(1);
                if *self.hold_mints.lock().unwrap() {
                    self.mint_gate.acquire().await.unwrap().forget();
                }
                if let Some(status) = *self.refuse_mint.lock().unwrap() {
                    return respond(status, r#"{"message":"Not Found"}"#);
                }
                let n = self.issued.lock().unwrap().len() + 1;
                let token = format!("ghs_Minted{n}InstallationTokenDoNotLeak0123456");
                self.issued.lock().unwrap().push(token.clone());
                self.valid.lock().unwrap().insert(token.clone());
                let expires = self.clock.now() + Duration::from_secs(TOKEN_LIFETIME);
                return respond(
                    StatusCode::CREATED,
                    &serde_json::json!({
                        "token": token,
                        "expires_at": humantime::format_rfc3339_seconds(expires).to_string(),
                        "permissions": {"contents": "write", "metadata": "read", "pull_requests": "write"},
                        "repository_selection": "selected"
                    })
                    .to_string(),
                );
            }
            return respond(StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#);
        }
        if !self.valid.lock().unwrap().contains(bearer) {
            return respond(StatusCode::UNAUTHORIZED, r#"{"message":"Bad credentials"}"#);
        }
        let status = match method.as_str() {
            "POST" => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        respond(status, r#"{"acted_as":"jira-patgate[bot]"}"#)
    }
}

fn respond(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// Starts the App host; answers it and its base URL.
async fn app_host(ca: &DevCa, clock: Clock) -> (Arc<AppHost>, String) {
    app_host_at(ca, clock, "/api/v3").await
}

/// [`app_host`] with its API at `prefix`; its certificate names api.github.com too.
async fn app_host_at(ca: &DevCa, clock: Clock, prefix: &'static str) -> (Arc<AppHost>, String) {
    let issued = ca
        .issue_server(&["localhost", "127.0.0.1", "api.github.com"])
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&issued)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = Arc::new(AppHost {
        clock,
        prefix,
        seen: Mutex::default(),
        issued: Mutex::default(),
        valid: Mutex::default(),
        refuse_mint: Mutex::default(),
        hold_mints: Mutex::default(),
        read_only: Mutex::default(),
        mint_gate: tokio::sync::Semaphore::new(0),
        mint_arrived: tokio::sync::Semaphore::new(0),
    });
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
    (host, format!("https://localhost:{port}"))
}

/// A gateway whose integration `ghe` (GHES) has the App as its account, on a manual clock.
async fn app_gateway(secret: Credential, require_user_pat: bool) -> (Gateway, Arc<AppHost>, Setup) {
    let clock = ManualClock::new();
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let unused = RecordingHost::start(&ca, HostMode::Normal).await;
    let (host, base_url) = app_host(&ca, clock.clock()).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(
        dir,
        ca,
        &unused,
        &Options {
            base_url: Some(base_url),
            integration_secret: Some(secret),
            require_user_pat,
            clock: Some(clock),
            ..Options::default()
        },
    )
    .await;
    (setup.start().await, host, setup)
}

fn read(gw: &Gateway) -> patgate::client::Outgoing {
    gw.get("/git/ghe/api/v3/repos/acme/api/branches")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The host's requests that were not to the App endpoints: (method, path, Authorization).
fn forwarded(host: &AppHost) -> Vec<(String, String, String)> {
    host.seen()
        .into_iter()
        .filter(|s| !s.path.contains("/app/installations/"))
        .map(|s| (s.method, s.path, s.authorization))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installation_tokens_are_minted_once_and_renewed_before_expiry_under_load() {
    let logs = logs::global("trace");
    let (gw, host, _setup) = app_gateway(app_credential(), true).await;
    let clock = gw.manual_clock.clone().unwrap();
    let client = gw.client();

    let response = client.send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["patgate-credential"], "integration");
    let seen = host.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path,
        format!("/api/v3/app/installations/{INSTALLATION_ID}/access_tokens")
    );
    // The JWT (checked by the host against the App's public key) is not the token.
    assert!(seen[0].authorization.starts_with("Bearer ey"), "{seen:?}");
    let first = host.issued()[0].clone();
    assert_eq!(
        forwarded(&host),
        [(
            "GET".to_string(),
            "/api/v3/repos/acme/api/branches".to_string(),
            bearer(&first)
        )]
    );

    // Five more reads: the token in memory.
    for _ in 0..5 {
        assert_eq!(
            client.send(&read(&gw)).await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(host.mints(), 1);

    // Just before the renewal point nothing changes; past it, 24 concurrent requests make
    // exactly one renewal while the mint is held, and all go with the new token.
    clock.advance(Duration::from_secs(TOKEN_LIFETIME - RENEW_BEFORE - 2));
    // The gateway's connection timers run on the same clock: the jump ends the idle
    // connection (a GOAWAY that can cross the next request), so the reads go on new ones.
    let client = gw.client();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(host.mints(), 1);
    clock.advance(Duration::from_secs(3));
    let client = gw.client();
    *host.hold_mints.lock().unwrap() = true;
    let before = forwarded(&host).len();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let client = client.clone();
        let out = read(&gw);
        requests.spawn(async move { client.send(&out).await.unwrap().status() });
    }
    // The first mint left one permit; the renewal brings the second.
    host.mint_arrived.acquire_many(2).await.unwrap().forget();
    // Let the other requests reach patgate and queue behind the mint (not an assertion).
    tokio::time::sleep(Duration::from_millis(80)).await;
    // Every held mint goes on (were there more than one, the count below says so).
    *host.hold_mints.lock().unwrap() = false;
    host.mint_gate.add_permits(64);
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(host.mints(), 2, "{:?}", host.seen());
    let second = host.issued()[1].clone();
    let after = forwarded(&host);
    assert_eq!(after.len(), before + 24);
    assert!(
        after[before..]
            .iter()
            .all(|(_, _, auth)| *auth == bearer(&second)),
        "{after:?}"
    );

    // The metrics count the mints; the tokens and the key are nowhere in logs or metrics.
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains(r#"patgate_github_app_token_mints_total{integration="ghe",result="ok"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"patgate_github_app_token_unavailable{integration="ghe"} 0"#),
        "{metrics}"
    );
    let ready = gw.admin_request(Method::GET, "/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let text = logs.text();
    assert!(
        text.contains("got a GitHub App installation token"),
        "no mint logged"
    );
    for secret in [
        first.as_str(),
        second.as_str(),
        &key_fragment(&pem(app_key())),
    ] {
        assert!(!text.contains(secret), "a secret is in the logs");
        assert!(!metrics.contains(secret), "a secret is in the metrics");
    }
    for jwt in host
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/api/v3/app/"))
    {
        let jwt = jwt.authorization.strip_prefix("Bearer ").unwrap();
        assert!(!text.contains(jwt), "a JWT is in the logs");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_a_failed_renewal_is_a_clear_503() {
    let logs = logs::global("trace");
    let (gw, host, _setup) = app_gateway(app_credential(), false).await;
    let client = gw.client();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    let first = host.issued()[0].clone();

    // The token is revoked on the host: the action gets 401, patgate renews once and sends
    // the action again with the new token.
    host.revoke(&first);
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["patgate-credential"], "integration");
    let second = host.issued()[1].clone();
    let refs = "/api/v3/repos/acme/api/git/refs".to_string();
    let post = |token: &str| ("POST".to_string(), refs.clone(), bearer(token));
    assert_eq!(forwarded(&host)[1..], [post(&first), post(&second)]);
    assert_eq!(host.mints(), 2);

    // Revoked again, and the host now refuses to mint: one renewal, then 503 naming the
    // integration, with no further attempt.
    host.revoke(&second);
    *host.refuse_mint.lock().unwrap() = Some(StatusCode::NOT_FOUND);
    let seen_before = host.seen().len();
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem_code(&response), "unavailable");
    let detail = json(&response)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("integration `ghe`")
            && detail.contains(&format!("GitHub App {APP_ID}"))
            && detail.contains(&format!("installation {INSTALLATION_ID}"))
            && detail.contains("404"),
        "{detail}"
    );
    let seen: Vec<(String, String)> = host.seen()[seen_before..]
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".to_string(), refs.clone()),
            (
                "POST".to_string(),
                format!("/api/v3/app/installations/{INSTALLATION_ID}/access_tokens")
            ),
        ]
    );
    assert_eq!(host.seen()[seen_before].authorization, bearer(&second));
    // The log says so, naming the integration, the App and the host's answer; no token and
    // no key in any line.
    let warned = logs
        .lines(&[
            "could not get a GitHub App installation token",
            "integration=ghe",
        ])
        .into_iter()
        .filter(|l| l.contains(&format!("installation {INSTALLATION_ID}")) && l.contains("404"))
        .count();
    assert!(warned >= 1, "{}", logs.text());
    let text = logs.text();
    for secret in [first.as_str(), second.as_str()] {
        assert!(!text.contains(secret), "a token is in the logs");
    }
    assert!(
        !text.contains(&key_fragment(&pem(app_key()))),
        "the key is in the logs"
    );

    // Within the retry interval a request answers the same without reaching the host.
    let seen_before = host.seen().len();
    let response = client.send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem_code(&response), "unavailable");
    assert_eq!(host.seen().len(), seen_before);
    let ready = gw.admin_request(Method::GET, "/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(ready.body()).to_string();
    assert!(text.contains("integration `ghe`"), "{text}");
    assert_eq!(host.seen().len(), seen_before);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"patgate_github_app_token_unavailable{integration="ghe"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"patgate_github_app_token_mints_total{integration="ghe",result="error"} 1"#
        ),
        "{metrics}"
    );

    // Once the host mints again and the interval is over, requests and /ready recover.
    *host.refuse_mint.lock().unwrap() = None;
    gw.manual_clock
        .as_ref()
        .unwrap()
        .advance(Duration::from_secs(11));
    let ready = gw.admin_request(Method::GET, "/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let third = host.issued()[2].clone();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(forwarded(&host).last().unwrap().2, bearer(&third));
    gw.stop().await;
}

#[tokio::test]
async fn a_key_that_is_not_the_apps_answers_503_and_never_shows() {
    let wrong = Credential::GithubApp {
        app_id: APP_ID,
        installation_id: INSTALLATION_ID,
        private_key: pem(other_key()).into(),
    };
    let (gw, host, setup) = app_gateway(wrong, false).await;
    let response = gw.client().send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem_code(&response), "unavailable");
    let body = String::from_utf8_lossy(response.body()).to_string();
    assert!(body.contains("401"), "{body}");
    // The host got the JWT exchange only; nothing was forwarded.
    assert_eq!(host.mints(), 1);
    assert!(forwarded(&host).is_empty());
    assert!(!body.contains(&key_fragment(&pem(other_key()))));
    gw.stop().await;

    // The vault file holds the key sealed: no line of the PEM in clear, nor its base64.
    let fragment = key_fragment(&pem(other_key()));
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem(other_key()));
    let mut files = Vec::new();
    collect_files(&setup.dir.path().join("state"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [fragment.as_bytes(), &b64.as_bytes()[100..160]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the key in clear",
                file.display()
            );
        }
    }
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn set_secret(config: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["integration", "set-secret", "ghe", "--config", config])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `patgate integration set-secret --type github-app`: the App is asked before it is stored
/// (a key of another App is refused), the key comes from a file or stdin and never shows.
#[tokio::test]
async fn set_secret_stores_a_github_app_after_asking_the_host() {
    // The CLI runs on the system clock: so does this host.
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let unused = RecordingHost::start(&ca, HostMode::Normal).await;
    let (host, base_url) = app_host(&ca, Clock::system()).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(
        dir.clone(),
        ca,
        &unused,
        &Options {
            base_url: Some(base_url),
            ..Options::default()
        },
    )
    .await;
    let config = setup.config_path.to_str().unwrap().to_string();
    let ids = [
        "--type",
        "github-app",
        "--app-id",
        "4242",
        "--installation-id",
        "77",
    ];
    let cli = |extra: Vec<String>, stdin: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            set_secret(&config, &extra, &stdin)
        })
    };
    let args =
        |more: &[&str]| -> Vec<String> { ids.iter().chain(more).map(|s| s.to_string()).collect() };

    // Another App's key: GitHub refuses the JWT; nothing is stored.
    let out = cli(args(&[]), pem(other_key())).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("not stored"), "{}", output(&out));
    assert!(output(&out).contains("401"), "{}", output(&out));
    assert!(!output(&out).contains(&key_fragment(&pem(other_key()))));

    // Not a key at all: refused before the host is asked.
    let asked = host.seen().len();
    // Without the App id or the installation id: refused, nothing asked.
    for (ids, missing) in [
        (
            ["--type", "github-app", "--installation-id", "77"],
            "--app-id",
        ),
        (
            ["--type", "github-app", "--app-id", "4242"],
            "--installation-id",
        ),
    ] {
        let out = {
            let config = config.clone();
            let key = pem(app_key());
            tokio::task::spawn_blocking(move || set_secret(&config, &ids, &key))
                .await
                .unwrap()
        };
        assert_eq!(out.status.code(), Some(1), "{}", output(&out));
        assert!(
            output(&out).contains(&format!("{missing} is required with --type github-app")),
            "{}",
            output(&out)
        );
        assert_eq!(host.seen().len(), asked);
    }
    let out = cli(args(&[]), "-----BEGIN NOTHING-----\n".into())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("private key"), "{}", output(&out));
    assert_eq!(host.seen().len(), asked);

    // An installation that grants no write on contents: refused, naming what it needs and
    // what it has, and not stored.
    *host.read_only.lock().unwrap() = true;
    let out = cli(args(&[]), pem(app_key())).await.unwrap();
    *host.read_only.lock().unwrap() = false;
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("not stored"), "{}", output(&out));
    assert!(
        output(&out).contains("Contents: read and write") && output(&out).contains("contents:read"),
        "{}",
        output(&out)
    );
    assert!(!output(&out).contains(&key_fragment(&pem(app_key()))));
    let asked = host.seen().len();

    // The App's key from a file: the installation is named, a token was minted.
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, pem(app_key())).unwrap();
    let out = cli(
        args(&["--private-key-file", key_file.to_str().unwrap()]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains("GitHub App `jira-patgate` (id 4242), installation 77 on acme"),
        "{}",
        output(&out)
    );
    assert!(!output(&out).contains(&key_fragment(&pem(app_key()))));
    let paths: Vec<String> = host.seen()[asked..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v3/app/installations/77",
            "/api/v3/app/installations/77/access_tokens"
        ]
    );
    assert!(host.seen()[asked..]
        .iter()
        .all(|s| s.authorization.starts_with("Bearer ey")));

    // `config check` names the App and mints a token with it.
    let check = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
                .args(["config", "check", &config])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(check.status.success(), "{}", output(&check));
    assert!(
        output(&check).contains(
            "integration `ghe`: GitHub App `jira-patgate` (id 4242), installation 77 on acme: an installation token was issued"
        ),
        "{}",
        output(&check)
    );

    // The stored App serves: a read goes with a freshly minted installation token.
    let gw = setup.start().await;
    let response = gw.client().send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let last = host.issued().last().unwrap().clone();
    assert_eq!(forwarded(&host).last().unwrap().2, bearer(&last));

    // Through the running service's admin socket, the key on standard input.
    let out = cli(args(&["--private-key-file", "-"]), pem(app_key()))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains("via the running service")
            && output(&out).contains("installation 77 on acme"),
        "{}",
        output(&out)
    );
    assert!(!output(&out).contains(&key_fragment(&pem(app_key()))));
    // The same way with another App's key: the host refuses its JWT, nothing is stored, and
    // the service goes on with the App it had.
    let out = cli(args(&["--private-key-file", "-"]), pem(other_key()))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(
        output(&out).contains("not stored") && output(&out).contains("401"),
        "{}",
        output(&out)
    );
    assert!(!output(&out).contains(&key_fragment(&pem(other_key()))));
    assert_eq!(
        gw.client().send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    gw.stop().await;

    // While the service is stopped, a wrong key in the vault makes `config check` fail.
    let key = patgate::vault::MasterKey::load_file(&dir.path().join("master-key")).unwrap();
    let vault = open_vault(&dir.path().join("state"), &key).await.unwrap();
    vault
        .put_integration_secret(
            "ghe",
            &Credential::GithubApp {
                app_id: APP_ID,
                installation_id: INSTALLATION_ID,
                private_key: pem(other_key()).into(),
            },
        )
        .await
        .unwrap();
    drop(vault);
    let check = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut tries = 0;
            loop {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
                    .args(["config", "check", &config])
                    .output()
                    .unwrap();
                // sled lets go of the vault's lock a moment after the drop.
                tries += 1;
                if tries == 100 || !String::from_utf8_lossy(&out.stderr).contains("is in use") {
                    break out;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    };
    assert_eq!(check.status.code(), Some(1), "{}", output(&check));
    assert!(
        output(&check).contains("integrations[0]") && output(&check).contains("401"),
        "{}",
        output(&check)
    );
}

/// The installation token in memory serves while the vault holds the App it was minted from
/// (a new record of the same App changes nothing); a secret stored since, of another kind,
/// goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_stored_since_the_token_was_minted_is_the_one_used() {
    const REPLACED: &str = "ghp_ReplacedIntegrationTokenDoNotLeak0123";
    let (gw, host, _setup) = app_gateway(app_credential(), true).await;
    let client = gw.client();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(host.mints(), 1);
    let first = host.issued()[0].clone();

    // The admin stores the same App again: the token minted for it still serves.
    gw.runtime
        .vault()
        .put_integration_secret("ghe", &app_credential())
        .await
        .unwrap();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(host.mints(), 1);
    assert_eq!(forwarded(&host).last().unwrap().2, bearer(&first));

    // Another installation of the App: the token of installation 77 is not used for it. (This
    // host knows only 77, so the mint for 78 is refused and the app gets 503.)
    gw.runtime
        .vault()
        .put_integration_secret(
            "ghe",
            &Credential::GithubApp {
                app_id: APP_ID,
                installation_id: 78,
                private_key: pem(app_key()).into(),
            },
        )
        .await
        .unwrap();
    let forwarded_before = forwarded(&host).len();
    let response = client.send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(forwarded(&host).len(), forwarded_before);
    assert_eq!(
        host.seen().last().unwrap().path,
        "/api/v3/app/installations/78/access_tokens"
    );

    // The admin replaces the App with a token: that token goes with the next request.
    host.valid.lock().unwrap().insert(REPLACED.to_string());
    gw.runtime
        .vault()
        .put_integration_secret("ghe", &Credential::Token(REPLACED.to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(forwarded(&host).last().unwrap().2, bearer(REPLACED));
    // The mint for 77 and the refused one for 78: none for the token.
    assert_eq!(host.mints(), 2);
    gw.stop().await;
}

/// On github.com the App's calls and the forwarded request go to api.github.com's root (no
/// `/api/v3`), here through the integration's proxy to the stand-in.
#[tokio::test]
async fn a_github_com_app_mints_and_forwards_at_the_api_root() {
    let clock = ManualClock::new();
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let unused = RecordingHost::start(&ca, HostMode::Normal).await;
    let (host, base_url) = app_host_at(&ca, clock.clock(), "").await;
    let port: u16 = base_url.rsplit(':').next().unwrap().parse().unwrap();
    let (proxy, tunnels) = connect_proxy(Some(([127, 0, 0, 1], port).into())).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &unused,
        &Options {
            base_url: Some("https://api.github.com".into()),
            integration_toml: format!("proxy = \"http://{proxy}\""),
            integration_secret: Some(app_credential()),
            clock: Some(clock),
            ..Options::default()
        },
    )
    .await;
    let gw = setup.start().await;
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/repos/acme/api/branches"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = host.seen();
    let mint = seen
        .iter()
        .find(|s| s.method == "POST")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(
        mint.path,
        format!("/app/installations/{INSTALLATION_ID}/access_tokens")
    );
    assert!(mint.authorization.starts_with("Bearer ey"), "{seen:?}");
    let first = host.issued()[0].clone();
    assert_eq!(
        forwarded(&host),
        [(
            "GET".to_string(),
            "/repos/acme/api/branches".to_string(),
            bearer(&first)
        )]
    );
    let tunnels = tunnels.lock().unwrap().clone();
    assert!(!tunnels.is_empty());
    assert!(
        tunnels
            .iter()
            .all(|line| line == "CONNECT api.github.com:443 HTTP/1.1"),
        "{tunnels:?}"
    );
    gw.stop().await;
}

/// A GitHub App is for `github` integrations only: on another kind it is refused before the
/// host is asked or the vault opened.
#[tokio::test]
async fn a_github_app_on_a_gitlab_integration_is_refused() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options {
            kind: "gitlab",
            ..Options::default()
        },
    )
    .await;
    let config = setup.config_path.to_str().unwrap().to_string();
    let asked = host.requests().len();
    let out = tokio::task::spawn_blocking(move || {
        set_secret(
            &config,
            &[
                "--type",
                "github-app",
                "--app-id",
                "4242",
                "--installation-id",
                "77",
            ],
            &pem(app_key()),
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(
        output(&out).contains(
            "integration `ghe` (gitlab): a github-app credential cannot be used with this host"
        ),
        "{}",
        output(&out)
    );
    assert!(!output(&out).contains(&key_fragment(&pem(app_key()))));
    assert_eq!(host.requests().len(), asked);
}

/// `patgate run` asks for the first installation token at start, before any request: when
/// GitHub refuses, the log says so at once, naming the integration and the installation.
#[tokio::test]
async fn a_mint_that_fails_at_start_is_logged_naming_the_integration() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let unused = RecordingHost::start(&ca, HostMode::Normal).await;
    let (host, base_url) = app_host(&ca, Clock::system()).await;
    *host.refuse_mint.lock().unwrap() = Some(StatusCode::NOT_FOUND);
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &unused,
        &Options {
            base_url: Some(base_url),
            integration_secret: Some(app_credential()),
            ..Options::default()
        },
    )
    .await;
    let mut running = process::Running::start(&setup).await;
    let warned = running
        .wait_for_log("could not get a GitHub App installation token")
        .await;
    assert!(warned.contains("WARN"), "{warned}");
    assert!(warned.contains("integration=ghe"), "{warned}");
    assert!(
        warned.contains(&format!("installation {INSTALLATION_ID}")) && warned.contains("404"),
        "{warned}"
    );
    assert!(!warned.contains(&key_fragment(&pem(app_key()))));
    // Asked once, for the token; nothing else but the start's reachability probe (no
    // credential).
    assert_eq!(host.mints(), 1);
    let others = forwarded(&host);
    assert!(
        others
            .iter()
            .all(|(method, _, auth)| method == "HEAD" && auth.is_empty()),
        "{others:?}"
    );
    running.kill().await;
}

/// Many requests refused with the same revoked token make one renewal between them: each
/// goes again once, with the one new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refusals_of_one_token_share_one_renewal() {
    let (gw, host, _setup) = app_gateway(app_credential(), false).await;
    let client = gw.client();
    assert_eq!(
        client.send(&read(&gw)).await.unwrap().status(),
        StatusCode::OK
    );
    let first = host.issued()[0].clone();
    host.revoke(&first);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let client = client.clone();
        let out = read(&gw);
        requests.spawn(async move { client.send(&out).await.unwrap().status() });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(host.mints(), 2, "{:?}", host.seen());
    let second = host.issued()[1].clone();
    let sent = forwarded(&host);
    // The first read, then each of the 12 once with the revoked token (all of them began
    // with it) or not at all, and once with the new one.
    let with_new = sent
        .iter()
        .filter(|(_, _, a)| *a == bearer(&second))
        .count();
    let with_old = sent[1..]
        .iter()
        .filter(|(_, _, a)| *a == bearer(&first))
        .count();
    assert_eq!(with_new, 12, "{sent:?}");
    assert!(with_old <= 12, "{sent:?}");
    assert_eq!(sent.len(), 1 + with_old + with_new, "{sent:?}");
    gw.stop().await;
}
