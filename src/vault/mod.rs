//! The encrypted credential vault: integration secrets and users' personal access tokens,
//! each credential sealed with AES-256-GCM under the master key.
//!
//! Behind the seam: the vault keeps its sealed records and vault-wide settings in a
//! [`RecordStore`] (`crate::store`), as opaque bytes; by default [`SledRecords`], sled files in
//! the state directory ([`Vault::open`], [`Vault::init`]), which also owns the lock file, the
//! directory's mode and the write watermark. Encryption, the record format, the associated
//! data, the key check, rotation and when a write is acknowledged stay here.
//!
//! - Every record is bound to its identity (record kind, integration, account, key version)
//!   through the AEAD's associated data, so a ciphertext moved to another record fails to
//!   decrypt instead of handing one user's token to another.
//! - Metadata (timestamps, host login, credential kind) is kept in clear beside the
//!   ciphertext, so listings and status need no key use. It is not authenticated: someone
//!   able to write the vault files could alter it, but not a credential or its owner.
//! - A key-check record, written at `init`, lets `open` tell a wrong master key from a
//!   damaged record without scanning records; `open` is O(1) in the number of records.
//! - Writes are flushed ([`RecordStore::flush`]) before they are acknowledged, and a store
//!   that lost acknowledged writes is refused at `open` (for sled, which drops a damaged log's
//!   tail without an error: see `store/sled_store/watermark.rs`).
//! - The master key can be rotated while the vault serves; `rotation.rs` documents how that
//!   stays crash-safe and why no reader or writer fails meanwhile.
//!
//! - A vault is copied between stores (sled files and PostgreSQL) byte for byte, every record
//!   checked to decrypt on both sides: `copy.rs`.
//!
//! `record.rs` documents the byte layouts of keys, associated data and values.

mod copy;
mod credential;
mod crypto;
mod error;
mod last_use;
mod master_key;
mod record;
mod rotation;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Mutex, RwLock, RwLockReadGuard};
use zeroize::Zeroizing;

pub use self::copy::{copy_vault, Copied, CopyError, TargetWas};
pub use self::credential::Credential;
pub use self::error::VaultError;
pub use self::last_use::{PatUses, PAT_USE_FLUSH_INTERVAL};
pub use self::master_key::{
    install_pending_key, match_owner, pending_key_for, pending_key_path, MasterKey, MASTER_KEY_LEN,
    SYSTEMD_CREDENTIAL_NAME,
};
pub use self::record::{PatMeta, PatRefusal, RecordId, MAX_ID_LEN};
pub use self::rotation::Rotation;

/// Which write of an integration's secret a record is, told without decrypting it: the key
/// version and nonce it was sealed with (a fresh nonce at every write, a re-seal by a key
/// rotation included) and whether it holds a GitHub App. What lets a GitHub App's installation
/// token be reused while the App's key stays sealed ([`crate::app_tokens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SecretStamp {
    key_version: u32,
    nonce: [u8; record::NONCE_LEN],
    github_app: bool,
}

/// What [`Vault::integration_secret_unless`] answers.
#[derive(Debug)]
pub(crate) enum Stamped {
    /// Not decrypted: the caller did not need it.
    Skipped,
    Read(Credential, SecretStamp),
}

impl SecretStamp {
    fn of(raw: &record::RawValue<'_>, kind: credential::CredentialKind) -> SecretStamp {
        SecretStamp {
            key_version: raw.key_version,
            nonce: *raw.nonce,
            github_app: kind == credential::CredentialKind::GithubApp,
        }
    }

    /// Whether the record holds a GitHub App.
    pub(crate) fn is_github_app(&self) -> bool {
        self.github_app
    }
}

use self::credential::CredentialKind;
use self::crypto::Sealer;
use self::record::{ClearMeta, Kind, RawValue, ValidId};
use crate::store::{
    Change, Guard, Guarded, RecordStore, RecordStoreError, SledOpenError, SledRecords, Space, Swap,
    Swapped,
};

// Vault-wide settings ([`Space::Settings`]).
const META_FORMAT: &[u8] = b"format";
const META_KEY_VERSION: &[u8] = b"key-version";
const META_KEY_CHECK: &[u8] = b"key-check";
/// The key version records must be sealed under (u32be): the committed one, or from a
/// rotation's marker on, the one it moves to. Every write of a sealed credential is guarded
/// by it ([`RecordStore::compare_and_swap_guarded`]), so no process sharing the store can
/// store a record under a version that a rotation's re-encryption pass may already have
/// gone by (see `rotation.rs`).
const META_WRITE_VERSION: &[u8] = b"write-version";
/// What the key-check record encrypts.
const KEY_CHECK_PLAINTEXT: &[u8] = b"patgate vault key check v1";
/// The key version `init` starts at.
const INITIAL_KEY_VERSION: u32 = 1;
/// How many records a listing or a rotation asks the store for at once.
const SCAN_PAGE: usize = 256;
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
    /// When the host says a user PAT expires (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Since when the host refuses a user PAT (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_at: Option<u64>,
}

/// The parts of a PAT's metadata that [`Vault::update_pat_meta`] may change.
#[derive(Debug)]
pub struct PatMetaFields<'a> {
    pub refused: &'a mut Option<PatRefusal>,
    pub expires_at: &'a mut Option<u64>,
}

/// How many records of each kind the vault holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub integration_secrets: u64,
    pub user_pats: u64,
}

/// The credential vault. Cheap to clone (the clones share one open store) and `Send + Sync`.
///
/// The async methods need a Tokio runtime (the store's flushes and scans run on its
/// blocking threads).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the store is, as messages name it.
    path: PathBuf,
    /// The keys in use. Readers hold the read guard from fetching a record to decrypting it,
    /// and writers from sealing a record to storing it, so a rotation (which takes the write
    /// guard to change keys) never drops a key that a fetched or sealed record still needs.
    /// The guard is Tokio's, held across the store's answer (which a shared store sends over
    /// the network) but never across a flush.
    keys: RwLock<Keys>,
    /// `keys.version`, for the synchronous [`Vault::key_version`]; written under the write
    /// guard.
    key_version: AtomicU32,
    /// Held while a key rotation runs: one at a time.
    rotating: Mutex<()>,
    /// Where the key of a newer version comes from (see [`NextKey`]).
    next: std::sync::Mutex<NextKey>,
    store: Box<dyn RecordStore>,
}

/// Where this process finds the key of a newer version than it holds, when it meets a
/// record or a write version of one: a rotation that runs here has it in memory; one run by
/// another process sharing the store has it in the file the admin installs next to the key
/// file. The key found is checked against the store's key check for that version before it
/// is used, and never comes from the store itself: nothing in the store, and not the old
/// key, gives the new one away.
#[derive(Default)]
struct NextKey {
    /// The key a rotation in this process moves to, from its marker to its commit.
    rotating: Option<(u32, MasterKey)>,
    /// The file the admin installs the next key in (`<key file>.new`).
    file: Option<PathBuf>,
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
    /// check for `key`, in the embedded store ([`SledRecords`]). Refuses a directory that
    /// already holds a vault.
    pub async fn init(dir: &Path, key: &MasterKey) -> Result<Vault, VaultError> {
        Self::init_with(dir, key, &VaultOptions::default()).await
    }

    /// [`Vault::init`] with options.
    pub async fn init_with(
        dir: &Path,
        key: &MasterKey,
        options: &VaultOptions,
    ) -> Result<Vault, VaultError> {
        let store = SledRecords::create(dir, options.cache_capacity_bytes)
            .map_err(|e| not_opened(dir, e))?;
        Self::init_in(Box::new(store), key).await
    }

    /// [`Vault::init`] in the given store.
    pub async fn init_in(
        store: Box<dyn RecordStore>,
        key: &MasterKey,
    ) -> Result<Vault, VaultError> {
        let dir = store.location().to_path_buf();
        let dir = dir.as_path();
        if store
            .get(Space::Settings, META_KEY_CHECK)
            .await
            .map_err(|e| storage(dir, e))?
            .is_some()
        {
            return Err(VaultError::AlreadyInitialized {
                path: dir.to_path_buf(),
            });
        }
        // Records without a key check: refuse rather than put a new key over data that
        // another key may have written.
        let any = store
            .scan(Space::Records, b"", None, 1)
            .await
            .map_err(|e| storage(dir, e))?;
        if !any.is_empty() {
            return Err(VaultError::Corrupt {
                path: dir.to_path_buf(),
                what: "it holds records but no key check; refusing to initialise over them".into(),
            });
        }
        let sealer = Sealer::new(key);
        let check = seal_key_check(&sealer, INITIAL_KEY_VERSION)?;
        // One batch, so a crash leaves either no vault or a whole one.
        store
            .apply(
                Space::Settings,
                vec![
                    Change::put(META_FORMAT, [record::FORMAT_VERSION]),
                    Change::put(META_KEY_VERSION, INITIAL_KEY_VERSION.to_be_bytes()),
                    Change::put(META_WRITE_VERSION, INITIAL_KEY_VERSION.to_be_bytes()),
                    Change::put(META_KEY_CHECK, check),
                ],
            )
            .await
            .map_err(|e| storage(dir, e))?;
        store.flush().await.map_err(|e| storage(dir, e))?;
        tracing::info!(path = %dir.display(), key_version = INITIAL_KEY_VERSION, "vault initialised");
        Ok(Vault::from_parts(
            Keys::new(INITIAL_KEY_VERSION, key, sealer),
            store,
        ))
    }

    /// Opens the vault in `dir` (the embedded store, [`SledRecords`]) and checks that `key`
    /// is its master key. Reads no records.
    pub async fn open(dir: &Path, key: &MasterKey) -> Result<Vault, VaultError> {
        Self::open_with(dir, key, &VaultOptions::default()).await
    }

    /// [`Vault::open`] with options.
    pub async fn open_with(
        dir: &Path,
        key: &MasterKey,
        options: &VaultOptions,
    ) -> Result<Vault, VaultError> {
        let store =
            SledRecords::open(dir, options.cache_capacity_bytes).map_err(|e| not_opened(dir, e))?;
        Self::open_in(Box::new(store), key).await
    }

    /// [`Vault::open`] of the vault in the given store.
    pub async fn open_in(
        store: Box<dyn RecordStore>,
        key: &MasterKey,
    ) -> Result<Vault, VaultError> {
        let dir = store.location().to_path_buf();
        let dir = dir.as_path();
        let not_initialized = || VaultError::NotInitialized {
            path: dir.to_path_buf(),
        };
        let corrupt = |what: &str| VaultError::Corrupt {
            path: dir.to_path_buf(),
            what: what.to_string(),
        };
        let setting = |name: &'static [u8]| {
            let store = &store;
            async move {
                store
                    .get(Space::Settings, name)
                    .await
                    .map_err(|e| storage(dir, e))
            }
        };
        let Some(format) = setting(META_FORMAT).await? else {
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
        let key_version = match setting(META_KEY_VERSION).await? {
            Some(v) => u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("the key version is damaged"))?,
            ),
            None => return Err(corrupt("the key version is missing")),
        };
        let Some(check) = setting(META_KEY_CHECK).await? else {
            return Err(not_initialized());
        };
        let sealer = Sealer::new(key);
        let pending = rotation::Pending::read(&*store, key_version).await?;
        // A vault made before writes were guarded: its write version, once (an insert, so
        // two processes opening it at once agree).
        if setting(META_WRITE_VERSION).await?.is_none() {
            let writes_at = pending.as_ref().map_or(key_version, |p| p.to_version());
            store
                .compare_and_swap(
                    Space::Settings,
                    META_WRITE_VERSION,
                    None,
                    Some(writes_at.to_be_bytes().to_vec()),
                )
                .await
                .map_err(|e| storage(dir, e))?;
        }
        // An unfinished rotation: the new key finishes it, the old one is told to step aside.
        if let Some(pending) = pending {
            return rotation::open_during_rotation(
                pending,
                rotation::OpenParts {
                    key,
                    sealer,
                    key_version,
                    check: &check,
                    store,
                },
            )
            .await;
        }
        verify_key_check(&sealer, &check, key_version).map_err(|e| match e {
            KeyCheckError::Damaged(what) => corrupt(&format!("the key check record {what}")),
            KeyCheckError::Mismatch => VaultError::WrongMasterKey { key_version },
        })?;
        tracing::debug!(path = %dir.display(), key_version, "vault opened");
        Ok(Vault::from_parts(
            Keys::new(key_version, key, sealer),
            store,
        ))
    }

    fn from_parts(keys: Keys, store: Box<dyn RecordStore>) -> Vault {
        Vault {
            inner: Arc::new(Inner {
                path: store.location().to_path_buf(),
                key_version: AtomicU32::new(keys.version),
                keys: RwLock::new(keys),
                rotating: Mutex::new(()),
                next: std::sync::Mutex::default(),
                store,
            }),
        }
    }

    /// The keys, for one read or one write (see [`Inner::keys`]).
    async fn keys(&self) -> RwLockReadGuard<'_, Keys> {
        self.inner.keys.read().await
    }

    fn store(&self) -> &dyn RecordStore {
        &*self.inner.store
    }

    /// The vault directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The version of the master key new records are encrypted under.
    pub fn key_version(&self) -> u32 {
        self.inner.key_version.load(Ordering::Acquire)
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
        self.store_sealed(key.as_ref(), &mut |keys, current| {
            let aad = record::aad(
                Kind::IntegrationSecret,
                integration.as_str(),
                "",
                keys.version,
            );
            let sealed = self.seal(keys, cred, aad.as_ref())?;
            // Kept across replacements: the compare-and-swap makes sure a concurrent one
            // cannot lose the first created_at.
            let created_at = match current {
                Some(old) => self.secret_meta(old, integration.as_str())?.created_at,
                None => now,
            };
            sealed.value(keys.version, &ClearMeta::for_secret(kind, created_at, now))
        })
        .await?;
        self.flush().await?;
        tracing::debug!(
            integration = integration.as_str(),
            kind = kind.name(),
            "integration secret stored"
        );
        Ok(())
    }

    /// Stores the sealed value `value` makes (from the keys in use and the record's current
    /// value) at `key` in the records, by a compare-and-swap guarded by the write version
    /// ([`META_WRITE_VERSION`]): a value sealed under an older version than the store's
    /// writes use is never stored. When the guard refuses, this process takes the newer key
    /// ([`Vault::switch_to`]) and seals again. Not flushed.
    async fn store_sealed(&self, key: &[u8], value: &mut SealFor<'_>) -> Result<(), VaultError> {
        loop {
            // Held from sealing to storing (see `Inner::keys`).
            let keys = self.keys().await;
            let mut current = self
                .store()
                .get(Space::Records, key)
                .await
                .map_err(|e| self.storage(e))?;
            let newer = loop {
                let swap = Swap {
                    key: key.to_vec(),
                    expected: current.clone(),
                    new: Some(value(&keys, current.as_deref())?),
                };
                let answer = self
                    .store()
                    .compare_and_swap_guarded(write_guard(keys.version), Space::Records, vec![swap])
                    .await
                    .map_err(|e| self.storage(e))?;
                match answer {
                    Guarded::Made(mut answers) => match answers.pop() {
                        Some(Swapped::Done) if answers.is_empty() => return Ok(()),
                        Some(Swapped::Conflict { current: now }) if answers.is_empty() => {
                            current = now;
                        }
                        _ => {
                            return Err(self.storage(RecordStoreError::Failed(
                                "the store answered a compare-and-swap of one with another number of answers"
                                    .into(),
                            )))
                        }
                    },
                    Guarded::Refused { current } => break current,
                }
            };
            drop(keys);
            let version = newer
                .as_deref()
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes);
            match version {
                Some(version) if version > self.key_version() => {
                    if !self.switch_to(version).await? {
                        return Err(VaultError::Corrupt {
                            path: self.inner.path.clone(),
                            what: format!(
                                "its write version ({version}) names a key version that neither it nor a rotation marker holds a key check for"
                            ),
                        });
                    }
                }
                // Another writer of this process switched meanwhile: seal again.
                Some(version) if version == self.key_version() => {}
                Some(version) => {
                    return Err(VaultError::Corrupt {
                        path: self.inner.path.clone(),
                        what: format!(
                        "its write version ({version}) is older than the key version in use ({})",
                        self.key_version()
                    ),
                    })
                }
                None => {
                    return Err(VaultError::Corrupt {
                        path: self.inner.path.clone(),
                        what: "the write version is missing or damaged".into(),
                    })
                }
            }
        }
    }

    /// An integration's shared secret, if one is stored.
    pub async fn integration_secret(
        &self,
        integration: &str,
    ) -> Result<Option<Credential>, VaultError> {
        Ok(
            match self
                .integration_secret_unless(integration, |_| false)
                .await?
            {
                Some(Stamped::Read(credential, _)) => Some(credential),
                Some(Stamped::Skipped) | None => None,
            },
        )
    }

    /// The integration's secret with the [`SecretStamp`] of the record it was read from (one
    /// read: the stamp is that credential's), unless `skip` says, from the stamp alone, that
    /// it is not needed: then nothing is decrypted and only the stamp is answered.
    pub(crate) async fn integration_secret_unless(
        &self,
        integration: &str,
        skip: impl Fn(SecretStamp) -> bool,
    ) -> Result<Option<Stamped>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let id = || RecordId::IntegrationSecret {
            integration: integration.as_str().to_string(),
        };
        self.read_sealed(record::secret_key(integration).as_ref(), id, |keys, raw| {
            let meta = self.clear_meta(raw, id)?;
            let stamp = SecretStamp::of(raw, meta.kind);
            if skip(stamp) {
                return Ok(Stamped::Skipped);
            }
            let aad = record::aad(
                Kind::IntegrationSecret,
                integration.as_str(),
                "",
                raw.key_version,
            );
            let credential = self.decrypt(keys, raw, aad.as_ref(), meta.kind, id)?;
            Ok(Stamped::Read(credential, stamp))
        })
        .await
    }

    /// Whether an integration's shared secret is stored (nothing is decrypted).
    pub async fn has_integration_secret(&self, integration: &str) -> Result<bool, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        Ok(self
            .store()
            .get(Space::Records, record::secret_key(integration).as_ref())
            .await
            .map_err(|e| self.storage(e))?
            .is_some())
    }

    /// Removes an integration's shared secret; `true` when there was one. Durable when this
    /// returns.
    pub async fn delete_integration_secret(&self, integration: &str) -> Result<bool, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let removed = self
            .store()
            .remove(Space::Records, record::secret_key(integration).as_ref())
            .await
            .map_err(|e| self.storage(e))?;
        self.flush().await?;
        Ok(removed)
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
        let key = record::pat_key(integration, account);
        self.store_sealed(key.as_ref(), &mut |keys, _| {
            let aad = record::aad(
                Kind::UserPat,
                integration.as_str(),
                account.as_str(),
                keys.version,
            );
            let sealed = self.seal(keys, cred, aad.as_ref())?;
            sealed.value(keys.version, &ClearMeta::for_pat(cred.kind(), meta))
        })
        .await?;
        self.flush().await?;
        tracing::debug!(
            integration = integration.as_str(),
            account = account.as_str(),
            kind = cred.kind_name(),
            "user PAT stored"
        );
        Ok(())
    }

    /// A user's PAT and its metadata, if stored.
    pub async fn user_pat(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<Option<(Credential, PatMeta)>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let account = record::validate_id("account", account)?;
        let id = || pat_id(integration, account);
        self.read_sealed(
            record::pat_key(integration, account).as_ref(),
            id,
            |keys, raw| {
                let meta = self.clear_meta(raw, id)?;
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
                let credential = self.decrypt(keys, raw, aad.as_ref(), kind, id)?;
                Ok((credential, pat_meta))
            },
        )
        .await
    }

    /// A user's PAT metadata, without decrypting the PAT.
    pub async fn user_pat_meta(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<Option<PatMeta>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        let account = record::validate_id("account", account)?;
        let Some(value) = self
            .store()
            .get(
                Space::Records,
                record::pat_key(integration, account).as_ref(),
            )
            .await
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
    /// compare-and-swap so a PAT replaced, re-encrypted or removed meanwhile is left as it
    /// is; an older time never replaces a newer one, and a record whose metadata alone
    /// changed meanwhile (another flush of last-use times, from this process or another that
    /// shares the store) is read again and merged. One read and one write of the store for the
    /// whole batch, and one flush. Answers how many records were written.
    pub async fn record_pat_uses(
        &self,
        uses: &[((String, String), u64)],
    ) -> Result<usize, VaultError> {
        let mut keys = Vec::with_capacity(uses.len());
        for ((integration, account), _) in uses {
            let integration = record::validate_id("integration", integration)?;
            let account = record::validate_id("account", account)?;
            keys.push(record::pat_key(integration, account).as_ref().to_vec());
        }
        let olds = self
            .store()
            .get_many(Space::Records, &keys)
            .await
            .map_err(|e| self.storage(e))?;
        let mut swaps = Vec::new();
        let mut asked = Vec::new();
        for ((((integration, account), at), key), old) in uses.iter().zip(keys).zip(olds) {
            let Some(old) = old else {
                continue;
            };
            let id = RecordId::UserPat {
                integration: integration.clone(),
                account: account.clone(),
            };
            let Some(new) = self.with_last_use(&old, *at, &id)? else {
                continue;
            };
            swaps.push(Swap {
                key,
                expected: Some(old.clone()),
                new: Some(new),
            });
            asked.push((id, old, *at));
        }
        if swaps.is_empty() {
            return Ok(0);
        }
        let keys: Vec<Vec<u8>> = swaps.iter().map(|swap| swap.key.clone()).collect();
        let answers = self
            .store()
            .compare_and_swap_many(Space::Records, swaps)
            .await
            .map_err(|e| self.storage(e))?;
        let mut written = 0;
        for ((key, (id, mut old, at)), mut answer) in keys.iter().zip(asked).zip(answers) {
            loop {
                match answer {
                    Swapped::Done => {
                        written += 1;
                        break;
                    }
                    Swapped::Conflict {
                        current: Some(current),
                    } if self.same_credential(&old, &current, &id)? => {
                        let Some(new) = self.with_last_use(&current, at, &id)? else {
                            break;
                        };
                        answer = self
                            .store()
                            .compare_and_swap(Space::Records, key, Some(&current), Some(new))
                            .await
                            .map_err(|e| self.storage(e))?;
                        old = current;
                    }
                    Swapped::Conflict { .. } => break,
                }
            }
        }
        if written > 0 {
            self.flush().await?;
        }
        Ok(written)
    }

    /// The record `value` with `at` as its last use; `None` when it holds that use or a later
    /// one already.
    fn with_last_use(
        &self,
        value: &[u8],
        at: u64,
        id: &RecordId,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        self.with_meta(value, id, &mut |meta| {
            if meta.last_used_at.is_some_and(|t| t >= at) {
                return false;
            }
            meta.last_used_at = Some(at);
            true
        })
    }

    /// Changes the clear metadata of a user's PAT (`change` answers whether it changed
    /// anything), only while the record still holds the PAT stored at `stored_at` (its
    /// `updated_at`): a refusal or an expiry seen with an older PAT never lands on a newer
    /// one. The sealed credential is kept as it is; a concurrent change of the metadata alone
    /// (a last-use flush) is read again and merged. Durable when this returns `true`.
    pub async fn update_pat_meta(
        &self,
        integration: &str,
        account: &str,
        stored_at: u64,
        change: &mut (dyn FnMut(&mut PatMetaFields<'_>) -> bool + Send),
    ) -> Result<bool, VaultError> {
        let integration_id = record::validate_id("integration", integration)?;
        let account_id = record::validate_id("account", account)?;
        let key = record::pat_key(integration_id, account_id)
            .as_ref()
            .to_vec();
        let id = RecordId::UserPat {
            integration: integration.to_string(),
            account: account.to_string(),
        };
        let mut current = self
            .store()
            .get(Space::Records, &key)
            .await
            .map_err(|e| self.storage(e))?;
        loop {
            let Some(old) = current else {
                return Ok(false);
            };
            let new = self.with_meta(&old, &id, &mut |meta| {
                meta.updated_at == stored_at
                    && change(&mut PatMetaFields {
                        refused: &mut meta.refused,
                        expires_at: &mut meta.expires_at,
                    })
            })?;
            let Some(new) = new else {
                return Ok(false);
            };
            match self
                .store()
                .compare_and_swap(Space::Records, &key, Some(&old), Some(new))
                .await
                .map_err(|e| self.storage(e))?
            {
                Swapped::Done => {
                    self.flush().await?;
                    return Ok(true);
                }
                Swapped::Conflict { current: now } => current = now,
            }
        }
    }

    /// The record `value` with its clear metadata changed by `change`; `None` when `change`
    /// changed nothing.
    fn with_meta(
        &self,
        value: &[u8],
        id: &RecordId,
        change: &mut dyn FnMut(&mut ClearMeta) -> bool,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        let raw = self.parse(value, || id.clone())?;
        let mut meta = self.clear_meta(&raw, || id.clone())?;
        if !change(&mut meta) {
            return Ok(None);
        }
        let meta_json = serde_json::to_vec(&meta)
            .map_err(|e| self.corrupt(id, &format!("its metadata does not serialise: {e}")))?;
        let (ciphertext, tag) = raw.sealed.split_at(raw.sealed.len() - record::TAG_LEN);
        let tag: &[u8; record::TAG_LEN] = tag
            .try_into()
            .map_err(|_| self.corrupt(id, "its tag is truncated"))?;
        Ok(Some(RawValue::encode(
            raw.key_version,
            raw.nonce,
            &meta_json,
            ciphertext,
            tag,
        )))
    }

    /// Whether two values of the record `id` hold the same sealed credential (they differ in
    /// clear metadata at most).
    fn same_credential(&self, a: &[u8], b: &[u8], id: &RecordId) -> Result<bool, VaultError> {
        let a = self.parse(a, || id.clone())?;
        let b = self.parse(b, || id.clone())?;
        Ok(a.key_version == b.key_version && a.nonce == b.nonce && a.sealed == b.sealed)
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
            .store()
            .remove(
                Space::Records,
                record::pat_key(integration, account).as_ref(),
            )
            .await
            .map_err(|e| self.storage(e))?;
        self.flush().await?;
        Ok(removed)
    }

    /// Every record's metadata: integration secrets, then user PATs, each sorted by id.
    /// Decrypts nothing.
    /// Reads the whole store: for admin listings, not for request paths.
    pub async fn list(&self) -> Result<Vec<RecordSummary>, VaultError> {
        self.summaries(b"").await
    }

    /// The metadata of every user PAT of one integration (a prefix scan), sorted by account.
    /// Decrypts nothing.
    pub async fn list_user_pats(
        &self,
        integration: &str,
    ) -> Result<Vec<RecordSummary>, VaultError> {
        let integration = record::validate_id("integration", integration)?;
        self.summaries(record::pat_prefix(integration).as_ref())
            .await
    }

    /// The number of records (integration secrets and user PATs). Counts by scanning the
    /// store, so it is O(records): for status pages, not request paths.
    pub async fn count(&self) -> Result<usize, VaultError> {
        let n = self
            .store()
            .count(Space::Records, b"")
            .await
            .map_err(|e| self.storage(e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The number of records of each kind, for the `patgate_vault_records` gauge. Counts keys
    /// only (a record's kind is its key's first byte) and decrypts nothing; still a scan, which
    /// the store keeps off the request threads ([`RecordStore::count`]).
    pub async fn count_by_kind(&self) -> Result<RecordCounts, VaultError> {
        let count = |kind: Kind| async move {
            self.store()
                .count(Space::Records, &[kind as u8])
                .await
                .map_err(|e| self.storage(e))
        };
        Ok(RecordCounts {
            integration_secrets: count(Kind::IntegrationSecret).await?,
            user_pats: count(Kind::UserPat).await?,
        })
    }

    /// Makes every write before it durable; a write is acknowledged only after this returns.
    /// Needs a Tokio runtime.
    pub async fn flush(&self) -> Result<(), VaultError> {
        self.store().flush().await.map_err(|e| self.storage(e))
    }

    /// The summaries of the records whose keys start with `prefix`, read page by page.
    async fn summaries(&self, prefix: &[u8]) -> Result<Vec<RecordSummary>, VaultError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store()
                .scan(Space::Records, prefix, after.as_deref(), SCAN_PAGE)
                .await
                .map_err(|e| self.storage(e))?;
            let full = page.len() == SCAN_PAGE;
            after = page.last().map(|(key, _)| key.clone());
            for (key, value) in page {
                out.push(self.summary(&key, &value)?);
            }
            if !full {
                break;
            }
        }
        // Key order puts short ids first (length prefixes); people read listings by name.
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn summary(&self, key: &[u8], value: &[u8]) -> Result<RecordSummary, VaultError> {
        let id = self.record_id(key)?;
        let raw = self.parse(value, || id.clone())?;
        let meta = self.clear_meta(&raw, || id.clone())?;
        if matches!(id, RecordId::UserPat { .. })
            && (meta.host_login.is_none() || meta.validated_at.is_none())
        {
            return Err(self.corrupt(&id, "its metadata lacks the PAT fields"));
        }
        Ok(RecordSummary {
            id,
            credential_kind: meta.kind.name(),
            key_version: raw.key_version,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            host_login: meta.host_login,
            validated_at: meta.validated_at,
            last_used_at: meta.last_used_at,
            expires_at: meta.expires_at,
            refused_at: meta.refused.map(|r| r.at),
        })
    }

    fn record_id(&self, key: &[u8]) -> Result<RecordId, VaultError> {
        record::decode_key(key).ok_or_else(|| VaultError::Corrupt {
            path: self.inner.path.clone(),
            what: format!("a record has an undecodable key ({} bytes)", key.len()),
        })
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

    /// The sealed record at `key`, opened by `open` with the keys' read guard held from the
    /// fetch to the decryption; `None` when there is none. A record sealed by another process
    /// under the key a rotation moves to makes this one take that key and read again.
    async fn read_sealed<T>(
        &self,
        key: &[u8],
        id: impl Fn() -> RecordId + Copy,
        open: impl Fn(&Keys, &RawValue<'_>) -> Result<T, VaultError>,
    ) -> Result<Option<T>, VaultError> {
        loop {
            let keys = self.keys().await;
            let Some(value) = self
                .store()
                .get(Space::Records, key)
                .await
                .map_err(|e| self.storage(e))?
            else {
                return Ok(None);
            };
            let raw = self.parse(&value, id)?;
            if raw.key_version > keys.version {
                drop(keys);
                if self.switch_to(raw.key_version).await? {
                    continue;
                }
                return Err(self.unknown_version(&id(), raw.key_version));
            }
            return open(&keys, &raw).map(Some);
        }
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
            return Err(self.unknown_version(&id(), raw.key_version));
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

    /// A record under a key version this vault holds no key for, and that no rotation in
    /// the store names.
    fn unknown_version(&self, id: &RecordId, record_version: u32) -> VaultError {
        self.corrupt(
            id,
            &format!(
                "it is encrypted under key version {record_version}, but this vault's key is version {}",
                self.key_version()
            ),
        )
    }

    fn corrupt(&self, id: &RecordId, what: &str) -> VaultError {
        VaultError::Corrupt {
            path: self.inner.path.clone(),
            what: format!("{id}: {what}"),
        }
    }

    fn storage(&self, e: RecordStoreError) -> VaultError {
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

/// What [`Vault::store_sealed`] stores: a value sealed with the keys given, from the
/// record's current value.
type SealFor<'a> = dyn FnMut(&Keys, Option<&[u8]>) -> Result<Vec<u8>, VaultError> + Send + 'a;

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

/// The guard of a write sealed under `key_version`: the store's writes use that version.
fn write_guard(key_version: u32) -> Guard {
    Guard {
        key: META_WRITE_VERSION.to_vec(),
        expected: key_version.to_be_bytes().to_vec(),
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

/// Maps why the embedded store did not open.
fn not_opened(dir: &Path, e: SledOpenError) -> VaultError {
    let path = dir.to_path_buf();
    match e {
        SledOpenError::NotFound => VaultError::NotInitialized { path },
        SledOpenError::Exists => VaultError::AlreadyInitialized { path },
        SledOpenError::Locked => VaultError::Locked { path },
        SledOpenError::Io(io) => VaultError::Io {
            action: io.action,
            path: io.path,
            source: io.source,
        },
        SledOpenError::Store(e) => storage(dir, e),
    }
}

/// Maps a store error: damage is `Corrupt`, a flush that did not finish `FlushFailed`, the
/// rest `Storage`.
fn storage(dir: &Path, e: RecordStoreError) -> VaultError {
    let path = dir.to_path_buf();
    match e {
        RecordStoreError::Damaged(what) => VaultError::Corrupt { path, what },
        RecordStoreError::Unfinished(reason) => VaultError::FlushFailed { path, reason },
        source @ RecordStoreError::Failed(_) => VaultError::Storage { path, source },
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
