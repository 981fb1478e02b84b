//! `patgate dev` from an empty folder: its printed commands, run exactly as printed, give the
//! four outcomes the README promises.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the quickstart when a test assertion fails, so no server outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_quickstart_commands_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["dev", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("patgate dev did not print its instructions in time");
        let done = line.starts_with("Ctrl-C stops patgate");
        printed.push(line);
        if done {
            break;
        }
    }
    let commands: Vec<&String> = printed
        .iter()
        .skip_while(|l| !l.starts_with("In another terminal"))
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('#')
                && !l.starts_with("In another")
                && !l.starts_with("Ctrl-C")
        })
        .collect();
    assert_eq!(
        commands.len(),
        4,
        "expected four commands, got:\n{}",
        printed.join("\n")
    );
    let status = |answer: &str| answer.split_whitespace().nth(1).unwrap_or("").to_string();
    // Each command exits 0 on a 2xx answer and 22 (curl's --fail) on a refusal.
    let run_expecting = |command: &str, exit: i32| {
        let out = Command::new("bash")
            .args(["-c", command])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(exit),
            "{command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().to_lowercase()
    };
    let run = |command: &str| run_expecting(command, 0);
    // The admin listener it prints answers /ready.
    let admin = printed
        .iter()
        .find_map(|l| {
            l.strip_prefix("# Health and metrics (plain HTTP, this machine only): http://")
        })
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no admin address in:\n{}", printed.join("\n")));
    let mut tcp = std::net::TcpStream::connect(admin).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    let read = run(commands[0]);
    assert_eq!(status(&read), "200", "{read}");
    assert!(read.contains("patgate-credential: integration"), "{read}");

    let refused = run_expecting(commands[1], 22);
    assert_eq!(status(&refused), "403", "{refused}");
    assert!(
        refused.contains("\"code\":\"user-pat-required\""),
        "{refused}"
    );

    let stored = run(commands[2]);
    assert_eq!(status(&stored), "200", "{stored}");
    assert!(
        stored.contains("\"configured\":true") && stored.contains("\"host_login\":\"alice\""),
        "{stored}"
    );

    let created = run(commands[3]);
    assert_eq!(status(&created), "201", "{created}");
    assert!(created.contains("patgate-credential: user"), "{created}");
    assert!(created.contains("\"acted_as\":\"alice\""), "{created}");

    // SIGTERM stops it cleanly.
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    // Nothing secret is kept where others can read it.
    use std::os::unix::fs::PermissionsExt;
    for private in [
        "master-key",
        "ca-key.pem",
        "server-key.pem",
        "client.pem",
        "dev-app.pem",
        "demo-alice.pat",
    ] {
        let mode = std::fs::metadata(dir.path().join("dev").join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} is readable by others");
    }
}
