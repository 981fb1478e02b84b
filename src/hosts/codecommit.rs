//! AWS CodeCommit: the JSON 1.1 protocol, every call `POST /` to
//! `https://codecommit.{region}.amazonaws.com`, the operation named by `X-Amz-Target`.
//!
//! | operation | request |
//! |---|---|
//! | create branch | `X-Amz-Target: CodeCommit_20150413.CreateBranch` |
//! | delete branch | `X-Amz-Target: CodeCommit_20150413.DeleteBranch` |
//! | create pull request | `X-Amz-Target: CodeCommit_20150413.CreatePullRequest` |
//! | read | `CodeCommit_20150413.` + `Get…`, `List…`, `BatchGet…`, `Describe…` |
//! | who am I | STS `GetCallerIdentity` (query protocol) at the integration's `sts_endpoint` |
//!
//! Credentials are access key pairs (plus a session token for temporary ones). patgate signs
//! the final request with SigV4 using AWS's own signer (`aws-sigv4`); whatever the app sent
//! as `Authorization`, `X-Amz-Date` or `X-Amz-Security-Token` is removed first.
//!
//! Classification fails closed: only a `POST /` with exactly one `X-Amz-Target` that parses
//! as `CodeCommit_20150413.{Operation}` can be a read or an action; anything else (another
//! method, another path, a missing, repeated or malformed target) is an other-write.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use secrecy::ExposeSecret as _;

use super::{HostAdapter, HostIdentity, UnsupportedCredential, WhoAmIError};
use crate::config::Integration;
use crate::policy::Operation;
use crate::vault::Credential;

/// The JSON 1.1 target prefix of the CodeCommit API (`metadata.targetPrefix` in the model).
pub const TARGET_PREFIX: &str = "CodeCommit_20150413";
/// The header that names the operation.
pub const TARGET_HEADER: &str = "x-amz-target";
/// `metadata.jsonVersion` 1.1 in the model.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// SigV4 signing names (`metadata.signingName`).
const CODECOMMIT_SERVICE: &str = "codecommit";
const STS_SERVICE: &str = "sts";
/// The query-protocol body of STS `GetCallerIdentity`.
pub const GET_CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// Headers that belong to a SigV4 signature and are removed from inbound requests.
/// (`Authorization` and `X-Amz-Security-Token` are removed for every host.)
pub const CREDENTIAL_HEADERS: &[&str] = &["x-amz-date", "x-amz-content-sha256"];

/// Operation-name prefixes that only read (as the CodeCommit API names its operations).
const READ_PREFIXES: &[&str] = &["BatchGet", "Describe", "Get", "List"];

/// Shown to users and admins where a key pair is asked for.
pub const TOKEN_HELP: &str = "Use an access key of your own IAM user (IAM console → Users → your user → Security credentials → Create access key). \
It needs codecommit:CreateBranch, codecommit:DeleteBranch and codecommit:CreatePullRequest (and reads such as codecommit:GetBranch) on the repositories you work with, \
for example through the AWSCodeCommitPowerUser policy. Enter the access key id and the secret access key; a session token only for temporary credentials.";

/// Which service a request is signed for. The who-am-I request carries `Sts` as a request
/// extension; everything else is a CodeCommit call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigningService {
    Sts,
}

/// The CodeCommit adapter's per-integration data.
#[derive(Debug, Clone)]
pub struct CodeCommit {
    region: String,
    sts_endpoint: http::Uri,
}

impl CodeCommit {
    /// Config validation fills in the CodeCommit settings for every `kind = "codecommit"`.
    pub fn new(integration: &Integration) -> CodeCommit {
        let settings = integration
            .codecommit
            .as_ref()
            .expect("a codecommit integration has codecommit settings (config validation)");
        CodeCommit {
            region: settings.region.clone(),
            sts_endpoint: settings.sts_endpoint.clone(),
        }
    }
}

impl HostAdapter for CodeCommit {
    fn classify(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        _body: &[u8],
    ) -> Operation {
        classify(method, path, headers)
    }

    fn credential_headers(&self) -> &'static [&'static str] {
        CREDENTIAL_HEADERS
    }

    fn accepts(&self, credential: &Credential) -> Result<(), UnsupportedCredential> {
        match credential {
            Credential::Aws { region, .. } if *region == self.region => Ok(()),
            Credential::Aws { .. } => Err(UnsupportedCredential(
                "aws-access-key for another region than the integration's",
            )),
            other => Err(UnsupportedCredential(other.kind_name())),
        }
    }

    fn apply_credential(
        &self,
        request: &mut Request<Bytes>,
        credential: &Credential,
    ) -> Result<(), UnsupportedCredential> {
        let service = match request.extensions().get::<SigningService>() {
            Some(SigningService::Sts) => STS_SERVICE,
            None => CODECOMMIT_SERVICE,
        };
        sign_request(request, credential, service, SystemTime::now())
    }

    /// `POST {sts_endpoint}/` `Action=GetCallerIdentity&Version=2011-06-15`.
    fn who_am_i_request(&self) -> Request<Bytes> {
        let mut request = Request::new(Bytes::from_static(GET_CALLER_IDENTITY_BODY.as_bytes()));
        *request.method_mut() = Method::POST;
        let endpoint = self.sts_endpoint.to_string();
        *request.uri_mut() = format!("{}/", endpoint.trim_end_matches('/'))
            .parse()
            .expect("a validated https URL plus / is a valid URI");
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        request.extensions_mut().insert(SigningService::Sts);
        request
    }

    fn who_am_i_answer(
        &self,
        status: StatusCode,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HostIdentity, WhoAmIError> {
        who_am_i_answer(status, body)
    }

    fn token_help(&self) -> &'static str {
        TOKEN_HELP
    }

    /// AWS answers a refused key pair 400/403 with an exception named in the body
    /// (`UnrecognizedClientException`, `ExpiredTokenException`), never 401; those answers are
    /// not read here, so they reach the app as the host sent them.
    fn refuses_credential(&self, _status: StatusCode, _headers: &HeaderMap) -> bool {
        false
    }
}

/// Classifies a CodeCommit request by its `X-Amz-Target`; see the module docs.
pub fn classify(method: &Method, path: &str, headers: &HeaderMap) -> Operation {
    if method != Method::POST || path != "/" {
        return Operation::OtherWrite;
    }
    let Some(operation) = target_operation(headers) else {
        return Operation::OtherWrite;
    };
    match operation {
        "CreateBranch" => Operation::CreateBranch,
        "DeleteBranch" => Operation::DeleteBranch,
        "CreatePullRequest" => Operation::CreatePullRequest,
        op if is_read(op) => Operation::Read,
        _ => Operation::OtherWrite,
    }
}

/// The operation name of the one `X-Amz-Target` header, when it is exactly
/// `CodeCommit_20150413.{ASCII letters and digits}`.
fn target_operation(headers: &HeaderMap) -> Option<&str> {
    let mut targets = headers.get_all(TARGET_HEADER).iter();
    let target = targets.next()?;
    if targets.next().is_some() {
        return None;
    }
    let (prefix, operation) = target.to_str().ok()?.split_once('.')?;
    (prefix == TARGET_PREFIX
        && !operation.is_empty()
        && operation.bytes().all(|b| b.is_ascii_alphanumeric()))
    .then_some(operation)
}

/// `GetBranch`, `ListRepositories`, `BatchGetCommits`, `DescribePullRequestEvents`: a read
/// prefix followed by the rest of a CamelCase name.
fn is_read(operation: &str) -> bool {
    READ_PREFIXES.iter().any(|prefix| {
        operation
            .strip_prefix(prefix)
            .and_then(|rest| rest.bytes().next())
            .is_some_and(|b| b.is_ascii_uppercase())
    })
}

/// Signs `request` (absolute URI, final headers and body) with SigV4 for `service` at
/// `time`, replacing any signature fields it carried. Signed: `host`, `x-amz-date`,
/// `x-amz-target` and `content-type` when present, and `x-amz-security-token` for temporary
/// credentials. Other headers travel unsigned, as AWS allows, so nothing that a hop may
/// rewrite (User-Agent, tracing headers) can break the signature.
#[allow(
    clippy::disallowed_methods,
    reason = "the key pair signs the upstream request here"
)]
pub fn sign_request(
    request: &mut Request<Bytes>,
    credential: &Credential,
    service: &str,
    time: SystemTime,
) -> Result<(), UnsupportedCredential> {
    let Credential::Aws {
        access_key_id,
        secret_access_key,
        session_token,
        region,
    } = credential
    else {
        return Err(UnsupportedCredential(credential.kind_name()));
    };
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !visible(access_key_id)
        || !visible(region)
        || session_token
            .as_ref()
            .is_some_and(|t| !visible(t.expose_secret()))
    {
        return Err(UnsupportedCredential(
            "aws-access-key with characters not allowed in a header",
        ));
    }
    if request.uri().host().is_none() {
        return Err(UnsupportedCredential(
            "aws-access-key on a request without an absolute URI",
        ));
    }
    let headers = request.headers_mut();
    headers.remove(AUTHORIZATION);
    headers.remove("x-amz-security-token");
    for name in CREDENTIAL_HEADERS {
        headers.remove(*name);
    }

    let identity = aws_credential_types::Credentials::new(
        access_key_id.as_str(),
        secret_access_key.expose_secret(),
        session_token
            .as_ref()
            .map(|t| t.expose_secret().to_string()),
        None,
        "patgate",
    )
    .into();
    let signing_params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| UnsupportedCredential("aws-access-key that cannot sign"))?
        .into();
    let to_sign: Vec<(&str, &str)> = [CONTENT_TYPE.as_str(), TARGET_HEADER]
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(name)?.to_str().ok()?;
            Some((name, value))
        })
        .collect();
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        to_sign.into_iter(),
        SignableBody::Bytes(request.body()),
    )
    .map_err(|_| UnsupportedCredential("a request that SigV4 cannot sign"))?;
    let (instructions, _signature) = sign(signable, &signing_params)
        .map_err(|_| UnsupportedCredential("a request that SigV4 cannot sign"))?
        .into_parts();
    let (new_headers, _query) = instructions.into_parts();
    for header in new_headers {
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| UnsupportedCredential("aws-access-key that cannot sign"))?;
        value.set_sensitive(header.sensitive() || header.name() == AUTHORIZATION.as_str());
        request
            .headers_mut()
            .insert(HeaderName::from_static(header.name()), value);
    }
    Ok(())
}

/// Reads STS `GetCallerIdentity`: the caller's ARN is the host login.
pub fn who_am_i_answer(status: StatusCode, body: &[u8]) -> Result<HostIdentity, WhoAmIError> {
    let text = String::from_utf8_lossy(body);
    match status {
        StatusCode::OK => {}
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let code = xml_text(&text, "Code").unwrap_or_else(|| "no error code".into());
            return Err(WhoAmIError::Rejected(format!(
                "AWS STS answered {status} {code}: the access key is wrong, inactive or expired"
            )));
        }
        other => {
            return Err(WhoAmIError::UnexpectedAnswer(format!(
                "STS GetCallerIdentity answered {other}"
            )))
        }
    }
    let arn = xml_text(&text, "Arn")
        .filter(|arn| arn.starts_with("arn:"))
        .ok_or_else(|| {
            WhoAmIError::UnexpectedAnswer("STS GetCallerIdentity did not return an Arn".into())
        })?;
    // GetCallerIdentity says who, not what the key may do: IAM permissions are checked by
    // CodeCommit on each call.
    Ok(HostIdentity {
        login: arn,
        scopes: Vec::new(),
    })
}

/// The text of the first `<tag>…</tag>` in an AWS query-protocol answer, with XML's five
/// predefined entities decoded. AWS answers are flat and generated; a full XML parser would
/// add a dependency for two fields.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let raw = &xml[start..start + len];
    if raw.contains('<') {
        return None;
    }
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .trim()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(TARGET_HEADER, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn op(t: &str) -> Operation {
        classify(&Method::POST, "/", &target(&[t]))
    }

    #[test]
    fn the_three_actions() {
        assert_eq!(
            op("CodeCommit_20150413.CreateBranch"),
            Operation::CreateBranch
        );
        assert_eq!(
            op("CodeCommit_20150413.DeleteBranch"),
            Operation::DeleteBranch
        );
        assert_eq!(
            op("CodeCommit_20150413.CreatePullRequest"),
            Operation::CreatePullRequest
        );
    }

    #[test]
    fn each_read_prefix_is_a_read() {
        for name in [
            "GetBranch",
            "GetRepository",
            "ListRepositories",
            "ListBranches",
            "ListPullRequests",
            "GetPullRequest",
            "BatchGetRepositories",
            "BatchGetCommits",
            "DescribePullRequestEvents",
        ] {
            assert_eq!(
                op(&format!("{TARGET_PREFIX}.{name}")),
                Operation::Read,
                "{name}"
            );
        }
    }

    #[test]
    fn other_operations_are_other_writes() {
        for name in [
            "CreateRepository",
            "DeleteRepository",
            "MergePullRequestBySquash",
            "UpdateDefaultBranch",
            "PutFile",
            "CreateCommit",
            "UpdatePullRequestStatus",
            "PostCommentForPullRequest",
            // A read prefix alone, or followed by lowercase, is not a read name.
            "Get",
            "List",
            "Getaway",
            "Describe",
            "BatchGet",
            "BatchDisassociateApprovalRuleTemplateFromRepositories",
            // Case matters: AWS's names are CamelCase.
            "createBranch",
            "getBranch",
        ] {
            assert_eq!(
                op(&format!("{TARGET_PREFIX}.{name}")),
                Operation::OtherWrite,
                "{name}"
            );
        }
    }

    #[test]
    fn targets_that_do_not_parse_are_other_writes() {
        for t in [
            "",
            "CreateBranch",
            "CodeCommit_20150413.",
            "CodeCommit_20150413",
            "codecommit_20150413.GetBranch",
            "CodeCommit_20150413 .GetBranch",
            "CodeCommit_20150413.GetBranch ",
            "CodeCommit_20150413.GetBranch.CreateBranch",
            "CodeCommit_20150413.Get-Branch",
            "CodeCommit_20150413.GetBranch,CodeCommit_20150413.CreateBranch",
            "CodeCommit_20150412.GetBranch",
            "AWSCognitoIdentityProviderService.GetUser",
            "DynamoDB_20120810.GetItem",
        ] {
            assert_eq!(op(t), Operation::OtherWrite, "{t:?}");
        }
        let bytes = HeaderValue::from_bytes(b"CodeCommit_20150413.Get\xffBranch").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(TARGET_HEADER, bytes);
        assert_eq!(
            classify(&Method::POST, "/", &headers),
            Operation::OtherWrite
        );
    }

    #[test]
    fn missing_or_duplicate_target_is_an_other_write() {
        assert_eq!(
            classify(&Method::POST, "/", &HeaderMap::new()),
            Operation::OtherWrite
        );
        let two = target(&[
            "CodeCommit_20150413.GetBranch",
            "CodeCommit_20150413.GetBranch",
        ]);
        assert_eq!(classify(&Method::POST, "/", &two), Operation::OtherWrite);
        let mixed = target(&[
            "CodeCommit_20150413.GetBranch",
            "CodeCommit_20150413.DeleteRepository",
        ]);
        assert_eq!(classify(&Method::POST, "/", &mixed), Operation::OtherWrite);
    }

    #[test]
    fn only_post_to_the_root_is_classified() {
        let read = target(&["CodeCommit_20150413.GetBranch"]);
        let create = target(&["CodeCommit_20150413.CreateBranch"]);
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert_eq!(
                classify(&method, "/", &read),
                Operation::OtherWrite,
                "{method}"
            );
            assert_eq!(
                classify(&method, "/", &create),
                Operation::OtherWrite,
                "{method}"
            );
        }
        for path in ["", "/x", "//", "/%2F", "/?"] {
            assert_eq!(
                classify(&Method::POST, path, &read),
                Operation::OtherWrite,
                "{path}"
            );
        }
    }

    fn aws(session_token: Option<&str>) -> Credential {
        Credential::Aws {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
                .to_string()
                .into(),
            session_token: session_token.map(|t| t.to_string().into()),
            region: "us-east-1".into(),
        }
    }

    const STS_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    /// AWS's SigV4 test suite (aws-signing-test-suite/v4, as shipped in the aws-sigv4
    /// crate), cases `post-vanilla` and `post-sts-header-before`, at 20150830T123600Z.
    #[test]
    fn aws_signing_test_suite() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        for (token, signed, signature) in [
            (
                None,
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                Some(STS_TOKEN),
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
            ),
        ] {
            let mut request = Request::new(Bytes::new());
            *request.method_mut() = Method::POST;
            *request.uri_mut() = "https://example.amazonaws.com/".parse().unwrap();
            sign_request(&mut request, &aws(token), "service", time).unwrap();
            assert_eq!(
                request.headers()[AUTHORIZATION],
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                     SignedHeaders={signed}, Signature={signature}"
                )
            );
            assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
            assert!(request.headers()[AUTHORIZATION].is_sensitive());
        }
    }

    #[test]
    fn inbound_signature_fields_are_replaced() {
        let mut request = Request::new(Bytes::from_static(b"{}"));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = "https://codecommit.us-east-1.amazonaws.com/"
            .parse()
            .unwrap();
        let h = request.headers_mut();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("AWS4-HMAC-SHA256 app"),
        );
        h.insert("x-amz-date", HeaderValue::from_static("19700101T000000Z"));
        h.insert(
            "x-amz-security-token",
            HeaderValue::from_static("app-token"),
        );
        h.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        sign_request(&mut request, &aws(None), "codecommit", SystemTime::now()).unwrap();
        let h = request.headers();
        assert!(h[AUTHORIZATION]
            .to_str()
            .unwrap()
            .contains("Credential=AKIDEXAMPLE/"));
        assert_ne!(h["x-amz-date"], "19700101T000000Z");
        assert!(!h.contains_key("x-amz-security-token"));
        assert!(!h.contains_key("x-amz-content-sha256"));

        sign_request(
            &mut request,
            &aws(Some("session")),
            "codecommit",
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(request.headers()["x-amz-security-token"], "session");
        assert!(request.headers()["x-amz-security-token"].is_sensitive());
        assert_eq!(request.headers().get_all(AUTHORIZATION).iter().count(), 1);
    }

    #[test]
    fn only_aws_keys_sign() {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = "https://codecommit.us-east-1.amazonaws.com/"
            .parse()
            .unwrap();
        let token = Credential::Token("t".to_string().into());
        assert!(sign_request(&mut request, &token, "codecommit", SystemTime::now()).is_err());
        let mut relative = Request::new(Bytes::new());
        *relative.uri_mut() = "/".parse().unwrap();
        assert!(sign_request(&mut relative, &aws(None), "codecommit", SystemTime::now()).is_err());
    }

    #[test]
    fn who_am_i_reads_the_caller_arn() {
        let ok = br#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::123456789012:user/Alice</Arn>
    <UserId>AIDAEXAMPLE</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        let id = who_am_i_answer(StatusCode::OK, ok).unwrap();
        assert_eq!(id.login, "arn:aws:iam::123456789012:user/Alice");
        let denied = br#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>"#;
        let err = who_am_i_answer(StatusCode::FORBIDDEN, denied).unwrap_err();
        assert!(
            matches!(&err, WhoAmIError::Rejected(m) if m.contains("InvalidClientTokenId")),
            "{err}"
        );
        assert!(matches!(
            who_am_i_answer(StatusCode::OK, b"<x/>").unwrap_err(),
            WhoAmIError::UnexpectedAnswer(_)
        ));
        assert!(matches!(
            who_am_i_answer(StatusCode::INTERNAL_SERVER_ERROR, b"").unwrap_err(),
            WhoAmIError::UnexpectedAnswer(_)
        ));
    }
}
