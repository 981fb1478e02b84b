//! GitHub App installation tokens as integration credentials: `patgate integration
//! set-secret` asks the host before it stores, and an installation token (403 on `GET
//! /user`) is confirmed on `GET /installation/repositories`.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use patgate::devpki::DevCa;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const INSTALLATION_TOKEN: &str = "ghs_InstallationTokenDoNotLeak0123456789";
/// Refused everywhere (a revoked token, say).
const REVOKED_TOKEN: &str = "ghs_RevokedTokenDoNotLeak01234567890123";

/// A GHES that knows the harness's integration token as a user and one app installation
/// token; records (path, token) of each request.
async fn github_host(ca: &DevCa) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let issued = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&issued)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &record)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}"), seen)
}

fn answer(req: &Request<Incoming>, record: &Mutex<Vec<(String, String)>>) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let path = req.uri().path().to_string();
    record.lock().unwrap().push((path.clone(), token.clone()));
    let (status, body) = match (path.as_str(), token.as_str()) {
        ("/api/v3/user", INTEGRATION_TOKEN) => (200, r#"{"login":"integration-bot"}"#),
        ("/api/v3/user", INSTALLATION_TOKEN) => (
            403,
            r#"{"message":"Resource not accessible by integration","documentation_url":"https://docs.github.com/rest/users/users#get-the-authenticated-user","status":"403"}"#,
        ),
        ("/api/v3/installation/repositories", INSTALLATION_TOKEN) => (
            200,
            r#"{"total_count":2,"repository_selection":"selected","repositories":[{"id":1,"full_name":"acme/api"},{"id":2,"full_name":"acme/web"}]}"#,
        ),
        ("/api/v3/user", REVOKED_TOKEN) => (403, r#"{"message":"Forbidden"}"#),
        (_, INTEGRATION_TOKEN | INSTALLATION_TOKEN)
            if path != "/api/v3/installation/repositories" =>
        {
            (200, r#"{"ok":true}"#)
        }
        _ => (401, r#"{"message":"Bad credentials"}"#),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn set_secret(config: &str, token: &str, extra: &[&str]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["integration", "set-secret", "ghe", "--config", config])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
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

/// The token the host sees on a read through patgate: the one in the vault.
async fn stored_token(setup: &Setup, seen: &Mutex<Vec<(String, String)>>) -> String {
    let gw = setup.start().await;
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/repos/acme/api"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;
    seen.lock().unwrap().last().unwrap().1.clone()
}

#[tokio::test]
async fn installation_token_is_accepted_and_a_refused_token_is_not_stored() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let unused = RecordingHost::start(&ca, HostMode::Normal).await;
    let (base_url, seen) = github_host(&ca).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(
        dir,
        ca,
        &unused,
        &Options {
            base_url: Some(base_url),
            ..Options::default()
        },
    )
    .await;
    let config = setup.config_path.to_str().unwrap().to_string();
    let cli = |token: &'static str, extra: &'static [&'static str]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || set_secret(&config, token, extra))
    };

    // Refused on /user and on /installation/repositories: not stored.
    let out = cli(REVOKED_TOKEN, &[]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("not stored"), "{}", output(&out));
    assert!(!output(&out).contains(REVOKED_TOKEN));
    let asked: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(asked, ["/api/v3/user", "/api/v3/installation/repositories"]);
    assert_eq!(stored_token(&setup, &seen).await, INTEGRATION_TOKEN);

    // An installation token: 403 on /user, 200 on /installation/repositories.
    let out = cli(INSTALLATION_TOKEN, &[]).await.unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains("installation (2 repositories)"),
        "{}",
        output(&out)
    );
    assert_eq!(stored_token(&setup, &seen).await, INSTALLATION_TOKEN);

    // A user's token is still confirmed on /user alone.
    seen.lock().unwrap().clear();
    let out = cli(INTEGRATION_TOKEN, &[]).await.unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert!(output(&out).contains("integration-bot"), "{}", output(&out));
    assert_eq!(seen.lock().unwrap().len(), 1);

    // --no-validate stores without asking the host.
    seen.lock().unwrap().clear();
    let out = cli(REVOKED_TOKEN, &["--no-validate"]).await.unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert!(seen.lock().unwrap().is_empty());
    assert!(
        output(&out).contains("without validating"),
        "{}",
        output(&out)
    );
}
