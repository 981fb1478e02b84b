# Sourced by tests/run.sh: a throw-away PostgreSQL cluster for the tests of the shared store
# (tests/postgres.rs, tests/replicas.rs), stopped and deleted when the sourcing shell exits.
#
# - Installs the Debian package `postgresql` when no initdb is found (Debian keeps the
#   server's programs in /usr/lib/postgresql/<version>/bin, off the PATH).
# - initdb refuses to run as root: as root, the cluster belongs to the user `nobody`.
# - The cluster listens on 127.0.0.1 on a free port, with TLS on (a CA and server
#   certificate made here with openssl) so the TLS settings can be tested; trust
#   authentication, since only this machine can reach it.
# Exports PATGATE_TEST_POSTGRES_URL (a superuser's connection string; each test makes its
# own database) and PATGATE_TEST_POSTGRES_CA (the CA of the server's certificate).

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

PG_DIR=$(mktemp -d /tmp/patgate-pg.XXXXXX)
chmod 755 "$PG_DIR"
PG_USER=$(id -un)
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  PG_USER=nobody
  as_pg() { runuser -u nobody -- "$@"; }
fi

PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The server's certificate, from a CA of its own.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=patgate test database CA" -keyout "$PG_DIR/ca.key" -out "$PG_DIR/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$PG_DIR/server.key" -out "$PG_DIR/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > "$PG_DIR/server.ext"
openssl x509 -req -in "$PG_DIR/server.csr" -CA "$PG_DIR/ca.pem" -CAkey "$PG_DIR/ca.key" \
  -CAcreateserial -days 2 -extfile "$PG_DIR/server.ext" -out "$PG_DIR/server.pem" 2>/dev/null
chown "$PG_USER" "$PG_DIR/server.key" "$PG_DIR/server.pem"
chmod 600 "$PG_DIR/server.key"

mkdir "$PG_DIR/data" "$PG_DIR/run"
chown "$PG_USER" "$PG_DIR/data" "$PG_DIR/run"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
  || { cat "$PG_DIR/initdb.log"; exit 1; }
cat >>"$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR/run'
max_connections = 500
ssl = on
ssl_cert_file = '$PG_DIR/server.pem'
ssl_key_file = '$PG_DIR/server.key'
fsync = off
CONF

pg_cluster_stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap pg_cluster_stop EXIT
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/run/server.log" -w start >/dev/null \
  || { cat "$PG_DIR/run/server.log"; exit 1; }

export PATGATE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
export PATGATE_TEST_POSTGRES_CA="$PG_DIR/ca.pem"
echo "tests/postgres-cluster.sh: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PG_DIR)"
