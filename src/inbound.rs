//! What a caller sends, read at the edge: the target URI it signed, its request id, the
//! acting account, the path's dot segments, the body (bounded) and its digest.
//!
//! Shared by the api listener's requests (`/git`, `/v1`), the connect page's forms and the
//! admin socket, so a request is read the same way wherever it arrives. Everything here is
//! pure apart from reading the body; refusals are [`InboundError`]s.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Request, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::clock::Clock;
use crate::ids::{AccountId, InvalidId};
use crate::signature::{digest, SignatureError};

/// Names the acting Jira user (an Atlassian accountId).
pub(crate) const ACCOUNT_HEADER: &str = "patgate-account";
/// Tells the app which credential the host saw: `user` or `integration`.
pub(crate) const CREDENTIAL_HEADER: &str = "patgate-credential";
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest `X-Request-Id` taken from the app.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 128;

/// Why what a caller sent cannot be read. The messages are the problem details the caller
/// sees: they say what is wrong with the request, never echo a value that could be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("more than one Host header")]
    TwoHosts,
    #[error("Host is not visible ASCII")]
    HostNotAscii,
    #[error("HTTP/2 request without :authority")]
    NoAuthority,
    #[error("Host differs from :authority")]
    HostNotAuthority,
    #[error("absolute-form request targets are not accepted; send the path only")]
    AbsoluteForm,
    #[error("the Host header is missing")]
    NoHost,
    #[error("the Host header is not a host[:port]")]
    BadHost,
    #[error("the request target must be a path starting with /")]
    BadTarget,
    #[error("dot segments (`.`, `..`) are not allowed in the path")]
    DotSegments,
    #[error("more than one Patgate-Account header")]
    TwoAccounts,
    #[error("Patgate-Account must be an Atlassian accountId: {0}")]
    BadAccount(InvalidId),
    #[error("Content-Length is not a number")]
    BadContentLength,
    #[error("the body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("method override ({0}) is not accepted: send the request with its own method")]
    MethodOverride(&'static str),
    #[error("the body did not arrive in full within connections.body_read_timeout_ms of the request head")]
    BodyTimeout,
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("a request with a body must carry a signed Content-Digest")]
    NoDigest,
    #[error("Content-Digest is not visible ASCII")]
    DigestNotAscii,
    #[error("send Content-Digest as one header field")]
    TwoDigests,
    /// The digest is malformed or does not match the body.
    #[error(transparent)]
    Digest(#[from] SignatureError),
}

/// The absolute URI the app must have signed as `@target-uri`: `https://` + the authority it
/// addressed + the raw path and query.
pub(crate) fn target_uri<B>(req: &Request<B>) -> Result<String, InboundError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(InboundError::TwoHosts);
    }
    let host = host
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| InboundError::HostNotAscii)?;
    let authority = match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .ok_or(InboundError::NoAuthority)?;
            if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority)) {
                return Err(InboundError::HostNotAuthority);
            }
            authority
        }
        _ => {
            if req.uri().authority().is_some() {
                return Err(InboundError::AbsoluteForm);
            }
            host.ok_or(InboundError::NoHost)?
        }
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(InboundError::BadHost);
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .ok_or(InboundError::BadTarget)?;
    Ok(format!("https://{authority}{path_and_query}"))
}

/// The request id: the app's `X-Request-Id` when it is sane (one field, at most
/// [`MAX_REQUEST_ID_LEN`] characters of letters, digits and `-_.:/+=@`, so it cannot break
/// a log line or a header), else a new random one. It is logged, returned to the app and
/// forwarded to the host.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
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

/// The `Patgate-Account` header: `None` when absent, an error when sent twice or when it is
/// not an accountId byte for byte.
pub(crate) fn account(headers: &HeaderMap) -> Result<Option<AccountId>, InboundError> {
    let mut values = headers.get_all(ACCOUNT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(InboundError::TwoAccounts);
    }
    let text = value
        .to_str()
        .map_err(|_| InboundError::BadAccount(InvalidId::Account))?;
    AccountId::parse(text)
        .map(Some)
        .map_err(InboundError::BadAccount)
}

/// Refuses `.` and `..` segments, also when percent-encoded or hidden behind an encoded
/// slash: the host would resolve them and the request could leave the path it was
/// classified by.
pub(crate) fn refuse_dot_segments(path: &str) -> Result<(), InboundError> {
    // Every segment, also of a path without its leading `/` (hosts::segments yields none
    // for such a path, which is right for classifying but would let this check pass; found
    // by fuzz/ classify_github).
    for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        let is_dot = |piece: &str| piece == "." || piece == "..";
        if is_dot(&decoded) || decoded.split(['/', '\\']).any(is_dot) {
            return Err(InboundError::DotSegments);
        }
    }
    Ok(())
}

/// Header fields that web frameworks (Rails, Laravel, Express, ASP.NET, Spring) may honour to
/// run a request as another method than the one patgate classified it by.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// The form field and query parameter of the same trick (Rack's `MethodOverride`, Laravel).
const METHOD_OVERRIDE_FIELD: &str = "_method";

/// Refuses a request that asks the host to treat it as another method: a method-override
/// header field, or a `_method` query parameter (the name compared after percent-decoding
/// and case-insensitively, as a framework might read it).
pub(crate) fn refuse_method_override(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), InboundError> {
    if let Some(name) = METHOD_OVERRIDE_HEADERS
        .into_iter()
        .find(|name| headers.contains_key(*name))
    {
        return Err(InboundError::MethodOverride(name));
    }
    if query.is_some_and(|query| form_names(query.as_bytes()).any(is_override_field)) {
        return Err(InboundError::MethodOverride(
            "the `_method` query parameter",
        ));
    }
    Ok(())
}

/// Refuses a form body (`application/x-www-form-urlencoded`, `multipart/form-data`) with a
/// `_method` field: Rack reads one from either kind of POST body.
pub(crate) fn refuse_method_override_in_body(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), InboundError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let refused = match content_type.as_deref() {
        Some("application/x-www-form-urlencoded") => form_names(body).any(is_override_field),
        // A part named `_method`, quoted or not (RFC 7578 §4.2 names parts in
        // Content-Disposition).
        Some("multipart/form-data") => {
            let lower = body.to_ascii_lowercase();
            [&b"name=\"_method\""[..], b"name=_method"]
                .iter()
                .any(|needle| lower.windows(needle.len()).any(|w| w == *needle))
        }
        _ => false,
    };
    if refused {
        return Err(InboundError::MethodOverride("a `_method` form field"));
    }
    Ok(())
}

/// The decoded names of a form or query string (`a=1&b=2`, `;` also separating, as some
/// frameworks split).
fn form_names(form: &[u8]) -> impl Iterator<Item = String> + '_ {
    form.split(|b| *b == b'&' || *b == b';').map(|pair| {
        let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
        let name: Vec<u8> = name
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_encoding::percent_decode(&name)
            .decode_utf8_lossy()
            .into_owned()
    })
}

fn is_override_field(name: String) -> bool {
    name.trim().eq_ignore_ascii_case(METHOD_OVERRIDE_FIELD)
}

/// When a request's body must have arrived in full: set by the listener when the request
/// head arrives (`connections.body_read_timeout_ms` later), read by [`read_body`].
#[derive(Debug, Clone)]
pub(crate) struct BodyDeadline {
    clock: Clock,
    /// On `clock`'s monotonic time ([`Clock::elapsed`]).
    at: Duration,
}

impl BodyDeadline {
    pub(crate) fn new(clock: &Clock, at: Duration) -> BodyDeadline {
        BodyDeadline {
            clock: clock.clone(),
            at,
        }
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit`, or once the request's
/// [`BodyDeadline`] (an extension of `parts`, when the listener set one) has passed. Bodies
/// are buffered because their digest must be checked before the host sees a byte; the limit
/// bounds what one request can hold, the deadline how long.
pub(crate) async fn read_body(
    parts: &Parts,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, InboundError> {
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or(InboundError::BadContentLength)?;
        if length > limit as u64 {
            return Err(InboundError::BodyTooLarge { limit });
        }
    }
    let collect = Limited::new(body, limit).collect();
    let collected = match parts.extensions.get::<BodyDeadline>() {
        Some(deadline) => {
            let left = deadline.at.saturating_sub(deadline.clock.elapsed());
            deadline
                .clock
                .timeout(left, collect)
                .await
                .map_err(|_| InboundError::BodyTimeout)?
        }
        None => collect.await,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(InboundError::BodyTooLarge { limit })
        }
        Err(err) => Err(InboundError::BodyUnreadable(err.to_string())),
    }
}

/// When there is a body, or a Content-Digest anyway, the digest must match the bytes.
pub(crate) fn check_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), InboundError> {
    let mut values = headers.get_all("content-digest").iter();
    match (values.next(), values.next()) {
        (None, _) if body.is_empty() => Ok(()),
        (None, _) => Err(InboundError::NoDigest),
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| InboundError::DigestNotAscii)?;
            Ok(digest::verify(value, body)?)
        }
        (Some(_), Some(_)) => Err(InboundError::TwoDigests),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn method_overrides_are_refused_in_every_spelling() {
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("DELETE"),
            );
            assert!(
                matches!(
                    refuse_method_override(&h, None),
                    Err(InboundError::MethodOverride(_))
                ),
                "{name}"
            );
        }
        let none = HeaderMap::new();
        for query in [
            "_method=DELETE",
            "a=1&_method=DELETE",
            "a=1;_method=DELETE",
            "%5Fmethod=DELETE",
            "_METHOD=put",
            "_method",
        ] {
            assert!(
                refuse_method_override(&none, Some(query)).is_err(),
                "{query}"
            );
        }
        for query in ["per_page=100", "method=x", "x_method=1", "a=_method"] {
            assert!(
                refuse_method_override(&none, Some(query)).is_ok(),
                "{query}"
            );
        }
        let form = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            h
        };
        let urlencoded = form("application/x-www-form-urlencoded; charset=utf-8");
        assert!(refuse_method_override_in_body(&urlencoded, b"ref=x&_method=DELETE").is_err());
        assert!(refuse_method_override_in_body(&urlencoded, b"ref=x&sha=y").is_ok());
        let multipart = form("multipart/form-data; boundary=b");
        let part =
            b"--b\r\nContent-Disposition: form-data; NAME=\"_method\"\r\n\r\nDELETE\r\n--b--";
        assert!(refuse_method_override_in_body(&multipart, part).is_err());
        // JSON bodies are the host's own business.
        let json = form("application/json");
        assert!(refuse_method_override_in_body(&json, br#"{"_method":"DELETE"}"#).is_ok());
    }

    /// Regression input of fuzz/ classify_github.
    #[test]
    fn dot_segments_are_refused_in_a_path_without_its_leading_slash() {
        assert!(refuse_dot_segments("ETE /api/v3repos/acme/me/api/git/refs/%2e%2e/x").is_err());
        assert!(refuse_dot_segments("../x").is_err());
        assert!(refuse_dot_segments("a/b").is_ok());
    }

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
    fn the_account_header_is_taken_as_sent() {
        let header = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(ACCOUNT_HEADER, HeaderValue::from_str(v).unwrap());
            }
            account(&h)
        };
        assert_eq!(header(&[]), Ok(None));
        assert_eq!(
            header(&["557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"])
                .unwrap()
                .unwrap()
                .as_str(),
            "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"
        );
        assert_eq!(header(&["a", "b"]), Err(InboundError::TwoAccounts));
        for bad in ["%41lice", "..", "a b"] {
            assert!(
                matches!(header(&[bad]), Err(InboundError::BadAccount(_))),
                "{bad}"
            );
        }
    }
}
