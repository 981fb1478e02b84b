//! `Signature-Input` (RFC 9421 §4.1): parsing, component validation and the signature
//! base. Property: the base does not depend on how the field was spelled (whitespace,
//! parameter spelling): the dictionary re-serialised gives the same base for every label;
//! a base has one line per covered component plus `@signature-params`, and no CR.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::signature::{signature_base, Message};
use patgate_fuzz::{dictionary, example_headers, EXAMPLE_TARGET_URI, MAX_ERROR_MESSAGE};
use sfv::FieldType as _;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let headers = example_headers();
    let msg = Message {
        method: &Method::POST,
        target_uri: EXAMPLE_TARGET_URI,
        headers: &headers,
    };
    let Some(dict) = dictionary(input) else {
        let err = signature_base(&msg, input, "jira").expect_err("not a dictionary");
        assert!(err.to_string().len() <= MAX_ERROR_MESSAGE);
        return;
    };
    let Some(again) = dict.serialize() else {
        // An empty dictionary: no label names anything.
        assert!(signature_base(&msg, input, "jira").is_err());
        return;
    };
    for (label, entry) in &dict {
        let first = signature_base(&msg, input, label.as_str());
        let second = signature_base(&msg, &again, label.as_str());
        assert_eq!(first, second, "re-serialised {again:?}");
        match first {
            Ok(base) => {
                let sfv::ListEntry::InnerList(inner) = entry else {
                    panic!("a base for a member that is not an inner list: {input:?}");
                };
                assert!(!base.contains('\r'));
                let lines: Vec<&str> = base.split('\n').collect();
                assert_eq!(lines.len(), inner.items.len() + 1, "{base:?}");
                let (params, components) = lines.split_last().expect("one line at least");
                assert!(params.starts_with("\"@signature-params\": ("), "{base:?}");
                assert!(components.iter().all(|l| l.starts_with('"')), "{base:?}");
            }
            Err(err) => assert!(err.to_string().len() <= MAX_ERROR_MESSAGE, "{err}"),
        }
    }
});
