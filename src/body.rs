//! Body types shared by the listener, the proxy and the upstream client.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Errors a streamed body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response patgate sends: a fixed buffer (problem documents, API answers) or the git
/// host's body streamed through.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete in-memory body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
