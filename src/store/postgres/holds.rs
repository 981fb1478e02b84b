//! Host holds in PostgreSQL: a credential the host throttled is held on every replica.
//!
//! One row per held credential in `patgate_holds`; `prev_until_ms` keeps the end a hold had
//! before the last [`HoldStore::hold`] of it, so that call can say, atomically, whether it
//! started a new hold or made a running one longer.

use super::{Op, Postgres};
use crate::store::{BoxFuture, HoldKey, HoldState, HoldStore, StoreError};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PgHolds {
    db: Postgres,
}

fn columns(key: HoldKey<'_>) -> (&str, bool, &str) {
    (
        key.integration,
        key.account.is_some(),
        key.account.unwrap_or(""),
    )
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PgHolds {
    pub(super) fn new(db: Postgres) -> PgHolds {
        PgHolds { db }
    }

    fn failed(&self, during: Op) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |e| StoreError::from(self.db.failed(during, &e))
    }
}

impl HoldStore for PgHolds {
    fn held<'a>(
        &'a self,
        key: HoldKey<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<HoldState, StoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("holds", "get", "reading a host hold");
            let client = self.db.client(DURING).await?;
            // The delete takes an ended hold away, and says so to this lookup only; the
            // sub-select sees the table as the statement began.
            let statement = client
                .prepare_cached(
                    "WITH ended AS (DELETE FROM patgate_holds WHERE integration = $1 AND user_pat = $2 AND account = $3 AND until_ms <= $4 RETURNING 1) \
                     SELECT (SELECT count(*) FROM ended), (SELECT until_ms FROM patgate_holds WHERE integration = $1 AND user_pat = $2 AND account = $3 AND until_ms > $4)",
                )
                .await
                .map_err(self.failed(DURING))?;
            let (integration, user_pat, account) = columns(key);
            let row = client
                .query_one(
                    &statement,
                    &[&integration, &user_pat, &account, &as_i64(now)],
                )
                .await
                .map_err(self.failed(DURING))?;
            let ended: i64 = row.get(0);
            let until: Option<i64> = row.get(1);
            Ok(match (until, ended) {
                (Some(until), _) => HoldState::Held(as_u64(until)),
                (None, 0) => HoldState::Free,
                (None, _) => HoldState::Ended,
            })
        })
    }

    fn hold<'a>(
        &'a self,
        key: HoldKey<'a>,
        until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("holds", "hold", "holding a credential");
            let client = self.db.client(DURING).await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO patgate_holds AS h (integration, user_pat, account, until_ms, prev_until_ms) VALUES ($1, $2, $3, $4, NULL) \
                     ON CONFLICT (integration, user_pat, account) DO UPDATE SET until_ms = GREATEST(h.until_ms, EXCLUDED.until_ms), prev_until_ms = h.until_ms \
                     RETURNING prev_until_ms",
                )
                .await
                .map_err(self.failed(DURING))?;
            let (integration, user_pat, account) = columns(key);
            let row = client
                .query_one(
                    &statement,
                    &[&integration, &user_pat, &account, &as_i64(until)],
                )
                .await
                .map_err(self.failed(DURING))?;
            let before: Option<i64> = row.get(0);
            Ok(before.is_none_or(|before| as_u64(before) <= now))
        })
    }

    fn prune(&self, now: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("holds", "prune", "pruning host holds");
            let client = self.db.client(DURING).await?;
            let statement = client
                .prepare_cached(
                    "WITH gone AS (DELETE FROM patgate_holds WHERE until_ms <= $1 RETURNING 1) \
                     SELECT count(*) FROM patgate_holds WHERE until_ms > $1",
                )
                .await
                .map_err(self.failed(DURING))?;
            let row = client
                .query_one(&statement, &[&as_i64(now)])
                .await
                .map_err(self.failed(DURING))?;
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX))
        })
    }
}
