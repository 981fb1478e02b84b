//! The PostgreSQL store against a real PostgreSQL (tests/run.sh starts a throw-away cluster;
//! each test makes its own database): the record store contract, the schema's migrations
//! and the commands around them, the replay cache, connect links and host holds shared by
//! two pools as two replicas would, TLS to the database, and a database that does not
//! answer (an error, never an accept).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::postgres::{ca_file, fresh_database, query};
use common::*;
use patgate::store::{
    HoldKey, HoldState, HoldStore, LinkStore, LinkUseError, NonceError, NonceStore, PgError,
    PgSettings, PgTls, Postgres, RecordStore, RecordStoreError, Space,
};
use zeroize::Zeroizing;

fn pool(url: &str, tls: PgTls) -> Postgres {
    Postgres::connect(&PgSettings {
        url: url.to_string().into(),
        tls,
        pool_size: 4,
        cores: 0,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

async fn migrated() -> (String, Postgres) {
    let url = fresh_database().await;
    let db = pool(&url, PgTls::Disable);
    db.migrate().await.unwrap();
    (url, db)
}

fn tls_with_ca(ca: &std::path::Path) -> PgTls {
    let roots = patgate::tls::root_store(ca).unwrap();
    PgTls::Require(Box::new(
        patgate::tls::upstream_client_config(roots).unwrap(),
    ))
}

#[tokio::test]
async fn the_record_store_contract_holds_on_postgresql() {
    let (_, db) = migrated().await;
    patgate::store::record_store_contract::check(&db.records()).await;
}

#[tokio::test]
async fn concurrent_compare_and_swaps_from_two_pools_are_decided_once() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let rb = b.records();
    let stores: [Arc<dyn RecordStore>; 2] = [Arc::new(a.records()), Arc::new(rb.clone())];
    // 32 writers race to create one key: one wins, each other sees the winner's value.
    let tries = (0..32u8).map(|i| {
        let store = stores[usize::from(i % 2)].clone();
        async move {
            let answer = store
                .compare_and_swap(Space::Records, b"k", None, Some(vec![i]))
                .await
                .unwrap();
            (i, answer)
        }
    });
    let answers = all_at_once(tries).await;
    let winners: Vec<u8> = answers
        .iter()
        .filter(|(_, a)| *a == patgate::store::Swapped::Done)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for (_, answer) in &answers {
        if let patgate::store::Swapped::Conflict { current } = answer {
            assert_eq!(current.as_deref(), Some(&[winners[0]][..]));
        }
    }
    assert_eq!(
        rb.get(Space::Records, b"k").await.unwrap(),
        Some(vec![winners[0]])
    );
}

/// Runs every future as its own task, at once; answers their outputs in order.
async fn all_at_once<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn migrate_is_idempotent_and_a_newer_schema_is_refused() {
    let url = fresh_database().await;
    let db = pool(&url, PgTls::Disable);
    assert!(matches!(
        db.check_schema().await,
        Err(PgError::Unmigrated { .. })
    ));
    let first = db.migrate().await.unwrap();
    assert_eq!((first.from, first.to), (0, patgate::store::SCHEMA_VERSION));
    db.records()
        .put(Space::Records, b"kept", b"v".to_vec())
        .await
        .unwrap();
    let again = db.migrate().await.unwrap();
    assert_eq!(again.from, again.to);
    db.check_schema().await.unwrap();
    assert_eq!(
        db.records().get(Space::Records, b"kept").await.unwrap(),
        Some(b"v".to_vec())
    );

    // A newer patgate migrated it: this one neither migrates nor runs on it.
    query(&url, "UPDATE patgate_schema SET version = 99").await;
    let err = db.migrate().await.unwrap_err();
    assert!(matches!(err, PgError::Ahead { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade patgate"), "{err}");
    assert!(matches!(
        db.check_schema().await,
        Err(PgError::Ahead { found: 99, .. })
    ));
    let version = query(&url, "SELECT version FROM patgate_schema").await;
    assert_eq!(
        version[0].get::<_, i32>(0),
        99,
        "a refused migrate changes nothing"
    );
}

/// A gateway's files with `[store] kind = "postgres"` on a fresh database, and its host.
async fn postgres_setup() -> (Setup, RecordingHost) {
    let ca = Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let options = Options {
        store_url: Some(fresh_database().await),
        ..Options::default()
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    (Setup::with_ca(dir, ca, &host, &options).await, host)
}

// Multi-threaded: the host answers `config check` while the test waits for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_an_unmigrated_or_newer_schema_and_store_migrate_makes_it() {
    let (setup, _host) = postgres_setup().await;
    // Point the config at a database with no schema.
    let url = fresh_database().await;
    std::fs::write(setup.dir.path().join("store-url"), &url).unwrap();
    let config = setup.config_path.to_str().unwrap();

    let run = patgate(&["run", "--config", config]);
    assert!(!run.status.success());
    let expected = format!("has no patgate schema: run `patgate store migrate` (`patgate store migrate --config {config}`)");
    assert!(stderr(&run).contains(&expected), "{}", stderr(&run));
    assert!(
        !stderr(&run).contains(&url),
        "the connection string is never printed"
    );
    let check = patgate(&["config", "check", "--config", config]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("patgate store migrate"),
        "{}",
        stderr(&check)
    );

    let migrate = patgate(&["store", "migrate", "--config", config]);
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    assert!(
        stdout(&migrate).contains(&format!(
            "migrated the schema from version 0 to {}",
            patgate::store::SCHEMA_VERSION
        )),
        "{}",
        stdout(&migrate)
    );
    let again = patgate(&["store", "migrate", "--config", config]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );
    let status = patgate(&["store", "status", "--config", config]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains(&format!(
            "schema version {}",
            patgate::store::SCHEMA_VERSION
        )),
        "{}",
        stdout(&status)
    );

    // Migrated but no vault yet: `vault init` makes it in the database.
    let run = patgate(&["run", "--config", config]);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("there is no vault in postgresql://127.0.0.1:"),
        "{}",
        stderr(&run)
    );
    let init = patgate(&["vault", "init", "--config", config]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(
        stdout(&init).contains("made the vault in postgresql://127.0.0.1:"),
        "{}",
        stdout(&init)
    );
    let rows = query(&url, "SELECT count(*) FROM patgate_records WHERE space = 1").await;
    assert_eq!(
        rows[0].get::<_, i64>(0),
        4,
        "format, key version, write version, key check"
    );

    let known = patgate::store::SCHEMA_VERSION;
    query(
        &url,
        &format!("UPDATE patgate_schema SET version = {}", known + 1),
    )
    .await;
    let run = patgate(&["run", "--config", config]);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains(&format!(
            "has patgate schema version {}, newer than this patgate knows ({known}): upgrade patgate",
            known + 1
        )),
        "{}",
        stderr(&run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_string_is_never_in_the_config_and_its_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let (setup, _host) = postgres_setup().await;
    let config = setup.config_path.to_str().unwrap();
    let url_file = setup.dir.path().join("store-url");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = patgate(&["config", "check", "--offline", "--config", config]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("`chmod 600` it"),
        "{}",
        stderr(&check)
    );
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = patgate(&["config", "check", "--offline", "--config", config]);
    assert!(check.status.success(), "{}", stderr(&check));

    edit_config(
        &setup.config_path,
        "url_file = \"store-url\"",
        "url = \"postgresql://x\"",
    );
    let check = patgate(&["config", "check", "--offline", "--config", config]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("store.url: unknown field `url`"),
        "{}",
        stderr(&check)
    );
}

#[tokio::test]
async fn tls_to_the_database_checks_its_certificate_against_ca_file() {
    let url = fresh_database().await;
    let good = pool(&url, tls_with_ca(std::path::Path::new(&ca_file())));
    assert_eq!(good.schema_version().await.unwrap(), 0);

    let dir = tempfile::tempdir().unwrap();
    let other = patgate::devpki::DevCa::generate("not the database's CA").unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let bad = pool(&url, tls_with_ca(&other_ca));
    let err = bad.schema_version().await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("postgres@"), "no user in messages: {err}");
}

#[tokio::test]
async fn a_nonce_is_accepted_once_across_replicas() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let (na, nb) = (a.nonces().with_window(360), b.nonces().with_window(360));
    let stores: [Arc<dyn NonceStore>; 2] = [Arc::new(na.clone()), Arc::new(nb.clone())];
    let tries = (0..16).map(|i| {
        let store = stores[i % 2].clone();
        async move { store.first_use("app", "n-1", 1_000, 900).await }
    });
    let answers = all_at_once(tries).await;
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        1,
        "{answers:?}"
    );
    assert!(answers
        .iter()
        .all(|a| a.is_ok() || *a == Err(NonceError::Replayed)));
    // Another key's nonce of the same name is its own.
    nb.first_use("other-app", "n-1", 1_000, 900).await.unwrap();
    // Still a replay at the last second of its window; a new window after it.
    assert_eq!(
        na.first_use("app", "n-1", 1_100, 1_000).await,
        Err(NonceError::Replayed)
    );
    nb.first_use("app", "n-1", 1_200, 1_001).await.unwrap();
    assert_eq!(
        na.first_use("app", "n-1", 1_200, 1_002).await,
        Err(NonceError::Replayed)
    );
}

#[tokio::test]
async fn a_pruned_nonce_cannot_come_back_from_a_replica_whose_clock_is_behind() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let (na, nb) = (a.nonces().with_window(360), b.nonces().with_window(360));
    na.first_use("app", "old", 100, 50).await.unwrap();
    na.first_use("app", "live", 500, 50).await.unwrap();
    assert_eq!(
        na.prune(200).await.unwrap(),
        1,
        "only the pair whose window ended"
    );
    // B's clock says 90: "old" would be in its window, but A forgot it.
    assert_eq!(
        nb.first_use("app", "old", 100, 90).await,
        Err(NonceError::BeforeHorizon)
    );
    assert_eq!(
        nb.first_use("app", "live", 500, 90).await,
        Err(NonceError::Replayed)
    );
    nb.first_use("app", "new", 300, 90).await.unwrap();
}

#[tokio::test]
async fn a_database_crash_that_empties_the_replay_cache_lets_no_replay_in() {
    let (url, db) = migrated().await;
    let nonces = db.nonces().with_window(360);
    nonces.first_use("app", "seen", 1_300, 1_000).await.unwrap();
    // What crash recovery does to an unlogged table.
    query(&url, "TRUNCATE patgate_nonces").await;
    assert_eq!(
        nonces.first_use("app", "seen", 1_300, 1_010).await,
        Err(NonceError::BeforeHorizon),
        "the forgotten pair is refused, not taken for a first use"
    );
    // A signature made after the crash was noticed is accepted, and once.
    nonces
        .first_use("app", "fresh", 1_010 + 360, 1_011)
        .await
        .unwrap();
    assert_eq!(
        nonces.first_use("app", "fresh", 1_010 + 360, 1_012).await,
        Err(NonceError::Replayed)
    );
}

/// A database that stops answering without closing its connection (its server process
/// stopped here with SIGSTOP, as a host gone silent or a network dropping packets would) is
/// an unreachable store once `statement_timeout` and a second have passed: the replay check
/// is refused, never accepted, and the request does not wait for TCP to give up.
#[tokio::test]
async fn a_database_that_goes_silent_is_refused_after_statement_timeout_not_waited_for() {
    let (url, _) = migrated().await;
    let db = Postgres::connect(&PgSettings {
        url: url.clone().into(),
        tls: PgTls::Disable,
        pool_size: 1,
        cores: 0,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let nonces = db.nonces().with_window(300);
    nonces.first_use("app", "n-1", 1_300, 1_000).await.unwrap();
    let backend = query(
        &url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'patgate'",
    )
    .await;
    assert_eq!(backend.len(), 1, "the pool's one connection");
    let pid = backend[0].get::<_, i32>(0).to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    // The guard only keeps a broken build from hanging the suite.
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        nonces.first_use("app", "n-2", 1_300, 1_000),
    )
    .await;
    let records = tokio::time::timeout(
        Duration::from_secs(30),
        db.records().get(Space::Records, b"k"),
    )
    .await;
    signal("-CONT");
    match outcome.expect("the replay check waited for the silent database") {
        Err(NonceError::Store(e)) => {
            assert!(e.unreachable, "{e}");
            assert!(e.reason.contains("no answer within 2000 ms"), "{e}");
        }
        other => panic!("not refused: {other:?}"),
    }
    assert!(
        records
            .expect("the read waited for the silent database")
            .is_err(),
        "no record read from a silent database"
    );
    assert!(!db.answering());
    // Once it answers again, so does the store.
    nonces.first_use("app", "n-3", 1_300, 1_000).await.unwrap();
}

#[tokio::test]
async fn a_database_that_does_not_answer_is_an_error_never_an_accept() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let db = pool(
        &format!("postgresql://patgate@127.0.0.1:{port}/patgate"),
        PgTls::Disable,
    );
    let nonce = db
        .nonces()
        .with_window(360)
        .first_use("app", "n", 100, 50)
        .await;
    assert!(matches!(nonce, Err(NonceError::Store(_))), "{nonce:?}");
    let link = db
        .links(Zeroizing::new([1; 32]))
        .first_open("l", 100, 50)
        .await;
    assert!(matches!(link, Err(LinkUseError::Store(_))), "{link:?}");
    let key = HoldKey {
        integration: "ghe",
        account: None,
    };
    assert!(db.holds().held(key, 1).await.is_err());
    assert!(db.holds().hold(key, 5, 1).await.is_err());
    let record = db.records().get(Space::Records, b"k").await;
    assert!(
        matches!(record, Err(RecordStoreError::Failed(_))),
        "{record:?}"
    );
    let err = record.unwrap_err().to_string();
    assert!(
        err.contains(&format!("postgresql://127.0.0.1:{port}/patgate")),
        "{err}"
    );
}

#[tokio::test]
async fn a_link_opens_once_across_replicas() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let key = || Zeroizing::new([9; 32]);
    let (la, lb) = (a.links(key()), b.links(key()));
    assert_eq!(la.key(), lb.key());
    let stores: [Arc<dyn LinkStore>; 2] = [Arc::new(la.clone()), Arc::new(lb.clone())];
    let tries = (0..8).map(|i| {
        let store = stores[i % 2].clone();
        async move { store.first_open("link-1", 1_000, 10).await }
    });
    let answers = all_at_once(tries).await;
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        1,
        "{answers:?}"
    );
    assert!(answers
        .iter()
        .all(|a| a.is_ok() || *a == Err(LinkUseError::Used)));
    lb.first_open("link-2", 1_000, 10).await.unwrap();
    // Pruning keeps a link an hour past its expiry, then forgets it.
    assert_eq!(la.prune(1_000 + 3_599).await.unwrap(), 0);
    assert_eq!(la.prune(1_000 + 3_601).await.unwrap(), 2);
}

#[tokio::test]
async fn a_hold_made_by_one_replica_holds_on_the_other() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let (ha, hb): (Arc<dyn HoldStore>, Arc<dyn HoldStore>) =
        (Arc::new(a.holds()), Arc::new(b.holds()));
    let user = HoldKey {
        integration: "ghe",
        account: Some("a"),
    };
    let integration = HoldKey {
        integration: "ghe",
        account: None,
    };
    assert!(ha.hold(user, 5_000, 1_000).await.unwrap(), "a new hold");
    assert!(
        !hb.hold(user, 3_000, 1_500).await.unwrap(),
        "a longer one, not new"
    );
    assert_eq!(hb.held(user, 2_000).await.unwrap(), HoldState::Held(5_000));
    assert_eq!(hb.held(integration, 2_000).await.unwrap(), HoldState::Free);
    assert_eq!(ha.held(user, 5_000).await.unwrap(), HoldState::Ended);
    assert_eq!(
        hb.held(user, 5_000).await.unwrap(),
        HoldState::Free,
        "seen ended once"
    );
    assert!(
        hb.hold(user, 7_000, 6_000).await.unwrap(),
        "after its end, a new hold"
    );
    ha.hold(integration, 9_000, 6_000).await.unwrap();
    assert_eq!(hb.prune(8_000).await.unwrap(), 1);
    assert_eq!(ha.prune(9_000).await.unwrap(), 0);
}

/// A replica answers hold lookups from its copy once a replay check told it the copy is
/// current; a hold made by the other replica is in force from B's next replay check on.
#[tokio::test]
async fn a_hold_reaches_the_other_replica_by_its_next_replay_check() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let (ha, hb) = (a.holds(), b.holds());
    let nb = b.nonces().with_window(300);
    let user = HoldKey {
        integration: "ghe",
        account: Some("a"),
    };
    nb.first_use("app", "n-1", 1_300, 1_000).await.unwrap();
    assert_eq!(hb.held(user, 1_000_000).await.unwrap(), HoldState::Free);

    assert!(ha.hold(user, 2_000_000, 1_000_000).await.unwrap());
    // B's request that passed its replay check before the hold was made goes on.
    assert_eq!(hb.held(user, 1_000_000).await.unwrap(), HoldState::Free);
    // The next one, admitted after it, is held.
    nb.first_use("app", "n-2", 1_300, 1_000).await.unwrap();
    assert_eq!(
        hb.held(user, 1_000_000).await.unwrap(),
        HoldState::Held(2_000_000)
    );
    // The copy is not the database: a hold deleted there behind patgate's back stays in
    // force in B's copy until the version moves, and a new hold moves it.
    query(&url, "DELETE FROM patgate_holds").await;
    assert_eq!(
        hb.held(user, 1_500_000).await.unwrap(),
        HoldState::Held(2_000_000)
    );
    let integration = HoldKey {
        integration: "ghe",
        account: None,
    };
    ha.hold(integration, 3_000_000, 1_500_000).await.unwrap();
    nb.first_use("app", "n-3", 1_300, 1_000).await.unwrap();
    assert_eq!(hb.held(user, 1_500_000).await.unwrap(), HoldState::Free);
    assert_eq!(
        hb.held(integration, 1_500_000).await.unwrap(),
        HoldState::Held(3_000_000)
    );
    // Its end is told to one lookup of the two replicas, as without the copy.
    a.nonces()
        .with_window(300)
        .first_use("app", "n-4", 1_300, 1_000)
        .await
        .unwrap();
    assert_eq!(
        ha.held(integration, 3_000_000).await.unwrap(),
        HoldState::Ended
    );
    assert_eq!(
        hb.held(integration, 3_000_000).await.unwrap(),
        HoldState::Free
    );
}

/// A database migrated by the patgate before schema version 2 is brought to the current
/// version, keeping its records, replay cache and holds.
#[tokio::test]
async fn schema_1_is_migrated_to_the_current_schema_with_its_records_nonces_and_holds() {
    let url = fresh_database().await;
    query(
        &url,
        "CREATE TABLE patgate_schema (id smallint PRIMARY KEY CHECK (id = 1), version integer NOT NULL)",
    )
    .await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(patgate::store::MIGRATIONS[0])
        .await
        .unwrap();
    query(&url, "INSERT INTO patgate_schema VALUES (1, 1)").await;
    query(
        &url,
        "SELECT patgate_first_use('app', 'old', 1300, 1000, 300)",
    )
    .await;
    query(
        &url,
        "INSERT INTO patgate_holds VALUES ('ghe', false, '', 2000000, NULL)",
    )
    .await;
    query(
        &url,
        "INSERT INTO patgate_records VALUES (0, 'kept', 'sealed')",
    )
    .await;

    let db = pool(&url, PgTls::Disable);
    assert!(matches!(
        db.check_schema().await,
        Err(PgError::Behind {
            found: 1,
            needed: patgate::store::SCHEMA_VERSION,
            ..
        })
    ));
    let migrated = db.migrate().await.unwrap();
    assert_eq!(
        (migrated.from, migrated.to),
        (1, patgate::store::SCHEMA_VERSION)
    );
    db.check_schema().await.unwrap();
    let nonces = db.nonces().with_window(300);
    assert!(matches!(
        nonces.first_use("app", "old", 1_300, 1_000).await,
        Err(NonceError::Replayed)
    ));
    nonces.first_use("app", "new", 1_300, 1_000).await.unwrap();
    let integration = HoldKey {
        integration: "ghe",
        account: None,
    };
    assert_eq!(
        db.holds().held(integration, 1_000_000).await.unwrap(),
        HoldState::Held(2_000_000)
    );
    assert_eq!(
        db.records().get(Space::Records, b"kept").await.unwrap(),
        Some(b"sealed".to_vec())
    );
}

/// A replica keeps the records it read and answers from them once a replay check told it
/// they are current; a record written through the other replica is read from B's next
/// replay check on, and B's own writes at once.
#[tokio::test]
async fn a_record_written_by_one_replica_is_read_by_the_other_from_its_next_replay_check() {
    let (url, a) = migrated().await;
    let b = pool(&url, PgTls::Disable);
    let (ra, rb) = (a.records(), b.records());
    let nb = b.nonces().with_window(300);
    let get = |key: &'static [u8]| {
        let rb = rb.clone();
        async move { rb.get(Space::Records, key).await.unwrap() }
    };
    ra.put(Space::Records, b"pat", b"v1".to_vec())
        .await
        .unwrap();
    nb.first_use("app", "n-1", 1_300, 1_000).await.unwrap();
    assert_eq!(get(b"pat").await, Some(b"v1".to_vec()));
    assert_eq!(get(b"absent").await, None);

    // What B answers from is its own: a change made behind patgate's back is not seen
    // until the version moves.
    query(&url, "UPDATE patgate_records SET value = 'by hand'").await;
    assert_eq!(get(b"pat").await, Some(b"v1".to_vec()));
    assert!(
        b.metrics().records_kept_reads.get() >= 1,
        "answered without the database"
    );

    // A writes: B's request admitted before the write still reads what it was; the next
    // one, admitted after it, reads the new value, and an absent record now present.
    ra.put(Space::Records, b"pat", b"v2".to_vec())
        .await
        .unwrap();
    ra.put(Space::Records, b"absent", b"now".to_vec())
        .await
        .unwrap();
    assert_eq!(get(b"pat").await, Some(b"v1".to_vec()));
    nb.first_use("app", "n-2", 1_300, 1_000).await.unwrap();
    assert_eq!(get(b"pat").await, Some(b"v2".to_vec()));
    assert_eq!(get(b"absent").await, Some(b"now".to_vec()));

    // A removes it; a batch and a compare-and-swap move the version too.
    assert!(ra.remove(Space::Records, b"pat").await.unwrap());
    nb.first_use("app", "n-3", 1_300, 1_000).await.unwrap();
    assert_eq!(get(b"pat").await, None);
    ra.apply(
        Space::Records,
        vec![patgate::store::Change::put(b"pat".to_vec(), b"v3".to_vec())],
    )
    .await
    .unwrap();
    nb.first_use("app", "n-4", 1_300, 1_000).await.unwrap();
    assert_eq!(get(b"pat").await, Some(b"v3".to_vec()));
    let dyn_a: &dyn RecordStore = &ra;
    dyn_a
        .compare_and_swap(Space::Records, b"pat", Some(b"v3"), Some(b"v4".to_vec()))
        .await
        .unwrap();
    nb.first_use("app", "n-5", 1_300, 1_000).await.unwrap();
    assert_eq!(get(b"pat").await, Some(b"v4".to_vec()));

    // B's own write is read back at once, with no replay check between.
    rb.put(Space::Records, b"pat", b"by b".to_vec())
        .await
        .unwrap();
    assert_eq!(get(b"pat").await, Some(b"by b".to_vec()));

    // With no replay check for longer than a second, B asks the database again.
    query(
        &url,
        "UPDATE patgate_records SET value = 'by hand' WHERE key = 'pat'",
    )
    .await;
    assert_eq!(get(b"pat").await, Some(b"by b".to_vec()));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(get(b"pat").await, Some(b"by hand".to_vec()));
}

/// A statement that waits in the database (here on a lock a test transaction holds) is
/// cancelled after `store.statement_timeout_ms`: the request answers 503 `unavailable`
/// instead of hanging, nothing reaches the host, and once the lock goes the same request
/// signed anew is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_waits_past_statement_timeout_ms_answers_503() {
    let (setup, host) = postgres_setup().await;
    let mut config = std::fs::read_to_string(&setup.config_path).unwrap();
    assert!(
        config.trim_end().ends_with("tls = \"disable\""),
        "[store] is last"
    );
    config.push_str("statement_timeout_ms = 300\n");
    std::fs::write(&setup.config_path, config).unwrap();
    let gw = setup.start().await;
    let url = std::fs::read_to_string(setup.dir.path().join("store-url")).unwrap();
    let (locker, connection) = tokio_postgres::connect(url.trim(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE patgate_nonces IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let read = || gw.get("/git/ghe/api/v3/repos/acme/api/branches");
    let waited = gw.client().send(&read()).await.unwrap();
    assert_eq!(waited.status(), 503);
    assert_eq!(problem_code(&waited), "unavailable");
    assert!(host.requests().is_empty(), "nothing went to the host");

    locker.batch_execute("ROLLBACK").await.unwrap();
    let served = gw.client().send(&read()).await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}
