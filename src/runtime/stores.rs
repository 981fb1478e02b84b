//! Opening the stores `[store]` names: for `postgres`, the pool (with its TLS), the vault's
//! records in it, and the replay cache, connect links and host holds beside them.

use std::path::Path;

use crate::config::{read_store_url, Config, PostgresSettings};
use crate::store::{PgSettings, PgTls, Postgres, Stores};
use crate::vault::MasterKey;

/// What the connect-link key is derived from the master key with (`MasterKey::derive`).
const LINK_KEY_LABEL: &[u8] = b"patgate connect link key v1";

/// The pool `[store] kind = "postgres"` names (no connection is opened yet): reads the
/// connection string and the CA file. `file` is the config, for messages; `cores`, the
/// data-plane cores (`service.workers`), each of which gets a pool of its own.
pub fn connect_postgres(
    file: &Path,
    settings: &PostgresSettings,
    cores: usize,
) -> Result<Postgres, String> {
    let url =
        read_store_url(&settings.url).map_err(|e| format!("{}: store: {e}", file.display()))?;
    let tls = if settings.tls {
        let roots = match &settings.ca_file {
            Some(ca) => crate::tls::root_store(ca),
            None => crate::tls::upstream_roots(crate::config::TrustRoots::System, None),
        }
        .map_err(|e| format!("{}: store.ca_file: {e}", file.display()))?;
        let client = crate::tls::upstream_client_config(roots)
            .map_err(|e| format!("{}: store.tls: {e}", file.display()))?;
        PgTls::Require(Box::new(client))
    } else {
        PgTls::Disable
    };
    Postgres::connect(&PgSettings {
        url,
        tls,
        pool_size: settings.pool_size,
        cores,
        connect_timeout: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
    })
    .map_err(|e| format!("{}: store: {e}", file.display()))
}

/// The replay cache, connect links and host holds in the database of `[store] kind =
/// "postgres"`, with the link key derived from `key` (the same on every replica).
pub fn shared_stores(config: &Config, db: &Postgres, key: &MasterKey) -> Stores {
    let window = config.signatures.max_validity + config.signatures.max_skew;
    Stores::postgres(db, window.as_secs(), key.derive(LINK_KEY_LABEL))
}
