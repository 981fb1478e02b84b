//! A user's stored PAT after it was stored: refused by the host (per host kind), not
//! authorised for GitHub's SAML SSO, or about to expire — what the app gets, what the status
//! says, what the host received.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use patgate::client::Outgoing;
use patgate::clock::ManualClock;
use serde_json::Value;

const DAY: u64 = 86_400;

/// Each host kind's create-branch request, its integration's base path, and its PAT scheme.
struct Kind {
    kind: &'static str,
    base_path: &'static str,
    create_branch: fn(&Gateway) -> Outgoing,
    /// The header the host saw the PAT in, as the host received it.
    carried: fn(&Recorded) -> Option<String>,
    /// More keys for the integration (a TFS release, so none is detected).
    integration_toml: &'static str,
}

fn github_branch(gw: &Gateway) -> Outgoing {
    gw.create_branch(Some(ACCOUNT_A))
}

fn gitlab_branch(gw: &Gateway) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url("/git/ghe/api/v4/projects/acme%2Fapi/repository/branches"),
        body: Some(Bytes::from_static(br#"{"branch":"PROJ-1","ref":"main"}"#)),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    }
}

fn azure_branch(gw: &Gateway) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url("/git/ghe/Fabrikam/_apis/git/repositories/api/refs?api-version=7.1"),
        body: Some(Bytes::from_static(
            br#"[{"name":"refs/heads/PROJ-1","oldObjectId":"0000000000000000000000000000000000000000","newObjectId":"aa218f56b14c9653891f9e74264a383fa43fefbd"}]"#,
        )),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    }
}

const KINDS: [Kind; 4] = [
    Kind {
        kind: "github",
        base_path: "",
        create_branch: github_branch,
        carried: |seen| seen.authorization().map(str::to_string),
        integration_toml: "",
    },
    Kind {
        kind: "gitlab",
        base_path: "",
        create_branch: gitlab_branch,
        carried: |seen| {
            seen.headers
                .get("private-token")
                .map(|v| format!("PRIVATE-TOKEN {}", v.to_str().unwrap()))
        },
        integration_toml: "",
    },
    Kind {
        kind: "azure-devops",
        base_path: "/fabrikam",
        create_branch: azure_branch,
        carried: |seen| seen.authorization().map(str::to_string),
        integration_toml: "",
    },
    Kind {
        kind: "tfs",
        base_path: "/tfs/DefaultCollection",
        create_branch: azure_branch,
        carried: |seen| seen.authorization().map(str::to_string),
        integration_toml: "version = 2022",
    },
];

async fn start(kind: &Kind, clock: Option<ManualClock>) -> (Gateway, RecordingHost) {
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let opts = Options {
        kind: kind.kind,
        base_url: Some(format!("{}{}", host.base_url(), kind.base_path)),
        integration_toml: kind.integration_toml.into(),
        require_user_pat: true,
        connect_ttl_seconds: Some(600),
        clock,
        ..Options::default()
    };
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let gw = Setup::with_ca(dir, ca, &host, &opts).await.start().await;
    (gw, host)
}

async fn status(gw: &Gateway) -> Value {
    let response = gw
        .client()
        .send(&gw.get(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(response.body()).unwrap()
}

/// The connect page a link opens, as a browser gets it (no signature).
async fn page(gw: &Gateway, url: &str) -> String {
    let response = gw
        .client()
        .send_signed(
            http::Request::get(url)
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    String::from_utf8_lossy(response.body()).into_owned()
}

/// A fresh connect link for user A, as the app asks for one.
async fn link(gw: &Gateway) -> String {
    let response = gw.client().send(&gw.connect_link(ACCOUNT_A)).await.unwrap();
    body(&response)["url"].as_str().unwrap().to_string()
}

fn body(response: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test]
async fn a_pat_the_host_refuses_is_marked_and_the_user_asked_for_a_new_one() {
    for kind in &KINDS {
        let (gw, host) = start(kind, None).await;
        let client = gw.client();
        assert_eq!(
            client
                .send(&gw.put_pat(ACCOUNT_A, PAT_A))
                .await
                .unwrap()
                .status(),
            StatusCode::OK,
            "{}",
            kind.kind
        );
        assert!(status(&gw).await["refused"].is_null());

        // The host refuses the PAT (revoked, expired): 401.
        let before = host.requests().len();
        host.answer_next(StatusCode::UNAUTHORIZED, &[]);
        let response = client.send(&(kind.create_branch)(&gw)).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{}", kind.kind);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{}",
            kind.kind
        );
        let problem = body(&response);
        assert_eq!(problem["code"], "user-pat-refused", "{}", kind.kind);
        let setup = problem["setup_url"].as_str().unwrap();
        assert!(setup.contains("/connect/"), "{setup}");
        // The host got the request once, with the user's PAT; nothing of its answer passes.
        assert_eq!(host.requests().len(), before + 1);
        let seen = host.last();
        assert_eq!(seen.method, Method::POST, "{}", kind.kind);
        let carried = (kind.carried)(&seen).unwrap();
        match kind.kind {
            "gitlab" => assert_eq!(carried, format!("PRIVATE-TOKEN {PAT_A}")),
            "github" => assert_eq!(carried, format!("Bearer {PAT_A}")),
            // Azure DevOps and TFS: Basic with an empty user name and the PAT.
            _ => {
                use base64::Engine as _;
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{PAT_A}"));
                assert_eq!(carried, format!("Basic {basic}"), "{}", kind.kind);
            }
        }
        assert!(!String::from_utf8_lossy(response.body()).contains("scripted answer"));

        // The status says so; the PAT is kept.
        let now = status(&gw).await;
        assert_eq!(now["configured"], true, "{}", kind.kind);
        assert_eq!(now["refused"]["host_status"], 401, "{}", kind.kind);
        let refused_at = now["refused"]["at"].clone();
        assert!(refused_at.is_string());
        // The page the link opens says why a new token is needed.
        let shown = page(&gw, setup).await;
        assert!(
            shown.contains("id=\"token-refused\""),
            "{}: {shown}",
            kind.kind
        );
        assert!(shown.contains("refused this token"), "{shown}");
        assert!(shown.contains("HTTP 401"), "{shown}");
        // Azure DevOps and TFS answer a PAT without the scope it needs with 401 as well.
        assert_eq!(
            shown.contains("lacks the Code (Read &amp; write) scope"),
            matches!(kind.kind, "azure-devops" | "tfs"),
            "{}: {shown}",
            kind.kind
        );

        // Refused again: the first refusal's time stays.
        host.answer_next(StatusCode::UNAUTHORIZED, &[]);
        let response = client.send(&(kind.create_branch)(&gw)).await.unwrap();
        assert_eq!(body(&response)["code"], "user-pat-refused");
        assert_eq!(status(&gw).await["refused"]["at"], refused_at);

        // The user fixed it on the host's side: the next accepted action clears the mark.
        let response = client.send(&(kind.create_branch)(&gw)).await.unwrap();
        assert!(
            response.status().is_success(),
            "{}: {}",
            kind.kind,
            response.status()
        );
        assert!(status(&gw).await["refused"].is_null(), "{}", kind.kind);
        assert!(!page(&gw, &link(&gw).await).await.contains("token-refused"));
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_refusal_of_the_integration_token_is_not_a_users_matter() {
    let (gw, host) = start(&KINDS[0], None).await;
    gw.client()
        .send(&gw.put_pat(ACCOUNT_A, PAT_A))
        .await
        .unwrap();
    host.answer_next(StatusCode::UNAUTHORIZED, &[]);
    // A read goes with the integration token: the host's 401 passes through as it is.
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/repos/acme/api/branches"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["patgate-credential"], "integration");
    assert!(status(&gw).await["refused"].is_null());
    gw.stop().await;
}

#[tokio::test]
async fn github_sso_is_answered_with_the_url_github_sent() {
    let (gw, host) = start(&KINDS[0], None).await;
    let client = gw.client();
    client.send(&gw.put_pat(ACCOUNT_A, PAT_A)).await.unwrap();
    let url = "https://github.com/orgs/acme/sso?authorization_request=AZ3P2ENQ6ZH3V6BTJ2C5RBKL";
    host.answer_next(
        StatusCode::FORBIDDEN,
        &[("x-github-sso", &format!("required; url={url}"))],
    );
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem = body(&response);
    assert_eq!(problem["code"], "github-sso-required");
    assert_eq!(problem["sso_url"], url);
    // Not a refusal of the token: nothing is marked.
    assert!(status(&gw).await["refused"].is_null());

    // A 403 that is not about SSO passes through as GitHub sent it.
    host.answer_next(StatusCode::FORBIDDEN, &[]);
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(response.body()).contains("scripted answer"));
    gw.stop().await;
}

#[tokio::test]
async fn github_expiry_is_recorded_refreshed_and_warned_about() {
    let clock = ManualClock::new();
    let now = clock.clock().unix_now();
    let (gw, host) = start(&KINDS[0], Some(clock.clone())).await;
    let client = gw.client();
    host.expiries
        .lock()
        .unwrap()
        .insert(PAT_A.into(), now + 10 * DAY);
    client.send(&gw.put_pat(ACCOUNT_A, PAT_A)).await.unwrap();
    let seen = status(&gw).await;
    assert_eq!(seen["expires_at"], rfc3339(now + 10 * DAY));
    assert_eq!(seen["expires_soon"], false);
    let expiring = |metrics: &str, within: &str| {
        let line =
            format!("patgate_user_pats_expiring{{integration=\"ghe\",within=\"{within}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in the scrape"))
            .to_string()
    };
    let metrics = gw.metrics().await;
    assert_eq!(expiring(&metrics, "7d"), "0");
    assert_eq!(expiring(&metrics, "30d"), "1");

    assert!(page(&gw, &link(&gw).await)
        .await
        .contains("<p id=\"token-expiry\">This token expires on"));

    // The warning window (7 days by default) is crossed.
    clock.advance(std::time::Duration::from_secs(4 * DAY));
    assert_eq!(status(&gw).await["expires_soon"], true);
    let shown = page(&gw, &link(&gw).await).await;
    assert!(shown.contains("replace it soon"), "{shown}");
    let metrics = gw.metrics().await;
    assert_eq!(expiring(&metrics, "7d"), "1");
    assert_eq!(expiring(&metrics, "expired"), "0");
    // No account id in any label.
    assert!(!metrics.contains(ACCOUNT_A));

    // The user extended the token on GitHub: the next action's answer says so.
    host.expiries
        .lock()
        .unwrap()
        .insert(PAT_A.into(), now + 90 * DAY);
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let seen = status(&gw).await;
    assert_eq!(seen["expires_at"], rfc3339(now + 90 * DAY));
    assert_eq!(seen["expires_soon"], false);
    gw.stop().await;
}

#[tokio::test]
async fn gitlab_expiry_is_asked_for_when_the_pat_is_stored() {
    let (gw, host) = start(&KINDS[1], None).await;
    // 2027-03-01: GitLab tokens expire at the start of their date, 00:00 UTC.
    host.expiries
        .lock()
        .unwrap()
        .insert(PAT_A.into(), 1_803_902_400 + 3_600);
    gw.client()
        .send(&gw.put_pat(ACCOUNT_A, PAT_A))
        .await
        .unwrap();
    assert_eq!(status(&gw).await["expires_at"], "2027-03-01T00:00:00Z");
    // A token without an expiry: unknown, never "soon".
    gw.client()
        .send(&gw.put_pat(ACCOUNT_A, PAT_B))
        .await
        .unwrap();
    let seen = status(&gw).await;
    assert!(seen["expires_at"].is_null());
    assert_eq!(seen["expires_soon"], false);

    // GitLab before 15.5 has no such endpoint (404): the PAT is stored, its expiry unknown.
    host.gitlab_before_15_5
        .store(true, std::sync::atomic::Ordering::SeqCst);
    host.expiries
        .lock()
        .unwrap()
        .insert(PAT_A.into(), 1_803_902_400 + 3_600);
    let response = gw
        .client()
        .send(&gw.put_pat(ACCOUNT_A, PAT_A))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let asked = host.last();
    assert!(
        asked
            .path_and_query
            .ends_with("/api/v4/personal_access_tokens/self"),
        "{asked:?}"
    );
    assert_eq!(
        asked
            .headers
            .get("private-token")
            .unwrap()
            .to_str()
            .unwrap(),
        PAT_A
    );
    let seen = status(&gw).await;
    assert!(seen["expires_at"].is_null(), "{seen}");
    assert_eq!(seen["configured"], true);
    gw.stop().await;
}

/// `pat_expiry_warning_days` sets when "expires soon" starts; past the expiry the status,
/// the page and the `expired` bucket say so.
#[tokio::test]
async fn the_warning_window_is_the_integrations_and_an_expired_pat_is_counted() {
    let clock = ManualClock::new();
    let now = clock.clock().unix_now();
    let kind = Kind {
        integration_toml: "pat_expiry_warning_days = 20",
        ..KINDS[0]
    };
    let (gw, host) = start(&kind, Some(clock.clone())).await;
    host.expiries
        .lock()
        .unwrap()
        .insert(PAT_A.into(), now + 10 * DAY);
    let response = gw
        .client()
        .send(&gw.put_pat(ACCOUNT_A, PAT_A))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Ten days left, inside a 20-day window (outside the default 7).
    assert_eq!(status(&gw).await["expires_soon"], true);

    clock.advance(std::time::Duration::from_secs(11 * DAY));
    let seen = status(&gw).await;
    assert_eq!(seen["expires_at"], rfc3339(now + 10 * DAY));
    let shown = page(&gw, &link(&gw).await).await;
    assert!(shown.contains("This token expired on"), "{shown}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("patgate_user_pats_expiring{integration=\"ghe\",within=\"expired\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains(ACCOUNT_A));
    gw.stop().await;
}
