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
//! Memory: a hold exists only for a stored credential the host throttled, so there are at
//! most as many as credentials in the vault; ended holds are dropped on lookup and by
//! [`Holds::prune`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock as _;
use governor::nanos::Nanos;
use http::header::{HeaderMap, RETRY_AFTER};
use http::StatusCode;

use super::{ceil_seconds, Clock};
use crate::config::HostThrottleSettings;
use crate::error::{ErrorCode, Problem};
use crate::metrics::{HoldLabels, Metrics};

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

    fn key(&self, integration: &str) -> (String, Option<String>) {
        match self {
            HoldCredential::Integration => (integration.to_string(), None),
            HoldCredential::User(account) => (integration.to_string(), Some(account.to_string())),
        }
    }
}

/// The credentials on hold, and until when (on the limiters' clock).
#[derive(Debug)]
pub struct Holds {
    clock: Clock,
    settings: Mutex<HostThrottleSettings>,
    until: Mutex<HashMap<(String, Option<String>), Nanos>>,
}

impl Holds {
    pub fn new(settings: HostThrottleSettings, clock: Clock) -> Holds {
        Holds {
            clock,
            settings: Mutex::new(settings),
            until: Mutex::default(),
        }
    }

    pub(crate) fn reconfigure(&self, settings: HostThrottleSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// `Err` (429 `host-rate-limited`, `Retry-After` = what is left of the hold) while the
    /// credential is held.
    pub fn check(
        &self,
        integration: &str,
        credential: HoldCredential<'_>,
        metrics: &Metrics,
    ) -> Result<(), Problem> {
        let now = self.clock.now();
        let key = credential.key(integration);
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let Some(&until) = map.get(&key) else {
            return Ok(());
        };
        if until <= now {
            map.remove(&key);
            set_active(&map, now, metrics);
            return Ok(());
        }
        drop(map);
        metrics
            .upstream_held
            .get_or_create(&labels(integration, credential))
            .inc();
        let left = ceil_seconds(Duration::from(until.saturating_sub(now)));
        let mut problem = Problem::new(
            ErrorCode::HostRateLimited,
            format!(
                "the git host of integration `{integration}` is rate limiting the {} credential; patgate holds requests with it for {left} s more",
                match credential {
                    HoldCredential::Integration => "integration's",
                    HoldCredential::User(_) => "user's",
                }
            ),
        );
        problem.retry_after = Some(left);
        Err(problem)
    }

    /// Looks at the host's answer to a request sent with `credential`, and starts a hold
    /// when the host throttled it.
    pub fn observe(
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
        let hold = hold_duration(headers, unix_now(), &settings);
        let now = self.clock.now();
        let until = now + Nanos::from(hold);
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(credential.key(integration)).or_insert(now);
        let starts = *entry <= now;
        *entry = (*entry).max(until);
        set_active(&map, now, metrics);
        drop(map);
        if starts {
            let until_wall = SystemTime::now() + hold;
            tracing::warn!(
                target: "patgate::ratelimit",
                integration,
                credential = credential.kind(),
                status = status.as_u16(),
                hold_seconds = hold.as_secs(),
                until = %humantime::format_rfc3339_seconds(until_wall),
                "the git host throttled this credential; patgate answers requests with it 429 until the reset"
            );
        }
    }

    /// Drops holds that ended.
    pub fn prune(&self, metrics: &Metrics) {
        let now = self.clock.now();
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, until| *until > now);
        map.shrink_to_fit();
        set_active(&map, now, metrics);
    }

    /// Holds in memory, ended or not (for tests of pruning).
    pub fn len(&self) -> usize {
        self.until.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn labels(integration: &str, credential: HoldCredential<'_>) -> HoldLabels {
    HoldLabels {
        integration: integration.to_string(),
        credential: credential.kind().to_string(),
    }
}

fn set_active(map: &HashMap<(String, Option<String>), Nanos>, now: Nanos, metrics: &Metrics) {
    let active = map.values().filter(|until| **until > now).count();
    metrics
        .holds_active
        .set(i64::try_from(active).unwrap_or(i64::MAX));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
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
