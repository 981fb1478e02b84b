//! The CLI's side of the admin socket.
//!
//! [`connect`] answers `None` when no service listens (no socket file, or a stale one that
//! refuses connections): the CLI then opens the vault itself. Any other failure (permission
//! denied, a broken answer, a refusal) is an error the CLI reports; it never falls back then,
//! because a running service holds the vault and a silent fallback would only hide why.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// The most of an answer the CLI reads (a listing of many records fits).
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;

/// Why a request over the admin socket failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot reach the running service on {path}: {source} (run this as the service user or root)", path = .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin socket {path} did not answer properly: {why}", path = .path.display())]
    Protocol { path: PathBuf, why: String },
    /// The service refused: its problem+json `code` and `detail`.
    #[error("the running service refused: {detail} ({code})")]
    Refused {
        status: StatusCode,
        code: String,
        detail: String,
    },
}

/// A connection to the running service's admin socket.
#[derive(Debug)]
pub struct AdminClient {
    path: PathBuf,
    sender: SendRequest<Full<Bytes>>,
}

/// Connects to the admin socket; `None` when no service listens there.
pub async fn connect(path: &Path) -> Result<Option<AdminClient>, AdminClientError> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(AdminClientError::Connect {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AdminClientError::Protocol {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "admin socket connection ended with an error");
        }
    });
    Ok(Some(AdminClient {
        path: path.to_path_buf(),
        sender,
    }))
}

/// What a path segment keeps as it is: the alphabet of integration ids and accountIds, which
/// the admin socket takes byte for byte (it decodes nothing).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':');

/// An id as a path segment: a valid id is sent as it is; anything else is percent-encoded,
/// so it arrives as one segment and the admin socket refuses it as not an id.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl AdminClient {
    /// Sends one request and parses the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<T, AdminClientError> {
        let (_, bytes) = self.call_raw(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| AdminClientError::Protocol {
            path: self.path.clone(),
            why: format!("unexpected answer: {e}"),
        })
    }

    /// Sends one request; a JSON body is sent from a buffer the caller zeroizes (secrets).
    /// Answers the headers and the body (pretty-printed JSON) of a successful answer.
    pub async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(http::HeaderMap, Bytes), AdminClientError> {
        let protocol = |why: String| AdminClientError::Protocol {
            path: self.path.clone(),
            why,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "patgate-admin");
        // Bytes::copy_from_slice: the body lives in hyper's buffer until it is written; the
        // caller's copy is the one that is wiped. (Bytes cannot zeroize.)
        let body = match &body {
            Some(json) => {
                builder = builder
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, json.len());
                Full::new(Bytes::copy_from_slice(json))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|e| protocol(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let status = response.status();
        let (head, body) = response.into_parts();
        let bytes = Limited::new(body, ANSWER_LIMIT)
            .collect()
            .await
            .map_err(|e| protocol(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct ProblemDoc {
                code: String,
                detail: String,
            }
            let problem: ProblemDoc = serde_json::from_slice(&bytes)
                .map_err(|_| protocol(format!("HTTP {status} without a problem document")))?;
            return Err(AdminClientError::Refused {
                status,
                code: problem.code,
                detail: problem.detail,
            });
        }
        Ok((head.headers, bytes))
    }
}
