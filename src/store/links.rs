//! Connect-link state kept in this process's memory: a random key made at start (so a
//! restart ends every open link, and no link key ever sits on disk) and the links opened so
//! far. The embedded default of [`LinkStore`].

use std::collections::HashMap;
use std::sync::Mutex;

use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use super::{BoxFuture, LinkStore, LinkUseError, StoreError};

/// At most this many opened links are remembered; beyond it (after dropping expired ones)
/// new links are refused to open rather than letting an old one be reused.
const OPENED_CAP: usize = 100_000;

/// See the module docs.
pub struct MemoryLinks {
    key: Zeroizing<[u8; 32]>,
    /// Link id → its expiry (Unix seconds).
    opened: Mutex<HashMap<String, u64>>,
    cap: usize,
}

impl std::fmt::Debug for MemoryLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLinks")
            .field("key", &"[redacted]")
            .field("opened", &self.lock().len())
            .finish()
    }
}

impl MemoryLinks {
    /// A fresh random key and no opened link.
    pub fn new() -> MemoryLinks {
        Self::with_cap(OPENED_CAP)
    }

    fn with_cap(cap: usize) -> MemoryLinks {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        MemoryLinks {
            key,
            opened: Mutex::default(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Each update is one insert or a retain: a panic cannot leave it half-done.
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryLinks {
    fn default() -> Self {
        Self::new()
    }
}

impl LinkStore for MemoryLinks {
    fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn first_open<'a>(
        &'a self,
        id: &'a str,
        expires_at: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), LinkUseError>> {
        let outcome = {
            let mut opened = self.lock();
            if opened.contains_key(id) {
                Err(LinkUseError::Used)
            } else {
                if opened.len() >= self.cap {
                    opened.retain(|_, expires| *expires > now);
                }
                if opened.len() >= self.cap {
                    Err(LinkUseError::Busy)
                } else {
                    opened.insert(id.to_string(), expires_at);
                    Ok(())
                }
            }
        };
        Box::pin(std::future::ready(outcome))
    }

    fn was_opened<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(self.lock().contains_key(id))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_link_opens_once_and_the_set_stays_bounded() {
        let links = MemoryLinks::with_cap(2);
        assert!(!links.was_opened("a").await.unwrap());
        links.first_open("a", 100, 10).await.unwrap();
        assert!(links.was_opened("a").await.unwrap());
        assert_eq!(
            links.first_open("a", 100, 11).await,
            Err(LinkUseError::Used)
        );
        links.first_open("b", 50, 10).await.unwrap();
        assert_eq!(
            links.first_open("c", 100, 20).await,
            Err(LinkUseError::Busy)
        );
        // Once "b" expired, its room is given back; "a" is still remembered.
        links.first_open("c", 100, 51).await.unwrap();
        assert_eq!(
            links.first_open("a", 100, 52).await,
            Err(LinkUseError::Used)
        );
        assert_ne!(
            links.key(),
            MemoryLinks::new().key(),
            "each process its own key"
        );
    }
}
