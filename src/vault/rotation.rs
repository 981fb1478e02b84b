//! Master key rotation while the vault serves.
//!
//! # Design
//!
//! Rotating from key version `v` (key K) to `v + 1` (key K′):
//!
//! 1. **Marker.** One atomic batch of vault settings ([`Space::Settings`]; sled's `vault`
//!    tree) writes `rotation-to` (= `v + 1`, u32be),
//!    `rotation-check` (the key check sealed under K′ for `v + 1`) and `rotation-old-key`
//!    (K sealed under K′, associated data kind 3 with version `v + 1`); then the store is
//!    flushed. From here on K′ alone can open the vault: `open` with K′ verifies
//!    `rotation-check`, unseals K from the marker and finishes the rotation; `open` with K
//!    refuses with [`VaultError::RotationInterrupted`], because K cannot read the records
//!    already moved. The caller makes K′ durable first (the CLI writes `<key file>.new`, mode
//!    0600, fsynced), so a crash never leaves the only copy of K′ in memory.
//! 2. **Writers switch.** Under the keys' write guard K′ becomes current: records written from
//!    now on are sealed under `v + 1`. K stays as the previous key, and readers pick the key
//!    by the version stored in each record. The version is part of the associated data, so a
//!    record cannot claim the other version to get itself opened with the other key.
//! 3. **Re-encryption.** Page by page, every record still under `v` is decrypted with K,
//!    sealed under K′ with a fresh nonce and put back by compare-and-swap (one batch of them
//!    per page) with its clear metadata unchanged. A record changed meanwhile is read again:
//!    a concurrent write is already under `v + 1`, a concurrent last-used update is
//!    re-encrypted, a deletion is left alone. One flush at the end.
//! 4. **Commit.** One batch: `key-version` = `v + 1`, `key-check` = `rotation-check`, the
//!    marker removed; flush. K′ is now the vault's key, and K opens nothing
//!    ([`VaultError::WrongMasterKey`]).
//! 5. **Forget.** Under the write guard the previous key is dropped (and zeroized).
//!
//! # Several processes on one store
//!
//! Replicas that share a database each hold the keys in memory. Three things keep them right
//! while one of them rotates:
//!
//! - **The write version.** The setting `write-version` names the version records must be
//!   sealed under; the marker's batch moves it to `v + 1`, guarded by it being `v` (of two
//!   processes starting a rotation at once, one writes the marker and the other resumes it
//!   with the same key or refuses). Every write of a sealed credential is a compare-and-swap
//!   guarded by the write version its key is at ([`RecordStore::compare_and_swap_guarded`],
//!   whose contract orders it against the marker's batch), so no process can store a record
//!   under `v` once the marker is in; step 3, which starts after it, sees every record stored
//!   under `v` before it.
//! - **Taking the new key.** A process whose write is refused, or that reads a record of
//!   `v + 1`, takes K′ from the file the admin installed (`<key file>.new`, given with
//!   [`Vault::take_next_key_from`]), checks it against the marker's key check (or, once
//!   committed, the vault's), and switches its keys as in step 2. Without that file it answers
//!   [`VaultError::NextKeyMissing`] and reads or writes nothing with a wrong key. K′ is never
//!   in the store: the database holds its key check and K sealed under it, which give K′ to
//!   no one who has K.
//! - **Forgetting.** [`Vault::catch_up_with_rotation`] (the service's reload) drops K once the
//!   commit is in.
//!
//! A crash before step 1 is durable changes nothing. Between 1 and 4, K′ finishes the
//! rotation on the next open. After 4, the vault is simply at `v + 1`.
//!
//! # Why no request fails meanwhile
//!
//! A reader holds the keys' read guard from fetching a record to decrypting it, and a writer
//! from sealing a record to storing it. The switches in steps 2 and 5 take the write guard,
//! so a reader that fetched a record under `v` still has K when it decrypts, and no writer
//! can store a record under `v` after step 2 (which would then be missed by step 3). The
//! guards are Tokio's: held across the store's answer to the fetch or the store, never across
//! a flush. The rotation itself runs on a blocking thread, so the re-encryption's CPU work
//! never holds up a runtime worker.

use zeroize::Zeroizing;

use super::crypto::Sealer;
use super::record::{self, Kind, RawValue};
use std::path::{Path, PathBuf};

use super::{
    seal_key_check, storage, verify_key_check, write_guard, KeyCheckError, Keys, MasterKey,
    RecordId, Vault, VaultError, META_KEY_CHECK, META_KEY_VERSION, META_WRITE_VERSION, SCAN_PAGE,
};
use crate::store::{Change, Guarded, RecordStore, Space, Swap, Swapped};

const META_ROTATION_TO: &[u8] = b"rotation-to";
const META_ROTATION_CHECK: &[u8] = b"rotation-check";
const META_ROTATION_OLD_KEY: &[u8] = b"rotation-old-key";

/// What to tell the admin about the file the next key is taken from.
fn install_hint(file: &Path) -> String {
    format!(
        "install it as {} (a copy of the new key file of the replica that rotates, mode 0600, \
         owned like the key file); patgate takes it from there by itself",
        file.display()
    )
}

/// What a finished rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// The key version before.
    pub from_version: u32,
    /// The key version now.
    pub to_version: u32,
    /// How many records were re-encrypted.
    pub records: usize,
    /// Whether this finished a rotation that an earlier attempt had started.
    pub resumed: bool,
}

/// The marker of an unfinished rotation (step 1).
pub(super) struct Pending {
    to_version: u32,
    check: Vec<u8>,
    old_key: Vec<u8>,
}

impl Pending {
    /// The version the rotation moves to.
    pub(super) fn to_version(&self) -> u32 {
        self.to_version
    }

    /// The marker, if one is stored. `key_version` is the vault's committed version.
    pub(super) async fn read(
        store: &dyn RecordStore,
        key_version: u32,
    ) -> Result<Option<Pending>, VaultError> {
        let dir = store.location();
        let corrupt = |what: &str| VaultError::Corrupt {
            path: dir.to_path_buf(),
            what: format!("the key rotation marker {what}"),
        };
        let setting = |name: &'static [u8]| async move {
            store
                .get(Space::Settings, name)
                .await
                .map_err(|e| storage(dir, e))
        };
        let Some(to) = setting(META_ROTATION_TO).await? else {
            return Ok(None);
        };
        let to_version = u32::from_be_bytes(
            to.as_slice()
                .try_into()
                .map_err(|_| corrupt("has a damaged version"))?,
        );
        if Some(to_version) != key_version.checked_add(1) {
            return Err(corrupt(&format!(
                "names key version {to_version}, but the vault is at version {key_version}"
            )));
        }
        let check = setting(META_ROTATION_CHECK)
            .await?
            .ok_or_else(|| corrupt("lacks its key check"))?;
        let old_key = setting(META_ROTATION_OLD_KEY)
            .await?
            .ok_or_else(|| corrupt("lacks the previous key"))?;
        Ok(Some(Pending {
            to_version,
            check,
            old_key,
        }))
    }

    /// The previous key, unsealed with the new key's sealer.
    fn old_key(&self, sealer: &Sealer) -> Option<MasterKey> {
        let raw = RawValue::parse(&self.old_key).ok()?;
        if raw.key_version != self.to_version {
            return None;
        }
        let aad = record::aad(Kind::RotationOldKey, "", "", self.to_version);
        sealer
            .open(aad.as_ref(), raw.nonce, raw.sealed, MasterKey::from_slice)
            .ok()
            .flatten()
    }
}

/// What `open` has in hand when it finds a rotation marker.
pub(super) struct OpenParts<'a> {
    pub(super) key: &'a MasterKey,
    pub(super) sealer: Sealer,
    pub(super) key_version: u32,
    pub(super) check: &'a [u8],
    pub(super) store: Box<dyn RecordStore>,
}

/// `open` of a vault whose rotation was interrupted: with the new key, finishes it; with the
/// old key, refuses and says how to finish it.
pub(super) async fn open_during_rotation(
    pending: Pending,
    parts: OpenParts<'_>,
) -> Result<Vault, VaultError> {
    let dir = parts.store.location().to_path_buf();
    let corrupt = |what: &str| VaultError::Corrupt {
        path: dir.clone(),
        what: what.to_string(),
    };
    match verify_key_check(&parts.sealer, &pending.check, pending.to_version) {
        Ok(()) => {}
        Err(KeyCheckError::Damaged(what)) => {
            return Err(corrupt(&format!("the rotation's key check {what}")))
        }
        Err(KeyCheckError::Mismatch) => {
            return Err(
                match verify_key_check(&parts.sealer, parts.check, parts.key_version) {
                    Ok(()) => VaultError::RotationInterrupted {
                        from_version: parts.key_version,
                        to_version: pending.to_version,
                    },
                    Err(_) => VaultError::WrongMasterKey {
                        key_version: pending.to_version,
                    },
                },
            )
        }
    }
    let old_key = pending
        .old_key(&parts.sealer)
        .ok_or_else(|| corrupt("the previous key in the rotation marker does not unseal"))?;
    let old_sealer = Sealer::new(&old_key);
    verify_key_check(&old_sealer, parts.check, parts.key_version).map_err(|_| {
        corrupt("the previous key in the rotation marker does not match the vault's key check")
    })?;
    drop(old_key);
    let keys = Keys {
        version: pending.to_version,
        key: parts.key.duplicate(),
        current: parts.sealer,
        previous: Some((parts.key_version, old_sealer)),
    };
    let vault = Vault::from_parts(keys, parts.store);
    tracing::warn!(
        path = %dir.display(),
        from_version = parts.key_version,
        to_version = pending.to_version,
        "finishing an interrupted master key rotation"
    );
    vault
        .reencrypt(parts.key_version, pending.to_version, usize::MAX)
        .await?;
    vault
        .commit(parts.key_version, pending.to_version, &pending.check)
        .await?;
    Ok(vault)
}

impl Vault {
    /// Re-encrypts every record under `new_key` as the next key version, while the vault
    /// keeps serving reads and writes (see the module docs for the design). The caller must
    /// have stored `new_key` durably first. Given the new key of an unfinished rotation, it
    /// finishes that one.
    pub async fn rotate_key(&self, new_key: MasterKey) -> Result<Rotation, VaultError> {
        // Decrypting and sealing every record is CPU work: a blocking thread drives it, so the
        // runtime's workers keep serving requests meanwhile.
        let vault = self.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runtime.block_on(vault.rotate(&new_key)))
            .await
            .map_err(|e| VaultError::FlushFailed {
                path: self.inner.path.clone(),
                reason: if e.is_panic() {
                    "the key rotation panicked"
                } else {
                    "the key rotation was cancelled (is the runtime shutting down?)"
                },
            })?
    }

    /// [`Vault::rotate_key`] on the calling task.
    async fn rotate(&self, new_key: &MasterKey) -> Result<Rotation, VaultError> {
        let _one_at_a_time = self.inner.rotating.lock().await;
        let (from, to, check, resumed) = self.begin_rotation(new_key).await?;
        let records = self.reencrypt(from, to, usize::MAX).await?;
        self.commit(from, to, &check).await?;
        Ok(Rotation {
            from_version: from,
            to_version: to,
            records,
            resumed,
        })
    }

    /// A rotation stopped after re-encrypting `records` records, as a crash would leave it.
    #[cfg(test)]
    pub(super) async fn rotate_partially(
        &self,
        new_key: &MasterKey,
        records: usize,
    ) -> Result<usize, VaultError> {
        let (from, to, _, _) = self.begin_rotation(new_key).await?;
        self.reencrypt(from, to, records).await
    }

    /// Steps 1 and 2 (or picks up the marker of an attempt that failed after step 1).
    /// Answers `(from, to, the new key check, resumed)`.
    async fn begin_rotation(
        &self,
        new_key: &MasterKey,
    ) -> Result<(u32, u32, Vec<u8>, bool), VaultError> {
        let store = self.store();
        let from = match store
            .get(Space::Settings, META_KEY_VERSION)
            .await
            .map_err(|e| self.storage(e))?
        {
            Some(v) => u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt_vault("the key version is damaged"))?,
            ),
            None => return Err(self.corrupt_vault("the key version is missing")),
        };
        let new_sealer = Sealer::new(new_key);
        // An attempt that got past its marker (in this process or another one that shares the
        // store) is resumed with its own key only.
        let resume = |pending: Pending| {
            verify_key_check(&new_sealer, &pending.check, pending.to_version)
                .map(|()| (pending.to_version, pending.check, true))
                .map_err(|_| VaultError::RotationInProgress {
                    to_version: pending.to_version,
                })
        };
        let (to, check, resumed) = match Pending::read(store, from).await? {
            Some(pending) => {
                let resumed = resume(pending)?;
                self.rotating_to(resumed.0, new_key);
                resumed
            }
            None => {
                let current_check = store
                    .get(Space::Settings, META_KEY_CHECK)
                    .await
                    .map_err(|e| self.storage(e))?
                    .ok_or_else(|| self.corrupt_vault("the key check is missing"))?;
                if verify_key_check(&new_sealer, &current_check, from).is_ok() {
                    return Err(VaultError::SameKey);
                }
                let to = from
                    .checked_add(1)
                    .ok_or_else(|| self.corrupt_vault("the key version is at its maximum"))?;
                let check = seal_key_check(&new_sealer, to)?;
                let old_key = {
                    let keys = self.keys().await;
                    let aad = record::aad(Kind::RotationOldKey, "", "", to);
                    let mut buf = Zeroizing::new(keys.key.expose().to_vec());
                    let (nonce, tag) = new_sealer.seal(aad.as_ref(), &mut buf)?;
                    RawValue::encode(to, &nonce, b"{}", &buf, &tag)
                };
                // Before the marker: a writer of this process that the marker's write version
                // refuses takes the new key from here.
                self.rotating_to(to, new_key);
                // Step 1: the marker, durable before any record changes. Guarded, so of two
                // processes starting a rotation at once one writes it and the other resumes
                // (or refuses) as above.
                let marker = store
                    .apply_guarded(
                        write_guard(from),
                        Space::Settings,
                        vec![
                            Change::put(META_ROTATION_TO, to.to_be_bytes()),
                            Change::put(META_ROTATION_CHECK, check.clone()),
                            Change::put(META_ROTATION_OLD_KEY, old_key),
                            Change::put(META_WRITE_VERSION, to.to_be_bytes()),
                        ],
                    )
                    .await
                    .map_err(|e| self.storage(e))?;
                match marker {
                    Guarded::Made(()) => {
                        self.flush().await?;
                        (to, check, false)
                    }
                    Guarded::Refused { .. } => {
                        self.inner
                            .next
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .rotating = None;
                        match Pending::read(store, from).await? {
                            Some(pending) => {
                                let resumed = resume(pending)?;
                                self.rotating_to(resumed.0, new_key);
                                resumed
                            }
                            None => {
                                return Err(self.corrupt_vault(
                                    "its write version moved on without a rotation marker",
                                ))
                            }
                        }
                    }
                }
            }
        };
        // Step 2: writers switch to the new key; the old one stays for reads.
        {
            let mut keys = self.inner.keys.write().await;
            if keys.version == from {
                let old = std::mem::replace(
                    &mut *keys,
                    Keys {
                        version: to,
                        key: new_key.duplicate(),
                        current: new_sealer,
                        previous: None,
                    },
                );
                keys.previous = Some((old.version, old.current));
                self.inner
                    .key_version
                    .store(to, std::sync::atomic::Ordering::Release);
            }
        }
        tracing::info!(path = %self.inner.path.display(), from_version = from, to_version = to, resumed, "rotating the master key");
        Ok((from, to, check, resumed))
    }

    /// Step 3, for at most `limit` records, a page of them at a time. The keys are already
    /// switched (current `to`, previous `from`). Answers how many records were re-encrypted.
    async fn reencrypt(&self, from: u32, to: u32, limit: usize) -> Result<usize, VaultError> {
        let store = self.store();
        let mut moved = 0;
        let mut after: Option<Vec<u8>> = None;
        while moved < limit {
            let page = store
                .scan(Space::Records, b"", after.as_deref(), SCAN_PAGE)
                .await
                .map_err(|e| self.storage(e))?;
            let full = page.len() == SCAN_PAGE;
            after = page.last().map(|(key, _)| key.clone());
            let keys = self.keys().await;
            let mut swaps = Vec::new();
            for (key, value) in page {
                if moved + swaps.len() == limit {
                    break;
                }
                let id = self.record_id(&key)?;
                if let Some(new) = self.reencrypted(&keys, &id, &value, to)? {
                    swaps.push((
                        id,
                        Swap {
                            key,
                            expected: Some(value),
                            new: Some(new),
                        },
                    ));
                }
            }
            let (ids, swaps): (Vec<RecordId>, Vec<Swap>) = swaps.into_iter().unzip();
            let keys_of: Vec<Vec<u8>> = swaps.iter().map(|swap| swap.key.clone()).collect();
            let answers = store
                .compare_and_swap_many(Space::Records, swaps)
                .await
                .map_err(|e| self.storage(e))?;
            for ((id, key), answer) in ids.iter().zip(keys_of).zip(answers) {
                // A record changed meanwhile is read again: a concurrent write is already
                // under `to`, a concurrent last-used update is re-encrypted, a deletion is
                // left alone.
                let mut answer = answer;
                while let Swapped::Conflict {
                    current: Some(current),
                } = &answer
                {
                    let Some(new) = self.reencrypted(&keys, id, current, to)? else {
                        break;
                    };
                    answer = store
                        .compare_and_swap(Space::Records, &key, Some(current), Some(new))
                        .await
                        .map_err(|e| self.storage(e))?;
                }
                if answer == Swapped::Done {
                    moved += 1;
                }
            }
            if !full {
                break;
            }
        }
        self.flush().await?;
        tracing::debug!(
            from_version = from,
            to_version = to,
            records = moved,
            "records re-encrypted"
        );
        Ok(moved)
    }

    /// `value` (the record `id`) decrypted and sealed again under `to`; `None` when it is
    /// under `to` already.
    fn reencrypted(
        &self,
        keys: &Keys,
        id: &RecordId,
        value: &[u8],
        to: u32,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        let raw = self.parse(value, || id.clone())?;
        if raw.key_version == to {
            return Ok(None);
        }
        let meta = self.clear_meta(&raw, || id.clone())?;
        let old_aad = id.aad(raw.key_version);
        let credential = self.decrypt(keys, &raw, old_aad.as_ref(), meta.kind, || id.clone())?;
        let new_aad = id.aad(to);
        let sealed = self.seal(keys, &credential, new_aad.as_ref())?;
        Ok(Some(RawValue::encode(
            to,
            &sealed.nonce,
            raw.meta,
            &sealed.ciphertext,
            &sealed.tag,
        )))
    }

    /// Steps 4 and 5.
    async fn commit(&self, from: u32, to: u32, check: &[u8]) -> Result<(), VaultError> {
        // Step 4: the commit.
        self.store()
            .apply(
                Space::Settings,
                vec![
                    Change::put(META_KEY_VERSION, to.to_be_bytes()),
                    Change::put(META_WRITE_VERSION, to.to_be_bytes()),
                    Change::put(META_KEY_CHECK, check),
                    Change::remove(META_ROTATION_TO),
                    Change::remove(META_ROTATION_CHECK),
                    Change::remove(META_ROTATION_OLD_KEY),
                ],
            )
            .await
            .map_err(|e| self.storage(e))?;
        self.flush().await?;
        // Step 5: forget the old key.
        self.inner.keys.write().await.previous = None;
        self.inner
            .next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rotating = None;
        tracing::info!(path = %self.inner.path.display(), from_version = from, to_version = to, "master key rotated");
        Ok(())
    }

    /// Keeps `key` as the key of `version` that this process's writers take when the write
    /// version refuses them before step 2 switched them (see [`Vault::switch_to`]).
    fn rotating_to(&self, version: u32, key: &MasterKey) {
        self.inner
            .next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rotating = Some((version, key.duplicate()));
    }

    /// Tells the vault where an admin installs the key of the next version
    /// (`<key file>.new`), for the rotations run by another process that shares the store.
    pub fn take_next_key_from(&self, file: PathBuf) {
        self.inner
            .next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file = Some(file);
    }

    /// Makes `version` the key version this process seals under, the one before it kept for
    /// the records not yet re-encrypted: another process rotates (a record or the write
    /// version names `version`). The key comes from [`NextKey`] and must pass the store's key
    /// check for `version`; without it, [`VaultError::NextKeyMissing`] says what to install,
    /// and nothing is read or written with a wrong key. Answers `false` when the store names
    /// no such version (no rotation to it, nor a vault at it): a record that claims it is
    /// damaged, not new.
    pub(super) async fn switch_to(&self, version: u32) -> Result<bool, VaultError> {
        if self.key_version() >= version {
            return Ok(true);
        }
        let Some(key) = self.next_key(version).await? else {
            return Ok(false);
        };
        let sealer = Sealer::new(&key);
        let mut keys = self.inner.keys.write().await;
        if keys.version < version {
            let old = std::mem::replace(
                &mut *keys,
                Keys {
                    version,
                    key,
                    current: sealer,
                    previous: None,
                },
            );
            keys.previous = Some((old.version, old.current));
            self.inner
                .key_version
                .store(version, std::sync::atomic::Ordering::Release);
            tracing::info!(
                path = %self.inner.path.display(),
                from_version = old.version,
                to_version = version,
                "took the new master key of a rotation run by another process"
            );
        }
        Ok(true)
    }

    /// The key of `version`, checked against the store's key check for it; `None` when the
    /// store holds no key check for `version`.
    async fn next_key(&self, version: u32) -> Result<Option<MasterKey>, VaultError> {
        let Some(check) = self.key_check_of(version).await? else {
            return Ok(None);
        };
        let (in_memory, file) = {
            let next = self.inner.next.lock().unwrap_or_else(|p| p.into_inner());
            let in_memory = match &next.rotating {
                Some((v, key)) if *v == version => Some(key.duplicate()),
                _ => None,
            };
            (in_memory, next.file.clone())
        };
        let missing = |reason: String| VaultError::NextKeyMissing { version, reason };
        let key =
            match (in_memory, file) {
                (Some(key), _) => key,
                (None, None) => return Err(missing(
                    "this process was given no file to take it from: restart it with the new key"
                        .into(),
                )),
                (None, Some(file)) => match MasterKey::load_file(&file) {
                    Ok(key) => key,
                    Err(VaultError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Err(missing(install_hint(&file)));
                    }
                    Err(e) => return Err(missing(format!("{e}; {}", install_hint(&file)))),
                },
            };
        verify_key_check(&Sealer::new(&key), &check, version).map_err(|_| {
            missing(
                match &self
                    .inner
                    .next
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .file
                {
                    Some(file) => format!(
                        "{} holds another key than the rotation's; {}",
                        file.display(),
                        install_hint(file)
                    ),
                    None => "the key given is not the rotation's".into(),
                },
            )
        })?;
        Ok(Some(key))
    }

    /// The store's key check for `version`: the rotation marker's while it moves there, the
    /// vault's once it is there; `None` for another version.
    async fn key_check_of(&self, version: u32) -> Result<Option<Vec<u8>>, VaultError> {
        let store = self.store();
        let committed = self.committed_version().await?;
        if let Some(pending) = Pending::read(store, committed).await? {
            if pending.to_version == version {
                return Ok(Some(pending.check));
            }
        }
        if committed != version {
            return Ok(None);
        }
        store
            .get(Space::Settings, META_KEY_CHECK)
            .await
            .map_err(|e| self.storage(e))
    }

    async fn committed_version(&self) -> Result<u32, VaultError> {
        match self
            .store()
            .get(Space::Settings, META_KEY_VERSION)
            .await
            .map_err(|e| self.storage(e))?
        {
            Some(v) => {
                Ok(u32::from_be_bytes(v.as_slice().try_into().map_err(
                    |_| self.corrupt_vault("the key version is damaged"),
                )?))
            }
            None => Err(self.corrupt_vault("the key version is missing")),
        }
    }

    /// Catches up with a rotation run by another process that shares the store (the reload
    /// of the service calls it; reads and writes do it by themselves when they meet the new
    /// version): takes the new key of a rotation under way or committed, and once it is
    /// committed forgets the old one. Answers the vault's committed key version and whether
    /// this process seals under it with no older key kept.
    pub async fn catch_up_with_rotation(&self) -> Result<(u32, bool), VaultError> {
        let committed = self.committed_version().await?;
        let pending = Pending::read(self.store(), committed).await?;
        let target = pending.as_ref().map_or(committed, |p| p.to_version);
        if !self.switch_to(target).await? {
            return Err(self.corrupt_vault("it names a key version it holds no key check for"));
        }
        if pending.is_some() || self.inner.rotating.try_lock().is_err() {
            return Ok((committed, false));
        }
        let mut keys = self.inner.keys.write().await;
        if keys.version == committed {
            if let Some((old, _)) = keys.previous.take() {
                tracing::info!(
                    path = %self.inner.path.display(),
                    forgotten = old,
                    key_version = committed,
                    "forgot the master key a rotation retired"
                );
            }
        }
        Ok((
            committed,
            keys.version == committed && keys.previous.is_none(),
        ))
    }

    /// Whether the key in `file` is the vault's committed key (checked against the store's key
    /// check; no key is compared or shown).
    pub async fn is_committed_key(&self, file: &Path) -> Result<bool, VaultError> {
        let committed = self.committed_version().await?;
        let Some(check) = self.key_check_of(committed).await? else {
            return Ok(false);
        };
        let key = MasterKey::load_file(file)?;
        Ok(verify_key_check(&Sealer::new(&key), &check, committed).is_ok())
    }

    fn corrupt_vault(&self, what: &str) -> VaultError {
        VaultError::Corrupt {
            path: self.inner.path.clone(),
            what: what.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::super::credential::tests::same;
    use super::super::{Credential, PatMeta};
    use super::*;

    fn key(n: u8) -> MasterKey {
        MasterKey::from_bytes([n; 32])
    }

    fn token(s: &str) -> Credential {
        Credential::Token(s.to_string().into())
    }

    fn meta() -> PatMeta {
        PatMeta {
            host_login: "alice".into(),
            scopes: vec!["repo".into()],
            validated_at: 3,
            created_at: 1,
            updated_at: 2,
            last_used_at: Some(4),
            refused: None,
            expires_at: None,
        }
    }

    fn account(i: usize) -> String {
        format!("account-{i:04}")
    }

    /// A vault with an integration secret, an AWS secret and `pats` user PATs.
    async fn filled(pats: usize) -> (tempfile::TempDir, std::path::PathBuf, Vault) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let vault = Vault::init(&dir, &key(1)).await.unwrap();
        vault
            .put_integration_secret("ghe", &token("integration-token"))
            .await
            .unwrap();
        let aws = Credential::Aws {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "secret-access-key".to_string().into(),
            session_token: Some("session".to_string().into()),
            region: "eu-west-1".into(),
        };
        vault.put_integration_secret("cc", &aws).await.unwrap();
        for i in 0..pats {
            vault
                .put_user_pat("ghe", &account(i), &token(&format!("pat-{i}")), &meta())
                .await
                .unwrap();
        }
        (tmp, dir, vault)
    }

    /// Every record decrypts to what was stored, and every stored value is under `version`.
    async fn assert_all_readable(vault: &Vault, pats: usize, version: u32) {
        assert!(same(
            &vault.integration_secret("ghe").await.unwrap().unwrap(),
            &token("integration-token")
        ));
        assert!(matches!(
            vault.integration_secret("cc").await.unwrap().unwrap(),
            Credential::Aws { ref access_key_id, .. } if access_key_id == "AKIAEXAMPLE"
        ));
        for i in 0..pats {
            let (cred, m) = vault.user_pat("ghe", &account(i)).await.unwrap().unwrap();
            assert!(same(&cred, &token(&format!("pat-{i}"))), "PAT {i}");
            assert_eq!(m, meta(), "the clear metadata is kept");
        }
        for summary in vault.list().await.unwrap() {
            assert_eq!(summary.key_version, version, "{}", summary.id);
        }
        assert_eq!(vault.key_version(), version);
    }

    async fn reopen(dir: &Path, k: &MasterKey) -> Result<Vault, VaultError> {
        Vault::open(dir, k).await
    }

    #[tokio::test]
    async fn rotation_re_encrypts_every_record_and_retires_the_old_key() {
        let (_tmp, dir, vault) = filled(3).await;
        let done = vault.rotate_key(key(2)).await.unwrap();
        assert_eq!(
            done,
            Rotation {
                from_version: 1,
                to_version: 2,
                records: 5,
                resumed: false
            }
        );
        assert_all_readable(&vault, 3, 2).await;
        // New writes are under the new key.
        vault
            .put_user_pat("ghe", "late", &token("late"), &meta())
            .await
            .unwrap();
        drop(vault);
        match reopen(&dir, &key(1)).await {
            Err(VaultError::WrongMasterKey { key_version: 2 }) => {}
            other => panic!("the old key must be refused: {other:?}"),
        }
        let vault = reopen(&dir, &key(2)).await.unwrap();
        assert_all_readable(&vault, 3, 2).await;
        // And once more, to version 3.
        let done = vault.rotate_key(key(3)).await.unwrap();
        assert_eq!((done.from_version, done.to_version), (2, 3));
        assert_all_readable(&vault, 3, 3).await;
    }

    #[tokio::test]
    async fn the_current_key_is_not_a_new_key() {
        let (_tmp, _dir, vault) = filled(1).await;
        assert!(matches!(
            vault.rotate_key(key(1)).await,
            Err(VaultError::SameKey)
        ));
        assert_all_readable(&vault, 1, 1).await;
    }

    #[tokio::test]
    async fn an_interrupted_rotation_is_finished_by_the_new_key_only() {
        for stopped_after in [0, 2, 7] {
            let (_tmp, dir, vault) = filled(5).await;
            assert_eq!(
                vault
                    .rotate_partially(&key(2), stopped_after)
                    .await
                    .unwrap(),
                stopped_after
            );
            // Mixed versions are readable in the process that was rotating, and writes
            // meanwhile go under the new key.
            assert_all_readable_mixed(&vault, 5).await;
            vault
                .put_user_pat("ghe", "late", &token("late"), &meta())
                .await
                .unwrap();
            let late = vault.list_user_pats("ghe").await.unwrap();
            let late = late
                .iter()
                .find(|r| matches!(&r.id, RecordId::UserPat { account, .. } if account == "late"))
                .unwrap();
            assert_eq!(late.key_version, 2);
            drop(vault);
            match reopen(&dir, &key(1)).await {
                Err(
                    err @ VaultError::RotationInterrupted {
                        from_version: 1,
                        to_version: 2,
                    },
                ) => assert!(err.to_string().contains("open the vault with the new key")),
                other => panic!("stopped after {stopped_after}: {other:?}"),
            }
            assert!(matches!(
                reopen(&dir, &key(3)).await,
                Err(VaultError::WrongMasterKey { key_version: 2 })
            ));
            let vault = reopen(&dir, &key(2)).await.unwrap();
            assert_all_readable(&vault, 5, 2).await;
            assert!(same(
                &vault.user_pat("ghe", "late").await.unwrap().unwrap().0,
                &token("late")
            ));
            assert!(vault
                .store()
                .get(Space::Settings, META_ROTATION_TO)
                .await
                .unwrap()
                .is_none());
            drop(vault);
            assert!(matches!(
                reopen(&dir, &key(1)).await,
                Err(VaultError::WrongMasterKey { key_version: 2 })
            ));
            assert_all_readable(&reopen(&dir, &key(2)).await.unwrap(), 5, 2).await;
        }
    }

    async fn assert_all_readable_mixed(vault: &Vault, pats: usize) {
        for i in 0..pats {
            let (cred, _) = vault.user_pat("ghe", &account(i)).await.unwrap().unwrap();
            assert!(same(&cred, &token(&format!("pat-{i}"))));
        }
    }

    #[tokio::test]
    async fn a_failed_attempt_is_resumed_with_its_key_and_not_with_another() {
        let (_tmp, _dir, vault) = filled(4).await;
        vault.rotate_partially(&key(2), 1).await.unwrap();
        assert!(matches!(
            vault.rotate_key(key(3)).await,
            Err(VaultError::RotationInProgress { to_version: 2 })
        ));
        let done = vault.rotate_key(key(2)).await.unwrap();
        assert_eq!(
            done,
            Rotation {
                from_version: 1,
                to_version: 2,
                records: 5,
                resumed: true
            }
        );
        assert_all_readable(&vault, 4, 2).await;
    }

    /// Readers and writers run on other threads for the whole rotation (twice over); not one
    /// of their calls may fail or return another credential.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_and_writes_never_fail_during_a_rotation() {
        const PATS: usize = 300;
        let (_tmp, _dir, vault) = filled(PATS).await;
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..3 {
            let (vault, stop, reads) = (vault.clone(), stop.clone(), reads.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let (cred, _) = vault
                        .user_pat("ghe", &account(i % PATS))
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(same(&cred, &token(&format!("pat-{}", i % PATS))));
                    assert!(same(
                        &vault.integration_secret("ghe").await.unwrap().unwrap(),
                        &token("integration-token")
                    ));
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                    // The store answers at once: let the writer and the rotation's flushes
                    // have the runtime's workers too.
                    tokio::task::yield_now().await;
                }
            }));
        }
        let writer = {
            let (vault, stop) = (vault.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let i = n % PATS;
                    vault
                        .put_user_pat("ghe", &account(i), &token(&format!("pat-{i}")), &meta())
                        .await
                        .unwrap();
                    vault
                        .record_pat_uses(&[(("ghe".into(), account(i)), 4)])
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        };
        let first = vault.rotate_key(key(2)).await.unwrap();
        let second = vault.rotate_key(key(3)).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let writes = writer.await.unwrap();
        assert_eq!((first.to_version, second.to_version), (2, 3));
        assert_all_readable(&vault, PATS, 3).await;
        eprintln!(
            "{} reads and {writes} writes alongside two rotations",
            reads.load(Ordering::Relaxed)
        );
    }
}
