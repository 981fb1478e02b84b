//! The connect page: where a Jira user enters, replaces or removes their own PAT, on its own
//! listener (server TLS only: browsers have no client certificate).
//!
//! A user reaches it only through a one-time link ([`Links::issue`]) that the Jira app asks
//! for (`POST /v1/…/connect-link`) or finds in a `user-pat-required` problem (`setup_url`).
//!
//! Links are `{public_url}/connect/{token}`, where the token is `base64url(claims) "."
//! base64url(HMAC-SHA256(key, claims))`. The key is random, made at start and kept in memory
//! only: a restart invalidates every open link (the app simply asks for a new one), and no
//! link key ever sits on disk. Opening a link consumes it (a bounded set of used nonces,
//! pruned by expiry) and renders a page carrying a *page token*: the same claims with kind
//! `page`, multi-use until the link's expiry. Every POST must carry that page token, which
//! is both the proof that the user opened this link and the CSRF token (a third-party page
//! cannot read it), and must not come from another origin (`Origin`, `Sec-Fetch-Site`).
//!
//! The entered token is never echoed, logged or put in an error message.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use rand_core::{OsRng, RngCore as _};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::body::{full, ResponseBody};
use crate::config::ConnectListener;
use crate::server::{unix_now, IntegrationRuntime, Runtime};
use crate::vault::PatMeta;

/// At most this many used links are remembered; beyond it (after pruning expired ones) new
/// links are refused to open rather than letting an old one be reused.
const USED_LINKS_CAP: usize = 100_000;
/// The most a form POST may hold.
const FORM_LIMIT: usize = 16 * 1024;

/// Why a link or page token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid")]
    Invalid,
    #[error("this link has expired")]
    Expired,
    #[error("this link was already used")]
    Used,
    #[error("too many links are open at once; try again in a few minutes")]
    Busy,
}

/// What a link or page token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `link` or `page`.
    #[serde(rename = "k")]
    pub kind: String,
    #[serde(rename = "i")]
    pub integration: String,
    #[serde(rename = "a")]
    pub account: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires_at: u64,
    #[serde(rename = "n")]
    pub nonce: String,
}

/// A link made for the app.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectLink {
    pub url: String,
    pub expires_at: String,
}

/// Makes and checks connect links.
pub struct Links {
    key: zeroize::Zeroizing<[u8; 32]>,
    public_url: String,
    ttl: Duration,
    /// nonce → expiry of links already opened; shared with the reloaded [`Links`].
    used: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("key", &"[redacted]")
            .field("public_url", &self.public_url)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// A fresh random key: links made before this process started are not valid.
    pub fn new(config: &ConnectListener) -> Links {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        Links {
            key,
            public_url: config.public_url.clone(),
            ttl: config.link_ttl,
            used: Arc::default(),
        }
    }

    /// The links of a reloaded config: the same key and the same record of opened links,
    /// so links issued before the reload stay valid, and once-opened ones stay used.
    pub fn reconfigured(&self, config: &ConnectListener) -> Links {
        Links {
            key: self.key.clone(),
            public_url: config.public_url.clone(),
            ttl: config.link_ttl,
            used: self.used.clone(),
        }
    }

    /// A one-time link for `account` on `integration`, valid from `now` for the configured TTL.
    pub fn issue(&self, integration: &str, account: &str, now: u64) -> ConnectLink {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let claims = Claims {
            kind: "link".into(),
            integration: integration.into(),
            account: account.into(),
            expires_at: now + self.ttl.as_secs(),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        };
        ConnectLink {
            url: format!("{}/connect/{}", self.public_url, self.sign(&claims)),
            expires_at: rfc3339(claims.expires_at),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("any key length")
    }

    fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    fn verify(&self, token: &str, kind: &str, now: u64) -> Result<Claims, LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Invalid)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| LinkError::Invalid)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(LinkError::Invalid)?;
        if claims.kind != kind {
            return Err(LinkError::Invalid);
        }
        if now >= claims.expires_at {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }

    /// Opens a link: checks it, consumes it, and answers its claims and the page token.
    pub fn open(&self, token: &str, now: u64) -> Result<(Claims, String), LinkError> {
        let claims = self.verify(token, "link", now)?;
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if used.contains_key(&claims.nonce) {
                return Err(LinkError::Used);
            }
            if used.len() >= USED_LINKS_CAP {
                used.retain(|_, expires_at| *expires_at > now);
                if used.len() >= USED_LINKS_CAP {
                    return Err(LinkError::Busy);
                }
            }
            used.insert(claims.nonce.clone(), claims.expires_at);
        }
        let page = Claims {
            kind: "page".into(),
            ..claims.clone()
        };
        Ok((claims, self.sign(&page)))
    }

    /// Checks a page token sent back by a form.
    pub fn check_page(&self, token: &str, now: u64) -> Result<Claims, LinkError> {
        self.verify(token, "page", now)
    }
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
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

fn link_refusal(err: LinkError) -> Response<ResponseBody> {
    let status = match err {
        LinkError::Invalid => StatusCode::NOT_FOUND,
        LinkError::Expired | LinkError::Used => StatusCode::GONE,
        LinkError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    let why = match err {
        LinkError::Used => "This link was already used. Each link opens the page once",
        LinkError::Expired => "This link has expired",
        LinkError::Invalid => "This link is not valid (links also end when patgate restarts)",
        LinkError::Busy => "Too many links are open at once; try again in a few minutes",
    };
    refusal(status, why)
}

/// The host part of the integration's base URL, for the page.
fn host_name(integration: &IntegrationRuntime) -> String {
    integration.config.base_url.authority().map_or_else(
        || integration.config.base_url.to_string(),
        |a| a.to_string(),
    )
}

/// The page for one user on one integration, with an optional message on top.
fn user_page(
    integration: &IntegrationRuntime,
    meta: Option<&PatMeta>,
    page_token: &str,
    message: Option<(&str, &str)>,
    status: StatusCode,
) -> Response<ResponseBody> {
    let host = host_name(integration);
    let mut body = String::new();
    if let Some((class, text)) = message {
        let _ = write!(
            body,
            "<p class=\"{class}\" role=\"status\">{}</p>",
            escape(text)
        );
    }
    let _ = write!(
        body,
        "<p>Integration <strong>{}</strong> on <strong>{}</strong> ({}).</p>",
        escape(&integration.config.id),
        escape(&host),
        escape(integration.config.kind.as_str()),
    );
    if !integration.adapter.supports_pats() {
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
        }
        None => body.push_str("<p>You have no token set up for this integration yet.</p>"),
    }
    // CodeCommit users bring their own IAM access key pair instead of a token.
    let fields = if integration.config.codecommit.is_some() {
        "<label for=\"access_key_id\">Access key ID</label>\
<input type=\"text\" id=\"access_key_id\" name=\"access_key_id\" required autocomplete=\"off\" spellcheck=\"false\">\
<label for=\"secret_access_key\">Secret access key</label>\
<input type=\"password\" id=\"secret_access_key\" name=\"secret_access_key\" required autocomplete=\"off\">\
<label for=\"session_token\">Session token (temporary keys only)</label>\
<input type=\"password\" id=\"session_token\" name=\"session_token\" autocomplete=\"off\">"
            .to_string()
    } else {
        format!(
            "<label for=\"token\">{} personal access token</label>\
<input type=\"password\" id=\"token\" name=\"token\" required autocomplete=\"off\" spellcheck=\"false\">",
            escape(&host)
        )
    };
    let _ = write!(
        body,
        "<p>{}</p>\
<form method=\"post\" action=\"/connect/pat\">\
<input type=\"hidden\" name=\"page\" value=\"{page}\">{fields}\
<button type=\"submit\">{}</button></form>",
        escape(integration.adapter.token_help()),
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

/// Parses an `application/x-www-form-urlencoded` body.
fn form_fields(body: &[u8]) -> HashMap<String, zeroize::Zeroizing<String>> {
    let mut fields = HashMap::new();
    for pair in body.split(|b| *b == b'&') {
        let mut parts = pair.splitn(2, |b| *b == b'=');
        let name = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        let decode = |raw: &[u8]| {
            let spaced: Vec<u8> = raw
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            let out = percent_encoding::percent_decode(&spaced)
                .decode_utf8_lossy()
                .into_owned();
            zeroize::Zeroizing::new(out)
        };
        fields.insert(decode(name).to_string(), decode(value));
    }
    fields
}

/// Whether a POST comes from the page itself (not from another site's form). The page
/// token is the CSRF defence; this is a second one. Browsers send `Origin: null` for this
/// page's own forms (its `Referrer-Policy: no-referrer` hides the origin), so only another
/// named origin, or `Sec-Fetch-Site` other than `same-origin`/`none`, is refused.
fn same_origin(req: &Request<Incoming>, public_url: &str) -> bool {
    let headers = req.headers();
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

/// Serves one request on the connect listener.
pub(crate) async fn handle(runtime: &Runtime, req: Request<Incoming>) -> Response<ResponseBody> {
    let Some(links) = runtime.connect.as_ref() else {
        return refusal(StatusCode::NOT_FOUND, "The connect page is not configured");
    };
    let now = unix_now();
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/connect/style.css") => {
            let mut response = Response::new(full(Bytes::from_static(STYLE.as_bytes())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/css"));
            secure_headers(response.headers_mut());
            response
        }
        (&Method::GET, p) if p.starts_with("/connect/") => {
            let token = &p["/connect/".len()..];
            let (claims, page_token) = match links.open(token, now) {
                Ok(opened) => opened,
                Err(err) => {
                    crate::audit::connect_link_refused(&err);
                    return link_refusal(err);
                }
            };
            let Some(integration) = runtime.integrations.get(&claims.integration) else {
                return refusal(StatusCode::NOT_FOUND, "This integration no longer exists");
            };
            crate::audit::connect_link_opened(&claims.integration, &claims.account);
            match runtime
                .vault
                .user_pat_meta(&claims.integration, &claims.account)
            {
                Ok(meta) => user_page(
                    integration,
                    meta.as_ref(),
                    &page_token,
                    None,
                    StatusCode::OK,
                ),
                Err(err) => {
                    tracing::error!(error = %err, "reading PAT status for the connect page");
                    refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "patgate cannot read its vault right now",
                    )
                }
            }
        }
        (&Method::POST, action @ ("/connect/pat" | "/connect/remove")) => {
            let action = action.to_string();
            if !same_origin(&req, &links.public_url) {
                return refusal(
                    StatusCode::FORBIDDEN,
                    "This form was sent from another site",
                );
            }
            let (parts, body) = req.into_parts();
            let body = match crate::proxy::read_body(
                parts.headers.get(http::header::CONTENT_LENGTH),
                body,
                FORM_LIMIT,
            )
            .await
            {
                Ok(body) => body,
                Err(problem) => return refusal(problem.status(), &problem.detail),
            };
            let fields = form_fields(&body);
            let claims = match fields
                .get("page")
                .ok_or(LinkError::Invalid)
                .and_then(|t| links.check_page(t, now))
            {
                Ok(claims) => claims,
                Err(err) => return link_refusal(err),
            };
            let page_token = fields
                .get("page")
                .map(|t| t.to_string())
                .unwrap_or_default();
            let Some(integration) = runtime.integrations.get(&claims.integration) else {
                return refusal(StatusCode::NOT_FOUND, "This integration no longer exists");
            };
            let id = claims.integration.as_str();
            let account = claims.account.as_str();
            if action == "/connect/remove" {
                return match runtime.vault.delete_user_pat(id, account).await {
                    Ok(_) => {
                        crate::audit::pat_removed(crate::audit::Via::ConnectPage, id, account);
                        user_page(
                            integration,
                            None,
                            &page_token,
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
            if !integration.adapter.supports_pats() {
                return user_page(integration, None, &page_token, None, StatusCode::FORBIDDEN);
            }
            let current = runtime.vault.user_pat_meta(id, account).ok().flatten();
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
            let credential = match input.into_credential(&integration.config) {
                Ok(credential) => credential,
                Err(_) => {
                    let ask = if integration.config.codecommit.is_some() {
                        "Enter your access key ID and secret access key."
                    } else {
                        "Enter a token."
                    };
                    return user_page(
                        integration,
                        current.as_ref(),
                        &page_token,
                        Some(("err", ask)),
                        StatusCode::UNPROCESSABLE_ENTITY,
                    );
                }
            };
            match crate::pat::validate_and_store(integration, &runtime.vault, account, &credential)
                .await
            {
                Ok(meta) => {
                    crate::audit::pat_stored(
                        crate::audit::Via::ConnectPage,
                        id,
                        account,
                        &meta.host_login,
                    );
                    let text = format!(
                        "Saved. The host says this token belongs to {}.",
                        meta.host_login
                    );
                    user_page(
                        integration,
                        Some(&meta),
                        &page_token,
                        Some(("ok", &text)),
                        StatusCode::OK,
                    )
                }
                Err(err) => {
                    // The problem's detail comes from the host adapter's error, never the token.
                    let problem = crate::error::Problem::from(err);
                    crate::audit::pat_refused(
                        crate::audit::Via::ConnectPage,
                        id,
                        account,
                        problem.code.as_str(),
                    );
                    let text = format!("The token was not saved: {}", problem.detail);
                    user_page(
                        integration,
                        current.as_ref(),
                        &page_token,
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

    fn links(ttl: u64) -> Links {
        Links::new(&ConnectListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: "c".into(),
            key: "k".into(),
            public_url: "https://patgate.test:8444".into(),
            link_ttl: Duration::from_secs(ttl),
        })
    }

    fn token(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    #[test]
    fn a_link_opens_once_and_is_bound_to_its_user() {
        let l = links(900);
        let link = l.issue("ghe", "acc-1", 1000);
        assert!(link.url.starts_with("https://patgate.test:8444/connect/"));
        let (claims, page) = l.open(token(&link.url), 1001).unwrap();
        assert_eq!(
            (claims.integration.as_str(), claims.account.as_str()),
            ("ghe", "acc-1")
        );
        assert_eq!(l.open(token(&link.url), 1002), Err(LinkError::Used));
        assert_eq!(l.check_page(&page, 1003).unwrap().account, "acc-1");
        // A page token is not a link, and a link is not a page token.
        assert_eq!(l.open(&page, 1003), Err(LinkError::Invalid));
        let other = l.issue("ghe", "acc-2", 1000);
        assert_eq!(
            l.check_page(token(&other.url), 1003),
            Err(LinkError::Invalid)
        );
    }

    #[test]
    fn expired_forged_and_foreign_links_are_refused() {
        let l = links(900);
        let link = l.issue("ghe", "acc-1", 1000);
        assert_eq!(l.open(token(&link.url), 1900), Err(LinkError::Expired));
        // Another process (another key) made it: after a restart links die.
        assert_eq!(
            links(900).open(token(&link.url), 1001),
            Err(LinkError::Invalid)
        );
        // Claims changed without the key.
        let t = token(&link.url);
        let (payload, tag) = t.split_once('.').unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims.account = "acc-2".into();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(l.open(&forged, 1001), Err(LinkError::Invalid));
        assert_eq!(l.open("garbage", 1001), Err(LinkError::Invalid));
    }

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
