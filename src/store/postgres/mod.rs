//! The shared store of several replicas: PostgreSQL, through a pool of tokio-postgres
//! connections. One database holds the vault's sealed records and settings ([`PgRecords`]),
//! the replay cache ([`PgNonces`]), the connect links opened ([`PgLinks`]) and the host holds
//! ([`PgHolds`]), so every replica that points at it behaves as one.
//!
//! - The database never holds a credential in clear or a key: records are sealed by the
//!   vault before they reach it, and the connect-link key is derived from the master key in
//!   each replica's memory ([`PgLinks`]).
//! - Each connection prepares a statement the first time it runs it and keeps it
//!   (deadpool-postgres' statement cache): a request costs its round trips, no parsing.
//! - The schema is versioned ([`MIGRATIONS`], the `patgate_schema` table) and made or upgraded
//!   by `patgate store migrate` only ([`Postgres::migrate`]); a replica refuses to start on a
//!   schema that is not the one it knows ([`Postgres::check_schema`]).
//! - A database error is an error: nothing here turns one into a "not found" or a first use.
//! - Every operation borrows its connection through [`Postgres::client`], the one place
//!   that times it, counts its failures ([`crate::metrics::StoreMetrics`]) and follows the
//!   database's health: the first failure to reach it logs one warning, the first new
//!   connection or probe that reaches it again one info line, whatever the requests in
//!   between ([`PgError::is_unreachable`]). A connection the database closed (a restart) is
//!   dropped when it comes back to the pool and a new one opened, so the pool serves again
//!   by itself once the database does.
//! - [`Postgres::probe`] answers whether the database answers now, for `/ready`: one
//!   `SELECT 1` at most every [`PROBE_EVERY`] (sooner when an operation saw an outage
//!   begin or end), bounded by [`PROBE_TIMEOUT`], shared by the health checks that ask
//!   meanwhile.
//!
//! # Layout
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`PgSettings`], [`Postgres`] (the pool), [`PgError`], the schema and its migrations |
//! | `records.rs` | [`PgRecords`], the [`super::RecordStore`] |
//! | `nonces.rs` | [`PgNonces`], the [`super::NonceStore`] |
//! | `links.rs` | [`PgLinks`], the [`super::LinkStore`] |
//! | `holds.rs` | [`PgHolds`], the [`super::HoldStore`] |

mod holds;
mod links;
mod nonces;
mod records;

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret as _, SecretString};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

pub use holds::PgHolds;
pub use links::PgLinks;
pub use nonces::PgNonces;
pub use records::PgRecords;

use super::StoreError;
use crate::metrics::{PoolLabels, StoreLabels, StoreMetrics};

/// The schema, one migration per version: migration `i` takes the schema from version `i`
/// to `i + 1`. A migration is never edited once released; a change is a new one.
///
/// - `patgate_records`: one table for both [`super::Space`]s (`space` 0 records, 1 settings),
///   bytea keys, which PostgreSQL orders byte by byte (bytea has no collation), as
///   [`super::RecordStore::scan`] needs.
/// - `patgate_nonces` is `UNLOGGED` (no WAL write per request); `nonces.rs` says how a crash
///   of the database, which empties it, still lets no replay in.
/// - `patgate_first_use` decides a nonce in one round trip (`nonces.rs`).
///
/// Version 2:
/// - `patgate_holds_version` counts the holds made (`holds.rs`), and `patgate_check_nonce`
///   (in place of `patgate_first_use`) answers it with each nonce's decision, so a replica
///   learns in the round trip it makes anyway whether its copy of the holds is current.
///
/// Version 3:
/// - `patgate_records_version` counts the writes of `patgate_records` (`records.rs`: every
///   writing transaction adds one as its last statement), and `patgate_check_nonce` answers
///   it too, so a replica learns whether the records it keeps are current.
pub const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE patgate_records (
    space smallint NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (space, key)
);
CREATE UNLOGGED TABLE patgate_nonces (
    keyid text NOT NULL,
    nonce text NOT NULL,
    replay_until bigint NOT NULL,
    PRIMARY KEY (keyid, nonce)
);
CREATE INDEX patgate_nonces_replay_until ON patgate_nonces (replay_until);
-- The sentinel: its absence says a crash emptied the table.
INSERT INTO patgate_nonces VALUES ('', '', 9223372036854775807);
CREATE TABLE patgate_nonce_horizon (
    id smallint PRIMARY KEY CHECK (id = 1),
    horizon bigint NOT NULL
);
INSERT INTO patgate_nonce_horizon VALUES (1, 0);
CREATE FUNCTION patgate_first_use(p_keyid text, p_nonce text, p_until bigint, p_now bigint, p_window bigint)
RETURNS smallint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    h bigint;
    inserted bigint;
BEGIN
    -- Shared with other first uses, exclusive with a prune that moves the horizon: after
    -- the lock, the queries below see the horizon of every prune that finished.
    PERFORM pg_advisory_xact_lock_shared(7461626);
    IF NOT EXISTS (SELECT 1 FROM patgate_nonces WHERE keyid = '' AND nonce = '') THEN
        -- A crash of the database emptied the unlogged table: pairs it forgot may still be
        -- in their window, so no signature made before now is accepted any more.
        UPDATE patgate_nonce_horizon SET horizon = GREATEST(horizon, p_now + p_window) WHERE id = 1;
        INSERT INTO patgate_nonces VALUES ('', '', 9223372036854775807) ON CONFLICT DO NOTHING;
    END IF;
    SELECT horizon INTO h FROM patgate_nonce_horizon WHERE id = 1;
    IF p_until < h THEN
        RETURN 2;
    END IF;
    -- A pair whose window ended may start a new one (a new signature with an old nonce).
    INSERT INTO patgate_nonces (keyid, nonce, replay_until) VALUES (p_keyid, p_nonce, p_until)
    ON CONFLICT (keyid, nonce) DO UPDATE SET replay_until = EXCLUDED.replay_until
        WHERE patgate_nonces.replay_until < p_now;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted = 1 THEN
        RETURN 0;
    END IF;
    RETURN 1;
END;
$$;
CREATE TABLE patgate_links_opened (
    id text PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX patgate_links_opened_expires_at ON patgate_links_opened (expires_at);
CREATE TABLE patgate_holds (
    integration text NOT NULL,
    user_pat boolean NOT NULL,
    account text NOT NULL,
    until_ms bigint NOT NULL,
    prev_until_ms bigint,
    PRIMARY KEY (integration, user_pat, account)
);
",
    r"
CREATE TABLE patgate_holds_version (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO patgate_holds_version VALUES (1, 0);
DROP FUNCTION patgate_first_use(text, text, bigint, bigint, bigint);
CREATE FUNCTION patgate_check_nonce(p_keyid text, p_nonce text, p_until bigint, p_now bigint, p_window bigint,
    OUT outcome smallint, OUT holds_version bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    h bigint;
    inserted bigint;
BEGIN
    -- Shared with other first uses, exclusive with a prune that moves the horizon: after
    -- the lock, the queries below see the horizon of every prune that finished.
    PERFORM pg_advisory_xact_lock_shared(7461626);
    IF NOT EXISTS (SELECT 1 FROM patgate_nonces WHERE keyid = '' AND nonce = '') THEN
        -- A crash of the database emptied the unlogged table: pairs it forgot may still be
        -- in their window, so no signature made before now is accepted any more.
        UPDATE patgate_nonce_horizon SET horizon = GREATEST(horizon, p_now + p_window) WHERE id = 1;
        INSERT INTO patgate_nonces VALUES ('', '', 9223372036854775807) ON CONFLICT DO NOTHING;
    END IF;
    -- Read before the decision: every hold made before this request was admitted is in it.
    SELECT version INTO holds_version FROM patgate_holds_version WHERE id = 1;
    SELECT horizon INTO h FROM patgate_nonce_horizon WHERE id = 1;
    IF p_until < h THEN
        outcome := 2;
        RETURN;
    END IF;
    -- A pair whose window ended may start a new one (a new signature with an old nonce).
    INSERT INTO patgate_nonces (keyid, nonce, replay_until) VALUES (p_keyid, p_nonce, p_until)
    ON CONFLICT (keyid, nonce) DO UPDATE SET replay_until = EXCLUDED.replay_until
        WHERE patgate_nonces.replay_until < p_now;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted = 1 THEN
        outcome := 0;
    ELSE
        outcome := 1;
    END IF;
END;
$$;
",
    r"
CREATE TABLE patgate_records_version (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO patgate_records_version VALUES (1, 0);
DROP FUNCTION patgate_check_nonce(text, text, bigint, bigint, bigint);
CREATE FUNCTION patgate_check_nonce(p_keyid text, p_nonce text, p_until bigint, p_now bigint, p_window bigint,
    OUT outcome smallint, OUT holds_version bigint, OUT records_version bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    h bigint;
    inserted bigint;
BEGIN
    -- Shared with other first uses, exclusive with a prune that moves the horizon: after
    -- the lock, the queries below see the horizon of every prune that finished.
    PERFORM pg_advisory_xact_lock_shared(7461626);
    IF NOT EXISTS (SELECT 1 FROM patgate_nonces WHERE keyid = '' AND nonce = '') THEN
        -- A crash of the database emptied the unlogged table: pairs it forgot may still be
        -- in their window, so no signature made before now is accepted any more.
        UPDATE patgate_nonce_horizon SET horizon = GREATEST(horizon, p_now + p_window) WHERE id = 1;
        INSERT INTO patgate_nonces VALUES ('', '', 9223372036854775807) ON CONFLICT DO NOTHING;
    END IF;
    -- Read before the decision: every hold made and every record written before this
    -- request was admitted is counted in them.
    SELECT version INTO holds_version FROM patgate_holds_version WHERE id = 1;
    SELECT version INTO records_version FROM patgate_records_version WHERE id = 1;
    SELECT horizon INTO h FROM patgate_nonce_horizon WHERE id = 1;
    IF p_until < h THEN
        outcome := 2;
        RETURN;
    END IF;
    -- A pair whose window ended may start a new one (a new signature with an old nonce).
    INSERT INTO patgate_nonces (keyid, nonce, replay_until) VALUES (p_keyid, p_nonce, p_until)
    ON CONFLICT (keyid, nonce) DO UPDATE SET replay_until = EXCLUDED.replay_until
        WHERE patgate_nonces.replay_until < p_now;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted = 1 THEN
        outcome := 0;
    ELSE
        outcome := 1;
    END IF;
END;
$$;
",
];

/// The schema version this binary reads and writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock `migrate` holds, so two replicas migrating at once run one after the
/// other (the second finds nothing to do).
const MIGRATE_LOCK: i64 = 7_461_625;

/// TLS to the database.
#[derive(Debug, Clone)]
pub enum PgTls {
    /// Plain TCP (or a Unix socket): for a database on this machine or a private link.
    Disable,
    /// TLS, the server's certificate verified against these roots and the host name.
    Require(Box<rustls::ClientConfig>),
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// A connection string (`postgresql://user:password@host:port/db` or `host=… dbname=…`).
    /// It may hold a password: it never reaches a log or an error message.
    pub url: SecretString,
    pub tls: PgTls,
    /// Connections to the database, at most, shared out among the pools (see
    /// [`Postgres::connect`]).
    pub pool_size: usize,
    /// The data-plane cores ([`crate::cores`]): each has a pool of its own.
    pub cores: usize,
    /// How long a connection may take to open, and a request wait for a free connection.
    pub connect_timeout: Duration,
    /// The database's `statement_timeout` on every connection: it cancels a statement that
    /// runs longer.
    pub statement_timeout: Duration,
}

/// Why the database could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    /// The connection string does not parse. The message never quotes it.
    #[error("the PostgreSQL connection string is not valid: {0}")]
    Url(String),
    #[error("the PostgreSQL connection pool cannot be made: {0}")]
    Pool(String),
    /// No connection could be had, or the one in use was lost: the database does not
    /// answer (stopped, unreachable, refusing connections), or every connection stayed busy
    /// for `store.connect_timeout_ms`.
    #[error("PostgreSQL ({location}) could not be reached while {during}: {reason}")]
    Unreachable {
        location: String,
        during: &'static str,
        reason: String,
    },
    /// The database answered, with an error.
    #[error("PostgreSQL ({location}) failed while {during}: {reason}")]
    Database {
        location: String,
        during: &'static str,
        reason: String,
    },
    /// No schema yet.
    #[error("the database {location} has no patgate schema: run `patgate store migrate`")]
    Unmigrated { location: String },
    /// An older schema than this binary's.
    #[error("the database {location} has patgate schema version {found}, this patgate needs {needed}: run `patgate store migrate`")]
    Behind {
        location: String,
        found: u32,
        needed: u32,
    },
    /// A newer schema than this binary knows: a newer patgate migrated it.
    #[error("the database {location} has patgate schema version {found}, newer than this patgate knows ({known}): upgrade patgate")]
    Ahead {
        location: String,
        found: u32,
        known: u32,
    },
}

impl PgError {
    /// Whether the database did not answer (rather than answered with an error): the
    /// failures of an outage, which [`Postgres`] logs once per outage.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PgError::Unreachable { .. })
    }
}

/// One kind of store operation: the metric labels it is counted under and, for messages,
/// what it was doing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    store: &'static str,
    operation: &'static str,
    during: &'static str,
}

impl Op {
    pub(crate) const fn new(
        store: &'static str,
        operation: &'static str,
        during: &'static str,
    ) -> Op {
        Op {
            store,
            operation,
            during,
        }
    }

    fn labels(self) -> StoreLabels {
        StoreLabels {
            store: self.store,
            operation: self.operation,
        }
    }
}

/// How long a readiness answer is reused: a balancer's health checks, however many, cost
/// the database one `SELECT 1` per interval.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The longest the readiness probe waits for a connection and its answer (less when
/// `store.connect_timeout_ms` is shorter).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const PROBE: Op = Op::new("probe", "select-1", "checking that the database answers");

/// How much longer than `statement_timeout` a request waits for the database's answer
/// ([`Postgres::within`]): enough for the database to answer a cancelled statement itself.
pub(crate) const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// What the pool knows of the database's health, shared by its clones.
struct Health {
    metrics: StoreMetrics,
    /// Since the last failure to reach the database, and until it answered again.
    failing: AtomicBool,
    /// The last probe: when, and what it found. The lock is held while a probe runs, so the
    /// health checks that ask meanwhile wait for its answer rather than send their own.
    probed: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), PgError>)>>,
    probe_timeout: Duration,
    /// `statement_timeout` + [`ANSWER_MARGIN`].
    answer_within: Duration,
}

/// A connection borrowed from the pool for one operation: the operation's time is
/// observed when it is given back (dropped).
pub(crate) struct Client {
    object: deadpool_postgres::Object,
    op: Op,
    started: tokio::time::Instant,
    health: Arc<Health>,
}

impl std::ops::Deref for Client {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.object
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.object
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.health
            .metrics
            .latency
            .get_or_create(&self.op.labels())
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// How long a version read by a replay check may stand for the database's: a lookup with
/// no replay check in this process for longer asks the database.
pub(crate) const SEEN_FRESH: Duration = Duration::from_secs(1);

/// The newest version of a table of changes (`patgate_holds_version`,
/// `patgate_records_version`) that this process read, and when: by a replay check (which
/// reads both before it admits its request) or by a write of its own (which answers the
/// version it made).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    newest: std::sync::Mutex<Option<(i64, tokio::time::Instant)>>,
}

impl Seen {
    /// `version` was read just now (versions only grow: the newest stands).
    pub(crate) fn saw(&self, version: i64) {
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        let version = newest.map_or(version, |(v, _)| v.max(version));
        *newest = Some((version, tokio::time::Instant::now()));
    }

    /// The newest version, when read within [`SEEN_FRESH`].
    pub(crate) fn current(&self) -> Option<i64> {
        let newest = *self.newest.lock().unwrap_or_else(|p| p.into_inner());
        newest
            .filter(|(_, at)| at.elapsed() < SEEN_FRESH)
            .map(|(v, _)| v)
    }
}

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
}

/// The pools of connections to one database: index 0 for the main runtime, then one per
/// data-plane core ([`crate::cores::share`]). A connection's socket and its task belong to
/// the runtime that opened it, and each pool is only used from its own runtime, so a query
/// never leaves the thread of the request that made it. Cheap to clone (the clones share
/// the pools, their metrics and what they know of the database's health).
#[derive(Clone)]
pub struct Postgres {
    pools: Arc<[Pool]>,
    health: Arc<Health>,
    /// The holds version the replay checks last read ([`PgHolds`]), shared by the clones.
    holds_seen: Arc<Seen>,
    /// The records version the replay checks and this process's writes last read
    /// ([`PgRecords`]), shared by the clones.
    records_seen: Arc<Seen>,
    /// `postgresql://host:port/dbname`: what messages name (no user, no password).
    location: String,
    location_path: PathBuf,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("location", &self.location)
            .field(
                "pools",
                &self.pools.iter().map(Pool::status).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Postgres {
    /// The pool; no connection is opened until one is needed.
    pub fn connect(settings: &PgSettings) -> Result<Postgres, PgError> {
        // tokio-postgres' parse errors name the option, never its value.
        #[allow(
            clippy::disallowed_methods,
            reason = "the connection string is parsed into the client's config, which redacts its password"
        )]
        let mut config = tokio_postgres::Config::from_str(settings.url.expose_secret())
            .map_err(|e| PgError::Url(e.to_string()))?;
        config.connect_timeout(settings.connect_timeout);
        config.application_name("patgate");
        // Set at connection start (after the connection string's own `options`, so this one
        // wins): no statement of patgate's waits longer, whatever it waits on.
        let options = format!(
            "{} -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            settings.statement_timeout.as_millis()
        );
        config.options(options.trim_start());
        let location = location(&config);
        let shares = settings.cores + 1;
        let sizes = pool_sizes(settings.pool_size, shares);
        let pools = sizes
            .iter()
            .map(|&size| {
                let manager_config = ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                };
                let manager = match &settings.tls {
                    PgTls::Disable => {
                        let mut config = config.clone();
                        config.ssl_mode(SslMode::Disable);
                        Manager::from_config(config, NoTls, manager_config)
                    }
                    PgTls::Require(client) => {
                        let mut config = config.clone();
                        config.ssl_mode(SslMode::Require);
                        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**client).clone());
                        Manager::from_config(config, tls, manager_config)
                    }
                };
                Pool::builder(manager)
                    .max_size(size)
                    // The connection given back last is lent first: at low concurrency the
                    // same few connections (and their server processes, warm on a CPU)
                    // serve every request, where first-in-first-out would wake each of the
                    // pool's backends in turn.
                    .queue_mode(QueueMode::Lifo)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(settings.connect_timeout))
                    .create_timeout(Some(settings.connect_timeout))
                    .recycle_timeout(Some(settings.connect_timeout))
                    .build()
                    .map_err(|e| PgError::Pool(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = StoreMetrics::default();
        metrics
            .pool_max
            .set(i64::try_from(sizes.iter().sum::<usize>()).unwrap_or(i64::MAX));
        metrics.up.set(1);
        Ok(Postgres {
            pools: pools.into(),
            health: Arc::new(Health {
                metrics,
                failing: AtomicBool::new(false),
                probed: tokio::sync::Mutex::new(None),
                probe_timeout: settings.connect_timeout.min(PROBE_TIMEOUT),
                answer_within: settings.statement_timeout + ANSWER_MARGIN,
            }),
            holds_seen: Arc::default(),
            records_seen: Arc::default(),
            location_path: PathBuf::from(&location),
            location,
        })
    }

    /// The pool's metrics, for [`crate::metrics::Metrics::register_store`].
    pub fn metrics(&self) -> &StoreMetrics {
        &self.health.metrics
    }

    /// Sets the pool's gauges from its state now (at scrape time).
    pub fn observe_pool(&self) {
        let (mut size, mut available, mut waiting) = (0, 0, 0);
        for status in self.pools.iter().map(Pool::status) {
            size += status.size;
            available += status.available;
            waiting += status.waiting;
        }
        let metrics = &self.health.metrics;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics
            .pool_connections
            .get_or_create(&PoolLabels { state: "idle" })
            .set(gauge(available));
        metrics
            .pool_connections
            .get_or_create(&PoolLabels { state: "in-use" })
            .set(gauge(size.saturating_sub(available)));
        metrics.pool_waiting.set(gauge(waiting));
    }

    /// Whether the database answers, as far as the pool knows: `false` from the first
    /// failure to reach it until a new connection or a probe reaches it again.
    pub fn answering(&self) -> bool {
        !self.health.failing.load(Ordering::Acquire)
    }

    /// Whether the database answers: a `SELECT 1` through the pool, bounded by
    /// [`PROBE_TIMEOUT`], its answer reused for [`PROBE_EVERY`] unless an operation found
    /// otherwise since (an outage, or its end, is seen at once).
    pub async fn probe(&self) -> Result<(), PgError> {
        let mut probed = self.health.probed.lock().await;
        if let Some((at, outcome)) = &*probed {
            if at.elapsed() < PROBE_EVERY && outcome.is_ok() == self.answering() {
                return outcome.clone();
            }
        }
        let outcome = match tokio::time::timeout(self.health.probe_timeout, self.select_one()).await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                let e = PgError::Unreachable {
                    location: self.location.clone(),
                    during: PROBE.during,
                    reason: format!(
                        "no answer within {} ms",
                        self.health.probe_timeout.as_millis()
                    ),
                };
                self.lost(PROBE, &e);
                Err(e)
            }
        };
        *probed = Some((tokio::time::Instant::now(), outcome.clone()));
        outcome
    }

    async fn select_one(&self) -> Result<(), PgError> {
        let client = self.client(PROBE).await?;
        let statement = client
            .prepare_cached("SELECT 1")
            .await
            .map_err(|e| self.failed(PROBE, &e))?;
        client
            .query_one(&statement, &[])
            .await
            .map_err(|e| self.failed(PROBE, &e))?;
        self.reached();
        Ok(())
    }

    /// Counts a failed operation; the first failure to reach the database after it
    /// answered logs the outage (one line for all the requests that fail with it).
    fn lost(&self, op: Op, e: &PgError) {
        self.health.metrics.errors.get_or_create(&op.labels()).inc();
        if e.is_unreachable() && !self.health.failing.swap(true, Ordering::AcqRel) {
            self.health.metrics.up.set(0);
            tracing::warn!(
                store = %self.location,
                error = %e,
                "the shared store does not answer: requests that need it answer 503 unavailable until it does"
            );
        }
    }

    /// The database answered (a new connection was opened, or the probe's `SELECT 1`
    /// answered): ends an outage, with one log line.
    fn reached(&self) {
        if self.health.failing.load(Ordering::Acquire)
            && self.health.failing.swap(false, Ordering::AcqRel)
        {
            self.health.metrics.up.set(1);
            tracing::info!(store = %self.location, "the shared store answers again");
        }
    }

    /// `postgresql://host:port/dbname`.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub(crate) fn location_path(&self) -> &Path {
        &self.location_path
    }

    /// A connection from the pool for one operation `op` (see the module docs).
    pub(crate) async fn client(&self, op: Op) -> Result<Client, PgError> {
        let started = tokio::time::Instant::now();
        let pool = &self.pools[crate::cores::share(self.pools.len())];
        match pool.get().await {
            Ok(object) => {
                // A connection opened just now proves the database answers; one kept in
                // the pool proves nothing (it may not have seen the database go yet).
                if deadpool_postgres::Object::metrics(&object).recycle_count == 0 {
                    self.reached();
                }
                Ok(Client {
                    object,
                    op,
                    started,
                    health: self.health.clone(),
                })
            }
            Err(e) => {
                self.health
                    .metrics
                    .latency
                    .get_or_create(&op.labels())
                    .observe(started.elapsed().as_secs_f64());
                let e = PgError::Unreachable {
                    location: self.location.clone(),
                    during: op.during,
                    reason: pool_reason(&e),
                };
                self.lost(op, &e);
                Err(e)
            }
        }
    }

    /// `operation`, the database's part of a request (a replay check, a record read, a hold
    /// lookup), bounded on this side: the database cancels a statement that runs past
    /// `statement_timeout`, but one that cannot answer at all (its host gone without a
    /// reset, the network dropping packets, the server process stopped) would leave the
    /// request waiting for TCP to give up, minutes later. Past `statement_timeout` +
    /// [`ANSWER_MARGIN`] the operation is dropped and answers [`PgError::Unreachable`]
    /// (through `wrap`), counted and logged as an outage.
    pub(crate) async fn within<T, E>(
        &self,
        op: Op,
        operation: impl std::future::Future<Output = Result<T, E>>,
        wrap: impl FnOnce(PgError) -> E,
    ) -> Result<T, E> {
        match tokio::time::timeout(self.health.answer_within, operation).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let e = PgError::Unreachable {
                    location: self.location.clone(),
                    during: op.during,
                    reason: format!(
                        "no answer within {} ms",
                        self.health.answer_within.as_millis()
                    ),
                };
                self.lost(op, &e);
                Err(wrap(e))
            }
        }
    }

    /// A statement's error, as a [`PgError`] (counted, and followed as the module docs say).
    pub(crate) fn failed(&self, op: Op, e: &tokio_postgres::Error) -> PgError {
        let (location, during, reason) = (self.location.clone(), op.during, db_reason(e));
        let e = if connection_lost(e) {
            PgError::Unreachable {
                location,
                during,
                reason,
            }
        } else {
            PgError::Database {
                location,
                during,
                reason,
            }
        };
        self.lost(op, &e);
        e
    }

    /// Creates the schema, or upgrades it to [`SCHEMA_VERSION`]: each missing migration in
    /// one transaction with the version it reaches, under an advisory lock. Refuses a schema
    /// newer than this binary knows, and changes nothing then.
    pub async fn migrate(&self) -> Result<Migrated, PgError> {
        const DURING: Op = Op::new("schema", "migrate", "migrating the schema");
        let mut client = self.client(DURING).await?;
        let failed = |e: tokio_postgres::Error| self.failed(DURING, &e);
        let tx = client.transaction().await.map_err(failed)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(failed)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS patgate_schema (id smallint PRIMARY KEY CHECK (id = 1), version integer NOT NULL)",
        )
        .await
        .map_err(failed)?;
        let row = tx
            .query_opt("SELECT version FROM patgate_schema WHERE id = 1", &[])
            .await
            .map_err(failed)?;
        let from = match row {
            Some(row) => version(row.get::<_, i32>(0)),
            None => 0,
        };
        if from > SCHEMA_VERSION {
            return Err(PgError::Ahead {
                location: self.location.clone(),
                found: from,
                known: SCHEMA_VERSION,
            });
        }
        for (done, migration) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.batch_execute(migration).await.map_err(failed)?;
            let reached = i32::try_from(done + 1).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO patgate_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                &[&reached],
            )
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)?;
        Ok(Migrated {
            from,
            to: SCHEMA_VERSION.max(from),
        })
    }

    /// The schema's version, 0 before the first migration.
    pub async fn schema_version(&self) -> Result<u32, PgError> {
        const DURING: Op = Op::new("schema", "version", "reading the schema version");
        let client = self.client(DURING).await?;
        match client
            .query_opt("SELECT version FROM patgate_schema WHERE id = 1", &[])
            .await
        {
            Ok(row) => Ok(row.map_or(0, |row| version(row.get::<_, i32>(0)))),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(0),
            Err(e) => Err(self.failed(DURING, &e)),
        }
    }

    /// `Ok` when the schema is the one this binary knows; otherwise what to do.
    pub async fn check_schema(&self) -> Result<(), PgError> {
        let location = self.location.clone();
        match self.schema_version().await? {
            0 => Err(PgError::Unmigrated { location }),
            v if v == SCHEMA_VERSION => Ok(()),
            found if found < SCHEMA_VERSION => Err(PgError::Behind {
                location,
                found,
                needed: SCHEMA_VERSION,
            }),
            found => Err(PgError::Ahead {
                location,
                found,
                known: SCHEMA_VERSION,
            }),
        }
    }

    /// The vault's record store in this database.
    pub fn records(&self) -> PgRecords {
        PgRecords::new(self.clone())
    }

    /// The replay cache in this database.
    pub fn nonces(&self) -> PgNonces {
        PgNonces::new(self.clone())
    }

    /// The connect links opened, in this database; links are signed with `key`, which every
    /// replica must derive alike (from the master key).
    pub fn links(&self, key: zeroize::Zeroizing<[u8; 32]>) -> PgLinks {
        PgLinks::new(self.clone(), key)
    }

    /// The host holds in this database.
    pub fn holds(&self) -> PgHolds {
        PgHolds::new(self.clone())
    }
}

/// The connections each of `shares` pools (the main runtime's, then the cores') may open,
/// `pool_size` for them all: equal shares, what does not divide going to the cores, and at
/// least 1 each (so a process with more pools than `pool_size` opens a few more).
fn pool_sizes(pool_size: usize, shares: usize) -> Vec<usize> {
    let shares = shares.max(1);
    let (base, extra) = (pool_size / shares, pool_size % shares);
    (0..shares)
        .map(|i| (base + usize::from(i > 0 && i <= extra)).max(1))
        .collect()
}

fn version(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// `postgresql://host:port/dbname`, or the socket directory for a Unix socket.
fn location(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("postgresql://{host}:{port}/{db}")
}

/// Why a statement failed: the server's message, or the client's (a closed connection, a
/// TLS failure). tokio-postgres' text never holds a password.
fn db_reason(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

/// Whether a statement failed because the connection went (the database stopped, a
/// network fault) rather than because the database refused it: the connection closed, an
/// I/O error, a connection exception (SQLSTATE class 08), or the server shutting down or
/// starting (57P01, 57P02, 57P03).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    e.code().is_some_and(|code| {
        let code = code.code();
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
    })
}

fn pool_reason(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_reason(e),
        other => other.to_string(),
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError {
            store: "PostgreSQL",
            unreachable: e.is_unreachable(),
            reason: e.to_string(),
        }
    }
}

/// Runs `f` at most once per `every` seconds of `now` in this process (the pruning passes).
#[derive(Debug, Default)]
pub(crate) struct Every {
    last: std::sync::atomic::AtomicU64,
}

impl Every {
    /// Whether the caller should run the pass now; claims it when so.
    pub(crate) fn due(&self, now: u64, every: u64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last.load(Ordering::Acquire);
        now >= last.saturating_add(every)
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::pool_sizes;

    #[test]
    fn the_pool_size_is_shared_out_among_the_main_runtime_and_the_cores() {
        assert_eq!(pool_sizes(16, 3), [5, 6, 5]);
        assert_eq!(pool_sizes(16, 1), [16]);
        assert_eq!(pool_sizes(4, 5), [1, 1, 1, 1, 1], "at least one each");
        assert_eq!(pool_sizes(9, 3), [3, 3, 3]);
    }
}
