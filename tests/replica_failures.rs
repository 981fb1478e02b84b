//! Replicas on a shared PostgreSQL when things fail, end to end on the real binary
//! (`patgate run`) and a real database (tests/postgres-cluster.sh):
//!
//! - the database stopped under load: every request answers 503 `unavailable` with
//!   `Retry-After` (or, begun before the stop, its normal answer), none hangs, a replayed
//!   signature is never let in, `/ready` answers 503 naming the store, the log has one
//!   warning for the outage and no panic; once the database is started again the same
//!   process serves again and is ready, and every PAT acknowledged before the outage
//!   reaches the host as exactly the PAT sent;
//! - the database crashed (an immediate stop empties the unlogged replay cache): a request
//!   accepted before is refused after the restart, as is a fresh one for
//!   `max_skew_seconds`; then requests pass again (the gateway's clock is moved by hand);
//! - SIGKILL of replica A while 1,000 users' PATs are being stored through it: replica B,
//!   on the same database, serves every PAT whose write was acknowledged.
//!
//! The outage test stops and starts a cluster of its own (`PATGATE_TEST_POSTGRES_OUTAGE_*`),
//! so the tests that share the main cluster never see it down. Bounded: no sleeps and no
//! timing assertions; every wait has a deadline that only a hang reaches.

#![allow(
    clippy::disallowed_methods,
    reason = "the test compares stored PATs with those sent"
)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::process::{client, kill_during_pat_writes, KilledWrites, Running, LIMIT};
use common::*;
use http::{Method, Response};
use rand_core::{OsRng, RngCore as _};

/// The longest one request may take, database down or not: the pool's connect timeout
/// (5 s by default) with room to spare. Past it a request counts as hung.
const REQUEST_BOUND: Duration = Duration::from_secs(30);
/// A password in the connection string (the test cluster trusts loopback and ignores it):
/// it must reach no log line, no answer and no metric.
const DB_PASSWORD: &str = "DbPasswordDoNotLeak7Qz";

fn account(i: usize) -> String {
    format!("outage-acct-{i:04}")
}

/// A GitHub-shaped token per account, unique in every position the host compares.
fn pat(i: usize) -> String {
    format!("ghp_Outage{i:04}DoNotLeak0123456789abcdefghij")
}

fn login(i: usize) -> String {
    format!("outage-user-{i:04}")
}

/// A new database on the cluster whose superuser connection string is `admin`; answers
/// its connection string, with [`DB_PASSWORD`] in it.
async fn fresh_database_on(admin: &str) -> String {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
    tokio::spawn(connection);
    let name = format!("patgate_failures_{:016x}", OsRng.next_u64());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    base.replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1) + "/" + &name
}

/// Held by each test that stops the outage cluster: one outage at a time.
static OUTAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The outage cluster's superuser connection string.
fn outage_admin_url() -> String {
    std::env::var("PATGATE_TEST_POSTGRES_OUTAGE_URL").expect(
        "PATGATE_TEST_POSTGRES_OUTAGE_URL is not set: run the tests with tests/run.sh, which starts the outage tests' PostgreSQL",
    )
}

/// Stops (`stop`: a fast shutdown) or starts the outage cluster, and waits until done.
async fn outage_ctl(action: &str) {
    let ctl = std::env::var("PATGATE_TEST_POSTGRES_OUTAGE_CTL")
        .expect("PATGATE_TEST_POSTGRES_OUTAGE_CTL is not set: run the tests with tests/run.sh");
    let out = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new(&ctl).arg(action).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{ctl} {action} hung"))
    .unwrap();
    assert!(
        out.status.success(),
        "{ctl} {action}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One admin listener request, bounded.
async fn admin(addr: SocketAddr, path: &str) -> Response<Bytes> {
    tokio::time::timeout(REQUEST_BOUND, admin_request(addr, Method::GET, path))
        .await
        .unwrap_or_else(|_| panic!("{path} hung"))
        .unwrap()
}

/// Asks `/ready` until it answers `status` with a body that contains `saying` (a deadline
/// only a hang reaches); answers its body.
async fn ready_becomes(addr: SocketAddr, status: u16, saying: &str) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let ready = admin(addr, "/ready").await;
        if ready.status() == status && String::from_utf8_lossy(ready.body()).contains(saying) {
            return String::from_utf8_lossy(ready.body()).into_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready never answered {status}: {} {}",
            ready.status(),
            String::from_utf8_lossy(ready.body())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 503 `unavailable` with `Retry-After`, as a replica answers while its database does
/// not; the detail names no secret.
fn assert_unavailable(response: &Response<Bytes>) {
    assert_eq!(
        response.status(),
        503,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(problem_code(response), "unavailable");
    assert_eq!(response.headers()["retry-after"], "1");
    let body = String::from_utf8_lossy(response.body());
    assert!(!body.contains(DB_PASSWORD), "{body}");
}

/// What the load saw, by answer.
#[derive(Debug, Default)]
struct Seen {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    /// Anything else: status, code and body. Must stay empty.
    other: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_answers_503_and_serves_again_when_it_is_back() {
    let _outage = OUTAGE.lock().await;
    const USERS: usize = 20;
    const CLIENTS: usize = 4;
    let ca = Arc::new(patgate::devpki::DevCa::generate("outage CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    for i in 0..USERS {
        host.add_user(&pat(i), &login(i), "repo");
    }
    let opts = Options {
        store_url: Some(fresh_database_on(&outage_admin_url()).await),
        ..Options::default()
    };
    let setup = Setup::with_ca(Arc::new(tempfile::tempdir().unwrap()), ca, &host, &opts).await;
    let mut run = Running::start(&setup).await;
    let admin_addr = run.admin_addr().await;
    let api = run.api();
    let client = client(&setup);
    assert_eq!(ready_becomes(admin_addr, 200, "ready").await, "ready\n");

    // Acknowledged before the outage.
    for i in 0..USERS {
        let stored = client
            .send(&api.put_pat(&account(i), &pat(i)))
            .await
            .unwrap();
        assert_eq!(stored.status(), 200, "{}", account(i));
    }
    // A request accepted now, to be replayed while the database is down and after.
    let accepted = client.sign(&api.read()).unwrap();
    let replay = replay_of(&accepted);
    assert_eq!(client.send_signed(accepted).await.unwrap().status(), 200);

    // The load: reads with the integration's token and actions with a user's PAT, each
    // bounded; it runs until told to stop.
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (seen, stop, client) = (seen.clone(), stop.clone(), client.clone());
        clients.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::SeqCst) {
                n += CLIENTS;
                let out = if n % 2 == 0 {
                    api.read()
                } else {
                    api.create_branch(&account(n % USERS))
                };
                let response = tokio::time::timeout(REQUEST_BOUND, client.send(&out))
                    .await
                    .unwrap_or_else(|_| panic!("a request hung past {REQUEST_BOUND:?}"))
                    .expect("patgate closed the connection");
                match response.status().as_u16() {
                    200 | 201 => seen.ok.fetch_add(1, Ordering::SeqCst),
                    503 if problem_code(&response) == "unavailable"
                        && response.headers()["retry-after"] == "1" =>
                    {
                        seen.unavailable.fetch_add(1, Ordering::SeqCst)
                    }
                    status => {
                        seen.other.lock().unwrap().push(format!(
                            "{status} {}",
                            String::from_utf8_lossy(response.body())
                        ));
                        0
                    }
                };
            }
        }));
    }
    let wait_until = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let s = seen.clone();
    wait_until(
        "requests served",
        Box::new(move || s.ok.load(Ordering::SeqCst) >= 40),
    )
    .await;

    // Down.
    outage_ctl("stop").await;
    let why = ready_becomes(admin_addr, 503, "the shared store does not answer").await;
    assert!(
        why.starts_with(
            "not ready: the shared store does not answer: PostgreSQL (postgresql://127.0.0.1:"
        ),
        "{why}"
    );
    assert!(!why.contains(DB_PASSWORD), "{why}");
    let s = seen.clone();
    let before = s.unavailable.load(Ordering::SeqCst);
    wait_until(
        "requests answered 503 while the database is down",
        Box::new(move || s.unavailable.load(Ordering::SeqCst) >= before + 200),
    )
    .await;
    let ok_while_down = seen.ok.load(Ordering::SeqCst);
    // The replay cache cannot be asked: the replayed request is refused, never let in.
    let replayed = client.send_signed(replay_of(&replay)).await.unwrap();
    assert_unavailable(&replayed);
    // A PAT write is refused whole: nothing is acknowledged that was not stored.
    let refused = client
        .send(&api.put_pat(&account(USERS), &pat(USERS)))
        .await
        .unwrap();
    assert_unavailable(&refused);
    let metrics = String::from_utf8_lossy(admin(admin_addr, "/metrics").await.body()).into_owned();
    assert!(metrics.contains("\npatgate_store_up 0\n"), "{metrics}");
    assert!(!metrics.contains(DB_PASSWORD));
    let failed_first_uses = metrics
        .lines()
        .find(|l| {
            l.starts_with("patgate_store_errors_total{")
                && l.contains(r#"store="nonces""#)
                && l.contains(r#"operation="first-use""#)
        })
        .unwrap_or_else(|| panic!("no failed first uses counted: {metrics}"));
    assert_ne!(failed_first_uses.rsplit(' ').next().unwrap(), "0");

    // Up again: the same process serves, with no restart.
    outage_ctl("start").await;
    assert_eq!(ready_becomes(admin_addr, 200, "ready").await, "ready\n");
    let s = seen.clone();
    wait_until(
        "requests served after the database came back",
        Box::new(move || s.ok.load(Ordering::SeqCst) >= ok_while_down + 40),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(LIMIT, c).await.unwrap().unwrap();
    }
    let other = seen.other.lock().unwrap().clone();
    assert!(
        other.is_empty(),
        "answers other than 2xx and 503 unavailable: {other:?}"
    );

    // The fast shutdown kept the replay cache: the request accepted before is a replay.
    let replayed = client.send_signed(replay).await.unwrap();
    assert_eq!(replayed.status(), 401);
    assert_eq!(problem_code(&replayed), "signature-replayed");
    // Every PAT acknowledged before the outage, exactly as sent; the refused one absent.
    for i in 0..USERS {
        let acted = client.send(&api.create_branch(&account(i))).await.unwrap();
        assert_eq!(acted.status(), 201, "{}", account(i));
        assert_eq!(
            host.last().authorization(),
            Some(&*format!("Bearer {}", pat(i))),
            "{}",
            account(i)
        );
    }
    let absent = client
        .send(&api.create_branch(&account(USERS)))
        .await
        .unwrap();
    assert_eq!(problem_code(&absent), "user-pat-required");
    let metrics = String::from_utf8_lossy(admin(admin_addr, "/metrics").await.body()).into_owned();
    assert!(metrics.contains("\npatgate_store_up 1\n"), "{metrics}");
    for series in [
        "patgate_store_pool_max_connections 16",
        r#"patgate_store_pool_connections{state="idle"}"#,
        r#"patgate_store_operation_duration_seconds_count{store="records",operation="get"}"#,
    ] {
        assert!(metrics.contains(series), "no {series}: {metrics}");
    }

    // The log: a warning when the outage began and a line when it ended, whatever the
    // number of requests refused; no error line per request, no panic, no password. While
    // PostgreSQL starts it may refuse a connection ("57P03: the database system is starting
    // up") just after it accepted another: a second, short episode, logged the same way.
    let logs = run.logs();
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    let began = count("the shared store does not answer");
    assert!((1..=2).contains(&began), "{logs:#?}");
    assert_eq!(count("the shared store answers again"), began, "{logs:#?}");
    assert_eq!(count("panicked"), 0, "{logs:#?}");
    assert_eq!(count(DB_PASSWORD), 0, "{logs:#?}");
    assert_eq!(count("store error"), 0, "{logs:#?}");
    assert_eq!(count("vault error"), 0, "{logs:#?}");
    let refused = seen.unavailable.load(Ordering::SeqCst);
    let warnings = logs
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    // deadpool notes each pooled connection it loses (at most store.pool_size of them).
    assert!(
        warnings <= 2 * 16 + 1,
        "{warnings} warnings for {refused} refusals: {logs:#?}"
    );
    eprintln!(
        "outage: {} requests served, {refused} answered 503 unavailable, {warnings} warning lines",
        seen.ok.load(Ordering::SeqCst)
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_postgres_empties_the_replay_cache_and_lets_no_replay_in() {
    let _outage = OUTAGE.lock().await;
    let clock = patgate::clock::ManualClock::new();
    let ca = Arc::new(patgate::devpki::DevCa::generate("crash CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    host.add_user(PAT_A, "user-a", "repo");
    let opts = Options {
        store_url: Some(fresh_database_on(&outage_admin_url()).await),
        clock: Some(clock.clone()),
        ..Options::default()
    };
    let setup = Setup::with_ca(Arc::new(tempfile::tempdir().unwrap()), ca, &host, &opts).await;
    let gw = setup.start().await;
    gw.put_pat_ok(ACCOUNT_A, PAT_A).await;
    let accepted = gw
        .client()
        .sign(&gw.create_branch(Some(ACCOUNT_A)))
        .unwrap();
    let replay = replay_of(&accepted);
    assert_eq!(
        gw.client().send_signed(accepted).await.unwrap().status(),
        201
    );

    // An immediate stop is a crash: PostgreSQL empties the unlogged replay cache.
    outage_ctl("crash").await;
    let down = gw.client().send_signed(replay_of(&replay)).await.unwrap();
    assert_unavailable(&down);
    outage_ctl("start").await;

    // The replay is refused, never let in: the pairs forgotten in the crash may still be in
    // their window, so every signature that could be one of them is refused.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let refused = loop {
        let response = gw.client().send_signed(replay_of(&replay)).await.unwrap();
        if response.status() != 503 {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.status(), 401);
    assert_eq!(problem_code(&refused), "signature-expired");
    // So is a fresh signature, for max_skew_seconds (5 s by default): it could have been
    // made by a client whose clock runs ahead, before the crash.
    let fresh = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(fresh.status(), 401);
    assert_eq!(problem_code(&fresh), "signature-expired");
    clock.advance(Duration::from_secs(6));
    let acted = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(acted.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    let replayed = gw.client().send_signed(replay).await.unwrap();
    assert_eq!(replayed.status(), 401);
    gw.stop().await;
}

/// Writes through replica A, killed partway.
const WRITES: usize = 1_000;
const WRITERS: usize = 8;
const KILL_AFTER_ACKS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_replica_while_storing_pats_loses_no_acknowledged_write() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("replica crash CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    for i in 0..WRITES {
        host.add_user(&pat(i), &login(i), "repo");
    }
    let opts = Options {
        store_url: Some(common::postgres::fresh_database().await),
        ..Options::default()
    };
    let setup = Setup::with_ca(Arc::new(tempfile::tempdir().unwrap()), ca, &host, &opts).await;
    let mut a = Running::start(&setup).await;
    let client = client(&setup);

    // The kill comes with the other writers' requests in flight.
    let KilledWrites {
        acked, unanswered, ..
    } = kill_during_pat_writes(
        &mut a,
        &client,
        (WRITERS, WRITES, KILL_AFTER_ACKS),
        account,
        pat,
    )
    .await;

    // Replica B, on the same database: every acknowledged PAT reaches the host as sent.
    let b = setup.replica().start().await;
    let b_client = b.client();
    let as_seen_by_the_host = |i: usize| {
        let (b, b_client, host) = (&b, &b_client, &host);
        async move {
            let acted = b_client
                .send(&b.create_branch(Some(&account(i))))
                .await
                .unwrap();
            match acted.status().as_u16() {
                201 => {
                    assert_eq!(acted.headers()["patgate-credential"], "user");
                    Some(host.last().authorization().unwrap().to_string())
                }
                _ => {
                    assert_eq!(problem_code(&acted), "user-pat-required", "{}", account(i));
                    None
                }
            }
        }
    };
    for &i in &acked {
        assert_eq!(
            as_seen_by_the_host(i).await,
            Some(format!("Bearer {}", pat(i))),
            "an acknowledged PAT is missing or wrong on replica B: {}",
            account(i)
        );
    }
    let mut unacked_present = 0;
    for &i in &unanswered {
        // Whole and correct, or absent.
        if let Some(seen) = as_seen_by_the_host(i).await {
            assert_eq!(seen, format!("Bearer {}", pat(i)));
            unacked_present += 1;
        }
    }
    let sent: HashSet<usize> = acked.iter().chain(&unanswered).copied().collect();
    let never_sent = (0..WRITES).find(|i| !sent.contains(i)).unwrap();
    assert_eq!(as_seen_by_the_host(never_sent).await, None);
    eprintln!(
        "replica crash: {} of {WRITES} writes acknowledged by A before SIGKILL, {} unanswered \
         of which {unacked_present} were stored; all acknowledged PATs served by B",
        acked.len(),
        unanswered.len(),
    );
    b.stop().await;
}
