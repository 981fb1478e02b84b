//! GitLab through the wire: each action reaches the host exactly as the app sent it, with
//! `PRIVATE-TOKEN` set to the credential the policy chose; every policy row; credential
//! stripping; `%2F` kept; PAT validation with `GET /api/v4/user`; and each request checked
//! against GitLab's official OpenAPI description.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;

const PROJECT: &str = "/git/ghe/api/v4/projects/acme%2Fplatform%2Fapi";
const CREATE_BRANCH: &str = r#"{"branch":"feature/PROJ-1-fix","ref":"main"}"#;
const CREATE_MR: &str = r#"{"source_branch":"feature/PROJ-1-fix","target_branch":"main","title":"PROJ-1 Fix the build","remove_source_branch":true}"#;

fn gitlab(opts: Options) -> Options {
    Options {
        kind: "gitlab",
        ..opts
    }
}

fn create_branch(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url(&format!("{PROJECT}/repository/branches")),
        body: Some(Bytes::from_static(CREATE_BRANCH.as_bytes())),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

fn delete_branch(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::DELETE,
        url: gw.url(&format!(
            "{PROJECT}/repository/branches/feature%2FPROJ-1-fix"
        )),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

fn create_mr(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url(&format!("{PROJECT}/merge_requests")),
        body: Some(Bytes::from_static(CREATE_MR.as_bytes())),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

fn read(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::GET,
        url: gw.url(&format!(
            "{PROJECT}/repository/branches?per_page=100&search=PROJ-1"
        )),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

fn merge(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("{PROJECT}/merge_requests/1/merge")),
        body: Some(Bytes::from_static(b"{}")),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

/// The path the host must see: the app's path without `/git/{integration}`.
fn host_path(out: &Outgoing) -> String {
    let url: http::Uri = out.url.parse().unwrap();
    let pq = url.path_and_query().unwrap().as_str();
    pq.strip_prefix(&format!("/git/{INTEGRATION_ID}"))
        .unwrap()
        .to_string()
}

type Action = fn(&Gateway, Option<&str>) -> Outgoing;
const ACTIONS: [(&str, Action, u16); 3] = [
    ("create branch", create_branch, 201),
    ("delete branch", delete_branch, 204),
    ("create merge request", create_mr, 201),
];

#[tokio::test]
async fn each_action_reaches_gitlab_exactly_with_the_users_private_token() {
    let (gw, host) = Gateway::start(gitlab(Options::default())).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    for (name, action, status) in ACTIONS {
        let out = action(&gw, Some(ACCOUNT_A));
        let response = client.send(&out).await.unwrap();
        assert_eq!(
            response.status(),
            status,
            "{name}: {}",
            String::from_utf8_lossy(response.body())
        );
        assert_eq!(response.headers()["patgate-credential"], "user", "{name}");
        let seen = host.last();
        assert_eq!(seen.method, out.method, "{name}");
        assert_eq!(seen.path_and_query, host_path(&out), "{name}");
        assert_eq!(seen.body, out.body.clone().unwrap_or_default(), "{name}");
        assert_eq!(seen.headers["private-token"], PAT_A, "{name}");
        assert!(seen.headers.get("authorization").is_none(), "{name}");
        assert_eq!(seen.headers["user-agent"], PATGATE_USER_AGENT, "{name}");
        // Forwarded as signed: the body is unchanged, so the digest still matches it.
        assert_eq!(
            seen.headers.get("content-digest").is_some(),
            out.body.is_some(),
            "{name}"
        );
    }
    assert_eq!(host.requests().len(), 3);
    gw.stop().await;
}

/// DESIGN.md's policy table, every row, for GitLab.
#[tokio::test]
async fn every_policy_row() {
    enum Expect {
        Credential(&'static str),
        Refused(&'static str),
    }
    use Expect::*;
    // (require_user_pat, allow_other_writes, request, account, expected)
    let rows: Vec<(bool, bool, Action, Option<&str>, Expect)> = vec![
        // read | any | any | any -> integration
        (false, false, read, None, Credential("integration")),
        (true, false, read, None, Credential("integration")),
        (
            true,
            false,
            read,
            Some(ACCOUNT_A),
            Credential("integration"),
        ),
        // action | off | any | any -> integration
        (
            false,
            false,
            create_branch,
            Some(ACCOUNT_A),
            Credential("integration"),
        ),
        (
            false,
            false,
            delete_branch,
            Some(ACCOUNT_B),
            Credential("integration"),
        ),
        (
            false,
            false,
            create_mr,
            Some(ACCOUNT_A),
            Credential("integration"),
        ),
        // action | on | other | yes -> user PAT
        (
            true,
            false,
            create_branch,
            Some(ACCOUNT_A),
            Credential("user"),
        ),
        (
            true,
            false,
            delete_branch,
            Some(ACCOUNT_A),
            Credential("user"),
        ),
        (true, false, create_mr, Some(ACCOUNT_A), Credential("user")),
        // action | on | other | no -> user-pat-required
        (
            true,
            false,
            create_branch,
            Some(ACCOUNT_B),
            Refused("user-pat-required"),
        ),
        (
            true,
            false,
            delete_branch,
            Some(ACCOUNT_B),
            Refused("user-pat-required"),
        ),
        (
            true,
            false,
            create_mr,
            Some(ACCOUNT_B),
            Refused("user-pat-required"),
        ),
        // other write -> operation-not-allowed, or integration when allow-listed
        (
            true,
            false,
            merge,
            Some(ACCOUNT_A),
            Refused("operation-not-allowed"),
        ),
        (
            false,
            false,
            merge,
            Some(ACCOUNT_A),
            Refused("operation-not-allowed"),
        ),
        (
            true,
            true,
            merge,
            Some(ACCOUNT_A),
            Credential("integration"),
        ),
    ];
    for (i, (require_user_pat, allow_other_writes, request, account, expect)) in
        rows.into_iter().enumerate()
    {
        let (gw, host) = Gateway::start(gitlab(Options {
            require_user_pat,
            allow_other_writes,
            ..Options::default()
        }))
        .await;
        gw.store_pat(ACCOUNT_A, PAT_A).await;
        let out = request(&gw, account);
        let response = gw.client().send(&out).await.unwrap();
        let row = format!(
            "row {i}: {} {} rup={require_user_pat} aow={allow_other_writes} account={account:?}",
            out.method,
            host_path(&out)
        );
        match expect {
            Credential(which) => {
                assert!(
                    response.status().is_success(),
                    "{row}: {} {}",
                    response.status(),
                    String::from_utf8_lossy(response.body())
                );
                assert_eq!(response.headers()["patgate-credential"], which, "{row}");
                let token = if which == "user" {
                    PAT_A
                } else {
                    INTEGRATION_TOKEN
                };
                let seen = host.last();
                assert_eq!(seen.headers["private-token"], token, "{row}");
                assert_eq!(seen.path_and_query, host_path(&out), "{row}");
            }
            Refused(code) => {
                assert_eq!(response.status(), 403, "{row}");
                assert_eq!(problem_code(&response), code, "{row}");
                assert!(host.requests().is_empty(), "{row}: the host was called");
            }
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn inbound_gitlab_credentials_reach_nothing() {
    let (gw, host) = Gateway::start(gitlab(Options::default())).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    let credentials = vec![
        (
            "PRIVATE-TOKEN".to_string(),
            "glpat-app-supplied".to_string(),
        ),
        ("JOB-TOKEN".into(), "job-app-supplied".into()),
        ("Sudo".into(), "root".into()),
        ("Authorization".into(), "Bearer app-supplied".into()),
    ];
    let mut read = gw.get(&format!(
        "{PROJECT}/repository/branches?private_token=a&per_page=5&access_token=b&job_token=c&sudo=root&PRIVATE_TOKEN=d&search=x"
    ));
    read.headers = credentials.clone();
    let mut action = create_mr(&gw, Some(ACCOUNT_A));
    action.url = gw.url(&format!(
        "{PROJECT}/merge_requests?sudo=root&private_token=a"
    ));
    action.headers = credentials;
    for (out, token) in [(read, INTEGRATION_TOKEN), (action, PAT_A)] {
        let response = client.send(&out).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let seen = host.last();
        assert_eq!(seen.headers.get_all("private-token").iter().count(), 1);
        assert_eq!(seen.headers["private-token"], token);
        for gone in ["job-token", "sudo", "authorization"] {
            assert!(seen.headers.get(gone).is_none(), "{gone} reached the host");
        }
        let query = seen
            .path_and_query
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("");
        for name in ["private_token", "access_token", "job_token", "sudo"] {
            assert!(
                !query.to_ascii_lowercase().contains(name),
                "{name} reached the host: {query}"
            );
        }
    }
    assert_eq!(
        host.requests()[0].path_and_query,
        "/api/v4/projects/acme%2Fplatform%2Fapi/repository/branches?per_page=5&search=x"
    );
    assert_eq!(
        host.requests()[1].path_and_query,
        "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests"
    );
    // `sudo` in the body would impersonate too: such an action is refused, not forwarded.
    let mut sudo = create_mr(&gw, Some(ACCOUNT_A));
    sudo.body = Some(Bytes::from_static(
        br#"{"source_branch":"x","target_branch":"main","title":"t","sudo":"root"}"#,
    ));
    let response = client.send(&sudo).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(problem_code(&response), "operation-not-allowed");
    assert_eq!(host.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn encoded_slashes_reach_gitlab_as_sent() {
    let (gw, host) = Gateway::start(gitlab(Options::default())).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    for path in [
        "/api/v4/projects/acme%2Fapi/repository/branches/feature%2Fdeep%2FPROJ-9",
        "/api/v4/projects/42/repository/branches/release%2F2026.11",
    ] {
        let out = Outgoing {
            method: Method::DELETE,
            url: gw.url(&format!("/git/ghe{path}")),
            account: Some(ACCOUNT_A.into()),
            ..Outgoing::default()
        };
        let response = client.send(&out).await.unwrap();
        assert_eq!(response.status(), 204, "{path}");
        assert_eq!(response.headers()["patgate-credential"], "user");
        assert_eq!(host.last().path_and_query, path);
    }
    let read = "/api/v4/projects/acme%2Fapi/repository/files/docs%2Fguide.md?ref=feature%2Fx";
    let response = client
        .send(&gw.get(&format!("/git/ghe{read}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(host.last().path_and_query, read);
    // A raw slash in the branch is not a GitLab route, so not a delete-branch action.
    let raw = Outgoing {
        method: Method::DELETE,
        url: gw.url("/git/ghe/api/v4/projects/42/repository/branches/feature/x"),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    };
    let response = client.send(&raw).await.unwrap();
    assert_eq!(problem_code(&response), "operation-not-allowed");
    gw.stop().await;
}

#[tokio::test]
async fn pats_are_validated_with_api_v4_user() {
    let (gw, host) = Gateway::start(gitlab(Options::default())).await;
    host.add_user("glpat-ReadRepositoryOnly000", "carol", "read_repository");
    let client = gw.client();
    let put = |token: &str| Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
        ..Outgoing::default()
    };
    let response = client.send(&put(PAT_A)).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(json(&response)["host_login"], "alice");
    let seen = host.requests();
    let who = &seen[seen.len() - 2];
    assert_eq!(who.method, Method::GET);
    assert_eq!(who.path_and_query, "/api/v4/user");
    assert_eq!(who.headers["private-token"], PAT_A);
    assert!(who.headers.get("authorization").is_none());

    let response = client
        .send(&put("glpat-ReadRepositoryOnly000"))
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(problem_code(&response), "pat-insufficient-scope");
    let response = client.send(&put("glpat-unknown")).await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(problem_code(&response), "pat-invalid");
    // The refused tokens did not replace the stored one.
    let response = client
        .send(&create_branch(&gw, Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(host.last().headers["private-token"], PAT_A);
    gw.stop().await;
}

/// Each action as the host received it matches GitLab's official OpenAPI description.
#[tokio::test]
async fn requests_match_gitlabs_openapi_description() {
    let spec = conformance::load("gitlab/gitlab-v4-19.5.yaml");
    // The description's own credential header is the one patgate sets.
    assert_eq!(
        spec["components"]["securitySchemes"]["apiKey"]["name"],
        "PRIVATE-TOKEN"
    );
    let (gw, host) = Gateway::start(gitlab(Options::default())).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    let expected = [
        (
            create_branch as Action,
            "postApiV4ProjectsIdRepositoryBranches",
        ),
        (
            delete_branch,
            "deleteApiV4ProjectsIdRepositoryBranchesBranch",
        ),
        (create_mr, "postApiV4ProjectsIdMergeRequests"),
        (read, "getApiV4ProjectsIdRepositoryBranches"),
    ];
    for (action, operation) in expected {
        let response = client.send(&action(&gw, Some(ACCOUNT_A))).await.unwrap();
        assert!(response.status().is_success());
        let seen = host.last();
        assert_eq!(
            conformance::check(&spec, &seen).unwrap_or_else(|e| panic!("{e}")),
            operation
        );
    }
    // Who am I, as sent when a PAT is stored.
    let put = Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_B}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{PAT_B}"}}"#))),
        ..Outgoing::default()
    };
    assert_eq!(client.send(&put).await.unwrap().status(), 200);
    // Then when the token expires (GitLab 15.5 and later).
    let seen = host.requests();
    let [.., who, expiry] = seen.as_slice() else {
        panic!("two requests for a stored PAT")
    };
    assert_eq!(conformance::check(&spec, who).unwrap(), "getApiV4User");
    assert_eq!(
        conformance::check(&spec, expiry).unwrap(),
        "getApiV4PersonalAccessTokensSelf"
    );
    assert_eq!(expiry.headers["private-token"], PAT_B);

    // The check can fail: a merge request without its title, a branch id of the wrong type.
    let mut bad = host.requests()[2].clone();
    bad.body = Bytes::from_static(br#"{"source_branch":"a","target_branch":"main"}"#);
    let err = conformance::check(&spec, &bad).unwrap_err();
    assert!(err.contains("`title`"), "{err}");
    let mut bad = host.requests()[0].clone();
    bad.body = Bytes::from_static(br#"{"branch":"a","ref":7}"#);
    assert!(conformance::check(&spec, &bad)
        .unwrap_err()
        .contains("body.ref"));
    let mut bad = host.requests()[0].clone();
    bad.path_and_query = "/api/v4/projects/acme/api/repository/branches".into();
    assert!(conformance::check(&spec, &bad).is_err());
    gw.stop().await;
}
