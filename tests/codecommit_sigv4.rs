//! patgate's SigV4 signatures, byte for byte against botocore (PyPI), the signer of the AWS
//! CLI and boto3: a CodeCommit CreateBranch with long-term and with temporary credentials,
//! and the STS GetCallerIdentity request patgate sends to check a key pair.

mod sigv4;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request};
use patgate::hosts::codecommit::{self, sign_request};
use patgate::vault::Credential;
use sigv4::{botocore_sign, Key};

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TOKEN: &str =
    "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+example/session+token==";
/// 2026-11-24T12:00:00Z
const TIME: u64 = 1_795_521_600;
const AMZ_DATE: &str = "20261124T120000Z";
const URL: &str = "https://codecommit.eu-west-1.amazonaws.com/";
const CREATE_BRANCH: &str = r#"{"repositoryName":"api","branchName":"PROJ-1-fix","commitId":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;

fn credential(session_token: Option<&str>) -> Credential {
    Credential::Aws {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.to_string().into(),
        session_token: session_token.map(|t| t.to_string().into()),
        region: "eu-west-1".into(),
    }
}

fn time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(TIME)
}

#[test]
fn create_branch_signature_matches_botocore() {
    for session_token in [None, Some(TOKEN)] {
        let mut request = Request::new(Bytes::from_static(CREATE_BRANCH.as_bytes()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = URL.parse().unwrap();
        let h = request.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(codecommit::JSON_CONTENT_TYPE),
        );
        h.insert(
            codecommit::TARGET_HEADER,
            HeaderValue::from_static("CodeCommit_20150413.CreateBranch"),
        );
        // Travels unsigned: a hop may rewrite it.
        h.insert(USER_AGENT, HeaderValue::from_static("jira-app/1.0"));
        sign_request(
            &mut request,
            &credential(session_token),
            "codecommit",
            time(),
        )
        .unwrap();

        let expected = botocore_sign(
            "POST",
            URL,
            &[
                ("Content-Type", codecommit::JSON_CONTENT_TYPE),
                ("X-Amz-Target", "CodeCommit_20150413.CreateBranch"),
            ],
            CREATE_BRANCH.as_bytes(),
            Key {
                access_key_id: AKID,
                secret_access_key: SECRET,
                session_token,
            },
            "eu-west-1",
            "codecommit",
            AMZ_DATE,
        );
        let h = request.headers();
        assert_eq!(h[AUTHORIZATION].to_str().unwrap(), expected.authorization);
        assert_eq!(h["x-amz-date"].to_str().unwrap(), expected.amz_date);
        assert_eq!(
            h.get("x-amz-security-token")
                .map(|v| v.to_str().unwrap().to_string()),
            expected.security_token
        );
        let signed_headers = if session_token.is_some() {
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        } else {
            "content-type;host;x-amz-date;x-amz-target"
        };
        assert!(
            expected
                .authorization
                .contains(&format!("SignedHeaders={signed_headers},")),
            "{}",
            expected.authorization
        );
    }
}

/// The comparison can fail: another secret, another time or another body give another
/// signature.
#[test]
fn botocore_disagrees_when_anything_differs() {
    let mut request = Request::new(Bytes::from_static(CREATE_BRANCH.as_bytes()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = URL.parse().unwrap();
    request.headers_mut().insert(
        codecommit::TARGET_HEADER,
        HeaderValue::from_static("CodeCommit_20150413.CreateBranch"),
    );
    sign_request(&mut request, &credential(None), "codecommit", time()).unwrap();
    let ours = request.headers()[AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_string();
    let key = Key {
        access_key_id: AKID,
        secret_access_key: SECRET,
        session_token: None,
    };
    let target = [("X-Amz-Target", "CodeCommit_20150413.CreateBranch")];
    let same = botocore_sign(
        "POST",
        URL,
        &target,
        CREATE_BRANCH.as_bytes(),
        key,
        "eu-west-1",
        "codecommit",
        AMZ_DATE,
    );
    assert_eq!(ours, same.authorization);
    let other_body = botocore_sign(
        "POST",
        URL,
        &target,
        b"{}",
        key,
        "eu-west-1",
        "codecommit",
        AMZ_DATE,
    );
    assert_ne!(ours, other_body.authorization);
    let other_secret = Key {
        secret_access_key: "another-secret",
        ..key
    };
    let other = botocore_sign(
        "POST",
        URL,
        &target,
        CREATE_BRANCH.as_bytes(),
        other_secret,
        "eu-west-1",
        "codecommit",
        AMZ_DATE,
    );
    assert_ne!(ours, other.authorization);
    let later = botocore_sign(
        "POST",
        URL,
        &target,
        CREATE_BRANCH.as_bytes(),
        key,
        "eu-west-1",
        "codecommit",
        "20261124T120001Z",
    );
    assert_ne!(ours, later.authorization);
}

#[test]
fn sts_get_caller_identity_signature_matches_botocore() {
    let url = "https://sts.eu-west-1.amazonaws.com/";
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let mut request = Request::new(Bytes::from_static(
        codecommit::GET_CALLER_IDENTITY_BODY.as_bytes(),
    ));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.parse().unwrap();
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    sign_request(&mut request, &credential(Some(TOKEN)), "sts", time()).unwrap();
    let expected = botocore_sign(
        "POST",
        url,
        &[("Content-Type", content_type)],
        codecommit::GET_CALLER_IDENTITY_BODY.as_bytes(),
        Key {
            access_key_id: AKID,
            secret_access_key: SECRET,
            session_token: Some(TOKEN),
        },
        "eu-west-1",
        "sts",
        AMZ_DATE,
    );
    assert_eq!(
        request.headers()[AUTHORIZATION].to_str().unwrap(),
        expected.authorization
    );
}
