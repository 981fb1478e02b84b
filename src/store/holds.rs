//! Host holds kept in this process's memory. The embedded default of [`HoldStore`].
//!
//! A hold exists only for a stored credential the host throttled, so there are at most as
//! many as credentials in the vault; ended holds are dropped on lookup and by
//! [`HoldStore::prune`].

use std::collections::HashMap;
use std::sync::Mutex;

use super::{BoxFuture, HoldKey, HoldState, HoldStore, StoreError};

/// See the module docs.
#[derive(Debug, Default)]
pub struct MemoryHolds {
    /// (integration, account) → end of the hold (Unix milliseconds).
    until: Mutex<HashMap<(String, Option<String>), u64>>,
}

impl MemoryHolds {
    pub fn new() -> MemoryHolds {
        MemoryHolds::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Option<String>), u64>> {
        // Each update is one insert, remove or retain: a panic cannot leave it half-done.
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds in memory, ended or not (for tests of pruning).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn owned(key: HoldKey<'_>) -> (String, Option<String>) {
    (key.integration.to_string(), key.account.map(str::to_string))
}

impl HoldStore for MemoryHolds {
    fn held<'a>(
        &'a self,
        key: HoldKey<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<HoldState, StoreError>> {
        let held = {
            let mut map = self.lock();
            let key = owned(key);
            match map.get(&key) {
                Some(&until) if until > now => HoldState::Held(until),
                Some(_) => {
                    map.remove(&key);
                    HoldState::Ended
                }
                None => HoldState::Free,
            }
        };
        Box::pin(std::future::ready(Ok(held)))
    }

    fn hold<'a>(
        &'a self,
        key: HoldKey<'a>,
        until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let starts = {
            let mut map = self.lock();
            let entry = map.entry(owned(key)).or_insert(now);
            let starts = *entry <= now;
            *entry = (*entry).max(until);
            starts
        };
        Box::pin(std::future::ready(Ok(starts)))
    }

    fn prune(&self, now: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        let active = {
            let mut map = self.lock();
            map.retain(|_, until| *until > now);
            map.shrink_to_fit();
            map.len()
        };
        Box::pin(std::future::ready(Ok(active)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_keep_the_later_end_and_end_on_time() {
        let holds = MemoryHolds::new();
        let user = HoldKey {
            integration: "ghe",
            account: Some("a"),
        };
        let integration = HoldKey {
            integration: "ghe",
            account: None,
        };
        assert!(holds.hold(user, 5_000, 1_000).await.unwrap(), "a new hold");
        assert!(
            !holds.hold(user, 3_000, 1_500).await.unwrap(),
            "a longer one, not new"
        );
        assert_eq!(
            holds.held(user, 2_000).await.unwrap(),
            HoldState::Held(5_000)
        );
        assert_eq!(
            holds.held(integration, 2_000).await.unwrap(),
            HoldState::Free
        );
        assert_eq!(holds.held(user, 5_000).await.unwrap(), HoldState::Ended);
        assert!(holds.is_empty(), "an ended hold is dropped on lookup");
        assert_eq!(holds.held(user, 5_000).await.unwrap(), HoldState::Free);
        holds.hold(integration, 9_000, 6_000).await.unwrap();
        assert_eq!(holds.prune(8_999).await.unwrap(), 1);
        assert_eq!(holds.prune(9_000).await.unwrap(), 0);
        assert!(holds.is_empty());
    }
}
