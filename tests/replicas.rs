//! Two patgate replicas on one PostgreSQL database behave as one (tests/run.sh starts the
//! database): each replica is a real gateway on its own sockets, with the same
//! certificates, keys, master key and config, as two machines behind an L4 balancer would
//! have. Where the request's own address matters (the signature covers `@target-uri`), a
//! TCP balancer in the test sends each connection to the replica the test chooses.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::postgres::fresh_database;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use patgate::client::Outgoing;
use tokio::net::{TcpListener, TcpStream};

/// Replicas A and B on a fresh database, in front of one git host.
async fn two_replicas(opts: Options) -> (Gateway, Gateway, RecordingHost) {
    let ca = Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let opts = Options {
        store_url: Some(fresh_database().await),
        ..opts
    };
    let a = Setup::with_ca(Arc::new(tempfile::tempdir().unwrap()), ca, &host, &opts).await;
    let b = a.replica();
    (a.start().await, b.start().await, host)
}

/// An L4 balancer: each TCP connection goes to the replica it points at when it arrives.
struct Balancer {
    addr: SocketAddr,
    to: Arc<Mutex<SocketAddr>>,
}

impl Balancer {
    async fn start(to: SocketAddr) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let to = Arc::new(Mutex::new(to));
        let target = to.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backend = *target.lock().unwrap();
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Balancer { addr, to }
    }

    fn point_at(&self, replica: &Gateway) {
        *self.to.lock().unwrap() = replica.addr;
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

#[tokio::test]
async fn a_pat_stored_through_one_replica_is_used_by_the_other() {
    let (a, b, host) = two_replicas(Options::default()).await;
    let stored = a.client().send(&a.put_pat(ACCOUNT_A, PAT_A)).await.unwrap();
    assert_eq!(stored.status(), 200);

    let created = b
        .client()
        .send(&b.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );

    // Deleted through B: A has no PAT for the user either.
    let deleted = b.client().send(&b.delete_pat(ACCOUNT_A)).await.unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let refused = a
        .client()
        .send(&a.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(problem_code(&refused), "user-pat-required");
    a.stop().await;
    b.stop().await;
}

/// The same request again, byte for byte.
fn copy_of(request: &Request<Full<bytes::Bytes>>) -> Request<Full<bytes::Bytes>> {
    let mut copy = Request::new(Full::new(bytes::Bytes::new()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

#[tokio::test]
async fn a_request_accepted_by_one_replica_is_refused_as_a_replay_by_the_other() {
    let (a, b, host) = two_replicas(Options::default()).await;
    let balancer = Balancer::start(a.addr).await;
    let out = Outgoing {
        method: Method::GET,
        url: balancer.url("/git/ghe/api/v3/user"),
        ..Outgoing::default()
    };
    let request = a.client().sign(&out).unwrap();
    let replay = copy_of(&request);
    // A new client each time: a new connection, which the balancer sends where it points.
    assert_eq!(a.client().send_signed(request).await.unwrap().status(), 200);

    balancer.point_at(&b);
    let response = b.client().send_signed(replay).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-replayed");
    assert_eq!(host.requests().len(), 1);
    // B itself serves a fresh request through the same balancer.
    let fresh = b.client().send(&out).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_eq!(host.requests().len(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_link_issued_by_one_replica_opens_at_the_other_once_and_then_at_neither() {
    let (a, b, _host) = two_replicas(Options {
        connect_ttl_seconds: Some(900),
        ..Options::default()
    })
    .await;
    let issued = a
        .client()
        .send(&Outgoing {
            method: Method::POST,
            url: a.url(&format!(
                "/v1/integrations/ghe/users/{ACCOUNT_A}/connect-link"
            )),
            ..Outgoing::default()
        })
        .await
        .unwrap();
    assert_eq!(issued.status(), 200);
    let url = json(&issued)["url"].as_str().unwrap().to_string();
    let token = url.rsplit_once("/connect/").unwrap().1.to_string();
    let port = |gw: &Gateway| gw.runtime.config().connect.as_ref().unwrap().listen.port();
    let at = |gw: &Gateway| format!("https://localhost:{}/connect/{token}", port(gw));
    let open = |gw: &Gateway, url: String| {
        let client = gw.client();
        async move {
            client
                .send_signed(
                    Request::get(url)
                        .body(Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap()
        }
    };

    let page = open(&b, at(&b)).await;
    assert_eq!(
        page.status(),
        200,
        "{}",
        String::from_utf8_lossy(page.body())
    );
    for gw in [&b, &a] {
        let again = open(gw, at(gw)).await;
        assert_eq!(again.status(), 410);
        assert!(String::from_utf8_lossy(again.body()).contains("already used"));
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_host_429_seen_by_one_replica_holds_the_credential_on_the_other() {
    let (a, b, host) = two_replicas(Options::default()).await;
    host.answer_next(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "30")]);
    let read = |gw: &Gateway| gw.get("/git/ghe/api/v3/repos/acme/api/branches");
    let first = a.client().send(&read(&a)).await.unwrap();
    assert_eq!(first.status(), 429);
    assert_eq!(host.requests().len(), 1);

    let held = b.client().send(&read(&b)).await.unwrap();
    assert_eq!(held.status(), 429);
    assert_eq!(problem_code(&held), "host-rate-limited");
    assert_eq!(host.requests().len(), 1, "B sent nothing to the host");
    a.stop().await;
    b.stop().await;
}
