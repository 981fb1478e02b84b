#!/usr/bin/env bash
# Soak: `patgate run` (release build) under mixed load for [seconds] (default 600), sampled
# every 10 s for RSS, open fds and errors; fails when anything grows or an unexpected error
# occurs. The load and the pass rule are in tests/soak.rs.
# Usage: bash tests/soak.sh [seconds]     (PATGATE_SOAK_RPS: requests/s per worker, default 25)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
export PATGATE_SOAK_SECONDS="$seconds"
cargo test --locked --release --test soak -- --nocapture --test-threads=1
