//! The git host as its users know it: its product name, its web address, and the page on it
//! where a user makes a personal access token (pre-filled where the host allows it). For the
//! connect page; pure, from the integration's config alone.
//!
//! | kind | token page |
//! |---|---|
//! | github (github.com, GHE.com, Enterprise Server) | `{web}/settings/tokens/new?scopes=repo&description=…` (classic token; the web host of `api.github.com` is `github.com`, of `api.{sub}.ghe.com` `{sub}.ghe.com`) |
//! | gitlab | `{base}/-/user_settings/personal_access_tokens?name=…&scopes=api`; older releases `{base}/-/profile/personal_access_tokens` (same parameters) |
//! | azure-devops | `{organisation}/_usersSettings/tokens` (no pre-filling) |
//! | tfs | Azure DevOps Server 2019 and later `{collection}/_usersSettings/tokens`; TFS 2017, 2018 `{collection}/_details/security/tokens`; TFS 2013, 2015 none (no PATs) |
//! | codecommit | none: users bring an IAM access key pair (the IAM console makes it) |

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::config::{GithubFlavour, HostKind, Integration, TfsRelease, TfsVersion};

/// The page where a user makes a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPage {
    /// The page, with what it can be pre-filled with in its query.
    pub url: String,
    /// What the page opens with filled in, for the user (`None`: nothing).
    pub prefilled: Option<&'static str>,
    /// The same page on older releases of the host, when it moved.
    pub older_url: Option<String>,
}

/// The host product, e.g. "GitHub Enterprise Server", "Azure DevOps Server 2022".
pub fn product_name(integration: &Integration) -> String {
    let host = integration.base_url.host().unwrap_or_default();
    match integration.kind {
        HostKind::Github => match GithubFlavour::of(&integration.base_url) {
            GithubFlavour::Cloud => "GitHub".into(),
            GithubFlavour::DataResidency => "GitHub Enterprise Cloud".into(),
            GithubFlavour::Server => "GitHub Enterprise Server".into(),
        },
        HostKind::Gitlab if host == "gitlab.com" => "GitLab.com".into(),
        HostKind::Gitlab => "GitLab".into(),
        HostKind::AzureDevops => "Azure DevOps".into(),
        HostKind::Tfs => match release(integration) {
            Some(release) => release.to_string(),
            None => "Azure DevOps Server".into(),
        },
        HostKind::Codecommit => match &integration.codecommit {
            Some(cc) => format!("AWS CodeCommit ({})", cc.region),
            None => "AWS CodeCommit".into(),
        },
    }
}

/// The host's web address as users type it: host name and path, without scheme or port,
/// e.g. `github.com`, `dev.azure.com/fabrikam`, `tfs.example.com/tfs/DefaultCollection`.
pub fn web_address(integration: &Integration) -> String {
    let web = web_base(integration);
    let without_scheme = web.split_once("://").map_or(web.as_str(), |(_, rest)| rest);
    let (authority, path) = without_scheme
        .split_once('/')
        .map_or((without_scheme, ""), |(a, p)| (a, p));
    // `[v6]:port`, `host:port`: the port is plumbing, not the name.
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// The page where a user of this integration makes a token, with `token_name` as the
/// token's name or description where the host takes one; `None` where there is none.
pub fn token_page(integration: &Integration, token_name: &str) -> Option<TokenPage> {
    let base = web_base(integration);
    let name = utf8_percent_encode(token_name, NON_ALPHANUMERIC);
    match integration.kind {
        HostKind::Github => Some(TokenPage {
            url: format!("{base}/settings/tokens/new?scopes=repo&description={name}"),
            prefilled: Some("the “repo” scope and a description"),
            older_url: None,
        }),
        HostKind::Gitlab => Some(TokenPage {
            url: format!("{base}/-/user_settings/personal_access_tokens?name={name}&scopes=api"),
            prefilled: Some("the “api” scope and a name"),
            older_url: Some(format!(
                "{base}/-/profile/personal_access_tokens?name={name}&scopes=api"
            )),
        }),
        HostKind::AzureDevops => Some(TokenPage {
            url: format!("{base}/_usersSettings/tokens"),
            prefilled: None,
            older_url: None,
        }),
        HostKind::Tfs => {
            let path = match release(integration)? {
                TfsRelease::Tfs2013 | TfsRelease::Tfs2015 => return None,
                TfsRelease::Tfs2017 | TfsRelease::Tfs2018 => "_details/security/tokens",
                TfsRelease::Server2019 | TfsRelease::Server2020 | TfsRelease::Server2022 => {
                    "_usersSettings/tokens"
                }
            };
            Some(TokenPage {
                url: format!("{base}/{path}"),
                prefilled: None,
                older_url: None,
            })
        }
        HostKind::Codecommit => None,
    }
}

/// The release of a `tfs` integration, once known (detected at start for `auto`).
fn release(integration: &Integration) -> Option<TfsRelease> {
    match integration.tfs_version {
        Some(TfsVersion::Release(release)) => Some(release),
        _ => None,
    }
}

/// Scheme, authority and path of the host's web pages, without a trailing slash. GitHub's
/// API hosts differ from its web hosts; every other host serves both under the base URL.
fn web_base(integration: &Integration) -> String {
    let url = &integration.base_url;
    let scheme = url.scheme_str().unwrap_or("https");
    let host = url.host().unwrap_or_default();
    if integration.kind == HostKind::Github {
        match GithubFlavour::of(url) {
            GithubFlavour::Cloud => return "https://github.com".into(),
            // `api.{sub}.ghe.com` → `{sub}.ghe.com`.
            GithubFlavour::DataResidency => {
                return format!(
                    "https://{}",
                    host.to_ascii_lowercase().trim_start_matches("api.")
                )
            }
            GithubFlavour::Server => {}
        }
    }
    let authority = url.authority().map_or(host, |a| a.as_str());
    format!("{scheme}://{authority}{}", url.path().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn integration(kind: &str, base_url: &str, extra: &str) -> Integration {
        let text = format!(
            "state_dir = \"s\"\n[master_key]\nfile = \"k\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n\
[[integrations]]\nid = \"x\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\n{extra}"
        );
        Config::parse(std::path::Path::new("/etc/patgate/patgate.toml"), &text)
            .unwrap()
            .integrations
            .remove(0)
    }

    fn page(kind: &str, base_url: &str, extra: &str) -> Option<String> {
        token_page(&integration(kind, base_url, extra), "Jira via patgate").map(|p| p.url)
    }

    #[test]
    fn each_host_its_token_page() {
        for (kind, base, extra, url) in [
            ("github", "https://api.github.com", "", Some("https://github.com/settings/tokens/new?scopes=repo&description=Jira%20via%20patgate")),
            ("github", "https://ghe.example.com", "", Some("https://ghe.example.com/settings/tokens/new?scopes=repo&description=Jira%20via%20patgate")),
            ("github", "https://ghe.example.com:8443/", "", Some("https://ghe.example.com:8443/settings/tokens/new?scopes=repo&description=Jira%20via%20patgate")),
            ("github", "https://api.octocorp.ghe.com", "", Some("https://octocorp.ghe.com/settings/tokens/new?scopes=repo&description=Jira%20via%20patgate")),
            ("gitlab", "https://gitlab.com", "", Some("https://gitlab.com/-/user_settings/personal_access_tokens?name=Jira%20via%20patgate&scopes=api")),
            ("gitlab", "https://example.com/gitlab/", "", Some("https://example.com/gitlab/-/user_settings/personal_access_tokens?name=Jira%20via%20patgate&scopes=api")),
            ("azure-devops", "https://dev.azure.com/fabrikam", "", Some("https://dev.azure.com/fabrikam/_usersSettings/tokens")),
            ("azure-devops", "https://fabrikam.visualstudio.com", "", Some("https://fabrikam.visualstudio.com/_usersSettings/tokens")),
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "version = 2022", Some("https://tfs.example.com/tfs/DefaultCollection/_usersSettings/tokens")),
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "version = 2019", Some("https://tfs.example.com/tfs/DefaultCollection/_usersSettings/tokens")),
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "version = 2018", Some("https://tfs.example.com/tfs/DefaultCollection/_details/security/tokens")),
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "version = 2017", Some("https://tfs.example.com/tfs/DefaultCollection/_details/security/tokens")),
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "version = 2015", None),
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "version = 2013", None),
            // Not yet detected: no guess.
            ("tfs", "https://tfs.example.com/tfs/DefaultCollection", "", None),
            ("codecommit", "https://codecommit.eu-west-1.amazonaws.com", "", None),
        ] {
            assert_eq!(page(kind, base, extra).as_deref(), url, "{kind} {base} {extra}");
        }
        let gitlab = token_page(
            &integration("gitlab", "https://gitlab.example.com", ""),
            "a&b",
        )
        .unwrap();
        assert_eq!(
            gitlab.older_url.as_deref(),
            Some(
                "https://gitlab.example.com/-/profile/personal_access_tokens?name=a%26b&scopes=api"
            )
        );
    }

    #[test]
    fn each_host_its_name_and_address() {
        for (kind, base, extra, product, address) in [
            (
                "github",
                "https://api.github.com",
                "",
                "GitHub",
                "github.com",
            ),
            (
                "github",
                "https://api.octocorp.ghe.com",
                "",
                "GitHub Enterprise Cloud",
                "octocorp.ghe.com",
            ),
            (
                "github",
                "https://127.0.0.1:9443",
                "",
                "GitHub Enterprise Server",
                "127.0.0.1",
            ),
            (
                "gitlab",
                "https://gitlab.com",
                "",
                "GitLab.com",
                "gitlab.com",
            ),
            (
                "gitlab",
                "https://example.com/gitlab",
                "",
                "GitLab",
                "example.com/gitlab",
            ),
            (
                "azure-devops",
                "https://dev.azure.com/fabrikam",
                "",
                "Azure DevOps",
                "dev.azure.com/fabrikam",
            ),
            (
                "tfs",
                "https://tfs.example.com:8080/tfs/DefaultCollection",
                "version = 2022",
                "Azure DevOps Server 2022",
                "tfs.example.com/tfs/DefaultCollection",
            ),
            (
                "tfs",
                "https://tfs.example.com/tfs/DefaultCollection",
                "version = 2015",
                "TFS 2015",
                "tfs.example.com/tfs/DefaultCollection",
            ),
            (
                "codecommit",
                "https://codecommit.eu-west-1.amazonaws.com",
                "",
                "AWS CodeCommit (eu-west-1)",
                "codecommit.eu-west-1.amazonaws.com",
            ),
        ] {
            let i = integration(kind, base, extra);
            assert_eq!(product_name(&i), product, "{base}");
            assert_eq!(web_address(&i), address, "{base}");
        }
    }
}
