//! `patgate dev` from an empty folder, and again on the same folder: its printed commands,
//! run exactly as printed, give the outcomes it prints next to them, and the connect-page
//! links it prints (and the `setup_url` of its refusal) open the page.

use std::io::{BufRead, BufReader};
use std::path::Path;
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

/// One printed step: what it says will happen, and the command.
struct Step {
    says: String,
    command: String,
}

/// A running `patgate dev` and what it printed.
struct Dev {
    child: KillOnDrop,
    printed: Vec<String>,
}

impl Dev {
    fn start(dir: &Path, extra: &[&str]) -> Dev {
        let child = Command::new(env!("CARGO_BIN_EXE_patgate"))
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--connect-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end: the demo host prints a line per request, and a closed pipe
            // would make its printing fail.
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap());
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
        Dev { child, printed }
    }

    fn text(&self) -> String {
        self.printed.join("\n")
    }

    /// The numbered steps: a `# N. …` line and the command under it.
    fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut lines = self.printed.iter().peekable();
        while let Some(line) = lines.next() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let command = lines.next().cloned().unwrap_or_default();
            steps.push(Step {
                says: rest.to_string(),
                command,
            });
        }
        assert_eq!(steps.len(), 4, "expected four steps, got:\n{}", self.text());
        steps
    }

    /// The connect-page link printed before the steps.
    fn link(&self) -> String {
        self.printed
            .iter()
            .find(|l| l.starts_with("https://localhost:") && l.contains("/connect/"))
            .unwrap_or_else(|| panic!("no connect link in:\n{}", self.text()))
            .clone()
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

/// Runs `command` in `dir` with bash; answers its exit code and output.
fn run(dir: &Path, command: &str) -> (Option<i32>, String) {
    let out = Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

fn status(answer: &str) -> String {
    answer.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// The status a step says it answers: the first three-digit number in its text.
fn said_status(says: &str) -> String {
    says.split(|c: char| !c.is_ascii_digit())
        .find(|n| n.len() == 3)
        .unwrap_or_else(|| panic!("no status in `{says}`"))
        .to_string()
}

/// Runs every step and checks it answers what it says; answers the outputs.
fn run_steps(dir: &Path, dev: &Dev) -> Vec<String> {
    let mut outputs = Vec::new();
    for step in dev.steps() {
        let (code, raw) = run(dir, &step.command);
        let answer = raw.to_lowercase();
        let expected = said_status(&step.says);
        assert_eq!(
            status(&answer),
            expected,
            "step `{}` answered:\n{answer}\nprinted:\n{}",
            step.says,
            dev.text()
        );
        // Exit 0 on a 2xx answer, 22 (curl's --fail) on a refusal.
        let exit = if expected.starts_with('2') { 0 } else { 22 };
        assert_eq!(code, Some(exit), "{}", step.command);
        if step.says.contains("Patgate-Credential: user") {
            assert!(answer.contains("patgate-credential: user"), "{answer}");
            assert!(answer.contains("\"acted_as\":\"alice\""), "{answer}");
        }
        if step.says.contains("user-pat-required") {
            assert!(
                answer.contains("\"code\":\"user-pat-required\""),
                "{answer}"
            );
        }
        outputs.push(raw);
    }
    outputs
}

/// GETs a connect-page URL with the printed TLS options; answers the output.
fn open_page(dir: &Path, dev: &Dev, url: &str) -> String {
    let first = &dev.steps()[0].command;
    let tls = first.rsplit_once(' ').unwrap().0;
    let (_, page) = run(dir, &format!("{tls} '{url}'"));
    page
}

/// The `setup_url` of a refusal, from the JSON the command printed.
fn setup_url(answer: &str) -> String {
    let body = answer.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    json["setup_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no setup_url in {answer}"))
        .to_string()
}

#[test]
fn the_quickstart_commands_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), &[]);
    // The admin listener it prints answers /ready.
    let admin = dev
        .printed
        .iter()
        .find_map(|l| {
            l.strip_prefix("# Health and metrics (plain HTTP, this machine only): http://")
        })
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no admin address in:\n{}", dev.text()));
    let mut tcp = std::net::TcpStream::connect(admin).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    let steps = dev.steps();
    assert!(steps[1].says.contains("refused, 403 user-pat-required"));
    assert!(steps[3].says.contains("201 Created"));
    let outputs = run_steps(dir.path(), &dev);
    assert!(outputs[0]
        .to_lowercase()
        .contains("patgate-credential: integration"));
    assert!(
        outputs[2].contains("\"configured\":true")
            && outputs[2].contains("\"host_login\":\"alice\""),
        "{}",
        outputs[2]
    );

    // The printed link and the refusal's setup_url open the connect page.
    let page = open_page(dir.path(), &dev, &dev.link());
    assert_eq!(status(&page), "200", "{page}");
    assert!(
        page.contains("DEMO host (stands in for GitHub Enterprise)"),
        "{page}"
    );
    let page = open_page(dir.path(), &dev, &setup_url(&outputs[1]));
    assert_eq!(status(&page), "200", "{page}");
    dev.stop();

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

#[test]
fn a_second_run_on_the_same_folder_prints_what_will_really_happen() {
    let dir = tempfile::tempdir().unwrap();
    let first = Dev::start(dir.path(), &[]);
    run_steps(dir.path(), &first);
    first.stop();

    // The PAT stored by the first run is still in the vault: the steps say so and start
    // with it, and each answers what it says.
    let second = Dev::start(dir.path(), &[]);
    let text = second.text();
    assert!(
        text.contains("still holds the PAT an earlier run stored"),
        "{text}"
    );
    assert!(text.contains("dev --fresh"), "{text}");
    let steps = second.steps();
    assert!(steps[1].says.contains("201 Created"), "{text}");
    assert!(steps[3].says.contains("403 user-pat-required"), "{text}");
    let outputs = run_steps(dir.path(), &second);
    assert!(
        outputs[2].contains("\"configured\":false"),
        "{}",
        outputs[2]
    );
    let page = open_page(dir.path(), &second, &setup_url(&outputs[3]));
    assert_eq!(status(&page), "200", "{page}");
    second.stop();

    // Store the PAT again, then `--fresh` forgets it: the first run's steps again.
    let third = Dev::start(dir.path(), &[]);
    assert!(third.steps()[1].says.contains("403"), "{}", third.text());
    let store = &third.steps()[2].command;
    assert_eq!(status(&run(dir.path(), store).1), "200");
    third.stop();
    let fresh = Dev::start(dir.path(), &["--fresh"]);
    let text = fresh.text();
    assert!(text.contains("--fresh: removed 1 user PAT(s)"), "{text}");
    assert!(!text.contains("still holds the PAT"), "{text}");
    run_steps(dir.path(), &fresh);
    fresh.stop();
}
