//! The last step: the request the git host receives, and its answer streamed back.
//!
//! The host request is the integration's base URL plus the raw path and query (credential
//! query parameters removed), the app's headers minus every credential, hop-by-hop field and
//! patgate's own fields, the buffered body, and the chosen credential applied in the host's
//! own scheme. The host's answer goes back as it came, minus hop-by-hop fields, plus
//! `Patgate-Credential`; after its head, a fault can no longer be a problem document, so the
//! stream is cut, counted and logged.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::BodyExt;

use super::{hold_credential, setup_url, Read, RequestError, Summary};
use crate::audit;
use crate::authn::Caller;
use crate::body::ResponseBody;
use crate::hosts::{self, COMMON_CREDENTIAL_HEADERS};
use crate::ids::AccountId;
use crate::inbound::{ACCOUNT_HEADER, CREDENTIAL_HEADER, REQUEST_ID_HEADER};
use crate::metrics::UpstreamErrorLabels;
use crate::policy::Decision;
use crate::runtime::{IntegrationRuntime, Runtime};
use crate::vault::{Credential, PatMeta, PatRefusal};

/// What the forward step sends.
#[derive(Debug)]
pub(crate) struct Outbound<'a> {
    pub read: Read,
    pub host_path: &'a str,
    pub request_id: &'a str,
    pub decision: Decision,
    pub credential: Credential,
    /// What the vault knew of the user's PAT, when that is the credential.
    pub user_pat: Option<PatMeta>,
    /// Who asked (for the audit of a setup link).
    pub caller: &'a Caller,
}

/// Sends the request to the host and answers its response, streamed.
pub(crate) async fn forward(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    out: Outbound<'_>,
    summary: &mut Summary,
) -> Result<Response<ResponseBody>, RequestError> {
    let id = integration.id();
    let adapter = integration.adapter();
    let upstream = integration.upstream();
    let Read {
        parts,
        body,
        account,
        ..
    } = out.read;
    let query = parts
        .uri
        .query()
        .and_then(|q| hosts::strip_query_params(q, adapter.credential_query_params()));
    let uri = upstream
        .uri(out.host_path, query.as_deref())
        .map_err(|e| RequestError::Unforwardable(e.to_string()))?;
    let mut headers = forwarded_request_headers(&parts.headers, adapter.credential_headers());
    if let Ok(value) = HeaderValue::from_str(out.request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    adapter.default_headers(&mut headers);
    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;
    adapter
        .apply_credential(&mut upstream_req, &out.credential)
        .map_err(RequestError::CredentialMismatch)?;
    drop(out.credential);
    let metrics = runtime.metrics();
    let response = upstream.send(upstream_req).await.map_err(|err| {
        metrics
            .upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                integration: id.to_string(),
                kind: err.metric_kind().to_string(),
            })
            .inc();
        RequestError::Upstream(err)
    })?;
    summary.upstream_status = Some(response.status().as_u16());

    let (mut head, incoming) = response.into_parts();
    runtime
        .limits()
        .holds()
        .observe(
            id,
            hold_credential(out.decision, account.as_ref()),
            head.status,
            &head.headers,
            metrics,
        )
        .await;
    if let (Some(account), Some(used)) = (account.as_ref(), out.user_pat.as_ref()) {
        user_pat_answer(
            runtime,
            out.caller,
            integration,
            account,
            used,
            &head.status,
            &head.headers,
        )
        .await?;
    }
    strip_hop_by_hop(&mut head.headers);
    head.headers.insert(
        CREDENTIAL_HEADER,
        HeaderValue::from_static(out.decision.as_str()),
    );
    head.version = Version::HTTP_11;
    let errors = metrics.upstream_errors.clone();
    let integration_id = id.to_string();
    let request_id = out.request_id.to_string();
    let body = upstream
        .stream(incoming)
        .map_err(move |err| {
            let kind = if err.is::<crate::upstream::BodyStalled>() {
                "body-timeout"
            } else {
                "body-cut"
            };
            errors
                .get_or_create(&UpstreamErrorLabels {
                    integration: integration_id.clone(),
                    kind: kind.to_string(),
                })
                .inc();
            tracing::warn!(
                request_id = %request_id,
                integration = %integration_id,
                kind,
                error = %crate::client::error_chain(err.as_ref()),
                "the git host's response body failed; the stream to the app is cut"
            );
            err
        })
        .boxed_unsync();
    Ok(Response::from_parts(head, body))
}

/// What the host's answer to a request made with a user's PAT says about the PAT:
///
/// - SAML SSO not authorised (GitHub): `403 github-sso-required` with the host's URL;
/// - refused (401): the PAT is marked refused (kept: the user may fix it on the host), an
///   audit event is written, and the app gets `403 user-pat-refused` with a setup link in
///   place of the host's answer;
/// - accepted: a refusal mark is cleared, and an expiry the host states is recorded.
///
/// A failure to update the vault is logged; it never changes the answer.
async fn user_pat_answer(
    runtime: &Runtime,
    caller: &Caller,
    integration: &IntegrationRuntime,
    account: &AccountId,
    used: &PatMeta,
    status: &http::StatusCode,
    headers: &HeaderMap,
) -> Result<(), RequestError> {
    let adapter = integration.adapter();
    let id = integration.id();
    if let Some(url) = adapter.sso_authorization_url(*status, headers) {
        return Err(RequestError::GithubSsoRequired { url });
    }
    let refused = adapter.refuses_credential(*status, headers);
    // The first refusal is kept (its time says since when); a success clears it.
    let mark = if refused {
        used.refused.or(Some(PatRefusal {
            at: runtime.clock().unix_now(),
            host_status: status.as_u16(),
        }))
    } else if status.is_success() {
        None
    } else {
        used.refused
    };
    let expires_at = adapter.credential_expiry(headers).or(used.expires_at);
    if mark != used.refused || expires_at != used.expires_at {
        let updated = runtime
            .vault()
            .update_pat_meta(id, account.as_str(), used.updated_at, &mut |meta| {
                let before = (*meta.refused, *meta.expires_at);
                *meta.refused = mark;
                *meta.expires_at = expires_at;
                before != (*meta.refused, *meta.expires_at)
            })
            .await;
        match updated {
            Ok(true) if refused && used.refused.is_none() => {
                audit::pat_refused_by_host(id, account.as_str(), status.as_u16())
            }
            Ok(true) if mark.is_none() && used.refused.is_some() => {
                audit::pat_accepted_again(id, account.as_str())
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                integration = %id,
                account = %account,
                error = %err,
                "could not record what the git host said about a user PAT"
            ),
        }
    }
    if refused {
        return Err(RequestError::UserPatRefused {
            host_status: status.as_u16(),
            setup_url: setup_url(
                runtime,
                caller,
                integration,
                account,
                audit::LinkIssuedIn::UserPatRefused,
            ),
        });
    }
    Ok(())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and the fields named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// The inbound headers minus everything that must not reach the host: hop-by-hop fields,
/// `Host` (the client sets the host's), every credential, and patgate's own signature
/// fields. `Content-Length` is recomputed from the buffered body.
fn forwarded_request_headers(inbound: &HeaderMap, host_credential_headers: &[&str]) -> HeaderMap {
    let mut headers = inbound.clone();
    strip_hop_by_hop(&mut headers);
    for name in COMMON_CREDENTIAL_HEADERS
        .iter()
        .chain(host_credential_headers)
        .chain(&[
            "host",
            "content-length",
            "expect",
            "signature",
            "signature-input",
            ACCOUNT_HEADER,
        ])
    {
        headers.remove(*name);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_drop_credentials_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer app"),
            ("cookie", "s=1"),
            ("private-token", "x"),
            ("signature", "sig=:AA==:"),
            ("signature-input", "sig=()"),
            ("patgate-account", "abc"),
            ("connection", "x-secret-hop"),
            ("x-secret-hop", "1"),
            ("host", "patgate"),
            ("content-type", "application/json"),
            ("x-github-api-version", "2022-11-28"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = forwarded_request_headers(&h, &[]);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-github-api-version"]);
    }
}
