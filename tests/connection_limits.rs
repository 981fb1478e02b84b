//! The connection limits (`[connections]`, `api.handshake_timeout_ms`,
//! `api.header_read_timeout_ms`), each shown refusing over a real mTLS socket.
//!
//! Time is a [`ManualClock`]: a test waits until the server has counted what it did (the
//! `/metrics` gauges move after the moment a deadline counts from), then moves the clock to
//! just before the deadline (the connection is still open) and past it (closed or refused).
//!
//! | limit | test |
//! |---|---|
//! | TLS handshake | `a_connection_that_never_completes_tls_is_closed_at_the_handshake_timeout` |
//! | idle before the first request | `a_tls_connection_that_sends_nothing_is_closed_at_the_idle_timeout` |
//! | idle between kept-alive requests | `a_kept_alive_connection_is_closed_at_the_idle_timeout` |
//! | HTTP/2 idle (preface + SETTINGS only) | `an_idle_http2_connection_gets_goaway_at_the_idle_timeout` |
//! | request head, total from its first byte | `a_request_head_sent_slowly_is_cut_off_at_the_header_timeout` |
//! | request body, total from the head | `a_body_sent_slowly_is_answered_408_body_timeout` |
//! | open connections on the listener | `past_max_api_new_connections_are_closed_before_tls` |
//! | open connections per client identity | `past_max_api_per_client_requests_are_answered_503_too_many_connections` |
//! | open connections on the connect and admin listeners | `past_max_connect_and_max_admin_new_connections_are_closed` |

mod common;

use std::time::Duration;

use common::*;
use patgate::client::{sign_request, Outgoing};
use patgate::clock::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A gateway on a manual clock with `[connections]` (and `[api]` timeouts) set by `toml`.
async fn gateway(
    connections: &str,
    header_read_timeout_ms: u64,
) -> (Gateway, RecordingHost, ManualClock) {
    let manual = ManualClock::new();
    let (gw, host) = Gateway::start(Options {
        clock: Some(manual.clone()),
        header_read_timeout_ms,
        extra_toml: format!("[connections]\n{connections}\n"),
        ..Options::default()
    })
    .await;
    (gw, host, manual)
}

async fn h1(gw: &Gateway) -> Tls {
    gw.raw_tls(&gw.path("client.pem"), b"http/1.1")
        .await
        .unwrap()
}

/// The value of one sample of the `/metrics` text (`name{labels}`), 0 when absent. Read
/// from the runtime rather than scraped, so that the admin listener's own connections (and
/// its cap) stay out of the way.
async fn metric(gw: &Gateway, sample: &str) -> f64 {
    let text = gw.runtime.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Waits (a few milliseconds at a time, no clock involved) until `sample` reads `value`.
async fn until_metric(gw: &Gateway, sample: &str, value: f64) {
    for _ in 0..400 {
        if metric(gw, sample).await == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{sample} never became {value}:\n{}",
        gw.runtime.metrics().encode()
    );
}

const OPEN: &str = r#"patgate_connections_open{listener="api"}"#;
const IN_FLIGHT: &str = r#"patgate_requests_in_flight{listener="api"}"#;

/// Moves `manual` to one millisecond before a deadline `left` away, checks that `conn` is
/// still open then (it was not closed early), and moves it onto the deadline.
async fn to_the_deadline(
    manual: &ManualClock,
    conn: &mut (impl AsyncReadExt + Unpin),
    left: Duration,
    what: &str,
) {
    manual.advance(left - Duration::from_millis(1));
    assert!(!is_closed(conn).await, "closed before the {what} timeout");
    manual.advance(Duration::from_millis(1));
}

/// The api listener closed exactly one connection for `reason`.
async fn assert_closed_once(gw: &Gateway, reason: &str) {
    let sample = format!(r#"patgate_connections_closed_total{{listener="api",reason="{reason}"}}"#);
    assert_eq!(metric(gw, &sample).await, 1.0, "{sample}");
}

/// Whether the server has closed `conn`: the read ends (EOF or reset) at once. An open,
/// quiet connection gives nothing within 20 ms.
async fn is_closed(conn: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(20), conn.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "the server sent {n} bytes: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// Reads until the server closes (bounded, so a server that never does fails the test).
async fn read_until_closed(conn: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
            Err(_) => panic!(
                "the server kept the connection open; so far: {}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body.
async fn read_answer(conn: &mut Tls) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |l| l.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

/// `out` signed on the gateway's clock, as raw HTTP/1.1 head lines (no blank line).
fn signed_head(gw: &Gateway, out: &Outgoing) -> String {
    let request = sign_request(&gw.signing_key, out, gw.clock.unix_now()).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: localhost:{}\r\n",
        request.method(),
        request.uri().path_and_query().unwrap(),
        gw.addr.port()
    );
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    if let Some(body) = &out.body {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head
}

fn problem_code_in(answer: &str) -> String {
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    v["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_connection_that_never_completes_tls_is_closed_at_the_handshake_timeout() {
    let (gw, host, manual) = gateway("idle_timeout_ms = 600000", 10_000).await;
    // The api.handshake_timeout_ms default: 10 s. The client connects and sends nothing.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    until_metric(&gw, OPEN, 1.0).await;
    to_the_deadline(
        &manual,
        &mut tcp,
        Duration::from_millis(10_000),
        "handshake",
    )
    .await;
    read_until_closed(&mut tcp).await;
    until_metric(&gw, OPEN, 0.0).await;
    assert_closed_once(&gw, "handshake-timeout").await;
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_tls_connection_that_sends_nothing_is_closed_at_the_idle_timeout() {
    let (gw, host, manual) = gateway("idle_timeout_ms = 5000", 10_000).await;
    let mut conn = h1(&gw).await;
    // The idle time counts from the accept, which the gauge follows.
    until_metric(&gw, OPEN, 1.0).await;
    to_the_deadline(&manual, &mut conn, Duration::from_millis(5_000), "idle").await;
    assert_eq!(read_until_closed(&mut conn).await, "");
    assert_closed_once(&gw, "idle-timeout").await;
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let (gw, host, manual) = gateway("idle_timeout_ms = 5000", 10_000).await;
    let mut conn = h1(&gw).await;
    // Half the idle time passes before the first request: the idle time restarts after it.
    until_metric(&gw, OPEN, 1.0).await;
    manual.advance(Duration::from_millis(2_500));
    let head = signed_head(&gw, &gw.get("/git/ghe/api/v3/user"));
    conn.write_all(format!("{head}\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(host.requests().len(), 1);
    // Idle from the end of the answer, which the in-flight gauge follows.
    until_metric(&gw, IN_FLIGHT, 0.0).await;
    to_the_deadline(&manual, &mut conn, Duration::from_millis(5_000), "idle").await;
    assert_eq!(read_until_closed(&mut conn).await, "");
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_at_the_idle_timeout() {
    let (gw, host, manual) = gateway("idle_timeout_ms = 5000", 10_000).await;
    let tls = gw.raw_tls(&gw.path("client.pem"), b"h2").await.unwrap();
    // The preface and SETTINGS, then nothing: no stream is ever opened.
    let (_send, connection) = h2::client::handshake(tls).await.unwrap();
    let mut connection = tokio::spawn(connection);
    until_metric(&gw, OPEN, 1.0).await;
    manual.advance(Duration::from_millis(4_999));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut connection)
            .await
            .is_err(),
        "closed before the idle timeout"
    );
    manual.advance(Duration::from_millis(1));
    // A graceful GOAWAY (NO_ERROR), which the h2 client takes as a clean end. The clock is
    // not moved on from here, so the cut that follows a graceful close after `head_timeout`
    // cannot be what ends it. The gateway serves on threads of its own: the client may
    // still be writing (its close_notify) when the server, done, closes the socket, and
    // then sees a broken pipe; any other error (a GOAWAY with an error code, a reset
    // before it) fails the test.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle HTTP/2 connection was kept open")
        .unwrap();
    if let Err(err) = &ended {
        let broken_pipe = err
            .get_io()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        assert!(broken_pipe && err.reason().is_none(), "{ended:?}");
    }
    assert_closed_once(&gw, "idle-timeout").await;
    until_metric(&gw, OPEN, 0.0).await;
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_cut_off_at_the_header_timeout() {
    // The idle timeout is long: only the head deadline can close the connection.
    let (gw, host, manual) = gateway("idle_timeout_ms = 600000", 2_000).await;
    let mut conn = h1(&gw).await;
    conn.write_all(b"GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    // The head's first byte starts its deadline when the server reads it: let it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    manual.advance(Duration::from_millis(1_000));
    conn.write_all(b"alhost\r\nX-Drip: 1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A byte that arrives does not restart the deadline: 2 s from the first one.
    to_the_deadline(&manual, &mut conn, Duration::from_millis(1_000), "header").await;
    assert_eq!(read_until_closed(&mut conn).await, "");
    assert_closed_once(&gw, "header-timeout").await;
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_body_sent_slowly_is_answered_408_body_timeout() {
    let (gw, host, manual) = gateway("body_read_timeout_ms = 30000", 10_000).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let out = gw.create_branch(Some(ACCOUNT_A));
    let body = out.body.clone().unwrap();
    let mut conn = h1(&gw).await;
    // A correctly signed POST whose body stops after 10 bytes.
    conn.write_all(format!("{}\r\n", signed_head(&gw, &out)).as_bytes())
        .await
        .unwrap();
    conn.write_all(&body[..10]).await.unwrap();
    until_metric(&gw, IN_FLIGHT, 1.0).await;
    manual.advance(Duration::from_millis(29_999));
    conn.write_all(&body[10..11]).await.unwrap();
    assert!(
        !is_closed(&mut conn).await,
        "answered before the body timeout"
    );
    manual.advance(Duration::from_millis(1));
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(problem_code_in(&answer), "body-timeout");
    assert!(host.requests().is_empty(), "the host got a request");
    gw.stop().await;
}

#[tokio::test]
async fn past_max_api_new_connections_are_closed_before_tls() {
    let (gw, _host, _manual) = gateway("max_api = 2\nmax_api_per_client = 2", 10_000).await;
    let first = h1(&gw).await;
    let _second = h1(&gw).await;
    until_metric(&gw, OPEN, 2.0).await;
    // The third is accepted by the kernel and closed by patgate before any TLS.
    let third = gw.raw_tls(&gw.path("client.pem"), b"http/1.1").await;
    assert!(third.is_err(), "a third connection was served");
    assert_eq!(
        metric(
            &gw,
            r#"patgate_connections_refused_total{listener="api",reason="total"}"#
        )
        .await,
        1.0
    );
    assert_eq!(metric(&gw, OPEN).await, 2.0);
    // Once one closes, the next is served.
    drop(first);
    until_metric(&gw, OPEN, 1.0).await;
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn past_max_api_per_client_requests_are_answered_503_too_many_connections() {
    let (gw, host, _manual) = gateway("max_api = 10\nmax_api_per_client = 2", 10_000).await;
    let _first = h1(&gw).await;
    let _second = h1(&gw).await;
    until_metric(&gw, OPEN, 2.0).await;
    let mut third = h1(&gw).await;
    let head = signed_head(&gw, &gw.get("/git/ghe/api/v3/user"));
    third
        .write_all(format!("{head}\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
    assert_eq!(problem_code_in(&answer), "too-many-connections");
    assert_eq!(
        metric(
            &gw,
            r#"patgate_connections_refused_total{listener="api",reason="per-client"}"#
        )
        .await,
        1.0
    );
    assert!(host.requests().is_empty(), "the host got a request");
    // Another client identity is not held back by this one's cap.
    let other = gw
        .ca
        .issue_client(
            "other jira app",
            &[patgate::devpki::ClientName::Dns("other.test")],
        )
        .unwrap();
    let client = gw.client_with_certificate("other", &other);
    let response = client.send(&gw.get("/git/ghe/api/v3/user")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn past_max_connect_and_max_admin_new_connections_are_closed() {
    let manual = ManualClock::new();
    let (gw, _host) = Gateway::start(Options {
        clock: Some(manual),
        connect_ttl_seconds: Some(600),
        extra_toml: "[connections]\nmax_connect = 1\nmax_admin = 1\n".into(),
        ..Options::default()
    })
    .await;
    let connect = gw.runtime.config().connect.as_ref().unwrap().listen;
    for (listener, addr) in [("connect", connect), ("admin", gw.admin)] {
        let open = format!(r#"patgate_connections_open{{listener="{listener}"}}"#);
        let _held = tokio::net::TcpStream::connect(addr).await.unwrap();
        until_metric(&gw, &open, 1.0).await;
        let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_until_closed(&mut refused).await, "", "{listener}");
        let sample =
            format!(r#"patgate_connections_refused_total{{listener="{listener}",reason="total"}}"#);
        assert_eq!(metric(&gw, &sample).await, 1.0, "{listener}");
        assert_eq!(metric(&gw, &open).await, 1.0, "{listener}");
    }
    gw.stop().await;
}
