# Shell helpers of the scripts in benches/ (sourced, not run): a work directory, the
# processes to stop when the script exits, free loopback ports, waiting for a URL.

# Makes $work (under /dev/shm when it is writable, so files cost no disk I/O) named after
# PREFIX, and an EXIT trap that stops every pid in $pids, removes $work, and then runs
# `bench_at_exit` when the script defines one.
bench_work() { # PREFIX
    local base=/tmp
    [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
    work=$(mktemp -d "$base/$1.XXXXXX")
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    if declare -F bench_at_exit >/dev/null; then bench_at_exit; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # URL: polls every 10 ms, up to 10 s
    for _ in $(seq 1000); do
        curl -sfo /dev/null "$1" && return 0
        sleep 0.01
    done
    echo "not ready: $1" >&2
    return 1
}
