# Sourced by tests/run.sh: throw-away PostgreSQL clusters for the tests of the shared store,
# stopped and deleted when the sourcing shell exits. One is shared by every test
# (tests/postgres.rs, tests/replicas.rs, …); a second, small one is stopped and started by
# tests/replica_failures.rs alone, so no other test sees its outages.
#
# - Installs the Debian package `postgresql` when no initdb is found (Debian keeps the
#   server's programs in /usr/lib/postgresql/<version>/bin, off the PATH).
# - initdb refuses to run as root: as root, the cluster belongs to the user `nobody`.
# - The cluster listens on 127.0.0.1 on a free port, with TLS on (a CA and server
#   certificate made here with openssl) so the TLS settings can be tested; trust
#   authentication, since only this machine can reach it.
# Exports PATGATE_TEST_POSTGRES_URL (a superuser's connection string; each test makes its
# own database) and PATGATE_TEST_POSTGRES_CA (the CA of the server's certificate); for the
# outage cluster PATGATE_TEST_POSTGRES_OUTAGE_URL and PATGATE_TEST_POSTGRES_OUTAGE_CTL, a
# script that takes `stop` (a fast shutdown: sessions ended, unlogged tables kept),
# `crash` (an immediate one: as a crash, unlogged tables emptied) or `start`, and returns
# once done.

pg_bindir() {
  local found
  found=$(command -v initdb 2>/dev/null || true)
  if [ -n "$found" ]; then dirname "$(readlink -f "$found")"; return; fi
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

PG_BIN=$(pg_bindir || true)
if [ -z "$PG_BIN" ]; then
  echo "tests/postgres-cluster.sh: installing PostgreSQL (Debian package postgresql)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  PG_BIN=$(pg_bindir)
fi
command -v openssl >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl)

as_pg() { "$@"; }
PG_RUN_AS=""
if [ "$(id -u)" = 0 ]; then
  PG_USER=nobody
  as_pg() { runuser -u nobody -- "$@"; }
  PG_RUN_AS="runuser -u nobody --"
else
  PG_USER=$(id -un)
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# pg_make_cluster DIR PORT MAX_CONNECTIONS: a TLS-enabled cluster in DIR/data, started.
pg_make_cluster() {
  local dir=$1 port=$2 max=$3
  chmod 755 "$dir"
  # The server's certificate, from a CA of its own.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=patgate test database CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > "$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  chown "$PG_USER" "$dir/server.key" "$dir/server.pem"
  chmod 600 "$dir/server.key"

  mkdir "$dir/data" "$dir/run"
  chown "$PG_USER" "$dir/data" "$dir/run"
  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log"; return 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
max_connections = $max
ssl = on
ssl_cert_file = '$dir/server.pem'
ssl_key_file = '$dir/server.key'
fsync = off
CONF
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/run/server.log" -w start >/dev/null \
    || { cat "$dir/run/server.log"; return 1; }
}

PG_DIR=$(mktemp -d /tmp/patgate-pg.XXXXXX)
PG_OUTAGE_DIR=$(mktemp -d /tmp/patgate-pg-outage.XXXXXX)
pg_cluster_stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$PG_BIN/pg_ctl" -D "$PG_OUTAGE_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR" "$PG_OUTAGE_DIR"
}
trap pg_cluster_stop EXIT

PG_PORT=$(free_port)
pg_make_cluster "$PG_DIR" "$PG_PORT" 500 || exit 1
PG_OUTAGE_PORT=$(free_port)
pg_make_cluster "$PG_OUTAGE_DIR" "$PG_OUTAGE_PORT" 50 || exit 1

# The outage cluster's control script: fast or immediate stop, start (waiting for either).
cat >"$PG_OUTAGE_DIR/ctl" <<CTL
#!/bin/sh
set -e
case "\$1" in
  stop) exec $PG_RUN_AS "$PG_BIN/pg_ctl" -D "$PG_OUTAGE_DIR/data" -m fast -w stop ;;
  crash) exec $PG_RUN_AS "$PG_BIN/pg_ctl" -D "$PG_OUTAGE_DIR/data" -m immediate -w stop ;;
  start) exec $PG_RUN_AS "$PG_BIN/pg_ctl" -D "$PG_OUTAGE_DIR/data" -l "$PG_OUTAGE_DIR/run/server.log" -w start ;;
  *) echo "usage: \$0 stop|crash|start" >&2; exit 2 ;;
esac
CTL
chmod 755 "$PG_OUTAGE_DIR/ctl"

export PATGATE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
export PATGATE_TEST_POSTGRES_CA="$PG_DIR/ca.pem"
export PATGATE_TEST_POSTGRES_OUTAGE_URL="postgresql://postgres@127.0.0.1:$PG_OUTAGE_PORT/postgres"
export PATGATE_TEST_POSTGRES_OUTAGE_CTL="$PG_OUTAGE_DIR/ctl"
echo "tests/postgres-cluster.sh: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PG_DIR), the outage tests' on 127.0.0.1:$PG_OUTAGE_PORT ($PG_OUTAGE_DIR)"
