//! The write watermark: how `open` tells a store that lost acknowledged writes from a whole one.
//!
//! sled 0.34 recovers its log up to the first message whose checksum fails and silently drops
//! everything after it, so a `db` file with flipped bytes, or cut short, opens as an older,
//! smaller vault: users' PATs gone, deleted ones back, or (damage near the start) what looks
//! like no vault at all. Nothing inside sled can notice, so the vault keeps a count outside it:
//!
//! - every flush that follows writes (the vault flushes after each credential write, store or
//!   delete, before it acknowledges it; also after a batch of last-use times and a rotation's
//!   steps) first increments the `generation` counter in the `vault` tree, after the changes
//!   it makes durable; the log is recovered as a prefix, so a store that holds a generation
//!   holds every change made before it;
//! - after the flush, and before it returns, the generation is written to `vault.watermark`
//!   beside sled's files (a new file renamed over the old one, both synced);
//! - `open` refuses a store whose generation is below the watermark.
//!
//! A crash between the flush and the watermark leaves the watermark behind the store, which
//! `open` accepts. A vault from before the watermark existed has no file and is checked from
//! its next write on.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{IoError, SledOpenError};
use crate::store::RecordStoreError;

/// The file, in the vault directory.
pub(crate) const FILE: &str = "vault.watermark";
const TMP_FILE: &str = "vault.watermark.tmp";

/// The watermark of one open vault.
#[derive(Debug)]
pub(crate) struct Watermark {
    dir: PathBuf,
    /// The generation on disk; writers serialise on this lock.
    written: Mutex<u64>,
}

impl Watermark {
    /// The generation recorded in `dir`; `None` when there is no watermark file.
    pub(crate) fn read(dir: &Path) -> Result<Option<u64>, SledOpenError> {
        let path = dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IoError::new("read", &path, source).into()),
        };
        parse(&text).map(Some).ok_or_else(|| {
            SledOpenError::Store(RecordStoreError::Damaged(format!(
                "{} does not hold a generation number",
                path.display()
            )))
        })
    }

    pub(crate) fn new(dir: &Path, written: u64) -> Watermark {
        Watermark {
            dir: dir.to_path_buf(),
            written: Mutex::new(written),
        }
    }

    /// Records that the store holds `generation` durably. Blocking (two fsyncs); a smaller
    /// generation than the one on disk is a no-op, so concurrent writers coalesce.
    pub(crate) fn advance(&self, generation: u64) -> Result<(), IoError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written >= generation {
            return Ok(());
        }
        write(&self.dir, generation)?;
        *written = generation;
        Ok(())
    }
}

fn parse(text: &str) -> Option<u64> {
    text.strip_suffix('\n')?.parse().ok()
}

/// Writes `generation` to a new file, syncs it, renames it over the watermark and syncs the
/// directory: a crash leaves the old watermark or the new one, never a torn one.
pub(crate) fn write(dir: &Path, generation: u64) -> Result<(), IoError> {
    let tmp = dir.join(TMP_FILE);
    let path = dir.join(FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| IoError::new("create", &tmp, source))?;
    file.write_all(format!("{generation}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| IoError::new("write", &tmp, source))?;
    fs::rename(&tmp, &path).map_err(|source| IoError::new("rename", &tmp, source))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| IoError::new("sync", dir, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_coalescing_and_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(Watermark::read(dir).unwrap(), None);
        let mark = Watermark::new(dir, 0);
        mark.advance(7).unwrap();
        assert_eq!(Watermark::read(dir).unwrap(), Some(7));
        // An older generation (a writer that lost the race) never moves it back.
        mark.advance(3).unwrap();
        assert_eq!(Watermark::read(dir).unwrap(), Some(7));
        mark.advance(8).unwrap();
        assert_eq!(Watermark::read(dir).unwrap(), Some(8));
        assert!(!dir.join(TMP_FILE).exists());
        for bad in ["", "8", "eight\n", "-1\n", "1 2\n"] {
            fs::write(dir.join(FILE), bad).unwrap();
            let err = Watermark::read(dir).unwrap_err();
            assert!(
                matches!(err, SledOpenError::Store(RecordStoreError::Damaged(ref what)) if what.contains(FILE)),
                "{bad:?}: {err:?}"
            );
        }
    }
}
