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
    a.put_pat_ok(ACCOUNT_A, PAT_A).await;

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
    let replay = replay_of(&request);
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

/// `patgate ARGS --config CONFIG` on a blocking thread (the replicas in this process keep
/// serving meanwhile): exit status, stdout, stderr.
async fn patgate(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--config".into(), config.display().to_string()]);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
            .args(&all)
            .env_remove("PATGATE_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The user PATs of integration `ghe` that a replica's vault holds, each under which key
/// version.
async fn pat_versions(gw: &Gateway) -> Vec<(String, u32)> {
    gw.runtime
        .vault()
        .list_user_pats("ghe")
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r.id {
            patgate::vault::RecordId::UserPat { account, .. } => (account, r.key_version),
            other => panic!("{other}"),
        })
        .collect()
}

/// Asserts that `gw` hands the host exactly `token` for `account`.
async fn assert_serves(gw: &Gateway, host: &RecordingHost, account: &str, token: &str) {
    let created = gw
        .client()
        .send(&gw.create_branch(Some(account)))
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        201,
        "{account}: {}",
        String::from_utf8_lossy(created.body())
    );
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {token}")),
        "{account}"
    );
}

/// The test: PATs stored through both replicas; the new key staged and copied; the
/// rotation run through A while B serves reads and stores PATs; then B serves every PAT,
/// A reads every PAT B wrote, and every record is under the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_through_one_replica_keeps_the_other_serving_every_pat() {
    const FILLERS: usize = 400;
    let (a, b, host) = two_replicas(Options::default()).await;
    a.put_pat_ok(ACCOUNT_A, PAT_A).await;
    b.put_pat_ok(ACCOUNT_B, PAT_B).await;
    // More records, so that the rotation takes a while under B's load.
    for i in 0..FILLERS {
        let gw = if i % 2 == 0 { &a } else { &b };
        gw.store_pat(&format!("filler-{i:04}"), &format!("ghp_filler{i:04}"))
            .await;
    }

    // Stage: the new key next to A's key file, copied to B's.
    let (ok, out, err) = patgate(&a.config_path, &["vault", "rotate-key", "--stage"]).await;
    assert!(ok, "{out}{err}");
    let staged = a.dir.path().join("master-key.new");
    assert!(out.contains(&staged.display().to_string()), "{out}");
    std::fs::copy(&staged, b.dir.path().join("master-key.new")).unwrap();
    assert_eq!(
        pat_versions(&a).await.len(),
        FILLERS + 2,
        "staging rotates nothing"
    );
    assert!(pat_versions(&a).await.iter().all(|(_, v)| *v == 1));

    // B's load: reads with both users' PATs, and PATs stored through B's API.
    let b = Arc::new(b);
    let host = Arc::new(host);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (b, host, stop) = (b.clone(), host.clone(), stop.clone());
        tokio::spawn(async move {
            let client = b.client();
            let mut failures = Vec::new();
            let mut written = Vec::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 4 {
                let (account, login) = [(ACCOUNT_A, "alice"), (ACCOUNT_B, "bob")][n % 2];
                match client.send(&b.create_branch(Some(account))).await {
                    Ok(r) if r.status() == 201 && r.headers()["x-host-saw-login"] == login => {}
                    Ok(r) => failures.push(format!(
                        "read {account}: {} {}",
                        r.status(),
                        String::from_utf8_lossy(r.body())
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
                let (account, token) = (format!("during-{n:04}"), format!("ghp_during{n:04}"));
                host.add_user(&token, &account, "repo");
                match client.send(&b.put_pat(&account, &token)).await {
                    Ok(r) if r.status() == 200 => written.push((account, token)),
                    Ok(r) => failures.push(format!(
                        "write {account}: {} {}",
                        r.status(),
                        String::from_utf8_lossy(r.body())
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
                n += 1;
            }
            (failures, written)
        })
    };

    let (ok, out, err) = patgate(&a.config_path, &["vault", "rotate-key"]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (failures, written) = load.await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("staged"),
        "the staged key is the one used: {err}"
    );
    assert!(
        out.contains("rotated the master key from version 1 to 2"),
        "{out}"
    );
    assert!(
        failures.is_empty(),
        "B failed while A rotated: {failures:#?}"
    );
    assert!(!written.is_empty());
    assert_eq!(
        std::fs::read(a.dir.path().join("master-key")).unwrap(),
        std::fs::read(b.dir.path().join("master-key.new")).unwrap(),
        "A's key file holds the staged key"
    );

    // After the commit: B serves every PAT, A every PAT B wrote, all under version 2.
    assert_serves(&b, &host, ACCOUNT_A, PAT_A).await;
    assert_serves(&b, &host, ACCOUNT_B, PAT_B).await;
    assert_serves(&a, &host, ACCOUNT_B, PAT_B).await;
    let (account, token) = ("after-rotation", "ghp_afterrotation");
    host.add_user(token, account, "repo");
    b.put_pat_ok(account, token).await;
    for (account, token) in written
        .iter()
        .chain([&(account.to_string(), token.to_string())])
    {
        assert_serves(&a, &host, account, token).await;
    }
    assert_serves(&b, &host, &written[0].0, &written[0].1).await;
    for i in 0..FILLERS {
        let (cred, _) = b
            .runtime
            .vault()
            .user_pat("ghe", &format!("filler-{i:04}"))
            .await
            .unwrap()
            .unwrap();
        let patgate::vault::Credential::Token(got) = cred else {
            panic!("filler {i}")
        };
        use secrecy::ExposeSecret as _;
        #[allow(
            clippy::disallowed_methods,
            reason = "the test compares the PAT the vault gives back with the one stored"
        )]
        let got = got.expose_secret().to_string();
        assert_eq!(got, format!("ghp_filler{i:04}"));
    }
    let versions = pat_versions(&a).await;
    assert_eq!(versions.len(), FILLERS + 2 + written.len() + 1);
    assert!(
        versions.iter().all(|(_, v)| *v == 2),
        "every record under the new key: {versions:?}"
    );

    // B's reload forgets the old key and puts the new key file in place.
    b.handle.reload().await.unwrap();
    assert!(!b.dir.path().join("master-key.new").exists());
    assert_eq!(
        std::fs::read(b.dir.path().join("master-key")).unwrap(),
        std::fs::read(a.dir.path().join("master-key")).unwrap()
    );
    assert_serves(&b, &host, ACCOUNT_A, PAT_A).await;
    let b = Arc::into_inner(b).unwrap();
    a.stop().await;
    b.stop().await;
}

/// A replica that was down while another rotated the master key (or restarted before a
/// reload installed the staged key): its key file still holds the old key, and it opens the
/// vault with the staged one and puts that in place, as `patgate run` does at its start.
#[tokio::test]
async fn a_replica_restarted_after_the_rotation_opens_with_the_staged_key() {
    let (a, b, _host) = two_replicas(Options::default()).await;
    a.put_pat_ok(ACCOUNT_A, PAT_A).await;
    let (ok, out, err) = patgate(&a.config_path, &["vault", "rotate-key", "--stage"]).await;
    assert!(ok, "{out}{err}");
    let staged = std::fs::read(a.dir.path().join("master-key.new")).unwrap();
    let b_config = b.config_path.clone();
    let b_dir = b.dir.clone();
    b.stop().await;
    let (ok, out, err) = patgate(&a.config_path, &["vault", "rotate-key"]).await;
    assert!(ok, "{out}{err}");

    // The same opening as `patgate run`'s (no service answers on B's admin socket): the old
    // key alone is refused, and nothing is served with it.
    let (ok, out, err) = patgate(&b_config, &["vault", "list", "--json"]).await;
    assert!(!ok, "{out}");
    assert!(err.contains("master key"), "{err}");
    assert!(!out.contains(ACCOUNT_A), "{out}");
    // With the staged key installed where the rotation keeps it, B opens the vault.
    patgate::keys::write_private(&b_dir.path().join("master-key.new"), &staged).unwrap();
    let (ok, out, err) = patgate(&b_config, &["vault", "list", "--json"]).await;
    assert!(
        ok,
        "B's old key no longer opens the vault, the staged one does: {err}"
    );
    assert!(err.contains("whose key was staged"), "{err}");
    assert!(out.contains(ACCOUNT_A), "{out}");
    assert!(!b_dir.path().join("master-key.new").exists());
    assert_eq!(
        std::fs::read(b_dir.path().join("master-key")).unwrap(),
        std::fs::read(a.dir.path().join("master-key")).unwrap(),
        "B's key file holds the key the vault is at"
    );
    a.stop().await;
}

/// A replica that was not given the new key answers `unavailable` (and logs what to
/// install) rather than anything else; once the key file is installed, it serves again,
/// without a restart.
#[tokio::test]
async fn a_replica_without_the_new_key_refuses_until_it_is_installed() {
    let logs = common::logs::global("info");
    let (a, b, host) = two_replicas(Options::default()).await;
    a.put_pat_ok(ACCOUNT_A, PAT_A).await;
    assert_serves(&b, &host, ACCOUNT_A, PAT_A).await;
    let (ok, out, err) = patgate(&a.config_path, &["vault", "rotate-key"]).await;
    assert!(ok, "{out}{err}");
    let requests = host.requests().len();

    let refused = b
        .client()
        .send(&b.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(problem_code(&refused), "unavailable");
    assert!(!String::from_utf8_lossy(refused.body()).contains(PAT_A));
    assert_eq!(host.requests().len(), requests, "nothing reached the host");
    let pending = b.dir.path().join("master-key.new");
    let lines = logs.lines(&[
        "master key version 2",
        &format!("install it as {}", pending.display()),
    ]);
    assert!(!lines.is_empty(), "{}", logs.text());
    // Writes are refused too: nothing is stored under the old key.
    let write = b.client().send(&b.put_pat(ACCOUNT_B, PAT_B)).await.unwrap();
    assert_eq!(write.status(), 503);
    assert!(a
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_B)
        .await
        .unwrap()
        .is_none());

    // A wrong key file is refused as well, and named.
    let wrong = b.dir.path().join("wrong-key");
    patgate::vault::MasterKey::generate()
        .write_new(&wrong)
        .unwrap();
    std::fs::rename(&wrong, &pending).unwrap();
    let refused = b
        .client()
        .send(&b.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(!logs
        .lines(&[&format!("{} holds another key", pending.display())])
        .is_empty());

    // The admin installs the new key (A's key file, since A's rotation put it there).
    std::fs::remove_file(&pending).unwrap();
    std::fs::copy(a.dir.path().join("master-key"), &pending).unwrap();
    assert_serves(&b, &host, ACCOUNT_A, PAT_A).await;
    a.stop().await;
    b.stop().await;
}
