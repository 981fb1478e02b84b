//! `Content-Digest` (RFC 9530) against a body. Input: the field value, `\n`, the body.
//!
//! Property: the verdict equals an oracle built on sfv and sha2 directly (every
//! `sha-256` / `sha-512` member is the body's digest as a byte sequence, and there is at
//! least one); and the digests patgate produces for a body always verify against it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patgate::signature::digest;
use patgate_fuzz::{dictionary, split_line, MAX_ERROR_MESSAGE};
use sha2::{Digest as _, Sha256, Sha512};

fn oracle(value: &str, body: &[u8]) -> bool {
    let Some(dict) = dictionary(value) else {
        return false;
    };
    let mut checked = 0;
    for (alg, entry) in &dict {
        let expected = match alg.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let got = match entry {
            sfv::ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            sfv::ListEntry::InnerList(_) => None,
        };
        if got != Some(expected.as_slice()) {
            return false;
        }
        checked += 1;
    }
    checked > 0
}

fuzz_target!(|data: &[u8]| {
    let Some((value, body)) = split_line(data) else {
        return;
    };
    let verdict = digest::verify(value, body);
    assert_eq!(
        verdict.is_ok(),
        oracle(value, body),
        "{value:?}: {verdict:?}"
    );
    if let Err(err) = verdict {
        assert!(err.to_string().len() <= MAX_ERROR_MESSAGE, "{err}");
    }
    digest::verify(&digest::sha256(body), body).expect("own sha-256 verifies");
    digest::verify(&digest::sha512(body), body).expect("own sha-512 verifies");
});
