//! Parsing `Signature-Input` / `Signature`, choosing the signature to check,
//! and building the RFC 9421 §2.5 signature base.

use std::borrow::Cow;

use sfv::{BareItem, Dictionary, InnerList, ListEntry, ListSerializer, Parser, Version};

use super::components::{component_value, parse_components, Component, Target};
use super::keys::{AppKey, KeyRing};
use super::{quoted, Message, SignatureError, SIGNATURE, SIGNATURE_INPUT};

/// The typed signature parameters RFC 9421 §2.3 defines. Others (e.g. `tag`
/// or private ones) stay in the inner list and are signed all the same.
#[derive(Debug, Clone, Default)]
pub(crate) struct SigParams {
    pub(crate) created: Option<u64>,
    pub(crate) expires: Option<u64>,
    pub(crate) nonce: Option<String>,
    pub(crate) keyid: Option<String>,
    pub(crate) alg: Option<String>,
}

/// The signature chosen for verification.
#[derive(Debug)]
pub(crate) struct Selected<'k> {
    pub(crate) label: String,
    pub(crate) inner: InnerList,
    pub(crate) signature: Vec<u8>,
    pub(crate) params: SigParams,
    pub(crate) key: &'k AppKey,
    pub(crate) components: Vec<Component>,
}

/// Joins every field line of `name` as one dictionary (RFC 9651 §4.2: a
/// dictionary may be split over lines). `None` when the header is absent.
fn combined<'h>(
    headers: &'h http::HeaderMap,
    name: &str,
) -> Result<Option<Cow<'h, str>>, SignatureError> {
    let text = |v: &'h http::HeaderValue| {
        v.to_str()
            .map_err(|_| SignatureError::Invalid(format!("{name} header is not visible ASCII")))
    };
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let first = text(first)?;
    // One field line, the usual case, is borrowed as it is.
    let mut joined: Option<String> = None;
    for v in values {
        let all = joined.get_or_insert_with(|| first.to_owned());
        all.push_str(", ");
        all.push_str(text(v)?);
    }
    Ok(Some(joined.map_or(Cow::Borrowed(first), Cow::Owned)))
}

pub(crate) fn parse_dictionary(value: &str, what: &str) -> Result<Dictionary, SignatureError> {
    Parser::new(value)
        .with_version(Version::Rfc8941)
        .parse::<Dictionary>()
        .map_err(|e| {
            SignatureError::Invalid(format!(
                "{what} header is not a valid RFC 8941 dictionary: {e}"
            ))
        })
}

/// Parses both headers and returns the first signature (in `Signature-Input`
/// order) whose `keyid` names a trusted key, with its parameters checked.
pub(crate) fn select<'k>(
    keys: &'k KeyRing,
    headers: &http::HeaderMap,
) -> Result<Selected<'k>, SignatureError> {
    let input = combined(headers, SIGNATURE_INPUT)?;
    let sig = combined(headers, SIGNATURE)?;
    let (input, sig) = match (input, sig) {
        (None, None) => return Err(SignatureError::Missing),
        (Some(_), None) => {
            return Err(SignatureError::Invalid(
                "Signature-Input is present without Signature".to_owned(),
            ))
        }
        (None, Some(_)) => {
            return Err(SignatureError::Invalid(
                "Signature is present without Signature-Input".to_owned(),
            ))
        }
        (Some(i), Some(s)) => (i, s),
    };
    let input = parse_dictionary(&input, "Signature-Input")?;
    let mut sig = parse_dictionary(&sig, "Signature")?;
    if input.is_empty() {
        return Err(SignatureError::Invalid(
            "Signature-Input has no signature".to_owned(),
        ));
    }
    for label in input.keys() {
        if !sig.contains_key(label.as_str()) {
            return Err(SignatureError::Invalid(format!(
                "label {} is in Signature-Input but not in Signature",
                quoted(label.as_str())
            )));
        }
    }
    for label in sig.keys() {
        if !input.contains_key(label.as_str()) {
            return Err(SignatureError::Invalid(format!(
                "label {} is in Signature but not in Signature-Input",
                quoted(label.as_str())
            )));
        }
    }

    let mut first_untrusted: Option<String> = None;
    let mut chosen = None;
    for (label, entry) in input {
        let ListEntry::InnerList(inner) = entry else {
            return Err(SignatureError::Invalid(format!(
                "Signature-Input member {} is not an inner list",
                quoted(label.as_str())
            )));
        };
        let bytes = match sig.swap_remove(label.as_str()) {
            Some(ListEntry::Item(item)) => match item.bare_item {
                BareItem::ByteSequence(b) => b,
                _ => {
                    return Err(SignatureError::Invalid(format!(
                        "Signature member {} is not a byte sequence",
                        quoted(label.as_str())
                    )))
                }
            },
            _ => {
                return Err(SignatureError::Invalid(format!(
                    "Signature member {} is not a byte sequence",
                    quoted(label.as_str())
                )))
            }
        };
        if chosen.is_some() {
            // Still walked for the structural checks above.
            continue;
        }
        if let Some(keyid) = inner.params.get("keyid").and_then(|v| v.as_string()) {
            match keys.get(keyid.as_str()) {
                Some(key) => chosen = Some((label.as_str().to_owned(), inner, bytes, key)),
                None => {
                    first_untrusted.get_or_insert_with(|| keyid.as_str().to_owned());
                }
            }
        }
    }
    let Some((label, inner, signature, key)) = chosen else {
        return Err(SignatureError::UnknownKey(match first_untrusted {
            Some(k) => format!("keyid {} is not trusted", quoted(&k)),
            None => "no signature carries a keyid parameter".to_owned(),
        }));
    };

    let params = typed_params(&inner)?;
    if let Some(alg) = &params.alg {
        if alg != key.material().alg() {
            return Err(SignatureError::Invalid(format!(
                "alg {} does not match key {} ({})",
                quoted(alg),
                quoted(key.keyid()),
                key.material().alg()
            )));
        }
    }
    if params.created.is_none() {
        return Err(SignatureError::Invalid(
            "the created parameter is required".to_owned(),
        ));
    }
    let components = parse_components(&inner.items)?;
    Ok(Selected {
        label,
        inner,
        signature,
        params,
        key,
        components,
    })
}

/// Type-checks the parameters RFC 9421 §2.3 defines.
pub(crate) fn typed_params(inner: &InnerList) -> Result<SigParams, SignatureError> {
    let mut p = SigParams::default();
    for (k, v) in &inner.params {
        let int = || -> Result<u64, SignatureError> {
            v.as_integer()
                .and_then(|i| u64::try_from(i64::from(i)).ok())
                .ok_or_else(|| {
                    SignatureError::Invalid(format!(
                        "the {} parameter must be a non-negative integer",
                        k.as_str()
                    ))
                })
        };
        let string = || -> Result<String, SignatureError> {
            v.as_string().map(|s| s.as_str().to_owned()).ok_or_else(|| {
                SignatureError::Invalid(format!(
                    "the {} parameter must be an sf-string",
                    k.as_str()
                ))
            })
        };
        match k.as_str() {
            "created" => p.created = Some(int()?),
            "expires" => p.expires = Some(int()?),
            "nonce" => p.nonce = Some(string()?),
            "keyid" => p.keyid = Some(string()?),
            "alg" => p.alg = Some(string()?),
            "tag" => {
                string()?;
            }
            _ => {}
        }
    }
    Ok(p)
}

/// The `@signature-params` value: the inner list re-serialised (RFC 9421
/// §2.3), so insignificant whitespace in the header does not matter.
pub(crate) fn serialize_inner_list(inner: &InnerList) -> String {
    let mut ser = ListSerializer::new();
    {
        let mut il = ser.inner_list();
        il.items(&inner.items);
        let _ = il.finish().parameters(&inner.params);
    }
    ser.finish().unwrap_or_default()
}

/// RFC 9421 §2.5 for already validated components.
pub(crate) fn build_base<'m>(
    msg: &Message<'m>,
    components: &[Component],
    inner: &InnerList,
) -> Result<String, SignatureError> {
    let mut target: Option<Target<'m>> = None;
    let mut base = String::with_capacity(512);
    for c in components {
        let value = component_value(msg, &mut target, c)?;
        if value.bytes().any(|b| b == b'\n' || b == b'\r') {
            return Err(SignatureError::Invalid(format!(
                "component {} contains a line break",
                quoted(&c.name)
            )));
        }
        base.push_str(&c.serialized);
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&serialize_inner_list(inner));
    Ok(base)
}

/// The exact RFC 9421 §2.5 signature base of the signature labelled `label`
/// in `signature_input` (a whole `Signature-Input` header value), for `msg`.
///
/// No key, parameter or profile checks happen here; the covered components
/// are validated and must all be present in `msg`.
pub fn signature_base(
    msg: &Message<'_>,
    signature_input: &str,
    label: &str,
) -> Result<String, SignatureError> {
    let dict = parse_dictionary(signature_input, "Signature-Input")?;
    let Some(entry) = dict.get(label) else {
        return Err(SignatureError::Invalid(format!(
            "label {} is not in Signature-Input",
            quoted(label)
        )));
    };
    let ListEntry::InnerList(inner) = entry else {
        return Err(SignatureError::Invalid(format!(
            "Signature-Input member {} is not an inner list",
            quoted(label)
        )));
    };
    let components = parse_components(&inner.items)?;
    build_base(msg, &components, inner)
}
