//! The configuration file: typed, validated once, and reported precisely when wrong.
//!
//! One TOML file. Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! falls back to a default. Relative paths are resolved against the directory of the file, so
//! a config and its certificates can move together. `config/patgate.example.toml` documents
//! every key with its default; a test keeps the two in step.
//!
//! [`Config::load`] checks the syntax and the values. It does not read certificates or keys:
//! [`crate::runtime::Runtime::start`] does, and reports failures with the same
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
//! | `connections.rs` | the `[connections]` section: [`ConnectionLimits`], its file form, defaults and checks |
//! | `store.rs` | the `[store]` section: [`StoreSettings`], its file form, defaults and checks; [`read_store_url`] |

mod connections;
mod rate_limits;
mod raw;
mod store;
mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use connections::ConnectionLimits;
pub use rate_limits::{
    HostThrottleSettings, Override, QuotaSettings, RateLimitSettings, TierSettings,
};
pub use raw::defaults;
pub use store::{
    read_store_url, PostgresSettings, StoreSettings, StoreUrlSource, STORE_URL_CREDENTIAL,
};
pub use types::{
    AdminSettings, ApiListener, AppKeyConfig, AppKeyMaterial, ClientCertificateMode, ClientSan,
    CodeCommitSettings, ConnectListener, ForgeApp, ForgeEnvironment, ForgeSettings, GithubFlavour,
    HostKind, Integration, LogFormat, LogSettings, MasterKeySource, ServiceSettings,
    SignatureSettings, TfsRelease, TfsVersion, TrustRoots, VaultSettings,
};

use raw::RawConfig;
use validate::Validator;

/// Where a bad setting is and why it is bad: `{file}: {key}: {reason}`, or `{file}: {reason}`
/// when the error is about the whole file (it cannot be read, or its TOML does not parse).
#[derive(Debug, thiserror::Error)]
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

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.reason)
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
    /// `[forge]`: the Forge app(s) trusted and where their tokens' keys come from.
    pub forge: Option<ForgeSettings>,
    /// `[connections]`: how many connections, how long idle, how long a body may take.
    pub connections: ConnectionLimits,
    /// `[store]`: sled (one instance) or PostgreSQL (replicas that share one database).
    pub store: StoreSettings,
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
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| toml_error(path, text, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Validator { file: path, base }.config(raw)
    }
}

/// A TOML or type error as a [`ConfigError`] on one line. toml's own `Display` opens with a
/// multi-line excerpt of the file; its message alone may still hold line breaks
/// ("invalid string\nexpected `\"`"), which are joined with "; ".
///
/// Where the error has a key (a wrong type, an unknown field), the key says where it is and
/// the line and column follow the reason in parentheses, so the message still reads
/// `file: key: reason`; a syntax error has no key, and the line and column take its place:
/// `patgate.toml: line 12, column 8: invalid basic string`.
fn toml_error(
    path: &Path,
    text: &str,
    err: &serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let key = err.path().to_string();
    let key = if key == "." { String::new() } else { key };
    let message = err
        .inner()
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let reason = match err.inner().span() {
        None => message,
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            if key.is_empty() {
                format!("line {line}, column {column}: {message}")
            } else {
                format!("{message} (line {line}, column {column})")
            }
        }
    };
    ConfigError::new(path, key, reason)
}

/// The line and column of byte `offset` of `text`, both counted from 1; the column counts
/// characters, as editors do, not bytes.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
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
    fn wrong_type_names_its_path_line_and_column() {
        let text = MINIMAL.replace(
            "kind = \"github\"",
            "kind = \"github\"\nrequire_user_pat = \"yes\"",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "integrations[0].require_user_pat");
        // The key says where; the line and column of the value follow the reason.
        assert_eq!(
            err.to_string(),
            "/etc/patgate/patgate.toml: integrations[0].require_user_pat: invalid type: string \"yes\", expected a boolean (line 13, column 20)"
        );
    }

    #[test]
    fn a_pat_expiry_warning_past_a_year_is_refused() {
        let with = |days: &str| {
            parse(&MINIMAL.replace(
                "kind = \"github\"",
                &format!("kind = \"github\"\npat_expiry_warning_days = {days}"),
            ))
        };
        assert_eq!(
            with("365").unwrap().integrations[0].pat_expiry_warning,
            std::time::Duration::from_secs(365 * 86_400)
        );
        assert_eq!(
            with("0").unwrap().integrations[0].pat_expiry_warning,
            std::time::Duration::ZERO
        );
        let err = with("366").unwrap_err();
        assert_eq!(err.key, "integrations[0].pat_expiry_warning_days");
        assert_eq!(err.reason, "must be 0 to 365");
        assert!(with("-1").is_err());
    }

    #[test]
    fn unknown_kind_is_refused() {
        let err = parse(&MINIMAL.replace("\"github\"", "\"gitea\"")).unwrap_err();
        assert_eq!(err.key, "integrations[0].kind");
        assert!(err.reason.contains("gitea"), "{err}");
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column_in_place_of_a_key() {
        // The string on line 3 never ends: toml stops at the end of that line.
        let err = parse("state_dir = \"s\"\n\nname = \"abc\n").unwrap_err();
        assert_eq!(err.key, "");
        assert_eq!(
            err.to_string(),
            "/etc/patgate/patgate.toml: line 3, column 12: invalid basic string"
        );
        // toml's message on two lines becomes one.
        let err = parse("state_dir = \n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/patgate/patgate.toml: line 1, column 13: invalid string; expected `\"`, `'`"
        );
        // Columns count characters: `ü` is two bytes and one column.
        let err = parse("state_dir = \"\u{fc}\"x\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/patgate/patgate.toml: line 1, column 16: expected newline, `#`"
        );
    }

    #[test]
    fn a_whole_file_error_has_no_empty_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("patgate.toml");
        let err = Config::load(&missing).unwrap_err();
        assert_eq!(err.key, "");
        let prefix = format!("{}: cannot read the file: ", missing.display());
        assert!(err.to_string().starts_with(&prefix), "{err}");
        let err = ConfigError::new(Path::new("patgate.toml"), "", "why");
        assert_eq!(err.to_string(), "patgate.toml: why");
        let err = ConfigError::new(Path::new("patgate.toml"), "api.cert", "why");
        assert_eq!(err.to_string(), "patgate.toml: api.cert: why");
    }

    #[test]
    fn line_and_column_count_from_one() {
        let text = "ab\r\n\u{fc}x\n";
        for (offset, expected) in [
            (0, (1, 1)),
            (2, (1, 3)),
            (4, (2, 1)),
            // Inside `ü`: the character's own column.
            (5, (2, 1)),
            (6, (2, 2)),
            (text.len(), (3, 1)),
            (text.len() + 10, (3, 1)),
        ] {
            assert_eq!(line_column(text, offset), expected, "{offset}");
        }
        assert_eq!(line_column("", 0), (1, 1));
    }
}
