#!/usr/bin/env bash
# Checks systemd/patgate.service with the machine's systemd-analyze (no systemd needs to run):
#   - `systemd-analyze security --offline=true`: overall exposure at most 1.5;
#   - `systemd-analyze verify`: no complaint at all (it exits 0 on unknown keys, so any output
#     fails), with ExecStart pointed at a binary that exists here;
#   - TimeoutStopSec longer than the default shutdown grace period, so systemd never kills
#     patgate while requests are still finishing.
# Skipped, saying so, only when systemd-analyze is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=systemd/patgate.service
max_exposure=1.5

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIPPED: systemd-analyze is not installed; $unit was not checked (apt-get install systemd)"
    exit 0
fi

passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAILED: $1"; failed=$((failed + 1)); }

security=$(systemd-analyze security --offline=true "$unit" 2>&1 || true)
exposure=$(sed -n 's/.*Overall exposure level for patgate.service: \([0-9.]*\).*/\1/p' <<<"$security")
if [[ -z "$exposure" ]]; then
    echo "$security"
    fail "systemd-analyze security printed no overall exposure"
elif awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }'; then
    ok "exposure $exposure <= $max_exposure"
else
    grep '✗' <<<"$security" || true
    fail "exposure $exposure > $max_exposure"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
binary="${CARGO_TARGET_DIR:-target}/debug/patgate"
[[ -x "$binary" ]] || binary=/bin/true
sed "s#^ExecStart=/usr/bin/patgate#ExecStart=$(realpath "$binary")#" "$unit" >"$work/patgate.service"
if verify=$(systemd-analyze verify --man=no "$work/patgate.service" 2>&1) && [[ -z "$verify" ]]; then
    ok "systemd-analyze verify is silent"
else
    echo "$verify"
    fail "systemd-analyze verify complained"
fi

stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$unit")
grace=$(sed -n 's/^shutdown_grace_seconds = \([0-9]*\)$/\1/p' config/patgate.example.toml)
if [[ -n "$stop" && -n "$grace" && "$stop" -gt "$grace" ]]; then
    ok "TimeoutStopSec=${stop}s > shutdown_grace_seconds = $grace"
else
    fail "TimeoutStopSec (${stop:-unset}) must be longer than shutdown_grace_seconds (${grace:-unset})"
fi

echo "systemd_unit: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
