#!/usr/bin/env bash
# Idle and slow connections against patgate (BENCHMARKS.md, "Idle and slow connections"):
# IDLE mutual-TLS connections that send nothing and SLOW correctly signed POSTs whose body
# drips one byte a second are held open, then READS signed reads are timed while they are,
# on new connections (full handshake) and on one kept-alive connection. Usage, from the
# repository (as root or with a hard open-file limit of at least IDLE + SLOW + 1000):
#
#   nice -n 10 bash benches/hold.sh
#
# Environment: IDLE (default 5000), SLOW (default 5000), READS (default 20). Prints one JSON
# line from `patgate-bench hold`, plus the peak of patgate_connections_open{listener="api"}
# and of patgate's RSS while held. Not part of CI.
set -euo pipefail

IDLE=${IDLE:-5000}
SLOW=${SLOW:-5000}
READS=${READS:-20}

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

# Both processes need a descriptor per connection; raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"
need=$((IDLE + SLOW + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    echo "the open-file limit is $(ulimit -n); this needs $need (ulimit -Hn as root)" >&2
    exit 1
fi

echo "== building (release)" >&2
(cd "$root" && cargo build --release --quiet --bin patgate --bin patgate-bench)
bench=$target/release/patgate-bench
patgate=$target/release/patgate

work=$(mktemp -d /tmp/patgate-hold.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# Three free loopback ports: the upstream, patgate's api and admin listeners.
read -r up_port pg_port admin_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

"$bench" setup --dir "$work" --listen "127.0.0.1:$pg_port" --admin-listen "127.0.0.1:$admin_port" \
    --upstream-port "$up_port" --users 10 >&2
# Caps above the load, so that every held connection is served: this measures whether the
# held connections slow a signed read down, not the caps (tests/connection_limits.rs shows
# those). The timeouts are raised for the same reason: with the defaults the first idle
# connections would be closed (30 s after their accept) before the last ones are open.
cap=$((IDLE + SLOW + 500))
cat >>"$work/patgate.toml" <<EOF

[connections]
max_api = $cap
max_api_per_client = $cap
idle_timeout_ms = 600000
body_read_timeout_ms = 600000
EOF
"$bench" upstream --listen "127.0.0.1:$up_port" --cert "$work/upstream.pem" \
    --key "$work/upstream-key.pem" >"$work/upstream.addr" &
pids+=($!)
"$patgate" run -c "$work/patgate.toml" 2>>"$work/patgate.log" &
pg_pid=$!
pids+=("$pg_pid")
for _ in $(seq 1000); do
    curl -sfo /dev/null "http://127.0.0.1:$admin_port/ready" && break
    sleep 0.01
done

"$bench" hold "https://127.0.0.1:$pg_port" --idle "$IDLE" --slow "$SLOW" --reads "$READS" \
    --key "$work/bench-app.pem" --cert "$work/client.pem" --cert-key "$work/client-key.pem" \
    --cacert "$work/ca.pem" >"$work/hold.json" &
hold_pid=$!
peak_open=0
peak_rss=0
while kill -0 "$hold_pid" 2>/dev/null; do
    open=$(curl -sf "http://127.0.0.1:$admin_port/metrics" \
        | awk '/^patgate_connections_open\{listener="api"\}/ { print $2 }' || echo 0)
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pg_pid/status")
    [ "${open:-0}" -gt "$peak_open" ] && peak_open=$open
    [ "${rss:-0}" -gt "$peak_rss" ] && peak_rss=$rss
    sleep 0.5
done
wait "$hold_pid"
cat "$work/hold.json"
echo "{\"peak_connections_open\": $peak_open, \"peak_rss_mib\": $((peak_rss / 1024))}"
grep -E "WARN|ERROR" "$work/patgate.log" | head -5 >&2 || true
