//! The embedded [`RecordStore`]: sled 0.34 files in the state directory. The default; one
//! patgate process needs no database.
//!
//! - Two sled trees: `records` ([`Space::Records`]) and `vault` ([`Space::Settings`]), which
//!   also holds this store's own `generation` entry (see `watermark.rs`).
//! - The directory is made (or tightened to) mode 0700; its files are the service's alone.
//! - `vault.lock` is taken before sled opens anything: a second opener, in this process or
//!   another, gets [`SledOpenError::Locked`] (see [`DirLock`]).
//! - sled drops a damaged log's tail without an error; the write watermark turns that into
//!   a refusal to open ([`RecordStoreError::Damaged`]) instead of an older store.
//! - Reads and compare-and-swaps run on the caller's thread (sled answers them from its page
//!   cache, or with a short read); counts and flushes run on a Tokio blocking thread.

mod watermark;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::ops::Bound;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::watermark::Watermark;
use super::{
    BoxFuture, Change, Entry, Guard, Guarded, RecordStore, RecordStoreError, Space, Swap, Swapped,
};

#[cfg(test)]
pub(crate) use self::watermark::{write as write_watermark, FILE as WATERMARK_FILE};

/// The sled tree of [`Space::Records`].
pub(crate) const RECORDS_TREE: &[u8] = b"records";
/// The sled tree of [`Space::Settings`].
pub(crate) const SETTINGS_TREE: &[u8] = b"vault";
/// How many flushes the store holds (u64be), in the settings tree; see `watermark.rs`.
const GENERATION: &[u8] = b"generation";
/// Our own lock, taken before sled opens anything (see [`DirLock`]).
pub(crate) const LOCK_FILE: &str = "vault.lock";
/// The file sled keeps its data in; its absence means there is no store.
pub(crate) const DB_FILE: &str = "db";
/// How long opening waits for sled's own file lock once it holds `vault.lock`.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// A file-system operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {path}: {source}", path = .path.display())]
pub struct IoError {
    /// What was being done, e.g. `read`.
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    fn new(action: &'static str, path: &Path, source: std::io::Error) -> IoError {
        IoError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why [`SledRecords::open`] or [`SledRecords::create`] gave no store.
#[derive(Debug, thiserror::Error)]
pub enum SledOpenError {
    /// `open`: no store in the directory (nothing was created).
    #[error("there is no store here")]
    NotFound,
    /// `create`: the directory's watermark says a store with acknowledged writes was here.
    #[error("a store was made here before")]
    Exists,
    /// Another opener holds the directory.
    #[error("the store is in use by another opener")]
    Locked,
    #[error(transparent)]
    Io(#[from] IoError),
    /// sled failed, or found its files damaged.
    #[error(transparent)]
    Store(#[from] RecordStoreError),
}

/// See the module docs.
pub struct SledRecords {
    dir: PathBuf,
    records: sled::Tree,
    settings: sled::Tree,
    db: sled::Db,
    watermark: Arc<Watermark>,
    /// Whether a write call came since the last flush counted a generation. A flush that
    /// follows none (a shutdown's) makes its changes durable without counting one, so the
    /// generation counts the flushes that acknowledged writes.
    written: AtomicBool,
    /// Held while a flush decides its generation (clears `written`, then counts one or reads
    /// the count), so a flush that finds nothing new still reads a count that covers the
    /// writes another flush took over.
    counting: Mutex<()>,
    /// Held by every write of [`Space::Settings`] and by every guarded write, from reading
    /// the guard to the last change: the order the trait asks of guarded writes (one process
    /// holds the store, so a lock in it orders them all).
    settings_order: Mutex<()>,
    // Declared last, so it is released only after our sled handles are dropped. (sled's
    // background I/O may keep its own file a moment longer; `open_sled` waits that out.)
    _lock: DirLock,
}

impl fmt::Debug for SledRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledRecords")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SledRecords {
    /// Opens (or makes) the store in `dir` for a new vault: makes `dir` with mode 0700 if
    /// missing, or tightens it to 0700. Refuses a directory whose watermark says it held a
    /// store (one whose log may have lost everything still counts). `cache_capacity_bytes`
    /// is sled's page cache.
    pub fn create(dir: &Path, cache_capacity_bytes: u64) -> Result<SledRecords, SledOpenError> {
        ensure_private_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        let db = open_sled(dir, cache_capacity_bytes)?;
        if Watermark::read(dir)?.is_some() {
            return Err(SledOpenError::Exists);
        }
        SledRecords::from_db(dir, db, lock)
    }

    /// Opens the store in `dir`, creating nothing when there is none. Refuses a store that
    /// holds fewer flushes than its watermark recorded (it lost acknowledged writes).
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<SledRecords, SledOpenError> {
        // Nothing may be created by a mere open: sled would make an empty store.
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
            Ok(_) => return Err(SledOpenError::NotFound),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SledOpenError::NotFound)
            }
            Err(source) => return Err(IoError::new("read", dir, source).into()),
        }
        match fs::metadata(dir.join(DB_FILE)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SledOpenError::NotFound)
            }
            Err(source) => return Err(IoError::new("read", &dir.join(DB_FILE), source).into()),
        }
        let lock = DirLock::acquire(dir)?;
        let db = open_sled(dir, cache_capacity_bytes)?;
        let store = SledRecords::from_db(dir, db, lock)?;
        // Before anything else: damage near the start of the log leaves no vault settings at
        // all, which must not read as "no vault here, run init".
        if let Some(acknowledged) = Watermark::read(dir)? {
            let held = store.generation()?;
            if held < acknowledged {
                return Err(RecordStoreError::Damaged(format!(
                    "the store holds {held} of the {acknowledged} credential writes it \
                     acknowledged (sled dropped damaged data from its log); restore the state \
                     directory from a backup (it holds `{}`; delete that file only to accept the loss)",
                    watermark::FILE
                ))
                .into());
            }
        }
        Ok(store)
    }

    fn from_db(dir: &Path, db: sled::Db, lock: DirLock) -> Result<SledRecords, SledOpenError> {
        let settings = db.open_tree(SETTINGS_TREE).map_err(damage_or_failure)?;
        let records = db.open_tree(RECORDS_TREE).map_err(damage_or_failure)?;
        Ok(SledRecords {
            dir: dir.to_path_buf(),
            records,
            settings,
            db,
            // Starts at 0: the store holds at least the watermark on disk (`open` checked),
            // so the first flush's generation is above it anyway.
            watermark: Arc::new(Watermark::new(dir, 0)),
            written: AtomicBool::new(false),
            counting: Mutex::new(()),
            settings_order: Mutex::new(()),
            _lock: lock,
        })
    }

    /// The store's flush generation; 0 in a store from before it was kept.
    fn generation(&self) -> Result<u64, RecordStoreError> {
        match self.settings.get(GENERATION).map_err(damage_or_failure)? {
            None => Ok(0),
            Some(v) => {
                v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
                    RecordStoreError::Damaged("the write generation is damaged".into())
                })
            }
        }
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Records => &self.records,
            Space::Settings => &self.settings,
        }
    }

    /// The tree of a write call: the next flush counts a generation for it. (Marked whether
    /// or not the call changes anything, as a delete of nothing is still acknowledged.)
    fn tree_to_write(&self, space: Space) -> &sled::Tree {
        self.written.store(true, Ordering::Release);
        self.tree(space)
    }

    /// The settings order (see [`SledRecords::settings_order`]), for a write of `space`.
    fn ordered(&self, space: Space) -> Option<std::sync::MutexGuard<'_, ()>> {
        (space == Space::Settings).then(|| self.lock_settings_order())
    }

    fn lock_settings_order(&self) -> std::sync::MutexGuard<'_, ()> {
        self.settings_order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the guard's setting holds its expected value; `Err` with what it holds.
    fn check_guard(&self, guard: &Guard) -> Result<Result<(), Option<Vec<u8>>>, RecordStoreError> {
        let current = self.settings.get(&guard.key).map_err(damage_or_failure)?;
        Ok(match current {
            Some(v) if *v == *guard.expected => Ok(()),
            other => Err(other.map(|v| v.to_vec())),
        })
    }

    fn swap_all(&self, space: Space, swaps: Vec<Swap>) -> Result<Vec<Swapped>, RecordStoreError> {
        let tree = self.tree_to_write(space);
        swaps
            .into_iter()
            .map(|swap| {
                match tree
                    .compare_and_swap(swap.key, swap.expected, swap.new)
                    .map_err(damage_or_failure)?
                {
                    Ok(()) => Ok(Swapped::Done),
                    Err(conflict) => Ok(Swapped::Conflict {
                        current: conflict.current.map(|v| v.to_vec()),
                    }),
                }
            })
            .collect()
    }

    fn apply_batch(&self, space: Space, changes: Vec<Change>) -> Result<(), RecordStoreError> {
        let mut batch = sled::Batch::default();
        for change in changes {
            match change.value {
                Some(value) => batch.insert(change.key, value),
                None => batch.remove(change.key),
            }
        }
        self.tree_to_write(space)
            .apply_batch(batch)
            .map_err(damage_or_failure)
    }

    /// The generation the next flush makes durable: one more when writes came since the
    /// last one counted, else the current one.
    fn flush_generation(&self) -> Result<u64, RecordStoreError> {
        let _one_at_a_time = self.counting.lock().unwrap_or_else(|p| p.into_inner());
        if !self.written.swap(false, Ordering::AcqRel) {
            return self.generation();
        }
        // After the writes it makes durable, so a store that holds this generation holds them.
        let counted = self
            .settings
            .update_and_fetch(GENERATION, |old| {
                let n = old
                    .and_then(|v| v.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                Some(n.saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(damage_or_failure)?;
        Ok(counted
            .and_then(|v| v.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }
}

/// An answer known at once, as the boxed future the trait returns.
fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl RecordStore for SledRecords {
    fn location(&self) -> &Path {
        &self.dir
    }

    fn get<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, RecordStoreError>> {
        ready(
            self.tree(space)
                .get(key)
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(damage_or_failure),
        )
    }

    fn get_many<'a>(
        &'a self,
        space: Space,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, RecordStoreError>> {
        let tree = self.tree(space);
        ready(
            keys.iter()
                .map(|key| {
                    tree.get(key)
                        .map(|v| v.map(|v| v.to_vec()))
                        .map_err(damage_or_failure)
                })
                .collect(),
        )
    }

    fn put<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), RecordStoreError>> {
        let _order = self.ordered(space);
        ready(
            self.tree_to_write(space)
                .insert(key, value)
                .map(drop)
                .map_err(damage_or_failure),
        )
    }

    fn remove<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, RecordStoreError>> {
        let _order = self.ordered(space);
        ready(
            self.tree_to_write(space)
                .remove(key)
                .map(|old| old.is_some())
                .map_err(damage_or_failure),
        )
    }

    fn compare_and_swap_many(
        &self,
        space: Space,
        swaps: Vec<Swap>,
    ) -> BoxFuture<'_, Result<Vec<Swapped>, RecordStoreError>> {
        let _order = self.ordered(space);
        ready(self.swap_all(space, swaps))
    }

    fn compare_and_swap_guarded(
        &self,
        guard: Guard,
        space: Space,
        swaps: Vec<Swap>,
    ) -> BoxFuture<'_, Result<Guarded<Vec<Swapped>>, RecordStoreError>> {
        let _order = self.lock_settings_order();
        ready(self.check_guard(&guard).and_then(|held| match held {
            Ok(()) => self.swap_all(space, swaps).map(Guarded::Made),
            Err(current) => Ok(Guarded::Refused { current }),
        }))
    }

    fn apply(
        &self,
        space: Space,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<(), RecordStoreError>> {
        let _order = self.ordered(space);
        ready(self.apply_batch(space, changes))
    }

    fn apply_guarded(
        &self,
        guard: Guard,
        space: Space,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<Guarded<()>, RecordStoreError>> {
        let _order = self.lock_settings_order();
        ready(self.check_guard(&guard).and_then(|held| match held {
            Ok(()) => self.apply_batch(space, changes).map(Guarded::Made),
            Err(current) => Ok(Guarded::Refused { current }),
        }))
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
        after: Option<&'a [u8]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, RecordStoreError>> {
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut out = Vec::new();
        for entry in self
            .tree(space)
            .range::<&[u8], _>((start, Bound::Unbounded))
        {
            if out.len() == limit {
                break;
            }
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) => return ready(Err(damage_or_failure(e))),
            };
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        ready(Ok(out))
    }

    fn count<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, RecordStoreError>> {
        let tree = self.tree(space).clone();
        let prefix = prefix.to_vec();
        Box::pin(async move {
            let counted = tokio::task::spawn_blocking(move || {
                let mut n = 0;
                for key in tree.scan_prefix(prefix).keys() {
                    key.map_err(damage_or_failure)?;
                    n += 1;
                }
                Ok(n)
            })
            .await;
            counted.unwrap_or_else(|e| {
                Err(RecordStoreError::Unfinished(if e.is_panic() {
                    "the count panicked"
                } else {
                    "the count was cancelled (is the runtime shutting down?)"
                }))
            })
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), RecordStoreError>> {
        let generation = self.flush_generation();
        let db = self.db.clone();
        let watermark = self.watermark.clone();
        Box::pin(async move {
            let generation = generation?;
            // Not sled's `flush_async`: in sled 0.34.7 it runs the flush on sled's own small
            // I/O thread pool, which the flush then waits on; concurrent flushes fill the pool
            // and deadlock (sled issues #1308, #1241; fixed on sled's main branch, never
            // released). The synchronous flush on a Tokio blocking thread does the same work
            // without that.
            let flushed = tokio::task::spawn_blocking(move || {
                db.flush().map_err(damage_or_failure)?;
                watermark
                    .advance(generation)
                    .map_err(|e| RecordStoreError::Failed(Box::new(e)))
            })
            .await;
            flushed.unwrap_or_else(|e| {
                Err(RecordStoreError::Unfinished(if e.is_panic() {
                    "the flush panicked"
                } else {
                    "the flush was cancelled (is the runtime shutting down?)"
                }))
            })
        })
    }
}

/// Maps a sled error: corruption is [`RecordStoreError::Damaged`], the rest `Failed`.
fn damage_or_failure(e: sled::Error) -> RecordStoreError {
    match e {
        sled::Error::Corruption { at, .. } => RecordStoreError::Damaged(match at {
            Some(at) => format!("sled found damaged data at {at:?}"),
            None => "sled found damaged data".into(),
        }),
        other => RecordStoreError::Failed(Box::new(other)),
    }
}

/// Makes `dir` (and missing parents) with mode 0700, or tightens an existing one to 0700: the
/// store's files are readable by the service alone whatever mode sled gives them.
fn ensure_private_dir(dir: &Path) -> Result<(), IoError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                tracing::info!(path = %dir.display(), mode = format_args!("{mode:04o}"), "tightening the vault directory to mode 0700");
            }
        }
        Ok(_) => {
            return Err(IoError::new(
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
                .map_err(|source| IoError::new("create", dir, source))?;
        }
        Err(source) => return Err(IoError::new("read", dir, source)),
    }
    // The umask may have taken bits from the mode asked for at creation; set it exactly.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| IoError::new("set the mode of", dir, source))
}

/// An exclusive lock on `vault.lock` in the state directory, held while the store is open.
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
    fn acquire(dir: &Path) -> Result<DirLock, SledOpenError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| IoError::new("open the lock file", &path, source))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(SledOpenError::Locked),
            Err(std::fs::TryLockError::Error(source)) => {
                Err(IoError::new("lock", &path, source).into())
            }
        }
    }
}

/// Opens sled's files in `dir`, bypassing `vault.lock` (which the caller holds, or, in tests,
/// means to bypass).
pub(crate) fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, SledOpenError> {
    open_sled_within(dir, cache_capacity_bytes, SLED_LOCK_WAIT)
}

/// [`open_sled`], waiting at most `lock_wait` for sled's own lock.
pub(crate) fn open_sled_within(
    dir: &Path,
    cache_capacity_bytes: u64,
    lock_wait: Duration,
) -> Result<sled::Db, SledOpenError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_capacity_bytes)
        .mode(sled::Mode::LowSpace);
    // We hold `vault.lock` here, so sled's own lock on `db` being taken means a sled instance
    // of this process that was just dropped: sled 0.34 lets background I/O jobs keep the file
    // (and its flock) open a little after the last handle goes. Wait that out, briefly.
    let deadline = Instant::now() + lock_wait;
    loop {
        // sled 0.34 panics instead of erring on some damaged files; a damaged store must be
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
                Err(SledOpenError::Locked)
            }
            Ok(Err(other)) => Err(damage_or_failure(other).into()),
            Err(_) => Err(RecordStoreError::Damaged(
                "sled could not recover its files (it panicked while opening them)".into(),
            )
            .into()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: u64 = 1024 * 1024;

    #[tokio::test]
    async fn the_record_store_contract_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SledRecords::create(&tmp.path().join("s"), CACHE).unwrap();
        crate::store::records::contract::check(&store).await;
    }

    #[tokio::test]
    async fn flushed_writes_survive_a_reopen_and_each_flush_after_writes_is_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let watermark = || fs::read_to_string(dir.join(watermark::FILE)).unwrap();
        {
            let store = SledRecords::create(&dir, CACHE).unwrap();
            store
                .put(Space::Records, b"k", b"v".to_vec())
                .await
                .unwrap();
            store.flush().await.unwrap();
            assert_eq!(watermark(), "1\n");
            // Nothing written since: durable already, nothing to count.
            store.flush().await.unwrap();
            assert_eq!(watermark(), "1\n");
            // A delete of nothing is a write the caller acknowledges: counted.
            assert!(!store.remove(Space::Records, b"none").await.unwrap());
            store.flush().await.unwrap();
            assert_eq!(watermark(), "2\n");
        }
        let store = SledRecords::open(&dir, CACHE).unwrap();
        assert_eq!(
            store.get(Space::Records, b"k").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(store.generation().unwrap(), 2);
        assert!(matches!(
            SledRecords::open(&dir, CACHE),
            Err(SledOpenError::Locked)
        ));
        drop(store);
        assert!(matches!(
            SledRecords::create(&dir, CACHE),
            Err(SledOpenError::Exists)
        ));
    }

    #[test]
    fn open_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        assert!(matches!(
            SledRecords::open(&missing, CACHE),
            Err(SledOpenError::NotFound)
        ));
        assert!(!missing.exists());
    }
}
