//! Rate limits: patgate's own quotas (governor, GCRA) and holds on credentials the git host
//! throttled.
//!
//! # Tiers
//! | tier | key | quota from |
//! |---|---|---|
//! | `user` | integration + `Patgate-Account` | `[rate_limits.user]`, or an override naming the account |
//! | `integration` | integration id | `[rate_limits.integration]`, or an override naming the integration |
//! | `client` | the client certificate's subject | `[rate_limits.client]` |
//! | `total` | none: every request | `[rate_limits.total]` |
//!
//! Every tier has a quota for **reads** and one for **actions** (every operation that is
//! not a read: create/delete branch, create pull request, allow-listed other writes), and
//! they are independent: an indexing burst never uses up the budget users click with.
//!
//! # Where in the request flow
//! All tiers are checked once, after the signature is verified, the body's digest checked
//! and the host adapter classified the request, and before the policy reads the vault:
//! - after the signature, because the per-user key comes from `Patgate-Account`, which is
//!   only trustworthy once the signature covering it is verified (DESIGN.md: key limiters on
//!   authenticated identities only, so unauthenticated traffic cannot grow the key sets);
//! - after classification, because reads and actions have separate quotas and only the host
//!   adapter knows which one a request is (some hosts need the body to tell);
//! - before the vault and the host, which are what the limits protect.
//!
//! `/v1` requests are checked the same way once their path is parsed: a
//! PAT status lookup is a read, anything else an action.
//!
//! Tiers are checked from the narrowest to the widest (user, integration, client, total):
//! a request refused by its user's quota has not taken anything from the shared budgets.
//!
//! # Shadow mode
//! A tier in shadow mode (`[rate_limits] shadow` for all, or a tier's or override's own
//! `shadow`) lets the request through, logs one `warn` line naming the tier and the class
//! and counts `patgate_rate_limited_total{shadow="true"}`: admins see what a limit would
//! do before they enforce it.
//!
//! # Refusals
//! `429 rate-limited` with `Retry-After` (whole seconds, rounded up) and the fields of
//! draft-ietf-httpapi-ratelimit-headers-10 for the quota that refused:
//! `RateLimit-Policy: "user-actions";q=10;w=60` and `RateLimit: "user-actions";r=0;t=6`.
//!
//! # Memory
//! Per-client and per-user state lives in governor's keyed stores (dashmap), which keep a
//! key until `retain_recent` drops it: [`prune_periodically`] does so every
//! `prune_interval_seconds`, so memory follows the keys active within one window. Quotas
//! for the `total` tier and for overrides are single limiters.
//!
//! # Reload
//! [`RateLimits::reconfigure`] applies new settings in place; a tier (or override) whose
//! quota did not change keeps its state, so a reload does not hand every client a fresh
//! burst.
//!
//! # Holds
//! [`holds`]: when the host answers that a credential is over its limits, further requests
//! with that credential are answered `429 host-rate-limited` by patgate until the host's
//! reset, so a burst from the app cannot get the integration account banned.

pub mod holds;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

use crate::clock::Clock;
use crate::config::{QuotaSettings, RateLimitSettings, TierSettings};
use crate::metrics::{Metrics, RateLimitLabels};
use crate::policy::Operation;
use crate::store::HoldStore;

pub use holds::{HoldCredential, HoldRefusal, Holds};

/// Reads or actions: each tier has a quota for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Reads,
    Actions,
}

impl Class {
    pub fn of(operation: Operation) -> Class {
        match operation {
            Operation::Read => Class::Reads,
            _ => Class::Actions,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Reads => "reads",
            Class::Actions => "actions",
        }
    }
}

/// A tier, as named in metrics, logs and policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    User,
    Integration,
    Client,
    Total,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::User => "user",
            Tier::Integration => "integration",
            Tier::Client => "client",
            Tier::Total => "total",
        }
    }
}

/// What a request is, for the limiters. Every field is authenticated: the client by its
/// certificate, the rest by the verified signature.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub client: &'a str,
    pub integration: &'a str,
    pub account: Option<&'a str>,
    pub class: Class,
    /// For the shadow-mode log line.
    pub request_id: &'a str,
}

/// A request over a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("over the per-{} limit for {}", .tier.as_str(), .class.as_str())]
pub struct Refusal {
    pub tier: Tier,
    pub class: Class,
    pub quota: QuotaSettings,
    /// Whole seconds until a request would be allowed again, rounded up (at least 1).
    pub retry_after: u64,
}

impl Refusal {
    /// The policy's name in `RateLimit-Policy` and `RateLimit`: `{tier}-{class}`.
    pub fn policy_name(&self) -> String {
        format!("{}-{}", self.tier.as_str(), self.class.as_str())
    }

    /// `RateLimit-Policy: "user-actions";q=10;w=60`
    pub fn policy_field(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.policy_name(),
            self.quota.requests,
            self.quota.window_seconds
        )
    }

    /// `RateLimit: "user-actions";r=0;t=6`
    pub fn limit_field(&self) -> String {
        format!("\"{}\";r=0;t={}", self.policy_name(), self.retry_after)
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, Clock, NoOpMiddleware<Nanos>>;
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, Clock, NoOpMiddleware<Nanos>>;

/// A limiter with the quota it was built for (reconfigure keeps it when that is unchanged).
#[derive(Debug)]
struct Limit<L> {
    quota: QuotaSettings,
    limiter: Arc<L>,
}

impl<L> Clone for Limit<L> {
    fn clone(&self) -> Self {
        Limit {
            quota: self.quota,
            limiter: self.limiter.clone(),
        }
    }
}

/// The reads and actions limiters of one tier or override.
#[derive(Debug)]
struct Pair<L> {
    reads: Option<Limit<L>>,
    actions: Option<Limit<L>>,
}

impl<L> Pair<L> {
    fn get(&self, class: Class) -> Option<&Limit<L>> {
        match class {
            Class::Reads => self.reads.as_ref(),
            Class::Actions => self.actions.as_ref(),
        }
    }

    /// Limiters for `reads` and `actions`, reusing `old`'s where the quota is the same.
    fn build(
        reads: Option<QuotaSettings>,
        actions: Option<QuotaSettings>,
        old: Option<&Pair<L>>,
        make: &dyn Fn(Quota) -> L,
    ) -> Pair<L> {
        let one = |quota: Option<QuotaSettings>, old: Option<&Limit<L>>| {
            let quota = quota?;
            if let Some(old) = old.filter(|o| o.quota == quota) {
                return Some(old.clone());
            }
            Some(Limit {
                quota,
                limiter: Arc::new(make(governor_quota(quota))),
            })
        };
        Pair {
            reads: one(reads, old.and_then(|o| o.reads.as_ref())),
            actions: one(actions, old.and_then(|o| o.actions.as_ref())),
        }
    }
}

/// `requests` per `window_seconds`: one every `window / requests`, `burst` back to back.
fn governor_quota(quota: QuotaSettings) -> Quota {
    let period = Duration::from_secs(u64::from(quota.window_seconds)) / quota.requests;
    // The settings guarantee requests, window and burst are at least 1, and a window of at
    // most a day over at most u32::MAX requests is at least 20 µs.
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("a period of at least 1 ns")
        .allow_burst(NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN))
}

/// Every limiter built from one version of the settings.
#[derive(Debug)]
struct Limiters {
    settings: RateLimitSettings,
    total: Pair<Direct>,
    client: Pair<Keyed<String>>,
    integration: Pair<Keyed<String>>,
    user: Pair<Keyed<(String, String)>>,
    /// (integration, account): an override's own limiters.
    overrides: HashMap<(String, Option<String>), (bool, Pair<Direct>)>,
}

impl Limiters {
    fn build(settings: &RateLimitSettings, clock: &Clock, old: Option<&Limiters>) -> Limiters {
        let direct = |q: Quota| RateLimiter::direct_with_clock(q, clock.clone());
        let keyed_string = |q: Quota| RateLimiter::dashmap_with_clock(q, clock.clone());
        let keyed_pair = |q: Quota| RateLimiter::dashmap_with_clock(q, clock.clone());
        let tier = |t: &TierSettings| (t.reads, t.actions);
        let (r, a) = tier(&settings.total);
        let total = Pair::build(r, a, old.map(|o| &o.total), &direct);
        let (r, a) = tier(&settings.client);
        let client = Pair::build(r, a, old.map(|o| &o.client), &keyed_string);
        let (r, a) = tier(&settings.integration);
        let integration = Pair::build(r, a, old.map(|o| &o.integration), &keyed_string);
        let (r, a) = tier(&settings.user);
        let user = Pair::build(r, a, old.map(|o| &o.user), &keyed_pair);
        let overrides = settings
            .overrides
            .iter()
            .map(|o| {
                let key = (o.integration.clone(), o.account.clone());
                let previous = old.and_then(|old| old.overrides.get(&key)).map(|(_, p)| p);
                let pair = Pair::build(o.reads, o.actions, previous, &direct);
                (key, (o.shadow, pair))
            })
            .collect();
        Limiters {
            settings: settings.clone(),
            total,
            client,
            integration,
            user,
            overrides,
        }
    }
}

/// patgate's rate limits and host holds. One lives for the process; a reload calls
/// [`RateLimits::reconfigure`].
#[derive(Debug)]
pub struct RateLimits {
    clock: Clock,
    limiters: RwLock<Arc<Limiters>>,
    holds: Holds,
}

impl RateLimits {
    /// Limits on `clock`, with holds kept in `holds`.
    pub fn new(
        settings: &RateLimitSettings,
        clock: Clock,
        holds: Arc<dyn HoldStore>,
    ) -> RateLimits {
        RateLimits {
            limiters: RwLock::new(Arc::new(Limiters::build(settings, &clock, None))),
            holds: Holds::new(settings.host_throttle, clock.clone(), holds),
            clock,
        }
    }

    /// Holds on credentials the git host throttled.
    pub fn holds(&self) -> &Holds {
        &self.holds
    }

    /// Applies new settings. Limiters whose quota is unchanged keep their state; the holds
    /// on credentials are kept whatever changed.
    pub fn reconfigure(&self, settings: &RateLimitSettings) {
        let mut slot = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        let rebuilt = Limiters::build(settings, &self.clock, Some(&slot));
        *slot = Arc::new(rebuilt);
        self.holds.reconfigure(settings.host_throttle);
    }

    fn current(&self) -> Arc<Limiters> {
        self.limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How often [`RateLimits::prune`] should run.
    pub fn prune_interval(&self) -> Duration {
        self.current().settings.prune_interval
    }

    /// Checks every tier, narrowest first. `Err` names the quota that refused; tiers in
    /// shadow mode log and count instead of refusing.
    pub fn check(&self, subject: &Subject<'_>, metrics: &Metrics) -> Result<(), Refusal> {
        let limiters = self.current();
        let settings = &limiters.settings;
        let class = subject.class;
        let override_for = |account: Option<&str>| {
            let key = (subject.integration.to_string(), account.map(str::to_string));
            let (shadow, pair) = limiters.overrides.get(&key)?;
            Some((*shadow, pair.get(class)?))
        };

        if let Some(account) = subject.account {
            let shadow = settings.shadow || settings.user.shadow;
            if let Some((own_shadow, limit)) = override_for(Some(account)) {
                let outcome = limit.limiter.check();
                self.verdict(
                    Tier::User,
                    subject,
                    limit.quota,
                    outcome,
                    shadow || own_shadow,
                    metrics,
                )?;
            } else if let Some(limit) = limiters.user.get(class) {
                let key = (subject.integration.to_string(), account.to_string());
                let outcome = limit.limiter.check_key(&key);
                self.verdict(Tier::User, subject, limit.quota, outcome, shadow, metrics)?;
            }
        }

        let shadow = settings.shadow || settings.integration.shadow;
        if let Some((own_shadow, limit)) = override_for(None) {
            let outcome = limit.limiter.check();
            self.verdict(
                Tier::Integration,
                subject,
                limit.quota,
                outcome,
                shadow || own_shadow,
                metrics,
            )?;
        } else if let Some(limit) = limiters.integration.get(class) {
            let outcome = limit.limiter.check_key(&subject.integration.to_string());
            self.verdict(
                Tier::Integration,
                subject,
                limit.quota,
                outcome,
                shadow,
                metrics,
            )?;
        }

        if let Some(limit) = limiters.client.get(class) {
            let outcome = limit.limiter.check_key(&subject.client.to_string());
            let shadow = settings.shadow || settings.client.shadow;
            self.verdict(Tier::Client, subject, limit.quota, outcome, shadow, metrics)?;
        }

        if let Some(limit) = limiters.total.get(class) {
            let outcome = limit.limiter.check();
            let shadow = settings.shadow || settings.total.shadow;
            self.verdict(Tier::Total, subject, limit.quota, outcome, shadow, metrics)?;
        }
        Ok(())
    }

    /// Turns a limiter's answer into a refusal, or into a shadow-mode log line and count.
    fn verdict(
        &self,
        tier: Tier,
        subject: &Subject<'_>,
        quota: QuotaSettings,
        outcome: Result<(), NotUntil<Nanos>>,
        shadow: bool,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let Err(not_until) = outcome else {
            return Ok(());
        };
        metrics
            .rate_limited
            .get_or_create(&RateLimitLabels {
                tier: tier.as_str().to_string(),
                shadow,
            })
            .inc();
        if shadow {
            tracing::warn!(
                target: "patgate::ratelimit",
                request_id = %subject.request_id,
                tier = tier.as_str(),
                class = subject.class.as_str(),
                requests = quota.requests,
                window_seconds = quota.window_seconds,
                "rate limit would refuse this request (shadow mode: let through)"
            );
            return Ok(());
        }
        Err(Refusal {
            tier,
            class: subject.class,
            quota,
            // Whole seconds until the limiter allows a request, rounded up.
            retry_after: ceil_seconds(
                not_until.wait_time_from(governor::clock::Clock::now(&self.clock)),
            ),
        })
    }

    /// Drops the state of keys that are back to a full burst, and holds that ended.
    pub async fn prune(&self, metrics: &Metrics) {
        let limiters = self.current();
        for pair in [&limiters.client, &limiters.integration] {
            for limit in [&pair.reads, &pair.actions].into_iter().flatten() {
                limit.limiter.retain_recent();
                limit.limiter.shrink_to_fit();
            }
        }
        for limit in [&limiters.user.reads, &limiters.user.actions]
            .into_iter()
            .flatten()
        {
            limit.limiter.retain_recent();
            limit.limiter.shrink_to_fit();
        }
        self.holds.prune(metrics).await;
    }

    /// How many keys the keyed limiters hold (client, integration and user tiers).
    pub fn keys(&self) -> usize {
        let limiters = self.current();
        let mut n = 0;
        for pair in [&limiters.client, &limiters.integration] {
            n += [&pair.reads, &pair.actions]
                .into_iter()
                .flatten()
                .map(|l| l.limiter.len())
                .sum::<usize>();
        }
        n + [&limiters.user.reads, &limiters.user.actions]
            .into_iter()
            .flatten()
            .map(|l| l.limiter.len())
            .sum::<usize>()
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` would invite an immediate retry).
pub fn ceil_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Prunes every `prune_interval` until `stop` changes. Spawned by the server.
pub async fn prune_periodically(
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = limits.clock.sleep(limits.prune_interval()) => limits.prune(&metrics).await,
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests;
