//! The GitLab (`/api/v4`) classifier behind the proxy's path gate.
//! Input: `METHOD PATH`, `\n`, the body.
//!
//! Properties: no panic; a path with a dot segment in any spelling is refused before it is
//! classified; GET and HEAD are reads; only POST/DELETE on the host's own action paths are
//! actions.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::hosts::gitlab;
use patgate::policy::Operation;
use patgate_fuzz::{check_common, gated, request};

fuzz_target!(|data: &[u8]| {
    let Some((method, path, body)) = request(data) else {
        return;
    };
    let op = gated(path, || gitlab::classify(&method, path, body));
    check_common(&method, path, op);
    if let Some(op) = op {
        if method == Method::GET || method == Method::HEAD {
            assert_eq!(op, Operation::Read);
        }
        if op.is_action() {
            assert!(
                path.starts_with("/api/v4/projects/"),
                "{method} {path:?}: {op:?}"
            );
        }
    }
});
