//! The connect listener's request parsing: route, reload-cookie proofs, the same-origin
//! check of form posts, and the form body. Input: `METHOD SP PATH`, then header lines
//! (`name: value`) up to an empty line, then the body.
//!
//! Properties, against oracles written apart from patgate's code: GET/HEAD
//! `/connect/style.css` is the stylesheet, POST `/connect/pat` and `/connect/remove` are the
//! two forms, any other GET/HEAD `/connect/{rest}` is the link `{rest}` exactly as sent, and
//! everything else is not found; every proof is the value of a `patgate-link=` pair of a
//! `Cookie` field, as many as there are such pairs; a post with a `Sec-Fetch-Site` other than
//! `same-origin`/`none`, or an `Origin` other than `null` and the page's own, is never taken
//! as the page's own; the form's fields survive re-encoding.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::fuzzing::connect_request;

const PUBLIC_URL: &str = "https://patgate.example.com:8444";

fn parse(data: &[u8]) -> Option<(Method, String, HeaderMap, &[u8])> {
    let text_end = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(data.len(), |at| at + 2);
    let head = std::str::from_utf8(&data[..text_end]).ok()?;
    let body = &data[text_end..];
    let mut lines = head.lines();
    let (method, path) = lines.next()?.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    Some((method, path.to_string(), headers, body))
}

fuzz_target!(|data: &[u8]| {
    let Some((method, path, headers, body)) = parse(data) else {
        return;
    };
    let (route, proofs, own, fields) = connect_request(&method, &path, &headers, PUBLIC_URL, body);

    let read = method == Method::GET || method == Method::HEAD;
    let expected = if read && path == "/connect/style.css" {
        "style".to_string()
    } else if method == Method::POST && path == "/connect/pat" {
        "save".to_string()
    } else if method == Method::POST && path == "/connect/remove" {
        "remove".to_string()
    } else if read && path.starts_with("/connect/") {
        format!("link:{}", &path["/connect/".len()..])
    } else {
        "not-found".to_string()
    };
    assert_eq!(route, expected, "{method} {path:?}");

    let pairs: Vec<String> = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';').map(|p| p.trim().to_string()))
        .filter_map(|p| p.strip_prefix("patgate-link=").map(str::to_string))
        .collect();
    assert_eq!(proofs, pairs);

    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes().to_vec());
    let origin = headers.get("origin").map(|v| v.as_bytes().to_vec());
    if site.as_deref().is_some_and(|s| s != b"same-origin" && s != b"none") {
        assert!(!own, "cross-site Sec-Fetch-Site taken as the page's own");
    }
    if origin
        .as_deref()
        .is_some_and(|o| o != b"null" && o != PUBLIC_URL.as_bytes())
    {
        assert!(!own, "another Origin taken as the page's own");
    }
    if site.is_none() && origin.is_none() {
        assert!(own, "a post without either field is the page's own (forms send Origin: null)");
    }

    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish();
    let (_, _, _, again) = connect_request(&method, &path, &headers, PUBLIC_URL, encoded.as_bytes());
    assert_eq!(again, fields, "the form's fields do not survive re-encoding");
});
