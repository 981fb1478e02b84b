#!/usr/bin/env bash
# The price of the shared store: patgate with its vault in sled (the embedded default) and in
# PostgreSQL (`[store] kind = "postgres"`, the replay cache, links and holds there too), on
# this machine, in one interleaved run (BENCHMARKS.md, "Shared store: sled and PostgreSQL").
# Usage, from the repository:
#
#   bash benches/store.sh
#
# Environment: DURATION (seconds per measurement, default 10), REPS (default 3), USERS
# (users with a stored PAT, default 1000), WARMUP (seconds, default 1), WRITE=0 to leave
# BENCHMARKS.md alone, WORKERS=N to run both patgates on N data-plane cores (`[service]
# workers`, README "Cores"; the load generator keeps its own threads). Not part of CI:
# it takes about 5 minutes.
#
# What runs: a throw-away PostgreSQL cluster (tests/postgres-cluster.sh, installed from the
# Debian packages when missing), with fsync turned back on so commits cost what they do in
# production; one vault of USERS PATs made twice by `patgate-bench setup` (sled files, and
# the database); both patgates started at once on their own ports; then REPS rounds of
# {concurrency 1, 32} x {sled, postgres}, HMAC-signed create-branch POSTs with Require User
# PAT on, one at a time so the two never compete for the CPU. CPU per request counts
# patgate's process, and in PostgreSQL mode also the database's server processes (the
# postmaster and every backend), since both run on this machine. Last, `patgate-bench
# nonces` times the replay cache's first-use check alone: one PostgreSQL round trip against
# this process's memory.
set -euo pipefail

DURATION=${DURATION:-10}
REPS=${REPS:-3}
USERS=${USERS:-1000}
WARMUP=${WARMUP:-1}
WRITE=${WRITE:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
started=$(date +%s)

echo "== building (release)" >&2
(cd "$root" && cargo build --release --quiet --locked --bin patgate --bin patgate-bench)
bench=$target/release/patgate-bench
patgate=$target/release/patgate

# The cluster script traps EXIT to stop and delete its clusters; ours runs it too.
# shellcheck source=../tests/postgres-cluster.sh
source "$root/tests/postgres-cluster.sh" >&2
"$PG_BIN/psql" -q -X -d "$PATGATE_TEST_POSTGRES_URL" \
    -c "ALTER SYSTEM SET fsync = on" -c "SELECT pg_reload_conf()" >/dev/null
pg_server_pids() {
    local postmaster
    postmaster=$(head -n 1 "$PG_DIR/data/postmaster.pid")
    echo "$postmaster"
    pgrep -P "$postmaster"
}

# shellcheck source=lib.sh
source "$root/benches/lib.sh"
bench_at_exit() { pg_cluster_stop; }
bench_work patgate-store-bench
up_port=$(free_port)
sled_port=$(free_port)
sled_admin=$(free_port)
pg_port=$(free_port)
pg_admin=$(free_port)
clk_tck=$(getconf CLK_TCK)

(umask 077 && printf '%s\n' "$PATGATE_TEST_POSTGRES_URL" >"$work/store-url")
echo "== certificates, keys; the vault with $USERS users' PATs in sled, then in PostgreSQL" >&2
"$bench" setup --dir "$work" --listen "127.0.0.1:$sled_port" --admin-listen "127.0.0.1:$sled_admin" \
    --upstream-port "$up_port" --users "$USERS"
"$bench" setup --dir "$work" --reuse-pki --listen "127.0.0.1:$pg_port" --admin-listen "127.0.0.1:$pg_admin" \
    --upstream-port "$up_port" --users "$USERS" --config "$work/patgate-pg.toml" \
    --state "$work/state-pg" --store-url-file "$work/store-url"
# Each patgate its own admin socket.
sed -i "s|$work/admin.sock|$work/admin-pg.sock|" "$work/patgate-pg.toml"

"$bench" upstream --listen "127.0.0.1:$up_port" --cert "$work/upstream.pem" \
    --key "$work/upstream-key.pem" >"$work/upstream.addr" &
pids+=($!)

if [ -n "${WORKERS:-}" ]; then
    printf '\n[service]\nworkers = %s\n' "$WORKERS" | tee -a "$work/patgate.toml" >>"$work/patgate-pg.toml"
fi
"$patgate" run -c "$work/patgate.toml" 2>>"$work/patgate-sled.log" &
sled_pid=$!
pids+=("$sled_pid")
"$patgate" run -c "$work/patgate-pg.toml" 2>>"$work/patgate-pg.log" &
pg_pid=$!
pids+=("$pg_pid")
wait_ready "http://127.0.0.1:$sled_admin/ready"
wait_ready "http://127.0.0.1:$pg_admin/ready"

path=/api/v3/repos/acme/api/git/refs
body='{"ref":"refs/heads/PROJ-1-fix-login","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}'
common=(--cacert "$work/ca.pem" --cert "$work/client.pem" --cert-key "$work/client-key.pem"
    --clk-tck "$clk_tck" --warmup "$WARMUP" -d "$body"
    --hmac-key "$work/bench-hmac.hmac" --keyid bench-hmac --users "$USERS")
results=$work/results.jsonl

run() { # LABEL CONCURRENCY PORT PIDS...
    local label=$1 c=$2 port=$3
    shift 3
    local p=()
    for pid in "$@"; do p+=(--pid "$pid"); done
    echo "   $label c=$c ${DURATION}s" >&2
    "$bench" load --label "$label" -c "$c" --duration "$DURATION" "${common[@]}" "${p[@]}" \
        "https://127.0.0.1:$port/git/bench$path" >>"$results"
}

# Fill PostgreSQL mode's pool before its server processes are listed (a backend per
# connection), so every backend that serves the runs is counted.
"$bench" load --label fill -c 32 --duration 2 "${common[@]}" \
    "https://127.0.0.1:$pg_port/git/bench$path" >/dev/null
mapfile -t pg_side < <(pg_server_pids)

curl -sf "http://127.0.0.1:$pg_admin/metrics" >"$work/metrics-before"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== interleaved: $REPS rounds x concurrency 1, 32 x sled, postgres, ${DURATION}s each" >&2
for rep in $(seq "$REPS"); do
    for c in 1 32; do
        run sled "$c" "$sled_port" "$sled_pid"
        run postgres "$c" "$pg_port" "$pg_pid"
        # Again, counting the database's server processes too.
        run postgres-with-db "$c" "$pg_port" "$pg_pid" "${pg_side[@]}"
    done
done
curl -sf "http://127.0.0.1:$pg_admin/metrics" >"$work/metrics-after"
echo "== the replay cache's first-use check alone (concurrency 1, then 32)" >&2
"$bench" nonces --store-url-file "$work/store-url" --clk-tck "$clk_tck" --count 20000 -c 1 >"$work/nonces-1.json"
"$bench" nonces --store-url-file "$work/store-url" --clk-tck "$clk_tck" --count 40000 -c 32 >"$work/nonces-32.json"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - started ))
pg_version=$("$PG_BIN/postgres" --version | awk '{print $3}')

python3 - "$results" "$work/nonces-1.json" "$work/nonces-32.json" "$root/BENCHMARKS.md" "$WRITE" \
    "$work/metrics-before" "$work/metrics-after" "$REPS" "$DURATION" "$WARMUP" "$USERS" "$load_before" "$load_after" "$elapsed" "$pg_version" <<'EOF'
import json, os, sys, statistics
(results, n1, n32, md_path, write, m_before, m_after, reps, duration, warmup, users, before, after, elapsed,
 pg_version) = sys.argv[1:]
rows = [json.loads(l) for l in open(results)]
def pick(label, c):
    return [r for r in rows if r["label"] == label and r["concurrency"] == c]
def mean(rs, f):
    vals = [f(r) for r in rs]
    return statistics.mean(vals) if vals else float("nan")
cpu = lambda rs: mean(rs, lambda r: r["target_cpu_us_per_request"])
lat = lambda rs, q: mean(rs, lambda r: r["latency_us"][q])
rps = lambda rs: mean(rs, lambda r: r["rps"])
errors = sum(sum(r["errors"].values()) for r in rows)
out = ["", "| concurrency | store | req/s | CPU µs/req (patgate) | CPU µs/req (patgate + PostgreSQL) | context switches/req (patgate) | p50 µs | p99 µs |",
       "|---:|---|---:|---:|---:|---:|---:|---:|"]
cs = lambda rs: mean(rs, lambda r: r["target_context_switches_per_request"])
for c in (1, 32):
    s = pick("sled", c)
    p = pick("postgres", c)
    w = pick("postgres-with-db", c)
    out.append(f"| {c} | sled | {rps(s):,.0f} | {cpu(s):.1f} | — | {cs(s):.1f} | {lat(s, 'p50'):.0f} | {lat(s, 'p99'):.0f} |")
    out.append(f"| {c} | postgres | {rps(p):,.0f} | {cpu(p):.1f} | {cpu(w):.1f} | {cs(p):.1f} | {lat(p, 'p50'):.0f} | {lat(p, 'p99'):.0f} |")
out.append("")
out.append("| figure | measured | goal |")
out.append("|---|---:|---:|")
for c in (1, 32):
    s, p, w = pick("sled", c), pick("postgres", c), pick("postgres-with-db", c)
    out.append(f"| CPU per request, postgres ÷ sled, c={c} (patgate only) | {cpu(p)/cpu(s):.2f}× | ≤ 1.3× |")
    out.append(f"| CPU per request, postgres ÷ sled, c={c} (patgate + PostgreSQL) | {cpu(w)/cpu(s):.2f}× | ≤ 1.3× |")
s, p = pick("sled", 1), pick("postgres", 1)
out.append(f"| p50 added by PostgreSQL, c=1 | +{lat(p, 'p50') - lat(s, 'p50'):.0f} µs | ≤ +150 µs |")
out.append(f"| CPU per request PostgreSQL mode may add within the goal, c=1 (0.3 × sled's) | {0.3 * cpu(s):.1f} µs | — |")
for name, f in (("1", n1), ("32", n32)):
    n = json.load(open(f))
    out.append(f"| replay-cache first use, c={name}: PostgreSQL p50 / p99 | {n['postgres']['p50_us']} / {n['postgres']['p99_us']} µs ({n['postgres']['per_second']:,.0f}/s) | — |")
    out.append(f"| replay-cache first use, c={name}: client CPU per check, PostgreSQL / memory | {n['postgres']['cpu_us']} / {n['memory']['cpu_us']} µs | — |")
    out.append(f"| replay-cache first use, c={name}: memory p50 / p99 | {n['memory']['p50_us']} / {n['memory']['p99_us']} µs | — |")
def counts(path):
    found = {}
    for line in open(path):
        name, _, value = line.rpartition(" ")
        if name.startswith("patgate_store_operation_duration_seconds_count{") or name.startswith("patgate_requests_total{"):
            found[name] = float(value)
    return found
b, a = counts(m_before), counts(m_after)
delta = {k: a[k] - b.get(k, 0.0) for k in a}
served = sum(v for k, v in delta.items() if k.startswith("patgate_requests_total{"))
if served:
    out.append("")
    out.append(f"Database operations per request in PostgreSQL mode (from its `/metrics`, over the {served:,.0f} requests of the interleaved rounds):")
    out.append("")
    out.append("| store | operation | per request |")
    out.append("|---|---|---:|")
    for k in sorted(delta):
        if k.startswith("patgate_store_operation_duration_seconds_count{") and delta[k] > 0:
            labels = dict(p.split("=", 1) for p in k[k.index("{") + 1:-1].split(","))
            out.append(f"| {labels['store'].strip(chr(34))} | {labels['operation'].strip(chr(34))} | {delta[k] / served:.3f} |")
out.append(f"\nMeans of {reps} interleaved rounds of {duration} s after {warmup} s warm-up, {users} users with "
           f"stored PATs, Require User PAT on, HMAC, HTTP/1.1 keep-alive, TLS 1.3 mTLS in and TLS to the "
           f"upstream; PostgreSQL {pg_version} on this machine (fsync on, over loopback TCP, pool of 16); "
           f"{errors} non-2xx answers in all; load average {before} before, {after} after; whole run {elapsed} s; "
           f"data-plane cores: {os.environ.get('WORKERS') or 'one per CPU (the default)'}. "
           f"`bash benches/store.sh` reruns it.")
text = "\n".join(out) + "\n"
print(text)
if write == "1":
    md = open(md_path).read()
    start, end = "<!-- store.sh: start -->", "<!-- store.sh: end -->"
    a, b = md.index(start) + len(start), md.index(end)
    open(md_path, "w").write(md[:a] + "\n" + text + md[b:])
EOF
