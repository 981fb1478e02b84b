#!/usr/bin/env bash
# The Debian package (README, "Install from the Debian package").
#
# Builds it with cargo-deb (installed under the target dir when missing) and checks what it
# holds. Then, only as root and with CI=true or PATGATE_DEB_INSTALL=1, installs it on this
# machine with apt, follows the README's first-run steps, upgrades, removes and purges it,
# and checks what an admin would see at each step. That part refuses to run where patgate is
# already installed or has left a user or files, and leaves the machine as it found it.
#
# Usage: bash tests/deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_deb_version=3.8.0
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
tools="$target_dir/tools"
cargo_deb="$tools/bin/cargo-deb"
version=$(cargo pkgid | sed 's/.*[#@]//')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() {
  echo "tests/deb.sh: FAILED: $*" >&2
  echo "$passed passed, 1 failed"
  exit 1
}
# check DESCRIPTION COMMAND...: the command must succeed.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# same DESCRIPTION ACTUAL EXPECTED
same() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', expected '$3'"; fi
}

if [ "$("$cargo_deb" --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  echo "tests/deb.sh: installing cargo-deb $cargo_deb_version into $tools"
  # Built in a temporary directory, not in the project's target dir.
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$cargo_deb_version" \
    --root "$tools" cargo-deb
fi

echo "== building the package (release build)"
"$cargo_deb" --locked >"$work/built"
deb=$(grep '\.deb$' "$work/built")
# Later cargo-deb runs may clean the target's debian/ directory: work on a copy.
cp "$deb" "$work/"
deb="$work/$(basename "$deb")"
same "package file name" "$(basename "$deb")" "patgate_${version}-1_$(dpkg --print-architecture).deb"
check "a -dbgsym package with the debug info" grep -q "patgate-dbgsym_${version}-1_.*\.ddeb$" "$work/built"

echo "== what the package holds"
same "Package" "$(dpkg-deb -f "$deb" Package)" patgate
same "Version" "$(dpkg-deb -f "$deb" Version)" "${version}-1"
same "Section" "$(dpkg-deb -f "$deb" Section)" net
same "Priority" "$(dpkg-deb -f "$deb" Priority)" optional
depends=$(dpkg-deb -f "$deb" Depends)
check "Depends has libc6, found by cargo-deb: $depends" \
  grep -Eq '(^|, )libc6 \(>= [0-9.]+\)(,|$)' <<<"$depends"
check "Depends has adduser" grep -Eq '(^|, )adduser(,|$)' <<<"$depends"
check "Description has a synopsis and an extended text" \
  test "$(dpkg-deb -f "$deb" Description | wc -l)" -gt 3

dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' >"$work/contents"
for expected in \
  "-rwxr-xr-x 0/0 ./usr/bin/patgate" \
  "-rw-r--r-- 0/0 ./usr/lib/systemd/system/patgate.service" \
  "-rw-r--r-- 0/0 ./usr/share/doc/patgate/examples/patgate.toml" \
  "-rw-r--r-- 0/0 ./usr/share/doc/patgate/README.md" \
  "-rw-r--r-- 0/0 ./usr/share/doc/patgate/protocol.md" \
  "-rw-r--r-- 0/0 ./usr/share/doc/patgate/certificates.md" \
  "-rw-r--r-- 0/0 ./usr/share/doc/patgate/copyright" \
  "-rw-r--r-- 0/0 ./usr/share/doc/patgate/changelog.Debian.gz"; do
  check "holds $expected" grep -qxF -- "$expected" "$work/contents"
done
check "nothing under /etc (the example is not a conffile)" \
  bash -c '! grep -q " \./etc/" "$1"' _ "$work/contents"

dpkg-deb -x "$deb" "$work/root"
check "the unit is systemd/patgate.service" \
  cmp systemd/patgate.service "$work/root/usr/lib/systemd/system/patgate.service"
check "the example is config/patgate.example.toml" \
  cmp config/patgate.example.toml "$work/root/usr/share/doc/patgate/examples/patgate.toml"
same "the packaged binary's --version" "$("$work/root/usr/bin/patgate" --version)" "patgate $version"
check "the packaged binary is stripped (debug info in -dbgsym)" \
  bash -c '! readelf -S "$1" | grep -q "\.debug_info"' _ "$work/root/usr/bin/patgate"

copyright="$work/root/usr/share/doc/patgate/copyright"
check "the copyright file is debian/copyright" cmp debian/copyright "$copyright"
check "debian/copyright is current with Cargo.lock (debian/make-copyright.py --check)" \
  python3 debian/make-copyright.py --check
check "the copyright file is machine-readable (DEP-5)" \
  grep -qx "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" "$copyright"
check "the copyright file has no placeholder" bash -c '! grep -qi "information missing" "$1"' _ "$copyright"
check "the copyright file names patgate's licence" grep -qx "License: Apache-2.0" "$copyright"
for crate in hyper rustls tokio sled aes-gcm governor; do
  check "the copyright file names the linked crate $crate" grep -q "^Files: crates.io/$crate-[0-9]" "$copyright"
done
check "every licence named has its text or a reference" python3 - "$copyright" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
named = set()
for expr in re.findall(r"^License: (.+)$", text, re.M):
    expr = re.sub(r"\bwith\s+[A-Za-z0-9.\-]+", "", expr)
    named.update(t for t in re.findall(r"[A-Za-z0-9.\-]+", expr) if t not in ("or", "and"))
standalone = set(re.findall(r"^License: ([A-Za-z0-9.\-]+)\n ", text, re.M))
missing = named - standalone
sys.exit(f"no text for {sorted(missing)}" if missing else 0)
PY
same "the changelog's version is the package's" \
  "$(zcat "$work/root/usr/share/doc/patgate/changelog.Debian.gz" | head -1 | sed 's/^patgate (\([^)]*\)).*/\1/')" "${version}-1"

dpkg-deb -e "$deb" "$work/control"
for script in postinst prerm postrm; do
  check "$script is executable" test -x "$work/control/$script"
  check "$script parses (sh -n)" sh -n "$work/control/$script"
done
check "postinst makes the system user with adduser" grep -q 'adduser .*--system' "$work/control/postinst"
check "postinst has cargo-deb's systemd snippet" grep -q 'deb-systemd-helper' "$work/control/postinst"

if [ "$(id -u)" != 0 ] || { [ "${CI:-}" != true ] && [ "${PATGATE_DEB_INSTALL:-}" != 1 ]; }; then
  echo "tests/deb.sh: skipped installing the package on this machine (it needs root, and CI=true or PATGATE_DEB_INSTALL=1)"
  echo "$passed passed, 0 failed"
  exit 0
fi

echo "== installing on this machine"
# Never touch a real installation: everything below assumes patgate was never here.
if dpkg-query -W patgate >/dev/null 2>&1 || getent passwd patgate >/dev/null ||
  getent group patgate >/dev/null || [ -e /etc/patgate ] || [ -e /var/lib/patgate ]; then
  fail "this machine already has patgate (package, user, /etc/patgate or /var/lib/patgate); tests/deb.sh installs only where it never was"
fi
# From here on, whatever happens, leave the machine as it was.
cleanup() {
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq patgate >/dev/null 2>&1 || true
  rm -rf /etc/patgate /var/lib/patgate "$work"
  if getent passwd patgate >/dev/null; then deluser --system patgate >/dev/null 2>&1 || true; fi
  if getent group patgate >/dev/null; then delgroup --system patgate >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 "$@" >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; fail "apt-get $*"; }
}
mode_of() { stat -c '%U:%G %a' "$1"; }
# systemctl reads the unit files without a running systemd (CI has none), and says
# "enabled" once a package enables the unit.
unit_state() { systemctl is-enabled patgate.service 2>&1 || true; }

apt_get install "$deb"
same "dpkg status" "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' patgate)" "ii ${version}-1"
same "/usr/bin/patgate --version" "$(/usr/bin/patgate --version)" "patgate $version"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd patgate)
check "patgate is a system user (uid $uid)" test "$uid" -ge 100 -a "$uid" -lt 1000
same "patgate's group" "$(getent group "$gid" | cut -d: -f1)" patgate
same "patgate's home" "$home" /var/lib/patgate
same "patgate's shell" "$shell" /usr/sbin/nologin
same "patgate's password is locked" "$(passwd -S patgate | cut -d' ' -f2)" L
check "the unit is installed" test -f /usr/lib/systemd/system/patgate.service
same "the unit is not enabled" "$(unit_state)" disabled
if [ -d /run/systemd/system ]; then
  check "the service was not started" bash -c '! systemctl is-active --quiet patgate.service'
fi
same "/etc/patgate" "$(mode_of /etc/patgate)" "root:patgate 750"
same "/var/lib/patgate" "$(mode_of /var/lib/patgate)" "patgate:patgate 700"
check "an ordinary user cannot read /etc/patgate" \
  bash -c '! runuser -u nobody -- ls /etc/patgate 2>/dev/null'

echo "== the README's first-run steps"
install -m 0640 -o root -g patgate /usr/share/doc/patgate/examples/patgate.toml /etc/patgate/patgate.toml
patgate vault init --config /etc/patgate/patgate.toml >/dev/null
chown patgate:patgate /etc/patgate/master-key
chown -R patgate:patgate /var/lib/patgate
# Lab certificates as certs/README.md makes them, at the paths the example names (its
# [connect] page reuses the server certificate here).
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=patgate lab CA" -keyout ca-key.pem -out ca.pem
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=patgate.example.com" \
    -keyout server-key.pem -out server.csr
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -days 2 -out server.pem \
    -extfile <(printf "subjectAltName=DNS:patgate.example.com\nextendedKeyUsage=serverAuth")
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; fail "openssl"; }
install -d -m 0750 -o root -g patgate /etc/patgate/tls
install -m 0644 "$work/server.pem" /etc/patgate/tls/server.pem
install -m 0644 "$work/server.pem" /etc/patgate/tls/connect.pem
install -m 0644 "$work/ca.pem" /etc/patgate/tls/client-ca.pem
install -m 0640 -o root -g patgate "$work/server-key.pem" /etc/patgate/tls/server-key.pem
install -m 0640 -o root -g patgate "$work/server-key.pem" /etc/patgate/tls/connect-key.pem
as_patgate() { runuser -u patgate -- "$@"; }
check "the service user passes config check (reads config, certificates, keys)" \
  as_patgate patgate config check --offline /etc/patgate/patgate.toml
same "the service user opens the vault with the master key" \
  "$(as_patgate patgate vault list --json --config /etc/patgate/patgate.toml)" "[]"
# A made-up token: --no-validate keeps it from going to a host.
check "the service user stores the integration's token" \
  bash -c 'printf "ghp_%s\n" "$(openssl rand -hex 18)" |
    runuser -u patgate -- patgate integration set-secret ghe --no-validate >/dev/null'
listed=$(as_patgate patgate vault list --json)
check "the vault lists it" grep -q '"integration":"ghe"' <<<"$listed"
same "the master key" "$(mode_of /etc/patgate/master-key)" "patgate:patgate 600"
sha256sum /etc/patgate/patgate.toml /etc/patgate/master-key >"$work/admin-files.sha256"

echo "== upgrade to ${version}-2"
"$cargo_deb" --locked --no-build --fast --deb-revision 2 -o "$work/upgrade/" >/dev/null
apt_get install "$work/upgrade/patgate_${version}-2_$(dpkg --print-architecture).deb"
same "dpkg status" "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' patgate)" "ii ${version}-2"
check "the config and master key are untouched" sha256sum --quiet -c "$work/admin-files.sha256"
same "/etc/patgate" "$(mode_of /etc/patgate)" "root:patgate 750"
same "the same patgate user" "$(id -u patgate)" "$uid"
same "the vault still opens and holds the token" "$(as_patgate patgate vault list --json)" "$listed"
same "the unit is still not enabled" "$(unit_state)" disabled

echo "== remove"
apt_get remove patgate
check "the binary is gone" test ! -e /usr/bin/patgate
check "the unit is gone" test ! -e /usr/lib/systemd/system/patgate.service
check "the config and master key stay" sha256sum --quiet -c "$work/admin-files.sha256"
check "the vault stays" test -f /var/lib/patgate/db
same "the user stays" "$(id -u patgate)" "$uid"

echo "== purge, with the admin's files in place"
apt_get purge patgate
check "dpkg forgot the package" bash -c '! dpkg-query -W patgate 2>/dev/null'
check "purge says what it kept" grep -q "patgate: kept /etc/patgate and /var/lib/patgate" "$work/apt.log"
check "the config and master key stay" sha256sum --quiet -c "$work/admin-files.sha256"
check "the vault stays" test -f /var/lib/patgate/db
same "the user that owns them stays" "$(id -u patgate)" "$uid"
# The command the purge message gives.
rm -r /etc/patgate /var/lib/patgate && deluser --system patgate >/dev/null 2>&1
check "the user is gone" bash -c '! getent passwd patgate'
check "the group is gone" bash -c '! getent group patgate'

echo "== install and purge with nothing written"
apt_get install "$deb"
apt_get purge patgate
check "dpkg forgot the package" bash -c '! dpkg-query -W patgate 2>/dev/null'
check "/etc/patgate is gone" test ! -e /etc/patgate
check "/var/lib/patgate is gone" test ! -e /var/lib/patgate
check "the user is gone" bash -c '! getent passwd patgate'
check "the group is gone" bash -c '! getent group patgate'
check "no systemd state is left" \
  bash -c '! find /etc/systemd /var/lib/systemd -name "*patgate*" 2>/dev/null | grep -q .'

echo "$passed passed, 0 failed"
