//! Rate limits and host holds through the wire: what the app gets (status, problem code,
//! Retry-After, RateLimit-Policy / RateLimit), what the host received, the metrics text and
//! the log lines. Time is a manual clock, advanced by hand: nothing sleeps.
//!
//! This file is its own test binary because it installs the process-wide log subscriber.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use patgate::client::Outgoing;
use patgate::clock::ManualClock;

/// A gateway with these `[rate_limits]` and a fake clock.
async fn gateway(
    rate_limits: &str,
    require_user_pat: bool,
) -> (Gateway, RecordingHost, ManualClock) {
    common::logs::global("info");
    let clock = ManualClock::new();
    let (gw, host) = Gateway::start(Options {
        require_user_pat,
        extra_toml: rate_limits.to_string(),
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    (gw, host, clock)
}

fn header<'r>(response: &'r Response<Bytes>, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn metrics(gw: &Gateway) -> String {
    gw.runtime.metrics().encode()
}

fn read(gw: &Gateway, account: Option<&str>) -> Outgoing {
    let mut out = gw.get("/git/ghe/api/v3/repos/acme/api/branches");
    out.account = account.map(str::to_string);
    out
}

async fn send(gw: &Gateway, out: &Outgoing) -> Response<Bytes> {
    gw.client().send(out).await.unwrap()
}

/// Asserts a `rate-limited` refusal by `policy` with `q` per `w` and `retry` seconds.
fn assert_refused(response: &Response<Bytes>, policy: &str, q: u32, w: u32, retry: u64) {
    assert_eq!(
        response.status(),
        429,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(problem_code(response), "rate-limited");
    assert_eq!(header(response, "retry-after"), Some(&*retry.to_string()));
    assert_eq!(
        header(response, "ratelimit-policy"),
        Some(&*format!("\"{policy}\";q={q};w={w}"))
    );
    assert_eq!(
        header(response, "ratelimit"),
        Some(&*format!("\"{policy}\";r=0;t={retry}"))
    );
}

#[tokio::test]
async fn each_tier_refuses_with_its_policy_and_the_host_sees_nothing() {
    for (tier, class) in [
        ("user", "actions"),
        ("integration", "reads"),
        ("client", "reads"),
        ("total", "actions"),
    ] {
        let (gw, host, clock) = gateway(
            &format!("[rate_limits.{tier}]\n{class} = {{ requests = 2, window_seconds = 60 }}\n"),
            false,
        )
        .await;
        let request = match class {
            "actions" => gw.create_branch(Some(ACCOUNT_A)),
            _ => read(&gw, None),
        };
        for _ in 0..2 {
            assert!(send(&gw, &request).await.status().is_success());
        }
        let refused = send(&gw, &request).await;
        // 2 per 60 s: the next one is allowed 30 s later.
        assert_refused(&refused, &format!("{tier}-{class}"), 2, 60, 30);
        assert_eq!(
            host.requests().len(),
            2,
            "{tier}: a refused request reached the host"
        );
        assert!(
            metrics(&gw).contains(&format!(
                "patgate_rate_limited_total{{tier=\"{tier}\",shadow=\"false\"}} 1\n"
            )),
            "{tier}: {}",
            metrics(&gw)
        );

        // The quota refills on the clock.
        clock.advance(Duration::from_secs(29));
        assert_refused(
            &send(&gw, &request).await,
            &format!("{tier}-{class}"),
            2,
            60,
            1,
        );
        clock.advance(Duration::from_secs(1));
        assert!(send(&gw, &request).await.status().is_success());
        assert_eq!(host.requests().len(), 3);
        gw.stop().await;
    }
}

#[tokio::test]
async fn the_user_tier_keys_on_the_signed_account() {
    let (gw, host, _clock) = gateway(
        "[rate_limits.user]\nactions = { requests = 1, window_seconds = 60 }\n",
        false,
    )
    .await;
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await.status(),
        201
    );
    assert_refused(
        &send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await,
        "user-actions",
        1,
        60,
        60,
    );
    // Another user has their own budget.
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_B))).await.status(),
        201
    );
    assert_eq!(host.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn reads_and_actions_have_independent_quotas() {
    let (gw, host, _clock) = gateway(
        "[rate_limits.integration]\nreads = { requests = 1, window_seconds = 60 }\nactions = { requests = 1, window_seconds = 10 }\n",
        false,
    )
    .await;
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    assert_refused(
        &send(&gw, &read(&gw, None)).await,
        "integration-reads",
        1,
        60,
        60,
    );
    // Indexing used up the reads; a user's click still goes through.
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await.status(),
        201
    );
    assert_refused(
        &send(&gw, &gw.create_branch(Some(ACCOUNT_B))).await,
        "integration-actions",
        1,
        10,
        10,
    );
    assert_eq!(host.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_override_gives_one_user_or_one_integration_its_own_quota() {
    let (gw, host, _clock) = gateway(
        &format!(
            "[rate_limits.user]\nactions = {{ requests = 1, window_seconds = 60 }}\n\
             [rate_limits.integration]\nreads = {{ requests = 1, window_seconds = 60 }}\n\
             [[rate_limits.overrides]]\nintegration = \"ghe\"\naccount = \"{ACCOUNT_B}\"\nactions = {{ requests = 3, window_seconds = 60 }}\n\
             [[rate_limits.overrides]]\nintegration = \"ghe\"\nreads = {{ requests = 2, window_seconds = 60 }}\n"
        ),
        false,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&gw, &gw.create_branch(Some(ACCOUNT_B))).await.status(),
            201
        );
    }
    assert_refused(
        &send(&gw, &gw.create_branch(Some(ACCOUNT_B))).await,
        "user-actions",
        3,
        60,
        20,
    );
    // Everyone else keeps the tier's quota.
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await.status(),
        201
    );
    assert_refused(
        &send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await,
        "user-actions",
        1,
        60,
        60,
    );
    // The integration override replaces the integration tier's read quota.
    for _ in 0..2 {
        assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    }
    assert_refused(
        &send(&gw, &read(&gw, None)).await,
        "integration-reads",
        2,
        60,
        30,
    );
    assert_eq!(host.requests().len(), 6);
    gw.stop().await;
}

#[tokio::test]
async fn shadow_mode_passes_the_request_logs_and_counts() {
    for (section, tier) in [
        (
            "[rate_limits]\nshadow = true\n[rate_limits.client]\nreads = { requests = 1, window_seconds = 60 }\n",
            "client",
        ),
        (
            "[rate_limits.user]\nshadow = true\nactions = { requests = 1, window_seconds = 60 }\n",
            "user",
        ),
    ] {
        let (gw, host, _clock) = gateway(section, false).await;
        let request = if tier == "user" {
            gw.create_branch(Some(ACCOUNT_A))
        } else {
            read(&gw, None)
        };
        let mut ids = Vec::new();
        for _ in 0..3 {
            let response = send(&gw, &request).await;
            assert!(response.status().is_success(), "{tier}: {}", response.status());
            assert!(header(&response, "ratelimit").is_none());
            ids.push(header(&response, "x-request-id").unwrap().to_string());
        }
        assert_eq!(host.requests().len(), 3, "{tier}: shadow mode must forward");
        assert!(
            metrics(&gw).contains(&format!(
                "patgate_rate_limited_total{{tier=\"{tier}\",shadow=\"true\"}} 2\n"
            )),
            "{}",
            metrics(&gw)
        );
        // One warn line per request over the quota, naming the tier and the class.
        for (i, id) in ids.iter().enumerate() {
            let lines = log_lines(&["WARN", "would refuse", &format!("request_id={id}")]);
            assert_eq!(lines.len(), usize::from(i > 0), "{tier} request {i}: {lines:?}");
            if let Some(line) = lines.first() {
                assert!(line.contains(&format!("tier=\"{tier}\"")), "{line}");
                assert!(line.contains("class="), "{line}");
            }
        }
        gw.stop().await;
    }
}

// ---- holds ---------------------------------------------------------------------------------

fn held_metrics(gw: &Gateway, credential: &str) -> (String, String, String) {
    let text = metrics(gw);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or("-")
            .to_string()
    };
    (
        line(&format!(
            "patgate_upstream_throttled_total{{integration=\"ghe\",credential=\"{credential}\"}}"
        )),
        line(&format!(
            "patgate_upstream_held_total{{integration=\"ghe\",credential=\"{credential}\"}}"
        )),
        line("patgate_upstream_holds_active "),
    )
}

#[tokio::test]
async fn a_host_429_holds_the_integration_token_until_retry_after() {
    let (gw, host, clock) = gateway("", true).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    host.answer_next(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "30")]);

    // The host's own 429 reaches the app as it was sent.
    let first = send(&gw, &read(&gw, None)).await;
    assert_eq!(first.status(), 429);
    assert_eq!(header(&first, "retry-after"), Some("30"));
    assert_eq!(header(&first, "content-type"), Some("application/json"));
    assert_eq!(host.requests().len(), 1);

    // The next read is answered by patgate; the host sees nothing.
    let held = send(&gw, &read(&gw, None)).await;
    assert_eq!(held.status(), 429);
    assert_eq!(problem_code(&held), "host-rate-limited");
    assert_eq!(header(&held, "retry-after"), Some("30"));
    assert_eq!(host.requests().len(), 1);

    // A user acting with their own PAT is not held.
    let action = send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await;
    assert_eq!(action.status(), 201);
    assert_eq!(host.requests().len(), 2);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );

    assert_eq!(
        held_metrics(&gw, "integration"),
        (
            r#"patgate_upstream_throttled_total{integration="ghe",credential="integration"} 1"#
                .into(),
            r#"patgate_upstream_held_total{integration="ghe",credential="integration"} 1"#.into(),
            "patgate_upstream_holds_active 1".into(),
        )
    );
    let started = log_lines(&[
        "WARN",
        "throttled this credential",
        "credential=\"integration\"",
        "status=429",
    ]);
    assert!(!started.is_empty(), "no log line for the hold");
    assert!(
        started[0].contains("integration=\"ghe\"") && started[0].contains("until="),
        "{}",
        started[0]
    );

    // The hold ends at the reset.
    clock.advance(Duration::from_secs(29));
    let still = send(&gw, &read(&gw, None)).await;
    assert_eq!(header(&still, "retry-after"), Some("1"));
    assert_eq!(host.requests().len(), 2);
    clock.advance(Duration::from_secs(1));
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    assert_eq!(host.requests().len(), 3);
    assert!(metrics(&gw).contains("patgate_upstream_holds_active 0\n"));
    gw.stop().await;
}

#[tokio::test]
async fn a_github_403_with_no_remaining_holds_until_x_ratelimit_reset() {
    let (gw, host, clock) = gateway("", false).await;
    let reset = gw.clock.unix_now() + 120;
    host.answer_next(
        StatusCode::FORBIDDEN,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset.to_string()),
        ],
    );
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 403);
    let held = send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await;
    assert_eq!(problem_code(&held), "host-rate-limited");
    // The reset is an epoch time, read on the gateway's (manual) clock.
    assert_eq!(header(&held, "retry-after"), Some("120"));
    assert_eq!(host.requests().len(), 1);
    clock.advance(Duration::from_secs(121));
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    assert_eq!(host.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_throttled_user_pat_holds_that_user_only() {
    let (gw, host, clock) = gateway("", true).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    gw.store_pat(ACCOUNT_B, PAT_B).await;
    // GitHub's secondary limit: 403 with Retry-After.
    host.answer_next(StatusCode::FORBIDDEN, &[("retry-after", "45")]);
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await.status(),
        403
    );

    let held = send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await;
    assert_eq!(problem_code(&held), "host-rate-limited");
    assert_eq!(header(&held, "retry-after"), Some("45"));
    assert_eq!(host.requests().len(), 1);
    // The integration token and other users' PATs are not held.
    assert_eq!(send(&gw, &read(&gw, Some(ACCOUNT_A))).await.status(), 200);
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_B))).await.status(),
        201
    );
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_B}"))
    );
    assert_eq!(host.requests().len(), 3);
    assert_eq!(
        held_metrics(&gw, "user"),
        (
            r#"patgate_upstream_throttled_total{integration="ghe",credential="user"} 1"#.into(),
            r#"patgate_upstream_held_total{integration="ghe",credential="user"} 1"#.into(),
            "patgate_upstream_holds_active 1".into(),
        )
    );
    clock.advance(Duration::from_secs(45));
    assert_eq!(
        send(&gw, &gw.create_branch(Some(ACCOUNT_A))).await.status(),
        201
    );
    assert_eq!(host.requests().len(), 4);
    gw.stop().await;
}

#[tokio::test]
async fn without_a_reset_the_default_hold_applies_and_holds_can_be_off() {
    let (gw, host, clock) = gateway(
        "[rate_limits.host_throttle]\ndefault_hold_seconds = 90\n",
        false,
    )
    .await;
    host.answer_next(StatusCode::TOO_MANY_REQUESTS, &[]);
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 429);
    let held = send(&gw, &read(&gw, None)).await;
    assert_eq!(header(&held, "retry-after"), Some("90"));
    clock.advance(Duration::from_secs(90));
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    gw.stop().await;

    let (gw, host, _clock) = gateway("[rate_limits.host_throttle]\nhold = false\n", false).await;
    host.answer_next(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "30")]);
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 429);
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    assert_eq!(host.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn the_v1_api_counts_against_the_same_quotas() {
    let (gw, host, _clock) = gateway(
        "[rate_limits.user]\nreads = { requests = 1, window_seconds = 60 }\n",
        false,
    )
    .await;
    let status = |account: &str| gw.get(&format!("/v1/integrations/ghe/users/{account}/pat"));
    assert_eq!(send(&gw, &status(ACCOUNT_A)).await.status(), 200);
    assert_refused(
        &send(&gw, &status(ACCOUNT_A)).await,
        "user-reads",
        1,
        60,
        60,
    );
    assert_eq!(send(&gw, &status(ACCOUNT_B)).await.status(), 200);
    // A read through the proxy by the same user shares that user's read budget.
    assert_refused(
        &send(&gw, &read(&gw, Some(ACCOUNT_A))).await,
        "user-reads",
        1,
        60,
        60,
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

/// Replaces `from` with `to` in the gateway's config file, then reloads (SIGHUP's path).
async fn reload_with(gw: &Gateway, from: &str, to: &str) {
    edit_config(&gw.config_path, from, to);
    gw.handle.reload().await.unwrap();
}

#[tokio::test]
async fn a_reload_applies_new_quotas_and_keeps_host_holds() {
    let (gw, host, _clock) = gateway(
        "[rate_limits.integration]\nreads = { requests = 100, window_seconds = 60 }\n",
        false,
    )
    .await;
    // The host throttles the integration token: patgate holds it.
    host.answer_next(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "30")]);
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 429);
    let held = send(&gw, &read(&gw, None)).await;
    assert_eq!(problem_code(&held), "host-rate-limited");
    assert_eq!(host.requests().len(), 1);

    // A reload that tightens the integration's read quota: the hold is still there …
    reload_with(
        &gw,
        "reads = { requests = 100, window_seconds = 60 }",
        "reads = { requests = 1, window_seconds = 60 }",
    )
    .await;
    let still_held = send(&gw, &read(&gw, None)).await;
    assert_eq!(problem_code(&still_held), "host-rate-limited");
    assert_eq!(
        host.requests().len(),
        1,
        "a held credential reached the host"
    );
    assert!(metrics(&gw).contains("patgate_reloads_total{result=\"ok\"} 1"));
    gw.stop().await;

    // … and on a fresh gateway the tightened quota refuses the second read at once.
    let (gw, host, _clock) = gateway(
        "[rate_limits.integration]\nreads = { requests = 100, window_seconds = 60 }\n",
        false,
    )
    .await;
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    reload_with(
        &gw,
        "reads = { requests = 100, window_seconds = 60 }",
        "reads = { requests = 1, window_seconds = 60 }",
    )
    .await;
    assert_eq!(send(&gw, &read(&gw, None)).await.status(), 200);
    let refused = send(&gw, &read(&gw, None)).await;
    assert_refused(&refused, "integration-reads", 1, 60, 60);
    assert_eq!(host.requests().len(), 2);
    gw.stop().await;
}

/// Log lines of this binary with every one of `containing`.
fn log_lines(containing: &[&str]) -> Vec<String> {
    common::logs::global("info").lines(containing)
}
