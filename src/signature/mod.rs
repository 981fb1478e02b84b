//! RFC 9421 HTTP Message Signatures and RFC 9530 Content-Digest, as used by
//! patgate to authenticate the requests the Jira app sends it.
//!
//! This module is pure: it opens no socket, reads no clock (the caller passes
//! `now` in Unix seconds) and touches no disk.
//!
//! Layers, from the bottom up:
//!
//! * [`signature_base`] builds the exact RFC 9421 §2.5 signature base for one
//!   labelled signature of a request.
//! * [`verify_signature_only`] parses `Signature-Input` / `Signature`, picks the
//!   first signature whose `keyid` names a trusted key, rebuilds its base and
//!   checks the cryptography. No profile rules, no time window, no nonce: this
//!   is the layer the RFC 9421 Appendix B vectors are checked against.
//! * [`Verifier::verify`] is the patgate profile: the same plus the required
//!   parameters (`created`, `nonce`, `keyid`), the required covered components
//!   and the time window. The replay check is the caller's ([`crate::authn`]),
//!   against a [`crate::store::NonceStore`], until [`Verified::replay_until`].
//! * [`digest`] checks and produces `Content-Digest` (RFC 9530).
//! * [`sign`] produces the two header values; used by patgate's `request`
//!   CLI, tests and the worked examples in `docs/protocol.md`
//!   ([`vectors::worked_examples`]).

mod base;
mod components;
pub mod digest;
mod keys;
mod sign;
pub mod vectors;
mod verify;

#[cfg(test)]
mod tests;

use std::fmt;

pub use base::signature_base;
pub use keys::{AppKey, HmacSecret, KeyMaterial, KeyRing, SigningKey};
pub use sign::{random_nonce, sign, SignParams};
pub use verify::{verify_signature_only, Requirements, Verified, Verifier, Window};

/// Name of the header carrying the signature metadata (RFC 9421 §4.1).
pub const SIGNATURE_INPUT: &str = "signature-input";
/// Name of the header carrying the signature bytes (RFC 9421 §4.2).
pub const SIGNATURE: &str = "signature";
/// Name of the header carrying the body digest (RFC 9530 §2).
pub const CONTENT_DIGEST: &str = "content-digest";
/// Name of the header naming the Jira account a request acts for.
pub const PATGATE_ACCOUNT: &str = "patgate-account";

/// The parts of a request that a signature can cover.
///
/// `target_uri` is the absolute URI the client requested, rebuilt by the
/// caller as `https://{authority}{path-and-query}` with the authority taken
/// from the request (Host / `:authority`), never from configuration: the
/// client signed what it sent.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Request method, compared case-sensitively as received.
    pub method: &'a http::Method,
    /// Absolute target URI (`@target-uri`).
    pub target_uri: &'a str,
    /// All request header fields.
    pub headers: &'a http::HeaderMap,
}

/// Why a request signature was refused.
///
/// Messages describe the structural problem only; they never contain key
/// material, and attacker-supplied strings in them are quoted and truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Neither `Signature-Input` nor `Signature` is present.
    #[error("request is not signed: no Signature-Input or Signature header")]
    Missing,
    /// The headers are malformed, the profile is not met, or the
    /// cryptographic check failed.
    #[error("invalid signature: {0}")]
    Invalid(String),
    /// The signature is outside its validity window (too old, future-dated,
    /// `expires` passed, or created before the gateway started).
    #[error("signature expired: {0}")]
    Expired(String),
    /// No signature names a configured key.
    #[error("unknown key: {0}")]
    UnknownKey(String),
    /// `Content-Digest` is well-formed but does not match the body.
    #[error("Content-Digest does not match the request body")]
    DigestMismatch,
    /// `Content-Digest` is malformed or has no supported algorithm.
    #[error("invalid Content-Digest: {0}")]
    DigestInvalid(String),
}

/// A key or window configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The keyid is empty, too long or not printable ASCII.
    #[error("invalid keyid {0:?}: must be 1-128 printable ASCII characters without '\"' or '\\'")]
    InvalidKeyId(String),
    /// The key material could not be decoded or is unusable.
    #[error("key {keyid:?}: {reason}")]
    InvalidKey {
        /// The key's id.
        keyid: String,
        /// What is wrong (never the key bytes).
        reason: String,
    },
    /// Two keys share one keyid.
    #[error("duplicate keyid {0:?}")]
    DuplicateKeyId(String),
    /// A window bound is out of range.
    #[error("invalid signature window: {0}")]
    InvalidWindow(String),
}

/// Quotes an untrusted string for an error message: escaped and truncated,
/// so a hostile header cannot flood logs or forge log lines.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}...")
    } else {
        format!("{s:?}")
    }
}

/// Redacted placeholder used by Debug impls of secret-holding types.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}
