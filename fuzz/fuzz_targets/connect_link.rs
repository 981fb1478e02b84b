//! Connect links (`{public_url}/connect/{token}`, token = `base64url(claims) "."
//! base64url(HMAC)`). Each run issues a real link with a fresh random key; the input is a
//! template in which `{token}`, `{payload}` and `{tag}` are replaced by the real token and
//! its two halves, so the fuzzer can splice, truncate and re-encode a genuine link.
//!
//! Properties: a token that opens is exactly the issued one, with the issued claims (so
//! only the key could have made it); it opens once; its page token checks as a page, never
//! opens as a link; a template with no placeholder (a token made without the key) never
//! opens or checks.
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use patgate::config::ConnectListener;
use patgate::links::{LinkError, Links};
use patgate::store::MemoryLinks;
use patgate_fuzz::ready;

const NOW: u64 = 1_767_225_600;
const INTEGRATION: &str = "ghe";
const ACCOUNT: &str = "5b10ac8d82e05b22cc7d4ef5";

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let links = Links::new(
        &ConnectListener {
            listen: "127.0.0.1:0".parse().expect("socket address"),
            cert: PathBuf::from("connect.crt"),
            key: PathBuf::from("connect.key"),
            public_url: "https://patgate.example.com:8444".into(),
            link_ttl: Duration::from_secs(600),
        },
        Arc::new(MemoryLinks::new()),
    );
    let link = links.issue(INTEGRATION, ACCOUNT, NOW);
    let (_, token) = link.url.rsplit_once("/connect/").expect("a connect URL");
    let (payload, tag) = token.split_once('.').expect("payload.tag");
    let candidate = template
        .replace("{token}", token)
        .replace("{payload}", payload)
        .replace("{tag}", tag);
    let forged = !["{token}", "{payload}", "{tag}"]
        .iter()
        .any(|p| template.contains(p));

    let page_check = links.check_page(&candidate, NOW);
    assert!(page_check.is_err(), "a link token checked as a page token");
    // Nothing but the first open's proof reopens a link: the fuzzed text is tried as one.
    let proofs = [candidate.as_str()];
    match ready(links.open(&candidate, &proofs, NOW)) {
        Ok(opened) => {
            let (claims, page) = (&opened.claims, &opened.page_token);
            assert!(
                !forged,
                "a token made without the key opened: {candidate:?}"
            );
            assert_eq!(candidate, token, "a token other than the issued one opened");
            assert_eq!(
                (claims.kind.as_str(), claims.integration.as_str()),
                ("link", INTEGRATION)
            );
            assert_eq!(claims.account, ACCOUNT);
            assert_eq!(
                ready(links.open(&candidate, &proofs, NOW)).err(),
                Some(LinkError::Used)
            );
            let again = ready(links.open(&candidate, &[&opened.reload_proof], NOW))
                .expect("its own proof reopens it");
            assert!(again.reload);
            let page_claims = links.check_page(page, NOW).expect("its page token checks");
            assert_eq!(page_claims.kind, "page");
            assert_eq!(page_claims.account, ACCOUNT);
            assert!(
                ready(links.open(page, &[], NOW)).is_err(),
                "a page token opened as a link"
            );
            assert_eq!(
                links.check_page(page, NOW + 600).err(),
                Some(LinkError::Expired)
            );
        }
        Err(err) => {
            if candidate == token {
                panic!("the issued link did not open: {err:?}");
            }
        }
    }
});
