//! When users' PATs were last used: kept in memory on the request path and written to the
//! vault's records in batches, so a request never waits on a disk write.
//!
//! The times that last are in each PAT record's clear metadata, in the vault's
//! [`crate::store::RecordStore`]: replicas that share the store share them. This buffer is one
//! process's uses since its last flush; it needs no sharing, because a flush never puts an
//! older time over a newer one.

use std::collections::HashMap;
use std::time::Duration;

use super::Vault;

/// How often [`PatUses`] are written to the vault (and once more at shutdown).
pub const PAT_USE_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// When users' PATs were last used, kept in memory and written to the vault metadata in
/// batches, so a request never waits on a disk write. Bounded by the number of stored PATs:
/// an entry is only made when a stored PAT was used.
#[derive(Debug, Default)]
pub struct PatUses(std::sync::Mutex<HashMap<String, HashMap<String, u64>>>);

impl PatUses {
    /// Called on the request path: a map update under a short lock, allocating only the
    /// first time an (integration, account) pair is seen since the last flush.
    pub fn record(&self, integration: &str, account: &str, at: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = map.get_mut(integration).and_then(|m| m.get_mut(account)) {
            *seen = (*seen).max(at);
            return;
        }
        map.entry(integration.to_string())
            .or_default()
            .insert(account.to_string(), at);
    }

    /// A use not yet written to the vault.
    pub fn pending(&self, integration: &str, account: &str) -> Option<u64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(integration).and_then(|m| m.get(account)).copied()
    }

    /// Writes every pending use to the vault.
    pub async fn flush(&self, vault: &Vault) {
        let uses: Vec<_> = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.drain()
                .flat_map(|(integration, accounts)| {
                    accounts
                        .into_iter()
                        .map(move |(account, at)| ((integration.clone(), account), at))
                })
                .collect()
        };
        if uses.is_empty() {
            return;
        }
        if let Err(err) = vault.record_pat_uses(&uses).await {
            tracing::warn!(error = %err, "writing when PATs were last used failed");
            for ((integration, account), at) in uses {
                self.record(&integration, &account, at);
            }
        }
    }
}
