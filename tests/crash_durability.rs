//! Crash durability of the vault, end to end on the real binary (`patgate run`):
//!
//! - SIGKILL while hundreds of PATs are being stored through `/v1`: after a restart every
//!   write that was acknowledged is there and reaches the host as exactly the PAT sent; a
//!   write that was not acknowledged is either absent or whole;
//! - a `db` file with flipped bytes or cut short, and a wrong master key: `patgate run` refuses
//!   to start, says why, and prints no secret;
//! - one record whose ciphertext is damaged: patgate starts (opening reads no record), refuses
//!   that one credential with 503 `unavailable` and a log line naming the record, sends the
//!   host nothing for it, serves everyone else, and takes a fresh PAT over it.
//!
//! Bounded: no sleeps and no timing assertions; the kill comes after a number of acknowledged
//! writes, and every wait on the child has a generous timeout that only a hang would reach.

#![allow(
    clippy::disallowed_methods,
    reason = "the test compares stored PATs with those sent"
)]

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use common::process::{client, kill_during_pat_writes, Api, KilledWrites, Running};
use common::*;
use patgate::client::SignedClient;
use patgate::vault::{Credential, MasterKey};
use secrecy::ExposeSecret as _;

/// PATs the writers may store: more than get acknowledged before the kill.
const ACCOUNTS: usize = 600;
/// Concurrent writers.
const WRITERS: usize = 8;
/// The kill comes once this many writes were acknowledged.
const KILL_AFTER_ACKS: usize = 300;
fn account(i: usize) -> String {
    format!("crash-acct-{i:04}")
}

/// A GitHub-shaped token per account, unique in every position the host compares.
fn pat(i: usize) -> String {
    format!("ghp_Crash{i:04}DoNotLeak0123456789abcdefghijk")
}

fn login(i: usize) -> String {
    format!("crash-user-{i:04}")
}

/// `patgate run`, once it also answered its start-up question to the host (tests that count
/// the host's requests start after that).
async fn start(setup: &Setup) -> Running {
    let mut running = Running::start(setup).await;
    running.wait_for_log("host answers").await;
    running
}

/// What a user sees of their PAT after the restart, through the API: `None` when none is
/// stored, else the host login an action reached the host as.
async fn stored_pat_as_seen_by_the_host(
    client: &SignedClient,
    api: Api,
    i: usize,
) -> Option<String> {
    let status = client.send(&api.pat_status(&account(i))).await.unwrap();
    assert_eq!(status.status(), 200);
    if json(&status)["configured"] == false {
        let refused = client.send(&api.create_branch(&account(i))).await.unwrap();
        assert_eq!(
            problem_code(&refused),
            "user-pat-required",
            "{}",
            account(i)
        );
        return None;
    }
    assert_eq!(json(&status)["host_login"], login(i), "{}", account(i));
    let acted = client.send(&api.create_branch(&account(i))).await.unwrap();
    assert_eq!(
        acted.status(),
        201,
        "{}: {}",
        account(i),
        String::from_utf8_lossy(acted.body())
    );
    assert_eq!(acted.headers()["patgate-credential"], "user");
    // The host maps each token to its login: this header names the token the host received.
    Some(
        acted.headers()["x-host-saw-login"]
            .to_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_storing_pats_loses_no_acknowledged_write() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("crash CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    for i in 0..ACCOUNTS {
        host.add_user(&pat(i), &login(i), "repo");
    }
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options::default(),
    )
    .await;
    let mut run = start(&setup).await;
    let client = client(&setup);
    // The kill comes with the other writers' requests in flight.
    let KilledWrites {
        acked,
        unanswered,
        acked_at_kill,
        in_flight_at_kill: in_flight,
    } = kill_during_pat_writes(
        &mut run,
        &client,
        (WRITERS, ACCOUNTS, KILL_AFTER_ACKS),
        account,
        pat,
    )
    .await;

    // The same files, a new process.
    let run = start(&setup).await;
    let api = run.api();
    for &i in &acked {
        assert_eq!(
            stored_pat_as_seen_by_the_host(&client, api, i).await,
            Some(login(i)),
            "an acknowledged PAT is missing or wrong after SIGKILL: {}",
            account(i)
        );
    }
    let mut unacked_present = 0;
    for &i in &unanswered {
        // Whole and correct, or absent.
        if let Some(seen) = stored_pat_as_seen_by_the_host(&client, api, i).await {
            assert_eq!(seen, login(i));
            unacked_present += 1;
        }
    }
    // Never sent: absent (the check above can tell absent from present).
    let sent: HashSet<usize> = acked.iter().chain(&unanswered).copied().collect();
    let never_sent = (0..ACCOUNTS).find(|i| !sent.contains(i)).unwrap();
    assert_eq!(
        stored_pat_as_seen_by_the_host(&client, api, never_sent).await,
        None
    );
    run.stop().await;

    // And straight from the vault: every acknowledged PAT decrypts to exactly what was sent.
    let key = MasterKey::load_file(&setup.dir.path().join("master-key")).unwrap();
    let vault = open_vault(&setup.dir.path().join("state"), &key)
        .await
        .unwrap();
    for &i in &acked {
        let (credential, meta) = vault.user_pat("ghe", &account(i)).await.unwrap().unwrap();
        let Credential::Token(token) = credential else {
            panic!("{}: not a token", account(i))
        };
        assert!(
            token.expose_secret() == pat(i),
            "{}: another token",
            account(i)
        );
        assert_eq!(meta.host_login, login(i));
    }
    // The integration secret, the acknowledged PATs and the unacknowledged ones that made it.
    assert_eq!(
        vault.count().await.unwrap(),
        1 + acked.len() + unacked_present
    );
    eprintln!(
        "crash durability: {} writes acknowledged ({acked_at_kill} when the kill was ordered), \
         {in_flight} in flight at the kill, {} unanswered of which {unacked_present} were stored; \
         all {} acknowledged PATs present and correct after restart",
        acked.len(),
        unanswered.len(),
        acked.len()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The secrets a setup holds, as text: none may appear in patgate's output.
fn secrets(setup: &Setup, pats: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = pats.iter().map(|p| p.to_string()).collect();
    all.push(INTEGRATION_TOKEN.to_string());
    let key = std::fs::read_to_string(setup.dir.path().join("master-key")).unwrap();
    all.push(key.trim().to_string());
    all
}

fn assert_no_secret(logs: &[String], secrets: &[String]) {
    for line in logs {
        for secret in secrets {
            assert!(!line.contains(secret.as_str()), "a secret in: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_or_a_wrong_master_key_stops_patgate_at_start() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("crash CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let pats: Vec<String> = (0..40).map(pat).collect();
    for (i, token) in pats.iter().enumerate() {
        host.add_user(token, &login(i), "repo");
    }
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options::default(),
    )
    .await;
    let client = client(&setup);
    let run = start(&setup).await;
    for (i, token) in pats.iter().enumerate() {
        let stored = client
            .send(&run.api().put_pat(&account(i), token))
            .await
            .unwrap();
        assert_eq!(stored.status(), 200);
    }
    run.stop().await;

    let dir = setup.dir.path();
    let state = dir.join("state");
    let pristine = dir.join("state.pristine");
    copy_dir(&state, &pristine);
    let db = std::fs::read(state.join("db")).unwrap();
    // sled pads its segment (512 KiB) with zeros: damage goes halfway into what it wrote.
    let written = db.iter().rposition(|&b| b != 0).unwrap() + 1;
    let half = written / 2;
    let mut flipped = db.clone();
    flipped[half..half + 8].iter_mut().for_each(|b| *b ^= 0xff);
    let pat_refs: Vec<&str> = pats.iter().map(String::as_str).collect();
    let mut secrets = secrets(&setup, &pat_refs);
    let key_file = dir.join("master-key");
    let right_key = std::fs::read(&key_file).unwrap();

    let refused = |logs: Vec<String>, wants: &[&str], secrets: &[String]| {
        let text = logs.join("\n");
        for want in wants {
            assert!(text.contains(want), "wanted {want:?} in: {text}");
        }
        assert_no_secret(&logs, secrets);
    };
    let restore = || {
        std::fs::remove_dir_all(&state).unwrap();
        copy_dir(&pristine, &state);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    };

    // Bytes flipped in the middle of sled's log, and the log cut in half: sled itself would
    // open both as an older vault, without the PATs stored after the damage.
    for (what, bytes) in [("flipped", &flipped[..]), ("truncated", &db[..half])] {
        restore();
        std::fs::write(state.join("db"), bytes).unwrap();
        let logs = Running::spawn(&setup)
            .await
            .err()
            .unwrap_or_else(|| panic!("patgate started on a {what} db file"));
        refused(
            logs,
            &[
                &format!(
                    "the vault at {} is corrupt: the store holds",
                    state.display()
                ),
                // init, the integration secret and 40 PATs
                "of the 42 credential writes it acknowledged",
                "restore the state directory from a backup",
            ],
            &secrets,
        );
    }

    // Another master key.
    restore();
    std::fs::remove_file(&key_file).unwrap();
    MasterKey::generate().write_new(&key_file).unwrap();
    secrets.push(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .trim()
            .to_string(),
    );
    let logs = Running::spawn(&setup)
        .await
        .err()
        .expect("patgate started with a wrong master key");
    refused(
        logs,
        &["patgate: the master key does not match this vault (key version 1)"],
        &secrets,
    );

    // The same files undamaged, with the right key: it starts and serves the stored PATs,
    // so each refusal above was the damage.
    std::fs::remove_file(&key_file).unwrap();
    patgate::keys::write_private(&key_file, &right_key).unwrap();
    let run = start(&setup).await;
    assert_eq!(
        stored_pat_as_seen_by_the_host(&client, run.api(), 39).await,
        Some(login(39))
    );
    run.stop().await;
}

/// One record damaged where sled's own checksums cannot see it (its bytes changed through
/// sled, as a faulty disk controller or a stray tool could): patgate starts, because opening
/// reads no record, and refuses that one credential whenever it is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_damaged_record_is_refused_on_use_and_everything_else_is_served() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("crash CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options::default(),
    )
    .await;
    let client = client(&setup);
    let run = start(&setup).await;
    for (account, token) in [(ACCOUNT_A, PAT_A), (ACCOUNT_B, PAT_B)] {
        let stored = client
            .send(&run.api().put_pat(account, token))
            .await
            .unwrap();
        assert_eq!(stored.status(), 200);
    }
    run.stop().await;

    // Flip one ciphertext byte of ACCOUNT_A's record (the last 16 bytes are the tag).
    let state = setup.dir.path().join("state");
    let db = sled::Config::new()
        .path(&state)
        .mode(sled::Mode::LowSpace)
        .open()
        .unwrap();
    let records = db.open_tree("records").unwrap();
    let mut key = vec![2u8];
    for id in ["ghe", ACCOUNT_A] {
        key.extend_from_slice(&(id.len() as u32).to_be_bytes());
        key.extend_from_slice(id.as_bytes());
    }
    let mut value = records
        .get(&key)
        .unwrap()
        .expect("ACCOUNT_A's record")
        .to_vec();
    let at = value.len() - 17;
    value[at] ^= 0x01;
    records.insert(&key, value).unwrap();
    db.flush().unwrap();
    drop((records, db));

    let run = start(&setup).await;
    let api = run.api();
    let before = host.requests().len();
    let refused = client.send(&api.create_branch(ACCOUNT_A)).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(problem_code(&refused), "unavailable");
    assert_eq!(
        host.requests().len(),
        before,
        "the host got a request for a damaged credential"
    );
    // The clear metadata is whole, so the status still shows the PAT the user stored.
    let status = client.send(&api.pat_status(ACCOUNT_A)).await.unwrap();
    assert_eq!(json(&status)["configured"], true);

    // Everyone else is served.
    let acted = client.send(&api.create_branch(ACCOUNT_B)).await.unwrap();
    assert_eq!(acted.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_B}"))
    );
    assert_eq!(client.send(&api.read()).await.unwrap().status(), 200);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {INTEGRATION_TOKEN}"))
    );

    // The operator's log names the record and what is wrong with it.
    let logs = run.logs();
    assert!(
        logs.iter().any(|l| l.contains("vault error")
            && l.contains(&format!(
                "the PAT of account `{ACCOUNT_A}` for integration `ghe`: it fails authentication"
            ))),
        "{logs:?}"
    );

    // The user enters their PAT again: stored over the damaged record, and used.
    let stored = client.send(&api.put_pat(ACCOUNT_A, PAT_A)).await.unwrap();
    assert_eq!(stored.status(), 200);
    let acted = client.send(&api.create_branch(ACCOUNT_A)).await.unwrap();
    assert_eq!(acted.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    assert_no_secret(&run.logs(), &secrets(&setup, &[PAT_A, PAT_B]));
    run.stop().await;
}
