//! The vault's master key: 32 random bytes, kept in a file as one line of standard base64.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};
use secrecy::{ExposeSecret as _, SecretBox};
use zeroize::Zeroizing;

use super::VaultError;

/// The length of a master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// The name of the systemd credential that holds the master key (`LoadCredential=master-key:…`).
pub const SYSTEMD_CREDENTIAL_NAME: &str = "master-key";

/// The length of the base64 text of a key: 44 characters, one of them `=` padding.
const ENCODED_LEN: usize = 44;

/// The most a key file may hold. Anything longer is not a key file, and reading stops there
/// so that a wrong path (a log, a device) is neither read whole nor copied around.
const MAX_FILE_LEN: usize = 128;

/// The vault's master key. It never prints (`Debug` shows `MasterKey([redacted])`), is not
/// `Clone`, and its bytes are zeroized when it is dropped.
pub struct MasterKey(SecretBox<[u8; MASTER_KEY_LEN]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    ///
    /// # Panics
    ///
    /// When the operating system's random number generator fails, which leaves nothing safe
    /// to do.
    pub fn generate() -> MasterKey {
        // Filled in place in its box, so no copy of the key is left on the stack.
        MasterKey(SecretBox::init_with_mut(
            |bytes: &mut [u8; MASTER_KEY_LEN]| OsRng.fill_bytes(bytes),
        ))
    }

    /// Reads a key file: one line, the standard base64 of 32 bytes, a trailing newline
    /// allowed. Refuses a file that group or others may read or write, and never echoes the
    /// file's content in an error.
    pub fn load_file(path: &Path) -> Result<MasterKey, VaultError> {
        // Checked before opening as well as after: opening a FIFO would block.
        let meta = fs::metadata(path).map_err(|source| io_error("read", path, source))?;
        if !meta.is_file() {
            return Err(invalid(path, "it is not a regular file"));
        }
        let file = File::open(path).map_err(|source| io_error("open", path, source))?;
        // The mode that counts is the one of the file opened, not of what the path named a
        // moment earlier.
        let meta = file
            .metadata()
            .map_err(|source| io_error("read", path, source))?;
        if !meta.is_file() {
            return Err(invalid(path, "it is not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::MasterKeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        Self::read_key(file, path)
    }

    /// Reads `master-key` from a systemd credentials directory. systemd makes that directory
    /// private to the service, so the file's mode is not checked.
    pub fn from_credentials_dir(dir: &Path) -> Result<MasterKey, VaultError> {
        let path = dir.join(SYSTEMD_CREDENTIAL_NAME);
        let file = File::open(&path).map_err(|source| io_error("open", &path, source))?;
        Self::read_key(file, &path)
    }

    /// Reads the key from `$CREDENTIALS_DIRECTORY/master-key`, the credential systemd's
    /// `LoadCredential=master-key:…` provides.
    pub fn from_systemd_credential() -> Result<MasterKey, VaultError> {
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if !dir.is_empty() => Self::from_credentials_dir(Path::new(&dir)),
            _ => Err(VaultError::NoCredentialsDirectory),
        }
    }

    /// Writes the key to a new file at `path` with mode 0600, refusing to replace an existing
    /// file, and makes it durable (the file and its directory are synced) before returning.
    pub fn write_new(&self, path: &Path) -> Result<(), VaultError> {
        // The mode is given at creation, so the file is never readable by others, not even for
        // a moment; the umask can only take bits away, and set_permissions below makes the
        // result exactly 0600 whatever the umask.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    VaultError::MasterKeyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_error("create", path, source)
                }
            })?;
        let written = write_key_line(&mut file, self.expose());
        if let Err(source) = written {
            // The file is ours (create_new); a half-written key must not be mistaken for one.
            drop(file);
            let _ = fs::remove_file(path);
            return Err(io_error("write", path, source));
        }
        sync_parent_dir(path)
    }

    /// The key bytes, for building the cipher.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one accessor that hands the key to the cipher"
    )]
    pub(crate) fn expose(&self) -> &[u8; MASTER_KEY_LEN] {
        self.0.expose_secret()
    }

    /// A second copy of the key, for the vault to keep while it is open (a rotation seals the
    /// current key under its successor). Zeroized on drop like the first.
    pub(crate) fn duplicate(&self) -> MasterKey {
        MasterKey(SecretBox::init_with_mut(|b: &mut [u8; MASTER_KEY_LEN]| {
            b.copy_from_slice(self.expose())
        }))
    }

    /// A key from a decrypted slice of exactly [`MASTER_KEY_LEN`] bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<MasterKey> {
        (bytes.len() == MASTER_KEY_LEN).then(|| {
            MasterKey(SecretBox::init_with_mut(|b: &mut [u8; MASTER_KEY_LEN]| {
                b.copy_from_slice(bytes)
            }))
        })
    }

    /// Parses the text of a key file (one line of standard base64), e.g. a key that reached
    /// the service in an admin request. `source` names where it came from, for errors; the
    /// text itself is never echoed.
    pub fn from_base64(text: &[u8], source: &Path) -> Result<MasterKey, VaultError> {
        Self::parse(text, source)
    }

    /// The key as one line of standard base64 (the key-file format), in a wiped buffer.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut line = Zeroizing::new(String::with_capacity(ENCODED_LEN));
        STANDARD.encode_string(self.expose(), &mut line);
        line
    }

    /// A key for another purpose, derived from this one: HMAC-SHA256 of `label` under the
    /// master key. Every process with the same master key derives the same key (the
    /// connect-link key of replicas sharing one database), and the derived key tells nothing
    /// of the master key.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac as _};
        let mut mac = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.expose())
            .expect("HMAC takes a key of any length");
        mac.update(label);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        key
    }

    /// A key from raw bytes (tests use fixed keys).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(SecretBox::init_with_mut(|b: &mut [u8; MASTER_KEY_LEN]| {
            *b = bytes
        }))
    }

    fn read_key(mut file: File, path: &Path) -> Result<MasterKey, VaultError> {
        // A fixed buffer that never reallocates, so no copy of the key text is left behind.
        let mut buf = Zeroizing::new([0u8; MAX_FILE_LEN]);
        let mut len = 0;
        loop {
            if len == buf.len() {
                return Err(invalid(
                    path,
                    format!("it is longer than {MAX_FILE_LEN} bytes; a key file holds one line of {ENCODED_LEN} base64 characters"),
                ));
            }
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(io_error("read", path, source)),
            }
        }
        Self::parse(&buf[..len], path)
    }

    fn parse(content: &[u8], path: &Path) -> Result<MasterKey, VaultError> {
        let text = content
            .strip_suffix(b"\n")
            .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
            .unwrap_or(content);
        if text.is_empty() {
            return Err(invalid(path, "it is empty"));
        }
        let mut decoded = Zeroizing::new([0u8; MAX_FILE_LEN]);
        // The decoder's own error names the offending byte; it is not passed on.
        let n = STANDARD.decode_slice(text, &mut decoded[..]).map_err(|_| {
            invalid(
                path,
                format!("it must hold one line: the standard base64 of {MASTER_KEY_LEN} random bytes ({ENCODED_LEN} characters)"),
            )
        })?;
        if n != MASTER_KEY_LEN {
            return Err(invalid(
                path,
                format!("it decodes to {n} bytes; a master key is {MASTER_KEY_LEN}"),
            ));
        }
        Ok(MasterKey(SecretBox::init_with_mut(
            |key: &mut [u8; MASTER_KEY_LEN]| key.copy_from_slice(&decoded[..MASTER_KEY_LEN]),
        )))
    }
}

/// Where a rotation keeps the new key of the key file at `file` until the vault uses it:
/// `<file>.new`.
pub fn pending_key_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    file.with_file_name(name)
}

/// Where a rotation keeps the new key until the key's source holds it: `<master_key.file>.new`,
/// or with a systemd credential `state_dir/master-key.new`. The service of every replica looks
/// there for the key of a rotation run through another replica.
pub fn pending_key_for(source: &crate::config::MasterKeySource, state_dir: &Path) -> PathBuf {
    match source {
        crate::config::MasterKeySource::File(file) => pending_key_path(file),
        crate::config::MasterKeySource::SystemdCredential => state_dir.join("master-key.new"),
    }
}

/// Gives `path` the owner and group of `like`, when they differ (a root admin's new key file
/// must stay readable by the service user). Needs root when they differ.
pub fn match_owner(path: &Path, like: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::MetadataExt as _;
    let want = fs::metadata(like).map_err(|source| io_error("read", like, source))?;
    let have = fs::metadata(path).map_err(|source| io_error("read", path, source))?;
    if (want.uid(), want.gid()) != (have.uid(), have.gid()) {
        std::os::unix::fs::chown(path, Some(want.uid()), Some(want.gid()))
            .map_err(|source| io_error("change the owner of", path, source))?;
    }
    Ok(())
}

/// Puts the rotated key in place: renames `pending` over `file` (atomic: the key file holds
/// the old key or the new one, never a mix) and syncs the directory.
pub fn install_pending_key(pending: &Path, file: &Path) -> Result<(), VaultError> {
    fs::rename(pending, file).map_err(|source| io_error("replace", file, source))?;
    sync_parent_dir(file)
}

/// Writes the key's line and syncs the file.
fn write_key_line(file: &mut File, key: &[u8; MASTER_KEY_LEN]) -> std::io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    let mut line = Zeroizing::new([0u8; ENCODED_LEN + 1]);
    let n = STANDARD
        .encode_slice(key, &mut line[..ENCODED_LEN])
        .map_err(std::io::Error::other)?;
    debug_assert_eq!(n, ENCODED_LEN);
    line[ENCODED_LEN] = b'\n';
    file.write_all(&line[..])?;
    file.sync_all()
}

fn invalid(path: &Path, reason: impl Into<String>) -> VaultError {
    VaultError::MasterKeyInvalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> VaultError {
    VaultError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Syncs the directory holding `path`, so a new entry in it survives a crash.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), VaultError> {
    let parent: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| io_error("sync the directory", &parent, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_key_depends_on_the_master_key_and_the_label_only() {
        let a = MasterKey::from_bytes([7; MASTER_KEY_LEN]);
        let same = MasterKey::from_bytes([7; MASTER_KEY_LEN]);
        let other = MasterKey::from_bytes([8; MASTER_KEY_LEN]);
        assert_eq!(*a.derive(b"links"), *same.derive(b"links"));
        assert_ne!(*a.derive(b"links"), *a.derive(b"other"));
        assert_ne!(*a.derive(b"links"), *other.derive(b"links"));
        assert_ne!(&a.derive(b"links")[..], &[7; MASTER_KEY_LEN][..]);
    }

    fn write_mode(path: &Path, content: &[u8], mode: u32) {
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn encoded(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn debug_is_redacted() {
        let key = MasterKey::from_bytes([0xAB; 32]);
        let shown = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains(&encoded(&[0xAB; 32])));
    }

    #[test]
    fn group_or_world_access_is_refused_naming_path_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-key");
        let content = format!("{}\n", encoded(&[7; 32]));
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666] {
            write_mode(&path, content.as_bytes(), mode);
            let err = MasterKey::load_file(&path).unwrap_err();
            assert!(
                matches!(err, VaultError::MasterKeyPermissions { mode: m, .. } if m == mode),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(!msg.contains(content.trim()), "{msg}");
        }
        let msg = {
            write_mode(&path, content.as_bytes(), 0o644);
            MasterKey::load_file(&path).unwrap_err().to_string()
        };
        assert!(msg.contains("0644"), "{msg}");
    }

    #[test]
    fn owner_only_modes_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-key");
        for (mode, content) in [
            (0o600, format!("{}\n", encoded(&[7; 32]))),
            (0o400, encoded(&[7; 32])),
            (0o600, format!("{}\r\n", encoded(&[7; 32]))),
        ] {
            write_mode(&path, content.as_bytes(), mode);
            let key = MasterKey::load_file(&path).unwrap();
            assert_eq!(key.expose(), &[7; 32]);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[test]
    fn generate_and_write_new_make_a_0600_file_that_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-key");
        let key = MasterKey::generate();
        key.write_new(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), ENCODED_LEN + 1);
        assert!(text.ends_with('\n'));
        assert_eq!(text.trim_end(), encoded(key.expose()));
        let loaded = MasterKey::load_file(&path).unwrap();
        assert_eq!(loaded.expose(), key.expose());

        // Never replaces a key.
        let other = MasterKey::generate();
        assert_ne!(other.expose(), key.expose(), "two generated keys are equal");
        let err = other.write_new(&path).unwrap_err();
        assert!(matches!(err, VaultError::MasterKeyExists { .. }), "{err:?}");
        assert_eq!(MasterKey::load_file(&path).unwrap().expose(), key.expose());
    }

    #[test]
    fn write_new_into_a_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("master-key");
        let err = MasterKey::generate().write_new(&path).unwrap_err();
        assert!(
            matches!(
                err,
                VaultError::Io {
                    action: "create",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_content_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-key");
        let secretish = "SuperSecretNotBase64!!Value-DO-NOT-ECHO-0123456789";
        let cases: Vec<Vec<u8>> = vec![
            secretish.as_bytes().to_vec(),
            format!("{}\n", encoded(b"sixteen-byte-key")).into_bytes(),
            format!("{}\n", encoded(&[9; 33])).into_bytes(),
            format!("{}\n\n", encoded(&[9; 32])).into_bytes(),
            format!(" {}\n", encoded(&[9; 32])).into_bytes(),
            format!("{}\n", encoded(&[9; 32]).trim_end_matches('=')).into_bytes(),
            Vec::new(),
            b"\n".to_vec(),
            vec![b'A'; 500],
            vec![0xff, 0xfe, 0x00, 0x41],
        ];
        for content in cases {
            write_mode(&path, &content, 0o600);
            let err = MasterKey::load_file(&path).expect_err("bad content accepted");
            assert!(
                matches!(err, VaultError::MasterKeyInvalid { .. }),
                "{err:?}"
            );
            let msg = format!("{err} {err:?}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            let text = String::from_utf8_lossy(&content);
            let text = text.trim();
            if text.len() >= 8 {
                assert!(!msg.contains(text), "error echoes the content: {msg}");
                assert!(!msg.contains(&text[..8]), "error echoes the content: {msg}");
            }
        }
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = MasterKey::load_file(dir.path()).unwrap_err();
        assert!(
            matches!(err, VaultError::MasterKeyInvalid { .. }),
            "{err:?}"
        );
        let missing = dir.path().join("missing");
        let err = MasterKey::load_file(&missing).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn credentials_dir_reads_master_key_without_a_mode_check() {
        let dir = tempfile::tempdir().unwrap();
        let err = MasterKey::from_credentials_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("master-key"), "{err}");
        write_mode(
            &dir.path().join(SYSTEMD_CREDENTIAL_NAME),
            encoded(&[3; 32]).as_bytes(),
            0o644,
        );
        let key = MasterKey::from_credentials_dir(dir.path()).unwrap();
        assert_eq!(key.expose(), &[3; 32]);
    }

    #[test]
    fn missing_credentials_directory_message_says_what_to_do() {
        let msg = VaultError::NoCredentialsDirectory.to_string();
        assert!(msg.contains("CREDENTIALS_DIRECTORY"), "{msg}");
        assert!(msg.contains("LoadCredential=master-key"), "{msg}");
        // Under a plain test run the variable is unset; under systemd it may not be.
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            let err = MasterKey::from_systemd_credential().unwrap_err();
            assert!(matches!(err, VaultError::NoCredentialsDirectory), "{err:?}");
        }
    }
}
