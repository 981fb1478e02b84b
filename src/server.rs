//! The running service: what is built from the config ([`Runtime`]) and the api
//! listener's accept loop ([`Server`]).
//!
//! `Server::bind` then `Server::run(shutdown)` is the whole life cycle, so tests bind
//! `127.0.0.1:0`, drive the real server over real TLS, and stop it with a future.
//!
//! The runtime in force sits in a [`Current`] slot that a reload ([`crate::reload`]) swaps
//! whole: each TLS handshake and each request takes the runtime current when it starts, so
//! open connections go on with what they began with and new ones see the new material.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{AppKeyMaterial, Config, ConfigError, HostKind, Integration, TfsVersion};
use crate::hosts::{adapter_for, HostAdapter};
use crate::signature::{AppKey, KeyRing, Verifier, Window};
use crate::upstream::Upstream;
use crate::vault::Vault;

/// One integration, ready to forward to.
#[derive(Debug)]
pub struct IntegrationRuntime {
    pub config: Integration,
    pub adapter: Arc<dyn HostAdapter>,
    pub upstream: Upstream,
}

impl IntegrationRuntime {
    pub fn build(file: &Path, index: usize, config: &Integration) -> Result<Self, ConfigError> {
        let upstream = Upstream::new(config)
            .map_err(|e| ConfigError::new(file, format!("integrations[{index}].extra_ca"), e))?;
        Ok(IntegrationRuntime {
            adapter: adapter_for(config),
            upstream,
            config: config.clone(),
        })
    }
}

/// Everything a request needs, built once from a validated config.
#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub verifier: Verifier,
    pub integrations: HashMap<String, IntegrationRuntime>,
    pub vault: Arc<Vault>,
    pub tls: Arc<rustls::ServerConfig>,
    /// When `tls`'s certificate expires (Unix seconds); `/metrics` counts down to it.
    pub api_cert_not_after: i64,
    /// The connect page's links and TLS, when `[connect]` is configured.
    pub connect: Option<crate::connect::Links>,
    pub connect_tls: Option<Arc<rustls::ServerConfig>>,
    /// When users' PATs were last used, not yet written to the vault. Shared across reloads.
    pub pat_uses: Arc<PatUses>,
    /// The `tfs` integrations whose `version = "auto"` was detected (their `tfs_version` now
    /// holds the release); a reload that leaves one unchanged keeps its release.
    pub tfs_detected: HashSet<String>,
    /// Lives for the whole process.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Rate limits and host holds; a reload reconfigures them in place (state is kept).
    pub limits: Arc<crate::ratelimit::RateLimits>,
}

/// How often [`PatUses`] are written to the vault (and once more at shutdown).
pub const PAT_USE_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// When users' PATs were last used, kept in memory and written to the vault metadata in
/// batches, so a request never waits on a disk write. Bounded by the number of stored PATs:
/// an entry is only made when a stored PAT was used.
#[derive(Debug, Default)]
pub struct PatUses(std::sync::Mutex<HashMap<String, HashMap<String, u64>>>);

impl PatUses {
    /// Called on the request path: a map update under a short lock, allocating only the
    /// first time an (integration, account) pair is seen since the last flush.
    pub fn record(&self, integration: &str, account: &str, at: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = map.get_mut(integration).and_then(|m| m.get_mut(account)) {
            *seen = (*seen).max(at);
            return;
        }
        map.entry(integration.to_string())
            .or_default()
            .insert(account.to_string(), at);
    }

    /// A use not yet written to the vault.
    pub fn pending(&self, integration: &str, account: &str) -> Option<u64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(integration).and_then(|m| m.get(account)).copied()
    }

    /// Writes every pending use to the vault.
    pub async fn flush(&self, vault: &Vault) {
        let uses: Vec<_> = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.drain()
                .flat_map(|(integration, accounts)| {
                    accounts
                        .into_iter()
                        .map(move |(account, at)| ((integration.clone(), account), at))
                })
                .collect()
        };
        if uses.is_empty() {
            return;
        }
        if let Err(err) = vault.record_pat_uses(&uses).await {
            tracing::warn!(error = %err, "writing when PATs were last used failed");
            for ((integration, account), at) in uses {
                self.record(&integration, &account, at);
            }
        }
    }
}

/// What the config's files hold, loaded and checked: the parts of a [`Runtime`] that do
/// not need the vault. `patgate config check` builds this too.
#[derive(Debug)]
pub struct Materials {
    pub tls: rustls::ServerConfig,
    pub keys: KeyRing,
    pub window: Window,
    pub integrations: HashMap<String, IntegrationRuntime>,
    /// The connect listener's TLS (no client certificates), when configured.
    pub connect_tls: Option<rustls::ServerConfig>,
    /// When the api listener's certificate expires (Unix seconds).
    pub api_cert_not_after: i64,
}

/// The config key a TLS error is about, found by the file it names.
fn api_tls_key(api: &crate::config::ApiListener, err: &crate::tls::TlsError) -> String {
    use crate::tls::TlsError;
    let path = match err {
        TlsError::Read { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::BadPem { path, .. }
        | TlsError::NoCrl { path }
        | TlsError::NoPrivateKey { path } => path.as_str(),
        TlsError::Config(why) if why.contains("CRL") => return "api.crl".into(),
        TlsError::Config(_) => return "api.cert".into(),
    };
    let is = |p: &Path| p.display().to_string() == path;
    if let Some(i) = api.crl.iter().position(|p| is(p)) {
        format!("api.crl[{i}]")
    } else if is(&api.cert) {
        "api.cert".into()
    } else if is(&api.key) {
        "api.key".into()
    } else if is(&api.client_ca) {
        "api.client_ca".into()
    } else {
        "api".into()
    }
}

/// Loads every certificate and key the config names, and builds the upstream clients.
pub fn check_materials(config: &Config) -> Result<Materials, ConfigError> {
    let file = &config.source;
    let api = &config.api;
    let tls = crate::tls::api_server_config(&api.cert, &api.key, &api.client_ca, &api.crl)
        .map_err(|e| ConfigError::new(file, api_tls_key(api, &e), e))?;
    let api_cert_not_after =
        crate::tls::not_after(&api.cert).map_err(|e| ConfigError::new(file, "api.cert", e))?;
    let keys = load_app_keys(config)?;
    let window = Window::new(
        config.signatures.max_skew.as_secs(),
        config.signatures.max_validity.as_secs(),
    )
    .map_err(|e| ConfigError::new(file, "signatures", e))?;
    let mut integrations = HashMap::with_capacity(config.integrations.len());
    for (index, integration) in config.integrations.iter().enumerate() {
        integrations.insert(
            integration.id.clone(),
            IntegrationRuntime::build(file, index, integration)?,
        );
    }
    let connect_tls = config
        .connect
        .as_ref()
        .map(|c| {
            crate::tls::server_config_without_client_auth(&c.cert, &c.key)
                .map_err(|e| ConfigError::new(file, "connect", e))
        })
        .transpose()?;
    Ok(Materials {
        tls,
        api_cert_not_after,
        connect_tls,
        keys,
        window,
        integrations,
    })
}

impl Runtime {
    /// Loads certificates and keys and builds the upstream clients. `started_at` is the
    /// process start: signatures created earlier are refused (the nonce cache is new).
    pub fn build(
        config: Config,
        vault: Arc<Vault>,
        started_at: SystemTime,
    ) -> Result<Runtime, ConfigError> {
        if let Some(index) = config
            .integrations
            .iter()
            .position(|i| i.tfs_version == Some(TfsVersion::Auto))
        {
            // A programming error, not an admin's: the start step was skipped.
            return Err(ConfigError::new(
                &config.source,
                format!("integrations[{index}].version"),
                "`auto` must be detected before the service is built (server::detect_host_versions)",
            ));
        }
        let materials = check_materials(&config)?;
        let not_before = started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let verifier = Verifier::new(
            materials.keys,
            materials.window,
            config.signatures.nonce_cache_entries,
            not_before,
        );
        let connect = config.connect.as_ref().map(crate::connect::Links::new);
        let limits = Arc::new(crate::ratelimit::RateLimits::new(
            &config.rate_limits,
            crate::ratelimit::Clock::monotonic(),
        ));
        Ok(Runtime {
            tfs_detected: HashSet::new(),
            limits,
            config,
            verifier,
            integrations: materials.integrations,
            vault,
            tls: Arc::new(materials.tls),
            api_cert_not_after: materials.api_cert_not_after,
            connect,
            connect_tls: materials.connect_tls.map(Arc::new),
            pat_uses: Arc::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }
}

/// The async start step before [`Runtime::build`]: every `tfs` integration with
/// `version = "auto"` asks its server which release it is (with the integration's secret),
/// and the config then holds that release. A server that cannot be asked, or does not say,
/// is a start error naming the integration: patgate never guesses whether a host has PATs.
///
/// Answers the ids detected, for [`Runtime::tfs_detected`].
pub async fn detect_host_versions(
    config: &mut Config,
    vault: &Vault,
) -> Result<HashSet<String>, ConfigError> {
    let file = config.source.clone();
    let mut detected = HashSet::new();
    for (index, integration) in config.integrations.iter_mut().enumerate() {
        if needs_detection(integration) {
            detect_host_version(&file, index, integration, vault).await?;
            detected.insert(integration.id.clone());
        }
    }
    Ok(detected)
}

/// Whether an integration's release is still to be asked for.
pub fn needs_detection(integration: &Integration) -> bool {
    integration.kind == HostKind::Tfs && integration.tfs_version == Some(TfsVersion::Auto)
}

/// Asks one `tfs` integration's server for its release (see [`detect_host_versions`]).
pub async fn detect_host_version(
    file: &Path,
    index: usize,
    integration: &mut Integration,
    vault: &Vault,
) -> Result<(), ConfigError> {
    let at = format!("integrations[{index}].version");
    let fail = |why: &dyn std::fmt::Display| {
        ConfigError::new(
            file,
            &at,
            format!(
                "detecting the server release of integration `{}` failed: {why}",
                integration.id
            ),
        )
    };
    let upstream = Upstream::new(integration).map_err(|e| fail(&e))?;
    let secret = vault
        .integration_secret(&integration.id)
        .map_err(|e| fail(&e))?
        .ok_or_else(|| fail(&crate::hosts::azure::DetectError::NoSecret))?;
    let detected = crate::hosts::azure::detect_version(&upstream, &secret)
        .await
        .map_err(|e| fail(&e))?;
    tracing::info!(
        integration = %integration.id,
        release = %detected.release,
        api_version = %detected.api_version,
        probe = detected.probe,
        "detected the TFS / Azure DevOps Server release"
    );
    integration.tfs_version = Some(TfsVersion::Release(detected.release));
    Ok(())
}

/// Reads the app's keys. HMAC secret files must be private to the service user, like the
/// master key.
pub fn load_app_keys(config: &Config) -> Result<KeyRing, ConfigError> {
    let file = &config.source;
    let mut keys = Vec::with_capacity(config.app_keys.len());
    for (i, key) in config.app_keys.iter().enumerate() {
        let app_key = match &key.material {
            AppKeyMaterial::Ed25519PublicKey(b64) => AppKey::ed25519_from_base64(&key.keyid, b64)
                .map_err(|e| {
                ConfigError::new(file, format!("app_keys[{i}].ed25519_public_key"), e)
            })?,
            AppKeyMaterial::HmacSecretFile(path) => {
                let at = format!("app_keys[{i}].hmac_secret_file");
                let secret =
                    read_private_base64_file(path).map_err(|e| ConfigError::new(file, &at, e))?;
                AppKey::hmac(&key.keyid, &secret).map_err(|e| ConfigError::new(file, &at, e))?
            }
        };
        keys.push(app_key);
    }
    KeyRing::from_keys(keys).map_err(|e| ConfigError::new(file, "app_keys", e))
}

/// Reads a secret kept as base64 on one line, refusing files others can read.
pub fn read_private_base64_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {mode:04o}); run chmod 600 on it",
            path.display()
        ));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{} does not hold one line of base64", path.display()))?;
    Ok(zeroize::Zeroizing::new(bytes))
}

/// What is known about a connection once its handshake is done.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The client certificate's subject, for logs.
    pub client_subject: String,
    /// Whether the certificate is on the SAN allow-list (or there is none).
    pub client_allowed: bool,
}

/// The runtime in force. A reload replaces it whole; whoever took it before keeps theirs
/// (an `Arc`), so a request never sees half of one config and half of another.
#[derive(Debug)]
pub struct Current(RwLock<Arc<Runtime>>);

impl Current {
    fn new(runtime: Runtime) -> Current {
        Current(RwLock::new(Arc::new(runtime)))
    }

    /// The runtime new handshakes and requests use now.
    pub fn load(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn store(&self, runtime: Arc<Runtime>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = runtime;
    }
}

/// Reaches a running [`Server`] from outside its accept loop: the SIGHUP handler and tests
/// reload through it ([`crate::reload`]).
#[derive(Debug, Clone)]
pub struct ServerHandle {
    pub(crate) current: Arc<Current>,
    /// One reload at a time: two at once could each build from the same old runtime.
    pub(crate) reloading: Arc<tokio::sync::Mutex<()>>,
    /// Set once shutdown has closed the listeners.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ServerHandle {
    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load()
    }

    /// Completes once shutdown has begun and both listeners are closed: from then on new
    /// connections are refused while requests in flight finish.
    pub async fn listeners_closed(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

/// The api listener, and the connect page's when configured.
#[derive(Debug)]
pub struct Server {
    handle: ServerHandle,
    listener: TcpListener,
    /// The connect page's listener, when `[connect]` is configured.
    connect_listener: Option<TcpListener>,
    /// The admin listener (`/live`, `/ready`, `/metrics`), unless `admin.listen = ""`.
    admin_listener: Option<TcpListener>,
    /// Where the `patgate` command reaches the running service.
    admin_socket: crate::adminsock::AdminSocket,
}

impl Server {
    /// Binds the api listener.
    pub async fn bind(runtime: Runtime) -> std::io::Result<Server> {
        let listener = TcpListener::bind(runtime.config.api.listen).await?;
        let connect_listener = match &runtime.config.connect {
            Some(connect) => Some(TcpListener::bind(connect.listen).await?),
            None => None,
        };
        let admin_listener = match runtime.config.admin.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let admin_socket = crate::adminsock::AdminSocket::bind(&runtime.config.admin.socket)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Server {
            handle: ServerHandle {
                current: Arc::new(Current::new(runtime)),
                reloading: Arc::default(),
                closed: Arc::new(tokio::sync::watch::Sender::new(false)),
            },
            listener,
            connect_listener,
            admin_listener,
            admin_socket,
        })
    }

    /// The connect listener's address, when it is configured.
    pub fn connect_addr(&self) -> Option<SocketAddr> {
        self.connect_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The admin listener's address, unless it is switched off.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.handle.runtime()
    }

    /// For reloading while [`Server::run`] serves.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until `shutdown` completes. Then: both listeners close at once (new
    /// connections are refused), requests in flight get `service.shutdown_grace` (of the
    /// config in force then) to finish, connections still open after it are closed, and the
    /// PAT uses and the vault are flushed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let current = self.handle.current.clone();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let (stop_connect, connect_stopped) = tokio::sync::watch::channel(false);
        let admin_socket = {
            let mut stop = stop_connect.subscribe();
            let runtime = current.load();
            let current = current.clone();
            tokio::spawn(crate::adminsock::serve(
                self.admin_socket,
                crate::adminsock::AdminContext {
                    vault: runtime.vault.clone(),
                    metrics: runtime.metrics.clone(),
                    runtime: Arc::new(move || current.load()),
                },
                async move {
                    let _ = stop.changed().await;
                },
            ))
        };
        // Set when the grace period is over: every connection still open is closed.
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let connect_task = self.connect_listener.map(|listener| {
            tokio::spawn(serve_connect(
                current.clone(),
                listener,
                connect_stopped,
                cut_rx.clone(),
            ))
        });
        let flusher = {
            let current = current.clone();
            let mut stop = stop_connect.subscribe();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PAT_USE_FLUSH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let runtime = current.load();
                            runtime.pat_uses.flush(&runtime.vault).await;
                        }
                        _ = stop.changed() => break,
                    }
                }
            })
        };
        let metrics = current.load().metrics.clone();
        tokio::spawn(crate::ratelimit::prune_periodically(
            current.load().limits.clone(),
            metrics.clone(),
            stop_connect.subscribe(),
        ));
        // Ready before the admin listener answers its first probe: a probe that was queued
        // while starting must not see "not ready" once everything is up. The API listener is
        // bound; connections wait in its backlog until the loop below accepts them.
        metrics.ready.set(1);
        // The admin listener answers through the drain and stops last.
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin_listener.map(|listener| {
            let current = current.clone();
            tokio::spawn(crate::admin::serve(
                listener,
                Arc::new(move || current.load()),
                admin_stopped,
            ))
        });
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let connection = serve_api_connection(current.clone(), tcp, peer, graceful.watcher());
            let mut cut = cut_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = connection => {}
                    _ = cut.changed() => tracing::info!(%peer, "connection closed: the shutdown grace period is over"),
                }
            });
        }
        // Not ready from now on; close the listening sockets first, so new connections are
        // refused.
        metrics.ready.set(0);
        drop(self.listener);
        let _ = stop_connect.send(true);
        // The socket file is gone once this returns.
        let _ = admin_socket.await;
        if let Some(task) = connect_task {
            let _ = task.await;
        }
        let _ = flusher.await;
        self.handle.closed.send_replace(true);
        let grace = current.load().config.service.shutdown_grace;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "listeners closed; finishing requests in flight"
        );
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(grace) => {
                tracing::warn!(grace_seconds = grace.as_secs(), "grace period over; closing remaining connections");
                let _ = cut.send(true);
            }
        }
        let runtime = current.load();
        runtime.pat_uses.flush(&runtime.vault).await;
        match runtime.vault.flush().await {
            Ok(()) => tracing::info!("vault flushed"),
            Err(err) => tracing::error!(error = %err, "vault flush at shutdown failed"),
        }
        let _ = stop_admin.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

/// The HTTP side of the api and connect listeners, made per connection from the config in
/// force at its handshake (so a reload changes the timeouts and limits of new connections).
fn http_builder(api: &crate::config::ApiListener) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(api.header_read_timeout)
        .max_buf_size(api.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(api.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // Caps the number of streams a client can reset without them ever being answered
        // (CVE-2023-44487, "rapid reset").
        .max_pending_accept_reset_streams(64);
    builder
}

/// One api connection: the TLS handshake with the runtime current now (its certificate,
/// client CA and CRLs), then each request with the runtime current when it arrives.
async fn serve_api_connection(
    current: Arc<Current>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let at_handshake = current.load();
    let acceptor = TlsAcceptor::from(at_handshake.tls.clone());
    let handshake = tokio::time::timeout(
        at_handshake.config.api.handshake_timeout,
        acceptor.accept(tcp),
    )
    .await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::info!(%peer, error = %err, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let connection = {
        let (_, session) = tls.get_ref();
        // The verifier requires a certificate, so one is always present here.
        let leaf = session.peer_certificates().and_then(|c| c.first());
        let (subject, sans) = leaf
            .map(|c| (crate::tls::subject(c), crate::tls::client_sans(c)))
            .unwrap_or_default();
        // Like the certificate checks, the allow-list applies at the handshake.
        Arc::new(Connection {
            peer,
            client_allowed: crate::tls::client_allowed(
                &at_handshake.config.api.allowed_client_sans,
                &sans,
            ),
            client_subject: subject,
        })
    };
    let builder = http_builder(&at_handshake.config.api);
    drop(at_handshake);
    if !connection.client_allowed {
        tracing::info!(%peer, subject = %connection.client_subject, "client certificate not on the allow-list");
    }
    let service = service_fn(move |req| {
        let runtime = current.load();
        let connection = connection.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                crate::proxy::handle(&runtime, &connection, req).await,
            )
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(err) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// The connect page's accept loop: server TLS only (the certificate current at each
/// handshake), every request to [`crate::connect`] with the runtime current then.
async fn serve_connect(
    current: Arc<Current>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
    cut: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "connect listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let current = current.clone();
        let mut cut = cut.clone();
        let connection = async move {
            let at_handshake = current.load();
            // `[connect]` cannot come or go without a restart, so its TLS is always there.
            let Some(tls) = at_handshake.connect_tls.clone() else {
                return;
            };
            let handshake = tokio::time::timeout(
                at_handshake.config.api.handshake_timeout,
                TlsAcceptor::from(tls).accept(tcp),
            )
            .await;
            let builder = http_builder(&at_handshake.config.api);
            drop(at_handshake);
            let Ok(Ok(tls)) = handshake else {
                tracing::debug!(%peer, "connect listener: TLS handshake failed");
                return;
            };
            let service = service_fn(move |req| {
                let runtime = current.load();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::connect::handle(&runtime, req).await)
                }
            });
            if let Err(err) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %err, "connect connection ended with an error");
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                _ = cut.changed() => {}
            }
        });
    }
}

/// Seconds since the Unix epoch, for signature windows and vault timestamps.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
