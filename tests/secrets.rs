//! No secret in any log line, at trace level, for every code path a request can take, in
//! both log formats and the audit file; nor in error bodies, the connect page, the CLI's
//! output through the admin socket, the `/metrics` scrape, the `Debug` of the running state
//! and of every credential (what a panic message would print), or, in clear, base64 or hex,
//! in any file of the vault on disk.
//!
//! The secrets: user PATs (stored through `/v1`, the connect page and the admin socket, and
//! refused ones), the integration token and its replacement, an AWS secret access key and
//! session token (a CodeCommit integration and a user's key pair: SigV4 signing, and an STS
//! check that fails), the master key before and after `vault rotate-key`, the app's HMAC and
//! Ed25519 keys, and a connect link.
//!
//! patgate installs no panic hook and catches no panic of its own on a request path: a panic
//! message could only carry a secret through a `Debug` or `Display`, which is what is checked.
//!
//! This file is its own test binary because it installs the process-wide log subscriber.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;
use patgate::vault::Credential;

const AWS_INTEGRATION_KEY_ID: &str = "AKIAINTEGRATION00001";
const AWS_INTEGRATION_SECRET: &str = "IntegrationSecretDoNotLeak/0123456789abc";
const AWS_USER_KEY_ID: &str = "ASIAALICE00000000001";
const AWS_USER_SECRET: &str = "AliceSecretDoNotLeak/0123456789abcdefghi";
const AWS_USER_SESSION: &str = "AliceSessionTokenDoNotLeak//////////wEaCXVzLWVhc3Qx";
const AWS_REFUSED_SECRET: &str = "RefusedSecretDoNotLeak/0123456789abcdefgh";
const PAT_CONNECT: &str = "ghp_ConnectPagePatDoNotLeak0123456789abcd";
const PAT_CONNECT_REFUSED: &str = "ghp_ConnectRefusedDoNotLeak0123456789abc";
const PAT_SOCKET: &str = "ghp_AdminSocketPatDoNotLeak0123456789abcd";
const NEW_INTEGRATION_TOKEN: &str = "ghs_ReplacedIntegrationTokenDoNotLeak012";

fn aws(key_id: &str, secret: &str, session: Option<&str>) -> Credential {
    Credential::Aws {
        access_key_id: key_id.into(),
        secret_access_key: secret.to_string().into(),
        session_token: session.map(|t| t.to_string().into()),
        region: "us-east-1".into(),
    }
}

/// `patgate ARGS --config CONFIG` with `stdin`, on a blocking thread so the gateway in this
/// process keeps serving its admin socket.
async fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--config".into(), config.to_str().unwrap().into()]);
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_patgate"))
            .args(&all)
            .env("RUST_LOG", "trace")
            .env_remove("PATGATE_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// The spellings of `secret` to look for in a file: as is, hex (both cases), and standard
/// and URL-safe base64 at each of the three alignments it can start at inside a longer text
/// (the characters that depend only on the secret's own bytes).
fn spellings(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use base64::Engine as _;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        secret.to_vec(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
    ];
    for shift in 0..3 {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(secret);
        for engine in [&STANDARD, &URL_SAFE] {
            let text = engine.encode(&padded);
            // Characters touched by the zero prefix or by the end are left out.
            let start = (shift * 8).div_ceil(6);
            let end = text.len().saturating_sub(4);
            if end > start + 16 {
                out.push(text.as_bytes()[start..end].to_vec());
            }
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_and_answers_hold_no_secret() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // patgate's own logger, twice under one subscriber: text, and JSON with the audit file.
    let captured = common::logs::Captured::default();
    let captured_json = common::logs::Captured::default();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.jsonl");
    let settings = |format| patgate::config::LogSettings {
        level: "trace".into(),
        format,
        audit_file: None,
    };
    let text = patgate::telemetry::layer(
        &settings(patgate::config::LogFormat::Text),
        captured.writer(),
        false,
    )
    .unwrap();
    let json = patgate::telemetry::layer(
        &patgate::config::LogSettings {
            audit_file: Some(audit_file.clone()),
            ..settings(patgate::config::LogFormat::Json)
        },
        captured_json.writer(),
        false,
    )
    .unwrap();
    tracing_subscriber::registry().with(vec![text, json]).init();

    let ca = Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    // A CodeCommit integration whose CodeCommit and STS endpoints are the recording host: it
    // gets patgate's SigV4 requests (and, knowing no AWS key, answers 401).
    let opts = Options {
        log_level: "trace".into(),
        connect_ttl_seconds: Some(900),
        extra_toml: format!(
            "[[integrations]]\nid = \"cc\"\nkind = \"codecommit\"\nbase_url = \"{base}\"\nregion = \"us-east-1\"\nsts_endpoint = \"{base}\"\nroots = \"none\"\nextra_ca = \"ca.pem\"\nrequire_user_pat = true\n",
            base = host.base_url()
        ),
        ..Options::default()
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(dir, ca, &host, &opts).await;
    let master_key_before = std::fs::read_to_string(setup.dir.path().join("master-key")).unwrap();
    let gw = setup.start().await;
    gw.runtime
        .vault()
        .put_integration_secret(
            "cc",
            &aws(AWS_INTEGRATION_KEY_ID, AWS_INTEGRATION_SECRET, None),
        )
        .await
        .unwrap();
    let meta = patgate::vault::PatMeta {
        host_login: "alice".into(),
        scopes: Vec::new(),
        ..pat_meta()
    };
    gw.runtime
        .vault()
        .put_user_pat(
            "cc",
            ACCOUNT_A,
            &aws(AWS_USER_KEY_ID, AWS_USER_SECRET, Some(AWS_USER_SESSION)),
            &meta,
        )
        .await
        .unwrap();
    host.add_user(PAT_CONNECT, "carol", "repo");
    host.add_user(PAT_SOCKET, "bob", "repo");
    host.add_user(NEW_INTEGRATION_TOKEN, "new-bot", "repo");
    let client = gw.client();
    let mut bodies = Vec::new();
    let send = |out: Outgoing| {
        let client = client.clone();
        async move { client.send(&out).await.unwrap() }
    };
    // A PAT stored through the API, a refused one, reads, actions with both credentials,
    // refusals of every kind.
    let put = |token: &str| Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
        ..Outgoing::default()
    };
    let delete = Outgoing {
        method: Method::DELETE,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_B}/pat")),
        ..Outgoing::default()
    };
    for out in [
        put(PAT_A),
        put("ghp_RejectedTokenDoNotLeak00000000000000"),
        Outgoing {
            method: Method::POST,
            url: gw.url(&format!(
                "/v1/integrations/ghe/users/{ACCOUNT_A}/connect-link"
            )),
            ..Outgoing::default()
        },
        gw.get("/git/ghe/api/v3/repos/acme/api"),
        gw.create_branch(Some(ACCOUNT_A)),
        gw.create_branch(Some(ACCOUNT_B)),
        gw.create_branch(None),
        gw.get("/git/nope/x"),
        // CodeCommit: a read signed with the integration's AWS key, an action signed with
        // the user's key pair and session token, and a key pair the STS check refuses.
        codecommit(&gw, "GetBranch", None),
        codecommit(&gw, "CreateBranch", Some(ACCOUNT_A)),
        Outgoing {
            method: Method::PUT,
            url: gw.url(&format!("/v1/integrations/cc/users/{ACCOUNT_B}/pat")),
            body: Some(Bytes::from(format!(
                r#"{{"access_key_id":"AKIAREFUSED000000001","secret_access_key":"{AWS_REFUSED_SECRET}"}}"#
            ))),
            ..Outgoing::default()
        },
    ] {
        let response = send(out).await;
        bodies.push(String::from_utf8_lossy(response.body()).into_owned());
    }
    // A connect link works like a password until it is used: it is an answer, never a log.
    let link: serde_json::Value = serde_json::from_str(&bodies[2]).unwrap();
    let link = link["url"].as_str().unwrap().to_string();
    let link_token = link.rsplit('/').next().unwrap().to_string();
    assert!(link_token.len() > 20, "{link}");
    // The AWS paths did reach the host, signed by patgate with each key.
    let sigv4_by = |key_id: &str| {
        host.requests().iter().any(|r| {
            r.authorization()
                .is_some_and(|a| a.contains(&format!("Credential={key_id}/")))
        })
    };
    assert!(
        sigv4_by(AWS_INTEGRATION_KEY_ID),
        "no request signed by the integration key"
    );
    assert!(
        sigv4_by(AWS_USER_KEY_ID),
        "no request signed by the user's key"
    );
    assert!(
        sigv4_by("AKIAREFUSED000000001"),
        "no STS check of the refused key"
    );
    assert!(bodies[10].contains("pat-invalid"), "{}", bodies[10]);

    // The connect page: opened from the link, a PAT the host refuses, then one it accepts.
    let page = browser_send(
        &client,
        http::Request::get(&link).body(Default::default()).unwrap(),
    )
    .await;
    assert_eq!(page.status(), 200);
    let page = String::from_utf8_lossy(page.body()).into_owned();
    let page_token = {
        let start = page.find("name=\"page\" value=\"").unwrap() + "name=\"page\" value=\"".len();
        page[start..][..page[start..].find('"').unwrap()].to_string()
    };
    let origin = link.split("/connect/").next().unwrap().to_string();
    for token in [PAT_CONNECT_REFUSED, PAT_CONNECT] {
        let form = http::Request::post(format!("{origin}/connect/pat"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .body(http_body_util::Full::new(Bytes::from(format!(
                "page={page_token}&token={token}"
            ))))
            .unwrap();
        let answer = browser_send(&client, form).await;
        bodies.push(String::from_utf8_lossy(answer.body()).into_owned());
    }
    assert!(
        bodies.last().unwrap().contains(">carol<"),
        "the connect page did not store the PAT: {}",
        bodies.last().unwrap()
    );
    bodies.push(page);

    // The admin socket, through the real CLI: a user PAT, a new integration token, and a
    // master key rotation, all applied by the running service.
    let mut cli_output = String::new();
    for (args, stdin) in [
        (
            &["pat", "set", "--integration", "ghe", "--account", ACCOUNT_B][..],
            Some(format!("{PAT_SOCKET}\n")),
        ),
        (
            &["integration", "set-secret", "ghe"][..],
            Some(format!("{NEW_INTEGRATION_TOKEN}\n")),
        ),
        (&["vault", "rotate-key"][..], None),
    ] {
        let out = cli(&gw.config_path, args, stdin.as_deref()).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(text.contains("via the running service"), "{args:?}: {text}");
        cli_output.push_str(&text);
    }
    let read = send(gw.get("/git/ghe/api/v3/repos/acme/api")).await;
    assert_eq!(read.status(), 200);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {NEW_INTEGRATION_TOKEN}"))
    );
    gw.store_pat("pat-b-holder", PAT_B).await;
    let delete = Outgoing {
        url: gw.url("/v1/integrations/ghe/users/pat-b-holder/pat"),
        ..delete
    };
    assert_eq!(send(delete).await.status(), 200);
    let metrics = gw.metrics().await;
    assert!(host
        .requests()
        .iter()
        .any(|r| r.authorization() == Some(&*format!("Bearer {PAT_A}"))));
    // What a panic message holding the state or a credential would print.
    let state = format!(
        "{:?} {:?} {:?} {:?}",
        gw.runtime,
        gw.runtime.vault(),
        aws(AWS_USER_KEY_ID, AWS_USER_SECRET, Some(AWS_USER_SESSION)),
        Credential::Token(PAT_A.to_string().into())
    );
    let master_key = std::fs::read_to_string(gw.path("master-key")).unwrap();
    assert_ne!(master_key, master_key_before, "the key was not rotated");
    let state_dir = gw.path("state");
    let hmac = std::fs::read_to_string(gw.path(&format!("{HMAC_KEYID}.hmac"))).unwrap();
    let signing_key = std::fs::read_to_string(gw.path(&format!("{APP_KEYID}.pem"))).unwrap();
    gw.stop().await;

    let logs = captured.text();
    let json_logs = captured_json.text();
    for line in json_logs.lines() {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a JSON log line does not parse ({e}): {line}"));
    }
    assert!(json_logs.contains(r#""target":"patgate::access""#));
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    for event in [
        "pat-stored",
        "pat-refused",
        "pat-removed",
        "connect-link-issued",
    ] {
        assert!(
            audit.contains(&format!(r#""event":"{event}""#)),
            "no {event} in the audit file:\n{audit}"
        );
    }
    assert!(metrics.contains("patgate_requests_total"), "{metrics}");
    assert!(
        logs.contains("patgate::access"),
        "the capture saw no access line:\n{logs}"
    );
    assert!(
        logs.len() > 10_000,
        "trace level should be verbose; got {} bytes",
        logs.len()
    );
    let secrets = [
        PAT_A,
        PAT_B,
        "ghp_RejectedTokenDoNotLeak00000000000000",
        INTEGRATION_TOKEN,
        NEW_INTEGRATION_TOKEN,
        PAT_CONNECT,
        PAT_CONNECT_REFUSED,
        PAT_SOCKET,
        AWS_INTEGRATION_SECRET,
        AWS_USER_SECRET,
        AWS_USER_SESSION,
        AWS_REFUSED_SECRET,
        master_key.trim(),
        master_key_before.trim(),
        hmac.trim(),
    ];
    let pem_body: String = signing_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for secret in secrets
        .iter()
        .copied()
        .chain([pem_body.as_str(), link_token.as_str()])
    {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!json_logs.contains(secret), "a secret is in the JSON logs");
        assert!(!audit.contains(secret), "a secret is in the audit file");
        assert!(!metrics.contains(secret), "a secret is in /metrics");
        assert!(
            !cli_output.contains(secret),
            "a secret is in the CLI's output"
        );
        assert!(
            !state.contains(secret),
            "a secret is in the runtime's Debug"
        );
        for body in &bodies {
            if secret != link_token {
                assert!(!body.contains(secret), "a secret is in an answer: {body}");
            }
        }
    }

    // The vault on disk: every file under state_dir, searched for every secret (and the raw
    // bytes of both master keys) as is, in hex and in base64.
    let mut files = Vec::new();
    files_under(&state_dir, &mut files);
    assert!(!files.is_empty());
    let mut needles: Vec<Vec<u8>> = secrets
        .iter()
        .chain([&pem_body.as_str(), &link_token.as_str()])
        .map(|s| s.as_bytes().to_vec())
        .collect();
    for key in [&master_key, &master_key_before] {
        use base64::Engine as _;
        needles.push(
            base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .unwrap(),
        );
    }
    // The search itself finds a secret hidden in each of these ways.
    let found = |hay: &[u8], needle: &[u8]| {
        spellings(needle)
            .iter()
            .any(|s| hay.windows(s.len()).any(|w| w == s.as_slice()))
    };
    for prefix in ["", "x", "xy", "xyz"] {
        use base64::Engine as _;
        let text = format!("{prefix}{PAT_A}tail");
        for encoded in [
            base64::engine::general_purpose::STANDARD.encode(&text),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&text),
            text.bytes().map(|b| format!("{b:02X}")).collect(),
            text.clone(),
        ] {
            assert!(found(encoded.as_bytes(), PAT_A.as_bytes()), "{encoded}");
        }
    }
    let mut searched = 0;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        searched += bytes.len();
        for needle in &needles {
            for spelling in spellings(needle) {
                assert!(
                    !bytes
                        .windows(spelling.len())
                        .any(|w| w == spelling.as_slice()),
                    "a secret is in the vault file {} (spelling {:?})",
                    file.display(),
                    String::from_utf8_lossy(&spelling)
                );
            }
        }
    }
    // The vault holds the records (ciphertexts), so the search had something to look at.
    assert!(searched > 4096, "{files:?}");
}

/// A CodeCommit call as the app sends it.
fn codecommit(gw: &Gateway, operation: &str, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url("/git/cc/"),
        headers: vec![
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amz-target".into(), format!("CodeCommit_20150413.{operation}")),
        ],
        body: Some(Bytes::from_static(
            br#"{"repositoryName":"api","branchName":"PROJ-1-fix","commitId":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#,
        )),
        account: account.map(str::to_string),
    }
}

/// A browser request to the connect listener (no signature).
async fn browser_send(
    client: &patgate::client::SignedClient,
    request: http::Request<http_body_util::Full<Bytes>>,
) -> http::Response<Bytes> {
    client.send_signed(request).await.unwrap()
}
