//! The `/v1` PAT API: validated with the host before it is stored, refused with a stable code
//! when the host says no, and used by the proxy right after.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;

fn pat_url(gw: &Gateway, account: &str) -> String {
    gw.url(&format!("/v1/integrations/ghe/users/{account}/pat"))
}

fn put(gw: &Gateway, account: &str, token: &str) -> Outgoing {
    Outgoing {
        method: Method::PUT,
        url: pat_url(gw, account),
        body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
        ..Outgoing::default()
    }
}

#[tokio::test]
async fn a_valid_pat_is_validated_stored_and_then_used() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let status = client
        .send(&Outgoing {
            method: Method::GET,
            url: pat_url(&gw, ACCOUNT_A),
            ..Outgoing::default()
        })
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body = json(&status);
    assert_eq!(body["configured"], false);
    assert_eq!(body["require_user_pat"], true);

    let response = client.send(&put(&gw, ACCOUNT_A, PAT_A)).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    let body = json(&response);
    assert_eq!(body["configured"], true);
    assert_eq!(body["host_login"], "alice");
    assert_eq!(
        body["scopes_or_permissions"],
        serde_json::json!(["repo", "read:org"])
    );
    assert!(body["validated_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !String::from_utf8_lossy(response.body()).contains(PAT_A),
        "the token is echoed back"
    );
    // The host was asked who the token belongs to, with that token.
    let who = host.last();
    assert_eq!(who.path_and_query, "/api/v3/user");
    assert_eq!(who.authorization(), Some(&*format!("Bearer {PAT_A}")));

    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );

    let response = client
        .send(&Outgoing {
            method: Method::DELETE,
            url: pat_url(&gw, ACCOUNT_A),
            ..Outgoing::default()
        })
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(&response)["configured"], false);
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "user-pat-required");
    gw.stop().await;
}

#[tokio::test]
async fn a_pat_the_host_rejects_is_not_stored() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let response = client
        .send(&put(
            &gw,
            ACCOUNT_A,
            "ghp_NotAValidTokenAtAll000000000000000000",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(problem_code(&response), "pat-invalid");
    assert!(gw
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .is_none());
    gw.stop().await;
}

#[tokio::test]
async fn a_pat_without_the_repo_scope_is_not_stored() {
    let (gw, host) = Gateway::start(Options::default()).await;
    host.add_user(
        "ghp_ReadOnlyToken000000000000000000000000",
        "carol",
        "read:user",
    );
    let response = gw
        .client()
        .send(&put(
            &gw,
            ACCOUNT_A,
            "ghp_ReadOnlyToken000000000000000000000000",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(problem_code(&response), "pat-insufficient-scope");
    assert!(gw
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .is_none());
    gw.stop().await;
}

#[tokio::test]
async fn malformed_put_bodies_get_bad_request() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    for body in [r#"{"pat":"x"}"#, "not json", r#"{"token":5}"#] {
        let mut out = put(&gw, ACCOUNT_A, "");
        out.body = Some(Bytes::from(body));
        let response = client.send(&out).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(problem_code(&response), "bad-request");
    }
    let mut bad_account = put(&gw, "not%20an%20id", PAT_A);
    bad_account.url = gw.url("/v1/integrations/ghe/users/not%20an%20id/pat");
    assert_eq!(
        problem_code(&client.send(&bad_account).await.unwrap()),
        "bad-request"
    );
    let unknown = Outgoing {
        method: Method::GET,
        url: gw.url("/v1/integrations/nope/users/abc/pat"),
        ..Outgoing::default()
    };
    assert_eq!(
        problem_code(&client.send(&unknown).await.unwrap()),
        "unknown-integration"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn last_used_at_is_kept_in_memory_and_written_at_shutdown() {
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(dir, ca, &host, &Options::default()).await;
    let gw = setup.start().await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.headers()["patgate-credential"], "user");
    // Not yet in the vault (no disk write per request), but the status API shows it.
    let meta = gw
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.last_used_at, None);
    let status = gw
        .client()
        .send(&gw.get(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")))
        .await
        .unwrap();
    let used = json(&status)["last_used_at"].as_str().unwrap().to_string();
    assert!(used.ends_with('Z'), "{used}");
    gw.stop().await;

    // Written at shutdown: a restarted patgate still knows.
    let gw = setup.start().await;
    let status = gw
        .client()
        .send(&gw.get(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")))
        .await
        .unwrap();
    assert_eq!(json(&status)["last_used_at"], used.as_str());
    assert_eq!(json(&status)["host_login"], "test");
    // Only the metadata was rewritten: the PAT still decrypts and is used.
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    gw.stop().await;
}
