//! One request, from the api listener to the git host and back:
//! allow-list → target URI → signature → route → body + digest → classify → policy → vault →
//! upstream request → streamed response.
//!
//! Every refusal is a [`Problem`]; nothing reaches the host before the signature, the body's
//! digest and the policy have all passed.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::error::{ErrorCode, Problem};
use crate::hosts::{self, COMMON_CREDENTIAL_HEADERS};
use crate::metrics::{LatencyLabels, Metrics, RequestLabels, UpstreamErrorLabels};
use crate::policy::{self, Decision, Facts, Operation};
use crate::ratelimit;
use crate::server::{unix_now, Connection, IntegrationRuntime, Runtime};
use crate::signature::{digest, Message, Requirements};

/// Names the acting Jira user (an Atlassian accountId).
pub const ACCOUNT_HEADER: &str = "patgate-account";
/// Tells the app which credential the host saw: `user` or `integration`.
pub const CREDENTIAL_HEADER: &str = "patgate-credential";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Entry point for every request on the api listener.
pub async fn handle(
    runtime: &Runtime,
    conn: &Connection,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut summary = Summary::default();
    let response = match route(runtime, conn, req, &request_id, &mut summary).await {
        Ok(response) => response,
        Err(problem) => {
            summary.code = Some(problem.code.as_str());
            problem.into_response(Some(&request_id))
        }
    };
    let latency = started.elapsed();
    let status = response.status().as_u16();
    summary.record(&runtime.metrics, status, latency);
    tracing::info!(
        target: "patgate::access",
        request_id = %request_id,
        client = %conn.client_subject,
        method = %method,
        path = %path,
        integration = summary.integration.as_deref().unwrap_or("-"),
        account = summary.account.as_deref().unwrap_or("-"),
        operation = summary.operation_label(),
        credential = summary.credential.map_or("-", Decision::as_str),
        status,
        upstream_status = summary.upstream_status,
        code = summary.code.unwrap_or("-"),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// What the decision log line and the metrics say about a request.
#[derive(Debug, Default)]
struct Summary {
    /// Set only from the config's integrations (never from the URL as sent), so metric
    /// labels stay bounded.
    integration: Option<String>,
    account: Option<String>,
    operation: Option<Operation>,
    /// A call to patgate's own `/v1` API rather than a proxied one.
    api: bool,
    credential: Option<Decision>,
    /// The host's status, when the host answered (patgate's own differs when it refused).
    upstream_status: Option<u16>,
    code: Option<&'static str>,
}

impl Summary {
    /// `read`, `create-branch`, …; `pat-api` for `/v1`; `-` when refused before either.
    fn operation_label(&self) -> &'static str {
        match self.operation {
            Some(operation) => operation.as_str(),
            None if self.api => "pat-api",
            None => "-",
        }
    }

    /// `patgate_requests_total` and `patgate_request_duration_seconds`. Label values come
    /// from the config and fixed names only, never an account.
    fn record(&self, metrics: &Metrics, status: u16, latency: std::time::Duration) {
        let integration = self.integration.as_deref().unwrap_or("-").to_string();
        let operation = self.operation_label().to_string();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                integration: integration.clone(),
                operation: operation.clone(),
                credential: self.credential.map_or("-", Decision::as_str).to_string(),
                status,
            })
            .inc();
        metrics
            .latency
            .get_or_create(&LatencyLabels {
                integration,
                operation,
            })
            .observe(latency.as_secs_f64());
    }
}

async fn route(
    runtime: &Runtime,
    conn: &Connection,
    req: Request<Incoming>,
    request_id: &str,
    summary: &mut Summary,
) -> Result<Response<ResponseBody>, Problem> {
    if !conn.client_allowed {
        return Err(Problem::new(
            ErrorCode::ClientNotAllowed,
            "the client certificate carries none of the SANs on api.allowed_client_sans",
        ));
    }
    let target_uri = target_uri(&req)?;
    let has_body = !req.body().is_end_stream();
    runtime
        .verifier
        .verify(
            &Message {
                method: req.method(),
                target_uri: &target_uri,
                headers: req.headers(),
            },
            Requirements { has_body },
            unix_now(),
        )
        .map_err(Problem::from)?;
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/git/") {
        let (id, host_path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let integration = runtime.integrations.get(id).ok_or_else(|| {
            Problem::new(
                ErrorCode::UnknownIntegration,
                format!("no integration `{id}` is configured"),
            )
        })?;
        let host_path = host_path.to_string();
        forward(
            runtime,
            conn,
            integration,
            req,
            &host_path,
            request_id,
            summary,
        )
        .await
    } else if let Some(rest) = path.strip_prefix("/v1/") {
        summary.api = true;
        // `/v1/integrations/{id}/…`: named in metrics only when it is configured.
        summary.integration = rest
            .strip_prefix("integrations/")
            .and_then(|r| r.split('/').next())
            .and_then(|id| runtime.integrations.get_key_value(id))
            .map(|(id, _)| id.clone());
        crate::api::handle(runtime, conn, req, request_id).await
    } else {
        Err(Problem::new(
            ErrorCode::NotFound,
            "patgate serves /git/{integration}/… and /v1/…",
        ))
    }
}

/// The absolute URI the app must have signed as `@target-uri`: `https://` + the authority it
/// addressed + the raw path and query.
fn target_uri(req: &Request<Incoming>) -> Result<String, Problem> {
    let bad = |why: &str| Problem::new(ErrorCode::BadRequest, why.to_string());
    let hosts: Vec<&HeaderValue> = req.headers().get_all(header::HOST).iter().collect();
    if hosts.len() > 1 {
        return Err(bad("more than one Host header"));
    }
    let host = hosts
        .first()
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| bad("Host is not visible ASCII"))?;
    let authority = match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .ok_or_else(|| bad("HTTP/2 request without :authority"))?;
            if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority)) {
                return Err(bad("Host differs from :authority"));
            }
            authority
        }
        _ => {
            if req.uri().authority().is_some() {
                return Err(bad(
                    "absolute-form request targets are not accepted; send the path only",
                ));
            }
            host.ok_or_else(|| bad("the Host header is missing"))?
        }
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("the Host header is not a host[:port]"));
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .ok_or_else(|| bad("the request target must be a path starting with /"))?;
    Ok(format!("https://{authority}{path_and_query}"))
}

async fn forward(
    runtime: &Runtime,
    conn: &Connection,
    integration: &IntegrationRuntime,
    req: Request<Incoming>,
    host_path: &str,
    request_id: &str,
    summary: &mut Summary,
) -> Result<Response<ResponseBody>, Problem> {
    let config = &integration.config;
    summary.integration = Some(config.id.clone());
    refuse_dot_segments(host_path)?;
    let account = account(req.headers())?;
    summary.account = account.clone();
    let (parts, body) = req.into_parts();
    let body = read_body(
        parts.headers.get(header::CONTENT_LENGTH),
        body,
        config.max_body_bytes,
    )
    .await?;
    check_digest(&parts.headers, &body)?;

    let operation = integration
        .adapter
        .classify(&parts.method, host_path, &parts.headers, &body);
    summary.operation = Some(operation);
    if operation.is_action() && account.is_none() {
        return Err(Problem::new(
            ErrorCode::BadRequest,
            "create branch, delete branch and create pull request must name the acting Jira user in Patgate-Account",
        ));
    }
    // After the signature (the account is signed) and the classification (reads and
    // actions have their own quotas), before the vault and the host: see crate::ratelimit.
    runtime.limits.check(
        &ratelimit::Subject {
            client: &conn.client_subject,
            integration: &config.id,
            account: account.as_deref(),
            class: ratelimit::Class::of(operation),
            request_id,
        },
        &runtime.metrics,
    )?;
    let user_pat = match (
        &account,
        policy::consults_user_pat(operation, config.require_user_pat),
    ) {
        (Some(account), true) => runtime.vault.user_pat(&config.id, account)?,
        _ => None,
    };
    let decision = policy::decide(Facts {
        operation,
        require_user_pat: config.require_user_pat,
        host_supports_pats: integration.adapter.supports_pats(),
        user_has_pat: user_pat.is_some(),
        allow_other_writes: config.allow_other_writes,
    })
    .map_err(|refusal| {
        let mut problem = Problem::from(refusal);
        if problem.code == ErrorCode::UserPatRequired {
            // The user can act on this at once: a link to the page where they enter a PAT.
            problem.setup_url = runtime
                .connect
                .as_ref()
                .zip(account.as_deref())
                .map(|(links, account)| links.issue(&config.id, account, unix_now()).url);
        }
        problem
    })?;
    summary.credential = Some(decision);
    let held = match (decision, account.as_deref()) {
        (Decision::UseUserPat, Some(account)) => ratelimit::HoldCredential::User(account),
        _ => ratelimit::HoldCredential::Integration,
    };
    runtime
        .limits
        .holds
        .check(&config.id, held, &runtime.metrics)?;
    if let (Decision::UseUserPat, Some(account)) = (decision, account.as_deref()) {
        runtime.pat_uses.record(&config.id, account, unix_now());
    }
    let credential = match decision {
        Decision::UseUserPat => user_pat.map(|(credential, _meta)| credential),
        Decision::UseIntegrationToken => runtime.vault.integration_secret(&config.id)?,
    }
    .ok_or_else(|| {
        Problem::new(
            ErrorCode::Unavailable,
            format!(
                "integration `{}` has no secret in the vault; an admin must run `patgate integration set-secret {}`",
                config.id, config.id
            ),
        )
    })?;

    let query = parts
        .uri
        .query()
        .and_then(|q| hosts::strip_query_params(q, integration.adapter.credential_query_params()));
    let uri = integration
        .upstream
        .uri(host_path, query.as_deref())
        .map_err(|e| {
            Problem::new(
                ErrorCode::BadRequest,
                format!("the path cannot be forwarded: {e}"),
            )
        })?;
    let mut headers =
        forwarded_request_headers(&parts.headers, integration.adapter.credential_headers());
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    integration.adapter.default_headers(&mut headers);
    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;
    integration
        .adapter
        .apply_credential(&mut upstream_req, &credential)
        .map_err(|e| {
            Problem::new(
                ErrorCode::Unavailable,
                format!("the stored credential does not fit this host: {e}"),
            )
        })?;
    drop(credential);
    let response = integration
        .upstream
        .send(upstream_req)
        .await
        .map_err(|err| {
            let problem = Problem::from(err);
            runtime
                .metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    integration: config.id.clone(),
                    kind: problem.code.as_str().to_string(),
                })
                .inc();
            problem
        })?;
    summary.upstream_status = Some(response.status().as_u16());

    let (mut head, incoming) = response.into_parts();
    runtime.limits.holds.observe(
        &config.id,
        held,
        head.status,
        &head.headers,
        &runtime.metrics,
    );
    strip_hop_by_hop(&mut head.headers);
    head.headers.insert(
        CREDENTIAL_HEADER,
        HeaderValue::from_static(decision.as_str()),
    );
    head.version = Version::HTTP_11;
    // After the head, a fault can no longer be a problem document: the stream is cut (the
    // app sees its body fail), counted and logged here.
    let errors = runtime.metrics.upstream_errors.clone();
    let integration_id = config.id.clone();
    let request_id = request_id.to_string();
    let body = integration
        .upstream
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

/// The longest `X-Request-Id` taken from the app.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id: the app's `X-Request-Id` when it is sane (one field, at most
/// [`MAX_REQUEST_ID_LEN`] characters of letters, digits and `-_.:/+=@`, so it cannot break
/// a log line or a header), else a new random one. It is logged, returned to the app and
/// forwarded to the host.
fn request_id(headers: &HeaderMap) -> String {
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    let first = values.next();
    first
        .filter(|_| values.next().is_none())
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=' | b'@')
        })
}

/// 24 hex digits: 6 random bytes drawn once per process, then a 6-byte counter. Unique within
/// the process and, with overwhelming likelihood, across restarts and replicas; cheap enough
/// for every request (no system call, no formatting machinery). Not a secret.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<[u8; 6]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use rand_core::RngCore;
        let mut bytes = [0u8; 6];
        rand_core::OsRng.fill_bytes(&mut bytes);
        bytes
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(24);
    for b in prefix.iter().chain(&count[2..]) {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// An Atlassian accountId: 24 hex digits, or `NNNNNN:uuid`. Anything outside a small ASCII
/// alphabet is refused so that look-alikes (other case folding, Unicode, spaces) cannot name
/// another user's vault record.
pub fn is_valid_account_id(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= 128
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
}

fn account(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(ACCOUNT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::new(
            ErrorCode::BadRequest,
            "more than one Patgate-Account header",
        ));
    }
    let account = value
        .to_str()
        .ok()
        .filter(|a| is_valid_account_id(a))
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::BadRequest,
                "Patgate-Account must be an Atlassian accountId (letters, digits, `:`, `-`, `_`, `.`)",
            )
        })?;
    Ok(Some(account.to_string()))
}

/// Refuses `.` and `..` segments, also when percent-encoded or hidden behind an encoded
/// slash: the host would resolve them and the request could leave the path it was
/// classified by.
pub(crate) fn refuse_dot_segments(path: &str) -> Result<(), Problem> {
    for segment in hosts::segments(path) {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        let is_dot = |piece: &str| piece == "." || piece == "..";
        if is_dot(&decoded) || decoded.split(['/', '\\']).any(is_dot) {
            return Err(Problem::new(
                ErrorCode::BadRequest,
                "dot segments (`.`, `..`) are not allowed in the path",
            ));
        }
    }
    Ok(())
}

/// Reads the whole body, refusing it as soon as it passes `limit`. Bodies are buffered
/// because their digest must be checked before the host sees a byte; the limit bounds what
/// one request can hold.
pub(crate) async fn read_body(
    content_length: Option<&HeaderValue>,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            ErrorCode::BodyTooLarge,
            format!("the body is over the limit of {limit} bytes"),
        )
    };
    if let Some(length) = content_length {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| Problem::new(ErrorCode::BadRequest, "Content-Length is not a number"))?;
        if length > limit as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Problem::new(
            ErrorCode::BadRequest,
            format!("the request body could not be read: {err}"),
        )),
    }
}

/// When there is a body, or a Content-Digest anyway, the digest must match the bytes.
pub(crate) fn check_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
    let values: Vec<&HeaderValue> = headers.get_all("content-digest").iter().collect();
    match values.as_slice() {
        [] if body.is_empty() => Ok(()),
        [] => Err(Problem::new(
            ErrorCode::SignatureInvalid,
            "a request with a body must carry a signed Content-Digest",
        )),
        [value] => {
            let value = value.to_str().map_err(|_| {
                Problem::new(
                    ErrorCode::SignatureInvalid,
                    "Content-Digest is not visible ASCII",
                )
            })?;
            digest::verify(value, body).map_err(Problem::from)
        }
        _ => Err(Problem::new(
            ErrorCode::SignatureInvalid,
            "send Content-Digest as one header field",
        )),
    }
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
    fn dot_segments_are_refused_in_every_spelling() {
        for path in [
            "/api/v3/../other",
            "/api/v3/./x",
            "/api/v3/%2e%2e/x",
            "/api/v3/%2E%2e/x",
            "/api/v3/.%2e/x",
            "/api/v3/a%2F..%2Fb",
            "/api/v3/a%5C..%5Cb",
            "/..",
        ] {
            assert!(refuse_dot_segments(path).is_err(), "{path}");
        }
        for path in [
            "/api/v3/repos/a/b/git/refs/heads/fix...x",
            "/api/v3/x%2Fy",
            "/.well-known/x",
            "/",
        ] {
            assert!(refuse_dot_segments(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn request_ids_are_taken_only_when_sane() {
        let id = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(REQUEST_ID_HEADER, HeaderValue::from_str(v).unwrap());
            }
            request_id(&h)
        };
        for sane in [
            "abc-123",
            "req_1.2:3/4+5=6@x",
            &"a".repeat(MAX_REQUEST_ID_LEN),
        ] {
            assert_eq!(id(&[sane]), sane);
        }
        for insane in [
            "",
            "a b",
            "a\"b",
            "a,b",
            "{}",
            &"a".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            let made = id(&[insane]);
            assert_ne!(made, insane);
            assert_eq!(made.len(), 24, "{made}");
            assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(id(&["one", "two"]).len(), 24, "two ids: neither is taken");
        assert_eq!(id(&[]).len(), 24);
    }

    #[test]
    fn made_request_ids_are_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn account_ids_are_strict() {
        assert!(is_valid_account_id("5b10ac8d82e05b22cc7d4ef5"));
        assert!(is_valid_account_id(
            "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"
        ));
        for bad in [
            "",
            " 5b10",
            "5b10 ",
            "5b1\u{0430}",
            "a/b",
            "a\tb",
            &"x".repeat(129),
        ] {
            assert!(!is_valid_account_id(bad), "{bad:?}");
        }
    }

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
