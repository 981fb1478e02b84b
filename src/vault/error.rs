//! The one error type of the vault.
//!
//! No message here may carry a secret: none holds a credential, key material, the content of
//! a key file, or an error from parsing decrypted data (serde messages can quote the input).

use std::path::PathBuf;

/// Everything the vault and the master key can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// `open` found no vault in the directory.
    #[error("there is no vault in {path}: run `patgate vault init` first", path = .path.display())]
    NotInitialized {
        /// The vault directory.
        path: PathBuf,
    },

    /// `init` found a vault already in the directory.
    #[error("a vault already exists in {path}; refusing to initialise it again", path = .path.display())]
    AlreadyInitialized {
        /// The vault directory.
        path: PathBuf,
    },

    /// The master key cannot decrypt the vault's key-check record.
    #[error("the master key does not match this vault (key version {key_version})")]
    WrongMasterKey {
        /// The vault's key version.
        key_version: u32,
    },

    /// Another process (or another `Vault` in this process) has the vault open.
    #[error("the vault at {path} is in use by another process (is patgate running?)", path = .path.display())]
    Locked {
        /// The vault directory.
        path: PathBuf,
    },

    /// Stored data that cannot be read back: a damaged store, or a record that fails to
    /// decode or to authenticate. A record in this state is never returned.
    #[error("the vault at {path} is corrupt: {what}", path = .path.display())]
    Corrupt {
        /// The vault directory.
        path: PathBuf,
        /// What is damaged, and where.
        what: String,
    },

    /// The vault was written by a newer (or unknown) version of patgate.
    #[error("the vault at {path} has format version {found}; this patgate reads version {supported}", path = .path.display())]
    UnsupportedFormat {
        /// The vault directory.
        path: PathBuf,
        /// The format version found on disk.
        found: u32,
        /// The format version this build reads.
        supported: u32,
    },

    /// An integration or account id the vault will not store.
    #[error("invalid {field} id: {reason}")]
    InvalidId {
        /// `integration` or `account`.
        field: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A credential whose encoding exceeds the vault's record limit.
    #[error("the credential is too large to store ({size} bytes encoded; the limit is {limit})")]
    CredentialTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The master key file is readable or writable by group or others.
    #[error(
        "the master key file {path} has mode {mode:04o}: it must not be readable or writable by \
         group or others (run `chmod 600 {path}`)",
        path = .path.display()
    )]
    MasterKeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The master key file does not hold a master key.
    #[error("the master key file {path} is not valid: {reason}", path = .path.display())]
    MasterKeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong; never the content.
        reason: String,
    },

    /// `write_new` found a file already at the path.
    #[error("{path} already exists; refusing to overwrite a master key", path = .path.display())]
    MasterKeyExists {
        /// The key file.
        path: PathBuf,
    },

    /// `from_systemd_credential` without `$CREDENTIALS_DIRECTORY`.
    #[error(
        "$CREDENTIALS_DIRECTORY is not set: master_key.systemd_credential needs patgate to run as a \
         systemd service with `LoadCredential=master-key:<file>` (or `LoadCredentialEncrypted=`); \
         otherwise configure master_key.file"
    )]
    NoCredentialsDirectory,

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(rand_core::Error),

    /// A file-system operation failed.
    #[error("could not {action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done, e.g. `read`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The record store failed (other than damage, the lock or an unfinished flush).
    #[error("the vault store at {path} failed: {source}", path = .path.display())]
    Storage {
        /// The vault directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: crate::store::RecordStoreError,
    },

    /// A flush did not run to its end; the write it followed may not be durable.
    #[error("flushing the vault at {path} failed: {reason}", path = .path.display())]
    FlushFailed {
        /// The vault directory.
        path: PathBuf,
        /// What happened.
        reason: &'static str,
    },

    /// A master key rotation was interrupted and the vault was opened with the old key; only
    /// the new key can finish it.
    #[error(
        "a master key rotation from key version {from_version} to {to_version} was interrupted: \
         open the vault with the new key to finish it (patgate uses `<master key file>.new` by \
         itself when it is there; with a systemd credential, point the credential at the new key)"
    )]
    RotationInterrupted {
        /// The key version the given key belongs to.
        from_version: u32,
        /// The version the rotation moves to.
        to_version: u32,
    },

    /// `rotate_key` was given a key other than the one an unfinished rotation started with.
    #[error(
        "a rotation to key version {to_version} is unfinished and was started with another new \
         key; finish it with that key"
    )]
    RotationInProgress {
        /// The version the unfinished rotation moves to.
        to_version: u32,
    },

    /// Records are being sealed, or already are, under a newer master key version than this
    /// process holds (a rotation run by another process that shares the store), and the key
    /// of that version is not where this process looks for it.
    #[error(
        "the vault's records are moving to master key version {version} (a rotation run by \
         another patgate on the same store), and this process does not hold that key: {reason}"
    )]
    NextKeyMissing {
        /// The version needed.
        version: u32,
        /// Where the key was looked for and what to do.
        reason: String,
    },

    /// `rotate_key` was given the key the vault already uses.
    #[error("the new master key is the current one; a rotation needs a fresh key")]
    SameKey,

    /// Encryption failed; it cannot for credentials within the size limit.
    #[error("encrypting the record failed")]
    Encrypt,
}
