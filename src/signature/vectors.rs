//! Worked examples for `docs/protocol.md`, generated from fixed
//! inputs so the document can be checked against the code.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};

use super::{digest, sign, signature_base, Message, SignParams, SigningKey};

/// Published TEST Ed25519 private key seed (base64). Never trust it.
pub const TEST_ED25519_SEED_B64: &str = "2oWb8m00TkC9Ngi6DBwYHIylreZa7DA6aHRD5GEA5aE=";
/// Published TEST HMAC-SHA256 secret (base64). Never trust it.
pub const TEST_HMAC_SECRET_B64: &str = "OjpoWVePRdbhOlIFXLxq7zoUOszaoJj7vVzZ8QciIgk=";
/// keyid of the test Ed25519 key.
pub const TEST_ED25519_KEYID: &str = "jira-app-test-ed25519";
/// keyid of the test HMAC key.
pub const TEST_HMAC_KEYID: &str = "jira-app-test-hmac";
/// `created` of every example (2026-01-01T00:00:00Z).
pub const EXAMPLE_CREATED: u64 = 1_767_225_600;

const AUTHORITY: &str = "patgate.example.com:8443";
const ACCOUNT: &str = "5b10ac8d82e05b22cc7d4ef5";
const POST_PATH: &str = "/git/ghe/api/v3/repos/acme/api/git/refs";
const POST_BODY: &[u8] =
    br#"{"ref":"refs/heads/PROJ-1-fix","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;
const POST_NONCE: &str = "MlYwYzn4KyiqTNCnfV4mvk5a";
const GET_PATH: &str = "/git/ghe/api/v3/repos/acme/api/branches?per_page=100";
const GET_NONCE: &str = "An3TJyACzLex2U1I5jiJgXo_";
const POST_COMPONENTS: &[&str] = &[
    "@method",
    "@target-uri",
    "patgate-account",
    "content-digest",
    "content-type",
];
const GET_COMPONENTS: &[&str] = &["@method", "@target-uri"];
/// Label used in the examples (any sf-key works).
const LABEL: &str = "jira";

/// The test Ed25519 signing key of the examples.
pub fn test_ed25519_key() -> SigningKey {
    let seed: [u8; 32] = STANDARD
        .decode(TEST_ED25519_SEED_B64)
        .ok()
        .and_then(|v| v.try_into().ok())
        .expect("fixed test seed is 32 bytes of base64");
    SigningKey::ed25519_from_seed(TEST_ED25519_KEYID, &seed).expect("fixed keyid is valid")
}

/// The test HMAC signing key of the examples.
pub fn test_hmac_key() -> SigningKey {
    let secret = zeroize::Zeroizing::new(
        STANDARD
            .decode(TEST_HMAC_SECRET_B64)
            .expect("fixed secret is base64"),
    );
    SigningKey::hmac(TEST_HMAC_KEYID, &secret).expect("fixed secret is 32 bytes")
}

/// One signed example request.
#[derive(Debug)]
pub(crate) struct Example {
    pub(crate) title: &'static str,
    pub(crate) method: http::Method,
    pub(crate) target_uri: String,
    /// Header fields in display order (before the signature headers).
    pub(crate) fields: Vec<(&'static str, String)>,
    pub(crate) body: Option<&'static [u8]>,
    pub(crate) base: String,
    pub(crate) signature_input: String,
    pub(crate) signature: String,
}

fn example(
    title: &'static str,
    method: http::Method,
    path: &str,
    account: bool,
    body: Option<&'static [u8]>,
    key: &SigningKey,
    nonce: &str,
) -> Example {
    let target_uri = format!("https://{AUTHORITY}{path}");
    let mut fields: Vec<(&'static str, String)> = vec![("Host", AUTHORITY.to_owned())];
    if account {
        fields.push(("Patgate-Account", ACCOUNT.to_owned()));
    }
    let components = match body {
        Some(b) => {
            fields.push(("Content-Type", "application/json".to_owned()));
            fields.push(("Content-Length", b.len().to_string()));
            fields.push(("Content-Digest", digest::sha256(b)));
            POST_COMPONENTS
        }
        None => GET_COMPONENTS,
    };
    let mut headers = http::HeaderMap::new();
    for (name, value) in &fields {
        let name = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .expect("fixed header name");
        headers.append(
            name,
            http::HeaderValue::from_str(value).expect("fixed header value"),
        );
    }
    let p = SignParams {
        label: LABEL,
        components,
        created: EXAMPLE_CREATED,
        expires: None,
        nonce,
        include_alg: true,
    };
    let msg = Message {
        method: &method,
        target_uri: &target_uri,
        headers: &headers,
    };
    let (input, sig) = sign(&msg, key, &p).expect("fixed example signs");
    let signature_input = input.to_str().expect("ASCII").to_owned();
    let signature = sig.to_str().expect("ASCII").to_owned();
    let base = signature_base(&msg, &signature_input, LABEL).expect("fixed example has a base");
    Example {
        title,
        method,
        target_uri,
        fields,
        body,
        base,
        signature_input,
        signature,
    }
}

pub(crate) fn examples() -> Vec<Example> {
    let (ed, mac) = (test_ed25519_key(), test_hmac_key());
    vec![
        example(
            "Create a branch (POST with body and account), ed25519",
            http::Method::POST,
            POST_PATH,
            true,
            Some(POST_BODY),
            &ed,
            POST_NONCE,
        ),
        example(
            "Create a branch (POST with body and account), hmac-sha256",
            http::Method::POST,
            POST_PATH,
            true,
            Some(POST_BODY),
            &mac,
            POST_NONCE,
        ),
        example(
            "Read branches (GET, no body, no account), ed25519",
            http::Method::GET,
            GET_PATH,
            false,
            None,
            &ed,
            GET_NONCE,
        ),
        example(
            "Read branches (GET, no body, no account), hmac-sha256",
            http::Method::GET,
            GET_PATH,
            false,
            None,
            &mac,
            GET_NONCE,
        ),
    ]
}

/// The generated Markdown of `docs/protocol.md`'s "Worked examples"
/// section: test keys, requests, digests, signature bases and headers.
pub fn worked_examples() -> String {
    let (ed, mac) = (test_ed25519_key(), test_hmac_key());
    let SigningKey::Ed25519 { key: ed_key, .. } = &ed else {
        unreachable!("test_ed25519_key is ed25519")
    };
    let private_pem = ed_key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 encoding of a valid key");
    let public_pem = ed_key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI encoding");

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "## Worked examples");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Generated by `patgate::signature::vectors::worked_examples()`; a test fails if this section \
         and the code disagree. Every value below can be recomputed from the keys and requests shown."
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "### Test keys");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "**These are published TEST keys. They are in this document for everyone to read: never \
         configure them in a real patgate or Jira app.**"
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "Ed25519, keyid `{}`:", ed.keyid());
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "- private key seed (32 bytes, base64): `{TEST_ED25519_SEED_B64}`"
    );
    let _ = writeln!(
        w,
        "- public key (32 bytes, base64; the value patgate's configuration takes): `{}`",
        ed.public_key_base64().unwrap_or_default()
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "```text");
    let _ = write!(w, "{}", private_pem.as_str());
    let _ = write!(w, "{public_pem}");
    let _ = writeln!(w, "```");
    let _ = writeln!(w);
    let _ = writeln!(w, "HMAC-SHA256, keyid `{}`:", mac.keyid());
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "- shared secret (32 bytes, base64): `{TEST_HMAC_SECRET_B64}`"
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "All examples use `created={EXAMPLE_CREATED}` (2026-01-01T00:00:00Z) and the label `{LABEL}`; \
         a verifier accepts them only with its clock inside the window of that instant."
    );

    for (i, ex) in examples().iter().enumerate() {
        let _ = writeln!(w);
        let _ = writeln!(w, "### Example {}: {}", i + 1, ex.title);
        let _ = writeln!(w);
        let _ = writeln!(w, "Target URI (`@target-uri`): `{}`", ex.target_uri);
        let _ = writeln!(w);
        if let Some(body) = ex.body {
            let _ = writeln!(w, "Body ({} bytes, no trailing newline):", body.len());
            let _ = writeln!(w);
            let _ = writeln!(w, "```json");
            let _ = writeln!(w, "{}", String::from_utf8_lossy(body));
            let _ = writeln!(w, "```");
            let _ = writeln!(w);
            let _ = writeln!(w, "Content-Digest: `{}`", digest::sha256(body));
            let _ = writeln!(w);
        }
        let _ = writeln!(
            w,
            "Signature base (lines end with LF; no newline after the last line):"
        );
        let _ = writeln!(w);
        let _ = writeln!(w, "```text");
        let _ = writeln!(w, "{}", ex.base);
        let _ = writeln!(w, "```");
        let _ = writeln!(w);
        let _ = writeln!(w, "Signed request:");
        let _ = writeln!(w);
        let _ = writeln!(w, "```http");
        let path = ex
            .target_uri
            .strip_prefix(&format!("https://{AUTHORITY}"))
            .unwrap_or(&ex.target_uri);
        let _ = writeln!(w, "{} {} HTTP/1.1", ex.method, path);
        for (name, value) in &ex.fields {
            let _ = writeln!(w, "{name}: {value}");
        }
        let _ = writeln!(w, "Signature-Input: {}", ex.signature_input);
        let _ = writeln!(w, "Signature: {}", ex.signature);
        if let Some(body) = ex.body {
            let _ = writeln!(w);
            let _ = writeln!(w, "{}", String::from_utf8_lossy(body));
        }
        let _ = writeln!(w, "```");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::super::{digest, AppKey, KeyRing, Requirements, Verifier, Window, SIGNATURE_INPUT};
    use super::*;

    #[test]
    fn deterministic() {
        assert_eq!(worked_examples(), worked_examples());
        assert!(worked_examples().contains("published TEST keys"));
    }

    #[test]
    fn every_example_verifies_at_its_created_time() {
        let ring = KeyRing::from_keys([
            AppKey::ed25519_from_base64(
                TEST_ED25519_KEYID,
                &test_ed25519_key().public_key_base64().unwrap_or_default(),
            )
            .unwrap(),
            AppKey::hmac_from_base64(TEST_HMAC_KEYID, TEST_HMAC_SECRET_B64).unwrap(),
        ])
        .unwrap();
        let verifier = Verifier::new(ring, Window::default(), EXAMPLE_CREATED);
        let examples = examples();
        assert_eq!(examples.len(), 4);
        for ex in &examples {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &ex.fields {
                headers.append(
                    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                );
            }
            headers.insert(
                SIGNATURE_INPUT,
                http::HeaderValue::from_str(&ex.signature_input).unwrap(),
            );
            headers.insert(
                super::super::SIGNATURE,
                http::HeaderValue::from_str(&ex.signature).unwrap(),
            );
            let msg = Message {
                method: &ex.method,
                target_uri: &ex.target_uri,
                headers: &headers,
            };
            let req = Requirements {
                has_body: ex.body.is_some(),
            };
            let v = verifier.verify(&msg, req, EXAMPLE_CREATED).unwrap();
            assert_eq!(v.created, EXAMPLE_CREATED);
            if let Some(body) = ex.body {
                digest::verify_headers(&headers, body).unwrap();
            }
            // The rendered document shows exactly these values.
            let md = worked_examples();
            assert!(
                md.contains(&ex.base) && md.contains(&ex.signature),
                "{}",
                ex.title
            );
        }
    }

    /// docs/protocol.md carries the worked examples between two markers. Run with
    /// `PATGATE_UPDATE_DOCS=1` to rewrite that section from the code.
    #[test]
    fn document_is_up_to_date() {
        const BEGIN: &str = "<!-- BEGIN GENERATED: patgate::signature::vectors::worked_examples(); do not edit by hand -->\n";
        const END: &str = "<!-- END GENERATED -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc
            .find(BEGIN)
            .expect("docs/protocol.md has no BEGIN GENERATED marker")
            + BEGIN.len();
        let end = doc
            .find(END)
            .expect("docs/protocol.md has no END GENERATED marker");
        let fresh = worked_examples();
        if std::env::var_os("PATGATE_UPDATE_DOCS").is_some() {
            let updated = format!("{}{}{}", &doc[..start], fresh, &doc[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert!(
            doc[start..end] == fresh,
            "docs/protocol.md is stale: run `PATGATE_UPDATE_DOCS=1 cargo test --lib document_is_up_to_date`"
        );
    }
}
