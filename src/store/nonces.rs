//! The replay cache kept in this process's memory: each `(keyid, nonce)` is accepted once
//! while its signature could still be accepted. The embedded default of [`NonceStore`].

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{BoxFuture, NonceError, NonceStore};

const SHARDS: usize = 16;

/// What the cache keeps of a `(keyid, nonce)` pair: 128 bits from two SipHash keys drawn
/// at random for the process, instead of the strings, so an entry is 24 bytes in a hash
/// table and an insert allocates nothing. Two different pairs get the same fingerprint with
/// probability about n²/2¹²⁹ among n entries, and nobody outside the process knows the keys
/// to aim for one; a collision could only refuse a fresh request as a replay, never let a
/// replay in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint(u64, u64);

impl Hash for Fingerprint {
    // Random already: its first half is the table's hash (see `FingerprintHasher`).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Passes a fingerprint's first half through as the hash.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only fingerprints are hashed; fold anything else in rather than ignore it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A bounded, sharded set of `(keyid, nonce)` pairs with expiry times.
pub struct MemoryNonces {
    shards: Box<[Mutex<Shard>]>,
    /// Entries across all shards; reserved before an insert so the bound
    /// holds without a global lock.
    len: AtomicUsize,
    capacity: usize,
    keys: (RandomState, RandomState),
}

#[derive(Default)]
struct Shard {
    /// Entry -> last second at which its signature can still be accepted.
    entries: HashMap<Fingerprint, u64, BuildHasherDefault<FingerprintHasher>>,
    /// Largest `now` this shard was pruned at: anything that expired before
    /// it has been forgotten, so such a pair can no longer be admitted
    /// (this keeps a clock stepping backwards from reopening a replay).
    horizon: u64,
}

impl Shard {
    /// Drops entries that expired before `now`; returns how many. Once per second at most:
    /// a pass over the shard's table, which is cheaper in memory than keeping the entries
    /// ordered by expiry as well.
    fn prune(&mut self, now: u64) -> usize {
        if now <= self.horizon {
            return 0;
        }
        self.horizon = now;
        let before = self.entries.len();
        self.entries.retain(|_, expiry| *expiry >= now);
        let after = self.entries.len();
        // Give memory back after a burst.
        if self.entries.capacity() > 1024 && after < self.entries.capacity() / 4 {
            self.entries.shrink_to(after * 2);
        }
        before - after
    }
}

impl std::fmt::Debug for MemoryNonces {
    // Only the sizes: the entries are many and say who called when.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNonces")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl MemoryNonces {
    /// A cache that holds at most `capacity` pairs.
    pub fn new(capacity: usize) -> Self {
        MemoryNonces {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            len: AtomicUsize::new(0),
            capacity,
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic under the lock cannot leave a half-updated entry behind
        // that would matter more than losing the cache, so keep going.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `(keyid, nonce)` valid until `expiry` (inclusive).
    /// `Replayed` if already present, `Full` if no room is left after pruning every shard.
    pub fn insert(
        &self,
        keyid: &str,
        nonce: &str,
        expiry: u64,
        now: u64,
    ) -> Result<(), NonceError> {
        let key = self.fingerprint(keyid, nonce);
        let idx = (key.1 % SHARDS as u64) as usize;
        for attempt in 0..2 {
            {
                let mut shard = self.lock(idx);
                let pruned = shard.prune(now);
                self.len.fetch_sub(pruned, Ordering::AcqRel);
                if expiry < shard.horizon {
                    return Err(NonceError::BeforeHorizon);
                }
                if shard.entries.contains_key(&key) {
                    return Err(NonceError::Replayed);
                }
                let reserved = self
                    .len
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.capacity).then_some(n + 1)
                    })
                    .is_ok();
                if reserved {
                    shard.entries.insert(key, expiry);
                    return Ok(());
                }
            }
            if attempt == 0 {
                // Full: other shards may hold expired entries nobody pruned yet.
                self.prune_all(now);
            }
        }
        Err(NonceError::Full)
    }

    /// The pair's fingerprint. Hashing `(&str, &str)` ends each string with a separator, so
    /// no other split of the same bytes, like ("k", "2n1") against ("k2", "n1"), shares it.
    fn fingerprint(&self, keyid: &str, nonce: &str) -> Fingerprint {
        Fingerprint(
            self.keys.0.hash_one((keyid, nonce)),
            self.keys.1.hash_one((keyid, nonce)),
        )
    }

    fn prune_all(&self, now: u64) {
        for i in 0..SHARDS {
            let pruned = self.lock(i).prune(now);
            self.len.fetch_sub(pruned, Ordering::AcqRel);
        }
    }

    /// The pairs held now (expired ones not yet pruned included).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NonceStore for MemoryNonces {
    fn first_use<'a>(
        &'a self,
        keyid: &'a str,
        nonce: &'a str,
        replay_until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), NonceError>> {
        let outcome = self.insert(keyid, nonce, replay_until, now);
        Box::pin(std::future::ready(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_and_expiry() {
        let c = MemoryNonces::new(4);
        c.insert("k", "n1", 100, 50).unwrap();
        assert_eq!(c.insert("k", "n1", 100, 60), Err(NonceError::Replayed));
        // Same nonce, other key: distinct.
        c.insert("k2", "n1", 100, 60).unwrap();
        // The length prefix keeps ("k", "2n1") apart from ("k2", "n1").
        c.insert("k", "2n1", 100, 60).unwrap();
        // Still a replay at the last valid second.
        assert_eq!(c.insert("k", "n1", 100, 100), Err(NonceError::Replayed));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn distinct_pairs_stay_distinct_and_each_replays() {
        let c = MemoryNonces::new(200_000);
        for i in 0..100_000 {
            c.insert("app", &format!("nonce-{i}"), 100, 1).unwrap();
        }
        assert_eq!(c.len(), 100_000);
        for i in (0..100_000).step_by(997) {
            assert_eq!(
                c.insert("app", &format!("nonce-{i}"), 100, 2),
                Err(NonceError::Replayed)
            );
        }
    }

    #[test]
    fn full_then_pruned() {
        let c = MemoryNonces::new(2);
        c.insert("k", "a", 10, 0).unwrap();
        c.insert("k", "b", 20, 0).unwrap();
        assert_eq!(c.insert("k", "c", 30, 5), Err(NonceError::Full));
        // At 11 "a" has expired, wherever its shard is.
        c.insert("k", "c", 30, 11).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.insert("k", "d", 30, 11), Err(NonceError::Full));
    }

    #[test]
    fn clock_going_back_cannot_reopen_a_pruned_nonce() {
        let c = MemoryNonces::new(8);
        c.insert("k", "a", 10, 0).unwrap();
        c.prune_all(20); // "a" is forgotten
                         // Back in time "a" would be inside its window again: refuse it
                         // rather than admit a replay.
        assert_eq!(c.insert("k", "a", 10, 5), Err(NonceError::BeforeHorizon));
        // Pairs expiring after the horizon are still fine.
        c.insert("k", "b", 25, 5).unwrap();
    }

    #[test]
    fn concurrent_inserts_respect_capacity() {
        let c = std::sync::Arc::new(MemoryNonces::new(100));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|i| c.insert("k", &format!("{t}-{i}"), 100, 1).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, 100);
        assert_eq!(c.len(), 100);
    }
}
