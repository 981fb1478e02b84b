//! `patgate dev`: the quickstart. Everything under one folder (default `./dev`, gitignored):
//! a dev CA, server and client certificates, an app signing key, a master key, a vault and a
//! config; then patgate in front of the DEMO host (or a real host with `--upstream`), and the
//! commands that show what it does.
//!
//! Material is made once and reused on later runs; the config is rewritten each run from the
//! flags. The vault is kept too (it may hold a PAT the user stored), so the printed steps
//! depend on it: with no PAT for the demo user the journey goes refused → store → done with
//! the PAT; with one stored by an earlier run it goes done with the PAT → remove → refused.
//! `--fresh` forgets the user PATs first. The connect page runs beside the api listener, and
//! a link to it is printed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use rand_core::{OsRng, RngCore as _};
use secrecy::SecretString;

use super::{vault_options, CliResult};
use crate::clock::Clock;
use crate::config::Config;
use crate::devpki::{ClientName, DevCa};
use crate::listener::{Listeners, Server};
use crate::runtime::Runtime;
use crate::vault::{Credential, MasterKey, Vault};

/// The Jira user the quickstart acts as (an Atlassian accountId).
const DEMO_ACCOUNT: &str = "5b10ac8d82e05b22cc7d4ef5";
const APP_KEYID: &str = "dev-app";

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Where to keep the dev material.
    #[arg(long, default_value = "dev")]
    dir: PathBuf,
    /// Where patgate listens.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// A real git host instead of the demo host, e.g. https://api.github.com or
    /// https://ghe.example.com. Store its integration token first with
    /// `patgate integration set-secret upstream --config DIR/patgate.toml`.
    #[arg(long, requires = "kind")]
    upstream: Option<String>,
    /// The kind of the --upstream host.
    #[arg(long, value_parser = ["github"])]
    kind: Option<String>,
    /// A PEM bundle of extra CAs for the --upstream host.
    #[arg(long, requires = "upstream")]
    extra_ca: Option<PathBuf>,
    /// Where the connect page (where a Jira user enters their PAT in a browser) listens.
    #[arg(long, default_value = "127.0.0.1:8444")]
    connect_listen: SocketAddr,
    /// Forget the user PATs earlier runs stored in this folder's vault, so the steps start
    /// from a user without a PAT. Certificates, keys and the integration token stay.
    #[arg(long)]
    fresh: bool,
}

struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn get(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(crate) async fn run(args: DevArgs) -> CliResult {
    let paths = Paths {
        dir: args.dir.clone(),
    };
    std::fs::create_dir_all(&paths.dir)
        .map_err(|e| format!("cannot create {}: {e}", paths.dir.display()))?;
    set_mode(&paths.dir, 0o700)?;
    ensure_pki(&paths)?;
    if !paths.get(&format!("{APP_KEYID}.pem")).exists() {
        crate::keys::generate(APP_KEYID, &paths.dir, false).map_err(|e| e.to_string())?;
    }
    let app_public = std::fs::read_to_string(paths.get(&format!("{APP_KEYID}.pub")))
        .map_err(|e| format!("cannot read the app public key: {e}"))?;
    let integration_token = ensure_secret(&paths.get("demo-integration.token"), "ghs_")?;
    let alice_pat = ensure_secret(&paths.get("demo-alice.pat"), "ghp_")?;

    let (integration_id, base_url, extra_ca, roots) = match &args.upstream {
        None => {
            let tls = crate::tls::server_config_without_client_auth(
                &paths.get("demo-host.pem"),
                &paths.get("demo-host-key.pem"),
            )
            .map_err(|e| e.to_string())?;
            let accounts =
                crate::demo::DemoAccounts::new(&integration_token, &[("alice", &alice_pat)]);
            let addr = crate::demo::start(tls, accounts)
                .await
                .map_err(|e| format!("cannot start the demo host: {e}"))?;
            (
                "demo",
                format!("https://localhost:{}", addr.port()),
                Some("ca.pem".to_string()),
                "none",
            )
        }
        Some(url) => (
            "upstream",
            url.clone(),
            args.extra_ca.as_ref().map(|p| absolute(p)),
            "system",
        ),
    };
    // Bound now: the connect page's public URL must name its port (`--connect-listen :0`).
    let connect_listener = tokio::net::TcpListener::bind(args.connect_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (--connect-listen): {e}",
                args.connect_listen
            )
        })?;
    let connect_addr = connect_listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", args.connect_listen))?;
    let config_path = paths.get("patgate.toml");
    let toml = dev_config(&DevConfig {
        listen: args.listen,
        connect: connect_addr,
        id: integration_id,
        display_name: args.upstream.is_none().then_some(DEMO_DISPLAY_NAME),
        base_url: &base_url,
        extra_ca: extra_ca.as_deref(),
        roots,
        app_public_key: app_public.trim(),
    });
    std::fs::write(&config_path, toml)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;

    let key_path = paths.get("master-key");
    if !key_path.exists() {
        MasterKey::generate()
            .write_new(&key_path)
            .map_err(|e| e.to_string())?;
    }
    let key = MasterKey::load_file(&key_path).map_err(|e| e.to_string())?;
    let options = vault_options(&config);
    let vault = match Vault::open_with(&config.state_dir, &key, &options).await {
        Ok(v) => v,
        Err(crate::vault::VaultError::NotInitialized { .. }) => {
            Vault::init_with(&config.state_dir, &key, &options)
                .await
                .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    if args.upstream.is_none() {
        vault
            .put_integration_secret(
                integration_id,
                &Credential::Token(integration_token.clone()),
            )
            .await
            .map_err(|e| e.to_string())?;
    } else if vault
        .integration_secret(integration_id)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        drop(vault);
        return Err(format!(
            "store the host's integration token first (it is read from standard input):\n  patgate integration set-secret upstream --config {} < token-file",
            config_path.display()
        ));
    }

    let forgotten = if args.fresh {
        Some(forget_user_pats(&vault, integration_id).await?)
    } else {
        None
    };
    let earlier = vault
        .user_pat_meta(integration_id, DEMO_ACCOUNT)
        .await
        .map_err(|e| e.to_string())?;

    crate::telemetry::init(&config.log)?;
    let runtime = Runtime::start(config, Arc::new(vault), Clock::system())
        .await
        .map_err(|e| e.to_string())?;
    let listeners = Listeners::bind_with_connect(runtime.config(), Some(connect_listener)).await?;
    let addr = listeners
        .api_addr()
        .ok_or_else(|| format!("cannot listen on {}", args.listen))?;
    let link = runtime
        .links()
        .map(|links| links.issue(integration_id, DEMO_ACCOUNT, runtime.clock().unix_now()));
    outln!(
        "{}",
        instructions(&Shown {
            paths: &paths,
            addr,
            id: integration_id,
            base_url: &base_url,
            demo: args.upstream.is_none(),
            admin: listeners.admin_addr(),
            forgotten,
            earlier_login: earlier.map(|meta| meta.host_login),
            link,
        })
    );
    Server::new(runtime)
        .run(listeners, super::shutdown_signal())
        .await;
    Ok(ExitCode::SUCCESS)
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// The dev CA and the certificates it issues, made once.
fn ensure_pki(paths: &Paths) -> Result<(), String> {
    let err = |e: crate::devpki::PkiError| format!("making dev certificates: {e}");
    let (ca_pem, ca_key) = (paths.get("ca.pem"), paths.get("ca-key.pem"));
    let ca = if ca_pem.exists() && ca_key.exists() {
        let cert = std::fs::read_to_string(&ca_pem).map_err(|e| e.to_string())?;
        let key = std::fs::read_to_string(&ca_key).map_err(|e| e.to_string())?;
        DevCa::load(&cert, &key).map_err(err)?
    } else {
        let ca = DevCa::generate("patgate dev CA").map_err(err)?;
        write_private(&ca_key, ca.key_pem())?;
        std::fs::write(&ca_pem, ca.cert_pem()).map_err(|e| e.to_string())?;
        ca
    };
    if !paths.get("server.pem").exists() {
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).map_err(err)?;
        write_private(&paths.get("server-key.pem"), &server.key_pem)?;
        std::fs::write(paths.get("server.pem"), &server.cert_pem).map_err(|e| e.to_string())?;
    }
    if !paths.get("client.pem").exists() {
        let client = ca
            .issue_client("jira-app (dev)", &[ClientName::Dns("jira-app.dev.local")])
            .map_err(err)?;
        write_private(
            &paths.get("client.pem"),
            &format!("{}{}", client.cert_pem, client.key_pem),
        )?;
    }
    if !paths.get("demo-host.pem").exists() {
        let host = ca.issue_server(&["localhost", "127.0.0.1"]).map_err(err)?;
        write_private(&paths.get("demo-host-key.pem"), &host.key_pem)?;
        std::fs::write(paths.get("demo-host.pem"), &host.cert_pem).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    crate::keys::write_private(path, text.as_bytes()).map_err(|e| e.to_string())
}

/// A random demo token with a GitHub-like prefix, kept in a private file.
fn ensure_secret(path: &Path, prefix: &str) -> Result<SecretString, String> {
    if !path.exists() {
        let mut bytes = [0u8; 18];
        OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(path, &format!("{prefix}{token}\n"))?;
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(SecretString::from(text.trim().to_string()))
}

/// The name the connect page shows for the demo integration.
const DEMO_DISPLAY_NAME: &str = "DEMO host (stands in for GitHub Enterprise)";

/// What the dev config is written from.
struct DevConfig<'a> {
    listen: SocketAddr,
    connect: SocketAddr,
    id: &'a str,
    display_name: Option<&'a str>,
    base_url: &'a str,
    extra_ca: Option<&'a str>,
    roots: &'a str,
    app_public_key: &'a str,
}

fn dev_config(c: &DevConfig<'_>) -> String {
    let DevConfig {
        listen,
        connect,
        id,
        base_url,
        roots,
        app_public_key,
        ..
    } = c;
    let extra_ca = c
        .extra_ca
        .map(|p| format!("extra_ca = \"{p}\"\n"))
        .unwrap_or_default();
    let display_name = c
        .display_name
        .map(|name| format!("display_name = \"{name}\"\n"))
        .unwrap_or_default();
    let port = connect.port();
    format!(
        r#"# Written by `patgate dev` on each run; edit the flags, not this file.
state_dir = "state"

[master_key]
file = "master-key"

[api]
listen = "{listen}"
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
allowed_client_sans = ["dns:jira-app.dev.local"]

[[app_keys]]
keyid = "{APP_KEYID}"
ed25519_public_key = "{app_public_key}"

[[integrations]]
id = "{id}"
{display_name}kind = "github"
base_url = "{base_url}"
roots = "{roots}"
{extra_ca}require_user_pat = true

# The page where a Jira user enters their PAT, opened from one-time links.
[connect]
listen = "{connect}"
cert = "server.pem"
key = "server-key.pem"
public_url = "https://localhost:{port}"

[admin]
listen = "127.0.0.1:0"

[log]
level = "info"

# Ctrl-C waits this long for requests in flight.
[service]
shutdown_grace_seconds = 5
"#
    )
}

/// Removes every user PAT of `integration`; answers how many there were.
async fn forget_user_pats(vault: &Vault, integration: &str) -> Result<usize, String> {
    let mut forgotten = 0;
    for record in vault
        .list_user_pats(integration)
        .await
        .map_err(|e| e.to_string())?
    {
        if let crate::vault::RecordId::UserPat { account, .. } = &record.id {
            if vault
                .delete_user_pat(integration, account)
                .await
                .map_err(|e| e.to_string())?
            {
                forgotten += 1;
            }
        }
    }
    Ok(forgotten)
}

/// What the printed steps are made from.
struct Shown<'a> {
    paths: &'a Paths,
    addr: SocketAddr,
    id: &'a str,
    base_url: &'a str,
    demo: bool,
    admin: Option<SocketAddr>,
    /// User PATs `--fresh` removed.
    forgotten: Option<usize>,
    /// The host login of the demo user's PAT, when an earlier run stored one.
    earlier_login: Option<String>,
    link: Option<crate::links::ConnectLink>,
}

fn instructions(shown: &Shown<'_>) -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            Some(
                p.strip_prefix(&cwd)
                    .map(|r| PathBuf::from(".").join(r))
                    .unwrap_or(p),
            )
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "patgate".into());
    let Shown {
        paths,
        addr,
        id,
        base_url,
        demo,
        ..
    } = shown;
    let d = paths.dir.display();
    let port = addr.port();
    let base = format!("https://localhost:{port}/git/{id}");
    // github.com's and GHE.com's API live at the root of their API hosts; Enterprise
    // Server's under /api/v3.
    let prefix = match base_url.parse() {
        Ok(url) => crate::hosts::github::Flavour::of(&url).api_prefix(),
        Err(_) => "/api/v3",
    };
    let common = format!("--cacert {d}/ca.pem --cert {d}/client.pem --key {d}/{APP_KEYID}.pem");
    let branch = r#"'{"ref":"refs/heads/PROJ-1-fix-login","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}'"#;
    let create = format!(
        "{exe} request {common} --account {DEMO_ACCOUNT} -d {branch} {base}{prefix}/repos/acme/api/git/refs"
    );
    let pat_url = format!("https://localhost:{port}/v1/integrations/{id}/users/{DEMO_ACCOUNT}/pat");
    let pat_file = if *demo {
        format!("{d}/demo-alice.pat")
    } else {
        "YOUR-PAT-FILE".to_string()
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\npatgate is serving on https://{addr} (Require User PAT is on for integration `{id}`)."
    );
    if *demo {
        let _ = writeln!(s, "Behind it is the DEMO host (a stand-in for GitHub Enterprise that prints which credential it received).");
    }
    if let Some(forgotten) = shown.forgotten {
        let _ = writeln!(
            s,
            "--fresh: removed {forgotten} user PAT(s) earlier runs stored in {d}/state."
        );
    }
    if let Some(login) = &shown.earlier_login {
        let _ = writeln!(
            s,
            "The vault in {d}/state still holds the PAT an earlier run stored for Jira user {DEMO_ACCOUNT} (host login {login}),\n\
so the steps below start with it; `{exe} dev --fresh` starts from a user without a PAT instead."
        );
    }
    if let Some(link) = &shown.link {
        let _ = writeln!(
            s,
            "The connect page for Jira user {DEMO_ACCOUNT}, to open in a browser (once; until {}; the browser will\n\
warn that it does not know the dev CA, {d}/ca.pem). The token to paste there is in {pat_file}:\n{}\n",
            link.expires_at, link.url
        );
    }
    let _ = writeln!(s, "In another terminal, from this directory:\n");
    let _ = writeln!(
        s,
        "# 1. A read: 200, done with the integration token (Patgate-Credential: integration)"
    );
    let _ = writeln!(s, "{exe} request {common} {base}{prefix}/repos/acme/api\n");
    let refused =
        "refused, 403 user-pat-required; its setup_url opens the connect page in a browser";
    match &shown.earlier_login {
        None => {
            let _ = writeln!(
                s,
                "# 2. Create a branch as Jira user {DEMO_ACCOUNT}: {refused}"
            );
            let _ = writeln!(s, "{create}\n");
            let _ = writeln!(s, "# 3. Store that user's PAT (patgate checks it with the host first, then keeps it encrypted): 200");
            let _ = writeln!(
                s,
                "printf '{{\"token\":\"%s\"}}' \"$(cat {pat_file})\" | {exe} request {common} -X PUT -d @- {pat_url}\n"
            );
            let _ = writeln!(s, "# 4. The same create-branch again: 201 Created, done with the user's PAT (Patgate-Credential: user)");
            let _ = writeln!(s, "{create}\n");
        }
        Some(login) => {
            let _ = writeln!(
                s,
                "# 2. Create a branch as Jira user {DEMO_ACCOUNT}: 201 Created, done with the PAT stored earlier (host login {login}; Patgate-Credential: user)"
            );
            let _ = writeln!(s, "{create}\n");
            let _ = writeln!(s, "# 3. Remove that user's PAT: 200, \"configured\":false");
            let _ = writeln!(s, "{exe} request {common} -X DELETE {pat_url}\n");
            let _ = writeln!(
                s,
                "# 4. The same create-branch again: {refused}, to enter the PAT again"
            );
            let _ = writeln!(s, "{create}\n");
        }
    }
    if let Some(admin) = shown.admin {
        let _ = writeln!(
            s,
            "# Health and metrics (plain HTTP, this machine only): http://{admin}/metrics, /ready, /live\n"
        );
    }
    let _ = writeln!(s, "Ctrl-C stops patgate. Config: {d}/patgate.toml");
    s
}
