//! Azure DevOps Services and Azure DevOps Server / TFS through the wire: each action reaches
//! the host exactly as sent, with `Authorization: Basic …` for the credential the policy
//! chose and `X-TFS-FedAuthRedirect: Suppress`; every policy row, TFS 2013/2015 included;
//! refs bodies that are not one plain action; TFS release detection at start; and each
//! request checked against the official Swagger descriptions.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::Method;
use patgate::client::Outgoing;
use patgate::config::{TfsRelease, TfsVersion};
use patgate::devpki::DevCa;
use patgate::vault::Credential;

const ZERO: &str = "0000000000000000000000000000000000000000";
const SHA: &str = "aa218f56b14c9653891f9e74264a383fa43fefbd";
const SHA2: &str = "bb218f56b14c9653891f9e74264a383fa43fefbd";
const REPO: &str = "/git/ghe/Fabrikam-Fiber/_apis/git/repositories/api";
const TFS_USER: &str = "FABRIKAM\\tfs-svc";
const TFS_PASSWORD: &str = "Integration-Passw0rd-DoNotLeak";
/// What `pat-unsupported-by-host` says, word for word.
const TFS_REFUSAL: &str = "TFS 2013 and TFS 2015 do not support personal access tokens. With Require User PAT on, branches and pull requests cannot be created or deleted through this integration.";

fn basic(pair: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn refs_body(updates: &[(&str, &str, &str)]) -> Bytes {
    let items: Vec<serde_json::Value> = updates
        .iter()
        .map(|(name, old, new)| {
            serde_json::json!({"name": name, "oldObjectId": old, "newObjectId": new})
        })
        .collect();
    Bytes::from(serde_json::to_vec(&items).unwrap())
}

fn refs(gw: &Gateway, account: Option<&str>, body: Bytes) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url(&format!("{REPO}/refs?api-version=7.1")),
        body: Some(body),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

fn create_branch(gw: &Gateway, account: Option<&str>) -> Outgoing {
    refs(
        gw,
        account,
        refs_body(&[("refs/heads/feature/PROJ-1-fix", ZERO, SHA)]),
    )
}

fn delete_branch(gw: &Gateway, account: Option<&str>) -> Outgoing {
    refs(
        gw,
        account,
        refs_body(&[("refs/heads/feature/PROJ-1-fix", SHA, ZERO)]),
    )
}

fn create_pr(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::POST,
        url: gw.url(&format!("{REPO}/pullrequests?api-version=7.1")),
        body: Some(Bytes::from_static(
            br#"{"sourceRefName":"refs/heads/feature/PROJ-1-fix","targetRefName":"refs/heads/main","title":"PROJ-1 Fix the build","description":"From Jira"}"#,
        )),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

fn read(gw: &Gateway, account: Option<&str>) -> Outgoing {
    Outgoing {
        method: Method::GET,
        url: gw.url(&format!("{REPO}/refs?filter=heads%2F&api-version=7.1")),
        account: account.map(str::to_string),
        ..Outgoing::default()
    }
}

/// Moves an existing branch: an other-write.
fn move_branch(gw: &Gateway, account: Option<&str>) -> Outgoing {
    refs(gw, account, refs_body(&[("refs/heads/main", SHA, SHA2)]))
}

fn host_path(out: &Outgoing) -> String {
    let url: http::Uri = out.url.parse().unwrap();
    let pq = url.path_and_query().unwrap().as_str();
    pq.strip_prefix(&format!("/git/{INTEGRATION_ID}"))
        .unwrap()
        .to_string()
}

type Action = fn(&Gateway, Option<&str>) -> Outgoing;
const ACTIONS: [(&str, Action); 3] = [
    ("create branch", create_branch),
    ("delete branch", delete_branch),
    ("create pull request", create_pr),
];

/// The TFS account's credential.
fn tfs_account() -> Credential {
    Credential::UsernamePassword {
        username: TFS_USER.into(),
        password: TFS_PASSWORD.to_string().into(),
    }
}

/// A host with this probe behaviour and a gateway for `kind` in front of its
/// `base_path` (organisation or collection). `start` fails as `patgate run` would.
async fn start(
    kind: &'static str,
    base_path: &str,
    probe: TfsProbe,
    opts: Options,
) -> (Result<Gateway, String>, RecordingHost) {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    *host.tfs_probe.lock().unwrap() = probe;
    host.add_user(&format!("{TFS_USER}:{TFS_PASSWORD}"), TFS_USER, "");
    let opts = Options {
        kind,
        base_url: Some(format!("{}{base_path}", host.base_url())),
        ..opts
    };
    let setup = Setup::with_ca(Arc::new(tempfile::tempdir().unwrap()), ca, &host, &opts).await;
    (setup.try_start().await, host)
}

async fn services(opts: Options) -> (Gateway, RecordingHost) {
    let (gw, host) = start("azure-devops", "/fabrikam", TfsProbe::Nothing, opts).await;
    (gw.unwrap(), host)
}

/// A server of a given release (no detection), its integration account a user name and
/// password for 2013/2015 and a PAT otherwise.
async fn server(release: &str, opts: Options) -> (Gateway, RecordingHost) {
    let old = release == "2013" || release == "2015";
    let opts = Options {
        integration_toml: format!("version = {release}"),
        integration_secret: old.then(tfs_account),
        ..opts
    };
    let (gw, host) = start("tfs", "/tfs/DefaultCollection", TfsProbe::Nothing, opts).await;
    (gw.unwrap(), host)
}

#[tokio::test]
async fn each_action_reaches_azure_devops_exactly_with_the_users_pat() {
    let (gw, host) = services(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    for (name, action) in ACTIONS {
        let out = action(&gw, Some(ACCOUNT_A));
        let response = client.send(&out).await.unwrap();
        assert!(
            response.status().is_success(),
            "{name}: {} {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        );
        assert_eq!(response.headers()["patgate-credential"], "user", "{name}");
        let seen = host.last();
        assert_eq!(seen.method, Method::POST, "{name}");
        // The organisation in the base URL, then the app's path as it was sent.
        assert_eq!(
            seen.path_and_query,
            format!("/fabrikam{}", host_path(&out)),
            "{name}"
        );
        assert_eq!(seen.body, out.body.clone().unwrap(), "{name}");
        assert_eq!(
            seen.authorization(),
            Some(&*basic(&format!(":{PAT_A}"))),
            "{name}"
        );
        assert_eq!(seen.headers["x-tfs-fedauthredirect"], "Suppress", "{name}");
        assert_eq!(seen.headers["user-agent"], PATGATE_USER_AGENT, "{name}");
    }
    assert_eq!(host.requests().len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn several_creates_are_one_action_and_other_ref_updates_are_refused() {
    let (gw, host) = services(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    let two = refs(
        &gw,
        Some(ACCOUNT_A),
        refs_body(&[
            ("refs/heads/PROJ-1", ZERO, SHA),
            ("refs/heads/PROJ-2", ZERO, SHA),
        ]),
    );
    let response = client.send(&two).await.unwrap();
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(host.last().body, two.body.unwrap());
    let refused = [
        refs_body(&[
            ("refs/heads/PROJ-1", ZERO, SHA),
            ("refs/heads/PROJ-2", SHA, ZERO),
        ]),
        refs_body(&[("refs/heads/main", SHA, SHA2)]),
        refs_body(&[("refs/tags/v1.0", ZERO, SHA)]),
        Bytes::from_static(b"[]"),
        Bytes::from_static(b"refs/heads/x"),
    ];
    for body in refused {
        let response = client
            .send(&refs(&gw, Some(ACCOUNT_A), body.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{body:?}");
        assert_eq!(problem_code(&response), "operation-not-allowed", "{body:?}");
    }
    // TFVC writes are not actions.
    let tfvc = Outgoing {
        method: Method::POST,
        url: gw.url("/git/ghe/Fabrikam-Fiber/_apis/tfvc/changesets?api-version=7.1"),
        body: Some(Bytes::from_static(b"{}")),
        account: Some(ACCOUNT_A.into()),
        ..Outgoing::default()
    };
    assert_eq!(
        problem_code(&client.send(&tfvc).await.unwrap()),
        "operation-not-allowed"
    );
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

/// DESIGN.md's policy table, every row, for Azure DevOps Services and for servers.
#[tokio::test]
async fn every_policy_row() {
    enum Expect {
        Credential(&'static str),
        Refused(&'static str),
    }
    use Expect::*;
    // (host: "services" or a server release, require_user_pat, allow_other_writes,
    //  request, account, expected)
    type Row = (
        &'static str,
        bool,
        bool,
        Action,
        Option<&'static str>,
        Expect,
    );
    let mut rows: Vec<Row> = Vec::new();
    for host in ["services", "2017", "2022"] {
        rows.extend([
            (
                host,
                false,
                false,
                read as Action,
                None,
                Credential("integration"),
            ),
            (
                host,
                true,
                false,
                read,
                Some(ACCOUNT_A),
                Credential("integration"),
            ),
            (
                host,
                false,
                false,
                create_branch,
                Some(ACCOUNT_A),
                Credential("integration"),
            ),
            (
                host,
                true,
                false,
                create_branch,
                Some(ACCOUNT_A),
                Credential("user"),
            ),
            (
                host,
                true,
                false,
                delete_branch,
                Some(ACCOUNT_A),
                Credential("user"),
            ),
            (
                host,
                true,
                false,
                create_pr,
                Some(ACCOUNT_A),
                Credential("user"),
            ),
            (
                host,
                true,
                false,
                create_pr,
                Some(ACCOUNT_B),
                Refused("user-pat-required"),
            ),
            (
                host,
                true,
                false,
                move_branch,
                Some(ACCOUNT_A),
                Refused("operation-not-allowed"),
            ),
            (
                host,
                true,
                true,
                move_branch,
                Some(ACCOUNT_A),
                Credential("integration"),
            ),
        ]);
    }
    for host in ["2013", "2015"] {
        rows.extend([
            (
                host,
                true,
                false,
                read as Action,
                None,
                Credential("integration"),
            ),
            (
                host,
                false,
                false,
                create_branch,
                Some(ACCOUNT_A),
                Credential("integration"),
            ),
            (
                host,
                false,
                false,
                create_pr,
                Some(ACCOUNT_B),
                Credential("integration"),
            ),
            // action | on | TFS 2013/2015 | any -> pat-unsupported-by-host
            (
                host,
                true,
                false,
                create_branch,
                Some(ACCOUNT_A),
                Refused("pat-unsupported-by-host"),
            ),
            (
                host,
                true,
                false,
                delete_branch,
                Some(ACCOUNT_B),
                Refused("pat-unsupported-by-host"),
            ),
            (
                host,
                true,
                false,
                create_pr,
                Some(ACCOUNT_A),
                Refused("pat-unsupported-by-host"),
            ),
            (
                host,
                false,
                false,
                move_branch,
                Some(ACCOUNT_A),
                Refused("operation-not-allowed"),
            ),
            (
                host,
                false,
                true,
                move_branch,
                Some(ACCOUNT_A),
                Credential("integration"),
            ),
        ]);
    }
    for (i, (kind, require_user_pat, allow_other_writes, request, account, expect)) in
        rows.into_iter().enumerate()
    {
        let opts = Options {
            require_user_pat,
            allow_other_writes,
            ..Options::default()
        };
        let (gw, host) = match kind {
            "services" => services(opts).await,
            release => server(release, opts).await,
        };
        // Account A has a PAT (a TFS 2013/2015 user could not have made one; it is stored
        // anyway to show that it is never used there).
        gw.store_pat(ACCOUNT_A, PAT_A).await;
        let out = request(&gw, account);
        let response = gw.client().send(&out).await.unwrap();
        let row = format!(
            "row {i}: {kind} {} {} rup={require_user_pat} aow={allow_other_writes} account={account:?}",
            out.method,
            host_path(&out)
        );
        match expect {
            Credential(which) => {
                assert!(
                    response.status().is_success(),
                    "{row}: {} {}",
                    response.status(),
                    String::from_utf8_lossy(response.body())
                );
                assert_eq!(response.headers()["patgate-credential"], which, "{row}");
                let expected = match (which, kind) {
                    ("user", _) => basic(&format!(":{PAT_A}")),
                    (_, "2013" | "2015") => basic(&format!("{TFS_USER}:{TFS_PASSWORD}")),
                    _ => basic(&format!(":{INTEGRATION_TOKEN}")),
                };
                let seen = host.last();
                assert_eq!(seen.authorization(), Some(&*expected), "{row}");
                assert_eq!(seen.headers["x-tfs-fedauthredirect"], "Suppress", "{row}");
                assert!(seen.path_and_query.ends_with(&host_path(&out)), "{row}");
            }
            Refused(code) => {
                assert_eq!(response.status(), 403, "{row}");
                assert_eq!(problem_code(&response), code, "{row}");
                if code == "pat-unsupported-by-host" {
                    assert_eq!(json(&response)["detail"], TFS_REFUSAL, "{row}");
                }
                assert!(host.requests().is_empty(), "{row}: the host was called");
            }
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn tfs_2015_uses_the_integration_account_and_refuses_with_require_user_pat() {
    let (gw, host) = server(
        "2015",
        Options {
            require_user_pat: false,
            ..Options::default()
        },
    )
    .await;
    let client = gw.client();
    for (name, action) in ACTIONS {
        let out = action(&gw, Some(ACCOUNT_A));
        let response = client.send(&out).await.unwrap();
        assert!(response.status().is_success(), "{name}");
        assert_eq!(response.headers()["patgate-credential"], "integration");
        let seen = host.last();
        assert_eq!(
            seen.path_and_query,
            format!("/tfs/DefaultCollection{}", host_path(&out))
        );
        assert_eq!(seen.body, out.body.unwrap());
        assert_eq!(
            seen.authorization(),
            Some(&*basic(&format!("{TFS_USER}:{TFS_PASSWORD}"))),
            "{name}"
        );
    }
    gw.stop().await;

    let (gw, host) = server("2015", Options::default()).await;
    for (name, action) in ACTIONS {
        let response = gw
            .client()
            .send(&action(&gw, Some(ACCOUNT_A)))
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{name}");
        assert_eq!(problem_code(&response), "pat-unsupported-by-host");
        assert_eq!(json(&response)["detail"], TFS_REFUSAL);
    }
    assert!(host.requests().is_empty());
    // A PAT cannot even be stored there: TFS 2015 has none.
    let put = Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{PAT_A}"}}"#))),
        ..Outgoing::default()
    };
    let logs = common::logs::global("info");
    let response = gw.client().send(&put).await.unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(problem_code(&response), "host-has-no-pats");
    assert_eq!(
        json(&response)["detail"],
        "TFS 2015 has no personal access tokens (they came with TFS 2017), so no PAT can be stored for integration `ghe`; its users' requests use the integration's own credential"
    );
    // The audit stream records the refusal with the same code.
    let refused = logs.lines(&["patgate::audit", "event=\"pat-refused\"", ACCOUNT_A]);
    assert!(
        refused
            .iter()
            .any(|l| l.contains("code=\"host-has-no-pats\"")),
        "{refused:#?}"
    );
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn pats_are_validated_with_connection_data() {
    let (gw, host) = services(Options::default()).await;
    let put = |token: &str| Outgoing {
        method: Method::PUT,
        url: gw.url(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")),
        body: Some(Bytes::from(format!(r#"{{"token":"{token}"}}"#))),
        ..Outgoing::default()
    };
    let response = gw.client().send(&put(PAT_A)).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    assert_eq!(json(&response)["host_login"], "alice");
    let who = host.last();
    assert_eq!(who.method, Method::GET);
    assert_eq!(who.path_and_query, "/fabrikam/_apis/connectionData");
    assert_eq!(who.authorization(), Some(&*basic(&format!(":{PAT_A}"))));
    assert_eq!(who.headers["x-tfs-fedauthredirect"], "Suppress");
    let response = gw.client().send(&put("not-a-pat")).await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(problem_code(&response), "pat-invalid");
    gw.stop().await;
}

#[tokio::test]
async fn tfs_release_is_detected_at_start() {
    // (probe, integration secret, expected release, PATs?)
    let cases = [
        (
            TfsProbe::Locations("7.1"),
            None,
            TfsRelease::Server2022,
            true,
        ),
        (
            TfsProbe::Locations("5.1-preview"),
            None,
            TfsRelease::Server2019,
            true,
        ),
        (TfsProbe::OutOfRange("4.1"), None, TfsRelease::Tfs2018, true),
        (
            TfsProbe::Locations("2.3"),
            Some(tfs_account()),
            TfsRelease::Tfs2015,
            false,
        ),
        (
            TfsProbe::OutOfRange("1.0"),
            Some(tfs_account()),
            TfsRelease::Tfs2013,
            false,
        ),
    ];
    for (probe, secret, release, pats) in cases {
        let (gw, host) = start(
            "tfs",
            "/tfs/DefaultCollection",
            probe,
            Options {
                integration_secret: secret.clone(),
                integration_toml: "version = \"auto\"".into(),
                ..Options::default()
            },
        )
        .await;
        let gw = gw.unwrap_or_else(|e| panic!("{probe:?}: {e}"));
        let integration = gw.runtime.integration(INTEGRATION_ID).unwrap();
        assert_eq!(
            integration.config().tfs_version,
            Some(TfsVersion::Release(release)),
            "{probe:?}"
        );
        assert_eq!(integration.adapter().supports_pats(), pats, "{probe:?}");
        // The probes carried the integration's credential and asked the collection.
        let first = &host.requests()[0];
        assert_eq!(first.method, Method::OPTIONS);
        assert_eq!(first.path_and_query, "/tfs/DefaultCollection/_apis");
        let expected = match &secret {
            Some(_) => basic(&format!("{TFS_USER}:{TFS_PASSWORD}")),
            None => basic(&format!(":{INTEGRATION_TOKEN}")),
        };
        assert_eq!(first.authorization(), Some(&*expected));
        assert_eq!(first.headers["x-tfs-fedauthredirect"], "Suppress");
        if let TfsProbe::OutOfRange(_) = probe {
            assert_eq!(
                host.requests()[1].path_and_query,
                "/tfs/DefaultCollection/_apis/projects?api-version=99.0"
            );
        }
        // What a user sees: with Require User PAT on, an old server refuses the action.
        gw.store_pat(ACCOUNT_A, PAT_A).await;
        let response = gw
            .client()
            .send(&create_branch(&gw, Some(ACCOUNT_A)))
            .await
            .unwrap();
        if pats {
            assert_eq!(response.headers()["patgate-credential"], "user");
        } else {
            assert_eq!(problem_code(&response), "pat-unsupported-by-host");
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_failed_detection_is_a_clear_start_error() {
    let (gw, host) = start(
        "tfs",
        "/tfs/DefaultCollection",
        TfsProbe::Nothing,
        Options::default(),
    )
    .await;
    let err = gw.expect_err("patgate started without knowing the release");
    assert!(err.contains("integrations[0].version"), "{err}");
    assert!(err.contains("integration `ghe`"), "{err}");
    assert!(err.contains("set `version`"), "{err}");
    assert!(err.contains("OPTIONS _apis answered 404"), "{err}");
    assert_eq!(host.requests().len(), 2);

    // Refused credentials are said as such, not as an unknown release.
    let (gw, _host) = start(
        "tfs",
        "/tfs/DefaultCollection",
        TfsProbe::Locations("7.0"),
        Options {
            integration_secret: Some(Credential::Token("wrong".to_string().into())),
            ..Options::default()
        },
    )
    .await;
    let err = gw.expect_err("patgate started with a refused secret");
    assert!(
        err.contains("refused the integration's credentials (HTTP 401"),
        "{err}"
    );
}

/// Each action as the host received it matches the official Azure DevOps descriptions:
/// Services 7.1, Server 2022 (7.1), and TFS 2018 (4.1).
#[tokio::test]
async fn requests_match_the_azure_devops_descriptions() {
    let cases = [
        (
            "azure-devops/azure-devops-git-7.1.json",
            "azure-devops",
            "/fabrikam",
            "7.1",
        ),
        (
            "azure-devops/azure-devops-server-git-azure-devops-server-7.1.json",
            "tfs",
            "/DefaultCollection",
            "7.1",
        ),
        (
            "azure-devops/azure-devops-server-git-tfs-4.1.json",
            "tfs",
            "/DefaultCollection",
            "4.1",
        ),
    ];
    for (file, kind, base, api_version) in cases {
        let spec = conformance::load(file);
        assert_eq!(
            spec["securityDefinitions"]["accessToken"]["type"], "basic",
            "{file}"
        );
        let (gw, host) = start(
            kind,
            base,
            TfsProbe::Nothing,
            Options {
                integration_toml: if kind == "tfs" {
                    "version = 2022".into()
                } else {
                    String::new()
                },
                ..Options::default()
            },
        )
        .await;
        let gw = gw.unwrap();
        gw.store_pat(ACCOUNT_A, PAT_A).await;
        let client = gw.client();
        let update: &[&str] = &["Refs_Update Refs", "Update Refs"];
        let actions: [(Action, &[&str]); 4] = [
            (create_branch, update),
            (delete_branch, update),
            (create_pr, &["Pull Requests_Create", "Create"]),
            (read, &["Refs_List", "List"]),
        ];
        for (action, expected) in actions {
            let mut out = action(&gw, Some(ACCOUNT_A));
            out.url = out
                .url
                .replace("api-version=7.1", &format!("api-version={api_version}"));
            let response = client.send(&out).await.unwrap();
            assert!(response.status().is_success(), "{file}");
            let seen = host.last();
            assert!(seen.authorization().unwrap().starts_with("Basic "));
            let operation =
                conformance::check(&spec, &seen).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                expected.contains(&operation.as_str()),
                "{file}: {operation}"
            );
        }
        // The check can fail: no api-version, a body of the wrong shape.
        let mut bad = host.requests()[0].clone();
        bad.path_and_query = bad.path_and_query.split('?').next().unwrap().to_string();
        let err = conformance::check(&spec, &bad).unwrap_err();
        assert!(err.contains("`api-version`"), "{err}");
        let mut bad = host.requests()[0].clone();
        bad.body = Bytes::from_static(br#"{"name":"refs/heads/x"}"#);
        assert!(conformance::check(&spec, &bad).is_err());
        let mut bad = host.requests()[2].clone();
        bad.body = Bytes::from_static(br#"{"sourceRefName":7}"#);
        assert!(conformance::check(&spec, &bad)
            .unwrap_err()
            .contains("sourceRefName"));
        gw.stop().await;
    }
}

/// `patgate config check` asks the server too (the vault is not locked while the service is
/// stopped), and reports a failed detection naming the integration.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_reports_a_failed_detection() {
    let ca = Arc::new(DevCa::generate("patgate test CA").unwrap());
    let host = RecordingHost::start(&ca, HostMode::Normal).await;
    let opts = Options {
        kind: "tfs",
        base_url: Some(format!("{}/tfs/DefaultCollection", host.base_url())),
        ..Options::default()
    };
    let setup = Setup::with_ca(Arc::new(tempfile::tempdir().unwrap()), ca, &host, &opts).await;
    let check = |config: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_patgate"))
                .args(["config", "check"])
                .arg(&config)
                .env_remove("PATGATE_CONFIG")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let out = check(setup.config_path.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "integrations[0].version: detecting the server release of integration `ghe` failed"
        ),
        "{stderr}"
    );
    // Once the server answers, the same file passes.
    *host.tfs_probe.lock().unwrap() = TfsProbe::Locations("6.0");
    let out = check(setup.config_path.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn on_tfs_2015_the_status_api_and_the_connect_page_say_pats_are_not_supported() {
    let opts = Options {
        connect_ttl_seconds: Some(900),
        ..Options::default()
    };
    let (gw, _host) = server("2015", opts).await;
    let client = gw.client();
    let status = client
        .send(&gw.get(&format!("/v1/integrations/ghe/users/{ACCOUNT_A}/pat")))
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body = json(&status);
    assert_eq!(body["host_supports_pats"], false);
    assert!(body["note"]
        .as_str()
        .unwrap()
        .contains("does not support personal access tokens"));

    let link = client
        .send(&patgate::client::Outgoing {
            method: http::Method::POST,
            url: gw.url(&format!(
                "/v1/integrations/ghe/users/{ACCOUNT_A}/connect-link"
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    let url = json(&link)["url"].as_str().unwrap().to_string();
    let page = client
        .send_signed(
            http::Request::get(url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let html = String::from_utf8_lossy(page.body());
    assert_eq!(page.status(), 200, "{html}");
    assert!(
        html.contains("Personal access tokens are not supported by this host"),
        "{html}"
    );
    assert!(
        !html.contains("name=\"token\""),
        "no token field on TFS 2015: {html}"
    );
    gw.stop().await;
}
