//! `patgate run` as a child process of the test, for what only a real process shows: a
//! SIGKILL in the middle of writes, a start that refuses, the log of a whole run.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use patgate::client::{Outgoing, SignedClient};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Child;

use super::{Setup, APP_KEYID, BRANCH_BODY};

/// Only a hang reaches this.
pub const LIMIT: Duration = Duration::from_secs(120);

/// `patgate run` as a child, with its stderr collected.
pub struct Running {
    pub child: Child,
    pub port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    /// How many lines `logs` holds; changes with each.
    lines: tokio::sync::watch::Receiver<usize>,
}

impl Running {
    /// Starts `patgate run` and waits until its api listener serves.
    ///
    /// A vault this test process opened (`Setup`, or the raw sled handle that damages a
    /// record) may hold sled's file lock a moment after it is dropped: sled's background
    /// threads let go of it on their own time, with no event to wait on. patgate then exits
    /// saying the vault is in use, and is started again; each try is a whole process start.
    pub async fn start(setup: &Setup) -> Running {
        for _ in 0..50 {
            match Running::spawn(setup).await {
                Ok(running) => return running,
                Err(logs)
                    if logs
                        .iter()
                        .any(|l| l.contains("is in use by another process")) => {}
                Err(logs) => panic!("patgate run did not start: {logs:?}"),
            }
        }
        panic!("the vault stayed locked by this test process");
    }

    /// Starts `patgate run`; `Err` with its output when it exits without serving.
    pub async fn spawn(setup: &Setup) -> Result<Running, Vec<String>> {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
            .args(["run", "--config", setup.config_path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let (lines_tx, lines_rx) = tokio::sync::watch::channel(0usize);
        {
            let logs = logs.clone();
            let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
            tokio::spawn(async move {
                let mut addr_tx = Some(addr_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(addr) = field(&line, " addr=") {
                        if let Some(tx) = addr_tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    logs.lock().unwrap().push(line);
                    lines_tx.send_modify(|n| *n += 1);
                }
            });
        }
        match tokio::time::timeout(LIMIT, addr_rx).await {
            Ok(Ok(addr)) => Ok(Running {
                child,
                port: addr.rsplit(':').next().unwrap().parse().unwrap(),
                logs,
                lines: lines_rx,
            }),
            // The reader ended: patgate exited without serving.
            Ok(Err(_)) => {
                let status = tokio::time::timeout(LIMIT, child.wait())
                    .await
                    .expect("patgate closed stderr but did not exit")
                    .unwrap();
                assert!(!status.success(), "patgate exited 0 without serving");
                let logs = logs.lock().unwrap().clone();
                Err(logs)
            }
            Err(_) => panic!("patgate run neither served nor exited in {LIMIT:?}"),
        }
    }

    pub fn api(&self) -> Api {
        Api { port: self.port }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line that contains `needle`; answers the first such line.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let logs = self.logs.clone();
        tokio::time::timeout(
            LIMIT,
            self.lines
                .wait_for(|_| logs.lock().unwrap().iter().any(|l| l.contains(needle))),
        )
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
        .expect("patgate's output ended");
        let logs = self.logs.lock().unwrap();
        logs.iter().find(|l| l.contains(needle)).unwrap().clone()
    }

    /// The admin listener's address, from the line that announces it.
    pub async fn admin_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log(" admin=").await;
        field(&line, " admin=").unwrap().parse().unwrap()
    }

    /// SIGKILL, and waits for the process to die of it.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("patgate did not die of SIGKILL")
            .unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("patgate did not stop after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

/// The value of `name` (` addr=`, with its leading space) in a log line.
fn field(line: &str, name: &str) -> Option<String> {
    line.split(name)
        .nth(1)
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
}

/// The app's signed mTLS client for `setup`'s certificates and Ed25519 key.
pub fn client(setup: &Setup) -> SignedClient {
    let dir = setup.dir.path();
    SignedClient::new(
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        None,
        patgate::signature::SigningKey::ed25519_from_pkcs8_pem(APP_KEYID, &setup.signing_key_pem)
            .unwrap(),
        false,
    )
    .unwrap()
}

/// The requests the app makes, against one running patgate.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub port: u16,
}

impl Api {
    pub fn url(self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn put_pat(self, account: &str, token: &str) -> Outgoing {
        Outgoing {
            method: Method::PUT,
            url: self.url(&format!("/v1/integrations/ghe/users/{account}/pat")),
            body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
            ..Outgoing::default()
        }
    }

    pub fn pat_status(self, account: &str) -> Outgoing {
        Outgoing {
            method: Method::GET,
            url: self.url(&format!("/v1/integrations/ghe/users/{account}/pat")),
            ..Outgoing::default()
        }
    }

    pub fn create_branch(self, account: &str) -> Outgoing {
        Outgoing {
            method: Method::POST,
            url: self.url("/git/ghe/api/v3/repos/acme/api/git/refs"),
            body: Some(Bytes::from_static(BRANCH_BODY.as_bytes())),
            account: Some(account.to_string()),
            ..Outgoing::default()
        }
    }

    pub fn read(self) -> Outgoing {
        Outgoing {
            method: Method::GET,
            url: self.url("/git/ghe/api/v3/repos/acme/api"),
            ..Outgoing::default()
        }
    }
}

/// What a SIGKILL in the middle of PAT writes left (see [`kill_during_pat_writes`]).
pub struct KilledWrites {
    /// The accounts whose write was acknowledged (200).
    pub acked: Vec<usize>,
    /// The accounts whose write got no answer: one per writer.
    pub unanswered: Vec<usize>,
    /// How many writes were acknowledged, and how many in flight, when the kill was ordered.
    pub acked_at_kill: usize,
    pub in_flight_at_kill: usize,
}

/// `writers` writers take accounts `0, 1, …` in turn (at most `accounts`) and store
/// `pat(i)` for `account(i)` once each through `running`'s API; `running` is SIGKILLed once
/// `kill_after` writes were acknowledged, with the other writers' requests in flight. Every
/// answer before the kill is a 200; a writer stops at its first request that gets none.
pub async fn kill_during_pat_writes(
    running: &mut Running,
    client: &SignedClient,
    (writers, accounts, kill_after): (usize, usize, usize),
    account: fn(usize) -> String,
    pat: fn(usize) -> String,
) -> KilledWrites {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let api = running.api();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let unanswered = Arc::new(Mutex::new(Vec::<usize>::new()));
    let kill_now = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (next, started, finished) = (next.clone(), started.clone(), finished.clone());
        let (acked, unanswered) = (acked.clone(), unanswered.clone());
        let (kill_now, client) = (kill_now.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                assert!(i < accounts, "{accounts} writes and still no kill");
                started.fetch_add(1, Ordering::SeqCst);
                let answer = client.send(&api.put_pat(&account(i), &pat(i))).await;
                finished.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Ok(response) => {
                        assert_eq!(
                            response.status(),
                            200,
                            "{}",
                            String::from_utf8_lossy(response.body())
                        );
                        let mut acked = acked.lock().unwrap();
                        acked.push(i);
                        if acked.len() == kill_after {
                            kill_now.notify_one();
                        }
                    }
                    // Killed: the connection was reset or refused.
                    Err(_) => {
                        unanswered.lock().unwrap().push(i);
                        return;
                    }
                }
            }
        }));
    }
    kill_now.notified().await;
    let in_flight_at_kill = started.load(Ordering::SeqCst) - finished.load(Ordering::SeqCst);
    let acked_at_kill = acked.lock().unwrap().len();
    running.kill().await;
    for task in tasks {
        tokio::time::timeout(LIMIT, task)
            .await
            .expect("a writer hung after the kill")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    assert!(acked.len() >= kill_after);
    assert_eq!(unanswered.len(), writers);
    KilledWrites {
        acked,
        unanswered,
        acked_at_kill,
        in_flight_at_kill,
    }
}
