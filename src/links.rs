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

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

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

    /// Opens a link: checks it, consumes it, and answers its claims and the page token.
    pub async fn open(&self, token: &str, now: u64) -> Result<(Claims, String), LinkError> {
        let claims = self.verify(token, "link", now)?;
        self.store
            .first_open(&claims.nonce, claims.expires_at, now)
            .await?;
        let page = Claims {
            kind: "page".into(),
            ..claims.clone()
        };
        Ok((claims, self.sign(&page)))
    }

    /// Checks a page token sent back by a form.
    pub fn check_page(&self, token: &str, now: u64) -> Result<Claims, LinkError> {
        self.verify(token, "page", now)
    }
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

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
        let (claims, page) = l.open(token(&link.url), 1001).await.unwrap();
        assert_eq!(
            (claims.integration.as_str(), claims.account.as_str()),
            ("ghe", "acc-1")
        );
        assert_eq!(l.open(token(&link.url), 1002).await, Err(LinkError::Used));
        assert_eq!(l.check_page(&page, 1003).unwrap().account, "acc-1");
        // A page token is not a link, and a link is not a page token.
        assert_eq!(l.open(&page, 1003).await, Err(LinkError::Invalid));
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
            l.open(token(&link.url), 1900).await,
            Err(LinkError::Expired)
        );
        // Another process (another key) made it: after a restart links die.
        assert_eq!(
            links(900).open(token(&link.url), 1001).await,
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
        assert_eq!(l.open(&forged, 1001).await, Err(LinkError::Invalid));
        assert_eq!(l.open("garbage", 1001).await, Err(LinkError::Invalid));
    }
}
