//! GitHub conformance: each action, a read and the who-am-I call, as the host received them
//! through patgate, match GitHub's official OpenAPI descriptions (Enterprise Server 3.19 and
//! github.com) in tests/specs.

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
