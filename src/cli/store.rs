//! `patgate store …`: the shared store. `migrate` makes or upgrades the schema of the
//! PostgreSQL database `[store]` names; the service only ever runs on the schema it knows.
//! `copy` moves the vault between the sled files in `state_dir` and that database, either
//! way (the copy itself is `vault::copy_vault`; here are the two sides and the messages).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{command_for, load_config, load_master_key, CliResult, ConfigArg};
use crate::config::{Config, MasterKeySource, PostgresSettings, StoreSettings};
use crate::store::{PgError, Postgres, RecordStore, SledOpenError, SledRecords, Stores};
use crate::vault::{CopyError, MasterKey, TargetWas, Vault, VaultError};

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
    let db = crate::runtime::connect_postgres(&config.source, settings, config.service.workers)?;
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
    let db = crate::runtime::connect_postgres(&config.source, settings, config.service.workers)?;
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
    let db = crate::runtime::connect_postgres(&config.source, settings, config.service.workers)?;
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
    let db = crate::runtime::connect_postgres(&config.source, settings, config.service.workers)?;
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
        // Another replica rotated the master key, and this one's key file still holds the
        // old key (it was restarted before a reload installed the staged one).
        Err(e @ (VaultError::RotationInterrupted { .. } | VaultError::WrongMasterKey { .. })) => {
            let (vault, key) = super::admin::open_with_pending_key(config, Some(db), e).await?;
            Ok((vault, crate::runtime::shared_stores(config, db, &key)))
        }
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

/// One side of `patgate store copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Side {
    /// The sled files in the config's `state_dir` (or `--state-dir`).
    Sled,
    /// The database of the config's `[store]` (`kind = "postgres"`).
    Postgres,
}

#[derive(Debug, clap::Args)]
pub(super) struct CopyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The store to copy from (it is only read).
    #[arg(long, value_enum)]
    from: Side,
    /// The store to copy into: empty, or left by a copy that did not finish.
    #[arg(long, value_enum)]
    to: Side,
    /// The sled side: this directory instead of the config's state_dir (e.g. a new
    /// directory to copy back into; then point state_dir at it).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `patgate store copy`.
pub(super) async fn copy(args: &CopyArgs) -> CliResult {
    if args.from == args.to {
        return Err(
            "--from and --to name the same store: copy from sled to postgres, or from postgres to sled"
                .into(),
        );
    }
    let config = load_config(&args.config.config)?;
    let settings = match &config.store {
        StoreSettings::Postgres(settings) => settings,
        StoreSettings::Sled => {
            return Err(format!(
                "{}: `patgate store copy` takes the PostgreSQL side from `[store]`, and this config has `kind = \"sled\"`: give it the config the replicas will run with (`[store] kind = \"postgres\"`, url_file or systemd_credential); the sled side is its state_dir, or --state-dir",
                config.source.display()
            ))
        }
    };
    let key = load_master_key(&config.master_key)?;
    let sled_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.clone());
    let sled_name = if args.state_dir.is_some() {
        "--state-dir"
    } else {
        "state_dir"
    };
    let db = crate::runtime::connect_postgres(&config.source, settings, config.service.workers)?;
    let cache = config.vault.cache_capacity_bytes;
    // The source first: nothing is made on the target's side for a source that cannot be read.
    let (source, target): (Box<dyn RecordStore>, Box<dyn RecordStore>) = match args.from {
        Side::Sled => {
            let source = SledRecords::open(&sled_dir, cache)
                .map_err(|e| sled_refusal(e, &sled_dir, sled_name, "copied from"))?;
            db.check_schema()
                .await
                .map_err(|e| with_command(e, &config))?;
            (Box::new(source), Box::new(db.records()))
        }
        Side::Postgres => {
            db.check_schema()
                .await
                .map_err(|e| with_command(e, &config))?;
            let target = match SledRecords::open(&sled_dir, cache) {
                Err(SledOpenError::NotFound) => SledRecords::create(&sled_dir, cache),
                opened => opened,
            }
            .map_err(|e| sled_refusal(e, &sled_dir, sled_name, "copied into"))?;
            (Box::new(db.records()), Box::new(target))
        }
    };
    let (from, to) = (
        source.location().display().to_string(),
        target.location().display().to_string(),
    );
    let copied = crate::vault::copy_vault(source, target, &key)
        .await
        .map_err(|e| copy_refusal(e, &config, &to))?;
    match copied.found {
        TargetWas::SameVault => outln!(
            "{to} already holds every record and setting of {from}, byte for byte: nothing to copy"
        ),
        TargetWas::Unfinished { records } => {
            outln!("{to} held {records} record(s) and no vault: an unfinished copy, finished now")
        }
        TargetWas::Empty => {}
    }
    let verb = if copied.found == TargetWas::SameVault {
        "checked"
    } else {
        "copied"
    };
    outln!(
        "{verb} {} record(s), {} setting(s) from {from} to {to}; every record decrypts from {to} (key version {})",
        copied.records,
        copied.settings,
        copied.key_version
    );
    match args.to {
        Side::Postgres => outln!(
            "next: start patgate with this config; the sled files in {from} are as they were (keep them as a backup, or delete them once the replicas serve)"
        ),
        Side::Sled => outln!(
            "next: start patgate with `[store] kind = \"sled\"` (or no [store]) and state_dir = \"{to}\"; the database is as it was"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the sled side of a copy cannot be opened, with what to do.
fn sled_refusal(e: SledOpenError, dir: &Path, named: &str, role: &str) -> String {
    let dir = dir.display();
    match e {
        SledOpenError::NotFound => {
            format!("there is no vault in {dir} ({named}) to be {role}: nothing was copied")
        }
        SledOpenError::Locked => format!(
            "{dir} ({named}) is in use: a running patgate holds the vault there (sled locks its files while a process has them open). Stop it (`systemctl stop patgate`), then run the copy again; nothing was copied"
        ),
        SledOpenError::Exists => format!(
            "{dir} ({named}) held a vault once (its write watermark is there) but its files are gone: copy into a new directory (--state-dir DIR); nothing was copied"
        ),
        other => format!("{dir} ({named}) cannot be {role}: {other}; nothing was copied"),
    }
}

/// A copy that did not finish, with what to do.
fn copy_refusal(e: CopyError, config: &Config, target: &str) -> String {
    match e {
        CopyError::SourceRotating { .. } => {
            let pending = match &config.master_key {
                MasterKeySource::File(file) => {
                    format!(", with the new key in {}", crate::vault::pending_key_path(file).display())
                }
                MasterKeySource::SystemdCredential => String::new(),
            };
            format!(
                "{e}: finish it first (`{}` resumes it{pending}), then run the copy again; nothing was copied",
                command_for("vault rotate-key", &config.source)
            )
        }
        CopyError::TargetHoldsVault { .. } => format!(
            "{e}. Copy into an empty store: a new database (made with `patgate store migrate`), or for sled a new directory (--state-dir DIR); nothing was written"
        ),
        CopyError::Differs { .. } => format!(
            "{e}. Stop every patgate that uses the source, then run the copy again: it goes on from where it stopped"
        ),
        CopyError::Vault(VaultError::WrongMasterKey { key_version }) => format!(
            "the master key of {} (master_key) does not open the vault to be copied (key version {key_version}): the copy needs the key that vault was made with; nothing was copied",
            config.source.display()
        ),
        CopyError::Vault(e @ VaultError::NotInitialized { .. }) => {
            format!("{e}; nothing was copied")
        }
        CopyError::Vault(e) => format!(
            "the copy stopped: {e}. {target} was not made a vault; once the cause is fixed, run the copy again: it goes on from where it stopped"
        ),
    }
}
