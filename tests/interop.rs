//! Interop with an independent RFC 9421 implementation: the PyPI package
//! `http-message-signatures` 3.x, driven by `tests/interop/sign_with_python.py`.
//!
//! Needs `python3` and `pip install 'http-message-signatures>=3,<4'`. These
//! tests fail (never skip) when either is missing.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use patgate::signature::{
    digest, random_nonce, sign, signature_base, vectors, KeyRing, Message, Requirements,
    SignParams, SignatureError, SigningKey, Verifier, Window, SIGNATURE, SIGNATURE_INPUT,
};
use serde_json::{json, Value};

const SCRIPT: &str = "tests/interop/sign_with_python.py";
const SEED: [u8; 32] = [0x42; 32];
const SECRET: [u8; 32] = [0x17; 32];
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

/// Runs the Python helper; returns (exit code, parsed stdout).
fn python(input: &Value) -> (i32, Value) {
    // tests/run.sh installs the package into a private virtualenv and names its
    // interpreter here; without it, the system python3 must have the package.
    let interpreter = std::env::var("PATGATE_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&interpreter)
        .arg(SCRIPT)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): the interop tests need python3 on PATH")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python3 output");
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        code == 0 || code == 1,
        "{SCRIPT} failed (exit {code}); install the package with \
         `pip install 'http-message-signatures>=3,<4'`\n{stderr}"
    );
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{SCRIPT} printed no JSON ({e}):\n{stderr}"));
    (code, value)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn ed() -> SigningKey {
    SigningKey::ed25519_from_seed("interop-ed", &SEED).unwrap()
}

fn mac() -> SigningKey {
    SigningKey::hmac("interop-mac", &SECRET).unwrap()
}

fn python_keys() -> Value {
    json!({
        "ed25519": {"keyid": "interop-ed", "seed_b64": STANDARD.encode(SEED),
                    "public_b64": ed().public_key_base64().unwrap()},
        "hmac": {"keyid": "interop-mac", "secret_b64": STANDARD.encode(SECRET)},
    })
}

fn verifier(start: u64) -> Verifier {
    let ring = KeyRing::from_keys([ed().app_key(), mac().app_key()]).unwrap();
    Verifier::new(ring, Window::default(), start)
}

fn header_list(h: &HeaderMap) -> Value {
    Value::Array(
        h.iter()
            .map(|(k, v)| json!([k.as_str(), v.to_str().unwrap()]))
            .collect(),
    )
}

fn post_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("patgate.example.com:8443"));
    h.insert("patgate-account", HeaderValue::from_static(ACCOUNT));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn with(h: &HeaderMap, extra: &Value) -> HeaderMap {
    let mut h = h.clone();
    for (k, v) in extra.as_object().unwrap() {
        h.insert(
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
            HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
        );
    }
    h
}

#[test]
fn python_signs_patgate_verifies() {
    let created = now();
    let nonce = random_nonce();
    let base_headers = post_headers();
    let input = json!({
        "mode": "sign",
        "request": {"method": "POST", "url": URI, "headers": header_list(&base_headers),
                    "body_b64": STANDARD.encode(BODY)},
        "created": created, "nonce": nonce, "label": "py",
        "components": POST_COMPONENTS,
        "keys": python_keys(),
    });
    let (code, out) = python(&input);
    assert_eq!(code, 0, "{out}");
    let v = verifier(created - 10);
    for alg in ["ed25519", "hmac-sha256"] {
        let signed = &out[alg];
        let headers = with(&base_headers, &signed["headers"]);
        // Python computed Content-Digest on its own: it must match ours.
        assert_eq!(
            headers.get("content-digest").unwrap(),
            digest::sha256(BODY).as_str()
        );
        let method = Method::POST;
        let msg = Message {
            method: &method,
            target_uri: URI,
            headers: &headers,
        };
        // Same signature base, byte for byte.
        let input_value = headers.get(SIGNATURE_INPUT).unwrap().to_str().unwrap();
        assert_eq!(
            signature_base(&msg, input_value, "py").unwrap(),
            signed["signature_base"].as_str().unwrap()
        );
        let got = v
            .verify_with_body(&msg, Some(BODY), created + 1)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(got.label, "py");
        assert_eq!(got.nonce, nonce);
        assert_eq!(got.covered, POST_COMPONENTS);
        // And tampering is caught.
        let mut tampered = headers.clone();
        tampered.insert("patgate-account", HeaderValue::from_static("someone-else"));
        let msg = Message {
            method: &method,
            target_uri: URI,
            headers: &tampered,
        };
        assert!(matches!(
            v.verify(&msg, Requirements { has_body: true }, created + 1),
            Err(SignatureError::Invalid(_))
        ));
    }
}

#[test]
fn python_signs_get_with_query_patgate_verifies() {
    let created = now();
    let uri = "https://patgate.example.com:8443/git/ghe/api/v3/repos/acme/api/branches?per_page=100&q=a%20b";
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("patgate.example.com:8443"));
    let input = json!({
        "mode": "sign",
        "request": {"method": "GET", "url": uri, "headers": header_list(&h), "body_b64": null},
        "created": created, "nonce": random_nonce(), "label": "py",
        "components": ["@method", "@target-uri", "@authority", "@path", "@query", "\"@query-param\";name=\"q\""],
        "keys": python_keys(),
    });
    let (code, out) = python(&input);
    assert_eq!(code, 0, "{out}");
    let v = verifier(created);
    for alg in ["ed25519", "hmac-sha256"] {
        let headers = with(&h, &out[alg]["headers"]);
        let msg = Message {
            method: &Method::GET,
            target_uri: uri,
            headers: &headers,
        };
        let input_value = headers.get(SIGNATURE_INPUT).unwrap().to_str().unwrap();
        assert_eq!(
            signature_base(&msg, input_value, "py").unwrap(),
            out[alg]["signature_base"].as_str().unwrap()
        );
        v.verify(&msg, Requirements { has_body: false }, created)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
}

fn python_verify(
    alg: &str,
    method: &str,
    uri: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    max_age: u64,
) -> (i32, Value) {
    python(&json!({
        "mode": "verify",
        "alg": alg,
        "request": {"method": method, "url": uri, "headers": header_list(headers),
                    "body_b64": body.map(|b| STANDARD.encode(b))},
        "keys": python_keys(),
        "require_components": ["@method", "@target-uri"],
        "max_age": max_age,
    }))
}

#[test]
fn patgate_signs_python_verifies() {
    let created = now();
    for key in [ed(), mac()] {
        let mut h = post_headers();
        h.insert(
            "content-digest",
            HeaderValue::from_str(&digest::sha512(BODY)).unwrap(),
        );
        let nonce = random_nonce();
        let p = SignParams {
            label: "pg",
            components: POST_COMPONENTS,
            created,
            expires: Some(created + 30),
            nonce: &nonce,
            include_alg: true,
        };
        let (si, sig) = sign(
            &Message {
                method: &Method::POST,
                target_uri: URI,
                headers: &h,
            },
            &key,
            &p,
        )
        .unwrap();
        h.insert(SIGNATURE_INPUT, si);
        h.insert(SIGNATURE, sig);
        let (code, out) = python_verify(key.alg(), "POST", URI, &h, Some(BODY), 60);
        assert_eq!(code, 0, "{}: {out}", key.alg());
        assert_eq!(out["label"], "pg");
        assert_eq!(out["params"]["nonce"], nonce.as_str());
        // Python must refuse a tampered copy, or the check above proves nothing.
        h.insert("patgate-account", HeaderValue::from_static("someone-else"));
        let (code, out) = python_verify(key.alg(), "POST", URI, &h, Some(BODY), 60);
        assert_eq!((code, &out["ok"]), (1, &Value::Bool(false)), "{out}");
    }
}

/// The worked examples of `docs/protocol-signing.md`, as rendered, verified
/// by Python: the published vectors are right for an independent verifier.
#[test]
fn python_verifies_the_documented_examples() {
    let md = vectors::worked_examples();
    let ed_public = SigningKey::ed25519_from_seed(
        vectors::TEST_ED25519_KEYID,
        &STANDARD
            .decode(vectors::TEST_ED25519_SEED_B64)
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap()
    .public_key_base64()
    .unwrap();
    let keys = json!({
        "ed25519": {"keyid": vectors::TEST_ED25519_KEYID, "public_b64": ed_public},
        "hmac": {"keyid": vectors::TEST_HMAC_KEYID, "secret_b64": vectors::TEST_HMAC_SECRET_B64},
    });
    let mut checked = 0;
    for block in md.split("```http\n").skip(1) {
        let block = block.split("\n```").next().unwrap();
        let (head, body) = match block.split_once("\n\n") {
            Some((h, b)) => (h, Some(b.as_bytes())),
            None => (block, None),
        };
        let mut lines = head.lines();
        let request_line: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let mut headers = Vec::new();
        let mut host = "";
        for line in lines {
            let (k, v) = line.split_once(": ").unwrap();
            if k == "Host" {
                host = v;
            }
            headers.push(json!([k, v]));
        }
        let uri = format!("https://{host}{}", request_line[1]);
        let alg = if block.contains("alg=\"ed25519\"") {
            "ed25519"
        } else {
            "hmac-sha256"
        };
        // The examples are dated 2026-01-01: disable Python's age limit,
        // which reads the real clock.
        let (code, out) = python(&json!({
            "mode": "verify",
            "alg": alg,
            "request": {"method": request_line[0], "url": uri, "headers": headers,
                        "body_b64": body.map(|b| STANDARD.encode(b))},
            "keys": keys,
            "require_components": ["@method", "@target-uri"],
            "max_age": 100_u64 * 365 * 86400,
        }));
        assert_eq!(code, 0, "{alg} {uri}: {out}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}
