//! The Forge caller: the Forge version of the app calls through Forge Remote
//! (`invokeRemote`), which cannot present a client certificate. Its request carries a Forge
//! Invocation Token (FIT, `Authorization: Bearer <JWT>`) that Atlassian signed (RS256) and
//! that names the app, the installation, the environment and the acting user (`principal`).
//!
//! What is checked, in order (docs/protocol.md, "Calling patgate from Forge"):
//! 1. the token: its JWS with the key its `kid` names (RS256 only, the algorithm pinned by
//!    the key set, never by the token), then `iss`, `aud` (a configured app), `exp`, `nbf` and
//!    `iat` against the runtime clock with a small leeway;
//! 2. the app: `app.id` equal to `aud`, `app.environment.type` allowed, the installation on
//!    the app's allow-list (`app.installationId`, or a Jira site's cloud id);
//! 3. the acting user: the `principal`; a `Patgate-Account` that names another user is
//!    refused, and a call without a principal (a system call) names none;
//! 4. the request: by default the RFC 9421 signature of the patgate profile, covering
//!    `patgate-account` (= the principal) so method, target and body are bound and the
//!    nonce is accepted once. With `require_signature = false` for the app, the token's `jti`
//!    is accepted once instead, which bounds what a captured token can do to one request.
//!
//! Failures of the token itself answer 401; everything else a Forge caller can be refused
//! with is another status, because Forge reserves 401 for its token (see [`crate::error`]).

mod keys;

use std::sync::Arc;

use http::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::{AuthError, AuthMethod, Caller, Connection, RequestHead};
use crate::config::{ForgeApp, ForgeSettings};
use crate::ids::AccountId;
use crate::metrics::Metrics;
use crate::signature::{SignatureError, Verifier};
use crate::store::{BoxFuture, NonceError, NonceStore};

pub use keys::{JwksUrl, KeySet};

/// The FIT's issuer.
pub const ISSUER: &str = "forge/invocation-token";

/// Why a Forge call was refused. Details help the app team; before the token's signature is
/// verified they say nothing about which check failed, except a `kid` no key set holds (the
/// `kid` is in the token's readable header and the key set is public, and it is what a key
/// rotation that patgate has not caught up with looks like: docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// No `Authorization: Bearer` on a connection without a client certificate.
    #[error("a call without a client certificate must carry a Forge Invocation Token (Authorization: Bearer …)")]
    TokenMissing,
    /// Not a token signed by a Forge key, or its claims are not what they must be.
    #[error("the Forge Invocation Token is not valid: {0}")]
    TokenInvalid(String),
    /// Outside its validity (`exp`, `nbf`, `iat` with the leeway).
    #[error("the Forge Invocation Token is outside its validity: {0}")]
    TokenExpired(String),
    /// The token's `jti` was used before (apps without the RFC 9421 signature).
    #[error(
        "this Forge Invocation Token was already used for a request; every call needs a fresh one"
    )]
    TokenReplayed,
    /// No key set is loaded: nothing can be verified (not the caller's fault).
    #[error("patgate has no usable Forge signing keys loaded yet (the JWKS URL could not be fetched); retry later")]
    KeysUnavailable,
    /// A valid token of an environment or installation not allowed here.
    #[error("{0}")]
    NotAllowed(String),
    /// `Patgate-Account` disagrees with the token's principal.
    #[error("{0}")]
    AccountMismatch(String),
    /// The RFC 9421 signature a Forge call must carry failed.
    #[error("the request's RFC 9421 signature was refused: {0}")]
    Signature(SignatureError),
    /// The signature verified, but its nonce was refused.
    #[error("the request's RFC 9421 signature was refused: {0}")]
    SignatureNonce(NonceError),
    /// The replay cache could not record the token's `jti`.
    #[error(transparent)]
    TokenNonce(NonceError),
}

/// The FIT's claims that patgate reads. `iat`, `nbf`, `exp` and `jti` must be present.
#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    aud: Audience,
    app: AppClaim,
    principal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, id: &str) -> bool {
        match self {
            Audience::One(aud) => aud == id,
            Audience::Many(auds) => auds.iter().any(|a| a == id),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppClaim {
    id: String,
    installation_id: String,
    environment: EnvironmentClaim,
    installation: Option<InstallationClaim>,
}

#[derive(Debug, Deserialize)]
struct EnvironmentClaim {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct InstallationClaim {
    id: Option<String>,
    #[serde(default)]
    contexts: Vec<serde_json::Value>,
}

/// The Jira site cloud ids an installation's contexts name: an ARI string
/// `ari:cloud:jira::site/{cloudId}`, or an object with `cloudId`.
fn context_cloud_ids(contexts: &[serde_json::Value]) -> impl Iterator<Item = &str> {
    contexts.iter().filter_map(|context| match context {
        serde_json::Value::String(ari) => ari
            .strip_prefix("ari:cloud:jira::site/")
            .or_else(|| ari.strip_prefix("ari:cloud:jira:"))
            .map(|rest| rest.rsplit('/').next().unwrap_or(rest)),
        serde_json::Value::Object(fields) => fields.get("cloudId").and_then(|v| v.as_str()),
        _ => None,
    })
}

/// The Forge authenticator. See the module docs.
#[derive(Debug, Clone)]
pub struct ForgeToken {
    apps: Arc<[ForgeApp]>,
    /// The pinned file's keys, read when this runtime was built.
    file: Option<Arc<KeySet>>,
    url: Option<Arc<JwksUrl>>,
    leeway: u64,
    validation: Arc<Validation>,
    verifier: Verifier,
    nonces: Arc<dyn NonceStore>,
}

/// Reads what `[forge]` names, as `patgate config check` and every start and reload do: the
/// pinned JWKS file (it must hold a usable key) and the JWKS URL's CA certificates. Nothing is
/// fetched. Errors name the config key.
pub fn check_settings(settings: &ForgeSettings) -> Result<(), (&'static str, String)> {
    if let Some(path) = &settings.jwks_file {
        keys::read_file(path).map_err(|e| ("forge.jwks_file", e))?;
    }
    if settings.jwks_url.is_some() {
        crate::tls::upstream_roots(settings.jwks_roots, settings.jwks_extra_ca.as_deref())
            .map_err(|e| {
                let key = if settings.jwks_extra_ca.is_some() {
                    "forge.jwks_extra_ca"
                } else {
                    "forge.jwks_roots"
                };
                (key, e.to_string())
            })?;
    }
    Ok(())
}

impl ForgeToken {
    /// Builds the authenticator from `[forge]`: reads the pinned JWKS file, and keeps the
    /// URL's cache `carried` from the runtime before when its source is unchanged. Errors name
    /// the config key.
    pub fn new(
        settings: &ForgeSettings,
        verifier: Verifier,
        nonces: Arc<dyn NonceStore>,
        carried: Option<Arc<JwksUrl>>,
        metrics: Arc<Metrics>,
    ) -> Result<ForgeToken, (&'static str, String)> {
        crate::jwt::install();
        let file = settings
            .jwks_file
            .as_deref()
            .map(|path| keys::read_file(path).map(Arc::new))
            .transpose()
            .map_err(|e| ("forge.jwks_file", e))?;
        let url = match carried.filter(|url| url.same_source(settings)) {
            Some(url) => Some(url.retimed(settings)),
            None => JwksUrl::new(settings, metrics)
                .map_err(|e| ("forge.jwks_url", e))?
                .map(Arc::new),
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(
            &settings
                .apps
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
        );
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        // Times are checked against the runtime's clock below, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Ok(ForgeToken {
            apps: settings.apps.clone().into(),
            file,
            url,
            leeway: settings.leeway.as_secs(),
            validation: Arc::new(validation),
            verifier,
            nonces,
        })
    }

    /// The JWKS URL's cache, for the next runtime.
    pub fn jwks_url(&self) -> Option<&Arc<JwksUrl>> {
        self.url.as_ref()
    }

    /// How many keys can verify a token now (pinned and fetched).
    pub fn usable_keys(&self) -> usize {
        self.file.as_ref().map_or(0, |s| s.len())
            + self
                .url
                .as_ref()
                .and_then(|u| u.current())
                .map_or(0, |s| s.len())
    }

    /// Fetches the URL's set when none is loaded yet or it is past its age (at most once
    /// per cool-down); answers whether any key is usable then. The start step, `/ready` and
    /// the metrics call this.
    pub async fn ensure_keys(&self, now: u64) -> bool {
        if let Some(url) = &self.url {
            if url.stale(now) {
                url.refresh(now).await;
            }
        }
        self.usable_keys() > 0
    }

    /// The key for `kid`: the pinned set, then the fetched one; an unknown `kid` or a stale
    /// set makes one fetch (cool-down permitting) before giving up.
    async fn key(&self, kid: &str, now: u64) -> Result<jsonwebtoken::DecodingKey, ForgeError> {
        let lookup = || {
            self.file
                .as_ref()
                .and_then(|s| s.get(kid).cloned())
                .or_else(|| self.url.as_ref()?.current()?.get(kid).cloned())
        };
        if let Some(url) = &self.url {
            if url.stale(now) && url.current().is_some() {
                // Past its age but usable: refresh beside this request, not in its way.
                let url = url.clone();
                tokio::spawn(async move { url.refresh(now).await });
            }
        }
        if let Some(key) = lookup() {
            return Ok(key);
        }
        if let Some(url) = &self.url {
            url.refresh(now).await;
            if let Some(key) = lookup() {
                return Ok(key);
            }
        }
        if self.usable_keys() == 0 {
            return Err(ForgeError::KeysUnavailable);
        }
        Err(ForgeError::TokenInvalid(
            "it is signed with a key id that is not in Forge's key set".into(),
        ))
    }

    /// The token's claims, verified (signature, `iss`, `aud`, times), and its key id.
    async fn verify_token(&self, token: &str, now: u64) -> Result<(Claims, String), ForgeError> {
        let generic = || {
            ForgeError::TokenInvalid(
                "it is not a JWT signed with RS256 by a Forge key (header, algorithm or signature)"
                    .into(),
            )
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| generic())?;
        if header.alg != Algorithm::RS256 {
            return Err(generic());
        }
        let kid = header.kid.ok_or_else(generic)?;
        let key = self.key(&kid, now).await?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| match e.into_kind() {
                // From here on the signature verified: the token is Atlassian's, and saying
                // which claim is wrong helps the app team.
                ErrorKind::InvalidIssuer => {
                    ForgeError::TokenInvalid(format!("its issuer is not `{ISSUER}`"))
                }
                ErrorKind::InvalidAudience => ForgeError::TokenInvalid(
                    "it was issued to an app (aud) that is not configured here".into(),
                ),
                ErrorKind::MissingRequiredClaim(claim) => {
                    ForgeError::TokenInvalid(format!("it has no `{claim}` claim"))
                }
                ErrorKind::InvalidClaimFormat(claim) => {
                    ForgeError::TokenInvalid(format!("its `{claim}` claim is malformed"))
                }
                ErrorKind::Json(e) if e.is_data() => ForgeError::TokenInvalid(format!(
                    "its claims are not a Forge Invocation Token's: {e}"
                )),
                _ => generic(),
            })?
            .claims;
        let leeway = self.leeway;
        if now > claims.exp.saturating_add(leeway) {
            return Err(ForgeError::TokenExpired(format!(
                "it expired {} s ago",
                now - claims.exp
            )));
        }
        if claims.nbf > now.saturating_add(leeway) || claims.iat > now.saturating_add(leeway) {
            return Err(ForgeError::TokenExpired(
                "it is not valid yet (nbf or iat in the future; check the clock of patgate's host)"
                    .into(),
            ));
        }
        Ok((claims, kid))
    }

    /// The configured app the claims name, if their environment and installation are
    /// allowed.
    fn app(&self, claims: &Claims) -> Result<&ForgeApp, ForgeError> {
        let app = self
            .apps
            .iter()
            .find(|a| a.id == claims.app.id && claims.aud.contains(&a.id))
            .ok_or_else(|| {
                ForgeError::TokenInvalid("its app.id is not its aud, or not configured here".into())
            })?;
        let environment = claims.app.environment.kind.as_str();
        if !app.environments.iter().any(|e| e.as_str() == environment) {
            return Err(ForgeError::NotAllowed(format!(
                "tokens of the app's {environment} environment are not accepted here (forge.apps[].environments)"
            )));
        }
        let installation = &claims.app.installation_id;
        if let Some(other) = claims.app.installation.as_ref().and_then(|i| i.id.as_ref()) {
            if other != installation {
                return Err(ForgeError::TokenInvalid(
                    "app.installationId and app.installation.id differ".into(),
                ));
            }
        }
        let by_id = app.installation_ids.iter().any(|id| id == installation);
        let by_site = claims.app.installation.as_ref().is_some_and(|i| {
            context_cloud_ids(&i.contexts).any(|cloud| app.cloud_ids.iter().any(|c| c == cloud))
        });
        if !by_id && !by_site {
            return Err(ForgeError::NotAllowed(format!(
                "installation {installation} of this app is not allowed here (forge.apps[].installation_ids or cloud_ids)"
            )));
        }
        Ok(app)
    }
}

/// The one `Authorization: Bearer` token of a request.
fn bearer<'a>(head: &RequestHead<'a>) -> Result<&'a str, ForgeError> {
    let mut values = head.headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ForgeError::TokenMissing);
    };
    let text = value.to_str().map_err(|_| ForgeError::TokenMissing)?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ForgeError::TokenMissing),
    }
}

/// The acting user: the token's principal, which a `Patgate-Account` must agree with.
fn acting_user(
    head: &RequestHead<'_>,
    principal: Option<&str>,
    signature_required: bool,
) -> Result<Option<AccountId>, ForgeError> {
    let mut values = head
        .headers
        .get_all(crate::signature::PATGATE_ACCOUNT)
        .iter();
    let named = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => Some(value.to_str().unwrap_or("\u{fffd}")),
        (Some(_), Some(_)) => {
            return Err(ForgeError::AccountMismatch(
                "the request carries Patgate-Account twice".into(),
            ))
        }
    };
    let Some(principal) = principal else {
        return match named {
            None => Ok(None),
            Some(_) => Err(ForgeError::AccountMismatch(
                "the token has no principal (a system call), so the request cannot name a user in Patgate-Account".into(),
            )),
        };
    };
    let account = AccountId::parse(principal).map_err(|_| {
        ForgeError::TokenInvalid("its principal is not an Atlassian accountId".into())
    })?;
    match named {
        Some(named) if named != principal => Err(ForgeError::AccountMismatch(
            "Patgate-Account names another user than the token's principal".into(),
        )),
        None if signature_required => Err(ForgeError::AccountMismatch(
            "a call for a user must carry Patgate-Account with the token's principal, covered by the signature".into(),
        )),
        _ => Ok(Some(account)),
    }
}

/// `forge:{app uuid}:{installation uuid}`, the client identity (rate limits, logs).
fn client_identity(app: &ForgeApp, installation: &str) -> Arc<str> {
    let tail = |ari: &str| ari.rsplit('/').next().unwrap_or(ari).to_string();
    format!("forge:{}:{}", tail(&app.id), tail(installation)).into()
}

impl super::Authenticator for ForgeToken {
    fn authenticate<'a>(
        &'a self,
        _connection: &'a Connection,
        head: RequestHead<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let token = bearer(&head)?;
            let (claims, kid) = self.verify_token(token, now).await?;
            let app = self.app(&claims)?;
            let account = acting_user(&head, claims.principal.as_deref(), app.require_signature)?;
            let client = client_identity(app, &claims.app.installation_id);
            let acts_as_app = account.is_none();
            if !app.require_signature {
                // No signature binds the request: the token itself is accepted once, until
                // it expires.
                self.nonces
                    .first_use(
                        &format!("forge-jti {}", app.id),
                        &claims.jti,
                        claims.exp.saturating_add(self.leeway),
                        now,
                    )
                    .await
                    .map_err(|e| match e {
                        NonceError::Replayed | NonceError::BeforeHorizon => {
                            ForgeError::TokenReplayed
                        }
                        other => ForgeError::TokenNonce(other),
                    })?;
                return Ok(Caller {
                    client,
                    key_id: format!("fit:{kid}"),
                    principal: account,
                    acts_as_app,
                    method: AuthMethod::ForgeToken,
                });
            }
            let verified = head
                .verify_signature(&self.verifier, now)
                .map_err(ForgeError::Signature)?;
            if !app.signature_keyids.is_empty() && !app.signature_keyids.contains(&verified.keyid) {
                return Err(ForgeError::Signature(SignatureError::UnknownKey(format!(
                    "{} (not one of this app's signature_keyids)",
                    verified.keyid
                )))
                .into());
            }
            self.nonces
                .first_use(&verified.keyid, &verified.nonce, verified.replay_until, now)
                .await
                .map_err(|e| match e {
                    NonceError::Full | NonceError::Store(_) => ForgeError::TokenNonce(e),
                    replay => ForgeError::SignatureNonce(replay),
                })?;
            Ok(Caller {
                client,
                key_id: verified.keyid,
                principal: account,
                acts_as_app,
                method: AuthMethod::ForgeTokenSignature,
            })
        })
    }
}
