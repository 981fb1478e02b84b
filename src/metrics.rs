//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! One [`Metrics`] lives for the whole process (it survives reloads) and is shared through
//! the [`crate::runtime::Runtime`]. Labels carry ids, operations and kinds only: never an
//! account id (unbounded) and never anything secret.
//!
//! Beside patgate's own (`patgate_*`): `patgate_build_info` (version and commit), and the
//! standard `process_*` metrics ([`process`]).

mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of `patgate_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The integration id, or `-` when the request named none that exists.
    pub integration: String,
    /// `read`, `create-branch`, … or `-` when refused before classification.
    pub operation: String,
    /// `user`, `integration`, or `-` when no credential was chosen.
    pub credential: String,
    pub status: u16,
}

/// Labels of `patgate_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub integration: String,
    pub operation: String,
}

/// Labels of `patgate_upstream_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub integration: String,
    /// The problem code: `upstream-unreachable`, `upstream-tls`, `upstream-timeout`, …
    pub kind: String,
}

/// Labels of `patgate_rate_limited_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// The tier that refused: `total`, `client`, `integration`, `user`, …
    pub tier: String,
    /// `true` when the tier is in shadow mode (logged, not refused).
    pub shadow: bool,
}

/// Labels of the upstream-hold metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabels {
    pub integration: String,
    /// `integration` or `user`.
    pub credential: String,
}

/// Labels of `patgate_user_pats_expiring`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiringLabels {
    pub integration: String,
    /// `expired` (past its expiry), `7d` or `30d` (expiring within, not yet expired).
    pub within: String,
}

/// Labels of `patgate_integration_secret_missing`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabels {
    pub integration: String,
}

/// Labels of `patgate_github_app_token_mints_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppTokenLabels {
    pub integration: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of `patgate_vault_records`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultLabels {
    /// `integration-secret` or `user-pat`.
    pub kind: String,
}

/// Labels of `patgate_reloads_total` and `patgate_forge_jwks_fetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of `patgate_connections_open` and `patgate_requests_in_flight`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `api`, `connect` or `admin`.
    pub listener: &'static str,
}

/// Labels of `patgate_connections_refused_total` and `patgate_connections_closed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionReasonLabels {
    pub listener: &'static str,
    /// Refused: `total` (the listener's cap) or `per-client` (one client identity's cap).
    /// Closed: `handshake-timeout`, `idle-timeout` or `header-timeout`.
    /// TLS handshake refusals: [`HANDSHAKE_REFUSAL_REASONS`].
    pub reason: &'static str,
}

/// Every `reason` of `patgate_tls_handshake_refusals_total`: a small fixed set, whatever
/// the client sent (never its certificate's names or an address).
pub const HANDSHAKE_REFUSAL_REASONS: [&str; 10] = [
    // A listener that requires a client certificate got none.
    "no-certificate",
    // The client certificate is not issued by api.client_ca.
    "unknown-ca",
    "certificate-expired",
    "certificate-revoked",
    // Any other fault of the client certificate (bad signature, wrong key usage, …).
    "bad-certificate",
    // A certificate that verified, without one of api.allowed_client_sans (its requests
    // answer 403 client-not-allowed).
    "certificate-not-allowed",
    // No client certificate, from an address not on api.forge_source_cidrs.
    "source-not-allowed",
    // Not TLS, no shared version or cipher suite, a bad message or alert.
    "protocol",
    // The handshake did not complete within api.handshake_timeout_ms.
    "timeout",
    // The client closed or reset the connection mid-handshake.
    "closed",
];

/// The connections of the listeners ([`crate::listener`]).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections open now, counted from the TCP accept.
    pub open: Family<ListenerLabels, Gauge>,
    /// Requests whose answer has not been sent in full yet.
    pub requests_in_flight: Family<ListenerLabels, Gauge>,
    /// Connections refused because a cap was reached.
    pub refused: Family<ConnectionReasonLabels, Counter>,
    /// Connections closed by patgate because a client took too long.
    pub closed: Family<ConnectionReasonLabels, Counter>,
    /// TLS handshakes refused, by reason ([`HANDSHAKE_REFUSAL_REASONS`]).
    pub handshake_refusals: Family<ConnectionReasonLabels, Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> ConnectionMetrics {
        let metrics = ConnectionMetrics::default();
        registry.register(
            "connections_open",
            "Open connections, by listener",
            metrics.open.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests not yet answered in full, by listener",
            metrics.requests_in_flight.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at a connection cap, by listener and cap",
            metrics.refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed because the client took too long, by listener and timeout",
            metrics.closed.clone(),
        );
        registry.register(
            "tls_handshake_refusals",
            "TLS handshakes refused (or, for certificate-not-allowed, completed without access), by listener and reason",
            metrics.handshake_refusals.clone(),
        );
        metrics
    }
}

/// Labels of `patgate_store_operation_duration_seconds` and `patgate_store_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `records`, `nonces`, `links`, `holds`, `schema` or `probe` (the readiness check).
    pub store: &'static str,
    /// What was asked: `get`, `put`, `first-use`, `prune`, … (a fixed set per store).
    pub operation: &'static str,
}

/// Labels of `patgate_store_pool_connections`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `in-use` (lent to an operation) or `idle` (open, waiting in the pool).
    pub state: &'static str,
}

/// The shared store's metrics (`[store] kind = "postgres"`). The pool makes them (it
/// observes every operation it lends a connection to) and [`Metrics::register_store`]
/// exports them; a process on the embedded stores has none.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Time from asking the pool for a connection to giving it back, per operation,
    /// failures included.
    pub latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
    /// Operations that failed (no connection, a closed one, a statement the database
    /// refused); a replay or a conflict is an answer, not an error.
    pub errors: Family<StoreLabels, Counter>,
    /// 1 while the database answers, 0 from the first failure to reach it until a new
    /// connection or the readiness probe reaches it again.
    pub up: Gauge,
    /// The pool's connections, read at scrape time.
    pub pool_connections: Family<PoolLabels, Gauge>,
    /// `store.pool_size`.
    pub pool_max: Gauge,
    /// Operations waiting for a free connection, read at scrape time.
    pub pool_waiting: Gauge,
    /// Record reads answered from the records this replica keeps, without the database.
    pub records_kept_reads: Counter,
}

/// Store latency buckets in seconds: 0.25 ms (a prepared statement on a near database) to
/// 10 s (beyond `store.connect_timeout_ms`'s default).
const STORE_LATENCY_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn store_latency_histogram() -> Histogram {
    Histogram::new(STORE_LATENCY_BUCKETS)
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            latency: Family::new_with_constructor(store_latency_histogram),
            errors: Family::default(),
            up: Gauge::default(),
            pool_connections: Family::default(),
            pool_max: Gauge::default(),
            pool_waiting: Gauge::default(),
            records_kept_reads: Counter::default(),
        }
    }
}

/// Every metric patgate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: LatencyFamily,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub rate_limited: Family<RateLimitLabels, Counter>,
    /// Requests answered 429 by patgate because the host throttled their credential.
    pub upstream_held: Family<HoldLabels, Counter>,
    /// Times a host throttled a credential (429, or 403 with `x-ratelimit-remaining: 0`).
    pub upstream_throttled: Family<HoldLabels, Counter>,
    /// Credentials currently held until the host's reset.
    pub holds_active: Gauge,
    pub vault_records: Family<VaultLabels, Gauge>,
    /// 1 for each configured integration whose secret is not in the vault (every request
    /// through it answers 503), 0 once it is stored.
    pub integration_secret_missing: Family<IntegrationLabels, Gauge>,
    /// Users' PATs by integration that the host says expire soon or have expired (read at
    /// scrape time, at most once a minute).
    pub user_pats_expiring: Family<ExpiringLabels, Gauge>,
    /// When `user_pats_expiring` was last counted (Unix seconds; 0: never).
    pub user_pats_expiring_counted_at: std::sync::atomic::AtomicU64,
    /// Seconds until the api listener's certificate expires (negative once it has).
    pub server_cert_expiry_seconds: Gauge,
    pub reloads: Family<ReloadLabels, Counter>,
    pub key_rotations: Counter,
    /// 1 while the service accepts requests, 0 once shutdown has begun.
    pub ready: Gauge,
    /// Forge signing keys usable now (pinned file and fetched URL together); 0 with
    /// `[forge]` configured means no Forge call can be verified.
    pub forge_keys: Gauge,
    /// Fetches of Forge's JWKS URL, by result.
    pub forge_jwks_fetches: Family<ReloadLabels, Counter>,
    pub connections: ConnectionMetrics,
    /// GitHub App installation tokens asked for, by integration and result.
    pub github_app_token_mints: Family<AppTokenLabels, Counter>,
    /// 1 for a GitHub App integration whose last attempt to get an installation token
    /// failed and that holds no token still valid (its requests answer 503), else 0.
    pub github_app_token_unavailable: Family<IntegrationLabels, Gauge>,
}

/// The latency histogram family (its constructor sets the buckets).
pub type LatencyFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Latency buckets in seconds: 1 ms to 30 s (the default upstream request timeout).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("patgate");
        registry.register(
            "build",
            "The version of patgate and the git commit it was built from (`unknown` when the source had none)",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("PATGATE_BUILD_COMMIT")),
            ]),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered on the api listener",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to its response head",
            latency.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests the git host could not answer, by kind",
            upstream_errors.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests over a rate limit, by tier (shadow=true: logged, not refused)",
            rate_limited.clone(),
        );
        let upstream_held = Family::<HoldLabels, Counter>::default();
        registry.register(
            "upstream_held",
            "Requests answered 429 by patgate because the host throttled their credential",
            upstream_held.clone(),
        );
        let upstream_throttled = Family::<HoldLabels, Counter>::default();
        registry.register(
            "upstream_throttled",
            "Times the git host throttled a credential",
            upstream_throttled.clone(),
        );
        let holds_active = Gauge::default();
        registry.register(
            "upstream_holds_active",
            "Credentials held until the host's rate-limit reset",
            holds_active.clone(),
        );
        let vault_records = Family::<VaultLabels, Gauge>::default();
        registry.register(
            "vault_records",
            "Credential records in the vault, by kind",
            vault_records.clone(),
        );
        let user_pats_expiring = Family::<ExpiringLabels, Gauge>::default();
        registry.register(
            "user_pats_expiring",
            "Users' PATs the git host says have expired, or expire within 7 or 30 days",
            user_pats_expiring.clone(),
        );
        let integration_secret_missing = Family::<IntegrationLabels, Gauge>::default();
        registry.register(
            "integration_secret_missing",
            "1 for a configured integration whose secret is not in the vault (its requests answer 503)",
            integration_secret_missing.clone(),
        );
        let server_cert_expiry_seconds = Gauge::default();
        registry.register(
            "server_certificate_expiry_seconds",
            "Seconds until the api listener's certificate expires",
            server_cert_expiry_seconds.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        let key_rotations = Counter::default();
        registry.register(
            "vault_key_rotations",
            "Master key rotations completed",
            key_rotations.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while accepting requests, 0 once shutdown has begun",
            ready.clone(),
        );
        let forge_keys = Gauge::default();
        registry.register(
            "forge_keys",
            "Forge signing keys usable now (0 with [forge] configured: no Forge call can be verified)",
            forge_keys.clone(),
        );
        let forge_jwks_fetches = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "forge_jwks_fetches",
            "Fetches of Forge's JWKS URL, by result (ok or error)",
            forge_jwks_fetches.clone(),
        );
        let connections = ConnectionMetrics::register(registry);
        let github_app_token_mints = Family::<AppTokenLabels, Counter>::default();
        registry.register(
            "github_app_token_mints",
            "GitHub App installation tokens asked for, by result (ok or error)",
            github_app_token_mints.clone(),
        );
        let github_app_token_unavailable = Family::<IntegrationLabels, Gauge>::default();
        registry.register(
            "github_app_token_unavailable",
            "1 for a GitHub App integration that has no valid installation token and could not get one (its requests answer 503)",
            github_app_token_unavailable.clone(),
        );
        Metrics {
            registry: root,
            github_app_token_mints,
            github_app_token_unavailable,
            forge_keys,
            forge_jwks_fetches,
            requests,
            latency,
            upstream_errors,
            rate_limited,
            upstream_held,
            upstream_throttled,
            holds_active,
            vault_records,
            integration_secret_missing,
            user_pats_expiring,
            user_pats_expiring_counted_at: std::sync::atomic::AtomicU64::new(0),
            server_cert_expiry_seconds,
            reloads,
            key_rotations,
            ready,
            connections,
        }
    }

    /// Exports the shared store's metrics (once, at start: they live as long as the pool).
    pub fn register_store(&mut self, store: &StoreMetrics) {
        let registry = self.registry.sub_registry_with_prefix("patgate");
        registry.register(
            "store_operation_duration_seconds",
            "Time a shared-store operation took, from asking the pool for a connection to giving it back, by store and operation",
            store.latency.clone(),
        );
        registry.register(
            "store_errors",
            "Shared-store operations that failed (no connection, a closed one, a refused statement), by store and operation",
            store.errors.clone(),
        );
        registry.register(
            "store_up",
            "1 while the shared store's database answers, 0 from a failure to reach it until it answers again",
            store.up.clone(),
        );
        registry.register(
            "store_pool_connections",
            "Connections to the shared store's database, by state (in-use or idle)",
            store.pool_connections.clone(),
        );
        registry.register(
            "store_pool_max_connections",
            "The most connections the pool opens (store.pool_size)",
            store.pool_max.clone(),
        );
        registry.register(
            "store_pool_waiting",
            "Operations waiting for a free connection to the shared store's database",
            store.pool_waiting.clone(),
        );
        registry.register(
            "store_records_kept_reads",
            "Vault record reads answered from the records this replica keeps, current as of its last replay check, without asking the database",
            store.records_kept_reads.clone(),
        );
    }

    /// The Prometheus text exposition (OpenMetrics flavour, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
