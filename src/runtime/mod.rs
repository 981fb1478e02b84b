//! What the service runs with: everything built from one validated config ([`Runtime`]),
//! and the slot that holds the runtime in force ([`Current`]), swapped whole on reload.
//!
//! Each TLS handshake and each request takes the runtime current when it starts, so open
//! connections go on with what they began with and new ones see the new material.
//!
//! The runtime is plain data with narrow accessors: it knows the config, the vault, the
//! host adapters and upstream clients, the authenticator, the rate limits and the stores,
//! and nothing of sockets or requests. The listeners and the request pipeline sit above it.
//!
//! What lives for the process is made once ([`Runtime::start`]) and carried over by
//! [`Runtime::reload`]: the vault, the metrics, the clock, the replay cache, the connect
//! links' store, the rate-limit state and host holds, and Forge's fetched key set (while its
//! URL is unchanged; a pinned JWKS file is read again).

mod materials;
mod reload;
mod stores;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::app_tokens::{self, AppTokens};
use crate::authn::forge::JwksUrl;
use crate::authn::{Authenticator, Callers, ForgeToken, MtlsSignature};
use crate::clock::Clock;
use crate::config::StoreSettings;
use crate::config::{Config, ConfigError, HostKind, Integration, TfsVersion};
use crate::hosts::{adapter_for, HostAdapter};
use crate::links::Links;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::signature::Verifier;
use crate::store::{LinkStore, NonceStore, Postgres, Stores};
use crate::upstream::Upstream;
use crate::vault::{Credential, PatUses, Stamped, Vault, VaultError};

pub use materials::{check_materials, load_app_keys, read_private_base64_file, Materials};
pub use reload::{ReloadReport, RESTART_ONLY};
pub use stores::{connect_postgres, shared_stores};

/// One integration, ready to forward to.
#[derive(Debug)]
pub struct IntegrationRuntime {
    config: Integration,
    adapter: Arc<dyn HostAdapter>,
    upstream: Upstream,
    clock: Clock,
}

impl IntegrationRuntime {
    /// The adapter and the upstream clients for one configured integration (`index` is its
    /// place in the file, for errors), for a data plane of `cores` cores (0 for a command
    /// that serves nothing).
    pub fn build(
        file: &Path,
        index: usize,
        config: &Integration,
        clock: &Clock,
        cores: usize,
    ) -> Result<Self, ConfigError> {
        let upstream = Upstream::new(config, clock, cores)
            .map_err(|e| ConfigError::new(file, format!("integrations[{index}].extra_ca"), e))?;
        Ok(IntegrationRuntime {
            adapter: adapter_for(config),
            upstream,
            config: config.clone(),
            clock: clock.clone(),
        })
    }

    /// The integration's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The integration as configured.
    pub fn config(&self) -> &Integration {
        &self.config
    }

    /// What the host's requests mean and how its credentials are applied.
    pub fn adapter(&self) -> &dyn HostAdapter {
        &*self.adapter
    }

    /// The pooled client to the host.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Where the GitHub App calls of this integration go, and the time their JWTs carry.
    pub(crate) fn app_target(&self) -> app_tokens::Target<'_> {
        app_tokens::Target {
            integration: &self.config,
            upstream: &self.upstream,
            clock: &self.clock,
        }
    }
}

/// Everything a request needs, built once from a validated config.
#[derive(Debug)]
pub struct Runtime {
    config: Config,
    clock: Clock,
    /// The process start (Unix seconds): signatures created earlier are refused.
    not_before: u64,
    nonces: Arc<dyn NonceStore>,
    /// The connect links' store, kept whether `[connect]` is configured or not, so a reload
    /// that adds it uses the store the process started with.
    link_store: Arc<dyn LinkStore>,
    authenticator: Callers,
    integrations: HashMap<String, IntegrationRuntime>,
    vault: Arc<Vault>,
    api_tls: Arc<rustls::ServerConfig>,
    /// When `api_tls`'s certificate expires (Unix seconds); `/metrics` counts down to it.
    api_cert_not_after: i64,
    /// The connect page's links and TLS, when `[connect]` is configured.
    links: Option<Links>,
    connect_tls: Option<Arc<rustls::ServerConfig>>,
    /// When users' PATs were last used, not yet written to the vault.
    pat_uses: Arc<PatUses>,
    /// The `tfs` integrations whose `version = "auto"` was detected (their `tfs_version` now
    /// holds the release); a reload that leaves one unchanged keeps its release.
    tfs_detected: HashSet<String>,
    metrics: Arc<Metrics>,
    /// Rate limits and host holds; a reload reconfigures them in place (state is kept).
    limits: Arc<RateLimits>,
    /// GitHub App installation tokens, in memory only.
    app_tokens: Arc<AppTokens>,
    /// The shared store's database (`[store] kind = "postgres"`), for `/ready` and
    /// `/metrics`; the stores above hold their own handles to it.
    database: Option<Postgres>,
}

impl Runtime {
    /// The async start step and the build: every `tfs` integration with `version = "auto"`
    /// asks its server which release it is (with the integration's secret), then everything
    /// else is loaded. `clock` is what the service reads the time from for the rest of the
    /// process; signatures created before the second this is called in were made before the
    /// replay cache existed, and are refused.
    ///
    /// The stores are the embedded ones (this process's memory); a config with `[store] kind
    /// = "postgres"` is refused here, its stores are opened by the caller
    /// ([`Runtime::start_with`]).
    pub async fn start(
        config: Config,
        vault: Arc<Vault>,
        clock: Clock,
    ) -> Result<Runtime, ConfigError> {
        if config.store != StoreSettings::Sled {
            // A programming error, not an admin's: the shared stores were not opened.
            return Err(ConfigError::new(
                &config.source,
                "store.kind",
                "a shared store must be opened before the service is built (Runtime::start_with)",
            ));
        }
        let stores = Stores::embedded(config.signatures.nonce_cache_entries);
        Self::start_with(config, vault, clock, stores).await
    }

    /// [`Runtime::start`] with the given stores (the shared ones of `[store]`).
    pub async fn start_with(
        mut config: Config,
        vault: Arc<Vault>,
        clock: Clock,
        stores: Stores,
    ) -> Result<Runtime, ConfigError> {
        let not_before = clock.unix_now();
        // A rotation run through another replica of a shared store: its new key is taken
        // from where the admin installs it.
        vault.take_next_key_from(crate::vault::pending_key_for(
            &config.master_key,
            &config.state_dir,
        ));
        let tfs_detected = reload::detect_releases(&mut config, &vault, None, &clock).await?;
        let Stores {
            nonces,
            links,
            holds,
            database,
        } = stores;
        let mut metrics = Metrics::new();
        if let Some(db) = &database {
            metrics.register_store(db.metrics());
        }
        let limits = Arc::new(RateLimits::new(&config.rate_limits, clock.clone(), holds));
        let runtime = Runtime::assemble(
            config,
            Carried {
                clock,
                not_before,
                nonces,
                links,
                vault,
                pat_uses: Arc::default(),
                metrics: Arc::new(metrics),
                limits,
                database,
                forge_jwks: None,
                app_tokens: Arc::default(),
            },
            tfs_detected,
        )?;
        runtime.load_forge_keys().await;
        Ok(runtime)
    }

    /// With `[forge]`: fetches Forge's key set when none is loaded (the start step; a URL
    /// that cannot be reached leaves patgate running, not ready for Forge calls, and the
    /// fetch is tried again, once per cool-down, by `/ready` and by Forge calls), and sets
    /// `patgate_forge_keys`. Answers whether Forge calls can be verified (true without
    /// `[forge]`).
    pub async fn load_forge_keys(&self) -> bool {
        let Some(forge) = self.authenticator.forge() else {
            return true;
        };
        let usable = forge.ensure_keys(self.clock.unix_now()).await;
        self.metrics
            .forge_keys
            .set(i64::try_from(forge.usable_keys()).unwrap_or(i64::MAX));
        usable
    }

    /// Builds a runtime from a config whose releases are known, around what is carried.
    fn assemble(
        config: Config,
        carried: Carried,
        tfs_detected: HashSet<String>,
    ) -> Result<Runtime, ConfigError> {
        if let Some(index) = config.integrations.iter().position(needs_detection) {
            // A programming error, not an admin's: the start step was skipped.
            return Err(ConfigError::new(
                &config.source,
                format!("integrations[{index}].version"),
                "`auto` must be detected before the service is built (Runtime::start)",
            ));
        }
        let materials = check_materials(&config, &carried.clock)?;
        let verifier = Verifier::new(materials.keys, materials.window, carried.not_before);
        let forge = config
            .forge
            .as_ref()
            .map(|settings| {
                ForgeToken::new(
                    settings,
                    verifier.clone(),
                    carried.nonces.clone(),
                    carried.forge_jwks.clone(),
                    carried.metrics.clone(),
                )
                .map_err(|(key, why)| ConfigError::new(&config.source, key, why))
            })
            .transpose()?;
        let links = config
            .connect
            .as_ref()
            .map(|c| Links::new(c, carried.links.clone()));
        Ok(Runtime {
            authenticator: Callers::new(
                MtlsSignature::new(verifier, carried.nonces.clone()),
                forge,
            ),
            integrations: materials.integrations,
            api_tls: Arc::new(materials.tls),
            api_cert_not_after: materials.api_cert_not_after,
            connect_tls: materials.connect_tls.map(Arc::new),
            links,
            tfs_detected,
            clock: carried.clock,
            not_before: carried.not_before,
            nonces: carried.nonces,
            link_store: carried.links,
            vault: carried.vault,
            pat_uses: carried.pat_uses,
            metrics: carried.metrics,
            limits: carried.limits,
            app_tokens: carried.app_tokens,
            database: carried.database,
            config,
        })
    }

    /// What a reload carries over from this runtime.
    fn carried(&self) -> Carried {
        Carried {
            clock: self.clock.clone(),
            not_before: self.not_before,
            nonces: self.nonces.clone(),
            links: self.link_store.clone(),
            vault: self.vault.clone(),
            pat_uses: self.pat_uses.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            app_tokens: self.app_tokens.clone(),
            database: self.database.clone(),
            forge_jwks: self
                .authenticator
                .forge()
                .and_then(|f| f.jwks_url().cloned()),
        }
    }

    /// The validated config this runtime was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the service reads the time.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Turns requests on the api listener into verified callers.
    pub fn authenticator(&self) -> &dyn Authenticator {
        &self.authenticator
    }

    /// The Forge authenticator, when `[forge]` is configured.
    pub fn forge(&self) -> Option<&ForgeToken> {
        self.authenticator.forge()
    }

    /// The configured integration `id`.
    pub fn integration(&self, id: &str) -> Option<&IntegrationRuntime> {
        self.integrations.get(id)
    }

    /// The configured integration `id`, with the id as the config spells it (for metric
    /// labels, which must come from the config, never from a URL as sent).
    pub fn integration_entry(&self, id: &str) -> Option<(&str, &IntegrationRuntime)> {
        self.integrations
            .get_key_value(id)
            .map(|(id, integration)| (id.as_str(), integration))
    }

    /// Every configured integration, in no particular order.
    pub fn integrations(&self) -> impl Iterator<Item = &IntegrationRuntime> {
        self.integrations.values()
    }

    /// The configured integrations whose secret is not in the vault, by id: every request
    /// through one of them answers 503 until an admin stores it. A vault that cannot say is
    /// an error.
    pub async fn integrations_without_secret(&self) -> Result<Vec<String>, VaultError> {
        let mut missing = Vec::new();
        for integration in self.integrations.values() {
            if !self.vault.has_integration_secret(integration.id()).await? {
                missing.push(integration.id().to_string());
            }
        }
        missing.sort();
        Ok(missing)
    }

    /// How many integrations are configured.
    pub fn integration_count(&self) -> usize {
        self.integrations.len()
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// The api listener's TLS: its certificate, client CA and CRLs.
    pub fn api_tls(&self) -> &Arc<rustls::ServerConfig> {
        &self.api_tls
    }

    /// When the api listener's certificate expires (Unix seconds).
    pub fn api_cert_not_after(&self) -> i64 {
        self.api_cert_not_after
    }

    /// The connect page's links, when `[connect]` is configured.
    pub fn links(&self) -> Option<&Links> {
        self.links.as_ref()
    }

    /// The connect listener's TLS, when `[connect]` is configured.
    pub fn connect_tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.connect_tls.as_ref()
    }

    /// When users' PATs were last used, not yet written to the vault.
    pub fn pat_uses(&self) -> &Arc<PatUses> {
        &self.pat_uses
    }

    /// Lives for the whole process.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The shared store's database, with `[store] kind = "postgres"`.
    pub fn database(&self) -> Option<&Postgres> {
        self.database.as_ref()
    }

    /// Rate limits and host holds.
    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }

    /// GitHub App installation tokens.
    pub(crate) fn app_tokens(&self) -> &AppTokens {
        &self.app_tokens
    }

    /// Every integration whose account is a GitHub App gets an installation token (the one
    /// in memory while fresh; else one is minted, once per retry interval after a failure).
    /// Answers why each that cannot has none (each reason names its integration); failures
    /// are logged where they happen. `/ready` and the start step ask this.
    pub async fn github_apps_without_token(&self) -> Vec<String> {
        let mut failing = Vec::new();
        for integration in self.integrations.values() {
            if integration.config.kind != HostKind::Github {
                continue;
            }
            let target = integration.app_target();
            // A fresh token minted from the record as it is now: the App's key stays sealed.
            let stamped = self
                .vault
                .integration_secret_unless(integration.id(), |stamp| {
                    !stamp.is_github_app() || self.app_tokens.fresh_for(&target, stamp).is_some()
                })
                .await;
            let (credential, stamp) = match stamped {
                Ok(Some(Stamped::Read(credential @ Credential::GithubApp { .. }, stamp))) => {
                    (credential, stamp)
                }
                Ok(_) => continue,
                Err(err) => {
                    failing.push(format!("integration `{}`: {err}", integration.id()));
                    continue;
                }
            };
            let Some(app) = app_tokens::App::of(&credential) else {
                continue;
            };
            if let Err(err) = self
                .app_tokens
                .token(&target, &app, stamp, &self.metrics)
                .await
            {
                failing.push(err.to_string());
            }
        }
        failing.sort();
        failing
    }
}

/// What lives for the process, carried from one runtime to the next.
struct Carried {
    clock: Clock,
    not_before: u64,
    nonces: Arc<dyn NonceStore>,
    links: Arc<dyn LinkStore>,
    vault: Arc<Vault>,
    pat_uses: Arc<PatUses>,
    metrics: Arc<Metrics>,
    limits: Arc<RateLimits>,
    /// Forge's fetched key set, kept while the JWKS URL is unchanged.
    forge_jwks: Option<Arc<JwksUrl>>,
    app_tokens: Arc<AppTokens>,
    database: Option<Postgres>,
}

/// The start step alone, for `patgate config check` and the admin commands: every `tfs`
/// integration with `version = "auto"` asks its server which release it is, and `config`
/// then holds that release. Answers the ids detected.
pub async fn detect_tfs_releases(
    config: &mut Config,
    vault: &Vault,
    clock: &Clock,
) -> Result<HashSet<String>, ConfigError> {
    reload::detect_releases(config, vault, None, clock).await
}

/// Whether an integration's release is still to be asked for.
fn needs_detection(integration: &Integration) -> bool {
    integration.kind == HostKind::Tfs && integration.tfs_version == Some(TfsVersion::Auto)
}

/// The runtime in force. A reload replaces it whole; whoever took it before keeps theirs
/// (an `Arc`), so a request never sees half of one config and half of another.
#[derive(Debug)]
pub struct Current(RwLock<Arc<Runtime>>);

impl Current {
    pub fn new(runtime: Runtime) -> Current {
        Current(RwLock::new(Arc::new(runtime)))
    }

    /// The runtime new handshakes and requests use now.
    pub fn load(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `runtime` in force.
    pub fn store(&self, runtime: Arc<Runtime>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = runtime;
    }
}
