//! The `[store]` section: where patgate keeps its state. `sled` (the default) is files in
//! `state_dir` and this process's memory, for one instance; `postgres` is one database that
//! several replicas share, so they behave as one.
//!
//! ```toml
//! [store]
//! kind = "postgres"
//! url_file = "/etc/patgate/store-url"   # or systemd_credential = true
//! tls = "require"
//! ca_file = "/etc/patgate/db-ca.pem"
//! pool_size = 16
//! connect_timeout_ms = 5000
//! statement_timeout_ms = 5000
//! ```
//!
//! The connection string may hold a password, so, like the master key, it never sits in
//! this file or on a command line: it is read from a file only the service user can read, or
//! from the systemd credential `store-url`. This file only reads and checks the section;
//! the string is read when the store is opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Defaults of `[store]`; the example config repeats them and a test checks it does.
pub(crate) mod defaults {
    // `KIND` and `TLS` are spelled out by the raw enums' defaults; the example test reads them.
    /// `store.kind`.
    #[cfg(test)]
    pub(crate) const KIND: &str = "sled";
    /// `store.tls`.
    #[cfg(test)]
    pub(crate) const TLS: &str = "require";
    /// `store.pool_size`: connections to the database per replica.
    pub(crate) const POOL_SIZE: usize = 16;
    /// `store.connect_timeout_ms`: also how long a request waits for a free connection.
    pub(crate) const CONNECT_TIMEOUT_MS: u64 = 5_000;
    /// `store.statement_timeout_ms`: the longest one statement may run in the database.
    pub(crate) const STATEMENT_TIMEOUT_MS: u64 = 5_000;
    /// Upper bound of `store.pool_size`.
    pub(crate) const POOL_SIZE_CAP: usize = 1024;
    /// Upper bound of `store.connect_timeout_ms`.
    pub(crate) const CONNECT_TIMEOUT_CAP_MS: u64 = 600_000;
}

/// The name of the systemd credential holding the connection string.
pub const STORE_URL_CREDENTIAL: &str = "store-url";

/// `[store]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSettings {
    /// sled files in `state_dir`, nonces, links and holds in memory.
    #[default]
    Sled,
    Postgres(PostgresSettings),
}

/// `[store] kind = "postgres"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    pub url: StoreUrlSource,
    /// TLS to the database.
    pub tls: bool,
    /// The CA the database's certificate must chain to; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// The database cancels a statement that runs longer (its `statement_timeout`).
    pub statement_timeout: Duration,
}

/// Where the connection string comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrlSource {
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/store-url`.
    SystemdCredential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawKind {
    Sled,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawTls {
    Require,
    Disable,
}

/// `[store]` as written. The keys of `postgres` are options, so that setting one for `sled`
/// is an error rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default = "d_kind")]
    kind: RawKind,
    url_file: Option<PathBuf>,
    systemd_credential: Option<bool>,
    tls: Option<RawTls>,
    ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
    connect_timeout_ms: Option<u64>,
    statement_timeout_ms: Option<u64>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            kind: d_kind(),
            url_file: None,
            systemd_credential: None,
            tls: None,
            ca_file: None,
            pool_size: None,
            connect_timeout_ms: None,
            statement_timeout_ms: None,
        }
    }
}

fn d_kind() -> RawKind {
    RawKind::Sled
}

impl StoreSettings {
    /// Checks `[store]`; `resolve` makes a path relative to the config file's directory.
    pub(super) fn from_raw(
        file: &Path,
        raw: RawStore,
        resolve: impl Fn(PathBuf) -> PathBuf,
    ) -> Result<StoreSettings, ConfigError> {
        let err = |key: &str, why: &str| ConfigError::new(file, format!("store.{key}"), why);
        if raw.kind == RawKind::Sled {
            let postgres_only = [
                ("url_file", raw.url_file.is_some()),
                ("systemd_credential", raw.systemd_credential.is_some()),
                ("tls", raw.tls.is_some()),
                ("ca_file", raw.ca_file.is_some()),
                ("pool_size", raw.pool_size.is_some()),
                ("connect_timeout_ms", raw.connect_timeout_ms.is_some()),
                ("statement_timeout_ms", raw.statement_timeout_ms.is_some()),
            ];
            if let Some((key, _)) = postgres_only.iter().find(|(_, set)| *set) {
                return Err(err(key, "is for `kind = \"postgres\"` only"));
            }
            return Ok(StoreSettings::Sled);
        }
        let url = match (raw.url_file, raw.systemd_credential.unwrap_or(false)) {
            (Some(path), false) => StoreUrlSource::File(resolve(path)),
            (None, true) => StoreUrlSource::SystemdCredential,
            (Some(_), true) => {
                return Err(err(
                    "url_file",
                    "set either `url_file` or `systemd_credential = true`, not both",
                ))
            }
            (None, false) => return Err(err(
                "url_file",
                "`kind = \"postgres\"` needs the connection string: `url_file` (a file only the service user can read) or `systemd_credential = true`",
            )),
        };
        let tls = raw.tls.unwrap_or(RawTls::Require) == RawTls::Require;
        if !tls && raw.ca_file.is_some() {
            return Err(err("ca_file", "is for `tls = \"require\"` only"));
        }
        let pool_size = raw.pool_size.unwrap_or(defaults::POOL_SIZE);
        if !(1..=defaults::POOL_SIZE_CAP).contains(&pool_size) {
            return Err(err(
                "pool_size",
                &format!("must be between 1 and {}", defaults::POOL_SIZE_CAP),
            ));
        }
        let timeout = raw
            .connect_timeout_ms
            .unwrap_or(defaults::CONNECT_TIMEOUT_MS);
        if !(1..=defaults::CONNECT_TIMEOUT_CAP_MS).contains(&timeout) {
            return Err(err(
                "connect_timeout_ms",
                &format!(
                    "must be between 1 and {} (ms)",
                    defaults::CONNECT_TIMEOUT_CAP_MS
                ),
            ));
        }
        let statement_timeout = raw
            .statement_timeout_ms
            .unwrap_or(defaults::STATEMENT_TIMEOUT_MS);
        if !(1..=defaults::CONNECT_TIMEOUT_CAP_MS).contains(&statement_timeout) {
            return Err(err(
                "statement_timeout_ms",
                &format!(
                    "must be between 1 and {} (ms)",
                    defaults::CONNECT_TIMEOUT_CAP_MS
                ),
            ));
        }
        Ok(StoreSettings::Postgres(PostgresSettings {
            url,
            tls,
            ca_file: raw.ca_file.map(resolve),
            pool_size,
            connect_timeout: Duration::from_millis(timeout),
            statement_timeout: Duration::from_millis(statement_timeout),
        }))
    }
}

/// Reads the connection string from where `[store]` says. The file, like the master key's,
/// must not be readable or writable by group or others; its content is never quoted.
pub fn read_store_url(source: &StoreUrlSource) -> Result<secrecy::SecretString, String> {
    let path = match source {
        StoreUrlSource::File(path) => path.clone(),
        StoreUrlSource::SystemdCredential => {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Err(format!(
                    "store.systemd_credential: $CREDENTIALS_DIRECTORY is not set: is the unit's `LoadCredential={STORE_URL_CREDENTIAL}:…` in place?"
                ));
            };
            Path::new(&dir).join(STORE_URL_CREDENTIAL)
        }
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        format!(
            "cannot read the store's connection string {}: {e}",
            path.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        if matches!(source, StoreUrlSource::File(_)) && meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} (store.url_file) may be read or written by group or others: `chmod 600` it",
                path.display()
            ));
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the store's connection string {}: {e}",
            path.display()
        )
    })?;
    let url = text.trim();
    if url.is_empty() || url.contains('\n') {
        return Err(format!(
            "{} must hold the connection string on one line",
            path.display()
        ));
    }
    Ok(url.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "state_dir = \"s\"\n[master_key]\nfile = \"k\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n";

    fn parse(section: &str) -> Result<StoreSettings, ConfigError> {
        Config::parse(
            Path::new("/etc/patgate/p.toml"),
            &format!("{BASE}[store]\n{section}"),
        )
        .map(|c| c.store)
    }

    #[test]
    fn sled_is_the_default_and_takes_no_database_key() {
        let cfg = Config::parse(Path::new("p.toml"), BASE).unwrap();
        assert_eq!(cfg.store, StoreSettings::Sled);
        assert_eq!(parse("kind = \"sled\"").unwrap(), StoreSettings::Sled);
        let err = parse("url_file = \"u\"").unwrap_err();
        assert_eq!(err.key, "store.url_file");
        assert!(err.reason.contains("postgres"), "{err}");
        assert_eq!(parse("tls = \"disable\"").unwrap_err().key, "store.tls");
        assert_eq!(parse("kind = \"mysql\"").unwrap_err().key, "store.kind");
    }

    #[test]
    fn postgres_reads_every_key_with_its_defaults() {
        let pg = parse("kind = \"postgres\"\nurl_file = \"store-url\"").unwrap();
        assert_eq!(
            pg,
            StoreSettings::Postgres(PostgresSettings {
                url: StoreUrlSource::File("/etc/patgate/store-url".into()),
                tls: true,
                ca_file: None,
                pool_size: defaults::POOL_SIZE,
                connect_timeout: Duration::from_millis(defaults::CONNECT_TIMEOUT_MS),
                statement_timeout: Duration::from_millis(defaults::STATEMENT_TIMEOUT_MS),
            })
        );
        let pg = parse("kind = \"postgres\"\nsystemd_credential = true\nca_file = \"db-ca.pem\"\npool_size = 3\nconnect_timeout_ms = 70\nstatement_timeout_ms = 80").unwrap();
        assert_eq!(
            pg,
            StoreSettings::Postgres(PostgresSettings {
                url: StoreUrlSource::SystemdCredential,
                tls: true,
                ca_file: Some("/etc/patgate/db-ca.pem".into()),
                pool_size: 3,
                connect_timeout: Duration::from_millis(70),
                statement_timeout: Duration::from_millis(80),
            })
        );
        let StoreSettings::Postgres(pg) =
            parse("kind = \"postgres\"\nurl_file = \"u\"\ntls = \"disable\"").unwrap()
        else {
            panic!("postgres")
        };
        assert!(!pg.tls);
    }

    #[test]
    fn postgres_refuses_what_cannot_work() {
        for (section, key) in [
            ("kind = \"postgres\"", "store.url_file"),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\nsystemd_credential = true",
                "store.url_file",
            ),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\ntls = \"disable\"\nca_file = \"c\"",
                "store.ca_file",
            ),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\ntls = \"prefer\"",
                "store.tls",
            ),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\npool_size = 0",
                "store.pool_size",
            ),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\nconnect_timeout_ms = 0",
                "store.connect_timeout_ms",
            ),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\nstatement_timeout_ms = 0",
                "store.statement_timeout_ms",
            ),
            (
                "kind = \"postgres\"\nurl_file = \"u\"\nstatement_timeout_ms = 600001",
                "store.statement_timeout_ms",
            ),
            // The connection string itself never goes in this file.
            (
                "kind = \"postgres\"\nurl = \"postgresql://u:p@db/patgate\"",
                "store.url",
            ),
        ] {
            assert_eq!(parse(section).unwrap_err().key, key, "{section}");
        }
    }

    #[test]
    fn the_connection_string_file_must_be_private_and_one_line() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store-url");
        std::fs::write(&path, "postgresql://patgate:secret-pw@db/patgate\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let source = StoreUrlSource::File(path.clone());
        let err = read_store_url(&source).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("secret-pw"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        use secrecy::ExposeSecret as _;
        #[allow(clippy::disallowed_methods, reason = "the test checks what was read")]
        let read = read_store_url(&source).unwrap().expose_secret().to_string();
        assert_eq!(read, "postgresql://patgate:secret-pw@db/patgate");
        std::fs::write(&path, "a\nb\n").unwrap();
        let err = read_store_url(&source).unwrap_err();
        assert!(err.contains("one line"), "{err}");
    }
}
