//! Connect links opened, in PostgreSQL: a link issued by one replica opens at any other,
//! once across all of them.
//!
//! The key links are signed with is not in the database: each replica derives it from the
//! master key (which every replica of one vault has), so the database, its backups and its
//! admins never hold anything that lets them make a link. A master key rotation changes the
//! key each replica derives at its next start: links made before it stop opening once the
//! replicas restarted, and the app asks for new ones (links live minutes).
//!
//! Opened ids are rows of the logged table `patgate_links_opened` (a link used before a
//! crash of the database stays used after it), pruned at most every
//! [`PRUNE_EVERY_SECONDS`] per replica, [`PRUNE_MARGIN_SECONDS`] after they expired, so a
//! replica whose clock is behind still finds them. A link's expiry is signed into it and
//! checked before the store is asked, so an id once pruned cannot open again.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Every, Op, Postgres};
use crate::store::{BoxFuture, LinkStore, LinkUseError, StoreError};

/// How often (seconds) each replica prunes expired link ids.
pub(crate) const PRUNE_EVERY_SECONDS: u64 = 60;
/// How long past its expiry an opened link id is kept.
pub(crate) const PRUNE_MARGIN_SECONDS: u64 = 3600;

/// See the module docs.
#[derive(Clone)]
pub struct PgLinks {
    db: Postgres,
    key: Arc<Zeroizing<[u8; 32]>>,
    pruned: Arc<Every>,
}

impl std::fmt::Debug for PgLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLinks")
            .field("db", &self.db)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl PgLinks {
    pub(super) fn new(db: Postgres, key: Zeroizing<[u8; 32]>) -> PgLinks {
        PgLinks {
            db,
            key: Arc::new(key),
            pruned: Arc::default(),
        }
    }

    /// Forgets the ids of links that expired [`PRUNE_MARGIN_SECONDS`] before `now`.
    pub async fn prune(&self, now: u64) -> Result<u64, StoreError> {
        const DURING: Op = Op::new("links", "prune", "pruning opened connect links");
        let client = self.db.client(DURING).await?;
        let failed = |e: tokio_postgres::Error| StoreError::from(self.db.failed(DURING, &e));
        let statement = client
            .prepare_cached("DELETE FROM patgate_links_opened WHERE expires_at < $1")
            .await
            .map_err(failed)?;
        let before = i64::try_from(now.saturating_sub(PRUNE_MARGIN_SECONDS)).unwrap_or(i64::MAX);
        client.execute(&statement, &[&before]).await.map_err(failed)
    }

    async fn open(&self, id: &str, expires_at: u64) -> Result<(), LinkUseError> {
        const DURING: Op = Op::new("links", "first-open", "marking a connect link opened");
        let client = self.db.client(DURING).await.map_err(StoreError::from)?;
        let failed = |e: tokio_postgres::Error| StoreError::from(self.db.failed(DURING, &e));
        let statement = client
            .prepare_cached(
                "INSERT INTO patgate_links_opened (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .await
            .map_err(failed)?;
        let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
        match client
            .execute(&statement, &[&id, &expires_at])
            .await
            .map_err(failed)?
        {
            1 => Ok(()),
            _ => Err(LinkUseError::Used),
        }
    }
}

impl LinkStore for PgLinks {
    fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn first_open<'a>(
        &'a self,
        id: &'a str,
        expires_at: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), LinkUseError>> {
        Box::pin(async move {
            let outcome = self.open(id, expires_at).await;
            if self.pruned.due(now, PRUNE_EVERY_SECONDS) {
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.prune(now).await {
                        tracing::warn!(error = %e, "opened connect links were not pruned");
                    }
                });
            }
            outcome
        })
    }

    fn was_opened<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("links", "was-opened", "looking up a connect link");
            let client = self.db.client(DURING).await?;
            let failed = |e: tokio_postgres::Error| StoreError::from(self.db.failed(DURING, &e));
            let statement = client
                .prepare_cached("SELECT 1 FROM patgate_links_opened WHERE id = $1")
                .await
                .map_err(failed)?;
            Ok(client
                .query_opt(&statement, &[&id])
                .await
                .map_err(failed)?
                .is_some())
        })
    }
}
