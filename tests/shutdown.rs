//! Graceful shutdown (SIGTERM in `patgate run`): the listeners close first, a request in
//! flight finishes within `service.shutdown_grace_seconds`, one still hanging after it is
//! cut, and the PATs' last uses and the vault are flushed either way.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use patgate::vault::MasterKey;

/// A gateway with Require User PAT in front of a host that holds every request until the
/// test releases it.
async fn held_gateway(grace_seconds: u64) -> (Gateway, RecordingHost) {
    let ca = Arc::new(patgate::devpki::DevCa::generate("shutdown CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Held).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options {
            shutdown_grace_seconds: grace_seconds,
            clock: Some(patgate::clock::ManualClock::new()),
            ..Options::default()
        },
    )
    .await;
    let gw = setup.start().await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    (gw, host)
}

/// When the vault on disk says `account` last used its PAT (the gateway must be stopped).
async fn last_used_on_disk(dir: &std::path::Path, account: &str) -> Option<u64> {
    let key = MasterKey::load_file(&dir.join("master-key")).unwrap();
    let vault = open_vault(&dir.join("state"), &key).await.unwrap();
    vault
        .user_pat_meta(INTEGRATION_ID, account)
        .await
        .unwrap()
        .unwrap()
        .last_used_at
}

/// Bounds a wait that must end, so a broken shutdown fails the test instead of hanging it.
async fn must_end<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_after_shutdown_begins_and_new_connections_are_refused() {
    let (mut gw, host) = held_gateway(30).await;
    let dir = gw.dir.clone();
    let in_flight = {
        let client = gw.client();
        let out = gw.create_branch(Some(ACCOUNT_A));
        tokio::spawn(async move { client.send(&out).await })
    };
    must_end("the request reaching the host", host.arrival()).await;

    gw.begin_stop();
    must_end("closing the listeners", gw.handle.listeners_closed()).await;
    let refused = tokio::net::TcpStream::connect(gw.addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    host.release();
    let response = must_end("the answer", in_flight).await.unwrap().unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    must_end("the shutdown", gw.stop()).await;
    // The use was only in memory (it is written every 30 s): the shutdown wrote it.
    assert!(last_used_on_disk(dir.path(), ACCOUNT_A).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_hanging_after_the_grace_period_is_cut_and_the_vault_is_flushed() {
    let (mut gw, host) = held_gateway(1).await;
    let dir = gw.dir.clone();
    let hanging = {
        let client = gw.client();
        let out = gw.create_branch(Some(ACCOUNT_A));
        tokio::spawn(async move { client.send(&out).await })
    };
    must_end("the request reaching the host", host.arrival()).await;
    gw.begin_stop();
    // The host never answers: the grace period ends the wait, and the connection (the
    // gateway's clock moves by the grace period in one step).
    let clock = gw.manual_clock.clone().unwrap();
    must_end(
        "the shutdown",
        while_time_moves(&clock, Duration::from_secs(1), gw.stop()),
    )
    .await;
    let cut = must_end("the client seeing the cut", hanging)
        .await
        .unwrap();
    assert!(cut.is_err(), "{cut:?}");
    assert!(last_used_on_disk(dir.path(), ACCOUNT_A).await.is_some());
}
