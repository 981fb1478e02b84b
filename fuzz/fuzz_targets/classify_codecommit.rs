//! The AWS CodeCommit classifier (JSON protocol: the operation is in `X-Amz-Target`)
//! behind the proxy's path gate. Input: `METHOD PATH`, `\n`, the X-Amz-Target value (an
//! empty line: no such header), `\n`, a second X-Amz-Target value or nothing.
//!
//! Properties: no panic; a dot-segment path is refused; anything but `POST /` with exactly
//! one well-formed `CodeCommit_20150413.*` target is an other-write.
#![no_main]

use http::header::{HeaderMap, HeaderValue};
use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::hosts::codecommit;
use patgate::policy::Operation;
use patgate_fuzz::{check_common, gated, request, split_line};

fuzz_target!(|data: &[u8]| {
    let Some((method, path, rest)) = request(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    let mut targets = Vec::new();
    let mut rest = rest;
    while let Some((target, after)) = split_line(rest) {
        if !target.is_empty() {
            let Ok(value) = HeaderValue::from_str(target) else {
                return;
            };
            headers.append(codecommit::TARGET_HEADER, value);
            targets.push(target);
        }
        if after.is_empty() {
            break;
        }
        rest = after;
    }
    let op = gated(path, || codecommit::classify(&method, path, &headers));
    check_common(&method, path, op);
    if let Some(op) = op {
        if op != Operation::OtherWrite {
            assert_eq!(method, Method::POST, "{path:?}: {op:?}");
            assert_eq!(path, "/", "{op:?}");
            assert_eq!(targets.len(), 1, "{targets:?}: {op:?}");
            let operation = targets[0]
                .strip_prefix(codecommit::TARGET_PREFIX)
                .and_then(|t| t.strip_prefix('.'))
                .expect("a CodeCommit_20150413 target");
            assert!(operation.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
});
