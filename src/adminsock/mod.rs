//! The admin socket: how the `patgate` command manages credentials and keys while the
//! service runs (the service holds the vault's lock, so the command cannot open the vault
//! itself then).
//!
//! A Unix domain socket at `admin.socket` (default `state_dir/admin.sock`):
//! - mode 0600, owned by the service user, from the moment its path exists: it is bound in a
//!   private (0700) directory, given its mode there, then renamed into place;
//! - every connection's peer is checked with `SO_PEERCRED`: only the service's own uid and
//!   root may talk, whatever the file's mode later becomes;
//! - a stale socket left by a crash is removed at start when nothing answers on it; when a
//!   live service answers, start is refused;
//! - removed at shutdown.
//!
//! The protocol is HTTP/1.1 with JSON bodies; refusals are problem+json with the stable codes
//! of [`crate::error`]. Secrets travel in request bodies only, never in paths. Answers are
//! pretty-printed JSON, the exact text the CLI prints, so its output is the same whether it
//! went through the service or opened the vault itself.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/vault/records` | every record's metadata, as `patgate vault list` prints it |
//! | `PUT /v1/integrations/{id}/secret` [`SecretBody`] | `{"integration", "credential_kind", "host_login"}` |
//! | `GET`/`PUT`/`DELETE /v1/integrations/{id}/users/{account}/pat` (`PUT`: [`crate::pat::PatInput`]) | the PAT status (`DELETE`: with `patgate-pat-removed: true\|false`) |
//! | `POST /v1/vault/rotate-key` [`RotateBody`] | [`crate::vault::Rotation`] |

pub mod client;

use std::fs;
use std::future::Future;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand_core::{OsRng, RngCore as _};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};

use crate::audit::{self, Via};
use crate::body::{full, ResponseBody};
use crate::error::{ErrorCode, Problem};
use crate::metrics::Metrics;
use crate::server::{IntegrationRuntime, Runtime};
use crate::vault::{Credential, MasterKey, Vault, VaultError};

/// The most an admin request body may hold: a credential or a key is far smaller.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    #[error(
        "another patgate answers on the admin socket {path}: it is serving (two services on one \
         vault are refused by the vault's lock; this one has another state directory but the \
         same admin.socket, so give each its own)",
        path = .path.display()
    )]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it with the admin socket", path = .path.display())]
    NotASocket { path: PathBuf },
    #[error("admin socket: cannot {action} {path}: {source}", path = .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> AdminSocketError + 'p {
    move |source| AdminSocketError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The bound admin socket. Dropping it removes the socket file (when it is still ours).
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The service's uid: the owner of the socket file it made.
    service_uid: u32,
    /// The file's identity, so a socket that replaced ours is never removed.
    dev_ino: (u64, u64),
}

impl AdminSocket {
    /// Binds the socket at `path` (see the module docs for how it is made private).
    pub async fn bind(path: &Path) -> Result<AdminSocket, AdminSocketError> {
        remove_stale(path).await?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io("create", parent))?;
        }
        // A private directory next to the final path (same file system, so the rename below
        // is atomic); nobody but us can reach a socket inside it while its mode is set.
        let private = parent.join(format!(".patgate-admin-{:016x}", OsRng.next_u64()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io("create", &private))?;
        let bound = Self::bind_in(&private, path);
        let _ = fs::remove_dir(&private);
        let listener = bound?;
        let meta = fs::metadata(path).map_err(io("read", path))?;
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
            service_uid: meta.uid(),
            dev_ino: (meta.dev(), meta.ino()),
        })
    }

    fn bind_in(private: &Path, path: &Path) -> Result<UnixListener, AdminSocketError> {
        let temp = private.join("admin.sock");
        let listener = UnixListener::bind(&temp).map_err(io("bind", &temp))?;
        let placed = fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
            .map_err(io("set the mode of", &temp))
            .and_then(|()| fs::rename(&temp, path).map_err(io("move the socket to", path)));
        if placed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        placed.map(|()| listener)
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.dev_ino)
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file nobody answers on; refuses when a service answers.
async fn remove_stale(path: &Path) -> Result<(), AdminSocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(AdminSocketError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(AdminSocketError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale admin socket (nothing answers on it)");
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io("remove the stale socket", path)(e))
                }
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("connect to the existing socket", path)(e)),
    }
}

/// Whether a peer may use the admin socket: the service's own user, or root.
pub fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == service_uid
}

/// What the admin socket works on. The vault and metrics live for the process; the runtime
/// (integrations, pending PAT uses) is fetched per request, so a reload that replaces it is
/// seen at once.
#[derive(Clone)]
pub struct AdminContext {
    pub vault: Arc<Vault>,
    pub metrics: Arc<Metrics>,
    pub runtime: Arc<dyn Fn() -> Arc<Runtime> + Send + Sync>,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext").finish_non_exhaustive()
    }
}

impl AdminContext {
    /// The context of a runtime that is never replaced.
    pub fn fixed(runtime: Arc<Runtime>) -> AdminContext {
        AdminContext {
            vault: runtime.vault.clone(),
            metrics: runtime.metrics.clone(),
            runtime: Arc::new(move || runtime.clone()),
        }
    }
}

/// Serves the admin socket until `stop` completes, then removes the socket file.
pub async fn serve(socket: AdminSocket, ctx: AdminContext, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let peer_uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(err) => {
                tracing::warn!(error = %err, "admin socket: cannot read the peer's credentials; closing");
                continue;
            }
        };
        let allowed = peer_allowed(peer_uid, socket.service_uid);
        if !allowed {
            tracing::warn!(
                peer_uid,
                service_uid = socket.service_uid,
                "admin socket: refused a peer that is neither the service user nor root"
            );
        }
        let ctx = ctx.clone();
        let service_uid = socket.service_uid;
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move {
                    let answer = if allowed {
                        handle(&ctx, req).await
                    } else {
                        Err(Problem::new(
                            ErrorCode::ClientNotAllowed,
                            format!("uid {peer_uid} may not use the admin socket: only the service user (uid {service_uid}) and root may"),
                        ))
                    };
                    Ok::<_, std::convert::Infallible>(
                        answer.unwrap_or_else(|problem| problem.into_response(None)),
                    )
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(BODY_LIMIT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
    drop(socket);
}

/// An integration secret as the CLI sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// `token`, `username-password` or `aws`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The token, the password, or the secret access key.
    pub secret: SecretString,
    pub username: Option<String>,
    pub access_key_id: Option<String>,
    pub session_token: Option<SecretString>,
    /// For `aws`; the integration's region when absent.
    pub region: Option<String>,
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
            other => Err(format!(
                "unknown credential type `{other}`: use token, username-password or aws"
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

/// Validates an integration secret with the host (unless `validate` is off) and stores it.
/// Shared by the admin socket and the CLI's direct path. Answers the host login.
pub async fn store_integration_secret(
    integration: &IntegrationRuntime,
    vault: &Vault,
    credential: &Credential,
    validate: bool,
) -> Result<Option<String>, Problem> {
    integration
        .adapter
        .accepts(credential)
        .map_err(|e| Problem::new(ErrorCode::BadRequest, e.to_string()))?;
    // Asked before anything is written, so a refused credential leaves the vault as it was.
    let host_login = if validate {
        Some(
            crate::pat::who_am_i_integration(integration, credential)
                .await?
                .login,
        )
    } else {
        None
    };
    vault
        .put_integration_secret(&integration.config.id, credential)
        .await
        .map_err(vault_problem)?;
    audit::integration_secret_changed(Via::Cli, &integration.config.id);
    Ok(host_login)
}

/// A vault error as the admin sees it: the whole message (the admin socket is the service
/// user's own channel; vault errors never carry a secret).
pub fn vault_problem(err: VaultError) -> Problem {
    let code = match err {
        VaultError::InvalidId { .. }
        | VaultError::SameKey
        | VaultError::RotationInProgress { .. }
        | VaultError::MasterKeyInvalid { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::Unavailable,
    };
    Problem::new(code, err.to_string())
}

async fn handle(
    ctx: &AdminContext,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Problem> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "vault", "records"] => {
            only(&req, &Method::GET)?;
            json(&ctx.vault.list().map_err(vault_problem)?)
        }
        ["v1", "vault", "rotate-key"] => {
            only(&req, &Method::POST)?;
            let body: RotateBody = read_json(req).await?;
            rotate_key(ctx, body).await
        }
        ["v1", "integrations", id, "secret"] => {
            only(&req, &Method::PUT)?;
            let runtime = (ctx.runtime)();
            let integration = find_integration(&runtime, id)?;
            let body: SecretBody = read_json(req).await?;
            let validate = !body.no_validate;
            let credential = body
                .into_credential(&integration.config)
                .map_err(|why| Problem::new(ErrorCode::BadRequest, why))?;
            let host_login =
                store_integration_secret(integration, &ctx.vault, &credential, validate).await?;
            json(&SecretStored {
                integration: integration.config.id.clone(),
                credential_kind: credential.kind_name().to_string(),
                host_login,
            })
        }
        ["v1", "integrations", id, "users", account, "pat"] => {
            let runtime = (ctx.runtime)();
            let integration = find_integration(&runtime, id)?;
            let account = decode(account)
                .filter(|a| crate::proxy::is_valid_account_id(a))
                .ok_or_else(|| {
                    Problem::new(ErrorCode::BadRequest, "the account is not an Atlassian accountId")
                })?;
            pat(ctx, &runtime, integration, &account, req).await
        }
        _ => Err(Problem::new(
            ErrorCode::NotFound,
            "the admin socket serves /v1/vault/records, /v1/vault/rotate-key, /v1/integrations/{id}/secret and /v1/integrations/{id}/users/{account}/pat",
        )),
    }
}

async fn pat(
    ctx: &AdminContext,
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    account: &str,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Problem> {
    let id = integration.config.id.as_str();
    match *req.method() {
        Method::GET => {
            let mut meta = ctx
                .vault
                .user_pat_meta(id, account)
                .map_err(vault_problem)?;
            if let (Some(meta), Some(pending)) =
                (meta.as_mut(), runtime.pat_uses.pending(id, account))
            {
                meta.last_used_at = meta.last_used_at.max(Some(pending));
            }
            json(&crate::api::PatStatus::new(integration, account, meta))
        }
        Method::PUT => {
            let input: crate::pat::PatInput = read_json(req).await?;
            let credential = input
                .into_credential(&integration.config)
                .map_err(|why| Problem::new(ErrorCode::BadRequest, why))?;
            let meta =
                crate::pat::validate_and_store(integration, &ctx.vault, account, &credential)
                    .await
                    .map_err(|e| match e {
                        crate::pat::StoreError::Vault(v) => vault_problem(v),
                        host => {
                            let problem = Problem::from(host);
                            audit::pat_refused(Via::Cli, id, account, problem.code.as_str());
                            problem
                        }
                    })?;
            audit::pat_stored(Via::Cli, id, account, &meta.host_login);
            json(&crate::api::PatStatus::new(
                integration,
                account,
                Some(meta),
            ))
        }
        Method::DELETE => {
            let removed = ctx
                .vault
                .delete_user_pat(id, account)
                .await
                .map_err(vault_problem)?;
            if removed {
                audit::pat_removed(Via::Cli, id, account);
            }
            let mut response = json(&crate::api::PatStatus::new(integration, account, None))?;
            response.headers_mut().insert(
                REMOVED_HEADER,
                HeaderValue::from_static(if removed { "true" } else { "false" }),
            );
            Ok(response)
        }
        _ => Err(Problem::new(
            ErrorCode::MethodNotAllowed,
            "use GET, PUT or DELETE",
        )),
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the new master key's text is parsed into a MasterKey, which then seals the vault"
)]
async fn rotate_key(
    ctx: &AdminContext,
    body: RotateBody,
) -> Result<Response<ResponseBody>, Problem> {
    use secrecy::ExposeSecret as _;
    let key = MasterKey::from_base64(
        body.key.expose_secret().as_bytes(),
        Path::new("the rotate-key request"),
    )
    .map_err(vault_problem)?;
    let rotation = ctx.vault.rotate_key(key).await.map_err(vault_problem)?;
    audit::key_rotated(
        Via::Cli,
        rotation.from_version,
        rotation.to_version,
        rotation.records,
    );
    ctx.metrics.key_rotations.inc();
    json(&rotation)
}

fn find_integration<'r>(runtime: &'r Runtime, id: &str) -> Result<&'r IntegrationRuntime, Problem> {
    let id = decode(id).unwrap_or_default();
    runtime.integrations.get(&id).ok_or_else(|| {
        Problem::new(
            ErrorCode::UnknownIntegration,
            format!("the running service has no integration `{id}`"),
        )
    })
}

fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn only(req: &Request<Incoming>, method: &Method) -> Result<(), Problem> {
    if req.method() == method {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::MethodNotAllowed,
            format!("use {method}"),
        ))
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Problem> {
    let (parts, body) = req.into_parts();
    let body = zeroize::Zeroizing::new(
        crate::proxy::read_body(parts.headers.get(CONTENT_LENGTH), body, BODY_LIMIT)
            .await?
            .to_vec(),
    );
    // serde's message names the field and position, never the value of a secret field
    // (SecretString does not echo what it was given).
    serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            ErrorCode::BadRequest,
            format!("the request body is not what this request takes: {e}"),
        )
    })
}

fn json(value: &impl Serialize) -> Result<Response<ResponseBody>, Problem> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Problem::new(ErrorCode::Internal, e.to_string()))?;
    let mut response = Response::new(full(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_service_user_and_root_are_allowed() {
        assert!(peer_allowed(0, 998));
        assert!(peer_allowed(998, 998));
        assert!(!peer_allowed(1000, 998));
        assert!(!peer_allowed(65534, 998));
        // Running as root, root is the service user.
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1, 0));
    }
}
