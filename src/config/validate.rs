//! The validator: every check on a value of the file, each refusal reported with the file,
//! the dotted key (`integrations[0].base_url`) and the reason.
//!
//! It runs once per load, before anything reads a certificate or binds a socket; the checks
//! that need the files themselves (certificates, keys, CRLs) happen when the runtime is built
//! and report in the same [`ConfigError`] shape.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::connections::ConnectionLimits;
use super::rate_limits::RateLimitSettings;
use super::raw::{
    defaults, RawAdmin, RawApi, RawAppKey, RawConfig, RawConnect, RawForge, RawForgeApp,
    RawIntegration, RawSignatures, RawTfsVersion,
};
use super::store::StoreSettings;
use super::types::{
    AdminSettings, ApiListener, AppKeyConfig, AppKeyMaterial, ClientSan, CodeCommitSettings,
    ConnectListener, ForgeApp, ForgeEnvironment, ForgeSettings, GithubFlavour, HostKind,
    Integration, LogSettings, MasterKeySource, ServiceSettings, SignatureSettings, TfsRelease,
    TfsVersion, TrustRoots, VaultSettings,
};
use super::{Config, ConfigError};
use crate::ids::IntegrationId;

/// Turns the file as written into the validated [`Config`], one section at a time; every
/// refusal names the file and the dotted key.
pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    /// The directory relative paths resolve against: the file's own.
    pub(super) base: &'a Path,
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

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
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
        let forge = raw.forge.map(|f| self.forge(f, &app_keys)).transpose()?;
        self.forge_listener(&api, forge.as_ref())?;
        let integrations = self.integrations(raw.integrations, forge.is_some())?;
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
        let workers = match &raw.service.workers {
            None => crate::cores::usable_cpus().get(),
            Some(toml::Value::String(auto)) if auto == "auto" => crate::cores::usable_cpus().get(),
            Some(toml::Value::Integer(n)) if (1..=defaults::WORKERS_CAP).contains(n) => {
                usize::try_from(*n).unwrap_or(1)
            }
            Some(_) => {
                return Err(self.err(
                    "service.workers",
                    format!(
                        "must be \"auto\" (one per usable CPU) or a number from 1 to {}",
                        defaults::WORKERS_CAP
                    ),
                ))
            }
        };
        let service = ServiceSettings {
            shutdown_grace: Duration::from_secs(raw.service.shutdown_grace_seconds),
            workers,
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
        let rate_limits = RateLimitSettings::from_raw(self.file, raw.rate_limits, &ids)?;
        let connections = ConnectionLimits::from_raw(self.file, raw.connections)?;
        let store = StoreSettings::from_raw(self.file, raw.store, |p| self.path(p))?;
        Ok(Config {
            service,
            vault,
            source: self.file.to_path_buf(),
            state_dir,
            admin,
            rate_limits,
            connections,
            store,
            master_key,
            api,
            signatures,
            app_keys,
            integrations,
            connect,
            forge,
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
        let mut forge_source_cidrs = Vec::with_capacity(raw.forge_source_cidrs.len());
        for (i, text) in raw.forge_source_cidrs.iter().enumerate() {
            let net = text
                .trim()
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    self.err(
                        format!("api.forge_source_cidrs[{i}]"),
                        format!("`{text}` is not an address range like 104.192.136.0/21 or 2401:1d80::/32"),
                    )
                })?;
            forge_source_cidrs.push(net.trunc());
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
            client_certificate: raw.client_certificate,
            forge_source_cidrs,
        })
    }

    /// The api listener and `[forge]` agree: a listener that lets in callers without a
    /// client certificate has Forge apps to check them against, and source ranges only
    /// apply to such a listener.
    fn forge_listener(
        &self,
        api: &ApiListener,
        forge: Option<&ForgeSettings>,
    ) -> Result<(), ConfigError> {
        if api.client_certificate.takes_forge_calls() && forge.is_none() {
            return Err(self.err(
                "api.client_certificate",
                format!(
                    "`{}` lets in callers without a client certificate, which only Forge apps can be: configure [forge] with at least one [[forge.apps]], or keep \"required\"",
                    api.client_certificate.as_str()
                ),
            ));
        }
        if !api.forge_source_cidrs.is_empty() && !api.client_certificate.takes_forge_calls() {
            return Err(self.err(
                "api.forge_source_cidrs",
                "applies to connections without a client certificate, which `client_certificate = \"required\"` never lets in",
            ));
        }
        Ok(())
    }

    fn forge(
        &self,
        raw: RawForge,
        app_keys: &[AppKeyConfig],
    ) -> Result<ForgeSettings, ConfigError> {
        if raw.apps.is_empty() {
            return Err(self.err(
                "forge.apps",
                "[forge] needs at least one [[forge.apps]] (the app id and the installations allowed)",
            ));
        }
        let mut seen = HashSet::new();
        let mut apps = Vec::with_capacity(raw.apps.len());
        for (i, app) in raw.apps.into_iter().enumerate() {
            apps.push(self.forge_app(i, app, app_keys, &mut seen)?);
        }
        let jwks_url = match raw.jwks_url.trim() {
            "" => None,
            text => Some(parse_https_url(text).map_err(|why| self.err("forge.jwks_url", why))?),
        };
        let jwks_file = raw.jwks_file.map(|p| self.path(p));
        if jwks_url.is_none() && jwks_file.is_none() {
            return Err(self.err(
                "forge.jwks_url",
                "with `jwks_url = \"\"`, set `jwks_file` (the key set Forge's tokens are checked against)",
            ));
        }
        let jwks_proxy = match raw.jwks_proxy.trim() {
            "" => None,
            text => Some(parse_proxy_url(text).map_err(|why| self.err("forge.jwks_proxy", why))?),
        };
        if raw.jwks_roots == TrustRoots::None && raw.jwks_extra_ca.is_none() {
            return Err(self.err(
                "forge.jwks_roots",
                "`none` trusts only `jwks_extra_ca`, which is not set",
            ));
        }
        if raw.jwks_refresh_cooldown_seconds == 0 {
            return Err(self.err(
                "forge.jwks_refresh_cooldown_seconds",
                "must be greater than 0",
            ));
        }
        if raw.jwks_max_age_seconds < raw.jwks_refresh_cooldown_seconds {
            return Err(self.err(
                "forge.jwks_max_age_seconds",
                "must be at least jwks_refresh_cooldown_seconds",
            ));
        }
        if raw.jwks_fetch_timeout_ms == 0 || raw.jwks_fetch_timeout_ms > 60_000 {
            return Err(self.err("forge.jwks_fetch_timeout_ms", "must be between 1 and 60000"));
        }
        if raw.leeway_seconds > defaults::FORGE_LEEWAY_CAP_SECONDS {
            return Err(self.err(
                "forge.leeway_seconds",
                format!(
                    "must be at most {} seconds",
                    defaults::FORGE_LEEWAY_CAP_SECONDS
                ),
            ));
        }
        Ok(ForgeSettings {
            apps,
            jwks_url,
            jwks_file,
            jwks_proxy,
            jwks_roots: raw.jwks_roots,
            jwks_extra_ca: raw.jwks_extra_ca.map(|p| self.path(p)),
            jwks_refresh_cooldown: Duration::from_secs(raw.jwks_refresh_cooldown_seconds),
            jwks_max_age: Duration::from_secs(raw.jwks_max_age_seconds),
            jwks_fetch_timeout: Duration::from_millis(raw.jwks_fetch_timeout_ms),
            leeway: Duration::from_secs(raw.leeway_seconds),
        })
    }

    fn forge_app(
        &self,
        i: usize,
        raw: RawForgeApp,
        app_keys: &[AppKeyConfig],
        seen: &mut HashSet<String>,
    ) -> Result<ForgeApp, ConfigError> {
        let at = |field: &str| format!("forge.apps[{i}].{field}");
        let uuid = raw.id.strip_prefix(FORGE_APP_ARI_PREFIX).unwrap_or("");
        if uuid.is_empty() || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(self.err(
                at("id"),
                format!("`{}` must be the app id in ARI form, {FORGE_APP_ARI_PREFIX}{{uuid}} (manifest.yml, app.id)", raw.id),
            ));
        }
        if !seen.insert(raw.id.clone()) {
            return Err(self.err(at("id"), format!("`{}` is listed twice", raw.id)));
        }
        if raw.environments.is_empty() {
            return Err(self.err(at("environments"), "must name at least one environment"));
        }
        let mut environments = Vec::with_capacity(raw.environments.len());
        for text in &raw.environments {
            let environment = match text.as_str() {
                "PRODUCTION" => ForgeEnvironment::Production,
                "STAGING" => ForgeEnvironment::Staging,
                "DEVELOPMENT" => ForgeEnvironment::Development,
                _ => {
                    return Err(self.err(
                        at("environments"),
                        format!("`{text}` is not one of PRODUCTION, STAGING, DEVELOPMENT"),
                    ))
                }
            };
            environments.push(environment);
        }
        if raw.installation_ids.is_empty() && raw.cloud_ids.is_empty() {
            return Err(self.err(
                format!("forge.apps[{i}]"),
                "set `installation_ids` or `cloud_ids`: without them a token from this app installed on any Jira site would be let in",
            ));
        }
        for (field, values) in [
            ("installation_ids", &raw.installation_ids),
            ("cloud_ids", &raw.cloud_ids),
        ] {
            if let Some(bad) = values.iter().find(|v| {
                v.is_empty()
                    || v.len() > 200
                    || v.chars().any(|c| c.is_whitespace() || c.is_control())
            }) {
                return Err(self.err(at(field), format!("`{bad}` is not an id")));
            }
        }
        for keyid in &raw.signature_keyids {
            if !app_keys.iter().any(|k| &k.keyid == keyid) {
                return Err(self.err(
                    at("signature_keyids"),
                    format!("`{keyid}` is not the keyid of any [[app_keys]]"),
                ));
            }
        }
        if raw.require_signature && app_keys.is_empty() {
            return Err(self.err(
                at("require_signature"),
                "the app's RFC 9421 signature needs its key in [[app_keys]] (or, knowing the risk, require_signature = false)",
            ));
        }
        Ok(ForgeApp {
            id: raw.id,
            environments,
            installation_ids: raw.installation_ids,
            cloud_ids: raw.cloud_ids,
            require_signature: raw.require_signature,
            signature_keyids: raw.signature_keyids,
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

    /// `forge`: `[forge]` is configured, so the timeouts must fit within Forge's.
    fn integrations(
        &self,
        raw: Vec<RawIntegration>,
        forge: bool,
    ) -> Result<Vec<Integration>, ConfigError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, integ) in raw.into_iter().enumerate() {
            let at = |field: &str| format!("integrations[{i}].{field}");
            if !IntegrationId::is_valid(&integ.id) {
                return Err(self.err(
                    at("id"),
                    format!(
                        "`{}` must be 1 to {} of a-z, 0-9, `-` and `_`, starting with a letter or digit",
                        integ.id,
                        IntegrationId::MAX_LEN
                    ),
                ));
            }
            if !seen.insert(integ.id.clone()) {
                return Err(self.err(at("id"), format!("`{}` is listed twice", integ.id)));
            }
            let base_url =
                parse_base_url(&integ.base_url).map_err(|why| self.err(at("base_url"), why))?;
            if integ.kind == HostKind::Github {
                github_api_url(&base_url).map_err(|why| self.err(at("base_url"), why))?;
            }
            let proxy = match integ.proxy.trim() {
                "" => None,
                text => Some(parse_proxy_url(text).map_err(|why| self.err(at("proxy"), why))?),
            };
            if integ.roots == TrustRoots::None && integ.extra_ca.is_none() {
                return Err(self.err(
                    at("roots"),
                    "`none` trusts only `extra_ca`, which is not set",
                ));
            }
            let request_timeout_ms = integ.request_timeout_ms.unwrap_or(if forge {
                defaults::FORGE_REQUEST_TIMEOUT_MS
            } else {
                defaults::REQUEST_TIMEOUT_MS
            });
            for (field, value) in [
                ("connect_timeout_ms", integ.connect_timeout_ms),
                ("request_timeout_ms", request_timeout_ms),
            ] {
                if value == 0 {
                    return Err(self.err(at(field), "must be greater than 0"));
                }
            }
            if forge
                && integ.connect_timeout_ms + request_timeout_ms
                    >= defaults::FORGE_CALLER_TIMEOUT_MS
            {
                return Err(self.err(
                    at("request_timeout_ms"),
                    format!(
                        "with [forge], connect_timeout_ms + request_timeout_ms ({} ms) must stay below the {} ms after which Forge gives up on a call, so the app gets patgate's upstream-timeout rather than Forge's own error",
                        integ.connect_timeout_ms + request_timeout_ms,
                        defaults::FORGE_CALLER_TIMEOUT_MS
                    ),
                ));
            }
            if integ.max_body_bytes == 0 {
                return Err(self.err(at("max_body_bytes"), "must be greater than 0"));
            }
            if integ.pat_expiry_warning_days > 365 {
                return Err(self.err(at("pat_expiry_warning_days"), "must be 0 to 365"));
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
            let display_name = match integ.display_name {
                None => None,
                Some(name) => {
                    Some(display_name(&name).map_err(|why| self.err(at("display_name"), why))?)
                }
            };
            out.push(Integration {
                id: integ.id,
                display_name,
                kind: integ.kind,
                base_url,
                roots: integ.roots,
                extra_ca: integ.extra_ca.map(|p| self.path(p)),
                proxy,
                require_user_pat: integ.require_user_pat,
                allow_other_writes: integ.allow_other_writes,
                connect_timeout: Duration::from_millis(integ.connect_timeout_ms),
                request_timeout: Duration::from_millis(request_timeout_ms),
                max_body_bytes: integ.max_body_bytes,
                pat_expiry_warning: Duration::from_secs(integ.pat_expiry_warning_days * 86_400),
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

/// The prefix of a Forge app id (`manifest.yml`'s `app.id`).
pub(crate) const FORGE_APP_ARI_PREFIX: &str = "ari:cloud:ecosystem::app/";

/// A whole https URL (path and query kept), e.g. the JWKS URL.
fn parse_https_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(format!("`{text}` must be an https:// URL with a host"));
    }
    Ok(uri)
}

/// A `github` base URL must be the REST API's: github.com's and GHE.com's web addresses are
/// not (their APIs are on `api.` hosts, at the root).
fn github_api_url(base_url: &http::Uri) -> Result<(), String> {
    let host = base_url.host().unwrap_or_default().to_ascii_lowercase();
    let api_host = match host.strip_suffix(".ghe.com") {
        _ if host == "github.com" || host == "www.github.com" => Some("api.github.com".to_string()),
        Some(subdomain) if !subdomain.is_empty() && !subdomain.contains('.') => {
            Some(format!("api.{subdomain}.ghe.com"))
        }
        _ => None,
    };
    if let Some(api_host) = api_host {
        return Err(format!(
            "`{base_url}` is the web address; the REST API is https://{api_host}"
        ));
    }
    let cloud = GithubFlavour::of(base_url) != GithubFlavour::Server;
    if cloud && base_url.path() != "/" && !base_url.path().is_empty() {
        return Err(format!(
            "https://{host} serves the REST API at its root: drop the path `{}`",
            base_url.path()
        ));
    }
    Ok(())
}

/// `http://host:port`: an HTTP proxy that opens CONNECT tunnels.
fn parse_proxy_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.port().is_none() || !bare {
        return Err(format!(
            "`{text}` must be an HTTP proxy URL like http://proxy.internal:3128 (it opens a CONNECT tunnel; TLS runs end to end through it)"
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "`{text}`: credentials in the proxy URL are not supported"
        ));
    }
    Ok(uri)
}

/// The most characters a display name may have: it is a heading, not a paragraph.
const DISPLAY_NAME_MAX_CHARS: usize = 80;

/// A display name, trimmed: not empty, one line, at most [`DISPLAY_NAME_MAX_CHARS`].
fn display_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("must not be empty (leave it out to show the host's own name)".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must be one line of text, without control characters".into());
    }
    if name.chars().count() > DISPLAY_NAME_MAX_CHARS {
        return Err(format!(
            "must be at most {DISPLAY_NAME_MAX_CHARS} characters"
        ));
    }
    Ok(name.to_string())
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

#[cfg(test)]
mod tests {
    use super::super::{test_parse as parse, TEST_MINIMAL as MINIMAL};
    use super::*;

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
        let auto = crate::cores::usable_cpus().get();
        assert_eq!(cfg.service.workers, auto);
        for (set, want) in [("\"auto\"", auto), ("1", 1), ("256", 256)] {
            let cfg = parse(&format!("{MINIMAL}[service]\nworkers = {set}\n")).unwrap();
            assert_eq!(cfg.service.workers, want, "{set}");
        }
        for bad in ["0", "257", "-1", "\"many\"", "\"\"", "2.5", "true"] {
            let err = parse(&format!("{MINIMAL}[service]\nworkers = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "service.workers", "{bad}");
            assert!(err.reason.contains("\"auto\""), "{bad}: {err}");
        }
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
    fn display_name_is_optional_trimmed_and_one_short_line() {
        assert_eq!(parse(MINIMAL).unwrap().integrations[0].display_name, None);
        let named = |value: &str| {
            MINIMAL.replace(
                "kind = \"github\"",
                &format!("kind = \"github\"\ndisplay_name = {value}"),
            )
        };
        assert_eq!(
            parse(&named("\"  Acme GitHub  \"")).unwrap().integrations[0]
                .display_name
                .as_deref(),
            Some("Acme GitHub")
        );
        for bad in ["\"  \"", "\"a\\nb\"", &format!("\"{}\"", "x".repeat(81))] {
            let err = parse(&named(bad)).unwrap_err();
            assert_eq!(err.key, "integrations[0].display_name", "{bad}");
        }
    }

    #[test]
    fn plain_http_base_url_is_refused() {
        let err = parse(&MINIMAL.replace("https://ghe", "http://ghe")).unwrap_err();
        assert_eq!(err.key, "integrations[0].base_url");
        assert!(err.reason.contains("https"));
    }

    #[test]
    fn github_web_addresses_and_paths_on_cloud_hosts_are_refused() {
        for (url, says) in [
            ("https://github.com", "https://api.github.com"),
            ("https://octocorp.ghe.com", "https://api.octocorp.ghe.com"),
            (
                "https://api.octocorp.ghe.com/api/v3",
                "drop the path `/api/v3`",
            ),
            ("https://api.github.com/api/v3", "drop the path `/api/v3`"),
        ] {
            let err = parse(&MINIMAL.replace("https://ghe.example.com", url)).unwrap_err();
            assert_eq!(err.key, "integrations[0].base_url", "{url}");
            assert!(err.reason.contains(says), "{url}: {}", err.reason);
        }
        for url in [
            "https://api.github.com",
            "https://api.octocorp.ghe.com",
            "https://github.example.com/prefix",
        ] {
            parse(&MINIMAL.replace("https://ghe.example.com", url)).unwrap();
        }
    }

    #[test]
    fn an_integration_proxy_is_an_http_connect_proxy() {
        let with = |proxy: &str| {
            parse(&MINIMAL.replace(
                "kind = \"github\"",
                &format!("kind = \"github\"\nproxy = \"{proxy}\""),
            ))
        };
        let config = with("http://proxy.internal:3128").unwrap();
        assert_eq!(
            config.integrations[0].proxy.as_ref().unwrap().to_string(),
            "http://proxy.internal:3128/"
        );
        assert_eq!(with("").unwrap().integrations[0].proxy, None);
        for bad in [
            "https://proxy:3128",
            "http://proxy",
            "http://u:p@proxy:3128",
            "x",
        ] {
            assert_eq!(with(bad).unwrap_err().key, "integrations[0].proxy", "{bad}");
        }
    }

    #[test]
    fn bad_integration_id_and_duplicates_are_refused() {
        let err = parse(&MINIMAL.replace("id = \"ghe\"", "id = \"GHE/x\"")).unwrap_err();
        assert_eq!(err.key, "integrations[0].id");
        let twice = format!("{MINIMAL}\n[[integrations]]\nid = \"ghe\"\nkind = \"github\"\nbase_url = \"https://x.example\"\n");
        let err = parse(&twice).unwrap_err();
        assert_eq!(err.key, "integrations[1].id");
    }

    /// Found by fuzz/ config_parse (its oracle was stricter than the documentation): a skew
    /// of 0 is allowed, a validity of 0 is not.
    #[test]
    fn a_skew_of_zero_is_allowed_and_a_validity_of_zero_is_not() {
        let text = format!("{MINIMAL}\n[signatures]\nmax_skew_seconds = 0\n");
        assert_eq!(parse(&text).unwrap().signatures.max_skew, Duration::ZERO);
        let text = format!("{MINIMAL}\n[signatures]\nmax_validity_seconds = 0\n");
        assert_eq!(
            parse(&text).unwrap_err().key,
            "signatures.max_validity_seconds"
        );
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

    const FORGE_APP: &str = "ari:cloud:ecosystem::app/3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44";

    /// MINIMAL with an app key, `api` keys and a `[forge]` section.
    fn with_forge(api: &str, forge: &str, app: &str) -> String {
        MINIMAL.replace("client_ca = \"ca.pem\"", &format!("client_ca = \"ca.pem\"\n{api}"))
            + &format!(
                "[[app_keys]]\nkeyid = \"forge-app\"\ned25519_public_key = \"JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\"\n[forge]\n{forge}\n[[forge.apps]]\nid = \"{FORGE_APP}\"\ninstallation_ids = [\"ari:cloud:ecosystem::installation/1\"]\n{app}\n"
            )
    }

    #[test]
    fn forge_defaults() {
        let cfg = parse(&with_forge("client_certificate = \"optional\"", "", "")).unwrap();
        assert_eq!(
            cfg.api.client_certificate,
            super::super::ClientCertificateMode::Optional
        );
        let forge = cfg.forge.unwrap();
        assert_eq!(
            forge.jwks_url.unwrap(),
            "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json"
        );
        assert_eq!(forge.jwks_refresh_cooldown, Duration::from_secs(60));
        assert_eq!(forge.leeway, Duration::from_secs(5));
        let app = &forge.apps[0];
        assert_eq!(app.environments, [ForgeEnvironment::Production]);
        assert!(app.require_signature);
        // With [forge], the upstream timeout defaults below Forge's 25 s.
        assert_eq!(
            cfg.integrations[0].request_timeout,
            Duration::from_millis(15_000)
        );
        // Without it, as before.
        assert_eq!(
            parse(MINIMAL).unwrap().api.client_certificate,
            super::super::ClientCertificateMode::Required
        );
        assert_eq!(
            parse(MINIMAL).unwrap().integrations[0].request_timeout,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn forge_settings_are_checked() {
        let optional = "client_certificate = \"optional\"";
        for (api, forge, app, key) in [
            (
                "client_certificate = \"sometimes\"",
                "",
                "",
                "api.client_certificate",
            ),
            // Source ranges only where certificate-less callers are let in.
            (
                "forge_source_cidrs = [\"10.0.0.0/8\"]",
                "",
                "",
                "api.forge_source_cidrs",
            ),
            (
                "client_certificate = \"none\"\nforge_source_cidrs = [\"10.0.0.0/33\"]",
                "",
                "",
                "api.forge_source_cidrs[0]",
            ),
            (
                optional,
                "jwks_url = \"http://keys.example/jwks.json\"",
                "",
                "forge.jwks_url",
            ),
            (optional, "jwks_url = \"\"", "", "forge.jwks_url"),
            (
                optional,
                "jwks_proxy = \"https://proxy:3128\"",
                "",
                "forge.jwks_proxy",
            ),
            (
                optional,
                "jwks_proxy = \"http://user:pw@proxy:3128\"",
                "",
                "forge.jwks_proxy",
            ),
            (
                optional,
                "jwks_refresh_cooldown_seconds = 0",
                "",
                "forge.jwks_refresh_cooldown_seconds",
            ),
            (optional, "leeway_seconds = 61", "", "forge.leeway_seconds"),
            (
                optional,
                "",
                "environments = [\"PROD\"]",
                "forge.apps[0].environments",
            ),
            (
                optional,
                "",
                "environments = []",
                "forge.apps[0].environments",
            ),
            (
                optional,
                "",
                "signature_keyids = [\"nope\"]",
                "forge.apps[0].signature_keyids",
            ),
        ] {
            let text = with_forge(api, forge, app);
            let err = parse(&text).unwrap_err();
            assert_eq!(err.key, key, "{api} {forge} {app}: {err}");
        }
        // No [forge] to check callers without a certificate against.
        let none = MINIMAL.replace(
            "client_ca = \"ca.pem\"",
            "client_ca = \"ca.pem\"\nclient_certificate = \"none\"",
        );
        let err = parse(&none).unwrap_err();
        assert_eq!(err.key, "api.client_certificate");
        assert!(err.reason.contains("[forge]"), "{err}");
        // The app id in ARI form; at least one installation or site.
        let text =
            with_forge(optional, "", "").replace(FORGE_APP, "3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44");
        assert_eq!(parse(&text).unwrap_err().key, "forge.apps[0].id");
        let text = with_forge(optional, "", "").replace(
            "installation_ids = [\"ari:cloud:ecosystem::installation/1\"]",
            "",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "forge.apps[0]");
        assert!(err.reason.contains("any Jira site"), "{err}");
        // Upstream timeouts within Forge's.
        let text = with_forge(optional, "", "").replace(
            "kind = \"github\"",
            "kind = \"github\"\nrequest_timeout_ms = 20000",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "integrations[0].request_timeout_ms");
        assert!(err.reason.contains("25000"), "{err}");
        let ok = with_forge("client_certificate = \"none\"\nforge_source_cidrs = [\"104.192.136.0/21\", \"2401:1d80::/32\", \"192.0.2.7\"]", "", "");
        assert_eq!(parse(&ok).unwrap().api.forge_source_cidrs.len(), 3);
    }

    #[test]
    fn aws_keys_are_refused_on_other_kinds() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nregion = \"eu-west-1\"",
        );
        assert_eq!(parse(&text).unwrap_err().key, "integrations[0].region");
    }
}
