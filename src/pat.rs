//! Storing a user's personal access token: confirm it with the host first, then write it.
//!
//! Shared by the `/v1` API and `patgate pat set`, so a PAT is never stored without the host
//! having said whose it is.

use http_body_util::{BodyExt, Limited};

use crate::hosts::{HostIdentity, WhoAmIError};
use crate::server::{unix_now, IntegrationRuntime};
use crate::upstream::UpstreamError;
use crate::vault::{Credential, PatMeta, Vault, VaultError};

/// The most of a who-am-I answer patgate reads.
const WHO_AM_I_LIMIT: usize = 256 * 1024;

/// Asks the host whose `credential` this is.
pub async fn who_am_i(
    integration: &IntegrationRuntime,
    credential: &Credential,
) -> Result<HostIdentity, WhoAmIError> {
    let mut request = integration.adapter.who_am_i_request();
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
    let body = Limited::new(body, WHO_AM_I_LIMIT)
        .collect()
        .await
        .map_err(|e| {
            WhoAmIError::Upstream(UpstreamError::Protocol(format!(
                "reading the who-am-I answer: {e}"
            )))
        })?
        .to_bytes();
    integration
        .adapter
        .who_am_i_answer(head.status, &head.headers, &body)
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
