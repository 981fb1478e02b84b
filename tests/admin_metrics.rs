//! The admin listener (`/live`, `/ready`, `/metrics`), the metrics a Prometheus scrape sees,
//! the request id's way to the host and back (the JSON decision line and the audit file:
//! tests/decision_log.rs).

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use patgate::client::Outgoing;
use patgate::devpki::{ClientName, DevCa};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn content_type(response: &http::Response<Bytes>) -> &str {
    response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// The lines of a scrape that are samples of `name` (its exact name, any labels).
fn samples<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

fn assert_line(metrics: &str, line: &str) {
    assert!(
        metrics.lines().any(|l| l == line),
        "no line `{line}` in the scrape:\n{metrics}"
    );
}

/// Waits for a condition another task makes true (no clock involved).
async fn until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn the_admin_listener_serves_live_ready_and_metrics_and_nothing_else() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    assert!(gw.admin.ip().is_loopback());

    let live = gw.admin_request(Method::GET, "/live").await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(content_type(&live), "text/plain; charset=utf-8");
    let ready = gw.admin_request(Method::GET, "/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);

    let metrics = gw.admin_request(Method::GET, "/metrics").await;
    assert_eq!(metrics.status(), StatusCode::OK);
    assert_eq!(content_type(&metrics), OPENMETRICS);
    let text = String::from_utf8(metrics.body().to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_line(&text, "patgate_ready 1");
    assert_line(&text, "# TYPE patgate_ready gauge");
    assert_line(
        &text,
        r#"patgate_vault_records{kind="integration-secret"} 1"#,
    );
    assert_line(&text, r#"patgate_vault_records{kind="user-pat"} 0"#);
    // A family appears with its first sample: no request has been answered yet.
    assert!(!text.contains("patgate_requests_total"), "{text}");
    // Connections by listener are there from the start (the admin listener's count this
    // request's, and maybe the earlier ones' while they close).
    assert_line(&text, r#"patgate_connections_open{listener="api"} 0"#);
    assert!(
        text.contains(r#"patgate_connections_open{listener="admin"} "#),
        "{text}"
    );

    // HEAD: GET's head, no body.
    let head = gw.admin_request(Method::HEAD, "/metrics").await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(content_type(&head), OPENMETRICS);
    assert!(head.body().is_empty());

    for path in ["/", "/metricsx", "/v1/integrations", "/live/x"] {
        let response = gw.admin_request(Method::GET, path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let response = gw.admin_request(method.clone(), "/ready").await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(
            response.headers().get("allow").unwrap().to_str().unwrap(),
            "GET, HEAD"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn ready_turns_503_when_shutdown_begins_while_live_answers_through_the_drain() {
    // A host that never answers keeps one request in flight through the drain.
    let ca = Arc::new(DevCa::generate("drain CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Silent).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let opts = Options {
        request_timeout_ms: 60_000,
        clock: Some(patgate::clock::ManualClock::new()),
        ..Options::default()
    };
    let mut gw = Setup::with_ca(dir, ca, &host, &opts).await.start().await;
    let admin = gw.admin;
    assert_eq!(
        gw.admin_request(Method::GET, "/ready").await.status(),
        StatusCode::OK
    );

    let client = gw.client();
    let read = gw.get("/git/ghe/api/v3/repos/acme/api");
    let in_flight = tokio::spawn(async move { client.send(&read).await });
    until(|| host.requests().len() == 1).await;

    gw.begin_stop();
    until(|| gw.runtime.metrics().ready.get() == 0).await;
    let ready = gw.admin_request(Method::GET, "/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        gw.admin_request(Method::GET, "/live").await.status(),
        StatusCode::OK
    );
    assert_line(&gw.metrics().await, "patgate_ready 0");
    assert!(
        !in_flight.is_finished(),
        "the request is still being drained"
    );

    // Once the server has stopped (after the grace period, 2 s, which the gateway's clock
    // passes in one step), the admin listener is gone too.
    let clock = gw.manual_clock.clone().unwrap();
    while_time_moves(&clock, Duration::from_secs(2), gw.stop()).await;
    in_flight.abort();
    let refused = admin_request(admin, Method::GET, "/live").await;
    assert!(
        refused.is_err(),
        "the admin listener still answers: {refused:?}"
    );
}

#[tokio::test]
async fn requests_latency_vault_records_and_certificate_expiry_are_exported() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let send = |out: Outgoing| {
        let client = client.clone();
        async move { client.send(&out).await.unwrap() }
    };
    assert_eq!(send(gw.put_pat(ACCOUNT_A, PAT_A)).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(
            send(gw.get("/git/ghe/api/v3/repos/acme/api"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(send(gw.create_branch(Some(ACCOUNT_A))).await.status(), 201);
    assert_eq!(send(gw.create_branch(Some(ACCOUNT_B))).await.status(), 403);
    // Integration ids from the URL that are not configured never become label values.
    assert_eq!(send(gw.get("/git/no-such-id/x")).await.status(), 404);
    let unknown_api = Outgoing {
        method: Method::GET,
        url: gw.url(&format!("/v1/integrations/other-id/users/{ACCOUNT_A}/pat")),
        ..Outgoing::default()
    };
    assert_eq!(send(unknown_api).await.status(), 404);

    let before = patgate::clock::unix_now() as i64;
    let metrics = gw.metrics().await;
    let after = patgate::clock::unix_now() as i64;
    for line in [
        r#"patgate_requests_total{integration="ghe",operation="pat-api",credential="-",status="200"} 1"#,
        r#"patgate_requests_total{integration="ghe",operation="read",credential="integration",status="200"} 2"#,
        r#"patgate_requests_total{integration="ghe",operation="create-branch",credential="user",status="201"} 1"#,
        r#"patgate_requests_total{integration="ghe",operation="create-branch",credential="-",status="403"} 1"#,
        r#"patgate_requests_total{integration="-",operation="-",credential="-",status="404"} 1"#,
        r#"patgate_requests_total{integration="-",operation="pat-api",credential="-",status="404"} 1"#,
        r#"patgate_request_duration_seconds_count{integration="ghe",operation="read"} 2"#,
        r#"patgate_request_duration_seconds_count{integration="ghe",operation="create-branch"} 2"#,
        r#"patgate_request_duration_seconds_bucket{le="+Inf",integration="ghe",operation="read"} 2"#,
        r#"patgate_vault_records{kind="integration-secret"} 1"#,
        r#"patgate_vault_records{kind="user-pat"} 1"#,
    ] {
        assert_line(&metrics, line);
    }
    assert_line(&metrics, "# TYPE patgate_requests counter");
    assert_line(
        &metrics,
        "# TYPE patgate_request_duration_seconds histogram",
    );
    assert_eq!(samples(&metrics, "patgate_requests_total").len(), 6);
    assert!(samples(&metrics, "patgate_upstream_errors_total").is_empty());
    for unbounded in ["no-such-id", "other-id", ACCOUNT_A, ACCOUNT_B] {
        assert!(
            !metrics.contains(unbounded),
            "`{unbounded}` is in the scrape"
        );
    }

    // Seconds until the api certificate's notAfter, counted at the scrape.
    let pem = std::fs::read(gw.path("server.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let not_after = pem.parse_x509().unwrap().validity().not_after.timestamp();
    let expiry = samples(&metrics, "patgate_server_certificate_expiry_seconds");
    assert_eq!(expiry.len(), 1, "{metrics}");
    let seconds: i64 = expiry[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (not_after - after..=not_after - before).contains(&seconds),
        "{seconds} is not notAfter ({not_after}) minus the scrape time"
    );
    assert!(seconds > 0);

    // Records are counted anew at each scrape.
    gw.store_pat(ACCOUNT_B, PAT_B).await;
    assert_line(
        &gw.metrics().await,
        r#"patgate_vault_records{kind="user-pat"} 2"#,
    );
    assert_eq!(send(gw.delete_pat(ACCOUNT_A)).await.status(), 200);
    assert_line(
        &gw.metrics().await,
        r#"patgate_vault_records{kind="user-pat"} 1"#,
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_errors_are_counted_by_kind() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (gw, _host) = Gateway::start(Options {
        base_url: Some(format!("https://localhost:{}", closed.port())),
        ..Options::default()
    })
    .await;
    let response = gw.client().send(&gw.get("/git/ghe/x")).await.unwrap();
    assert_eq!(problem_code(&response), "upstream-unreachable");
    let metrics = gw.metrics().await;
    assert_line(
        &metrics,
        r#"patgate_upstream_errors_total{integration="ghe",kind="upstream-unreachable"} 1"#,
    );
    assert_line(
        &metrics,
        r#"patgate_requests_total{integration="ghe",operation="read",credential="integration",status="502"} 1"#,
    );
    gw.stop().await;

    let ca = Arc::new(DevCa::generate("silent CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Silent).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let opts = Options {
        request_timeout_ms: 300,
        clock: Some(patgate::clock::ManualClock::new()),
        ..Options::default()
    };
    let gw = Setup::with_ca(dir, ca, &host, &opts).await.start().await;
    let response = gw
        .send_until_timeout(&host, &gw.get("/git/ghe/x"), Duration::from_millis(300))
        .await;
    assert_eq!(problem_code(&response), "upstream-timeout");
    let metrics = gw.metrics().await;
    assert_line(
        &metrics,
        r#"patgate_upstream_errors_total{integration="ghe",kind="upstream-timeout"} 1"#,
    );
    assert_eq!(samples(&metrics, "patgate_upstream_errors_total").len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn the_request_id_goes_to_the_host_and_back() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let mut read = gw.get("/git/ghe/api/v3/repos/acme/api");
    read.headers = vec![("x-request-id".into(), "jira-7f3a:42".into())];
    let response = client.send(&read).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "jira-7f3a:42");
    assert_eq!(host.last().headers["x-request-id"], "jira-7f3a:42");

    // An id that could break a log line or a header is replaced by a generated one, which
    // the host and the app both see.
    for insane in ["two words", "a\"b", &"x".repeat(129)] {
        read.headers = vec![("x-request-id".into(), insane.to_string())];
        let response = client.send(&read).await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(id, insane);
        assert_eq!(id.len(), 24);
        assert_eq!(host.last().headers["x-request-id"], id.as_str());
    }

    // Refusals carry one too (nothing reached the host).
    let seen = host.requests().len();
    let response = client
        .send(&gw.create_branch(Some(ACCOUNT_B)))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-request-id"].len(), 24);
    assert_eq!(host.requests().len(), seen);
    gw.stop().await;
}

/// The scrape, read by the Prometheus project's own strict OpenMetrics parser (PyPI
/// prometheus-client; `tests/run.sh` installs it): what a Prometheus server will make of it.
#[tokio::test]
async fn the_scrape_parses_with_the_reference_openmetrics_parser() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let read = gw.get("/git/ghe/api/v3/repos/acme/api");
    assert_eq!(gw.client().send(&read).await.unwrap().status(), 200);
    let metrics = gw.metrics().await;
    gw.stop().await;

    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([family.name, family.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let interpreter = std::env::var("PATGATE_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&interpreter)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{interpreter}: {e} (run the tests with bash tests/run.sh)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{metrics}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, String, String, serde_json::Value, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        samples
            .iter()
            .find(|s| s.2 == name)
            .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
    };
    let requests = find("patgate_requests_total");
    assert_eq!(
        (requests.0.as_str(), requests.1.as_str()),
        ("patgate_requests", "counter")
    );
    assert_eq!(
        requests.3,
        serde_json::json!({"integration": "ghe", "operation": "read", "credential": "integration", "status": "200"})
    );
    assert_eq!(requests.4, 1.0);
    assert_eq!(
        find("patgate_request_duration_seconds_count").1,
        "histogram"
    );
    assert_eq!(find("patgate_ready").4, 1.0);
    assert_eq!(find("patgate_vault_records").1, "gauge");

    // The build: its version, and a commit (this test runs from a git checkout).
    let build = find("patgate_build_info");
    assert_eq!(
        (build.0.as_str(), build.1.as_str()),
        ("patgate_build", "info")
    );
    assert_eq!(build.3["version"], env!("CARGO_PKG_VERSION"));
    let commit = build.3["commit"].as_str().unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success());
    // The binary is built from HEAD (a later commit would have rebuilt it).
    assert_eq!(commit, String::from_utf8_lossy(&head.stdout).trim());
    assert_eq!(build.4, 1.0);

    // The standard process metrics, read from /proc/self: this test process is the server.
    let cpu = find("process_cpu_seconds_total");
    assert_eq!(
        (cpu.0.as_str(), cpu.1.as_str()),
        ("process_cpu_seconds", "counter")
    );
    assert!(cpu.4 > 0.0, "{cpu:?}");
    for gauge in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let sample = find(gauge);
        assert_eq!(sample.1, "gauge", "{sample:?}");
        assert!(sample.4 > 0.0, "{sample:?}");
    }
    // The RSS is the kernel's (VmRSS in /proc/self/status is the same count, in KiB).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let rss = find("process_resident_memory_bytes").4;
    // Both are this live process's, read a moment apart: within a factor of two.
    assert!(
        rss > vm_rss_kib * 1024.0 / 2.0 && rss < vm_rss_kib * 1024.0 * 2.0,
        "{rss} vs VmRSS {vm_rss_kib} kB"
    );
    let max_fds = find("process_max_fds").4;
    assert!(find("process_open_fds").4 <= max_fds);
    // Started before now, and not before the machine booted (this year or later).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = find("process_start_time_seconds").4;
    assert!(started <= now && started > 1.7e9, "{started}");
}

/// Refused TLS handshakes on the api listener, counted by a fixed reason: a certificate
/// from another CA, none at all, bytes that are not TLS, a client that hangs up mid-way, and
/// a certificate that verifies but is not on `api.allowed_client_sans`.
#[tokio::test]
async fn refused_tls_handshakes_are_counted_by_reason() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (gw, host) = Gateway::start(Options {
        allowed_client_sans: vec!["dns:jira-app.test".into()],
        ..Options::default()
    })
    .await;
    let refusal = |reason: &str| {
        format!(r#"patgate_tls_handshake_refusals_total{{listener="api",reason="{reason}"}}"#)
    };
    assert!(!gw
        .metrics()
        .await
        .contains("patgate_tls_handshake_refusals_total{"));

    let other_ca = DevCa::generate("not the client CA").unwrap();
    let intruder = other_ca
        .issue_client("intruder", &[ClientName::Dns("jira-app.test")])
        .unwrap();
    let read = gw.get("/git/ghe/api/v3/user");
    assert!(gw
        .client_with_certificate("intruder", &intruder)
        .send(&read)
        .await
        .is_err());

    let roots = patgate::tls::root_store(&gw.path("ca.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let no_certificate = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        tls.read_to_end(&mut Vec::new()).await
    };
    assert!(no_certificate.await.is_err());

    // Plain HTTP on the TLS port.
    let mut plain = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let _ = plain.read_to_end(&mut Vec::new()).await;
    // Connected, then gone before a ClientHello.
    drop(tokio::net::TcpStream::connect(gw.addr).await.unwrap());

    let other_name = gw
        .ca
        .issue_client("other app", &[ClientName::Dns("other-app.test")])
        .unwrap();
    let response = gw
        .client_with_certificate("other", &other_name)
        .send(&read)
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // The server counts each after the client saw its end: scrape until all are there (a
    // hang guard, not a timing assertion).
    let expected = [
        "unknown-ca",
        "no-certificate",
        "protocol",
        "closed",
        "certificate-not-allowed",
    ];
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let metrics = gw.metrics().await;
            if expected
                .iter()
                .all(|r| metrics.lines().any(|l| l == format!("{} 1", refusal(r))))
            {
                return metrics;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let Ok(metrics) = counted else {
        panic!("not every reason counted once:\n{}", gw.metrics().await);
    };
    // Nothing else was counted, and no address or certificate name is in a label.
    assert_eq!(
        samples(&metrics, "patgate_tls_handshake_refusals_total").len(),
        expected.len(),
        "{metrics}"
    );
    assert!(!metrics.contains("other-app.test") && !metrics.contains("intruder"));
    assert_line(&metrics, "# TYPE patgate_tls_handshake_refusals counter");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

/// `patgate_integration_secret_missing` says which integration has no secret in the vault:
/// 0 while it is stored, 1 once it is gone (and its requests answer 503).
#[tokio::test]
async fn an_integration_without_its_secret_shows_in_the_metrics() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let line = |n: u8| format!(r#"patgate_integration_secret_missing{{integration="ghe"}} {n}"#);
    assert_line(&gw.metrics().await, &line(0));
    assert!(gw
        .runtime
        .vault()
        .delete_integration_secret("ghe")
        .await
        .unwrap());
    assert_line(&gw.metrics().await, &line(1));
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn refused_tls_handshakes_on_the_connect_listener_are_counted_too() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (gw, _host) = Gateway::start(Options {
        connect_ttl_seconds: Some(600),
        ..Options::default()
    })
    .await;
    // The connect listener's port, from a link the app asks for.
    let asked = gw.client().send(&gw.connect_link(ACCOUNT_A)).await.unwrap();
    let link: serde_json::Value = serde_json::from_slice(asked.body()).unwrap();
    let url: http::Uri = link["url"].as_str().unwrap().parse().unwrap();
    let connect = std::net::SocketAddr::from(([127, 0, 0, 1], url.port_u16().unwrap()));
    // Plain HTTP on the connect listener's TLS port.
    let mut plain = tokio::net::TcpStream::connect(connect).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let _ = plain.read_to_end(&mut Vec::new()).await;
    let line = r#"patgate_tls_handshake_refusals_total{listener="connect",reason="protocol"} 1"#;
    // Counted after the client saw its end: scrape until it is there (a hang guard).
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if gw.metrics().await.lines().any(|l| l == line) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(counted.is_ok(), "{line} missing:\n{}", gw.metrics().await);
    gw.stop().await;
}
