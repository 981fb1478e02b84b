//! The encrypted credential vault: integration secrets and users' personal access tokens,
//! in sled, each credential sealed with AES-256-GCM under the master key.
//!
//! - Every record is bound to its identity (record kind, integration, account, key version)
//!   through the AEAD's associated data, so a ciphertext moved to another record fails to
//!   decrypt instead of handing one user's token to another.
//! - Metadata (timestamps, host login, credential kind) is kept in clear beside the
//!   ciphertext, so listings and status need no key use. It is not authenticated: someone
//!   able to write the vault files could alter it, but not a credential or its owner.
//! - A key-check record, written at `init`, lets `open` tell a wrong master key from a
//!   damaged record without scanning records; `open` is O(1) in the number of records.
//! - Writes are flushed to disk before they are acknowledged, and a store that lost
//!   acknowledged writes (sled drops a damaged log's tail without an error) is refused at
//!   `open`: see `watermark.rs`.
//! - The master key can be rotated while the vault serves; `rotation.rs` documents how that
//!   stays crash-safe and why no reader or writer fails meanwhile.
//!
//! `record.rs` documents the byte layouts of keys, associated data and values.

mod credential;
mod crypto;
mod error;
mod last_use;
mod master_key;
mod record;
mod rotation;
mod watermark;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use zeroize::Zeroizing;

pub use self::credential::Credential;
pub use self::error::VaultError;
pub use self::last_use::{PatUses, PAT_USE_FLUSH_INTERVAL};
pub use self::master_key::{
    install_pending_key, match_owner, pending_key_path, MasterKey, MASTER_KEY_LEN,
    SYSTEMD_CREDENTIAL_NAME,
};
pub use self::record::{PatMeta, RecordId, MAX_ID_LEN};
pub use self::rotation::Rotation;

use self::credential::CredentialKind;
use self::crypto::Sealer;
use self::master_key::io_error;
use self::record::{ClearMeta, Kind, RawValue, ValidId};
use self::watermark::Watermark;

/// The sled tree of credential records.
const RECORDS_TREE: &[u8] = b"records";
/// The sled tree of vault-wide settings: format, key version, key check.
const META_TREE: &[u8] = b"vault";
const META_FORMAT: &[u8] = b"format";
const META_KEY_VERSION: &[u8] = b"key-version";
const META_KEY_CHECK: &[u8] = b"key-check";
/// How many credential writes the store holds (u64be); see `watermark.rs`.
const META_GENERATION: &[u8] = b"generation";
/// What the key-check record encrypts.
const KEY_CHECK_PLAINTEXT: &[u8] = b"patgate vault key check v1";
/// The key version `init` starts at.
const INITIAL_KEY_VERSION: u32 = 1;
/// Our own lock, taken before sled opens anything (see [`DirLock`]).
const LOCK_FILE: &str = "vault.lock";
/// The file sled keeps its data in; its absence means there is no vault.
const SLED_DB_FILE: &str = "db";
/// How long `open` waits for sled's own file lock once it holds `vault.lock`.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);
/// The largest credential encoding stored. Real ones are under a few KiB (AWS session tokens
/// are the longest); the cap keeps a bad caller from bloating the store.
const MAX_PLAINTEXT: usize = 64 * 1024;

/// Settings for opening a vault.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VaultOptions {
    /// sled's page cache, in bytes. sled's default is 1 GiB; the vault's is that of the
    /// `vault.cache_capacity_mib` config key (4 MiB), so a vault opened without a config
    /// (benchmarks, tests) behaves like one opened with the default file.
    pub cache_capacity_bytes: u64,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            cache_capacity_bytes: crate::config::defaults::VAULT_CACHE_CAPACITY_MIB * 1024 * 1024,
        }
    }
}

impl VaultOptions {
    /// Sets sled's page cache size in bytes.
    pub fn cache_capacity_bytes(mut self, bytes: u64) -> Self {
        self.cache_capacity_bytes = bytes;
        self
    }
}

/// What [`Vault::list`] shows of a record: metadata only, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSummary {
    /// Which record.
    pub id: RecordId,
    /// `token`, `username-password` or `aws-access-key`.
    pub credential_kind: &'static str,
    /// The master key version the credential is encrypted under.
    pub key_version: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// The host account of a user PAT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_login: Option<String>,
    /// When the host last accepted a user PAT (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validated_at: Option<u64>,
    /// When a user PAT was last used, if tracked (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
}

/// How many records of each kind the vault holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub integration_secrets: u64,
    pub user_pats: u64,
}

/// The credential vault. Cheap to clone (the clones share one open store) and `Send + Sync`.
///
/// The async methods need a Tokio runtime: their flush runs on a blocking thread.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The keys in use. Readers hold the read guard from fetching a record to decrypting it,
    /// and writers from sealing a record to storing it, so a rotation (which takes the write
    /// guard to change keys) never drops a key that a fetched or sealed record still needs.
    /// No guard is held across an `await` or a flush.
    keys: RwLock<Keys>,
    /// Held while a key rotation runs: one at a time.
    rotating: Mutex<()>,
    records: sled::Tree,
    meta: sled::Tree,
    db: sled::Db,
    watermark: Watermark,
    // Declared last, so it is released only after our sled handles are dropped. (sled's
    // background I/O may keep its own file a moment longer; `open_sled` waits that out.)
    _lock: DirLock,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.inner.path)
            .field("key_version", &self.key_version())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Creates a vault in `dir` (made with mode 0700 if missing) with key version 1 and a key
    /// check for `key`. Refuses a directory that already holds a vault.
    pub fn init(dir: &Path, key: &MasterKey) -> Result<Vault, VaultError> {
        Self::init_with(dir, key, &VaultOptions::default())
    }

    /// [`Vault::init`] with options.
    pub fn init_with(
        dir: &Path,
        key: &MasterKey,
        options: &VaultOptions,
    ) -> Result<Vault, VaultError> {
        ensure_private_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        let db = open_sled(dir, options)?;
        let meta = open_tree(&db, META_TREE, dir)?;
        let records = open_tree(&db, RECORDS_TREE, dir)?;
        let has_check = meta
            .contains_key(META_KEY_CHECK)
            .map_err(|e| storage(dir, e))?;
        if has_check || Watermark::read(dir)?.is_some() {
            return Err(VaultError::AlreadyInitialized {
                path: dir.to_path_buf(),
            });
        }
        // Records without a key check: refuse rather than put a new key over data that
        // another key may have written.
        if records.first().map_err(|e| storage(dir, e))?.is_some() {
            return Err(VaultError::Corrupt {
                path: dir.to_path_buf(),
                what: "it holds records but no key check; refusing to initialise over them".into(),
            });
        }
        let sealer = Sealer::new(key);
        let check = seal_key_check(&sealer, INITIAL_KEY_VERSION)?;
        let mut batch = sled::Batch::default();
        batch.insert(META_FORMAT, &[record::FORMAT_VERSION][..]);
        batch.insert(META_KEY_VERSION, &INITIAL_KEY_VERSION.to_be_bytes()[..]);
        batch.insert(META_KEY_CHECK, check);
        batch.insert(META_GENERATION, &1u64.to_be_bytes()[..]);
        // One batch, so a crash leaves either no vault or a whole one.
        meta.apply_batch(batch).map_err(|e| storage(dir, e))?;
        db.flush().map_err(|e| storage(dir, e))?;
        watermark::write(dir, 1)?;
        tracing::info!(path = %dir.display(), key_version = INITIAL_KEY_VERSION, "vault initialised");
        Ok(Vault::from_parts(
            dir,
            Keys::new(INITIAL_KEY_VERSION, key, sealer),
            records,
            meta,
            db,
            lock,
        ))
    }

    /// Opens the vault in `dir` and checks that `key` is its master key. Reads no records.
    pub fn open(dir: &Path, key: &MasterKey) -> Result<Vault, VaultError> {
        Self::open_with(dir, key, &VaultOptions::default())
    }

    /// [`Vault::open`] with options.
    pub fn open_with(
        dir: &Path,
        key: &MasterKey,
        options: &VaultOptions,
    ) -> Result<Vault, VaultError> {
        // Nothing may be created by a mere open: sled would make an empty store.
        let not_initialized = || VaultError::NotInitialized {
            path: dir.to_path_buf(),
        };
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                let mode = m.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %dir.display(),
                        mode = format_args!("{mode:04o}"),
                        "the vault directory is accessible to group or others; it should be mode 0700"
                    );
                }
            }
            Ok(_) => return Err(not_initialized()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_initialized()),
            Err(source) => return Err(io_error("read", dir, source)),
        }
        match fs::metadata(dir.join(SLED_DB_FILE)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_initialized()),
            Err(source) => return Err(io_error("read", &dir.join(SLED_DB_FILE), source)),
        }
        let lock = DirLock::acquire(dir)?;
        let db = open_sled(dir, options)?;
        let meta = open_tree(&db, META_TREE, dir)?;
        let corrupt = |what: &str| VaultError::Corrupt {
            path: dir.to_path_buf(),
            what: what.to_string(),
        };
        // Before anything else: damage near the start of the log leaves no vault metadata at
        // all, which must not read as "no vault here, run init".
        if let Some(acknowledged) = Watermark::read(dir)? {
            let held = read_generation(&meta, dir)?;
            if held < acknowledged {
                return Err(corrupt(&format!(
                    "the store holds {held} of the {acknowledged} credential writes it \
                     acknowledged (sled dropped damaged data from its log); restore the state \
                     directory from a backup (it holds `{}`; delete that file only to accept the loss)",
                    watermark::FILE
                )));
            }
        }

        let Some(format) = meta.get(META_FORMAT).map_err(|e| storage(dir, e))? else {
            return Err(not_initialized());
        };
        match *format {
            [record::FORMAT_VERSION] => {}
            [found] => {
                return Err(VaultError::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: found.into(),
                    supported: record::FORMAT_VERSION.into(),
                })
            }
            _ => return Err(corrupt("the format version is damaged")),
        }
        let key_version = match meta.get(META_KEY_VERSION).map_err(|e| storage(dir, e))? {
            Some(v) => u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("the key version is damaged"))?,
            ),
            None => return Err(corrupt("the key version is missing")),
        };
        let Some(check) = meta.get(META_KEY_CHECK).map_err(|e| storage(dir, e))? else {
            return Err(not_initialized());
        };
        let records = open_tree(&db, RECORDS_TREE, dir)?;
        let sealer = Sealer::new(key);
        // An unfinished rotation: the new key finishes it, the old one is told to step aside.
        if let Some(pending) = rotation::Pending::read(&meta, dir, key_version)? {
            return rotation::open_during_rotation(
                pending,
                rotation::OpenParts {
                    dir,
                    key,
                    sealer,
                    key_version,
                    check: &check,
                    records,
                    meta,
                    db,
                    lock,
                },
            );
        }
        verify_key_check(&sealer, &check, key_version).map_err(|e| match e {
            KeyCheckError::Damaged(what) => corrupt(&format!("the key check record {what}")),
            KeyCheckError::Mismatch => VaultError::WrongMasterKey { key_version },
        })?;
        tracing::debug!(path = %dir.display(), key_version, "vault opened");
        Ok(Vault::from_parts(
            dir,
            Keys::new(key_version, key, sealer),
            records,
            meta,
            db,
            lock,
        ))
    }

    fn from_parts(
        dir: &Path,
        keys: Keys,
        records: sled::Tree,
        meta: sled::Tree,
        db: sled::Db,
        lock: DirLock,
    ) -> Vault {
        Vault {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                keys: RwLock::new(keys),
                rotating: Mutex::new(()),
                records,
                meta,
                db,
                // Starts at 0: the store holds at least the watermark on disk (`open` checked),
                // so the first write's generation is above it anyway.
                watermark: Watermark::new(dir, 0),
                _lock: lock,
            }),
        }
    }

    /// The keys, for one read or one write (see [`Inner::keys`]).
    fn keys(&self) -> RwLockReadGuard<'_, Keys> {
        // The guarded data is replaced whole under the write guard, so a panic elsewhere
        // cannot leave it half-changed.
        self.inner.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The vault directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The version of the master key new records are encrypted under.
    pub fn key_version(&self) -> u32 {
        self.keys().version
    }

    /// Stores (or replaces) an integration's shared secret; durable when this returns.
    /// `created_at` is kept across replacements.
    pub async fn put_integration_secret(
        &self,
        integration: &str,
        cred: &Credential,
    ) -> Result<(), VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let key = record::secret_key(integration);
        let now = unix_now();
        let kind = cred.kind();
        {
            let keys = self.keys();
            let aad = record::aad(
                Kind::IntegrationSecret,
                integration.as_str(),
                "",
                keys.version,
            );
            let sealed = self.seal(&keys, cred, aad.as_ref())?;
            // Compare-and-swap, so a concurrent replacement cannot lose the first created_at.
            let mut current = self.inner.records.get(&key).map_err(|e| self.storage(e))?;
            loop {
                let created_at = match &current {
                    Some(old) => self.secret_meta(old, integration.as_str())?.created_at,
                    None => now,
                };
                let value =
                    sealed.value(keys.version, &ClearMeta::for_secret(kind, created_at, now))?;
                match self
                    .inner
                    .records
                    .compare_and_swap(&key, current.as_ref(), Some(value))
                    .map_err(|e| self.storage(e))?
                {
                    Ok(()) => break,
                    Err(conflict) => current = conflict.current,
                }
            }
        }
        self.make_durable().await?;
        tracing::debug!(
            integration = integration.as_str(),
            kind = kind.name(),
            "integration secret stored"
        );
        Ok(())
    }

    /// An integration's shared secret, if one is stored.
    pub fn integration_secret(&self, integration: &str) -> Result<Option<Credential>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let keys = self.keys();
        let Some(value) = self
            .inner
            .records
            .get(record::secret_key(integration))
            .map_err(|e| self.storage(e))?
        else {
            return Ok(None);
        };
        let id = || RecordId::IntegrationSecret {
            integration: integration.as_str().to_string(),
        };
        let raw = self.parse(&value, id)?;
        let meta = self.clear_meta(&raw, id)?;
        let aad = record::aad(
            Kind::IntegrationSecret,
            integration.as_str(),
            "",
            raw.key_version,
        );
        self.decrypt(&keys, &raw, aad.as_ref(), meta.kind, id)
            .map(Some)
    }

    /// Removes an integration's shared secret; `true` when there was one. Durable when this
    /// returns.
    pub async fn delete_integration_secret(&self, integration: &str) -> Result<bool, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let removed = self
            .inner
            .records
            .remove(record::secret_key(integration))
            .map_err(|e| self.storage(e))?;
        self.make_durable().await?;
        Ok(removed.is_some())
    }

    /// Stores (or replaces) a user's PAT with its metadata; durable when this returns.
    pub async fn put_user_pat(
        &self,
        integration: &str,
        account: &str,
        cred: &Credential,
        meta: &PatMeta,
    ) -> Result<(), VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let account = record::validate_id("account", account)?;
        {
            let keys = self.keys();
            let aad = record::aad(
                Kind::UserPat,
                integration.as_str(),
                account.as_str(),
                keys.version,
            );
            let sealed = self.seal(&keys, cred, aad.as_ref())?;
            let value = sealed.value(keys.version, &ClearMeta::for_pat(cred.kind(), meta))?;
            self.inner
                .records
                .insert(record::pat_key(integration, account), value)
                .map_err(|e| self.storage(e))?;
        }
        self.make_durable().await?;
        tracing::debug!(
            integration = integration.as_str(),
            account = account.as_str(),
            kind = cred.kind_name(),
            "user PAT stored"
        );
        Ok(())
    }

    /// A user's PAT and its metadata, if stored.
    pub fn user_pat(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<Option<(Credential, PatMeta)>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let account = record::validate_id("account", account)?;
        let keys = self.keys();
        let Some(value) = self
            .inner
            .records
            .get(record::pat_key(integration, account))
            .map_err(|e| self.storage(e))?
        else {
            return Ok(None);
        };
        let id = || pat_id(integration, account);
        let raw = self.parse(&value, id)?;
        let meta = self.clear_meta(&raw, id)?;
        let kind = meta.kind;
        let pat_meta = meta
            .into_pat_meta()
            .ok_or_else(|| self.corrupt(&id(), "its metadata lacks the PAT fields"))?;
        let aad = record::aad(
            Kind::UserPat,
            integration.as_str(),
            account.as_str(),
            raw.key_version,
        );
        let credential = self.decrypt(&keys, &raw, aad.as_ref(), kind, id)?;
        Ok(Some((credential, pat_meta)))
    }

    /// A user's PAT metadata, without decrypting the PAT.
    pub fn user_pat_meta(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<Option<PatMeta>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let account = record::validate_id("account", account)?;
        let Some(value) = self
            .inner
            .records
            .get(record::pat_key(integration, account))
            .map_err(|e| self.storage(e))?
        else {
            return Ok(None);
        };
        let id = || pat_id(integration, account);
        let raw = self.parse(&value, id)?;
        let meta = self.clear_meta(&raw, id)?;
        meta.into_pat_meta()
            .map(Some)
            .ok_or_else(|| self.corrupt(&id(), "its metadata lacks the PAT fields"))
    }

    /// Records when users' PATs were last used, `((integration, account), unix seconds)`.
    /// Only the clear metadata of each record is rewritten (nonce, ciphertext and key
    /// version are kept: the metadata is not part of the associated data), with a
    /// compare-and-swap so a PAT replaced or removed meanwhile is left as it is; an older
    /// time never replaces a newer one. One flush for the whole batch. Answers how many
    /// records were written.
    pub async fn record_pat_uses(
        &self,
        uses: &[((String, String), u64)],
    ) -> Result<usize, VaultError> {
        let mut written = 0;
        for ((integration, account), at) in uses {
            let integration = record::validate_id("integration", integration)?;
            let account = record::validate_id("account", account)?;
            let key = record::pat_key(integration, account);
            let Some(old) = self
                .inner
                .records
                .get(key.as_ref())
                .map_err(|e| self.storage(e))?
            else {
                continue;
            };
            let id = || pat_id(integration, account);
            let raw = self.parse(&old, id)?;
            let mut meta = self.clear_meta(&raw, id)?;
            if meta.last_used_at.is_some_and(|t| t >= *at) {
                continue;
            }
            meta.last_used_at = Some(*at);
            let meta_json = serde_json::to_vec(&meta).map_err(|e| {
                self.corrupt(&id(), &format!("its metadata does not serialise: {e}"))
            })?;
            let (ciphertext, tag) = raw.sealed.split_at(raw.sealed.len() - record::TAG_LEN);
            let tag: &[u8; record::TAG_LEN] = tag
                .try_into()
                .map_err(|_| self.corrupt(&id(), "its tag is truncated"))?;
            let new = RawValue::encode(raw.key_version, raw.nonce, &meta_json, ciphertext, tag);
            let swapped = self
                .inner
                .records
                .compare_and_swap(key.as_ref(), Some(&old), Some(new))
                .map_err(|e| self.storage(e))?;
            if swapped.is_ok() {
                written += 1;
            }
        }
        if written > 0 {
            self.flush().await?;
        }
        Ok(written)
    }

    /// Removes a user's PAT; `true` when there was one. Durable when this returns.
    pub async fn delete_user_pat(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<bool, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let account = record::validate_id("account", account)?;
        let removed = self
            .inner
            .records
            .remove(record::pat_key(integration, account))
            .map_err(|e| self.storage(e))?;
        self.make_durable().await?;
        Ok(removed.is_some())
    }

    /// Every record's metadata: integration secrets, then user PATs, each sorted by id.
    /// Decrypts nothing.
    /// Reads the whole store: for admin listings, not for request paths.
    pub fn list(&self) -> Result<Vec<RecordSummary>, VaultError> {
        self.summaries(self.inner.records.iter())
    }

    /// The metadata of every user PAT of one integration (a prefix scan), sorted by account.
    /// Decrypts nothing.
    pub fn list_user_pats(&self, integration: &str) -> Result<Vec<RecordSummary>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        self.summaries(
            self.inner
                .records
                .scan_prefix(record::pat_prefix(integration)),
        )
    }

    /// The number of records (integration secrets and user PATs). Counts by scanning the
    /// store, so it is O(records): for status pages, not request paths.
    pub fn count(&self) -> Result<usize, VaultError> {
        let mut n = 0;
        for entry in self.inner.records.iter().keys() {
            entry.map_err(|e| self.storage(e))?;
            n += 1;
        }
        Ok(n)
    }

    /// The number of records of each kind, for the `patgate_vault_records` gauge. Reads keys
    /// only (a record's kind is its key's first byte) and decrypts nothing; still a scan, so
    /// it runs on a blocking thread when `/metrics` is scraped, never on a request path.
    pub fn count_by_kind(&self) -> Result<RecordCounts, VaultError> {
        let mut counts = RecordCounts::default();
        for entry in self.inner.records.iter().keys() {
            let key = entry.map_err(|e| self.storage(e))?;
            match key.first() {
                Some(&b) if b == Kind::IntegrationSecret as u8 => counts.integration_secrets += 1,
                Some(&b) if b == Kind::UserPat as u8 => counts.user_pats += 1,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Makes the credential writes before it durable and records that in the watermark; the
    /// write may be acknowledged when this returns. Needs a Tokio runtime.
    async fn make_durable(&self) -> Result<(), VaultError> {
        // After the record change, so a store that holds this generation holds the change.
        let generation = self
            .inner
            .meta
            .update_and_fetch(META_GENERATION, |old| {
                let n = old
                    .and_then(|v| v.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                Some(n.saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.storage(e))?
            .and_then(|v| v.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes);
        self.flush().await?;
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || inner.watermark.advance(generation)).await {
            Ok(advanced) => advanced,
            Err(_) => Err(VaultError::FlushFailed {
                path: self.inner.path.clone(),
                reason: "writing the watermark did not finish",
            }),
        }
    }

    /// Flushes every write to disk (fsync). Needs a Tokio runtime.
    pub async fn flush(&self) -> Result<(), VaultError> {
        // Not sled's `flush_async`: in sled 0.34.7 it runs the flush on sled's own small I/O
        // thread pool, which the flush then waits on; concurrent flushes fill the pool and
        // deadlock (sled issues #1308, #1241; fixed on sled's main branch, never released).
        // The synchronous flush on a Tokio blocking thread does the same work without that.
        let db = self.inner.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => flushed.map(drop).map_err(|e| self.storage(e)),
            Err(e) => Err(VaultError::FlushFailed {
                path: self.inner.path.clone(),
                reason: if e.is_panic() {
                    "the flush panicked"
                } else {
                    "the flush was cancelled (is the runtime shutting down?)"
                },
            }),
        }
    }

    fn summaries(&self, iter: sled::Iter) -> Result<Vec<RecordSummary>, VaultError> {
        let mut out = Vec::new();
        for entry in iter {
            let (key, value) = entry.map_err(|e| self.storage(e))?;
            let id = record::decode_key(&key).ok_or_else(|| VaultError::Corrupt {
                path: self.inner.path.clone(),
                what: format!("a record has an undecodable key ({} bytes)", key.len()),
            })?;
            let raw = self.parse(&value, || id.clone())?;
            let meta = self.clear_meta(&raw, || id.clone())?;
            if matches!(id, RecordId::UserPat { .. })
                && (meta.host_login.is_none() || meta.validated_at.is_none())
            {
                return Err(self.corrupt(&id, "its metadata lacks the PAT fields"));
            }
            out.push(RecordSummary {
                id,
                credential_kind: meta.kind.name(),
                key_version: raw.key_version,
                created_at: meta.created_at,
                updated_at: meta.updated_at,
                host_login: meta.host_login,
                validated_at: meta.validated_at,
                last_used_at: meta.last_used_at,
            });
        }
        // Key order puts short ids first (length prefixes); people read listings by name.
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Encrypts a credential's plaintext encoding, built in a wiped buffer.
    fn seal(&self, keys: &Keys, cred: &Credential, aad: &[u8]) -> Result<Sealed, VaultError> {
        let len = cred.encoded_len();
        if len > MAX_PLAINTEXT {
            return Err(VaultError::CredentialTooLarge {
                size: len,
                limit: MAX_PLAINTEXT,
            });
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(len));
        cred.encode_into(&mut buf);
        let (nonce, tag) = keys.current.seal(aad, &mut buf)?;
        // `buf` now holds ciphertext; it is wiped on drop all the same.
        Ok(Sealed {
            nonce,
            ciphertext: buf.to_vec(),
            tag,
        })
    }

    fn parse<'v>(
        &self,
        value: &'v [u8],
        id: impl Fn() -> RecordId,
    ) -> Result<RawValue<'v>, VaultError> {
        RawValue::parse(value).map_err(|e| self.corrupt(&id(), &e.to_string()))
    }

    fn clear_meta(
        &self,
        raw: &RawValue<'_>,
        id: impl Fn() -> RecordId,
    ) -> Result<ClearMeta, VaultError> {
        // The metadata is not secret, so serde's message may be shown.
        serde_json::from_slice(raw.meta)
            .map_err(|e| self.corrupt(&id(), &format!("its metadata does not parse: {e}")))
    }

    fn secret_meta(&self, value: &[u8], integration: &str) -> Result<ClearMeta, VaultError> {
        let id = || RecordId::IntegrationSecret {
            integration: integration.to_string(),
        };
        let raw = self.parse(value, id)?;
        self.clear_meta(&raw, id)
    }

    fn decrypt(
        &self,
        keys: &Keys,
        raw: &RawValue<'_>,
        aad: &[u8],
        kind: CredentialKind,
        id: impl Fn() -> RecordId,
    ) -> Result<Credential, VaultError> {
        let Some(sealer) = keys.sealer_for(raw.key_version) else {
            return Err(self.corrupt(
                &id(),
                &format!(
                    "it is encrypted under key version {}, but this vault's key is version {}",
                    raw.key_version, keys.version
                ),
            ));
        };
        let credential = sealer
            .open(aad, raw.nonce, raw.sealed, Credential::decode)
            .map_err(|_| {
                self.corrupt(
                    &id(),
                    "it fails authentication (damaged, or copied from another record)",
                )
            })?
            .map_err(|_| self.corrupt(&id(), "it decrypts but does not decode as a credential"))?;
        // The clear kind is not authenticated; a mismatch means it was altered.
        if credential.kind() != kind {
            return Err(self.corrupt(&id(), "its metadata names a different credential kind"));
        }
        Ok(credential)
    }

    fn corrupt(&self, id: &RecordId, what: &str) -> VaultError {
        VaultError::Corrupt {
            path: self.inner.path.clone(),
            what: format!("{id}: {what}"),
        }
    }

    fn storage(&self, e: sled::Error) -> VaultError {
        storage(&self.inner.path, e)
    }
}

/// The master keys a vault uses: the current one, and during a rotation the previous one,
/// which records not yet re-encrypted still need.
struct Keys {
    /// The version new records are sealed under.
    version: u32,
    /// Kept (it zeroizes on drop) so a rotation can seal it under its successor.
    key: MasterKey,
    current: Sealer,
    previous: Option<(u32, Sealer)>,
}

impl Keys {
    fn new(version: u32, key: &MasterKey, sealer: Sealer) -> Keys {
        Keys {
            version,
            key: key.duplicate(),
            current: sealer,
            previous: None,
        }
    }

    /// The sealer for records of `version`, if this vault holds that key.
    fn sealer_for(&self, version: u32) -> Option<&Sealer> {
        if version == self.version {
            return Some(&self.current);
        }
        match &self.previous {
            Some((v, sealer)) if *v == version => Some(sealer),
            _ => None,
        }
    }
}

/// A credential encrypted, waiting for its metadata.
struct Sealed {
    nonce: [u8; record::NONCE_LEN],
    ciphertext: Vec<u8>,
    tag: [u8; record::TAG_LEN],
}

impl Sealed {
    fn value(&self, key_version: u32, meta: &ClearMeta) -> Result<Vec<u8>, VaultError> {
        let meta = serde_json::to_vec(meta).map_err(|_| VaultError::Encrypt)?;
        Ok(RawValue::encode(
            key_version,
            &self.nonce,
            &meta,
            &self.ciphertext,
            &self.tag,
        ))
    }
}

fn pat_id(integration: ValidId<'_>, account: ValidId<'_>) -> RecordId {
    RecordId::UserPat {
        integration: integration.as_str().to_string(),
        account: account.as_str().to_string(),
    }
}

fn seal_key_check(sealer: &Sealer, key_version: u32) -> Result<Vec<u8>, VaultError> {
    let aad = record::aad(Kind::KeyCheck, "", "", key_version);
    let mut buf = KEY_CHECK_PLAINTEXT.to_vec();
    let (nonce, tag) = sealer.seal(aad.as_ref(), &mut buf)?;
    Ok(RawValue::encode(key_version, &nonce, b"{}", &buf, &tag))
}

enum KeyCheckError {
    Damaged(&'static str),
    Mismatch,
}

fn verify_key_check(sealer: &Sealer, value: &[u8], key_version: u32) -> Result<(), KeyCheckError> {
    let raw = RawValue::parse(value).map_err(|_| KeyCheckError::Damaged("does not parse"))?;
    if raw.key_version != key_version {
        return Err(KeyCheckError::Damaged("names a different key version"));
    }
    let aad = record::aad(Kind::KeyCheck, "", "", key_version);
    let matches = sealer
        .open(aad.as_ref(), raw.nonce, raw.sealed, |plain| {
            plain == KEY_CHECK_PLAINTEXT
        })
        .map_err(|_| KeyCheckError::Mismatch)?;
    if matches {
        Ok(())
    } else {
        Err(KeyCheckError::Damaged("decrypts to the wrong constant"))
    }
}

/// Makes `dir` (and missing parents) with mode 0700, or tightens an existing one to 0700: the
/// vault's files are readable by the service alone whatever mode sled gives them.
fn ensure_private_dir(dir: &Path) -> Result<(), VaultError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                tracing::info!(path = %dir.display(), mode = format_args!("{mode:04o}"), "tightening the vault directory to mode 0700");
            }
        }
        Ok(_) => {
            return Err(io_error(
                "use as the vault directory",
                dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| io_error("create", dir, source))?;
        }
        Err(source) => return Err(io_error("read", dir, source)),
    }
    // The umask may have taken bits from the mode asked for at creation; set it exactly.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| io_error("set the mode of", dir, source))
}

/// An exclusive lock on `vault.lock` in the vault directory, held while the vault is open.
///
/// sled 0.34 locks its `db` file too (flock, non-blocking) but reports a held lock only as an
/// `io::Error` of kind `Other` with a formatted message, and it writes its `conf` file before
/// taking the lock. Taking our own lock first gives a clean `Locked` and keeps a second
/// opener's hands off sled's files. flock locks belong to the open file description, so a
/// second open in the same process conflicts just like one in another process.
struct DirLock {
    // Never read: holding the open file is what holds the lock.
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, VaultError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| io_error("open the lock file", &path, source))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(VaultError::Locked {
                path: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(io_error("lock", &path, source)),
        }
    }
}

fn open_sled(dir: &Path, options: &VaultOptions) -> Result<sled::Db, VaultError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_capacity_bytes)
        .mode(sled::Mode::LowSpace);
    // We hold `vault.lock` here, so sled's own lock on `db` being taken means a sled instance
    // of this process that was just dropped: sled 0.34 lets background I/O jobs keep the file
    // (and its flock) open a little after the last handle goes. Wait that out, briefly.
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    loop {
        // sled 0.34 panics instead of erring on some damaged files; a damaged vault must be
        // an error the admin can read, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        return match opened {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(sled::Error::Io(ref io)))
                if io.to_string().starts_with("could not acquire lock") =>
            {
                if Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(VaultError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Ok(Err(other)) => Err(storage(dir, other)),
            Err(_) => Err(VaultError::Corrupt {
                path: dir.to_path_buf(),
                what: "sled could not recover its files (it panicked while opening them)".into(),
            }),
        };
    }
}

/// The store's credential-write generation; 0 in a vault from before it was kept.
fn read_generation(meta: &sled::Tree, dir: &Path) -> Result<u64, VaultError> {
    match meta.get(META_GENERATION).map_err(|e| storage(dir, e))? {
        None => Ok(0),
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| VaultError::Corrupt {
                path: dir.to_path_buf(),
                what: "the write generation is damaged".into(),
            }),
    }
}

fn open_tree(db: &sled::Db, name: &[u8], dir: &Path) -> Result<sled::Tree, VaultError> {
    db.open_tree(name).map_err(|e| storage(dir, e))
}

/// Maps a sled error: corruption is `Corrupt`, the rest `Storage`.
fn storage(dir: &Path, e: sled::Error) -> VaultError {
    match e {
        sled::Error::Corruption { at, .. } => VaultError::Corrupt {
            path: dir.to_path_buf(),
            what: match at {
                Some(at) => format!("sled found damaged data at {at:?}"),
                None => "sled found damaged data".into(),
            },
        },
        source => VaultError::Storage {
            path: dir.to_path_buf(),
            source,
        },
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
