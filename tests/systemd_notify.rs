//! `patgate run` under a service manager (`Type=notify`): the real binary, started with
//! `NOTIFY_SOCKET` pointing at a socket this test binds and `WATCHDOG_USEC` set, driven
//! with real signals. Asserts the datagrams systemd would get: READY=1 once the api port
//! accepts, RELOADING=1 … READY=1 around each SIGHUP (with the reason when a reload is
//! refused), WATCHDOG=1 pings, STOPPING=1 at SIGTERM, and exit 0.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;

/// The next notification that is not a watchdog ping; counts the pings seen on the way.
async fn next_notice(socket: &UnixDatagram, pings: &mut usize) -> String {
    loop {
        let text = next_notice_or_ping(socket).await;
        if text != "WATCHDOG=1\n" {
            return text;
        }
        *pings += 1;
    }
}

/// The next datagram, whatever it is.
async fn next_notice_or_ping(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
        .await
        .expect("no notification from patgate")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn signal(pid: &str, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tells_systemd_ready_reloading_watchdog_and_stopping() {
    let ca = Arc::new(patgate::devpki::DevCa::generate("notify CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let setup = Setup::with_ca(
        Arc::new(tempfile::tempdir().unwrap()),
        ca,
        &host,
        &Options::default(),
    )
    .await;
    let dir = setup.dir.path();
    let notify_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["run", "--config", setup.config_path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify_path)
        // Pings every second (half of it).
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    {
        let logs = logs.clone();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                logs.lock().unwrap().push(line.clone());
                let _ = line_tx.send(line);
            }
        });
    }

    // READY=1 comes once the api port accepts connections.
    let mut pings = 0;
    let ready = next_notice(&socket, &mut pings).await;
    assert!(ready.contains("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=serving 1 integrations\n"), "{ready}");
    let addr = loop {
        let line = line_rx.recv().await.expect("patgate ended without serving");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    tokio::net::TcpStream::connect(&addr)
        .await
        .expect("READY=1 was sent before the api port accepted");
    let port = addr.rsplit(':').next().unwrap().to_string();
    let client = patgate::client::SignedClient::new(
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        None,
        patgate::signature::SigningKey::ed25519_from_pkcs8_pem(APP_KEYID, &setup.signing_key_pem)
            .unwrap(),
        false,
    )
    .unwrap();
    let read = || patgate::client::Outgoing {
        url: format!("https://localhost:{port}/git/ghe/api/v3/repos/acme/api"),
        ..patgate::client::Outgoing::default()
    };
    assert_eq!(client.send(&read()).await.unwrap().status(), 200);

    // A good reload: RELOADING=1 (with the monotonic time systemd 253+ matches) … READY=1.
    signal(&pid, "HUP");
    let reloading = next_notice(&socket, &mut pings).await;
    assert!(reloading.contains("RELOADING=1\n"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = next_notice(&socket, &mut pings).await;
    assert!(ready.contains("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=serving 1 integrations\n"), "{ready}");

    // A refused reload: READY=1 all the same (the old config serves), and the reason.
    std::fs::write(dir.join("server.pem"), "not a certificate\n").unwrap();
    signal(&pid, "HUP");
    let reloading = next_notice(&socket, &mut pings).await;
    assert!(reloading.contains("RELOADING=1\n"), "{reloading}");
    let ready = next_notice(&socket, &mut pings).await;
    assert!(ready.contains("READY=1\n"), "{ready}");
    let status = ready
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS in {ready}"));
    assert!(status.contains("reload failed"), "{status}");
    assert!(status.contains("api.cert"), "{status}");
    assert!(status.contains("server.pem"), "{status}");
    assert_eq!(client.send(&read()).await.unwrap().status(), 200);

    // Watchdog pings arrive while serving.
    while pings == 0 {
        let notice = next_notice_or_ping(&socket).await;
        if notice == "WATCHDOG=1\n" {
            pings += 1;
        }
    }

    signal(&pid, "TERM");
    let stopping = next_notice(&socket, &mut pings).await;
    assert!(stopping.contains("STOPPING=1\n"), "{stopping}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("patgate did not stop after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let logs = logs.lock().unwrap().clone();
    let refused = logs
        .iter()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("no `reload refused` line in {logs:#?}"));
    assert!(refused.contains("key=api.cert"), "{refused}");
    assert!(refused.contains("server.pem"), "{refused}");
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("reloaded configuration"))
            .count(),
        1,
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("vault flushed")),
        "{logs:#?}"
    );
}
