//! patgate's own API for the Jira app, under `/v1` on the api listener (same caller
//! authentication as the proxy):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/integrations/{id}/users/{account}/pat` | the PAT status |
//! | `PUT /v1/integrations/{id}/users/{account}/pat` `{"token": "…"}` (CodeCommit: `{"access_key_id": "…", "secret_access_key": "…", "session_token"?: "…"}`) | validates with the host, stores, answers the status |
//! | `DELETE /v1/integrations/{id}/users/{account}/pat` | removes it, answers the status |
//! | `POST /v1/integrations/{id}/users/{account}/connect-link` | a one-time link to the connect page: `{"url", "expires_at"}` (404 `not-found` without `[connect]`) |
//!
//! The account in the path is taken byte for byte: a percent-encoded one is refused, never
//! decoded (the same validator as `Patgate-Account`, the admin socket and the command line).

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde::Serialize;

use crate::audit;
use crate::authn::{AuthError, Caller, ForgeError};
use crate::body::{full, ResponseBody};
use crate::error::{Problem, RequestError};
use crate::ids::{AccountId, InvalidId};
use crate::inbound;
use crate::pat::{PatInput, SaveError};
use crate::pipeline::Summary;
use crate::ratelimit;
use crate::runtime::{IntegrationRuntime, Runtime};
use crate::vault::{PatMeta, VaultError};

/// The most a `/v1` request body may hold.
const API_BODY_LIMIT: usize = 64 * 1024;

/// The status of one user's PAT for one integration.
#[derive(Debug, Serialize)]
pub(crate) struct PatStatus {
    pub integration: String,
    pub account: String,
    pub configured: bool,
    pub host_login: Option<String>,
    pub scopes_or_permissions: Vec<String>,
    pub validated_at: Option<String>,
    pub last_used_at: Option<String>,
    /// When the host says the PAT expires; `null` when it does not say (or never).
    pub expires_at: Option<String>,
    /// It expires within the integration's `pat_expiry_warning_days`, or has expired.
    pub expires_soon: bool,
    /// The host refused the PAT on an action since it was stored (expired or revoked); the
    /// user should enter a new one. Cleared by the next action the host accepts.
    pub refused: Option<RefusedStatus>,
    pub require_user_pat: bool,
    /// False on TFS 2013/2015: that host has no personal access tokens at all.
    pub host_supports_pats: bool,
    /// A plain sentence when the host has no PATs, for the app to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// `refused` in [`PatStatus`].
#[derive(Debug, Serialize)]
pub(crate) struct RefusedStatus {
    pub at: String,
    pub host_status: u16,
}

impl PatStatus {
    /// `now` in Unix seconds, for `expires_soon`.
    pub(crate) fn new(
        integration: &IntegrationRuntime,
        account: &str,
        meta: Option<PatMeta>,
        now: u64,
    ) -> PatStatus {
        use crate::clock::rfc3339;
        let supports_pats = integration.adapter().supports_pats();
        PatStatus {
            integration: integration.id().to_string(),
            account: account.to_string(),
            configured: meta.is_some(),
            host_login: meta.as_ref().map(|m| m.host_login.clone()),
            scopes_or_permissions: meta.as_ref().map(|m| m.scopes.clone()).unwrap_or_default(),
            validated_at: meta.as_ref().map(|m| rfc3339(m.validated_at)),
            last_used_at: meta.as_ref().and_then(|m| m.last_used_at).map(rfc3339),
            expires_at: meta.as_ref().and_then(|m| m.expires_at).map(rfc3339),
            expires_soon: meta.as_ref().and_then(|m| m.expires_at).is_some_and(|at| {
                at <= now.saturating_add(integration.config().pat_expiry_warning.as_secs())
            }),
            refused: meta.as_ref().and_then(|m| m.refused).map(|r| RefusedStatus {
                at: rfc3339(r.at),
                host_status: r.host_status,
            }),
            require_user_pat: integration.config().require_user_pat,
            host_supports_pats: supports_pats,
            note: (!supports_pats).then_some(
                "This host (TFS 2013/2015) does not support personal access tokens; with Require User PAT on, actions are refused.",
            ),
        }
    }
}

/// A user's PAT metadata with a use not yet written to the vault (they are written in
/// batches) taken as the newer last use.
pub(crate) async fn pat_meta(
    runtime: &Runtime,
    integration: &str,
    account: &str,
) -> Result<Option<PatMeta>, VaultError> {
    let mut meta = runtime.vault().user_pat_meta(integration, account).await?;
    if let (Some(meta), Some(pending)) = (
        meta.as_mut(),
        runtime.pat_uses().pending(integration, account),
    ) {
        meta.last_used_at = meta.last_used_at.max(Some(pending));
    }
    Ok(meta)
}

/// Stores a user's PAT the way every channel does (the `/v1` API, the connect page, the admin
/// socket): the host says whose it is, the vault stores it, and the audit stream records
/// either the store or, when the host refused the token, the refusal with its problem code.
pub(crate) async fn save_pat(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    via: audit::Via<'_>,
    account: &str,
    credential: &crate::vault::Credential,
) -> Result<PatMeta, SaveError> {
    let id = integration.id();
    let saved = crate::pat::validate_and_store(
        integration,
        runtime.vault(),
        runtime.clock(),
        account,
        credential,
    )
    .await;
    match &saved {
        Ok(meta) => audit::pat_stored(via, id, account, &meta.host_login),
        Err(err @ (SaveError::Host(_) | SaveError::HostHasNoPats { .. })) => {
            audit::pat_refused(via, id, account, Problem::of(err).code.as_str())
        }
        Err(SaveError::Vault(_) | SaveError::App(_)) => {}
    }
    saved
}

/// One `/v1` request from a verified caller.
pub(crate) async fn handle(
    runtime: &Runtime,
    caller: &Caller,
    req: Request<Incoming>,
    request_id: &str,
    summary: &mut Summary,
) -> Result<Response<ResponseBody>, RequestError> {
    summary.api = true;
    let path = req.uri().path().to_string();
    // `/v1/integrations/{id}/…`: named in metrics only when it is configured.
    if let Some(id) = path
        .strip_prefix("/v1/integrations/")
        .and_then(|rest| rest.split('/').next())
    {
        summary.integration = runtime.integration_entry(id).map(|(id, _)| id.to_string());
    }
    let Route {
        integration: id,
        account,
        resource,
    } = route(&path)?;
    let integration = runtime
        .integration(id)
        .ok_or_else(|| RequestError::UnknownIntegration(id.to_string()))?;
    let account = account.map_err(RequestError::PathAccount)?;
    // A Forge caller acts for the user its token names, and for no other; a system call
    // (no principal) has no user here.
    if caller.method.is_forge() && caller.principal.as_ref() != Some(&account) {
        return Err(AuthError::Forge(ForgeError::AccountMismatch(
            "a Forge call reaches /v1/…/users/{account} only for the token's principal".into(),
        ))
        .into());
    }
    // The same quotas as the proxy: a status lookup is a read, anything else an action.
    runtime.limits().check(
        &ratelimit::Subject {
            client: &caller.client,
            integration: integration.id(),
            account: Some(account.as_str()),
            class: if req.method() == Method::GET {
                ratelimit::Class::Reads
            } else {
                ratelimit::Class::Actions
            },
            request_id,
        },
        runtime.metrics(),
    )?;
    let vault = runtime.vault();
    let id = integration.id();
    let account = account.as_str();
    resource.allows(req.method())?;
    if resource == Resource::ConnectLink {
        let links = runtime.links().ok_or(RequestError::NoConnectPage)?;
        let link = links.issue(id, account, runtime.clock().unix_now());
        audit::connect_link_issued(
            caller,
            audit::LinkIssuedIn::ConnectLinkRequest,
            id,
            account,
            &link.expires_at,
        );
        return json(&link);
    }
    match *req.method() {
        Method::GET => json(&PatStatus::new(
            integration,
            account,
            pat_meta(runtime, id, account).await?,
            runtime.clock().unix_now(),
        )),
        Method::PUT => {
            let (parts, body) = req.into_parts();
            let body = inbound::read_body(&parts, body, API_BODY_LIMIT).await?;
            inbound::check_digest(&parts.headers, &body)?;
            let put: PatInput =
                serde_json::from_slice(&body).map_err(|e| RequestError::BadBody(e.to_string()))?;
            let credential = put
                .into_credential(integration.config())
                .map_err(RequestError::BadCredential)?;
            let meta = save_pat(
                runtime,
                integration,
                audit::Via::Api(caller),
                account,
                &credential,
            )
            .await?;
            json(&PatStatus::new(
                integration,
                account,
                Some(meta),
                runtime.clock().unix_now(),
            ))
        }
        Method::DELETE => {
            if vault.delete_user_pat(id, account).await? {
                audit::pat_removed(audit::Via::Api(caller), id, account);
            }
            json(&PatStatus::new(
                integration,
                account,
                None,
                runtime.clock().unix_now(),
            ))
        }
        _ => Err(RequestError::MethodNotAllowed("GET, PUT or DELETE")),
    }
}

/// What a `/v1` path names, read from the path exactly as it was sent: nothing is
/// percent-decoded, and an empty segment (`//`) is not skipped.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    pub(crate) integration: &'a str,
    /// Refused only after the integration is known, so that an unknown integration is
    /// said first (as for `/git`).
    pub(crate) account: Result<AccountId, InvalidId>,
    pub(crate) resource: Resource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Pat,
    ConnectLink,
}

impl Resource {
    /// `405 method-not-allowed` for a method the resource does not take.
    pub(crate) fn allows(self, method: &Method) -> Result<(), RequestError> {
        match self {
            Resource::ConnectLink if method != Method::POST => {
                Err(RequestError::MethodNotAllowed("POST"))
            }
            Resource::Pat if ![Method::GET, Method::PUT, Method::DELETE].contains(method) => {
                Err(RequestError::MethodNotAllowed("GET, PUT or DELETE"))
            }
            _ => Ok(()),
        }
    }
}

/// `/v1/integrations/{integration}/users/{account}/{pat|connect-link}`, else
/// `404 not-found`.
pub(crate) fn route(path: &str) -> Result<Route<'_>, RequestError> {
    let mut segments = path
        .strip_prefix("/v1/integrations/")
        .ok_or(RequestError::ApiNotFound)?
        .split('/');
    let (Some(integration), Some("users"), Some(account), Some(resource), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(RequestError::ApiNotFound);
    };
    let resource = match resource {
        "pat" => Resource::Pat,
        "connect-link" => Resource::ConnectLink,
        _ => return Err(RequestError::ApiNotFound),
    };
    Ok(Route {
        integration,
        account: AccountId::parse(account),
        resource,
    })
}

fn json(value: &impl Serialize) -> Result<Response<ResponseBody>, RequestError> {
    let bytes = serde_json::to_vec(value).map_err(|e| RequestError::Encode(e.to_string()))?;
    let mut response = Response::new(full(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
