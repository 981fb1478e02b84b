//! The `[connections]` section: how many connections the listeners hold open and how long
//! a connection may sit without a request or send a body, with its defaults and checks.
//!
//! The TLS handshake and the request head have their own keys under `[api]`
//! (`handshake_timeout_ms`, `header_read_timeout_ms`); both apply to the connect listener
//! too. [`crate::listener`] enforces all of them; this file only reads and checks the
//! section.
//!
//! ```toml
//! [connections]
//! idle_timeout_ms = 30000
//! body_read_timeout_ms = 30000
//! max_api = 4096
//! max_api_per_client = 1024
//! max_connect = 256
//! max_admin = 32
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Defaults of `[connections]`; the example config repeats them and a test checks it does.
pub(crate) mod defaults {
    /// `connections.idle_timeout_ms`: below the keep-alive timeouts of common load balancers
    /// (60 s), so a pooled client sees patgate close first rather than a balancer.
    pub(crate) const IDLE_TIMEOUT_MS: u64 = 30_000;
    /// `connections.body_read_timeout_ms`: a 1 MiB body (the default `max_body_bytes`) at
    /// about 35 KB/s.
    pub(crate) const BODY_READ_TIMEOUT_MS: u64 = 30_000;
    /// `connections.max_api`.
    pub(crate) const MAX_API: usize = 4096;
    /// `connections.max_api_per_client`: a quarter of `max_api`, so one client identity
    /// cannot take every connection.
    pub(crate) const MAX_API_PER_CLIENT: usize = 1024;
    /// `connections.max_connect`: people entering a PAT in a browser.
    pub(crate) const MAX_CONNECT: usize = 256;
    /// `connections.max_admin`: probes and a metrics scraper on this machine.
    pub(crate) const MAX_ADMIN: usize = 32;
    /// Upper bound for every timeout: one hour.
    pub(crate) const TIMEOUT_CAP_MS: u64 = 3_600_000;
    /// Upper bound for every count: far above what one process can serve, low enough that
    /// the descriptor arithmetic cannot overflow.
    pub(crate) const MAX_CAP: usize = 1_000_000;
}

/// Descriptors the process keeps beside its connections: the vault's files, logs, the admin
/// socket, the host connections of requests on the connect listener and of start-up calls.
const DESCRIPTORS_RESERVED: u64 = 256;

/// `[connections]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection with no request in flight (before its first request, between kept-alive
    /// requests, an HTTP/2 connection with no open stream) is closed after this long.
    pub idle_timeout: Duration,
    /// A request body must arrive in full within this long of its head.
    pub body_read_timeout: Duration,
    /// Open connections on the api listener, counted from the TCP accept; past it a new
    /// connection is closed at once.
    pub max_api: usize,
    /// Open api connections with the same client identity (certificate subject); past it a
    /// new connection is answered 503 `too-many-connections` and closed.
    pub max_api_per_client: usize,
    /// Open connections on the connect listener.
    pub max_connect: usize,
    /// Open connections on the admin listener.
    pub max_admin: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            idle_timeout: Duration::from_millis(defaults::IDLE_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(defaults::BODY_READ_TIMEOUT_MS),
            max_api: defaults::MAX_API,
            max_api_per_client: defaults::MAX_API_PER_CLIENT,
            max_connect: defaults::MAX_CONNECT,
            max_admin: defaults::MAX_ADMIN,
        }
    }
}

impl ConnectionLimits {
    /// File descriptors the process needs when every listener is full: each api connection
    /// may hold a connection to the git host as well, plus [`DESCRIPTORS_RESERVED`].
    /// `LimitNOFILE` in the systemd unit is sized from the defaults.
    pub fn descriptors_needed(&self) -> u64 {
        2 * self.max_api as u64
            + self.max_connect as u64
            + self.max_admin as u64
            + DESCRIPTORS_RESERVED
    }

    pub(super) fn from_raw(file: &Path, raw: RawConnections) -> Result<Self, ConfigError> {
        let timeout = |key: &str, ms: u64| {
            if (1..=defaults::TIMEOUT_CAP_MS).contains(&ms) {
                Ok(Duration::from_millis(ms))
            } else {
                Err(ConfigError::new(
                    file,
                    format!("connections.{key}"),
                    format!("must be between 1 and {} (ms)", defaults::TIMEOUT_CAP_MS),
                ))
            }
        };
        let count = |key: &str, n: usize| {
            if (1..=defaults::MAX_CAP).contains(&n) {
                Ok(n)
            } else {
                Err(ConfigError::new(
                    file,
                    format!("connections.{key}"),
                    format!("must be between 1 and {}", defaults::MAX_CAP),
                ))
            }
        };
        let limits = ConnectionLimits {
            idle_timeout: timeout("idle_timeout_ms", raw.idle_timeout_ms)?,
            body_read_timeout: timeout("body_read_timeout_ms", raw.body_read_timeout_ms)?,
            max_api: count("max_api", raw.max_api)?,
            max_api_per_client: count("max_api_per_client", raw.max_api_per_client)?,
            max_connect: count("max_connect", raw.max_connect)?,
            max_admin: count("max_admin", raw.max_admin)?,
        };
        if limits.max_api_per_client > limits.max_api {
            return Err(ConfigError::new(
                file,
                "connections.max_api_per_client",
                format!(
                    "{} is more than connections.max_api ({})",
                    limits.max_api_per_client, limits.max_api
                ),
            ));
        }
        Ok(limits)
    }
}

/// `[connections]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnections {
    #[serde(default = "d_idle")]
    idle_timeout_ms: u64,
    #[serde(default = "d_body")]
    body_read_timeout_ms: u64,
    #[serde(default = "d_max_api")]
    max_api: usize,
    #[serde(default = "d_max_api_per_client")]
    max_api_per_client: usize,
    #[serde(default = "d_max_connect")]
    max_connect: usize,
    #[serde(default = "d_max_admin")]
    max_admin: usize,
}

impl Default for RawConnections {
    fn default() -> Self {
        RawConnections {
            idle_timeout_ms: d_idle(),
            body_read_timeout_ms: d_body(),
            max_api: d_max_api(),
            max_api_per_client: d_max_api_per_client(),
            max_connect: d_max_connect(),
            max_admin: d_max_admin(),
        }
    }
}

fn d_idle() -> u64 {
    defaults::IDLE_TIMEOUT_MS
}

fn d_body() -> u64 {
    defaults::BODY_READ_TIMEOUT_MS
}

fn d_max_api() -> usize {
    defaults::MAX_API
}

fn d_max_api_per_client() -> usize {
    defaults::MAX_API_PER_CLIENT
}

fn d_max_connect() -> usize {
    defaults::MAX_CONNECT
}

fn d_max_admin() -> usize {
    defaults::MAX_ADMIN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "state_dir = \"s\"\n[master_key]\nfile = \"k\"\n[api]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n";

    fn parse(section: &str) -> Result<ConnectionLimits, ConfigError> {
        Config::parse(
            Path::new("p.toml"),
            &format!("{BASE}[connections]\n{section}"),
        )
        .map(|c| c.connections)
    }

    #[test]
    fn defaults_apply_without_the_section() {
        let cfg = Config::parse(Path::new("p.toml"), BASE).unwrap();
        assert_eq!(cfg.connections, ConnectionLimits::default());
    }

    #[test]
    fn the_systemd_unit_allows_the_descriptors_the_defaults_need() {
        let unit = include_str!("../../systemd/patgate.service");
        let limit: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .expect("the unit sets LimitNOFILE")
            .trim()
            .parse()
            .unwrap();
        let needed = ConnectionLimits::default().descriptors_needed();
        assert!(
            limit >= needed,
            "LimitNOFILE={limit}, the defaults need {needed}"
        );
    }

    #[test]
    fn every_key_is_read_and_checked() {
        let limits = parse("idle_timeout_ms = 5\nbody_read_timeout_ms = 6\nmax_api = 10\nmax_api_per_client = 3\nmax_connect = 4\nmax_admin = 2\n").unwrap();
        assert_eq!(limits.idle_timeout, Duration::from_millis(5));
        assert_eq!(limits.body_read_timeout, Duration::from_millis(6));
        assert_eq!(
            (
                limits.max_api,
                limits.max_api_per_client,
                limits.max_connect,
                limits.max_admin
            ),
            (10, 3, 4, 2)
        );
        assert_eq!(limits.descriptors_needed(), 20 + 4 + 2 + 256);
        for (section, key) in [
            ("idle_timeout_ms = 0", "connections.idle_timeout_ms"),
            (
                "body_read_timeout_ms = 3600001",
                "connections.body_read_timeout_ms",
            ),
            ("max_api = 0", "connections.max_api"),
            ("max_connect = 0", "connections.max_connect"),
            ("max_admin = 1000001", "connections.max_admin"),
            (
                "max_api = 10\nmax_api_per_client = 11",
                "connections.max_api_per_client",
            ),
        ] {
            assert_eq!(parse(section).unwrap_err().key, key, "{section}");
        }
    }
}
