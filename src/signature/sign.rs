//! Producing `Signature-Input` and `Signature` for a request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::Mac as _;
use rand_core::RngCore as _;
use sfv::{
    BareItem, DictSerializer, InnerList, Item, KeyRef, Parameters, Parser, StringRef, Version,
};

use super::base::build_base;
use super::components::parse_components;
use super::keys::SigningKey;
use super::{quoted, Message, SignatureError};

/// What to sign with.
#[derive(Debug, Clone, Copy)]
pub struct SignParams<'a> {
    /// The dictionary label (an sf-key, e.g. `sig1`).
    pub label: &'a str,
    /// Covered components in order: a bare name (`@method`,
    /// `content-type`) or a serialised sf-item when parameters are needed
    /// (`"@query-param";name="a"`).
    pub components: &'a [&'a str],
    /// `created`, Unix seconds.
    pub created: u64,
    /// `expires`, Unix seconds, if any.
    pub expires: Option<u64>,
    /// `nonce`; an empty string omits the parameter (which the patgate
    /// profile refuses; allowed for RFC-style signatures).
    pub nonce: &'a str,
    /// Whether to add `alg` (optional in the profile).
    pub include_alg: bool,
}

/// Signs `msg`, returning the `(Signature-Input, Signature)` header values,
/// each a one-member dictionary under `p.label`. Parameters are emitted in
/// the order `created`, `expires`, `keyid`, `nonce`, `alg`.
pub fn sign(
    msg: &Message<'_>,
    key: &SigningKey,
    p: &SignParams<'_>,
) -> Result<(http::HeaderValue, http::HeaderValue), SignatureError> {
    let label = KeyRef::from_str(p.label).map_err(|_| {
        SignatureError::Invalid(format!("label {} is not an sf-key", quoted(p.label)))
    })?;
    let mut items = Vec::with_capacity(p.components.len());
    for c in p.components {
        items.push(component_item(c)?);
    }
    let inner = InnerList::with_params(items, params(key, p)?);
    let components = parse_components(&inner.items)?;
    let base = build_base(msg, &components, &inner)?;

    let signature: Vec<u8> = match key {
        SigningKey::Ed25519 { key, .. } => key.sign(base.as_bytes()).to_bytes().to_vec(),
        SigningKey::HmacSha256 { secret, .. } => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose())
                .map_err(|_| SignatureError::Invalid("unusable HMAC key".to_owned()))?;
            mac.update(base.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };

    let mut input = DictSerializer::new();
    {
        let mut il = input.inner_list(label);
        il.items(&inner.items);
        let _ = il.finish().parameters(&inner.params);
    }
    let mut sig = DictSerializer::new();
    let _ = sig.bare_item(label, signature.as_slice());
    let header = |s: Option<String>| {
        s.and_then(|s| http::HeaderValue::from_str(&s).ok())
            .ok_or_else(|| SignatureError::Invalid("cannot serialise signature headers".to_owned()))
    };
    Ok((header(input.finish())?, header(sig.finish())?))
}

fn component_item(c: &str) -> Result<Item, SignatureError> {
    let bad =
        || SignatureError::Invalid(format!("component {} is not a valid identifier", quoted(c)));
    if c.starts_with('"') {
        Parser::new(c)
            .with_version(Version::Rfc8941)
            .parse::<Item>()
            .map_err(|_| bad())
    } else {
        let s = StringRef::from_str(c).map_err(|_| bad())?;
        Ok(Item::new(s))
    }
}

fn params(key: &SigningKey, p: &SignParams<'_>) -> Result<Parameters, SignatureError> {
    let int = |v: u64, name: &str| {
        sfv::Integer::try_from(v)
            .map(BareItem::Integer)
            .map_err(|_| SignatureError::Invalid(format!("{name} is out of the sf-integer range")))
    };
    let string = |v: &str, name: &str| {
        StringRef::from_str(v)
            .map(|s| BareItem::String(s.to_owned()))
            .map_err(|_| SignatureError::Invalid(format!("{name} is not a valid sf-string")))
    };
    let k = |s: &'static str| {
        sfv::Key::from_string(s.to_owned()).map_err(|_| SignatureError::Invalid(s.to_owned()))
    };
    let mut params = Parameters::new();
    params.insert(k("created")?, int(p.created, "created")?);
    if let Some(e) = p.expires {
        params.insert(k("expires")?, int(e, "expires")?);
    }
    params.insert(k("keyid")?, string(key.keyid(), "keyid")?);
    if !p.nonce.is_empty() {
        params.insert(k("nonce")?, string(p.nonce, "nonce")?);
    }
    if p.include_alg {
        params.insert(k("alg")?, string(key.alg(), "alg")?);
    }
    Ok(params)
}

/// A fresh nonce: 18 bytes from the operating system's RNG, base64url
/// without padding (24 characters).
pub fn random_nonce() -> String {
    let mut bytes = [0u8; 18];
    rand_core::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
