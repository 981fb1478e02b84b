#!/usr/bin/env bash
# Runs every test of patgate, installing what the tests need when it is missing.
# Usage: bash tests/run.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# The interop tests sign and verify with independent implementations: RFC 9421 (PyPI
# http-message-signatures) and AWS SigV4 (PyPI botocore, pinned to the version
# shared/specs/codecommit was cut from). They live in a private virtualenv under target/.
# tests/admin_metrics.rs reads /metrics with the Prometheus project's own OpenMetrics parser
# (PyPI prometheus-client) from the same virtualenv; tests/forge.rs has a Forge Invocation
# Token made by PyPI PyJWT (with cryptography for RS256) verified by patgate.
venv=target/interop-venv
if ! "$venv/bin/python" -c 'import http_message_signatures, botocore, prometheus_client, jwt, cryptography' 2>/dev/null; then
  echo "tests/run.sh: installing http-message-signatures, botocore, prometheus-client, PyJWT and cryptography into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'http-message-signatures==3.0.0' 'botocore==1.43.11' 'prometheus-client==0.26.0' 'PyJWT==2.15.1' 'cryptography==50.0.2'
fi
export PATGATE_INTEROP_PYTHON="$PWD/$venv/bin/python"

# The connect page's browser tests (tests/connect_browser.rs) drive headless Chromium (Debian
# package chromium) with Node and playwright-core (npm), kept under target/. They fail, never
# skip, when these are missing.
command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
command -v node >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm)
if [ ! -d target/browser-tests/node_modules/playwright-core ]; then
  echo "tests/run.sh: installing playwright-core into target/browser-tests"
  npm install --silent --prefix target/browser-tests playwright-core@1
fi
export PATGATE_BROWSER_NODE_MODULES="$PWD/target/browser-tests/node_modules"

# The shared store's tests (tests/postgres.rs, tests/replicas.rs) need a real PostgreSQL:
# a throw-away cluster, stopped when this script ends. They fail, never skip, without it.
source tests/postgres-cluster.sh

cargo test --locked --all-targets "$@"
# Doc tests are not part of --all-targets.
cargo test --locked --doc "$@"
# The README's first command is `cargo run --release -- dev`: `cargo run` must pick patgate
# among the package's binaries (the debug build is already there, so this costs a second).
cargo run --locked --quiet -- --version
