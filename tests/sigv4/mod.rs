//! botocore's SigV4 signer, driven by `tests/interop/sigv4_botocore.py`: the independent
//! check of patgate's AWS signatures. Needs `$PATGATE_INTEROP_PYTHON` (tests/run.sh makes a
//! virtualenv with botocore) or a `python3` with botocore; fails, never skips, without it.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

const SCRIPT: &str = "tests/interop/sigv4_botocore.py";

/// An AWS key pair as botocore takes it.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// What botocore's `SigV4Auth.add_auth` set on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub authorization: String,
    pub amz_date: String,
    pub security_token: Option<String>,
}

/// Signs with botocore. `headers` are the headers to sign besides host, x-amz-date and
/// x-amz-security-token (botocore adds those); `amz_date` fixes botocore's clock.
#[allow(clippy::too_many_arguments)]
pub fn botocore_sign(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    key: Key<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Signed {
    let input = json!({
        "method": method,
        "url": url,
        "headers": headers,
        "body_b64": STANDARD.encode(body),
        "access_key_id": key.access_key_id,
        "secret_access_key": key.secret_access_key,
        "session_token": key.session_token,
        "region": region,
        "service": service,
        "amz_date": amz_date,
    });
    let interpreter = std::env::var("PATGATE_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&interpreter)
        .arg(SCRIPT)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {interpreter} ({e}): the SigV4 checks need botocore; run tests/run.sh"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "{SCRIPT} failed ({}); tests/run.sh installs botocore into target/interop-venv:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{SCRIPT} printed no JSON ({e})"));
    Signed {
        authorization: v["authorization"].as_str().unwrap().to_string(),
        amz_date: v["x-amz-date"].as_str().unwrap().to_string(),
        security_token: v["x-amz-security-token"].as_str().map(str::to_string),
    }
}

/// The parts of `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
}

pub fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    for part in rest.split(", ") {
        if let Some(c) = part.strip_prefix("Credential=") {
            credential = Some(c);
        } else if let Some(s) = part.strip_prefix("SignedHeaders=") {
            signed = Some(s);
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    let [akid, _date, region, service, "aws4_request"] = scope.as_slice() else {
        return None;
    };
    Some(Authorization {
        access_key_id: akid.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed?.split(';').map(str::to_string).collect(),
    })
}
