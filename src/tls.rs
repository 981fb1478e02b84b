//! TLS material: the api listener's server config (client certificates required), the
//! client-certificate SAN allow-list, and the root stores for upstream hosts.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientSan, TrustRoots};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path}: {reason}")]
    BadPem { path: String, reason: String },
    #[error("{path} holds no certificate revocation list (PEM `X509 CRL` or DER)")]
    NoCrl { path: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey { path: String },
    #[error("{0}")]
    Config(String),
}

/// The ring provider, installed explicitly so no process-wide default is needed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file. Errors never include the file's content.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = zeroize::Zeroizing::new(read(path)?);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoPrivateKey {
        path: path.display().to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the CRLs of a file: every `X509 CRL` block of a PEM file, or one DER CRL. The
/// content is checked when the verifier is built ([`api_server_config`]).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadPem {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        if crls.is_empty() {
            return Err(TlsError::NoCrl {
                path: path.display().to_string(),
            });
        }
        return Ok(crls);
    }
    // DER: an ASN.1 SEQUENCE; anything else is not a CRL at all.
    if bytes.first() != Some(&0x30) {
        return Err(TlsError::NoCrl {
            path: path.display().to_string(),
        });
    }
    Ok(vec![CertificateRevocationListDer::from(bytes)])
}

/// A root store holding the certificates of one PEM file.
pub fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(path)? {
        store.add(cert).map_err(|e| TlsError::BadPem {
            path: path.display().to_string(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// The api listener: server certificate, client certificates required and verified
/// against `client_ca` and the CRLs in `crl`, ALPN h2 and http/1.1.
///
/// Revocation, when CRLs are given: only the client's own certificate is checked (CRLs are
/// the client CA's; an intermediate CA is revoked by taking it out of `client_ca`), and a
/// certificate whose issuer has no CRL here is refused (fail closed: a CRL for the wrong CA
/// must not silently check nothing). An expired CRL is still used, so a late refresh does not
/// stop the service; refreshing it is a reload.
///
/// With `client_certificate` `optional`, a client may also connect without a certificate
/// (a Forge caller; one that presents a certificate still has it checked in full); with
/// `none`, no certificate is asked for.
pub fn api_server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    crl: &[std::path::PathBuf],
    client_certificate: crate::config::ClientCertificateMode,
) -> Result<ServerConfig, TlsError> {
    use crate::config::ClientCertificateMode as Mode;
    if client_certificate == Mode::None {
        return server_config_without_client_auth(cert, key);
    }
    let provider = provider();
    let roots = Arc::new(root_store(client_ca)?);
    let mut crls = Vec::new();
    for path in crl {
        crls.extend(load_crls(path)?);
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    if client_certificate == Mode::Optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| match e {
        rustls::server::VerifierBuilderError::InvalidCrl(why) => TlsError::Config(format!(
            "a CRL in {} cannot be used: {why:?}",
            crl.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        other => TlsError::Config(format!("client_ca {}: {other}", client_ca.display())),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_private_key(key)?)
        .map_err(|e| {
            TlsError::Config(format!(
                "{} and {} do not form a usable certificate and key: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// When the first certificate of a PEM file (the leaf) expires, in Unix seconds: the
/// `patgate_server_certificate_expiry_seconds` gauge counts down to it.
pub fn not_after(path: &Path) -> Result<i64, TlsError> {
    let certs = load_certs(path)?;
    let (_, leaf) =
        x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(|e| TlsError::BadPem {
            path: path.display().to_string(),
            reason: format!("the certificate does not parse: {e}"),
        })?;
    Ok(leaf.validity().not_after.timestamp())
}

/// A server config without client certificates (the demo host; later the connect page).
pub fn server_config_without_client_auth(
    cert: &Path,
    key: &Path,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_private_key(key)?)
        .map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The SANs of a client certificate that the allow-list can name.
pub fn client_sans(cert: &CertificateDer<'_>) -> Vec<ClientSan> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(ClientSan::Dns(dns.to_ascii_lowercase())),
            GeneralName::URI(uri) => Some(ClientSan::Uri((*uri).to_string())),
            _ => None,
        })
        .collect()
}

/// The subject of a certificate as text, for logs.
pub fn subject(cert: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "<unparseable>".into())
}

/// Whether a client certificate may call: always when the allow-list is empty.
pub fn client_allowed(allowed: &[ClientSan], cert_sans: &[ClientSan]) -> bool {
    allowed.is_empty() || cert_sans.iter().any(|san| allowed.contains(san))
}

/// Roots for an integration's host.
pub fn upstream_roots(
    roots: TrustRoots,
    extra_ca: Option<&Path>,
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        TrustRoots::System => {
            for cert in system_roots() {
                // The system store can hold certificates rustls cannot use; skip those.
                let _ = store.add(cert.clone());
            }
            if store.is_empty() {
                tracing::warn!(
                    "no usable system CA certificates found; using the bundled webpki roots"
                );
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
        TrustRoots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TrustRoots::None => {}
    }
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            store.add(cert).map_err(|e| TlsError::BadPem {
                path: path.display().to_string(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    Ok(store)
}

/// The operating system's CA certificates, read from disk once per process however many
/// integrations use them.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// Client config for an integration's host: its roots, TLS 1.2/1.3, no client certificate.
pub fn upstream_client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a server-side TLS handshake failed, as one of the fixed reasons of
/// `patgate_tls_handshake_refusals_total` ([`crate::metrics::HANDSHAKE_REFUSAL_REASONS`]).
/// `err` is what tokio-rustls' `accept` failed with: a rustls error inside an I/O error, or
/// a plain I/O error when the client went away.
pub(crate) fn handshake_refusal_reason(err: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match err.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        Some(E::NoCertificatesPresented) => "no-certificate",
        Some(E::InvalidCertificate(C::UnknownIssuer)) => "unknown-ca",
        Some(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => "certificate-expired",
        Some(E::InvalidCertificate(C::Revoked)) => "certificate-revoked",
        Some(E::InvalidCertificate(_) | E::InvalidCertRevocationList(_)) => "bad-certificate",
        Some(_) => "protocol",
        None => match err.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => "closed",
            // Bytes that are not a TLS record (an HTTP request on the TLS port, say).
            _ => "protocol",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_dns_and_uri_sans() {
        let allowed = vec![
            ClientSan::Dns("jira-app.example".into()),
            ClientSan::Uri("spiffe://acme/jira".into()),
        ];
        assert!(client_allowed(&[], &[]));
        assert!(client_allowed(
            &allowed,
            &[ClientSan::Dns("jira-app.example".into())]
        ));
        assert!(client_allowed(
            &allowed,
            &[ClientSan::Uri("spiffe://acme/jira".into())]
        ));
        assert!(!client_allowed(
            &allowed,
            &[ClientSan::Dns("other.example".into())]
        ));
        assert!(!client_allowed(&allowed, &[]));
    }
}
