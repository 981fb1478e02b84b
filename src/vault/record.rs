//! Record identity, and the byte layouts of store keys, associated data and stored values.
//!
//! # Store key (`Space::Records`; sled tree `records`)
//!
//! ```text
//! integration secret:  0x01 | u32be len(integration) | integration
//! user PAT:            0x02 | u32be len(integration) | integration | u32be len(account) | account
//! ```
//!
//! Length prefixes make the encoding unambiguous for any UTF-8 ids, and
//! `0x02 | u32be len | integration` is exactly the prefix of that integration's PATs (a
//! different integration that merely starts with the same characters has a different length).
//!
//! # Associated data (authenticated, not stored)
//!
//! ```text
//! AAD_VERSION (1) | record kind (0 key check, 1 integration secret, 2 user PAT,
//!                                3 the previous master key during a rotation)
//!   | u32be len(integration) | integration | u32be len(account) | account | u32be key version
//! ```
//!
//! Integration secrets and the key check use an empty account (and the key check an empty
//! integration); the kind byte keeps them apart.
//!
//! # Stored value
//!
//! ```text
//! [0]          FORMAT_VERSION (1)
//! [1..5]       key version, u32be
//! [5..17]      nonce (96 bits, random per write)
//! [17..21]     u32be length m of the clear metadata
//! [21..21+m]   metadata, JSON (not secret; readable without the key)
//! [21+m..]     AES-256-GCM ciphertext of the credential, then the 16-byte tag
//! ```
//!
//! # Vault-wide settings (tree `vault`)
//!
//! `format` (one byte), `key-version` (u32be), `key-check` (a stored value sealing a constant
//! under the current key, associated data kind 0). While a key rotation is unfinished, also
//! `rotation-to` (u32be), `rotation-check` (the key check under the new key) and
//! `rotation-old-key` (the previous master key sealed under the new one, kind 3); see
//! `rotation.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::credential::CredentialKind;
pub(crate) use super::crypto::{NONCE_LEN, TAG_LEN};

/// The layout version of stored values.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// The layout version of associated data.
const AAD_VERSION: u8 = 1;
/// The most bytes an integration or account id may have.
pub const MAX_ID_LEN: usize = 256;

const HEADER_LEN: usize = 1 + 4 + NONCE_LEN + 4;

/// Large enough for the longest key and AAD, so both are built on the stack.
const ID_BUF_LEN: usize = 1 + 1 + 4 + MAX_ID_LEN + 4 + MAX_ID_LEN + 4;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    KeyCheck = 0,
    IntegrationSecret = 1,
    UserPat = 2,
    /// The previous master key, sealed under the new one while a rotation runs.
    RotationOldKey = 3,
}

/// Which record: the identity a ciphertext is bound to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RecordId {
    /// The shared secret of an integration, used when no user PAT applies.
    IntegrationSecret {
        /// The integration id, e.g. `ghe-prod`.
        integration: String,
    },
    /// One user's personal access token for one integration.
    UserPat {
        /// The integration id.
        integration: String,
        /// The Atlassian account id.
        account: String,
    },
}

impl RecordId {
    /// The AAD the record is sealed with under key version `key_version` (see [`aad`]).
    pub(crate) fn aad(&self, key_version: u32) -> IdBytes {
        match self {
            RecordId::IntegrationSecret { integration } => {
                aad(Kind::IntegrationSecret, integration, "", key_version)
            }
            RecordId::UserPat {
                integration,
                account,
            } => aad(Kind::UserPat, integration, account, key_version),
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordId::IntegrationSecret { integration } => {
                write!(f, "the secret of integration `{integration}`")
            }
            RecordId::UserPat {
                integration,
                account,
            } => write!(
                f,
                "the PAT of account `{account}` for integration `{integration}`"
            ),
        }
    }
}

/// What the vault knows about a user's PAT, besides the PAT: kept in clear so status and
/// listings need no decryption. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatMeta {
    /// The host account the PAT belongs to, as the host's who-am-I said.
    pub host_login: String,
    /// Scopes or permissions the host reported.
    pub scopes: Vec<String>,
    /// When the host last accepted the PAT.
    pub validated_at: u64,
    /// When a PAT was first stored for this user.
    pub created_at: u64,
    /// When this PAT was stored.
    pub updated_at: u64,
    /// When the PAT was last used upstream, if tracked.
    pub last_used_at: Option<u64>,
    /// Set when the host refused the PAT on an action (expired, revoked); cleared by the next
    /// use the host accepts. The PAT is kept: the user may fix it on the host's side.
    pub refused: Option<PatRefusal>,
    /// When the host says the PAT expires (GitHub's `GitHub-Authentication-Token-Expiration`,
    /// GitLab's `expires_at`); `None` when it does not say or never expires.
    pub expires_at: Option<u64>,
}

/// The host's refusal of a stored PAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatRefusal {
    /// When, in Unix seconds.
    pub at: u64,
    /// The host's HTTP status (401).
    pub host_status: u16,
}

/// The clear metadata of a stored value. One flat shape for both record kinds keeps it small;
/// the PAT-only fields are absent for integration secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClearMeta {
    pub(crate) kind: CredentialKind,
    pub(crate) created_at: u64,
    pub(crate) updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host_login: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) validated_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_used_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refused: Option<PatRefusal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<u64>,
}

impl ClearMeta {
    pub(crate) fn for_pat(kind: CredentialKind, meta: &PatMeta) -> ClearMeta {
        ClearMeta {
            kind,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            host_login: Some(meta.host_login.clone()),
            scopes: meta.scopes.clone(),
            validated_at: Some(meta.validated_at),
            last_used_at: meta.last_used_at,
            refused: meta.refused,
            expires_at: meta.expires_at,
        }
    }

    pub(crate) fn for_secret(kind: CredentialKind, created_at: u64, updated_at: u64) -> ClearMeta {
        ClearMeta {
            kind,
            created_at,
            updated_at,
            host_login: None,
            scopes: Vec::new(),
            validated_at: None,
            last_used_at: None,
            refused: None,
            expires_at: None,
        }
    }

    /// The PAT metadata; `None` when the PAT-only fields are missing.
    pub(crate) fn into_pat_meta(self) -> Option<PatMeta> {
        Some(PatMeta {
            host_login: self.host_login?,
            scopes: self.scopes,
            validated_at: self.validated_at?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_used_at: self.last_used_at,
            refused: self.refused,
            expires_at: self.expires_at,
        })
    }
}

/// An integration or account id that passed [`validate_id`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValidId<'a>(&'a str);

impl<'a> ValidId<'a> {
    pub(crate) fn as_str(self) -> &'a str {
        self.0
    }
}

/// Checks an id: non-empty, at most [`MAX_ID_LEN`] bytes, no control characters (they would
/// garble logs and terminals; no host or Atlassian id has them).
pub(crate) fn validate_id<'a>(
    field: &'static str,
    id: &'a str,
) -> Result<ValidId<'a>, super::VaultError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_ID_LEN {
        "it is longer than 256 bytes"
    } else if id.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(ValidId(id));
    };
    Err(super::VaultError::InvalidId { field, reason })
}

/// A key or AAD built on the stack (no allocation on the read path).
pub(crate) struct IdBytes {
    buf: [u8; ID_BUF_LEN],
    len: usize,
}

impl IdBytes {
    fn new() -> Self {
        IdBytes {
            buf: [0; ID_BUF_LEN],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        // Cannot overflow: every id is a ValidId of at most MAX_ID_LEN bytes.
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push_str(&mut self, s: &str) {
        // Ids are at most MAX_ID_LEN bytes, so the length fits.
        self.push(&(s.len() as u32).to_be_bytes());
        self.push(s.as_bytes());
    }
}

impl AsRef<[u8]> for IdBytes {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The store key of an integration secret.
pub(crate) fn secret_key(integration: ValidId<'_>) -> IdBytes {
    let mut key = IdBytes::new();
    key.push(&[Kind::IntegrationSecret as u8]);
    key.push_str(integration.0);
    key
}

/// The store key of a user PAT.
pub(crate) fn pat_key(integration: ValidId<'_>, account: ValidId<'_>) -> IdBytes {
    let mut key = pat_prefix(integration);
    key.push_str(account.0);
    key
}

/// The prefix of the keys of all PATs of one integration.
pub(crate) fn pat_prefix(integration: ValidId<'_>) -> IdBytes {
    let mut key = IdBytes::new();
    key.push(&[Kind::UserPat as u8]);
    key.push_str(integration.0);
    key
}

/// The associated data binding a ciphertext to its record and key version.
pub(crate) fn aad(kind: Kind, integration: &str, account: &str, key_version: u32) -> IdBytes {
    let mut aad = IdBytes::new();
    aad.push(&[AAD_VERSION, kind as u8]);
    aad.push_str(integration);
    aad.push_str(account);
    aad.push(&key_version.to_be_bytes());
    aad
}

/// Reads a store key back into a record id. `None` when it is not a valid key.
pub(crate) fn decode_key(key: &[u8]) -> Option<RecordId> {
    fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        Some((std::str::from_utf8(s).ok()?, rest))
    }
    let (&kind, rest) = key.split_first()?;
    let (integration, rest) = take_str(rest)?;
    if kind == Kind::IntegrationSecret as u8 && rest.is_empty() {
        return Some(RecordId::IntegrationSecret {
            integration: integration.to_string(),
        });
    }
    if kind == Kind::UserPat as u8 {
        let (account, rest) = take_str(rest)?;
        if rest.is_empty() {
            return Some(RecordId::UserPat {
                integration: integration.to_string(),
                account: account.to_string(),
            });
        }
    }
    None
}

/// A stored value, split into its parts; borrows from the bytes the store returned.
#[derive(Debug)]
pub(crate) struct RawValue<'a> {
    pub(crate) key_version: u32,
    pub(crate) nonce: &'a [u8; NONCE_LEN],
    pub(crate) meta: &'a [u8],
    /// Ciphertext, then the tag.
    pub(crate) sealed: &'a [u8],
}

/// Why a stored value does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadValue {
    Truncated,
    UnknownFormat(u8),
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::Truncated => f.write_str("the stored value is truncated"),
            BadValue::UnknownFormat(v) => {
                write!(f, "the stored value has unknown format version {v}")
            }
        }
    }
}

impl<'a> RawValue<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<RawValue<'a>, BadValue> {
        let (&format, rest) = bytes.split_first().ok_or(BadValue::Truncated)?;
        if format != FORMAT_VERSION {
            return Err(BadValue::UnknownFormat(format));
        }
        let (key_version, rest) = rest.split_first_chunk::<4>().ok_or(BadValue::Truncated)?;
        let (nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(BadValue::Truncated)?;
        let (meta_len, rest) = rest.split_first_chunk::<4>().ok_or(BadValue::Truncated)?;
        let meta_len = u32::from_be_bytes(*meta_len) as usize;
        if rest.len() < meta_len || rest.len() - meta_len < TAG_LEN {
            return Err(BadValue::Truncated);
        }
        let (meta, sealed) = rest.split_at(meta_len);
        Ok(RawValue {
            key_version: u32::from_be_bytes(*key_version),
            nonce,
            meta,
            sealed,
        })
    }

    /// Builds a stored value. `sealed` is ciphertext then tag.
    pub(crate) fn encode(
        key_version: u32,
        nonce: &[u8; NONCE_LEN],
        meta: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + ciphertext.len() + TAG_LEN);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&key_version.to_be_bytes());
        out.extend_from_slice(nonce);
        // Metadata is bounded by the ids and scopes a caller passes; the vault caps the
        // whole record well below 4 GiB.
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(meta);
        out.extend_from_slice(ciphertext);
        out.extend_from_slice(tag);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::VaultError;

    fn v(s: &str) -> ValidId<'_> {
        validate_id("test", s).unwrap()
    }

    #[test]
    fn id_validation() {
        for ok in [
            "ghe-prod",
            "5b10ac8d82e05b22cc7d4ef5",
            "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077",
            "ünïcødé/with spaces",
            &"x".repeat(256),
            &"é".repeat(128),
        ] {
            validate_id("account", ok).unwrap();
        }
        for (bad, reason) in [
            ("", "it is empty"),
            (&"x".repeat(257) as &str, "it is longer than 256 bytes"),
            (&"é".repeat(129), "it is longer than 256 bytes"),
            ("a\nb", "it contains a control character"),
            ("a\u{0}", "it contains a control character"),
            ("\u{7f}", "it contains a control character"),
            ("a\u{85}", "it contains a control character"),
            ("\u{1b}[31m", "it contains a control character"),
        ] {
            let err = validate_id("account", bad).unwrap_err();
            assert!(
                matches!(err, VaultError::InvalidId { field: "account", reason: r } if r == reason),
                "{bad:?}: {err:?}"
            );
            assert_eq!(err.to_string(), format!("invalid account id: {reason}"));
        }
    }

    #[test]
    fn keys_are_unambiguous_and_round_trip() {
        let pairs = [
            ("a", "bc"),
            ("ab", "c"),
            ("abc", ""),
            ("ghe", "-prod"),
            ("ghe-prod", "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"),
            ("ghe\u{2}", "x"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (i, a) in pairs {
            // Bypass validation for the empty account: the encoding must cope anyway.
            let key = pat_key(ValidId(i), ValidId(a));
            assert!(seen.insert(key.as_ref().to_vec()), "{i:?}/{a:?} collides");
            assert_eq!(
                decode_key(key.as_ref()),
                Some(RecordId::UserPat {
                    integration: i.into(),
                    account: a.into()
                })
            );
            let key = secret_key(ValidId(i));
            assert!(seen.insert(key.as_ref().to_vec()));
            assert_eq!(
                decode_key(key.as_ref()),
                Some(RecordId::IntegrationSecret {
                    integration: i.into()
                })
            );
        }
        let long = "x".repeat(MAX_ID_LEN);
        let key = pat_key(v(&long), v(&long));
        assert_eq!(key.as_ref().len(), 1 + 4 + 256 + 4 + 256);
        assert!(decode_key(key.as_ref()).is_some());
    }

    #[test]
    fn pat_prefix_matches_only_its_integration() {
        let prefix = pat_prefix(v("ghe"));
        assert!(pat_key(v("ghe"), v("x"))
            .as_ref()
            .starts_with(prefix.as_ref()));
        assert!(!pat_key(v("ghe-prod"), v("x"))
            .as_ref()
            .starts_with(prefix.as_ref()));
        assert!(!pat_key(v("gh"), v("ex"))
            .as_ref()
            .starts_with(prefix.as_ref()));
        assert!(!secret_key(v("ghe")).as_ref().starts_with(prefix.as_ref()));
    }

    #[test]
    fn bad_keys_do_not_decode() {
        let good = pat_key(v("ghe"), v("acct"));
        let good = good.as_ref();
        for cut in 0..good.len() {
            assert_eq!(decode_key(&good[..cut]), None, "cut at {cut}");
        }
        let mut extra = good.to_vec();
        extra.push(0);
        assert_eq!(decode_key(&extra), None);
        let mut kind = good.to_vec();
        kind[0] = 9;
        assert_eq!(decode_key(&kind), None);
        assert_eq!(decode_key(&[1, 0, 0, 0, 2, 0xff, 0xfe]), None);
    }

    #[test]
    fn aad_differs_by_every_component() {
        let base = aad(Kind::UserPat, "ghe", "a", 1);
        let others = [
            aad(Kind::IntegrationSecret, "ghe", "a", 1),
            aad(Kind::UserPat, "ghe2", "a", 1),
            aad(Kind::UserPat, "ghe", "b", 1),
            aad(Kind::UserPat, "ghe", "a", 2),
            aad(Kind::UserPat, "gh", "ea", 1),
        ];
        for other in &others {
            assert_ne!(base.as_ref(), other.as_ref());
        }
        assert_eq!(base.as_ref()[..2], [1, 2]);
    }

    #[test]
    fn values_round_trip_and_every_truncation_fails() {
        let value = RawValue::encode(7, &[3; NONCE_LEN], b"{\"m\":1}", b"cipher", &[9; TAG_LEN]);
        let raw = RawValue::parse(&value).unwrap();
        assert_eq!(raw.key_version, 7);
        assert_eq!(raw.nonce, &[3; NONCE_LEN]);
        assert_eq!(raw.meta, b"{\"m\":1}");
        assert_eq!(&raw.sealed[..6], b"cipher");
        assert_eq!(raw.sealed.len(), 6 + TAG_LEN);
        // Cutting into the tag still parses (the cipher then rejects it); cutting more does not.
        for cut in 0..value.len() - 6 {
            assert!(RawValue::parse(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut other_format = value.clone();
        other_format[0] = 2;
        assert_eq!(
            RawValue::parse(&other_format).unwrap_err(),
            BadValue::UnknownFormat(2)
        );
        let mut huge_meta = value.clone();
        huge_meta[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            RawValue::parse(&huge_meta).unwrap_err(),
            BadValue::Truncated
        );
    }

    #[test]
    fn clear_meta_shapes() {
        let pat = PatMeta {
            host_login: "alice".into(),
            scopes: vec!["repo".into()],
            validated_at: 3,
            created_at: 1,
            updated_at: 2,
            last_used_at: None,
            refused: None,
            expires_at: None,
        };
        let meta = ClearMeta::for_pat(CredentialKind::Token, &pat);
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"token","created_at":1,"updated_at":2,"host_login":"alice","scopes":["repo"],"validated_at":3}"#
        );
        let back: ClearMeta = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_pat_meta(), Some(pat));
        let secret = ClearMeta::for_secret(CredentialKind::AwsAccessKey, 5, 6);
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"aws-access-key","created_at":5,"updated_at":6}"#
        );
        assert_eq!(secret.into_pat_meta(), None);
    }
}
