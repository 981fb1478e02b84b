//! `patgate request`: one signed request over mutual TLS, printed like `curl -i`.

use std::io::Read as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use http::Method;

use super::CliResult;
use crate::client::{Outgoing, SignedClient};
use crate::signature::SigningKey;

#[derive(Debug, Args)]
pub(super) struct RequestArgs {
    /// The URL, e.g. https://patgate.example.com:8443/git/ghe/api/v3/user
    url: String,
    /// The method; POST when there is a body, else GET.
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// An extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// The body: text, `@file`, or `@-` for standard input. Content-Type defaults to
    /// application/json.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// The acting Jira user's accountId (sent as Patgate-Account and signed).
    #[arg(long)]
    account: Option<String>,
    /// The app's Ed25519 private key (PKCS#8 PEM, from `patgate keys gen`).
    #[arg(
        long,
        conflicts_with = "hmac_key",
        required_unless_present = "hmac_key"
    )]
    key: Option<PathBuf>,
    /// An HMAC-SHA256 secret file (base64 on one line) instead of an Ed25519 key.
    #[arg(long)]
    hmac_key: Option<PathBuf>,
    /// The key id; by default the key file's name up to its first dot.
    #[arg(long)]
    keyid: Option<String>,
    /// The client certificate (PEM; may also hold its private key).
    #[arg(long)]
    cert: PathBuf,
    /// The client certificate's private key, when not in --cert.
    #[arg(long)]
    cert_key: Option<PathBuf>,
    /// The CA that signed patgate's server certificate.
    #[arg(long)]
    cacert: PathBuf,
    /// Use HTTP/2 (default: HTTP/1.1 or whatever ALPN picks).
    #[arg(long)]
    http2: bool,
    /// Exit 0 whatever the status. By default an answer of 400 or above is printed whole and
    /// the command exits 22, as curl's --fail-with-body does.
    #[arg(long)]
    no_fail: bool,
}

/// The exit status for an answer of 400 or above (curl's for --fail).
const HTTP_ERROR_EXIT: u8 = 22;

pub(super) async fn run(args: RequestArgs) -> CliResult {
    let key_file = args
        .key
        .as_ref()
        .or(args.hmac_key.as_ref())
        .ok_or("--key or --hmac-key is required")?;
    let keyid = match args.keyid {
        Some(keyid) => keyid,
        None => key_file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .filter(|n| !n.is_empty())
            .ok_or("cannot derive a key id from the key file name; pass --keyid")?
            .to_string(),
    };
    let signing_key = if let Some(path) = &args.key {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        SigningKey::ed25519_from_pkcs8_pem(&keyid, &pem)
            .map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        let path = args.hmac_key.as_ref().ok_or("--hmac-key")?;
        let secret = crate::runtime::read_private_base64_file(path)?;
        SigningKey::hmac(&keyid, &secret).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let body = match args.data.as_deref() {
        None => None,
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Some(Bytes::from(buf))
        }
        Some(d) if d.starts_with('@') => Some(Bytes::from(
            std::fs::read(&d[1..]).map_err(|e| format!("cannot read {}: {e}", &d[1..]))?,
        )),
        Some(d) => Some(Bytes::from(d.to_string())),
    };
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`{m}` is not a method"))?,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("`{h}` is not `Name: value`"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let client = SignedClient::new(
        &args.cacert,
        &args.cert,
        args.cert_key.as_deref(),
        signing_key,
        args.http2,
    )
    .map_err(|e| e.to_string())?;
    let response = client
        .send(&Outgoing {
            method,
            url: args.url.clone(),
            headers,
            body,
            account: args.account,
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let status = response.status();
    let version = match response.version() {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let _ = writeln!(
        out,
        "{version} {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in response.headers() {
        let _ = writeln!(
            out,
            "{}: {}",
            name,
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    let _ = writeln!(out);
    let _ = out.write_all(response.body());
    if !response.body().ends_with(b"\n") && !response.body().is_empty() {
        let _ = writeln!(out);
    }
    if status.as_u16() >= 400 && !args.no_fail {
        return Ok(ExitCode::from(HTTP_ERROR_EXIT));
    }
    Ok(ExitCode::SUCCESS)
}
