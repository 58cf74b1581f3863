#!/usr/bin/env bash
# Installs the Debian package, runs what it installed, and purges it again.
#
#     deploy/test-deb.sh target/debian/pear-server_*.deb
#
# No container or chroot can be had on the CI machine, so this uses the
# machine itself (CI runs as root on a machine of its own): it refuses to
# run where pear-server is already installed, and its exit trap purges the
# package and removes the pear user if it made it. Checks:
#   install: binaries, conffile, unit enabled, pear user, data folders, the
#            default model copied to the model folder;
#   run:     the installed binary with the installed config, as the pear
#            user, classifies the installed samples over TCP and drains on
#            SIGTERM;
#   remove:  binaries gone, config and models kept;
#   purge:   config and data gone.
set -euo pipefail
deb=$(realpath "${1:?usage: deploy/test-deb.sh PACKAGE.deb}")
[ "$(id -u)" -eq 0 ] || { echo "test-deb: needs root (it installs the package)"; exit 2; }
if dpkg-query -W -f='${Status}' pear-server 2>/dev/null | grep -q installed; then
    echo "test-deb: pear-server is already installed here; not touching it"; exit 2
fi
made_user=yes
getent passwd pear >/dev/null && made_user=no
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q pear-server >/dev/null 2>&1 || true
    if [ "$made_user" = yes ] && getent passwd pear >/dev/null; then deluser --system --quiet pear >/dev/null 2>&1 || true; fi
    if getent group pear >/dev/null && [ "$made_user" = yes ]; then delgroup --system --quiet pear >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test-deb: FAIL: $*"; exit 1; }

echo "== install $(basename "$deb")"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get install"; }
for f in /usr/bin/pear-server /usr/bin/pear-client /usr/share/pear-server/pear-default.safetensors /etc/pear-server/server.toml; do
    [ -e "$f" ] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}\n' pear-server | grep -q /etc/pear-server/server.toml || fail "server.toml is not a conffile"
unit=$(dpkg -L pear-server | grep 'systemd/system/pear-server.service$') || fail "no unit"
[ -L /etc/systemd/system/multi-user.target.wants/pear-server.service ] || fail "unit not enabled"
getent passwd pear >/dev/null || fail "no pear user"
for d in models journal images; do
    [ "$(stat -c %U /var/lib/pear-server/$d)" = pear ] || fail "/var/lib/pear-server/$d not owned by pear"
done
cmp /usr/share/pear-server/pear-default.safetensors /var/lib/pear-server/models/pear-default.safetensors || fail "default model not copied"
echo "installed: $unit enabled, pear user, /var/lib/pear-server/{models,journal,images}, default model in place"

echo "== run the installed binary with the installed config"
# The camera's folder in the installed config; the installed samples stand in for frames.
cp /usr/share/pear-server/samples/* /var/lib/pear-server/images/
setpriv --reuid=pear --regid=pear --init-groups /usr/bin/pear-server --config /etc/pear-server/server.toml --port 0 > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 300); do grep -q listening "$work/out" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
port=$(awk '/listening/ {n = split($NF, a, ":"); print a[n]}' "$work/out")
[ -n "$port" ] || { cat "$work/log"; fail "the installed server did not start"; }
server=127.0.0.1:$port
[ "$(/usr/bin/pear-client --server "$server" current)" = pear-default.safetensors ] || fail "0x22"
/usr/bin/pear-client --server "$server" classify normal_1.jpg rot_1.jpg bruise_1.jpg crack_1.jpg > "$work/classify" || { cat "$work/classify"; fail "classify"; }
cat "$work/classify"
for want in "normal_1.jpg: 0" "rot_1.jpg: 4" "bruise_1.jpg: 1" "crack_1.jpg: 3"; do
    grep -q "^$want" "$work/classify" || fail "expected '$want'"
done
kill -TERM "$pid"
wait "$pid" || fail "the server did not exit 0 after SIGTERM"
pid=
echo "ran: classified 4 installed samples as the pear user, drained on SIGTERM"

echo "== remove"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q pear-server > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "remove"; }
[ ! -e /usr/bin/pear-server ] || fail "binary left after remove"
[ -e /etc/pear-server/server.toml ] || fail "remove must keep the config"
[ -e /var/lib/pear-server/models/pear-default.safetensors ] || fail "remove must keep the models"
echo "removed: config and models kept"

echo "== purge"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q pear-server > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "purge"; }
[ ! -e /etc/pear-server ] || fail "/etc/pear-server left after purge"
[ ! -e /var/lib/pear-server ] || fail "/var/lib/pear-server left after purge"
echo "purged: /etc/pear-server and /var/lib/pear-server gone (the pear user stays, as Debian keeps system users)"
echo "PASS: install, run, remove, purge"
