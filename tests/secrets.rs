//! No secret in any log line, at trace level, for every code path a request can take, in
//! both log formats and the audit file; nor in error bodies, the `/metrics` scrape, or the
//! `Debug` of the running state.
//!
//! This file is its own test binary because it installs the process-wide log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_and_answers_hold_no_secret() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // patgate's own logger, twice under one subscriber: text, and JSON with the audit file.
    let captured = Captured::default();
    let captured_json = Captured::default();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.jsonl");
    let settings = |format| patgate::config::LogSettings {
        level: "trace".into(),
        format,
        audit_file: None,
    };
    let (writer, json_writer) = (captured.clone(), captured_json.clone());
    let text = patgate::telemetry::layer(
        &settings(patgate::config::LogFormat::Text),
        move || writer.clone(),
        false,
    )
    .unwrap();
    let json = patgate::telemetry::layer(
        &patgate::config::LogSettings {
            audit_file: Some(audit_file.clone()),
            ..settings(patgate::config::LogFormat::Json)
        },
        move || json_writer.clone(),
        false,
    )
    .unwrap();
    tracing_subscriber::registry().with(vec![text, json]).init();

    let (gw, host) = Gateway::start(Options {
        log_level: "trace".into(),
        connect_ttl_seconds: Some(900),
        ..Options::default()
    })
    .await;
    let client = gw.client();
    let mut bodies = Vec::new();
    let send = |out: Outgoing| {
        let client = client.clone();
        async move { client.send(&out).await.unwrap() }
    };
    // A PAT stored through the API, a refused one, reads, actions with both credentials,
    // refusals of every kind.
    let put = |token: &str| Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
        ..Outgoing::default()
    };
    let delete = Outgoing {
        method: Method::DELETE,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_B}/pat")),
        ..Outgoing::default()
    };
    for out in [
        put(PAT_A),
        put("ghp_RejectedTokenDoNotLeak00000000000000"),
        Outgoing {
            method: Method::POST,
            url: gw.url(&format!(
                "/v1/integrations/ghe/users/{ACCOUNT_A}/connect-link"
            )),
            ..Outgoing::default()
        },
        gw.get("/git/ghe/api/v3/repos/acme/api"),
        gw.create_branch(Some(ACCOUNT_A)),
        gw.create_branch(Some(ACCOUNT_B)),
        gw.create_branch(None),
        gw.get("/git/nope/x"),
    ] {
        let response = send(out).await;
        bodies.push(String::from_utf8_lossy(response.body()).into_owned());
    }
    // A connect link works like a password until it is used: it is an answer, never a log.
    let link: serde_json::Value = serde_json::from_str(&bodies[2]).unwrap();
    let link = link["url"].as_str().unwrap().to_string();
    let link_token = link.rsplit('/').next().unwrap().to_string();
    assert!(link_token.len() > 20, "{link}");
    gw.store_pat(ACCOUNT_B, PAT_B).await;
    assert_eq!(send(delete).await.status(), 200);
    let metrics = gw.metrics().await;
    assert!(host
        .requests()
        .iter()
        .any(|r| r.authorization() == Some(&*format!("Bearer {PAT_A}"))));
    let state = format!("{:?}", gw.runtime);
    let master_key = std::fs::read_to_string(gw.path("master-key")).unwrap();
    let hmac = std::fs::read_to_string(gw.path(&format!("{HMAC_KEYID}.hmac"))).unwrap();
    let signing_key = std::fs::read_to_string(gw.path(&format!("{APP_KEYID}.pem"))).unwrap();
    gw.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let json_logs = String::from_utf8(captured_json.0.lock().unwrap().clone()).unwrap();
    for line in json_logs.lines() {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a JSON log line does not parse ({e}): {line}"));
    }
    assert!(json_logs.contains(r#""target":"patgate::access""#));
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    for event in [
        "pat-stored",
        "pat-refused",
        "pat-removed",
        "connect-link-issued",
    ] {
        assert!(
            audit.contains(&format!(r#""event":"{event}""#)),
            "no {event} in the audit file:\n{audit}"
        );
    }
    assert!(metrics.contains("patgate_requests_total"), "{metrics}");
    assert!(
        logs.contains("patgate::access"),
        "the capture saw no access line:\n{logs}"
    );
    assert!(
        logs.len() > 10_000,
        "trace level should be verbose; got {} bytes",
        logs.len()
    );
    let secrets = [
        PAT_A,
        PAT_B,
        "ghp_RejectedTokenDoNotLeak00000000000000",
        INTEGRATION_TOKEN,
        master_key.trim(),
        hmac.trim(),
    ];
    let pem_body: String = signing_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for secret in secrets
        .iter()
        .copied()
        .chain([pem_body.as_str(), link_token.as_str()])
    {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!json_logs.contains(secret), "a secret is in the JSON logs");
        assert!(!audit.contains(secret), "a secret is in the audit file");
        assert!(!metrics.contains(secret), "a secret is in /metrics");
        assert!(
            !state.contains(secret),
            "a secret is in the runtime's Debug"
        );
        for body in &bodies {
            if secret != link_token {
                assert!(!body.contains(secret), "a secret is in an answer: {body}");
            }
        }
    }
}
