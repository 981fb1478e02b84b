//! Holds: when the git host says a credential is over its limits, patgate stops sending
//! requests with that credential until the host's reset and answers them itself with
//! `429 host-rate-limited`.
//!
//! A host throttles when it answers 429; or 403 with `x-ratelimit-remaining: 0` (GitHub's
//! primary limit, which it answers with 403); or 429/403/503 with `Retry-After` (GitHub's
//! secondary limits, GitLab, Azure DevOps). The hold lasts until, in this order:
//! `Retry-After` (delta-seconds or HTTP-date), `x-ratelimit-reset` (GitHub: epoch seconds),
//! `RateLimit-Reset` (GitLab: epoch seconds; a small number is taken as delta-seconds, as
//! in the IETF drafts), else `default_hold_seconds`; never longer than `max_hold_seconds`.
//!
//! Holds are keyed by integration and credential: the integration's own token, or one
//! user's PAT. A throttled integration token does not stop users acting with their own
//! PATs, and one user's throttled PAT stops nobody else. The host's own 429 reaches the app
//! unchanged; only the requests after it are answered by patgate.
//!
//! Where holds are kept is a [`HoldStore`]: every process that shares one holds a credential
//! another one saw throttled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use http::header::{HeaderMap, RETRY_AFTER};
use http::StatusCode;

use super::ceil_seconds;
use crate::clock::Clock;
use crate::config::HostThrottleSettings;
use crate::metrics::{HoldLabels, Metrics};
use crate::store::{HoldKey, HoldState, HoldStore, StoreError};

/// Which credential of an integration a hold is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCredential<'a> {
    /// The integration's own token (or key pair, or account).
    Integration,
    /// This user's PAT.
    User(&'a str),
}

impl HoldCredential<'_> {
    /// The `credential` label: `integration` or `user` (never the account: unbounded).
    pub fn kind(&self) -> &'static str {
        match self {
            HoldCredential::Integration => "integration",
            HoldCredential::User(_) => "user",
        }
    }

    fn key<'a>(&'a self, integration: &'a str) -> HoldKey<'a> {
        HoldKey {
            integration,
            account: match self {
                HoldCredential::Integration => None,
                HoldCredential::User(account) => Some(account),
            },
        }
    }
}

/// A request refused because its credential is on hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldRefusal {
    #[error("the git host of integration `{integration}` is rate limiting the {whose} credential; patgate holds requests with it for {retry_after} s more")]
    Held {
        integration: String,
        /// `integration's` or `user's`.
        whose: &'static str,
        /// Whole seconds left of the hold, rounded up.
        retry_after: u64,
    },
    /// The hold store did not answer: nothing is sent with a credential that may be held.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The credentials on hold, and until when, in a [`HoldStore`].
#[derive(Debug)]
pub struct Holds {
    clock: Clock,
    settings: Mutex<HostThrottleSettings>,
    store: Arc<dyn HoldStore>,
}

/// Unix milliseconds on `clock`.
fn now_ms(clock: &Clock) -> u64 {
    u64::try_from(
        clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl Holds {
    pub fn new(settings: HostThrottleSettings, clock: Clock, store: Arc<dyn HoldStore>) -> Holds {
        Holds {
            clock,
            settings: Mutex::new(settings),
            store,
        }
    }

    pub(crate) fn reconfigure(&self, settings: HostThrottleSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// `Err` (429 `host-rate-limited`, `Retry-After` = what is left of the hold) while the
    /// credential is held.
    pub async fn check(
        &self,
        integration: &str,
        credential: HoldCredential<'_>,
        metrics: &Metrics,
    ) -> Result<(), HoldRefusal> {
        let now = now_ms(&self.clock);
        let until = match self.store.held(credential.key(integration), now).await? {
            HoldState::Free => return Ok(()),
            HoldState::Ended => {
                self.count_active(now, metrics).await;
                return Ok(());
            }
            HoldState::Held(until) => until,
        };
        metrics
            .upstream_held
            .get_or_create(&labels(integration, credential))
            .inc();
        Err(HoldRefusal::Held {
            integration: integration.to_string(),
            whose: match credential {
                HoldCredential::Integration => "integration's",
                HoldCredential::User(_) => "user's",
            },
            retry_after: ceil_seconds(Duration::from_millis(until.saturating_sub(now))),
        })
    }

    /// Looks at the host's answer to a request sent with `credential`, and starts a hold
    /// when the host throttled it.
    pub async fn observe(
        &self,
        integration: &str,
        credential: HoldCredential<'_>,
        status: StatusCode,
        headers: &HeaderMap,
        metrics: &Metrics,
    ) {
        if !throttled(status, headers) {
            return;
        }
        metrics
            .upstream_throttled
            .get_or_create(&labels(integration, credential))
            .inc();
        let settings = *self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if !settings.hold {
            return;
        }
        let hold = hold_duration(headers, self.clock.unix_now(), &settings);
        let now = now_ms(&self.clock);
        let until = now.saturating_add(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX));
        match self
            .store
            .hold(credential.key(integration), until, now)
            .await
        {
            Ok(starts) => {
                self.count_active(now, metrics).await;
                if starts {
                    tracing::warn!(
                        target: "patgate::ratelimit",
                        integration,
                        credential = credential.kind(),
                        status = status.as_u16(),
                        hold_seconds = hold.as_secs(),
                        until = %humantime::format_rfc3339_seconds(self.clock.now() + hold),
                        "the git host throttled this credential; patgate answers requests with it 429 until the reset"
                    );
                }
            }
            Err(err) => tracing::error!(
                target: "patgate::ratelimit",
                integration,
                credential = credential.kind(),
                error = %err,
                "the git host throttled this credential, and the hold could not be stored"
            ),
        }
    }

    /// Drops holds that ended, and sets `patgate_upstream_holds_active`.
    pub async fn prune(&self, metrics: &Metrics) {
        self.count_active(now_ms(&self.clock), metrics).await;
    }

    async fn count_active(&self, now: u64, metrics: &Metrics) {
        match self.store.prune(now).await {
            Ok(active) => {
                metrics
                    .holds_active
                    .set(i64::try_from(active).unwrap_or(i64::MAX));
            }
            Err(err) => tracing::warn!(error = %err, "pruning host holds failed"),
        }
    }
}

fn labels(integration: &str, credential: HoldCredential<'_>) -> HoldLabels {
    HoldLabels {
        integration: integration.to_string(),
        credential: credential.kind().to_string(),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether the host's answer says the credential is over its limits.
pub fn throttled(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && header(headers, "x-ratelimit-remaining") == Some("0"))
        || (matches!(
            status,
            StatusCode::FORBIDDEN | StatusCode::SERVICE_UNAVAILABLE
        ) && headers.contains_key(RETRY_AFTER))
}

/// Epoch seconds from here on are a date, smaller numbers a delay (2001-09-09).
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// How long the host asked to wait, from its headers; `now_unix` turns dates into delays.
pub fn reset_after(headers: &HeaderMap, now_unix: u64) -> Option<Duration> {
    let until_epoch = |epoch: u64| Duration::from_secs(epoch.saturating_sub(now_unix));
    if let Some(value) = header(headers, RETRY_AFTER.as_str()) {
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let Ok(date) = httpdate::parse_http_date(value) {
            let epoch = date
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            return Some(until_epoch(epoch));
        }
    }
    if let Some(epoch) = header(headers, "x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
        return Some(until_epoch(epoch));
    }
    if let Some(value) = header(headers, "ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
        return Some(if value >= EPOCH_THRESHOLD {
            until_epoch(value)
        } else {
            Duration::from_secs(value)
        });
    }
    None
}

/// The hold for a throttled answer: the host's reset, else the default; at least a second,
/// at most `max_hold`.
pub fn hold_duration(
    headers: &HeaderMap,
    now_unix: u64,
    settings: &HostThrottleSettings,
) -> Duration {
    reset_after(headers, now_unix)
        .unwrap_or(settings.default_hold)
        .max(Duration::from_secs(1))
        .min(settings.max_hold)
}
