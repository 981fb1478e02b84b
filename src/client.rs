//! A client that calls patgate the way the Jira app must: mutual TLS and an RFC 9421
//! signature on every request. Used by `patgate request`, the quickstart, the tests and the
//! load generator.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::clock::Clock;
use crate::signature::{self, Message, SignParams, SigningKey};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Request(String),
    #[error("signing failed: {0}")]
    Sign(#[from] signature::SignatureError),
    #[error("sending failed: {0}")]
    Send(String),
}

/// What a signed request is made of.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// The acting Jira user (`Patgate-Account`).
    pub account: Option<String>,
}

/// An mTLS client with a signing key.
#[derive(Debug, Clone)]
pub struct SignedClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    key: Arc<SigningKey>,
    /// What `created` is read from.
    clock: Clock,
}

impl SignedClient {
    /// `ca`: the CA that signed patgate's server certificate. `cert`: the client certificate
    /// chain and its private key (one PEM file may hold both; then `cert_key` is `None`).
    pub fn new(
        ca: &Path,
        cert: &Path,
        cert_key: Option<&Path>,
        key: SigningKey,
        http2_only: bool,
    ) -> Result<SignedClient, ClientError> {
        let roots = tls::root_store(ca)?;
        let chain = tls::load_certs(cert)?;
        let private = tls::load_private_key(cert_key.unwrap_or(cert))?;
        let config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| tls::TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(|e| tls::TlsError::Config(format!("client certificate: {e}")))?;
        Ok(SignedClient::with_tls(config, key, http2_only))
    }

    /// A client without a client certificate, as a Forge backend function calls through
    /// Forge Remote: the request carries a Forge Invocation Token (in `Outgoing::headers`)
    /// and, signed with `key`, the RFC 9421 signature.
    pub fn without_certificate(
        ca: &Path,
        key: SigningKey,
        http2_only: bool,
    ) -> Result<SignedClient, ClientError> {
        let config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| tls::TlsError::Config(e.to_string()))?
            .with_root_certificates(tls::root_store(ca)?)
            .with_no_client_auth();
        Ok(SignedClient::with_tls(config, key, http2_only))
    }

    fn with_tls(config: rustls::ClientConfig, key: SigningKey, http2_only: bool) -> SignedClient {
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = if http2_only {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_all_versions().wrap_connector(http)
        };
        let mut client = Client::builder(TokioExecutor::new());
        client.http2_only(http2_only);
        SignedClient {
            client: client.build(connector),
            key: Arc::new(key),
            clock: Clock::system(),
        }
    }

    /// The same client, signing with `created` read from `clock` (a test's manual clock).
    pub fn with_clock(self, clock: Clock) -> SignedClient {
        SignedClient { clock, ..self }
    }

    /// Builds and signs a request without sending it.
    pub fn sign(&self, out: &Outgoing) -> Result<Request<Full<Bytes>>, ClientError> {
        sign_request(&self.key, out, self.clock.unix_now())
    }

    /// Signs and sends, and reads the whole answer.
    pub async fn send(&self, out: &Outgoing) -> Result<Response<Bytes>, ClientError> {
        let request = self.sign(out)?;
        self.send_signed(request).await
    }

    /// Sends a request as it is (tests use this to send tampered requests).
    pub async fn send_signed(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, ClientError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ClientError::Send(error_chain(&e)))?;
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ClientError::Send(e.to_string()))?
            .to_bytes();
        Ok(Response::from_parts(head, body))
    }
}

/// Builds the request for `out` and signs it: `@method`, `@target-uri`, `patgate-account`
/// when an account is named, `content-digest` and `content-type` when there is a body.
pub fn sign_request(
    key: &SigningKey,
    out: &Outgoing,
    created: u64,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let uri: Uri = out
        .url
        .parse()
        .map_err(|e| ClientError::Request(format!("`{}` is not a URL: {e}", out.url)))?;
    let mut request = Request::new(Full::new(out.body.clone().unwrap_or_default()));
    *request.method_mut() = out.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (name, value) in &out.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| ClientError::Request(format!("bad header name `{name}`")))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| ClientError::Request(format!("bad value for header `{name}`")))?;
        headers.append(name, value);
    }
    let mut components = vec!["@method", "@target-uri"];
    if let Some(account) = &out.account {
        let value = HeaderValue::try_from(account.as_str())
            .map_err(|_| ClientError::Request("bad account".into()))?;
        headers.insert(crate::inbound::ACCOUNT_HEADER, value);
        components.push(crate::inbound::ACCOUNT_HEADER);
    }
    if let Some(body) = &out.body {
        let digest = signature::digest::sha256(body);
        headers.insert(
            "content-digest",
            HeaderValue::try_from(digest).map_err(|_| ClientError::Request("digest".into()))?,
        );
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        components.push("content-digest");
        components.push("content-type");
    }
    let nonce = signature::random_nonce();
    let target_uri = out.url.clone();
    let (input, sig) = signature::sign(
        &Message {
            method: &out.method,
            target_uri: &target_uri,
            headers: request.headers(),
        },
        key,
        &SignParams {
            label: "sig1",
            components: &components,
            created,
            expires: None,
            nonce: &nonce,
            include_alg: true,
        },
    )?;
    request.headers_mut().insert("signature-input", input);
    request.headers_mut().insert("signature", sig);
    Ok(request)
}

/// An error and its causes on one line, for messages to people.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let s = inner.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = inner.source();
    }
    text
}
