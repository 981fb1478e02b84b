//! Host holds in PostgreSQL: a credential the host throttled is held on every replica.
//!
//! One row per held credential in `patgate_holds`; `prev_until_ms` keeps the end a hold had
//! before the last [`HoldStore::hold`] of it, so that call can say, atomically, whether it
//! started a new hold or made a running one longer.
//!
//! Holds are rare and every request looks one up, so a replica answers lookups from its own
//! copy of the table when it knows the copy is current, and asks the database otherwise:
//! - each [`HoldStore::hold`] adds one to `patgate_holds_version` in its statement;
//! - each replay check (`patgate_check_nonce`, the round trip every request makes) reads
//!   that version before it admits the request ([`super::Seen`]);
//! - a lookup answers from the copy when the copy is at least at the newest version a replay
//!   check read in the last [`super::SEEN_FRESH`]; else it reloads the copy (one statement, one
//!   lookup at a time) or, with no recent replay check, asks the database as before.
//!
//! So a request is refused for every hold made anywhere before it passed its replay check,
//! as when each lookup asked the database, and the database is asked again only after a
//! hold was made. A hold whose end passed is still looked up in the database, whose
//! `DELETE … RETURNING` tells exactly one lookup of all replicas that it ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Op, Postgres};
use crate::store::{BoxFuture, HoldKey, HoldState, HoldStore, StoreError};

/// A hold lookup in the database, and the bound on a whole lookup ([`Postgres::within`]).
const GET: Op = Op::new("holds", "get", "reading a host hold");

type Owned = (String, bool, String);

/// A replica's copy of `patgate_holds` at one version.
#[derive(Debug, Default)]
struct Copy {
    version: i64,
    until: HashMap<Owned, u64>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PgHolds {
    db: Postgres,
    /// `None` until first loaded.
    copy: Arc<Mutex<Option<Copy>>>,
    /// Held while the copy is reloaded, so concurrent lookups reload it once.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

fn columns(key: HoldKey<'_>) -> (&str, bool, &str) {
    (
        key.integration,
        key.account.is_some(),
        key.account.unwrap_or(""),
    )
}

fn owned(key: HoldKey<'_>) -> Owned {
    let (integration, user_pat, account) = columns(key);
    (integration.to_string(), user_pat, account.to_string())
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// What the copy says of one credential.
enum InCopy {
    /// The copy is older than the version asked for.
    Behind,
    Absent,
    Until(u64),
}

impl PgHolds {
    pub(super) fn new(db: Postgres) -> PgHolds {
        PgHolds {
            db,
            copy: Arc::default(),
            reloading: Arc::default(),
        }
    }

    fn failed(&self, during: Op) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |e| StoreError::from(self.db.failed(during, &e))
    }

    fn copy(&self) -> std::sync::MutexGuard<'_, Option<Copy>> {
        // Each change is one assignment or map update: a panic cannot leave it half-done.
        self.copy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_copy(&self, key: &Owned, version: i64) -> InCopy {
        match &*self.copy() {
            Some(copy) if copy.version >= version => match copy.until.get(key) {
                Some(&until) => InCopy::Until(until),
                None => InCopy::Absent,
            },
            _ => InCopy::Behind,
        }
    }

    /// Loads the copy again unless another lookup brought it to `version` meanwhile.
    async fn reload(&self, version: i64) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        if matches!(&*self.copy(), Some(copy) if copy.version >= version) {
            return Ok(());
        }
        const DURING: Op = Op::new("holds", "load", "reading the host holds");
        let client = self.db.client(DURING).await?;
        // One statement: the version and the rows it counts, from one snapshot.
        let statement = client
            .prepare_cached(
                "SELECT v.version, h.integration, h.user_pat, h.account, h.until_ms \
                 FROM patgate_holds_version v LEFT JOIN patgate_holds h ON true WHERE v.id = 1",
            )
            .await
            .map_err(self.failed(DURING))?;
        let rows = client
            .query(&statement, &[])
            .await
            .map_err(self.failed(DURING))?;
        let mut copy = Copy::default();
        for row in rows {
            copy.version = row.get(0);
            if let Some(integration) = row.get::<_, Option<String>>(1) {
                copy.until
                    .insert((integration, row.get(2), row.get(3)), as_u64(row.get(4)));
            }
        }
        *self.copy() = Some(copy);
        Ok(())
    }

    /// One statement `sql` on one credential's row: `$1`–`$3` its key, `$4` `n`.
    async fn on_row(
        &self,
        during: Op,
        sql: &str,
        key: HoldKey<'_>,
        n: u64,
    ) -> Result<tokio_postgres::Row, StoreError> {
        let client = self.db.client(during).await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(self.failed(during))?;
        let (integration, user_pat, account) = columns(key);
        client
            .query_one(&statement, &[&integration, &user_pat, &account, &as_i64(n)])
            .await
            .map_err(self.failed(during))
    }

    /// The lookup in the database: the hold, or that it ended (told to one lookup only).
    async fn held_in_db(&self, key: HoldKey<'_>, now: u64) -> Result<HoldState, StoreError> {
        // The delete takes an ended hold away, and says so to this lookup only; the
        // sub-select sees the table as the statement began.
        let row = self
            .on_row(
                GET,
                "WITH ended AS (DELETE FROM patgate_holds WHERE integration = $1 AND user_pat = $2 AND account = $3 AND until_ms <= $4 RETURNING 1) \
                 SELECT (SELECT count(*) FROM ended), (SELECT until_ms FROM patgate_holds WHERE integration = $1 AND user_pat = $2 AND account = $3 AND until_ms > $4)",
                key,
                now,
            )
            .await?;
        let ended: i64 = row.get(0);
        let until: Option<i64> = row.get(1);
        Ok(match (until, ended) {
            (Some(until), _) => HoldState::Held(as_u64(until)),
            (None, 0) => HoldState::Free,
            (None, _) => HoldState::Ended,
        })
    }
}

impl PgHolds {
    /// [`HoldStore::held`], unbounded.
    async fn lookup(&self, key: HoldKey<'_>, now: u64) -> Result<HoldState, StoreError> {
        let Some(version) = self.db.holds_seen.current() else {
            return self.held_in_db(key, now).await;
        };
        let owned = owned(key);
        let found = match self.in_copy(&owned, version) {
            InCopy::Behind => {
                self.reload(version).await?;
                self.in_copy(&owned, version)
            }
            found => found,
        };
        match found {
            InCopy::Until(until) if until > now => Ok(HoldState::Held(until)),
            // Ended: the database says whether this lookup is the one told so.
            InCopy::Until(_) => {
                let state = self.held_in_db(key, now).await?;
                if let Some(copy) = &mut *self.copy() {
                    if copy.until.get(&owned).is_some_and(|&until| until <= now) {
                        copy.until.remove(&owned);
                    }
                }
                Ok(state)
            }
            InCopy::Absent => Ok(HoldState::Free),
            // A reload brings the copy to the version asked for, at least.
            InCopy::Behind => self.held_in_db(key, now).await,
        }
    }
}

impl HoldStore for PgHolds {
    fn held<'a>(
        &'a self,
        key: HoldKey<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<HoldState, StoreError>> {
        Box::pin(self.db.within(GET, self.lookup(key, now), StoreError::from))
    }

    fn hold<'a>(
        &'a self,
        key: HoldKey<'a>,
        until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("holds", "hold", "holding a credential");
            let row = self
                .on_row(
                    DURING,
                    "WITH counted AS (UPDATE patgate_holds_version SET version = version + 1 WHERE id = 1 RETURNING version) \
                     INSERT INTO patgate_holds AS h (integration, user_pat, account, until_ms, prev_until_ms) VALUES ($1, $2, $3, $4, NULL) \
                     ON CONFLICT (integration, user_pat, account) DO UPDATE SET until_ms = GREATEST(h.until_ms, EXCLUDED.until_ms), prev_until_ms = h.until_ms \
                     RETURNING prev_until_ms, h.until_ms, (SELECT version FROM counted)",
                    key,
                    until,
                )
                .await?;
            let before: Option<i64> = row.get(0);
            let (until, version): (i64, i64) = (row.get(1), row.get(2));
            // The copy at the version before this hold is at this one with it.
            if let Some(copy) = &mut *self.copy() {
                if copy.version == version - 1 {
                    copy.version = version;
                    copy.until.insert(owned(key), as_u64(until));
                }
            }
            self.db.holds_seen.saw(version);
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
            if let Some(copy) = &mut *self.copy() {
                copy.until.retain(|_, until| *until > now);
            }
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX))
        })
    }
}
