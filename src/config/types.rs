//! The validated configuration's parts: listeners, keys, integrations and the settings of
//! each section, as the rest of patgate reads them.
//!
//! Every value here has been checked by the validator (`validate.rs`): durations are
//! [`Duration`]s, paths are resolved against the file's directory, addresses are parsed.
//! Nothing here reads a file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How the process itself behaves: shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// After SIGTERM: how long in-flight requests get to finish before their connections
    /// are closed. systemd's `TimeoutStopSec` must be longer.
    pub shutdown_grace: Duration,
    /// The api listener's data-plane cores: threads, each with its own socket, runtime and
    /// upstream pools (`service.workers`; one per usable CPU by default). Fixed at start.
    pub workers: usize,
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

/// The listener the Jira app calls: TLS with a client certificate (required by default), or a
/// Forge Invocation Token for the Forge app.
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
    /// Whether a caller must present a client certificate.
    pub client_certificate: ClientCertificateMode,
    /// When non-empty, a connection without a client certificate (a Forge call) must come
    /// from one of these ranges (Atlassian's published egress ranges).
    pub forge_source_cidrs: Vec<ipnet::IpNet>,
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
    /// What users are shown on the connect page (`display_name`); `None`: the host's own
    /// name ([`crate::hosts::web`]).
    pub display_name: Option<String>,
    pub kind: HostKind,
    /// Scheme, authority and optional path prefix, without a trailing slash.
    pub base_url: http::Uri,
    pub roots: TrustRoots,
    pub extra_ca: Option<PathBuf>,
    /// An HTTP proxy the host is reached through (an HTTP CONNECT tunnel; TLS end to end).
    pub proxy: Option<http::Uri>,
    pub require_user_pat: bool,
    pub allow_other_writes: bool,
    pub connect_timeout: Duration,
    /// For the host's response head, then for each further piece of its body.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// A PAT expiring within this is said to expire soon.
    pub pat_expiry_warning: Duration,
    /// Set for `kind = "codecommit"` only.
    pub codecommit: Option<CodeCommitSettings>,
    /// The server release, for `tfs` only (`None` for every other kind). `auto` is replaced
    /// by the detected release at start ([`crate::runtime::Runtime::start`]).
    pub tfs_version: Option<TfsVersion>,
}

/// Which GitHub a `github` base URL names (read from its host; DNS names compare without
/// case). What each means for requests is in `hosts::github`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GithubFlavour {
    /// GitHub Enterprise Server, on any other host: REST under `/api/v3`.
    Server,
    /// github.com, whose REST API is `https://api.github.com`.
    Cloud,
    /// GitHub Enterprise Cloud with data residency: `https://api.{subdomain}.ghe.com`, REST
    /// at the root as on github.com (GitHub's docs, "GitHub Enterprise Cloud with data
    /// residency": the API is at `api.SUBDOMAIN.ghe.com`).
    DataResidency,
}

impl GithubFlavour {
    pub fn of(base_url: &http::Uri) -> GithubFlavour {
        let host = base_url.host().unwrap_or_default().to_ascii_lowercase();
        if host == "api.github.com" {
            return GithubFlavour::Cloud;
        }
        match host
            .strip_prefix("api.")
            .and_then(|rest| rest.strip_suffix(".ghe.com"))
        {
            Some(subdomain) if !subdomain.is_empty() && !subdomain.contains('.') => {
                GithubFlavour::DataResidency
            }
            _ => GithubFlavour::Server,
        }
    }
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

/// `api.client_certificate`: whether the api listener asks a caller for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertificateMode {
    /// Every connection presents one that chains to `client_ca` (the handshake fails
    /// otherwise): Connect-era callers only.
    Required,
    /// A connection with one is a Connect-era caller; one without is a Forge caller and
    /// must carry a Forge Invocation Token.
    Optional,
    /// No certificate is asked for: Forge callers only.
    None,
}

impl ClientCertificateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertificateMode::Required => "required",
            ClientCertificateMode::Optional => "optional",
            ClientCertificateMode::None => "none",
        }
    }

    /// Whether connections without a client certificate are let in (as Forge callers).
    pub fn takes_forge_calls(self) -> bool {
        self != ClientCertificateMode::Required
    }
}

/// `[forge]`: the Forge version of the app, calling through Forge Remote with a Forge
/// Invocation Token (FIT) instead of a client certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgeSettings {
    /// The apps trusted; a FIT of any other app is refused.
    pub apps: Vec<ForgeApp>,
    /// Forge's published key set, fetched and cached; `None` when only `jwks_file` is used.
    pub jwks_url: Option<http::Uri>,
    /// A key set pinned by the admin, read at start and on every reload.
    pub jwks_file: Option<PathBuf>,
    /// An HTTP proxy the JWKS is fetched through (an HTTP CONNECT tunnel; TLS end to end).
    pub jwks_proxy: Option<http::Uri>,
    /// The CA certificates the JWKS URL's server is checked against.
    pub jwks_roots: TrustRoots,
    pub jwks_extra_ca: Option<PathBuf>,
    /// At most one fetch per this long when a token names an unknown `kid` (or no set is
    /// loaded yet).
    pub jwks_refresh_cooldown: Duration,
    /// A fetched set older than this is fetched again (the last good set stays in use when
    /// that fails).
    pub jwks_max_age: Duration,
    pub jwks_fetch_timeout: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// One trusted Forge app (`[[forge.apps]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeApp {
    /// The app id in ARI form, `ari:cloud:ecosystem::app/{uuid}`: the FIT's `aud` and
    /// `app.id`.
    pub id: String,
    /// The environments whose tokens are accepted (`app.environment.type`).
    pub environments: Vec<ForgeEnvironment>,
    /// Installations allowed (`app.installationId`, ARI form).
    pub installation_ids: Vec<String>,
    /// Jira sites allowed, by cloud id (the installation's contexts).
    pub cloud_ids: Vec<String>,
    /// A call must also carry the RFC 9421 signature (default): method, target and body
    /// stay bound and replay-proof.
    pub require_signature: bool,
    /// The `app_keys` this app signs with; empty: any of them.
    pub signature_keyids: Vec<String>,
}

/// `app.environment.type` of a FIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ForgeEnvironment {
    Development,
    Staging,
    Production,
}

impl ForgeEnvironment {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeEnvironment::Development => "DEVELOPMENT",
            ForgeEnvironment::Staging => "STAGING",
            ForgeEnvironment::Production => "PRODUCTION",
        }
    }
}
