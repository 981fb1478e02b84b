//! Covered components (RFC 9421 §2): parsing the identifiers of a
//! `Signature-Input` inner list and computing their values for a request.

use std::collections::HashSet;

use sfv::{BareItem, FieldType as _, Item, ItemSerializer};

use super::{quoted, Message, SignatureError};

/// A derived component (RFC 9421 §2.2) supported for requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Derived {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    /// `@query-param;name="..."`, holding the name in canonical encoded form.
    QueryParam(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Derived(Derived),
    /// A header field, by lowercase name.
    Field(http::HeaderName),
}

/// One covered component, as listed in `Signature-Input`.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    /// The identifier serialised as an sf-item, e.g. `"@query-param";name="a"`:
    /// the left-hand side of its line in the signature base.
    pub(crate) serialized: String,
    /// The component name without quotes, e.g. `@method`.
    pub(crate) name: String,
    /// The serialised parameters, e.g. `;name="a"` (empty for most).
    pub(crate) params: String,
    pub(crate) kind: Kind,
    /// Whether the identifier carries parameters (only `@query-param` does).
    pub(crate) has_params: bool,
}

impl Component {
    /// Human form for [`super::Verified::covered`]: the name, then any
    /// parameters as serialised, e.g. `@query-param;name="a"`.
    pub(crate) fn display(&self) -> String {
        if self.params.is_empty() {
            return self.name.clone();
        }
        format!("{}{}", self.name, self.params)
    }
}

/// Component parameters RFC 9421 defines that this module does not implement.
const UNSUPPORTED_PARAMS: [&str; 5] = ["sf", "key", "bs", "req", "tr"];

/// Parses and validates the covered components of one signature.
pub(crate) fn parse_components(items: &[Item]) -> Result<Vec<Component>, SignatureError> {
    let mut out = Vec::with_capacity(items.len());
    // Duplicates: a linear scan over the usual handful of components, a set beyond that (a
    // hostile list of thousands would otherwise cost quadratic time).
    let mut seen: Option<HashSet<String>> = (items.len() > 16).then(HashSet::new);
    for item in items {
        let name = match &item.bare_item {
            BareItem::String(s) => s.as_str().to_owned(),
            _ => {
                return Err(SignatureError::Invalid(format!(
                    "component identifier {} is not an sf-string",
                    quoted(&item.serialize())
                )))
            }
        };
        // The common identifier, a plain name without parameters, serialises as the name in
        // quotes (an sf-string needs escapes only for `"` and a backslash); anything else goes
        // through sfv's serializer. This runs on every request.
        let plain = item.params.is_empty() && !name.contains(['"', '\\']);
        let (serialized, params) = if plain {
            let mut serialized = String::with_capacity(name.len() + 2);
            serialized.push('"');
            serialized.push_str(&name);
            serialized.push('"');
            (serialized, String::new())
        } else {
            let serialized = item.serialize();
            let bare_len = ItemSerializer::new()
                .bare_item(&item.bare_item)
                .finish()
                .len();
            let params = serialized.get(bare_len..).unwrap_or_default().to_owned();
            (serialized, params)
        };
        let duplicate = match &mut seen {
            Some(seen) => !seen.insert(serialized.clone()),
            None => out.iter().any(|c: &Component| c.serialized == serialized),
        };
        if duplicate {
            return Err(SignatureError::Invalid(format!(
                "component {} is covered more than once",
                quoted(&serialized)
            )));
        }
        let kind = component_kind(&name, item)?;
        out.push(Component {
            serialized,
            name,
            params,
            kind,
            has_params: !item.params.is_empty(),
        });
    }
    Ok(out)
}

fn component_kind(name: &str, item: &Item) -> Result<Kind, SignatureError> {
    for key in item.params.keys() {
        let key = key.as_str();
        if UNSUPPORTED_PARAMS.contains(&key) {
            return Err(SignatureError::Invalid(format!(
                "unsupported component parameter {} on {}",
                quoted(key),
                quoted(name)
            )));
        }
        if !(name == "@query-param" && key == "name") {
            return Err(SignatureError::Invalid(format!(
                "unknown component parameter {} on {}",
                quoted(key),
                quoted(name)
            )));
        }
    }
    if let Some(derived) = name.strip_prefix('@') {
        let d = match derived {
            "method" => Derived::Method,
            "target-uri" => Derived::TargetUri,
            "authority" => Derived::Authority,
            "scheme" => Derived::Scheme,
            "request-target" => Derived::RequestTarget,
            "path" => Derived::Path,
            "query" => Derived::Query,
            "query-param" => {
                let Some(value) = item.params.get("name") else {
                    return Err(SignatureError::Invalid(
                        "@query-param requires a name parameter".to_owned(),
                    ));
                };
                let BareItem::String(value) = value else {
                    return Err(SignatureError::Invalid(
                        "@query-param name parameter must be an sf-string".to_owned(),
                    ));
                };
                // Clients may send the name decoded or differently encoded;
                // compare canonical forms (§2.2.8 steps 1-2).
                Derived::QueryParam(form_encode(&form_decode(value.as_str())))
            }
            "signature-params" => {
                return Err(SignatureError::Invalid(
                    "@signature-params must not be a covered component".to_owned(),
                ))
            }
            _ => {
                return Err(SignatureError::Invalid(format!(
                    "unsupported derived component {}",
                    quoted(name)
                )))
            }
        };
        return Ok(Kind::Derived(d));
    }
    // RFC 9421 §2.1: field component names are the lowercased field name.
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SignatureError::Invalid(format!(
            "header component name {} must be a non-empty lowercase field name",
            quoted(name)
        )));
    }
    let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        SignatureError::Invalid(format!("{} is not a valid header field name", quoted(name)))
    })?;
    Ok(Kind::Field(header))
}

/// The parts of the target URI the derived components are made of.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    raw: &'a str,
    scheme: String,
    authority: String,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Splits an absolute `scheme://authority/path?query` URI. The pieces
    /// keep their spelling (no percent-decoding, no dot-segment removal):
    /// the client signed the bytes it sent.
    pub(crate) fn parse(raw: &'a str) -> Result<Self, SignatureError> {
        let bad = |why: &str| SignatureError::Invalid(format!("target URI {}: {why}", quoted(raw)));
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("must be non-empty visible ASCII"));
        }
        if raw.contains('#') {
            return Err(bad("must not contain a fragment"));
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("is not absolute"))?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err(bad("has an invalid scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority_raw, path_and_query) = rest.split_at(auth_end);
        let authority = normalize_authority(&scheme, authority_raw)
            .ok_or_else(|| bad("has an invalid authority"))?;
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        Ok(Target {
            raw,
            scheme,
            authority,
            path,
            query,
        })
    }

    fn path(&self) -> &str {
        // RFC 9110 §4.2.3: an empty path is normalized to "/".
        if self.path.is_empty() {
            "/"
        } else {
            self.path
        }
    }
}

/// RFC 9421 §2.2.3 / RFC 9110 §4.2.3: lowercase host, default port dropped,
/// userinfo refused (it has no place in an HTTP target).
fn normalize_authority(scheme: &str, authority: &str) -> Option<String> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || (!host.starts_with('[') && host.contains(':')) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u32 = p.parse().ok()?;
            let default = matches!((scheme, n), ("https", 443) | ("http", 80));
            if default {
                None
            } else {
                Some(n)
            }
        }
    };
    Some(match port {
        Some(n) => format!("{host}:{n}"),
        None => host,
    })
}

/// The value of one component for `msg` (RFC 9421 §2.1, §2.2).
pub(crate) fn component_value<'m>(
    msg: &Message<'m>,
    target: &mut Option<Target<'m>>,
    c: &Component,
) -> Result<String, SignatureError> {
    let d = match &c.kind {
        Kind::Field(name) => return field_value(msg.headers, name),
        Kind::Derived(d) => d,
    };
    if *d == Derived::Method {
        return Ok(msg.method.as_str().to_owned());
    }
    if target.is_none() {
        *target = Some(Target::parse(msg.target_uri)?);
    }
    let Some(t) = target.as_ref() else {
        return Err(SignatureError::Invalid("target URI unavailable".to_owned()));
    };
    Ok(match d {
        Derived::Method => msg.method.as_str().to_owned(),
        Derived::TargetUri => t.raw.to_owned(),
        Derived::Authority => t.authority.clone(),
        Derived::Scheme => t.scheme.clone(),
        Derived::RequestTarget => match t.query {
            Some(q) => format!("{}?{q}", t.path()),
            None => t.path().to_owned(),
        },
        Derived::Path => t.path().to_owned(),
        // RFC 9421 §2.2.7: an absent query is the lone "?".
        Derived::Query => format!("?{}", t.query.unwrap_or("")),
        Derived::QueryParam(name) => query_param_value(t.query.unwrap_or(""), name)?,
    })
}

/// RFC 9421 §2.1: all field lines, each trimmed, joined with ", ".
fn field_value(
    headers: &http::HeaderMap,
    name: &http::HeaderName,
) -> Result<String, SignatureError> {
    let mut lines = headers.get_all(name).iter().peekable();
    if lines.peek().is_none() {
        return Err(SignatureError::Invalid(format!(
            "covered header {} is absent from the request",
            quoted(name.as_str())
        )));
    }
    let mut parts = Vec::new();
    for v in lines {
        let s = v.to_str().map_err(|_| {
            SignatureError::Invalid(format!(
                "covered header {} is not visible ASCII",
                quoted(name.as_str())
            ))
        })?;
        parts.push(s.trim_matches([' ', '\t']));
    }
    Ok(parts.join(", "))
}

/// RFC 9421 §2.2.8: the re-encoded value of the single parameter whose
/// re-encoded name is `name`.
fn query_param_value(query: &str, name: &str) -> Result<String, SignatureError> {
    let mut found: Option<String> = None;
    for (n, v) in form_parse(query) {
        if form_encode(&n) == name {
            if found.is_some() {
                // §2.2.8: a repeated parameter must not be signed on its own.
                return Err(SignatureError::Invalid(format!(
                    "query parameter {} occurs more than once",
                    quoted(name)
                )));
            }
            found = Some(form_encode(&v));
        }
    }
    found.ok_or_else(|| {
        SignatureError::Invalid(format!(
            "covered query parameter {} is absent from the target URI",
            quoted(name)
        ))
    })
}

/// WHATWG URL §5.1 application/x-www-form-urlencoded parsing.
fn form_parse(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|seq| match seq.split_once('=') {
            Some((n, v)) => (form_decode(n), form_decode(v)),
            None => (form_decode(seq), String::new()),
        })
        .collect()
}

/// `+` to space, then percent-decode (malformed escapes kept literally),
/// then UTF-8 decode with replacement, as the URL standard does.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The URL standard's "percent-encode after encoding" with the
/// application/x-www-form-urlencoded set and space as `%20` (RFC 9421 §2.2.8
/// step 2): only ASCII alphanumerics and `*-._` stay literal.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target<'_> {
        Target::parse(uri).unwrap()
    }

    #[test]
    fn authority_is_normalized() {
        assert_eq!(target("https://Example.COM:443/x").authority, "example.com");
        assert_eq!(target("http://example.com:80").authority, "example.com");
        assert_eq!(
            target("https://example.com:8443/").authority,
            "example.com:8443"
        );
        assert_eq!(target("https://[::1]:8443/").authority, "[::1]:8443");
        assert_eq!(target("HTTPS://a.b/").scheme, "https");
        assert!(Target::parse("https://user@a.b/").is_err());
        assert!(Target::parse("/relative").is_err());
        assert!(Target::parse("https://a.b/x#frag").is_err());
        assert!(Target::parse("https://a.b/x y").is_err());
        assert!(Target::parse("https://a.b:x/").is_err());
    }

    #[test]
    fn path_and_query_rules() {
        let t = target("https://a.b");
        assert_eq!(t.path(), "/");
        assert_eq!(t.query, None);
        let t = target("https://a.b?x=1");
        assert_eq!(t.path(), "/");
        assert_eq!(t.query, Some("x=1"));
        let t = target("https://a.b/p%2Fq?");
        assert_eq!(t.path(), "/p%2Fq");
        assert_eq!(t.query, Some(""));
    }

    #[test]
    fn query_param_rfc_example() {
        // RFC 9421 §2.2.8 example.
        let q = "var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something";
        assert_eq!(
            query_param_value(q, "var").unwrap(),
            "this%20is%20a%20big%0Amultiline%20value"
        );
        assert_eq!(
            query_param_value(q, "bar").unwrap(),
            "with%20plus%20whitespace"
        );
        assert_eq!(
            query_param_value(q, "fa%C3%A7ade%22%3A%20").unwrap(),
            "something"
        );
        assert!(query_param_value(q, "absent").is_err());
        assert!(query_param_value("a=1&a=2", "a").is_err());
        assert_eq!(query_param_value("a&b=", "a").unwrap(), "");
        assert_eq!(query_param_value("p=%zz~", "p").unwrap(), "%25zz%7E");
        // RFC 9421 §2.2.8 second example.
        let q = "param=Value&Pet=dog";
        assert_eq!(query_param_value(q, "Pet").unwrap(), "dog");
        assert_eq!(query_param_value(q, "param").unwrap(), "Value");
    }

    #[test]
    fn identifiers_are_validated() {
        let parse = |s: &str| {
            let list: sfv::List = sfv::Parser::new(s).parse().unwrap();
            let sfv::ListEntry::InnerList(il) = &list[0] else {
                panic!()
            };
            parse_components(&il.items)
        };
        assert!(parse(r#"("@method" "content-type")"#).is_ok());
        let err = |s| match parse(s) {
            Err(SignatureError::Invalid(m)) => m,
            other => panic!("{s}: {other:?}"),
        };
        assert!(err(r#"("@method" "@method")"#).contains("more than once"));
        assert!(err(r#"("content-type";sf)"#).contains("unsupported component parameter"));
        assert!(err(r#"("content-type";bs)"#).contains("unsupported component parameter"));
        assert!(err(r#"("@method";req)"#).contains("unsupported component parameter"));
        assert!(err(r#"("@method";foo)"#).contains("unknown component parameter"));
        assert!(err(r#"("@status")"#).contains("unsupported derived component"));
        assert!(err(r#"("@signature-params")"#).contains("must not be"));
        assert!(err(r#"("Content-Type")"#).contains("lowercase"));
        assert!(err(r#"(method)"#).contains("not an sf-string"));
        assert!(err(r#"("@query-param")"#).contains("requires a name"));
        // Distinct query-param names are distinct components.
        assert!(parse(r#"("@query-param";name="a" "@query-param";name="b")"#).is_ok());
    }
}
