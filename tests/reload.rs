//! Reloading while serving: new certificates, client CA and CRLs apply to new handshakes,
//! new app keys to new requests; a connection opened before keeps working; a bad file is
//! refused and the old configuration keeps serving; what lives for the process (replay
//! cache, one-time links) survives.
//!
//! The reload is the one `patgate run` does on SIGHUP (`ServerHandle::reload`); the signal
//! itself is driven in tests/systemd_notify.rs.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use patgate::client::Outgoing;
use patgate::devpki::ClientName;
use rustls::pki_types::{CertificateDer, ServerName};

// ---- one TLS connection, held open across a reload -----------------------------------------

/// One mutual-TLS connection to the gateway, so a test can keep it open across a reload
/// and see which server certificate it was given.
struct OneConnection {
    sender: SendRequest<Full<Bytes>>,
    /// The connection's own task: it ends with the TLS error when the server refuses.
    connection: Option<tokio::task::JoinHandle<Result<(), hyper::Error>>>,
    server_cert: CertificateDer<'static>,
}

impl OneConnection {
    /// Connects with the client certificate and key in `client_pem`.
    async fn open(gw: &Gateway, client_pem: &Path) -> OneConnection {
        let config = rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(patgate::tls::root_store(&gw.path("ca.pem")).unwrap())
            .with_client_auth_cert(
                patgate::tls::load_certs(client_pem).unwrap(),
                patgate::tls::load_private_key(client_pem).unwrap(),
            )
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        OneConnection {
            sender,
            connection: Some(tokio::spawn(connection)),
            server_cert,
        }
    }

    /// Sends one signed request on this connection: the status, or why it failed.
    async fn send(&mut self, gw: &Gateway, out: &Outgoing) -> Result<StatusCode, String> {
        let request = signed(&gw.client(), out);
        self.send_signed(gw, request).await
    }

    async fn send_signed(
        &mut self,
        gw: &Gateway,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<StatusCode, String> {
        // Origin form and a Host header, as a pooled client sends them.
        let path = request.uri().path_and_query().unwrap().clone();
        *request.uri_mut() = http::Uri::from(path);
        request.headers_mut().insert(
            http::header::HOST,
            format!("localhost:{}", gw.addr.port()).parse().unwrap(),
        );
        let sent = match self.sender.ready().await {
            Ok(()) => self.sender.send_request(request).await,
            Err(err) => Err(err),
        };
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                // Why the connection ended, when it did.
                let mut why = patgate::client::error_chain(&err);
                if let Some(Ok(Err(ended))) = match self.connection.take() {
                    Some(task) => Some(task.await),
                    None => None,
                } {
                    why = format!(
                        "{why}; connection: {}",
                        patgate::client::error_chain(&ended)
                    );
                }
                return Err(why);
            }
        };
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

fn read(gw: &Gateway) -> Outgoing {
    gw.get("/git/ghe/api/v3/repos/acme/api")
}

/// Names the CRL file under `[api]`.
fn add_crl(config_path: &Path, crl_file: &str) {
    edit_config(
        config_path,
        "client_ca = \"ca.pem\"\n",
        &format!("client_ca = \"ca.pem\"\ncrl = [\"{crl_file}\"]\n"),
    );
}

/// A second client certificate from the gateway's CA, written as `name`; answers its PEM.
fn issue_client(dir: &Path, ca: &patgate::devpki::DevCa, name: &str) -> String {
    let issued = ca
        .issue_client("jira-app other", &[ClientName::Dns("jira-app.test")])
        .unwrap();
    write_private(dir, name, &format!("{}{}", issued.cert_pem, issued.key_pem));
    issued.cert_pem
}

fn reloads(gw: &Gateway, result: &str) -> String {
    let text = gw.runtime.metrics().encode();
    text.lines()
        .find(|l| l.starts_with(&format!("patgate_reloads_total{{result=\"{result}\"}}")))
        .unwrap_or_default()
        .to_string()
}

const REVOKED: &str = "CertificateRevoked";

// ---- CRL --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused_at_the_handshake() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("crl CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca.clone(),
        &host,
        &Options::default(),
    )
    .await;
    let dir = setup.dir.path();
    let revoked = issue_client(dir, &ca, "revoked.pem");
    write(dir, "crl.pem", &ca.crl_pem(&[&revoked], 1).unwrap());
    add_crl(&setup.config_path, "crl.pem");
    let gw = setup.start().await;

    let mut good = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(good.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    let mut bad = OneConnection::open(&gw, &gw.path("revoked.pem")).await;
    let err = bad.send(&gw, &read(&gw)).await.unwrap_err();
    assert!(err.contains(REVOKED), "{err}");
    // Refused before any request: the host saw only the good client's.
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_in_der_form_is_enforced_too() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("crl CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca.clone(),
        &host,
        &Options::default(),
    )
    .await;
    let dir = setup.dir.path();
    let revoked = issue_client(dir, &ca, "revoked.pem");
    let pem = ca.crl_pem(&[&revoked], 1).unwrap();
    use rustls::pki_types::pem::PemObject as _;
    let der =
        rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    std::fs::write(dir.join("crl.der"), der.as_ref()).unwrap();
    add_crl(&setup.config_path, "crl.der");
    let gw = setup.start().await;
    let mut bad = OneConnection::open(&gw, &gw.path("revoked.pem")).await;
    let err = bad.send(&gw, &read(&gw)).await.unwrap_err();
    assert!(err.contains(REVOKED), "{err}");
    let mut good = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(good.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_revokes_a_certificate_refuses_new_handshakes_and_open_connections_go_on() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let dir = gw.dir.path();
    let soon_revoked = issue_client(dir, &gw.ca, "soon-revoked.pem");
    let mut open_before = OneConnection::open(&gw, &gw.path("soon-revoked.pem")).await;
    assert_eq!(open_before.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));

    write(dir, "crl.pem", &gw.ca.crl_pem(&[&soon_revoked], 1).unwrap());
    add_crl(&gw.config_path, "crl.pem");
    let report = gw.handle.reload().await.unwrap();
    assert_eq!(report.crls, 1);
    assert!(
        reloads(&gw, "ok").ends_with(" 1"),
        "{}",
        gw.runtime.metrics().encode()
    );

    // A new handshake with the revoked certificate is refused …
    let mut after = OneConnection::open(&gw, &gw.path("soon-revoked.pem")).await;
    let err = after.send(&gw, &read(&gw)).await.unwrap_err();
    assert!(err.contains(REVOKED), "{err}");
    // … while the connection it opened before the reload was checked then, and goes on
    // until it closes (the CRL applies at the handshake).
    assert_eq!(open_before.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    // Other certificates still pass.
    let mut good = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(good.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    assert_eq!(host.requests().len(), 3);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_is_not_one_is_refused_by_name() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    write(
        gw.dir.path(),
        "crl.pem",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    add_crl(&gw.config_path, "crl.pem");
    let err = gw.handle.reload().await.unwrap_err();
    assert_eq!(err.key, "api.crl", "{err}");
    assert!(err.reason.contains("crl.pem"), "{err}");
    std::fs::write(gw.path("crl.pem"), b"not a crl").unwrap();
    let err = gw.handle.reload().await.unwrap_err();
    assert_eq!(err.key, "api.crl[0]", "{err}");
    assert!(reloads(&gw, "error").ends_with(" 2"));
    // The old configuration (no CRL) serves.
    let mut conn = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(conn.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    gw.stop().await;
}

// ---- server certificate, app keys -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_a_new_server_certificate_to_new_handshakes() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let mut before = OneConnection::open(&gw, &gw.path("client.pem")).await;
    let fresh = gw.ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    write(gw.dir.path(), "server.pem", &fresh.cert_pem);
    std::fs::remove_file(gw.path("server-key.pem")).unwrap();
    write_private(gw.dir.path(), "server-key.pem", &fresh.key_pem);
    gw.handle.reload().await.unwrap();

    let fresh_der = patgate::tls::load_certs(&gw.path("server.pem")).unwrap()[0].clone();
    assert_ne!(before.server_cert, fresh_der);
    let mut after = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(after.server_cert, fresh_der);
    assert_eq!(after.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    // The connection made before keeps the certificate it was given, and works.
    assert_eq!(before.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_is_refused_with_its_file_named_and_the_old_one_serves() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let served = OneConnection::open(&gw, &gw.path("client.pem"))
        .await
        .server_cert;
    let logs = common::logs::Captured::default();
    let err = {
        let _guard = logs.install();
        write(
            gw.dir.path(),
            "server.pem",
            "-----BEGIN CERTIFICATE-----\ngarbage\n",
        );
        gw.handle.reload().await.unwrap_err()
    };
    assert_eq!(err.key, "api.cert", "{err}");
    assert_eq!(err.file, gw.config_path);
    let server_pem = gw.path("server.pem").display().to_string();
    assert!(err.reason.contains(&server_pem), "{err}");
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("reload refused"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no `reload refused` line in {}", logs.text()));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("key=api.cert"), "{line}");
    assert!(line.contains(&server_pem), "{line}");
    assert!(reloads(&gw, "error").ends_with(" 1"));
    assert_eq!(reloads(&gw, "ok"), "");

    let mut conn = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(conn.server_cert, served);
    assert_eq!(conn.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_trusts_a_new_app_key_and_forgets_a_removed_one() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let dir = gw.dir.path();
    let fresh = patgate::keys::generate("app-2027", dir, false).unwrap();
    let fresh_key = patgate::signature::SigningKey::ed25519_from_pkcs8_pem(
        "app-2027",
        &std::fs::read_to_string(dir.join("app-2027.pem")).unwrap(),
    )
    .unwrap();
    let with_fresh = gw.client_with(fresh_key, false);
    let response = with_fresh.send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "unknown-key");

    // Rotation: the new key in, the old Ed25519 key out (its table is the first one).
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let old_table = text
        .split("[[app_keys]]")
        .nth(1)
        .map(|t| format!("[[app_keys]]{t}"))
        .unwrap();
    assert!(old_table.contains(APP_KEYID), "{old_table}");
    edit_config(
        &gw.config_path,
        &old_table,
        &format!("{}\n", fresh.config_snippet),
    );
    let report = gw.handle.reload().await.unwrap();
    assert_eq!(report.app_keys, 2);

    assert_eq!(with_fresh.send(&read(&gw)).await.unwrap().status(), 200);
    let response = gw.client().send(&read(&gw)).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "unknown-key");
    let hmac = gw.client_with(gw.hmac_key(), false);
    assert_eq!(hmac.send(&read(&gw)).await.unwrap().status(), 200);
    gw.stop().await;
}

// ---- what a reload cannot change, and what it keeps --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_bound_at_start_refuse_the_reload_by_key() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    for (from, to, key) in [
        (
            "listen = \"127.0.0.1:0\"\ncert",
            "listen = \"127.0.0.1:1\"\ncert",
            "api.listen",
        ),
        (
            "state_dir = \"state\"",
            "state_dir = \"elsewhere\"",
            "state_dir",
        ),
        ("level = \"info\"", "level = \"debug\"", "log"),
    ] {
        let original = std::fs::read_to_string(&gw.config_path).unwrap();
        edit_config(&gw.config_path, from, to);
        let err = gw.handle.reload().await.unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains("restart"), "{err}");
        std::fs::write(&gw.config_path, original).unwrap();
    }
    // The vault's page cache belongs to the open store: a new `[vault]` table is refused too.
    let original = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        format!("{original}\n[vault]\ncache_capacity_mib = 8\n"),
    )
    .unwrap();
    let err = gw.handle.reload().await.unwrap_err();
    assert_eq!(err.key, "vault.cache_capacity_mib", "{err}");
    assert!(err.reason.contains("restart"), "{err}");
    std::fs::write(&gw.config_path, original).unwrap();
    // A syntax error names the file, then the line and column in place of a key.
    let original = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, format!("{original}\n[api\n")).unwrap();
    let err = gw.handle.reload().await.unwrap_err();
    assert_eq!(err.file, gw.config_path);
    let line = original.matches('\n').count() + 2;
    assert_eq!(
        err.to_string(),
        format!(
            "{}: line {line}, column 5: invalid table header; expected `.`, `]`",
            gw.config_path.display()
        )
    );
    std::fs::write(&gw.config_path, original).unwrap();

    assert!(reloads(&gw, "error").ends_with(" 5"));
    assert_eq!(gw.client().send(&read(&gw)).await.unwrap().status(), 200);
    // The file as it was reloads fine.
    gw.handle.reload().await.unwrap();
    assert!(reloads(&gw, "ok").ends_with(" 1"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signature_is_refused_after_a_reload() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let mut conn = OneConnection::open(&gw, &gw.path("client.pem")).await;
    let original = signed(&gw.client(), &read(&gw));
    let replay = replay_of(&original);
    assert_eq!(conn.send_signed(&gw, original).await, Ok(StatusCode::OK));
    gw.handle.reload().await.unwrap();
    let response = gw.client().send_signed(replay).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-replayed");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_links_stay_valid_and_used_across_a_reload() {
    let (gw, _host) = Gateway::start(Options {
        connect_ttl_seconds: Some(600),
        ..Options::default()
    })
    .await;
    let issue = || Outgoing {
        method: Method::POST,
        url: gw.url(&format!(
            "/v1/integrations/ghe/users/{ACCOUNT_A}/connect-link"
        )),
        ..Outgoing::default()
    };
    let link = |response: http::Response<Bytes>| -> String {
        assert_eq!(response.status(), 200, "{response:?}");
        json(&response)["url"].as_str().unwrap().to_string()
    };
    let opened_before = link(gw.client().send(&issue()).await.unwrap());
    let unopened = link(gw.client().send(&issue()).await.unwrap());
    // A browser: no signature, and the connect listener asks for no client certificate.
    let open = |url: &str| {
        let request = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = gw.client();
        async move { client.send_signed(request).await.unwrap() }
    };
    assert_eq!(open(&opened_before).await.status(), 200);

    gw.handle.reload().await.unwrap();

    // Issued before the reload, still valid after it (the link key is carried over) …
    assert_eq!(open(&unopened).await.status(), 200);
    // … and a link opened before it stays used.
    let again = open(&opened_before).await;
    assert_eq!(again.status(), 410);
    assert!(String::from_utf8_lossy(again.body()).contains("already used"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detected_tfs_release_is_kept_unless_the_integration_changed() {
    use patgate::config::{TfsRelease, TfsVersion};
    let ca = Arc::new(patgate::devpki::DevCa::generate("tfs CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    *host.tfs_probe.lock().unwrap() = TfsProbe::Locations("7.1");
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options {
            kind: "tfs",
            base_url: Some(format!("{}/tfs/DefaultCollection", host.base_url())),
            integration_toml: "version = \"auto\"".into(),
            ..Options::default()
        },
    )
    .await;
    let gw = setup.start().await;
    let probes = || {
        host.requests()
            .iter()
            .filter(|r| r.method == Method::OPTIONS)
            .count()
    };
    let release = || {
        gw.handle
            .runtime()
            .integration(INTEGRATION_ID)
            .unwrap()
            .config()
            .tfs_version
    };
    assert_eq!(probes(), 1);
    assert_eq!(release(), Some(TfsVersion::Release(TfsRelease::Server2022)));

    // Unchanged: the server is not asked again.
    *host.tfs_probe.lock().unwrap() = TfsProbe::Locations("5.1-preview");
    let report = gw.handle.reload().await.unwrap();
    assert!(report.changed.is_empty(), "{report:?}");
    assert_eq!(probes(), 1);
    assert_eq!(release(), Some(TfsVersion::Release(TfsRelease::Server2022)));

    // Changed: asked again, and the new answer serves.
    edit_config(
        &gw.config_path,
        "request_timeout_ms = 5000",
        "request_timeout_ms = 6000",
    );
    let report = gw.handle.reload().await.unwrap();
    assert_eq!(report.changed, vec![INTEGRATION_ID.to_string()]);
    assert_eq!(probes(), 2);
    assert_eq!(release(), Some(TfsVersion::Release(TfsRelease::Server2019)));

    // A host that no longer says refuses the reload, naming the integration.
    *host.tfs_probe.lock().unwrap() = TfsProbe::Nothing;
    edit_config(
        &gw.config_path,
        "request_timeout_ms = 6000",
        "request_timeout_ms = 7000",
    );
    let err = gw.handle.reload().await.unwrap_err();
    assert_eq!(err.key, "integrations[0].version", "{err}");
    assert_eq!(release(), Some(TfsVersion::Release(TfsRelease::Server2019)));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_header_limit_of_new_connections() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let big = Outgoing {
        headers: vec![("x-big".into(), "a".repeat(12 * 1024))],
        ..read(&gw)
    };
    let mut before = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(before.send(&gw, &big).await, Ok(StatusCode::OK));
    edit_config(
        &gw.config_path,
        "header_read_timeout_ms",
        "max_header_bytes = 1024\nheader_read_timeout_ms",
    );
    gw.handle.reload().await.unwrap();
    let mut after = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(
        after.send(&gw, &big).await,
        Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    gw.stop().await;
}

/// A CRL list that does not cover the client CA fails closed: no certificate of that CA can
/// be checked, so none is let in (a CRL for the wrong CA must not silently check nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_of_another_ca_refuses_every_client_of_the_configured_one() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let mut before = OneConnection::open(&gw, &gw.path("client.pem")).await;
    assert_eq!(before.send(&gw, &read(&gw)).await, Ok(StatusCode::OK));
    let other = patgate::devpki::DevCa::generate("another CA").unwrap();
    write(
        gw.dir.path(),
        "other-crl.pem",
        &other.crl_pem(&[], 1).unwrap(),
    );
    add_crl(&gw.config_path, "other-crl.pem");
    gw.handle.reload().await.unwrap();
    let mut conn = OneConnection::open(&gw, &gw.path("client.pem")).await;
    let err = conn.send(&gw, &read(&gw)).await.unwrap_err();
    // rustls, like OpenSSL, answers an undeterminable revocation status with unknown_ca.
    assert!(err.contains("received fatal alert: UnknownCA"), "{err}");
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}
