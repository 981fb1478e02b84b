//! jsonwebtoken's cryptography for patgate: RS256 on ring (the library rustls already
//! brings), and nothing else. patgate verifies Forge Invocation Tokens with RSA public keys
//! from a JWK (`n`, `e`), and signs GitHub App JWTs with an App's RSA private key. Every
//! other algorithm is refused here as well as by the verifier's pinned algorithm list, so an
//! HMAC "signature" made with an RSA public key, or `alg: none`, has no code path that could
//! accept it.
//!
//! [`RsaSigningKey`] is how a private key is held: parsed from its PEM (PKCS#1 `BEGIN RSA
//! PRIVATE KEY`, as GitHub hands it out, or PKCS#8 `BEGIN PRIVATE KEY`) into a buffer that is
//! wiped on drop, checked by ring once, and printed as `[redacted]`.

use std::fmt;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

/// Installs the provider for the process (once; later calls find it installed).
pub(crate) fn install() {
    // `Err` means a provider is installed already: this one, by an earlier call.
    let _ = PROVIDER.install_default();
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: no_private_keys,
        rsa_pub_components_from_public_key: no_der_keys,
        ec_pub_components_from_private_key: no_ec_keys,
        ed_pub_components_from_private_key: no_ed_keys,
        compute_digest: no_digest,
    },
};

fn unsupported() -> Error {
    ErrorKind::UnsupportedAlgorithm.into()
}

fn no_private_keys(_: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Err(unsupported())
}

fn no_der_keys(_: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Err(unsupported())
}

fn no_ec_keys(_: &[u8], _: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    Err(unsupported())
}

fn no_ed_keys(_: &[u8], _: &EllipticCurve) -> Result<Vec<u8>, Error> {
    Err(unsupported())
}

fn no_digest(_: &[u8], _: ThumbprintHash) -> Result<Vec<u8>, Error> {
    Err(unsupported())
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *algorithm != Algorithm::RS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => Ok(Box::new(Rs256 {
            n: n.clone(),
            e: e.clone(),
        })),
        DecodingKeyKind::SecretOrDer(_) => Err(ErrorKind::InvalidKeyFormat.into()),
    }
}

/// An RSA public key from a JWK (`n`, `e`), checked with RSASSA-PKCS1-v1_5 and SHA-256.
struct Rs256 {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for Rs256 {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        // ring refuses moduli under 2048 bits and public exponents it deems unsafe.
        ring::signature::RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
        .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Rs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// RS256 only, with a key made by [`RsaSigningKey`] (DER, PKCS#8 or PKCS#1).
fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if *algorithm != Algorithm::RS256 || key.family() != AlgorithmFamily::Rsa {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = key_pair(key.as_bytes())
        .map_err(|why| Error::from(ErrorKind::InvalidRsaKey(why.to_string())))?;
    Ok(Box::new(Rs256Signer(pair)))
}

/// ring's key pair from DER: PKCS#8 first, else PKCS#1 (the two never parse as each other).
fn key_pair(der: &[u8]) -> Result<RsaKeyPair, ring::error::KeyRejected> {
    RsaKeyPair::from_pkcs8(der).or_else(|_| RsaKeyPair::from_der(der))
}

/// Signs with RSASSA-PKCS1-v1_5 and SHA-256. The key pair lives for one signature.
struct Rs256Signer(RsaKeyPair);

impl signature::Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut sig = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| signature::Error::new())?;
        Ok(sig)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// Why a PEM is not an RSA private key patgate can sign with. Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no private key in the PEM (expected `-----BEGIN RSA PRIVATE KEY-----` or `-----BEGIN PRIVATE KEY-----`)")]
    NoKey,
    #[error("the PEM holds an EC (SEC1) key; a GitHub App key is RSA")]
    NotRsa,
    #[error("not a usable RSA private key: {0}")]
    Rejected(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// An RSA private key for RS256, as DER in a buffer wiped on drop.
pub(crate) struct RsaSigningKey(EncodingKey);

impl fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaSigningKey([redacted])")
    }
}

impl RsaSigningKey {
    /// Parses a PEM private key (PKCS#1 or PKCS#8) and checks ring accepts it (RSA, 2048 to
    /// 8192 bits, consistent).
    pub(crate) fn from_pem(pem: &[u8]) -> Result<RsaSigningKey, KeyError> {
        let der = Zeroizing::new(PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoKey)?);
        let bytes = match &*der {
            PrivateKeyDer::Pkcs1(key) => key.secret_pkcs1_der(),
            PrivateKeyDer::Pkcs8(key) => key.secret_pkcs8_der(),
            PrivateKeyDer::Sec1(_) => return Err(KeyError::NotRsa),
            _ => return Err(KeyError::NoKey),
        };
        key_pair(bytes).map_err(|e| KeyError::Rejected(e.to_string()))?;
        // EncodingKey copies the DER into its own buffer, wiped on drop.
        Ok(RsaSigningKey(EncodingKey::from_rsa_der(bytes)))
    }

    /// A compact JWS (`{"alg":"RS256","typ":"JWT"}`) over `claims`.
    pub(crate) fn sign(&self, claims: &impl serde::Serialize) -> Result<String, KeyError> {
        install();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &self.0)
            .map_err(|e| KeyError::Signing(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
    use rsa::signature::Verifier as _;

    fn rsa_key() -> &'static rsa::RsaPrivateKey {
        static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())
    }

    /// Checks a compact JWS with the `rsa` crate (not this module's code).
    fn verify(jwt: &str, key: &rsa::RsaPrivateKey) -> serde_json::Value {
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let (header, claims) = signed.split_once('.').unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let sig =
            rsa::pkcs1v15::Signature::try_from(&URL_SAFE_NO_PAD.decode(sig).unwrap()[..]).unwrap();
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key())
            .verify(signed.as_bytes(), &sig)
            .unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    #[test]
    fn signs_rs256_with_pkcs1_and_pkcs8_keys() {
        let key = rsa_key();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
        for pem in [pkcs1.as_bytes(), pkcs8.as_bytes()] {
            let signing = RsaSigningKey::from_pem(pem).unwrap();
            let jwt = signing
                .sign(&serde_json::json!({"iss": "123", "iat": 1, "exp": 2}))
                .unwrap();
            assert_eq!(verify(&jwt, key)["iss"], "123");
        }
    }

    #[test]
    fn refuses_what_is_not_an_rsa_private_key() {
        assert!(matches!(
            RsaSigningKey::from_pem(b"not a pem"),
            Err(KeyError::NoKey)
        ));
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            RsaSigningKey::from_pem(public.as_bytes()),
            Err(KeyError::NoKey)
        ));
        // An EC key in PKCS#8: ring refuses it as RSA.
        let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = RsaSigningKey::from_pem(ec.as_bytes()).unwrap_err();
        assert!(matches!(err, KeyError::Rejected(_)), "{err}");
        // A 1024-bit RSA key: ring refuses it.
        let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let pem = small.to_pkcs1_pem(LineEnding::LF).unwrap();
        let err = RsaSigningKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(matches!(err, KeyError::Rejected(_)), "{err}");
    }

    #[test]
    fn debug_redacts_the_key() {
        let key = rsa_key();
        let pem = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let signing = RsaSigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(format!("{signing:?}"), "RsaSigningKey([redacted])");
    }

    #[test]
    fn the_signer_is_rs256_only() {
        let key = rsa_key();
        let pem = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let signing = RsaSigningKey::from_pem(pem.as_bytes()).unwrap();
        install();
        for alg in [Algorithm::HS256, Algorithm::RS512, Algorithm::PS256] {
            assert!(
                jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &signing.0)
                    .is_err()
            );
        }
        let hmac = EncodingKey::from_secret(b"secret").unwrap();
        assert!(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({}),
            &hmac
        )
        .is_err());
    }
}
