//! Hostile requests written byte for byte on a real mTLS connection: each gets its documented
//! answer and the git host receives nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use patgate::client::sign_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS connection that presents the app's client certificate and speaks HTTP/1.1 by hand.
async fn raw_connection(gw: &Gateway) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::ServerName;
    let roots = patgate::tls::root_store(&gw.path("ca.pem")).unwrap();
    let chain = patgate::tls::load_certs(&gw.path("client.pem")).unwrap();
    let key = patgate::tls::load_private_key(&gw.path("client.pem")).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `head` + `body` exactly as given and returns the status code of the first answer
/// (0 when the server closed without answering).
async fn exchange(gw: &Gateway, raw: &[u8]) -> (u16, String) {
    let mut conn = raw_connection(gw).await;
    conn.write_all(raw).await.unwrap();
    // Read until the server closes or stays quiet: it may keep the connection open.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), conn.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The signature headers of a valid signed GET for `path`, as raw header lines.
fn signed_get_headers(gw: &Gateway, path: &str, account: Option<&str>) -> String {
    let mut out = gw.get(path);
    out.account = account.map(str::to_string);
    let request = sign_request(&gw.signing_key, &out, patgate::server::unix_now()).unwrap();
    request
        .headers()
        .iter()
        .map(|(k, v)| format!("{}: {}\r\n", k, v.to_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn request_smuggling_is_refused() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let authority = format!("localhost:{}", gw.addr.port());
    let sig = signed_get_headers(&gw, "/git/ghe/api/v3/user", None);
    let cases = [
        // Content-Length and Transfer-Encoding together: the HTTP layer reads it as chunked
        // (RFC 9112 §6.3); the chunked body is not covered by the signature and the request
        // smuggled behind it is unsigned, so both are refused.
        format!("GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n{sig}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
        // Two different Content-Lengths.
        format!("POST /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n{sig}Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc"),
        // obs-fold (a header continued on the next line).
        format!("GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n{sig}X-Folded: a\r\n b\r\n\r\n"),
        // A bare LF inside a header value is not a line end.
        format!("GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n{sig}X-Evil: a\rInjected: b\r\n\r\n"),
    ];
    for raw in cases {
        let (status, text) = exchange(&gw, raw.as_bytes()).await;
        assert!(
            matches!(status, 0 | 400 | 401),
            "{raw:?} got {status}: {text}"
        );
        assert!(!text.contains(" 200 "), "{text}");
    }
    assert!(
        host.requests().is_empty(),
        "a smuggled request reached the host"
    );
    gw.stop().await;
}

#[tokio::test]
async fn absolute_form_and_mismatched_hosts_are_refused() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let authority = format!("localhost:{}", gw.addr.port());
    let sig = signed_get_headers(&gw, "/git/ghe/api/v3/user", None);
    // Absolute-form target, even one that matches the signed URI.
    let raw = format!(
        "GET https://{authority}/git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n{sig}\r\n"
    );
    let (status, text) = exchange(&gw, raw.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"code\":\"bad-request\""), "{text}");
    // A Host other than the one signed: the signature no longer matches.
    let raw = format!(
        "GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: evil.example:{}\r\n{sig}\r\n",
        gw.addr.port()
    );
    let (status, text) = exchange(&gw, raw.as_bytes()).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("\"code\":\"signature-invalid\""), "{text}");
    // Two Host headers.
    let raw = format!(
        "GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\nHost: {authority}\r\n{sig}\r\n"
    );
    let (status, _) = exchange(&gw, raw.as_bytes()).await;
    assert_eq!(status, 400);
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn signed_traversal_cannot_reach_another_integration() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    // Signed correctly, so only the path rules stand in the way.
    for path in [
        "/git/ghe/../other/api/v3/user",
        "/git/ghe/%2e%2e/other/api/v3/user",
        "/git/ghe/api/v3/%2F../../x",
        "/git/ghe/api/v3/.%2E/.%2e/x",
        "/git/ghe/api/v3/%5c..%5cx",
    ] {
        let response = client.send(&gw.get(path)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(problem_code(&response), "bad-request", "{path}");
    }
    // An integration id that is not one byte for byte is another (unknown) integration.
    for path in [
        "/git/GHE/api/v3/user",
        "/git/ghe%2Fx/api/v3/user",
        "/git/%67he/api/v3/user",
    ] {
        let response = client.send(&gw.get(path)).await.unwrap();
        assert_eq!(problem_code(&response), "unknown-integration", "{path}");
    }
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let authority = format!("localhost:{}", gw.addr.port());
    let sig = signed_get_headers(&gw, "/git/ghe/api/v3/user", None);
    let big = "a".repeat(64 * 1024);
    let raw = format!(
        "GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n{sig}X-Big: {big}\r\n\r\n"
    );
    let (status, text) = exchange(&gw, raw.as_bytes()).await;
    assert_eq!(status, 431, "{}", &text[..text.len().min(200)]);
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (gw, host) = Gateway::start(Options {
        header_read_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let mut conn = raw_connection(&gw).await;
    conn.write_all(b"GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    // header_read_timeout_ms is 300 here: the server must close (or answer 408) by then, not
    // wait for ever. The 10 s bound only catches a server that never gives up.
    let mut buf = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
    assert!(outcome.is_ok(), "the server kept a half-sent request open");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}
