//! A small CA for `patgate dev` and for the tests: server and client certificates made with
//! rcgen, so no certificate or key is ever committed.
//!
//! Production deployments use the organisation's own PKI (see certs/README.md).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;

pub use rcgen::Error as PkiError;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that issues dev and test certificates.
#[derive(Debug)]
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A SAN for a client certificate.
#[derive(Debug, Clone)]
pub enum ClientName<'a> {
    Dns(&'a str),
    Uri(&'a str),
}

impl DevCa {
    /// A new CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<DevCa, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA saved earlier with [`DevCa::cert_pem`] and [`DevCa::key_pem`].
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<DevCa, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(DevCa {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, PkiError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = name(names.first().copied().unwrap_or("patgate"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with subject `common_name` and the given SANs.
    pub fn issue_client(
        &self,
        common_name: &str,
        sans: &[ClientName<'_>],
    ) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        for san in sans {
            params.subject_alt_names.push(match san {
                ClientName::Dns(dns) => SanType::DnsName((*dns).try_into()?),
                ClientName::Uri(uri) => SanType::URI((*uri).try_into()?),
            });
        }
        self.issue(params)
    }

    /// A certificate revocation list signed by this CA that revokes `revoked` (PEM
    /// certificates it issued); `number` is the CRL number, higher for a newer list.
    pub fn crl_pem(&self, revoked: &[&str], number: u64) -> Result<String, PkiError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for pem in revoked {
            let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|_| PkiError::CouldNotParseCertificate)?;
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|_| PkiError::CouldNotParseCertificate)?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from(cert.tbs_certificate.serial.to_bytes_be()),
                revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, PkiError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
