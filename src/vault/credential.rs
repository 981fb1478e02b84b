//! Credentials, and their plaintext encoding inside a record's ciphertext.
//!
//! The plaintext is JSON with every secret field in standard base64: base64 needs no JSON
//! escapes, so serde_json hands the decoder borrowed slices of the (zeroized) plaintext
//! buffer and never copies a secret into its own scratch buffer, which nobody would wipe.
//! Every intermediate buffer holding a secret is a `Zeroizing` one, sized up front so it
//! never reallocates (a reallocation frees the old copy without wiping it).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use super::crypto::Wiped;

/// Secrets whose decoding fits this many bytes are decoded in a stack buffer.
const STACK_SECRET: usize = 1024;

/// A credential for a git host. `Debug` shows the non-secret fields only; the secrets
/// print as `SecretBox<str>([REDACTED])`.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token: a PAT, an OAuth or app token.
    Token(SecretString),
    /// HTTP basic credentials (Azure DevOps Server / TFS, Bitbucket Server, …).
    UsernamePassword {
        /// The user name; not secret.
        username: String,
        /// The password or PAT used as a password.
        password: SecretString,
    },
    /// AWS credentials for CodeCommit (SigV4).
    Aws {
        /// The access key id; an identifier, not secret.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: SecretString,
        /// The session token of temporary credentials.
        session_token: Option<SecretString>,
        /// The AWS region, e.g. `eu-west-1`.
        region: String,
    },
    /// A GitHub App installation: patgate signs a JWT with the App's private key and
    /// exchanges it for short-lived installation tokens.
    GithubApp {
        /// The App's id (its settings page, "App ID"); not secret.
        app_id: u64,
        /// The installation's id (in the URL of the installation's settings page).
        installation_id: u64,
        /// The App's private key, PEM (PKCS#1 as GitHub hands it out, or PKCS#8).
        private_key: SecretString,
    },
}

impl Credential {
    /// The kind's name as the CLI and listings show it: `token`, `username-password`,
    /// `aws-access-key` or `github-app`.
    pub fn kind_name(&self) -> &'static str {
        self.kind().name()
    }

    pub(crate) fn kind(&self) -> CredentialKind {
        match self {
            Credential::Token(_) => CredentialKind::Token,
            Credential::UsernamePassword { .. } => CredentialKind::UsernamePassword,
            Credential::Aws { .. } => CredentialKind::AwsAccessKey,
            Credential::GithubApp { .. } => CredentialKind::GithubApp,
        }
    }

    /// The exact length of [`Credential::encode_into`]'s output, so the buffer it writes to
    /// can be allocated once.
    pub(crate) fn encoded_len(&self) -> usize {
        let mut counter = Counter(0);
        // Writing to a counter cannot fail, and neither can serializing these types.
        let _ = serde_json::to_writer(&mut counter, &WireRef::from(self));
        counter.0
    }

    /// Writes the plaintext encoding into `out`, whose spare capacity must hold it.
    pub(crate) fn encode_into(&self, out: &mut Zeroizing<Vec<u8>>) {
        let before = out.capacity();
        let _ = serde_json::to_writer(&mut **out, &WireRef::from(self));
        debug_assert_eq!(before, out.capacity(), "the plaintext buffer reallocated");
    }

    /// Parses a plaintext encoding. The error says nothing about the content.
    pub(crate) fn decode(plaintext: &[u8]) -> Result<Credential, BadPlaintext> {
        // serde_json's message could quote the input, so it is dropped here.
        serde_json::from_slice::<WireOwned>(plaintext)
            .map(Credential::from)
            .map_err(|_| BadPlaintext)
    }
}

/// The plaintext of a record did not decode; deliberately without detail.
#[derive(Debug)]
pub(crate) struct BadPlaintext;

/// The kinds of credential, as stored in a record's clear metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CredentialKind {
    Token,
    UsernamePassword,
    AwsAccessKey,
    GithubApp,
}

impl CredentialKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CredentialKind::Token => "token",
            CredentialKind::UsernamePassword => "username-password",
            CredentialKind::AwsAccessKey => "aws-access-key",
            CredentialKind::GithubApp => "github-app",
        }
    }
}

/// Counts bytes written.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The plaintext encoding, borrowing from a credential. Externally tagged: serde buffers an
/// internally tagged enum through owned copies, which would not be wiped.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
enum WireRef<'a> {
    Token {
        token: B64Ref<'a>,
    },
    UsernamePassword {
        username: &'a str,
        password: B64Ref<'a>,
    },
    AwsAccessKey {
        access_key_id: &'a str,
        secret_access_key: B64Ref<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_token: Option<B64Ref<'a>>,
        region: &'a str,
    },
    GithubApp {
        app_id: u64,
        installation_id: u64,
        private_key: B64Ref<'a>,
    },
}

impl<'a> From<&'a Credential> for WireRef<'a> {
    #[allow(
        clippy::disallowed_methods,
        reason = "the credential is serialised for encryption here"
    )]
    fn from(credential: &'a Credential) -> Self {
        match credential {
            Credential::Token(token) => WireRef::Token {
                token: B64Ref(token.expose_secret()),
            },
            Credential::UsernamePassword { username, password } => WireRef::UsernamePassword {
                username,
                password: B64Ref(password.expose_secret()),
            },
            Credential::Aws {
                access_key_id,
                secret_access_key,
                session_token,
                region,
            } => WireRef::AwsAccessKey {
                access_key_id,
                secret_access_key: B64Ref(secret_access_key.expose_secret()),
                session_token: session_token.as_ref().map(|t| B64Ref(t.expose_secret())),
                region,
            },
            Credential::GithubApp {
                app_id,
                installation_id,
                private_key,
            } => WireRef::GithubApp {
                app_id: *app_id,
                installation_id: *installation_id,
                private_key: B64Ref(private_key.expose_secret()),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum WireOwned {
    Token {
        token: B64Secret,
    },
    UsernamePassword {
        username: String,
        password: B64Secret,
    },
    AwsAccessKey {
        access_key_id: String,
        secret_access_key: B64Secret,
        #[serde(default)]
        session_token: Option<B64Secret>,
        region: String,
    },
    GithubApp {
        app_id: u64,
        installation_id: u64,
        private_key: B64Secret,
    },
}

impl From<WireOwned> for Credential {
    fn from(wire: WireOwned) -> Self {
        match wire {
            WireOwned::Token { token } => Credential::Token(token.0),
            WireOwned::UsernamePassword { username, password } => Credential::UsernamePassword {
                username,
                password: password.0,
            },
            WireOwned::AwsAccessKey {
                access_key_id,
                secret_access_key,
                session_token,
                region,
            } => Credential::Aws {
                access_key_id,
                secret_access_key: secret_access_key.0,
                session_token: session_token.map(|t| t.0),
                region,
            },
            WireOwned::GithubApp {
                app_id,
                installation_id,
                private_key,
            } => Credential::GithubApp {
                app_id,
                installation_id,
                private_key: private_key.0,
            },
        }
    }
}

/// A secret serialized as base64, through a wiped buffer.
struct B64Ref<'a>(&'a str);

impl Serialize for B64Ref<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = base64::encoded_len(self.0.len(), true).unwrap_or(usize::MAX);
        let mut buf = Zeroizing::new(vec![0u8; len]);
        let n = STANDARD
            .encode_slice(self.0.as_bytes(), &mut buf[..])
            .map_err(serde::ser::Error::custom)?;
        // base64 output is ASCII.
        let text = std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// A secret deserialized from base64 straight into a `SecretString`.
struct B64Secret(SecretString);

impl<'de> Deserialize<'de> for B64Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(B64Visitor)
    }
}

struct B64Visitor;

impl Visitor<'_> for B64Visitor {
    type Value = B64Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<B64Secret, E> {
        let estimate = base64::decoded_len_estimate(text.len());
        // Usual secrets decode on the stack, so a read allocates only its result.
        let mut stack = [0u8; STACK_SECRET];
        let mut heap = Vec::new();
        let buf = Wiped(if estimate <= STACK_SECRET {
            &mut stack[..estimate]
        } else {
            heap.resize(estimate, 0);
            &mut heap[..]
        });
        let n = STANDARD
            .decode_slice(text, &mut buf.0[..])
            .map_err(|_| E::custom("bad base64"))?;
        let secret = std::str::from_utf8(&buf.0[..n]).map_err(|_| E::custom("not UTF-8"))?;
        // Copied once into an exactly sized box (no shrinking reallocation later); `buf` is
        // wiped when it drops.
        Ok(B64Secret(SecretString::from(secret)))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests compare secrets")]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Credential> {
        vec![
            Credential::Token("ghp_TokenSampleValue1234567890".into()),
            Credential::UsernamePassword {
                username: "svc-jira".into(),
                password: "pa\"ss\\wo\u{e9}rd\n\u{1F512}".into(),
            },
            Credential::Aws {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                session_token: Some("FwoGZXIvYXdzEXAMPLESESSION".into()),
                region: "eu-west-1".into(),
            },
            Credential::Aws {
                access_key_id: "AKIAEXAMPLE2".into(),
                secret_access_key: "another/secret+key".into(),
                session_token: None,
                region: "us-east-1".into(),
            },
            Credential::Token("".into()),
            Credential::GithubApp {
                app_id: 123,
                installation_id: 45_678_901,
                private_key: SAMPLE_APP_KEY.into(),
            },
        ]
    }

    /// Shaped like a PEM key (longer than the stack buffer); not a real key.
    pub(crate) const SAMPLE_APP_KEY: &str = concat!(
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "MIIEpAIBAAKCAQEAsampleAppKeyBodyDoNotLeak",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\n",
        "-----END RSA PRIVATE KEY-----\n",
    );

    pub(crate) fn same(a: &Credential, b: &Credential) -> bool {
        match (a, b) {
            (Credential::Token(x), Credential::Token(y)) => x.expose_secret() == y.expose_secret(),
            (
                Credential::UsernamePassword {
                    username: u1,
                    password: p1,
                },
                Credential::UsernamePassword {
                    username: u2,
                    password: p2,
                },
            ) => u1 == u2 && p1.expose_secret() == p2.expose_secret(),
            (
                Credential::Aws {
                    access_key_id: a1,
                    secret_access_key: s1,
                    session_token: t1,
                    region: r1,
                },
                Credential::Aws {
                    access_key_id: a2,
                    secret_access_key: s2,
                    session_token: t2,
                    region: r2,
                },
            ) => {
                a1 == a2
                    && s1.expose_secret() == s2.expose_secret()
                    && t1.as_ref().map(|t| t.expose_secret())
                        == t2.as_ref().map(|t| t.expose_secret())
                    && r1 == r2
            }
            (
                Credential::GithubApp {
                    app_id: a1,
                    installation_id: i1,
                    private_key: k1,
                },
                Credential::GithubApp {
                    app_id: a2,
                    installation_id: i2,
                    private_key: k2,
                },
            ) => a1 == a2 && i1 == i2 && k1.expose_secret() == k2.expose_secret(),
            _ => false,
        }
    }

    #[test]
    fn encoding_round_trips_and_has_the_exact_announced_length() {
        for credential in samples() {
            let len = credential.encoded_len();
            let mut buf = Zeroizing::new(Vec::with_capacity(len));
            credential.encode_into(&mut buf);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.capacity(), len);
            let back = Credential::decode(&buf).unwrap();
            assert!(same(&credential, &back), "{credential:?} != {back:?}");
            assert_eq!(credential.kind_name(), back.kind_name());
        }
    }

    #[test]
    fn secrets_are_base64_in_the_plaintext() {
        let credential = Credential::UsernamePassword {
            username: "u".into(),
            password: "p\"w".into(),
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(credential.encoded_len()));
        credential.encode_into(&mut buf);
        let text = std::str::from_utf8(&buf).unwrap();
        assert_eq!(
            text,
            r#"{"username-password":{"username":"u","password":"cCJ3"}}"#
        );
    }

    #[test]
    fn decode_errors_say_nothing() {
        for bad in [
            &br#"{"token":{"token":"not base64 SECRETVALUE"}}"#[..],
            br#"{"token":{"token":"SECRETVALUE"}}"#,
            br#"{"nope":{}}"#,
            b"",
            b"{",
        ] {
            let err = Credential::decode(bad).unwrap_err();
            assert!(!format!("{err:?}").contains("SECRET"));
        }
    }

    #[test]
    fn kind_names() {
        let names: Vec<_> = samples().iter().map(Credential::kind_name).collect();
        assert_eq!(
            names,
            [
                "token",
                "username-password",
                "aws-access-key",
                "aws-access-key",
                "token",
                "github-app"
            ]
        );
        for kind in [
            CredentialKind::Token,
            CredentialKind::UsernamePassword,
            CredentialKind::AwsAccessKey,
            CredentialKind::GithubApp,
        ] {
            // The serde name (stored in clear metadata) is the listing name.
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
    }

    #[test]
    fn debug_redacts_every_secret() {
        let secrets = [
            "ghp_TokenSampleValue1234567890",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "FwoGZXIvYXdzEXAMPLESESSION",
            "another/secret+key",
            "ss\\wo",
            "sampleAppKeyBodyDoNotLeak",
            "BEGIN RSA PRIVATE KEY",
        ];
        for credential in samples() {
            let shown = format!("{credential:?} {credential:#?}");
            for secret in secrets {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(shown.contains("REDACTED"), "{shown}");
        }
        let shown = format!("{:?}", samples()[2]);
        // Non-secret fields stay visible for diagnostics.
        assert!(
            shown.contains("AKIAEXAMPLE") && shown.contains("eu-west-1"),
            "{shown}"
        );
        let shown = format!("{:?}", samples()[5]);
        assert!(
            shown.contains("app_id: 123") && shown.contains("installation_id: 45678901"),
            "{shown}"
        );
    }

    #[test]
    fn a_github_app_is_encoded_with_its_ids_in_clear_and_its_key_in_base64() {
        let credential = Credential::GithubApp {
            app_id: 7,
            installation_id: 8,
            private_key: "k\n".into(),
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(credential.encoded_len()));
        credential.encode_into(&mut buf);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"github-app":{"app_id":7,"installation_id":8,"private_key":"awo="}}"#
        );
    }
}
