//! The identifiers a request names: the integration (`/git/{id}/…`, `/v1/integrations/{id}`)
//! and the acting Jira user (`Patgate-Account`, `/v1/…/users/{account}`).
//!
//! Each is validated once, where it enters patgate (the api listener, the admin socket, the
//! command line, the config file), byte for byte as it was sent: nothing is percent-decoded,
//! case-folded or normalised first. A value that needs decoding to be valid is not valid, so
//! two spellings can never name one vault record, one rate-limit key or one audit subject.
//! Past the edge, code holds an [`AccountId`] or an [`IntegrationId`] and never checks again.

use std::borrow::Borrow;
use std::fmt;

/// Why an id was refused: what it must look like, never the value itself (it may be hostile
/// and is echoed by the caller where that is safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error(
        "an Atlassian accountId is 1 to {max} letters, digits, `:`, `-`, `_` or `.`, sent as \
         it is (not percent-encoded), and not `.` or `..`",
        max = AccountId::MAX_LEN
    )]
    Account,
    #[error(
        "an integration id is 1 to {max} lowercase letters, digits, `-` or `_`, starting with \
         a letter or digit",
        max = IntegrationId::MAX_LEN
    )]
    Integration,
}

/// The Atlassian accountId of the Jira user a request acts for: 24 hex digits, or
/// `NNNNNN:uuid`, or another id of Atlassian's small ASCII alphabet.
///
/// Anything outside that alphabet is refused, so look-alikes (other case folding, Unicode,
/// spaces, percent-encodings) cannot name another user's vault record; ids made only of dots
/// are refused so that an id can be a path segment without meaning "this" or "the parent".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Box<str>);

impl AccountId {
    /// The longest accountId accepted.
    pub const MAX_LEN: usize = 128;

    /// Validates `text` exactly as given.
    pub fn parse(text: &str) -> Result<AccountId, InvalidId> {
        if Self::is_valid(text) {
            Ok(AccountId(text.into()))
        } else {
            Err(InvalidId::Account)
        }
    }

    /// Whether `text`, exactly as given, is an accountId (see [`AccountId::parse`]).
    pub fn is_valid(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
            && !text.bytes().all(|b| b == b'.')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of a configured integration: it appears in URLs (`/git/{id}/…`) and vault keys, so
/// it is kept to a small alphabet with no case or encoding ambiguity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntegrationId(Box<str>);

impl IntegrationId {
    /// The longest integration id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates `text` exactly as given.
    pub fn parse(text: &str) -> Result<IntegrationId, InvalidId> {
        if Self::is_valid(text) {
            Ok(IntegrationId(text.into()))
        } else {
            Err(InvalidId::Integration)
        }
    }

    /// Whether `text`, exactly as given, is an integration id (see [`IntegrationId::parse`]).
    pub fn is_valid(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && text.as_bytes()[0].is_ascii_alphanumeric()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! id_traits {
    ($($id:ident),*) => {$(
        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Ids are not secrets; Debug shows them as the string they are.
        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $id {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $id {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $id {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<Self, InvalidId> {
                $id::parse(text)
            }
        }
    )*};
}

id_traits!(AccountId, IntegrationId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_taken_byte_for_byte() {
        for good in [
            "5b10ac8d82e05b22cc7d4ef5",
            "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077",
            "qm:a-b_c.d",
            "a.",
            &"x".repeat(AccountId::MAX_LEN),
        ] {
            assert_eq!(AccountId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "%41lice",
            "%2e%2e",
            " 5b10",
            "5b10 ",
            "5b1\u{0430}",
            "a/b",
            "a\\b",
            "a\tb",
            "a+b",
            &"x".repeat(AccountId::MAX_LEN + 1),
        ] {
            assert_eq!(AccountId::parse(bad), Err(InvalidId::Account), "{bad:?}");
        }
    }

    #[test]
    fn integration_ids_are_lowercase_and_plain() {
        for good in ["ghe", "gitlab-eu", "tfs_2015", "0x", &"a".repeat(64)] {
            assert_eq!(IntegrationId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "GHE",
            "-ghe",
            "_x",
            "a.b",
            "a/b",
            "g%68e",
            &"a".repeat(65),
        ] {
            assert_eq!(
                IntegrationId::parse(bad),
                Err(InvalidId::Integration),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids_look_up_by_their_text() {
        let mut map = std::collections::HashMap::new();
        map.insert(IntegrationId::parse("ghe").unwrap(), 1);
        assert_eq!(map.get("ghe"), Some(&1));
        assert_eq!(format!("{:?}", AccountId::parse("abc").unwrap()), "\"abc\"");
    }
}
