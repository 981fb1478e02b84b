//! The admin socket of the running service, the CLI that goes through it (and falls back to
//! the vault file when no service runs), and master key rotation while serving.

mod common;

use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use http::Method;
use patgate::adminsock::client::{self, AdminClientError};
use patgate::vault::{MasterKey, VaultError};

/// Runs the real binary; `uid` runs it as another user (needs root).
fn patgate_as(
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &Path)],
    uid: Option<u32>,
) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_patgate"));
    command
        .args(args)
        .env_remove("PATGATE_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs the binary on a blocking thread, so the gateway in this process keeps serving.
async fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--config".into());
    all.push(config.to_str().unwrap().into());
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        patgate_as(&args, stdin.as_deref(), &[], None)
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

const VIA_SERVICE: &str = "(via the running service";

async fn setup(opts: &Options) -> (Setup, RecordingHost) {
    let ca = Arc::new(patgate::devpki::DevCa::generate("admin socket CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    (Setup::with_ca(dir, ca, &host, opts).await, host)
}

fn socket_path(setup: &Setup) -> PathBuf {
    setup.dir.path().join("state").join("admin.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_to_the_service_user_and_removed_at_shutdown() {
    let (setup, _host) = setup(&Options::default()).await;
    let gw = setup.start().await;
    let path = socket_path(&setup);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Owned by the service user: whoever runs this test, like the vault directory.
    assert_eq!(
        meta.uid(),
        std::fs::metadata(setup.dir.path()).unwrap().uid()
    );
    // No temporary directory of the private bind is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".patgate-admin"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    gw.stop().await;
    assert!(!path.exists(), "the socket must be removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_live_one_refuses_a_second_service() {
    let (setup, _host) = setup(&Options::default()).await;
    let path = socket_path(&setup);
    // A crash leaves the file of a socket nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let gw = setup.start().await;
    let out = cli(&setup.config_path, &["vault", "list"], None).await;
    assert_ok(&out);
    assert!(stderr(&out).contains(VIA_SERVICE), "{}", stderr(&out));

    // Another service configured with the same socket path is refused.
    let err = patgate::listener::AdminSocket::bind(&path)
        .await
        .unwrap_err();
    assert!(
        matches!(err, patgate::listener::AdminSocketError::InUse { .. }),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("another patgate answers on the admin socket"));
    // The running one still answers.
    assert_ok(&cli(&setup.config_path, &["vault", "list"], None).await);

    // Something that is not a socket is never removed.
    let other = setup.dir.path().join("not-a-socket");
    std::fs::write(&other, "data").unwrap();
    let err = patgate::listener::AdminSocket::bind(&other)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        patgate::listener::AdminSocketError::NotASocket { .. }
    ));
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "data");
    gw.stop().await;
}

/// The uid of this process: the owner of a file it makes.
fn own_uid(dir: &Path) -> u32 {
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, "").unwrap();
    std::fs::metadata(&probe).unwrap().uid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_uid_is_refused() {
    const NOBODY: u32 = 65534;
    if own_uid(&std::env::temp_dir()) != 0 {
        // Another uid needs root to make; what remains testable is the check itself.
        eprintln!("not root: checking the peer rule with uid values only");
        assert!(!patgate::listener::adminsock::peer_allowed(NOBODY, 1000));
        assert!(patgate::listener::adminsock::peer_allowed(0, 1000));
        return;
    }
    // A socket in a directory everyone can enter, and a config the other user can read.
    let public = tempfile::tempdir().unwrap();
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = public.path().join("admin.sock");
    let (setup, _host) = setup(&Options::default()).await;
    let config = std::fs::read_to_string(&setup.config_path)
        .unwrap()
        .replace(
            "[admin]\n",
            &format!("[admin]\nsocket = \"{}\"\n", sock.display()),
        );
    std::fs::write(&setup.config_path, config).unwrap();
    let gw = setup.start().await;
    let client_config = public.path().join("patgate.toml");
    std::fs::write(
        &client_config,
        format!(
            "state_dir = \"{state}\"\n[master_key]\nfile = \"{key}\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n[admin]\nsocket = \"{sock}\"\n",
            state = setup.dir.path().join("state").display(),
            key = setup.dir.path().join("master-key").display(),
            sock = sock.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&client_config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            patgate_as(&args, None, &[], Some(NOBODY))
        })
    };
    let list = vec![
        "vault".to_string(),
        "list".into(),
        "--config".into(),
        client_config.to_str().unwrap().into(),
    ];

    // Mode 0600: the kernel refuses the connection; reported, no fallback to the vault.
    let out = as_nobody(list.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the running service")
            && stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    // Even with the file opened to everyone (an admin's mistake), the peer check refuses.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(list).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("(client-not-allowed)")
            && message.contains("uid 65534 may not use the admin socket"),
        "{message}"
    );
    assert!(
        !stdout(&out).contains("ghe"),
        "nothing listed: {}",
        stdout(&out)
    );
    // Root (this test) still may.
    assert_ok(&cli(&setup.config_path, &["vault", "list"], None).await);
    gw.stop().await;
    assert!(!sock.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_go_through_the_running_service_and_fall_back_when_it_is_stopped() {
    let (setup, host) = setup(&Options::default()).await;
    let config = setup.config_path.clone();
    let gw = setup.start().await;

    // pat set: validated with the host by the service, stored in the service's vault.
    let out = cli(
        &config,
        &["pat", "set", "--integration", "ghe", "--account", ACCOUNT_A],
        Some(&format!("{PAT_A}\n")),
    )
    .await;
    assert_ok(&out);
    assert!(stderr(&out).contains(VIA_SERVICE), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["configured"], true);
    assert_eq!(status["host_login"], "alice");
    let who = host.last();
    assert!(who.path_and_query.ends_with("/user"));
    assert_eq!(
        who.authorization(),
        Some(format!("Bearer {PAT_A}").as_str())
    );
    assert!(!stdout(&out).contains(PAT_A) && !stderr(&out).contains(PAT_A));

    // The running service uses it at once.
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(
        host.last().authorization(),
        Some(format!("Bearer {PAT_A}").as_str())
    );

    let out = cli(
        &config,
        &[
            "pat",
            "status",
            "--integration",
            "ghe",
            "--account",
            ACCOUNT_A,
        ],
        None,
    )
    .await;
    assert_ok(&out);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["configured"], true);
    assert!(
        status["last_used_at"].is_string(),
        "the pending use is shown: {status}"
    );

    // A PAT the host refuses: a clear error with the stable code, nothing stored.
    let out = cli(
        &config,
        &["pat", "set", "--integration", "ghe", "--account", ACCOUNT_B],
        Some("ghp_NotAValidToken0000000000000000000000\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not stored: the running service refused:")
            && stderr(&out).contains("(pat-invalid)"),
        "{}",
        stderr(&out)
    );

    // The integration secret, validated and swapped in the running service.
    host.add_user("ghs_NewIntegrationToken0123456789", "new-bot", "repo");
    let out = cli(
        &config,
        &["integration", "set-secret", "ghe"],
        Some("ghs_NewIntegrationToken0123456789\n"),
    )
    .await;
    assert_ok(&out);
    assert!(stderr(&out).contains(VIA_SERVICE));
    assert_eq!(
        stdout(&out).trim(),
        "stored the token secret of integration `ghe`; the host says it belongs to new-bot"
    );
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/repos/acme/api"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        host.last().authorization(),
        Some("Bearer ghs_NewIntegrationToken0123456789")
    );

    let via_service = cli(&config, &["vault", "list"], None).await;
    assert_ok(&via_service);
    assert!(stderr(&via_service).contains(VIA_SERVICE));

    let out = cli(
        &config,
        &[
            "pat",
            "delete",
            "--integration",
            "ghe",
            "--account",
            ACCOUNT_A,
        ],
        None,
    )
    .await;
    assert_ok(&out);
    assert!(!stderr(&out).contains("there was no PAT"));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["configured"], false);
    let out = cli(
        &config,
        &[
            "pat",
            "delete",
            "--integration",
            "ghe",
            "--account",
            ACCOUNT_A,
        ],
        None,
    )
    .await;
    assert_ok(&out);
    assert!(stderr(&out).contains("there was no PAT for this user"));
    // Put it back, so the listings below compare the same vault.
    assert_ok(
        &cli(
            &config,
            &["pat", "set", "--integration", "ghe", "--account", ACCOUNT_A],
            Some(PAT_A),
        )
        .await,
    );
    gw.stop().await;
    assert!(!socket_path(&setup).exists());

    // Stopped: the same commands open the vault themselves, with the same output as through
    // a service on the same vault.
    let direct = cli(&config, &["vault", "list", "--json"], None).await;
    assert_ok(&direct);
    assert!(
        !stderr(&direct).contains(VIA_SERVICE),
        "{}",
        stderr(&direct)
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout(&direct)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let gw = setup.start().await;
    let via_service = cli(&config, &["vault", "list", "--json"], None).await;
    assert_ok(&via_service);
    assert!(stderr(&via_service).contains(VIA_SERVICE));
    assert_eq!(stdout(&direct), stdout(&via_service));
    // The table too: the same rows either way.
    let direct_table = {
        gw.stop().await;
        cli(&config, &["vault", "list"], None).await
    };
    let gw = setup.start().await;
    let service_table = cli(&config, &["vault", "list"], None).await;
    assert!(stdout(&direct_table).starts_with("RECORD "));
    assert_eq!(stdout(&direct_table), stdout(&service_table));
    gw.stop().await;

    // A stale socket file (a crash) is no service either.
    drop(std::os::unix::net::UnixListener::bind(socket_path(&setup)).unwrap());
    let out = cli(
        &config,
        &["pat", "set", "--integration", "ghe", "--account", ACCOUNT_B],
        Some(PAT_B),
    )
    .await;
    assert_ok(&out);
    assert!(!stderr(&out).contains(VIA_SERVICE));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["host_login"], "bob");

    // And the service sees what was stored meanwhile.
    let gw = setup.start().await;
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_B)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(format!("Bearer {PAT_B}").as_str())
    );
    gw.stop().await;
}

/// The problem `code` a request to the admin socket is refused with.
async fn refused(path: &Path, method: Method, uri: &str, body: Option<&str>) -> String {
    let mut admin = client::connect(path).await.unwrap().expect("a service");
    let body = body.map(|b| zeroize::Zeroizing::new(b.as_bytes().to_vec()));
    match admin.call::<serde_json::Value>(method, uri, body).await {
        Err(AdminClientError::Refused { code, detail, .. }) => {
            assert!(!detail.is_empty());
            code
        }
        other => panic!("{uri}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_stable_codes() {
    let (setup, _host) = setup(&Options::default()).await;
    let gw = setup.start().await;
    let sock = socket_path(&setup);
    let secret = "/v1/integrations/ghe/secret";
    for (method, uri, body, code) in [
        (Method::GET, "/v1/nothing", None, "not-found"),
        (
            Method::DELETE,
            "/v1/vault/records",
            None,
            "method-not-allowed",
        ),
        (
            Method::PUT,
            "/v1/integrations/nope/secret",
            Some(r#"{"type":"token","secret":"x"}"#),
            "unknown-integration",
        ),
        (
            Method::PUT,
            secret,
            Some(r#"{"type":"carrier-pigeon","secret":"x"}"#),
            "bad-request",
        ),
        (
            Method::PUT,
            secret,
            Some(r#"{"type":"token"}"#),
            "bad-request",
        ),
        (Method::PUT, secret, Some("not json"), "bad-request"),
        (
            Method::PUT,
            "/v1/integrations/ghe/users/not%20an%20account/pat",
            Some(r#"{"token":"x"}"#),
            "bad-request",
        ),
        (
            Method::PUT,
            "/v1/integrations/ghe/users/5b10ac8d82e05b22cc7d4ef5/pat",
            Some(r#"{"token":"x","access_key_id":"y"}"#),
            "bad-request",
        ),
        (
            Method::POST,
            "/v1/vault/rotate-key",
            Some(r#"{"key":"too short"}"#),
            "bad-request",
        ),
    ] {
        assert_eq!(
            refused(&sock, method, uri, body).await,
            code,
            "{uri} {body:?}"
        );
    }
    let huge = format!(
        r#"{{"type":"token","secret":"{}"}}"#,
        "x".repeat(patgate::adminsock::BODY_LIMIT)
    );
    assert_eq!(
        refused(&sock, Method::PUT, secret, Some(&huge)).await,
        "body-too-large"
    );
    // The current key is not a new key.
    let current = std::fs::read_to_string(setup.dir.path().join("master-key")).unwrap();
    let body = format!(r#"{{"key":"{}"}}"#, current.trim());
    assert_eq!(
        refused(&sock, Method::POST, "/v1/vault/rotate-key", Some(&body)).await,
        "bad-request"
    );
    assert_eq!(gw.runtime.vault().key_version(), 1);
    gw.stop().await;
}

/// Waits until the load tasks have had `n` more answers.
async fn wait_for(n: usize, done: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    for _ in 0..n {
        done.recv().await.expect("the load tasks ended early");
    }
}

/// What one load task checks on every answer.
#[derive(Clone, Copy)]
enum Load {
    /// A read with the integration token.
    Read,
    /// A create-branch action with this user's PAT.
    Action(&'static str, &'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_key_while_serving_fails_no_request() {
    const FILLER_PATS: usize = 2000;
    let (setup, host) = setup(&Options::default()).await;
    let config = setup.config_path.clone();
    let gw = Arc::new(setup.start().await);
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    gw.store_pat(ACCOUNT_B, PAT_B).await;
    // More records, so the rotation takes a while under the load.
    let mut fillers = tokio::task::JoinSet::new();
    for i in 0..FILLER_PATS {
        let gw = gw.clone();
        fillers.spawn(async move {
            gw.store_pat(&format!("filler-{i:04}"), &format!("ghp_filler{i:04}"))
                .await
        });
    }
    fillers.join_all().await;
    let old_key_copy = setup.dir.path().join("old-master-key");
    std::fs::copy(setup.dir.path().join("master-key"), &old_key_copy).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for load in [
        Load::Read,
        Load::Read,
        Load::Action(ACCOUNT_A, PAT_A),
        Load::Action(ACCOUNT_B, PAT_B),
        Load::Read,
        Load::Action(ACCOUNT_A, PAT_A),
    ] {
        let (gw, stop, done_tx) = (gw.clone(), stop.clone(), done_tx.clone());
        tasks.push(tokio::spawn(async move {
            let client = gw.client();
            let mut failures = Vec::new();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (request, status, credential, login) = match load {
                    Load::Read => (
                        gw.get("/git/ghe/api/v3/repos/acme/api/branches"),
                        200,
                        "integration",
                        "integration-bot",
                    ),
                    Load::Action(account, pat) => (
                        gw.create_branch(Some(account)),
                        201,
                        "user",
                        if pat == PAT_A { "alice" } else { "bob" },
                    ),
                };
                sent += 1;
                match client.send(&request).await {
                    Ok(r)
                        if r.status() == status
                            && r.headers()["patgate-credential"] == credential
                            && r.headers()["x-host-saw-login"] == login => {}
                    Ok(r) => failures.push(format!(
                        "{} {:?}: {}",
                        r.status(),
                        r.headers(),
                        String::from_utf8_lossy(r.body())
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
                let _ = done_tx.send(());
            }
            (sent, failures)
        }));
    }
    drop(done_tx);
    wait_for(30, &mut done).await;

    // Answers that arrive while the command runs (its start-up included) queue up here.
    while done.try_recv().is_ok() {}
    let out = cli(&config, &["vault", "rotate-key"], None).await;
    let during = done.len();
    assert_ok(&out);
    assert!(stderr(&out).contains(VIA_SERVICE), "{}", stderr(&out));
    let expected_records = FILLER_PATS + 3;
    assert!(
        stdout(&out).contains(&format!(
            "rotated the master key from version 1 to 2: {expected_records} record(s) re-encrypted"
        )),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("now holds the new key (version 2)"));
    assert!(!setup.dir.path().join("master-key.new").exists());
    assert_eq!(gw.runtime.vault().key_version(), 2);
    // Keep the load on with the new key in use.
    wait_for(30, &mut done).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut failures = Vec::new();
    for task in tasks {
        let (sent, failed) = task.await.unwrap();
        total += sent;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {failures:#?}",
        failures.len()
    );
    eprintln!(
        "{total} requests, {during} of them answered while `vault rotate-key` ran \
         ({expected_records} records), none failed"
    );
    let metrics = gw.runtime.metrics().encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.ends_with("vault_key_rotations_total 1")),
        "{metrics}"
    );
    // Every record the host saw carried the right credential (checked per answer above);
    // and the vault holds nothing under the old version.
    for record in gw.runtime.vault().list().await.unwrap() {
        assert_eq!(record.key_version, 2, "{}", record.id);
    }
    let gw = Arc::try_unwrap(gw).unwrap();
    gw.stop().await;

    // After a restart: the key file's new key opens the vault, the old key does not.
    let old = MasterKey::load_file(&old_key_copy).unwrap();
    let state = setup.dir.path().join("state");
    let opened = open_vault(&state, &old).await;
    assert!(
        matches!(opened, Err(VaultError::WrongMasterKey { key_version: 2 })),
        "{opened:?}"
    );
    let gw = setup.start().await;
    assert_eq!(gw.runtime.vault().key_version(), 2);
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_B)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(format!("Bearer {PAT_B}").as_str())
    );
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/repos/acme/api"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        host.last().authorization(),
        Some(format!("Bearer {INTEGRATION_TOKEN}").as_str())
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_on_a_stopped_service_and_recovery_of_an_unfinished_one() {
    let (setup, host) = setup(&Options::default()).await;
    let config = setup.config_path.clone();
    let key_file = setup.dir.path().join("master-key");
    let before = std::fs::read_to_string(&key_file).unwrap();

    // No service: the command rotates the vault itself.
    let out = cli(&config, &["vault", "rotate-key"], None).await;
    assert_ok(&out);
    assert!(!stderr(&out).contains(VIA_SERVICE));
    assert!(
        stdout(&out)
            .contains("rotated the master key from version 1 to 2: 1 record(s) re-encrypted"),
        "{}",
        stdout(&out)
    );
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(before, after);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A rotation that committed in the vault but stopped before the key file was replaced
    // (the crash window of the last step): the next open finds `<file>.new` and finishes.
    let pending = setup.dir.path().join("master-key.new");
    let new_key = MasterKey::generate();
    new_key.write_new(&pending).unwrap();
    {
        let current = MasterKey::load_file(&key_file).unwrap();
        let state = setup.dir.path().join("state");
        let vault = open_vault(&state, &current).await.unwrap();
        let rotation = vault
            .rotate_key(MasterKey::load_file(&pending).unwrap())
            .await
            .unwrap();
        assert_eq!(rotation.to_version, 3);
    }
    let out = cli(&config, &["vault", "list"], None).await;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("finished an interrupted master key rotation")
            && stderr(&out).contains("now holds the key of version 3"),
        "{}",
        stderr(&out)
    );
    assert!(!pending.exists());
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        new_key.to_base64().as_str()
    );

    let gw = setup.start().await;
    assert_eq!(gw.runtime.vault().key_version(), 3);
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/repos/acme/api"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        host.last().authorization(),
        Some(format!("Bearer {INTEGRATION_TOKEN}").as_str())
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_with_a_systemd_credential_names_the_file_to_replace() {
    let (setup, _host) = setup(&Options::default()).await;
    let config = setup.config_path.clone();
    // The same key, served the way systemd's LoadCredential= does.
    let credentials = setup.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::copy(
        setup.dir.path().join("master-key"),
        credentials.join("master-key"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[master_key]\nfile = \"master-key\"",
        "[master_key]\nsystemd_credential = true",
    );
    std::fs::write(&config, text).unwrap();
    let run = |args: &'static [&'static str]| {
        let (config, credentials) = (config.clone(), credentials.clone());
        tokio::task::spawn_blocking(move || {
            let mut all = args.to_vec();
            all.extend(["--config", config.to_str().unwrap()]);
            patgate_as(&all, None, &[("CREDENTIALS_DIRECTORY", &credentials)], None)
        })
    };

    let out = run(&["vault", "rotate-key"]).await.unwrap();
    assert_ok(&out);
    let pending = setup.dir.path().join("state").join("master-key.new");
    assert!(
        stdout(&out).contains(&format!(
            "the new key (version 2) is in {}",
            pending.display()
        )) && stdout(&out).contains("LoadCredential=master-key"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Until the credential is replaced, patgate opens the vault with the pending key and says so.
    let out = run(&["vault", "list"]).await.unwrap();
    assert_ok(&out);
    assert!(
        stderr(&out).contains("point the systemd credential `master-key` at that key"),
        "{}",
        stderr(&out)
    );
    // The admin replaces the credential as told.
    std::fs::rename(&pending, credentials.join("master-key")).unwrap();
    let out = run(&["vault", "list"]).await.unwrap();
    assert_ok(&out);
    assert!(
        !stderr(&out).contains("systemd credential"),
        "{}",
        stderr(&out)
    );
}

/// `patgate run`, the real service process: it opens the socket, changes made through it are
/// audit events with `via="cli"` and no secret in any log line, and SIGTERM removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patgate_run_serves_the_socket_audits_and_removes_it_at_sigterm() {
    use tokio::io::AsyncBufReadExt as _;
    let (setup, _host) = setup(&Options::default()).await;
    let config = setup.config_path.clone();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("PATGATE_CONFIG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let serving = line.contains("patgate is serving");
            log.push(line);
            if serving {
                return;
            }
        }
        panic!("patgate run ended without serving: {log:#?}");
    })
    .await
    .expect("patgate run did not start serving in time");
    let sock = socket_path(&setup);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = cli(
        &config,
        &["pat", "set", "--integration", "ghe", "--account", ACCOUNT_A],
        Some(PAT_A),
    )
    .await;
    assert_ok(&out);
    assert!(stderr(&out).contains(VIA_SERVICE));
    let out = cli(&config, &["vault", "rotate-key"], None).await;
    assert_ok(&out);
    assert!(stderr(&out).contains(VIA_SERVICE));

    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("patgate run did not stop after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
    assert!(!sock.exists(), "the socket must be gone after SIGTERM");
    // The actor is the socket's peer: this test's own OS user, as `id` names it.
    let actor = format!("actor=\"uid={}({})\"", id_of("-u"), id_of("-un"));
    let audit = |event: &str| {
        log.iter().any(|l| {
            l.contains("patgate::audit")
                && l.contains(&format!("event=\"{event}\""))
                && l.contains("via=\"cli\"")
                && l.contains(&actor)
        })
    };
    assert!(audit("pat-stored"), "{log:#?}");
    assert!(audit("key-rotated"), "{log:#?}");
    let new_key = std::fs::read_to_string(setup.dir.path().join("master-key")).unwrap();
    for line in &log {
        assert!(!line.contains(PAT_A), "a PAT in the log: {line}");
        assert!(
            !line.contains(new_key.trim()),
            "the master key in the log: {line}"
        );
    }
}

/// `id FLAG` (`-u`, `-un`): this process's OS user as the system names it.
fn id_of(flag: &str) -> String {
    let out = std::process::Command::new("id").arg(flag).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
