//! Tests of the vault as a whole: round trips, what lands on disk, tampering, locking.
#![allow(clippy::disallowed_methods, reason = "tests compare secrets")]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use secrecy::ExposeSecret as _;

use super::credential::tests::{same, samples};
use super::*;
use crate::store::sled_store::{
    open_sled, open_sled_within, write_watermark, DB_FILE, LOCK_FILE, RECORDS_TREE, SETTINGS_TREE,
    WATERMARK_FILE,
};

const ACCOUNT_A: &str = "5b10ac8d82e05b22cc7d4ef5";
const ACCOUNT_B: &str = "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077";

fn key(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; 32])
}

fn pat_meta(login: &str) -> PatMeta {
    PatMeta {
        host_login: login.into(),
        scopes: vec!["repo".into(), "read:org".into()],
        validated_at: 1_700_000_100,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_100,
        last_used_at: None,
        refused: None,
        expires_at: None,
    }
}

fn token(s: &str) -> Credential {
    Credential::Token(s.into())
}

async fn new_vault() -> (tempfile::TempDir, PathBuf, Vault) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let vault = Vault::init(&dir, &key(1)).await.unwrap();
    (tmp, dir, vault)
}

fn raw_pat_key(integration: &str, account: &str) -> Vec<u8> {
    let i = record::validate_id("integration", integration).unwrap();
    let a = record::validate_id("account", account).unwrap();
    record::pat_key(i, a).as_ref().to_vec()
}

fn raw_secret_key(integration: &str) -> Vec<u8> {
    let i = record::validate_id("integration", integration).unwrap();
    record::secret_key(i).as_ref().to_vec()
}

async fn raw_get(vault: &Vault, key: &[u8]) -> Vec<u8> {
    vault
        .store()
        .get(Space::Records, key)
        .await
        .unwrap()
        .unwrap()
}

async fn raw_set(vault: &Vault, key: &[u8], value: &[u8]) {
    vault
        .store()
        .put(Space::Records, key, value.to_vec())
        .await
        .unwrap();
}

fn assert_corrupt<T: fmt::Debug>(result: Result<T, VaultError>, context: &str) -> String {
    match result {
        Err(err @ VaultError::Corrupt { .. }) => err.to_string(),
        other => panic!("{context}: expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_all_credential_kinds() {
    let (_tmp, _dir, vault) = new_vault().await;
    for (n, credential) in samples().iter().enumerate() {
        let integration = format!("int-{n}");
        vault
            .put_integration_secret(&integration, credential)
            .await
            .unwrap();
        let back = vault
            .integration_secret(&integration)
            .await
            .unwrap()
            .unwrap();
        assert!(same(credential, &back), "{credential:?} / {back:?}");

        let meta = pat_meta(&format!("login{n}"));
        vault
            .put_user_pat(&integration, ACCOUNT_B, credential, &meta)
            .await
            .unwrap();
        let (back, back_meta) = vault
            .user_pat(&integration, ACCOUNT_B)
            .await
            .unwrap()
            .unwrap();
        assert!(same(credential, &back));
        assert_eq!(back_meta, meta);
        assert_eq!(
            vault.user_pat_meta(&integration, ACCOUNT_B).await.unwrap(),
            Some(meta)
        );
    }
    assert_eq!(vault.count().await.unwrap(), 2 * samples().len());
    assert!(vault.integration_secret("absent").await.unwrap().is_none());
    assert!(vault.user_pat("int-0", ACCOUNT_A).await.unwrap().is_none());
    assert!(vault
        .user_pat_meta("int-0", ACCOUNT_A)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn overwrite_replaces_and_integration_secret_keeps_created_at() {
    let (_tmp, _dir, vault) = new_vault().await;
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("first"), &pat_meta("a1"))
        .await
        .unwrap();
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("second"), &pat_meta("a2"))
        .await
        .unwrap();
    let (cred, meta) = vault.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap();
    assert!(same(&cred, &token("second")));
    assert_eq!(meta.host_login, "a2");
    assert_eq!(vault.count().await.unwrap(), 1);

    vault
        .put_integration_secret("ghe", &token("one"))
        .await
        .unwrap();
    // Backdate the stored created_at, as if the secret had been set long ago.
    let key = raw_secret_key("ghe");
    let value = raw_get(&vault, &key).await;
    let raw = RawValue::parse(&value).unwrap();
    let mut meta: ClearMeta = serde_json::from_slice(raw.meta).unwrap();
    meta.created_at = 1000;
    let (ct, tag) = raw.sealed.split_at(raw.sealed.len() - record::TAG_LEN);
    let backdated = RawValue::encode(
        raw.key_version,
        raw.nonce,
        &serde_json::to_vec(&meta).unwrap(),
        ct,
        tag.try_into().unwrap(),
    );
    raw_set(&vault, &key, &backdated).await;

    vault
        .put_integration_secret("ghe", &token("two"))
        .await
        .unwrap();
    assert!(same(
        &vault.integration_secret("ghe").await.unwrap().unwrap(),
        &token("two")
    ));
    let summary = vault
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|s| {
            s.id == RecordId::IntegrationSecret {
                integration: "ghe".into(),
            }
        })
        .unwrap();
    assert_eq!(summary.created_at, 1000);
    assert!(summary.updated_at >= 1_700_000_000);
}

#[tokio::test]
async fn delete_removes_and_reports() {
    let (_tmp, _dir, vault) = new_vault().await;
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("t"), &pat_meta("a"))
        .await
        .unwrap();
    vault
        .put_user_pat("ghe", ACCOUNT_B, &token("u"), &pat_meta("b"))
        .await
        .unwrap();
    assert!(vault.delete_user_pat("ghe", ACCOUNT_A).await.unwrap());
    assert!(!vault.delete_user_pat("ghe", ACCOUNT_A).await.unwrap());
    assert!(vault.user_pat("ghe", ACCOUNT_A).await.unwrap().is_none());
    assert!(vault
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .is_none());
    assert!(vault.user_pat("ghe", ACCOUNT_B).await.unwrap().is_some());

    vault
        .put_integration_secret("ghe", &token("s"))
        .await
        .unwrap();
    assert!(vault.delete_integration_secret("ghe").await.unwrap());
    assert!(!vault.delete_integration_secret("ghe").await.unwrap());
    assert!(vault.integration_secret("ghe").await.unwrap().is_none());
    assert_eq!(vault.count().await.unwrap(), 1);
}

#[tokio::test]
async fn list_shows_metadata_only() {
    let (_tmp, _dir, vault) = new_vault().await;
    let secret = "ghp_ListMustNotShowThisSecret0000";
    let aws_secret = "AwsListMustNotShowThisSecretKey/0000";
    vault
        .put_integration_secret("ghe-prod", &token(secret))
        .await
        .unwrap();
    vault
        .put_integration_secret(
            "codecommit",
            &Credential::Aws {
                access_key_id: "AKIALIST".into(),
                secret_access_key: aws_secret.into(),
                session_token: None,
                region: "eu-west-1".into(),
            },
        )
        .await
        .unwrap();
    vault
        .put_user_pat("ghe-prod", ACCOUNT_A, &token(secret), &pat_meta("alice"))
        .await
        .unwrap();

    let list = vault.list().await.unwrap();
    assert_eq!(list.len(), 3);
    // Integration secrets, then PATs, each by id.
    assert_eq!(
        list[0].id,
        RecordId::IntegrationSecret {
            integration: "codecommit".into()
        }
    );
    assert_eq!(list[0].credential_kind, "aws-access-key");
    assert_eq!(list[0].host_login, None);
    assert_eq!(
        list[1].id,
        RecordId::IntegrationSecret {
            integration: "ghe-prod".into()
        }
    );
    assert_eq!(list[1].credential_kind, "token");
    assert_eq!(
        list[2],
        RecordSummary {
            id: RecordId::UserPat {
                integration: "ghe-prod".into(),
                account: ACCOUNT_A.into()
            },
            credential_kind: "token",
            key_version: 1,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_100,
            host_login: Some("alice".into()),
            validated_at: Some(1_700_000_100),
            last_used_at: None,
            expires_at: None,
            refused_at: None,
        }
    );
    let shown = format!("{} {list:?}", serde_json::to_string(&list).unwrap());
    for s in [secret, aws_secret] {
        assert!(!shown.contains(s), "{shown}");
        assert!(!shown.contains(&STANDARD.encode(s)), "{shown}");
    }
    assert!(shown.contains(r#""type":"user-pat""#), "{shown}");
}

#[tokio::test]
async fn list_user_pats_is_a_prefix_scan_of_one_integration() {
    let (_tmp, _dir, vault) = new_vault().await;
    for (integration, account) in [
        ("ghe", ACCOUNT_A),
        ("ghe", ACCOUNT_B),
        ("ghe-prod", ACCOUNT_A),
        ("gh", "eACCOUNT"),
        ("gha", ACCOUNT_A),
    ] {
        vault
            .put_user_pat(integration, account, &token("t"), &pat_meta(account))
            .await
            .unwrap();
    }
    vault
        .put_integration_secret("ghe", &token("s"))
        .await
        .unwrap();
    let ids: Vec<RecordId> = vault
        .list_user_pats("ghe")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        ids,
        // Sorted by account: "557058:…" before "5b10…".
        [ACCOUNT_B, ACCOUNT_A].map(|a| RecordId::UserPat {
            integration: "ghe".into(),
            account: a.into()
        })
    );
    assert_eq!(vault.list_user_pats("ghe-prod").await.unwrap().len(), 1);
    assert!(vault.list_user_pats("nope").await.unwrap().is_empty());
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The forms a secret could leak in: raw, base64 (four alphabets), hex (both cases).
fn leak_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        secret.to_vec(),
        STANDARD.encode(secret).into_bytes(),
        STANDARD_NO_PAD.encode(secret).into_bytes(),
        URL_SAFE.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
    ]
}

/// The files under `dir` that hold any form of any of `secrets`.
fn leaks(dir: &Path, secrets: &[&[u8]]) -> Vec<String> {
    let files = files_under(dir);
    assert!(!files.is_empty());
    let mut found = Vec::new();
    for file in files {
        let bytes = fs::read(&file).unwrap();
        for secret in secrets {
            for form in leak_forms(secret) {
                if bytes.windows(form.len()).any(|w| w == form.as_slice()) {
                    found.push(format!(
                        "{} holds {}",
                        file.display(),
                        String::from_utf8_lossy(&form)
                    ));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn no_plaintext_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let master = MasterKey::from_bytes(*b"MASTER-KEY-BYTES-must-not-leak!!");
    let token_secret = "ghp_DistinctiveTokenValue_9f8e7d6c5b4a39281706";
    let password = "Distinctive-Password-Value-\"quoted\"-\\-q1w2e3r4t5";
    let aws_secret = "wJalrXUtnFEMI/K7MDENG/DistinctiveAwsSecretKey42";
    let session = "FwoGZXIvYXdzDistinctiveSessionTokenValue0123456789";
    {
        let vault = Vault::init(&dir, &master).await.unwrap();
        vault
            .put_user_pat(
                "ghe-prod",
                ACCOUNT_A,
                &token(token_secret),
                &pat_meta("alice"),
            )
            .await
            .unwrap();
        vault
            .put_integration_secret("ghe-prod", &token(token_secret))
            .await
            .unwrap();
        vault
            .put_integration_secret(
                "ado",
                &Credential::UsernamePassword {
                    username: "svc".into(),
                    password: password.into(),
                },
            )
            .await
            .unwrap();
        vault
            .put_user_pat(
                "codecommit",
                ACCOUNT_B,
                &Credential::Aws {
                    access_key_id: "AKIADISK".into(),
                    secret_access_key: aws_secret.into(),
                    session_token: Some(session.into()),
                    region: "eu-west-1".into(),
                },
                &pat_meta("bob"),
            )
            .await
            .unwrap();
        // Overwrite and delete too: old versions must not linger in clear either.
        vault
            .put_user_pat("ghe-prod", ACCOUNT_B, &token(token_secret), &pat_meta("b"))
            .await
            .unwrap();
        vault.delete_user_pat("ghe-prod", ACCOUNT_B).await.unwrap();
        vault.flush().await.unwrap();
    }
    let secrets: [&[u8]; 5] = [
        token_secret.as_bytes(),
        password.as_bytes(),
        aws_secret.as_bytes(),
        session.as_bytes(),
        master.expose(),
    ];
    let found = leaks(&dir, &secrets);
    assert!(found.is_empty(), "{found:#?}");
    // The data did reach the disk: the clear metadata is there.
    let all: Vec<u8> = files_under(&dir)
        .iter()
        .flat_map(|f| fs::read(f).unwrap())
        .collect();
    assert!(
        all.windows(5).any(|w| w == b"alice"),
        "metadata not on disk; the scan proves nothing"
    );

    // The scan itself can fail: a file holding a secret's base64 is found.
    fs::write(dir.join("control"), STANDARD.encode(password)).unwrap();
    let found = leaks(&dir, &secrets);
    assert!(
        !found.is_empty() && found.iter().all(|f| f.contains("control")),
        "{found:#?}"
    );
}

#[tokio::test]
async fn ciphertext_is_bound_to_its_record() {
    let (_tmp, _dir, vault) = new_vault().await;
    let secret_a = "ghp_AliceOnlyToken_0123456789";
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token(secret_a), &pat_meta("alice"))
        .await
        .unwrap();
    vault
        .put_user_pat("ghe", ACCOUNT_B, &token("ghp_BobToken"), &pat_meta("bob"))
        .await
        .unwrap();
    vault
        .put_integration_secret("ghe", &token("integration-secret"))
        .await
        .unwrap();
    let alice = raw_get(&vault, &raw_pat_key("ghe", ACCOUNT_A)).await;
    let integration = raw_get(&vault, &raw_secret_key("ghe")).await;

    // Alice's value under Bob's key, under a user with no record, under another integration.
    for (integration_id, account) in [("ghe", ACCOUNT_B), ("ghe", "mallory"), ("other", ACCOUNT_A)]
    {
        raw_set(&vault, &raw_pat_key(integration_id, account), &alice).await;
        let msg = assert_corrupt(vault.user_pat(integration_id, account).await, account);
        assert!(msg.contains("fails authentication"), "{msg}");
        assert!(!msg.contains(secret_a), "{msg}");
    }
    // A PAT as an integration secret, and an integration secret as a PAT.
    raw_set(&vault, &raw_secret_key("ghe"), &alice).await;
    let msg = assert_corrupt(vault.integration_secret("ghe").await, "pat as secret");
    assert!(msg.contains("fails authentication"), "{msg}");
    raw_set(&vault, &raw_pat_key("ghe", ACCOUNT_B), &integration).await;
    assert_corrupt(vault.user_pat("ghe", ACCOUNT_B).await, "secret as pat");

    // Alice's own record still reads.
    let (cred, _) = vault.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap();
    assert!(same(&cred, &token(secret_a)));
}

#[tokio::test]
async fn damaged_values_are_errors_never_credentials() {
    let (_tmp, _dir, vault) = new_vault().await;
    let original = Credential::Aws {
        access_key_id: "AKIADAMAGE".into(),
        secret_access_key: "damage/secret".into(),
        session_token: Some("session".into()),
        region: "eu-west-1".into(),
    };
    vault
        .put_user_pat("ghe", ACCOUNT_A, &original, &pat_meta("alice"))
        .await
        .unwrap();
    let key = raw_pat_key("ghe", ACCOUNT_A);
    let good = raw_get(&vault, &key).await;
    let meta_range = {
        let raw = RawValue::parse(&good).unwrap();
        let start = raw.meta.as_ptr() as usize - good.as_ptr() as usize;
        start..start + raw.meta.len()
    };

    for cut in 0..good.len() {
        raw_set(&vault, &key, &good[..cut]).await;
        assert_corrupt(
            vault.user_pat("ghe", ACCOUNT_A).await,
            &format!("truncated to {cut}"),
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    raw_set(&vault, &key, &longer).await;
    assert_corrupt(vault.user_pat("ghe", ACCOUNT_A).await, "one byte appended");

    for i in 0..good.len() {
        for bit in [0x01, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            raw_set(&vault, &key, &bad).await;
            match vault.user_pat("ghe", ACCOUNT_A).await {
                Err(VaultError::Corrupt { .. }) => {}
                // The clear metadata is not authenticated; a flip there may still parse, but
                // the credential returned is the stored one, never garbled.
                Ok(Some((cred, _))) if meta_range.contains(&i) => assert!(same(&cred, &original)),
                other => panic!("bit {bit:#x} of byte {i} flipped: {other:?}"),
            }
        }
    }
    raw_set(&vault, &key, b"").await;
    assert_corrupt(vault.user_pat("ghe", ACCOUNT_A).await, "empty");
    assert_corrupt(vault.list().await, "list of a damaged record");

    // The metadata alone is read without decrypting: a damaged ciphertext does not hide it.
    let mut bad_ct = good.clone();
    let last = bad_ct.len() - 1;
    bad_ct[last] ^= 1;
    raw_set(&vault, &key, &bad_ct).await;
    assert_eq!(
        vault.user_pat_meta("ghe", ACCOUNT_A).await.unwrap(),
        Some(pat_meta("alice"))
    );
    assert_corrupt(vault.user_pat("ghe", ACCOUNT_A).await, "bad tag");
}

#[tokio::test]
async fn altered_clear_metadata_cannot_change_what_decrypts() {
    let (_tmp, _dir, vault) = new_vault().await;
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("t0k3n"), &pat_meta("alice"))
        .await
        .unwrap();
    let key = raw_pat_key("ghe", ACCOUNT_A);
    let good = raw_get(&vault, &key).await;
    let raw = RawValue::parse(&good).unwrap();
    let (ct, tag) = raw.sealed.split_at(raw.sealed.len() - record::TAG_LEN);
    let rebuild = |meta: &[u8], key_version: u32| {
        RawValue::encode(key_version, raw.nonce, meta, ct, tag.try_into().unwrap())
    };

    // Another credential kind in the clear metadata.
    let mut meta: ClearMeta = serde_json::from_slice(raw.meta).unwrap();
    meta.kind = CredentialKind::UsernamePassword;
    raw_set(
        &vault,
        &key,
        &rebuild(&serde_json::to_vec(&meta).unwrap(), 1),
    )
    .await;
    let msg = assert_corrupt(vault.user_pat("ghe", ACCOUNT_A).await, "kind");
    assert!(msg.contains("different credential kind"), "{msg}");

    // Another key version in the header.
    raw_set(&vault, &key, &rebuild(raw.meta, 2)).await;
    let msg = assert_corrupt(vault.user_pat("ghe", ACCOUNT_A).await, "key version");
    assert!(msg.contains("key version 2"), "{msg}");

    // Metadata without the PAT fields, and metadata that is not JSON.
    raw_set(
        &vault,
        &key,
        &rebuild(br#"{"kind":"token","created_at":1,"updated_at":2}"#, 1),
    )
    .await;
    assert_corrupt(vault.user_pat("ghe", ACCOUNT_A).await, "no pat fields");
    assert_corrupt(
        vault.user_pat_meta("ghe", ACCOUNT_A).await,
        "no pat fields (meta)",
    );
    raw_set(&vault, &key, &rebuild(b"not json", 1)).await;
    assert_corrupt(vault.user_pat_meta("ghe", ACCOUNT_A).await, "not json");

    // An undecodable key shows up in listings as corruption, not as a skipped record.
    raw_set(&vault, &key, &good).await;
    raw_set(&vault, &[9u8, 1, 2], &good).await;
    assert_corrupt(vault.list().await, "bad key");
}

#[tokio::test]
async fn persistence_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    {
        let vault = Vault::init(&dir, &key(1)).await.unwrap();
        vault
            .put_user_pat("ghe", ACCOUNT_A, &token("persisted"), &pat_meta("alice"))
            .await
            .unwrap();
        vault
            .put_integration_secret("ghe", &token("integration"))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let vault = Vault::open(&dir, &key(1)).await.unwrap();
        assert_eq!(vault.key_version(), 1);
        let (cred, meta) = vault.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap();
        assert!(same(&cred, &token("persisted")));
        assert_eq!(meta, pat_meta("alice"));
        assert!(same(
            &vault.integration_secret("ghe").await.unwrap().unwrap(),
            &token("integration")
        ));
        assert_eq!(vault.count().await.unwrap(), 2);
    }
}

#[tokio::test]
async fn nonces_are_fresh_per_write() {
    let (_tmp, _dir, vault) = new_vault().await;
    let cred = token("same-token-every-time");
    let key = raw_pat_key("ghe", ACCOUNT_A);
    vault
        .put_user_pat("ghe", ACCOUNT_A, &cred, &pat_meta("a"))
        .await
        .unwrap();
    let first = raw_get(&vault, &key).await;
    vault
        .put_user_pat("ghe", ACCOUNT_A, &cred, &pat_meta("a"))
        .await
        .unwrap();
    let second = raw_get(&vault, &key).await;
    let (a, b) = (
        RawValue::parse(&first).unwrap(),
        RawValue::parse(&second).unwrap(),
    );
    assert_eq!(a.meta, b.meta);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.sealed, b.sealed);
}

#[tokio::test]
async fn wrong_master_key_is_refused_at_open() {
    let (_tmp, dir, vault) = new_vault().await;
    drop(vault);
    let err = Vault::open(&dir, &key(2)).await.unwrap_err();
    assert!(
        matches!(err, VaultError::WrongMasterKey { key_version: 1 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the master key does not match this vault (key version 1)"
    );
    Vault::open(&dir, &key(1)).await.unwrap();
}

#[tokio::test]
async fn uninitialised_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let err = Vault::open(&missing, &key(1)).await.unwrap_err();
    assert!(matches!(err, VaultError::NotInitialized { .. }), "{err:?}");
    assert!(err.to_string().contains("patgate vault init"), "{err}");
    assert!(!missing.exists(), "open created the directory");

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = Vault::open(&empty, &key(1)).await.unwrap_err();
    assert!(matches!(err, VaultError::NotInitialized { .. }), "{err:?}");
    assert!(
        fs::read_dir(&empty).unwrap().next().is_none(),
        "open wrote into the directory"
    );

    // A sled store without the vault's metadata (an interrupted init) is not a vault either.
    let bare = tmp.path().join("bare");
    drop(sled::Config::new().path(&bare).open().unwrap());
    let err = Vault::open(&bare, &key(1)).await.unwrap_err();
    assert!(matches!(err, VaultError::NotInitialized { .. }), "{err:?}");
    Vault::init(&bare, &key(1)).await.unwrap();
}

#[tokio::test]
async fn init_refuses_an_initialised_vault() {
    let (_tmp, dir, vault) = new_vault().await;
    let err = Vault::init(&dir, &key(1)).await.unwrap_err();
    assert!(matches!(err, VaultError::Locked { .. }), "{err:?}");
    drop(vault);
    for k in [1, 2] {
        let err = Vault::init(&dir, &key(k)).await.unwrap_err();
        assert!(
            matches!(err, VaultError::AlreadyInitialized { .. }),
            "{err:?}"
        );
    }
    Vault::open(&dir, &key(1)).await.unwrap();
}

#[tokio::test]
async fn second_open_in_the_same_process_is_locked() {
    let (_tmp, dir, vault) = new_vault().await;
    let err = Vault::open(&dir, &key(1)).await.unwrap_err();
    assert!(matches!(err, VaultError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!(
            "the vault at {} is in use by another process (is patgate running?)",
            dir.display()
        )
    );
    // Clones share the one open store.
    let clone = vault.clone();
    drop(vault);
    assert!(matches!(
        Vault::open(&dir, &key(1)).await,
        Err(VaultError::Locked { .. })
    ));
    drop(clone);
    // Released on drop, every time.
    for _ in 0..5 {
        let v = Vault::open(&dir, &key(1)).await.unwrap();
        drop(v);
    }
}

#[tokio::test]
async fn sleds_own_lock_is_mapped_to_locked() {
    // Bypasses our lock file to check the fallback for sled's lock on its `db` file (without
    // the brief wait for a handle of this process that is letting go).
    let (_tmp, dir, _vault) = new_vault().await;
    let err = open_sled_within(
        &dir,
        VaultOptions::default().cache_capacity_bytes,
        std::time::Duration::ZERO,
    )
    .unwrap_err();
    assert!(matches!(err, SledOpenError::Locked), "{err:?}");
}

// Another process holding the vault is tested end to end in tests/cli.rs (the CLI against a
// running server).

#[tokio::test]
async fn damaged_key_check_and_vault_metadata() {
    let (_tmp, dir, vault) = new_vault().await;
    let check = vault
        .store()
        .get(Space::Settings, META_KEY_CHECK)
        .await
        .unwrap()
        .unwrap();
    drop(vault);

    let tamper = |f: &dyn Fn(&sled::Tree)| {
        let db = open_sled(&dir, VaultOptions::default().cache_capacity_bytes).unwrap();
        f(&db.open_tree(SETTINGS_TREE).unwrap());
        db.flush().unwrap();
    };
    let key_1 = key(1);
    let open = || Vault::open(&dir, &key_1);

    // A flipped ciphertext bit: indistinguishable from a wrong key.
    let mut flipped = check.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    tamper(&|m| drop(m.insert(META_KEY_CHECK, flipped.as_slice()).unwrap()));
    assert!(matches!(
        open().await,
        Err(VaultError::WrongMasterKey { key_version: 1 })
    ));

    tamper(&|m| drop(m.insert(META_KEY_CHECK, &check[..10]).unwrap()));
    let msg = assert_corrupt(open().await, "truncated key check");
    assert!(msg.contains("key check"), "{msg}");

    // A key check encrypting something else, correctly under the right key.
    let sealer = Sealer::new(&key(1));
    let aad = record::aad(Kind::KeyCheck, "", "", 1);
    let mut other = b"not the constant".to_vec();
    let (nonce, tag) = sealer.seal(aad.as_ref(), &mut other).unwrap();
    let other = RawValue::encode(1, &nonce, b"{}", &other, &tag);
    tamper(&|m| drop(m.insert(META_KEY_CHECK, other.as_slice()).unwrap()));
    assert_corrupt(open().await, "wrong constant");

    tamper(&|m| drop(m.insert(META_KEY_CHECK, check.as_slice()).unwrap()));
    open().await.unwrap();

    tamper(&|m| drop(m.insert(META_KEY_VERSION, &[0u8, 1][..]).unwrap()));
    assert_corrupt(open().await, "short key version");
    tamper(&|m| drop(m.insert(META_KEY_VERSION, &2u32.to_be_bytes()[..]).unwrap()));
    assert_corrupt(open().await, "key version differs from the check's");
    tamper(&|m| drop(m.insert(META_KEY_VERSION, &1u32.to_be_bytes()[..]).unwrap()));

    tamper(&|m| drop(m.insert(META_FORMAT, &[9u8][..]).unwrap()));
    let err = open().await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::UnsupportedFormat {
                found: 9,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    tamper(&|m| drop(m.insert(META_FORMAT, &[1u8][..]).unwrap()));

    tamper(&|m| drop(m.remove(META_KEY_CHECK).unwrap()));
    assert!(matches!(
        open().await,
        Err(VaultError::NotInitialized { .. })
    ));
}

#[tokio::test]
async fn init_will_not_cover_records_without_a_key_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    {
        let db = open_sled(&dir, VaultOptions::default().cache_capacity_bytes).unwrap();
        db.open_tree(RECORDS_TREE)
            .unwrap()
            .insert(b"x", b"y")
            .unwrap();
        db.flush().unwrap();
    }
    assert_corrupt(
        Vault::init(&dir, &key(1)).await,
        "records without key check",
    );
}

#[tokio::test]
async fn garbage_store_files_are_an_error_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    drop(Vault::init(&dir, &key(1)).await.unwrap());
    for file in ["db", "conf"] {
        let copy = tmp.path().join(format!("copy-{file}"));
        copy_dir(&dir, &copy);
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(copy.join(file), &garbage).unwrap();
        let err = Vault::open(&copy, &key(1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                VaultError::Corrupt { .. }
                    | VaultError::Storage { .. }
                    | VaultError::NotInitialized { .. }
            ),
            "{file}: {err:?}"
        );
    }
}

/// sled recovers a damaged log up to the damage and drops the rest without an error; the
/// watermark turns that into a refusal to open instead of a vault missing acknowledged writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_acknowledged_writes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    {
        let vault = Vault::init(&dir, &key(1)).await.unwrap();
        for i in 0..40 {
            let account = format!("acct-{i}");
            vault
                .put_user_pat("ghe", &account, &token(&format!("t-{i}")), &pat_meta("x"))
                .await
                .unwrap();
        }
        assert!(vault.delete_user_pat("ghe", "acct-0").await.unwrap());
        // A flush that follows no write (a shutdown's) counts none.
        vault.flush().await.unwrap();
    }
    // init, 40 stores, 1 delete.
    assert_eq!(
        fs::read_to_string(dir.join(WATERMARK_FILE)).unwrap(),
        "42\n"
    );
    let db = fs::read(dir.join(DB_FILE)).unwrap();
    let damaged = |name: &str, bytes: &[u8]| {
        let copy = tmp.path().join(name);
        copy_dir(&dir, &copy);
        fs::write(copy.join(DB_FILE), bytes).unwrap();
        copy
    };
    let half = db.len() / 2;
    let mut flipped = db.clone();
    flipped[half..half + 8].iter_mut().for_each(|b| *b ^= 0xff);
    let mut header = db.clone();
    header[8..16].iter_mut().for_each(|b| *b ^= 0xff);
    for (name, bytes) in [
        ("flipped", &flipped[..]),
        ("truncated", &db[..half]),
        // Damage in the first message leaves no vault metadata: still not "run init".
        ("header", &header[..]),
    ] {
        let copy = damaged(name, bytes);
        let msg = assert_corrupt(Vault::open(&copy, &key(1)).await, name);
        assert!(
            msg.contains("of the 42 credential writes it acknowledged"),
            "{name}: {msg}"
        );
        assert!(
            msg.contains("restore the state directory from a backup"),
            "{name}: {msg}"
        );
        // And it stays refused: opening did not "repair" it into an older vault.
        assert_corrupt(Vault::open(&copy, &key(1)).await, name);
        assert!(matches!(
            Vault::init(&copy, &key(1)).await,
            Err(VaultError::AlreadyInitialized { .. })
        ));
        // An admin who accepts the loss deletes the watermark; the next write makes a new one.
        fs::remove_file(copy.join(WATERMARK_FILE)).unwrap();
        if name != "header" {
            let vault = Vault::open(&copy, &key(1)).await.unwrap();
            assert!(vault.count().await.unwrap() < 39, "{name}");
            vault
                .put_user_pat("ghe", "acct-new", &token("t-new"), &pat_meta("x"))
                .await
                .unwrap();
            assert!(copy.join(WATERMARK_FILE).exists());
        }
    }

    // A crash between the flush and the watermark leaves the watermark behind the store:
    // nothing acknowledged is missing, so it opens.
    write_watermark(&dir, 30).unwrap();
    let vault = Vault::open(&dir, &key(1)).await.unwrap();
    assert_eq!(vault.count().await.unwrap(), 39);
    assert!(vault.user_pat("ghe", "acct-39").await.unwrap().is_some());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn vault_directory_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let nested = tmp.path().join("a").join("b");
    drop(Vault::init(&nested, &key(1)).await.unwrap());
    assert_eq!(
        fs::metadata(&nested).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    let lock_mode = fs::metadata(nested.join(LOCK_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(lock_mode & 0o077, 0, "{lock_mode:o}");

    let existing = tmp.path().join("existing");
    fs::create_dir(&existing).unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o755)).unwrap();
    drop(Vault::init(&existing, &key(1)).await.unwrap());
    assert_eq!(
        fs::metadata(&existing).unwrap().permissions().mode() & 0o7777,
        0o700
    );

    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(matches!(
        Vault::init(&file, &key(1)).await,
        Err(VaultError::Io { .. })
    ));
    assert!(matches!(
        Vault::open(&file, &key(1)).await,
        Err(VaultError::NotInitialized { .. })
    ));
}

#[tokio::test]
async fn invalid_ids_are_refused_everywhere() {
    let (_tmp, _dir, vault) = new_vault().await;
    let long = "x".repeat(MAX_ID_LEN + 1);
    let cred = token("t");
    for bad in ["", "a\nb", "\u{1b}[0m", long.as_str()] {
        let checks: Vec<(&str, Result<(), VaultError>)> = vec![
            ("put secret", vault.put_integration_secret(bad, &cred).await),
            ("get secret", vault.integration_secret(bad).await.map(drop)),
            (
                "delete secret",
                vault.delete_integration_secret(bad).await.map(drop),
            ),
            (
                "put pat/i",
                vault
                    .put_user_pat(bad, ACCOUNT_A, &cred, &pat_meta("a"))
                    .await,
            ),
            (
                "put pat/a",
                vault.put_user_pat("ghe", bad, &cred, &pat_meta("a")).await,
            ),
            ("get pat/i", vault.user_pat(bad, ACCOUNT_A).await.map(drop)),
            ("get pat/a", vault.user_pat("ghe", bad).await.map(drop)),
            ("meta/a", vault.user_pat_meta("ghe", bad).await.map(drop)),
            (
                "delete pat/a",
                vault.delete_user_pat("ghe", bad).await.map(drop),
            ),
            ("list pats", vault.list_user_pats(bad).await.map(drop)),
        ];
        for (what, result) in checks {
            assert!(
                matches!(result, Err(VaultError::InvalidId { .. })),
                "{what} {bad:?}: {result:?}"
            );
        }
    }
    assert_eq!(vault.count().await.unwrap(), 0);
    let max = "y".repeat(MAX_ID_LEN);
    vault
        .put_user_pat(&max, &max, &cred, &pat_meta("a"))
        .await
        .unwrap();
    assert!(vault.user_pat(&max, &max).await.unwrap().is_some());
}

#[tokio::test]
async fn oversized_credentials_are_refused() {
    let (_tmp, _dir, vault) = new_vault().await;
    let huge = token(&"x".repeat(MAX_PLAINTEXT));
    let err = vault
        .put_integration_secret("ghe", &huge)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::CredentialTooLarge { .. }),
        "{err:?}"
    );
    // Large but allowed (beyond the stack buffer): stored and read back.
    let big = token(&"y".repeat(20_000));
    vault.put_integration_secret("ghe", &big).await.unwrap();
    assert!(same(
        &vault.integration_secret("ghe").await.unwrap().unwrap(),
        &big
    ));
}

/// Ends the test process if `done` is not dropped within `limit`: a deadlock must fail the
/// run, not hang it (Tokio's timer is not among the vault's features).
fn watchdog(limit: std::time::Duration, what: &'static str) -> std::sync::mpsc::Sender<()> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            // Straight to stderr: the harness's capture would swallow eprintln! on exit.
            let _ = writeln!(
                std::io::stderr(),
                "{what}: still running after {limit:?}; deadlocked"
            );
            std::process::exit(101);
        }
    });
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_all_durable() {
    // sled 0.34.7's flush_async deadlocks under exactly this load (see Vault::flush).
    let _watchdog = watchdog(
        std::time::Duration::from_secs(60),
        "concurrent_writes_are_all_durable",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let vault = Vault::init(&dir, &key(1)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let account = format!("acct-{t}-{i}");
                let cred = token(&format!("token-{t}-{i}"));
                vault
                    .put_user_pat("ghe", &account, &cred, &pat_meta(&account))
                    .await
                    .unwrap();
            }
            vault
                .put_integration_secret("shared", &token(&format!("s{t}")))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    drop(vault);
    let vault = Vault::open(&dir, &key(1)).await.unwrap();
    assert_eq!(vault.count().await.unwrap(), 32 * 20 + 1);
    for t in 0..32 {
        for i in 0..20 {
            let (cred, _) = vault
                .user_pat("ghe", &format!("acct-{t}-{i}"))
                .await
                .unwrap()
                .unwrap();
            let Credential::Token(got) = cred else {
                panic!()
            };
            assert_eq!(got.expose_secret(), format!("token-{t}-{i}"));
        }
    }
    assert!(vault.integration_secret("shared").await.unwrap().is_some());
}

/// A key and the value another writer puts first.
type Ahead = Arc<std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>>;

/// The embedded store, with another writer that gets in first: before the next batch of
/// compare-and-swaps, it puts `ahead` itself.
#[derive(Debug)]
struct Overtaken {
    store: SledRecords,
    ahead: Ahead,
}

impl RecordStore for Overtaken {
    fn location(&self) -> &Path {
        self.store.location()
    }
    fn get<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> crate::store::BoxFuture<'a, Result<Option<Vec<u8>>, RecordStoreError>> {
        self.store.get(space, key)
    }
    fn get_many<'a>(
        &'a self,
        space: Space,
        keys: &'a [Vec<u8>],
    ) -> crate::store::BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, RecordStoreError>> {
        self.store.get_many(space, keys)
    }
    fn put<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> crate::store::BoxFuture<'a, Result<(), RecordStoreError>> {
        self.store.put(space, key, value)
    }
    fn remove<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> crate::store::BoxFuture<'a, Result<bool, RecordStoreError>> {
        self.store.remove(space, key)
    }
    fn compare_and_swap_many(
        &self,
        space: Space,
        swaps: Vec<Swap>,
    ) -> crate::store::BoxFuture<'_, Result<Vec<Swapped>, RecordStoreError>> {
        Box::pin(async move {
            let ahead = self.ahead.lock().unwrap().take();
            if let Some((key, value)) = ahead {
                self.store.put(space, &key, value).await?;
            }
            self.store.compare_and_swap_many(space, swaps).await
        })
    }
    fn compare_and_swap_guarded(
        &self,
        guard: crate::store::Guard,
        space: Space,
        swaps: Vec<Swap>,
    ) -> crate::store::BoxFuture<'_, Result<crate::store::Guarded<Vec<Swapped>>, RecordStoreError>>
    {
        self.store.compare_and_swap_guarded(guard, space, swaps)
    }
    fn apply(
        &self,
        space: Space,
        changes: Vec<Change>,
    ) -> crate::store::BoxFuture<'_, Result<(), RecordStoreError>> {
        self.store.apply(space, changes)
    }
    fn apply_guarded(
        &self,
        guard: crate::store::Guard,
        space: Space,
        changes: Vec<Change>,
    ) -> crate::store::BoxFuture<'_, Result<crate::store::Guarded<()>, RecordStoreError>> {
        self.store.apply_guarded(guard, space, changes)
    }
    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
        after: Option<&'a [u8]>,
        limit: usize,
    ) -> crate::store::BoxFuture<'a, Result<Vec<crate::store::Entry>, RecordStoreError>> {
        self.store.scan(space, prefix, after, limit)
    }
    fn count<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
    ) -> crate::store::BoxFuture<'a, Result<u64, RecordStoreError>> {
        self.store.count(space, prefix)
    }
    fn flush(&self) -> crate::store::BoxFuture<'_, Result<(), RecordStoreError>> {
        self.store.flush()
    }
}

/// A flush of last-use times that another writer overtook: another flush's time (the same
/// sealed credential) is merged, the later time kept; a replaced PAT is left as it is.
#[tokio::test]
async fn last_use_flushes_merge_with_one_that_got_there_first() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledRecords::create(&tmp.path().join("v"), 1024 * 1024).unwrap();
    let ahead: Ahead = Arc::default();
    let vault = Vault::init_in(
        Box::new(Overtaken {
            store,
            ahead: ahead.clone(),
        }),
        &key(1),
    )
    .await
    .unwrap();
    let key_a = raw_pat_key("ghe", ACCOUNT_A);
    let id = pat_id(
        record::validate_id("integration", "ghe").unwrap(),
        record::validate_id("account", ACCOUNT_A).unwrap(),
    );
    let last_used = |vault: &Vault| {
        let vault = vault.clone();
        async move {
            let meta = vault.user_pat_meta("ghe", ACCOUNT_A).await.unwrap();
            meta.unwrap().last_used_at
        }
    };
    let uses = |at: u64| vec![(("ghe".to_string(), ACCOUNT_A.to_string()), at)];
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("t"), &pat_meta("alice"))
        .await
        .unwrap();
    let stored = raw_get(&vault, &key_a).await;
    let overtake = |value: Vec<u8>| *ahead.lock().unwrap() = Some((key_a.clone(), value));

    // Another flush wrote an older time first: ours is merged over it.
    overtake(vault.with_last_use(&stored, 30, &id).unwrap().unwrap());
    assert_eq!(vault.record_pat_uses(&uses(40)).await.unwrap(), 1);
    assert_eq!(last_used(&vault).await, Some(40));

    // Another flush wrote a later time first: it stays.
    let now_there = raw_get(&vault, &key_a).await;
    overtake(vault.with_last_use(&now_there, 60, &id).unwrap().unwrap());
    assert_eq!(vault.record_pat_uses(&uses(50)).await.unwrap(), 0);
    assert_eq!(last_used(&vault).await, Some(60));

    // The PAT was replaced meanwhile (another sealed credential): left as the new one is.
    let replaced = {
        let other = tempfile::tempdir().unwrap();
        let elsewhere = Vault::init(&other.path().join("v"), &key(1)).await.unwrap();
        elsewhere
            .put_user_pat("ghe", ACCOUNT_A, &token("t2"), &pat_meta("alice"))
            .await
            .unwrap();
        raw_get(&elsewhere, &key_a).await
    };
    overtake(replaced.clone());
    assert_eq!(vault.record_pat_uses(&uses(70)).await.unwrap(), 0);
    assert_eq!(raw_get(&vault, &key_a).await, replaced);
    let (credential, meta) = vault.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap();
    assert!(same(&credential, &token("t2")));
    assert_eq!(meta.last_used_at, None);
}

#[tokio::test]
async fn debug_output_has_no_secret() {
    let (_tmp, _dir, vault) = new_vault().await;
    let shown = format!("{vault:?}");
    assert!(
        shown.starts_with("Vault {") && shown.contains("key_version: 1"),
        "{shown}"
    );
    let k = key(0x41);
    let shown = format!("{k:?} {:?}", Sealer::new(&k));
    assert!(!shown.contains("AAAA") && !shown.contains("65"), "{shown}");
}

#[tokio::test]
async fn types_are_send_and_sync_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Vault>();
    send_sync::<VaultError>();
    send_sync::<MasterKey>();
    send_sync::<Credential>();
    let (_tmp, _dir, vault) = new_vault().await;
    let cred = token("t");
    let meta = pat_meta("a");
    send(&vault.put_user_pat("i", "a", &cred, &meta));
    send(&vault.put_integration_secret("i", &cred));
    send(&vault.delete_user_pat("i", "a"));
    send(&vault.delete_integration_secret("i"));
    send(&vault.flush());
    send(&vault.user_pat("i", "a"));
    send(&vault.user_pat_meta("i", "a"));
    send(&vault.integration_secret("i"));
    send(&vault.list());
    send(&vault.count_by_kind());
    send(&vault.record_pat_uses(&[]));
    send(&vault.rotate_key(key(2)));
}

#[tokio::test]
async fn pat_metadata_changes_only_for_the_pat_that_was_used() {
    let (_tmp, _dir, vault) = new_vault().await;
    let old = pat_meta("alice");
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("old"), &old)
        .await
        .unwrap();
    let refuse = |meta: &mut PatMetaFields<'_>| {
        *meta.refused = Some(PatRefusal {
            at: 9,
            host_status: 401,
        });
        true
    };
    assert!(vault
        .update_pat_meta("ghe", ACCOUNT_A, old.updated_at, &mut refuse.clone())
        .await
        .unwrap());
    let seen = vault
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.refused.unwrap().host_status, 401);
    // The credential is untouched: it still decrypts to the same token.
    let (credential, _) = vault.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap();
    assert!(same(&credential, &token("old")));

    // The user stored a new PAT meanwhile: a refusal seen with the old one does not land.
    let new = PatMeta {
        updated_at: old.updated_at + 50,
        ..pat_meta("alice")
    };
    vault
        .put_user_pat("ghe", ACCOUNT_A, &token("new"), &new)
        .await
        .unwrap();
    assert!(!vault
        .update_pat_meta("ghe", ACCOUNT_A, old.updated_at, &mut refuse.clone())
        .await
        .unwrap());
    assert_eq!(
        vault
            .user_pat_meta("ghe", ACCOUNT_A)
            .await
            .unwrap()
            .unwrap()
            .refused,
        None
    );
    // No record: nothing to change.
    assert!(!vault
        .update_pat_meta("ghe", ACCOUNT_B, 1, &mut refuse.clone())
        .await
        .unwrap());
    // The metadata survives a reopen (it was flushed).
    assert!(vault
        .update_pat_meta("ghe", ACCOUNT_A, new.updated_at, &mut |meta| {
            *meta.expires_at = Some(1_800_000_000);
            true
        })
        .await
        .unwrap());
    let path = vault.path().to_path_buf();
    drop(vault);
    let vault = Vault::open(&path, &key(1)).await.unwrap();
    let seen = vault
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.expires_at, Some(1_800_000_000));
}

/// One store shared by two vaults, as two processes share a database.
#[derive(Debug, Clone)]
struct Shared(Arc<SledRecords>);

impl RecordStore for Shared {
    fn location(&self) -> &Path {
        self.0.location()
    }
    fn get<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> crate::store::BoxFuture<'a, Result<Option<Vec<u8>>, RecordStoreError>> {
        self.0.get(space, key)
    }
    fn get_many<'a>(
        &'a self,
        space: Space,
        keys: &'a [Vec<u8>],
    ) -> crate::store::BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, RecordStoreError>> {
        self.0.get_many(space, keys)
    }
    fn put<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> crate::store::BoxFuture<'a, Result<(), RecordStoreError>> {
        self.0.put(space, key, value)
    }
    fn remove<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> crate::store::BoxFuture<'a, Result<bool, RecordStoreError>> {
        self.0.remove(space, key)
    }
    fn compare_and_swap_many(
        &self,
        space: Space,
        swaps: Vec<Swap>,
    ) -> crate::store::BoxFuture<'_, Result<Vec<Swapped>, RecordStoreError>> {
        self.0.compare_and_swap_many(space, swaps)
    }
    fn compare_and_swap_guarded(
        &self,
        guard: crate::store::Guard,
        space: Space,
        swaps: Vec<Swap>,
    ) -> crate::store::BoxFuture<'_, Result<crate::store::Guarded<Vec<Swapped>>, RecordStoreError>>
    {
        self.0.compare_and_swap_guarded(guard, space, swaps)
    }
    fn apply(
        &self,
        space: Space,
        changes: Vec<Change>,
    ) -> crate::store::BoxFuture<'_, Result<(), RecordStoreError>> {
        self.0.apply(space, changes)
    }
    fn apply_guarded(
        &self,
        guard: crate::store::Guard,
        space: Space,
        changes: Vec<Change>,
    ) -> crate::store::BoxFuture<'_, Result<crate::store::Guarded<()>, RecordStoreError>> {
        self.0.apply_guarded(guard, space, changes)
    }
    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
        after: Option<&'a [u8]>,
        limit: usize,
    ) -> crate::store::BoxFuture<'a, Result<Vec<crate::store::Entry>, RecordStoreError>> {
        self.0.scan(space, prefix, after, limit)
    }
    fn count<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
    ) -> crate::store::BoxFuture<'a, Result<u64, RecordStoreError>> {
        self.0.count(space, prefix)
    }
    fn flush(&self) -> crate::store::BoxFuture<'_, Result<(), RecordStoreError>> {
        self.0.flush()
    }
}

/// Once another process sharing the store wrote its rotation marker, a process still at the
/// old key stores nothing sealed under it: without the new key its writes fail (and nothing
/// lands), with the new key installed they go under the new version, which the rotation's
/// pass then finds done.
#[tokio::test]
async fn a_process_behind_a_rotation_never_stores_under_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Shared(Arc::new(
        SledRecords::create(&tmp.path().join("v"), 1024 * 1024).unwrap(),
    ));
    let a = Vault::init_in(Box::new(shared.clone()), &key(1))
        .await
        .unwrap();
    let b = Vault::open_in(Box::new(shared.clone()), &key(1))
        .await
        .unwrap();
    b.put_user_pat("ghe", ACCOUNT_A, &token("before"), &pat_meta("alice"))
        .await
        .unwrap();
    assert_eq!(a.rotate_partially(&key(2), 0).await.unwrap(), 0);

    // B was given no file: the write is refused, and nothing is stored.
    match b
        .put_user_pat("ghe", ACCOUNT_B, &token("during"), &pat_meta("bob"))
        .await
    {
        Err(VaultError::NextKeyMissing { version: 2, reason }) => {
            assert!(reason.contains("no file"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(a.user_pat_meta("ghe", ACCOUNT_B).await.unwrap().is_none());
    // Nor over a record already there.
    assert!(matches!(
        b.put_user_pat("ghe", ACCOUNT_A, &token("replaced"), &pat_meta("alice"))
            .await,
        Err(VaultError::NextKeyMissing { version: 2, .. })
    ));

    // A wrong key in the file is refused; the right one is taken, and B writes under it.
    let file = tmp.path().join("master-key.new");
    b.take_next_key_from(file.clone());
    key(3).write_new(&file).unwrap();
    match b
        .put_user_pat("ghe", ACCOUNT_B, &token("during"), &pat_meta("bob"))
        .await
    {
        Err(VaultError::NextKeyMissing { version: 2, reason }) => {
            assert!(reason.contains("holds another key"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    fs::remove_file(&file).unwrap();
    key(2).write_new(&file).unwrap();
    b.put_user_pat("ghe", ACCOUNT_B, &token("during"), &pat_meta("bob"))
        .await
        .unwrap();
    assert_eq!(b.key_version(), 2);
    // B still reads what is under the old key; A reads what B wrote.
    assert!(same(
        &b.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap().0,
        &token("before")
    ));
    assert!(same(
        &a.user_pat("ghe", ACCOUNT_B).await.unwrap().unwrap().0,
        &token("during")
    ));
    let version_of = |records: &[RecordSummary], account: &str| {
        records
            .iter()
            .find(|r| matches!(&r.id, RecordId::UserPat { account: a, .. } if a == account))
            .map(|r| r.key_version)
    };
    let records = a.list().await.unwrap();
    assert_eq!(version_of(&records, ACCOUNT_A), Some(1), "not yet moved");
    assert_eq!(
        version_of(&records, ACCOUNT_B),
        Some(2),
        "written under the new key"
    );

    // A finishes; B forgets the old key once it sees the commit.
    assert!(a.rotate_key(key(2)).await.unwrap().resumed);
    assert_eq!(b.catch_up_with_rotation().await.unwrap(), (2, true));
    assert!(b.is_committed_key(&file).await.unwrap());
    for vault in [&a, &b] {
        assert!(same(
            &vault.user_pat("ghe", ACCOUNT_A).await.unwrap().unwrap().0,
            &token("before")
        ));
    }
    assert!(a.list().await.unwrap().iter().all(|r| r.key_version == 2));
}
