//! The admin command line, run as the real binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn patgate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(args)
        .env_remove("PATGATE_CONFIG")
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
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn config_check_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patgate.toml");
    std::fs::write(
        &file,
        "state_dir = \"s\"\n[master_key]\nfile = \"k\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n[[integrations]]\nid = \"ghe\"\nkind = \"github\"\nbase_url = \"https://ghe.example.com\"\nrequire_user_pats = true\n",
    )
    .unwrap();
    let out = patgate(&["config", "check", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out);
    assert!(
        message.contains(&format!(
            "{}: integrations[0].require_user_pats: unknown field `require_user_pats`",
            file.display()
        )),
        "{message}"
    );

    // Syntax is fine but a certificate is missing: the key that names it is reported.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("require_user_pats = true\n", ""),
    )
    .unwrap();
    let out = patgate(&["config", "check", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out);
    // The key is the one naming the file (the client CA is read first).
    assert!(
        message.contains(&format!(
            ": api.client_ca: cannot read {}",
            dir.path().join("a").display()
        )),
        "{message}"
    );

    // A vault page cache of 0 is refused before any file is read.
    let text_before = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text_before}[vault]\ncache_capacity_mib = 0\n"),
    )
    .unwrap();
    let out = patgate(&["config", "check", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out);
    assert!(
        message.contains(": vault.cache_capacity_mib: must be between 1 and 1024 (MiB)"),
        "{message}"
    );
}

#[test]
fn config_check_names_the_line_and_column_of_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patgate.toml");
    // The string on line 3 never ends: toml stops at the end of that line.
    std::fs::write(&file, "state_dir = \"s\"\n[master_key]\nfile = \"k\n").unwrap();
    let out = patgate(&["config", "check", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "patgate: {}: line 3, column 10: invalid basic string\n",
            file.display()
        )
    );

    // A file that cannot be read is named without an empty key after it.
    let missing = dir.path().join("missing.toml");
    let out = patgate(&["config", "check", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out);
    assert!(
        message.contains(&format!(
            "patgate: {}: cannot read the file: ",
            missing.display()
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_reports_a_host_that_does_not_answer() {
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("check CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(dir.clone(), ca.clone(), &host, &Options::default()).await;
    let file = setup.config_path.to_str().unwrap().to_string();
    let check = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            patgate(&args, None)
        })
    };
    let out = check(vec!["config".into(), "check".into(), file.clone()])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("integration `ghe` (github)"),
        "{}",
        text(&out)
    );
    assert_eq!(host.last().method, http::Method::HEAD);
    assert!(
        host.last().authorization().is_none(),
        "the probe must carry no credential"
    );

    // The same file pointing at a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = std::fs::read_to_string(&file).unwrap().replace(
        &host.base_url(),
        &format!("https://localhost:{}", closed.port()),
    );
    std::fs::write(&file, toml).unwrap();
    let out = check(vec!["config".into(), "check".into(), file.clone()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out);
    // It names the integration and its URL, not only the key.
    assert!(
        message.contains(&format!(
            "{file}: integrations[0].base_url: integration `ghe` at https://localhost:"
        )),
        "{message}"
    );
    assert!(message.contains("cannot connect"), "{message}");
    let out = check(vec![
        "config".into(),
        "check".into(),
        "--offline".into(),
        file.clone(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_reads_the_pinned_forge_key_set() {
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("check CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let opts = Options {
        api_toml: "client_certificate = \"optional\"\n".into(),
        extra_toml: "[forge]\njwks_url = \"\"\njwks_file = \"forge-jwks.json\"\n[[forge.apps]]\nid = \"ari:cloud:ecosystem::app/3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44\"\ninstallation_ids = [\"7a1e0c55\"]\n".into(),
        ..Options::default()
    };
    let setup = Setup::with_ca(dir.clone(), ca.clone(), &host, &opts).await;
    let file = setup.config_path.to_str().unwrap().to_string();
    let jwks = dir.path().join("forge-jwks.json");
    let check = |file: String| {
        tokio::task::spawn_blocking(move || {
            patgate(&["config", "check", "--offline", file.as_str()], None)
        })
    };

    // The file is missing: the check fails, naming the key and the file.
    let out = check(file.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(
        message.contains(&format!(
            "{file}: forge.jwks_file: cannot read {}",
            jwks.display()
        )),
        "{message}"
    );

    // A key set with no key patgate can use (an EC key; RS256 only) fails too.
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AAAA","y":"AAAA"}]}"#,
    )
    .unwrap();
    let out = check(file.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(
        message.contains(&format!(
            "{file}: forge.jwks_file: {} holds no RSA key",
            jwks.display()
        )),
        "{message}"
    );

    // A usable key: the check passes.
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let public = rsa::traits::PublicKeyParts::n(&key.to_public_key()).to_bytes_be();
    let e = rsa::traits::PublicKeyParts::e(&key.to_public_key()).to_bytes_be();
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    std::fs::write(
        &jwks,
        format!(
            r#"{{"keys":[{{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"{}","e":"{}"}}]}}"#,
            b64(&public),
            b64(&e)
        ),
    )
    .unwrap();
    let out = check(file).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_example_config_passes_the_syntax_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/patgate.example.toml");
    patgate::config::Config::load(&example).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_manage_the_vault_without_printing_secrets() {
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("cli CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options {
            extra_toml: "audit_file = \"audit.jsonl\"\n".into(),
            ..Options::default()
        },
    )
    .await;
    // The service creates the audit file; commands append to it when it exists.
    let audit_file = setup.dir.path().join("audit.jsonl");
    std::fs::write(&audit_file, "").unwrap();
    let config = setup.config_path.to_str().unwrap().to_string();
    let cfg = config.clone();
    let run = move |args: Vec<String>, stdin: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            patgate(&args, stdin.as_deref())
        })
    };
    let args = |a: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        v.extend(["--config".to_string(), cfg.clone()]);
        v
    };

    let out = run(
        args(&["integration", "set-secret", "ghe"]),
        Some(format!("{INTEGRATION_TOKEN}\n")),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // A PAT is validated with the host before it is stored.
    let out = run(
        args(&["pat", "set", "--integration", "ghe", "--account", ACCOUNT_A]),
        Some(format!("{PAT_A}\n")),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("\"host_login\": \"alice\""),
        "{}",
        text(&out)
    );
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    let out = run(
        args(&["pat", "set", "--integration", "ghe", "--account", ACCOUNT_B]),
        Some("ghp_WrongToken\n".into()),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not stored"), "{}", text(&out));

    let out = run(
        args(&[
            "pat",
            "status",
            "--integration",
            "ghe",
            "--account",
            ACCOUNT_B,
        ]),
        None,
    )
    .await
    .unwrap();
    assert!(
        text(&out).contains("\"configured\": false"),
        "{}",
        text(&out)
    );
    let out = run(args(&["vault", "list"]), None).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    assert!(
        listing.contains(ACCOUNT_A) && listing.contains("alice"),
        "{listing}"
    );
    for secret in [INTEGRATION_TOKEN, PAT_A] {
        assert!(!listing.contains(secret));
    }
    let out = run(
        args(&[
            "pat",
            "delete",
            "--integration",
            "ghe",
            "--account",
            ACCOUNT_A,
        ]),
        None,
    )
    .await
    .unwrap();
    assert!(
        text(&out).contains("\"configured\": false"),
        "{}",
        text(&out)
    );

    // Each change is an audit event (via the command line), in the file and on stderr.
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let events: Vec<(String, String)> = audit
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["via"], "cli", "{l}");
            assert_eq!(v["actor"], os_user(), "{l}");
            assert_eq!(v["integration"], "ghe", "{l}");
            (
                v["event"].as_str().unwrap().to_string(),
                v["account"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("integration-secret-changed".to_string(), "-".to_string()),
            ("pat-stored".to_string(), ACCOUNT_A.to_string()),
            ("pat-refused".to_string(), ACCOUNT_B.to_string()),
            ("pat-removed".to_string(), ACCOUNT_A.to_string()),
        ],
        "{audit}"
    );
    for secret in [INTEGRATION_TOKEN, PAT_A] {
        assert!(!audit.contains(secret));
    }
    assert!(text(&out).contains("user PAT removed"), "{}", text(&out));

    // While the service holds the vault, the CLI goes through its admin socket
    // (tests/admin_socket.rs covers that path in full).
    let gw = setup.start().await;
    let out = run(args(&["vault", "list"]), None).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("(via the running service"),
        "{}",
        text(&out)
    );
    // A config that names another socket finds the vault locked, and says so.
    let elsewhere = setup.dir.path().join("elsewhere.toml");
    std::fs::write(
        &elsewhere,
        std::fs::read_to_string(&setup.config_path)
            .unwrap()
            .replace("[admin]\n", "[admin]\nsocket = \"no-such.sock\"\n"),
    )
    .unwrap();
    let out = run(
        vec![
            "vault".into(),
            "list".into(),
            "--config".into(),
            elsewhere.to_str().unwrap().into(),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("in use")
            && text(&out).contains("is admin.socket the same in the service's config?"),
        "{}",
        text(&out)
    );
    gw.stop().await;
}

#[test]
fn keys_gen_writes_a_private_key_only_the_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = patgate(
        &[
            "keys",
            "gen",
            "--keyid",
            "jira-2026",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ed25519_public_key = "));
    let mode = std::fs::metadata(dir.path().join("jira-2026.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = patgate(
        &[
            "keys",
            "gen",
            "--keyid",
            "bad id",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
}

/// `patgate run`, the service's own entry point: it serves with the config's files, and
/// SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("run CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options::default(),
    )
    .await;
    // The smallest vault page cache still serves.
    let toml = std::fs::read_to_string(&setup.config_path).unwrap();
    // A second integration whose secret was never stored: run says so at start.
    std::fs::write(
        &setup.config_path,
        format!(
            "{toml}\n[vault]\ncache_capacity_mib = 1\n\n[[integrations]]\nid = \"nosecret\"\nkind = \"github\"\nbase_url = \"{}\"\n",
            host.base_url()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["run", "--config", setup.config_path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, warned) = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let (mut addr, mut warned) = (None, None);
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                addr = Some(rest.split_whitespace().next().unwrap().to_string());
            }
            if line.contains("WARN") && line.contains("`nosecret` has no secret in the vault") {
                warned = Some(line);
            }
            if let (Some(addr), Some(warned)) = (&addr, &warned) {
                return (addr.clone(), warned.clone());
            }
        }
        panic!("patgate run ended without serving and warning");
    })
    .await
    .expect("patgate run did not start serving (and warn about `nosecret`) in time");
    assert!(
        warned.contains("patgate integration set-secret nosecret --config"),
        "{warned}"
    );
    let port = addr.rsplit(':').next().unwrap();
    let dir = setup.dir.path();
    let key =
        patgate::signature::SigningKey::ed25519_from_pkcs8_pem(APP_KEYID, &setup.signing_key_pem)
            .unwrap();
    let client = patgate::client::SignedClient::new(
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        None,
        key,
        false,
    )
    .unwrap();
    let response = client
        .send(&patgate::client::Outgoing {
            url: format!("https://localhost:{port}/git/ghe/api/v3/repos/acme/api"),
            ..patgate::client::Outgoing::default()
        })
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["patgate-credential"], "integration");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {INTEGRATION_TOKEN}"))
    );

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("patgate run did not stop after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("patgate stopped")),
        "{rest:?}"
    );
}

/// `patgate vault list | head`: a reader that stops reading ends the command quietly, with
/// success, never with a panic.
#[tokio::test]
async fn a_closed_output_pipe_ends_a_command_quietly() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let config = gw.config_path.clone();
    let _dir = gw.dir.clone();
    gw.stop().await;
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_patgate"))
            .args(["vault", "list", "--config", config.to_str().unwrap()])
            .env_remove("PATGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its first byte.
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// `config check` takes its file as every other command does (`--config`, `-c`), or as a
/// plain argument.
#[test]
fn config_check_takes_the_file_with_config_too() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/patgate.example.toml");
    for args in [
        vec!["config", "check", "--offline", file],
        vec!["config", "check", "--offline", "--config", file],
        vec!["config", "check", "--offline", "-c", file],
    ] {
        let out = patgate(&args, None);
        // The example names files that do not exist here: the check gets as far as them,
        // the same way each time.
        let message = text(&out);
        assert_ne!(out.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            !message.contains("unexpected argument"),
            "{args:?}: {message}"
        );
        assert!(message.contains(file), "{args:?}: {message}");
    }
}

/// `patgate request` prints every answer whole, and exits 22 (curl's --fail) on a status
/// of 400 or above unless --no-fail says otherwise.
#[tokio::test]
async fn request_exits_non_zero_on_a_refusal() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let base = |url: &str| -> Vec<String> {
        [
            "request",
            "--cacert",
            gw.path("ca.pem").to_str().unwrap(),
            "--cert",
            gw.path("client.pem").to_str().unwrap(),
            "--key",
            gw.path(&format!("{APP_KEYID}.pem")).to_str().unwrap(),
            &gw.url(url),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            patgate(&args, None)
        })
    };
    let ok = run(base("/git/ghe/api/v3/user")).await.unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let status = |out: &Output| {
        text(out)
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(status(&ok), "200", "{}", text(&ok));

    let refused = run(base("/git/nope/api/v3/user")).await.unwrap();
    assert_eq!(refused.status.code(), Some(22), "{}", text(&refused));
    assert_eq!(status(&refused), "404", "{}", text(&refused));
    assert!(
        text(&refused).contains("unknown-integration"),
        "{}",
        text(&refused)
    );

    let mut args = base("/git/nope/api/v3/user");
    args.insert(1, "--no-fail".into());
    let tolerated = run(args).await.unwrap();
    assert_eq!(tolerated.status.code(), Some(0), "{}", text(&tolerated));
    assert!(text(&tolerated).contains("unknown-integration"));
    assert_eq!(
        host.requests().len(),
        1,
        "only the good read reached the host"
    );
    gw.stop().await;
}

/// A secret typed at a terminal is not echoed: `integration set-secret` run in a real
/// pseudo-terminal (tests/terminal/type_a_secret.py) prompts, the secret is typed, nothing
/// the terminal shows holds it, and the vault has it.
#[tokio::test]
async fn a_secret_typed_at_a_terminal_is_not_echoed() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let config = gw.config_path.clone();
    let dir = gw.dir.clone();
    gw.stop().await;
    const TYPED: &str = "ghp_TypedAtTheTerminal0000000000000000";
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/terminal/type_a_secret.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                TYPED,
                "not shown as you type",
                env!("CARGO_BIN_EXE_patgate"),
                "integration",
                "set-secret",
                "ghe",
                "--no-validate",
                "--config",
                config.to_str().unwrap(),
            ])
            .env_remove("PATGATE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out));
    assert!(
        shown.contains("the integration's token (not shown as you type): "),
        "{shown}"
    );
    assert!(
        !shown.contains(TYPED),
        "the terminal showed the secret:\n{shown}"
    );
    assert!(shown.trim_end().ends_with("exit 0"), "{shown}");
    let key = patgate::vault::MasterKey::load_file(&dir.path().join("master-key")).unwrap();
    let vault = open_vault(&dir.path().join("state"), &key).await.unwrap();
    let stored = vault
        .integration_secret(INTEGRATION_ID)
        .await
        .unwrap()
        .unwrap();
    let patgate::vault::Credential::Token(token) = stored else {
        panic!("not a token: {stored:?}");
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "the test compares the stored secret with the one it typed"
    )]
    let token = secrecy::ExposeSecret::expose_secret(&token).to_string();
    assert!(token == TYPED, "the vault holds another secret");
}

/// An integration whose secret was never stored: `config check` says so, naming the
/// integration and the command that fixes it; a stored one is not mentioned.
#[tokio::test]
async fn config_check_names_an_integration_without_its_secret() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let config = gw.config_path.to_str().unwrap().to_string();
    let _dir = gw.dir.clone();
    gw.stop().await;
    let run = |config: String| {
        tokio::task::spawn_blocking(move || {
            patgate(&["config", "check", "--offline", "--config", &config], None)
        })
    };
    let stored = run(config.clone()).await.unwrap();
    assert!(stored.status.success(), "{}", text(&stored));
    assert!(
        !text(&stored).contains("has no secret"),
        "{}",
        text(&stored)
    );

    let key = patgate::vault::MasterKey::load_file(&_dir.path().join("master-key")).unwrap();
    let vault = open_vault(&_dir.path().join("state"), &key).await.unwrap();
    assert!(vault
        .delete_integration_secret(INTEGRATION_ID)
        .await
        .unwrap());
    drop(vault);
    let missing = run(config.clone()).await.unwrap();
    let message = text(&missing);
    assert!(missing.status.success(), "{message}");
    assert!(
        message.contains(&format!(
            "warning: integration `{INTEGRATION_ID}` has no secret in the vault: every request through it will answer 503 until `patgate integration set-secret {INTEGRATION_ID} --config {config}` stores one"
        )),
        "{message}"
    );
}

/// `patgate run` before `vault init`: it says which file is missing and the exact command
/// that makes the master key and the vault (with this config's `--config`).
#[tokio::test]
async fn run_without_a_master_key_names_the_vault_init_command() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let config = gw.config_path.to_str().unwrap().to_string();
    let dir = gw.dir.clone();
    gw.stop().await;
    let key = dir.path().join("master-key");
    std::fs::remove_file(&key).unwrap();
    let cfg = config.clone();
    let out = tokio::task::spawn_blocking(move || patgate(&["run", "--config", &cfg], None))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.ends_with(&format!(
            "patgate: the master key file {} (master_key.file) does not exist: make it and the vault with `patgate vault init --config {config}`\n",
            key.display()
        )),
        "{stderr}"
    );

    // A key but no vault: the same command.
    patgate::vault::MasterKey::generate()
        .write_new(&key)
        .unwrap();
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let cfg = config.clone();
    let out = tokio::task::spawn_blocking(move || patgate(&["run", "--config", &cfg], None))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.ends_with(&format!(
            "make it with `patgate vault init --config {config}`\n"
        )),
        "{stderr}"
    );
}

/// This process's OS user as `id` shows it, `uid=N(name)`: the actor of the audit events of
/// commands it runs.
fn os_user() -> String {
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    format!("uid={}({})", id("-u"), id("-un"))
}

/// `vault rotate-key` with no service running rotates the vault itself, and writes the
/// `key-rotated` audit event (to stderr and the audit file) naming the OS user who ran it.
#[tokio::test]
async fn an_offline_key_rotation_is_audited_with_its_os_user() {
    let (gw, _host) = Gateway::start(Options {
        extra_toml: "audit_file = \"audit.jsonl\"\n".into(),
        ..Options::default()
    })
    .await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let config = gw.config_path.to_str().unwrap().to_string();
    let dir = gw.dir.clone();
    gw.stop().await;
    let audit_file = dir.path().join("audit.jsonl");
    std::fs::write(&audit_file, "").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        patgate(&["vault", "rotate-key", "--config", &config], None)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{audit}");
    let event = &events[0];
    assert_eq!(event["event"], "key-rotated", "{audit}");
    assert_eq!(event["via"], "cli");
    assert_eq!(event["actor"], os_user());
    assert_eq!(event["from_version"], 1);
    assert_eq!(event["to_version"], 2);
    // Two records: the integration secret and the PAT.
    assert_eq!(event["records"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vault master key rotated"),
        "{}",
        text(&out)
    );
}

/// `patgate vault list` as a new admin types it, in a real terminal
/// (tests/terminal/run_in_a_terminal.py): a table, one row per record, times in RFC 3339.
#[tokio::test]
async fn vault_list_at_a_terminal_is_a_table() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let config = gw.config_path.clone();
    let _dir = gw.dir.clone();
    gw.stop().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/terminal/run_in_a_terminal.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                env!("CARGO_BIN_EXE_patgate"),
                "vault",
                "list",
                "--config",
                config.to_str().unwrap(),
            ])
            .env_remove("PATGATE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(shown.trim_end().ends_with("exit 0"), "{shown}");
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with("RECORD              INTEGRATION  ACCOUNT"),
        "{shown}"
    );
    assert!(
        lines[0].ends_with("VALIDATED             LAST USED  EXPIRES  REFUSED"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("integration-secret  ghe          -  "),
        "{shown}"
    );
    let pat_row = lines[2];
    assert!(
        pat_row.starts_with(&format!(
            "user-pat            ghe          {ACCOUNT_A}  test "
        )),
        "{shown}"
    );
    assert!(pat_row.ends_with("Z  never      -        -"), "{shown}");
    // Every time is RFC 3339 UTC: no Unix seconds left.
    let time = pat_row.split_whitespace().nth(6).unwrap();
    assert_eq!(time.len(), "2026-11-24T16:02:11Z".len(), "{pat_row}");
    assert!(
        time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{pat_row}"
    );
    assert!(!shown.contains(PAT_A) && !shown.contains(INTEGRATION_TOKEN));
}

/// Into a pipe the table stays the default; `--json` is one JSON array with RFC 3339
/// times, and `--integration` / `--account` filter both forms.
#[tokio::test]
async fn vault_list_prints_json_on_request_and_filters() {
    // B's PAT expires at the end of 2026 (as the host said when it was stored).
    const B_EXPIRES: u64 = 1_798_761_599;
    let (gw, _host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    gw.store_pat_with(
        ACCOUNT_B,
        PAT_B,
        &patgate::vault::PatMeta {
            host_login: "test-b".into(),
            expires_at: Some(B_EXPIRES),
            ..pat_meta()
        },
    )
    .await;
    let config = gw.config_path.to_str().unwrap().to_string();
    let _dir = gw.dir.clone();
    gw.stop().await;
    let list = |extra: &[&str]| {
        let mut args = vec!["vault", "list", "--config", &config];
        args.extend_from_slice(extra);
        let out = patgate(&args, None);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = list(&[]);
    assert!(table.starts_with("RECORD "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    let json = list(&["--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    // A record per line, between the brackets.
    assert_eq!(json.lines().count(), records.len() + 2, "{json}");
    assert_eq!(records.len(), 3, "{json}");
    assert_eq!(records[0]["record"], "integration-secret");
    assert_eq!(records[0]["integration"], "ghe");
    let pat = records
        .iter()
        .find(|r| r["account"] == ACCOUNT_A)
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(pat["record"], "user-pat");
    assert_eq!(pat["host_login"], "test");
    assert!(pat["last_used_at"].is_null(), "{pat}");
    for field in ["created_at", "updated_at", "validated_at"] {
        let time = pat[field].as_str().unwrap_or_else(|| panic!("{pat}"));
        assert!(
            humantime::parse_rfc3339(time).is_ok() && time.ends_with('Z'),
            "{field}: {time}"
        );
    }
    assert!(!json.contains(PAT_A) && !json.contains(PAT_B));

    let only_b: Vec<serde_json::Value> =
        serde_json::from_str(&list(&["--json", "--account", ACCOUNT_B])).unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0]["account"], ACCOUNT_B);
    assert_eq!(
        only_b[0]["expires_at"], "2026-12-31T23:59:59Z",
        "{:?}",
        only_b[0]
    );
    assert!(pat["expires_at"].is_null(), "{pat}");
    // `pat status` says when it expires too (as the /v1 status answer does).
    let out = patgate(
        &[
            "pat",
            "status",
            "--integration",
            "ghe",
            "--account",
            ACCOUNT_B,
            "--config",
            &config,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["expires_at"], "2026-12-31T23:59:59Z", "{status}");
    assert!(!text(&out).contains(PAT_B));
    let table_b = list(&["--integration", "ghe", "--account", ACCOUNT_B]);
    assert_eq!(table_b.lines().count(), 2, "{table_b}");
    assert!(table_b.contains(ACCOUNT_B) && !table_b.contains(ACCOUNT_A));
    let none: Vec<serde_json::Value> =
        serde_json::from_str(&list(&["--json", "--integration", "other"])).unwrap();
    assert!(none.is_empty());
}
