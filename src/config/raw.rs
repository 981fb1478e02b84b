//! The file as written: the serde structs every section is read into, and the defaults of
//! the keys a file may leave out.
//!
//! Each struct denies unknown fields, so a typo is an error naming its key rather than a
//! silent default. Nothing here checks a value; the validator (`validate.rs`) turns these into
//! the types of `types.rs`.

use std::path::PathBuf;

use serde::Deserialize;

use super::connections::RawConnections;
use super::rate_limits::RawRateLimits;
use super::store::RawStore;
use super::types::{ClientCertificateMode, HostKind, LogFormat, TrustRoots};

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
    /// A user's PAT that expires within this many days is said to expire soon.
    pub const PAT_EXPIRY_WARNING_DAYS: u64 = 7;
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
    /// Upper bound for `service.workers`.
    pub const WORKERS_CAP: i64 = 256;
    /// `vault.cache_capacity_mib`: sled's page cache, in MiB. Small, so the memory the vault
    /// takes does not grow with the number of stored PATs; a PAT outside the cache is read
    /// from the file when used, about 10 µs more (BENCHMARKS.md has both figures).
    pub const VAULT_CACHE_CAPACITY_MIB: u64 = 4;
    /// Upper bound for `vault.cache_capacity_mib` (sled's own default is 1 GiB).
    pub const VAULT_CACHE_CAPACITY_CAP_MIB: u64 = 1024;
    /// `api.client_certificate`.
    pub const CLIENT_CERTIFICATE: &str = "required";
    /// `forge.jwks_url`: the key set Forge publishes for its invocation tokens.
    pub const FORGE_JWKS_URL: &str =
        "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json";
    /// `forge.jwks_refresh_cooldown_seconds`: at most one fetch a minute on unknown key ids.
    pub const FORGE_JWKS_REFRESH_COOLDOWN_SECONDS: u64 = 60;
    /// `forge.jwks_max_age_seconds`.
    pub const FORGE_JWKS_MAX_AGE_SECONDS: u64 = 3600;
    pub const FORGE_JWKS_FETCH_TIMEOUT_MS: u64 = 5_000;
    /// `forge.leeway_seconds`: clock skew on `exp`, `nbf`, `iat` (a FIT lives about 25 s).
    pub const FORGE_LEEWAY_SECONDS: u64 = 5;
    /// Upper bound for `forge.leeway_seconds`.
    pub const FORGE_LEEWAY_CAP_SECONDS: u64 = 60;
    /// `forge.apps[].environments`: production only.
    pub const FORGE_ENVIRONMENTS: &[&str] = &["PRODUCTION"];
    /// Forge ends a UI call that has no answer after 25 s: with `[forge]`, an integration's
    /// connect and request timeouts together must stay below it.
    pub const FORGE_CALLER_TIMEOUT_MS: u64 = 25_000;
    /// `integrations[].request_timeout_ms` when `[forge]` is configured (else
    /// `REQUEST_TIMEOUT_MS`): with the default connect timeout, 20 s in all.
    pub const FORGE_REQUEST_TIMEOUT_MS: u64 = 15_000;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: PathBuf,
    pub(super) master_key: RawMasterKey,
    pub(super) api: RawApi,
    #[serde(default)]
    pub(super) signatures: RawSignatures,
    #[serde(default)]
    pub(super) app_keys: Vec<RawAppKey>,
    #[serde(default)]
    pub(super) integrations: Vec<RawIntegration>,
    #[serde(default)]
    pub(super) connect: Option<RawConnect>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) service: RawService,
    #[serde(default)]
    pub(super) vault: RawVault,
    #[serde(default)]
    pub(super) rate_limits: RawRateLimits,
    #[serde(default)]
    pub(super) connections: RawConnections,
    #[serde(default)]
    pub(super) store: RawStore,
    pub(super) forge: Option<RawForge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForge {
    #[serde(default)]
    pub(super) apps: Vec<RawForgeApp>,
    /// `""` switches the URL off (then `jwks_file` must be set).
    #[serde(default = "d_forge_jwks_url")]
    pub(super) jwks_url: String,
    pub(super) jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) jwks_proxy: String,
    #[serde(default = "d_roots")]
    pub(super) jwks_roots: TrustRoots,
    pub(super) jwks_extra_ca: Option<PathBuf>,
    #[serde(default = "d_forge_cooldown")]
    pub(super) jwks_refresh_cooldown_seconds: u64,
    #[serde(default = "d_forge_max_age")]
    pub(super) jwks_max_age_seconds: u64,
    #[serde(default = "d_forge_fetch_timeout")]
    pub(super) jwks_fetch_timeout_ms: u64,
    #[serde(default = "d_forge_leeway")]
    pub(super) leeway_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForgeApp {
    pub(super) id: String,
    #[serde(default = "d_forge_environments")]
    pub(super) environments: Vec<String>,
    #[serde(default)]
    pub(super) installation_ids: Vec<String>,
    #[serde(default)]
    pub(super) cloud_ids: Vec<String>,
    #[serde(default = "d_true")]
    pub(super) require_signature: bool,
    #[serde(default)]
    pub(super) signature_keyids: Vec<String>,
}

fn d_forge_jwks_url() -> String {
    defaults::FORGE_JWKS_URL.to_string()
}
fn d_forge_cooldown() -> u64 {
    defaults::FORGE_JWKS_REFRESH_COOLDOWN_SECONDS
}
fn d_forge_max_age() -> u64 {
    defaults::FORGE_JWKS_MAX_AGE_SECONDS
}
fn d_forge_fetch_timeout() -> u64 {
    defaults::FORGE_JWKS_FETCH_TIMEOUT_MS
}
fn d_forge_leeway() -> u64 {
    defaults::FORGE_LEEWAY_SECONDS
}
fn d_forge_environments() -> Vec<String> {
    defaults::FORGE_ENVIRONMENTS
        .iter()
        .map(|e| e.to_string())
        .collect()
}
fn d_true() -> bool {
    true
}
fn d_client_certificate() -> ClientCertificateMode {
    ClientCertificateMode::Required
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    #[serde(default = "d_shutdown_grace")]
    pub(super) shutdown_grace_seconds: u64,
    /// `"auto"` (the default) or a count; checked in validate.
    #[serde(default)]
    pub(super) workers: Option<toml::Value>,
}

impl Default for RawService {
    fn default() -> Self {
        RawService {
            shutdown_grace_seconds: d_shutdown_grace(),
            workers: None,
        }
    }
}

fn d_shutdown_grace() -> u64 {
    defaults::SHUTDOWN_GRACE_SECONDS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    #[serde(default = "d_vault_cache")]
    pub(super) cache_capacity_mib: u64,
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
pub(super) struct RawAdmin {
    #[serde(default = "d_admin_listen")]
    pub(super) listen: String,
    pub(super) socket: Option<PathBuf>,
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
pub(super) struct RawConnect {
    pub(super) listen: String,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) public_url: String,
    #[serde(default = "d_link_ttl")]
    pub(super) link_ttl_seconds: u64,
}

fn d_link_ttl() -> u64 {
    defaults::LINK_TTL_SECONDS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMasterKey {
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) systemd_credential: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) listen: String,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: PathBuf,
    #[serde(default)]
    pub(super) crl: Vec<PathBuf>,
    #[serde(default)]
    pub(super) allowed_client_sans: Vec<String>,
    #[serde(default = "d_handshake")]
    pub(super) handshake_timeout_ms: u64,
    #[serde(default = "d_header_read")]
    pub(super) header_read_timeout_ms: u64,
    #[serde(default = "d_max_header")]
    pub(super) max_header_bytes: usize,
    #[serde(default = "d_client_certificate")]
    pub(super) client_certificate: ClientCertificateMode,
    #[serde(default)]
    pub(super) forge_source_cidrs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignatures {
    #[serde(default = "d_skew")]
    pub(super) max_skew_seconds: u64,
    #[serde(default = "d_validity")]
    pub(super) max_validity_seconds: u64,
    #[serde(default = "d_nonces")]
    pub(super) nonce_cache_entries: usize,
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
pub(super) struct RawAppKey {
    pub(super) keyid: String,
    pub(super) ed25519_public_key: Option<String>,
    pub(super) hmac_secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntegration {
    pub(super) id: String,
    /// The name users see on the connect page; the host's own name when unset.
    pub(super) display_name: Option<String>,
    pub(super) kind: HostKind,
    pub(super) base_url: String,
    #[serde(default = "d_roots")]
    pub(super) roots: TrustRoots,
    pub(super) extra_ca: Option<PathBuf>,
    /// `""`: connect directly.
    #[serde(default)]
    pub(super) proxy: String,
    #[serde(default)]
    pub(super) require_user_pat: bool,
    #[serde(default)]
    pub(super) allow_other_writes: bool,
    #[serde(default = "d_connect")]
    pub(super) connect_timeout_ms: u64,
    /// Its default depends on whether `[forge]` is configured (see the validator).
    pub(super) request_timeout_ms: Option<u64>,
    #[serde(default = "d_body")]
    pub(super) max_body_bytes: usize,
    #[serde(default = "d_pat_expiry_warning")]
    pub(super) pat_expiry_warning_days: u64,
    /// CodeCommit only.
    pub(super) region: Option<String>,
    /// CodeCommit only.
    pub(super) sts_endpoint: Option<String>,
    pub(super) version: Option<RawTfsVersion>,
}

/// `version = 2015` and `version = "2015"` both read naturally; accept both.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawTfsVersion {
    Year(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "d_level")]
    pub(super) level: String,
    #[serde(default = "d_format")]
    pub(super) format: LogFormat,
    #[serde(default)]
    pub(super) audit_file: Option<PathBuf>,
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
fn d_pat_expiry_warning() -> u64 {
    defaults::PAT_EXPIRY_WARNING_DAYS
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

#[cfg(test)]
mod example_file {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/patgate.example.toml");

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
        assert_eq!(cfg.rate_limits, super::super::RateLimitSettings::default());
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
        use super::super::connections::defaults as cn;
        use super::super::rate_limits::defaults as rl;
        use super::super::store::defaults as st;
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
            (format!("{base}[connections]\nzzz = 1\n"), "connections"),
            (format!("{base}[store]\nzzz = 1\n"), "store"),
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
            (format!("{base}[forge]\nzzz = 1\n"), "forge"),
            (format!("{base}[[forge.apps]]\nzzz = 1\n"), "forge.apps"),
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
            (
                "pat_expiry_warning_days",
                defaults::PAT_EXPIRY_WARNING_DAYS.to_string(),
            ),
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
            (
                "client_certificate",
                format!("\"{}\"", defaults::CLIENT_CERTIFICATE),
            ),
            ("forge_source_cidrs", "[]".to_string()),
            ("idle_timeout_ms", cn::IDLE_TIMEOUT_MS.to_string()),
            ("body_read_timeout_ms", cn::BODY_READ_TIMEOUT_MS.to_string()),
            ("max_api", cn::MAX_API.to_string()),
            ("max_api_per_client", cn::MAX_API_PER_CLIENT.to_string()),
            ("max_connect", cn::MAX_CONNECT.to_string()),
            ("max_admin", cn::MAX_ADMIN.to_string()),
            ("kind", format!("\"{}\"", st::KIND)),
        ] {
            assert!(
                EXAMPLE
                    .lines()
                    .any(|l| l.trim() == format!("{key} = {default}")),
                "the example should show `{key} = {default}`"
            );
        }
        // `version` belongs to `tfs` integrations only, so the example (a GitHub one) shows
        // it commented out, with its default; so is `[forge]`, which is off by default.
        let environments = format!("{:?}", defaults::FORGE_ENVIRONMENTS);
        for (key, default) in [
            ("version", format!("\"{}\"", defaults::TFS_VERSION)),
            ("jwks_url", format!("\"{}\"", defaults::FORGE_JWKS_URL)),
            ("jwks_proxy", "\"\"".to_string()),
            ("jwks_roots", "\"system\"".to_string()),
            (
                "jwks_refresh_cooldown_seconds",
                defaults::FORGE_JWKS_REFRESH_COOLDOWN_SECONDS.to_string(),
            ),
            (
                "jwks_max_age_seconds",
                defaults::FORGE_JWKS_MAX_AGE_SECONDS.to_string(),
            ),
            (
                "jwks_fetch_timeout_ms",
                defaults::FORGE_JWKS_FETCH_TIMEOUT_MS.to_string(),
            ),
            ("leeway_seconds", defaults::FORGE_LEEWAY_SECONDS.to_string()),
            ("environments", environments),
            ("installation_ids", "[]".to_string()),
            ("cloud_ids", "[]".to_string()),
            ("require_signature", "true".to_string()),
            ("signature_keyids", "[]".to_string()),
            // `[store]`'s database keys are for `kind = "postgres"` only.
            ("tls", format!("\"{}\"", st::TLS)),
            ("pool_size", st::POOL_SIZE.to_string()),
            ("connect_timeout_ms", st::CONNECT_TIMEOUT_MS.to_string()),
            ("statement_timeout_ms", st::STATEMENT_TIMEOUT_MS.to_string()),
            ("systemd_credential", "false".to_string()),
        ] {
            let line = format!("# {key} = {default}");
            assert!(
                EXAMPLE.lines().any(|l| l.trim() == line),
                "the example should show `{line}`"
            );
        }
    }
}
