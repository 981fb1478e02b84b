//! What patgate remembers beyond one request, behind traits, so that several replicas can
//! later share it: the replay (nonce) cache, connect-link state, host holds, and the vault's
//! sealed records (with the last-use times kept in their metadata).
//!
//! Each trait says what any implementation must guarantee. The embedded implementations are
//! the defaults and need no database: this process's memory for nonces, links and holds, sled
//! files in the state directory for the vault. Methods are async (a shared store answers over
//! the network) and object safe (a [`BoxFuture`] each), so the runtime holds an `Arc<dyn …>`
//! chosen from the config. No signature names a type of an implementation (no sled type).
//!
//! | state | trait | embedded implementation |
//! |---|---|---|
//! | `(keyid, nonce)` pairs seen within the signature window | [`NonceStore`] | [`MemoryNonces`] |
//! | connect links opened (one use each), the link key | [`LinkStore`] | [`MemoryLinks`] |
//! | credentials the git host throttled, until when | [`HoldStore`] | [`MemoryHolds`] |
//! | the vault's sealed records and settings (format, key version, key check, rotation marker); when PATs were last used, in the records' clear metadata | [`RecordStore`] | [`SledRecords`] |
//!
//! The shared implementations, for several replicas that behave as one, keep all four in
//! one PostgreSQL database ([`Postgres`]: [`PgNonces`], [`PgLinks`], [`PgHolds`],
//! [`PgRecords`]); `postgres/mod.rs` has its schema.
//!
//! Last-use times have no trait of their own. What replicas must share is the time in each
//! PAT's record (the on-disk format keeps it there), so sharing the record store shares them; a
//! second store would be a second truth to keep in step. They are written in batches
//! ([`RecordStore::get_many`], [`RecordStore::compare_and_swap_many`], one flush) from the
//! vault's `PatUses`, which buffers one process's uses between flushes; that buffer needs no
//! sharing, since an older time never replaces a newer one.

mod holds;
mod links;
mod nonces;
mod postgres;
mod records;
pub(crate) mod sled_store;

use std::future::Future;
use std::pin::Pin;

pub use holds::MemoryHolds;
pub use links::MemoryLinks;
pub use nonces::MemoryNonces;
pub use postgres::{
    Migrated, PgError, PgHolds, PgLinks, PgNonces, PgRecords, PgSettings, PgTls, Postgres,
    MIGRATIONS, SCHEMA_VERSION,
};
#[doc(hidden)]
pub use records::contract as record_store_contract;
pub use records::{
    Change, Entry, Guard, Guarded, RecordStore, RecordStoreError, Space, Swap, Swapped,
};
pub use sled_store::{IoError, SledOpenError, SledRecords};

/// The stores the runtime holds beside the vault's (which the vault owns).
#[derive(Debug, Clone)]
pub struct Stores {
    pub nonces: std::sync::Arc<dyn NonceStore>,
    pub links: std::sync::Arc<dyn LinkStore>,
    pub holds: std::sync::Arc<dyn HoldStore>,
    /// The database the stores above keep their state in, for readiness and the pool's
    /// metrics; `None` for the embedded stores.
    pub database: Option<Postgres>,
}

impl Stores {
    /// This process's memory: a replay cache of at most `nonce_entries` pairs, a random
    /// link key.
    pub fn embedded(nonce_entries: usize) -> Stores {
        Stores {
            nonces: std::sync::Arc::new(MemoryNonces::new(nonce_entries)),
            links: std::sync::Arc::new(MemoryLinks::new()),
            holds: std::sync::Arc::new(MemoryHolds::new()),
            database: None,
        }
    }

    /// The shared database: `signature_window` is the longest a signature stays
    /// acceptable after now (seconds), `link_key` the key every replica derives alike.
    pub fn postgres(
        db: &Postgres,
        signature_window: u64,
        link_key: zeroize::Zeroizing<[u8; 32]>,
    ) -> Stores {
        Stores {
            nonces: std::sync::Arc::new(db.nonces().with_window(signature_window)),
            links: std::sync::Arc::new(db.links(link_key)),
            holds: std::sync::Arc::new(db.holds()),
            database: Some(db.clone()),
        }
    }
}

/// The future of a store method: boxed, so the traits are object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store that did not answer. The messages name the store and the operation, never a key
/// that could be a secret (nonces and link ids are not secrets; credentials never reach
/// these stores).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {store} store failed: {reason}")]
pub struct StoreError {
    pub store: &'static str,
    /// The store did not answer (rather than answered with an error): the store logs
    /// such an outage once, when it begins, so its callers need not log each failure.
    pub unreachable: bool,
    pub reason: String,
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// The pair was accepted before, within its window.
    #[error("nonce already used for this keyid")]
    Replayed,
    /// The pair's window ended before the store's horizon (what it already forgot): it
    /// cannot tell a replay from a first use, so it refuses.
    #[error("signature is older than the replay cache horizon")]
    BeforeHorizon,
    /// No room for another pair, even after dropping the expired ones.
    #[error("nonce cache is full")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The replay cache: each `(keyid, nonce)` pair is accepted once while a signature carrying
/// it could still be accepted.
///
/// An implementation must:
/// - answer `Ok` for exactly one of any number of concurrent calls with the same pair
///   (across every process that shares the store), and [`NonceError::Replayed`] for the
///   others, until `replay_until` (Unix seconds, inclusive) has passed;
/// - never answer `Ok` when it cannot tell (a store it cannot reach is an error, never a
///   first use: a replay check does not fail open);
/// - bound its memory ([`NonceError::Full`] rather than grow without limit).
pub trait NonceStore: Send + Sync + std::fmt::Debug {
    /// Records the pair as used until `replay_until`; `now` is the caller's clock.
    fn first_use<'a>(
        &'a self,
        keyid: &'a str,
        nonce: &'a str,
        replay_until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), NonceError>>;
}

/// Why a connect link was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkUseError {
    /// It was opened before.
    #[error("this link was already used")]
    Used,
    /// No room to remember another opened link until the old ones expire.
    #[error("too many links are open at once")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Connect-link state: the key links are signed with, and which links were opened (each
/// opens once).
///
/// An implementation must:
/// - give every process that shares it the same [`LinkStore::key`], so a link made by one
///   opens at another, and never write that key anywhere in clear;
/// - accept exactly one [`LinkStore::first_open`] of a link id, across every process that
///   shares the store, until `expires_at` (Unix seconds) has passed;
/// - bound its memory ([`LinkUseError::Busy`] rather than grow without limit).
pub trait LinkStore: Send + Sync + std::fmt::Debug {
    /// The HMAC key links and page tokens are signed with.
    fn key(&self) -> &[u8; 32];

    /// Marks the link `id` opened; `Ok` the first time only.
    fn first_open<'a>(
        &'a self,
        id: &'a str,
        expires_at: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), LinkUseError>>;

    /// Whether the link `id` was opened (without opening it).
    fn was_opened<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// Whether a credential is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// Not held.
    Free,
    /// Held until this time.
    Held(u64),
    /// Not held any more: a hold on it ended, and this lookup is the first to see that.
    Ended,
}

/// A credential that can be held: an integration's own, or one user's PAT on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldKey<'a> {
    pub integration: &'a str,
    /// `None`: the integration's own credential.
    pub account: Option<&'a str>,
}

/// Host holds: credentials the git host throttled, and until when patgate holds requests
/// made with them.
///
/// An implementation must:
/// - make a hold seen by every process that shares the store from the moment
///   [`HoldStore::hold`] completes;
/// - keep the later end when two holds of one credential overlap;
/// - forget holds that ended (on [`HoldStore::prune`] at the latest).
///
/// Times are Unix milliseconds from the caller's clock.
pub trait HoldStore: Send + Sync + std::fmt::Debug {
    /// Whether `key` is held at `now`.
    fn held<'a>(
        &'a self,
        key: HoldKey<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<HoldState, StoreError>>;

    /// Holds `key` until `until`; answers whether it was not held at `now` before (a new
    /// hold rather than a longer one).
    fn hold<'a>(
        &'a self,
        key: HoldKey<'a>,
        until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Forgets holds that ended by `now`; answers how many are still active.
    fn prune(&self, now: u64) -> BoxFuture<'_, Result<usize, StoreError>>;
}
