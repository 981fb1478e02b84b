//! The audit stream: credential changes, one `tracing` event each on the `patgate::audit`
//! target, whichever path made them (the `/v1` API, the connect page, the admin CLI).
//! [`crate::telemetry`] can send this target to its own file.
//!
//! Events name who and what, never the credential.

use std::fmt;

use crate::authn::Caller;

/// The `tracing` target every audit event uses.
pub(crate) const TARGET: &str = "patgate::audit";

/// Where a change came from, and who made it: each event's `via`, `auth`, `actor` and
/// `key_id`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Via<'a> {
    /// The app, over the `/v1` API: its client identity (certificate subject, or the Forge
    /// caller's) and the key that signed the request.
    Api(&'a Caller),
    /// A user, on the connect page (their link names their account).
    ConnectPage,
    /// An admin, with the `patgate` command: the command's own OS user when it opened the
    /// vault itself, the admin socket's peer when it went through the service.
    Cli(OsUser),
}

impl<'a> Via<'a> {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Api(_) => "api",
            Via::ConnectPage => "connect-page",
            Via::Cli(_) => "cli",
        }
    }

    /// How the app authenticated (the audit events' `auth`); `-` for the other channels.
    pub(crate) fn auth(self) -> &'static str {
        match self {
            Via::Api(caller) => caller.method.as_str(),
            Via::ConnectPage | Via::Cli(_) => "-",
        }
    }

    /// Who acted (`actor`): the app's client identity, the OS user as `uid=N(name)`, or on
    /// the connect page the account the link was issued for.
    fn actor(self, account: &str) -> String {
        match self {
            Via::Api(caller) => caller.client.to_string(),
            Via::ConnectPage => account.to_string(),
            Via::Cli(user) => user.to_string(),
        }
    }

    /// The app key that signed the request (`key_id`); `-` for the other channels.
    fn key_id(self) -> &'a str {
        match self {
            Via::Api(caller) => &caller.key_id,
            Via::ConnectPage | Via::Cli(_) => "-",
        }
    }
}

/// An operating-system user, by uid; shown as `id(1)` shows it, `uid=1000(alice)` (the name
/// is looked up when the event is written, through NSS; a uid without a name shows alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OsUser {
    pub(crate) uid: u32,
}

impl OsUser {
    /// The user this process runs as (its real uid: `sudo` keeps the admin's in `SUDO_UID`,
    /// but a root shell is root).
    pub(crate) fn current() -> OsUser {
        OsUser {
            uid: rustix::process::getuid().as_raw(),
        }
    }
}

impl fmt::Display for OsUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match uzers::get_user_by_uid(self.uid) {
            Some(user) => write!(f, "uid={}({})", self.uid, user.name().to_string_lossy()),
            None => write!(f, "uid={}", self.uid),
        }
    }
}

pub(crate) fn pat_stored(via: Via<'_>, integration: &str, account: &str, host_login: &str) {
    tracing::info!(target: TARGET, event = "pat-stored", via = via.as_str(), auth = via.auth(), actor = via.actor(account), key_id = via.key_id(), integration, account, host_login, "user PAT stored");
}

pub(crate) fn pat_removed(via: Via<'_>, integration: &str, account: &str) {
    tracing::info!(target: TARGET, event = "pat-removed", via = via.as_str(), auth = via.auth(), actor = via.actor(account), key_id = via.key_id(), integration, account, "user PAT removed");
}

pub(crate) fn integration_secret_changed(via: Via<'_>, integration: &str) {
    tracing::info!(target: TARGET, event = "integration-secret-changed", via = via.as_str(), auth = via.auth(), actor = via.actor("-"), key_id = via.key_id(), integration, "integration secret changed");
}

pub(crate) fn key_rotated(via: Via<'_>, from_version: u32, to_version: u32, records: usize) {
    tracing::info!(target: TARGET, event = "key-rotated", via = via.as_str(), auth = via.auth(), actor = via.actor("-"), key_id = via.key_id(), from_version, to_version, records, "vault master key rotated");
}

/// A refused PAT (the one who sent it sees why; the token is not stored).
pub(crate) fn pat_refused(via: Via<'_>, integration: &str, account: &str, code: &str) {
    tracing::info!(target: TARGET, event = "pat-refused", via = via.as_str(), auth = via.auth(), actor = via.actor(account), key_id = via.key_id(), integration, account, code, "user PAT refused");
}

/// Why a connect link was issued (the `issued_in` of `connect-link-issued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkIssuedIn {
    /// The app asked for one (`POST …/connect-link`).
    ConnectLinkRequest,
    /// A `user-pat-required` refusal carries it as `setup_url`.
    UserPatRequired,
    /// A `user-pat-refused` answer (the host refused the stored PAT) carries it.
    UserPatRefused,
}

impl LinkIssuedIn {
    fn as_str(self) -> &'static str {
        match self {
            LinkIssuedIn::ConnectLinkRequest => "connect-link-request",
            LinkIssuedIn::UserPatRequired => "user-pat-required",
            LinkIssuedIn::UserPatRefused => "user-pat-refused",
        }
    }
}

/// The host refused a stored user PAT on an action (expired, revoked): it is marked, kept,
/// and the user is asked for a new one.
pub(crate) fn pat_refused_by_host(integration: &str, account: &str, host_status: u16) {
    tracing::info!(target: TARGET, event = "pat-refused-by-host", via = "host", auth = "-", actor = "host", key_id = "-", integration, account, host_status, "the git host refused a stored user PAT; it is marked refused");
}

/// A PAT marked refused was accepted by the host again: the mark is cleared.
pub(crate) fn pat_accepted_again(integration: &str, account: &str) {
    tracing::info!(target: TARGET, event = "pat-accepted-again", via = "host", auth = "-", actor = "host", key_id = "-", integration, account, "the git host accepted a user PAT marked refused; the mark is cleared");
}

/// A one-time link to the connect page was issued for a user, on a request of the app.
pub(crate) fn connect_link_issued(
    caller: &Caller,
    issued_in: LinkIssuedIn,
    integration: &str,
    account: &str,
    expires_at: &str,
) {
    let via = Via::Api(caller);
    tracing::info!(target: TARGET, event = "connect-link-issued", via = via.as_str(), auth = via.auth(), actor = via.actor(account), key_id = via.key_id(), issued_in = issued_in.as_str(), integration, account, expires_at, "connect link issued");
}

/// A user opened a connect link.
pub(crate) fn connect_link_opened(integration: &str, account: &str) {
    let via = Via::ConnectPage;
    tracing::info!(target: TARGET, event = "connect-link-opened", via = via.as_str(), auth = via.auth(), actor = via.actor(account), key_id = via.key_id(), integration, account, "connect link opened");
}

/// A connect link was refused (expired, used, forged); `reason` never holds the link, and
/// nobody is known to have acted (`actor` is `-`).
pub(crate) fn connect_link_refused(reason: &dyn std::fmt::Display) {
    let via = Via::ConnectPage;
    tracing::info!(target: TARGET, event = "connect-link-refused", via = via.as_str(), auth = via.auth(), actor = "-", key_id = via.key_id(), reason = %reason, "connect link refused");
}
