//! The audit stream: credential changes, one `tracing` event each on the `patgate::audit`
//! target, whichever path made them (the `/v1` API, the connect page, the admin CLI).
//! [`crate::telemetry`] can send this target to its own file.
//!
//! Events name who and what, never the credential.

use crate::authn::AuthMethod;

/// The `tracing` target every audit event uses.
pub(crate) const TARGET: &str = "patgate::audit";

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The app, over the `/v1` API, authenticated this way.
    Api(AuthMethod),
    /// A user, on the connect page.
    ConnectPage,
    /// An admin, with the `patgate` command (admin socket or vault file).
    Cli,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Api(_) => "api",
            Via::ConnectPage => "connect-page",
            Via::Cli => "cli",
        }
    }

    /// How the app authenticated (the audit events' `auth`); `-` for the other channels.
    pub(crate) fn auth(self) -> &'static str {
        match self {
            Via::Api(method) => method.as_str(),
            Via::ConnectPage | Via::Cli => "-",
        }
    }
}

pub(crate) fn pat_stored(via: Via, integration: &str, account: &str, host_login: &str) {
    tracing::info!(target: TARGET, event = "pat-stored", via = via.as_str(), auth = via.auth(), integration, account, host_login, "user PAT stored");
}

pub(crate) fn pat_removed(via: Via, integration: &str, account: &str) {
    tracing::info!(target: TARGET, event = "pat-removed", via = via.as_str(), auth = via.auth(), integration, account, "user PAT removed");
}

pub(crate) fn integration_secret_changed(via: Via, integration: &str) {
    tracing::info!(target: TARGET, event = "integration-secret-changed", via = via.as_str(), auth = via.auth(), integration, "integration secret changed");
}

pub(crate) fn key_rotated(via: Via, from_version: u32, to_version: u32, records: usize) {
    tracing::info!(target: TARGET, event = "key-rotated", via = via.as_str(), auth = via.auth(), from_version, to_version, records, "vault master key rotated");
}

/// A refused PAT, on the connect page (the user sees why; the token is not stored).
pub(crate) fn pat_refused(via: Via, integration: &str, account: &str, code: &str) {
    tracing::info!(target: TARGET, event = "pat-refused", via = via.as_str(), auth = via.auth(), integration, account, code, "user PAT refused");
}

/// The host refused a stored user PAT on an action (expired, revoked): it is marked, kept,
/// and the user is asked for a new one.
pub(crate) fn pat_refused_by_host(integration: &str, account: &str, host_status: u16) {
    tracing::info!(target: TARGET, event = "pat-refused-by-host", via = "host", auth = "-", integration, account, host_status, "the git host refused a stored user PAT; it is marked refused");
}

/// A PAT marked refused was accepted by the host again: the mark is cleared.
pub(crate) fn pat_accepted_again(integration: &str, account: &str) {
    tracing::info!(target: TARGET, event = "pat-accepted-again", via = "host", auth = "-", integration, account, "the git host accepted a user PAT marked refused; the mark is cleared");
}

/// The app asked for a one-time link to the connect page for a user.
pub(crate) fn connect_link_issued(
    auth: AuthMethod,
    integration: &str,
    account: &str,
    expires_at: &str,
) {
    tracing::info!(target: TARGET, event = "connect-link-issued", via = "api", auth = auth.as_str(), integration, account, expires_at, "connect link issued");
}

/// A user opened a connect link.
pub(crate) fn connect_link_opened(integration: &str, account: &str) {
    tracing::info!(target: TARGET, event = "connect-link-opened", via = Via::ConnectPage.as_str(), integration, account, "connect link opened");
}

/// A connect link was refused (expired, used, forged); `reason` never holds the link.
pub(crate) fn connect_link_refused(reason: &dyn std::fmt::Display) {
    tracing::info!(target: TARGET, event = "connect-link-refused", via = Via::ConnectPage.as_str(), reason = %reason, "connect link refused");
}
