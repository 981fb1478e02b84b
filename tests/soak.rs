//! Soak: the real `patgate run` process under mixed load for a long time, sampled for growth.
//!
//! Runs only when `PATGATE_SOAK_SECONDS` is set (`bash tests/soak.sh [seconds]` sets it and
//! builds in release); otherwise it prints "skipped" and returns, so `cargo test` stays fast.
//!
//! The load: reads (integration token), create-branch actions with a stored user PAT, actions
//! by a user without a PAT (an expected 403 `user-pat-required`), PAT writes and status reads
//! through `/v1`, some of them on fresh TLS connections; a SIGHUP reload every 30 s. Every
//! 10 s it samples the process's RSS (`VmRSS` in /proc/PID/status), its open file
//! descriptors (/proc/PID/fd), the requests done, unexpected answers, and WARN/ERROR log lines,
//! and prints a table. It passes when nothing grows (see [`verdict`]), every reload succeeded,
//! and no unexpected answer or WARN/ERROR log line occurred.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::{Outgoing, SignedClient};

/// Accounts whose PATs are rewritten again and again through `/v1`.
const WRITERS: usize = 20;
/// The sampling period.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The reload period (a third of the run for runs shorter than 90 s, so they reload too).
const RELOAD_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    unexpected: AtomicU64,
    /// Bit n: a PUT of writer n's PAT was answered 200.
    written: AtomicU64,
}

struct Sample {
    at: u64,
    rss_kib: u64,
    fds: u64,
    requests: u64,
    unexpected: u64,
    log_problems: u64,
    reloads_ok: u64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// WARN and ERROR lines the service logged so far (JSON log lines).
fn log_problems(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        .map(str::to_string)
        .collect()
}

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// "Grows": the median RSS of the last third of the samples is above the first third's by
/// more than 10 % + 4 MiB, or the most fds open in the last third exceed the most in the
/// first third by more than 4. The first sample (start-up, caches filling) is left out.
fn verdict(samples: &[Sample]) -> Result<String, String> {
    let steady = &samples[1..];
    let third = (steady.len() / 3).max(1);
    let first = &steady[..third];
    let last = &steady[steady.len() - third..];
    let rss_first = median(first.iter().map(|s| s.rss_kib).collect());
    let rss_last = median(last.iter().map(|s| s.rss_kib).collect());
    let fds_first = first.iter().map(|s| s.fds).max().unwrap();
    let fds_last = last.iter().map(|s| s.fds).max().unwrap();
    let summary = format!(
        "RSS median first third {rss_first} KiB, last third {rss_last} KiB; \
         most fds first third {fds_first}, last third {fds_last}"
    );
    if rss_last > rss_first + rss_first / 10 + 4096 {
        return Err(format!("RSS grows: {summary}"));
    }
    if fds_last > fds_first + 4 {
        return Err(format!("open fds grow: {summary}"));
    }
    Ok(summary)
}

fn expect(
    counters: &Counters,
    what: &str,
    got: Result<http::Response<Bytes>, String>,
    want: u16,
) -> bool {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    match got {
        Ok(r) if r.status().as_u16() == want => return true,
        Ok(r) => {
            counters.unexpected.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "soak: unexpected answer to {what}: {} {}",
                r.status(),
                String::from_utf8_lossy(r.body())
            );
        }
        Err(e) => {
            counters.unexpected.fetch_add(1, Ordering::Relaxed);
            eprintln!("soak: {what} failed: {e}");
        }
    }
    false
}

/// One load worker: a fixed mix, paced to `per_second`, a new client (so new TLS connections)
/// every 200 requests.
async fn worker(
    gw: Arc<GatewayFiles>,
    worker: usize,
    per_second: u64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let pause = Duration::from_micros(1_000_000 / per_second.max(1));
    let mut client = gw.client();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if i % 200 == 199 {
            client = gw.client();
        }
        let send = |out: Outgoing| {
            let client: &SignedClient = &client;
            async move { client.send(&out).await.map_err(|e| e.to_string()) }
        };
        match i % 10 {
            0..=4 => {
                let r = send(gw.get("/git/ghe/api/v3/repos/acme/api/branches")).await;
                let _ = expect(&counters, "a read", r, 200);
            }
            5 | 6 => {
                let r = send(gw.create_branch(Some(ACCOUNT_A))).await;
                let _ = expect(&counters, "an action with a PAT", r, 201);
            }
            7 => {
                let r = send(gw.create_branch(Some(ACCOUNT_B))).await;
                let _ = expect(&counters, "an action without a PAT", r, 403);
            }
            8 => {
                let n = (i as usize / 10 + worker) % WRITERS;
                let r = send(Outgoing {
                    method: Method::PUT,
                    url: gw.url(&format!("/v1/integrations/ghe/users/writer-{n}/pat")),
                    body: Some(Bytes::from(format!(r#"{{"token":"{}"}}"#, writer_pat(n)))),
                    ..Outgoing::default()
                })
                .await;
                if expect(&counters, "a PAT write", r, 200) {
                    counters.written.fetch_or(1 << n, Ordering::Relaxed);
                }
            }
            _ => {
                let r = send(Outgoing {
                    method: Method::GET,
                    url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
                    ..Outgoing::default()
                })
                .await;
                let _ = expect(&counters, "a PAT status", r, 200);
            }
        }
        i += 1;
        tokio::time::sleep(pause).await;
    }
}

fn writer_pat(n: usize) -> String {
    format!("ghp_SoakWriter{n:02}DoNotLeak0123456789abcdef")
}

/// What a worker needs of the gateway files (the gateway itself is another process).
struct GatewayFiles {
    dir: std::path::PathBuf,
    port: u16,
    key: patgate::signature::SigningKey,
}

impl GatewayFiles {
    fn client(&self) -> SignedClient {
        SignedClient::new(
            &self.dir.join("ca.pem"),
            &self.dir.join("client.pem"),
            None,
            self.key.clone(),
            false,
        )
        .unwrap()
    }
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.port, path)
    }
    fn get(&self, path: &str) -> Outgoing {
        Outgoing {
            method: Method::GET,
            url: self.url(path),
            ..Outgoing::default()
        }
    }
    fn create_branch(&self, account: Option<&str>) -> Outgoing {
        Outgoing {
            method: Method::POST,
            url: self.url("/git/ghe/api/v3/repos/acme/api/git/refs"),
            body: Some(Bytes::from_static(BRANCH_BODY.as_bytes())),
            account: account.map(str::to_string),
            ..Outgoing::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_nothing_grows_under_mixed_load() {
    let Some(seconds) = std::env::var("PATGATE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        eprintln!("soak: skipped (set PATGATE_SOAK_SECONDS or run `bash tests/soak.sh`)");
        return;
    };
    assert!(seconds >= 30, "a soak shorter than 30 s samples too little");
    let per_second: u64 = std::env::var("PATGATE_SOAK_RPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    const WORKERS: usize = 4;

    let ca = Arc::new(patgate::devpki::DevCa::generate("patgate soak CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    host.add_user(PAT_A, "alice", "repo");
    for n in 0..WRITERS {
        host.add_user(&writer_pat(n), &format!("writer{n}"), "repo");
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let opts = Options {
        log_level: "info".into(),
        extra_toml: "format = \"json\"\n".into(),
        ..Options::default()
    };
    let setup = Setup::with_ca(dir.clone(), ca, &host, &opts).await;
    // The listeners get fixed free ports so this process knows where to send.
    let port = free_port();
    let admin_port = free_port();
    let config = std::fs::read_to_string(&setup.config_path)
        .unwrap()
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin_port}\""),
            1,
        );
    std::fs::write(&setup.config_path, config).unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();

    // The stored PAT of user A, straight into the vault before the service opens it.
    {
        let key = patgate::vault::MasterKey::load_file(&dir.path().join("master-key")).unwrap();
        let vault = open_vault(&dir.path().join("state"), &key).await.unwrap();
        let meta = patgate::vault::PatMeta {
            host_login: "alice".into(),
            ..pat_meta()
        };
        vault
            .put_user_pat(
                "ghe",
                ACCOUNT_A,
                &patgate::vault::Credential::Token(PAT_A.to_string().into()),
                &meta,
            )
            .await
            .unwrap();
    }

    let log_path = dir.path().join("patgate.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["run", "--config", setup.config_path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("PATGATE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Ready when /ready answers 200 (the vault is open and the listeners are bound).
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = admin_request(admin, Method::GET, "/ready").await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "patgate run did not become ready: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    let files = Arc::new(GatewayFiles {
        dir: dir.path().to_path_buf(),
        port,
        key: patgate::signature::SigningKey::ed25519_from_pkcs8_pem(
            APP_KEYID,
            &setup.signing_key_pem,
        )
        .unwrap(),
    });
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(worker(
                files.clone(),
                w,
                per_second,
                counters.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut reloads_sent = 0u64;
    let reload_every = RELOAD_EVERY.min(Duration::from_secs(seconds / 3));
    let mut next_reload = reload_every;
    let mut next_sample = Duration::ZERO;
    println!(
        "{:>6} {:>9} {:>5} {:>9} {:>10} {:>10} {:>8}",
        "t (s)", "RSS KiB", "fds", "requests", "unexpected", "warn+error", "reloads"
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        let now = started.elapsed();
        if now >= next_reload {
            let status = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            reloads_sent += 1;
            next_reload += reload_every;
        }
        if now >= next_sample {
            let metrics = admin_request(admin, Method::GET, "/metrics")
                .await
                .map(|r| String::from_utf8_lossy(r.body()).into_owned())
                .unwrap_or_default();
            let sample = Sample {
                at: now.as_secs(),
                rss_kib: rss_kib(pid),
                fds: open_fds(pid),
                requests: counters.requests.load(Ordering::Relaxed),
                unexpected: counters.unexpected.load(Ordering::Relaxed),
                log_problems: log_problems(&log_path).len() as u64,
                reloads_ok: metric(&metrics, "patgate_reloads_total{result=\"ok\"} "),
            };
            println!(
                "{:>6} {:>9} {:>5} {:>9} {:>10} {:>10} {:>8}",
                sample.at,
                sample.rss_kib,
                sample.fds,
                sample.requests,
                sample.unexpected,
                sample.log_problems,
                sample.reloads_ok
            );
            samples.push(sample);
            next_sample += SAMPLE_EVERY;
            // The recording host keeps every request; this process is not the one measured,
            // but it must not run out of memory on a long soak either.
            host.requests.lock().unwrap().clear();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let metrics = admin_request(admin, Method::GET, "/metrics").await.unwrap();
    let metrics = String::from_utf8_lossy(metrics.body()).into_owned();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("patgate run did not stop after SIGTERM")
        .unwrap();

    let requests = counters.requests.load(Ordering::Relaxed);
    let unexpected = counters.unexpected.load(Ordering::Relaxed);
    let problems = log_problems(&log_path);
    let reloads_ok = metric(&metrics, "patgate_reloads_total{result=\"ok\"} ");
    let verdict = verdict(&samples);
    println!(
        "soak: {seconds} s, {requests} requests ({:.0}/s), {unexpected} unexpected, \
         {} WARN/ERROR log lines, {reloads_ok}/{reloads_sent} reloads ok; {}",
        requests as f64 / seconds as f64,
        problems.len(),
        match &verdict {
            Ok(s) | Err(s) => s,
        }
    );
    assert!(status.success(), "patgate run exited with {status}");
    assert!(requests > 0);
    assert_eq!(unexpected, 0, "unexpected answers (printed above)");
    assert!(problems.is_empty(), "WARN/ERROR log lines: {problems:#?}");
    assert_eq!(reloads_ok, reloads_sent, "a reload failed or was lost");
    verdict.unwrap();
    // Every PAT written is still there and decrypts (the service is stopped, the vault free).
    let key = patgate::vault::MasterKey::load_file(&dir.path().join("master-key")).unwrap();
    let vault = open_vault(&dir.path().join("state"), &key).await.unwrap();
    let written = counters.written.load(Ordering::Relaxed);
    assert_ne!(written, 0, "no PAT write succeeded");
    for n in (0..WRITERS).filter(|n| written & (1 << n) != 0) {
        let (credential, _) = vault
            .user_pat("ghe", &format!("writer-{n}"))
            .await
            .unwrap()
            .expect("a written PAT is in the vault");
        let patgate::vault::Credential::Token(token) = credential else {
            panic!("writer-{n}: not a token: {credential:?}");
        };
        #[allow(
            clippy::disallowed_methods,
            reason = "the test compares the decrypted PAT with the one it wrote"
        )]
        let token = secrecy::ExposeSecret::expose_secret(&token).to_string();
        assert!(token == writer_pat(n), "writer-{n}: another PAT decrypted");
    }
}
