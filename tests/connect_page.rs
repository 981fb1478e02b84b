//! The connect page, driven over real TLS as a browser would send plain HTML forms: one-time
//! links from the `/v1` API and from `user-pat-required`, storing a PAT validated with the
//! host, refusals for reused, expired and forged links and cross-site posts.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, Response};
use http_body_util::Full;
use patgate::client::Outgoing;
use patgate::clock::ManualClock;
use std::time::Duration;

fn with_connect(ttl: u64) -> Options {
    Options {
        connect_ttl_seconds: Some(ttl),
        ..Options::default()
    }
}

async fn connect_link(gw: &Gateway, account: &str) -> Response<Bytes> {
    gw.client()
        .send(&Outgoing {
            method: Method::POST,
            url: gw.url(&format!(
                "/v1/integrations/ghe/users/{account}/connect-link"
            )),
            ..Outgoing::default()
        })
        .await
        .unwrap()
}

async fn new_link(gw: &Gateway, account: &str) -> String {
    let response = connect_link(gw, account).await;
    assert_eq!(response.status(), 200, "{}", text(&response));
    let body = json(&response);
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    body["url"].as_str().unwrap().to_string()
}

/// A browser request: no signature; the app's TLS client is reused, its client certificate
/// is never asked for by the connect listener.
async fn browser(gw: &Gateway, request: Request<Full<Bytes>>) -> Response<Bytes> {
    gw.client().send_signed(request).await.unwrap()
}

async fn open(gw: &Gateway, url: &str) -> Response<Bytes> {
    browser(gw, Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

async fn post(gw: &Gateway, link_url: &str, path: &str, form: &str) -> Response<Bytes> {
    let origin = link_url.split("/connect/").next().unwrap();
    browser(
        gw,
        Request::post(format!("{origin}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .body(Full::new(Bytes::from(form.to_string())))
            .unwrap(),
    )
    .await
}

fn text(response: &Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

/// The page token of the forms on a page.
fn page_token(page: &str) -> String {
    let start = page.find("name=\"page\" value=\"").unwrap() + "name=\"page\" value=\"".len();
    page[start..][..page[start..].find('"').unwrap()].to_string()
}

fn assert_secure_headers(response: &Response<Bytes>) {
    let h = response.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
}

#[tokio::test]
async fn a_link_opens_the_page_once_and_the_stored_pat_is_then_used() {
    let (gw, host) = Gateway::start(with_connect(900)).await;
    let url = new_link(&gw, ACCOUNT_A).await;
    let port = gw.runtime.config().connect.as_ref().unwrap().listen.port();
    assert!(
        url.starts_with(&format!("https://localhost:{port}/connect/")),
        "{url}"
    );

    let page = open(&gw, &url).await;
    assert_eq!(page.status(), 200, "{}", text(&page));
    assert_secure_headers(&page);
    let html = text(&page);
    // The host by its name, not the integration's id or a raw address.
    assert!(
        html.contains("<strong>GitHub Enterprise Server</strong> at <strong>localhost</strong>"),
        "{html}"
    );
    assert!(!html.contains("<strong>ghe</strong>"), "{html}");
    assert!(
        !html.contains(&format!(":{}</strong>", host.addr.port())),
        "{html}"
    );
    assert!(
        html.contains("Personal access tokens"),
        "token help: {html}"
    );
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("no token set up"));

    let token = page_token(&html);
    let stored = post(
        &gw,
        &url,
        "/connect/pat",
        &format!("page={token}&token={PAT_A}"),
    )
    .await;
    let html = text(&stored);
    assert_eq!(stored.status(), 200, "{html}");
    assert_secure_headers(&stored);
    assert!(
        html.contains("<strong id=\"host-login\">alice</strong>"),
        "{html}"
    );
    assert!(!html.contains(PAT_A), "the token is echoed back");
    assert!(html.contains("Replace token") && html.contains("Remove token"));

    // The next action through the proxy reaches the host with that PAT.
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", text(&response));
    assert_eq!(response.headers()["patgate-credential"], "user");
    assert_eq!(
        host.last().authorization(),
        Some(&*format!("Bearer {PAT_A}"))
    );

    // The link opened once; opening it again is refused plainly.
    let again = open(&gw, &url).await;
    assert_eq!(again.status(), 410);
    assert!(text(&again).contains("already used"), "{}", text(&again));

    // The page's forms go on working until expiry: remove the token.
    let removed = post(&gw, &url, "/connect/remove", &format!("page={token}")).await;
    assert_eq!(removed.status(), 200, "{}", text(&removed));
    assert!(text(&removed).contains("was removed"));
    assert!(gw
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .is_none());
    gw.stop().await;
}

#[tokio::test]
async fn a_token_the_host_rejects_stores_nothing_and_says_why() {
    let (gw, _host) = Gateway::start(with_connect(900)).await;
    let url = new_link(&gw, ACCOUNT_B).await;
    let token = page_token(&text(&open(&gw, &url).await));
    let refused = post(
        &gw,
        &url,
        "/connect/pat",
        &format!("page={token}&token=ghp_NotKnownToTheHost000000000000000000"),
    )
    .await;
    let html = text(&refused);
    assert_eq!(refused.status(), 422, "{html}");
    assert!(html.contains("The token was not saved"), "{html}");
    assert!(!html.contains("ghp_NotKnownToTheHost"), "{html}");
    assert!(gw
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_B)
        .await
        .unwrap()
        .is_none());
    gw.stop().await;
}

#[tokio::test]
async fn expired_forged_and_cross_site_requests_are_refused() {
    // Links live three seconds on a clock the test moves.
    let clock = ManualClock::new();
    let (gw, _host) = Gateway::start(Options {
        clock: Some(clock.clone()),
        ..with_connect(3)
    })
    .await;
    let url = new_link(&gw, ACCOUNT_A).await;
    let token = page_token(&text(&open(&gw, &url).await));
    let stale = new_link(&gw, ACCOUNT_A).await;
    // Past both links' expiry (opening the stale link to find out would use it up).
    clock.advance(std::time::Duration::from_secs(4));
    let expired = open(&gw, &stale).await;
    assert_eq!(expired.status(), 410);
    assert!(text(&expired).contains("expired"), "{}", text(&expired));
    let late = post(
        &gw,
        &url,
        "/connect/pat",
        &format!("page={token}&token={PAT_A}"),
    )
    .await;
    assert_eq!(late.status(), 410, "{}", text(&late));

    let origin = url.split("/connect/").next().unwrap().to_string();
    let forged = open(&gw, &format!("{origin}/connect/eyJrIjoibGluayJ9.AAAA")).await;
    assert_eq!(forged.status(), 404);
    assert!(text(&forged).contains("not valid"));

    // A form posted from another site, or without the page token, is refused.
    let (gw2, _host2) = Gateway::start(with_connect(900)).await;
    let url = new_link(&gw2, ACCOUNT_A).await;
    let token = page_token(&text(&open(&gw2, &url).await));
    let origin = url.split("/connect/").next().unwrap().to_string();
    let cross = browser(
        &gw2,
        Request::post(format!("{origin}/connect/pat"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .body(Full::new(Bytes::from(format!(
                "page={token}&token={PAT_A}"
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(cross.status(), 403, "{}", text(&cross));
    let no_token = post(&gw2, &url, "/connect/pat", &format!("token={PAT_A}")).await;
    assert_eq!(no_token.status(), 404, "{}", text(&no_token));
    assert!(gw2
        .runtime
        .vault()
        .user_pat_meta("ghe", ACCOUNT_A)
        .await
        .unwrap()
        .is_none());
    gw.stop().await;
    gw2.stop().await;
}

#[tokio::test]
async fn user_pat_required_carries_a_setup_url_that_opens_the_page() {
    let (gw, _host) = Gateway::start(with_connect(900)).await;
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "user-pat-required");
    let setup_url = json(&response)["setup_url"].as_str().unwrap().to_string();
    let page = open(&gw, &setup_url).await;
    assert_eq!(page.status(), 200, "{}", text(&page));
    assert!(text(&page).contains("Connect your account"));
    gw.stop().await;
}

#[tokio::test]
async fn without_a_connect_listener_no_links_are_made() {
    let (gw, _host) = Gateway::start(Options::default()).await;
    let response = connect_link(&gw, ACCOUNT_A).await;
    assert_eq!(problem_code(&response), "not-found");
    let response = gw
        .client()
        .send(&gw.create_branch(Some(ACCOUNT_A)))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "user-pat-required");
    assert!(json(&response).get("setup_url").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn what_the_host_says_is_escaped_and_another_origin_is_refused() {
    let (gw, host) = Gateway::start(with_connect(900)).await;
    let token = "ghp_MalloryPatDoNotLeak0123456789abcdefgh";
    host.add_user(token, "<script>alert(1)</script>", "repo");
    let url = new_link(&gw, ACCOUNT_A).await;
    let page = page_token(&text(&open(&gw, &url).await));
    // Another named origin, even without Sec-Fetch-Site, is refused.
    let origin = url.split("/connect/").next().unwrap().to_string();
    let foreign = browser(
        &gw,
        Request::post(format!("{origin}/connect/pat"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://evil.example")
            .body(Full::new(Bytes::from(format!("page={page}&token={token}"))))
            .unwrap(),
    )
    .await;
    assert_eq!(foreign.status(), 403, "{}", text(&foreign));
    let stored = post(
        &gw,
        &url,
        "/connect/pat",
        &format!("page={page}&token={token}"),
    )
    .await;
    let html = text(&stored);
    assert_eq!(stored.status(), 200, "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    gw.stop().await;
}

/// The `Set-Cookie` of an answer, split into its name=value and its attributes.
fn set_cookie(response: &Response<Bytes>) -> (String, Vec<String>) {
    let header = response
        .headers()
        .get("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {:?}", response.headers()))
        .to_str()
        .unwrap();
    let mut parts = header.split("; ").map(str::to_string);
    (parts.next().unwrap(), parts.collect())
}

async fn open_with_cookie(gw: &Gateway, url: &str, cookie: &str) -> Response<Bytes> {
    browser(
        gw,
        Request::get(url)
            .header("cookie", cookie)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_page_names_the_host_links_to_its_token_page_and_says_how_long_it_works() {
    let clock = ManualClock::new();
    let (gw, _host) = Gateway::start(Options {
        clock: Some(clock.clone()),
        integration_toml: "display_name = \"Acme <GitHub>\"".into(),
        ..with_connect(900)
    })
    .await;
    let url = new_link(&gw, ACCOUNT_A).await;
    // Opened four minutes after it was made: eleven minutes left.
    clock.advance(Duration::from_secs(240));
    let page = open(&gw, &url).await;
    let html = text(&page);
    assert_eq!(page.status(), 200, "{html}");
    assert!(
        html.contains("<strong>Acme &lt;GitHub&gt;</strong> (GitHub Enterprise Server, localhost)"),
        "{html}"
    );
    let port = gw.runtime.config().integrations[0]
        .base_url
        .port_u16()
        .unwrap();
    assert!(
        html.contains(&format!(
            "<a id=\"token-page\" href=\"https://localhost:{port}/settings/tokens/new?scopes=repo&amp;description=Git%20Integration%20for%20Jira%20%28Acme%20%3CGitHub%3E%29\" target=\"_blank\" rel=\"noopener noreferrer\">Make a token on localhost</a>"
        )),
        "{html}"
    );
    assert!(
        html.contains("“repo” scope and a description filled in"),
        "{html}"
    );
    assert!(html.contains("(about 11 minutes from now)"), "{html}");
    assert!(html.contains("This page works until "), "{html}");
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_by_the_opener_shows_the_page_again_and_no_other_browser_gets_it() {
    let clock = ManualClock::new();
    let (gw, _host) = Gateway::start(Options {
        clock: Some(clock.clone()),
        ..with_connect(900)
    })
    .await;
    let url = new_link(&gw, ACCOUNT_A).await;
    let other = new_link(&gw, ACCOUNT_A).await;
    clock.advance(Duration::from_secs(100));
    let first = open(&gw, &url).await;
    assert_eq!(first.status(), 200, "{}", text(&first));
    let (cookie, attributes) = set_cookie(&first);
    let path = url.split_once("localhost:").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    assert!(cookie.starts_with("patgate-link="), "{cookie}");
    for attribute in [
        &format!("Path={path}"),
        "Max-Age=800",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
    ] {
        assert!(
            attributes.iter().any(|a| a == attribute),
            "{attribute} missing from {attributes:?}"
        );
    }

    // The same browser reloads: the same page, the same page token, no new cookie.
    let reload = open_with_cookie(&gw, &url, &format!("theme=dark; {cookie}")).await;
    assert_eq!(reload.status(), 200, "{}", text(&reload));
    assert_eq!(page_token(&text(&reload)), page_token(&text(&first)));
    assert!(reload.headers().get("set-cookie").is_none());

    // Another browser (no cookie, a made-up one, or another link's) is told it was used.
    let other_first = open(&gw, &other).await;
    let (other_cookie, _) = set_cookie(&other_first);
    for cookie in ["", "patgate-link=AAAA", other_cookie.as_str()] {
        let refused = if cookie.is_empty() {
            open(&gw, &url).await
        } else {
            open_with_cookie(&gw, &url, cookie).await
        };
        assert_eq!(refused.status(), 410, "{cookie}: {}", text(&refused));
        assert!(text(&refused).contains("already used"));
    }

    // The cookie does not outlive the link.
    clock.advance(Duration::from_secs(801));
    let late = open_with_cookie(&gw, &url, &cookie).await;
    assert_eq!(late.status(), 410);
    assert!(text(&late).contains("expired"), "{}", text(&late));
    gw.stop().await;
}

#[tokio::test]
async fn head_answers_like_get_over_http1_and_http2_and_uses_no_link() {
    let (gw, _host) = Gateway::start(with_connect(900)).await;
    for http2 in [false, true] {
        let client = gw.client_with(gw.signing_key.clone(), http2);
        let head = |url: String| {
            let client = client.clone();
            async move {
                client
                    .send_signed(Request::head(url).body(Full::new(Bytes::new())).unwrap())
                    .await
                    .unwrap()
            }
        };
        let url = new_link(&gw, ACCOUNT_A).await;
        let origin = url.split("/connect/").next().unwrap().to_string();

        let css = head(format!("{origin}/connect/style.css")).await;
        assert_eq!(css.status(), 200, "http2={http2}");
        assert_eq!(css.headers()["content-type"], "text/css");
        assert!(css.body().is_empty());

        // HEAD of a fresh link: what GET would answer, minus the body, and the link is
        // still unopened afterwards (no cookie either: nothing was opened).
        let peeked = head(url.clone()).await;
        assert_eq!(peeked.status(), 200, "http2={http2}");
        assert_eq!(peeked.headers()["content-type"], "text/html; charset=utf-8");
        assert_secure_headers(&peeked);
        assert!(peeked.body().is_empty());
        assert!(peeked.headers().get("set-cookie").is_none());
        let length: usize = peeked.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let opened = open(&gw, &url).await;
        assert_eq!(
            opened.status(),
            200,
            "HEAD used the link up (http2={http2})"
        );
        assert_eq!(opened.body().len(), length, "http2={http2}");

        // Once used, HEAD says so too; unknown paths and forged links as GET does.
        assert_eq!(head(url.clone()).await.status(), 410, "http2={http2}");
        assert_eq!(
            head(format!("{origin}/connect/eyJrIjoibGluayJ9.AAAA"))
                .await
                .status(),
            404
        );
        assert_eq!(head(format!("{origin}/nothing")).await.status(), 404);
    }
    gw.stop().await;
}
