//! `patgate store copy` between the sled files and PostgreSQL (tests/run.sh starts a
//! throw-away cluster; each test makes its own database), run as the real binary: a PAT
//! stored before a copy is what the git host receives from a gateway on the copy, either
//! way; each refusal says why, exits 1 and leaves both stores as they were; a record that
//! does not decrypt is named, and the copy it stopped finishes when run again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::postgres::{fresh_database, query};
use common::*;
use patgate::store::{RecordStore, SledRecords, Space};
use patgate::vault::{Credential, MasterKey, Vault};

/// `patgate store copy --from FROM --to TO --config CONFIG` and any further arguments.
fn store_copy(config: &Path, from: &str, to: &str, more: &[&str]) -> Output {
    let config = config.to_str().unwrap();
    let mut args = vec![
        "store", "copy", "--from", from, "--to", to, "--config", config,
    ];
    args.extend_from_slice(more);
    let out = patgate(&args);
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !shown.contains("postgres@"),
        "the connection string is never printed: {shown}"
    );
    out
}

/// Asserts the command failed with exit code 1, `message` on stderr and nothing on stdout.
fn assert_refused(out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(out), stderr(out));
    assert!(stderr(out).contains(message), "{}", stderr(out));
    assert_eq!(stdout(out), "", "a refusal prints no result");
}

/// A sled gateway's files (vault with the integration token) in front of a host.
async fn sled_setup() -> (Setup, RecordingHost) {
    let ca = Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    (
        Setup::with_ca(dir, ca, &host, &Options::default()).await,
        host,
    )
}

/// Points the setup's config at a fresh database as well (`[store] kind = "postgres"`, its
/// state_dir unchanged), migrated when `migrate`; answers the database's connection string.
async fn add_postgres(setup: &Setup, migrate: bool) -> String {
    let url = fresh_database().await;
    write_private(setup.dir.path(), "store-url", &url);
    let mut config = std::fs::read_to_string(&setup.config_path).unwrap();
    config.push_str("[store]\nkind = \"postgres\"\nurl_file = \"store-url\"\ntls = \"disable\"\n");
    std::fs::write(&setup.config_path, config).unwrap();
    if migrate {
        let out = patgate(&[
            "store",
            "migrate",
            "--config",
            setup.config_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    url
}

/// `postgresql://127.0.0.1:PORT/DB`: how patgate names the database of `url`.
fn location(url: &str) -> String {
    let (_, rest) = url.split_once('@').unwrap();
    format!("postgresql://{rest}")
}

/// The rows of `space` (0 records, 1 settings) in the database.
async fn rows(url: &str, space: i16) -> i64 {
    query(
        url,
        &format!("SELECT count(*) FROM patgate_records WHERE space = {space}"),
    )
    .await[0]
        .get(0)
}

fn key_of(setup: &Setup) -> MasterKey {
    MasterKey::load_file(&setup.dir.path().join("master-key")).unwrap()
}

/// The sled store in `dir`, once the last holder let go of it (a dropped vault's lock may
/// linger a moment in this process).
async fn sled_store(dir: &Path) -> SledRecords {
    retry_locked(
        |e| matches!(e, patgate::store::SledOpenError::Locked),
        || std::future::ready(SledRecords::open(dir, 1024 * 1024)),
    )
    .await
    .unwrap()
}

fn state(setup: &Setup) -> PathBuf {
    setup.dir.path().join("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pat_stored_before_a_copy_is_served_from_the_copy_either_way() {
    let (setup, host) = sled_setup().await;
    let gw = setup.start().await;
    gw.put_pat_ok(ACCOUNT_A, PAT_A).await;
    gw.stop().await;

    let url = add_postgres(&setup, true).await;
    let db = location(&url);
    let sled = state(&setup).display().to_string();
    let copied = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert!(
        stdout(&copied).contains(&format!(
            "copied 2 record(s), 4 setting(s) from {sled} to {db}; every record decrypts from {db} (key version 1)"
        )),
        "{}",
        stdout(&copied)
    );
    assert!(
        !stdout(&copied).contains(PAT_A) && !stdout(&copied).contains(INTEGRATION_TOKEN),
        "no secret is printed"
    );
    assert_eq!(
        rows(&url, 1).await,
        4,
        "format, key version, key check, write version; not sled's own"
    );

    // A gateway on the database serves the PAT stored in sled.
    let gw = setup.start().await;
    let created = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    // A second PAT, stored on the database only.
    gw.put_pat_ok(ACCOUNT_B, PAT_B).await;
    gw.stop().await;

    // The database now holds a vault that the sled files are not a copy of: never written over.
    let again = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &again,
        &format!("{db} already holds a vault (3 record(s)) that is not a copy of the one in {sled}; a copy never writes over a vault"),
    );
    assert_eq!(rows(&url, 0).await, 3);

    // Back into a new directory; a second run finds it done.
    let back = setup.dir.path().join("state-back");
    let back_arg = back.to_str().unwrap();
    let copied = store_copy(
        &setup.config_path,
        "postgres",
        "sled",
        &["--state-dir", back_arg],
    );
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert!(
        stdout(&copied).contains(&format!(
            "copied 3 record(s), 4 setting(s) from {db} to {back_arg}; every record decrypts from {back_arg} (key version 1)"
        )),
        "{}",
        stdout(&copied)
    );
    let same = store_copy(
        &setup.config_path,
        "postgres",
        "sled",
        &["--state-dir", back_arg],
    );
    assert!(same.status.success(), "{}", stderr(&same));
    assert!(
        stdout(&same).contains(&format!(
            "{back_arg} already holds every record and setting of {db}, byte for byte: nothing to copy"
        )),
        "{}",
        stdout(&same)
    );

    // A sled gateway on the copy serves both PATs.
    edit_config(
        &setup.config_path,
        "[store]\nkind = \"postgres\"\nurl_file = \"store-url\"\ntls = \"disable\"\n",
        "",
    );
    edit_config(
        &setup.config_path,
        "state_dir = \"state\"",
        "state_dir = \"state-back\"",
    );
    let gw = setup.start().await;
    for (account, pat) in [(ACCOUNT_B, PAT_B), (ACCOUNT_A, PAT_A)] {
        let created = gw
            .client()
            .send(&gw.create_branch(Some(account)))
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(host.last().authorization(), Some(&*format!("Bearer {pat}")));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_holds_another_vault_is_never_written() {
    let (setup, _host) = sled_setup().await;
    let url = add_postgres(&setup, true).await;
    let config = setup.config_path.to_str().unwrap();
    // A vault of its own in the database, made with the same key: another key check.
    let init = patgate(&["vault", "init", "--config", config]);
    assert!(init.status.success(), "{}", stderr(&init));
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!(
            "{} already holds a vault (0 record(s)) that is not a copy of the one in {}; a copy never writes over a vault. Copy into an empty store: a new database (made with `patgate store migrate`), or for sled a new directory (--state-dir DIR); nothing was written",
            location(&url),
            state(&setup).display()
        ),
    );
    assert_eq!(rows(&url, 0).await, 0);

    // The other way: the sled vault is not the database's either.
    let out = store_copy(&setup.config_path, "postgres", "sled", &[]);
    assert_refused(
        &out,
        &format!(
            "{} already holds a vault (1 record(s)) that is not a copy of the one in {}",
            state(&setup).display(),
            location(&url)
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_database_is_refused_with_the_command_that_migrates_it() {
    let (setup, _host) = sled_setup().await;
    let url = add_postgres(&setup, false).await;
    let config = setup.config_path.to_str().unwrap();
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!("the database {} has no patgate schema: run `patgate store migrate` (`patgate store migrate --config {config}`)", location(&url)),
    );
    let tables = query(
        &url,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'patgate%'",
    )
    .await;
    assert_eq!(tables[0].get::<_, i64>(0), 0, "nothing was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_in_the_middle_of_a_key_rotation_is_refused() {
    let (setup, _host) = sled_setup().await;
    let url = add_postgres(&setup, true).await;
    {
        // The marker a rotation to key version 2 leaves until it finishes (`rotation.rs`);
        // opening the vault with the new key would finish it, which a copy must not do.
        let store = sled_store(&state(&setup)).await;
        for (name, value) in [
            (&b"rotation-to"[..], 2u32.to_be_bytes().to_vec()),
            (b"rotation-check", b"sealed under the new key".to_vec()),
            (b"rotation-old-key", b"sealed under the new key".to_vec()),
        ] {
            store.put(Space::Settings, name, value).await.unwrap();
        }
        store.flush().await.unwrap();
    }
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!(
            "the vault in {} is in the middle of a master key rotation: finish it first (`patgate vault rotate-key --config {}` resumes it, with the new key in {}), then run the copy again; nothing was copied",
            state(&setup).display(),
            setup.config_path.display(),
            setup.dir.path().join("master-key.new").display()
        ),
    );
    assert_eq!(rows(&url, 0).await + rows(&url, 1).await, 0);
    let store = sled_store(&state(&setup)).await;
    assert_eq!(
        store.get(Space::Settings, b"rotation-to").await.unwrap(),
        Some(2u32.to_be_bytes().to_vec()),
        "the source is left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_that_does_not_open_the_source_is_refused() {
    let (setup, _host) = sled_setup().await;
    let url = add_postgres(&setup, true).await;
    let key_file = setup.dir.path().join("master-key");
    std::fs::remove_file(&key_file).unwrap();
    MasterKey::generate().write_new(&key_file).unwrap();
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!(
            "the master key of {} (master_key) does not open the vault to be copied (key version 1): the copy needs the key that vault was made with; nothing was copied",
            setup.config_path.display()
        ),
    );
    assert_eq!(rows(&url, 0).await + rows(&url, 1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_files_held_by_a_running_gateway_are_refused() {
    let (setup, _host) = sled_setup().await;
    let gw = setup.start().await;
    let url = add_postgres(&setup, true).await;
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!(
            "{} (state_dir) is in use: a running patgate holds the vault there (sled locks its files while a process has them open). Stop it (`systemctl stop patgate`), then run the copy again; nothing was copied",
            state(&setup).display()
        ),
    );
    assert_eq!(rows(&url, 0).await, 0);
    // The same into sled: the running gateway's directory is not written either.
    let out = store_copy(&setup.config_path, "postgres", "sled", &[]);
    assert_refused(
        &out,
        "(state_dir) is in use: a running patgate holds the vault there",
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_config_without_postgres_or_a_copy_onto_itself_is_refused() {
    let (setup, _host) = sled_setup().await;
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!("{}: `patgate store copy` takes the PostgreSQL side from `[store]`, and this config has `kind = \"sled\"`", setup.config_path.display()),
    );
    let out = store_copy(&setup.config_path, "sled", "sled", &[]);
    assert_refused(&out, "--from and --to name the same store");
}

/// A record whose sealed value lost its integrity stops the copy before its page is written,
/// named by its id (never its contents); once restored, the copy goes on from where it
/// stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_named_and_the_copy_it_stopped_finishes_when_run_again() {
    // More PATs than one page of the copy (256), the damaged one on the second page.
    const PATS: usize = 300;
    let (setup, _host) = sled_setup().await;
    {
        let vault = open_vault(&state(&setup), &key_of(&setup)).await.unwrap();
        for i in 0..PATS {
            vault
                .put_user_pat(
                    "ghe",
                    &format!("account-{i:03}"),
                    &Credential::Token(format!("ghp_Pat{i:03}DoNotLeak").into()),
                    &pat_meta(),
                )
                .await
                .unwrap();
        }
    }
    let url = add_postgres(&setup, true).await;
    let damaged_key = {
        let store = sled_store(&state(&setup)).await;
        let all = store.scan(Space::Records, b"", None, 1000).await.unwrap();
        assert_eq!(all.len(), PATS + 1);
        let (key, mut value) = all.last().unwrap().clone();
        // The last byte is the AES-GCM tag's.
        *value.last_mut().unwrap() ^= 0x01;
        store.put(Space::Records, &key, value).await.unwrap();
        store.flush().await.unwrap();
        key
    };

    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert_refused(
        &out,
        &format!(
            "the copy stopped: the vault at {} is corrupt: the PAT of account `account-{:03}` for integration `ghe`: it fails authentication (damaged, or copied from another record). {} was not made a vault",
            state(&setup).display(),
            PATS - 1,
            location(&url)
        ),
    );
    assert!(
        !stderr(&out).contains("DoNotLeak"),
        "no record's contents: {}",
        stderr(&out)
    );
    assert_eq!(rows(&url, 0).await, 256, "the first page, written whole");
    assert_eq!(rows(&url, 1).await, 0, "no vault settings");
    // Nothing will use the unfinished copy.
    let refused = setup.try_start().await.unwrap_err();
    assert!(refused.contains("there is no vault in"), "{refused}");

    {
        let store = sled_store(&state(&setup)).await;
        let mut value = store
            .get(Space::Records, &damaged_key)
            .await
            .unwrap()
            .unwrap();
        *value.last_mut().unwrap() ^= 0x01;
        store
            .put(Space::Records, &damaged_key, value)
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let out = store_copy(&setup.config_path, "sled", "postgres", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "{} held 256 record(s) and no vault: an unfinished copy, finished now",
            location(&url)
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("copied {} record(s), 4 setting(s)", PATS + 1)),
        "{}",
        stdout(&out)
    );
    let vault = Vault::open_in(
        Box::new(
            patgate::store::Postgres::connect(&patgate::store::PgSettings {
                url: url.clone().into(),
                tls: patgate::store::PgTls::Disable,
                pool_size: 2,
                cores: 0,
                connect_timeout: std::time::Duration::from_secs(5),
                statement_timeout: std::time::Duration::from_secs(5),
            })
            .unwrap()
            .records(),
        ),
        &key_of(&setup),
    )
    .await
    .unwrap();
    let (pat, _) = vault
        .user_pat("ghe", &format!("account-{:03}", PATS - 1))
        .await
        .unwrap()
        .unwrap();
    let Credential::Token(token) = pat else {
        panic!("not a token");
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "the test compares the copied PAT with the one stored"
    )]
    let token = secrecy::ExposeSecret::expose_secret(&token).to_string();
    assert!(
        token == format!("ghp_Pat{:03}DoNotLeak", PATS - 1),
        "the copy holds another PAT"
    );
}
