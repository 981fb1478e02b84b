//! Storing a user's personal access token: confirm it with the host first, then write it.
//!
//! Shared by the `/v1` API and `patgate pat set`, so a PAT is never stored without the host
//! having said whose it is.

use secrecy::SecretString;

use crate::app_tokens::{self, AppTokenError};
use crate::clock::Clock;
use crate::config::Integration;
use crate::host_calls::{self, HostCallError};
use crate::hosts::HostIdentity;
use crate::runtime::IntegrationRuntime;
use crate::vault::{Credential, PatMeta, Vault, VaultError};

/// What a user enters as a "PAT": a token, or on CodeCommit their own access key pair (the
/// region is the integration's). The `/v1` PUT body has this shape.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatInput {
    pub token: Option<SecretString>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
}

impl PatInput {
    /// The credential, when the fields form exactly one of `{token}` and
    /// `{access_key_id, secret_access_key[, session_token]}`; the error says which fields
    /// are wrong, never a value.
    pub(crate) fn into_credential(self, integration: &Integration) -> Result<Credential, String> {
        match self {
            PatInput {
                token: Some(token),
                access_key_id: None,
                secret_access_key: None,
                session_token: None,
            } => Ok(Credential::Token(token)),
            PatInput {
                token: None,
                access_key_id: Some(access_key_id),
                secret_access_key: Some(secret_access_key),
                session_token,
            } => {
                let region = integration
                    .codecommit
                    .as_ref()
                    .map(|c| c.region.clone())
                    .ok_or_else(|| {
                        format!(
                            "integration `{}` is a {} host: send {{\"token\": \"…\"}}",
                            integration.id,
                            integration.kind.as_str()
                        )
                    })?;
                Ok(Credential::Aws {
                    access_key_id,
                    secret_access_key,
                    session_token,
                    region,
                })
            }
            _ => Err("send either {\"token\": \"…\"} or {\"access_key_id\": \"…\", \"secret_access_key\": \"…\"} (with an optional \"session_token\")".into()),
        }
    }
}

/// Why a PAT was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Host(#[from] HostCallError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The integration's host has no personal access tokens at all (TFS 2013 and 2015).
    #[error(
        "{host} has no personal access tokens (they came with TFS 2017), so no PAT can be stored for integration `{integration}`; its users' requests use the integration's own credential"
    )]
    HostHasNoPats { integration: String, host: String },
    /// A GitHub App that could not be confirmed.
    #[error(transparent)]
    App(#[from] AppTokenError),
}

/// Asks the host whose integration credential `credential` is (see
/// [`host_calls::who_am_i_integration`]); for a GitHub App, which App and installation it is
/// ([`app_tokens::identify`]).
pub(crate) async fn who_am_i_integration(
    integration: &IntegrationRuntime,
    credential: &Credential,
) -> Result<HostIdentity, SaveError> {
    if let Some(app) = app_tokens::App::of(credential) {
        return Ok(app_tokens::identify(&integration.app_target(), &app).await?);
    }
    Ok(
        host_calls::who_am_i_integration(integration.adapter(), integration.upstream(), credential)
            .await?,
    )
}

/// Validates `credential` with the host and, when the host accepts it, stores it for
/// `account`. Returns what was stored. Nothing is written when validation fails.
pub(crate) async fn validate_and_store(
    integration: &IntegrationRuntime,
    vault: &Vault,
    clock: &Clock,
    account: &str,
    credential: &Credential,
) -> Result<PatMeta, SaveError> {
    if !integration.adapter().supports_pats() {
        return Err(SaveError::HostHasNoPats {
            integration: integration.id().to_string(),
            host: match integration.config().tfs_version {
                Some(crate::config::TfsVersion::Release(release)) => release.to_string(),
                _ => "this TFS server (its release is not detected yet)".to_string(),
            },
        });
    }
    integration
        .adapter()
        .accepts(credential)
        .map_err(HostCallError::from)?;
    let (identity, expires_at) =
        host_calls::who_am_i_pat(integration.adapter(), integration.upstream(), credential).await?;
    let now = clock.unix_now();
    let created_at = vault
        .user_pat_meta(integration.id(), account)
        .await?
        .map_or(now, |previous| previous.created_at);
    let meta = PatMeta {
        host_login: identity.login,
        scopes: identity.scopes,
        validated_at: now,
        created_at,
        updated_at: now,
        last_used_at: None,
        refused: None,
        expires_at,
    };
    vault
        .put_user_pat(integration.id(), account, credential, &meta)
        .await?;
    Ok(meta)
}

/// Validates an integration secret with the host (unless `validate` is off) and stores it.
/// For the admin socket (`via` names its peer). Answers the host login.
pub(crate) async fn save_integration_secret(
    integration: &IntegrationRuntime,
    vault: &Vault,
    credential: &Credential,
    validate: bool,
    via: crate::audit::Via<'_>,
) -> Result<Option<String>, SaveError> {
    integration
        .adapter()
        .accepts(credential)
        .map_err(HostCallError::from)?;
    // Asked before anything is written, so a refused credential leaves the vault as it was.
    let host_login = if validate {
        Some(who_am_i_integration(integration, credential).await?.login)
    } else {
        None
    };
    vault
        .put_integration_secret(integration.id(), credential)
        .await?;
    crate::audit::integration_secret_changed(via, integration.id());
    Ok(host_login)
}
