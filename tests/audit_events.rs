//! Who acted, in the audit stream of the `/v1` API: every event names the app's client
//! identity and the key that signed the request, and a connect link is audited whether the
//! app asked for it or found it in a `user-pat-required` refusal. (The command line's actor,
//! its OS user: tests/cli.rs and tests/admin_socket.rs.)

mod common;

use common::*;

// The logger this test sets is the process's (the gateway serves on threads of its own):
// the test is alone in its binary, so no other test logs into it.
#[tokio::test]
async fn api_audit_events_name_the_client_and_key_and_every_link_issued() {
    let (gw, host) = Gateway::start(Options {
        connect_ttl_seconds: Some(600),
        ..Options::default()
    })
    .await;
    let captured = common::logs::Captured::default();
    let subscriber = patgate::telemetry::subscriber(
        &patgate::config::LogSettings {
            level: "warn,patgate::audit=info".into(),
            format: patgate::config::LogFormat::Json,
            audit_file: None,
        },
        captured.writer(),
        false,
    )
    .unwrap();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let client = gw.client();

    // A user without a PAT: the 403 carries a setup link, and that link is audited.
    let refused = client
        .send(&gw.create_branch(Some(ACCOUNT_B)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let problem: serde_json::Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(problem["code"], "user-pat-required");
    assert!(problem["setup_url"].is_string(), "{problem}");
    // The app asks for one itself.
    let asked = client.send(&gw.connect_link(ACCOUNT_A)).await.unwrap();
    assert_eq!(asked.status(), 200);
    assert_eq!(
        client
            .send(&gw.put_pat(ACCOUNT_A, PAT_A))
            .await
            .unwrap()
            .status(),
        200
    );
    // The host refuses A's PAT on an action, then accepts it again.
    host.answer_next(http::StatusCode::UNAUTHORIZED, &[]);
    let refused = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let accepted = client
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
    gw.stop().await;

    let events: Vec<serde_json::Value> = captured
        .json_lines()
        .into_iter()
        .filter(|l| l["target"] == "patgate::audit")
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "connect-link-issued",
            "connect-link-issued",
            "pat-stored",
            "pat-refused-by-host",
            "connect-link-issued",
            "pat-accepted-again"
        ],
        "{events:#?}"
    );
    // What the host did to a stored PAT is the host's act, not the app's.
    for event in [&events[3], &events[5]] {
        assert_eq!(event["via"], "host", "{event}");
        assert_eq!(event["actor"], "host", "{event}");
        assert_eq!(event["account"], ACCOUNT_A, "{event}");
    }
    assert_eq!(events[3]["host_status"], 401);
    assert_eq!(events[4]["issued_in"], "user-pat-refused");
    for event in events[..3].iter().chain([&events[4]]) {
        assert_eq!(event["via"], "api", "{event}");
        assert_eq!(event["auth"], "client-certificate", "{event}");
        // The client certificate's subject, as the decision line's `client` names it.
        assert!(
            event["actor"].as_str().unwrap().contains("jira-app test"),
            "{event}"
        );
        assert_eq!(event["key_id"], APP_KEYID, "{event}");
    }
    assert_eq!(events[0]["issued_in"], "user-pat-required");
    assert_eq!(events[0]["account"], ACCOUNT_B);
    assert!(events[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[1]["issued_in"], "connect-link-request");
    assert_eq!(events[1]["account"], ACCOUNT_A);
    assert_eq!(events[2]["account"], ACCOUNT_A);
    assert!(!captured.text().contains(PAT_A));
}
