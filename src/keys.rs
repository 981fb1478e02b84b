//! App signing keys made by `patgate keys gen`: what the app team signs with and what the
//! admin puts in `[[app_keys]]`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use rand_core::{OsRng, RngCore as _};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("`{0}` is not a usable key id (1 to 64 of letters, digits, `-`, `_`, `.`)")]
    BadKeyId(String),
}

/// Where the new key went, and the config lines that trust it.
#[derive(Debug)]
pub struct Generated {
    pub private_file: PathBuf,
    pub public_file: Option<PathBuf>,
    pub config_snippet: String,
}

impl std::fmt::Display for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "private key (for the app; mode 0600): {}",
            self.private_file.display()
        )?;
        if let Some(public) = &self.public_file {
            writeln!(f, "public key: {}", public.display())?;
        }
        write!(f, "add to patgate.toml:\n\n{}", self.config_snippet)
    }
}

/// Makes a key. Ed25519: `{keyid}.pem` (PKCS#8, private) and `{keyid}.pub` (raw public key,
/// base64). HMAC: `{keyid}.hmac` (32 random bytes, base64), which both sides keep.
pub fn generate(keyid: &str, dir: &Path, hmac: bool) -> Result<Generated, KeyError> {
    if keyid.is_empty()
        || keyid.len() > 64
        || !keyid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(KeyError::BadKeyId(keyid.to_string()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if hmac {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        let path = dir.join(format!("{keyid}.hmac"));
        let line = zeroize::Zeroizing::new(format!("{}\n", b64.encode(secret.as_ref())));
        write_private(&path, line.as_bytes())?;
        return Ok(Generated {
            config_snippet: format!(
                "[[app_keys]]\nkeyid = \"{keyid}\"\nhmac_secret_file = \"{}\"\n",
                path.display()
            ),
            private_file: path,
            public_file: None,
        });
    }
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let private_file = dir.join(format!("{keyid}.pem"));
    write_private(&private_file, pem.as_bytes())?;
    let public = b64.encode(key.verifying_key().as_bytes());
    let public_file = dir.join(format!("{keyid}.pub"));
    std::fs::write(&public_file, format!("{public}\n")).map_err(|source| KeyError::Write {
        path: public_file.clone(),
        source,
    })?;
    Ok(Generated {
        config_snippet: format!(
            "[[app_keys]]\nkeyid = \"{keyid}\"\ned25519_public_key = \"{public}\"\n"
        ),
        private_file,
        public_file: Some(public_file),
    })
}

/// Creates `path` with mode 0600 from the first byte on (never briefly readable by others),
/// refusing to overwrite, and syncs it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}
