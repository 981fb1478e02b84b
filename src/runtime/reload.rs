//! Building the runtime of a reloaded configuration (SIGHUP, `systemctl reload patgate`),
//! and the start step that asks TFS servers for their release.
//!
//! A reload re-reads every file the new config names (server certificate and key, client CA,
//! CRLs, app keys, integrations' CAs) and builds a whole new [`Runtime`] beside the old one;
//! the listener swaps it in. What lives for the process is carried over, never rebuilt: the
//! vault, the metrics, the PATs' last uses not yet written, the replay cache (a reload must
//! not reopen a replay), the connect links' key and the record of opened links, and the
//! release detected for a `tfs` integration with `version = "auto"` that did not change.
//!
//! Some settings belong to sockets or files opened once: changing one refuses the whole
//! reload with an error naming the key ([`RESTART_ONLY`]).

use std::collections::HashSet;

use super::{needs_detection, Runtime};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, Integration, MasterKeySource, TfsRelease, TfsVersion};
use crate::hosts::adapter_for;
use crate::upstream::Upstream;
use crate::vault::Vault;

/// The settings a reload cannot change, with why; the service must be restarted for them.
pub const RESTART_ONLY: [(&str, &str); 11] = [
    ("state_dir", "the vault is open there"),
    ("master_key", "the vault is open with it"),
    ("api.listen", "the api socket is bound"),
    ("connect", "the connect listener is bound (or absent)"),
    ("connect.listen", "the connect socket is bound"),
    ("admin.listen", "the admin socket is bound"),
    ("admin.socket", "the admin socket is bound"),
    (
        "signatures.nonce_cache_entries",
        "the replay cache is carried over as it is",
    ),
    ("log", "logging is set up once at start"),
    ("vault.cache_capacity_mib", "the vault's store is open"),
    ("store", "the store is open"),
];

/// What a successful reload changed: counts and ids, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub integrations: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub app_keys: usize,
    pub crls: usize,
}

impl ReloadReport {
    /// What changed from `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> ReloadReport {
        let find = |config: &Config, id: &str| -> Option<Integration> {
            config.integrations.iter().find(|i| i.id == id).cloned()
        };
        let mut report = ReloadReport {
            integrations: new.integrations.len(),
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            app_keys: new.app_keys.len(),
            crls: new.api.crl.len(),
        };
        for integration in &new.integrations {
            match find(old, &integration.id) {
                None => report.added.push(integration.id.clone()),
                Some(before) if before != *integration => {
                    report.changed.push(integration.id.clone())
                }
                Some(_) => {}
            }
        }
        for integration in &old.integrations {
            if find(new, &integration.id).is_none() {
                report.removed.push(integration.id.clone());
            }
        }
        report
    }
}

impl Runtime {
    /// The runtime for `new`, carrying over what lives for the process (see the module
    /// doc). Reads every file `new` names; nothing is swapped here.
    pub async fn reload(&self, mut new: Config) -> Result<Runtime, ConfigError> {
        refuse_restart_only(&self.config, &new)?;
        catch_up_with_rotation(&self.vault, &self.config).await;
        let tfs_detected = detect_releases(&mut new, &self.vault, Some(self), &self.clock).await?;
        let runtime = Runtime::assemble(new, self.carried(), tfs_detected)?;
        // Only once everything loaded: a refused reload leaves the limits as they were. The
        // limiters keep the state of every quota the new config leaves unchanged, and every
        // host hold.
        self.limits.reconfigure(&runtime.config.rate_limits);
        Ok(runtime)
    }

    /// The release detected earlier for an `auto` integration, when the integration is the
    /// same as then apart from `version` being `auto` again.
    fn detected_release_of(&self, integration: &Integration) -> Option<TfsRelease> {
        if !self.tfs_detected.contains(&integration.id) {
            return None;
        }
        let before = &self.integrations.get(&integration.id)?.config;
        let as_written = Integration {
            tfs_version: before.tfs_version,
            ..integration.clone()
        };
        match before.tfs_version {
            Some(TfsVersion::Release(release)) if *before == as_written => Some(release),
            _ => None,
        }
    }
}

/// A master key rotation run through another replica of a shared store: the vault takes its
/// new key (or, once it is committed, forgets the old one), and the new key file is put in
/// place of the key file once the rotation is committed. Logged; never refuses the reload
/// (requests meeting the new version take the key by themselves all the same).
async fn catch_up_with_rotation(vault: &Vault, config: &Config) {
    let (version, settled) = match vault.catch_up_with_rotation().await {
        Ok(caught_up) => caught_up,
        Err(error) => {
            tracing::error!(%error, "catching up with a master key rotation failed");
            return;
        }
    };
    let pending = crate::vault::pending_key_for(&config.master_key, &config.state_dir);
    if !settled || !pending.exists() {
        return;
    }
    match vault.is_committed_key(&pending).await {
        // A key staged for a rotation still to come.
        Ok(false) => {}
        Ok(true) => match &config.master_key {
            MasterKeySource::File(file) => {
                match crate::vault::install_pending_key(&pending, file) {
                    Ok(()) => tracing::info!(
                        file = %file.display(),
                        key_version = version,
                        "the key file now holds the master key a rotation moved to"
                    ),
                    Err(error) => tracing::warn!(
                        %error,
                        pending = %pending.display(),
                        file = %file.display(),
                        key_version = version,
                        "the vault is at the new master key, but putting its file in place failed: move the pending file over the key file (mode 0600) before the next restart"
                    ),
                }
            }
            MasterKeySource::SystemdCredential => tracing::warn!(
                pending = %pending.display(),
                key_version = version,
                "the vault is at the new master key: point the systemd credential `master-key` at the pending file's key before the next restart"
            ),
        },
        Err(error) => tracing::warn!(
            %error,
            pending = %pending.display(),
            "the pending master key file could not be checked"
        ),
    }
}

/// Every `tfs` integration with `version = "auto"` asks its server which release it is
/// (with the integration's secret), and the config then holds that release; on reload, an
/// integration detected before and unchanged keeps its release without asking again. A
/// server that cannot be asked, or does not say, is an error naming the integration: patgate
/// never guesses whether a host has PATs. Answers the ids detected.
pub(super) async fn detect_releases(
    config: &mut Config,
    vault: &Vault,
    previous: Option<&Runtime>,
    clock: &Clock,
) -> Result<HashSet<String>, ConfigError> {
    let file = config.source.clone();
    let mut detected = HashSet::new();
    for (index, integration) in config.integrations.iter_mut().enumerate() {
        if !needs_detection(integration) {
            continue;
        }
        let release = match previous.and_then(|p| p.detected_release_of(integration)) {
            Some(release) => release,
            None => {
                let fail = |why: &dyn std::fmt::Display| {
                    ConfigError::new(
                        &file,
                        format!("integrations[{index}].version"),
                        format!(
                            "detecting the server release of integration `{}` failed: {why}",
                            integration.id
                        ),
                    )
                };
                let upstream = Upstream::new(integration, clock, 0).map_err(|e| fail(&e))?;
                let secret = vault
                    .integration_secret(&integration.id)
                    .await
                    .map_err(|e| fail(&e))?
                    .ok_or_else(|| {
                        fail(&"the integration has no secret in the vault to ask the server with; store it with `patgate integration set-secret`, or set `version`")
                    })?;
                let found = crate::host_calls::detect_release(
                    &*adapter_for(integration),
                    &upstream,
                    &secret,
                )
                .await
                .map_err(|e| fail(&e))?;
                tracing::info!(
                    integration = %integration.id,
                    release = %found.release,
                    api_version = %found.api_version,
                    probe = found.probe,
                    "detected the TFS / Azure DevOps Server release"
                );
                found.release
            }
        };
        integration.tfs_version = Some(TfsVersion::Release(release));
        detected.insert(integration.id.clone());
    }
    Ok(detected)
}

/// Refuses a new config that changes a [`RESTART_ONLY`] setting.
fn refuse_restart_only(old: &Config, new: &Config) -> Result<(), ConfigError> {
    let connect_listen = |c: &Config| c.connect.as_ref().map(|c| c.listen);
    let changed: [(&str, bool); 11] = [
        ("state_dir", old.state_dir != new.state_dir),
        ("master_key", old.master_key != new.master_key),
        ("api.listen", old.api.listen != new.api.listen),
        ("connect", old.connect.is_some() != new.connect.is_some()),
        ("connect.listen", connect_listen(old) != connect_listen(new)),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("admin.socket", old.admin.socket != new.admin.socket),
        (
            "signatures.nonce_cache_entries",
            old.signatures.nonce_cache_entries != new.signatures.nonce_cache_entries,
        ),
        (
            "log",
            old.log.level != new.log.level || old.log.format != new.log.format,
        ),
        ("vault.cache_capacity_mib", old.vault != new.vault),
        ("store", old.store != new.store),
    ];
    for (key, differs) in changed {
        if differs {
            let why = RESTART_ONLY
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, why)| why);
            return Err(ConfigError::new(
                &new.source,
                key,
                format!("changed, but takes effect only at a restart ({why}): run `systemctl restart patgate`, or undo the change"),
            ));
        }
    }
    Ok(())
}
