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
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret as _, SecretString};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;

pub use holds::PgHolds;
pub use links::PgLinks;
pub use nonces::PgNonces;
pub use records::PgRecords;

use super::StoreError;

/// The schema, one migration per version: migration `i` takes the schema from version `i`
/// to `i + 1`. A migration is never edited once released; a change is a new one.
///
/// - `patgate_records`: one table for both [`super::Space`]s (`space` 0 records, 1 settings),
///   bytea keys, which PostgreSQL orders byte by byte (bytea has no collation), as
///   [`super::RecordStore::scan`] needs.
/// - `patgate_nonces` is `UNLOGGED` (no WAL write per request); `nonces.rs` says how a crash
///   of the database, which empties it, still lets no replay in.
/// - `patgate_first_use` decides a nonce in one round trip (`nonces.rs`).
pub const MIGRATIONS: &[&str] = &[r"
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
"];

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
    /// Connections in the pool, at most.
    pub pool_size: usize,
    /// How long a connection may take to open, and a request wait for a free connection.
    pub connect_timeout: Duration,
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection string does not parse. The message never quotes it.
    #[error("the PostgreSQL connection string is not valid: {0}")]
    Url(String),
    #[error("the PostgreSQL connection pool cannot be made: {0}")]
    Pool(String),
    /// No connection could be had, or a statement failed.
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

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
}

/// The pool of connections to one database. Cheap to clone (the clones share the pool).
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// `postgresql://host:port/dbname`: what messages name (no user, no password).
    location: String,
    location_path: PathBuf,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("location", &self.location)
            .field("pool", &self.pool.status())
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
        let location = location(&config);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &settings.tls {
            PgTls::Disable => {
                config.ssl_mode(SslMode::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            PgTls::Require(client) => {
                config.ssl_mode(SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**client).clone());
                Manager::from_config(config, tls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))?;
        Ok(Postgres {
            pool,
            location_path: PathBuf::from(&location),
            location,
        })
    }

    /// `postgresql://host:port/dbname`.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub(crate) fn location_path(&self) -> &Path {
        &self.location_path
    }

    /// A connection from the pool.
    pub(crate) async fn client(
        &self,
        during: &'static str,
    ) -> Result<deadpool_postgres::Object, PgError> {
        self.pool.get().await.map_err(|e| PgError::Database {
            location: self.location.clone(),
            during,
            reason: pool_reason(&e),
        })
    }

    /// A statement's error, as a [`PgError`].
    pub(crate) fn failed(&self, during: &'static str, e: &tokio_postgres::Error) -> PgError {
        PgError::Database {
            location: self.location.clone(),
            during,
            reason: db_reason(e),
        }
    }

    /// Creates the schema, or upgrades it to [`SCHEMA_VERSION`]: each missing migration in
    /// one transaction with the version it reaches, under an advisory lock. Refuses a schema
    /// newer than this binary knows, and changes nothing then.
    pub async fn migrate(&self) -> Result<Migrated, PgError> {
        const DURING: &str = "migrating the schema";
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
        const DURING: &str = "reading the schema version";
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
