//! RFC 9530 `Content-Digest`: checking a received body and producing the
//! header value for one being sent.

use sfv::{BareItem, DictSerializer, KeyRef, ListEntry};
use sha2::{Digest as _, Sha256, Sha512};

use super::base::parse_dictionary;
use super::{quoted, SignatureError, CONTENT_DIGEST};

/// Checks a `Content-Digest` value against `body`.
///
/// `sha-256` and `sha-512` members are checked (each one present must
/// match); other algorithms are ignored, but at least one supported member
/// is required.
pub fn verify(header_value: &str, body: &[u8]) -> Result<(), SignatureError> {
    let dict = parse_dictionary(header_value, "Content-Digest").map_err(|e| match e {
        SignatureError::Invalid(m) => SignatureError::DigestInvalid(m),
        other => other,
    })?;
    let mut checked = 0;
    let mut mismatch = false;
    for (alg, entry) in &dict {
        let expected: Vec<u8> = match alg.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let got = match entry {
            ListEntry::Item(item) => match &item.bare_item {
                BareItem::ByteSequence(b) => b,
                _ => {
                    return Err(SignatureError::DigestInvalid(format!(
                        "{} member is not a byte sequence",
                        alg.as_str()
                    )))
                }
            },
            ListEntry::InnerList(_) => {
                return Err(SignatureError::DigestInvalid(format!(
                    "{} member is not a byte sequence",
                    alg.as_str()
                )))
            }
        };
        if got.len() != expected.len() {
            return Err(SignatureError::DigestInvalid(format!(
                "{} digest is {} bytes, expected {}",
                alg.as_str(),
                got.len(),
                expected.len()
            )));
        }
        // Keep going so a malformed later member is still reported as such.
        mismatch |= *got != expected;
        checked += 1;
    }
    if checked == 0 {
        let algs: Vec<&str> = dict.keys().map(|k| k.as_str()).collect();
        return Err(SignatureError::DigestInvalid(format!(
            "no supported algorithm (sha-256, sha-512) among {}",
            quoted(&algs.join(","))
        )));
    }
    if mismatch {
        return Err(SignatureError::DigestMismatch);
    }
    Ok(())
}

/// [`verify`] on the request's `Content-Digest` field lines (joined as one
/// dictionary); absent header is [`SignatureError::DigestInvalid`].
pub fn verify_headers(headers: &http::HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let mut parts = Vec::new();
    for v in headers.get_all(CONTENT_DIGEST) {
        parts.push(v.to_str().map_err(|_| {
            SignatureError::DigestInvalid("Content-Digest is not visible ASCII".to_owned())
        })?);
    }
    if parts.is_empty() {
        return Err(SignatureError::DigestInvalid(
            "Content-Digest header is absent".to_owned(),
        ));
    }
    verify(&parts.join(", "), body)
}

/// `sha-256=:<base64>:` for `body`.
pub fn sha256(body: &[u8]) -> String {
    member("sha-256", &Sha256::digest(body))
}

/// `sha-512=:<base64>:` for `body`.
pub fn sha512(body: &[u8]) -> String {
    member("sha-512", &Sha512::digest(body))
}

fn member(alg: &str, digest: &[u8]) -> String {
    let mut ser = DictSerializer::new();
    // Both names are valid sf-keys, so this cannot fail.
    if let Ok(key) = KeyRef::from_str(alg) {
        let _ = ser.bare_item(key, digest);
    }
    ser.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_BODY: &[u8] = br#"{"hello": "world"}"#;

    #[test]
    fn rfc9530_vectors() {
        // RFC 9530 Appendix D / RFC 9421 Appendix B.
        let v512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        let v256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
        assert_eq!(sha512(RFC_BODY), v512);
        assert_eq!(sha256(RFC_BODY), v256);
        verify(v512, RFC_BODY).unwrap();
        verify(v256, RFC_BODY).unwrap();
        verify(&format!("{v256}, {v512}"), RFC_BODY).unwrap();
        // Unknown algorithms are ignored next to a supported one.
        verify(&format!("md5=:AAAA:, {v256}"), RFC_BODY).unwrap();
    }

    #[test]
    fn mismatch_and_malformed() {
        let v256 = sha256(RFC_BODY);
        assert_eq!(
            verify(&v256, b"{\"hello\": \"World\"}"),
            Err(SignatureError::DigestMismatch)
        );
        // One matching and one wrong member: still a mismatch.
        let both = format!("{v256}, {}", sha512(b"other"));
        assert_eq!(verify(&both, RFC_BODY), Err(SignatureError::DigestMismatch));
        let invalid =
            |v: &str| matches!(verify(v, RFC_BODY), Err(SignatureError::DigestInvalid(_)));
        assert!(invalid("sha-256=abc"));
        assert!(invalid("sha-256=:AAAA:"));
        assert!(invalid("sha-256=:not base64!:"));
        assert!(invalid("md5=:AAAA:"));
        assert!(invalid(""));
        assert!(invalid("sha-256=(a b)"));
        assert!(invalid("sha-256"));
    }

    #[test]
    fn header_map_form() {
        let mut h = http::HeaderMap::new();
        assert!(matches!(
            verify_headers(&h, b""),
            Err(SignatureError::DigestInvalid(_))
        ));
        h.append(CONTENT_DIGEST, "md5=:AAAA:".parse().unwrap());
        h.append(CONTENT_DIGEST, sha256(b"").parse().unwrap());
        verify_headers(&h, b"").unwrap();
    }
}
