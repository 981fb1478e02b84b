//! Verification and signing keys. Every type here prints only its keyid in
//! Debug: secrets must never reach a log line.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use secrecy::{ExposeSecret, SecretBox};

use super::{ConfigError, Redacted};

/// Shortest HMAC secret accepted: the HMAC-SHA256 output size.
pub(crate) const HMAC_MIN_LEN: usize = 32;

/// Algorithm name of Ed25519 in RFC 9421 (§3.3.6).
pub(crate) const ALG_ED25519: &str = "ed25519";
/// Algorithm name of HMAC-SHA256 in RFC 9421 (§3.3.3).
pub(crate) const ALG_HMAC_SHA256: &str = "hmac-sha256";

/// An HMAC-SHA256 shared secret of at least 32 bytes. Zeroized on drop,
/// redacted in Debug.
#[derive(Clone)]
pub struct HmacSecret(SecretBox<[u8]>);

impl HmacSecret {
    /// Copies `bytes` into a new secret; fails when shorter than 32 bytes.
    /// The caller remains responsible for wiping its own copy.
    pub fn new(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < HMAC_MIN_LEN {
            return Err(ConfigError::InvalidKey {
                keyid: String::new(),
                reason: format!(
                    "HMAC secret is {} bytes, at least {HMAC_MIN_LEN} are required",
                    bytes.len()
                ),
            });
        }
        Ok(HmacSecret(SecretBox::new(Box::from(bytes))))
    }

    /// The secret bytes; keep the borrow short.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one accessor that hands HMAC key bytes to the MAC"
    )]
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HmacSecret").field(&Redacted).finish()
    }
}

/// The verification material of one application key.
#[derive(Clone)]
pub enum KeyMaterial {
    /// An Ed25519 public key (RFC 9421 §3.3.6).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An HMAC-SHA256 shared secret (RFC 9421 §3.3.3).
    HmacSha256(HmacSecret),
}

impl KeyMaterial {
    /// The RFC 9421 algorithm name (`ed25519` or `hmac-sha256`).
    pub fn alg(&self) -> &'static str {
        match self {
            KeyMaterial::Ed25519(_) => ALG_ED25519,
            KeyMaterial::HmacSha256(_) => ALG_HMAC_SHA256,
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(self.alg()).field(&Redacted).finish()
    }
}

/// A trusted application key: the keyid the app puts in `Signature-Input`
/// and the material its signatures are checked with.
#[derive(Clone)]
pub struct AppKey {
    keyid: String,
    material: KeyMaterial,
}

impl AppKey {
    /// Builds a key from already decoded material.
    pub fn new(keyid: impl Into<String>, material: KeyMaterial) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        if let KeyMaterial::Ed25519(vk) = &material {
            if vk.is_weak() {
                return Err(invalid(
                    &keyid,
                    "ed25519 public key is a weak (small-order) point",
                ));
            }
        }
        Ok(AppKey { keyid, material })
    }

    /// An Ed25519 key from the base64 (standard or URL-safe, padding
    /// optional) of the raw 32-byte public key.
    pub fn ed25519_from_base64(keyid: impl Into<String>, b64: &str) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        let bytes = decode_base64_lenient(b64.trim())
            .ok_or_else(|| invalid(&keyid, "public key is not valid base64"))?;
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            invalid(
                &keyid,
                &format!("ed25519 public key must be 32 bytes, got {}", bytes.len()),
            )
        })?;
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|_| invalid(&keyid, "not a valid ed25519 public key"))?;
        AppKey::new(keyid, KeyMaterial::Ed25519(vk))
    }

    /// An Ed25519 key from a SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub fn ed25519_from_pem(keyid: impl Into<String>, pem: &str) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        let vk = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| invalid(&keyid, &format!("not an ed25519 SPKI PEM public key: {e}")))?;
        AppKey::new(keyid, KeyMaterial::Ed25519(vk))
    }

    /// An HMAC-SHA256 key; the secret must be at least 32 bytes. The bytes
    /// are copied; wipe the caller's copy.
    pub fn hmac(keyid: impl Into<String>, secret: &[u8]) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        let secret = HmacSecret::new(secret).map_err(|e| with_keyid(e, &keyid))?;
        AppKey::new(keyid, KeyMaterial::HmacSha256(secret))
    }

    /// An HMAC-SHA256 key from the base64 of the secret.
    pub fn hmac_from_base64(keyid: impl Into<String>, b64: &str) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        let bytes = zeroize::Zeroizing::new(
            decode_base64_lenient(b64.trim())
                .ok_or_else(|| invalid(&keyid, "HMAC secret is not valid base64"))?,
        );
        AppKey::hmac(keyid, &bytes)
    }

    /// The keyid.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The verification material.
    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKey")
            .field("keyid", &self.keyid)
            .finish_non_exhaustive()
    }
}

/// The set of trusted application keys. Several can be active at once so
/// the app can rotate keys without downtime.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, AppKey>,
}

impl KeyRing {
    /// An empty ring: every signature is then [`super::SignatureError::UnknownKey`].
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Builds a ring; fails on a duplicate keyid.
    pub fn from_keys(keys: impl IntoIterator<Item = AppKey>) -> Result<Self, ConfigError> {
        let mut ring = KeyRing::new();
        for key in keys {
            if ring.keys.contains_key(&key.keyid) {
                return Err(ConfigError::DuplicateKeyId(key.keyid.clone()));
            }
            ring.insert(key);
        }
        Ok(ring)
    }

    /// Adds a key, returning the one it replaces under the same keyid (map
    /// semantics; use [`KeyRing::from_keys`] to refuse duplicates instead).
    pub fn insert(&mut self, key: AppKey) -> Option<AppKey> {
        self.keys.insert(key.keyid.clone(), key)
    }

    /// The key with this keyid, if trusted.
    pub fn get(&self, keyid: &str) -> Option<&AppKey> {
        self.keys.get(keyid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keyids, sorted (for logs and status pages).
    pub fn keyids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keyids", &self.keyids())
            .finish()
    }
}

/// A key that signs requests: the app's side, also used by patgate's
/// `request` CLI, the tests and the documentation vectors.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful of long-lived keys; boxing would only change the public field type"
)]
pub enum SigningKey {
    /// An Ed25519 private key.
    Ed25519 {
        /// The keyid written into `Signature-Input`.
        keyid: String,
        /// The private key (zeroized on drop by ed25519-dalek).
        key: ed25519_dalek::SigningKey,
    },
    /// An HMAC-SHA256 shared secret.
    HmacSha256 {
        /// The keyid written into `Signature-Input`.
        keyid: String,
        /// The shared secret.
        secret: HmacSecret,
    },
}

impl SigningKey {
    /// An Ed25519 key from a PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn ed25519_from_pkcs8_pem(
        keyid: impl Into<String>,
        pem: &str,
    ) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
            invalid(
                &keyid,
                &format!("not an ed25519 PKCS#8 PEM private key: {e}"),
            )
        })?;
        Ok(SigningKey::Ed25519 { keyid, key })
    }

    /// An Ed25519 key from its 32-byte seed (RFC 8032 private key).
    pub fn ed25519_from_seed(
        keyid: impl Into<String>,
        seed: &[u8; 32],
    ) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        Ok(SigningKey::Ed25519 {
            keyid,
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }

    /// A fresh random Ed25519 key from the operating system's RNG. The
    /// keyid is not checked here; [`super::sign`] refuses one that is not a
    /// valid sf-string.
    pub fn generate_ed25519(keyid: impl Into<String>) -> Self {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        SigningKey::Ed25519 {
            keyid: keyid.into(),
            key,
        }
    }

    /// An HMAC-SHA256 key; the secret must be at least 32 bytes.
    pub fn hmac(keyid: impl Into<String>, secret: &[u8]) -> Result<Self, ConfigError> {
        let keyid = check_keyid(keyid.into())?;
        let secret = HmacSecret::new(secret).map_err(|e| with_keyid(e, &keyid))?;
        Ok(SigningKey::HmacSha256 { keyid, secret })
    }

    /// The keyid.
    pub fn keyid(&self) -> &str {
        match self {
            SigningKey::Ed25519 { keyid, .. } | SigningKey::HmacSha256 { keyid, .. } => keyid,
        }
    }

    /// The RFC 9421 algorithm name.
    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Ed25519 { .. } => ALG_ED25519,
            SigningKey::HmacSha256 { .. } => ALG_HMAC_SHA256,
        }
    }

    /// The matching verification key, to put in patgate's key ring.
    pub fn app_key(&self) -> AppKey {
        let material = match self {
            SigningKey::Ed25519 { key, .. } => KeyMaterial::Ed25519(key.verifying_key()),
            SigningKey::HmacSha256 { secret, .. } => KeyMaterial::HmacSha256(secret.clone()),
        };
        AppKey {
            keyid: self.keyid().to_owned(),
            material,
        }
    }

    /// For Ed25519, the base64 (standard, padded) of the raw public key, the
    /// form patgate's configuration takes.
    pub fn public_key_base64(&self) -> Option<String> {
        match self {
            SigningKey::Ed25519 { key, .. } => {
                Some(STANDARD.encode(key.verifying_key().as_bytes()))
            }
            SigningKey::HmacSha256 { .. } => None,
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("keyid", &self.keyid())
            .finish_non_exhaustive()
    }
}

/// Keyids travel inside an sf-string and end up in logs: keep them plain.
fn check_keyid(keyid: String) -> Result<String, ConfigError> {
    let ok = !keyid.is_empty()
        && keyid.len() <= 128
        && keyid
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(keyid)
    } else {
        Err(ConfigError::InvalidKeyId(keyid))
    }
}

fn invalid(keyid: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidKey {
        keyid: keyid.to_owned(),
        reason: reason.to_owned(),
    }
}

fn with_keyid(e: ConfigError, keyid: &str) -> ConfigError {
    match e {
        ConfigError::InvalidKey { reason, .. } => invalid(keyid, &reason),
        other => other,
    }
}

/// Configuration files and JWKs disagree on the base64 alphabet; accept both.
pub(crate) fn decode_base64_lenient(s: &str) -> Option<Vec<u8>> {
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(v) = engine.decode(s) {
            return Some(v);
        }
    }
    None
}
