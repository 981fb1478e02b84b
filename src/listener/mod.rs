//! The top of the service: the sockets it listens on and their accept loops, and the
//! routing of each request to the step that serves it.
//!
//! | listener | serves | module |
//! |---|---|---|
//! | api (TLS with client certificates) | `/git/…` (the pipeline), `/v1/…` (patgate's own API) | `api` |
//! | connect (TLS, no client certificate) | the page where users enter a PAT ([`crate::connect`]) | `connect` |
//! | admin (plain HTTP on loopback) | `/live`, `/ready`, `/metrics` | `admin` |
//! | admin socket (Unix socket, the service user and root) | the `patgate` command ([`crate::adminsock`]) | [`adminsock`] |
//!
//! [`Server::run`] takes sockets that are already bound ([`Listeners`]) and a shutdown
//! future, as mini-redis's `run(listener, shutdown)` does: `patgate run` binds what the
//! config names, tests bind `127.0.0.1:0` themselves and drive the real server over real
//! TLS. A reload ([`ServerHandle::reload`]) swaps the runtime in force
//! ([`crate::runtime::Current`]) without touching the sockets.

mod admin;
pub mod adminsock;
mod api;
mod connect;
mod cores;
mod http;
mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::metrics::ReloadLabels;
use crate::runtime::{Current, ReloadReport, Runtime};
use crate::vault::PAT_USE_FLUSH_INTERVAL;

pub use adminsock::{AdminSocket, AdminSocketError};
pub use cores::ApiSockets;
pub(crate) use limits::ensure_descriptors;

/// A listener's cap on open connections: the config key (for the log) and how to read it.
type Cap = (&'static str, fn(&Config) -> usize);
const MAX_API: Cap = ("connections.max_api", |config| config.connections.max_api);
const MAX_CONNECT: Cap = ("connections.max_connect", |config| {
    config.connections.max_connect
});
const MAX_ADMIN: Cap = ("connections.max_admin", |config| {
    config.connections.max_admin
});

/// A connection an accept loop took: its socket, its peer, its place under the listener's
/// cap, and its activity (for the idle and head deadlines), as of `accepted` on the clock.
struct Admitted {
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: limits::Permit,
    activity: Arc<limits::Activity>,
    accepted: std::time::Duration,
}

/// The next connection on `listener` that `gate` admits under the cap `max` picks from the
/// config in force (`setting` names it in the log). Past the cap the socket is closed at
/// once, before any TLS work is spent on it. A failed accept (EMFILE and the like: the
/// descriptor limit reached) is logged as `{what}: accept failed` and backed off from for
/// 50 ms instead of spun on. Cancel safe: the accept loops select it against their stop
/// signal.
async fn admit_next(
    listener: &TcpListener,
    what: &'static str,
    current: &Current,
    gate: &Arc<limits::Gate>,
    (setting, max): Cap,
) -> Admitted {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "{what}: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let runtime = current.load();
        let accepted = runtime.clock().elapsed();
        let Some(permit) = gate.admit(max(runtime.config())) else {
            tracing::debug!(%peer, "{what}: connection refused: {setting} reached");
            continue;
        };
        let activity = gate.activity(runtime.clock(), accepted);
        return Admitted {
            tcp,
            peer,
            permit,
            activity,
            accepted,
        };
    }
}

/// The sockets a [`Server`] serves, bound before it runs.
#[derive(Debug)]
pub struct Listeners {
    /// One socket per data-plane core (`service.workers`), on `api.listen`.
    pub api: ApiSockets,
    /// The connect page's, when `[connect]` is configured.
    pub connect: Option<TcpListener>,
    /// `/live`, `/ready`, `/metrics`, unless `admin.listen = ""`.
    pub admin: Option<TcpListener>,
    /// Where the `patgate` command reaches the running service.
    pub admin_socket: AdminSocket,
}

impl Listeners {
    /// Binds every listener `config` names.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
        Self::bind_with_connect(config, None).await
    }

    /// Binds every listener `config` names, taking `connect` (bound earlier, e.g. to learn a
    /// port `connect.public_url` must name) as the connect listener when given.
    pub async fn bind_with_connect(
        config: &Config,
        connect: Option<TcpListener>,
    ) -> Result<Listeners, String> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
        };
        let api = ApiSockets::bind(config.api.listen, config.service.workers)
            .map_err(|e| format!("cannot listen on {} (api.listen): {e}", config.api.listen))?;
        let connect = match (&config.connect, connect) {
            (Some(_), Some(bound)) => Some(bound),
            (Some(connect), None) => Some(bind("connect.listen", connect.listen).await?),
            (None, _) => None,
        };
        let admin = match config.admin.listen {
            Some(addr) => Some(bind("admin.listen", addr).await?),
            None => None,
        };
        let admin_socket = AdminSocket::bind(&config.admin.socket)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Listeners {
            api,
            connect,
            admin,
            admin_socket,
        })
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        Some(self.api.local_addr())
    }

    pub fn connect_addr(&self) -> Option<SocketAddr> {
        self.connect.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Reaches a running [`Server`] from outside its accept loops: the SIGHUP handler, the
/// systemd watchdog and tests reload and read the runtime through it.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    current: Arc<Current>,
    /// One reload at a time: two at once could each build from the same old runtime.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// Set once shutdown has closed the listeners.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ServerHandle {
    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load()
    }

    /// Completes once shutdown has begun and every listener is closed: from then on new
    /// connections are refused while requests in flight finish.
    pub async fn listeners_closed(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Re-reads the config file the service started with and, when everything in it loads,
    /// serves with it from now on. On error the old config keeps serving; the error names
    /// the file and key, is logged as `reload refused`, and counted in
    /// `patgate_reloads_total{result="error"}`.
    pub async fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.current.load();
        let outcome = match Config::load(&old.config().source) {
            Ok(config) => old.reload(config).await,
            Err(err) => Err(err),
        };
        old.metrics()
            .reloads
            .get_or_create(&ReloadLabels {
                result: if outcome.is_ok() { "ok" } else { "error" }.into(),
            })
            .inc();
        match outcome {
            Ok(new) => {
                let report = ReloadReport::between(old.config(), new.config());
                self.current.store(Arc::new(new));
                tracing::info!(
                    integrations = report.integrations,
                    added = %report.added.join(","),
                    removed = %report.removed.join(","),
                    changed = %report.changed.join(","),
                    app_keys = report.app_keys,
                    crls = report.crls,
                    "reloaded configuration"
                );
                Ok(report)
            }
            Err(err) => {
                tracing::error!(
                    file = %err.file.display(),
                    key = %err.key,
                    reason = %err.reason,
                    "reload refused; the previous configuration keeps serving"
                );
                Err(err)
            }
        }
    }
}

/// The running service: a runtime in force, and the accept loops once [`Server::run`] runs.
#[derive(Debug)]
pub struct Server {
    handle: ServerHandle,
}

impl Server {
    pub fn new(runtime: Runtime) -> Server {
        Server {
            handle: ServerHandle {
                current: Arc::new(Current::new(runtime)),
                reloading: Arc::default(),
                closed: Arc::new(tokio::sync::watch::Sender::new(false)),
            },
        }
    }

    /// For reloading while [`Server::run`] serves.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves `listeners` until `shutdown` completes. Then: every listener closes at once
    /// (new connections are refused), requests in flight get `service.shutdown_grace` (of
    /// the config in force then) to finish, connections still open after it are closed, and
    /// the PAT uses and the vault are flushed. The admin listener answers through all of it
    /// and stops last.
    pub async fn run(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let current = self.handle.current.clone();
        let runtime = current.load();
        let clock = runtime.clock().clone();
        let metrics = runtime.metrics().clone();
        let api_gate = limits::Gate::new("api", &metrics);
        // Turns true when shutdown begins: the listeners other than admin stop accepting.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Turns true when the grace period is over: every connection still open is closed.
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let admin_socket = tokio::spawn(adminsock::serve(
            listeners.admin_socket,
            current.clone(),
            stopped.clone(),
        ));
        let connect = listeners.connect.map(|listener| {
            tokio::spawn(connect::serve(
                current.clone(),
                listener,
                limits::Gate::new("connect", &metrics),
                stopped.clone(),
                cut_rx.clone(),
            ))
        });
        let flusher = {
            let current = current.clone();
            let mut stop = stopped.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = clock.sleep(PAT_USE_FLUSH_INTERVAL) => {
                            let runtime = current.load();
                            runtime.pat_uses().flush(runtime.vault()).await;
                        }
                        _ = stop.changed() => break,
                    }
                }
            })
        };
        tokio::spawn(crate::ratelimit::prune_periodically(
            runtime.limits().clone(),
            metrics.clone(),
            stopped.clone(),
        ));
        drop(runtime);
        // Ready before the admin listener answers its first probe: a probe that was queued
        // while starting must not see "not ready" once everything is up. The api listener is
        // bound; connections wait in its backlog until its loop accepts them.
        metrics.ready.set(1);
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin = listeners.admin.map(|listener| {
            tokio::spawn(admin::serve(
                listener,
                current.clone(),
                limits::Gate::new("admin", &metrics),
                admin_stopped,
            ))
        });
        api::announce_forge(&current.load().config().api);
        let (close, closing) = tokio::sync::watch::channel(false);
        let mut cores = cores::start(
            listeners.api,
            &cores::Shared {
                current: current.clone(),
                gate: api_gate.clone(),
                stop: stopped.clone(),
                cut: cut_rx,
                closing,
            },
        );
        shutdown.await;
        let _ = close.send(true);
        cores.closed().await;
        // Not ready from now on; the api sockets are closed, so new connections are refused.
        metrics.ready.set(0);
        let _ = stop.send(true);
        // The socket file is gone once this returns.
        let _ = admin_socket.await;
        if let Some(task) = connect {
            let _ = task.await;
        }
        let _ = flusher.await;
        self.handle.closed.send_replace(true);
        let grace = current.load().config().service.shutdown_grace;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "listeners closed; finishing requests in flight"
        );
        tokio::select! {
            () = api_gate.drained() => tracing::info!("all connections closed"),
            () = clock.sleep(grace) => {
                tracing::warn!(grace_seconds = grace.as_secs(), "grace period over; closing remaining connections");
                let _ = cut.send(true);
            }
        }
        let runtime = current.load();
        runtime.pat_uses().flush(runtime.vault()).await;
        match runtime.vault().flush().await {
            Ok(()) => tracing::info!("vault flushed"),
            Err(err) => tracing::error!(error = %err, "vault flush at shutdown failed"),
        }
        cores.finish().await;
        let _ = stop_admin.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}
