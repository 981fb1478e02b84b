//! The api listener: TLS with client certificates (or, for Forge callers, without), then each
//! request routed to the pipeline
//! (`/git/…`) or patgate's own API (`/v1/…`) once its caller is authenticated, and every
//! answer recorded in the decision log and the metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::authn::{ClientCertificate, Connection};
use crate::body::ResponseBody;
use crate::config::{ApiListener, ClientCertificateMode};
use crate::error::{Problem, RequestError};
use crate::inbound::{self, REQUEST_ID_HEADER};
use crate::pipeline::{self, Summary};
use crate::runtime::{Current, Runtime};
use crate::upstream::UpstreamError;

use super::limits::{self, Activity, Gate, Timeouts, Tracked, Watched};

/// Accepts until `shutdown` completes, then closes the socket (new connections are refused)
/// and lets every connection close gracefully once `stop` turns true. Every connection is
/// counted by `gate` and cut when `cut` turns true.
pub(super) async fn serve(
    current: Arc<Current>,
    listener: TcpListener,
    gate: Arc<Gate>,
    stop: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let admitted = tokio::select! {
            admitted = super::admit_next(&listener, "api listener", &current, &gate, super::MAX_API) => admitted,
            () = &mut shutdown => break,
        };
        let super::Admitted {
            tcp,
            peer,
            permit,
            activity,
            accepted,
        } = admitted;
        let _ = tcp.set_nodelay(true);
        let connection = serve_connection(
            current.clone(),
            tcp,
            peer,
            Accepted {
                gate: gate.clone(),
                activity,
                accepted,
                stop: stop.clone(),
            },
        );
        let mut cut = cut.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                _ = cut.changed() => tracing::info!(%peer, "connection closed: the shutdown grace period is over"),
            }
            drop(permit);
        });
    }
}

/// What the accept loop hands a connection: its place in the listener's [`Gate`].
struct Accepted {
    gate: Arc<Gate>,
    activity: Arc<Activity>,
    /// When it was accepted, on the runtime's clock.
    accepted: Duration,
    stop: watch::Receiver<bool>,
}

/// One api connection: the TLS handshake with the runtime current now (its certificate,
/// client CA and CRLs), then each request with the runtime current when it arrives.
async fn serve_connection(
    current: Arc<Current>,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Accepted,
) {
    let at_handshake = current.load();
    let api = &at_handshake.config().api;
    // Without a client certificate asked for, the source check comes before any TLS work.
    if api.client_certificate == ClientCertificateMode::None && !source_allowed(api, peer) {
        accepted.gate.handshake_refused("source-not-allowed");
        tracing::info!(%peer, "connection refused: the address is not on api.forge_source_cidrs");
        return;
    }
    let clock = at_handshake.clock().clone();
    let timeouts = Timeouts::of(at_handshake.config());
    let acceptor = TlsAcceptor::from(at_handshake.api_tls().clone());
    let handshake = clock
        .timeout(
            timeouts.handshake_left(&clock, accepted.accepted),
            acceptor.accept(tcp).into_fallible(),
        )
        .await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err((err, tcp))) => {
            let reason = crate::tls::handshake_refusal_reason(&err);
            accepted.gate.handshake_refused(reason);
            tracing::info!(%peer, error = %err, reason, "TLS handshake refused");
            limits::linger(tcp, &clock).await;
            return;
        }
        Err(_) => {
            accepted.gate.closed("handshake-timeout").inc();
            accepted.gate.handshake_refused("timeout");
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let connection = {
        let (_, session) = tls.get_ref();
        // With `client_certificate = "required"` the verifier requires one; otherwise a
        // connection without one is a Forge caller.
        let certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| {
                // Like the certificate checks, the allow-list applies at the handshake.
                ClientCertificate {
                    subject: crate::tls::subject(leaf).into(),
                    allowed: crate::tls::client_allowed(
                        &at_handshake.config().api.allowed_client_sans,
                        &crate::tls::client_sans(leaf),
                    ),
                }
            });
        if let Some(certificate) = certificate.as_ref().filter(|c| !c.allowed) {
            accepted.gate.handshake_refused("certificate-not-allowed");
            tracing::info!(%peer, subject = %certificate.subject, "client certificate not on the allow-list");
        }
        if certificate.is_none() && !source_allowed(&at_handshake.config().api, peer) {
            accepted.gate.handshake_refused("source-not-allowed");
            tracing::info!(%peer, "connection refused: no client certificate, and the address is not on api.forge_source_cidrs");
            return;
        }
        Arc::new(Connection { peer, certificate })
    };
    if session_is_http1(&tls) {
        accepted.activity.watch_heads();
    }
    let limits = at_handshake.config().connections;
    let builder = super::http::builder(&at_handshake.config().api, &limits, &clock);
    drop(at_handshake);
    let identity = client_identity(&connection);
    let Some(_client) = accepted
        .gate
        .admit_client(&identity, limits.max_api_per_client)
    else {
        tracing::debug!(%peer, client = %identity, "connection refused: connections.max_api_per_client reached");
        refuse(
            builder,
            tls,
            limits.max_api_per_client,
            clock,
            timeouts,
            accepted,
        )
        .await;
        return;
    };
    let activity = accepted.activity.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let runtime = current.load();
        let connection = connection.clone();
        req.extensions_mut().insert(limits::body_deadline(&runtime));
        let in_flight = activity.request();
        async move {
            let response = handle(&runtime, &connection, req).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let io = TokioIo::new(Watched::new(tls, accepted.activity.clone()));
    let conn = builder.serve_connection(io, service).into_owned();
    let served = limits::serve(
        conn,
        |conn| conn.graceful_shutdown(),
        accepted.activity.clone(),
        timeouts,
        accepted.stop,
        accepted.gate.clone(),
    )
    .await;
    if let Err(err) = served {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Whether a connection without a client certificate (a Forge call) may come from `peer`.
fn source_allowed(api: &ApiListener, peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    api.forge_source_cidrs.is_empty() || api.forge_source_cidrs.iter().any(|net| net.contains(&ip))
}

/// Says at start whether, and from where, the listener takes calls without a client
/// certificate.
pub(super) fn announce_forge(api: &ApiListener) {
    if !api.client_certificate.takes_forge_calls() {
        return;
    }
    if api.forge_source_cidrs.is_empty() {
        tracing::warn!(
            client_certificate = api.client_certificate.as_str(),
            "the api listener takes Forge calls without a client certificate from any address (api.forge_source_cidrs is empty)"
        );
    } else {
        let ranges: Vec<String> = api
            .forge_source_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(
            client_certificate = api.client_certificate.as_str(),
            sources = %ranges.join(","),
            "the api listener takes Forge calls without a client certificate from these ranges only"
        );
    }
}

/// Whether the client chose HTTP/1.1 (or nothing) rather than HTTP/2 by ALPN.
fn session_is_http1<IO>(tls: &tokio_rustls::server::TlsStream<IO>) -> bool {
    tls.get_ref().1.alpn_protocol() != Some(b"h2")
}

/// Whom the per-client cap counts a connection against: its certificate's subject (the
/// `client` rate-limit tier's key), else its address.
fn client_identity(connection: &Connection) -> Arc<str> {
    match &connection.certificate {
        Some(certificate) => certificate.subject.clone(),
        None => connection.peer.ip().to_string().into(),
    }
}

/// A connection past its client's cap: every request on it is answered 503
/// `too-many-connections`, HTTP/1.1 without keep-alive, and it is closed once it has gone
/// one request-head timeout without a request.
async fn refuse(
    mut builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    limit: usize,
    clock: crate::clock::Clock,
    timeouts: Timeouts,
    accepted: Accepted,
) {
    builder.http1().keep_alive(false);
    let service = service_fn(move |req: Request<Incoming>| async move {
        let request_id = inbound::request_id(req.headers());
        let problem = Problem::of(&RequestError::TooManyConnections(limit));
        Ok::<_, std::convert::Infallible>(problem.into_response(Some(&request_id)))
    });
    let conn = builder
        .serve_connection(TokioIo::new(tls), service)
        .into_owned();
    let _ = limits::serve(
        conn,
        |conn| conn.graceful_shutdown(),
        accepted.gate.activity(&clock, clock.elapsed()),
        Timeouts {
            idle: timeouts.head,
            ..timeouts
        },
        accepted.stop,
        accepted.gate,
    )
    .await;
}

/// Where a request on the api listener goes.
enum Route {
    Git,
    Api,
    Unknown,
}

impl Route {
    fn of(path: &str) -> Route {
        if path.starts_with("/git/") {
            Route::Git
        } else if path.starts_with("/v1/") {
            Route::Api
        } else {
            Route::Unknown
        }
    }
}

/// One request: authenticate, route, answer (a refusal as problem+json), record.
async fn handle(
    runtime: &Runtime,
    connection: &Connection,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let arrived = runtime.clock().elapsed();
    let request_id = inbound::request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut summary = Summary::default();
    let outcome = route(runtime, connection, req, &request_id, &mut summary, arrived).await;
    let (mut response, problem) = match outcome {
        Ok(response) => (response, None),
        Err(err) => {
            let problem = Problem::of(&err).for_caller(summary.auth);
            let code = problem.code.as_str();
            let blame = problem.blame.as_str();
            (
                problem.into_response(Some(&request_id)),
                Some((code, blame)),
            )
        }
    };
    let client = summary.client.clone();
    let client = client
        .as_deref()
        .or(connection.certificate.as_ref().map(|c| &*c.subject))
        .unwrap_or("-");
    summary.record(
        runtime.metrics(),
        pipeline::summary::Outcome {
            status: response.status().as_u16(),
            code: problem.map(|(code, _)| code),
            blame: problem.map(|(_, blame)| blame),
            latency: started.elapsed(),
            request_id: &request_id,
            client,
            method: &method,
            path: &path,
        },
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// How long a Forge caller's request may take, from its arrival to patgate's answer head:
/// Forge gives up on a call after 25 s (its remote contract), and a second of that is left
/// for the network. Whatever the time goes to (the JWKS fetch for an unknown key, the
/// request body, a GitHub App token, the host), past this the app gets patgate's
/// `504 upstream-timeout` rather than Forge's own error.
const FORGE_ANSWER_WITHIN: Duration = Duration::from_secs(24);

async fn route(
    runtime: &Runtime,
    connection: &Connection,
    req: Request<Incoming>,
    request_id: &str,
    summary: &mut Summary,
    arrived: Duration,
) -> Result<Response<ResponseBody>, RequestError> {
    let clock = runtime.clock();
    let forge_left = || FORGE_ANSWER_WITHIN.saturating_sub(clock.elapsed().saturating_sub(arrived));
    let too_late = || {
        RequestError::Upstream(UpstreamError::Timeout {
            after: FORGE_ANSWER_WITHIN,
        })
    };
    let caller = if connection.certificate.is_none() && runtime.config().forge.is_some() {
        clock
            .timeout(
                forge_left(),
                pipeline::authenticate(runtime, connection, &req),
            )
            .await
            .unwrap_or_else(|_| Err(too_late()))?
    } else {
        pipeline::authenticate(runtime, connection, &req).await?
    };
    summary.auth = Some(caller.method);
    summary.client = Some(caller.client.clone());
    let work = async {
        match Route::of(req.uri().path()) {
            Route::Git => pipeline::git(runtime, &caller, req, request_id, summary).await,
            Route::Api => crate::api::handle(runtime, &caller, req, request_id, summary).await,
            Route::Unknown => Err(RequestError::NotFound),
        }
    };
    let response = if caller.method.is_forge() {
        clock
            .timeout(forge_left(), work)
            .await
            .unwrap_or_else(|_| Err(too_late()))?
    } else {
        work.await?
    };
    // Forge takes a 401 for a refused invocation token: the host's own 401 (the credential
    // patgate sent was refused) must reach a Forge caller as something else.
    if caller.method.is_forge() && response.status() == http::StatusCode::UNAUTHORIZED {
        let credential = summary.credential.map_or("integration", |d| d.as_str());
        return Err(RequestError::HostUnauthorized { credential });
    }
    Ok(response)
}
