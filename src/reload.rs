//! Reloading the configuration while serving (SIGHUP, `systemctl reload patgate`).
//!
//! A reload re-reads `config.source` and every file it names (server certificate and key,
//! client CA, CRLs, app keys, integrations' CAs), builds a whole new [`Runtime`] beside the
//! old one, and only then swaps it in ([`ServerHandle::reload`]). New TLS handshakes and new
//! requests use the new runtime; a connection keeps the certificate checks of its own
//! handshake, and a request already running finishes with the runtime it started with.
//!
//! What lives for the process is carried over, never rebuilt: the vault, the metrics, the
//! PATs' last uses not yet written, the replay cache (a reload must not reopen a replay), the
//! connect page's link key and the record of opened links, and the release detected for a
//! `tfs` integration with `version = "auto"` that did not change.
//!
//! Some settings belong to sockets or files opened once: changing one refuses the whole
//! reload with an error naming the key ([`RESTART_ONLY`]). Any error leaves the old runtime
//! serving, and is logged as one `reload refused` line with the file, key and reason.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Config, ConfigError, Integration};
use crate::metrics::ReloadLabels;
use crate::server::{check_materials, Runtime, ServerHandle};

/// The settings a reload cannot change, with why; the service must be restarted for them.
pub const RESTART_ONLY: [(&str, &str); 10] = [
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
    fn between(old: &Config, new: &Config) -> ReloadReport {
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

impl ServerHandle {
    /// Re-reads the config file the service started with and, when everything in it loads,
    /// serves with it from now on. On error the old config keeps serving; the error names
    /// the file and key, is logged as `reload refused`, and counted in
    /// `patgate_reloads_total{result="error"}`.
    pub async fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.current.load();
        let outcome = match Config::load(&old.config.source) {
            Ok(config) => old.reload(config).await,
            Err(err) => Err(err),
        };
        let result = match &outcome {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        old.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
        match outcome {
            Ok(new) => {
                let report = ReloadReport::between(&old.config, &new.config);
                self.current.store(Arc::new(new));
                tracing::info!(
                    integrations = report.integrations,
                    added = %report.added.join(","),
                    removed = %report.removed.join(","),
                    changed = %report.changed.join(","),
                    app_keys = report.app_keys,
                    crls = report.crls,
                    "reloaded configuration"
                );
                Ok(report)
            }
            Err(err) => {
                tracing::error!(
                    file = %err.file.display(),
                    key = %err.key,
                    reason = %err.reason,
                    "reload refused; the previous configuration keeps serving"
                );
                Err(err)
            }
        }
    }
}

impl Runtime {
    /// The runtime for `new`, carrying over what lives for the process (see the module
    /// doc). Reads every file `new` names; nothing is swapped here.
    pub async fn reload(&self, mut new: Config) -> Result<Runtime, ConfigError> {
        refuse_restart_only(&self.config, &new)?;
        let mut tfs_detected = HashSet::new();
        let file = new.source.clone();
        for (index, integration) in new.integrations.iter_mut().enumerate() {
            if !crate::server::needs_detection(integration) {
                continue;
            }
            match self.detected_release_of(integration) {
                Some(release) => integration.tfs_version = Some(release),
                None => {
                    crate::server::detect_host_version(&file, index, integration, &self.vault)
                        .await?
                }
            }
            tfs_detected.insert(integration.id.clone());
        }
        let materials = check_materials(&new)?;
        let connect = match (&self.connect, &new.connect) {
            (Some(links), Some(config)) => Some(links.reconfigured(config)),
            // `[connect]` cannot come or go without a restart (refused above).
            _ => None,
        };
        Ok(Runtime {
            verifier: self.verifier.reloaded(materials.keys, materials.window),
            integrations: materials.integrations,
            tls: Arc::new(materials.tls),
            api_cert_not_after: materials.api_cert_not_after,
            connect_tls: materials.connect_tls.map(Arc::new),
            connect,
            tfs_detected,
            // Carried over for the life of the process; the rate limiters keep the state of
            // every quota the new config leaves unchanged, and every host hold.
            limits: {
                self.limits.reconfigure(&new.rate_limits);
                self.limits.clone()
            },
            vault: self.vault.clone(),
            pat_uses: self.pat_uses.clone(),
            metrics: self.metrics.clone(),
            config: new,
        })
    }

    /// The release detected earlier for an `auto` integration, when the integration is the
    /// same as then apart from `version` being `auto` again.
    fn detected_release_of(&self, integration: &Integration) -> Option<crate::config::TfsVersion> {
        if !self.tfs_detected.contains(&integration.id) {
            return None;
        }
        let before = &self.integrations.get(&integration.id)?.config;
        let as_written = Integration {
            tfs_version: before.tfs_version,
            ..integration.clone()
        };
        (*before == as_written)
            .then_some(before.tfs_version)
            .flatten()
    }
}

/// Refuses a new config that changes a [`RESTART_ONLY`] setting.
fn refuse_restart_only(old: &Config, new: &Config) -> Result<(), ConfigError> {
    let connect_listen = |c: &Config| c.connect.as_ref().map(|c| c.listen);
    let changed: [(&str, bool); 10] = [
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
