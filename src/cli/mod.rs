//! The `patgate` command line: the service itself (`run`), the quickstart (`dev`), and the
//! admin and app-team tools.
//!
//! Secrets are read from standard input, never from arguments (argv is world-readable in
//! `/proc`).

/// `println!` for a command's output. A reader that stopped reading (`patgate vault list |
/// head`) ends the command quietly, with success, instead of a panic; any other write error
/// ends it with a message. Everything a command changed is durable before it prints.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

mod admin;
mod dev;
mod list;
mod request;
mod store;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::{Config, MasterKeySource};
use crate::listener::{Listeners, Server};
use crate::runtime::{IntegrationRuntime, Runtime};
use crate::vault::{Credential, MasterKey, Vault, VaultError, VaultOptions};

const DEFAULT_CONFIG: &str = "/etc/patgate/patgate.toml";

#[derive(Debug, Parser)]
#[command(
    name = "patgate",
    version,
    about = "Credential gateway between Git Integration for Jira and your git host"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, short = 'c', env = "PATGATE_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// [`ConfigArg`] beside a positional file: `patgate config check FILE` and `patgate config
/// check --config FILE` both work.
#[derive(Debug, Args)]
struct OptionalConfigArg {
    /// The configuration file (default: $PATGATE_CONFIG, else /etc/patgate/patgate.toml).
    #[arg(long, short = 'c', env = "PATGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Run(ConfigArg),
    /// A complete local setup: dev CA and certificates, app key, master key, vault, config,
    /// and patgate in front of a demo GitHub host (or a real host with --upstream).
    Dev(dev::DevArgs),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The credential vault.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Integration credentials.
    #[command(subcommand)]
    Integration(IntegrationCommand),
    /// Users' personal access tokens.
    #[command(subcommand)]
    Pat(PatCommand),
    /// App signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Send one signed request over mutual TLS and print the answer (like curl -i).
    Request(request::RequestArgs),
    /// The shared store (`[store] kind = "postgres"`).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create the database's schema, or upgrade it to this patgate's version (run it before
    /// the first start and after each upgrade; safe to run again).
    Migrate(ConfigArg),
    /// Show the database's schema version, and whether this patgate can run on it.
    Status(ConfigArg),
    /// Copy the vault between the sled files and PostgreSQL, either way, byte for byte, and
    /// check with the master key that every record decrypts from the copy.
    ///
    /// The PostgreSQL side is the config's `[store]` (`kind = "postgres"`: the config the
    /// replicas run with); the sled side is its state_dir, or --state-dir. Stop every patgate
    /// on the source first: the source is only read, and a sled directory in use is refused.
    /// The target must be empty (a migrated database, a new or empty directory), or hold
    /// exactly the source's records and settings (then there is nothing to do); any other
    /// vault is never written over. Refused before anything is copied: a source in the
    /// middle of a key rotation, a master key that does not open the source. A record that
    /// does not decrypt stops the copy (named by its id, never its contents). A copy that
    /// stops midway leaves the target with records but no vault, which nothing will use;
    /// running the copy again finishes it. Exits 1 on every refusal.
    Copy(store::CopyArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file, including the certificates and keys it names, and that
    /// every integration's host answers.
    Check {
        /// The file to check (or give it with --config, as to every other command; this one
        /// wins when both are given).
        file: Option<PathBuf>,
        #[command(flatten)]
        config: OptionalConfigArg,
        /// Do not contact the hosts (for a file prepared before the network is in place).
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Create the vault (and the master key file, when it is configured and missing).
    Init(ConfigArg),
    /// List what the vault holds: metadata only, never a secret. A table, or JSON with
    /// --json; times in RFC 3339 (UTC).
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: list::ListArgs,
    },
    /// Re-encrypt every record under a new master key (the running service keeps serving).
    /// With `master_key.file`, the new key replaces the file; with a systemd credential, the
    /// command says which file to put in its place.
    RotateKey {
        #[command(flatten)]
        config: ConfigArg,
        /// Only make the new key (`<key file>.new`) and stop: with several replicas, copy it
        /// to every other one before rotating.
        #[arg(long)]
        stage: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IntegrationCommand {
    /// Store the integration's credential, read from standard input (a GitHub App's private
    /// key: from --private-key-file, or standard input).
    SetSecret(SetSecretArgs),
}

#[derive(Debug, Args)]
struct SetSecretArgs {
    /// The integration id.
    id: String,
    #[command(flatten)]
    config: ConfigArg,
    /// The credential's form.
    #[arg(long = "type", value_enum, default_value = "token")]
    kind: SecretKind,
    /// For `username-password`: the user name (the password comes from standard input).
    #[arg(long)]
    username: Option<String>,
    /// For `aws`: the access key id (the secret access key comes from standard input, and an
    /// optional session token on a second line).
    #[arg(long)]
    access_key_id: Option<String>,
    /// For `aws`: the region. Default: the integration's (`region` in the config).
    #[arg(long)]
    region: Option<String>,
    /// For `github-app`: the App's id (its settings page, "App ID").
    #[arg(long)]
    app_id: Option<u64>,
    /// For `github-app`: the installation's id (the number at the end of the
    /// installation's settings URL).
    #[arg(long)]
    installation_id: Option<u64>,
    /// For `github-app`: the PEM file GitHub gave for the App's private key (`-` or absent:
    /// standard input).
    #[arg(long)]
    private_key_file: Option<PathBuf>,
    /// Store without asking the host whose credential it is (for a host not reachable yet).
    #[arg(long)]
    no_validate: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SecretKind {
    Token,
    UsernamePassword,
    Aws,
    /// A GitHub App installation (github integrations): patgate mints installation tokens.
    GithubApp,
}

#[derive(Debug, Subcommand)]
enum PatCommand {
    /// Validate a PAT with the git host and store it (the token is read from standard input).
    Set(PatArgs),
    /// Show whether a user has a PAT, whose it is and when it was validated.
    Status(PatArgs),
    /// Remove a user's PAT.
    Delete(PatArgs),
}

#[derive(Debug, Args)]
struct PatArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The integration id.
    #[arg(long)]
    integration: String,
    /// The user's Atlassian accountId.
    #[arg(long)]
    account: String,
    /// `set` on CodeCommit: the user's access key id; standard input then holds the secret
    /// access key, and for temporary credentials the session token on a second line.
    #[arg(long)]
    access_key_id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make an app signing key: Ed25519 (default) or an HMAC-SHA256 secret.
    Gen {
        /// The key id the app will send as `keyid`.
        #[arg(long)]
        keyid: String,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Make an HMAC-SHA256 shared secret instead of an Ed25519 key pair.
        #[arg(long)]
        hmac: bool,
    },
}

/// Runs the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("patgate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("patgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// See [`outln`].
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("patgate: cannot write the output: {err}");
        std::process::exit(1);
    }
}

/// Errors end the process with one line on stderr.
type CliResult = Result<ExitCode, String>;

async fn dispatch(command: Command) -> CliResult {
    match command {
        Command::Run(args) => run(&args.config).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Config(ConfigCommand::Check {
            file,
            config,
            offline,
        }) => {
            let file = file
                .or(config.config)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            config_check(&file, offline).await
        }
        Command::Vault(VaultCommand::Init(args)) => vault_init(&args.config).await,
        Command::Vault(VaultCommand::List { config, filter }) => {
            vault_list(&config.config, &filter).await
        }
        Command::Vault(VaultCommand::RotateKey { config, stage }) => {
            admin::rotate_key(&config.config, stage).await
        }
        Command::Integration(IntegrationCommand::SetSecret(args)) => set_secret(args).await,
        Command::Pat(command) => pat(command).await,
        Command::Keys(KeysCommand::Gen { keyid, out, hmac }) => keys_gen(&keyid, &out, hmac),
        Command::Request(args) => request::run(args).await,
        Command::Store(StoreCommand::Migrate(args)) => store::migrate(&args.config).await,
        Command::Store(StoreCommand::Status(args)) => store::status(&args.config).await,
        Command::Store(StoreCommand::Copy(args)) => store::copy(&args).await,
    }
}

fn load_config(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

/// The master key, from where the config says.
pub fn load_master_key(source: &MasterKeySource) -> Result<MasterKey, String> {
    match source {
        MasterKeySource::File(path) => MasterKey::load_file(path),
        MasterKeySource::SystemdCredential => MasterKey::from_systemd_credential(),
    }
    .map_err(|e| e.to_string())
}

/// How the config says the vault is opened (`[vault]`).
pub(crate) fn vault_options(config: &Config) -> VaultOptions {
    VaultOptions::default().cache_capacity_bytes(config.vault.cache_capacity_bytes)
}

/// The command an admin types to run `patgate {args}` on the config at `config_path`:
/// `--config` is left out for the default file.
fn command_for(args: &str, config_path: &Path) -> String {
    if config_path == Path::new(DEFAULT_CONFIG) {
        format!("patgate {args}")
    } else {
        format!("patgate {args} --config {}", config_path.display())
    }
}

async fn open_vault(config: &Config) -> Result<Vault, String> {
    open_state(config).await.map(|(vault, _)| vault)
}

/// The vault and the stores beside it, from where `[store]` says.
async fn open_state(config: &Config) -> Result<(Vault, crate::store::Stores), String> {
    if let Some(db) = store::open_database(config).await? {
        let key = load_master_key(&config.master_key)?;
        return store::open_vault(config, &db, &key).await;
    }
    let embedded = || crate::store::Stores::embedded(config.signatures.nonce_cache_entries);
    open_sled_vault(config)
        .await
        .map(|vault| (vault, embedded()))
}

async fn open_sled_vault(config: &Config) -> Result<Vault, String> {
    // Neither the key file nor the vault exists yet: the one command that makes both.
    if let MasterKeySource::File(path) = &config.master_key {
        if !path.exists() {
            return Err(format!(
                "the master key file {} (master_key.file) does not exist: make it and the vault with `{}`",
                path.display(),
                command_for("vault init", &config.source)
            ));
        }
    }
    let key = load_master_key(&config.master_key)?;
    match Vault::open_with(&config.state_dir, &key, &vault_options(config)).await {
        Ok(vault) => Ok(vault),
        Err(VaultError::NotInitialized { path }) => Err(format!(
            "there is no vault in {} (state_dir): make it with `{}`",
            path.display(),
            command_for("vault init", &config.source)
        )),
        Err(e @ VaultError::Locked { .. }) => Err(format!(
            "{e}. The admin commands reach a running service through its admin socket, {} by this config: is admin.socket the same in the service's config?",
            config.admin.socket.display()
        )),
        // An interrupted key rotation: its new key is in the pending key file.
        Err(e @ (VaultError::RotationInterrupted { .. } | VaultError::WrongMasterKey { .. })) => {
            Ok(admin::open_with_pending_key(config, None, e).await?.0)
        }
        Err(other) => Err(other.to_string()),
    }
}

async fn run(config_path: &Path) -> CliResult {
    use tokio::signal::unix::{signal, SignalKind};
    let config = load_config(config_path)?;
    crate::telemetry::init(&config.log)?;
    crate::listener::ensure_descriptors(&config.connections);
    let (vault, stores) = open_state(&config).await?;
    let runtime = Runtime::start_with(config, Arc::new(vault), Clock::system(), stores)
        .await
        .map_err(|e| e.to_string())?;
    let listeners = Listeners::bind(runtime.config()).await?;
    let server = Server::new(runtime);
    // Signal handlers before READY=1: from then on systemd may send SIGHUP or SIGTERM, and
    // without a handler either would kill the process.
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let hangup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    let handle = server.handle();
    let runtime = handle.runtime();
    if let Some(addr) = listeners.api_addr() {
        tracing::info!(%addr, integrations = runtime.integration_count(), "patgate is serving");
    }
    if let Some(admin) = listeners.admin_addr() {
        tracing::info!(%admin, "admin listener: http://{admin}/metrics, /ready, /live");
    }
    // An integration without its secret serves nothing but 503s: say so, with the fix.
    for id in runtime
        .integrations_without_secret()
        .await
        .map_err(|e| e.to_string())?
    {
        tracing::warn!(
            integration = %id,
            "integration `{id}` has no secret in the vault: every request through it answers 503 until an admin stores one with `patgate integration set-secret {id} --config {}`",
            config_path.display()
        );
    }
    // A GitHub App integration gets its first installation token now rather than on the
    // first request; one that cannot is logged (naming the integration) and answers 503.
    let apps = runtime.clone();
    tokio::spawn(async move {
        apps.github_apps_without_token().await;
    });
    // A host that is down at start is worth a warning, not a refusal to start: patgate keeps
    // serving the other integrations and answers 502 for this one until it is back.
    for integration in runtime.integrations() {
        let id = integration.id().to_string();
        let upstream = integration.upstream().clone();
        tokio::spawn(async move {
            match upstream.probe().await {
                Ok(status) => {
                    tracing::info!(integration = %id, status = status.as_u16(), "host answers")
                }
                Err(err) => tracing::warn!(integration = %id, error = %err, "host does not answer"),
            }
        });
    }
    tokio::spawn(reload_on_sighup(hangup, handle.clone()));
    crate::service::ready(&crate::service::serving_status(&handle));
    crate::service::spawn_watchdog(handle.clone());
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
        crate::service::stopping();
    };
    drop(runtime);
    server.run(listeners, shutdown).await;
    tracing::info!("patgate stopped");
    Ok(ExitCode::SUCCESS)
}

/// Each SIGHUP reloads the configuration, between `RELOADING=1` and `READY=1`. A refused
/// reload still ends with `READY=1` (the previous configuration serves) and a `STATUS=`
/// line saying why.
async fn reload_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    handle: crate::listener::ServerHandle,
) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        crate::service::reloading();
        let status = match handle.reload().await {
            Ok(_) => crate::service::serving_status(&handle),
            Err(err) => format!("reload failed, the previous configuration serves: {err}"),
        };
        crate::service::ready(&status);
    }
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
}

async fn config_check(file: &Path, offline: bool) -> CliResult {
    let mut config = load_config(file)?;
    if config
        .integrations
        .iter()
        .any(|i| i.tfs_version == Some(crate::config::TfsVersion::Auto))
    {
        // Detection asks the server with the integration's secret, so it needs the vault.
        // While the service runs the vault is locked: say so rather than fail a good file.
        match open_vault(&config).await {
            Ok(vault) => {
                crate::runtime::detect_tfs_releases(&mut config, &vault, &Clock::system())
                    .await
                    .map_err(|e| e.to_string())?;
                for integration in &config.integrations {
                    if let Some(crate::config::TfsVersion::Release(release)) =
                        integration.tfs_version
                    {
                        outln!("integration `{}`: {release}", integration.id);
                    }
                }
            }
            Err(why) => eprintln!(
                "note: TFS `version = \"auto\"` was not checked: the vault cannot be opened ({why})"
            ),
        }
    }
    let materials =
        crate::runtime::check_materials(&config, &Clock::system()).map_err(|e| e.to_string())?;
    if !offline {
        for (index, integration) in config.integrations.iter().enumerate() {
            let Some(runtime) = materials.integrations.get(&integration.id) else {
                continue;
            };
            let status = runtime.upstream().probe().await.map_err(|e| {
                format!(
                    "{}: integrations[{index}].base_url: integration `{}` at {}: {e} (run with --offline to skip this check)",
                    file.display(),
                    integration.id,
                    integration.base_url
                )
            })?;
            outln!(
                "integration `{}` ({}): {} answers (HTTP {})",
                integration.id,
                integration.kind.as_str(),
                integration.base_url,
                status.as_u16()
            );
        }
    }
    if let MasterKeySource::File(path) = &config.master_key {
        if path.exists() {
            MasterKey::load_file(path)
                .map_err(|e| format!("{}: master_key.file: {e}", file.display()))?;
        }
    }
    store::check(&config, offline).await?;
    check_secrets_stored(file, &config, (!offline).then_some(&materials.integrations)).await?;
    outln!(
        "{}: OK ({} integration(s), {} app key(s))",
        file.display(),
        config.integrations.len(),
        config.app_keys.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Says which integrations have no secret in the vault (their requests would all answer
/// 503), with the command that stores one. A vault that cannot be opened here (the service
/// holds it, or it was never made) is a note, not an error: the file itself may be good.
/// With the hosts (`hosts`, unless `--offline`), a GitHub App integration account must get
/// an installation token: one that cannot is an error.
async fn check_secrets_stored(
    file: &Path,
    config: &Config,
    hosts: Option<&std::collections::HashMap<String, IntegrationRuntime>>,
) -> Result<(), String> {
    let vault = match open_vault(config).await {
        Ok(vault) => vault,
        Err(why) => {
            eprintln!("note: the integrations' secrets were not checked: {why}");
            return Ok(());
        }
    };
    for (index, integration) in config.integrations.iter().enumerate() {
        match vault.has_integration_secret(&integration.id).await {
            Ok(true) => {
                if let Some(runtime) = hosts.and_then(|h| h.get(&integration.id)) {
                    check_github_app(file, index, runtime, &vault).await?;
                }
            }
            Ok(false) => eprintln!(
                "warning: integration `{id}` has no secret in the vault: every request through it will answer 503 until `patgate integration set-secret {id} --config {}` stores one",
                file.display(),
                id = integration.id
            ),
            Err(err) => eprintln!(
                "note: the secret of integration `{}` was not checked: {err}",
                integration.id
            ),
        }
    }
    Ok(())
}

/// For an integration whose account is a GitHub App: which App and installation it is, and
/// that an installation token can be had.
async fn check_github_app(
    file: &Path,
    index: usize,
    runtime: &IntegrationRuntime,
    vault: &Vault,
) -> Result<(), String> {
    if runtime.config().kind != crate::config::HostKind::Github {
        return Ok(());
    }
    let credential = vault
        .integration_secret(runtime.id())
        .await
        .map_err(|e| e.to_string())?;
    let Some(app) = credential.as_ref().and_then(crate::app_tokens::App::of) else {
        return Ok(());
    };
    let identity = crate::app_tokens::identify(&runtime.app_target(), &app)
        .await
        .map_err(|e| {
            format!(
                "{}: integrations[{index}]: {e} (run with --offline to skip this check)",
                file.display()
            )
        })?;
    outln!(
        "integration `{}`: {}: an installation token was issued",
        runtime.id(),
        identity.login
    );
    Ok(())
}

async fn vault_init(config_path: &Path) -> CliResult {
    let config = load_config(config_path)?;
    if let MasterKeySource::File(path) = &config.master_key {
        if !path.exists() {
            MasterKey::generate()
                .write_new(path)
                .map_err(|e| e.to_string())?;
            outln!("made a new master key at {} (mode 0600); back it up: without it the vault cannot be read", path.display());
        }
    }
    if let Some(db) = store::open_database(&config).await? {
        store::init_vault(&config, &db).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let key = load_master_key(&config.master_key)?;
    Vault::init_with(&config.state_dir, &key, &vault_options(&config))
        .await
        .map_err(|e| e.to_string())?;
    outln!("made the vault in {}", config.state_dir.display());
    Ok(ExitCode::SUCCESS)
}

async fn vault_list(config_path: &Path, filter: &list::ListArgs) -> CliResult {
    let config = load_config(config_path)?;
    let records = match admin::service(&config).await? {
        Some(mut service) => admin::vault_records(&mut service).await?,
        None => {
            let vault = open_vault(&config).await?;
            let records = vault.list().await.map_err(|e| e.to_string())?;
            // The vault is closed before the output is written (a slow reader of the
            // table must not hold the vault's lock).
            drop(vault);
            records.into_iter().map(list::Summary::from).collect()
        }
    };
    list::print(filter, records)
}

/// Reads a secret from standard input: its non-empty lines, trimmed. At a terminal the
/// secret is typed without echo, one prompt per line: `what`, then `second` when the
/// credential may have a second line (an AWS session token; Enter for none). From a pipe or
/// a file, every line is read as it comes.
fn read_secret_lines(what: &str, second: Option<&str>) -> Result<Vec<SecretString>, String> {
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        let prompt = |label: &str| {
            rpassword::prompt_password(format!("{label} (not shown as you type): "))
                .map(zeroize::Zeroizing::new)
                .map_err(|e| format!("cannot read {label} from the terminal: {e}"))
        };
        let mut text = prompt(what)?;
        if let Some(second) = second {
            let more = prompt(second)?;
            text.push('\n');
            text.push_str(&more);
        }
        text
    } else {
        let mut text = zeroize::Zeroizing::new(String::new());
        stdin
            .lock()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        text
    };
    let lines: Vec<SecretString> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| SecretString::from(l.to_string()))
        .collect();
    if lines.is_empty() {
        return Err(format!("no {what} on standard input"));
    }
    Ok(lines)
}

async fn set_secret(args: SetSecretArgs) -> CliResult {
    let config = load_config(&args.config.config)?;
    crate::telemetry::init_for_command(&config.log)?;
    let (index, integration) = config
        .integrations
        .iter()
        .enumerate()
        .find(|(_, i)| i.id == args.id)
        .ok_or_else(|| {
            format!(
                "no integration `{}` in {}",
                args.id,
                config.source.display()
            )
        })?;
    let credential = match args.kind {
        SecretKind::GithubApp => github_app_credential(&args)?,
        _ => secret_from_lines(&args, integration)?,
    };
    if let Some(mut service) = admin::service(&config).await? {
        let host_login =
            admin::set_secret(&mut service, &args.id, &credential, args.no_validate).await?;
        print_secret_stored(&args.id, &credential, host_login);
        return Ok(ExitCode::SUCCESS);
    }
    let runtime =
        IntegrationRuntime::build(&config.source, index, integration, &Clock::system(), 0)
            .map_err(|e| e.to_string())?;
    runtime.adapter().accepts(&credential).map_err(|e| {
        format!(
            "integration `{}` ({}): {e}",
            args.id,
            integration.kind.as_str()
        )
    })?;
    // Asked before the vault is opened, so a refused credential leaves the vault as it was.
    let host_login = if args.no_validate {
        None
    } else {
        let identity = crate::pat::who_am_i_integration(&runtime, &credential)
            .await
            .map_err(|e| {
                format!("not stored: {e} (use --no-validate to store it without asking the host)")
            })?;
        Some(identity.login)
    };
    let vault = open_vault(&config).await?;
    vault
        .put_integration_secret(&args.id, &credential)
        .await
        .map_err(|e| e.to_string())?;
    crate::audit::integration_secret_changed(
        crate::audit::Via::Cli(crate::audit::OsUser::current()),
        &args.id,
    );
    print_secret_stored(&args.id, &credential, host_login);
    Ok(ExitCode::SUCCESS)
}

/// A GitHub App: the ids from the arguments, the private key from its file or standard
/// input (never from an argument), checked to be an RSA key patgate can sign with.
fn github_app_credential(args: &SetSecretArgs) -> Result<Credential, String> {
    let app_id = args
        .app_id
        .ok_or("--app-id is required with --type github-app")?;
    let installation_id = args
        .installation_id
        .ok_or("--installation-id is required with --type github-app")?;
    let private_key = read_private_key(args.private_key_file.as_deref())?;
    crate::app_tokens::check_key(&private_key)
        .map_err(|e| format!("not stored: the GitHub App's private key: {e}"))?;
    Ok(Credential::GithubApp {
        app_id,
        installation_id,
        private_key,
    })
}

/// A PEM private key from `file`, or from standard input (`-` or no file), which must not be
/// a terminal (a PEM is many lines: give the file, or pipe it).
fn read_private_key(file: Option<&Path>) -> Result<SecretString, String> {
    use std::io::IsTerminal as _;
    const LIMIT: u64 = 64 * 1024;
    let mut text = zeroize::Zeroizing::new(String::with_capacity(LIMIT as usize));
    match file.filter(|f| *f != Path::new("-")) {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(LIMIT).read_to_string(&mut text))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None if std::io::stdin().is_terminal() => {
            return Err("give the App's private key with --private-key-file FILE, or pipe the PEM to standard input".into())
        }
        None => std::io::stdin()
            .lock()
            .take(LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?,
    };
    if text.trim().is_empty() {
        return Err("no private key: the file or standard input is empty".into());
    }
    Ok(SecretString::from(text.as_str()))
}

/// A token, a password or an AWS key pair from standard input, with the arguments' names.
fn secret_from_lines(
    args: &SetSecretArgs,
    integration: &crate::config::Integration,
) -> Result<Credential, String> {
    let second = matches!(args.kind, SecretKind::Aws)
        .then_some("the session token, if the key pair has one (Enter for none)");
    let what = match args.kind {
        SecretKind::Token | SecretKind::GithubApp => "the integration's token",
        SecretKind::UsernamePassword => "the password",
        SecretKind::Aws => "the secret access key",
    };
    let mut lines = read_secret_lines(what, second)?.into_iter();
    let first = lines.next().ok_or("no secret on standard input")?;
    Ok(match args.kind {
        SecretKind::Token | SecretKind::GithubApp => Credential::Token(first),
        SecretKind::UsernamePassword => Credential::UsernamePassword {
            username: args
                .username
                .clone()
                .ok_or("--username is required with --type username-password")?,
            password: first,
        },
        SecretKind::Aws => Credential::Aws {
            access_key_id: args
                .access_key_id
                .clone()
                .ok_or("--access-key-id is required with --type aws")?,
            secret_access_key: first,
            session_token: lines.next(),
            region: args
                .region
                .clone()
                .or_else(|| integration.codecommit.as_ref().map(|c| c.region.clone()))
                .ok_or("--region is required with --type aws")?,
        },
    })
}

fn print_secret_stored(id: &str, credential: &Credential, host_login: Option<String>) {
    match host_login {
        Some(login) => outln!(
            "stored the {} secret of integration `{id}`; the host says it belongs to {login}",
            credential.kind_name(),
        ),
        None => outln!(
            "stored the {} secret of integration `{id}` without validating it (--no-validate)",
            credential.kind_name(),
        ),
    }
}

async fn pat(command: PatCommand) -> CliResult {
    let (args, action) = match command {
        PatCommand::Set(a) => (a, "set"),
        PatCommand::Status(a) => (a, "status"),
        PatCommand::Delete(a) => (a, "delete"),
    };
    if let Err(why) = crate::ids::AccountId::parse(&args.account) {
        return Err(format!(
            "`{}` is not an Atlassian accountId: {why}",
            args.account
        ));
    }
    let config = load_config(&args.config.config)?;
    crate::telemetry::init_for_command(&config.log)?;
    let (index, _) = config
        .integrations
        .iter()
        .enumerate()
        .find(|(_, i)| i.id == args.integration)
        .ok_or_else(|| {
            format!(
                "no integration `{}` in {}",
                args.integration,
                config.source.display()
            )
        })?;
    if let Some(mut service) = admin::service(&config).await? {
        let input = match action {
            "set" => Some(read_pat_input(args.access_key_id.clone())?),
            _ => None,
        };
        return admin::pat(
            &mut service,
            action,
            &args.integration,
            &args.account,
            input,
        )
        .await;
    }
    let vault = open_vault(&config).await?;
    let mut config = config;
    crate::runtime::detect_tfs_releases(&mut config, &vault, &Clock::system())
        .await
        .map_err(|e| e.to_string())?;
    let integration = &config.integrations[index];
    let runtime =
        IntegrationRuntime::build(&config.source, index, integration, &Clock::system(), 0)
            .map_err(|e| e.to_string())?;
    let meta = match action {
        "set" => {
            let input = read_pat_input(args.access_key_id.clone())?;
            let credential = input.into_credential(integration)?;
            let meta = crate::pat::validate_and_store(
                &runtime,
                &vault,
                &Clock::system(),
                &args.account,
                &credential,
            )
            .await
            .map_err(|e| {
                let message = format!("not stored: {e}");
                let problem = crate::error::Problem::of(&e);
                crate::audit::pat_refused(
                    crate::audit::Via::Cli(crate::audit::OsUser::current()),
                    &args.integration,
                    &args.account,
                    problem.code.as_str(),
                );
                message
            })?;
            crate::audit::pat_stored(
                crate::audit::Via::Cli(crate::audit::OsUser::current()),
                &args.integration,
                &args.account,
                &meta.host_login,
            );
            Some(meta)
        }
        "delete" => {
            let removed = vault
                .delete_user_pat(&args.integration, &args.account)
                .await
                .map_err(|e| e.to_string())?;
            if removed {
                crate::audit::pat_removed(
                    crate::audit::Via::Cli(crate::audit::OsUser::current()),
                    &args.integration,
                    &args.account,
                );
            } else {
                eprintln!("there was no PAT for this user");
            }
            None
        }
        _ => vault
            .user_pat_meta(&args.integration, &args.account)
            .await
            .map_err(|e| e.to_string())?,
    };
    let status = crate::api::PatStatus::new(
        &runtime,
        &args.account,
        meta,
        crate::clock::Clock::system().unix_now(),
    );
    outln!(
        "{}",
        serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}

/// A PAT from standard input: a token, or with `--access-key-id` the secret access key (and
/// an optional session token on a second line).
fn read_pat_input(access_key_id: Option<String>) -> Result<crate::pat::PatInput, String> {
    let (what, second) = match access_key_id {
        Some(_) => (
            "the secret access key",
            Some("the session token, if the key pair has one (Enter for none)"),
        ),
        None => ("the personal access token", None),
    };
    let mut lines = read_secret_lines(what, second)?.into_iter();
    let first = lines.next().ok_or("no token")?;
    Ok(match access_key_id {
        Some(access_key_id) => crate::pat::PatInput {
            token: None,
            access_key_id: Some(access_key_id),
            secret_access_key: Some(first),
            session_token: lines.next(),
        },
        None => crate::pat::PatInput {
            token: Some(first),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        },
    })
}

fn keys_gen(keyid: &str, out: &Path, hmac: bool) -> CliResult {
    let made = crate::keys::generate(keyid, out, hmac).map_err(|e| e.to_string())?;
    outln!("{made}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vault_is_opened_with_the_configured_page_cache() {
        let text = crate::config::TEST_MINIMAL;
        let config = Config::parse(Path::new("/etc/patgate/patgate.toml"), text).unwrap();
        assert_eq!(
            vault_options(&config).cache_capacity_bytes,
            crate::config::defaults::VAULT_CACHE_CAPACITY_MIB * 1024 * 1024
        );
        let text = format!("{text}[vault]\ncache_capacity_mib = 7\n");
        let config = Config::parse(Path::new("/etc/patgate/patgate.toml"), &text).unwrap();
        assert_eq!(vault_options(&config).cache_capacity_bytes, 7 * 1024 * 1024);
    }
}
