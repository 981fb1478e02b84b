//! Connect links: one-time links to the connect page, and the page tokens its forms carry.
//!
//! Links are `{public_url}/connect/{token}`, where the token is `base64url(claims) "."
//! base64url(HMAC-SHA256(key, claims))`, with the key of the [`LinkStore`] (the embedded one
//! makes it at random at start and keeps it in memory only: a restart invalidates every open
//! link, the app simply asks for a new one, and no link key ever sits on disk). Opening a
//! link consumes it (the store remembers opened links until they expire) and answers a
//! *page token*: the same claims with kind `page`, multi-use until the link's expiry. Every
//! form POST must carry that page token, which is both the proof that the user opened this
//! link and the CSRF token (a third-party page cannot read it).
//!
//! The first open also answers a *reload proof*, `base64url(HMAC(key, "reload:" ||
//! SHA-256(link token)))`, which the connect page keeps in a cookie on that link's path: a
//! browser that sends it back opens the link again (a reload), any other gets "already
//! used". It names one link, dies with the process's key, and the link's expiry still holds.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::ConnectListener;
use crate::store::{LinkStore, LinkUseError, StoreError};

/// Why a link or page token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid")]
    Invalid,
    #[error("this link has expired")]
    Expired,
    #[error("this link was already used")]
    Used,
    #[error("too many links are open at once; try again in a few minutes")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LinkUseError> for LinkError {
    fn from(err: LinkUseError) -> LinkError {
        match err {
            LinkUseError::Used => LinkError::Used,
            LinkUseError::Busy => LinkError::Busy,
            LinkUseError::Store(e) => LinkError::Store(e),
        }
    }
}

/// What a link or page token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `link` or `page`.
    #[serde(rename = "k")]
    pub kind: String,
    #[serde(rename = "i")]
    pub integration: String,
    #[serde(rename = "a")]
    pub account: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires_at: u64,
    #[serde(rename = "n")]
    pub nonce: String,
}

/// An opened link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub claims: Claims,
    /// The token the page's forms carry.
    pub page_token: String,
    /// Proves, when sent back, that a browser is the one that opened this link.
    pub reload_proof: String,
    /// Opened before, by the browser that sent [`Opened::reload_proof`] back.
    pub reload: bool,
}

/// A link made for the app.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectLink {
    pub url: String,
    pub expires_at: String,
}

/// Makes and checks connect links.
#[derive(Debug)]
pub struct Links {
    public_url: String,
    ttl: Duration,
    /// The key, and the links already opened; the same store serves a reloaded config, so
    /// links issued before a reload stay valid and once-opened ones stay used.
    store: Arc<dyn LinkStore>,
}

impl Links {
    /// Links for `config`'s page, signed with `store`'s key.
    pub fn new(config: &ConnectListener, store: Arc<dyn LinkStore>) -> Links {
        Links {
            public_url: config.public_url.clone(),
            ttl: config.link_ttl,
            store,
        }
    }

    /// The store behind these links.
    pub fn store(&self) -> Arc<dyn LinkStore> {
        self.store.clone()
    }

    /// The page's public URL, as configured (`https://host[:port]`).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// A one-time link for `account` on `integration`, valid from `now` for the configured TTL.
    pub fn issue(&self, integration: &str, account: &str, now: u64) -> ConnectLink {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let claims = Claims {
            kind: "link".into(),
            integration: integration.into(),
            account: account.into(),
            expires_at: now + self.ttl.as_secs(),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        };
        ConnectLink {
            url: format!("{}/connect/{}", self.public_url, self.sign(&claims)),
            expires_at: rfc3339(claims.expires_at),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(self.store.key()).expect("any key length")
    }

    fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    fn verify(&self, token: &str, kind: &str, now: u64) -> Result<Claims, LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Invalid)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| LinkError::Invalid)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(LinkError::Invalid)?;
        if claims.kind != kind {
            return Err(LinkError::Invalid);
        }
        if now >= claims.expires_at {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }

    /// Opens a link: checks it and consumes it. A link already opened opens again only for
    /// the browser that opened it: one that sends back, as one of `proofs`, the
    /// [`Opened::reload_proof`] of that first open (the connect page keeps it in a cookie).
    pub async fn open(&self, token: &str, proofs: &[&str], now: u64) -> Result<Opened, LinkError> {
        let claims = self.verify(token, "link", now)?;
        let reload = match self
            .store
            .first_open(&claims.nonce, claims.expires_at, now)
            .await
        {
            Ok(()) => false,
            Err(LinkUseError::Used) if self.proves_opener(token, proofs) => true,
            Err(err) => return Err(err.into()),
        };
        Ok(self.opened(token, claims, reload))
    }

    /// What [`Links::open`] would answer, without consuming the link (for `HEAD`).
    pub async fn peek(&self, token: &str, proofs: &[&str], now: u64) -> Result<Opened, LinkError> {
        let claims = self.verify(token, "link", now)?;
        let reload = self.store.was_opened(&claims.nonce).await?;
        if reload && !self.proves_opener(token, proofs) {
            return Err(LinkError::Used);
        }
        Ok(self.opened(token, claims, reload))
    }

    fn opened(&self, token: &str, claims: Claims, reload: bool) -> Opened {
        let page = Claims {
            kind: "page".into(),
            ..claims.clone()
        };
        Opened {
            page_token: self.sign(&page),
            reload_proof: URL_SAFE_NO_PAD.encode(self.reload_mac(token).finalize().into_bytes()),
            claims,
            reload,
        }
    }

    /// HMAC over a domain tag and the link's SHA-256: only this process's key makes it, and
    /// it names one link. The tag holds `:`, which no signed payload (base64url) does.
    fn reload_mac(&self, token: &str) -> Hmac<Sha256> {
        let mut mac = self.mac();
        mac.update(b"reload:");
        mac.update(&Sha256::digest(token.as_bytes()));
        mac
    }

    fn proves_opener(&self, token: &str, proofs: &[&str]) -> bool {
        proofs.iter().any(|proof| {
            URL_SAFE_NO_PAD
                .decode(proof)
                .is_ok_and(|tag| self.reload_mac(token).verify_slice(&tag).is_ok())
        })
    }

    /// Checks a page token sent back by a form.
    pub fn check_page(&self, token: &str, now: u64) -> Result<Claims, LinkError> {
        self.verify(token, "page", now)
    }
}

use crate::clock::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryLinks;

    fn links(ttl: u64) -> Links {
        Links::new(
            &ConnectListener {
                listen: "127.0.0.1:0".parse().unwrap(),
                cert: "c".into(),
                key: "k".into(),
                public_url: "https://patgate.test:8444".into(),
                link_ttl: Duration::from_secs(ttl),
            },
            Arc::new(MemoryLinks::new()),
        )
    }

    fn token(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    #[tokio::test]
    async fn a_link_opens_once_and_is_bound_to_its_user() {
        let l = links(900);
        let link = l.issue("ghe", "acc-1", 1000);
        assert!(link.url.starts_with("https://patgate.test:8444/connect/"));
        let first = l.open(token(&link.url), &[], 1001).await.unwrap();
        let claims = &first.claims;
        assert_eq!(
            (claims.integration.as_str(), claims.account.as_str()),
            ("ghe", "acc-1")
        );
        assert!(!first.reload);
        assert_eq!(
            l.open(token(&link.url), &[], 1002).await,
            Err(LinkError::Used)
        );
        let page = &first.page_token;
        assert_eq!(l.check_page(page, 1003).unwrap().account, "acc-1");
        // A page token is not a link, and a link is not a page token.
        assert_eq!(l.open(page, &[], 1003).await, Err(LinkError::Invalid));
        let other = l.issue("ghe", "acc-2", 1000);
        assert_eq!(
            l.check_page(token(&other.url), 1003),
            Err(LinkError::Invalid)
        );
    }

    #[tokio::test]
    async fn expired_forged_and_foreign_links_are_refused() {
        let l = links(900);
        let link = l.issue("ghe", "acc-1", 1000);
        assert_eq!(
            l.open(token(&link.url), &[], 1900).await,
            Err(LinkError::Expired)
        );
        // Another process (another key) made it: after a restart links die.
        assert_eq!(
            links(900).open(token(&link.url), &[], 1001).await,
            Err(LinkError::Invalid)
        );
        // Claims changed without the key.
        let t = token(&link.url);
        let (payload, tag) = t.split_once('.').unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims.account = "acc-2".into();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(l.open(&forged, &[], 1001).await, Err(LinkError::Invalid));
        assert_eq!(l.open("garbage", &[], 1001).await, Err(LinkError::Invalid));
    }

    #[tokio::test]
    async fn the_opener_reopens_its_link_and_no_one_else_does() {
        let l = links(900);
        let link = l.issue("ghe", "acc-1", 1000);
        let other = l.issue("ghe", "acc-1", 1000);
        let t = token(&link.url);
        // HEAD before the first open: answers like the open, and uses nothing up.
        assert!(!l.peek(t, &[], 1001).await.unwrap().reload);
        let first = l.open(t, &[], 1001).await.unwrap();
        let proof = first.reload_proof.as_str();
        let again = l.open(t, &["junk", proof], 1002).await.unwrap();
        assert!(again.reload);
        assert_eq!(again.page_token, first.page_token);
        assert!(l.peek(t, &[proof], 1002).await.unwrap().reload);
        // Without the proof, with another link's proof, or from another process: used.
        assert_eq!(l.open(t, &[], 1003).await, Err(LinkError::Used));
        assert_eq!(l.peek(t, &[], 1003).await, Err(LinkError::Used));
        let other_first = l.open(token(&other.url), &[], 1003).await.unwrap();
        assert_eq!(
            l.open(t, &[&other_first.reload_proof], 1003).await,
            Err(LinkError::Used)
        );
        assert_ne!(other_first.reload_proof, first.reload_proof);
        // The proof does not outlive the link.
        assert_eq!(l.open(t, &[proof], 1900).await, Err(LinkError::Expired));
    }
}
