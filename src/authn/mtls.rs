//! The Connect-era caller: a client certificate that chains to `api.client_ca` (checked by
//! rustls at the handshake, and against `api.allowed_client_sans`), and an RFC 9421
//! signature of the patgate profile on every request, whose `(keyid, nonce)` is accepted
//! once ([`crate::store::NonceStore`]).

use std::sync::Arc;

use super::{AuthError, AuthMethod, Authenticator, Caller, Connection, RequestHead};
use crate::signature::Verifier;
use crate::store::{BoxFuture, NonceStore};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct MtlsSignature {
    verifier: Verifier,
    nonces: Arc<dyn NonceStore>,
}

impl MtlsSignature {
    pub fn new(verifier: Verifier, nonces: Arc<dyn NonceStore>) -> MtlsSignature {
        MtlsSignature { verifier, nonces }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

impl Authenticator for MtlsSignature {
    fn admit(&self, connection: &Connection) -> Result<(), AuthError> {
        match &connection.certificate {
            None => Err(AuthError::NoClientCertificate),
            Some(certificate) if !certificate.allowed => Err(AuthError::ClientNotAllowed),
            Some(_) => Ok(()),
        }
    }

    fn authenticate<'a>(
        &'a self,
        connection: &'a Connection,
        head: RequestHead<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            self.admit(connection)?;
            let client = connection
                .certificate
                .as_ref()
                .map(|c| c.subject.clone())
                .ok_or(AuthError::NoClientCertificate)?;
            let verified = head.verify_signature(&self.verifier, now)?;
            // Only now, with the signature verified: unauthenticated traffic cannot fill the
            // replay cache.
            self.nonces
                .first_use(&verified.keyid, &verified.nonce, verified.replay_until, now)
                .await?;
            Ok(Caller {
                client,
                key_id: verified.keyid,
                principal: None,
                acts_as_app: false,
                method: AuthMethod::ClientCertificate,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::authn::ClientCertificate;
    use crate::signature::Message;
    use crate::signature::{digest, sign, KeyRing, SignParams, SignatureError, SigningKey, Window};
    use crate::store::{MemoryNonces, NonceError};

    const NOW: u64 = 1_700_000_000;
    const URI: &str = "https://patgate.test/git/ghe/api/v3/repos/a/b/git/refs";
    const BODY: &[u8] = br#"{"ref":"refs/heads/x"}"#;

    fn key(id: &str) -> SigningKey {
        SigningKey::ed25519_from_seed(id, &[7; 32]).unwrap()
    }

    fn authenticator(keys: &[&SigningKey], capacity: usize) -> MtlsSignature {
        let ring = KeyRing::from_keys(keys.iter().map(|k| k.app_key())).unwrap();
        MtlsSignature::new(
            Verifier::new(ring, Window::default(), NOW - 3600),
            Arc::new(MemoryNonces::new(capacity)),
        )
    }

    fn connection(allowed: bool) -> Connection {
        Connection {
            peer: SocketAddr::from(([127, 0, 0, 1], 5555)),
            certificate: Some(ClientCertificate {
                subject: "CN=jira".into(),
                allowed,
            }),
        }
    }

    /// A signed create-branch POST.
    fn signed(key: &SigningKey, nonce: &str, created: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "content-digest",
            HeaderValue::from_str(&digest::sha256(BODY)).unwrap(),
        );
        let (input, sig) = sign(
            &Message {
                method: &Method::POST,
                target_uri: URI,
                headers: &headers,
            },
            key,
            &SignParams {
                label: "sig1",
                components: &["@method", "@target-uri", "content-digest", "content-type"],
                created,
                expires: None,
                nonce,
                include_alg: true,
            },
        )
        .unwrap();
        headers.insert("signature-input", input);
        headers.insert("signature", sig);
        headers
    }

    async fn check(
        auth: &MtlsSignature,
        conn: &Connection,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Caller, AuthError> {
        auth.authenticate(
            conn,
            RequestHead {
                method: &Method::POST,
                target_uri: URI,
                headers,
                has_body: true,
            },
            now,
        )
        .await
    }

    #[tokio::test]
    async fn a_nonce_is_accepted_once_per_keyid() {
        let (k1, k2) = (key("k1"), key("k2"));
        let auth = authenticator(&[&k1, &k2], 100);
        let conn = connection(true);
        let caller = check(&auth, &conn, &signed(&k1, "same", NOW), NOW)
            .await
            .unwrap();
        assert_eq!((&*caller.client, caller.key_id.as_str()), ("CN=jira", "k1"));
        assert_eq!(
            check(&auth, &conn, &signed(&k1, "same", NOW), NOW + 1)
                .await
                .unwrap_err(),
            AuthError::Nonce(NonceError::Replayed)
        );
        // A fresh signature reusing the nonce is still a replay.
        assert_eq!(
            check(&auth, &conn, &signed(&k1, "same", NOW + 2), NOW + 2)
                .await
                .unwrap_err(),
            AuthError::Nonce(NonceError::Replayed)
        );
        // The same nonce under another trusted keyid is a different pair.
        check(&auth, &conn, &signed(&k2, "same", NOW), NOW)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn failures_do_not_burn_the_nonce() {
        let k = key("k");
        let auth = authenticator(&[&k], 100);
        // Another private key under the same keyid, with nonce N...
        let forged = signed(
            &SigningKey::ed25519_from_seed("k", &[8; 32]).unwrap(),
            "N",
            NOW,
        );
        assert!(matches!(
            check(&auth, &connection(true), &forged, NOW).await,
            Err(AuthError::Signature(SignatureError::Invalid(_)))
        ));
        // ... and a client not on the allow-list with nonce M do not use them up.
        assert_eq!(
            check(&auth, &connection(false), &signed(&k, "M", NOW), NOW)
                .await
                .unwrap_err(),
            AuthError::ClientNotAllowed
        );
        check(&auth, &connection(true), &signed(&k, "N", NOW), NOW)
            .await
            .unwrap();
        check(&auth, &connection(true), &signed(&k, "M", NOW), NOW)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_cache_refuses_until_entries_expire() {
        let k = key("k");
        let auth = authenticator(&[&k], 1);
        let conn = connection(true);
        check(&auth, &conn, &signed(&k, "n1", NOW), NOW)
            .await
            .unwrap();
        assert_eq!(
            check(&auth, &conn, &signed(&k, "n2", NOW), NOW)
                .await
                .unwrap_err(),
            AuthError::Nonce(NonceError::Full)
        );
        // Past n1's window (60 s) its room is given back.
        let later = NOW + 61;
        check(&auth, &conn, &signed(&k, "n2", later), later)
            .await
            .unwrap();
        assert_eq!(
            check(&auth, &conn, &signed(&k, "n3", later), later)
                .await
                .unwrap_err(),
            AuthError::Nonce(NonceError::Full)
        );
    }

    #[tokio::test]
    async fn a_connection_without_a_certificate_is_refused() {
        let k = key("k");
        let auth = authenticator(&[&k], 10);
        let conn = Connection {
            peer: SocketAddr::from(([127, 0, 0, 1], 5555)),
            certificate: None,
        };
        assert_eq!(
            check(&auth, &conn, &signed(&k, "n", NOW), NOW)
                .await
                .unwrap_err(),
            AuthError::NoClientCertificate
        );
    }
}
