//! The JSON decision line (`patgate::access`) and the audit file, as `patgate run` writes
//! them.

mod common;

use common::*;

// The logger this test sets is the process's (the gateway serves on threads of its own):
// the test is alone in its binary, so no other test logs into it.
#[tokio::test]
async fn json_decision_lines_and_the_audit_file() {
    let (gw, host) = Gateway::start(Options {
        extra_toml: "format = \"json\"\naudit_file = \"audit/patgate-audit.jsonl\"\n".into(),
        ..Options::default()
    })
    .await;
    // The logger `patgate run` would build from this config, writing to a buffer.
    let config = patgate::config::Config::load(&gw.config_path).unwrap();
    let audit_path = gw.path("audit/patgate-audit.jsonl");
    assert_eq!(config.log.audit_file.as_deref(), Some(audit_path.as_path()));
    std::fs::create_dir(gw.path("audit")).unwrap();
    let captured = common::logs::Captured::default();
    let subscriber = patgate::telemetry::subscriber(&config.log, captured.writer(), false).unwrap();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let client = gw.client();
    let mut read = gw.get("/git/ghe/api/v3/repos/acme/api");
    read.headers = vec![("x-request-id".into(), "read-1".into())];
    assert_eq!(client.send(&read).await.unwrap().status(), 200);
    let mut refused = gw.create_branch(Some(ACCOUNT_B));
    refused.headers = vec![("x-request-id".into(), "refused-1".into())];
    assert_eq!(client.send(&refused).await.unwrap().status(), 403);
    assert_eq!(
        client
            .send(&gw.put_pat(ACCOUNT_A, PAT_A))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .send(&gw.delete_pat(ACCOUNT_A))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        host.requests().len(),
        2,
        "the read and the PAT's validation"
    );

    let lines = captured.json_lines();
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "patgate::access" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id} in {lines:#?}"))
            .clone()
    };
    let line = access("read-1");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request");
    assert!(
        line["client"].as_str().unwrap().contains("jira-app test"),
        "{line}"
    );
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/git/ghe/api/v3/repos/acme/api");
    assert_eq!(line["integration"], "ghe");
    assert_eq!(line["account"], "-");
    assert_eq!(line["operation"], "read");
    assert_eq!(line["credential"], "integration");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream_status"], 200);
    assert_eq!(line["code"], "-");
    assert!(line["latency_us"].is_u64(), "{line}");

    // Refused by patgate: its own status and code, and no host status.
    let line = access("refused-1");
    assert_eq!(line["account"], ACCOUNT_B);
    assert_eq!(line["operation"], "create-branch");
    assert_eq!(line["credential"], "-");
    assert_eq!(line["status"], 403);
    assert_eq!(line["code"], "user-pat-required");
    assert!(line.get("upstream_status").is_none(), "{line}");

    // The audit stream: in the log, and appended to its file.
    let audit_file = std::fs::read_to_string(&audit_path).unwrap();
    let audit: Vec<serde_json::Value> = audit_file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = audit.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["pat-stored", "pat-removed"], "{audit_file}");
    for event in &audit {
        assert_eq!(event["target"], "patgate::audit");
        assert_eq!(event["via"], "api");
        assert_eq!(event["integration"], "ghe");
        assert_eq!(event["account"], ACCOUNT_A);
        assert!(event["timestamp"].is_string());
    }
    assert_eq!(audit[0]["host_login"], "alice");
    assert!(
        !audit_file.contains(PAT_A),
        "the token is in the audit file"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["target"] == "patgate::audit")
            .count(),
        2
    );
    gw.stop().await;
}
