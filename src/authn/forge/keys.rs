//! Forge's signing keys: a JWKS file the admin pinned (read when the runtime is built, so on
//! every reload) and/or the JWKS URL Forge publishes, fetched (through the optional egress
//! proxy), cached, fetched again when a token names a key id it does not hold or the set is
//! older than its maximum age — at most once per cool-down either way — and kept when a
//! fetch fails.
//!
//! Only RSA keys for RS256 are taken from a set: a key whose `alg` is another, whose `use`
//! is not `sig`, or that is not RSA, is skipped (and counted in the log line), so no token
//! can be checked with an algorithm other than the key's own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;

use crate::config::ForgeSettings;
use crate::metrics::{Metrics, ReloadLabels};

/// The most a JWKS document may weigh (Forge's holds a handful of keys).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Keys by `kid`, RS256 only.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// The usable keys of a JWKS document, and how many of its keys were skipped.
    pub fn parse(json: &[u8]) -> Result<(KeySet, usize), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(json)
            .map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        for value in document.keys {
            match serde_json::from_value::<Jwk>(value)
                .ok()
                .and_then(rs256_key)
            {
                Some((kid, key)) => {
                    set.keys.insert(kid, key);
                }
                None => skipped += 1,
            }
        }
        Ok((set, skipped))
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key of a JWK usable for RS256, with its `kid`.
fn rs256_key(jwk: Jwk) -> Option<(String, DecodingKey)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    let AlgorithmParameters::RSA(_) = &jwk.algorithm else {
        return None;
    };
    if jwk
        .common
        .key_algorithm
        .is_some_and(|alg| alg != KeyAlgorithm::RS256)
    {
        return None;
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    DecodingKey::from_jwk(&jwk).ok().map(|key| (kid, key))
}

/// Reads the pinned JWKS file.
pub(super) fn read_file(path: &Path) -> Result<KeySet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (set, skipped) = KeySet::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if set.is_empty() {
        return Err(format!(
            "{} holds no RSA key for RS256 with a kid ({skipped} other keys skipped)",
            path.display()
        ));
    }
    Ok(set)
}

/// What was fetched from the URL, and when.
#[derive(Debug, Default)]
struct Cached {
    set: Option<(Arc<KeySet>, u64)>,
    /// The last fetch attempt (Unix seconds), for the cool-down.
    attempted: Option<u64>,
}

/// The JWKS URL, its client and its cache. Lives across reloads while the URL and how it is
/// reached stay the same ([`JwksUrl::same_source`]).
#[derive(Debug)]
pub struct JwksUrl {
    url: Uri,
    client: JwksClient,
    /// The source as configured, to tell whether a reload changed it.
    source: Source,
    timeout: Duration,
    cooldown: u64,
    max_age: u64,
    /// Lookups read this without waiting; a fetch replaces it.
    current: RwLock<Cached>,
    /// One fetch at a time: requests that find an unknown kid together share one.
    fetching: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

/// A direct client, or one through the egress proxy.
#[derive(Debug)]
enum JwksClient {
    Direct(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
    Proxied(Client<HttpsConnector<Tunnel<HttpConnector>>, Empty<Bytes>>),
}

impl JwksUrl {
    /// The URL's client (its TLS roots and proxy), with nothing fetched yet. `None` when the
    /// settings name no URL.
    pub fn new(settings: &ForgeSettings, metrics: Arc<Metrics>) -> Result<Option<JwksUrl>, String> {
        let Some(url) = settings.jwks_url.clone() else {
            return Ok(None);
        };
        let roots =
            crate::tls::upstream_roots(settings.jwks_roots, settings.jwks_extra_ca.as_deref())
                .map_err(|e| e.to_string())?;
        let tls = crate::tls::upstream_client_config(roots).map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.jwks_fetch_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1();
        let builder = Client::builder(TokioExecutor::new());
        let client = match &settings.jwks_proxy {
            None => JwksClient::Direct(builder.build(https.wrap_connector(http))),
            Some(proxy) => JwksClient::Proxied(
                builder.build(https.wrap_connector(Tunnel::new(proxy.clone(), http))),
            ),
        };
        Ok(Some(JwksUrl {
            source: source_of(settings),
            url,
            client,
            timeout: settings.jwks_fetch_timeout,
            cooldown: settings.jwks_refresh_cooldown.as_secs(),
            max_age: settings.jwks_max_age.as_secs(),
            current: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
        }))
    }

    /// Whether `settings` name the same URL, reached the same way (so a reload keeps this
    /// cache). The cool-down and maximum age are read from the new settings by
    /// [`JwksUrl::retimed`].
    pub fn same_source(&self, settings: &ForgeSettings) -> bool {
        self.source == source_of(settings)
    }

    /// This cache with another cool-down, maximum age and timeout.
    pub fn retimed(self: &Arc<Self>, settings: &ForgeSettings) -> Arc<JwksUrl> {
        let same = self.cooldown == settings.jwks_refresh_cooldown.as_secs()
            && self.max_age == settings.jwks_max_age.as_secs()
            && self.timeout == settings.jwks_fetch_timeout;
        if same {
            return self.clone();
        }
        let cached = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::new(JwksUrl {
            url: self.url.clone(),
            client: self.client.clone(),
            source: self.source.clone(),
            timeout: settings.jwks_fetch_timeout,
            cooldown: settings.jwks_refresh_cooldown.as_secs(),
            max_age: settings.jwks_max_age.as_secs(),
            current: RwLock::new(Cached {
                set: cached.set.clone(),
                attempted: cached.attempted,
            }),
            fetching: tokio::sync::Mutex::new(()),
            metrics: self.metrics.clone(),
        })
    }

    /// The set fetched last, if any.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        let cached = self.current.read().unwrap_or_else(|p| p.into_inner());
        cached.set.as_ref().map(|(set, _)| set.clone())
    }

    /// Whether the set is missing or older than the maximum age.
    pub fn stale(&self, now: u64) -> bool {
        let cached = self.current.read().unwrap_or_else(|p| p.into_inner());
        cached
            .set
            .as_ref()
            .is_none_or(|(_, at)| now >= at.saturating_add(self.max_age))
    }

    /// Fetches the set again unless a fetch was attempted less than a cool-down ago. A set
    /// that cannot be fetched, or holds no usable key, leaves the last good one in place.
    pub async fn refresh(&self, now: u64) {
        let _one = self.fetching.lock().await;
        {
            let mut cached = self.current.write().unwrap_or_else(|p| p.into_inner());
            if cached
                .attempted
                .is_some_and(|at| now < at.saturating_add(self.cooldown))
            {
                return;
            }
            cached.attempted = Some(now);
        }
        let result = match tokio::time::timeout(self.timeout, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        let label = |result: &str| ReloadLabels {
            result: result.into(),
        };
        match result {
            Ok((set, skipped)) => {
                tracing::info!(url = %self.url, keys = set.len(), skipped, "fetched Forge's signing keys");
                self.metrics
                    .forge_jwks_fetches
                    .get_or_create(&label("ok"))
                    .inc();
                let mut cached = self.current.write().unwrap_or_else(|p| p.into_inner());
                cached.set = Some((Arc::new(set), now));
            }
            Err(why) => {
                let kept = self.current().map_or(0, |set| set.len());
                tracing::warn!(url = %self.url, error = %why, kept_keys = kept, "fetching Forge's signing keys failed; the last good set stays in use");
                self.metrics
                    .forge_jwks_fetches
                    .get_or_create(&label("error"))
                    .inc();
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, usize), String> {
        let request = Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("patgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = match &self.client {
            JwksClient::Direct(client) => client.request(request).await,
            JwksClient::Proxied(client) => client.request(request).await,
        }
        .map_err(|e| crate::client::error_chain(&e))?;
        // Redirects are not followed: the URL is the admin's, and must answer itself.
        if response.status() != StatusCode::OK {
            return Err(format!("the server answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        let (set, skipped) = KeySet::parse(&body)?;
        if set.is_empty() {
            return Err(format!(
                "the set holds no RSA key for RS256 with a kid ({skipped} other keys skipped)"
            ));
        }
        Ok((set, skipped))
    }
}

impl Clone for JwksClient {
    fn clone(&self) -> Self {
        match self {
            JwksClient::Direct(c) => JwksClient::Direct(c.clone()),
            JwksClient::Proxied(c) => JwksClient::Proxied(c.clone()),
        }
    }
}

type Source = (
    Option<Uri>,
    Option<Uri>,
    crate::config::TrustRoots,
    Option<std::path::PathBuf>,
);

fn source_of(settings: &ForgeSettings) -> Source {
    (
        settings.jwks_url.clone(),
        settings.jwks_proxy.clone(),
        settings.jwks_roots,
        settings.jwks_extra_ca.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    const E: &str = "AQAB";

    fn jwk(extra: &str) -> String {
        format!(r#"{{"kty":"RSA","kid":"k1","n":"{N}","e":"{E}"{extra}}}"#)
    }

    #[test]
    fn only_rs256_signing_keys_with_a_kid_are_taken() {
        let doc = format!(
            r#"{{"keys":[{},{},{},{},{},{}]}}"#,
            jwk(r#","alg":"RS256","use":"sig""#),
            jwk(r#","alg":"RS512""#).replace("k1", "k2"),
            jwk(r#","use":"enc""#).replace("k1", "k3"),
            r#"{"kty":"oct","kid":"k4","k":"c2VjcmV0"}"#,
            jwk("").replace(r#""kid":"k1","#, ""),
            r#"{"kty":"RSA","kid":"k6","alg":"not-an-alg","n":"AQAB","e":"AQAB"}"#,
        );
        let (set, skipped) = KeySet::parse(doc.as_bytes()).unwrap();
        assert_eq!((set.len(), skipped), (1, 5));
        assert!(set.get("k1").is_some());
        assert!(set.get("k4").is_none());
    }

    #[test]
    fn a_document_that_is_not_a_key_set_is_refused() {
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"{\"keys\": 1}").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, r#"{"keys":[]}"#).unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(err.contains("no RSA key"), "{err}");
    }
}
