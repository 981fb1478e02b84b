//! One request to a git host, from a verified caller to the host and back, as named steps in
//! the order they run:
//!
//! | step | function | refuses with |
//! |---|---|---|
//! | authenticate | [`authenticate`]: the runtime's [`crate::authn::Authenticator`] | 401, 403 `client-not-allowed` |
//! | the integration | [`integration`] | 404 `unknown-integration` |
//! | read | [`read`]: dot segments, method overrides, the acting account, the body (within its deadline) and its digest | 400, 401, 408, 413 |
//! | classify | [`classify`]: the host adapter says what the request does | 400 (an action names no user) |
//! | limit | [`limit`]: patgate's quotas | 429 `rate-limited` |
//! | policy | [`policy`]: which credential, or which refusal | 403 `user-pat-required` (with a setup link), … |
//! | credential | [`credential`]: host holds, then the vault | 429 `host-rate-limited`, 503 |
//! | GitHub App | [`installation_token`]: a GitHub App integration account's installation token | 503 `unavailable` |
//! | forward | [`forward::forward`]: the host request, the streamed answer; for an installation token the host refused (401), once more with a new one | 502, 504, 503 |
//!
//! Limits come after classification because reads and actions have separate quotas and only
//! the host adapter knows which one a request is; before the policy, because the policy
//! reads the vault, which is what the limits protect.
//!
//! Nothing reaches the host before the signature, the body's digest and the policy have all
//! passed. A refusal is a [`RequestError`], which [`crate::error`] turns into the answer.

pub(crate) mod forward;
pub(crate) mod summary;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::app_tokens::{App, Lease};
use crate::authn::{Caller, Connection, RequestHead};
use crate::body::ResponseBody;
use crate::error::RequestError;
use crate::ids::AccountId;
use crate::inbound;
use crate::policy::{self, Decision, Facts, Operation};
use crate::ratelimit::{self, HoldCredential};
use crate::runtime::{IntegrationRuntime, Runtime};
use crate::vault::{Credential, PatMeta, SecretStamp, Stamped};

pub(crate) use summary::Summary;

/// The first step of every request on the api listener (`/git` and `/v1`): the target URI
/// the caller addressed, then the runtime's authenticator.
pub(crate) async fn authenticate(
    runtime: &Runtime,
    connection: &Connection,
    req: &Request<Incoming>,
) -> Result<Caller, RequestError> {
    let authenticator = runtime.authenticator();
    authenticator.admit(connection)?;
    let target_uri = inbound::target_uri(req)?;
    let head = RequestHead {
        method: req.method(),
        target_uri: &target_uri,
        headers: req.headers(),
        has_body: !req.body().is_end_stream(),
    };
    let now = runtime.clock().unix_now();
    Ok(authenticator.authenticate(connection, head, now).await?)
}

/// The path below `/git/`: the integration and the host path (raw, never decoded).
pub(crate) fn split_git_path(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    }
}

/// The configured integration a `/git/{id}/…` request names.
pub(crate) fn integration<'r>(
    runtime: &'r Runtime,
    id: &str,
) -> Result<&'r IntegrationRuntime, RequestError> {
    runtime
        .integration(id)
        .ok_or_else(|| RequestError::UnknownIntegration(id.to_string()))
}

/// What the request says, read and checked.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub parts: Parts,
    pub body: Bytes,
    /// The acting Jira user, if one is named.
    pub account: Option<AccountId>,
    /// The caller stands for the app itself ([`Caller::acts_as_app`]).
    pub acts_as_app: bool,
}

/// Reads the request: no dot segments in the host path, no method override (header, query
/// parameter or form field), the acting account (the caller's own principal, else the
/// signed `Patgate-Account`), the whole body within the integration's limit and the
/// request's deadline, and its digest.
pub(crate) async fn read(
    integration: &IntegrationRuntime,
    caller: &Caller,
    req: Request<Incoming>,
    host_path: &str,
) -> Result<Read, RequestError> {
    inbound::refuse_dot_segments(host_path)?;
    inbound::refuse_method_override(req.headers(), req.uri().query())?;
    let account = match &caller.principal {
        Some(principal) => Some(principal.clone()),
        None => inbound::account(req.headers())?,
    };
    let (parts, body) = req.into_parts();
    let body = inbound::read_body(&parts, body, integration.config().max_body_bytes).await?;
    inbound::check_digest(&parts.headers, &body)?;
    inbound::refuse_method_override_in_body(&parts.headers, &body)?;
    Ok(Read {
        parts,
        body,
        account,
        acts_as_app: caller.acts_as_app,
    })
}

/// What the request does on the host; an action must name its user, unless the caller
/// stands for the app itself (a Forge system call: then the policy decides as for the
/// integration account).
pub(crate) fn classify(
    integration: &IntegrationRuntime,
    read: &Read,
    host_path: &str,
) -> Result<Operation, RequestError> {
    let operation = integration.adapter().classify(
        &read.parts.method,
        host_path,
        &read.parts.headers,
        &read.body,
    );
    if operation.is_action() && read.account.is_none() && !read.acts_as_app {
        return Err(RequestError::AccountRequired);
    }
    Ok(operation)
}

/// Patgate's quotas for this caller, integration, user and class (see [`crate::ratelimit`]).
pub(crate) fn limit(
    runtime: &Runtime,
    caller: &Caller,
    integration: &IntegrationRuntime,
    account: Option<&AccountId>,
    operation: Operation,
    request_id: &str,
) -> Result<(), RequestError> {
    runtime.limits().check(
        &ratelimit::Subject {
            client: &caller.client,
            integration: integration.id(),
            account: account.map(AccountId::as_str),
            class: ratelimit::Class::of(operation),
            request_id,
        },
        runtime.metrics(),
    )?;
    Ok(())
}

/// The policy's decision, and the user's PAT when the policy took it.
#[derive(Debug)]
pub(crate) struct Decided {
    pub decision: Decision,
    pub user_pat: Option<(Credential, PatMeta)>,
}

/// Which credential the host must see ([`crate::policy`]), or which refusal; a user who
/// must set up a PAT gets a link to the page where they can.
pub(crate) async fn policy(
    runtime: &Runtime,
    caller: &Caller,
    integration: &IntegrationRuntime,
    account: Option<&AccountId>,
    operation: Operation,
) -> Result<Decided, RequestError> {
    let config = integration.config();
    let user_pat = match (
        account,
        policy::consults_user_pat(operation, config.require_user_pat),
    ) {
        (Some(account), true) => {
            runtime
                .vault()
                .user_pat(&config.id, account.as_str())
                .await?
        }
        _ => None,
    };
    let decision = policy::decide(Facts {
        operation,
        require_user_pat: config.require_user_pat,
        host_supports_pats: integration.adapter().supports_pats(),
        user_has_pat: user_pat.is_some(),
        allow_other_writes: config.allow_other_writes,
    })
    .map_err(|refusal| {
        // The user can act on this at once: a link to the page where they enter a PAT.
        let setup_url = match (refusal, account) {
            (policy::Refusal::UserPatRequired, Some(account)) => setup_url(
                runtime,
                caller,
                integration,
                account,
                crate::audit::LinkIssuedIn::UserPatRequired,
            ),
            _ => None,
        };
        RequestError::Policy { refusal, setup_url }
    })?;
    Ok(Decided { decision, user_pat })
}

/// Where the user can enter a PAT: a fresh one-time link, when there is a connect page
/// (its issue is audited as `connect-link-issued`, saying in which answer it went out).
pub(crate) fn setup_url(
    runtime: &Runtime,
    caller: &Caller,
    integration: &IntegrationRuntime,
    account: &AccountId,
    issued_in: crate::audit::LinkIssuedIn,
) -> Option<String> {
    runtime.links().map(|links| {
        let link = links.issue(
            integration.id(),
            account.as_str(),
            runtime.clock().unix_now(),
        );
        crate::audit::connect_link_issued(
            caller,
            issued_in,
            integration.id(),
            account.as_str(),
            &link.expires_at,
        );
        link.url
    })
}

/// The credential to send with: refused while the host holds it, else the user's PAT (its
/// use recorded; with what the vault knows of it) or the integration's credential
/// ([`integration_credential`]).
pub(crate) async fn credential(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    account: Option<&AccountId>,
    decided: Decided,
) -> Result<(Credential, Option<PatMeta>, Option<AppUse>), RequestError> {
    let id = integration.id();
    let held = hold_credential(decided.decision, account);
    runtime
        .limits()
        .holds()
        .check(id, held, runtime.metrics())
        .await?;
    match (decided.decision, account) {
        (Decision::UseUserPat, Some(account)) => {
            runtime
                .pat_uses()
                .record(id, account.as_str(), runtime.clock().unix_now());
            decided
                .user_pat
                .map(|(credential, meta)| (credential, Some(meta), None))
                .ok_or_else(|| RequestError::NoSecret(id.to_string()))
        }
        _ => integration_credential(runtime, integration)
            .await
            .map(|(credential, app)| (credential, None, app)),
    }
}

/// The integration's credential as the host takes it: its secret from the vault, or for a
/// GitHub App an installation token. While the token in memory is fresh and the vault's
/// record is the one it was minted from, the token is used without decrypting the record:
/// the App's private key is unsealed only to sign a JWT ([`crate::app_tokens`]).
async fn integration_credential(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
) -> Result<(Credential, Option<AppUse>), RequestError> {
    let id = integration.id();
    let target = integration.app_target();
    let github = integration.config().kind == crate::config::HostKind::Github;
    // One read of the record; decrypted only when no fresh token of this App serves.
    let fresh = std::sync::OnceLock::new();
    let stamped = runtime
        .vault()
        .integration_secret_unless(id, |stamp| {
            github
                && stamp.is_github_app()
                && fresh
                    .get_or_init(|| runtime.app_tokens().fresh_for(&target, stamp))
                    .is_some()
        })
        .await?
        .ok_or_else(|| RequestError::NoSecret(id.to_string()))?;
    let (credential, stamp) = match stamped {
        Stamped::Read(credential, stamp) => (credential, stamp),
        Stamped::Skipped => {
            let lease = fresh
                .into_inner()
                .flatten()
                .expect("skipped only with a fresh token");
            let token = lease.credential.clone();
            return Ok((token, Some(AppUse { lease })));
        }
    };
    installation_token(runtime, integration, credential, stamp).await
}

/// A GitHub App integration account, exchanged for its installation token: the lease of the
/// token (to renew exactly that one after a 401). The App itself is not kept: a renewal reads
/// it again (another App stored meanwhile gets a slot, and a token, of its own).
#[derive(Debug)]
pub(crate) struct AppUse {
    lease: Lease,
}

/// The credential as the host takes it: a GitHub App (read from the vault record `stamp`
/// names) becomes its installation token ([`crate::app_tokens`]); anything else is sent as
/// it is.
async fn installation_token(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    credential: Credential,
    stamp: SecretStamp,
) -> Result<(Credential, Option<AppUse>), RequestError> {
    let Some(app) = App::of(&credential) else {
        return Ok((credential, None));
    };
    let lease = runtime
        .app_tokens()
        .token(&integration.app_target(), &app, stamp, runtime.metrics())
        .await
        .map_err(RequestError::AppToken)?;
    let token = lease.credential.clone();
    Ok((token, Some(AppUse { lease })))
}

/// A new installation token after the host refused `used`'s (one attempt). The App is read
/// (and its key unsealed) to sign the new JWT; if the admin replaced the App meanwhile, the
/// credential stored now is what goes.
async fn renewed_installation_token(
    runtime: &Runtime,
    integration: &IntegrationRuntime,
    used: &AppUse,
) -> Result<Credential, RequestError> {
    let id = integration.id();
    let Some(Stamped::Read(credential, stamp)) = runtime
        .vault()
        .integration_secret_unless(id, |_| false)
        .await?
    else {
        return Err(RequestError::NoSecret(id.to_string()));
    };
    let Some(app) = App::of(&credential) else {
        return Ok(credential);
    };
    let lease = runtime
        .app_tokens()
        .renew(
            &integration.app_target(),
            &app,
            stamp,
            &used.lease,
            runtime.metrics(),
        )
        .await
        .map_err(RequestError::AppToken)?;
    Ok(lease.credential)
}

/// Which credential a hold is on, for a decision.
pub(crate) fn hold_credential(
    decision: Decision,
    account: Option<&AccountId>,
) -> HoldCredential<'_> {
    match (decision, account) {
        (Decision::UseUserPat, Some(account)) => HoldCredential::User(account.as_str()),
        _ => HoldCredential::Integration,
    }
}

/// Every step for a request below `/git/{integration}`, once the caller is verified.
pub(crate) async fn git(
    runtime: &Runtime,
    caller: &Caller,
    req: Request<Incoming>,
    request_id: &str,
    summary: &mut Summary,
) -> Result<Response<ResponseBody>, RequestError> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/git/").unwrap_or_default();
    let (id, host_path) = split_git_path(rest);
    let integration = integration(runtime, id)?;
    summary.integration = Some(integration.id().to_string());
    let read = read(integration, caller, req, host_path).await?;
    summary.account = read.account.clone();
    let operation = classify(integration, &read, host_path)?;
    summary.operation = Some(operation);
    let account = read.account.clone();
    limit(
        runtime,
        caller,
        integration,
        account.as_ref(),
        operation,
        request_id,
    )?;
    let decided = policy(runtime, caller, integration, account.as_ref(), operation).await?;
    let decision = decided.decision;
    summary.credential = Some(decision);
    let (credential, user_pat, app) =
        credential(runtime, integration, account.as_ref(), decided).await?;
    let again = app.as_ref().map(|_| read.clone());
    let outbound = |read, credential, user_pat| forward::Outbound {
        read,
        host_path,
        request_id,
        decision,
        credential,
        user_pat,
        caller,
    };
    let response = forward::forward(
        runtime,
        integration,
        outbound(read, credential, user_pat),
        summary,
    )
    .await?;
    // An installation token the host refused (revoked, or the App's key was rotated): the
    // request goes once more with a new token, and whatever the host answers then stands.
    // A 401 means the host did nothing, so sending a write again is safe. (An installation
    // token is the integration's credential: there is no user PAT to tell about.)
    let (Some(app), Some(read)) = (app, again) else {
        return Ok(response);
    };
    if response.status() != http::StatusCode::UNAUTHORIZED {
        return Ok(response);
    }
    drop(response);
    let credential = renewed_installation_token(runtime, integration, &app).await?;
    forward::forward(
        runtime,
        integration,
        outbound(read, credential, None),
        summary,
    )
    .await
}
