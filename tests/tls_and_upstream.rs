//! The api listener's client-certificate checks, and the host side's failures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use patgate::devpki::{ClientName, DevCa};

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let other_ca = DevCa::generate("not the client CA").unwrap();
    let cert = other_ca
        .issue_client("intruder", &[ClientName::Dns("jira-app.test")])
        .unwrap();
    let client = gw.client_with_certificate("intruder", &cert);
    let err = client
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("alert")
            || text.contains("UnknownCA")
            || text.contains("BadCertificate"),
        "{text}"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_fails_the_handshake() {
    let (gw, host) = Gateway::start(Options::default()).await;
    // A raw TLS client that offers no certificate.
    let roots = patgate::tls::root_store(&gw.path("ca.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let outcome = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = connector.connect(name, tcp).await?;
        // TLS 1.3 lets the client finish first; the server's alert arrives on the next read.
        tls.write_all(b"GET /git/ghe/api/v3/user HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    }
    .await;
    let err = outcome.expect_err("the server answered a client without a certificate");
    assert!(
        err.to_string().contains("CertificateRequired")
            || err.to_string().to_lowercase().contains("alert"),
        "{err}"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_san_not_on_the_allow_list_gets_client_not_allowed() {
    let (gw, host) = Gateway::start(Options {
        allowed_client_sans: vec!["dns:jira-app.test".into()],
        ..Options::default()
    })
    .await;
    // The harness's client certificate carries dns:jira-app.test: allowed.
    assert_eq!(
        gw.client()
            .send(&gw.get("/git/ghe/api/v3/user"))
            .await
            .unwrap()
            .status(),
        200
    );
    // A certificate from the right CA with another name: refused.
    let cert = gw
        .ca
        .issue_client("other app", &[ClientName::Dns("other-app.test")])
        .unwrap();
    let client = gw.client_with_certificate("other", &cert);
    let response = client.send(&gw.get("/git/ghe/api/v3/user")).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(problem_code(&response), "client-not-allowed");
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn uri_sans_can_be_allow_listed() {
    let (gw, _host) = Gateway::start(Options {
        allowed_client_sans: vec!["uri:spiffe://acme/jira".into()],
        ..Options::default()
    })
    .await;
    assert_eq!(
        gw.client()
            .send(&gw.get("/git/ghe/api/v3/user"))
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_host_that_is_down_gives_502() {
    // A port that was just free: nothing listens on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (gw, _host) = Gateway::start(Options {
        base_url: Some(format!("https://localhost:{}", closed.port())),
        ..Options::default()
    })
    .await;
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(problem_code(&response), "upstream-unreachable");
    gw.stop().await;
}

#[tokio::test]
async fn a_silent_host_gives_504() {
    let ca = Arc::new(DevCa::generate("silent CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Silent).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let setup = Setup::with_ca(
        dir,
        ca,
        &host,
        &Options {
            request_timeout_ms: 300,
            clock: Some(patgate::clock::ManualClock::new()),
            ..Options::default()
        },
    )
    .await;
    let gw = setup.start().await;
    let response = gw
        .send_until_timeout(
            &host,
            &gw.get("/git/ghe/api/v3/user"),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(response.status(), 504);
    assert_eq!(problem_code(&response), "upstream-timeout");
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_host_with_an_untrusted_certificate_gives_502_upstream_tls() {
    // The host's certificate comes from a CA patgate does not trust for it.
    let host_ca = DevCa::generate("unrelated host CA").unwrap();
    let host = RecordingHost::start(&host_ca, HostMode::Normal).await;
    let (gw, _unused) = Gateway::start(Options {
        base_url: Some(host.base_url()),
        ..Options::default()
    })
    .await;
    let response = gw
        .client()
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        problem_code(&response),
        "upstream-tls",
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert!(host.requests().is_empty());
    // No credential in the error.
    assert!(!String::from_utf8_lossy(response.body()).contains(INTEGRATION_TOKEN));
    gw.stop().await;
}
