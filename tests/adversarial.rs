//! Hostile requests written byte for byte on a real mTLS connection: each gets its documented
//! answer and the git host receives nothing.
//!
//! Coverage of issue 7 item 1 (test file :: test name):
//!
//! | case | answer | test |
//! |---|---|---|
//! | Content-Length + Transfer-Encoding, duplicate Content-Length, obs-fold, bare CR | 400 / 401 / closed | adversarial :: `request_smuggling_is_refused` |
//! | absolute-form target | 400 `bad-request` | adversarial :: `absolute_form_and_mismatched_hosts_are_refused` |
//! | authority-form target (`CONNECT host:443`, `GET host:port`) | 400 `bad-request` | adversarial :: `authority_form_targets_are_refused` |
//! | Host differing from the signed `@target-uri`, two Host headers | 401 `signature-invalid`, 400 | adversarial :: `absolute_form_and_mismatched_hosts_are_refused`; signatures :: `a_changed_target_gets_signature_invalid` |
//! | traversal `..`, `%2e%2e`, `%2E%2E`, `.%2e`, `..%2F`, `%2F..`, `%5C..` out of `/git/{id}/` or into another integration (a second, live one) | 400 `bad-request` / 404 `unknown-integration` | adversarial :: `encoded_traversal_never_leaves_the_integration`, `signed_traversal_cannot_reach_another_integration`; proxy :: `dot_segments_never_reach_the_host` |
//! | CRLF or NUL in a header value, CRLF adding a second `Patgate-Account` | 400; 401 `signature-invalid` | adversarial :: `crlf_and_nul_in_header_values_are_refused` |
//! | oversized headers, HTTP/1.1 | 431 (empty body: answered by hyper before patgate sees a request, see docs/protocol.md `headers-too-large`) | adversarial :: `oversized_headers_are_refused` |
//! | oversized HTTP/2 header list | 431 or stream reset (by h2) | adversarial :: `http2_oversized_header_lists_are_refused` |
//! | oversized body | 413 `body-too-large` | proxy :: `bodies_over_the_limit_are_refused` |
//! | slow headers | closed or 408 after `header_read_timeout_ms` | adversarial :: `slow_headers_are_cut_off` |
//! | HTTP/2 rapid reset (5000 HEADERS + RST_STREAM) | server stays up, answers the next request | adversarial :: `http2_rapid_reset_leaves_the_server_healthy` |
//! | replayed signature | 401 `signature-replayed` | signatures :: `replays_get_signature_replayed` |
//! | expired and future-dated signature | 401 `signature-expired` | signatures :: `old_and_future_signatures_get_signature_expired`, `signatures_made_before_patgate_started_are_refused` |
//! | a signature by another app's key | 401 `unknown-key` (own keyid), `signature-invalid` (a trusted keyid) | signatures :: `a_key_patgate_does_not_trust_gets_unknown_key` |
//! | `Patgate-Account` or body swapped after signing | 401 `signature-invalid` | signatures :: `a_changed_account_gets_signature_invalid`, `a_changed_body_gets_signature_invalid` |
//! | A's PAT never used for B | B gets 403 `user-pat-required` or B's own PAT | proxy :: `a_pat_stored_for_one_user_is_never_used_for_another` |
//! | look-alike accounts: case (distinct user), inner space (400), Unicode / tab (401), leading/trailing whitespace (not part of the value: A itself) | never A's PAT for another | adversarial :: `look_alike_accounts_never_get_another_users_pat` |

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use patgate::client::sign_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_connection(gw: &Gateway) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    gw.raw_tls(&gw.path("client.pem"), b"http/1.1")
        .await
        .unwrap()
}

/// Sends `head` + `body` exactly as given and returns the status code of the first answer
/// (0 when the server closed without answering).
async fn exchange(gw: &Gateway, raw: &[u8]) -> (u16, String) {
    let mut conn = raw_connection(gw).await;
    // The server may answer (431, 413) and close before all of `raw` is written: the write
    // then fails with a broken pipe or a reset, and the answer is still there to read.
    if let Err(err) = conn.write_all(raw).await {
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
    }
    // Read until the first answer is complete or the server closes: it may keep the
    // connection open. (The timeout only bounds a failing run.)
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if first_answer_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Whether `buf` holds a whole HTTP/1.1 answer: its head and `Content-Length` bytes of body
/// (every answer patgate and hyper write here has one).
fn first_answer_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    length.is_some_and(|length| buf.len() >= end + 4 + length)
}

/// The signature headers of a valid signed GET for `path`, as raw header lines.
fn signed_get_headers(gw: &Gateway, path: &str, account: Option<&str>) -> String {
    let mut out = gw.get(path);
    out.account = account.map(str::to_string);
    let request = sign_request(&gw.signing_key, &out, patgate::clock::unix_now()).unwrap();
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
        clock: Some(patgate::clock::ManualClock::new()),
        ..Options::default()
    })
    .await;
    let mut conn = raw_connection(&gw).await;
    conn.write_all(b"GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    // header_read_timeout_ms is 300 here: the server must close (or answer 408) once the
    // clock has moved by that much, not wait for ever. The 10 s bound only catches a server that never gives up.
    let mut buf = Vec::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        gw.while_time_moves(Duration::from_millis(300), conn.read_to_end(&mut buf)),
    )
    .await;
    assert!(outcome.is_ok(), "the server kept a half-sent request open");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

/// Status and body of an answer read by [`exchange`].
fn problem_in(text: &str) -> Option<String> {
    let body = &text[text.find("\r\n\r\n")? + 4..];
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    v["code"].as_str().map(str::to_string)
}

#[tokio::test]
async fn authority_form_targets_are_refused() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let authority = format!("localhost:{}", gw.addr.port());
    let sig = signed_get_headers(&gw, "/git/ghe/api/v3/user", None);
    // CONNECT would make patgate a tunnel to any host: it is refused before anything else.
    for target in ["github.example:443", &authority] {
        let raw = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{sig}\r\n");
        let (status, text) = exchange(&gw, raw.as_bytes()).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(problem_in(&text).as_deref(), Some("bad-request"), "{text}");
    }
    // An authority-form target with any other method is not HTTP at all (RFC 9112 §3.2.3).
    let raw = format!("GET {authority} HTTP/1.1\r\nHost: {authority}\r\n{sig}\r\n");
    let (status, text) = exchange(&gw, raw.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn crlf_and_nul_in_header_values_are_refused() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let authority = format!("localhost:{}", gw.addr.port());
    let sig = signed_get_headers(&gw, "/git/ghe/api/v3/user", None);
    let signed_for_a = signed_get_headers(&gw, "/git/ghe/api/v3/user", Some(ACCOUNT_A));
    let get = format!("GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: {authority}\r\n");
    let cases = [
        // A NUL inside a value.
        format!("{get}{sig}X-Evil: a\0b\r\n\r\n"),
        // A CRLF inside a value ends the line; what follows is not a header line.
        format!("{get}{sig}X-Evil: a\r\nnot a header\r\n\r\n"),
    ];
    for raw in cases {
        let (status, text) = exchange(&gw, raw.as_bytes()).await;
        assert_eq!(status, 400, "{raw:?}: {text}");
    }
    // A CRLF used to add a second account to a request signed for A: the covered field is
    // then `A, B` (RFC 9421 §2.1), which is not what was signed.
    let raw = format!("{get}{signed_for_a}Patgate-Account: {ACCOUNT_B}\r\n\r\n");
    let (status, text) = exchange(&gw, raw.as_bytes()).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(
        problem_in(&text).as_deref(),
        Some("signature-invalid"),
        "{text}"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

/// A gateway with two integrations, `ghe` and `other`, each in front of its own host.
async fn two_integrations() -> (Gateway, RecordingHost, RecordingHost) {
    let ca = Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let other = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let opts = Options {
        extra_toml: format!(
            "[[integrations]]\nid = \"other\"\nkind = \"github\"\nbase_url = \"{}\"\nroots = \"none\"\nextra_ca = \"ca.pem\"\n",
            other.base_url()
        ),
        ..Options::default()
    };
    let setup = Setup::with_ca(dir.clone(), ca, &host, &opts).await;
    {
        let key = patgate::vault::MasterKey::load_file(&dir.path().join("master-key")).unwrap();
        let vault = open_vault(&dir.path().join("state"), &key).await.unwrap();
        vault
            .put_integration_secret(
                "other",
                &patgate::vault::Credential::Token(INTEGRATION_TOKEN.to_string().into()),
            )
            .await
            .unwrap();
    }
    (setup.start().await, host, other)
}

#[tokio::test]
async fn encoded_traversal_never_leaves_the_integration() {
    let (gw, host, other) = two_integrations().await;
    let client = gw.client();
    // The second integration answers: the traversals below would reach it if they worked.
    let response = client
        .send(&gw.get("/git/other/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    other.requests.lock().unwrap().clear();
    // Signed correctly, so only the path rules stand in the way.
    for path in [
        "/git/ghe/../other/api/v3/user",
        "/git/ghe/%2e%2e/other/api/v3/user",
        "/git/ghe/%2E%2E/other/api/v3/user",
        "/git/ghe/%2e%2E/other/api/v3/user",
        "/git/ghe/.%2e/other/api/v3/user",
        "/git/ghe/..%2Fother/api/v3/user",
        "/git/ghe/..%2fother/api/v3/user",
        "/git/ghe/%2E%2E%2Fother/api/v3/user",
        "/git/ghe/api/v3/%2F..%2F..%2F..%2Fother",
        "/git/ghe/api/v3/%2f%2E%2E%2f%2E%2E",
        "/git/ghe/api/v3/..%5C..%5Cother",
        "/git/ghe/api/v3/repos/acme/api/../../../../other/api/v3/user",
        "/git/ghe/api/v3/./user",
        "/git/ghe/api/v3/%2E/user",
    ] {
        let response = client.send(&gw.get(path)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(problem_code(&response), "bad-request", "{path}");
    }
    // Smuggling the other id into the integration segment names no integration at all.
    for path in [
        "/git/ghe%2F..%2Fother/api/v3/user",
        "/git/other%2F/api/v3/user",
        "/git/%6Fther/api/v3/user",
        "/git/OTHER/api/v3/user",
    ] {
        let response = client.send(&gw.get(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(problem_code(&response), "unknown-integration", "{path}");
    }
    assert!(host.requests().is_empty(), "{:?}", host.requests());
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    gw.stop().await;
}

/// A create-branch request signed for A, written by hand with `account` (bytes as given) in
/// its `Patgate-Account` header.
fn raw_create_branch(gw: &Gateway, account: &str) -> Vec<u8> {
    let request = sign_request(
        &gw.signing_key,
        &gw.create_branch(Some(ACCOUNT_A)),
        patgate::clock::unix_now(),
    )
    .unwrap();
    let mut head = format!(
        "POST /git/ghe/api/v3/repos/acme/api/git/refs HTTP/1.1\r\nHost: localhost:{}\r\n",
        gw.addr.port()
    );
    for (name, value) in request.headers() {
        let value = value.to_str().unwrap();
        if name == "patgate-account" {
            head.push_str(&format!("{name}: {account}\r\n"));
        } else {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n{BRANCH_BODY}",
        BRANCH_BODY.len()
    ));
    head.into_bytes()
}

/// An HTTP/2 connection with the app's client certificate, driven with the `h2` crate.
async fn h2_connection(
    gw: &Gateway,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
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
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::Builder::new()
        // No local cap: the server's own limits are what is under test.
        .max_header_list_size(u32::MAX)
        .handshake(tls)
        .await
        .unwrap();
    (send, tokio::spawn(connection))
}

fn h2_get(gw: &Gateway, path: &str) -> http::Request<()> {
    http::Request::builder().uri(gw.url(path)).body(()).unwrap()
}

#[tokio::test]
async fn http2_rapid_reset_leaves_the_server_healthy() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let (mut send, connection) = h2_connection(&gw).await;
    // HEADERS then RST_STREAM at once, thousands of times (CVE-2023-44487). The server may
    // end this connection (GOAWAY) once it has seen too many; it must not fall over.
    let mut opened = 0;
    for _ in 0..5_000 {
        let Ok(ready) = send.clone().ready().await else {
            break;
        };
        send = ready;
        match send.send_request(h2_get(&gw, "/git/ghe/api/v3/user"), true) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => break,
        }
    }
    assert!(opened > 0);
    drop(send);
    let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
    // A fresh, signed request is answered as usual.
    let client = gw.client_with(gw.signing_key.clone(), true);
    let response = client.send(&gw.get("/git/ghe/api/v3/user")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    // The reset requests were unsigned: none of them reached the host, only the last one.
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn http2_oversized_header_lists_are_refused() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let (send, connection) = h2_connection(&gw).await;
    let mut send = send.ready().await.unwrap();
    // Over api.max_header_bytes (default 16 KiB), in many small headers.
    let mut request = h2_get(&gw, "/git/ghe/api/v3/user");
    for i in 0..200 {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
            http::HeaderValue::from_str(&"a".repeat(200)).unwrap(),
        );
    }
    let (response, _) = send.send_request(request, true).unwrap();
    // h2 answers 431 (RFC 9113 §10.5.1) or resets the stream; it never serves it.
    match response.await {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(e) => assert!(e.is_reset() || e.is_go_away(), "{e}"),
    }
    drop(send);
    connection.abort();
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn look_alike_accounts_never_get_another_users_pat() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    // Another case of A's id is a valid, different id: that user has no PAT.
    let upper = ACCOUNT_A.to_uppercase();
    let response = client.send(&gw.create_branch(Some(&upper))).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(problem_code(&response), "user-pat-required");
    // Inner whitespace is visible ASCII, so the app could sign it: the account rules refuse it.
    for look_alike in [
        format!("{} {}", &ACCOUNT_A[..4], &ACCOUNT_A[4..]),
        format!("{ACCOUNT_A} {ACCOUNT_A}"),
    ] {
        let request = client.sign(&gw.create_branch(Some(&look_alike))).unwrap();
        let response = client.send_signed(request).await.unwrap();
        assert_eq!(response.status(), 400, "{look_alike:?}");
        assert_eq!(problem_code(&response), "bad-request", "{look_alike:?}");
    }
    // Unicode look-alikes (Cyrillic а, fullwidth 5, a zero-width space) and a tab are not
    // visible ASCII: no conforming signer covers them, and patgate's verifier refuses a covered
    // field that is not (signature-invalid), whatever the signature (here, one made for A).
    for look_alike in [
        ACCOUNT_A.replacen('a', "\u{430}", 1),
        ACCOUNT_A.replacen('5', "\u{ff15}", 1),
        format!("{ACCOUNT_A}\u{200b}"),
        format!("{}\t{}", &ACCOUNT_A[..4], &ACCOUNT_A[4..]),
    ] {
        let raw = raw_create_branch(&gw, &look_alike);
        let (status, text) = exchange(&gw, &raw).await;
        assert_eq!(status, 401, "{look_alike:?}: {text}");
        assert_eq!(
            problem_in(&text).as_deref(),
            Some("signature-invalid"),
            "{text}"
        );
    }
    // Leading and trailing whitespace is not part of an HTTP field value (RFC 9110 §5.5):
    // ` A ` is A, signed as A, and gets A's own PAT, nobody else's.
    let head = raw_create_branch(&gw, &format!("  \t{ACCOUNT_A} \t"));
    let (status, text) = exchange(&gw, &head).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    host.requests.lock().unwrap().clear();
    // The PAT API refuses the look-alikes in its path the same way.
    for look_alike in [
        "5b10ac8d82e05b22cc7d4ef5%20",
        "%D0%B0b10ac8d82e05b22cc7d4ef5",
    ] {
        let response = client
            .send(&gw.get(&format!("/v1/integrations/ghe/users/{look_alike}/pat")))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{look_alike}");
        assert_eq!(problem_code(&response), "bad-request", "{look_alike}");
    }
    let uppercase_status = client
        .send(&gw.get(&format!("/v1/integrations/ghe/users/{upper}/pat")))
        .await
        .unwrap();
    assert_eq!(json(&uppercase_status)["configured"], false);
    for request in host.requests() {
        assert_ne!(
            request.authorization(),
            Some(&*format!("Bearer {PAT_A}")),
            "A's PAT was sent for a look-alike: {request:?}"
        );
    }
    gw.stop().await;
}
