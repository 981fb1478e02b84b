//! Who is calling: each request on the api listener is turned into a verified [`Caller`] by
//! an [`Authenticator`], or refused, before anything else looks at it.
//!
//! The pipeline knows only this seam. An implementation checks whatever its kind of caller
//! presents and answers the same facts: the client identity (the `client` rate-limit tier,
//! the decision log), the app key that signed, and the acting Jira account when the
//! credential itself names one. Adding a kind of caller is one implementation here and one
//! line where the runtime builds its authenticator; the pipeline does not change.
//!
//! | implementation | the caller presents |
//! |---|---|
//! | [`MtlsSignature`] | a client certificate (checked at the TLS handshake) and an RFC 9421 signature |
//! | [`ForgeToken`] | a Forge Invocation Token, and (by default) an RFC 9421 signature |
//!
//! [`Callers`] is the one the runtime holds: a connection with a client certificate is a
//! Connect-era caller, one without (let in only by `api.client_certificate = "optional"` or
//! `"none"`) a Forge caller.

pub mod forge;
mod mtls;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::ids::AccountId;
use crate::signature::{Message, Requirements, SignatureError, Verified, Verifier};
use crate::store::{BoxFuture, NonceError};

pub use forge::{ForgeError, ForgeToken};
pub use mtls::MtlsSignature;

/// What is known about a connection once its TLS handshake is done.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The client certificate, when the client presented one (it chained to the client CA:
    /// the handshake checked that).
    pub certificate: Option<ClientCertificate>,
}

/// The client certificate of a connection.
#[derive(Debug)]
pub struct ClientCertificate {
    /// Its subject, for logs and the `client` rate-limit tier.
    pub subject: Arc<str>,
    /// Whether it carries a SAN on `api.allowed_client_sans` (or there is no list), as the
    /// config said at the handshake.
    pub allowed: bool,
}

/// The parts of a request an authenticator reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// The absolute URI the client addressed (`@target-uri`).
    pub target_uri: &'a str,
    pub headers: &'a HeaderMap,
    pub has_body: bool,
}

impl RequestHead<'_> {
    /// Verifies the request's RFC 9421 signature with `verifier` at `now` (Unix seconds), as
    /// every authenticator that takes the signature does.
    pub fn verify_signature(
        &self,
        verifier: &Verifier,
        now: u64,
    ) -> Result<Verified, SignatureError> {
        verifier.verify(
            &Message {
                method: self.method,
                target_uri: self.target_uri,
                headers: self.headers,
            },
            Requirements {
                has_body: self.has_body,
            },
            now,
        )
    }
}

/// How a caller proved who it is (the decision log and audit events say it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A client certificate and an RFC 9421 signature.
    ClientCertificate,
    /// A Forge Invocation Token and an RFC 9421 signature.
    ForgeTokenSignature,
    /// A Forge Invocation Token alone (the app's `require_signature = false`).
    ForgeToken,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientCertificate => "client-certificate",
            AuthMethod::ForgeTokenSignature => "forge-token+signature",
            AuthMethod::ForgeToken => "forge-token",
        }
    }

    /// A Forge caller: Forge reserves 401 for its token, so refusals after authentication
    /// must not be 401 ([`crate::error`]).
    pub fn is_forge(self) -> bool {
        matches!(
            self,
            AuthMethod::ForgeTokenSignature | AuthMethod::ForgeToken
        )
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client identity: the `client` rate-limit tier's key and the decision log's
    /// `client`.
    pub client: Arc<str>,
    /// The app key that signed the request.
    pub key_id: String,
    /// The acting Jira user, when the credential itself names one. `None`: the request's
    /// own `Patgate-Account` (signed) names the user, or nobody acts.
    pub principal: Option<AccountId>,
    /// The credential names no user and stands for the app itself (a Forge system call):
    /// an action without `Patgate-Account` goes to the policy as the integration account's,
    /// instead of being refused for naming nobody.
    pub acts_as_app: bool,
    pub method: AuthMethod,
}

/// Why a caller was refused. Messages never hold key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client certificate carries none of `api.allowed_client_sans`.
    #[error("the client certificate carries none of the SANs on api.allowed_client_sans")]
    ClientNotAllowed,
    /// No client certificate on a listener that needs one.
    #[error("this listener needs a client certificate")]
    NoClientCertificate,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signature verified, but its nonce was refused by the replay cache.
    #[error(transparent)]
    Nonce(#[from] NonceError),
    /// A Forge caller was refused.
    #[error(transparent)]
    Forge(#[from] ForgeError),
}

/// Turns a request into a [`Caller`]. See the module docs.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Whether this connection may send requests at all (its client certificate, say),
    /// checked before anything of the request is read.
    fn admit(&self, _connection: &Connection) -> Result<(), AuthError> {
        Ok(())
    }

    /// The request's caller, once [`Authenticator::admit`] let its connection in. `now` is
    /// the runtime clock's Unix seconds.
    fn authenticate<'a>(
        &'a self,
        connection: &'a Connection,
        head: RequestHead<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<Caller, AuthError>>;
}

/// The runtime's authenticator: the Connect-era caller on connections with a client
/// certificate, the Forge caller (when `[forge]` is configured) on those without.
#[derive(Debug, Clone)]
pub struct Callers {
    mtls: MtlsSignature,
    forge: Option<ForgeToken>,
}

impl Callers {
    pub fn new(mtls: MtlsSignature, forge: Option<ForgeToken>) -> Callers {
        Callers { mtls, forge }
    }

    pub fn mtls(&self) -> &MtlsSignature {
        &self.mtls
    }

    /// The Forge authenticator, when `[forge]` is configured.
    pub fn forge(&self) -> Option<&ForgeToken> {
        self.forge.as_ref()
    }

    fn pick(&self, connection: &Connection) -> Result<&dyn Authenticator, AuthError> {
        match (&connection.certificate, &self.forge) {
            (Some(_), _) => Ok(&self.mtls),
            (None, Some(forge)) => Ok(forge),
            (None, None) => Err(AuthError::NoClientCertificate),
        }
    }
}

impl Authenticator for Callers {
    fn admit(&self, connection: &Connection) -> Result<(), AuthError> {
        self.pick(connection)?.admit(connection)
    }

    fn authenticate<'a>(
        &'a self,
        connection: &'a Connection,
        head: RequestHead<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        match self.pick(connection) {
            Ok(authenticator) => authenticator.authenticate(connection, head, now),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }
}
