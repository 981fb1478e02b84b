//! The configuration file: typed, validated once, and reported precisely when wrong.
//!
//! One TOML file. Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! falls back to a default. Relative paths are resolved against the directory of the file, so
//! a config and its certificates can move together. `config/patgate.example.toml` documents
//! every key with its default; a test keeps the two in step.
//!
//! [`Config::load`] checks the syntax and the values. It does not read certificates or keys:
//! [`crate::server::Runtime::build`] does, and reports failures with the same
//! [`ConfigError`] shape (file, key, reason), so `patgate config check` covers both.
//!
//! # Layout
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Config`], [`ConfigError`], the entry points [`Config::load`] and [`Config::parse`] |
//! | `types.rs` | the validated parts: listeners, keys, [`Integration`], [`HostKind`], [`TfsVersion`], … |
//! | `raw.rs` | the file as written (serde structs) and [`defaults`] |
//! | `validate.rs` | the validator: from the file as written to [`Config`], or the first error |
//! | `rate_limits.rs` | the `[rate_limits]` section: [`RateLimitSettings`], its file form, defaults and checks |

mod rate_limits;
mod raw;
mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use rate_limits::{
    HostThrottleSettings, Override, QuotaSettings, RateLimitSettings, TierSettings,
};
pub use raw::defaults;
pub use types::{
    AdminSettings, ApiListener, AppKeyConfig, AppKeyMaterial, ClientSan, CodeCommitSettings,
    ConnectListener, HostKind, Integration, LogFormat, LogSettings, MasterKeySource,
    ServiceSettings, SignatureSettings, TfsRelease, TfsVersion, TrustRoots, VaultSettings,
};

use raw::RawConfig;
use validate::Validator;

/// Where a bad setting is and why it is bad.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {reason}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the key, e.g. `integrations[0].base_url`; empty for whole-file errors.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and reloads).
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub master_key: MasterKeySource,
    pub api: ApiListener,
    pub signatures: SignatureSettings,
    pub app_keys: Vec<AppKeyConfig>,
    pub integrations: Vec<Integration>,
    /// The connect page's listener; without it no connect links are made.
    pub connect: Option<ConnectListener>,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub service: ServiceSettings,
    pub vault: VaultSettings,
    /// `[rate_limits]`: local quotas and holds when the host throttles.
    pub rate_limits: RateLimitSettings,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "", format!("cannot read the file: {e}")))?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if it were the file at `path` (relative paths resolve against
    /// its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ConfigError::new(path, key, toml_reason(e.inner()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Validator { file: path, base }.config(raw)
    }
}

/// toml's messages start with a multi-line source excerpt; keep the line number and the
/// reason on one line.
fn toml_reason(err: &toml::de::Error) -> String {
    let message = err.message().trim().to_string();
    match err.span() {
        Some(span) => message + &format!(" (at byte {})", span.start),
        None => message,
    }
}

/// The smallest config that parses, for the unit tests of the modules that read a section of it.
#[cfg(test)]
pub(crate) const TEST_MINIMAL: &str = r#"
state_dir = "state"
[master_key]
file = "master-key"
[api]
listen = "127.0.0.1:8443"
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
[[integrations]]
id = "ghe"
kind = "github"
base_url = "https://ghe.example.com/"
"#;

/// [`Config::parse`] of `text` as `/etc/patgate/patgate.toml`, for the unit tests.
#[cfg(test)]
fn test_parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/patgate/patgate.toml"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = TEST_MINIMAL;
    use super::test_parse as parse;

    #[test]
    fn unknown_key_names_its_path() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nrequire_user_pats = true",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "integrations[0].require_user_pats");
        assert!(
            err.reason.starts_with("unknown field `require_user_pats`"),
            "{err}"
        );
        assert!(err.to_string().starts_with("/etc/patgate/patgate.toml: "));
    }

    #[test]
    fn wrong_type_names_its_path() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nrequire_user_pat = \"yes\"",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "integrations[0].require_user_pat");
    }

    #[test]
    fn unknown_kind_is_refused() {
        let err = parse(&MINIMAL.replace("\"github\"", "\"gitea\"")).unwrap_err();
        assert_eq!(err.key, "integrations[0].kind");
        assert!(err.reason.contains("gitea"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let err = parse("state_dir = \n").unwrap_err();
        assert!(err.reason.contains("at byte"), "{err}");
    }
}
