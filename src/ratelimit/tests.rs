//! Limiter and hold arithmetic on governor's fake clock: nothing here sleeps.

use std::time::Duration;

use crate::clock::ManualClock;
use crate::store::MemoryHolds;
use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;
use sfv::FieldType as _;

use super::holds::{hold_duration, reset_after, throttled};
use super::*;
use crate::config::{HostThrottleSettings, Override};

const CLIENT: &str = "CN=jira-app";

fn quota(requests: u32, window_seconds: u32, burst: u32) -> Option<QuotaSettings> {
    Some(QuotaSettings {
        requests,
        window_seconds,
        burst,
    })
}

fn subject<'a>(account: Option<&'a str>, class: Class) -> Subject<'a> {
    Subject {
        client: CLIENT,
        integration: "ghe",
        account,
        class,
        request_id: "test",
    }
}

fn limits(settings: &RateLimitSettings) -> (RateLimits, ManualClock, Metrics) {
    let (limits, clock, metrics, _) = limits_and_holds(settings);
    (limits, clock, metrics)
}

fn limits_and_holds(
    settings: &RateLimitSettings,
) -> (RateLimits, ManualClock, Metrics, Arc<MemoryHolds>) {
    let clock = ManualClock::new();
    let holds = Arc::new(MemoryHolds::new());
    (
        RateLimits::new(settings, clock.clock(), holds.clone()),
        clock,
        Metrics::new(),
        holds,
    )
}

fn metric_line(metrics: &Metrics, needle: &str) -> Option<String> {
    metrics
        .encode()
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_string)
}

#[test]
fn refill_and_retry_after_follow_the_quota() {
    // 2 per 10 s: one every 5 s, 2 at once.
    let settings = RateLimitSettings {
        user: TierSettings {
            actions: quota(2, 10, 2),
            ..TierSettings::default()
        },
        ..RateLimitSettings::default()
    };
    let (limits, clock, metrics) = limits(&settings);
    let alice = subject(Some("alice"), Class::Actions);
    assert!(limits.check(&alice, &metrics).is_ok());
    assert!(limits.check(&alice, &metrics).is_ok());
    let refusal = limits.check(&alice, &metrics).unwrap_err();
    assert_eq!(refusal.tier, Tier::User);
    assert_eq!(refusal.class, Class::Actions);
    assert_eq!(refusal.retry_after, 5);
    assert_eq!(refusal.policy_field(), r#""user-actions";q=2;w=10"#);
    assert_eq!(refusal.limit_field(), r#""user-actions";r=0;t=5"#);

    clock.advance(Duration::from_millis(4_500));
    // 0.5 s left: rounded up to a whole second, never 0.
    assert_eq!(limits.check(&alice, &metrics).unwrap_err().retry_after, 1);
    clock.advance(Duration::from_millis(500));
    assert!(limits.check(&alice, &metrics).is_ok());
    assert_eq!(limits.check(&alice, &metrics).unwrap_err().retry_after, 5);
    // Another user has a bucket of their own.
    assert!(limits
        .check(&subject(Some("bob"), Class::Actions), &metrics)
        .is_ok());
    assert_eq!(
        metric_line(&metrics, "patgate_rate_limited_total{").as_deref(),
        Some(r#"patgate_rate_limited_total{tier="user",shadow="false"} 3"#)
    );
}

#[test]
fn burst_smaller_than_the_quota_spreads_requests() {
    // 60 per minute but only 1 at once: one a second.
    let settings = RateLimitSettings {
        total: TierSettings {
            reads: quota(60, 60, 1),
            ..TierSettings::default()
        },
        ..RateLimitSettings::default()
    };
    let (limits, clock, metrics) = limits(&settings);
    let read = subject(None, Class::Reads);
    assert!(limits.check(&read, &metrics).is_ok());
    let refusal = limits.check(&read, &metrics).unwrap_err();
    assert_eq!((refusal.tier, refusal.retry_after), (Tier::Total, 1));
    clock.advance(Duration::from_secs(1));
    assert!(limits.check(&read, &metrics).is_ok());
}

#[test]
fn ceil_seconds_rounds_up_and_never_says_zero() {
    assert_eq!(ceil_seconds(Duration::ZERO), 1);
    assert_eq!(ceil_seconds(Duration::from_nanos(1)), 1);
    assert_eq!(ceil_seconds(Duration::from_secs(3)), 3);
    assert_eq!(ceil_seconds(Duration::from_millis(3_001)), 4);
}

#[test]
fn reads_and_actions_have_separate_budgets() {
    let settings = RateLimitSettings {
        integration: TierSettings {
            reads: quota(1, 60, 1),
            actions: quota(1, 60, 1),
            ..TierSettings::default()
        },
        ..RateLimitSettings::default()
    };
    let (limits, _clock, metrics) = limits(&settings);
    assert!(limits.check(&subject(None, Class::Reads), &metrics).is_ok());
    assert_eq!(
        limits
            .check(&subject(None, Class::Reads), &metrics)
            .unwrap_err()
            .policy_name(),
        "integration-reads"
    );
    assert!(limits
        .check(&subject(Some("alice"), Class::Actions), &metrics)
        .is_ok());
}

#[test]
fn a_refusal_by_a_narrow_tier_takes_nothing_from_the_wider_ones() {
    let settings = RateLimitSettings {
        user: TierSettings {
            actions: quota(1, 60, 1),
            ..TierSettings::default()
        },
        total: TierSettings {
            actions: quota(2, 60, 2),
            ..TierSettings::default()
        },
        ..RateLimitSettings::default()
    };
    let (limits, _clock, metrics) = limits(&settings);
    let alice = subject(Some("alice"), Class::Actions);
    assert!(limits.check(&alice, &metrics).is_ok());
    for _ in 0..5 {
        assert_eq!(limits.check(&alice, &metrics).unwrap_err().tier, Tier::User);
    }
    // Alice's refused requests left the second total unit for Bob.
    assert!(limits
        .check(&subject(Some("bob"), Class::Actions), &metrics)
        .is_ok());
    assert_eq!(
        limits
            .check(&subject(Some("carol"), Class::Actions), &metrics)
            .unwrap_err()
            .tier,
        Tier::Total
    );
}

#[test]
fn shadow_mode_counts_and_lets_through() {
    for (global, tier) in [(true, false), (false, true)] {
        let settings = RateLimitSettings {
            shadow: global,
            client: TierSettings {
                shadow: tier,
                reads: quota(1, 60, 1),
                ..TierSettings::default()
            },
            ..RateLimitSettings::default()
        };
        let (limits, _clock, metrics) = limits(&settings);
        for _ in 0..3 {
            assert!(limits.check(&subject(None, Class::Reads), &metrics).is_ok());
        }
        assert_eq!(
            metric_line(&metrics, "patgate_rate_limited_total{").as_deref(),
            Some(r#"patgate_rate_limited_total{tier="client",shadow="true"} 2"#)
        );
    }
}

#[test]
fn overrides_replace_the_tier_quota_for_their_integration_or_user() {
    let settings = RateLimitSettings {
        user: TierSettings {
            actions: quota(1, 60, 1),
            ..TierSettings::default()
        },
        integration: TierSettings {
            reads: quota(1, 60, 1),
            ..TierSettings::default()
        },
        overrides: vec![
            Override {
                integration: "ghe".into(),
                account: Some("bot".into()),
                shadow: false,
                reads: None,
                actions: quota(3, 60, 3),
            },
            Override {
                integration: "big".into(),
                account: None,
                shadow: false,
                reads: quota(3, 60, 3),
                actions: None,
            },
        ],
        ..RateLimitSettings::default()
    };
    let (limits, _clock, metrics) = limits(&settings);
    let bot = subject(Some("bot"), Class::Actions);
    for _ in 0..3 {
        assert!(limits.check(&bot, &metrics).is_ok());
    }
    let refusal = limits.check(&bot, &metrics).unwrap_err();
    assert_eq!((refusal.tier, refusal.quota.requests), (Tier::User, 3));
    // Others keep the tier's quota.
    let alice = subject(Some("alice"), Class::Actions);
    assert!(limits.check(&alice, &metrics).is_ok());
    assert!(limits.check(&alice, &metrics).is_err());

    let big = Subject {
        integration: "big",
        ..subject(None, Class::Reads)
    };
    for _ in 0..3 {
        assert!(limits.check(&big, &metrics).is_ok());
    }
    assert_eq!(
        limits.check(&big, &metrics).unwrap_err().tier,
        Tier::Integration
    );
    let ghe = subject(None, Class::Reads);
    assert!(limits.check(&ghe, &metrics).is_ok());
    assert!(limits.check(&ghe, &metrics).is_err());
}

#[test]
fn reconfigure_keeps_the_state_of_unchanged_quotas() {
    let mut settings = RateLimitSettings {
        user: TierSettings {
            actions: quota(1, 60, 1),
            ..TierSettings::default()
        },
        integration: TierSettings {
            reads: quota(1, 60, 1),
            ..TierSettings::default()
        },
        ..RateLimitSettings::default()
    };
    let (limits, _clock, metrics) = limits(&settings);
    let alice = subject(Some("alice"), Class::Actions);
    let read = subject(None, Class::Reads);
    assert!(limits.check(&alice, &metrics).is_ok());
    assert!(limits.check(&read, &metrics).is_ok());
    assert!(limits.check(&alice, &metrics).is_err());
    assert!(limits.check(&read, &metrics).is_err());

    // The integration tier changes, the user tier does not.
    settings.integration.reads = quota(2, 60, 2);
    limits.reconfigure(&settings);
    assert_eq!(
        limits.check(&alice, &metrics).unwrap_err().tier,
        Tier::User,
        "an unchanged quota keeps its state across a reload"
    );
    assert!(limits.check(&read, &metrics).is_ok());
    assert!(limits.check(&read, &metrics).is_ok());
    assert!(limits.check(&read, &metrics).is_err());

    // Shadow mode switched on by a reload applies at once, with the state kept.
    settings.user.shadow = true;
    limits.reconfigure(&settings);
    assert!(limits.check(&alice, &metrics).is_ok());

    // A quota removed by a reload no longer limits.
    settings.integration.reads = None;
    limits.reconfigure(&settings);
    for _ in 0..10 {
        assert!(limits.check(&read, &metrics).is_ok());
    }
}

#[tokio::test]
async fn pruning_brings_the_key_count_back_down() {
    let settings = RateLimitSettings {
        user: TierSettings {
            reads: quota(10, 60, 10),
            ..TierSettings::default()
        },
        client: TierSettings {
            reads: quota(100_000, 60, 100_000),
            ..TierSettings::default()
        },
        ..RateLimitSettings::default()
    };
    let (limits, clock, metrics) = limits(&settings);
    let accounts: Vec<String> = (0..20_000).map(|i| format!("account-{i}")).collect();
    for account in &accounts {
        assert!(limits
            .check(&subject(Some(account), Class::Reads), &metrics)
            .is_ok());
    }
    assert_eq!(limits.keys(), 20_001);
    // Within the window every key still holds state that matters.
    clock.advance(Duration::from_secs(1));
    limits.prune(&metrics).await;
    assert_eq!(limits.keys(), 20_001);
    // A full window later every bucket is full again: indistinguishable from a new key.
    clock.advance(Duration::from_secs(60));
    limits.prune(&metrics).await;
    assert_eq!(limits.keys(), 0);
    // A key that is active now stays.
    assert!(limits
        .check(&subject(Some("account-1"), Class::Reads), &metrics)
        .is_ok());
    limits.prune(&metrics).await;
    assert_eq!(limits.keys(), 2);
}

#[test]
fn the_headers_are_valid_structured_fields() {
    let refusal = Refusal {
        tier: Tier::Integration,
        class: Class::Reads,
        quota: QuotaSettings {
            requests: 5000,
            window_seconds: 3600,
            burst: 100,
        },
        retry_after: 12,
    };
    for field in [refusal.policy_field(), refusal.limit_field()] {
        let list: sfv::List = sfv::Parser::new(&field).parse().unwrap();
        assert_eq!(list.serialize().as_deref(), Some(field.as_str()));
    }
}

// ---- holds ---------------------------------------------------------------------------------

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn what_counts_as_the_host_throttling() {
    let none = HeaderMap::new();
    assert!(throttled(StatusCode::TOO_MANY_REQUESTS, &none));
    assert!(throttled(
        StatusCode::FORBIDDEN,
        &headers(&[("x-ratelimit-remaining", "0")])
    ));
    assert!(throttled(
        StatusCode::FORBIDDEN,
        &headers(&[("retry-after", "30")])
    ));
    assert!(throttled(
        StatusCode::SERVICE_UNAVAILABLE,
        &headers(&[("retry-after", "30")])
    ));
    // A plain 403 (no rights) and a 503 without Retry-After are not throttling.
    assert!(!throttled(StatusCode::FORBIDDEN, &none));
    assert!(!throttled(
        StatusCode::FORBIDDEN,
        &headers(&[("x-ratelimit-remaining", "12")])
    ));
    assert!(!throttled(StatusCode::SERVICE_UNAVAILABLE, &none));
    assert!(!throttled(
        StatusCode::OK,
        &headers(&[("x-ratelimit-remaining", "0")])
    ));
}

#[test]
fn the_reset_comes_from_the_hosts_headers_in_order() {
    let now = 1_800_000_000;
    let secs = Duration::from_secs;
    assert_eq!(
        reset_after(&headers(&[("retry-after", "120")]), now),
        Some(secs(120))
    );
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + secs(now + 90));
    assert_eq!(
        reset_after(&headers(&[("retry-after", &date)]), now),
        Some(secs(90))
    );
    let github = headers(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1800000300"),
    ]);
    assert_eq!(reset_after(&github, now), Some(secs(300)));
    // Retry-After wins over the reset.
    let both = headers(&[("retry-after", "7"), ("x-ratelimit-reset", "1800000300")]);
    assert_eq!(reset_after(&both, now), Some(secs(7)));
    let gitlab = headers(&[("ratelimit-reset", "1800000045")]);
    assert_eq!(reset_after(&gitlab, now), Some(secs(45)));
    assert_eq!(
        reset_after(&headers(&[("ratelimit-reset", "15")]), now),
        Some(secs(15))
    );
    // A reset in the past is "now".
    assert_eq!(
        reset_after(&headers(&[("x-ratelimit-reset", "1700000000")]), now),
        Some(Duration::ZERO)
    );
    assert_eq!(reset_after(&headers(&[("retry-after", "soon")]), now), None);

    let settings = HostThrottleSettings::default();
    assert_eq!(hold_duration(&HeaderMap::new(), now, &settings), secs(60));
    assert_eq!(
        hold_duration(&headers(&[("retry-after", "0")]), now, &settings),
        secs(1)
    );
    assert_eq!(
        hold_duration(&headers(&[("retry-after", "86400")]), now, &settings),
        secs(3600)
    );
}

#[tokio::test]
async fn a_hold_blocks_its_credential_only_and_ends_at_the_reset() {
    let (limits, clock, metrics, store) = limits_and_holds(&RateLimitSettings::default());
    let holds = limits.holds();
    let ghe = "ghe";
    holds
        .observe(
            ghe,
            HoldCredential::Integration,
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "30")]),
            &metrics,
        )
        .await;
    let refusal = holds
        .check(ghe, HoldCredential::Integration, &metrics)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refusal,
            HoldRefusal::Held {
                retry_after: 30,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert!(holds
        .check(ghe, HoldCredential::User("alice"), &metrics)
        .await
        .is_ok());
    assert!(holds
        .check("other", HoldCredential::Integration, &metrics)
        .await
        .is_ok());
    assert!(metrics
        .encode()
        .contains("patgate_upstream_holds_active 1\n"));

    clock.advance(Duration::from_millis(29_500));
    let refusal = holds
        .check(ghe, HoldCredential::Integration, &metrics)
        .await
        .unwrap_err();
    assert!(
        matches!(refusal, HoldRefusal::Held { retry_after: 1, .. }),
        "{refusal:?}"
    );
    clock.advance(Duration::from_millis(500));
    assert!(holds
        .check(ghe, HoldCredential::Integration, &metrics)
        .await
        .is_ok());
    assert!(metrics
        .encode()
        .contains("patgate_upstream_holds_active 0\n"));

    // Many throttled users: pruning drops the holds that ended.
    for i in 0..1000 {
        let account = format!("user-{i}");
        holds
            .observe(
                ghe,
                HoldCredential::User(&account),
                StatusCode::FORBIDDEN,
                &headers(&[("x-ratelimit-remaining", "0")]),
                &metrics,
            )
            .await;
    }
    assert_eq!(store.len(), 1000);
    clock.advance(Duration::from_secs(61));
    limits.prune(&metrics).await;
    assert!(store.is_empty());
}

#[tokio::test]
async fn holds_can_be_switched_off() {
    let mut settings = RateLimitSettings::default();
    settings.host_throttle.hold = false;
    let (limits, _clock, metrics) = limits(&settings);
    limits
        .holds()
        .observe(
            "ghe",
            HoldCredential::Integration,
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            &metrics,
        )
        .await;
    assert!(limits
        .holds()
        .check("ghe", HoldCredential::Integration, &metrics)
        .await
        .is_ok());
    // Still counted: the host throttled.
    assert!(metrics.encode().contains(
        r#"patgate_upstream_throttled_total{integration="ghe",credential="integration"} 1"#
    ));
}
