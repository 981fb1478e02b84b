//! The vault's records and settings in PostgreSQL: one row per key of `patgate_records`.
//!
//! Each write is one statement in its own transaction (a batch, [`RecordStore::apply`], one
//! transaction), committed before the call returns. With PostgreSQL's default
//! `synchronous_commit = on`, a commit returns once its WAL is on disk (and on the
//! synchronous standbys, when `synchronous_standby_names` names any), so every change is
//! durable when its call returns and [`RecordStore::flush`] has nothing left to do.
//!
//! A guarded write ([`RecordStore::compare_and_swap_guarded`], [`RecordStore::apply_guarded`])
//! is one transaction that first reads its guard's row `FOR SHARE` (`FOR UPDATE` when the
//! batch may change it): every write of a setting (`apply`, `put`, a compare-and-swap) takes
//! that row's lock too, so the two wait for each other, and under READ COMMITTED a guard read
//! that waited sees the value the other committed. A guard row that does not exist cannot be
//! locked, but then the guard (which always expects a value) is refused anyway.
//!
//! # The records a replica keeps
//! Every request reads its credential's record, and records change rarely (a PAT stored or
//! replaced, the last-use times every 30 s), so a replica keeps the records it read and
//! answers [`RecordStore::get`] from them when it knows they are current, as
//! [`super::PgHolds`] does with the holds:
//! - every writing transaction adds one to `patgate_records_version` as its last statement
//!   (so the row's lock is the last one it takes, held only while it commits: a writer
//!   never waits for anything holding it, and no lock cycle can go through it) and reads
//!   the new version back, which this replica notes ([`super::Seen`]) once it committed;
//! - each replay check (`patgate_check_nonce`) reads that version before it admits its
//!   request;
//! - a read from the database reads the version with the record, in one statement (one
//!   snapshot), and keeps the pair;
//! - a kept record answers a read when it is at least at the newest version this process
//!   read within [`super::SEEN_FRESH`]; otherwise the database is asked.
//!
//! So a request is served the record as it was after every write acknowledged (anywhere)
//! before it passed its replay check, as when each read asked the database, and the
//! database is asked again only after a write. Reads with no replay check of their own
//! (the connect page, the admin socket) may be served what a replay check of the last
//! second saw. A record changed in the database behind patgate's back (SQL by hand) is not
//! seen until the version moves. At most [`KEPT_RECORDS`] records are kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use deadpool_postgres::GenericClient;

use super::{Client, Op, PgError, Postgres};
use crate::store::{
    BoxFuture, Change, Entry, Guard, Guarded, RecordStore, RecordStoreError, Space, Swap, Swapped,
};

/// A compare-and-swap that kept finding the value changing under it gives up after this
/// many tries (each try is decided by the database; a retry happens only when another
/// writer changed the key between the attempt and the read of its value).
const SWAP_TRIES: usize = 64;

const SWAP: Op = Op::new("records", "compare-and-swap", "a compare-and-swap");

/// A record read from the database, and the bound on it ([`Postgres::within`]).
const GET: Op = Op::new("records", "get", "reading a record");

/// The most records a replica keeps (module docs): with sealed records of a few hundred
/// bytes, a few MiB at most. Past it, the kept records are forgotten and kept again as read.
pub(crate) const KEPT_RECORDS: usize = 16_384;

/// A record as read from the database at one `patgate_records_version`; `None`: absent.
#[derive(Debug)]
struct Kept {
    value: Option<Vec<u8>>,
    version: i64,
}

/// The records kept, one map per [`Space`].
#[derive(Debug, Default)]
struct Keeping {
    spaces: [HashMap<Vec<u8>, Kept>; 2],
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PgRecords {
    db: Postgres,
    kept: Arc<Mutex<Keeping>>,
}

fn space(space: Space) -> i16 {
    match space {
        Space::Records => 0,
        Space::Settings => 1,
    }
}

/// The smallest key greater than every key starting with `prefix`; `None` when there is
/// none (an empty prefix, or one of 0xff bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn failed(e: PgError) -> RecordStoreError {
    RecordStoreError::Failed(Box::new(e))
}

fn slot(space: Space) -> usize {
    match space {
        Space::Records => 0,
        Space::Settings => 1,
    }
}

/// The last statement of every writing transaction (module docs).
const BUMP: &str =
    "UPDATE patgate_records_version SET version = version + 1 WHERE id = 1 RETURNING version";

impl PgRecords {
    pub(super) fn new(db: Postgres) -> PgRecords {
        PgRecords {
            db,
            kept: Arc::default(),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Keeping> {
        // Each change is one map update: a panic cannot leave it half-done.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept record of `key`, when it is current (module docs).
    fn kept_current(&self, space_: Space, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let newest = self.db.records_seen.current()?;
        let kept = self.kept();
        let record = kept.spaces[slot(space_)].get(key)?;
        if record.version < newest {
            return None;
        }
        self.db.metrics().records_kept_reads.inc();
        Some(record.value.clone())
    }

    fn keep(&self, space_: Space, key: &[u8], value: Option<Vec<u8>>, version: i64) {
        let mut kept = self.kept();
        if kept.spaces.iter().map(HashMap::len).sum::<usize>() >= KEPT_RECORDS {
            for space in &mut kept.spaces {
                space.clear();
            }
        }
        kept.spaces[slot(space_)].insert(key.to_vec(), Kept { value, version });
    }

    /// A record and the records version from the database, kept (module docs).
    async fn read(&self, space_: Space, key: &[u8]) -> Result<Option<Vec<u8>>, RecordStoreError> {
        let client = self.client(GET).await?;
        // The version and the record from one snapshot; a row even when the record is
        // absent.
        let statement = client.prepare_cached(READ).await.map_err(self.err(GET))?;
        let row = client
            .query_one(&statement, &[&space(space_), &key])
            .await
            .map_err(self.err(GET))?;
        let value: Option<Vec<u8>> = row.get(1);
        self.keep(space_, key, value.clone(), row.get(0));
        Ok(value)
    }

    /// Adds one to the records version, as the last statement of `tx` (module docs);
    /// answers the version made, for [`PgRecords::committed`] once `tx` committed.
    async fn bump(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        during: Op,
    ) -> Result<i64, RecordStoreError> {
        let statement = tx.prepare_cached(BUMP).await.map_err(self.err(during))?;
        let row = tx
            .query_one(&statement, &[])
            .await
            .map_err(self.err(during))?;
        Ok(row.get(0))
    }

    /// A transaction that made records `version` committed: no record kept from before it
    /// answers a read of this process any more.
    fn committed(&self, version: i64) {
        self.db.records_seen.saw(version);
    }

    /// Commits `tx` after adding one to the records version.
    async fn commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        during: Op,
    ) -> Result<(), RecordStoreError> {
        let version = self.bump(&tx, during).await?;
        tx.commit().await.map_err(self.err(during))?;
        self.committed(version);
        Ok(())
    }

    async fn client(&self, during: Op) -> Result<Client, RecordStoreError> {
        self.db.client(during).await.map_err(failed)
    }

    fn err(&self, during: Op) -> impl Fn(tokio_postgres::Error) -> RecordStoreError + '_ {
        move |e| failed(self.db.failed(during, &e))
    }

    /// One compare-and-swap: an attempt and the key's value as it was when the attempt
    /// began, in one statement; retried only when the attempt failed and yet the value was
    /// the expected one (another writer changed it in between).
    async fn swap_one(
        &self,
        client: &impl GenericClient,
        space_id: i16,
        swap: Swap,
    ) -> Result<Swapped, RecordStoreError> {
        let sql = match (&swap.expected, &swap.new) {
            (None, Some(_)) => "WITH w AS (INSERT INTO patgate_records (space, key, value) VALUES ($1, $2, $3) ON CONFLICT (space, key) DO NOTHING RETURNING 1) SELECT (SELECT count(*) FROM w), (SELECT value FROM patgate_records WHERE space = $1 AND key = $2)",
            (Some(_), Some(_)) => "WITH w AS (UPDATE patgate_records SET value = $3 WHERE space = $1 AND key = $2 AND value = $4 RETURNING 1) SELECT (SELECT count(*) FROM w), (SELECT value FROM patgate_records WHERE space = $1 AND key = $2)",
            (Some(_), None) => "WITH w AS (DELETE FROM patgate_records WHERE space = $1 AND key = $2 AND value = $3 RETURNING 1) SELECT (SELECT count(*) FROM w), (SELECT value FROM patgate_records WHERE space = $1 AND key = $2)",
            // Absent stays absent: nothing to write, only to check.
            (None, None) => "SELECT 0::bigint, (SELECT value FROM patgate_records WHERE space = $1 AND key = $2)",
        };
        let statement = client.prepare_cached(sql).await.map_err(self.err(SWAP))?;
        for _ in 0..SWAP_TRIES {
            let row = match (&swap.expected, &swap.new) {
                // $3: the value to insert, or the one a removal expects.
                (None, Some(value)) | (Some(value), None) => {
                    client
                        .query_one(&statement, &[&space_id, &swap.key, value])
                        .await
                }
                (Some(expected), Some(new)) => {
                    client
                        .query_one(&statement, &[&space_id, &swap.key, new, expected])
                        .await
                }
                (None, None) => client.query_one(&statement, &[&space_id, &swap.key]).await,
            }
            .map_err(self.err(SWAP))?;
            let written: i64 = row.get(0);
            let current: Option<Vec<u8>> = row.get(1);
            if written == 1 || (swap.new.is_none() && swap.expected.is_none() && current.is_none())
            {
                return Ok(Swapped::Done);
            }
            if current != swap.expected {
                return Ok(Swapped::Conflict { current });
            }
        }
        Err(RecordStoreError::Failed(
            "a compare-and-swap kept losing to other writers of the same key".into(),
        ))
    }

    /// Reads the guard's row with a lock (`FOR UPDATE` when `exclusive`) in `tx`; `Err` with
    /// what it holds when that is not the expected value.
    async fn check_guard(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        guard: &Guard,
        exclusive: bool,
        during: Op,
    ) -> Result<Result<(), Option<Vec<u8>>>, RecordStoreError> {
        let sql = if exclusive {
            "SELECT value FROM patgate_records WHERE space = $1 AND key = $2 FOR UPDATE"
        } else {
            "SELECT value FROM patgate_records WHERE space = $1 AND key = $2 FOR SHARE"
        };
        let statement = tx.prepare_cached(sql).await.map_err(self.err(during))?;
        let current: Option<Vec<u8>> = tx
            .query_opt(&statement, &[&space(Space::Settings), &guard.key])
            .await
            .map_err(self.err(during))?
            .map(|row| row.get(0));
        Ok(match current {
            Some(value) if value == guard.expected => Ok(()),
            other => Err(other),
        })
    }

    /// The changes of a batch, in `tx`.
    async fn apply_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        space_: Space,
        changes: &[Change],
        during: Op,
    ) -> Result<(), RecordStoreError> {
        let put = tx.prepare_cached(PUT).await.map_err(self.err(during))?;
        let remove = tx.prepare_cached(REMOVE).await.map_err(self.err(during))?;
        let space_id = space(space_);
        for change in changes {
            match &change.value {
                Some(value) => tx.execute(&put, &[&space_id, &change.key, value]).await,
                None => tx.execute(&remove, &[&space_id, &change.key]).await,
            }
            .map_err(self.err(during))?;
        }
        Ok(())
    }
}

impl RecordStore for PgRecords {
    fn location(&self) -> &Path {
        self.db.location_path()
    }

    fn get<'a>(
        &'a self,
        space_: Space,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, RecordStoreError>> {
        Box::pin(async move {
            if let Some(kept) = self.kept_current(space_, key) {
                return Ok(kept);
            }
            self.db.within(GET, self.read(space_, key), failed).await
        })
    }

    fn get_many<'a>(
        &'a self,
        space_: Space,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("records", "get-many", "reading records");
            let client = self.client(DURING).await?;
            let statement = client
                .prepare_cached(
                    "SELECT key, value FROM patgate_records WHERE space = $1 AND key = ANY($2)",
                )
                .await
                .map_err(self.err(DURING))?;
            let rows = client
                .query(&statement, &[&space(space_), &keys])
                .await
                .map_err(self.err(DURING))?;
            let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = rows
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            // A key asked twice gets its value twice.
            Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
        })
    }

    fn put<'a>(
        &'a self,
        space_: Space,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("records", "put", "writing a record");
            let mut client = self.client(DURING).await?;
            let tx = client.transaction().await.map_err(self.err(DURING))?;
            let statement = tx.prepare_cached(PUT).await.map_err(self.err(DURING))?;
            tx.execute(&statement, &[&space(space_), &key, &value])
                .await
                .map_err(self.err(DURING))?;
            self.commit(tx, DURING).await
        })
    }

    fn remove<'a>(
        &'a self,
        space_: Space,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("records", "remove", "removing a record");
            let mut client = self.client(DURING).await?;
            let tx = client.transaction().await.map_err(self.err(DURING))?;
            let statement = tx.prepare_cached(REMOVE).await.map_err(self.err(DURING))?;
            let removed = tx
                .execute(&statement, &[&space(space_), &key])
                .await
                .map_err(self.err(DURING))?;
            self.commit(tx, DURING).await?;
            Ok(removed > 0)
        })
    }

    fn compare_and_swap_many(
        &self,
        space_: Space,
        swaps: Vec<Swap>,
    ) -> BoxFuture<'_, Result<Vec<Swapped>, RecordStoreError>> {
        Box::pin(async move {
            // One transaction, one statement per swap, each decided on its own as the
            // contract says. The statements are all sent before any answer is awaited:
            // tokio-postgres pipelines them, and the server runs them in the order sent, so
            // the batch costs one round trip (plus one per swap that lost a race and is
            // tried again), not one per swap. They run in key order, so two batches that
            // share keys (two replicas writing last-use times) lock them in the same order
            // and cannot wait for each other in a cycle; the answers keep the swaps' order.
            let mut client = self.client(SWAP).await?;
            let tx = client.transaction().await.map_err(self.err(SWAP))?;
            let space_id = space(space_);
            let mut indexed: Vec<(usize, Swap)> = swaps.into_iter().enumerate().collect();
            indexed.sort_by(|a, b| a.1.key.cmp(&b.1.key));
            let (order, sorted): (Vec<usize>, Vec<Swap>) = indexed.into_iter().unzip();
            let answers = futures_util::future::join_all(
                sorted
                    .into_iter()
                    .map(|swap| self.swap_one(&tx, space_id, swap)),
            )
            .await;
            let mut in_order: Vec<Option<Swapped>> = (0..order.len()).map(|_| None).collect();
            for (&i, answer) in order.iter().zip(answers) {
                in_order[i] = Some(answer?);
            }
            self.commit(tx, SWAP).await?;
            Ok(in_order.into_iter().flatten().collect())
        })
    }

    fn compare_and_swap_guarded(
        &self,
        guard: Guard,
        space_: Space,
        swaps: Vec<Swap>,
    ) -> BoxFuture<'_, Result<Guarded<Vec<Swapped>>, RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new(
                "records",
                "compare-and-swap-guarded",
                "a guarded compare-and-swap",
            );
            let mut client = self.client(DURING).await?;
            let tx = client.transaction().await.map_err(self.err(DURING))?;
            // The swaps may change the guard's own row only in the settings.
            let exclusive = space_ == Space::Settings;
            if let Err(current) = self.check_guard(&tx, &guard, exclusive, DURING).await? {
                // Dropping the transaction rolls it back: nothing was written.
                return Ok(Guarded::Refused { current });
            }
            let mut answers = Vec::with_capacity(swaps.len());
            for swap in swaps {
                answers.push(self.swap_one(&tx, space(space_), swap).await?);
            }
            self.commit(tx, DURING).await?;
            Ok(Guarded::Made(answers))
        })
    }

    fn apply(
        &self,
        space_: Space,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<(), RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("records", "apply", "writing a batch of records");
            let mut client = self.client(DURING).await?;
            let tx = client.transaction().await.map_err(self.err(DURING))?;
            self.apply_in(&tx, space_, &changes, DURING).await?;
            self.commit(tx, DURING).await
        })
    }

    fn apply_guarded(
        &self,
        guard: Guard,
        space_: Space,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<Guarded<()>, RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new(
                "records",
                "apply-guarded",
                "writing a guarded batch of records",
            );
            let mut client = self.client(DURING).await?;
            let tx = client.transaction().await.map_err(self.err(DURING))?;
            let exclusive = space_ == Space::Settings;
            if let Err(current) = self.check_guard(&tx, &guard, exclusive, DURING).await? {
                return Ok(Guarded::Refused { current });
            }
            self.apply_in(&tx, space_, &changes, DURING).await?;
            self.commit(tx, DURING).await?;
            Ok(Guarded::Made(()))
        })
    }

    fn scan<'a>(
        &'a self,
        space_: Space,
        prefix: &'a [u8],
        after: Option<&'a [u8]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("records", "scan", "listing records");
            let client = self.client(DURING).await?;
            // `after` has the prefix, so it is the lower bound when given.
            let (lower, from): (&str, &[u8]) = match after {
                Some(after) => (">", after),
                None => (">=", prefix),
            };
            let end = prefix_end(prefix);
            let upper = if end.is_some() { "AND key < $3 " } else { "" };
            let limit_param = if end.is_some() { "$4" } else { "$3" };
            let sql = format!(
                "SELECT key, value FROM patgate_records WHERE space = $1 AND key {lower} $2 {upper}ORDER BY key LIMIT {limit_param}"
            );
            let statement = client
                .prepare_cached(&sql)
                .await
                .map_err(self.err(DURING))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let space_id = space(space_);
            let rows = match &end {
                Some(end) => {
                    client
                        .query(&statement, &[&space_id, &from, end, &limit])
                        .await
                }
                None => client.query(&statement, &[&space_id, &from, &limit]).await,
            }
            .map_err(self.err(DURING))?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
        })
    }

    fn count<'a>(
        &'a self,
        space_: Space,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, RecordStoreError>> {
        Box::pin(async move {
            const DURING: Op = Op::new("records", "count", "counting records");
            let client = self.client(DURING).await?;
            let end = prefix_end(prefix);
            let sql = if end.is_some() {
                "SELECT count(*) FROM patgate_records WHERE space = $1 AND key >= $2 AND key < $3"
            } else {
                "SELECT count(*) FROM patgate_records WHERE space = $1 AND key >= $2"
            };
            let statement = client.prepare_cached(sql).await.map_err(self.err(DURING))?;
            let space_id = space(space_);
            let row = match &end {
                Some(end) => {
                    client
                        .query_one(&statement, &[&space_id, &prefix, end])
                        .await
                }
                None => client.query_one(&statement, &[&space_id, &prefix]).await,
            }
            .map_err(self.err(DURING))?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), RecordStoreError>> {
        // Every call above committed before it returned (see the module docs).
        Box::pin(std::future::ready(Ok(())))
    }
}

const PUT: &str = "INSERT INTO patgate_records (space, key, value) VALUES ($1, $2, $3) ON CONFLICT (space, key) DO UPDATE SET value = EXCLUDED.value";
const REMOVE: &str = "DELETE FROM patgate_records WHERE space = $1 AND key = $2";
const READ: &str = "SELECT v.version, r.value FROM patgate_records_version v LEFT JOIN patgate_records r ON r.space = $1 AND r.key = $2 WHERE v.id = 1";

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_end_of_a_prefix_is_the_next_key_past_all_that_start_with_it() {
        assert_eq!(prefix_end(b"p"), Some(b"q".to_vec()));
        assert_eq!(prefix_end(b"p\xff"), Some(b"q".to_vec()));
        assert_eq!(prefix_end(b"a\x00"), Some(b"a\x01".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
