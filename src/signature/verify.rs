//! Verification: the bare RFC 9421 layer and the patgate profile on top.

use std::sync::Arc;

use hmac::Mac as _;

use super::base::{build_base, select, Selected};
use super::components::{Component, Derived, Kind};
use super::keys::{KeyMaterial, KeyRing};
use super::{
    digest, quoted, ConfigError, Message, SignatureError, CONTENT_DIGEST, PATGATE_ACCOUNT,
};

/// Upper bound for both window settings, in seconds.
pub(crate) const WINDOW_CAP: u64 = 300;
/// Longest nonce accepted: it is stored in the replay cache.
pub(crate) const NONCE_MAX_LEN: usize = 256;

/// The accepted age of a signature's `created` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    max_skew: u64,
    max_validity: u64,
}

impl Default for Window {
    /// 5 s of clock skew, 60 s of validity.
    fn default() -> Self {
        Window {
            max_skew: 5,
            max_validity: 60,
        }
    }
}

impl Window {
    /// `max_skew_secs`: how far in the future `created` may be;
    /// `max_validity_secs`: how old it may be. Both at most 300 s; validity
    /// at least 1 s.
    pub fn new(max_skew_secs: u64, max_validity_secs: u64) -> Result<Self, ConfigError> {
        if max_skew_secs > WINDOW_CAP {
            return Err(ConfigError::InvalidWindow(format!(
                "max skew {max_skew_secs} s exceeds the {WINDOW_CAP} s cap"
            )));
        }
        if max_validity_secs > WINDOW_CAP {
            return Err(ConfigError::InvalidWindow(format!(
                "max validity {max_validity_secs} s exceeds the {WINDOW_CAP} s cap"
            )));
        }
        if max_validity_secs == 0 {
            return Err(ConfigError::InvalidWindow(
                "max validity must be at least 1 s".to_owned(),
            ));
        }
        Ok(Window {
            max_skew: max_skew_secs,
            max_validity: max_validity_secs,
        })
    }

    /// Allowed clock skew, seconds.
    pub fn max_skew(&self) -> u64 {
        self.max_skew
    }

    /// Allowed signature age, seconds.
    pub fn max_validity(&self) -> u64 {
        self.max_validity
    }

    /// Checks `now - max_validity <= created <= now + max_skew`,
    /// `created >= not_before` and, when present, `now <= expires`.
    pub fn check(
        &self,
        created: u64,
        expires: Option<u64>,
        now: u64,
        not_before: u64,
    ) -> Result<(), SignatureError> {
        if created < not_before {
            return Err(SignatureError::Expired(format!(
                "created {created} is before the gateway started ({not_before})"
            )));
        }
        if created > now.saturating_add(self.max_skew) {
            return Err(SignatureError::Expired(format!(
                "created is in the future ({created} > now {now} + {} s skew)",
                self.max_skew
            )));
        }
        if created.saturating_add(self.max_validity) < now {
            return Err(SignatureError::Expired(format!(
                "signature is too old (created {created}, now {now}, max validity {} s)",
                self.max_validity
            )));
        }
        if let Some(expires) = expires {
            if expires < now {
                return Err(SignatureError::Expired(format!(
                    "expires {expires} has passed (now {now})"
                )));
            }
        }
        Ok(())
    }

    /// The last second at which a signature can still be accepted; the
    /// replay cache must remember its nonce at least until then.
    pub(crate) fn last_valid(&self, created: u64, expires: Option<u64>) -> u64 {
        let end = created.saturating_add(self.max_validity);
        expires.map_or(end, |e| e.min(end))
    }
}

/// What the request looks like, as far as the profile cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    /// The request has a body: `content-digest` and `content-type` must be
    /// covered (and the caller must check the digest, see [`digest`]).
    pub has_body: bool,
}

/// A signature that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted key that verified it.
    pub keyid: String,
    /// Its label in the two headers.
    pub label: String,
    /// Its `created` parameter.
    pub created: u64,
    /// Its `nonce` parameter (empty when absent, possible only from
    /// [`verify_signature_only`]).
    pub nonce: String,
    /// Covered components in signed order: the name followed by any
    /// parameters, e.g. `@method`, `content-type`, `@query-param;name="a"`.
    pub covered: Vec<String>,
    /// The last second (Unix) at which this signature can be accepted: the replay cache must
    /// remember `(keyid, nonce)` until then.
    pub replay_until: u64,
}

/// The patgate profile verifier: the trusted keys, the time window and the process start.
/// Cheap to share (`Arc` inside). The replay check is the caller's: a [`Verified`] says
/// until when its `(keyid, nonce)` must be remembered.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Arc<KeyRing>,
    window: Window,
    not_before: u64,
}

impl Verifier {
    /// `not_before` is the process start in Unix seconds: signatures created earlier are
    /// refused, because the replay cache did not exist then.
    pub fn new(keys: KeyRing, window: Window, not_before: u64) -> Self {
        Verifier {
            keys: Arc::new(keys),
            window,
            not_before,
        }
    }

    /// The same verifier with another key ring.
    pub fn with_keys(&self, keys: KeyRing) -> Self {
        Verifier {
            keys: Arc::new(keys),
            ..self.clone()
        }
    }

    /// The verifier of a reloaded config: new keys and window, the same start time, so a
    /// reload cannot let in a signature made before the process started.
    pub fn reloaded(&self, keys: KeyRing, window: Window) -> Self {
        Verifier {
            keys: Arc::new(keys),
            window,
            not_before: self.not_before,
        }
    }

    /// The trusted keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The time window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The full profile: parse, pick the first trusted signature, required parameters and
    /// components, time window, cryptography. The caller then records the nonce (only once
    /// the signature verified, so unauthenticated traffic cannot fill the cache).
    ///
    /// The body digest is not checked here: call [`digest::verify`] on the
    /// body (or use [`Verifier::verify_with_body`]).
    pub fn verify(
        &self,
        msg: &Message<'_>,
        req: Requirements,
        now: u64,
    ) -> Result<Verified, SignatureError> {
        self.verify_inner(msg, req, now, None)
    }

    /// [`Verifier::verify`] plus the `Content-Digest` check of a fully read
    /// body, done after the cryptography.
    /// `body: None` means the request has no body.
    pub fn verify_with_body(
        &self,
        msg: &Message<'_>,
        body: Option<&[u8]>,
        now: u64,
    ) -> Result<Verified, SignatureError> {
        let req = Requirements {
            has_body: body.is_some(),
        };
        self.verify_inner(msg, req, now, body)
    }

    fn verify_inner(
        &self,
        msg: &Message<'_>,
        req: Requirements,
        now: u64,
        body: Option<&[u8]>,
    ) -> Result<Verified, SignatureError> {
        let sel = select(&self.keys, msg.headers)?;
        check_required(&sel.components, msg.headers, req)?;
        let nonce = match &sel.params.nonce {
            None => {
                return Err(SignatureError::Invalid(
                    "the nonce parameter is required".to_owned(),
                ))
            }
            Some(n) if n.is_empty() || n.len() > NONCE_MAX_LEN => {
                return Err(SignatureError::Invalid(format!(
                    "the nonce parameter must be 1-{NONCE_MAX_LEN} characters"
                )))
            }
            Some(n) => n.clone(),
        };
        let created = sel.params.created.unwrap_or_default();
        self.window
            .check(created, sel.params.expires, now, self.not_before)?;
        verify_crypto(msg, &sel)?;
        if let Some(body) = body {
            digest::verify_headers(msg.headers, body)?;
        }
        let replay_until = self.window.last_valid(created, sel.params.expires);
        Ok(verified(&sel, created, nonce, replay_until))
    }
}

/// The RFC 9421 layer alone: parse, pick the first signature whose `keyid`
/// is trusted, check `alg` against the key, rebuild the base, check the
/// cryptography. No required components, no time window, no nonce.
pub fn verify_signature_only(
    keys: &KeyRing,
    msg: &Message<'_>,
) -> Result<Verified, SignatureError> {
    let sel = select(keys, msg.headers)?;
    verify_crypto(msg, &sel)?;
    let nonce = sel.params.nonce.clone().unwrap_or_default();
    let created = sel.params.created.unwrap_or_default();
    Ok(verified(&sel, created, nonce, created))
}

fn verified(sel: &Selected<'_>, created: u64, nonce: String, replay_until: u64) -> Verified {
    Verified {
        replay_until,
        keyid: sel.key.keyid().to_owned(),
        label: sel.label.clone(),
        created,
        nonce,
        covered: sel.components.iter().map(Component::display).collect(),
    }
}

fn verify_crypto(msg: &Message<'_>, sel: &Selected<'_>) -> Result<(), SignatureError> {
    let base = build_base(msg, &sel.components, &sel.inner)?;
    let bad = || SignatureError::Invalid("signature does not verify".to_owned());
    match sel.key.material() {
        KeyMaterial::Ed25519(vk) => {
            let bytes: [u8; 64] = sel.signature.as_slice().try_into().map_err(|_| {
                SignatureError::Invalid(format!(
                    "an ed25519 signature is 64 bytes, got {}",
                    sel.signature.len()
                ))
            })?;
            let sig = ed25519_dalek::Signature::from_bytes(&bytes);
            vk.verify_strict(base.as_bytes(), &sig).map_err(|_| bad())
        }
        KeyMaterial::HmacSha256(secret) => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose())
                .map_err(|_| SignatureError::Invalid("unusable HMAC key".to_owned()))?;
            mac.update(base.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(&sel.signature).map_err(|_| bad())
        }
    }
}

/// The components the profile requires, checked apart from base building so
/// the RFC vectors (which cover other things) still exercise the lower layer.
pub(crate) fn check_required(
    components: &[Component],
    headers: &http::HeaderMap,
    req: Requirements,
) -> Result<(), SignatureError> {
    let mut required: Vec<&str> = vec!["@method", "@target-uri"];
    if headers.contains_key(PATGATE_ACCOUNT) {
        required.push(PATGATE_ACCOUNT);
    }
    if req.has_body {
        required.push(CONTENT_DIGEST);
        required.push("content-type");
    }
    for name in required {
        let covered = components.iter().any(|c| {
            !c.has_params
                && match &c.kind {
                    Kind::Derived(Derived::Method) => name == "@method",
                    Kind::Derived(Derived::TargetUri) => name == "@target-uri",
                    Kind::Derived(_) => false,
                    Kind::Field(h) => h.as_str() == name,
                }
        });
        if !covered {
            let why = match name {
                PATGATE_ACCOUNT => " (the request carries Patgate-Account)",
                CONTENT_DIGEST | "content-type" => " (the request has a body)",
                _ => "",
            };
            return Err(SignatureError::Invalid(format!(
                "required component {} is not covered{why}",
                quoted(name)
            )));
        }
    }
    Ok(())
}
