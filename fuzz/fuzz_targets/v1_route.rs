//! The `/v1` router: `METHOD SP PATH` on the first line (the rest is ignored).
//!
//! Properties, against an oracle written apart from patgate's code: a path reaches an
//! integration's handler exactly when it is `/v1/integrations/{i}/users/{a}/{r}` with five
//! segments as sent (nothing percent-decoded, no empty segment skipped) and `r` one of `pat`,
//! `connect-link`; the integration and account it names are those bytes; the account is
//! taken exactly when it is 1–128 of `[A-Za-z0-9:_.-]` and not only dots; `connect-link`
//! takes only POST and `pat` only GET, PUT, DELETE (else 405); anything else is 404.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::fuzzing::v1_route;
use patgate_fuzz::request;

fn oracle_account(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c))
        && text.chars().any(|c| c != '.')
}

fuzz_target!(|data: &[u8]| {
    let Some((method, path, _)) = request(data) else {
        return;
    };
    let answer = v1_route(&method, path);
    let parts: Vec<&str> = path.split('/').collect();
    let shaped = parts.len() == 7
        && parts[0].is_empty()
        && parts[1] == "v1"
        && parts[2] == "integrations"
        && parts[4] == "users"
        && (parts[6] == "pat" || parts[6] == "connect-link");
    if !shaped {
        assert_eq!(answer, Err((404, "not-found")), "{method} {path:?}");
        return;
    }
    let allowed = match parts[6] {
        "pat" => [Method::GET, Method::PUT, Method::DELETE].contains(&method),
        _ => method == Method::POST,
    };
    if !allowed {
        assert_eq!(answer, Err((405, "method-not-allowed")), "{method} {path:?}");
        return;
    }
    let (integration, account, resource) = answer.expect("a shaped path with its method routes");
    assert_eq!(integration, parts[3]);
    assert_eq!(resource, parts[6]);
    match account {
        Ok(account) => {
            assert!(oracle_account(parts[5]), "{:?} taken", parts[5]);
            assert_eq!(account, parts[5], "the account is the bytes sent");
        }
        Err(()) => assert!(!oracle_account(parts[5]), "{:?} refused", parts[5]),
    }
});
