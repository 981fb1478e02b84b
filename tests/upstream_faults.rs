//! The git host failing in the ways a host or a network fails: connections refused, reset
//! and cut, TLS that must not be trusted, silence before the response head and inside the
//! body, a huge body, HTTP/2 GOAWAY. For each: what the app sees (a problem document before
//! the response head, a cut stream after it), never a hang, never a secret in an answer or a
//! log line, and the count in `/metrics`.
//!
//! Not repeated here: nothing listening, a certificate from an unknown CA and a host that
//! never answers are in tests/tls_and_upstream.rs; their counts in tests/admin_metrics.rs.
//!
//! The faulty hosts are small scripts on raw sockets (tokio, tokio-rustls, the `h2` crate),
//! with certificates from the gateway's own rcgen CA. Every test is bounded by [`BOUND`], far
//! above the request timeout it configures: running into it is a hang, and fails.
//!
//! Its own test binary: it installs the process-wide log subscriber to search the logs.

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use patgate::client::Outgoing;
use patgate::devpki::{DevCa, Issued};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Every test ends well within this, or it hung.
const BOUND: Duration = Duration::from_secs(60);
/// The integration's `request_timeout_ms` here: the host's head must come within it, and
/// then each piece of its body.
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// The same, as a step of the gateway's manual clock: moving it by this much makes every
/// wait on the host that started before run out.
const TIMEOUT: Duration = Duration::from_millis(REQUEST_TIMEOUT_MS);
/// A path whose answer can be large (a repository tarball).
const TARBALL: &str = "/git/ghe/api/v3/repos/acme/api/tarball/main";

async fn bounded<T>(what: &str, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, test)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {BOUND:?}: patgate hung"))
}

// ---- logs --------------------------------------------------------------------------------

/// Everything logged so far by every test of this binary: patgate's own targets at trace
/// level, its dependencies at info.
fn logs() -> String {
    common::logs::global("info,patgate=trace").text()
}

/// The log lines of one request (each test request carries its own `X-Request-Id`).
fn log_lines(request_id: &str) -> Vec<String> {
    logs()
        .lines()
        .filter(|line| line.contains(request_id))
        .map(str::to_string)
        .collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [INTEGRATION_TOKEN, PAT_A, PAT_B] {
        assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
    }
}

// ---- the gateway and the app -------------------------------------------------------------

/// A gateway whose integration points at `listener`: the faulty host is started on it
/// afterwards, with a certificate from the gateway's CA (which patgate trusts for it).
/// Its clock is a manual one: its timeouts run out when a test moves it.
async fn gateway_for(listener: &TcpListener) -> Gateway {
    logs();
    let port = listener.local_addr().unwrap().port();
    let (gw, _unused_host) = Gateway::start(Options {
        base_url: Some(format!("https://localhost:{port}")),
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        clock: Some(patgate::clock::ManualClock::new()),
        ..Options::default()
    })
    .await;
    gw
}

fn request(gw: &Gateway, request_id: &str) -> Outgoing {
    Outgoing {
        headers: vec![("x-request-id".into(), request_id.into())],
        ..gw.get(TARBALL)
    }
}

type AppClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The app's mTLS client, reading answers as streams (the harness's client collects them).
fn app_client(gw: &Gateway, http2: bool) -> AppClient {
    let roots = patgate::tls::root_store(&gw.path("ca.pem")).unwrap();
    let chain = patgate::tls::load_certs(&gw.path("client.pem")).unwrap();
    let key = patgate::tls::load_private_key(&gw.path("client.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut client = Client::builder(TokioExecutor::new());
    client.http2_only(http2);
    if http2 {
        client.build(builder.enable_http2().wrap_connector(http))
    } else {
        client.build(builder.enable_http1().wrap_connector(http))
    }
}

/// Sends the app's signed request and returns the answer's head with its body unread.
async fn open(gw: &Gateway, client: &AppClient, request_id: &str) -> Response<Incoming> {
    let signed = gw.client().sign(&request(gw, request_id)).unwrap();
    client.request(signed).await.unwrap()
}

/// Reads a body to its end: the bytes, and the error it ended with, if any.
async fn drain(body: &mut Incoming) -> (u64, Option<String>) {
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(err) => return (bytes, Some(patgate::client::error_chain(&err))),
        }
    }
    (bytes, None)
}

/// The next data frame of a body.
async fn next_data(body: &mut Incoming) -> Bytes {
    loop {
        let frame = body
            .frame()
            .await
            .expect("the body ended")
            .expect("the body failed");
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return data;
            }
        }
    }
}

/// Asks once, expects a problem document: its code and detail. The answer holds no secret.
async fn problem(gw: &Gateway, request_id: &str) -> (StatusCode, String, String) {
    let response = gw.client().send(&request(gw, request_id)).await.unwrap();
    let body = String::from_utf8_lossy(response.body()).into_owned();
    assert_no_secret("the problem document", &body);
    let code = problem_code(&response);
    let detail = json(&response)["detail"].as_str().unwrap().to_string();
    (response.status(), code, detail)
}

fn assert_counted(metrics: &str, kind: &str, count: u64) {
    let line =
        format!(r#"patgate_upstream_errors_total{{integration="ghe",kind="{kind}"}} {count}"#);
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}` in\n{metrics}"
    );
}

// ---- faulty hosts ------------------------------------------------------------------------

/// Runs `script` on every connection accepted on `listener`, each on its own task.
fn serve<F, Fut>(listener: TcpListener, script: F)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(script(tcp));
            }
        }
    });
}

fn acceptor(issued: &Issued, alpn: &[&[u8]]) -> TlsAcceptor {
    let mut config = server_config(issued);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

/// A valid certificate for the name patgate connects to.
fn localhost(ca: &DevCa) -> Issued {
    ca.issue_server(&["localhost"]).unwrap()
}

/// Reads one HTTP/1.1 request head (patgate's GETs have no body), or what came before EOF.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The request heads an HTTP/1.1 host received.
type Heads = Arc<Mutex<Vec<String>>>;

/// An HTTP/1.1 host with a valid certificate: each connection is handshaken, its request
/// head recorded, then handed to `script`.
fn h1_host<F, Fut>(listener: TcpListener, ca: &DevCa, script: F) -> Heads
where
    F: Fn(TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = acceptor(&localhost(ca), &[b"http/1.1"]);
    let heads = Heads::default();
    let recorded = heads.clone();
    let script = Arc::new(script);
    serve(listener, move |tcp| {
        let (acceptor, recorded, script) = (acceptor.clone(), recorded.clone(), script.clone());
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let head = read_head(&mut tls).await;
            recorded.lock().unwrap().push(head);
            script(tls).await;
        }
    });
    heads
}

/// The host saw the integration token: the secret was in play, so its absence from the
/// answers and logs means something.
fn assert_token_was_sent(heads: &Heads) {
    let heads = heads.lock().unwrap();
    assert!(
        heads
            .iter()
            .any(|h| h.contains(&format!("Bearer {INTEGRATION_TOKEN}"))),
        "{heads:?}"
    );
}

/// Resets the connection (TCP RST) instead of closing it.
fn reset(tls: TlsStream<TcpStream>) {
    let (tcp, _) = tls.into_inner();
    tcp.set_zero_linger().unwrap();
    drop(tcp);
}

// ---- before the response head: a problem document ---------------------------------------

#[tokio::test]
async fn a_connection_broken_before_the_head_gives_502_upstream_unreachable() {
    bounded("broken before the head", async {
        // Each fault on its own host and gateway, so each count is its own.
        for fault in [
            "accept-then-close",
            "accept-then-reset",
            "close-after-request",
            "reset-after-request",
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let gw = gateway_for(&listener).await;
            let heads = match fault {
                "accept-then-close" => {
                    serve(listener, |tcp| async move { drop(tcp) });
                    None
                }
                "accept-then-reset" => {
                    serve(listener, |tcp| async move {
                        tcp.set_zero_linger().unwrap();
                        drop(tcp);
                    });
                    None
                }
                "close-after-request" => Some(h1_host(listener, &gw.ca, |mut tls| async move {
                    let _ = tls.shutdown().await;
                })),
                _ => Some(h1_host(listener, &gw.ca, |tls| async move { reset(tls) })),
            };
            let request_id = format!("fault-{fault}");
            let (status, code, detail) = problem(&gw, &request_id).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_GATEWAY, "upstream-unreachable"),
                "{fault}: {detail}"
            );
            if let Some(heads) = heads {
                assert_token_was_sent(&heads);
            }
            assert_counted(&gw.metrics().await, "upstream-unreachable", 1);
            let lines = log_lines(&request_id);
            assert!(
                lines.iter().any(|l| l.contains("upstream-unreachable")),
                "{fault}: {lines:?}"
            );
            gw.stop().await;
        }
        assert_no_secret("the logs", &logs());
    })
    .await;
}

/// Certificates with the right CA but the wrong validity or name, and a host that answers
/// the TLS handshake in plain HTTP. (A certificate from an unknown CA: tests/tls_and_upstream.rs.)
#[tokio::test]
async fn an_untrustworthy_host_gives_502_upstream_tls_before_any_request() {
    bounded("TLS failures", async {
        for (fault, expected_detail) in [
            ("expired", "expired"),
            ("wrong-name", "not valid for name"),
            ("plain-http", "corrupt message"),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let gw = gateway_for(&listener).await;
            let received = Arc::new(Mutex::new(Vec::<u8>::new()));
            if fault == "plain-http" {
                let received = received.clone();
                serve(listener, move |mut tcp| {
                    let received = received.clone();
                    async move {
                        let mut buf = [0u8; 512];
                        let n = tcp.read(&mut buf).await.unwrap_or(0);
                        received.lock().unwrap().extend_from_slice(&buf[..n]);
                        let _ = tcp
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                });
            } else {
                let issued = if fault == "expired" {
                    expired_localhost(&gw.ca)
                } else {
                    gw.ca.issue_server(&["git.example.com"]).unwrap()
                };
                let acceptor = acceptor(&issued, &[b"http/1.1"]);
                let received = received.clone();
                serve(listener, move |tcp| {
                    let (acceptor, received) = (acceptor.clone(), received.clone());
                    async move {
                        if let Ok(mut tls) = acceptor.accept(tcp).await {
                            let head = read_head(&mut tls).await;
                            received.lock().unwrap().extend_from_slice(head.as_bytes());
                        }
                    }
                });
            }
            let request_id = format!("fault-tls-{fault}");
            let (status, code, detail) = problem(&gw, &request_id).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_GATEWAY, "upstream-tls"),
                "{fault}: {detail}"
            );
            assert!(detail.contains(expected_detail), "{fault}: {detail}");
            // The request (and its credential) never left patgate.
            let received = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
            assert!(!received.contains("GET "), "{fault}: {received}");
            assert_counted(&gw.metrics().await, "upstream-tls", 1);
            gw.stop().await;
        }
        assert_no_secret("the logs", &logs());
    })
    .await;
}

/// A certificate from the right CA, for the right name, that expired in 2021.
fn expired_localhost(ca: &DevCa) -> Issued {
    let key = rcgen::KeyPair::from_pem(ca.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca.cert_pem(), key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&leaf_key, &issuer).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// The host takes the connection and then sends nothing (no TLS handshake), or only part of
/// its response head. (A host that reads the request and never answers:
/// tests/tls_and_upstream.rs.)
#[tokio::test]
async fn a_host_slow_to_send_its_head_gives_504_upstream_timeout() {
    bounded("slow head", async {
        for fault in ["no-tls-handshake", "half-a-head"] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let gw = gateway_for(&listener).await;
            let accepted = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let heads = if fault == "no-tls-handshake" {
                let accepted = accepted.clone();
                serve(listener, move |tcp| {
                    accepted.store(true, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        let _held = tcp;
                        std::future::pending::<()>().await;
                    }
                });
                None
            } else {
                Some(h1_host(listener, &gw.ca, |mut tls| async move {
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-ty").await;
                    let _ = tls.flush().await;
                    std::future::pending::<()>().await;
                }))
            };
            let request_id = format!("fault-slow-head-{fault}");
            // The clock moves once the host has the connection (and the request, when it
            // reads one).
            let (status, code, detail) = while_time_moves_once(
                gw.manual_clock.as_ref().unwrap(),
                TIMEOUT,
                || match &heads {
                    None => accepted.load(std::sync::atomic::Ordering::SeqCst),
                    Some(heads) => !heads.lock().unwrap().is_empty(),
                },
                problem(&gw, &request_id),
            )
            .await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
                "{fault}: {detail}"
            );
            if let Some(heads) = heads {
                assert_token_was_sent(&heads);
            }
            assert_counted(&gw.metrics().await, "upstream-timeout", 1);
            gw.stop().await;
        }
        assert_no_secret("the logs", &logs());
    })
    .await;
}

// ---- after the response head: a cut stream -----------------------------------------------

/// The host sends its head and part of the body, then resets or closes the connection.
/// The app, on HTTP/1.1 and on HTTP/2, gets the head and then an error on the body.
#[tokio::test]
async fn a_response_cut_after_its_head_is_a_cut_stream_for_the_app() {
    bounded("cut mid-response", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = gateway_for(&listener).await;
        // The host cuts when the app has the head and the first bytes, so the fault falls
        // after the head whatever the scheduling.
        let go = Arc::new(Semaphore::new(0));
        let cuts = Arc::new(Mutex::new(Vec::<&'static str>::new()));
        let (host_go, host_cuts) = (go.clone(), cuts.clone());
        let heads = h1_host(listener, &gw.ca, move |mut tls| {
            let (go, cuts) = (host_go.clone(), host_cuts.clone());
            async move {
                let cut = cuts.lock().unwrap().remove(0);
                let head: &[u8] = if cut == "reset" {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-gzip\r\ncontent-length: 100000\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-gzip\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n"
                };
                tls.write_all(head).await.unwrap();
                tls.write_all(&[b'x'; 1000]).await.unwrap();
                tls.flush().await.unwrap();
                go.acquire().await.unwrap().forget();
                if cut == "reset" {
                    reset(tls);
                } else {
                    // A clean TLS close in the middle of the chunked body.
                    let _ = tls.shutdown().await;
                }
            }
        });
        let mut n = 0;
        for http2 in [false, true] {
            for cut in ["reset", "close"] {
                n += 1;
                cuts.lock().unwrap().push(cut);
                let client = app_client(&gw, http2);
                let request_id = format!("fault-cut-{cut}-h{}", if http2 { 2 } else { 1 });
                let mut response = open(&gw, &client, &request_id).await;
                assert_eq!(response.status(), StatusCode::OK, "{request_id}");
                assert_eq!(response.headers()["patgate-credential"], "integration");
                let first = next_data(response.body_mut()).await;
                go.add_permits(1);
                let (rest, error) = drain(response.body_mut()).await;
                let received = first.len() as u64 + rest;
                let error = error.unwrap_or_else(|| {
                    panic!("{request_id}: the body ended cleanly after {received} bytes")
                });
                assert!(received <= 1000, "{request_id}: {received}");
                assert_no_secret("the app's error", &error);
                let lines = log_lines(&request_id);
                assert!(
                    lines
                        .iter()
                        .any(|l| l.contains("WARN") && l.contains("body-cut")),
                    "{request_id}: {lines:?}"
                );
                assert_counted(&gw.metrics().await, "body-cut", n);
            }
        }
        assert_token_was_sent(&heads);
        assert_no_secret("the logs", &logs());
        gw.stop().await;
    })
    .await;
}

/// A body that trickles in, one piece at a time with pauses, reaches the app piece by piece
/// (streamed, not buffered) and whole, though it takes longer in all than the request
/// timeout; a body that stalls for longer than that timeout is cut.
#[tokio::test]
async fn a_slow_body_streams_through_and_a_stalled_one_is_cut() {
    bounded("slow body", async {
        const PIECES: usize = 12;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = gateway_for(&listener).await;
        let seen = Arc::new(Semaphore::new(0));
        let stall = Arc::new(Mutex::new(false));
        let (host_seen, host_stall) = (seen.clone(), stall.clone());
        h1_host(listener, &gw.ca, move |mut tls| {
            let (seen, stall) = (host_seen.clone(), *host_stall.lock().unwrap());
            async move {
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                for piece in 0..PIECES {
                    let text = format!("piece {piece}\n");
                    tls.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes())
                        .await
                        .unwrap();
                    tls.flush().await.unwrap();
                    if stall {
                        // The fault: nothing more, ever, on an open connection.
                        std::future::pending::<()>().await;
                    }
                    // The next piece only once the app has this one (proof that patgate
                    // streams) and the test has moved the clock by a tenth of the request
                    // timeout: a slow host, whose pieces take longer than it in all.
                    seen.acquire().await.unwrap().forget();
                }
                tls.write_all(b"0\r\n\r\n").await.unwrap();
                let _ = tls.shutdown().await;
            }
        });
        let client = app_client(&gw, false);

        let mut response = open(&gw, &client, "fault-trickle").await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut text = String::new();
        for piece in 0..PIECES {
            let data = next_data(response.body_mut()).await;
            assert_eq!(data, format!("piece {piece}\n"), "pieces arrive one by one");
            text.push_str(std::str::from_utf8(&data).unwrap());
            gw.manual_clock.as_ref().unwrap().advance(TIMEOUT / 10);
            seen.add_permits(1);
        }
        let (rest, error) = drain(response.body_mut()).await;
        assert_eq!((rest, error), (0, None), "the trickled body ends cleanly");
        assert_eq!(text.lines().count(), PIECES);

        *stall.lock().unwrap() = true;
        let mut response = open(&gw, &client, "fault-stall").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(next_data(response.body_mut()).await, "piece 0\n");
        let (rest, error) = gw
            .while_time_moves(TIMEOUT, drain(response.body_mut()))
            .await;
        assert_eq!(rest, 0);
        let error = error.expect("a stalled body must be cut, not end cleanly");
        assert_no_secret("the app's error", &error);
        let lines = log_lines("fault-stall");
        assert!(
            lines.iter().any(|l| l.contains("body-timeout")
                && l.contains("sent no more of its response body within 1s")),
            "{lines:?}"
        );
        let metrics = gw.metrics().await;
        assert_counted(&metrics, "body-timeout", 1);
        assert!(!metrics.contains("body-cut"), "{metrics}");
        assert_no_secret("the logs", &logs());
        gw.stop().await;
    })
    .await;
}

/// A PAT being stored is checked with the host; when the host's who-am-I answer stalls
/// after its head, the app gets 504 upstream-timeout (not a hang) and nothing is stored.
#[tokio::test]
async fn a_stalled_who_am_i_answer_gives_504_and_stores_nothing() {
    bounded("stalled who-am-I", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = gateway_for(&listener).await;
        let heads = h1_host(listener, &gw.ca, |mut tls| async move {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-oauth-scopes: repo\r\ncontent-length: 100\r\n\r\n{\"login\":")
                .await;
            let _ = tls.flush().await;
            std::future::pending::<()>().await;
        });
        let client = gw.client();
        let put = Outgoing {
            method: http::Method::PUT,
            url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
            headers: vec![("x-request-id".into(), "fault-whoami-stall".into())],
            body: Some(Bytes::from(format!(r#"{{"token":"{PAT_A}"}}"#))),
            ..Outgoing::default()
        };
        let response = while_time_moves_once(
            gw.manual_clock.as_ref().unwrap(),
            TIMEOUT,
            || !heads.lock().unwrap().is_empty(),
            client.send(&put),
        )
        .await
        .unwrap();
        let body = String::from_utf8_lossy(response.body()).into_owned();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(problem_code(&response), "upstream-timeout");
        assert_no_secret("the problem document", &body);
        assert!(
            heads
                .lock()
                .unwrap()
                .iter()
                .any(|h| h.contains(&format!("Bearer {PAT_A}"))),
            "the PAT was sent to the host for validation"
        );
        assert!(gw.runtime.vault().user_pat("ghe", ACCOUNT_A).await.unwrap().is_none());
        assert_no_secret("the logs", &logs());
        gw.stop().await;
    })
    .await;
}

/// patgate's resident memory, from /proc/self/status (the test, the host and patgate share
/// the process).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 200 MiB from the host reach the app whole, while the process's resident memory grows by
/// far less than that: patgate streams, it does not buffer.
#[tokio::test]
async fn a_huge_response_is_streamed_without_buffering() {
    const TOTAL: u64 = 200 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    const MAX_GROWTH: u64 = 64 * 1024 * 1024;
    bounded("huge response", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = gateway_for(&listener).await;
        h1_host(listener, &gw.ca, |mut tls| async move {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-gzip\r\ncontent-length: {TOTAL}\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            let chunk = Bytes::from(vec![b'z'; CHUNK]);
            let mut sent = 0;
            while sent < TOTAL {
                if tls.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += CHUNK as u64;
            }
            let _ = tls.shutdown().await;
        });
        let client = app_client(&gw, false);
        let mut response = open(&gw, &client, "fault-huge").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-length"], TOTAL.to_string());
        let baseline = rss_bytes();
        let (mut received, mut peak, mut next_sample) = (0u64, baseline, 0u64);
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.expect("the huge body failed");
            received += frame.data_ref().map_or(0, |d| d.len() as u64);
            if received >= next_sample {
                peak = peak.max(rss_bytes());
                next_sample += 4 * 1024 * 1024;
            }
        }
        assert_eq!(received, TOTAL);
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "huge response: {} MiB streamed; RSS {} MiB before, peak {} MiB, growth {} MiB",
            TOTAL >> 20,
            baseline >> 20,
            peak >> 20,
            growth >> 20
        );
        assert!(
            growth < MAX_GROWTH,
            "RSS grew by {} MiB while streaming {} MiB",
            growth >> 20,
            TOTAL >> 20
        );
        let metrics = gw.metrics().await;
        assert!(!metrics.contains("patgate_upstream_errors_total{"), "{metrics}");
        gw.stop().await;
    })
    .await;
}

// ---- HTTP/2 GOAWAY -----------------------------------------------------------------------

/// An HTTP/2 host that sends GOAWAY right after its SETTINGS, before it answers anything
/// (last stream id 0: the request was not processed): the app gets 502 upstream-unreachable.
#[tokio::test]
async fn an_http2_goaway_before_the_answer_gives_502_upstream_unreachable() {
    bounded("GOAWAY before the answer", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = gateway_for(&listener).await;
        let acceptor = acceptor(&localhost(&gw.ca), &[b"h2"]);
        serve(listener, move |tcp| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // SETTINGS (empty), then GOAWAY: last stream 0, NO_ERROR.
                let _ = tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                let _ = tls
                    .write_all(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                    .await;
                let _ = tls.flush().await;
                // Until patgate lets go of the connection.
                let mut sink = [0u8; 4096];
                while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        });
        let (status, code, detail) = problem(&gw, "fault-goaway-first").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_GATEWAY, "upstream-unreachable"),
            "{detail}"
        );
        assert_counted(&gw.metrics().await, "upstream-unreachable", 1);
        assert_no_secret("the logs", &logs());
        gw.stop().await;
    })
    .await;
}

/// An HTTP/2 host that answers the head and part of the body, then sends GOAWAY with
/// INTERNAL_ERROR and closes: the app gets the head, then an error on the body.
#[tokio::test]
async fn an_http2_goaway_mid_stream_is_a_cut_stream_for_the_app() {
    bounded("GOAWAY mid-stream", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = gateway_for(&listener).await;
        let acceptor = acceptor(&localhost(&gw.ca), &[b"h2"]);
        let go = Arc::new(Semaphore::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::<String>::new()));
        let (host_go, host_auth) = (go.clone(), authorizations.clone());
        serve(listener, move |tcp| {
            let (acceptor, go, auth) = (acceptor.clone(), host_go.clone(), host_auth.clone());
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                let Some(Ok((request, mut respond))) = conn.accept().await else {
                    return;
                };
                if let Some(value) = request.headers().get("authorization") {
                    auth.lock()
                        .unwrap()
                        .push(value.to_str().unwrap().to_string());
                }
                let head = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/x-gzip")
                    .header("content-length", "100000")
                    .body(())
                    .unwrap();
                let mut stream = respond.send_response(head, false).unwrap();
                stream
                    .send_data(Bytes::from_static(&[b'x'; 1000]), false)
                    .unwrap();
                // Drive the connection (it writes the frames) until the app has them.
                tokio::select! {
                    permit = go.acquire() => permit.unwrap().forget(),
                    _ = std::future::poll_fn(|cx| conn.poll_closed(cx)) => return,
                }
                conn.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
                let _ = std::future::poll_fn(|cx| conn.poll_closed(cx)).await;
                drop(stream);
            }
        });
        for http2 in [false, true] {
            let request_id = format!("fault-goaway-mid-h{}", if http2 { 2 } else { 1 });
            let client = app_client(&gw, http2);
            let mut response = open(&gw, &client, &request_id).await;
            assert_eq!(response.status(), StatusCode::OK);
            let first = next_data(response.body_mut()).await;
            go.add_permits(1);
            let (rest, error) = drain(response.body_mut()).await;
            let error = error.unwrap_or_else(|| {
                panic!(
                    "{request_id}: the body ended cleanly after {} bytes",
                    first.len() as u64 + rest
                )
            });
            assert_no_secret("the app's error", &error);
            let lines = log_lines(&request_id);
            assert!(
                lines.iter().any(|l| l.contains("body-cut")),
                "{request_id}: {lines:?}"
            );
        }
        assert_counted(&gw.metrics().await, "body-cut", 2);
        assert_eq!(
            authorizations.lock().unwrap().as_slice(),
            [
                format!("Bearer {INTEGRATION_TOKEN}"),
                format!("Bearer {INTEGRATION_TOKEN}")
            ]
        );
        assert_no_secret("the logs", &logs());
        gw.stop().await;
    })
    .await;
}
