//! Loading what the config's files hold: the api listener's TLS (certificate, key, client CA,
//! CRLs), the app's signature keys, the connect listener's TLS, and one upstream client per
//! integration. `patgate config check` loads the same, so a file that passes it starts.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;

use super::IntegrationRuntime;
use crate::clock::Clock;
use crate::config::{AppKeyMaterial, Config, ConfigError};
use crate::signature::{AppKey, KeyRing, Window};

/// What the config's files hold, loaded and checked: the parts of a [`super::Runtime`] that do
/// not need the vault. `patgate config check` builds this too.
#[derive(Debug)]
pub struct Materials {
    pub tls: rustls::ServerConfig,
    pub keys: KeyRing,
    pub window: Window,
    pub integrations: HashMap<String, IntegrationRuntime>,
    /// The connect listener's TLS (no client certificates), when configured.
    pub connect_tls: Option<rustls::ServerConfig>,
    /// When the api listener's certificate expires (Unix seconds).
    pub api_cert_not_after: i64,
}

/// The config key a TLS error is about, found by the file it names.
fn api_tls_key(api: &crate::config::ApiListener, err: &crate::tls::TlsError) -> String {
    use crate::tls::TlsError;
    let path = match err {
        TlsError::Read { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::BadPem { path, .. }
        | TlsError::NoCrl { path }
        | TlsError::NoPrivateKey { path } => path.as_str(),
        TlsError::Config(why) if why.contains("CRL") => return "api.crl".into(),
        TlsError::Config(_) => return "api.cert".into(),
    };
    let is = |p: &Path| p.display().to_string() == path;
    if let Some(i) = api.crl.iter().position(|p| is(p)) {
        format!("api.crl[{i}]")
    } else if is(&api.cert) {
        "api.cert".into()
    } else if is(&api.key) {
        "api.key".into()
    } else if is(&api.client_ca) {
        "api.client_ca".into()
    } else {
        "api".into()
    }
}

/// Loads every certificate and key the config names, and builds the upstream clients.
pub fn check_materials(config: &Config, clock: &Clock) -> Result<Materials, ConfigError> {
    let file = &config.source;
    let api = &config.api;
    let tls = crate::tls::api_server_config(
        &api.cert,
        &api.key,
        &api.client_ca,
        &api.crl,
        api.client_certificate,
    )
    .map_err(|e| ConfigError::new(file, api_tls_key(api, &e), e))?;
    let api_cert_not_after =
        crate::tls::not_after(&api.cert).map_err(|e| ConfigError::new(file, "api.cert", e))?;
    let keys = load_app_keys(config)?;
    if let Some(forge) = &config.forge {
        crate::authn::forge::check_settings(forge)
            .map_err(|(key, e)| ConfigError::new(file, key, e))?;
    }
    let window = Window::new(
        config.signatures.max_skew.as_secs(),
        config.signatures.max_validity.as_secs(),
    )
    .map_err(|e| ConfigError::new(file, "signatures", e))?;
    let mut integrations = HashMap::with_capacity(config.integrations.len());
    for (index, integration) in config.integrations.iter().enumerate() {
        integrations.insert(
            integration.id.clone(),
            IntegrationRuntime::build(file, index, integration, clock, config.service.workers)?,
        );
    }
    let connect_tls = config
        .connect
        .as_ref()
        .map(|c| {
            crate::tls::server_config_without_client_auth(&c.cert, &c.key)
                .map_err(|e| ConfigError::new(file, "connect", e))
        })
        .transpose()?;
    Ok(Materials {
        tls,
        api_cert_not_after,
        connect_tls,
        keys,
        window,
        integrations,
    })
}

/// Reads the app's keys. HMAC secret files must be private to the service user, like the
/// master key.
pub fn load_app_keys(config: &Config) -> Result<KeyRing, ConfigError> {
    let file = &config.source;
    let mut keys = Vec::with_capacity(config.app_keys.len());
    for (i, key) in config.app_keys.iter().enumerate() {
        let app_key = match &key.material {
            AppKeyMaterial::Ed25519PublicKey(b64) => AppKey::ed25519_from_base64(&key.keyid, b64)
                .map_err(|e| {
                ConfigError::new(file, format!("app_keys[{i}].ed25519_public_key"), e)
            })?,
            AppKeyMaterial::HmacSecretFile(path) => {
                let at = format!("app_keys[{i}].hmac_secret_file");
                let secret =
                    read_private_base64_file(path).map_err(|e| ConfigError::new(file, &at, e))?;
                AppKey::hmac(&key.keyid, &secret).map_err(|e| ConfigError::new(file, &at, e))?
            }
        };
        keys.push(app_key);
    }
    KeyRing::from_keys(keys).map_err(|e| ConfigError::new(file, "app_keys", e))
}

/// Reads a secret kept as base64 on one line, refusing files others can read.
pub fn read_private_base64_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {mode:04o}); run chmod 600 on it",
            path.display()
        ));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{} does not hold one line of base64", path.display()))?;
    Ok(zeroize::Zeroizing::new(bytes))
}
