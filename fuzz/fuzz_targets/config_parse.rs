//! `Config::parse`: the TOML config file, validated. Input: the file's text.
//!
//! Properties: no panic; a config that validates keeps the documented bounds (signature
//! validity 1..=300 s, clock skew 0..=300 s, distinct integration ids, https or http base
//! URLs without a trailing slash); a refusal names the file; the same text gives the same
//! answer twice.
#![no_main]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use patgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/patgate/patgate.toml");
    let first = Config::parse(file, text);
    let second = Config::parse(file, text);
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    match first {
        Ok(config) => {
            let cap = Duration::from_secs(300);
            let window = &config.signatures;
            // A skew of 0 is documented and allowed: `created` may not be in the future at
            // all (the oracle said 1..=300 until fuzzing found a 0 the docs allow).
            assert!(window.max_skew <= cap);
            assert!(!window.max_validity.is_zero() && window.max_validity <= cap);
            let mut ids = HashSet::new();
            for integration in &config.integrations {
                assert!(ids.insert(integration.id.as_str()), "{}", integration.id);
                let url = integration.base_url.to_string();
                assert!(
                    matches!(integration.base_url.scheme_str(), Some("https" | "http")),
                    "{url}"
                );
                // `http::Uri` shows an empty path as `/`; a prefix has no trailing slash.
                let prefix = integration.base_url.path();
                assert!(prefix == "/" || !prefix.ends_with('/'), "{url}");
            }
        }
        Err(err) => {
            assert_eq!(err.file, file);
            let _ = err.to_string();
        }
    }
});
