//! The proxy end to end: every policy row through the wire, the credential the host saw,
//! and what is stripped or kept on the way.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;

// Policy row 1: a read uses the integration token, with or without Require User PAT, with or
// without an account, even when the user has a PAT.
#[tokio::test]
async fn read_uses_the_integration_token() {
    for require_user_pat in [false, true] {
        let (gw, host) = Gateway::start(Options {
            require_user_pat,
            ..Options::default()
        })
        .await;
        gw.store_pat(ACCOUNT_A, PAT_A).await;
        for account in [None, Some(ACCOUNT_A)] {
            let mut read = gw.get("/git/ghe/api/v3/repos/acme/api");
            read.account = account.map(str::to_string);
            let response = gw.client().send(&read).await.unwrap();
            assert_eq!(
                response.status(),
                200,
                "{}",
                String::from_utf8_lossy(response.body())
            );
            assert_eq!(response.headers()["patgate-credential"], "integration");
            let seen = host.last();
            assert_eq!(seen.method, Method::GET);
            assert_eq!(seen.path_and_query, "/api/v3/repos/acme/api");
            assert_eq!(
                seen.authorization(),
                Some(&*format!("Bearer {INTEGRATION_TOKEN}"))
            );
        }
        gw.stop().await;
    }
}

// Policy row 2: with Require User PAT off, actions use the integration token even when the
// user has a PAT.
#[tokio::test]
async fn action_without_require_user_pat_uses_the_integration_token() {
    let (gw, host) = Gateway::start(Options {
        require_user_pat: false,
        ..Options::default()
    })
    .await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["patgate-credential"], "integration");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {INTEGRATION_TOKEN}"))
    );
    gw.stop().await;
}

// Policy row 4: Require User PAT on and a stored PAT: the user's PAT, for all three actions.
#[tokio::test]
async fn actions_with_require_user_pat_use_the_users_pat() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    let actions = [
        gw.create_branch(Some(ACCOUNT_A)),
        Outgoing {
            method: Method::DELETE,
            url: gw.url("/git/ghe/api/v3/repos/acme/api/git/refs/heads/PROJ-1-fix"),
            account: Some(ACCOUNT_A.into()),
            ..Outgoing::default()
        },
        Outgoing {
            method: Method::POST,
            url: gw.url("/git/ghe/api/v3/repos/acme/api/pulls"),
            body: Some(Bytes::from_static(
                br#"{"title":"PROJ-1","head":"PROJ-1-fix","base":"main"}"#,
            )),
            account: Some(ACCOUNT_A.into()),
            ..Outgoing::default()
        },
    ];
    for action in &actions {
        let response = client.send(action).await.unwrap();
        assert!(
            response.status().is_success(),
            "{} {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        );
        assert_eq!(response.headers()["patgate-credential"], "user");
        let seen = host.last();
        assert_eq!(seen.method, action.method);
        assert_eq!(seen.authorization(), Some(&*format!("Bearer {PAT_A}")));
        assert_eq!(seen.body, action.body.clone().unwrap_or_default());
    }
    assert_eq!(host.requests().len(), 3);
    gw.stop().await;
}

// Policy row 5: Require User PAT on and no PAT: 403 user-pat-required; the host gets nothing.
#[tokio::test]
async fn action_without_a_pat_is_refused_before_the_host() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(problem_code(&response), "user-pat-required");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

// Policy row 6: other writes are refused, or use the integration token when allow-listed.
#[tokio::test]
async fn other_writes_are_refused_unless_allow_listed() {
    let merge = |gw: &Gateway| Outgoing {
        method: Method::PUT,
        url: gw.url("/git/ghe/api/v3/repos/acme/api/pulls/1/merge"),
        body: Some(Bytes::from_static(b"{}")),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    };
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let response = gw.client().send(&merge(&gw)).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(problem_code(&response), "operation-not-allowed");
    // A tag through the create-ref endpoint is not a branch.
    let mut tag = gw.create_branch(Some(ACCOUNT_A));
    tag.body = Some(Bytes::from_static(
        br#"{"ref":"refs/tags/v1","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#,
    ));
    let response = gw.client().send(&tag).await.unwrap();
    assert_eq!(problem_code(&response), "operation-not-allowed");
    assert!(host.requests().is_empty());
    gw.stop().await;

    let (gw, host) = Gateway::start(Options {
        allow_other_writes: true,
        ..Options::default()
    })
    .await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let response = gw.client().send(&merge(&gw)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["patgate-credential"], "integration");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {INTEGRATION_TOKEN}"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn actions_must_name_the_acting_user() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let response = gw.client().send(&gw.create_branch(None)).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(problem_code(&response), "bad-request");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_pat_stored_for_one_user_is_never_used_for_another() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    gw.store_pat(ACCOUNT_B, PAT_B).await;
    let client = gw.client();
    for (account, pat) in [(ACCOUNT_A, PAT_A), (ACCOUNT_B, PAT_B), (ACCOUNT_A, PAT_A)] {
        let response = client.send(&gw.create_branch(Some(account))).await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(host.last().authorization(), Some(&*format!("Bearer {pat}")));
    }
    // A third user with no PAT gets neither A's nor B's.
    let response = client
        .send(&gw.create_branch(Some("5b10ac8d82e05b22cc7d4ef6")))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "user-pat-required");
    // Look-alikes of A's id are other users, or not ids at all.
    for look_alike in [
        "5B10AC8D82E05B22CC7D4EF5",
        "5b10ac8d82e05b22cc7d4ef5.",
        "5b10ac8d82e05b22cc7d4ef",
    ] {
        let response = client
            .send(&gw.create_branch(Some(look_alike)))
            .await
            .unwrap();
        assert_eq!(problem_code(&response), "user-pat-required", "{look_alike}");
    }
    assert_eq!(host.requests().len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn inbound_credentials_never_reach_the_host() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let mut read = gw.get("/git/ghe/api/v3/repos/acme/api?access_token=stolen&per_page=5");
    read.headers = vec![
        ("Authorization".into(), "Bearer app-supplied-token".into()),
        ("Cookie".into(), "session=app".into()),
        ("Private-Token".into(), "glpat-app".into()),
        ("Proxy-Authorization".into(), "Basic eDp5".into()),
        ("X-GitHub-Api-Version".into(), "2022-11-28".into()),
    ];
    let response = gw.client().send(&read).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = host.last();
    assert_eq!(
        seen.authorization(),
        Some(&*format!("Bearer {INTEGRATION_TOKEN}"))
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    for gone in [
        "cookie",
        "private-token",
        "proxy-authorization",
        "signature",
        "signature-input",
        "patgate-account",
    ] {
        assert!(seen.headers.get(gone).is_none(), "{gone} reached the host");
    }
    assert_eq!(seen.headers["x-github-api-version"], "2022-11-28");
    assert_eq!(seen.path_and_query, "/api/v3/repos/acme/api?per_page=5");
    gw.stop().await;
}

#[tokio::test]
async fn paths_and_queries_reach_the_host_byte_for_byte() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    let path = "/api/v3/repos/acme/api/contents/docs%2Fguide.md?ref=feature%2Fx&a=%41";
    let response = client
        .send(&gw.get(&format!("/git/ghe{path}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(host.last().path_and_query, path);
    let delete = Outgoing {
        method: Method::DELETE,
        url: gw.url("/git/ghe/api/v3/repos/acme/api/git/refs/heads/feature%2FPROJ-2"),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    };
    let response = client.send(&delete).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        host.last().path_and_query,
        "/api/v3/repos/acme/api/git/refs/heads/feature%2FPROJ-2"
    );
    gw.stop().await;
}

#[tokio::test]
async fn dot_segments_never_reach_the_host() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    for path in [
        "/git/ghe/api/v3/../../other",
        "/git/ghe/api/v3/%2e%2e/x",
        "/git/ghe/api/v3/a%2F..%2Fb",
    ] {
        let response = client.send(&gw.get(path)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(problem_code(&response), "bad-request");
    }
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn unknown_integration_and_unknown_route() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let response = client.send(&gw.get("/git/nope/api/v3/user")).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(problem_code(&response), "unknown-integration");
    let response = client.send(&gw.get("/elsewhere")).await.unwrap();
    assert_eq!(problem_code(&response), "not-found");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let (gw, host) = Gateway::start(Options {
        max_body_bytes: 1024,
        ..Options::default()
    })
    .await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let mut big = gw.create_branch(Some(ACCOUNT_A));
    big.body = Some(Bytes::from(vec![b' '; 2048]));
    let response = gw.client().send(&big).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(problem_code(&response), "body-too-large");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn http2_and_request_ids() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client_with(gw.signing_key.clone(), true);
    let mut read = gw.get("/git/ghe/api/v3/user");
    read.headers = vec![("X-Request-Id".into(), "jira-req-42".into())];
    let response = client.send(&read).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "jira-req-42");
    assert_eq!(host.last().headers["x-request-id"], "jira-req-42");
    // GitHub refuses requests without a User-Agent: patgate sets one.
    assert!(host.last().headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("patgate/"));
    gw.stop().await;
}

#[tokio::test]
async fn hmac_signed_requests_are_accepted() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client_with(gw.hmac_key(), false);
    let response = client.send(&gw.get("/git/ghe/api/v3/user")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn stored_pats_survive_a_restart() {
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("restart CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options::default(),
    )
    .await;
    let gw = setup.start().await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    gw.stop().await;

    let gw = setup.start().await;
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    gw.stop().await;
}
