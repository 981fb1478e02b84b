//! The replay cache in PostgreSQL: a nonce accepted by one replica is refused by every
//! other, decided by one call of the `patgate_check_nonce` function (one round trip), which
//! also answers the holds version for [`super::PgHolds`] and the records version for
//! [`super::PgRecords`].
//!
//! - Pairs are rows of the `UNLOGGED` table `patgate_nonces` (primary key `(keyid, nonce)`):
//!   an insert with `ON CONFLICT` decides first use against every concurrent one, and costs
//!   no WAL write.
//! - A horizon, in a logged table, plays the part it plays in [`crate::store::MemoryNonces`]:
//!   pairs whose window ended before it are forgotten, so a pair whose window ends before it
//!   is refused ([`NonceError::BeforeHorizon`]) rather than taken for a first use. A prune
//!   (at most every [`PRUNE_EVERY_SECONDS`] in each replica) moves it to its `now` under an
//!   exclusive advisory lock, and then deletes; each first use holds the same lock shared, so
//!   a replica whose clock is behind cannot slip a forgotten pair back in.
//! - A crash of the database empties an unlogged table. A sentinel row tells it: the first
//!   use that misses it moves the horizon a whole signature window ahead of its `now`, so
//!   every signature made before the crash is refused from then on (a burst of 401s, never
//!   a replay).
//! - A database that does not answer is [`NonceError::Store`]: never a first use.
//! - The table is bounded by the requests of one signature window, on disk; there is no
//!   [`NonceError::Full`].

use std::sync::Arc;

use super::{Every, Op, Postgres};
use crate::store::{BoxFuture, NonceError, NonceStore, StoreError};

/// A replay check, and its bound ([`Postgres::within`]).
const FIRST_USE: Op = Op::new("nonces", "first-use", "checking a nonce");

/// How often (seconds of the caller's clock) each replica prunes expired pairs.
pub(crate) const PRUNE_EVERY_SECONDS: u64 = 10;

/// The advisory lock between first uses (shared) and a prune moving the horizon
/// (exclusive); the same number is in `patgate_check_nonce`.
const HORIZON_LOCK: i64 = 7_461_626;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PgNonces {
    db: Postgres,
    /// The longest a pair stays in its window after `now`: `max_validity_seconds` plus
    /// `max_skew_seconds` (a signature may be created that far ahead). Every replica must
    /// have the same `[signatures]`.
    window: i64,
    pruned: Arc<Every>,
}

impl PgNonces {
    pub(super) fn new(db: Postgres) -> PgNonces {
        PgNonces {
            db,
            window: 0,
            pruned: Arc::default(),
        }
    }

    /// Sets the signature window (seconds); see [`PgNonces::window`].
    pub fn with_window(mut self, seconds: u64) -> PgNonces {
        self.window = i64::try_from(seconds).unwrap_or(i64::MAX);
        self
    }

    /// Moves the horizon to `now` and forgets the pairs whose window ended before it.
    pub async fn prune(&self, now: u64) -> Result<u64, StoreError> {
        const DURING: Op = Op::new("nonces", "prune", "pruning the replay cache");
        let now = as_i64(now);
        let mut client = self.db.client(DURING).await?;
        let failed = |e: tokio_postgres::Error| StoreError::from(self.db.failed(DURING, &e));
        let tx = client.transaction().await.map_err(failed)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&HORIZON_LOCK])
            .await
            .map_err(failed)?;
        tx.execute(
            "UPDATE patgate_nonce_horizon SET horizon = GREATEST(horizon, $1) WHERE id = 1",
            &[&now],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        // Outside the lock: from here every first use sees the new horizon.
        let statement = client
            .prepare_cached("DELETE FROM patgate_nonces WHERE replay_until < $1 AND keyid <> ''")
            .await
            .map_err(failed)?;
        client.execute(&statement, &[&now]).await.map_err(failed)
    }

    async fn insert(
        &self,
        keyid: &str,
        nonce: &str,
        replay_until: u64,
        now: u64,
    ) -> Result<(), NonceError> {
        let client = self.db.client(FIRST_USE).await.map_err(StoreError::from)?;
        let failed = |e: tokio_postgres::Error| StoreError::from(self.db.failed(FIRST_USE, &e));
        let statement = client
            .prepare_cached(
                "SELECT outcome, holds_version, records_version FROM patgate_check_nonce($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(failed)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &keyid,
                    &nonce,
                    &as_i64(replay_until),
                    &as_i64(now),
                    &self.window,
                ],
            )
            .await
            .map_err(failed)?;
        self.db.holds_seen.saw(row.get::<_, i64>(1));
        self.db.records_seen.saw(row.get::<_, i64>(2));
        match row.get::<_, i16>(0) {
            0 => Ok(()),
            1 => Err(NonceError::Replayed),
            2 => Err(NonceError::BeforeHorizon),
            other => Err(StoreError {
                store: "PostgreSQL",
                unreachable: false,
                reason: format!("patgate_check_nonce answered {other}"),
            }
            .into()),
        }
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl NonceStore for PgNonces {
    fn first_use<'a>(
        &'a self,
        keyid: &'a str,
        nonce: &'a str,
        replay_until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), NonceError>> {
        Box::pin(async move {
            let outcome = self
                .db
                .within(
                    FIRST_USE,
                    self.insert(keyid, nonce, replay_until, now),
                    |e| StoreError::from(e).into(),
                )
                .await;
            if self.pruned.due(now, PRUNE_EVERY_SECONDS) {
                // Off the request: a prune that fails is tried again next time.
                let this = self.clone();
                tokio::spawn(async move {
                    // An outage is logged once, where it begins (`mod.rs`).
                    match this.prune(now).await {
                        Err(e) if !e.unreachable => {
                            tracing::warn!(error = %e, "the replay cache was not pruned");
                        }
                        _ => {}
                    }
                });
            }
            outcome
        })
    }
}
