//! The vault's sealed records and vault-wide settings, as opaque bytes: the seam between the
//! vault (which seals, formats and checks them) and where they are kept.
//!
//! The store never sees a credential in clear or a key: values are sealed (or, for the
//! settings, hold nothing secret in clear), and keys are record ids and setting names.

use std::path::Path;

use super::BoxFuture;

/// The two key spaces of a record store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// One sealed value per credential, keyed by the record's id (see the vault's
    /// `record.rs`).
    Records,
    /// Vault-wide settings: format, key version, key check, a rotation's marker. An
    /// implementation may keep entries of its own here under names the vault does not use.
    Settings,
}

/// A change in an atomic batch ([`RecordStore::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// `None` removes the key.
    pub value: Option<Vec<u8>>,
}

impl Change {
    /// Sets `key` to `value`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Change {
        Change {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// Removes `key`.
    pub fn remove(key: impl Into<Vec<u8>>) -> Change {
        Change {
            key: key.into(),
            value: None,
        }
    }
}

/// A compare-and-swap: `key` becomes `new` if its value is `expected` (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub key: Vec<u8>,
    pub expected: Option<Vec<u8>>,
    /// `None` removes the key.
    pub new: Option<Vec<u8>>,
}

/// How one compare-and-swap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swapped {
    /// The value was the expected one and is the new one now.
    Done,
    /// The value was another; this is it (`None`: absent).
    Conflict { current: Option<Vec<u8>> },
}

/// A setting ([`Space::Settings`]) that a guarded write depends on: the write is made only
/// while `key` holds `expected` ([`RecordStore::compare_and_swap_guarded`],
/// [`RecordStore::apply_guarded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub key: Vec<u8>,
    pub expected: Vec<u8>,
}

/// How a guarded write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    /// The guard held, and the write was made; its answer.
    Made(T),
    /// The guard's setting held another value (`None`: absent); nothing was written.
    Refused { current: Option<Vec<u8>> },
}

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Why a record store call failed. Unlike [`super::StoreError`], it tells damage apart: the
/// vault refuses a damaged store (it must be restored), while a failing one may answer again.
/// No message may quote a value.
#[derive(Debug, thiserror::Error)]
pub enum RecordStoreError {
    /// The store found its own data damaged, or missing writes it acknowledged.
    #[error("{0}")]
    Damaged(String),
    /// The store could not do what was asked (I/O, a connection, a bug in it).
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A flush did not run to its end: the changes before it may not be durable.
    #[error("{0}")]
    Unfinished(&'static str),
}

/// Where the vault's sealed records and settings are kept.
///
/// An implementation must:
/// - make a change visible to every later call, in every process that shares the store, once
///   the call that made it returns;
/// - make every change durable once a later [`RecordStore::flush`] returns: a crash after it
///   loses none of them, and a store that lost some anyway (damaged files) answers
///   [`RecordStoreError::Damaged`] rather than serve the older state — the vault acknowledges
///   a credential write only after that flush;
/// - apply a batch of [`RecordStore::apply`] whole or not at all, also across a crash;
/// - decide each compare-and-swap atomically against every concurrent writer;
/// - order a guarded write and every change of its guard's setting, in every process that
///   shares the store: either the change comes wholly first (and the guarded write sees the
///   new value), or the guarded write comes wholly first (and is visible to every call that
///   starts after the change returned). The vault relies on this so that no replica can store
///   a record sealed under a key version after a rotation began re-encrypting (see the
///   vault's `rotation.rs`);
/// - list keys in byte order;
/// - keep a call that takes long (a count, a flush) off the caller's runtime threads.
///
/// The methods need a Tokio runtime.
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Where the store is, as the vault's messages name it (the state directory of the
    /// embedded store).
    fn location(&self) -> &Path;

    /// The value of `key`, if it has one.
    fn get<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, RecordStoreError>>;

    /// The values of several keys, in their order: one round trip for a batch.
    fn get_many<'a>(
        &'a self,
        space: Space,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, RecordStoreError>>;

    /// Sets `key` to `value`, whatever it was.
    fn put<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), RecordStoreError>>;

    /// Removes `key`; `true` when it had a value.
    fn remove<'a>(
        &'a self,
        space: Space,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, RecordStoreError>>;

    /// Compare-and-swaps, each decided on its own (a conflict on one leaves the others
    /// standing), in one round trip. Answers in the order given.
    fn compare_and_swap_many(
        &self,
        space: Space,
        swaps: Vec<Swap>,
    ) -> BoxFuture<'_, Result<Vec<Swapped>, RecordStoreError>>;

    /// [`RecordStore::compare_and_swap_many`] made only while the setting `guard.key`
    /// holds `guard.expected` (see the trait docs for the ordering it guarantees).
    fn compare_and_swap_guarded(
        &self,
        guard: Guard,
        space: Space,
        swaps: Vec<Swap>,
    ) -> BoxFuture<'_, Result<Guarded<Vec<Swapped>>, RecordStoreError>>;

    /// Applies every change, atomically.
    fn apply(
        &self,
        space: Space,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<(), RecordStoreError>>;

    /// [`RecordStore::apply`] made only while the setting `guard.key` holds
    /// `guard.expected`, decided atomically with the batch (the batch may change the guard's
    /// setting itself).
    fn apply_guarded(
        &self,
        guard: Guard,
        space: Space,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<Guarded<()>, RecordStoreError>>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order, from the first key
    /// after `after` (a key with the prefix, from the previous page) or from the start.
    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
        after: Option<&'a [u8]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, RecordStoreError>>;

    /// How many keys start with `prefix`.
    fn count<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, RecordStoreError>>;

    /// Makes every change made before it durable (see the trait docs).
    fn flush(&self) -> BoxFuture<'_, Result<(), RecordStoreError>>;
}

impl dyn RecordStore + '_ {
    /// One compare-and-swap ([`RecordStore::compare_and_swap_many`] of one).
    pub async fn compare_and_swap(
        &self,
        space: Space,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<Swapped, RecordStoreError> {
        let swap = Swap {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new,
        };
        let mut answers = self.compare_and_swap_many(space, vec![swap]).await?;
        match answers.pop() {
            Some(answer) if answers.is_empty() => Ok(answer),
            _ => Err(RecordStoreError::Failed(
                "the store answered a compare-and-swap of one with another number of answers"
                    .into(),
            )),
        }
    }
}

/// What every [`RecordStore`] must do, as far as one process can see it; run against each
/// implementation (an empty store): sled's in its unit tests, PostgreSQL's in
/// `tests/postgres.rs` (which needs a database). Not part of patgate's API.
#[doc(hidden)]
pub mod contract {
    use super::*;

    fn keys(entries: &[Entry]) -> Vec<&[u8]> {
        entries.iter().map(|(k, _)| k.as_slice()).collect()
    }

    /// Panics where `store` breaks the contract.
    pub async fn check(store: &dyn RecordStore) {
        use Space::{Records, Settings};
        // Two spaces that do not see each other.
        store.put(Records, b"a", b"1".to_vec()).await.unwrap();
        assert_eq!(store.get(Records, b"a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(Settings, b"a").await.unwrap(), None);

        // get_many answers in the order asked, absent keys included.
        store.put(Records, b"c", b"3".to_vec()).await.unwrap();
        let asked = [b"c".to_vec(), b"b".to_vec(), b"a".to_vec()];
        assert_eq!(
            store.get_many(Records, &asked).await.unwrap(),
            vec![Some(b"3".to_vec()), None, Some(b"1".to_vec())]
        );

        // remove says whether there was a value.
        assert!(store.remove(Records, b"c").await.unwrap());
        assert!(!store.remove(Records, b"c").await.unwrap());
        assert_eq!(store.get(Records, b"c").await.unwrap(), None);

        // Compare-and-swaps are decided one by one; a conflict answers the current value.
        let swaps = vec![
            Swap {
                key: b"a".to_vec(),
                expected: Some(b"1".to_vec()),
                new: Some(b"2".to_vec()),
            },
            Swap {
                key: b"a".to_vec(),
                expected: Some(b"1".to_vec()),
                new: Some(b"9".to_vec()),
            },
            Swap {
                key: b"n".to_vec(),
                expected: None,
                new: Some(b"new".to_vec()),
            },
            Swap {
                key: b"gone".to_vec(),
                expected: Some(b"x".to_vec()),
                new: None,
            },
        ];
        assert_eq!(
            store.compare_and_swap_many(Records, swaps).await.unwrap(),
            vec![
                Swapped::Done,
                Swapped::Conflict {
                    current: Some(b"2".to_vec())
                },
                Swapped::Done,
                Swapped::Conflict { current: None },
            ]
        );
        assert_eq!(
            store
                .compare_and_swap(Records, b"n", Some(b"new"), None)
                .await
                .unwrap(),
            Swapped::Done
        );
        assert_eq!(store.get(Records, b"n").await.unwrap(), None);

        // A batch puts and removes.
        store
            .apply(
                Settings,
                vec![
                    Change::put(*b"k1", *b"v1"),
                    Change::put(*b"k2", *b"v2"),
                    Change::remove(*b"k1"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(store.get(Settings, b"k1").await.unwrap(), None);
        assert_eq!(
            store.get(Settings, b"k2").await.unwrap(),
            Some(b"v2".to_vec())
        );

        // Scans: by prefix, in key order, a page at a time.
        for key in [&b"p\x02"[..], b"p\x01", b"q", b"p", b"p\x01\x00", b"o"] {
            store.put(Records, key, key.to_vec()).await.unwrap();
        }
        let all = store.scan(Records, b"p", None, 100).await.unwrap();
        assert_eq!(keys(&all), [&b"p"[..], b"p\x01", b"p\x01\x00", b"p\x02"]);
        assert!(all.iter().all(|(k, v)| k == v));
        let first = store.scan(Records, b"p", None, 2).await.unwrap();
        assert_eq!(keys(&first), [&b"p"[..], b"p\x01"]);
        let next = store.scan(Records, b"p", Some(b"p\x01"), 2).await.unwrap();
        assert_eq!(keys(&next), [&b"p\x01\x00"[..], b"p\x02"]);
        let last = store.scan(Records, b"p", Some(b"p\x02"), 2).await.unwrap();
        assert!(last.is_empty());
        let everything = store.scan(Records, b"", None, 100).await.unwrap();
        assert_eq!(
            keys(&everything),
            [
                &b"a"[..],
                b"o",
                b"p",
                b"p\x01",
                b"p\x01\x00",
                b"p\x02",
                b"q"
            ]
        );

        // Guarded writes: made while the guard's setting holds the expected value only.
        store.put(Settings, b"g", b"1".to_vec()).await.unwrap();
        let guard = |expected: &[u8]| Guard {
            key: b"g".to_vec(),
            expected: expected.to_vec(),
        };
        let swap = |expected: Option<&[u8]>, new: &[u8]| Swap {
            key: b"gw".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: Some(new.to_vec()),
        };
        assert_eq!(
            store
                .compare_and_swap_guarded(guard(b"1"), Records, vec![swap(None, b"a")])
                .await
                .unwrap(),
            Guarded::Made(vec![Swapped::Done])
        );
        assert_eq!(
            store
                .compare_and_swap_guarded(guard(b"1"), Records, vec![swap(None, b"b")])
                .await
                .unwrap(),
            Guarded::Made(vec![Swapped::Conflict {
                current: Some(b"a".to_vec())
            }])
        );
        assert_eq!(
            store
                .compare_and_swap_guarded(guard(b"2"), Records, vec![swap(Some(b"a"), b"c")])
                .await
                .unwrap(),
            Guarded::Refused {
                current: Some(b"1".to_vec())
            }
        );
        assert_eq!(
            store.get(Records, b"gw").await.unwrap(),
            Some(b"a".to_vec())
        );
        let no_guard = Guard {
            key: b"absent".to_vec(),
            expected: b"1".to_vec(),
        };
        assert_eq!(
            store
                .compare_and_swap_guarded(no_guard.clone(), Records, vec![swap(Some(b"a"), b"c")])
                .await
                .unwrap(),
            Guarded::Refused { current: None }
        );
        // A guarded batch that moves its own guard on: the next one with the old value is
        // refused, and neither the refused batch nor its guard's change is half made.
        let step = vec![Change::put(*b"g", *b"2"), Change::put(*b"gk", *b"x")];
        assert_eq!(
            store
                .apply_guarded(guard(b"1"), Settings, step.clone())
                .await
                .unwrap(),
            Guarded::Made(())
        );
        assert_eq!(
            store
                .apply_guarded(guard(b"1"), Settings, vec![Change::put(*b"gk", *b"y")])
                .await
                .unwrap(),
            Guarded::Refused {
                current: Some(b"2".to_vec())
            }
        );
        assert_eq!(
            store.apply_guarded(no_guard, Settings, step).await.unwrap(),
            Guarded::Refused { current: None }
        );
        assert_eq!(
            store.get(Settings, b"g").await.unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(
            store.get(Settings, b"gk").await.unwrap(),
            Some(b"x".to_vec())
        );
        assert!(store.remove(Records, b"gw").await.unwrap());
        for key in [&b"g"[..], b"gk"] {
            store.remove(Settings, key).await.unwrap();
        }

        assert_eq!(store.count(Records, b"p").await.unwrap(), 4);
        assert_eq!(store.count(Records, b"").await.unwrap(), 7);
        assert_eq!(store.count(Settings, b"k").await.unwrap(), 1);
        store.flush().await.unwrap();
    }
}
