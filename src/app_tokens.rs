//! GitHub App installation tokens for integrations whose account is a GitHub App
//! ([`Credential::GithubApp`]): the App's JWT, the token it buys, and the token kept in memory
//! until shortly before it expires.
//!
//! - The JWT is RS256 over `{"iat": now - 60, "exp": now + 540, "iss": "<App id>"}`: GitHub
//!   allows `exp` at most ten minutes ahead and advises `iat` a minute back for clock drift.
//!   It is made for one exchange and dropped; the private key is parsed from the vault's
//!   plaintext for that signature only ([`RsaSigningKey`] wipes it).
//! - A token is renewed [`RENEW_BEFORE`] ahead of its `expires_at` (for tokens that live less
//!   than twice that, at half their life), and at once after the host refuses it (401).
//! - One renewal at a time per integration, however many requests wait: the first request that
//!   finds no fresh token mints under the slot's lock; the others wait for that lock and take
//!   what it minted.
//! - A failed attempt is remembered for [`RETRY_AFTER_FAILURE`]: requests meanwhile get the
//!   same error without asking GitHub again, so a wrong key does not turn each request into a
//!   JWT exchange. A token that is still valid keeps serving while renewals fail.
//! - Tokens live in memory only, never in the vault.
//! - The App's record is decrypted only when a token must be minted: while the token in
//!   memory is fresh and the vault's record is the one it was minted from (its
//!   [`SecretStamp`], read from the clear header), requests and `/ready` use the token and
//!   the private key stays sealed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use secrecy::{ExposeSecret as _, SecretString};

use crate::clock::Clock;
use crate::config::Integration;
use crate::host_calls::{self, HostCallError};
use crate::hosts::github::Github;
use crate::hosts::HostIdentity;
use crate::jwt::{KeyError, RsaSigningKey};
use crate::metrics::{AppTokenLabels, IntegrationLabels, Metrics};
use crate::upstream::Upstream;
use crate::vault::{Credential, SecretStamp};

/// How long before `expires_at` a token is renewed.
pub(crate) const RENEW_BEFORE: u64 = 5 * 60;
/// How long a failed attempt answers for itself before GitHub is asked again.
pub(crate) const RETRY_AFTER_FAILURE: u64 = 10;
/// `iat` this far in the past (GitHub: "to protect against clock drift").
const JWT_BACKDATE: u64 = 60;
/// `exp` this far ahead: under GitHub's ten-minute cap with room for a clock running ahead.
const JWT_LIFETIME: u64 = 9 * 60;

/// Why no installation token could be had. Says which integration, App and installation;
/// never a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum AppTokenError {
    #[error("integration `{integration}`: the private key stored for GitHub App {app_id} cannot sign: {source}")]
    Key {
        integration: String,
        app_id: u64,
        source: KeyError,
    },
    #[error("integration `{integration}`: GitHub App {app_id} got no installation token for installation {installation_id}: {source}")]
    Host {
        integration: String,
        app_id: u64,
        installation_id: u64,
        source: HostCallError,
    },
}

/// A GitHub App credential's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct App<'a> {
    pub app_id: u64,
    pub installation_id: u64,
    pub private_key: &'a SecretString,
}

impl<'a> App<'a> {
    /// The App in `credential`, if it is one.
    pub(crate) fn of(credential: &'a Credential) -> Option<App<'a>> {
        match credential {
            Credential::GithubApp {
                app_id,
                installation_id,
                private_key,
            } => Some(App {
                app_id: *app_id,
                installation_id: *installation_id,
                private_key,
            }),
            _ => None,
        }
    }
}

/// Where an integration's App calls go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub integration: &'a Integration,
    pub upstream: &'a Upstream,
    pub clock: &'a Clock,
}

/// Whether `private_key` is an RSA private key patgate can sign with (checked before one is
/// stored, with or without asking the host).
pub(crate) fn check_key(private_key: &SecretString) -> Result<(), KeyError> {
    #[allow(
        clippy::disallowed_methods,
        reason = "the private key is parsed here to check it, and dropped (wiped)"
    )]
    let pem = private_key.expose_secret().as_bytes();
    RsaSigningKey::from_pem(pem).map(drop)
}

/// The App's JWT, as a bearer token for the App endpoints.
fn app_jwt(target: &Target<'_>, app: &App<'_>) -> Result<Credential, AppTokenError> {
    #[derive(serde::Serialize)]
    struct Claims {
        iat: u64,
        exp: u64,
        iss: String,
    }
    let key_error = |source| AppTokenError::Key {
        integration: target.integration.id.clone(),
        app_id: app.app_id,
        source,
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "the private key is parsed here to sign the App's JWT, its one use"
    )]
    let key =
        RsaSigningKey::from_pem(app.private_key.expose_secret().as_bytes()).map_err(key_error)?;
    let now = target.clock.unix_now();
    let jwt = key
        .sign(&Claims {
            iat: now.saturating_sub(JWT_BACKDATE),
            exp: now + JWT_LIFETIME,
            iss: app.app_id.to_string(),
        })
        .map_err(key_error)?;
    Ok(Credential::Token(SecretString::from(jwt)))
}

fn host_error(target: &Target<'_>, app: &App<'_>, source: HostCallError) -> AppTokenError {
    AppTokenError::Host {
        integration: target.integration.id.clone(),
        app_id: app.app_id,
        installation_id: app.installation_id,
        source,
    }
}

/// Who a GitHub App integration account is: the App's slug and the installation's account
/// (`GET /app/installations/{id}`, whose permissions must allow the three actions), once an
/// installation token has been minted with it (so what is stored is known to work).
pub(crate) async fn identify(
    target: &Target<'_>,
    app: &App<'_>,
) -> Result<HostIdentity, AppTokenError> {
    let github = Github::new(&target.integration.base_url);
    let jwt = app_jwt(target, app)?;
    let installation = host_calls::github_app_installation(
        &github,
        target.upstream,
        &jwt,
        app.app_id,
        app.installation_id,
    )
    .await
    .map_err(|e| host_error(target, app, e))?;
    host_calls::github_installation_token(
        &github,
        target.upstream,
        &jwt,
        app.app_id,
        app.installation_id,
    )
    .await
    .map_err(|e| host_error(target, app, e))?;
    Ok(installation.identity(app.app_id, app.installation_id))
}

/// An installation token handed to a request, and which mint it came from (to renew after
/// the host refused exactly that one).
#[derive(Debug)]
pub(crate) struct Lease {
    pub credential: Credential,
    generation: u64,
}

/// The installation tokens of every GitHub App integration. Lives for the process (carried
/// across reloads); a slot whose host, App or installation changed starts empty.
#[derive(Debug, Default)]
pub(crate) struct AppTokens {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    generations: AtomicU64,
}

/// What a slot's token was minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotKey {
    base_url: String,
    app_id: u64,
    installation_id: u64,
}

#[derive(Debug)]
struct Slot {
    key: SlotKey,
    /// The vault record the App was read from when its token was last asked for: while the
    /// record is unchanged, [`AppTokens::fresh_for`] hands out the token without the App's
    /// key being unsealed.
    stamp: RwLock<Option<SecretStamp>>,
    current: RwLock<Option<Minted>>,
    /// Held while minting: one mint at a time. Holds the last failure, while it answers.
    minting: tokio::sync::Mutex<Option<Failure>>,
}

#[derive(Debug)]
struct Minted {
    token: SecretString,
    /// Unix seconds: from here on the next request renews it.
    renew_at: u64,
    expires_at: u64,
    generation: u64,
}

#[derive(Debug)]
struct Failure {
    until: u64,
    error: Arc<AppTokenError>,
}

impl Slot {
    /// The token, when `usable` says it is still good at `now`.
    fn lease(&self, now: u64, usable: impl Fn(&Minted, u64) -> bool) -> Option<Lease> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|minted| usable(minted, now))
            .map(|minted| Lease {
                credential: Credential::Token(minted.token.clone()),
                generation: minted.generation,
            })
    }
}

fn fresh(minted: &Minted, now: u64) -> bool {
    now < minted.renew_at
}

/// Still accepted by GitHub, with a little room for the request's own time.
fn valid(minted: &Minted, now: u64) -> bool {
    now + 30 < minted.expires_at
}

impl AppTokens {
    /// The slot of `target`'s integration for `app`, read from the vault record `stamp`
    /// names (a slot of another host, App or installation starts over).
    fn slot(&self, target: &Target<'_>, app: &App<'_>, stamp: SecretStamp) -> Arc<Slot> {
        let key = SlotKey {
            base_url: target.integration.base_url.to_string(),
            app_id: app.app_id,
            installation_id: app.installation_id,
        };
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots
            .entry(target.integration.id.clone())
            .or_insert_with(|| Slot::new(key.clone()));
        if slot.key != key {
            *slot = Slot::new(key);
        }
        *slot.stamp.write().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
        slot.clone()
    }

    /// The fresh token of `target`'s integration, if it was minted from the vault record
    /// `stamp` names (so for the same App, installation and host): the App's key need not be
    /// unsealed to use it.
    pub(crate) fn fresh_for(&self, target: &Target<'_>, stamp: SecretStamp) -> Option<Lease> {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(&target.integration.id)?.clone()
        };
        if slot.key.base_url != target.integration.base_url.to_string()
            || *slot.stamp.read().unwrap_or_else(|p| p.into_inner()) != Some(stamp)
        {
            return None;
        }
        slot.lease(target.clock.unix_now(), fresh)
    }

    /// A token for `app`, read from the vault record `stamp` names: the one in memory while
    /// it is fresh, else a new one (one mint at a time; see the module).
    pub(crate) async fn token(
        &self,
        target: &Target<'_>,
        app: &App<'_>,
        stamp: SecretStamp,
        metrics: &Metrics,
    ) -> Result<Lease, Arc<AppTokenError>> {
        let slot = self.slot(target, app, stamp);
        if let Some(lease) = slot.lease(target.clock.unix_now(), fresh) {
            return Ok(lease);
        }
        let mut failure = slot.minting.lock().await;
        // Whoever held the lock before may have minted meanwhile.
        if let Some(lease) = slot.lease(target.clock.unix_now(), fresh) {
            return Ok(lease);
        }
        self.mint(&slot, &mut failure, target, app, metrics).await
    }

    /// A token other than `refused`, which the host answered 401 to: the one another
    /// request minted since, else a new one. Never more than one attempt per call.
    pub(crate) async fn renew(
        &self,
        target: &Target<'_>,
        app: &App<'_>,
        stamp: SecretStamp,
        refused: &Lease,
        metrics: &Metrics,
    ) -> Result<Lease, Arc<AppTokenError>> {
        let slot = self.slot(target, app, stamp);
        let mut failure = slot.minting.lock().await;
        let now = target.clock.unix_now();
        if let Some(lease) = slot.lease(now, fresh) {
            if lease.generation != refused.generation {
                return Ok(lease);
            }
        }
        {
            let mut current = slot.current.write().unwrap_or_else(|p| p.into_inner());
            if current
                .as_ref()
                .is_some_and(|m| m.generation == refused.generation)
            {
                *current = None;
            }
        }
        tracing::warn!(
            integration = %target.integration.id,
            app_id = app.app_id,
            installation_id = app.installation_id,
            "the git host refused the GitHub App installation token (401): getting a new one"
        );
        self.mint(&slot, &mut failure, target, app, metrics).await
    }

    /// Mints under the slot's lock (`failure` is its guarded state), unless the last failure
    /// still answers. A failure leaves a still-valid token serving.
    async fn mint(
        &self,
        slot: &Slot,
        failure: &mut Option<Failure>,
        target: &Target<'_>,
        app: &App<'_>,
        metrics: &Metrics,
    ) -> Result<Lease, Arc<AppTokenError>> {
        let id = &target.integration.id;
        let now = target.clock.unix_now();
        let error = match failure.as_ref().filter(|f| now < f.until) {
            Some(recent) => recent.error.clone(),
            None => match self.ask(target, app).await {
                Ok((token, expires_at)) => {
                    let now = target.clock.unix_now();
                    let lifetime = expires_at.saturating_sub(now);
                    // Never sooner than a minute from now, whatever the host's clock says.
                    let renew_at = expires_at
                        .saturating_sub(RENEW_BEFORE.min(lifetime / 2))
                        .max(now + 60);
                    let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                    *slot.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Minted {
                        token: token.clone(),
                        renew_at,
                        expires_at,
                        generation,
                    });
                    *failure = None;
                    count(metrics, id, "ok");
                    set_unavailable(metrics, id, false);
                    tracing::info!(
                        integration = %id,
                        app_id = app.app_id,
                        installation_id = app.installation_id,
                        expires_at,
                        renew_at,
                        "got a GitHub App installation token"
                    );
                    return Ok(Lease {
                        credential: Credential::Token(token),
                        generation,
                    });
                }
                Err(error) => {
                    let error = Arc::new(error);
                    count(metrics, id, "error");
                    tracing::warn!(
                        integration = %id,
                        error = %error,
                        "could not get a GitHub App installation token; requests through this integration answer 503 until one is had (tried again after {RETRY_AFTER_FAILURE} s)"
                    );
                    *failure = Some(Failure {
                        until: now + RETRY_AFTER_FAILURE,
                        error: error.clone(),
                    });
                    error
                }
            },
        };
        if let Some(lease) = slot.lease(now, valid) {
            return Ok(lease);
        }
        set_unavailable(metrics, id, true);
        Err(error)
    }

    /// Signs a JWT and asks for a token: the token and its `expires_at`.
    async fn ask(
        &self,
        target: &Target<'_>,
        app: &App<'_>,
    ) -> Result<(SecretString, u64), AppTokenError> {
        let jwt = app_jwt(target, app)?;
        let github = Github::new(&target.integration.base_url);
        let minted = host_calls::github_installation_token(
            &github,
            target.upstream,
            &jwt,
            app.app_id,
            app.installation_id,
        )
        .await
        .map_err(|e| host_error(target, app, e))?;
        Ok((minted.token, minted.expires_at))
    }
}

impl Slot {
    fn new(key: SlotKey) -> Arc<Slot> {
        Arc::new(Slot {
            key,
            stamp: RwLock::new(None),
            current: RwLock::new(None),
            minting: tokio::sync::Mutex::new(None),
        })
    }
}

fn count(metrics: &Metrics, integration: &str, result: &'static str) {
    metrics
        .github_app_token_mints
        .get_or_create(&AppTokenLabels {
            integration: integration.to_string(),
            result,
        })
        .inc();
}

fn set_unavailable(metrics: &Metrics, integration: &str, unavailable: bool) {
    metrics
        .github_app_token_unavailable
        .get_or_create(&IntegrationLabels {
            integration: integration.to_string(),
        })
        .set(i64::from(unavailable));
}
