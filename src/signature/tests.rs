//! Cross-cutting tests: RFC 9421 Appendix B vectors, sign/verify round
//! trips and one negative test per error of the profile.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method};

use super::keys::decode_base64_lenient;
use super::*;

// ---------------------------------------------------------------- RFC 9421

const RFC_CREATED: u64 = 1_618_884_473;
const RFC_URI: &str = "https://example.com/foo?param=Value&Pet=dog";
const RFC_BODY: &[u8] = br#"{"hello": "world"}"#;
const RFC_DIGEST: &str =
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
const B26_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
const B26_D: &str = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU";
const B26_INPUT: &str = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
const B26_SIG: &str = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
const B26_BASE: &str = r#""date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
const B25_SECRET: &str =
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
const B25_INPUT: &str =
    r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
const B25_SIG: &str = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";
const B25_BASE: &str = r#""date": Tue, 20 Apr 2021 02:07:55 GMT
"@authority": example.com
"content-type": application/json
"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;

fn rfc_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.com"));
    h.insert(
        "date",
        HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("content-digest", HeaderValue::from_static(RFC_DIGEST));
    h.insert("content-length", HeaderValue::from_static("18"));
    h
}

fn with_sig(mut h: HeaderMap, input: &str, sig: &str) -> HeaderMap {
    h.insert(SIGNATURE_INPUT, HeaderValue::from_str(input).unwrap());
    h.insert(SIGNATURE, HeaderValue::from_str(sig).unwrap());
    h
}

fn rfc_keys() -> KeyRing {
    KeyRing::from_keys([
        AppKey::ed25519_from_base64("test-key-ed25519", B26_X).unwrap(),
        AppKey::hmac_from_base64("test-shared-secret", B25_SECRET).unwrap(),
    ])
    .unwrap()
}

#[test]
fn rfc_b26_ed25519_base_and_signature() {
    let h = with_sig(rfc_headers(), B26_INPUT, B26_SIG);
    let msg = Message {
        method: &Method::POST,
        target_uri: RFC_URI,
        headers: &h,
    };
    assert_eq!(
        signature_base(&msg, B26_INPUT, "sig-b26").unwrap(),
        B26_BASE
    );
    let v = verify_signature_only(&rfc_keys(), &msg).unwrap();
    assert_eq!(v.keyid, "test-key-ed25519");
    assert_eq!(v.label, "sig-b26");
    assert_eq!(v.created, RFC_CREATED);
    assert_eq!(v.nonce, "");
    assert_eq!(
        v.covered,
        [
            "date",
            "@method",
            "@path",
            "@authority",
            "content-type",
            "content-length"
        ]
    );
}

#[test]
fn rfc_b26_private_key_matches_and_our_signer_reproduces_the_signature() {
    let seed: [u8; 32] = decode_base64_lenient(B26_D).unwrap().try_into().unwrap();
    let key = SigningKey::ed25519_from_seed("test-key-ed25519", &seed).unwrap();
    assert_eq!(
        key.public_key_base64().unwrap(),
        STANDARD.encode(decode_base64_lenient(B26_X).unwrap())
    );
    let h = rfc_headers();
    let msg = Message {
        method: &Method::POST,
        target_uri: RFC_URI,
        headers: &h,
    };
    let p = SignParams {
        label: "sig-b26",
        components: &[
            "date",
            "@method",
            "@path",
            "@authority",
            "content-type",
            "content-length",
        ],
        created: RFC_CREATED,
        expires: None,
        nonce: "",
        include_alg: false,
    };
    // Ed25519 is deterministic: we must produce the RFC's bytes exactly.
    let (input, sig) = sign(&msg, &key, &p).unwrap();
    assert_eq!(input, B26_INPUT);
    assert_eq!(sig, B26_SIG);
}

#[test]
fn rfc_b25_hmac_base_and_signature() {
    let h = with_sig(rfc_headers(), B25_INPUT, B25_SIG);
    let msg = Message {
        method: &Method::POST,
        target_uri: RFC_URI,
        headers: &h,
    };
    assert_eq!(
        signature_base(&msg, B25_INPUT, "sig-b25").unwrap(),
        B25_BASE
    );
    let v = verify_signature_only(&rfc_keys(), &msg).unwrap();
    assert_eq!(v.keyid, "test-shared-secret");
    assert_eq!(v.label, "sig-b25");

    let secret = decode_base64_lenient(B25_SECRET).unwrap();
    let key = SigningKey::hmac("test-shared-secret", &secret).unwrap();
    let p = SignParams {
        label: "sig-b25",
        components: &["date", "@authority", "content-type"],
        created: RFC_CREATED,
        expires: None,
        nonce: "",
        include_alg: false,
    };
    let (input, sig) = sign(&msg, &key, &p).unwrap();
    assert_eq!(input, B25_INPUT);
    assert_eq!(sig, B25_SIG);
}

#[test]
fn rfc_vectors_fail_when_tampered() {
    for (input, sig) in [(B26_INPUT, B26_SIG), (B25_INPUT, B25_SIG)] {
        let mut h = with_sig(rfc_headers(), input, sig);
        h.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let msg = Message {
            method: &Method::POST,
            target_uri: RFC_URI,
            headers: &h,
        };
        assert_eq!(
            verify_signature_only(&rfc_keys(), &msg),
            Err(SignatureError::Invalid("signature does not verify".into()))
        );
    }
}

#[test]
fn rfc_vectors_window_and_digest() {
    let w = Window::default();
    w.check(RFC_CREATED, None, RFC_CREATED, 0).unwrap();
    w.check(RFC_CREATED, None, RFC_CREATED + 60, RFC_CREATED)
        .unwrap();
    assert!(matches!(
        w.check(RFC_CREATED, None, RFC_CREATED + 61, 0),
        Err(SignatureError::Expired(_))
    ));
    digest::verify(RFC_DIGEST, RFC_BODY).unwrap();
}

#[test]
fn rfc_vectors_fail_the_patgate_profile() {
    let verifier = Verifier::new(rfc_keys(), Window::default(), RFC_CREATED);
    let req = Requirements { has_body: true };
    let h = with_sig(rfc_headers(), B26_INPUT, B26_SIG);
    let msg = Message {
        method: &Method::POST,
        target_uri: RFC_URI,
        headers: &h,
    };
    assert_eq!(
        verifier.verify(&msg, req, RFC_CREATED),
        Err(SignatureError::Invalid(
            r#"required component "@target-uri" is not covered"#.into()
        ))
    );
    let h = with_sig(rfc_headers(), B25_INPUT, B25_SIG);
    let msg = Message {
        method: &Method::POST,
        target_uri: RFC_URI,
        headers: &h,
    };
    assert_eq!(
        verifier.verify(&msg, req, RFC_CREATED),
        Err(SignatureError::Invalid(
            r#"required component "@method" is not covered"#.into()
        ))
    );
}

#[test]
fn rfc_derived_components_base() {
    // RFC 9421 §2.2 examples, on one request.
    let h = HeaderMap::new();
    let msg = Message {
        method: &Method::POST,
        target_uri: "https://www.example.com/path?param=value&Pet=dog",
        headers: &h,
    };
    let input = r#"s=("@method" "@target-uri" "@authority" "@scheme" "@request-target" "@path" "@query" "@query-param";name="Pet");created=1"#;
    assert_eq!(
        signature_base(&msg, input, "s").unwrap(),
        r#""@method": POST
"@target-uri": https://www.example.com/path?param=value&Pet=dog
"@authority": www.example.com
"@scheme": https
"@request-target": /path?param=value&Pet=dog
"@path": /path
"@query": ?param=value&Pet=dog
"@query-param";name="Pet": dog
"@signature-params": ("@method" "@target-uri" "@authority" "@scheme" "@request-target" "@path" "@query" "@query-param";name="Pet");created=1"#
    );
    let msg = Message {
        method: &Method::GET,
        target_uri: "https://www.example.com",
        headers: &h,
    };
    assert_eq!(
        signature_base(&msg, r#"s=("@path" "@query" "@request-target")"#, "s").unwrap(),
        "\"@path\": /\n\"@query\": ?\n\"@request-target\": /\n\"@signature-params\": (\"@path\" \"@query\" \"@request-target\")"
    );
}

#[test]
fn a_component_covered_twice_is_refused_in_short_and_long_lists() {
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("1"));
    let msg = Message {
        method: &Method::GET,
        target_uri: "https://a.example/x?n=1",
        headers: &h,
    };
    let twice = |input: &str| match signature_base(&msg, input, "s") {
        Err(SignatureError::Invalid(why)) => assert!(why.contains("more than once"), "{why}"),
        other => panic!("{input}: {other:?}"),
    };
    twice(r#"s=("@method" "x-a" "@method")"#);
    twice(r#"s=("@query-param";name="n" "@query-param";name="n")"#);
    // Past 16 components the check uses a set: the same answer.
    let many: Vec<String> = (0..40).map(|i| format!("\"x-h{i}\"")).collect();
    twice(&format!("s=({} \"x-h7\")", many.join(" ")));
    // Distinct parameters are distinct components.
    let h2 = {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h
    };
    let msg2 = Message {
        method: &Method::GET,
        target_uri: "https://a.example/x?n=1&m=2",
        headers: &h2,
    };
    assert_eq!(
        signature_base(
            &msg2,
            r#"s=("@query-param";name="n" "@query-param";name="m" "x-a")"#,
            "s"
        )
        .unwrap(),
        "\"@query-param\";name=\"n\": 1\n\"@query-param\";name=\"m\": 2\n\"x-a\": 1\n\"@signature-params\": (\"@query-param\";name=\"n\" \"@query-param\";name=\"m\" \"x-a\")"
    );
}

#[test]
fn header_values_are_trimmed_and_joined() {
    let mut h = HeaderMap::new();
    h.append("x-multi", HeaderValue::from_static("  a, b "));
    h.append("x-multi", HeaderValue::from_static("\tc"));
    h.insert("x-empty", HeaderValue::from_static(""));
    let msg = Message {
        method: &Method::GET,
        target_uri: "https://a.example/",
        headers: &h,
    };
    assert_eq!(
        signature_base(&msg, r#"s=("x-multi" "x-empty");tag="t""#, "s").unwrap(),
        "\"x-multi\": a, b, c\n\"x-empty\": \n\"@signature-params\": (\"x-multi\" \"x-empty\");tag=\"t\""
    );
    assert_eq!(
        signature_base(&msg, r#"s=("x-absent")"#, "s"),
        Err(SignatureError::Invalid(
            r#"covered header "x-absent" is absent from the request"#.into()
        ))
    );
}

// ---------------------------------------------------------------- profile

const NOW: u64 = 1_767_225_600;
const URI: &str = "https://patgate.example.com:8443/git/ghe/api/v3/repos/acme/api/git/refs";
const ACCOUNT: &str = "5b10ac8d82e05b22cc7d4ef5";
const BODY: &[u8] =
    br#"{"ref":"refs/heads/PROJ-1-fix","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;
const POST_COMPONENTS: &[&str] = &[
    "@method",
    "@target-uri",
    "patgate-account",
    "content-digest",
    "content-type",
];
const GET_COMPONENTS: &[&str] = &["@method", "@target-uri"];
const BODY_REQ: Requirements = Requirements { has_body: true };
const NO_BODY: Requirements = Requirements { has_body: false };

fn ed(keyid: &str) -> SigningKey {
    SigningKey::ed25519_from_seed(keyid, &[7; 32]).unwrap()
}

fn ed2(keyid: &str) -> SigningKey {
    SigningKey::ed25519_from_seed(keyid, &[8; 32]).unwrap()
}

fn mac(keyid: &str) -> SigningKey {
    SigningKey::hmac(keyid, &[9; 32]).unwrap()
}

struct Req {
    method: Method,
    uri: String,
    headers: HeaderMap,
}

impl Req {
    fn post() -> Req {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("patgate.example.com:8443"));
        h.insert("patgate-account", HeaderValue::from_static(ACCOUNT));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "content-digest",
            HeaderValue::from_str(&digest::sha256(BODY)).unwrap(),
        );
        Req {
            method: Method::POST,
            uri: URI.into(),
            headers: h,
        }
    }

    fn get() -> Req {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("patgate.example.com:8443"));
        Req {
            method: Method::GET,
            uri: format!("{URI}?per_page=100"),
            headers: h,
        }
    }

    fn msg(&self) -> Message<'_> {
        Message {
            method: &self.method,
            target_uri: &self.uri,
            headers: &self.headers,
        }
    }

    /// Signs and appends the headers (so several signatures can pile up).
    fn sign_with(
        mut self,
        key: &SigningKey,
        label: &str,
        components: &[&str],
        created: u64,
        nonce: &str,
    ) -> Req {
        let p = SignParams {
            label,
            components,
            created,
            expires: None,
            nonce,
            include_alg: true,
        };
        self.sign_params(key, &p);
        self
    }

    fn sign_params(&mut self, key: &SigningKey, p: &SignParams<'_>) {
        let (input, sig) = sign(&self.msg(), key, p).unwrap();
        self.headers.append(SIGNATURE_INPUT, input);
        self.headers.append(SIGNATURE, sig);
    }

    fn signed(key: &SigningKey, nonce: &str) -> Req {
        Req::post().sign_with(key, "sig1", POST_COMPONENTS, NOW, nonce)
    }
}

fn verifier(keys: &[&SigningKey]) -> Verifier {
    let ring = KeyRing::from_keys(keys.iter().map(|k| k.app_key())).unwrap();
    Verifier::new(ring, Window::default(), NOW - 3600)
}

fn invalid(r: Result<Verified, SignatureError>) -> String {
    match r {
        Err(SignatureError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn expired(r: Result<Verified, SignatureError>) -> String {
    match r {
        Err(SignatureError::Expired(m)) => m,
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[test]
fn round_trip_both_algorithms() {
    for key in [ed("app-ed"), mac("app-mac")] {
        let v = verifier(&[&key]);
        let r = Req::signed(&key, "nonce-post");
        let got = v.verify(&r.msg(), BODY_REQ, NOW).unwrap();
        assert_eq!(got.keyid, key.keyid());
        assert_eq!(got.label, "sig1");
        assert_eq!(got.created, NOW);
        assert_eq!(got.nonce, "nonce-post");
        assert_eq!(got.covered, POST_COMPONENTS);

        let r = Req::get().sign_with(&key, "s", GET_COMPONENTS, NOW, "nonce-get");
        v.verify(&r.msg(), NO_BODY, NOW + 3).unwrap();

        let r = Req::signed(&key, "nonce-body");
        v.verify_with_body(&r.msg(), Some(BODY), NOW).unwrap();
        // And the RFC-only layer agrees.
        verify_signature_only(v.keys(), &r.msg()).unwrap();
    }
}

#[test]
fn signature_input_with_odd_whitespace_still_verifies() {
    let key = ed("k");
    let mut r = Req::signed(&key, "n1");
    let input = r
        .headers
        .get(SIGNATURE_INPUT)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let odd = input
        .replace('(', "(  ")
        .replace(' ', "  ")
        .replace(";", ";  ")
        .replace(')', "  )");
    let odd = odd.replacen("(  ", "( ", 1);
    // `sig1=(  "@method"` etc.; sf-lists allow SP inside the parentheses.
    assert_ne!(odd, input);
    r.headers
        .insert(SIGNATURE_INPUT, HeaderValue::from_str(&odd).unwrap());
    verifier(&[&key]).verify(&r.msg(), BODY_REQ, NOW).unwrap();
}

#[test]
fn missing() {
    let v = verifier(&[&ed("k")]);
    assert_eq!(
        v.verify(&Req::post().msg(), BODY_REQ, NOW),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        verify_signature_only(v.keys(), &Req::get().msg()),
        Err(SignatureError::Missing)
    );
}

#[test]
fn invalid_malformed_headers() {
    let key = ed("k");
    let v = verifier(&[&key]);
    let mut r = Req::signed(&key, "n");
    r.headers.insert(
        SIGNATURE_INPUT,
        HeaderValue::from_static("sig1=(\"@method\""),
    );
    assert!(invalid(v.verify(&r.msg(), BODY_REQ, NOW))
        .contains("Signature-Input header is not a valid RFC 8941 dictionary"));

    let mut r = Req::signed(&key, "n");
    r.headers.remove(SIGNATURE);
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        "Signature-Input is present without Signature"
    );

    let mut r = Req::signed(&key, "n");
    r.headers
        .insert(SIGNATURE, HeaderValue::from_static("sig1=:not*base64:"));
    assert!(invalid(v.verify(&r.msg(), BODY_REQ, NOW))
        .contains("Signature header is not a valid RFC 8941 dictionary"));

    let mut r = Req::signed(&key, "n");
    r.headers
        .insert(SIGNATURE, HeaderValue::from_static("sig1=\"text\""));
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        r#"Signature member "sig1" is not a byte sequence"#
    );

    let mut r = Req::signed(&key, "n");
    r.headers
        .insert(SIGNATURE, HeaderValue::from_static("sig1=:AAAA:"));
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        "an ed25519 signature is 64 bytes, got 3"
    );

    // created is required, and typed.
    let mut r = Req::signed(&key, "n");
    let input = r
        .headers
        .get(SIGNATURE_INPUT)
        .unwrap()
        .to_str()
        .unwrap()
        .replace("created=", "created=\"");
    let input = input.replace(";keyid", "\";keyid");
    r.headers
        .insert(SIGNATURE_INPUT, HeaderValue::from_str(&input).unwrap());
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        "the created parameter must be a non-negative integer"
    );
}

#[test]
fn invalid_label_mismatch() {
    let key = ed("k");
    let v = verifier(&[&key]);
    let mut r = Req::signed(&key, "n");
    let sig = r
        .headers
        .get(SIGNATURE)
        .unwrap()
        .to_str()
        .unwrap()
        .replacen("sig1=", "sig2=", 1);
    r.headers
        .insert(SIGNATURE, HeaderValue::from_str(&sig).unwrap());
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        r#"label "sig1" is in Signature-Input but not in Signature"#
    );
}

#[test]
fn invalid_missing_required_components() {
    let key = ed("k");
    let v = verifier(&[&key]);
    // Body without content-digest covered.
    let r = Req::post().sign_with(
        &key,
        "s",
        &["@method", "@target-uri", "patgate-account", "content-type"],
        NOW,
        "n",
    );
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        r#"required component "content-digest" is not covered (the request has a body)"#
    );
    let r = Req::post().sign_with(
        &key,
        "s",
        &[
            "@method",
            "@target-uri",
            "patgate-account",
            "content-digest",
        ],
        NOW,
        "n",
    );
    assert!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)).contains(r#""content-type""#));
    // Account header present but not covered.
    let r = Req::post().sign_with(
        &key,
        "s",
        &["@method", "@target-uri", "content-digest", "content-type"],
        NOW,
        "n",
    );
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        r#"required component "patgate-account" is not covered (the request carries Patgate-Account)"#
    );
    let mut r = Req::get().sign_with(&key, "s", GET_COMPONENTS, NOW, "n");
    r.headers
        .insert("patgate-account", HeaderValue::from_static(ACCOUNT));
    assert!(invalid(v.verify(&r.msg(), NO_BODY, NOW)).contains("patgate-account"));
    let r = Req::get().sign_with(&key, "s", &["@method", "@path"], NOW, "n");
    assert_eq!(
        invalid(v.verify(&r.msg(), NO_BODY, NOW)),
        r#"required component "@target-uri" is not covered"#
    );
    // More components than required is fine.
    let r = Req::get().sign_with(
        &key,
        "s",
        &["@method", "@target-uri", "host", "@authority"],
        NOW,
        "n2",
    );
    v.verify(&r.msg(), NO_BODY, NOW).unwrap();
    // Nonce is required.
    let r = Req::get().sign_with(&key, "s", GET_COMPONENTS, NOW, "");
    assert_eq!(
        invalid(v.verify(&r.msg(), NO_BODY, NOW)),
        "the nonce parameter is required"
    );
}

#[test]
fn invalid_alg_mismatch() {
    // The ring trusts "k" as ed25519; an hmac-signed request claiming "k".
    let v = verifier(&[&ed("k")]);
    let r = Req::signed(&mac("k"), "n");
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        r#"alg "hmac-sha256" does not match key "k" (ed25519)"#
    );
}

#[test]
fn invalid_tampering() {
    for key in [ed("k"), mac("k")] {
        let v = verifier(&[&key]);
        let bad = "signature does not verify";

        let mut r = Req::signed(&key, "n");
        r.method = Method::PUT;
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        let mut r = Req::signed(&key, "n");
        r.uri = URI.replace("acme/api", "acme/other");
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        let mut r = Req::signed(&key, "n");
        r.uri = URI.replace(":8443", ":9443");
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        let mut r = Req::signed(&key, "n");
        r.headers.insert(
            "patgate-account",
            HeaderValue::from_static("5b10ac8d82e05b22cc7d4ef6"),
        );
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        let mut r = Req::signed(&key, "n");
        r.headers
            .insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        let mut r = Req::signed(&key, "n");
        r.headers.insert(
            "content-digest",
            HeaderValue::from_str(&digest::sha256(b"x")).unwrap(),
        );
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        // Parameters are signed too.
        let mut r = Req::signed(&key, "n");
        let input = r
            .headers
            .get(SIGNATURE_INPUT)
            .unwrap()
            .to_str()
            .unwrap()
            .replace("\"n\"", "\"m\"");
        r.headers
            .insert(SIGNATURE_INPUT, HeaderValue::from_str(&input).unwrap());
        assert_eq!(invalid(v.verify(&r.msg(), BODY_REQ, NOW)), bad);

        // Removing the covered account header is caught before crypto.
        let mut r = Req::signed(&key, "n");
        r.headers.remove("patgate-account");
        assert_eq!(
            invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
            r#"covered header "patgate-account" is absent from the request"#
        );
    }
}

#[test]
fn expired_cases() {
    let key = ed("k");
    let v = verifier(&[&key]);
    // Boundaries are accepted.
    v.verify(&Req::signed(&key, "a").msg(), BODY_REQ, NOW + 60)
        .unwrap();
    v.verify(
        &Req::post()
            .sign_with(&key, "s", POST_COMPONENTS, NOW + 5, "b")
            .msg(),
        BODY_REQ,
        NOW,
    )
    .unwrap();
    // Too old.
    assert!(
        expired(v.verify(&Req::signed(&key, "c").msg(), BODY_REQ, NOW + 61)).contains("too old")
    );
    // Future beyond the skew.
    let r = Req::post().sign_with(&key, "s", POST_COMPONENTS, NOW + 6, "d");
    assert!(expired(v.verify(&r.msg(), BODY_REQ, NOW)).contains("created is in the future"));
    // expires passed.
    let v = verifier(&[&key]);
    let mut r = Req::post();
    let p = SignParams {
        label: "s",
        components: POST_COMPONENTS,
        created: NOW,
        expires: Some(NOW + 10),
        nonce: "e",
        include_alg: false,
    };
    r.sign_params(&key, &p);
    assert!(expired(v.verify(&r.msg(), BODY_REQ, NOW + 11)).contains("expires"));
    let ok = v.verify(&r.msg(), BODY_REQ, NOW + 10).unwrap();
    assert_eq!(
        ok.replay_until,
        NOW + 10,
        "remembered until expires, when that is sooner"
    );
    let ok = v
        .verify(&Req::signed(&key, "g").msg(), BODY_REQ, NOW)
        .unwrap();
    assert_eq!(
        ok.replay_until,
        NOW + 60,
        "else until created + max_validity"
    );
    // Created before the gateway started.
    let v2 = Verifier::new(
        KeyRing::from_keys([key.app_key()]).unwrap(),
        Window::default(),
        NOW + 1,
    );
    let r = Req::signed(&key, "f");
    assert!(expired(v2.verify(&r.msg(), BODY_REQ, NOW + 2)).contains("before the gateway started"));
}

#[test]
fn window_configuration() {
    assert!(Window::new(300, 300).is_ok());
    assert!(matches!(
        Window::new(301, 60),
        Err(ConfigError::InvalidWindow(_))
    ));
    assert!(matches!(
        Window::new(5, 301),
        Err(ConfigError::InvalidWindow(_))
    ));
    assert!(matches!(
        Window::new(5, 0),
        Err(ConfigError::InvalidWindow(_))
    ));
    let w = Window::new(0, 10).unwrap();
    assert!(w.check(NOW + 1, None, NOW, 0).is_err());
    assert!(w.check(NOW, None, NOW + 10, 0).is_ok());
    assert!(w.check(NOW, None, NOW + 11, 0).is_err());
}

#[test]
fn unknown_key() {
    let v = verifier(&[&ed("trusted")]);
    let r = Req::signed(&ed("stranger"), "n");
    assert_eq!(
        v.verify(&r.msg(), BODY_REQ, NOW),
        Err(SignatureError::UnknownKey(
            r#"keyid "stranger" is not trusted"#.into()
        ))
    );
    let empty = Verifier::new(KeyRing::new(), Window::default(), 0);
    assert!(matches!(
        empty.verify(&r.msg(), BODY_REQ, NOW),
        Err(SignatureError::UnknownKey(_))
    ));
}

#[test]
fn digest_errors_through_the_verifier() {
    let key = mac("k");
    let v = verifier(&[&key]);
    let r = Req::signed(&key, "a");
    assert_eq!(
        v.verify_with_body(&r.msg(), Some(b"{}"), NOW),
        Err(SignatureError::DigestMismatch)
    );
    let mut r = Req::post();
    r.headers
        .insert("content-digest", HeaderValue::from_static("sha-256=abc"));
    let r = r.sign_with(&key, "s", POST_COMPONENTS, NOW, "b");
    assert!(matches!(
        v.verify_with_body(&r.msg(), Some(BODY), NOW),
        Err(SignatureError::DigestInvalid(_))
    ));
}

#[test]
fn key_rotation_and_signature_choice() {
    let (old, new) = (ed("app-2025"), mac("app-2026"));
    let stranger = ed2("stranger");
    let v = verifier(&[&old, &new]);
    // Both keys are active.
    v.verify(&Req::signed(&old, "o").msg(), BODY_REQ, NOW)
        .unwrap();
    v.verify(&Req::signed(&new, "n").msg(), BODY_REQ, NOW)
        .unwrap();
    // Untrusted first signature is skipped, the trusted second one is used.
    let r = Req::post()
        .sign_with(&stranger, "proxy", POST_COMPONENTS, NOW, "x1")
        .sign_with(&new, "app", POST_COMPONENTS, NOW, "x1");
    let got = v.verify(&r.msg(), BODY_REQ, NOW).unwrap();
    assert_eq!(
        (got.label.as_str(), got.keyid.as_str()),
        ("app", "app-2026")
    );
    // Two trusted signatures: the first in Signature-Input order wins.
    let r = Req::post()
        .sign_with(&old, "first", POST_COMPONENTS, NOW, "x2")
        .sign_with(&new, "second", POST_COMPONENTS, NOW, "x2");
    let got = v.verify(&r.msg(), BODY_REQ, NOW).unwrap();
    assert_eq!(
        (got.label.as_str(), got.keyid.as_str()),
        ("first", "app-2025")
    );
    // The first trusted one is checked, not "any that verifies": a broken
    // first trusted signature fails even when a later one is good.
    let r = Req::post()
        .sign_with(&ed2("app-2025"), "first", POST_COMPONENTS, NOW, "x3")
        .sign_with(&new, "second", POST_COMPONENTS, NOW, "x3");
    assert_eq!(
        invalid(v.verify(&r.msg(), BODY_REQ, NOW)),
        "signature does not verify"
    );
}

#[test]
fn secrets_are_not_printable() {
    let secret = [0x5a_u8; 32];
    let k = SigningKey::hmac("my-keyid", &secret).unwrap();
    let app = k.app_key();
    let ring = KeyRing::from_keys([app.clone(), ed("ed-id").app_key()]).unwrap();
    let v = Verifier::new(ring.clone(), Window::default(), 0);
    let seed_hex = "07070707";
    for s in [
        format!("{k:?}"),
        format!("{app:?}"),
        format!("{:?}", app.material()),
        format!("{ring:?}"),
        format!("{v:?}"),
        format!("{:?}", ed("ed-id")),
    ] {
        assert!(
            !s.contains("90, 90") && !s.contains("5a5a") && !s.contains("ZZZZ"),
            "{s}"
        );
        assert!(!s.contains("7, 7, 7") && !s.contains(seed_hex), "{s}");
    }
    assert_eq!(format!("{k:?}"), r#"SigningKey { keyid: "my-keyid", .. }"#);
    assert_eq!(format!("{app:?}"), r#"AppKey { keyid: "my-keyid", .. }"#);
    assert!(format!("{ring:?}").contains("my-keyid"));
}

#[test]
fn key_configuration_errors() {
    assert!(matches!(
        AppKey::hmac("k", &[1; 31]),
        Err(ConfigError::InvalidKey { .. })
    ));
    assert!(matches!(
        SigningKey::hmac("k", &[1; 31]),
        Err(ConfigError::InvalidKey { .. })
    ));
    assert!(matches!(
        AppKey::hmac("", &[1; 32]),
        Err(ConfigError::InvalidKeyId(_))
    ));
    assert!(matches!(
        AppKey::hmac("a\"b", &[1; 32]),
        Err(ConfigError::InvalidKeyId(_))
    ));
    assert!(matches!(
        AppKey::ed25519_from_base64("k", "AAAA"),
        Err(ConfigError::InvalidKey { .. })
    ));
    assert!(matches!(
        AppKey::ed25519_from_base64("k", "***"),
        Err(ConfigError::InvalidKey { .. })
    ));
    // The identity point is a weak key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        AppKey::ed25519_from_base64("k", &STANDARD.encode(identity)),
        Err(ConfigError::InvalidKey { .. })
    ));
    let dup = KeyRing::from_keys([ed("k").app_key(), mac("k").app_key()]);
    assert!(matches!(dup, Err(ConfigError::DuplicateKeyId(_))));
    let mut ring = KeyRing::new();
    assert!(ring.insert(ed("k").app_key()).is_none());
    assert!(ring.insert(mac("k").app_key()).is_some());
    assert_eq!(ring.get("k").unwrap().material().alg(), "hmac-sha256");
    // A generated key with a keyid that cannot be an sf-string fails at signing.
    let bad = SigningKey::generate_ed25519("caf\u{e9}");
    assert!(sign(
        &Req::post().msg(),
        &bad,
        &SignParams {
            label: "s",
            components: POST_COMPONENTS,
            created: NOW,
            expires: None,
            nonce: "n",
            include_alg: false,
        }
    )
    .is_err());
    // The error for a bad secret never contains the secret.
    let e = AppKey::hmac_from_base64("k", "c2VjcmV0")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("c2VjcmV0") && !e.contains("secret\""), "{e}");
}

#[test]
fn pem_keys() {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let SigningKey::Ed25519 { key, .. } = ed("k") else {
        unreachable!()
    };
    let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let signer = SigningKey::ed25519_from_pkcs8_pem("pem", &private_pem).unwrap();
    let app = AppKey::ed25519_from_pem("pem", &public_pem).unwrap();
    let v = Verifier::new(KeyRing::from_keys([app]).unwrap(), Window::default(), 0);
    v.verify(&Req::signed(&signer, "n").msg(), BODY_REQ, NOW)
        .unwrap();
    assert!(AppKey::ed25519_from_pem(
        "pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
    )
    .is_err());
    // A generated key works as well.
    let g = SigningKey::generate_ed25519("gen");
    let v = Verifier::new(
        KeyRing::from_keys([g.app_key()]).unwrap(),
        Window::default(),
        0,
    );
    v.verify(&Req::signed(&g, "n").msg(), BODY_REQ, NOW)
        .unwrap();
}

#[test]
fn random_nonces_differ() {
    let (a, b) = (random_nonce(), random_nonce());
    assert_ne!(a, b);
    assert_eq!(a.len(), 24);
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
}

#[test]
fn sign_rejects_bad_input() {
    let r = Req::post();
    let key = ed("k");
    let p = |label, components| SignParams {
        label,
        components,
        created: NOW,
        expires: None,
        nonce: "n",
        include_alg: false,
    };
    assert!(sign(&r.msg(), &key, &p("Bad Label", POST_COMPONENTS)).is_err());
    assert!(sign(&r.msg(), &key, &p("s", &["x-absent"])).is_err());
    assert!(sign(&r.msg(), &key, &p("s", &["@method", "@method"])).is_err());
    assert!(sign(&r.msg(), &key, &p("s", &["\"@query-param\";name=\"a\""])).is_err());
    // With the parameter present it signs and verifies (RFC layer).
    let g = Req::get().sign_with(
        &key,
        "s",
        &["@method", "\"@query-param\";name=\"per_page\""],
        NOW,
        "n",
    );
    let got =
        verify_signature_only(&KeyRing::from_keys([key.app_key()]).unwrap(), &g.msg()).unwrap();
    assert_eq!(got.covered, ["@method", "@query-param;name=\"per_page\""]);
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Verifier>();
    check::<KeyRing>();
    check::<SigningKey>();
    check::<SignatureError>();
}

#[test]
fn unknown_parameters_are_signed_and_accepted() {
    use ed25519_dalek::Signer as _;
    let key = ed("k");
    let SigningKey::Ed25519 { key: sk, .. } = &key else {
        unreachable!()
    };
    let mut r = Req::get();
    let input = format!(
        r#"s=("@method" "@target-uri");created={NOW};keyid="k";nonce="u1";tag="jira";custom=?1;level=1.5"#
    );
    let base = signature_base(&r.msg(), &input, "s").unwrap();
    assert!(base.ends_with(r#";tag="jira";custom;level=1.5"#), "{base}");
    let sig = STANDARD.encode(sk.sign(base.as_bytes()).to_bytes());
    r.headers
        .insert(SIGNATURE_INPUT, HeaderValue::from_str(&input).unwrap());
    r.headers.insert(
        SIGNATURE,
        HeaderValue::from_str(&format!("s=:{sig}:")).unwrap(),
    );
    let v = verifier(&[&key]);
    v.verify(&r.msg(), NO_BODY, NOW).unwrap();
    // Changing an unknown parameter breaks the signature: it is covered.
    let mut r2 = Req::get();
    r2.headers.insert(
        SIGNATURE_INPUT,
        HeaderValue::from_str(&input.replace("jira", "ji")).unwrap(),
    );
    r2.headers.insert(
        SIGNATURE,
        HeaderValue::from_str(&format!("s=:{sig}:")).unwrap(),
    );
    assert_eq!(
        invalid(v.verify(&r2.msg(), NO_BODY, NOW)),
        "signature does not verify"
    );
}
