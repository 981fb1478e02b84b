//! `patgate store …`: the shared store. `migrate` makes or upgrades the schema of the
//! PostgreSQL database `[store]` names; the service only ever runs on the schema it knows.

use std::path::Path;
use std::process::ExitCode;

use super::{command_for, load_config, load_master_key, CliResult};
use crate::config::{Config, PostgresSettings, StoreSettings};
use crate::store::{PgError, Postgres, Stores};
use crate::vault::{MasterKey, Vault, VaultError};

/// The settings of `[store] kind = "postgres"`, or why a command that needs them cannot run.
fn postgres_settings<'a>(config: &'a Config, what: &str) -> Result<&'a PostgresSettings, String> {
    match &config.store {
        StoreSettings::Postgres(settings) => Ok(settings),
        StoreSettings::Sled => Err(format!(
            "{}: `{what}` is for `[store] kind = \"postgres\"`; this config keeps the vault in sled files (state_dir), which need no schema",
            config.source.display()
        )),
    }
}

/// `patgate store migrate`.
pub(super) async fn migrate(config_path: &Path) -> CliResult {
    let config = load_config(config_path)?;
    let settings = postgres_settings(&config, "patgate store migrate")?;
    let db = crate::runtime::connect_postgres(&config.source, settings)?;
    let done = db.migrate().await.map_err(|e| e.to_string())?;
    if done.from == done.to {
        outln!(
            "{}: the schema is at version {}, nothing to do",
            db.location(),
            done.to
        );
    } else {
        outln!(
            "{}: migrated the schema from version {} to {}",
            db.location(),
            done.from,
            done.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `patgate store status`: where the store is and its schema version.
pub(super) async fn status(config_path: &Path) -> CliResult {
    let config = load_config(config_path)?;
    let settings = postgres_settings(&config, "patgate store status")?;
    let db = crate::runtime::connect_postgres(&config.source, settings)?;
    let found = db.schema_version().await.map_err(|e| e.to_string())?;
    outln!(
        "{}: schema version {found} (this patgate: {})",
        db.location(),
        crate::store::SCHEMA_VERSION
    );
    db.check_schema()
        .await
        .map_err(|e| with_command(e, &config))?;
    Ok(ExitCode::SUCCESS)
}

/// A schema error with the exact command to fix it.
fn with_command(e: PgError, config: &Config) -> String {
    match e {
        PgError::Unmigrated { .. } | PgError::Behind { .. } => {
            format!("{e} (`{}`)", command_for("store migrate", &config.source))
        }
        other => other.to_string(),
    }
}

/// `config check` of `[store]`: the connection string and the CA file are read; unless
/// `offline`, the database is asked for its schema version.
pub(super) async fn check(config: &Config, offline: bool) -> Result<(), String> {
    let StoreSettings::Postgres(settings) = &config.store else {
        return Ok(());
    };
    let db = crate::runtime::connect_postgres(&config.source, settings)?;
    if offline {
        return Ok(());
    }
    db.check_schema().await.map_err(|e| {
        format!(
            "{}: store: {} (run with --offline to skip this check)",
            config.source.display(),
            with_command(e, config)
        )
    })?;
    outln!(
        "store: {} answers, schema version {}",
        db.location(),
        crate::store::SCHEMA_VERSION
    );
    Ok(())
}

/// The database of `[store]`, checked to have the schema this binary knows.
pub(super) async fn open_database(config: &Config) -> Result<Option<Postgres>, String> {
    let StoreSettings::Postgres(settings) = &config.store else {
        return Ok(None);
    };
    let db = crate::runtime::connect_postgres(&config.source, settings)?;
    db.check_schema()
        .await
        .map_err(|e| with_command(e, config))?;
    Ok(Some(db))
}

/// The vault in the database, with the replay cache, links and holds beside it.
pub(super) async fn open_vault(
    config: &Config,
    db: &Postgres,
    key: &MasterKey,
) -> Result<(Vault, Stores), String> {
    match Vault::open_in(Box::new(db.records()), key).await {
        Ok(vault) => Ok((vault, crate::runtime::shared_stores(config, db, key))),
        Err(VaultError::NotInitialized { .. }) => Err(format!(
            "there is no vault in {}: make it with `{}`",
            db.location(),
            command_for("vault init", &config.source)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `patgate vault init` for the database.
pub(super) async fn init_vault(config: &Config, db: &Postgres) -> Result<(), String> {
    let key = load_master_key(&config.master_key)?;
    Vault::init_in(Box::new(db.records()), &key)
        .await
        .map_err(|e| e.to_string())?;
    outln!("made the vault in {}", db.location());
    Ok(())
}
