//! The admin commands' way to a running service (its admin socket, [`crate::adminsock`]),
//! and `patgate vault rotate-key`.
//!
//! Each vault, PAT and integration command first tries the socket named by `admin.socket`.
//! When no service listens there (no socket file, or nothing answers on it) the command opens
//! the vault itself, as it always did. Any other failure is reported and nothing falls back:
//! a service that refuses us still holds the vault.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http::Method;
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use super::{load_config, load_master_key, vault_options, CliResult};
use crate::adminsock::client::{self, AdminClient};
use crate::audit::{self, Via};
use crate::config::{Config, MasterKeySource};
use crate::vault::{Credential, MasterKey, Rotation, Vault, VaultError};

/// The running service's admin socket, or `None` when no service runs. Says on stderr when
/// the command goes through the service.
pub(super) async fn service(config: &Config) -> Result<Option<AdminClient>, String> {
    let client = client::connect(&config.admin.socket)
        .await
        .map_err(|e| e.to_string())?;
    if client.is_some() {
        eprintln!(
            "(via the running service, admin socket {})",
            config.admin.socket.display()
        );
    }
    Ok(client)
}

/// A JSON request body holding secrets, written straight from borrowed fields (no owned
/// copy of a secret is made) into a buffer that is wiped on drop. Sized up front so it never
/// reallocates (which would free an unwiped copy).
fn secret_json(value: &impl serde::Serialize, secret_bytes: usize) -> Zeroizing<Vec<u8>> {
    // A JSON escape is at most six bytes per input byte; the rest is ids and field names.
    let mut buf = Zeroizing::new(Vec::with_capacity(secret_bytes * 6 + 4096));
    // Serializing these plain fields cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
    buf
}

/// The body of `PUT /v1/integrations/{id}/secret` ([`crate::adminsock::SecretBody`]).
#[derive(serde::Serialize)]
struct SecretRequest<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    secret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installation_id: Option<u64>,
    no_validate: bool,
}

/// The body of `PUT …/pat` ([`crate::pat::PatInput`]).
#[derive(serde::Serialize)]
struct PatRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<&'a str>,
}

/// The body of `POST /v1/vault/rotate-key` ([`crate::adminsock::RotateBody`]).
#[derive(serde::Serialize)]
struct RotateRequest<'a> {
    key: &'a str,
}

#[allow(
    clippy::disallowed_methods,
    reason = "the secret is written into the admin request body, its one way to the service"
)]
fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

/// The records for `patgate vault list`, from the service (the command prints them as the
/// direct path does).
pub(super) async fn vault_records(
    client: &mut AdminClient,
) -> Result<Vec<super::list::Summary>, String> {
    client
        .call(Method::GET, "/v1/vault/records", None)
        .await
        .map_err(|e| e.to_string())
}

/// `patgate integration set-secret` through the service. Answers the host login.
pub(super) async fn set_secret(
    client: &mut AdminClient,
    integration: &str,
    credential: &Credential,
    no_validate: bool,
) -> Result<Option<String>, String> {
    let (mut app_id, mut installation_id) = (None, None);
    let (kind, secret, username, access_key_id, session_token, region) = match credential {
        Credential::Token(token) => ("token", token, None, None, None, None),
        Credential::GithubApp {
            app_id: app,
            installation_id: installation,
            private_key,
        } => {
            (app_id, installation_id) = (Some(*app), Some(*installation));
            ("github-app", private_key, None, None, None, None)
        }
        Credential::UsernamePassword { username, password } => (
            "username-password",
            password,
            Some(username.as_str()),
            None,
            None,
            None,
        ),
        Credential::Aws {
            access_key_id,
            secret_access_key,
            session_token,
            region,
        } => (
            "aws",
            secret_access_key,
            None,
            Some(access_key_id.as_str()),
            session_token.as_ref(),
            Some(region.as_str()),
        ),
    };
    let secret = expose(secret);
    let session_token = session_token.map(expose);
    let size = secret.len() + session_token.map_or(0, str::len);
    let body = secret_json(
        &SecretRequest {
            kind,
            secret,
            username,
            access_key_id,
            session_token,
            region,
            app_id,
            installation_id,
            no_validate,
        },
        size,
    );
    let stored: crate::adminsock::SecretStored = client
        .call(
            Method::PUT,
            &format!("/v1/integrations/{}/secret", client::segment(integration)),
            Some(body),
        )
        .await
        .map_err(|e| format!("not stored: {e}"))?;
    Ok(stored.host_login)
}

/// `patgate pat set|status|delete` through the service: prints the PAT status as the direct
/// path does.
pub(super) async fn pat(
    client: &mut AdminClient,
    action: &str,
    integration: &str,
    account: &str,
    input: Option<crate::pat::PatInput>,
) -> CliResult {
    let path = format!(
        "/v1/integrations/{}/users/{}/pat",
        client::segment(integration),
        client::segment(account)
    );
    let (method, body) = match (action, input) {
        ("set", Some(input)) => {
            let (token, secret_access_key, session_token) = (
                input.token.as_ref().map(expose),
                input.secret_access_key.as_ref().map(expose),
                input.session_token.as_ref().map(expose),
            );
            let size = [token, secret_access_key, session_token]
                .iter()
                .map(|s| s.map_or(0, str::len))
                .sum();
            let body = secret_json(
                &PatRequest {
                    token,
                    access_key_id: input.access_key_id.as_deref(),
                    secret_access_key,
                    session_token,
                },
                size,
            );
            (Method::PUT, Some(body))
        }
        ("delete", _) => (Method::DELETE, None),
        _ => (Method::GET, None),
    };
    let (headers, body) = client
        .call_raw(method, &path, body)
        .await
        .map_err(|e| match action {
            "set" => format!("not stored: {e}"),
            _ => e.to_string(),
        })?;
    if headers
        .get(crate::adminsock::REMOVED_HEADER)
        .is_some_and(|v| v == "false")
    {
        eprintln!("there was no PAT for this user");
    }
    outln!("{}", String::from_utf8_lossy(&body));
    Ok(ExitCode::SUCCESS)
}

/// Where a rotation keeps the new key until the vault and the key's source use it:
/// `<master_key.file>.new`, or with a systemd credential `state_dir/master-key.new`.
pub(super) fn pending_key_path(config: &Config) -> PathBuf {
    crate::vault::pending_key_for(&config.master_key, &config.state_dir)
}

/// `open` failed with the configured key in a way an unfinished rotation explains (the
/// vault is mid-rotation, or already at the new key): tries the pending new key, and with a
/// key file puts it in place. `db`: the vault is in that database (`[store] kind =
/// "postgres"`; a replica restarted after another replica's rotation, before its reload
/// installed the staged key), else in the sled files of `state_dir`. Answers the vault and
/// the key that opened it.
pub(super) async fn open_with_pending_key(
    config: &Config,
    db: Option<&crate::store::Postgres>,
    err: VaultError,
) -> Result<(Vault, MasterKey), String> {
    let pending = pending_key_path(config);
    if !pending.exists() {
        return Err(err.to_string());
    }
    let key = MasterKey::load_file(&pending).map_err(|e| format!("{err}; and {e}"))?;
    let opened = match db {
        Some(db) => Vault::open_in(Box::new(db.records()), &key).await,
        None => Vault::open_with(&config.state_dir, &key, &vault_options(config)).await,
    };
    let vault = opened.map_err(|e| {
        format!(
            "{err}; the key left by a rotation in {} does not open it either: {e}",
            pending.display()
        )
    })?;
    match &config.master_key {
        MasterKeySource::File(file) => {
            crate::vault::install_pending_key(&pending, file).map_err(|e| e.to_string())?;
            if db.is_some() {
                eprintln!(
                    "patgate: the vault is at master key version {}, whose key was staged in {}: {} now holds it (another replica rotated, or a rotation was interrupted)",
                    vault.key_version(),
                    pending.display(),
                    file.display()
                );
            } else {
                eprintln!(
                    "patgate: finished an interrupted master key rotation: {} now holds the key of version {}",
                    file.display(),
                    vault.key_version()
                );
            }
        }
        MasterKeySource::SystemdCredential => eprintln!(
            "patgate: the vault is at key version {} and opened with {}: point the systemd credential `master-key` at that key (see README, Rotating the master key)",
            vault.key_version(),
            pending.display()
        ),
    }
    Ok((vault, key))
}

/// How a rotation ended.
enum Rotated {
    Now(Rotation),
    /// An earlier attempt had got past its marker; opening with its new key finished it.
    Earlier {
        to_version: u32,
    },
}

/// `patgate vault rotate-key`: a new master key, every record re-encrypted under it, by the
/// running service or (when none runs) here. With `stage`, only the new key file is made
/// (or the one there kept), for the admin to copy to the other replicas first.
pub(super) async fn rotate_key(config_path: &Path, stage: bool) -> CliResult {
    let config = load_config(config_path)?;
    // Without the service, this command writes the `key-rotated` audit event itself.
    crate::telemetry::init_for_command(&config.log)?;
    let pending = pending_key_path(&config);
    let new_key = if pending.exists() {
        eprintln!(
            "{} is there (staged, or left from a rotation that did not finish); {} the key it holds",
            pending.display(),
            if stage { "keeping" } else { "rotating to" }
        );
        MasterKey::load_file(&pending).map_err(|e| e.to_string())?
    } else {
        let key = MasterKey::generate();
        // Durable (0600, fsynced) before the vault depends on it.
        key.write_new(&pending).map_err(|e| e.to_string())?;
        let like = match &config.master_key {
            MasterKeySource::File(file) => file.as_path(),
            MasterKeySource::SystemdCredential => config.state_dir.as_path(),
        };
        crate::vault::match_owner(&pending, like).map_err(|e| e.to_string())?;
        key
    };
    if stage {
        drop(new_key);
        outln!(
            "the new master key is in {pending}. Copy it to the same path on every other replica \
             (mode 0600, owned like the key file there), then run `patgate vault rotate-key` here: \
             the other replicas take it from that file by themselves.",
            pending = pending.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rotated = match service(&config).await? {
        Some(mut client) => {
            let line = new_key.to_base64();
            let body = secret_json(&RotateRequest { key: line.as_str() }, line.len());
            Rotated::Now(
                client
                    .call(Method::POST, "/v1/vault/rotate-key", Some(body))
                    .await
                    .map_err(|e| format!("the key was not rotated: {e}"))?,
            )
        }
        None => rotate_here(&config, new_key).await?,
    };
    let to_version = match &rotated {
        Rotated::Now(r) => {
            outln!(
                "rotated the master key from version {} to {}: {} record(s) re-encrypted{}",
                r.from_version,
                r.to_version,
                r.records,
                if r.resumed {
                    " (an unfinished rotation, finished)"
                } else {
                    ""
                }
            );
            r.to_version
        }
        Rotated::Earlier { to_version } => {
            outln!(
                "finished an interrupted rotation: the vault is at master key version {to_version}"
            );
            *to_version
        }
    };
    match &config.master_key {
        MasterKeySource::File(file) => {
            crate::vault::install_pending_key(&pending, file).map_err(|e| e.to_string())?;
            outln!(
                "{} now holds the new key (version {to_version}); the old key no longer opens the vault. Back the new key up.",
                file.display()
            );
        }
        MasterKeySource::SystemdCredential => outln!(
            "the new key (version {to_version}) is in {pending}. Replace the file your unit's LoadCredential=master-key:<file> names with it now \
             (e.g. `install -m 0600 {pending} <file>`), then delete {pending}. Until then patgate finds it there by itself at start.",
            pending = pending.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The rotation on the vault itself, when no service runs.
async fn rotate_here(config: &Config, new_key: MasterKey) -> Result<Rotated, String> {
    let key = load_master_key(&config.master_key)?;
    match Vault::open_with(&config.state_dir, &key, &vault_options(config)).await {
        Ok(vault) => {
            let rotation = vault
                .rotate_key(new_key)
                .await
                .map_err(|e| format!("the key was not rotated: {e}"))?;
            audit::key_rotated(
                Via::Cli(audit::OsUser::current()),
                rotation.from_version,
                rotation.to_version,
                rotation.records,
            );
            Ok(Rotated::Now(rotation))
        }
        Err(err @ (VaultError::RotationInterrupted { .. } | VaultError::WrongMasterKey { .. })) => {
            // Opening with the new key finishes a rotation that got past its marker.
            let vault = Vault::open_with(&config.state_dir, &new_key, &vault_options(config))
                .await
                .map_err(|e| format!("{err}; and the new key in the pending file: {e}"))?;
            Ok(Rotated::Earlier {
                to_version: vault.key_version(),
            })
        }
        Err(err @ VaultError::Locked { .. }) => Err(format!(
            "{err}, but nothing answers on its admin socket {}: is admin.socket the same in the service's config?",
            config.admin.socket.display()
        )),
        Err(err) => Err(err.to_string()),
    }
}
