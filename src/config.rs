//! The configuration file: typed, validated once, and reported precisely when wrong.
//!
//! One TOML file. Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! falls back to a default. Relative paths are resolved against the directory of the file, so
//! a config and its certificates can move together. `config/patgate.example.toml` documents
//! every key with its default; a test keeps the two in step.
//!
//! [`Config::load`] checks the syntax and the values. It does not read certificates or keys:
//! [`crate::server::Runtime::build`] does, and reports failures with the same
//! [`ConfigError`] shape (file, key, reason), so `patgate config check` covers both.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where a bad setting is and why it is bad.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {reason}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the key, e.g. `integrations[0].base_url`; empty for whole-file errors.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and reloads).
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub master_key: MasterKeySource,
    pub api: ApiListener,
    pub signatures: SignatureSettings,
    pub app_keys: Vec<AppKeyConfig>,
    pub integrations: Vec<Integration>,
    /// The connect page's listener; without it no connect links are made.
    pub connect: Option<ConnectListener>,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub service: ServiceSettings,
    pub vault: VaultSettings,
    /// `[rate_limits]`: local quotas and holds when the host throttles.
    pub rate_limits: crate::ratelimit::RateLimitSettings,
}

/// How the process itself behaves: shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// After SIGTERM: how long in-flight requests get to finish before their connections
    /// are closed. systemd's `TimeoutStopSec` must be longer.
    pub shutdown_grace: Duration,
}

/// How the vault's store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// The size of sled's page cache. Records outside it are read from the file (usually the
    /// OS page cache) when used; this bounds how much of the store the process keeps in memory.
    pub cache_capacity_bytes: u64,
}

/// Operators' access to the running service.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Plain-HTTP listener for `/live`, `/ready` and `/metrics`; loopback only. `None`
    /// when switched off (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// The Unix socket the `patgate` command reaches the running service on (mode 0600).
    pub socket: PathBuf,
}

/// The listener that serves the connect page to browsers: server TLS only (browsers have
/// no client certificate); every page is opened from a one-time signed link.
#[derive(Debug, Clone)]
pub struct ConnectListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The origin users reach the listener at, e.g. `https://patgate.example.com:8444`
    /// (no trailing slash); links are `{public_url}/connect/{token}`.
    pub public_url: String,
    /// How long a link (and the page opened from it) stays valid.
    pub link_ttl: Duration,
}

/// Where the vault's master key comes from. It never sits in this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A file readable by the service user alone (mode 0600 or stricter).
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/master-key`, from systemd's `LoadCredential=`.
    SystemdCredential,
}

/// The listener the Jira app calls: TLS with a required client certificate.
#[derive(Debug, Clone)]
pub struct ApiListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM or DER) checked at each handshake; empty: none.
    pub crl: Vec<PathBuf>,
    /// When non-empty, the client certificate must carry one of these SANs
    /// (`dns:name` or `uri:value`).
    pub allowed_client_sans: Vec<ClientSan>,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// One entry of the client certificate allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientSan {
    Dns(String),
    Uri(String),
}

impl fmt::Display for ClientSan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientSan::Dns(name) => write!(f, "dns:{name}"),
            ClientSan::Uri(uri) => write!(f, "uri:{uri}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SignatureSettings {
    pub max_skew: Duration,
    pub max_validity: Duration,
    pub nonce_cache_entries: usize,
}

/// A key the Jira app signs with.
#[derive(Debug, Clone)]
pub struct AppKeyConfig {
    pub keyid: String,
    pub material: AppKeyMaterial,
}

#[derive(Debug, Clone)]
pub enum AppKeyMaterial {
    /// Raw 32-byte Ed25519 public key, standard base64.
    Ed25519PublicKey(String),
    /// A file holding the shared HMAC secret (at least 32 bytes; raw, or base64 on one line).
    HmacSecretFile(PathBuf),
}

/// A git host patgate forwards to.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub id: String,
    pub kind: HostKind,
    /// Scheme, authority and optional path prefix, without a trailing slash.
    pub base_url: http::Uri,
    pub roots: TrustRoots,
    pub extra_ca: Option<PathBuf>,
    pub require_user_pat: bool,
    pub allow_other_writes: bool,
    pub connect_timeout: Duration,
    /// For the host's response head, then for each further piece of its body.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Set for `kind = "codecommit"` only.
    pub codecommit: Option<CodeCommitSettings>,
    /// The server release, for `tfs` only (`None` for every other kind). `auto` is replaced
    /// by the detected release at start ([`crate::server::detect_host_versions`]).
    pub tfs_version: Option<TfsVersion>,
}

/// What a CodeCommit integration needs beyond a base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeCommitSettings {
    /// The AWS region requests are signed for, e.g. `eu-west-1`.
    pub region: String,
    /// Where STS `GetCallerIdentity` (who am I) is sent: `https://sts.{region}.amazonaws.com`
    /// unless the file says otherwise.
    pub sts_endpoint: http::Uri,
}

/// The `version` key of a `tfs` integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TfsVersion {
    /// Ask the server at start.
    Auto,
    Release(TfsRelease),
}

/// Azure DevOps Server / Team Foundation Server releases, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TfsRelease {
    Tfs2013,
    Tfs2015,
    Tfs2017,
    Tfs2018,
    Server2019,
    Server2020,
    Server2022,
}

impl TfsRelease {
    pub const ALL: [TfsRelease; 7] = [
        TfsRelease::Tfs2013,
        TfsRelease::Tfs2015,
        TfsRelease::Tfs2017,
        TfsRelease::Tfs2018,
        TfsRelease::Server2019,
        TfsRelease::Server2020,
        TfsRelease::Server2022,
    ];

    /// The year as written in the config file.
    pub fn year(self) -> u16 {
        match self {
            TfsRelease::Tfs2013 => 2013,
            TfsRelease::Tfs2015 => 2015,
            TfsRelease::Tfs2017 => 2017,
            TfsRelease::Tfs2018 => 2018,
            TfsRelease::Server2019 => 2019,
            TfsRelease::Server2020 => 2020,
            TfsRelease::Server2022 => 2022,
        }
    }

    /// Personal access tokens exist from TFS 2017 on.
    pub fn has_pats(self) -> bool {
        self >= TfsRelease::Tfs2017
    }
}

impl fmt::Display for TfsRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TfsRelease::Tfs2013
            | TfsRelease::Tfs2015
            | TfsRelease::Tfs2017
            | TfsRelease::Tfs2018 => {
                write!(f, "TFS {}", self.year())
            }
            _ => write!(f, "Azure DevOps Server {}", self.year()),
        }
    }
}

/// Which host adapter applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// GitHub Enterprise Server (`/api/v3`) and github.com (`https://api.github.com`).
    Github,
    /// AWS CodeCommit (`https://codecommit.{region}.amazonaws.com`, JSON 1.1, SigV4).
    Codecommit,
    /// GitLab self-managed and gitlab.com (`/api/v4`).
    Gitlab,
    /// Azure DevOps Services: `https://dev.azure.com/{org}` or `https://{org}.visualstudio.com`.
    AzureDevops,
    /// Azure DevOps Server / Team Foundation Server 2013 to 2022: the collection URL.
    Tfs,
}

impl HostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Github => "github",
            HostKind::Codecommit => "codecommit",
            HostKind::Gitlab => "gitlab",
            HostKind::AzureDevops => "azure-devops",
            HostKind::Tfs => "tfs",
        }
    }
}

/// The CA certificates patgate trusts for an integration's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustRoots {
    /// The operating system's store (plus `extra_ca`).
    System,
    /// Mozilla's root program as shipped in patgate (plus `extra_ca`).
    Webpki,
    /// Only `extra_ca`: for a host with a private CA, trust nothing else.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `patgate=debug,hyper=info`.
    pub level: String,
    pub format: LogFormat,
    /// When set, audit events are also appended to this file as JSON lines.
    pub audit_file: Option<PathBuf>,
}

// ---- the file as written -------------------------------------------------------------------

/// Defaults live here, next to the keys; the example file repeats them and a test checks
/// that it does.
pub mod defaults {
    /// `connect.link_ttl_seconds`: 15 minutes.
    pub const LINK_TTL_SECONDS: u64 = 900;
    pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    pub const MAX_SKEW_SECONDS: u64 = 5;
    pub const MAX_VALIDITY_SECONDS: u64 = 60;
    /// Upper bound for both windows, from the contract.
    pub const WINDOW_CAP_SECONDS: u64 = 300;
    pub const NONCE_CACHE_ENTRIES: usize = 200_000;
    pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
    pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    pub const LOG_LEVEL: &str = "info";
    /// `admin.listen`: loopback, the port OpenTelemetry's Prometheus exporter uses.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9464";
    /// `admin.socket`, relative to `state_dir`.
    pub const ADMIN_SOCKET: &str = "admin.sock";
    /// `version` of a `tfs` integration.
    pub const TFS_VERSION: &str = "auto";
    /// `service.shutdown_grace_seconds`: below systemd's default `TimeoutStopSec` (90 s) and
    /// long enough for a slow host's answer.
    pub const SHUTDOWN_GRACE_SECONDS: u64 = 30;
    /// Upper bound for `service.shutdown_grace_seconds`.
    pub const SHUTDOWN_GRACE_CAP_SECONDS: u64 = 3600;
    /// `vault.cache_capacity_mib`: sled's page cache, in MiB. Small, so the memory the vault
    /// takes does not grow with the number of stored PATs; a PAT outside the cache is read
    /// from the file when used, about 10 µs more (BENCHMARKS.md has both figures).
    pub const VAULT_CACHE_CAPACITY_MIB: u64 = 4;
    /// Upper bound for `vault.cache_capacity_mib` (sled's own default is 1 GiB).
    pub const VAULT_CACHE_CAPACITY_CAP_MIB: u64 = 1024;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: PathBuf,
    master_key: RawMasterKey,
    api: RawApi,
    #[serde(default)]
    signatures: RawSignatures,
    #[serde(default)]
    app_keys: Vec<RawAppKey>,
    #[serde(default)]
    integrations: Vec<RawIntegration>,
    #[serde(default)]
    connect: Option<RawConnect>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    service: RawService,
    #[serde(default)]
    vault: RawVault,
    #[serde(default)]
    rate_limits: crate::ratelimit::settings::RawRateLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default = "d_shutdown_grace")]
    shutdown_grace_seconds: u64,
}

impl Default for RawService {
    fn default() -> Self {
        RawService {
            shutdown_grace_seconds: d_shutdown_grace(),
        }
    }
}

fn d_shutdown_grace() -> u64 {
    defaults::SHUTDOWN_GRACE_SECONDS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    #[serde(default = "d_vault_cache")]
    cache_capacity_mib: u64,
}

impl Default for RawVault {
    fn default() -> Self {
        RawVault {
            cache_capacity_mib: d_vault_cache(),
        }
    }
}

fn d_vault_cache() -> u64 {
    defaults::VAULT_CACHE_CAPACITY_MIB
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "d_admin_listen")]
    listen: String,
    socket: Option<PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: d_admin_listen(),
            socket: None,
        }
    }
}

fn d_admin_listen() -> String {
    defaults::ADMIN_LISTEN.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnect {
    listen: String,
    cert: PathBuf,
    key: PathBuf,
    public_url: String,
    #[serde(default = "d_link_ttl")]
    link_ttl_seconds: u64,
}

fn d_link_ttl() -> u64 {
    defaults::LINK_TTL_SECONDS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasterKey {
    file: Option<PathBuf>,
    #[serde(default)]
    systemd_credential: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    crl: Vec<PathBuf>,
    #[serde(default)]
    allowed_client_sans: Vec<String>,
    #[serde(default = "d_handshake")]
    handshake_timeout_ms: u64,
    #[serde(default = "d_header_read")]
    header_read_timeout_ms: u64,
    #[serde(default = "d_max_header")]
    max_header_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignatures {
    #[serde(default = "d_skew")]
    max_skew_seconds: u64,
    #[serde(default = "d_validity")]
    max_validity_seconds: u64,
    #[serde(default = "d_nonces")]
    nonce_cache_entries: usize,
}

impl Default for RawSignatures {
    fn default() -> Self {
        RawSignatures {
            max_skew_seconds: defaults::MAX_SKEW_SECONDS,
            max_validity_seconds: defaults::MAX_VALIDITY_SECONDS,
            nonce_cache_entries: defaults::NONCE_CACHE_ENTRIES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppKey {
    keyid: String,
    ed25519_public_key: Option<String>,
    hmac_secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    id: String,
    kind: HostKind,
    base_url: String,
    #[serde(default = "d_roots")]
    roots: TrustRoots,
    extra_ca: Option<PathBuf>,
    #[serde(default)]
    require_user_pat: bool,
    #[serde(default)]
    allow_other_writes: bool,
    #[serde(default = "d_connect")]
    connect_timeout_ms: u64,
    #[serde(default = "d_request")]
    request_timeout_ms: u64,
    #[serde(default = "d_body")]
    max_body_bytes: usize,
    /// CodeCommit only.
    region: Option<String>,
    /// CodeCommit only.
    sts_endpoint: Option<String>,
    version: Option<RawTfsVersion>,
}

/// `version = 2015` and `version = "2015"` both read naturally; accept both.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTfsVersion {
    Year(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "d_level")]
    level: String,
    #[serde(default = "d_format")]
    format: LogFormat,
    #[serde(default)]
    audit_file: Option<PathBuf>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: d_level(),
            format: d_format(),
            audit_file: None,
        }
    }
}

fn d_handshake() -> u64 {
    defaults::HANDSHAKE_TIMEOUT_MS
}
fn d_header_read() -> u64 {
    defaults::HEADER_READ_TIMEOUT_MS
}
fn d_max_header() -> usize {
    defaults::MAX_HEADER_BYTES
}
fn d_skew() -> u64 {
    defaults::MAX_SKEW_SECONDS
}
fn d_validity() -> u64 {
    defaults::MAX_VALIDITY_SECONDS
}
fn d_nonces() -> usize {
    defaults::NONCE_CACHE_ENTRIES
}
fn d_roots() -> TrustRoots {
    TrustRoots::System
}
fn d_connect() -> u64 {
    defaults::CONNECT_TIMEOUT_MS
}
fn d_request() -> u64 {
    defaults::REQUEST_TIMEOUT_MS
}
fn d_body() -> usize {
    defaults::MAX_BODY_BYTES
}
fn d_level() -> String {
    defaults::LOG_LEVEL.to_string()
}
fn d_format() -> LogFormat {
    LogFormat::Text
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "", format!("cannot read the file: {e}")))?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if it were the file at `path` (relative paths resolve against
    /// its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ConfigError::new(path, key, toml_reason(e.inner()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Validator { file: path, base }.config(raw)
    }
}

/// toml's messages start with a multi-line source excerpt; keep the line number and the
/// reason on one line.
fn toml_reason(err: &toml::de::Error) -> String {
    let message = err.message().trim().to_string();
    match err.span() {
        Some(span) => message + &format!(" (at byte {})", span.start),
        None => message,
    }
}

struct Validator<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
        ConfigError::new(self.file, key, reason)
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let master_key = match (raw.master_key.file, raw.master_key.systemd_credential) {
            (Some(file), false) => MasterKeySource::File(self.path(file)),
            (None, true) => MasterKeySource::SystemdCredential,
            (Some(_), true) => {
                return Err(self.err(
                    "master_key",
                    "set either `file` or `systemd_credential = true`, not both",
                ))
            }
            (None, false) => return Err(self.err(
                "master_key",
                "set `file` (a file only the service user can read) or `systemd_credential = true`",
            )),
        };
        let api = self.api(raw.api)?;
        let signatures = self.signatures(raw.signatures)?;
        let app_keys = self.app_keys(raw.app_keys)?;
        let integrations = self.integrations(raw.integrations)?;
        let connect = raw.connect.map(|c| self.connect(c)).transpose()?;
        if raw.log.level.trim().is_empty() {
            return Err(self.err("log.level", "must not be empty"));
        }
        let state_dir = self.path(raw.state_dir);
        let admin = self.admin(raw.admin, &state_dir)?;
        if raw.service.shutdown_grace_seconds > defaults::SHUTDOWN_GRACE_CAP_SECONDS {
            return Err(self.err(
                "service.shutdown_grace_seconds",
                format!("must be at most {}", defaults::SHUTDOWN_GRACE_CAP_SECONDS),
            ));
        }
        let service = ServiceSettings {
            shutdown_grace: Duration::from_secs(raw.service.shutdown_grace_seconds),
        };
        let cache_mib = raw.vault.cache_capacity_mib;
        if !(1..=defaults::VAULT_CACHE_CAPACITY_CAP_MIB).contains(&cache_mib) {
            return Err(self.err(
                "vault.cache_capacity_mib",
                format!(
                    "must be between 1 and {} (MiB)",
                    defaults::VAULT_CACHE_CAPACITY_CAP_MIB
                ),
            ));
        }
        let vault = VaultSettings {
            cache_capacity_bytes: cache_mib * 1024 * 1024,
        };
        let ids: Vec<&str> = integrations.iter().map(|i| i.id.as_str()).collect();
        let rate_limits =
            crate::ratelimit::RateLimitSettings::from_raw(self.file, raw.rate_limits, &ids)?;
        Ok(Config {
            service,
            vault,
            source: self.file.to_path_buf(),
            state_dir,
            admin,
            rate_limits,
            master_key,
            api,
            signatures,
            app_keys,
            integrations,
            connect,
            log: LogSettings {
                level: raw.log.level,
                format: raw.log.format,
                audit_file: raw.log.audit_file.map(|p| self.path(p)),
            },
        })
    }

    fn api(&self, raw: RawApi) -> Result<ApiListener, ConfigError> {
        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "api.listen",
                format!("`{}` is not an address:port like 0.0.0.0:8443", raw.listen),
            )
        })?;
        let mut allowed = Vec::new();
        for (i, entry) in raw.allowed_client_sans.iter().enumerate() {
            let key = format!("api.allowed_client_sans[{i}]");
            let san = if let Some(name) = entry.strip_prefix("dns:") {
                ClientSan::Dns(name.to_ascii_lowercase())
            } else if let Some(uri) = entry.strip_prefix("uri:") {
                ClientSan::Uri(uri.to_string())
            } else {
                return Err(self.err(key, format!("`{entry}` must start with `dns:` or `uri:`")));
            };
            if entry.len() <= 4 {
                return Err(self.err(key, "the name after the prefix is empty"));
            }
            allowed.push(san);
        }
        if raw.handshake_timeout_ms == 0 {
            return Err(self.err("api.handshake_timeout_ms", "must be greater than 0"));
        }
        if raw.header_read_timeout_ms == 0 {
            return Err(self.err("api.header_read_timeout_ms", "must be greater than 0"));
        }
        if raw.max_header_bytes < 1024 {
            return Err(self.err("api.max_header_bytes", "must be at least 1024"));
        }
        Ok(ApiListener {
            listen,
            cert: self.path(raw.cert),
            key: self.path(raw.key),
            client_ca: self.path(raw.client_ca),
            crl: raw.crl.into_iter().map(|p| self.path(p)).collect(),
            allowed_client_sans: allowed,
            handshake_timeout: Duration::from_millis(raw.handshake_timeout_ms),
            header_read_timeout: Duration::from_millis(raw.header_read_timeout_ms),
            max_header_bytes: raw.max_header_bytes,
        })
    }

    fn admin(&self, raw: RawAdmin, state_dir: &Path) -> Result<AdminSettings, ConfigError> {
        let listen = match raw.listen.trim() {
            "" => None,
            text => {
                let addr = text.parse::<SocketAddr>().map_err(|_| {
                    self.err(
                        "admin.listen",
                        format!("`{text}` is not an address:port like 127.0.0.1:9464 (or \"\" for none)"),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(self.err(
                        "admin.listen",
                        format!("`{text}` is not a loopback address: /metrics and /ready are for this machine only (scrape through a local agent or a tunnel)"),
                    ));
                }
                Some(addr)
            }
        };
        let socket = match raw.socket {
            Some(path) => self.path(path),
            None => state_dir.join(defaults::ADMIN_SOCKET),
        };
        Ok(AdminSettings { listen, socket })
    }

    fn connect(&self, raw: RawConnect) -> Result<ConnectListener, ConfigError> {
        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "connect.listen",
                format!("`{}` is not an address:port like 0.0.0.0:8444", raw.listen),
            )
        })?;
        let public_url = raw.public_url.trim_end_matches('/').to_string();
        let origin_ok = public_url.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '"', '<', '>'])
        });
        if !origin_ok {
            return Err(self.err(
                "connect.public_url",
                format!("`{}` must be an https origin like https://patgate.example.com:8444, without a path", raw.public_url),
            ));
        }
        if raw.link_ttl_seconds == 0 || raw.link_ttl_seconds > 24 * 3600 {
            return Err(self.err("connect.link_ttl_seconds", "must be between 1 and 86400"));
        }
        Ok(ConnectListener {
            listen,
            cert: self.path(raw.cert),
            key: self.path(raw.key),
            public_url,
            link_ttl: Duration::from_secs(raw.link_ttl_seconds),
        })
    }

    fn signatures(&self, raw: RawSignatures) -> Result<SignatureSettings, ConfigError> {
        let cap = defaults::WINDOW_CAP_SECONDS;
        if raw.max_skew_seconds > cap {
            return Err(self.err(
                "signatures.max_skew_seconds",
                format!("{} is over the cap of {cap} seconds", raw.max_skew_seconds),
            ));
        }
        if raw.max_validity_seconds == 0 || raw.max_validity_seconds > cap {
            return Err(self.err(
                "signatures.max_validity_seconds",
                format!("must be between 1 and {cap} seconds"),
            ));
        }
        if raw.nonce_cache_entries < 1000 {
            return Err(self.err("signatures.nonce_cache_entries", "must be at least 1000"));
        }
        Ok(SignatureSettings {
            max_skew: Duration::from_secs(raw.max_skew_seconds),
            max_validity: Duration::from_secs(raw.max_validity_seconds),
            nonce_cache_entries: raw.nonce_cache_entries,
        })
    }

    fn app_keys(&self, raw: Vec<RawAppKey>) -> Result<Vec<AppKeyConfig>, ConfigError> {
        let mut seen = HashSet::new();
        let mut keys = Vec::with_capacity(raw.len());
        for (i, key) in raw.into_iter().enumerate() {
            let at = |field: &str| format!("app_keys[{i}].{field}");
            if key.keyid.is_empty()
                || key.keyid.len() > 128
                || key.keyid.chars().any(char::is_control)
            {
                return Err(self.err(at("keyid"), "must be 1 to 128 printable characters"));
            }
            if !seen.insert(key.keyid.clone()) {
                return Err(self.err(at("keyid"), format!("`{}` is listed twice", key.keyid)));
            }
            let material = match (key.ed25519_public_key, key.hmac_secret_file) {
                (Some(public), None) => AppKeyMaterial::Ed25519PublicKey(public),
                (None, Some(file)) => AppKeyMaterial::HmacSecretFile(self.path(file)),
                _ => {
                    return Err(self.err(
                        format!("app_keys[{i}]"),
                        "set exactly one of `ed25519_public_key` and `hmac_secret_file`",
                    ))
                }
            };
            keys.push(AppKeyConfig {
                keyid: key.keyid,
                material,
            });
        }
        Ok(keys)
    }

    fn integrations(&self, raw: Vec<RawIntegration>) -> Result<Vec<Integration>, ConfigError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, integ) in raw.into_iter().enumerate() {
            let at = |field: &str| format!("integrations[{i}].{field}");
            if !is_valid_integration_id(&integ.id) {
                return Err(self.err(
                    at("id"),
                    format!(
                        "`{}` must be 1 to 64 of a-z, 0-9, `-` and `_`, starting with a letter or digit",
                        integ.id
                    ),
                ));
            }
            if !seen.insert(integ.id.clone()) {
                return Err(self.err(at("id"), format!("`{}` is listed twice", integ.id)));
            }
            let base_url =
                parse_base_url(&integ.base_url).map_err(|why| self.err(at("base_url"), why))?;
            if integ.roots == TrustRoots::None && integ.extra_ca.is_none() {
                return Err(self.err(
                    at("roots"),
                    "`none` trusts only `extra_ca`, which is not set",
                ));
            }
            for (field, value) in [
                ("connect_timeout_ms", integ.connect_timeout_ms),
                ("request_timeout_ms", integ.request_timeout_ms),
            ] {
                if value == 0 {
                    return Err(self.err(at(field), "must be greater than 0"));
                }
            }
            if integ.max_body_bytes == 0 {
                return Err(self.err(at("max_body_bytes"), "must be greater than 0"));
            }
            let codecommit = match integ.kind {
                HostKind::Codecommit => {
                    Some(self.codecommit(&at, &base_url, integ.region, integ.sts_endpoint)?)
                }
                _ => {
                    for (field, value) in [
                        ("region", &integ.region),
                        ("sts_endpoint", &integ.sts_endpoint),
                    ] {
                        if value.is_some() {
                            return Err(self.err(at(field), "is only for kind = \"codecommit\""));
                        }
                    }
                    None
                }
            };
            let tfs_version = match (integ.kind, integ.version) {
                (HostKind::Tfs, None) => Some(
                    parse_tfs_version(&RawTfsVersion::Text(defaults::TFS_VERSION.into()))
                        .map_err(|why| self.err(at("version"), why))?,
                ),
                (HostKind::Tfs, Some(raw)) => {
                    Some(parse_tfs_version(&raw).map_err(|why| self.err(at("version"), why))?)
                }
                (_, None) => None,
                (kind, Some(_)) => {
                    return Err(self.err(
                        at("version"),
                        format!(
                            "only `tfs` integrations have a version, not `{}`",
                            kind.as_str()
                        ),
                    ))
                }
            };
            out.push(Integration {
                id: integ.id,
                kind: integ.kind,
                base_url,
                roots: integ.roots,
                extra_ca: integ.extra_ca.map(|p| self.path(p)),
                require_user_pat: integ.require_user_pat,
                allow_other_writes: integ.allow_other_writes,
                connect_timeout: Duration::from_millis(integ.connect_timeout_ms),
                request_timeout: Duration::from_millis(integ.request_timeout_ms),
                max_body_bytes: integ.max_body_bytes,
                codecommit,
                tfs_version,
            });
        }
        Ok(out)
    }

    /// The region comes from the file or from a base URL `codecommit.{region}.amazonaws.com`;
    /// the STS endpoint defaults to the region's.
    fn codecommit(
        &self,
        at: &dyn Fn(&str) -> String,
        base_url: &http::Uri,
        region: Option<String>,
        sts_endpoint: Option<String>,
    ) -> Result<CodeCommitSettings, ConfigError> {
        let region = match region {
            Some(region) if is_valid_aws_region(&region) => region,
            Some(region) => {
                return Err(self.err(
                    at("region"),
                    format!("`{region}` is not an AWS region like eu-west-1"),
                ))
            }
            None => region_of_codecommit_host(base_url.host().unwrap_or("")).ok_or_else(|| {
                self.err(
                    at("region"),
                    "is required when base_url is not https://codecommit.{region}.amazonaws.com",
                )
            })?,
        };
        let sts_endpoint = match sts_endpoint {
            Some(text) => parse_base_url(&text).map_err(|why| self.err(at("sts_endpoint"), why))?,
            None => default_sts_endpoint(&region, base_url.host().unwrap_or(""))
                .parse()
                .map_err(|e| self.err(at("sts_endpoint"), format!("{e}")))?,
        };
        Ok(CodeCommitSettings {
            region,
            sts_endpoint,
        })
    }
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`: lowercase letters, digits and dashes.
fn is_valid_aws_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// The region in `codecommit.{region}.amazonaws.com` (or `codecommit-fips.…`, or `.com.cn`).
fn region_of_codecommit_host(host: &str) -> Option<String> {
    let rest = host
        .strip_prefix("codecommit.")
        .or_else(|| host.strip_prefix("codecommit-fips."))?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    is_valid_aws_region(region).then(|| region.to_string())
}

/// `https://sts.{region}.amazonaws.com`, or `.com.cn` when CodeCommit is in a China region.
fn default_sts_endpoint(region: &str, codecommit_host: &str) -> String {
    let suffix = if codecommit_host.ends_with(".amazonaws.com.cn") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{suffix}")
}

fn parse_tfs_version(raw: &RawTfsVersion) -> Result<TfsVersion, String> {
    let text = match raw {
        RawTfsVersion::Year(year) => year.to_string(),
        RawTfsVersion::Text(text) => text.trim().to_ascii_lowercase(),
    };
    if text == "auto" {
        return Ok(TfsVersion::Auto);
    }
    TfsRelease::ALL
        .into_iter()
        .find(|r| r.year().to_string() == text)
        .map(TfsVersion::Release)
        .ok_or_else(|| {
            format!("`{text}` is not one of 2013, 2015, 2017, 2018, 2019, 2020, 2022, auto")
        })
}

/// Integration ids appear in URLs (`/git/{id}/…`) and vault keys, so they are kept to a
/// small alphabet with no case or encoding ambiguity.
pub fn is_valid_integration_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric()
}

fn parse_base_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "`{text}` must be an https:// URL: patgate sends credentials to it"
        ));
    }
    if uri.authority().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}` must not have a query"));
    }
    // Keep the prefix without its trailing slash: the forwarded path starts with one.
    let path = uri.path().trim_end_matches('/');
    let normalised = format!(
        "https://{}{}",
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        path
    );
    normalised
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))
}

/// The smallest config that parses, for the unit tests of the modules that read a section of it.
#[cfg(test)]
pub(crate) const TEST_MINIMAL: &str = r#"
state_dir = "state"
[master_key]
file = "master-key"
[api]
listen = "127.0.0.1:8443"
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
[[integrations]]
id = "ghe"
kind = "github"
base_url = "https://ghe.example.com/"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = TEST_MINIMAL;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/patgate/patgate.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults_and_resolves_paths() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.state_dir, Path::new("/etc/patgate/state"));
        assert_eq!(
            cfg.master_key,
            MasterKeySource::File("/etc/patgate/master-key".into())
        );
        assert_eq!(cfg.signatures.max_skew, Duration::from_secs(5));
        assert_eq!(cfg.signatures.max_validity, Duration::from_secs(60));
        let ghe = &cfg.integrations[0];
        assert_eq!(ghe.base_url, "https://ghe.example.com");
        assert!(!ghe.require_user_pat);
        assert_eq!(ghe.max_body_bytes, 1024 * 1024);
        assert_eq!(ghe.roots, TrustRoots::System);
    }

    #[test]
    fn vault_cache_capacity_default_bounds_and_errors() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.vault.cache_capacity_bytes, 4 * 1024 * 1024);
        // The vault opened without a config (benchmarks, tests) uses the same default.
        assert_eq!(
            crate::vault::VaultOptions::default().cache_capacity_bytes,
            cfg.vault.cache_capacity_bytes
        );
        let cfg = parse(&format!("{MINIMAL}[vault]\ncache_capacity_mib = 1\n")).unwrap();
        assert_eq!(cfg.vault.cache_capacity_bytes, 1024 * 1024);
        let cfg = parse(&format!("{MINIMAL}[vault]\ncache_capacity_mib = 1024\n")).unwrap();
        assert_eq!(cfg.vault.cache_capacity_bytes, 1024 * 1024 * 1024);
        for bad in ["0", "1025"] {
            let err =
                parse(&format!("{MINIMAL}[vault]\ncache_capacity_mib = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "vault.cache_capacity_mib", "{bad}");
            assert!(err.reason.contains("between 1 and 1024"), "{err}");
        }
        let err = parse(&format!("{MINIMAL}[vault]\ncache_capacity_mib = \"16M\"\n")).unwrap_err();
        assert!(err.to_string().contains("cache_capacity_mib"), "{err}");
    }

    #[test]
    fn service_grace_and_crls() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.service.shutdown_grace, Duration::from_secs(30));
        assert!(cfg.api.crl.is_empty());
        let cfg = parse(&format!("{MINIMAL}[service]\nshutdown_grace_seconds = 0\n")).unwrap();
        assert_eq!(cfg.service.shutdown_grace, Duration::ZERO);
        let err = parse(&format!(
            "{MINIMAL}[service]\nshutdown_grace_seconds = 3601\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "service.shutdown_grace_seconds");
        let with_crl = MINIMAL.replacen("[api]\n", "[api]\ncrl = [\"crl.pem\", \"/abs.der\"]\n", 1);
        let cfg = parse(&with_crl).unwrap();
        assert_eq!(cfg.api.crl.len(), 2);
        assert!(cfg.api.crl[0].is_absolute() && cfg.api.crl[0].ends_with("crl.pem"));
        assert_eq!(cfg.api.crl[1], Path::new("/abs.der"));
    }

    #[test]
    fn admin_section_defaults_and_loopback_only() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.admin.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(cfg.admin.socket, cfg.state_dir.join("admin.sock"));
        let off = parse(&format!("{MINIMAL}[admin]\nlisten = \"\"\n")).unwrap();
        assert_eq!(off.admin.listen, None);
        let err = parse(&format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:9464\"\n")).unwrap_err();
        assert_eq!(err.key, "admin.listen");
        assert!(err.reason.contains("loopback"), "{err}");
    }

    #[test]
    fn connect_section_is_optional_and_checked() {
        assert!(parse(MINIMAL).unwrap().connect.is_none());
        let section = |url: &str, ttl: &str| {
            format!("{MINIMAL}[connect]\nlisten = \"127.0.0.1:8444\"\ncert = \"c.pem\"\nkey = \"k.pem\"\npublic_url = \"{url}\"\n{ttl}")
        };
        let cfg = parse(&section("https://patgate.example.com:8444/", "")).unwrap();
        let connect = cfg.connect.unwrap();
        assert_eq!(connect.public_url, "https://patgate.example.com:8444");
        assert_eq!(connect.link_ttl, Duration::from_secs(900));
        assert_eq!(connect.cert, Path::new("/etc/patgate/c.pem"));
        for (url, ttl, key) in [
            ("http://patgate.example.com", "", "connect.public_url"),
            (
                "https://patgate.example.com/connect",
                "",
                "connect.public_url",
            ),
            ("https://", "", "connect.public_url"),
            (
                "https://p.example",
                "link_ttl_seconds = 0",
                "connect.link_ttl_seconds",
            ),
        ] {
            let err = parse(&section(url, ttl)).unwrap_err();
            assert_eq!(err.key, key, "{url} {ttl}: {err}");
        }
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nrequire_user_pats = true",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "integrations[0].require_user_pats");
        assert!(
            err.reason.starts_with("unknown field `require_user_pats`"),
            "{err}"
        );
        assert!(err.to_string().starts_with("/etc/patgate/patgate.toml: "));
    }

    #[test]
    fn wrong_type_names_its_path() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nrequire_user_pat = \"yes\"",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "integrations[0].require_user_pat");
    }

    #[test]
    fn unknown_kind_is_refused() {
        let err = parse(&MINIMAL.replace("\"github\"", "\"gitea\"")).unwrap_err();
        assert_eq!(err.key, "integrations[0].kind");
        assert!(err.reason.contains("gitea"), "{err}");
    }

    #[test]
    fn tfs_version_defaults_to_auto_and_belongs_to_tfs_only() {
        let tfs = MINIMAL.replace("\"github\"", "\"tfs\"");
        assert_eq!(
            parse(&tfs).unwrap().integrations[0].tfs_version,
            Some(TfsVersion::Auto)
        );
        for (written, release) in [
            ("2015", TfsRelease::Tfs2015),
            ("\"2022\"", TfsRelease::Server2022),
        ] {
            let text = tfs.replace(
                "kind = \"tfs\"",
                &format!("kind = \"tfs\"\nversion = {written}"),
            );
            assert_eq!(
                parse(&text).unwrap().integrations[0].tfs_version,
                Some(TfsVersion::Release(release))
            );
        }
        let bad = tfs.replace("kind = \"tfs\"", "kind = \"tfs\"\nversion = 2016");
        let err = parse(&bad).unwrap_err();
        assert_eq!(err.key, "integrations[0].version");
        assert!(err.reason.contains("2016"), "{err}");
        let github = MINIMAL.replace("kind = \"github\"", "kind = \"github\"\nversion = 2015");
        assert_eq!(parse(&github).unwrap_err().key, "integrations[0].version");
        assert_eq!(parse(MINIMAL).unwrap().integrations[0].tfs_version, None);
    }

    #[test]
    fn plain_http_base_url_is_refused() {
        let err = parse(&MINIMAL.replace("https://ghe", "http://ghe")).unwrap_err();
        assert_eq!(err.key, "integrations[0].base_url");
        assert!(err.reason.contains("https"));
    }

    #[test]
    fn bad_integration_id_and_duplicates_are_refused() {
        let err = parse(&MINIMAL.replace("id = \"ghe\"", "id = \"GHE/x\"")).unwrap_err();
        assert_eq!(err.key, "integrations[0].id");
        let twice = format!("{MINIMAL}\n[[integrations]]\nid = \"ghe\"\nkind = \"github\"\nbase_url = \"https://x.example\"\n");
        let err = parse(&twice).unwrap_err();
        assert_eq!(err.key, "integrations[1].id");
    }

    #[test]
    fn window_is_capped() {
        let text = format!("{MINIMAL}\n[signatures]\nmax_validity_seconds = 301\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "signatures.max_validity_seconds");
        let text = format!("{MINIMAL}\n[signatures]\nmax_skew_seconds = 400\n");
        assert_eq!(parse(&text).unwrap_err().key, "signatures.max_skew_seconds");
    }

    #[test]
    fn master_key_needs_exactly_one_source() {
        let both = MINIMAL.replace(
            "file = \"master-key\"",
            "file = \"k\"\nsystemd_credential = true",
        );
        assert_eq!(parse(&both).unwrap_err().key, "master_key");
        let none = MINIMAL.replace("file = \"master-key\"", "");
        assert_eq!(parse(&none).unwrap_err().key, "master_key");
    }

    #[test]
    fn client_san_allow_list_needs_prefixes() {
        let text = MINIMAL.replace(
            "client_ca = \"ca.pem\"",
            "client_ca = \"ca.pem\"\nallowed_client_sans = [\"dns:App.Example\", \"jira\"]",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "api.allowed_client_sans[1]");
    }

    #[test]
    fn app_key_needs_one_material() {
        let text = format!("{MINIMAL}\n[[app_keys]]\nkeyid = \"a\"\n");
        assert_eq!(parse(&text).unwrap_err().key, "app_keys[0]");
    }

    #[test]
    fn codecommit_region_and_sts_endpoint_default_from_the_base_url() {
        let text = MINIMAL.replace("\"github\"", "\"codecommit\"").replace(
            "https://ghe.example.com/",
            "https://codecommit.eu-west-1.amazonaws.com",
        );
        let cfg = parse(&text).unwrap();
        let cc = cfg.integrations[0].codecommit.as_ref().unwrap();
        assert_eq!(cc.region, "eu-west-1");
        assert_eq!(cc.sts_endpoint, "https://sts.eu-west-1.amazonaws.com/");

        let text = MINIMAL.replace("\"github\"", "\"codecommit\"").replace(
            "https://ghe.example.com/",
            "https://codecommit-fips.cn-north-1.amazonaws.com.cn",
        );
        let cc = parse(&text).unwrap().integrations[0]
            .codecommit
            .clone()
            .unwrap();
        assert_eq!(cc.region, "cn-north-1");
        assert_eq!(cc.sts_endpoint, "https://sts.cn-north-1.amazonaws.com.cn/");
    }

    #[test]
    fn codecommit_behind_another_url_needs_a_region() {
        let cc = MINIMAL.replace("\"github\"", "\"codecommit\"");
        let err = parse(&cc).unwrap_err();
        assert_eq!(err.key, "integrations[0].region");
        let text = cc.replace(
            "kind = \"codecommit\"",
            "kind = \"codecommit\"\nregion = \"us-east-2\"\nsts_endpoint = \"https://127.0.0.1:9/\"",
        );
        let cc = parse(&text).unwrap().integrations[0]
            .codecommit
            .clone()
            .unwrap();
        assert_eq!(cc.region, "us-east-2");
        assert_eq!(cc.sts_endpoint, "https://127.0.0.1:9");
        let bad = cc_with(&text, "region = \"us-east-2\"", "region = \"US East\"");
        assert_eq!(parse(&bad).unwrap_err().key, "integrations[0].region");
        let plain = cc_with(&text, "https://127.0.0.1:9/", "http://127.0.0.1:9/");
        assert_eq!(
            parse(&plain).unwrap_err().key,
            "integrations[0].sts_endpoint"
        );
    }

    fn cc_with(text: &str, from: &str, to: &str) -> String {
        text.replace(from, to)
    }

    #[test]
    fn aws_keys_are_refused_on_other_kinds() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nregion = \"eu-west-1\"",
        );
        assert_eq!(parse(&text).unwrap_err().key, "integrations[0].region");
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let err = parse("state_dir = \n").unwrap_err();
        assert!(err.reason.contains("at byte"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/patgate.example.toml");

    /// The keys serde accepts in a section, read from its own "unknown field" message.
    fn accepted_keys(section_toml: &str, key_path: &str) -> Vec<String> {
        let err = Config::parse(Path::new("x.toml"), section_toml).unwrap_err();
        assert!(err.key.starts_with(key_path), "{err}");
        // "unknown field `zzz`, expected `a`", "… expected `a` or `b`", "… expected one of `a`, `b`, …"
        let list = err
            .reason
            .split(", expected")
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_example_parses() {
        let cfg = Config::parse(Path::new("/etc/patgate/patgate.toml"), EXAMPLE).unwrap();
        assert_eq!(cfg.integrations.len(), 2);
        let cc = cfg.integrations[1].codecommit.as_ref().unwrap();
        assert_eq!(cc.region, "eu-west-1");
        assert_eq!(
            cfg.signatures.nonce_cache_entries,
            defaults::NONCE_CACHE_ENTRIES
        );
        // No local limits unless configured; holds on host throttling are on.
        assert_eq!(
            cfg.rate_limits,
            crate::ratelimit::RateLimitSettings::default()
        );
    }

    /// The quotas the example shows commented out are valid as written.
    #[test]
    fn the_example_rate_limits_parse_when_uncommented() {
        let start = EXAMPLE.find("[rate_limits]").unwrap();
        let (head, tail) = EXAMPLE.split_at(start);
        let tail: String = tail
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if [
                        "reads =",
                        "actions =",
                        "[[rate_limits",
                        "integration =",
                        "account =",
                    ]
                    .iter()
                    .any(|p| rest.starts_with(p)) =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let cfg = Config::parse(
            Path::new("/etc/patgate/patgate.toml"),
            &(head.to_string() + &tail),
        )
        .unwrap();
        let rl = &cfg.rate_limits;
        assert_eq!(
            rl.user.actions.map(|q| (q.requests, q.burst)),
            Some((30, 10))
        );
        assert_eq!(rl.total.reads.map(|q| q.burst), Some(2000));
        assert_eq!(rl.client.actions.map(|q| q.burst), Some(3000));
        assert_eq!(rl.overrides.len(), 1);
        assert_eq!(
            rl.overrides[0].account.as_deref(),
            Some("5b10ac8d82e05b22cc7d4ef5")
        );
    }

    #[test]
    fn the_example_documents_every_key_with_its_default() {
        use crate::ratelimit::settings::defaults as rl;
        let base = "state_dir = \"s\"\n[master_key]\nfile = \"k\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n";
        let sections = [
            (format!("zzz = 1\n{base}"), ""),
            (
                base.replace("file = \"k\"", "file = \"k\"\nzzz = 1"),
                "master_key",
            ),
            (format!("{base}zzz = 1\n"), "api"),
            (format!("{base}[signatures]\nzzz = 1\n"), "signatures"),
            (format!("{base}[[app_keys]]\nzzz = 1\n"), "app_keys"),
            (format!("{base}[[integrations]]\nzzz = 1\n"), "integrations"),
            (format!("{base}[log]\nzzz = 1\n"), "log"),
            (format!("{base}[connect]\nzzz = 1\n"), "connect"),
            (format!("{base}[service]\nzzz = 1\n"), "service"),
            (format!("{base}[vault]\nzzz = 1\n"), "vault"),
            (format!("{base}[rate_limits]\nzzz = 1\n"), "rate_limits"),
            (
                format!("{base}[rate_limits.user]\nzzz = 1\n"),
                "rate_limits.user",
            ),
            (
                format!("{base}[rate_limits.user]\nreads = {{ zzz = 1 }}\n"),
                "rate_limits.user.reads",
            ),
            (
                format!("{base}[[rate_limits.overrides]]\nzzz = 1\n"),
                "rate_limits.overrides",
            ),
            (
                format!("{base}[rate_limits.host_throttle]\nzzz = 1\n"),
                "rate_limits.host_throttle",
            ),
        ];
        for (toml, path) in sections {
            for key in accepted_keys(&toml, path) {
                // Sub-tables are documented by their header, e.g. `[rate_limits.user]`.
                let table = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let documented = EXAMPLE.lines().any(|line| {
                    let line = line.trim_start_matches('#').trim();
                    line.starts_with(&format!("{key} ="))
                        || line.starts_with(&format!("[{table}]"))
                        || line.starts_with(&format!("[[{table}]]"))
                });
                assert!(
                    documented,
                    "config/patgate.example.toml does not document `{path}.{key}`"
                );
            }
        }
        for (key, default) in [
            (
                "handshake_timeout_ms",
                defaults::HANDSHAKE_TIMEOUT_MS.to_string(),
            ),
            (
                "header_read_timeout_ms",
                defaults::HEADER_READ_TIMEOUT_MS.to_string(),
            ),
            ("max_header_bytes", defaults::MAX_HEADER_BYTES.to_string()),
            ("max_skew_seconds", defaults::MAX_SKEW_SECONDS.to_string()),
            (
                "max_validity_seconds",
                defaults::MAX_VALIDITY_SECONDS.to_string(),
            ),
            (
                "nonce_cache_entries",
                defaults::NONCE_CACHE_ENTRIES.to_string(),
            ),
            (
                "connect_timeout_ms",
                defaults::CONNECT_TIMEOUT_MS.to_string(),
            ),
            (
                "request_timeout_ms",
                defaults::REQUEST_TIMEOUT_MS.to_string(),
            ),
            ("max_body_bytes", defaults::MAX_BODY_BYTES.to_string()),
            ("link_ttl_seconds", defaults::LINK_TTL_SECONDS.to_string()),
            ("level", format!("\"{}\"", defaults::LOG_LEVEL)),
            (
                "shutdown_grace_seconds",
                defaults::SHUTDOWN_GRACE_SECONDS.to_string(),
            ),
            (
                "cache_capacity_mib",
                defaults::VAULT_CACHE_CAPACITY_MIB.to_string(),
            ),
            ("crl", "[]".to_string()),
            ("shadow", "false".to_string()),
            (
                "prune_interval_seconds",
                rl::PRUNE_INTERVAL_SECONDS.to_string(),
            ),
            ("hold", "true".to_string()),
            ("default_hold_seconds", rl::DEFAULT_HOLD_SECONDS.to_string()),
            ("max_hold_seconds", rl::MAX_HOLD_SECONDS.to_string()),
        ] {
            assert!(
                EXAMPLE
                    .lines()
                    .any(|l| l.trim() == format!("{key} = {default}")),
                "the example should show `{key} = {default}`"
            );
        }
        // `version` belongs to `tfs` integrations only, so the example (a GitHub one) shows
        // it commented out, with its default.
        let version = format!("# version = \"{}\"", defaults::TFS_VERSION);
        assert!(
            EXAMPLE.lines().any(|l| l.trim() == version),
            "the example should show `{version}`"
        );
    }
}
