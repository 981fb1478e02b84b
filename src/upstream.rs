//! The connector to git hosts: pooled HTTP/1.1 + HTTP/2 clients per integration, over
//! rustls with the integration's roots, with connect and response timeouts, directly or
//! through the integration's HTTP CONNECT proxy (TLS end to end).
//!
//! Each integration has one pool per data-plane core and one for the main runtime
//! ([`crate::cores`]): a connection to the host is made, driven and reused by the thread
//! that serves the requests on it, so a request and its upstream connection never wake
//! another thread. The pools share the TLS configuration (roots, session cache).
//!
//! Kept apart from the listener side (as Pingora keeps connectors apart from listeners) so
//! that failures are blamed on the right party: anything from here is the host's or the
//! network's, and maps to 502/504 before the response head, or to a cut stream after it.

use std::error::Error as StdError;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

use crate::body::BoxError;
use crate::clock::{Clock, Sleep};
use crate::config::Integration;
use crate::tls::{self, TlsError};

/// What went wrong talking to the host. Messages name the host, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the git host: {0}")]
    Unreachable(String),
    #[error("TLS with the git host failed: {0}")]
    Tls(String),
    #[error("the git host did not answer within {}s", after.as_secs_f64())]
    Timeout { after: Duration },
    #[error("the connection to the git host failed: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// The `kind` label of `patgate_upstream_errors_total`.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Protocol(_) => "upstream-unreachable",
            UpstreamError::Tls(_) => "upstream-tls",
            UpstreamError::Timeout { .. } => "upstream-timeout",
        }
    }
}

/// The host stopped sending its response body: nothing came for the integration's
/// `request_timeout` while patgate waited for more.
#[derive(Debug, thiserror::Error)]
#[error("the git host sent no more of its response body within {}s", after.as_secs_f64())]
pub struct BodyStalled {
    pub after: Duration,
}

/// The pooled client, direct or through a CONNECT tunnel (its connector type differs).
#[derive(Debug, Clone)]
enum Pool {
    Direct(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    Proxied(Client<HttpsConnector<Tunnel<HttpConnector>>, Full<Bytes>>),
}

impl Pool {
    fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Pool::Direct(client) => client.request(request),
            Pool::Proxied(client) => client.request(request),
        }
    }
}

/// What patgate calls itself in `User-Agent`.
const USER_AGENT: &str = concat!("patgate/", env!("CARGO_PKG_VERSION"));

/// The pooled clients for one integration's host: index 0 for the main runtime, then one per
/// data-plane core ([`crate::cores::share`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    pools: Arc<[Pool]>,
    /// `https://host[:port]` plus the base URL's path prefix (no trailing slash).
    base: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// What the request and body timeouts wait on.
    clock: Clock,
}

impl Upstream {
    /// The clients for `integration`'s host, for a data plane of `cores` cores.
    pub fn new(
        integration: &Integration,
        clock: &Clock,
        cores: usize,
    ) -> Result<Upstream, TlsError> {
        let roots = tls::upstream_roots(integration.roots, integration.extra_ca.as_deref())?;
        let tls_config = tls::upstream_client_config(roots)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(integration.connect_timeout));
        let https = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(tls_config.clone())
                .https_only()
                .enable_all_versions()
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(hyper_util::rt::TokioTimer::new());
        let pool = || match &integration.proxy {
            None => Pool::Direct(builder.build(https().wrap_connector(http.clone()))),
            Some(proxy) => Pool::Proxied(
                builder.build(https().wrap_connector(Tunnel::new(proxy.clone(), http.clone()))),
            ),
        };
        Ok(Upstream {
            pools: (0..=cores).map(|_| pool()).collect(),
            base: integration
                .base_url
                .to_string()
                .trim_end_matches('/')
                .to_string(),
            connect_timeout: integration.connect_timeout,
            request_timeout: integration.request_timeout,
            clock: clock.clone(),
        })
    }

    /// The host URI for a raw path (starting with `/`) and optional raw query. Bytes are
    /// copied as they are: never decoded, never normalised.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut uri =
            String::with_capacity(self.base.len() + path.len() + 1 + query.map_or(0, str::len));
        uri.push_str(&self.base);
        uri.push_str(path);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        Ok(Uri::try_from(uri)?)
    }

    /// Sends a request and waits for the response head, within the integration's timeout.
    /// The body is streamed by the caller.
    /// Every request gets `User-Agent: patgate/{version}` unless it has one (the app's is
    /// kept), whatever the host: host admins can tell patgate's traffic apart. (CodeCommit's
    /// signature is made before and does not cover it.)
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = request.map(Full::new);
        request
            .headers_mut()
            .entry(http::header::USER_AGENT)
            .or_insert(http::HeaderValue::from_static(USER_AGENT));
        match (self.clock)
            .timeout(
                self.request_timeout,
                self.pools[crate::cores::share(self.pools.len())].request(request),
            )
            .await
        {
            Err(_) => Err(UpstreamError::Timeout {
                after: self.request_timeout,
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify(&err, self.connect_timeout)),
        }
    }
}

impl Upstream {
    /// The host's response body, streamed on as it comes, and cut with [`BodyStalled`] when
    /// the host sends nothing for `request_timeout` while patgate waits for more (like
    /// nginx's `proxy_read_timeout`, which bounds the time between two reads, not the
    /// whole). A body that keeps coming, however large or slow, is never cut.
    pub fn stream(&self, body: Incoming) -> ResponseStream {
        ResponseStream {
            body,
            idle: self.request_timeout,
            deadline: self.clock.sleep(self.request_timeout),
            waiting: false,
        }
    }

    /// Reads a whole small answer of the host (who-am-I, version probes), at most `limit`
    /// bytes, cut like [`Upstream::stream`] when the host stalls: then it is a timeout.
    /// `what` names the answer in the error.
    pub async fn read_to_end(
        &self,
        body: Incoming,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        match Limited::new(self.stream(body), limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) => Err(match err.downcast::<BodyStalled>() {
                Ok(stalled) => UpstreamError::Timeout {
                    after: stalled.after,
                },
                Err(err) => UpstreamError::Protocol(format!("reading {what}: {err}")),
            }),
        }
    }
}

/// See [`Upstream::stream`].
#[derive(Debug)]
pub struct ResponseStream {
    body: Incoming,
    idle: Duration,
    /// Reset (not remade) each time patgate starts waiting on the host.
    deadline: Sleep,
    /// Whether patgate is waiting on the host. The wait starts when the app's side asks for
    /// more, so an app that reads slowly (holding the host back by flow control) is never
    /// taken for a stalled host.
    waiting: bool,
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.waiting {
            this.waiting = true;
            this.deadline.reset(this.idle);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => match Pin::new(&mut this.deadline).poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(Box::new(BodyStalled { after: this.idle }))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Upstream {
    /// Whether the host answers at all: `HEAD` on the base URL, without a credential. Any
    /// HTTP status counts as reachable; connect, TLS and timeout failures are returned.
    pub async fn probe(&self) -> Result<http::StatusCode, UpstreamError> {
        let uri = self
            .uri("/", None)
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let mut request = Request::new(Bytes::new());
        *request.method_mut() = http::Method::HEAD;
        *request.uri_mut() = uri;
        Ok(self.send(request).await?.status())
    }
}

/// Decides whose fault a client error is by walking its causes. `io::Error::source()` skips
/// the error it wraps (it returns that error's source), so each one is unwrapped by hand.
fn classify(err: &hyper_util::client::legacy::Error, connect_timeout: Duration) -> UpstreamError {
    let mut tls = None;
    let mut timed_out = false;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(current) = cause {
        innermost = current.to_string();
        if let Some(rustls_err) = current.downcast_ref::<rustls::Error>() {
            tls = Some(rustls_err.to_string());
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                timed_out = true;
            }
            if let Some(inner) = io.get_ref() {
                // Visit the wrapped error itself next (it may be another io::Error).
                cause = Some(inner as &(dyn StdError + 'static));
                continue;
            }
        }
        cause = current.source();
    }
    if let Some(reason) = tls {
        UpstreamError::Tls(reason)
    } else if timed_out {
        UpstreamError::Timeout {
            after: connect_timeout,
        }
    } else if err.is_connect() {
        UpstreamError::Unreachable(innermost)
    } else {
        UpstreamError::Protocol(innermost)
    }
}
