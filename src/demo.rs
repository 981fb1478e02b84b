//! A DEMO git host for `patgate dev`, reachable only through that command.
//!
//! It answers like GitHub Enterprise Server for the calls the quickstart shows (a read, create
//! branch, delete branch, create pull request, and `GET /user` for token validation; and a
//! page in place of GitHub's new-token form, where the connect page links), knows
//! two accounts (the integration's bot and one user), and says in every answer and on the
//! console which credential it received. It is not a GitHub emulator and does nothing else.

/// One line of the demo host's log on stdout. A reader that went away (`patgate dev |
/// head`) must not panic the host's tasks: the line is dropped, the host keeps serving.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Who the demo host knows, by token.
#[derive(Debug)]
pub(crate) struct DemoAccounts {
    /// token → (login, whether it is the integration's token)
    by_token: HashMap<String, (String, bool)>,
}

impl DemoAccounts {
    #[allow(
        clippy::disallowed_methods,
        reason = "the demo host must know the demo tokens it accepts"
    )]
    pub(crate) fn new(
        integration_token: &SecretString,
        users: &[(&str, &SecretString)],
    ) -> DemoAccounts {
        let mut by_token = HashMap::new();
        by_token.insert(
            integration_token.expose_secret().to_string(),
            ("patgate-integration-bot".to_string(), true),
        );
        for (login, token) in users {
            by_token.insert(
                token.expose_secret().to_string(),
                (login.to_string(), false),
            );
        }
        DemoAccounts { by_token }
    }

    fn who(&self, req: &Request<Incoming>) -> Option<&(String, bool)> {
        let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
        let token = header.strip_prefix("Bearer ")?;
        self.by_token.get(token)
    }
}

/// Starts the demo host with TLS on `127.0.0.1:0`; returns its address.
pub(crate) async fn start(
    tls: rustls::ServerConfig,
    accounts: DemoAccounts,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let accounts = Arc::new(accounts);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| {
                    let accounts = accounts.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&accounts, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(accounts: &DemoAccounts, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Where the connect page sends users to make a token (a browser, with no token).
    if method == Method::GET && path == "/settings/tokens/new" {
        say!("demo host: {method} {path}: the token page (the demo makes no tokens)");
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>DEMO host</title></head><body>\
<h1>DEMO host: no new tokens here</h1><p>On GitHub this page makes a personal access token. \
The demo host knows one user token only: paste the one in dev/demo-alice.pat (or the --dir you gave).</p></body></html>",
        )));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return r;
    }
    let Some((login, is_integration)) = accounts.who(&req).cloned() else {
        say!("demo host: {method} {path}: refused, unknown token (401)");
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"message": "Bad credentials"}),
        );
    };
    let credential = if is_integration {
        "the integration token".to_string()
    } else {
        format!("{login}'s personal access token")
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let segs: Vec<&str> = path
        .trim_start_matches("/api/v3")
        .trim_start_matches('/')
        .split('/')
        .collect();
    let seen = serde_json::json!({"acted_as": login, "credential": credential});
    let (status, payload) = match (&method, segs.as_slice()) {
        (&Method::GET, ["user"]) => (
            StatusCode::OK,
            serde_json::json!({"login": login, "type": "User"}),
        ),
        (&Method::GET, ["repos", owner, repo, ..]) => (
            StatusCode::OK,
            serde_json::json!({"full_name": format!("{owner}/{repo}"), "default_branch": "main", "demo_host": seen}),
        ),
        (&Method::POST, ["repos", _, _, "git", "refs"]) => (
            StatusCode::CREATED,
            serde_json::json!({"ref": body["ref"], "object": {"type": "commit", "sha": body["sha"]}, "demo_host": seen}),
        ),
        (&Method::DELETE, ["repos", _, _, "git", "refs", "heads", ..]) => {
            (StatusCode::NO_CONTENT, serde_json::Value::Null)
        }
        (&Method::POST, ["repos", _, _, "pulls"]) => (
            StatusCode::CREATED,
            serde_json::json!({"number": 1, "title": body["title"], "user": {"login": login}, "demo_host": seen}),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "Not Found (the demo host knows only the quickstart's calls)"}),
        ),
    };
    say!(
        "demo host: {method} {path} -> {} as {login}, with {credential}",
        status.as_u16()
    );
    if status == StatusCode::NO_CONTENT {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = status;
        return r;
    }
    let mut response = json(status, payload);
    if path.ends_with("/user") {
        response.headers_mut().insert(
            "x-oauth-scopes",
            HeaderValue::from_static("repo, read:user"),
        );
    }
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}
