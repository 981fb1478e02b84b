//! The edges where a request could mean something other than what patgate checked, each
//! refused over the real channel, with nothing reaching the git host:
//!
//! | edge | answer | test |
//! |---|---|---|
//! | `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, a `_method` query parameter (also `%5Fmethod`, `_METHOD`), a `_method` form field | 400 `method-override` | `method_overrides_never_reach_the_host` |
//! | `/v1` account `%41lice`, `%2e%2e`, `..`, `.` (GET and PUT) | 400 `bad-request`, no host call, no record | `v1_accounts_are_taken_byte_for_byte` |
//! | `/git` `Patgate-Account: %41lice` / `..` | 400 `bad-request` | `git_accounts_are_taken_byte_for_byte` |
//! | admin socket account `%41lice`, `%2e%2e`, `..` | 400 `bad-request` | `admin_socket_accounts_are_taken_byte_for_byte` |
//! | command line `--account %41lice` / `..` | a non-zero exit, the validator's reason | `command_line_accounts_are_taken_byte_for_byte` |
//!
//! Every account refusal carries the reason of the one validator, [`patgate::ids::AccountId`].

mod common;

use std::process::Command;

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::adminsock::client::{self, AdminClientError};
use patgate::client::Outgoing;
use patgate::ids::InvalidId;

/// Accounts that a decoding or normalising validator would take for another one (`Alice`,
/// the parent directory).
const LOOK_ALIKES: [&str; 4] = ["%41lice", "%2e%2e", "..", "."];

fn detail(response: &http::Response<Bytes>) -> String {
    json(response)["detail"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn method_overrides_never_reach_the_host() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let read = "/git/ghe/api/v3/repos/acme/api/git/refs/heads/main";
    // The same read without an override reaches the host: the refusals below are the
    // override's, not the request's.
    let response = client.send(&gw.get(read)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(host.requests().len(), 1);
    let mut cases = Vec::new();
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        let mut out = gw.get(read);
        out.headers.push((header.into(), "DELETE".into()));
        cases.push((header.to_string(), out));
    }
    for query in [
        "_method=DELETE",
        "per_page=1&%5Fmethod=DELETE",
        "_METHOD=delete",
    ] {
        cases.push((query.to_string(), gw.get(&format!("{read}?{query}"))));
    }
    let mut form = gw.create_branch(Some(ACCOUNT_A));
    form.headers.push((
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    form.body = Some(Bytes::from_static(b"ref=refs/heads/x&_method=DELETE"));
    cases.push(("a form body".into(), form));
    for (what, out) in cases {
        let response = client.send(&out).await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
        assert_eq!(problem_code(&response), "method-override", "{what}");
    }
    assert_eq!(host.requests().len(), 1, "an override reached the host");
    gw.stop().await;
}

#[tokio::test]
async fn v1_accounts_are_taken_byte_for_byte() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let reason = InvalidId::Account.to_string();
    for account in LOOK_ALIKES {
        let path = format!("/v1/integrations/ghe/users/{account}/pat");
        let response = client.send(&gw.get(&path)).await.unwrap();
        assert_eq!(response.status(), 400, "GET {account}");
        assert_eq!(problem_code(&response), "bad-request", "GET {account}");
        assert!(detail(&response).contains(&reason), "GET {account}");
        let put = Outgoing {
            method: Method::PUT,
            url: gw.url(&path),
            body: Some(Bytes::from(format!(r#"{{"token":"{PAT_A}"}}"#))),
            ..Outgoing::default()
        };
        let response = client.send(&put).await.unwrap();
        assert_eq!(response.status(), 400, "PUT {account}");
        assert_eq!(problem_code(&response), "bad-request", "PUT {account}");
    }
    // The host was never asked whose token it is, and nothing was stored under any name.
    assert!(host.requests().is_empty(), "{:?}", host.requests());
    for name in ["Alice", "%41lice", "..", "."] {
        assert!(gw
            .runtime
            .vault()
            .user_pat_meta("ghe", name)
            .await
            .unwrap()
            .is_none());
    }
    gw.stop().await;
}

#[tokio::test]
async fn git_accounts_are_taken_byte_for_byte() {
    let (gw, host) = Gateway::start(Options {
        require_user_pat: false,
        ..Options::default()
    })
    .await;
    let client = gw.client();
    for account in ["%41lice", ".."] {
        let response = client.send(&gw.create_branch(Some(account))).await.unwrap();
        assert_eq!(response.status(), 400, "{account}");
        assert_eq!(problem_code(&response), "bad-request", "{account}");
        assert!(
            detail(&response).contains(&InvalidId::Account.to_string()),
            "{account}"
        );
    }
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_accounts_are_taken_byte_for_byte() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let socket = gw.runtime.config().admin.socket.clone();
    for account in ["%41lice", "%2e%2e", ".."] {
        for (method, body) in [
            (Method::GET, None),
            (Method::PUT, Some(format!(r#"{{"token":"{PAT_A}"}}"#))),
        ] {
            let mut admin = client::connect(&socket).await.unwrap().expect("a service");
            let uri = format!("/v1/integrations/ghe/users/{account}/pat");
            let body = body.map(|b| zeroize::Zeroizing::new(b.into_bytes()));
            match admin
                .call::<serde_json::Value>(method.clone(), &uri, body)
                .await
            {
                Err(AdminClientError::Refused { code, detail, .. }) => {
                    assert_eq!(code, "bad-request", "{method} {account}");
                    assert!(detail.contains(&InvalidId::Account.to_string()), "{detail}");
                }
                other => panic!("{method} {uri}: expected a refusal, got {other:?}"),
            }
        }
    }
    assert!(host.requests().is_empty());
    assert!(gw
        .runtime
        .vault()
        .user_pat_meta("ghe", "Alice")
        .await
        .unwrap()
        .is_none());
    gw.stop().await;
}

#[tokio::test]
async fn command_line_accounts_are_taken_byte_for_byte() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let config = gw.config_path.to_str().unwrap().to_string();
    for account in ["%41lice", ".."] {
        for command in ["status", "delete"] {
            let out = Command::new(env!("CARGO_BIN_EXE_patgate"))
                .args(["pat", command, "--integration", "ghe", "--account", account])
                .args(["--config", &config])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} {account}: {stderr}");
            assert!(
                stderr.contains(&InvalidId::Account.to_string()),
                "{command} {account}: {stderr}"
            );
        }
    }
    assert!(host.requests().is_empty());
    gw.stop().await;
}
