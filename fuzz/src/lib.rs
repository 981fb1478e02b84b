//! What the fuzz targets share: how an input is split into request parts, the signed
//! request of `docs/protocol.md` Example 1, and oracles written apart from patgate's own
//! code (a property checked with the code under test proves nothing).
//!
//! Inputs are text so that seeds are readable: the first line holds the request line or
//! a header value, the rest is a body.

use http::header::{HeaderMap, HeaderValue};
use http::Method;
use patgate::policy::Operation;

/// The first line (without its `\n`) and the bytes after it; `None` when the first line is
/// not UTF-8. With no `\n`, the whole input is the first line and the rest is empty.
pub fn split_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    Some((std::str::from_utf8(line).ok()?, rest))
}

/// `METHOD SP PATH` (the path may hold anything but a line break).
fn request_line(line: &str) -> Option<(Method, &str)> {
    let (method, path) = line.split_once(' ')?;
    Some((Method::from_bytes(method.as_bytes()).ok()?, path))
}

/// A fuzz input as a request: `METHOD SP PATH` on the first line, the rest as the body.
pub fn request(data: &[u8]) -> Option<(Method, &str, &[u8])> {
    let (line, body) = split_line(data)?;
    let (method, path) = request_line(line)?;
    Some((method, path, body))
}

/// Whether `path`, percent-decoded once as the host would, has a `.` or `..` segment
/// when split at `/` or `\`. Written over bytes, apart from the proxy's own check.
pub fn has_dot_segment(path: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(|piece| piece == b"." || piece == b"..")
}

/// What the proxy does with a host path: refuse it (`None`) before any classification,
/// or classify it.
pub fn gated(path: &str, classify: impl FnOnce() -> Operation) -> Option<Operation> {
    if patgate::fuzzing::path_is_refused(path) {
        None
    } else {
        Some(classify())
    }
}

/// Properties every host classifier has: a path with a dot segment never reaches the
/// host as anything but refused; only POST and DELETE can be one of the three actions.
pub fn check_common(method: &Method, path: &str, op: Option<Operation>) {
    if has_dot_segment(path) {
        assert_eq!(op, None, "a dot-segment path was classified: {path:?}");
    }
    if let Some(op) = op {
        if op.is_action() {
            assert!(
                method == Method::POST || method == Method::DELETE,
                "{method} {path:?} classified as {op:?}"
            );
        }
    }
}

/// `@target-uri` of `docs/protocol.md` Example 1 (create a branch, GitHub Enterprise).
pub const EXAMPLE_TARGET_URI: &str =
    "https://patgate.example.com:8443/git/ghe/api/v3/repos/acme/api/git/refs";

/// The header fields of Example 1, without the signature fields.
pub fn example_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "patgate-account",
        HeaderValue::from_static("5b10ac8d82e05b22cc7d4ef5"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "content-digest",
        HeaderValue::from_static("sha-256=:M0AYCQhWbLD3C/4AF1N+WTyg/ejvPtzyzUdtxU4SS0w=:"),
    );
    headers
}

/// Parses a structured-field dictionary the way RFC 9421 fields are (RFC 8941 rules).
pub fn dictionary(value: &str) -> Option<sfv::Dictionary> {
    sfv::Parser::new(value)
        .with_version(sfv::Version::Rfc8941)
        .parse::<sfv::Dictionary>()
        .ok()
}

/// The byte sequence of member `key` of `dict`, when it is one.
pub fn byte_sequence<'d>(dict: &'d sfv::Dictionary, key: &str) -> Option<&'d [u8]> {
    dict.iter()
        .find(|(k, _)| k.as_str() == key)
        .and_then(|(_, entry)| match entry {
            sfv::ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            sfv::ListEntry::InnerList(_) => None,
        })
}

/// The longest a signature error message may get whatever the headers hold: messages
/// quote attacker strings truncated (64 characters, escaped), so a header cannot flood logs.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// The output of a future that is ready at once (the embedded stores answer without
/// waiting), polled once: a target has no runtime to drive it.
pub fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("an embedded store's future was not ready at once"),
    }
}
