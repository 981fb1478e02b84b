//! The connect page in a real browser: headless Chromium driven by `tests/browser/connect.js`
//! (Node + playwright-core). `bash tests/run.sh` installs both; these tests fail, never skip,
//! when they are missing.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use http::Method;
use patgate::client::Outgoing;
use patgate::clock::ManualClock;

fn node_modules() -> PathBuf {
    std::env::var_os("PATGATE_BROWSER_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-tests/node_modules")
        })
}

/// Runs the browser script; panics (fails the test) when node, playwright-core or chromium
/// are missing.
async fn browse(input: serde_json::Value) -> serde_json::Value {
    let modules = node_modules();
    assert!(
        modules.join("playwright-core").is_dir(),
        "playwright-core is not installed in {}: run `bash tests/run.sh`",
        modules.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: run `bash tests/run.sh` (apt-get install chromium)"
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/connect.js");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(input.to_string())
            .env("NODE_PATH", modules)
            .output()
    })
    .await
    .unwrap()
    .expect("node is missing: run `bash tests/run.sh`");
    assert!(
        out.status.success(),
        "browser script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn new_link(gw: &Gateway, account: &str) -> String {
    let response = gw
        .client()
        .send(&Outgoing {
            method: Method::POST,
            url: gw.url(&format!(
                "/v1/integrations/ghe/users/{account}/connect-link"
            )),
            ..Outgoing::default()
        })
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(&response)["url"].as_str().unwrap().to_string()
}

fn with_connect(ttl: u64) -> Options {
    Options {
        connect_ttl_seconds: Some(ttl),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_enters_a_pat_sees_the_host_login_and_the_next_action_uses_it() {
    let (gw, host) = Gateway::start(with_connect(900)).await;
    let url = new_link(&gw, ACCOUNT_A).await;
    let seen = browse(serde_json::json!({ "url": url, "token": PAT_A, "reload": true })).await;
    assert_eq!(seen["open"]["status"], 200, "{seen}");
    let open = seen["open"]["text"].as_str().unwrap();
    assert!(
        open.contains("GitHub Enterprise Server at localhost"),
        "{open}"
    );
    assert!(!open.contains("ghe"), "the integration id is shown: {open}");
    assert!(open.contains("Make a token on localhost"), "{open}");
    assert!(open.contains("This page works until"), "{open}");
    assert!(open.contains("Personal access tokens"), "{open}");
    // A reload shows the same page; another browser is told the link was used.
    assert_eq!(seen["reload"]["status"], 200, "{seen}");
    assert_eq!(seen["reload"]["text"], seen["open"]["text"], "{seen}");
    assert_eq!(seen["elsewhere"]["status"], 410, "{seen}");
    assert!(
        seen["elsewhere"]["text"]
            .as_str()
            .unwrap()
            .contains("This link was already used"),
        "{seen}"
    );
    assert_eq!(seen["submit"]["status"], 200, "{seen}");
    let after = seen["submit"]["text"].as_str().unwrap();
    assert!(
        after.contains("It belongs to the host login alice"),
        "{after}"
    );
    assert_eq!(seen["submit"]["token_in_html"], false);
    // The stylesheet loads under the CSP, and nothing else is refused.
    assert_eq!(seen["console"], serde_json::json!([]), "{seen}");

    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_and_expired_links_and_a_rejected_token_are_refused_plainly() {
    let (gw, _host) = Gateway::start(with_connect(900)).await;
    // A gateway whose links live one second, on a clock the test moves: its link has
    // expired by the time it is opened.
    let short_clock = ManualClock::new();
    let (short, _short_host) = Gateway::start(Options {
        clock: Some(short_clock.clone()),
        ..with_connect(1)
    })
    .await;
    let stale = new_link(&short, ACCOUNT_B).await;
    short_clock.advance(std::time::Duration::from_secs(2));
    // A token the host does not know: nothing stored, and the page says why.
    let url = new_link(&gw, ACCOUNT_B).await;
    let seen = browse(serde_json::json!({
        "url": url,
        "token": "ghp_NotKnownToTheHost000000000000000000"
    }))
    .await;
    assert_eq!(seen["submit"]["status"], 422, "{seen}");
    let text = seen["submit"]["text"].as_str().unwrap();
    assert!(text.contains("The token was not saved"), "{text}");
    assert_eq!(seen["submit"]["token_in_html"], false);
    assert!(gw
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_B)
        .await
        .unwrap()
        .is_none());

    // The same link again.
    let again = browse(serde_json::json!({ "url": url })).await;
    assert_eq!(again["open"]["status"], 410, "{again}");
    assert!(again["open"]["text"]
        .as_str()
        .unwrap()
        .contains("This link was already used"));

    // A link past its expiry.
    let expired = browse(serde_json::json!({ "url": stale })).await;
    assert_eq!(expired["open"]["status"], 410, "{expired}");
    assert!(expired["open"]["text"]
        .as_str()
        .unwrap()
        .contains("This link has expired"));
    gw.stop().await;
    short.stop().await;
}

/// The user clicks the link in Jira (another site): the first open is a cross-site
/// navigation, and a reload after it must still show the page (the reload cookie is sent
/// back on it), while another browser is told the link was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_clicked_on_another_site_survives_a_reload() {
    let (gw, _host) = Gateway::start(with_connect(900)).await;
    let url = new_link(&gw, ACCOUNT_A).await;
    let seen =
        browse(serde_json::json!({ "url": url, "reload": true, "from_elsewhere": true })).await;
    assert_eq!(seen["open"]["status"], 200, "{seen}");
    assert_eq!(seen["reload"]["status"], 200, "{seen}");
    assert_eq!(seen["reload"]["text"], seen["open"]["text"], "{seen}");
    assert_eq!(seen["elsewhere"]["status"], 410, "{seen}");
    gw.stop().await;
}
