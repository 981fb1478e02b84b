//! `Signature-Input` + `Signature` (RFC 9421 §4.1-4.2) through the verifier, over the
//! request of `docs/protocol.md` Example 1, with the two published test keys trusted.
//! Input: the Signature-Input value, `\n`, the Signature value.
//!
//! Property: a signature the verifier accepts really is the named key's signature over
//! the base of that label: recomputed here from the test key material with
//! ed25519-dalek / HMAC directly, and the bytes read from `Signature` with sfv directly.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac as _;
use http::header::HeaderValue;
use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::signature::{signature_base, vectors, verify_signature_only, KeyRing, Message};
use patgate_fuzz::{
    byte_sequence, dictionary, example_headers, split_line, EXAMPLE_TARGET_URI, MAX_ERROR_MESSAGE,
};

fuzz_target!(|data: &[u8]| {
    let Some((input, rest)) = split_line(data) else {
        return;
    };
    let Ok(signature) = std::str::from_utf8(rest) else {
        return;
    };
    let (Ok(input_value), Ok(signature_value)) = (
        HeaderValue::from_str(input),
        HeaderValue::from_str(signature),
    ) else {
        return;
    };
    let mut headers = example_headers();
    headers.insert("signature-input", input_value);
    headers.insert("signature", signature_value);
    let msg = Message {
        method: &Method::POST,
        target_uri: EXAMPLE_TARGET_URI,
        headers: &headers,
    };
    let keys = KeyRing::from_keys([
        vectors::test_ed25519_key().app_key(),
        vectors::test_hmac_key().app_key(),
    ])
    .expect("two distinct test keys");
    let verified = match verify_signature_only(&keys, &msg) {
        Ok(verified) => verified,
        Err(err) => {
            assert!(err.to_string().len() <= MAX_ERROR_MESSAGE, "{err}");
            return;
        }
    };
    let base = signature_base(&msg, input, &verified.label).expect("a verified label has a base");
    let signatures = dictionary(signature).expect("a verified Signature field parses");
    let bytes = byte_sequence(&signatures, &verified.label).expect("the label is signed");
    match verified.keyid.as_str() {
        vectors::TEST_ED25519_KEYID => {
            let seed: [u8; 32] = STANDARD
                .decode(vectors::TEST_ED25519_SEED_B64)
                .expect("base64")
                .try_into()
                .expect("32 bytes");
            let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            let sig = ed25519_dalek::Signature::from_slice(bytes).expect("64 bytes");
            public
                .verify_strict(base.as_bytes(), &sig)
                .expect("accepted, so the test key signed this base");
        }
        vectors::TEST_HMAC_KEYID => {
            let secret = STANDARD
                .decode(vectors::TEST_HMAC_SECRET_B64)
                .expect("base64");
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("any length");
            mac.update(base.as_bytes());
            assert_eq!(mac.finalize().into_bytes().as_slice(), bytes);
        }
        other => panic!("verified by a key that is not trusted: {other}"),
    }
});
