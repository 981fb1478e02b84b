//! Storing a user's personal access token: confirm it with the host first, then write it.
//!
//! Shared by the `/v1` API and `patgate pat set`, so a PAT is never stored without the host
//! having said whose it is.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use secrecy::SecretString;

use crate::config::Integration;
use crate::hosts::{HostIdentity, WhoAmIError};
use crate::server::{unix_now, IntegrationRuntime};
use crate::vault::{Credential, PatMeta, Vault, VaultError};

/// The most of a who-am-I answer patgate reads.
const WHO_AM_I_LIMIT: usize = 256 * 1024;

/// What a user enters as a "PAT": a token, or on CodeCommit their own access key pair (the
/// region is the integration's). The `/v1` PUT body has this shape.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatInput {
    pub token: Option<SecretString>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
}

impl PatInput {
    /// The credential, when the fields form exactly one of `{token}` and
    /// `{access_key_id, secret_access_key[, session_token]}`; the error says which fields
    /// are wrong, never a value.
    pub fn into_credential(self, integration: &Integration) -> Result<Credential, String> {
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

/// Asks the host whose `credential` this is.
pub async fn who_am_i(
    integration: &IntegrationRuntime,
    credential: &Credential,
) -> Result<HostIdentity, WhoAmIError> {
    let request = integration.adapter.who_am_i_request();
    let (status, headers, body) = send(integration, request, credential).await?;
    integration.adapter.who_am_i_answer(status, &headers, &body)
}

/// Asks the host whose integration credential this is. Beyond [`who_am_i`], an integration
/// credential may be one that no user owns (a GitHub App installation token, refused on
/// `/user`): when the host's answer calls for it, the adapter's second request decides.
pub async fn who_am_i_integration(
    integration: &IntegrationRuntime,
    credential: &Credential,
) -> Result<HostIdentity, WhoAmIError> {
    let request = integration.adapter.who_am_i_request();
    let (status, headers, body) = send(integration, request, credential).await?;
    let first = integration.adapter.who_am_i_answer(status, &headers, &body);
    let Some(fallback) = integration
        .adapter
        .integration_who_am_i_fallback(status, &headers)
    else {
        return first;
    };
    let (status, headers, body) = send(integration, fallback, credential).await?;
    integration
        .adapter
        .integration_who_am_i_fallback_answer(status, &headers, &body)
        .map_err(|second| match (first, second) {
            (Err(WhoAmIError::Rejected(a)), WhoAmIError::Rejected(b)) => {
                WhoAmIError::Rejected(format!("{a}; and {b}"))
            }
            (_, second) => second,
        })
}

/// Sends a who-am-I request with `credential` applied; answers status, headers and body.
async fn send(
    integration: &IntegrationRuntime,
    mut request: Request<Bytes>,
    credential: &Credential,
) -> Result<(StatusCode, HeaderMap, Bytes), WhoAmIError> {
    if request.uri().scheme().is_none() {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        *request.uri_mut() = integration.upstream.uri(&path, None).map_err(|e| {
            WhoAmIError::UnexpectedAnswer(format!("cannot build the who-am-I URL: {e}"))
        })?;
    }
    integration
        .adapter
        .apply_credential(&mut request, credential)?;
    let response = integration.upstream.send(request).await?;
    let (head, body) = response.into_parts();
    let body = integration
        .upstream
        .read_to_end(body, WHO_AM_I_LIMIT, "the who-am-I answer")
        .await?;
    Ok((head.status, head.headers, body))
}

/// Why a PAT was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Host(#[from] WhoAmIError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Validates `credential` with the host and, when the host accepts it, stores it for
/// `account`. Returns what was stored. Nothing is written when validation fails.
pub async fn validate_and_store(
    integration: &IntegrationRuntime,
    vault: &Vault,
    account: &str,
    credential: &Credential,
) -> Result<PatMeta, StoreError> {
    integration
        .adapter
        .accepts(credential)
        .map_err(WhoAmIError::from)?;
    let identity = who_am_i(integration, credential).await?;
    let now = unix_now();
    let created_at = vault
        .user_pat_meta(&integration.config.id, account)?
        .map_or(now, |previous| previous.created_at);
    let meta = PatMeta {
        host_login: identity.login,
        scopes: identity.scopes,
        validated_at: now,
        created_at,
        updated_at: now,
        last_used_at: None,
    };
    vault
        .put_user_pat(&integration.config.id, account, credential, &meta)
        .await?;
    Ok(meta)
}
