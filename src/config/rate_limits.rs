//! The `[rate_limits]` section: its validated types, the section as written with its
//! defaults, and its validation, each refusal reported with the key that is wrong.
//!
//! [`crate::ratelimit`] builds its limiters and holds from [`RateLimitSettings`]; this file
//! only reads and checks the section, so the configuration knows nothing of governor.
//!
//! ```toml
//! [rate_limits]
//! shadow = false
//! [rate_limits.user]
//! actions = { requests = 10, window_seconds = 60 }
//! [[rate_limits.overrides]]
//! integration = "ghe"
//! reads = { requests = 20000, window_seconds = 60 }
//! [rate_limits.host_throttle]
//! hold = true
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::ids::AccountId;

/// Defaults of `[rate_limits]`; the example config repeats them and a test checks it does.
pub(crate) mod defaults {
    /// `rate_limits.prune_interval_seconds`.
    pub(crate) const PRUNE_INTERVAL_SECONDS: u64 = 60;
    /// `rate_limits.host_throttle.default_hold_seconds`: when the host throttles without
    /// saying until when.
    pub(crate) const DEFAULT_HOLD_SECONDS: u64 = 60;
    /// `rate_limits.host_throttle.max_hold_seconds`: GitHub's primary limits reset hourly.
    pub(crate) const MAX_HOLD_SECONDS: u64 = 3600;
    /// Upper bound for a quota's window and for a hold: one day.
    pub(crate) const MAX_WINDOW_SECONDS: u64 = 86_400;
}

/// `[rate_limits]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Every tier logs and counts instead of refusing.
    pub shadow: bool,
    pub prune_interval: Duration,
    pub total: TierSettings,
    pub client: TierSettings,
    pub integration: TierSettings,
    pub user: TierSettings,
    pub overrides: Vec<Override>,
    pub host_throttle: HostThrottleSettings,
}

impl Default for RateLimitSettings {
    /// No local limits; holds on host throttling switched on.
    fn default() -> Self {
        RateLimitSettings {
            shadow: false,
            prune_interval: Duration::from_secs(defaults::PRUNE_INTERVAL_SECONDS),
            total: TierSettings::default(),
            client: TierSettings::default(),
            integration: TierSettings::default(),
            user: TierSettings::default(),
            overrides: Vec::new(),
            host_throttle: HostThrottleSettings::default(),
        }
    }
}

/// One tier: a quota for reads and one for actions, each optional (none: no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierSettings {
    pub shadow: bool,
    pub reads: Option<QuotaSettings>,
    pub actions: Option<QuotaSettings>,
}

/// `requests` per `window`, at most `burst` at once. GCRA (governor): one request is
/// allowed every `window / requests`, and up to `burst` may be sent back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaSettings {
    pub requests: u32,
    pub window_seconds: u32,
    pub burst: u32,
}

/// Other quotas for one integration (the integration tier) or for one user of one
/// integration (the user tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub integration: String,
    /// Set: the override is for this user's per-user tier; not set: for the integration tier.
    pub account: Option<String>,
    pub shadow: bool,
    /// Not set: the tier's own quota applies to that class.
    pub reads: Option<QuotaSettings>,
    pub actions: Option<QuotaSettings>,
}

/// What patgate does when the git host says a credential is over its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostThrottleSettings {
    /// Answer further requests with that credential 429 until the host's reset.
    pub hold: bool,
    pub default_hold: Duration,
    pub max_hold: Duration,
}

impl Default for HostThrottleSettings {
    fn default() -> Self {
        HostThrottleSettings {
            hold: true,
            default_hold: Duration::from_secs(defaults::DEFAULT_HOLD_SECONDS),
            max_hold: Duration::from_secs(defaults::MAX_HOLD_SECONDS),
        }
    }
}

// ---- the section as written ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimits {
    #[serde(default)]
    shadow: bool,
    #[serde(default = "d_prune")]
    prune_interval_seconds: u64,
    #[serde(default)]
    total: RawTier,
    #[serde(default)]
    client: RawTier,
    #[serde(default)]
    integration: RawTier,
    #[serde(default)]
    user: RawTier,
    #[serde(default)]
    overrides: Vec<RawOverride>,
    #[serde(default)]
    host_throttle: RawHostThrottle,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        RawRateLimits {
            shadow: false,
            prune_interval_seconds: d_prune(),
            total: RawTier::default(),
            client: RawTier::default(),
            integration: RawTier::default(),
            user: RawTier::default(),
            overrides: Vec::new(),
            host_throttle: RawHostThrottle::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(default)]
    shadow: bool,
    reads: Option<RawQuota>,
    actions: Option<RawQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    requests: i64,
    window_seconds: i64,
    /// Default: `requests`.
    burst: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    integration: String,
    account: Option<String>,
    #[serde(default)]
    shadow: bool,
    reads: Option<RawQuota>,
    actions: Option<RawQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostThrottle {
    #[serde(default = "d_true")]
    hold: bool,
    #[serde(default = "d_default_hold")]
    default_hold_seconds: u64,
    #[serde(default = "d_max_hold")]
    max_hold_seconds: u64,
}

impl Default for RawHostThrottle {
    fn default() -> Self {
        RawHostThrottle {
            hold: true,
            default_hold_seconds: d_default_hold(),
            max_hold_seconds: d_max_hold(),
        }
    }
}

fn d_prune() -> u64 {
    defaults::PRUNE_INTERVAL_SECONDS
}
fn d_true() -> bool {
    true
}
fn d_default_hold() -> u64 {
    defaults::DEFAULT_HOLD_SECONDS
}
fn d_max_hold() -> u64 {
    defaults::MAX_HOLD_SECONDS
}

impl RateLimitSettings {
    /// Validates the section. `integrations` are the configured ids, which overrides must
    /// name.
    pub(super) fn from_raw(
        file: &Path,
        raw: RawRateLimits,
        integrations: &[&str],
    ) -> Result<RateLimitSettings, ConfigError> {
        let err = |key: String, why: String| ConfigError::new(file, key, why);
        if raw.prune_interval_seconds == 0 || raw.prune_interval_seconds > 3600 {
            return Err(err(
                "rate_limits.prune_interval_seconds".into(),
                "must be between 1 and 3600".into(),
            ));
        }
        let tier = |name: &str, raw: RawTier| -> Result<TierSettings, ConfigError> {
            let at = format!("rate_limits.{name}");
            Ok(TierSettings {
                shadow: raw.shadow,
                reads: quota(file, &format!("{at}.reads"), raw.reads)?,
                actions: quota(file, &format!("{at}.actions"), raw.actions)?,
            })
        };
        let mut seen = HashSet::new();
        let mut overrides = Vec::with_capacity(raw.overrides.len());
        for (i, o) in raw.overrides.into_iter().enumerate() {
            let at = format!("rate_limits.overrides[{i}]");
            if !integrations.contains(&o.integration.as_str()) {
                return Err(err(
                    format!("{at}.integration"),
                    format!(
                        "`{}` is not the id of a configured integration",
                        o.integration
                    ),
                ));
            }
            if let Some(account) = &o.account {
                if !AccountId::is_valid(account) {
                    return Err(err(
                        format!("{at}.account"),
                        format!("`{account}` is not an Atlassian accountId"),
                    ));
                }
            }
            if !seen.insert((o.integration.clone(), o.account.clone())) {
                return Err(err(
                    at,
                    "another override names the same integration and account".into(),
                ));
            }
            if o.reads.is_none() && o.actions.is_none() {
                return Err(err(at, "set `reads`, `actions` or both".into()));
            }
            overrides.push(Override {
                reads: quota(file, &format!("{at}.reads"), o.reads)?,
                actions: quota(file, &format!("{at}.actions"), o.actions)?,
                integration: o.integration,
                account: o.account,
                shadow: o.shadow,
            });
        }
        let ht = raw.host_throttle;
        if ht.default_hold_seconds == 0 || ht.default_hold_seconds > defaults::MAX_WINDOW_SECONDS {
            return Err(err(
                "rate_limits.host_throttle.default_hold_seconds".into(),
                format!("must be between 1 and {}", defaults::MAX_WINDOW_SECONDS),
            ));
        }
        if ht.max_hold_seconds < ht.default_hold_seconds
            || ht.max_hold_seconds > defaults::MAX_WINDOW_SECONDS
        {
            return Err(err(
                "rate_limits.host_throttle.max_hold_seconds".into(),
                format!(
                    "must be between default_hold_seconds ({}) and {}",
                    ht.default_hold_seconds,
                    defaults::MAX_WINDOW_SECONDS
                ),
            ));
        }
        Ok(RateLimitSettings {
            shadow: raw.shadow,
            prune_interval: Duration::from_secs(raw.prune_interval_seconds),
            total: tier("total", raw.total)?,
            client: tier("client", raw.client)?,
            integration: tier("integration", raw.integration)?,
            user: tier("user", raw.user)?,
            overrides,
            host_throttle: HostThrottleSettings {
                hold: ht.hold,
                default_hold: Duration::from_secs(ht.default_hold_seconds),
                max_hold: Duration::from_secs(ht.max_hold_seconds),
            },
        })
    }
}

fn quota(
    file: &Path,
    at: &str,
    raw: Option<RawQuota>,
) -> Result<Option<QuotaSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let positive = |field: &str, value: i64, max: u64| -> Result<u32, ConfigError> {
        u32::try_from(value)
            .ok()
            .filter(|v| *v >= 1 && u64::from(*v) <= max)
            .ok_or_else(|| {
                let hint = if field == "requests" && value == 0 {
                    " (a quota of 0 would refuse everything; leave the quota out for no limit)"
                } else {
                    ""
                };
                ConfigError::new(
                    file,
                    format!("{at}.{field}"),
                    format!("{value} is not between 1 and {max}{hint}"),
                )
            })
    };
    let requests = positive("requests", raw.requests, u64::from(u32::MAX))?;
    let window_seconds = positive(
        "window_seconds",
        raw.window_seconds,
        defaults::MAX_WINDOW_SECONDS,
    )?;
    let burst = match raw.burst {
        Some(burst) => positive("burst", burst, u64::from(u32::MAX))?,
        None => requests,
    };
    Ok(Some(QuotaSettings {
        requests,
        window_seconds,
        burst,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{test_parse, TEST_MINIMAL as MINIMAL};
    use super::*;

    fn parse(section: &str) -> Result<RateLimitSettings, ConfigError> {
        test_parse(&format!("{MINIMAL}{section}")).map(|c| c.rate_limits)
    }

    fn refused(section: &str) -> (String, String) {
        let err = parse(section).unwrap_err();
        (err.key, err.reason)
    }

    #[test]
    fn a_quota_reads_like_the_policy_it_advertises() {
        let rl = parse(
            "[rate_limits.user]\nactions = { requests = 30, window_seconds = 60, burst = 10 }\nreads = { requests = 600, window_seconds = 60 }\n",
        )
        .unwrap();
        assert_eq!(
            rl.user.actions,
            Some(QuotaSettings {
                requests: 30,
                window_seconds: 60,
                burst: 10
            })
        );
        // burst defaults to requests.
        assert_eq!(rl.user.reads.map(|q| q.burst), Some(600));
        assert_eq!(rl.total, TierSettings::default());
        assert!(rl.host_throttle.hold);
    }

    #[test]
    fn bad_quotas_are_refused_with_their_key() {
        for (section, key, why) in [
            (
                "[rate_limits.user]\nactions = { requests = 0, window_seconds = 60 }\n",
                "rate_limits.user.actions.requests",
                "leave the quota out for no limit",
            ),
            (
                "[rate_limits.total]\nreads = { requests = 10, window_seconds = 0 }\n",
                "rate_limits.total.reads.window_seconds",
                "not between 1 and 86400",
            ),
            (
                "[rate_limits.client]\nreads = { requests = 10, window_seconds = 86401 }\n",
                "rate_limits.client.reads.window_seconds",
                "86401",
            ),
            (
                "[rate_limits.integration]\nreads = { requests = 10, window_seconds = 1, burst = 0 }\n",
                "rate_limits.integration.reads.burst",
                "not between 1",
            ),
            (
                "[rate_limits.integration]\nreads = { requests = -5, window_seconds = 1 }\n",
                "rate_limits.integration.reads.requests",
                "-5",
            ),
            (
                "[rate_limits]\nprune_interval_seconds = 0\n",
                "rate_limits.prune_interval_seconds",
                "between 1 and 3600",
            ),
            (
                "[rate_limits.host_throttle]\ndefault_hold_seconds = 0\n",
                "rate_limits.host_throttle.default_hold_seconds",
                "between 1",
            ),
            (
                "[rate_limits.host_throttle]\ndefault_hold_seconds = 120\nmax_hold_seconds = 60\n",
                "rate_limits.host_throttle.max_hold_seconds",
                "default_hold_seconds (120)",
            ),
        ] {
            let (k, reason) = refused(section);
            assert_eq!(k, key, "{section}");
            assert!(reason.contains(why), "{section}: {reason}");
        }
    }

    #[test]
    fn unknown_keys_in_the_section_are_refused() {
        let (key, reason) =
            refused("[rate_limits.user]\nactions = { requests = 1, window = 60 }\n");
        assert_eq!(key, "rate_limits.user.actions.window");
        assert!(reason.contains("unknown field"), "{reason}");
        let (key, _) = refused("[rate_limits.users]\n");
        assert_eq!(key, "rate_limits.users");
    }

    /// The README's worked example is a valid configuration.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("### Rate limits").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let gitlab = "[[integrations]]\nid = \"gitlab-legacy\"\nkind = \"gitlab\"\nbase_url = \"https://gitlab.example.com\"\n";
        let rl = parse(&format!("{gitlab}{example}")).unwrap();
        assert_eq!(rl.user.actions.map(|q| q.burst), Some(10));
        assert_eq!(rl.overrides.len(), 2);
        assert_eq!(rl.overrides[1].integration, "gitlab-legacy");
    }

    #[test]
    fn overrides_must_name_a_configured_integration_and_a_quota() {
        let ok = parse(
            "[[rate_limits.overrides]]\nintegration = \"ghe\"\naccount = \"5b10ac8d82e05b22cc7d4ef5\"\nactions = { requests = 5, window_seconds = 60 }\n",
        )
        .unwrap();
        assert_eq!(ok.overrides[0].reads, None);
        for (section, key) in [
            (
                "[[rate_limits.overrides]]\nintegration = \"gitlab\"\nreads = { requests = 5, window_seconds = 60 }\n",
                "rate_limits.overrides[0].integration",
            ),
            (
                "[[rate_limits.overrides]]\nintegration = \"ghe\"\n",
                "rate_limits.overrides[0]",
            ),
            (
                "[[rate_limits.overrides]]\nintegration = \"ghe\"\naccount = \"not an id\"\nreads = { requests = 5, window_seconds = 60 }\n",
                "rate_limits.overrides[0].account",
            ),
            // An id of dots only would be "this" or "the parent" as a path segment.
            (
                "[[rate_limits.overrides]]\nintegration = \"ghe\"\naccount = \"..\"\nreads = { requests = 5, window_seconds = 60 }\n",
                "rate_limits.overrides[0].account",
            ),
            (
                "[[rate_limits.overrides]]\nintegration = \"ghe\"\nreads = { requests = 5, window_seconds = 60 }\n[[rate_limits.overrides]]\nintegration = \"ghe\"\nactions = { requests = 5, window_seconds = 60 }\n",
                "rate_limits.overrides[1]",
            ),
        ] {
            assert_eq!(refused(section).0, key, "{section}");
        }
    }
}
