//! `patgate-bench`, the load generator behind BENCHMARKS.md, against the real `patgate run`
//! and its own upstream stand-in: each mode completes its requests through patgate, reports
//! them in its JSON line, and reports refusals as errors by status rather than as successes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_patgate-bench");
const PATGATE: &str = env!("CARGO_BIN_EXE_patgate");
const PATH: &str = "/git/bench/api/v3/repos/acme/api/git/refs";
const BODY: &str =
    r#"{"ref":"refs/heads/PROJ-1-fix-login","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;

/// Kills the process when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", admin)) {
            use std::io::{Read, Write};
            let _ = tcp.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "patgate did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `patgate-bench load`: its JSON line, or what it printed on stderr when it failed.
fn load(dir: &Path, port: u16, extra: &[&str]) -> Result<Value, String> {
    let file = |name: &str| dir.join(name).display().to_string();
    let out = Command::new(BENCH)
        .arg("load")
        .args(["--cacert", &file("ca.pem")])
        .args(["--cert", &file("client.pem")])
        .args(["--cert-key", &file("client-key.pem")])
        .args(["--users", "20", "--warmup", "0", "-d", BODY])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{PATH}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn the_load_generator_measures_patgate_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (up_port, pg_port, admin_port) = (free_port(), free_port(), free_port());
    let setup = Command::new(BENCH)
        .arg("setup")
        .args(["--dir", &dir.path().display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{pg_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--upstream-port", &up_port.to_string()])
        .args(["--users", "20"])
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let file = |name: &str| dir.path().join(name).display().to_string();

    let mut upstream = Running(
        Command::new(BENCH)
            .arg("upstream")
            .args(["--listen", &format!("127.0.0.1:{up_port}")])
            .args([
                "--cert",
                &file("upstream.pem"),
                "--key",
                &file("upstream-key.pem"),
            ])
            .args(["--threads", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(upstream.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(&up_port.to_string()), "{first}");

    let patgate = Running(
        Command::new(PATGATE)
            .args(["run", "-c", &file("patgate.toml")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(admin_port);
    let pid = patgate.0.id().to_string();

    let modes: [(&str, &[&str]); 4] = [
        (
            "ed25519",
            &["--key", "bench-app.pem", "--keyid", "bench-app"],
        ),
        (
            "hmac-sha256",
            &["--hmac-key", "bench-hmac.hmac", "--keyid", "bench-hmac"],
        ),
        (
            "hmac-sha256",
            &[
                "--hmac-key",
                "bench-hmac.hmac",
                "--keyid",
                "bench-hmac",
                "--http2",
            ],
        ),
        (
            "hmac-sha256",
            &[
                "--hmac-key",
                "bench-hmac.hmac",
                "--keyid",
                "bench-hmac",
                "--new-connection",
            ],
        ),
    ];
    for (signed, args) in modes {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.ends_with(".pem") || a.ends_with(".hmac") {
                    file(a)
                } else {
                    (*a).to_string()
                }
            })
            .collect();
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["-c", "4", "--requests", "120", "--pid", &pid]);
        let line = load(dir.path(), pg_port, &all).unwrap_or_else(|e| panic!("{all:?}: {e}"));
        assert_eq!(line["signed"], signed, "{line}");
        assert_eq!(line["requests"], 120, "{line}");
        assert_eq!(
            line["ok"], 120,
            "every request got the upstream's 201: {line}"
        );
        assert_eq!(line["errors"], serde_json::json!({}), "{line}");
        assert_eq!(line["users"], 20, "{line}");
        assert_eq!(
            line["protocol"],
            if all.contains(&"--http2") {
                "h2"
            } else {
                "http/1.1"
            },
            "{line}"
        );
        assert_eq!(
            line["new_connection"],
            all.contains(&"--new-connection"),
            "{line}"
        );
        let lat = &line["latency_us"];
        let (p50, p99, max) = (
            lat["p50"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
            lat["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{line}");
        assert!(line["rps"].as_f64().unwrap() > 0.0, "{line}");
        // patgate's own CPU time and memory, read from /proc for --pid.
        assert!(
            line["target_cpu_us_per_request"].as_f64().unwrap() > 0.0,
            "{line}"
        );
        assert!(line["target_rss_kib"].as_u64().unwrap() > 0, "{line}");
    }

    // A target that refuses is not measured: a key patgate does not trust gets 401, and the
    // tool stops with that instead of printing figures of refusals.
    let untrusted = load(
        dir.path(),
        pg_port,
        &[
            "--hmac-key",
            &file("bench-hmac.hmac"),
            "--keyid",
            "nobody",
            "--requests",
            "10",
        ],
    );
    let err = untrusted.expect_err("figures for a target that refuses");
    assert!(
        err.contains("the target answers 401 to the first request"),
        "{err}"
    );
    // The upstream stand-in, like a git host, refuses a request without Authorization.
    let bare = Command::new(BENCH)
        .arg("load")
        .args(["--cacert", &file("ca.pem"), "--cert", &file("client.pem")])
        .args(["--cert-key", &file("client-key.pem"), "--plain"])
        .args(["--requests", "10", "--warmup", "0", "-d", BODY])
        .arg(format!(
            "https://127.0.0.1:{up_port}/api/v3/repos/acme/api/git/refs"
        ))
        .output()
        .unwrap();
    assert!(!bare.status.success());
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("answers 401"),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
}
