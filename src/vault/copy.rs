//! Copying a vault from one record store to another (`patgate store copy`: sled files to
//! PostgreSQL and back): every sealed record and the vault's settings, byte for byte. The
//! master key only checks: that it opens the source, that every record decrypts before it
//! is written, and that the copy opens and every record decrypts from it afterwards. No
//! record is decrypted into anything that is kept, and nothing is sealed anew.
//!
//! How a copy that stops midway stays safe to run again:
//! 1. the records are written first, one atomic batch per page ([`RecordStore::apply`]), and
//!    flushed; a target in that state has records but no vault settings, which neither the
//!    vault (`open` finds no vault, `init` refuses records without a key check) nor a service
//!    will use, so a second run takes it for an unfinished copy and makes it exactly the
//!    source's (records the source does not hold are removed, the others written again);
//! 2. the target's records are compared with the source's, byte for byte, and counted;
//! 3. only then are the settings written (format, key version, key check, write version: one
//!    batch) and
//!    flushed: from that moment the target is a vault, and a whole one.
//!
//! The source is only read (but opening a vault made before credential writes were guarded
//! gives it its write version, as any open does): it is never flushed, and a source in the middle of a key
//! rotation is refused before the vault is opened (opening it with the new key would finish
//! the rotation, a write). A target that holds a vault is never written: when it holds
//! exactly the source's records and settings, the copy has nothing to do.

use std::path::PathBuf;

use super::record;
use super::{
    rotation, storage, Keys, MasterKey, RecordId, Vault, VaultError, META_FORMAT, META_KEY_CHECK,
    META_KEY_VERSION, META_WRITE_VERSION, SCAN_PAGE,
};
use crate::store::{Change, Entry, RecordStore, Space};

/// The settings a copy carries over, in the order they are written. Anything else in the
/// settings space belongs to the store that keeps it (sled's write generation).
const SETTINGS: [&[u8]; 4] = [
    META_FORMAT,
    META_KEY_VERSION,
    META_KEY_CHECK,
    META_WRITE_VERSION,
];

/// What a finished copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The records the target holds now, each the source's byte for byte.
    pub records: u64,
    /// The vault settings it holds now (format, key version, key check).
    pub settings: usize,
    /// The master key version of the copy.
    pub key_version: u32,
    /// How the target was found.
    pub found: TargetWas,
}

/// The target before the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetWas {
    /// No records, no vault.
    Empty,
    /// An unfinished copy: this many records and no vault settings.
    Unfinished { records: u64 },
    /// Already a copy of the source, byte for byte: nothing was written.
    SameVault,
}

/// Why a copy did not finish. Messages name stores and record ids, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source's settings carry an unfinished key rotation.
    #[error("the vault in {} is in the middle of a master key rotation", from.display())]
    SourceRotating { from: PathBuf },
    /// The target holds a vault that is not the source's, byte for byte.
    #[error(
        "{} already holds a vault ({records} record(s)) that is not a copy of the one in {}; a copy never writes over a vault",
        target.display(), from.display()
    )]
    TargetHoldsVault {
        target: PathBuf,
        from: PathBuf,
        records: u64,
    },
    /// After the records were written, the target's differ from the source's.
    #[error(
        "after the copy, {what} in {} differs from {}: the source changed while it was read (is a patgate still running on it?), or the target did not keep what it was given; the target was not made a vault",
        target.display(), from.display()
    )]
    Differs {
        /// Which record, or what about the records.
        what: String,
        target: PathBuf,
        from: PathBuf,
    },
    /// The source or the target could not be read or written, or a record does not decrypt
    /// (the vault's message names the record).
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Copies the vault in `source` into `target` (see the module docs).
pub async fn copy_vault(
    source: Box<dyn RecordStore>,
    target: Box<dyn RecordStore>,
    key: &MasterKey,
) -> Result<Copied, CopyError> {
    let source_path = source.location().to_path_buf();
    let target_path = target.location().to_path_buf();
    refuse_rotation(&*source).await?;
    let source = Vault::open_in(source, key).await?;
    let settings = read_settings(source.store()).await?;
    let Some(settings) = settings.into_iter().collect::<Option<Vec<_>>>() else {
        // `open_in` found (or, for the write version, made) all four; a store that loses one meanwhile is damaged.
        return Err(source
            .copy_damaged("a vault setting disappeared while it was copied")
            .into());
    };

    let in_target = read_settings(&*target).await?;
    let target_records = count(&*target).await?;
    let found = if in_target.iter().any(Option::is_some) {
        let same_settings = in_target
            .iter()
            .zip(&settings)
            .all(|(t, s)| t.as_deref() == Some(s.as_slice()));
        let holds_vault = || CopyError::TargetHoldsVault {
            target: target_path.clone(),
            from: source_path.clone(),
            records: target_records,
        };
        if !same_settings || rotation_pending(&*target).await? {
            return Err(holds_vault());
        }
        match compare(source.store(), &*target).await {
            Ok(()) => TargetWas::SameVault,
            Err(CopyError::Differs { .. }) => return Err(holds_vault()),
            Err(other) => return Err(other),
        }
    } else if target_records > 0 {
        remove_records_not_in(source.store(), &*target).await?;
        TargetWas::Unfinished {
            records: target_records,
        }
    } else {
        TargetWas::Empty
    };

    if found != TargetWas::SameVault {
        copy_records(&source, &*target).await?;
        flush(&*target).await?;
        compare(source.store(), &*target).await?;
        let changes = SETTINGS
            .iter()
            .zip(settings)
            .map(|(name, value)| Change::put(*name, value))
            .collect();
        target
            .apply(Space::Settings, changes)
            .await
            .map_err(|e| storage(&target_path, e))?;
        flush(&*target).await?;
    }

    // The copy, as the service will open it: the key check under this key and version, and
    // every record decrypted from what the target holds.
    let copy = Vault::open_in(target, key).await?;
    if copy.key_version() != source.key_version() {
        return Err(copy
            .copy_damaged("the copy's key version is not the source's")
            .into());
    }
    let records = copy.open_every_record().await?;
    Ok(Copied {
        records,
        settings: SETTINGS.len(),
        key_version: copy.key_version(),
        found,
    })
}

/// Refuses a store whose settings carry an unfinished rotation; lets every other state
/// through to `Vault::open_in`, which names what is wrong with it.
async fn refuse_rotation(source: &dyn RecordStore) -> Result<(), CopyError> {
    if rotation_pending(source).await? {
        return Err(CopyError::SourceRotating {
            from: source.location().to_path_buf(),
        });
    }
    Ok(())
}

/// Whether the store's settings carry a rotation marker (a damaged one counts).
async fn rotation_pending(store: &dyn RecordStore) -> Result<bool, CopyError> {
    let path = store.location();
    let version = store
        .get(Space::Settings, META_KEY_VERSION)
        .await
        .map_err(|e| storage(path, e))?;
    let Some(version) = version.and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok()) else {
        return Ok(false);
    };
    match rotation::Pending::read(store, u32::from_be_bytes(version)).await {
        Ok(pending) => Ok(pending.is_some()),
        Err(VaultError::Corrupt { .. }) => Ok(true),
        Err(other) => Err(other.into()),
    }
}

async fn read_settings(store: &dyn RecordStore) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
    let names: Vec<Vec<u8>> = SETTINGS.iter().map(|name| name.to_vec()).collect();
    store
        .get_many(Space::Settings, &names)
        .await
        .map_err(|e| storage(store.location(), e))
}

async fn count(store: &dyn RecordStore) -> Result<u64, VaultError> {
    store
        .count(Space::Records, b"")
        .await
        .map_err(|e| storage(store.location(), e))
}

async fn flush(store: &dyn RecordStore) -> Result<(), VaultError> {
    store
        .flush()
        .await
        .map_err(|e| storage(store.location(), e))
}

/// One page of a store's records, after `after`.
async fn page(store: &dyn RecordStore, after: Option<&[u8]>) -> Result<Vec<Entry>, VaultError> {
    store
        .scan(Space::Records, b"", after, SCAN_PAGE)
        .await
        .map_err(|e| storage(store.location(), e))
}

/// Every record of `source`, a page at a time: each decrypted first (a record that does
/// not is named and stops the copy before its page is written), then the page written to
/// `target` in one batch.
async fn copy_records(source: &Vault, target: &dyn RecordStore) -> Result<(), VaultError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let entries = page(source.store(), after.as_deref()).await?;
        let full = entries.len() == SCAN_PAGE;
        after = entries.last().map(|(key, _)| key.clone());
        {
            let keys = source.keys().await;
            for (key, value) in &entries {
                source.open_record(&keys, key, value)?;
            }
        }
        if !entries.is_empty() {
            let changes = entries
                .into_iter()
                .map(|(key, value)| Change::put(key, value))
                .collect();
            target
                .apply(Space::Records, changes)
                .await
                .map_err(|e| storage(target.location(), e))?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Removes the records of an unfinished copy that the source does not hold (removed from
/// it since that copy ran).
async fn remove_records_not_in(
    source: &dyn RecordStore,
    target: &dyn RecordStore,
) -> Result<(), VaultError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let entries = page(target, after.as_deref()).await?;
        let full = entries.len() == SCAN_PAGE;
        after = entries.last().map(|(key, _)| key.clone());
        let keys: Vec<Vec<u8>> = entries.into_iter().map(|(key, _)| key).collect();
        let in_source = source
            .get_many(Space::Records, &keys)
            .await
            .map_err(|e| storage(source.location(), e))?;
        let gone: Vec<Change> = keys
            .into_iter()
            .zip(in_source)
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| Change::remove(key))
            .collect();
        if !gone.is_empty() {
            target
                .apply(Space::Records, gone)
                .await
                .map_err(|e| storage(target.location(), e))?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// `Ok` when `target` holds exactly the records of `source`, byte for byte.
async fn compare(source: &dyn RecordStore, target: &dyn RecordStore) -> Result<(), CopyError> {
    let differs = |what: String| CopyError::Differs {
        what,
        target: target.location().to_path_buf(),
        from: source.location().to_path_buf(),
    };
    let mut after: Option<Vec<u8>> = None;
    let mut compared = 0u64;
    loop {
        let entries = page(source, after.as_deref()).await?;
        let full = entries.len() == SCAN_PAGE;
        after = entries.last().map(|(key, _)| key.clone());
        let keys: Vec<Vec<u8>> = entries.iter().map(|(key, _)| key.clone()).collect();
        let copies = target
            .get_many(Space::Records, &keys)
            .await
            .map_err(|e| storage(target.location(), e))?;
        for ((key, value), copy) in entries.iter().zip(copies) {
            if copy.as_deref() != Some(value.as_slice()) {
                return Err(differs(record_name(key)));
            }
        }
        compared += entries.len() as u64;
        if !full {
            break;
        }
    }
    let held = count(target).await?;
    if held != compared {
        return Err(differs(format!(
            "the number of records ({held}, the source {compared})"
        )));
    }
    Ok(())
}

/// A record's id as messages name it (its key, when that does not decode).
fn record_name(key: &[u8]) -> String {
    match record::decode_key(key) {
        Some(id) => id.to_string(),
        None => format!("a record with an undecodable key ({} bytes)", key.len()),
    }
}

impl Vault {
    /// Decrypts every record (and checks its metadata), a page at a time; answers how many
    /// there are. Nothing decrypted is kept.
    async fn open_every_record(&self) -> Result<u64, VaultError> {
        let mut after: Option<Vec<u8>> = None;
        let mut opened = 0u64;
        loop {
            let entries = page(self.store(), after.as_deref()).await?;
            let full = entries.len() == SCAN_PAGE;
            after = entries.last().map(|(key, _)| key.clone());
            let keys = self.keys().await;
            for (key, value) in &entries {
                self.open_record(&keys, key, value)?;
            }
            opened += entries.len() as u64;
            if !full {
                return Ok(opened);
            }
        }
    }

    /// Checks that the stored `value` of `key` is a whole record that decrypts under its
    /// identity; the credential is dropped (and wiped) at once.
    fn open_record(&self, keys: &Keys, key: &[u8], value: &[u8]) -> Result<RecordId, VaultError> {
        let summary = self.summary(key, value)?;
        let id = summary.id;
        let raw = self.parse(value, || id.clone())?;
        let meta = self.clear_meta(&raw, || id.clone())?;
        let aad = id.aad(raw.key_version);
        self.decrypt(keys, &raw, aad.as_ref(), meta.kind, || id.clone())?;
        Ok(id)
    }

    fn copy_damaged(&self, what: &str) -> VaultError {
        VaultError::Corrupt {
            path: self.path().to_path_buf(),
            what: what.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledRecords;
    use crate::vault::Credential;

    const CACHE: u64 = 1024 * 1024;

    fn key() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    /// An unfinished copy whose source lost a record since: the second run makes the target
    /// exactly the source's, the record gone from it too.
    #[tokio::test]
    async fn a_rerun_drops_what_the_source_no_longer_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let source = Vault::init(&a, &key()).await.unwrap();
        for id in ["one", "two"] {
            source
                .put_integration_secret(id, &Credential::Token("t".into()))
                .await
                .unwrap();
        }
        let gone = record::secret_key(record::validate_id("integration", "gone").unwrap());
        drop(source);
        let target = SledRecords::create(&b, CACHE).unwrap();
        // What a copy that stopped left, with a record the source has removed since.
        target
            .put(Space::Records, gone.as_ref(), b"an older copy".to_vec())
            .await
            .unwrap();
        target.flush().await.unwrap();
        let copied = copy_vault(
            Box::new(SledRecords::open(&a, CACHE).unwrap()),
            Box::new(target),
            &key(),
        )
        .await
        .unwrap();
        assert_eq!(copied.found, TargetWas::Unfinished { records: 1 });
        assert_eq!(copied.records, 2);
        let copy = Vault::open(&b, &key()).await.unwrap();
        assert!(!copy.has_integration_secret("gone").await.unwrap());
        assert!(copy.integration_secret("two").await.unwrap().is_some());
        assert_eq!(copy.count().await.unwrap(), 2);
    }

    /// A source with a record whose key is not a record's: named by its length, and the
    /// target is not made a vault.
    #[tokio::test]
    async fn an_undecodable_record_stops_the_copy_before_the_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let source = Vault::init(&a, &key()).await.unwrap();
        source
            .store()
            .put(Space::Records, b"\x09odd", b"x".to_vec())
            .await
            .unwrap();
        source.flush().await.unwrap();
        drop(source);
        let err = copy_vault(
            Box::new(SledRecords::open(&a, CACHE).unwrap()),
            Box::new(SledRecords::create(&b, CACHE).unwrap()),
            &key(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("a record has an undecodable key (4 bytes)"),
            "{err}"
        );
        assert!(matches!(
            Vault::open(&b, &key()).await,
            Err(VaultError::NotInitialized { .. })
        ));
    }
}
