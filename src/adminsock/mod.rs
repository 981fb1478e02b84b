//! What the admin socket answers: how the `patgate` command manages credentials and keys
//! while the service runs (the service holds the vault's lock, so the command cannot open the
//! vault itself then). The socket itself, its permissions and peer checks are
//! [`crate::listener::adminsock`]'s.
//!
//! The protocol is HTTP/1.1 with JSON bodies; refusals are problem+json with the stable codes
//! of the error module. Secrets travel in request bodies only, never in paths. Answers are
//! pretty-printed JSON, the exact text the CLI prints, so its output is the same whether it
//! went through the service or opened the vault itself. Ids in paths are taken byte for
//! byte, never decoded (the command line validates them before it sends).
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/vault/records` | every record's metadata ([`crate::vault::RecordSummary`], compact JSON: the command renders it as `patgate vault list` does without the service) |
//! | `PUT /v1/integrations/{id}/secret` [`SecretBody`] | `{"integration", "credential_kind", "host_login"}` |
//! | `GET`/`PUT`/`DELETE /v1/integrations/{id}/users/{account}/pat` (`PUT`: `{"token": …}`, as `/v1`) | the PAT status (`DELETE`: with `patgate-pat-removed: true\|false`) |
//! | `POST /v1/vault/rotate-key` [`RotateBody`] | [`crate::vault::Rotation`] |

pub mod client;

use std::path::Path;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::api::PatStatus;
use crate::audit::{self, OsUser, Via};
use crate::body::{full, ResponseBody};
use crate::error::AdminError;
use crate::ids::AccountId;
use crate::pat::PatInput;
use crate::runtime::{IntegrationRuntime, Runtime};
use crate::vault::{Credential, MasterKey};

/// The most an admin request body may hold: a credential or a key is far smaller.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An integration secret as the CLI sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// `token`, `username-password`, `aws` or `github-app`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The token, the password, the secret access key, or the GitHub App's private key (PEM).
    pub secret: SecretString,
    pub username: Option<String>,
    pub access_key_id: Option<String>,
    pub session_token: Option<SecretString>,
    /// For `aws`; the integration's region when absent.
    pub region: Option<String>,
    /// For `github-app`.
    pub app_id: Option<u64>,
    /// For `github-app`.
    pub installation_id: Option<u64>,
    /// Store without asking the host whose credential it is.
    #[serde(default)]
    pub no_validate: bool,
}

impl SecretBody {
    /// The credential, or why these fields do not make one (never a value).
    pub fn into_credential(
        self,
        integration: &crate::config::Integration,
    ) -> Result<Credential, String> {
        match self.kind.as_str() {
            "token" => Ok(Credential::Token(self.secret)),
            "username-password" => Ok(Credential::UsernamePassword {
                username: self
                    .username
                    .ok_or("`username` is required with type username-password")?,
                password: self.secret,
            }),
            "aws" => Ok(Credential::Aws {
                access_key_id: self
                    .access_key_id
                    .ok_or("`access_key_id` is required with type aws")?,
                secret_access_key: self.secret,
                session_token: self.session_token,
                region: self
                    .region
                    .or_else(|| integration.codecommit.as_ref().map(|c| c.region.clone()))
                    .ok_or("`region` is required with type aws")?,
            }),
            "github-app" => {
                crate::app_tokens::check_key(&self.secret)
                    .map_err(|e| format!("the GitHub App's private key: {e}"))?;
                Ok(Credential::GithubApp {
                    app_id: self
                        .app_id
                        .ok_or("`app_id` is required with type github-app")?,
                    installation_id: self
                        .installation_id
                        .ok_or("`installation_id` is required with type github-app")?,
                    private_key: self.secret,
                })
            }
            other => Err(format!(
                "unknown credential type `{other}`: use token, username-password, aws or github-app"
            )),
        }
    }
}

/// What `PUT …/secret` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretStored {
    pub integration: String,
    pub credential_kind: String,
    /// Whose credential the host says it is; absent with `no_validate`.
    pub host_login: Option<String>,
}

/// A new master key for `POST /v1/vault/rotate-key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// One line of standard base64, as in a key file.
    pub key: SecretString,
}

/// The header of a `DELETE …/pat` answer that says whether there was a PAT to remove.
pub const REMOVED_HEADER: &str = "patgate-pat-removed";

/// One request from a peer the socket let in.
/// `peer_uid` is the peer's uid (`SO_PEERCRED`): the audit events' actor.
pub async fn handle(
    runtime: &Runtime,
    req: Request<Incoming>,
    peer_uid: u32,
) -> Result<Response<ResponseBody>, AdminError> {
    let via = Via::Cli(OsUser { uid: peer_uid });
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "vault", "records"] => {
            only(&req, &Method::GET, "GET")?;
            // Compact: 20,000 records pretty-printed were 6 MB.
            let records = runtime.vault().list().await?;
            let bytes =
                serde_json::to_vec(&records).map_err(|e| AdminError::Encode(e.to_string()))?;
            Ok(json_response(bytes))
        }
        ["v1", "vault", "rotate-key"] => {
            only(&req, &Method::POST, "POST")?;
            let body: RotateBody = read_json(req).await?;
            rotate_key(runtime, body, via).await
        }
        ["v1", "integrations", id, "secret"] => {
            only(&req, &Method::PUT, "PUT")?;
            let integration = find_integration(runtime, id)?;
            let body: SecretBody = read_json(req).await?;
            let validate = !body.no_validate;
            let credential = body
                .into_credential(integration.config())
                .map_err(AdminError::BadCredential)?;
            let host_login = crate::pat::save_integration_secret(
                integration,
                runtime.vault(),
                &credential,
                validate,
                via,
            )
            .await?;
            json(&SecretStored {
                integration: integration.id().to_string(),
                credential_kind: credential.kind_name().to_string(),
                host_login,
            })
        }
        ["v1", "integrations", id, "users", account, "pat"] => {
            let integration = find_integration(runtime, id)?;
            let account = AccountId::parse(account).map_err(AdminError::BadAccount)?;
            pat(runtime, integration, account.as_str(), req, via).await
        }
        _ => Err(AdminError::NotFound),
    }
}

async fn pat(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    account: &str,
    req: Request<Incoming>,
    via: Via<'_>,
) -> Result<Response<ResponseBody>, AdminError> {
    let id = integration.id();
    let vault = runtime.vault();
    match *req.method() {
        Method::GET => json(&PatStatus::new(
            integration,
            account,
            crate::api::pat_meta(runtime, id, account).await?,
            runtime.clock().unix_now(),
        )),
        Method::PUT => {
            let input: PatInput = read_json(req).await?;
            let credential = input
                .into_credential(integration.config())
                .map_err(AdminError::BadCredential)?;
            let meta =
                crate::api::save_pat(runtime, integration, via, account, &credential).await?;
            json(&PatStatus::new(
                integration,
                account,
                Some(meta),
                runtime.clock().unix_now(),
            ))
        }
        Method::DELETE => {
            let removed = vault.delete_user_pat(id, account).await?;
            if removed {
                audit::pat_removed(via, id, account);
            }
            let mut response = json(&PatStatus::new(
                integration,
                account,
                None,
                runtime.clock().unix_now(),
            ))?;
            response.headers_mut().insert(
                REMOVED_HEADER,
                HeaderValue::from_static(if removed { "true" } else { "false" }),
            );
            Ok(response)
        }
        _ => Err(AdminError::MethodNotAllowed("GET, PUT or DELETE")),
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the new master key's text is parsed into a MasterKey, which then seals the vault"
)]
async fn rotate_key(
    runtime: &Runtime,
    body: RotateBody,
    via: Via<'_>,
) -> Result<Response<ResponseBody>, AdminError> {
    use secrecy::ExposeSecret as _;
    let key = MasterKey::from_base64(
        body.key.expose_secret().as_bytes(),
        Path::new("the rotate-key request"),
    )?;
    let rotation = runtime.vault().rotate_key(key).await?;
    audit::key_rotated(
        via,
        rotation.from_version,
        rotation.to_version,
        rotation.records,
    );
    runtime.metrics().key_rotations.inc();
    json(&rotation)
}

fn find_integration<'r>(
    runtime: &'r Runtime,
    id: &str,
) -> Result<&'r IntegrationRuntime, AdminError> {
    runtime
        .integration(id)
        .ok_or_else(|| AdminError::UnknownIntegration(id.to_string()))
}

fn only(req: &Request<Incoming>, method: &Method, name: &'static str) -> Result<(), AdminError> {
    if req.method() == method {
        Ok(())
    } else {
        Err(AdminError::MethodNotAllowed(name))
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, AdminError> {
    let (parts, body) = req.into_parts();
    let body = zeroize::Zeroizing::new(
        crate::inbound::read_body(&parts, body, BODY_LIMIT)
            .await?
            .to_vec(),
    );
    // serde's message names the field and position, never the value of a secret field
    // (SecretString does not echo what it was given).
    serde_json::from_slice(&body).map_err(|e| AdminError::BadBody(e.to_string()))
}

fn json(value: &impl Serialize) -> Result<Response<ResponseBody>, AdminError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| AdminError::Encode(e.to_string()))?;
    Ok(json_response(bytes))
}

fn json_response(bytes: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
