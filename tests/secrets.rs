//! No secret in any log line, at trace level, for every code path a request can take; nor in
//! error bodies or in the `Debug` of the running state.
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
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let (gw, host) = Gateway::start(Options {
        log_level: "trace".into(),
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
    for out in [
        put(PAT_A),
        put("ghp_RejectedTokenDoNotLeak00000000000000"),
        gw.get("/git/ghe/api/v3/repos/acme/api"),
        gw.create_branch(Some(ACCOUNT_A)),
        gw.create_branch(Some(ACCOUNT_B)),
        gw.create_branch(None),
        gw.get("/git/nope/x"),
    ] {
        let response = send(out).await;
        bodies.push(String::from_utf8_lossy(response.body()).into_owned());
    }
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
        "ghp_RejectedTokenDoNotLeak00000000000000",
        INTEGRATION_TOKEN,
        master_key.trim(),
        hmac.trim(),
    ];
    let pem_body: String = signing_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for secret in secrets.iter().copied().chain([pem_body.as_str()]) {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(
            !state.contains(secret),
            "a secret is in the runtime's Debug"
        );
        for body in &bodies {
            assert!(!body.contains(secret), "a secret is in an answer: {body}");
        }
    }
}
