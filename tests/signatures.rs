//! Every 401 through the wire, and that a refused request never reaches the host.

mod common;

use bytes::Bytes;
use common::*;
use http::header::HeaderValue;
use http_body_util::Full;
use patgate::client::sign_request;
use patgate::signature::SigningKey;

fn unix_now() -> u64 {
    patgate::clock::unix_now()
}

#[tokio::test]
async fn unsigned_requests_get_signature_missing() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let mut request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    request.headers_mut().remove("signature");
    request.headers_mut().remove("signature-input");
    let response = client.send_signed(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-missing");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_key_patgate_does_not_trust_gets_unknown_key() {
    let (gw, host) = Gateway::start(Options::default()).await;
    // Another app's key, even under a trusted keyid, does not verify; under its own keyid it
    // is unknown.
    let stranger = SigningKey::generate_ed25519("some-other-app");
    let response = gw
        .client_with(stranger, false)
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "unknown-key");
    let impostor = SigningKey::generate_ed25519(APP_KEYID);
    let response = gw
        .client_with(impostor, false)
        .send(&gw.get("/git/ghe/api/v3/user"))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "signature-invalid");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn replays_get_signature_replayed() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    let copy = replay_of(&request);
    assert_eq!(client.send_signed(request).await.unwrap().status(), 200);
    let response = client.send_signed(copy).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-replayed");
    assert_eq!(host.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn old_and_future_signatures_get_signature_expired() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    for created in [unix_now() - 120, unix_now() + 60] {
        let request =
            sign_request(&gw.signing_key, &gw.get("/git/ghe/api/v3/user"), created).unwrap();
        let response = client.send_signed(request).await.unwrap();
        assert_eq!(response.status(), 401, "created {created}");
        assert_eq!(problem_code(&response), "signature-expired");
    }
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_changed_body_gets_signature_invalid() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_A, PAT_A).await;
    let client = gw.client();
    let request = signed(&client, &gw.create_branch(Some(ACCOUNT_A)));
    let (parts, _) = request.into_parts();
    let tampered = http::Request::from_parts(
        parts,
        Full::new(Bytes::from_static(
            br#"{"ref":"refs/heads/main","sha":"0000000000000000000000000000000000000000"}"#,
        )),
    );
    let response = client.send_signed(tampered).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-invalid");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_changed_account_gets_signature_invalid() {
    let (gw, host) = Gateway::start(Options::default()).await;
    gw.store_pat(ACCOUNT_B, PAT_B).await;
    let client = gw.client();
    let mut request = signed(&client, &gw.create_branch(Some(ACCOUNT_A)));
    request
        .headers_mut()
        .insert("patgate-account", HeaderValue::from_static(ACCOUNT_B));
    let response = client.send_signed(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-invalid");
    // Adding an account to a request signed without one is refused too: it is not covered.
    let mut request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    request
        .headers_mut()
        .insert("patgate-account", HeaderValue::from_static(ACCOUNT_B));
    let response = client.send_signed(request).await.unwrap();
    assert_eq!(problem_code(&response), "signature-invalid");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_changed_target_gets_signature_invalid() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    let (mut parts, body) = request.into_parts();
    parts.uri = gw.url("/git/ghe/api/v3/repos/acme/secret").parse().unwrap();
    let response = client
        .send_signed(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "signature-invalid");
    let request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    let (mut parts, body) = request.into_parts();
    parts.method = http::Method::DELETE;
    let response = client
        .send_signed(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    assert_eq!(problem_code(&response), "signature-invalid");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_garbled_signature_gets_signature_invalid() {
    let (gw, host) = Gateway::start(Options::default()).await;
    let client = gw.client();
    let mut request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    request
        .headers_mut()
        .insert("signature", HeaderValue::from_static("sig1=:AAAA:"));
    let response = client.send_signed(request).await.unwrap();
    assert_eq!(problem_code(&response), "signature-invalid");
    let mut request = signed(&client, &gw.get("/git/ghe/api/v3/user"));
    request.headers_mut().insert(
        "signature-input",
        HeaderValue::from_static("sig1=(\"@method\";created=1"),
    );
    let response = client.send_signed(request).await.unwrap();
    assert_eq!(problem_code(&response), "signature-invalid");
    assert!(host.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn signatures_made_before_patgate_started_are_refused() {
    // The replay cache is new after a restart, so a request signed earlier (but still inside
    // the 60 s window) could be a replay of one the previous process already served.
    let (gw, host) = Gateway::start(Options::default()).await;
    let request = sign_request(
        &gw.signing_key,
        &gw.get("/git/ghe/api/v3/user"),
        unix_now() - 30,
    )
    .unwrap();
    let response = gw.client().send_signed(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(problem_code(&response), "signature-expired");
    assert!(host.requests().is_empty());
    gw.stop().await;
}
