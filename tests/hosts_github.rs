//! GitHub conformance: each action, a read and the who-am-I call, as the host received them
//! through patgate, match GitHub's official OpenAPI descriptions (Enterprise Server 3.19 and
//! github.com) in tests/specs; GitHub Enterprise Cloud with data residency (GHE.com) is
//! checked against the github.com description, reached through an egress proxy.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;

fn actions(gw: &Gateway) -> Vec<(Outgoing, &'static str)> {
    vec![
        (gw.create_branch(Some(ACCOUNT_A)), "git/create-ref"),
        (
            Outgoing {
                method: Method::DELETE,
                url: gw.url("/git/ghe/api/v3/repos/acme/api/git/refs/heads/feature/PROJ-1"),
                account: Some(ACCOUNT_A.into()),
                ..Outgoing::default()
            },
            "git/delete-ref",
        ),
        (
            Outgoing {
                method: Method::POST,
                url: gw.url("/git/ghe/api/v3/repos/acme/api/pulls"),
                body: Some(Bytes::from_static(
                    br#"{"title":"PROJ-1 Fix login","head":"feature/PROJ-1","base":"main","body":"From Jira"}"#,
                )),
                account: Some(ACCOUNT_A.into()),
                ..Outgoing::default()
            },
            "pulls/create",
        ),
        (gw.get("/git/ghe/api/v3/repos/acme/api/branches?per_page=100"), "repos/list-branches"),
    ]
}

#[tokio::test]
async fn requests_match_githubs_openapi_descriptions() {
    let ghes = conformance::load("github/github-ghes-3.19.json");
    let dotcom = conformance::load("github/github-api.github.com.json");
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    // The descriptions' paths are below the API root; Enterprise Server serves it at /api/v3.
    let below_api_root = |mut seen: Recorded| {
        seen.path_and_query = seen
            .path_and_query
            .strip_prefix("/api/v3")
            .unwrap()
            .to_string();
        seen
    };
    for (action, operation) in actions(&gw) {
        let response = client.send(&action).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let seen = below_api_root(host.last());
        for spec in [&ghes, &dotcom] {
            assert_eq!(
                conformance::check(spec, &seen).unwrap_or_else(|e| panic!("{e}")),
                operation
            );
        }
    }
    // Who am I, as sent when a PAT is stored.
    let put = Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_B}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{PAT_B}"}}"#))),
        ..Outgoing::default()
    };
    assert_eq!(client.send(&put).await.unwrap().status(), 200);
    let seen = below_api_root(host.last());
    assert_eq!(
        conformance::check(&ghes, &seen).unwrap(),
        "users/get-authenticated"
    );

    // The check can fail: a create-ref without its sha, a pull request with a numeric title.
    let mut bad = below_api_root(host.requests()[0].clone());
    bad.body = Bytes::from_static(br#"{"ref":"refs/heads/x"}"#);
    assert!(conformance::check(&ghes, &bad).unwrap_err().contains("sha"));
    let mut bad = below_api_root(host.requests()[2].clone());
    bad.body = Bytes::from_static(br#"{"title":5,"head":"a","base":"main"}"#);
    assert!(conformance::check(&ghes, &bad).is_err());
    gw.stop().await;
}

/// GHE.com (`https://api.{subdomain}.ghe.com`): REST at the root as on github.com, so the
/// app's paths carry no `/api/v3` and who-am-I is `/user`; the integration's `proxy` opens a
/// CONNECT tunnel to that name (TLS end to end: the host's certificate names it).
#[tokio::test]
async fn ghe_com_is_called_at_its_api_root_through_the_proxy() {
    let dotcom = conformance::load("github/github-api.github.com.json");
    let ca = std::sync::Arc::new(patgate::devpki::DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let (proxy, tunnels) = connect_proxy(Some(host.addr)).await;
    let opts = Options {
        base_url: Some(format!("https://{GHE_COM_API}")),
        integration_toml: format!("proxy = \"http://{proxy}\""),
        ..Options::default()
    };
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let gw = Setup::with_ca(dir, ca, &host, &opts).await.start().await;
    let client = gw.client();

    // Storing a PAT asks GHE.com who it belongs to, at /user.
    let put = Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{PAT_A}"}}"#))),
        ..Outgoing::default()
    };
    assert_eq!(client.send(&put).await.unwrap().status(), 200);
    let seen = host.last();
    assert_eq!(seen.path_and_query, "/user");
    assert_eq!(
        conformance::check(&dotcom, &seen).unwrap(),
        "users/get-authenticated"
    );

    let create = Outgoing {
        method: Method::POST,
        url: gw.url("/git/ghe/repos/acme/api/git/refs"),
        body: Some(Bytes::from_static(
            br#"{"ref":"refs/heads/PROJ-1-fix","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#,
        )),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    };
    let response = client.send(&create).await.unwrap();
    assert_eq!(response.status(), 201);
    let seen = host.last();
    assert_eq!(seen.path_and_query, "/repos/acme/api/git/refs");
    assert_eq!(
        seen.authorization(),
        Some(format!("Bearer {PAT_A}").as_str())
    );
    assert_eq!(
        conformance::check(&dotcom, &seen).unwrap(),
        "git/create-ref"
    );
    let response = client
        .send(&gw.get("/git/ghe/repos/acme/api/branches?per_page=100"))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let seen = host.last();
    assert_eq!(
        seen.authorization(),
        Some(format!("Bearer {INTEGRATION_TOKEN}").as_str())
    );
    assert_eq!(
        conformance::check(&dotcom, &seen).unwrap(),
        "repos/list-branches"
    );

    // Every connection went through the proxy, to GHE.com's API host on 443.
    let tunnels = tunnels.lock().unwrap().clone();
    assert!(!tunnels.is_empty());
    for line in tunnels {
        assert_eq!(line, format!("CONNECT {GHE_COM_API}:443 HTTP/1.1"));
    }
    gw.stop().await;
}
