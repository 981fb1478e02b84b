//! patgate's own API for the Jira app, under `/v1` on the api listener (same mTLS and
//! signature as the proxy):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/integrations/{id}/users/{account}/pat` | the PAT status |
//! | `PUT /v1/integrations/{id}/users/{account}/pat` `{"token": "…"}` (CodeCommit: `{"access_key_id": "…", "secret_access_key": "…", "session_token"?: "…"}`) | validates with the host, stores, answers the status |
//! | `DELETE /v1/integrations/{id}/users/{account}/pat` | removes it, answers the status |
//! | `POST /v1/integrations/{id}/users/{account}/connect-link` | a one-time link to the connect page: `{"url", "expires_at"}` (404 `not-found` without `[connect]`) |

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::{full, ResponseBody};
use crate::error::{ErrorCode, Problem};
use crate::proxy::{check_digest, is_valid_account_id, read_body};
use crate::server::{IntegrationRuntime, Runtime};
use crate::vault::PatMeta;

/// The most a `/v1` request body may hold.
const API_BODY_LIMIT: usize = 64 * 1024;

/// The status of one user's PAT for one integration.
#[derive(Debug, Serialize)]
pub struct PatStatus {
    pub integration: String,
    pub account: String,
    pub configured: bool,
    pub host_login: Option<String>,
    pub scopes_or_permissions: Vec<String>,
    pub validated_at: Option<String>,
    pub last_used_at: Option<String>,
    pub require_user_pat: bool,
    /// False on TFS 2013/2015: that host has no personal access tokens at all.
    pub host_supports_pats: bool,
    /// A plain sentence when the host has no PATs, for the app to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

impl PatStatus {
    pub fn new(
        integration: &IntegrationRuntime,
        account: &str,
        meta: Option<PatMeta>,
    ) -> PatStatus {
        let rfc3339 = |secs: u64| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )
            .to_string()
        };
        PatStatus {
            integration: integration.config.id.clone(),
            account: account.to_string(),
            configured: meta.is_some(),
            host_login: meta.as_ref().map(|m| m.host_login.clone()),
            scopes_or_permissions: meta.as_ref().map(|m| m.scopes.clone()).unwrap_or_default(),
            validated_at: meta.as_ref().map(|m| rfc3339(m.validated_at)),
            last_used_at: meta.as_ref().and_then(|m| m.last_used_at).map(rfc3339),
            require_user_pat: integration.config.require_user_pat,
            host_supports_pats: integration.adapter.supports_pats(),
            note: (!integration.adapter.supports_pats()).then_some(
                "This host (TFS 2013/2015) does not support personal access tokens; with Require User PAT on, actions are refused.",
            ),
        }
    }
}

pub(crate) async fn handle(
    runtime: &Runtime,
    conn: &crate::server::Connection,
    req: Request<Incoming>,
    request_id: &str,
) -> Result<Response<ResponseBody>, Problem> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["v1", "integrations", id, "users", account, resource @ ("pat" | "connect-link")] =
        segments.as_slice()
    else {
        return Err(Problem::new(
            ErrorCode::NotFound,
            "the /v1 API serves /v1/integrations/{id}/users/{account}/pat and …/connect-link",
        ));
    };
    let integration = runtime.integrations.get(*id).ok_or_else(|| {
        Problem::new(
            ErrorCode::UnknownIntegration,
            format!("no integration `{id}` is configured"),
        )
    })?;
    let account = percent_encoding::percent_decode_str(account)
        .decode_utf8()
        .ok()
        .filter(|a| is_valid_account_id(a))
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::BadRequest,
                "the account in the path is not an Atlassian accountId",
            )
        })?
        .into_owned();
    // The same quotas as the proxy: a status lookup is a read, anything else an action.
    runtime.limits.check(
        &crate::ratelimit::Subject {
            client: &conn.client_subject,
            integration: &integration.config.id,
            account: Some(&account),
            class: if req.method() == Method::GET {
                crate::ratelimit::Class::Reads
            } else {
                crate::ratelimit::Class::Actions
            },
            request_id,
        },
        &runtime.metrics,
    )?;
    let vault = &runtime.vault;
    let id = integration.config.id.as_str();
    if *resource == "connect-link" {
        if req.method() != Method::POST {
            return Err(Problem::new(ErrorCode::MethodNotAllowed, "use POST"));
        }
        let links = runtime.connect.as_ref().ok_or_else(|| {
            Problem::new(
                ErrorCode::NotFound,
                "no connect page is configured on this patgate ([connect] in its config)",
            )
        })?;
        let link = links.issue(id, &account, crate::server::unix_now());
        crate::audit::connect_link_issued(id, &account, &link.expires_at);
        return json(&link);
    }
    match *req.method() {
        Method::GET => {
            let mut meta = vault.user_pat_meta(id, &account)?;
            // A use not yet written to the vault (they are written in batches) is newer.
            if let (Some(meta), Some(pending)) =
                (meta.as_mut(), runtime.pat_uses.pending(id, &account))
            {
                meta.last_used_at = meta.last_used_at.max(Some(pending));
            }
            json(&PatStatus::new(integration, &account, meta))
        }
        Method::PUT => {
            let (parts, body) = req.into_parts();
            let body = read_body(
                parts.headers.get(http::header::CONTENT_LENGTH),
                body,
                API_BODY_LIMIT,
            )
            .await?;
            check_digest(&parts.headers, &body)?;
            let put: crate::pat::PatInput = serde_json::from_slice(&body).map_err(|e| {
                // serde's message names the field, never the value.
                Problem::new(
                    ErrorCode::BadRequest,
                    format!("the body must be {{\"token\": \"…\"}} (CodeCommit: {{\"access_key_id\": \"…\", \"secret_access_key\": \"…\"}}): {e}"),
                )
            })?;
            let credential = put
                .into_credential(&integration.config)
                .map_err(|why| Problem::new(ErrorCode::BadRequest, why))?;
            let meta = crate::pat::validate_and_store(integration, vault, &account, &credential)
                .await
                .map_err(|err| {
                    let problem = Problem::from(err);
                    crate::audit::pat_refused(
                        crate::audit::Via::Api,
                        id,
                        &account,
                        problem.code.as_str(),
                    );
                    problem
                })?;
            crate::audit::pat_stored(crate::audit::Via::Api, id, &account, &meta.host_login);
            json(&PatStatus::new(integration, &account, Some(meta)))
        }
        Method::DELETE => {
            if vault.delete_user_pat(id, &account).await? {
                crate::audit::pat_removed(crate::audit::Via::Api, id, &account);
            }
            json(&PatStatus::new(integration, &account, None))
        }
        _ => Err(Problem::new(
            ErrorCode::MethodNotAllowed,
            "use GET, PUT or DELETE",
        )),
    }
}

fn json(value: &impl Serialize) -> Result<Response<ResponseBody>, Problem> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Problem::new(ErrorCode::Internal, e.to_string()))?;
    let mut response = Response::new(full(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
