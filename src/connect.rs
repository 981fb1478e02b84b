//! The connect page: where a Jira user enters, replaces or removes their own PAT, on its own
//! listener (server TLS only: browsers have no client certificate).
//!
//! A user reaches it only through a one-time link ([`crate::links::Links::issue`]) that the
//! Jira app asks for (`POST /v1/…/connect-link`) or finds in a `user-pat-required` problem
//! (`setup_url`). Opening the link renders the page with a page token ([`crate::links`]);
//! every POST must carry that page token, and must not come from another origin (`Origin`,
//! `Sec-Fetch-Site`).
//!
//! The entered token is never echoed, logged or put in an error message.

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use secrecy::SecretString;

use crate::body::{full, ResponseBody};
use crate::error::{link_status, Problem};
use crate::hosts::web;
use crate::links::{LinkError, Links};
use crate::runtime::{IntegrationRuntime, Runtime};
use crate::vault::PatMeta;

/// The most a form POST may hold.
const FORM_LIMIT: usize = 16 * 1024;

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem;line-height:1.5;color:#111}\
h1{font-size:1.4rem}label{display:block;font-weight:600;margin-top:1rem}\
input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem}\
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}\
.ok{background:#e7f6e7;border:1px solid #3a3;padding:.6rem}.err{background:#fdecec;border:1px solid #c33;padding:.6rem}\
button:focus,input:focus{outline:3px solid #36c}";

/// Security headers every connect answer carries.
fn page(status: StatusCode, title: &str, body: &str) -> Response<ResponseBody> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><link rel=\"stylesheet\" href=\"/connect/style.css\"></head><body>\
<main><h1>{}</h1>{body}</main></body></html>",
        escape(title),
        escape(title)
    );
    let mut response = Response::new(full(Bytes::from(html)));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    response
}

fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

fn refusal(status: StatusCode, why: &str) -> Response<ResponseBody> {
    page(
        status,
        "This link cannot be used",
        &format!(
            "<p class=\"err\">{}.</p><p>Go back to Jira and start again: it makes a new link.</p>",
            escape(why)
        ),
    )
}

fn link_refusal(err: &LinkError) -> Response<ResponseBody> {
    let why = match err {
        LinkError::Used => "This link was already used. Each link opens the page once",
        LinkError::Expired => "This link has expired",
        LinkError::Invalid => "This link is not valid (links also end when patgate restarts)",
        LinkError::Busy => "Too many links are open at once; try again in a few minutes",
        LinkError::Store(_) => "patgate cannot check links right now; try again in a minute",
    };
    refusal(link_status(err), why)
}

/// What every rendering of one user's page needs.
struct PageContext<'a> {
    integration: &'a IntegrationRuntime,
    page_token: &'a str,
    /// When the link, and so the page, stops working (Unix seconds).
    expires_at: u64,
    now: u64,
}

/// The name of the token patgate asks the user to make, where the host pre-fills one.
fn token_name(integration: &IntegrationRuntime) -> String {
    match &integration.config().display_name {
        Some(name) => format!("Git Integration for Jira ({name})"),
        None => "Git Integration for Jira".to_string(),
    }
}

/// Who the host is, where a token is made on it, and how long this page works.
fn host_and_validity(page: &PageContext<'_>) -> String {
    let config = page.integration.config();
    let product = web::product_name(config);
    let address = web::web_address(config);
    let mut body = String::new();
    match &config.display_name {
        Some(name) => {
            let _ = write!(
                body,
                "<p id=\"host\"><strong>{}</strong> ({}, {})</p>",
                escape(name),
                escape(&product),
                escape(&address)
            );
        }
        None => {
            let _ = write!(
                body,
                "<p id=\"host\"><strong>{}</strong> at <strong>{}</strong></p>",
                escape(&product),
                escape(&address)
            );
        }
    }
    let minutes = page.expires_at.saturating_sub(page.now).div_ceil(60);
    let until = crate::clock::rfc3339(page.expires_at);
    // 2026-11-24T16:17:11Z → 16:17 UTC on 2026-11-24
    let (date, time) = until.split_once('T').unwrap_or((&until, ""));
    let _ = write!(
        body,
        "<p id=\"validity\">This page works until {} UTC on {} (about {} {} from now). After that, ask Jira for a new link.</p>",
        escape(time.get(..5).unwrap_or(time)),
        escape(date),
        minutes,
        if minutes == 1 { "minute" } else { "minutes" }
    );
    body
}

/// The link to the host's page where a token is made, when it has one.
fn token_page_link(integration: &IntegrationRuntime) -> String {
    let config = integration.config();
    let Some(token_page) = web::token_page(config, &token_name(integration)) else {
        return String::new();
    };
    let mut out = format!(
        "<p><a id=\"token-page\" href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">Make a token on {}</a>",
        escape(&token_page.url),
        escape(&web::web_address(config))
    );
    if let Some(prefilled) = token_page.prefilled {
        let _ = write!(
            out,
            " (the page opens with {} filled in)",
            escape(prefilled)
        );
    }
    out.push('.');
    if let Some(older) = &token_page.older_url {
        let _ = write!(
            out,
            " Older releases keep that page <a href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">here</a>.",
            escape(older)
        );
    }
    out.push_str("</p>");
    out
}

/// The page for one user on one integration, with an optional message on top.
fn user_page(
    ctx: &PageContext<'_>,
    meta: Option<&PatMeta>,
    message: Option<(&str, &str)>,
    status: StatusCode,
) -> Response<ResponseBody> {
    let integration = ctx.integration;
    let page_token = ctx.page_token;
    let mut body = String::new();
    if let Some((class, text)) = message {
        let _ = write!(
            body,
            "<p class=\"{class}\" role=\"status\">{}</p>",
            escape(text)
        );
    }
    body.push_str(&host_and_validity(ctx));
    if !integration.adapter().supports_pats() {
        body.push_str(
            "<p class=\"err\">Personal access tokens are not supported by this host (TFS 2013 and 2015 have none). \
Actions that need your own token cannot be done through this integration; ask your Jira admin.</p>",
        );
        return page(status, "Connect your account", &body);
    }
    match meta {
        Some(meta) => {
            let _ = write!(
                body,
                "<p>Your token is set up. It belongs to the host login <strong id=\"host-login\">{}</strong>.</p>",
                escape(&meta.host_login)
            );
            body.push_str(&token_state(ctx, meta));
        }
        None => body.push_str("<p>You have no token set up for this integration yet.</p>"),
    }
    // CodeCommit users bring their own IAM access key pair instead of a token.
    let fields = if integration.config().codecommit.is_some() {
        "<label for=\"access_key_id\">Access key ID</label>\
<input type=\"text\" id=\"access_key_id\" name=\"access_key_id\" required autocomplete=\"off\" spellcheck=\"false\">\
<label for=\"secret_access_key\">Secret access key</label>\
<input type=\"password\" id=\"secret_access_key\" name=\"secret_access_key\" required autocomplete=\"off\">\
<label for=\"session_token\">Session token (temporary keys only)</label>\
<input type=\"password\" id=\"session_token\" name=\"session_token\" autocomplete=\"off\">"
            .to_string()
    } else {
        format!(
            "<label for=\"token\">Your {} personal access token</label>\
<input type=\"password\" id=\"token\" name=\"token\" required autocomplete=\"off\" spellcheck=\"false\">",
            escape(&web::product_name(integration.config()))
        )
    };
    body.push_str(&token_page_link(integration));
    let _ = write!(
        body,
        "<p>{}</p>\
<form method=\"post\" action=\"/connect/pat\">\
<input type=\"hidden\" name=\"page\" value=\"{page}\">{fields}\
<button type=\"submit\">{}</button></form>",
        escape(integration.adapter().token_help()),
        if meta.is_some() {
            "Replace token"
        } else {
            "Save token"
        },
        page = escape(page_token),
    );
    if meta.is_some() {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/connect/remove\">\
<input type=\"hidden\" name=\"page\" value=\"{}\">\
<button type=\"submit\">Remove token</button></form>",
            escape(page_token)
        );
    }
    page(status, "Connect your account", &body)
}

/// Why a stored token needs replacing, when it does: the host refused it (expired or
/// revoked), or it expires within the integration's warning window (or has).
fn token_state(ctx: &PageContext<'_>, meta: &PatMeta) -> String {
    let date = |secs: u64| {
        let text = crate::clock::rfc3339(secs);
        format!("{} {} UTC", &text[..10], &text[11..16])
    };
    let mut out = String::new();
    if let Some(refused) = meta.refused {
        // Azure DevOps answers a token that lacks a scope the way it answers a revoked one
        // (401; docs/protocol.md, the refusal table).
        let why = match ctx.integration.config().kind {
            crate::config::HostKind::AzureDevops | crate::config::HostKind::Tfs => {
                "it has probably expired or been revoked, or it lacks the Code (Read &amp; write) scope (Azure DevOps answers all three the same way)"
            }
            _ => "it has probably expired or been revoked",
        };
        let _ = write!(
            out,
            "<p class=\"err\" id=\"token-refused\" role=\"alert\">The git host refused this token on {} (HTTP {}): {why}. \
Make a new token and enter it below; actions that need your token fail until you do.</p>",
            date(refused.at),
            refused.host_status
        );
    }
    if let Some(at) = meta.expires_at {
        let warn = ctx.integration.config().pat_expiry_warning.as_secs();
        if at <= ctx.now {
            let _ = write!(
                out,
                "<p class=\"err\" id=\"token-expiry\">This token expired on {}. Enter a new one below.</p>",
                date(at)
            );
        } else if at <= ctx.now.saturating_add(warn) {
            let _ = write!(
                out,
                "<p class=\"err\" id=\"token-expiry\">This token expires on {}: replace it soon, before actions start failing.</p>",
                date(at)
            );
        } else {
            let _ = write!(
                out,
                "<p id=\"token-expiry\">This token expires on {}.</p>",
                date(at)
            );
        }
    }
    out
}

/// The page a link opens: for its first open (which sets the reload cookie), a reload by
/// the same browser, or a `HEAD` (`peek`: nothing used up, nothing set, nothing audited).
async fn open_link(
    runtime: &Runtime,
    links: &Links,
    token: &str,
    proofs: &[&str],
    peek: bool,
    now: u64,
) -> Response<ResponseBody> {
    let opened = if peek {
        links.peek(token, proofs, now).await
    } else {
        links.open(token, proofs, now).await
    };
    let opened = match opened {
        Ok(opened) => opened,
        Err(err) => {
            if !peek {
                crate::audit::connect_link_refused(&err);
            }
            return link_refusal(&err);
        }
    };
    let claims = &opened.claims;
    let Some(integration) = runtime.integration(&claims.integration) else {
        return refusal(StatusCode::NOT_FOUND, "This integration no longer exists");
    };
    if !peek && !opened.reload {
        crate::audit::connect_link_opened(&claims.integration, &claims.account);
    }
    let meta = match runtime
        .vault()
        .user_pat_meta(&claims.integration, &claims.account)
        .await
    {
        Ok(meta) => meta,
        Err(err) => {
            tracing::error!(error = %err, "reading PAT status for the connect page");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "patgate cannot read its vault right now",
            );
        }
    };
    let ctx = PageContext {
        integration,
        page_token: &opened.page_token,
        expires_at: claims.expires_at,
        now,
    };
    let mut response = user_page(&ctx, meta.as_ref(), None, StatusCode::OK);
    if !peek && !opened.reload {
        if let Some(cookie) = reload_cookie(token, &opened.reload_proof, claims.expires_at, now) {
            response
                .headers_mut()
                .insert(http::header::SET_COOKIE, cookie);
        }
    }
    response
}

/// Parses an `application/x-www-form-urlencoded` body.
pub(crate) fn form_fields(body: &[u8]) -> HashMap<String, zeroize::Zeroizing<String>> {
    form_urlencoded::parse(body)
        .map(|(name, value)| {
            (
                name.into_owned(),
                zeroize::Zeroizing::new(value.into_owned()),
            )
        })
        .collect()
}

/// What a request on the connect listener asks for, from its method and path as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `GET`/`HEAD /connect/style.css`.
    Style,
    /// `GET`/`HEAD /connect/{token}`: the token as sent (checked by [`Links`]).
    Link(&'a str),
    /// `POST /connect/pat`: save or replace the token.
    Save,
    /// `POST /connect/remove`.
    Remove,
    NotFound,
}

pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let read = *method == Method::GET || *method == Method::HEAD;
    match (read, *method == Method::POST, path) {
        (true, _, "/connect/style.css") => Route::Style,
        (_, true, "/connect/pat") => Route::Save,
        (_, true, "/connect/remove") => Route::Remove,
        (true, _, p) => p
            .strip_prefix("/connect/")
            .map_or(Route::NotFound, Route::Link),
        _ => Route::NotFound,
    }
}

/// Whether a POST comes from the page itself (not from another site's form). The page
/// token is the CSRF defence; this is a second one. Browsers send `Origin: null` for this
/// page's own forms (its `Referrer-Policy: no-referrer` hides the origin), so only another
/// named origin, or `Sec-Fetch-Site` other than `same-origin`/`none`, is refused.
pub(crate) fn same_origin(headers: &http::HeaderMap, public_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    match headers.get(http::header::ORIGIN) {
        Some(origin) => origin.as_bytes() == b"null" || origin.as_bytes() == public_url.as_bytes(),
        None => true,
    }
}

/// The cookie that lets the browser which opened a link reload it ([`Links::open`]).
const RELOAD_COOKIE: &str = "patgate-link";

/// `Set-Cookie` for the browser that just opened the link `token`: sent back only on that
/// link's own path, to this origin over TLS, never to scripts, and gone when the link
/// expires. `SameSite=Lax`, not `Strict`: the link is opened by a click in Jira (another
/// site), and Chromium does not send a Strict cookie on the reload of a page reached that
/// way (tests/connect_browser.rs showed it). Lax adds only top-level GET navigations from
/// other sites, which can do no more than show the page of that one link to its holder;
/// the page's forms are refused unless they come from the page's own origin.
fn reload_cookie(token: &str, proof: &str, expires_at: u64, now: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{RELOAD_COOKIE}={proof}; Path=/connect/{token}; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        expires_at.saturating_sub(now)
    ))
    .ok()
}

/// The values of every `patgate-link` cookie the request carries (HTTP/2 may split
/// `Cookie` into several fields).
pub(crate) fn reload_proofs(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(RELOAD_COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

/// Serves one request on the connect listener. `HEAD` answers the status and headers `GET`
/// would, with no body and without using up a link (it is safe: a link checker or preview
/// must not spend the user's one open).
pub(crate) async fn handle(runtime: &Runtime, req: Request<Incoming>) -> Response<ResponseBody> {
    if req.method() != Method::HEAD {
        return respond(runtime, req).await;
    }
    let response = respond(runtime, req).await;
    let (mut parts, body) = response.into_parts();
    if let Some(length) = http_body::Body::size_hint(&body).exact() {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, full(Bytes::new()))
}

async fn respond(runtime: &Runtime, req: Request<Incoming>) -> Response<ResponseBody> {
    let Some(links) = runtime.links() else {
        return refusal(StatusCode::NOT_FOUND, "The connect page is not configured");
    };
    let now = runtime.clock().unix_now();
    let path = req.uri().path().to_string();
    match route(req.method(), &path) {
        Route::Style => {
            let mut response = Response::new(full(Bytes::from_static(STYLE.as_bytes())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/css"));
            secure_headers(response.headers_mut());
            response
        }
        Route::Link(token) => {
            let proofs = reload_proofs(req.headers());
            let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
            let peek = req.method() == Method::HEAD;
            open_link(runtime, links, token, &proofs, peek, now).await
        }
        action @ (Route::Save | Route::Remove) => {
            if !same_origin(req.headers(), links.public_url()) {
                return refusal(
                    StatusCode::FORBIDDEN,
                    "This form was sent from another site",
                );
            }
            let (parts, body) = req.into_parts();
            let body = match crate::inbound::read_body(&parts, body, FORM_LIMIT).await {
                Ok(body) => body,
                Err(err) => {
                    let problem = Problem::of(&err);
                    return refusal(problem.status(), &problem.detail);
                }
            };
            let fields = form_fields(&body);
            let claims = match fields
                .get("page")
                .ok_or(LinkError::Invalid)
                .and_then(|t| links.check_page(t, now))
            {
                Ok(claims) => claims,
                Err(err) => return link_refusal(&err),
            };
            let page_token = fields
                .get("page")
                .map(|t| t.to_string())
                .unwrap_or_default();
            let Some(integration) = runtime.integration(&claims.integration) else {
                return refusal(StatusCode::NOT_FOUND, "This integration no longer exists");
            };
            let ctx = PageContext {
                integration,
                page_token: &page_token,
                expires_at: claims.expires_at,
                now,
            };
            let id = claims.integration.as_str();
            let account = claims.account.as_str();
            if action == Route::Remove {
                return match runtime.vault().delete_user_pat(id, account).await {
                    Ok(_) => {
                        crate::audit::pat_removed(crate::audit::Via::ConnectPage, id, account);
                        user_page(
                            &ctx,
                            None,
                            Some(("ok", "Your token was removed.")),
                            StatusCode::OK,
                        )
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "removing a PAT from the connect page");
                        refusal(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "patgate cannot write its vault right now",
                        )
                    }
                };
            }
            if !integration.adapter().supports_pats() {
                return user_page(&ctx, None, None, StatusCode::FORBIDDEN);
            }
            let current = runtime
                .vault()
                .user_pat_meta(id, account)
                .await
                .ok()
                .flatten();
            let field = |name: &str| {
                fields
                    .get(name)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            };
            let input = crate::pat::PatInput {
                token: field("token").map(SecretString::from),
                access_key_id: field("access_key_id"),
                secret_access_key: field("secret_access_key").map(SecretString::from),
                session_token: field("session_token").map(SecretString::from),
            };
            let credential = match input.into_credential(integration.config()) {
                Ok(credential) => credential,
                Err(_) => {
                    let ask = if integration.config().codecommit.is_some() {
                        "Enter your access key ID and secret access key."
                    } else {
                        "Enter a token."
                    };
                    return user_page(
                        &ctx,
                        current.as_ref(),
                        Some(("err", ask)),
                        StatusCode::UNPROCESSABLE_ENTITY,
                    );
                }
            };
            match crate::api::save_pat(
                runtime,
                integration,
                crate::audit::Via::ConnectPage,
                account,
                &credential,
            )
            .await
            {
                Ok(meta) => {
                    let text = format!(
                        "Saved. The host says this token belongs to {}.",
                        meta.host_login
                    );
                    user_page(&ctx, Some(&meta), Some(("ok", &text)), StatusCode::OK)
                }
                Err(err) => {
                    // The problem's detail comes from the host adapter's error, never the token.
                    let problem = Problem::of(&err);
                    let text = format!("The token was not saved: {}", problem.detail);
                    user_page(
                        &ctx,
                        current.as_ref(),
                        Some(("err", &text)),
                        problem.status(),
                    )
                }
            }
        }
        _ => refusal(StatusCode::NOT_FOUND, "There is no page here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn forms_decode() {
        let f = form_fields(b"page=a.b&token=ghp_x%2By+z");
        assert_eq!(f["page"].as_str(), "a.b");
        assert_eq!(f["token"].as_str(), "ghp_x+y z");
    }
}
