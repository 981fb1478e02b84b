//! Logs: `tracing` to stderr (journald picks it up under systemd), text or JSON.
//!
//! Targets: `patgate::access` carries one decision line per request; `patgate::audit`
//! carries credential changes. No line at any level carries a secret: secrets live in types
//! whose `Debug` redacts them, and request headers are never logged.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(&settings.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    use std::io::IsTerminal as _;
    // Colours only for a person at a terminal; journald and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
