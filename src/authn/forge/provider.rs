//! jsonwebtoken's cryptography for patgate: RS256 verification on ring (the library rustls
//! already brings), and nothing else. Every other algorithm, and signing, is refused here as
//! well as by the verifier's pinned algorithm list, so an HMAC "signature" made with an RSA
//! public key, or `alg: none`, has no code path that could accept it.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};

/// Installs the provider for the process (once; later calls find it installed).
pub(super) fn install() {
    // `Err` means a provider is installed already: this one, by an earlier call.
    let _ = PROVIDER.install_default();
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
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

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    // patgate verifies Forge's tokens; it never makes one.
    Err(unsupported())
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
