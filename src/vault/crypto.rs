//! AES-256-GCM with a random 96-bit nonce per record write.
//!
//! Random nonces are safe here because one key encrypts few messages: the collision bound
//! for 96-bit random nonces stays below 2^-32 up to 2^32 writes, and a vault sees a handful
//! of writes per user per token rotation.

use std::fmt;

use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, Tag};
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroize as _;

use super::master_key::MasterKey;
use super::VaultError;

/// AES-GCM's 96-bit nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM's 128-bit tag.
pub(crate) const TAG_LEN: usize = 16;

/// Plaintexts up to this size decrypt in a stack buffer, so a read allocates only its result.
const STACK_PLAINTEXT: usize = 1024;

/// The cipher, its key schedule built once when the vault opens.
pub(crate) struct Sealer {
    cipher: Aes256Gcm,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// Decryption failed: wrong key, wrong record identity, or altered bytes. AES-GCM cannot
/// tell these apart, and the caller must not return anything.
#[derive(Debug)]
pub(crate) struct AuthFailed;

impl Sealer {
    pub(crate) fn new(key: &MasterKey) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(key.expose().into()),
        }
    }

    /// Encrypts `buf` in place under a fresh random nonce; returns the nonce and the tag.
    pub(crate) fn seal(
        &self,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<([u8; NONCE_LEN], [u8; TAG_LEN]), VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(VaultError::Random)?;
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, buf)
            .map_err(|_| VaultError::Encrypt)?;
        Ok((nonce, tag.into()))
    }

    /// Decrypts `sealed` (ciphertext then tag) and passes the plaintext to `read`. The
    /// plaintext lives in a buffer that is wiped before this returns, whatever `read` does.
    pub(crate) fn open<R>(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        sealed: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, AuthFailed> {
        let Some((ciphertext, tag)) = sealed.split_last_chunk::<TAG_LEN>() else {
            return Err(AuthFailed);
        };
        let nonce = Nonce::from_slice(nonce);
        let tag = Tag::from_slice(tag);
        if ciphertext.len() <= STACK_PLAINTEXT {
            let mut stack = [0u8; STACK_PLAINTEXT];
            let buf = Wiped(&mut stack[..ciphertext.len()]);
            buf.0.copy_from_slice(ciphertext);
            self.cipher
                .decrypt_in_place_detached(nonce, aad, buf.0, tag)
                .map_err(|_| AuthFailed)?;
            Ok(read(buf.0))
        } else {
            let mut heap = ciphertext.to_vec();
            let buf = Wiped(&mut heap);
            self.cipher
                .decrypt_in_place_detached(nonce, aad, buf.0, tag)
                .map_err(|_| AuthFailed)?;
            Ok(read(buf.0))
        }
    }
}

/// Wipes the slice when dropped, on every path out (including a panic in the reader).
pub(crate) struct Wiped<'a>(pub(crate) &'a mut [u8]);

impl Drop for Wiped<'_> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_small_and_large() {
        let sealer = Sealer::new(&MasterKey::from_bytes([1; 32]));
        for len in [0, 1, 100, STACK_PLAINTEXT, STACK_PLAINTEXT + 1, 10_000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = plain.clone();
            let (nonce, tag) = sealer.seal(b"aad", &mut buf).unwrap();
            if len > 16 {
                assert_ne!(buf, plain);
            }
            buf.extend_from_slice(&tag);
            let back = sealer.open(b"aad", &nonce, &buf, |p| p.to_vec()).unwrap();
            assert_eq!(back, plain);
            assert!(sealer.open(b"aae", &nonce, &buf, |_| ()).is_err());
            let mut flipped = buf.clone();
            flipped[0] ^= 1;
            assert!(sealer.open(b"aad", &nonce, &flipped, |_| ()).is_err());
            let other = Sealer::new(&MasterKey::from_bytes([2; 32]));
            assert!(other.open(b"aad", &nonce, &buf, |_| ()).is_err());
        }
        assert!(sealer.open(b"aad", &[0; 12], &[0; 15], |_| ()).is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let sealer = Sealer::new(&MasterKey::from_bytes([1; 32]));
        let mut a = b"same plaintext".to_vec();
        let mut b = a.clone();
        let (na, ta) = sealer.seal(b"x", &mut a).unwrap();
        let (nb, tb) = sealer.seal(b"x", &mut b).unwrap();
        assert_ne!(na, nb);
        assert_ne!(a, b);
        assert_ne!(ta, tb);
    }
}
