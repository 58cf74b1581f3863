#!/usr/bin/env bash
# Scale-out check on one machine: 3 pear-servers on 127.0.0.2-4 (ports 9090
# and 9091 each, as on real hosts) behind HAProxy (deploy/haproxy.cfg, its
# frontend moved to 127.0.0.1:19090).
#
#   1. pear-client bench through HAProxy: every server gets >= 20 % of images.
#   2. bench again and SIGTERM one server mid-run: it drains and exits 0, no
#      answer is lost (bench images == images the servers answered, none with
#      an error), and the other two carry on.
#
# Run from anywhere: deploy/test-haproxy.sh   (installs haproxy if missing; needs root for that)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if ! command -v haproxy >/dev/null; then
    echo "installing haproxy"
    apt-get update -qq && apt-get install -y -qq haproxy >/dev/null
fi
cargo build --release --bins -q
BIN=$ROOT/target/release
WORK=$(mktemp -d /tmp/pear-haproxy.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for i in 1 2 3; do
    ip=127.0.0.$((i + 1))
    cat > "$WORK/s$i.toml" <<TOML
[server]
host = "$ip"
port = 9090
drain_timeout_secs = 30
[inference]
workers = 1
threads_per_worker = 1
[model]
dir = "$ROOT/weights"
allowed_roots = ["$ROOT/weights"]
[images]
dir = "$ROOT/samples"
allowed_roots = ["$ROOT/samples"]
[metrics]
listen = "$ip:9091"
TOML
    RUST_LOG=info "$BIN/pear-server" --config "$WORK/s$i.toml" > "$WORK/s$i.out" 2> "$WORK/s$i.log" &
    PIDS+=($!)
    eval "PID$i=$!"
done
for i in 1 2 3; do
    for _ in $(seq 100); do grep -q listening "$WORK/s$i.out" && break; sleep 0.1; done
    grep -q listening "$WORK/s$i.out" || { echo "server $i did not start"; cat "$WORK/s$i.log"; exit 1; }
done

sed -e 's/10\.0\.0\.11/127.0.0.2/; s/10\.0\.0\.12/127.0.0.3/; s/10\.0\.0\.13/127.0.0.4/' \
    -e 's/bind \*:9090/bind 127.0.0.1:19090/' deploy/haproxy.cfg > "$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
# Wait until the checks have marked all three up (rise 2 x inter 500 ms).
sleep 2.5

# Images each server answered so far, from its log ("0x01 files=N answered").
answered() { grep -o '0x01 files=[0-9]*' "$WORK/s$1.log" | awk -F= '{s += $2} END {print s + 0}'; }
BENCH=("$BIN/pear-client" --server 127.0.0.1:19090 --json bench --connections 6 --images 2 --probe-ms 200)

echo "== 1. spread over 3 servers"
"${BENCH[@]}" --duration 10 > "$WORK/bench1.json"
total=$(python3 -c "import json; print(json.load(open('$WORK/bench1.json'))['images'])")
a1=$(answered 1); a2=$(answered 2); a3=$(answered 3)
echo "bench: $total images; servers answered $a1 / $a2 / $a3"
[ $((a1 + a2 + a3)) -eq "$total" ] || { echo "FAIL: bench counted $total, servers $((a1 + a2 + a3))"; exit 1; }
for n in $a1 $a2 $a3; do
    [ $((n * 100)) -ge $((total * 20)) ] || { echo "FAIL: a server got less than 20 % ($n of $total)"; exit 1; }
done

echo "== 2. SIGTERM to server 2 mid-run"
"${BENCH[@]}" --duration 12 > "$WORK/bench2.json" &
BENCH_PID=$!
sleep 4
b1=$(answered 1); b3=$(answered 3)
kill -TERM "$PID2"
rc=0; wait "$PID2" || rc=$?
echo "server 2 exited with status $rc after draining"
[ "$rc" -eq 0 ] || { echo "FAIL: server 2 exit status $rc"; exit 1; }
wait "$BENCH_PID" || { echo "FAIL: bench failed"; cat "$WORK/bench2.json"; exit 1; }
read -r images errors reconnects < <(python3 -c "import json; b = json.load(open('$WORK/bench2.json')); print(b['images'], b['image_errors'], b['reconnects'])")
c1=$(answered 1); c2=$(answered 2); c3=$(answered 3)
served=$(( (c1 - a1) + (c2 - a2) + (c3 - a3) ))
echo "bench: $images images, $errors with an error, $reconnects resent after server 2 closed a connection"
echo "servers answered: $((c1 - a1)) / $((c2 - a2)) (drained) / $((c3 - a3)); after the SIGTERM: $((c1 - b1)) / - / $((c3 - b3))"
[ "$errors" -eq 0 ] || { echo "FAIL: $errors images answered with an error"; exit 1; }
[ "$served" -eq "$images" ] || { echo "FAIL: bench got $images answers, servers sent $served"; exit 1; }
[ $((c1 - b1)) -gt 0 ] && [ $((c3 - b3)) -gt 0 ] || { echo "FAIL: the other servers did not carry on"; exit 1; }
grep -q "drained: every request received was answered" "$WORK/s2.log" || { echo "FAIL: server 2 did not drain cleanly"; tail "$WORK/s2.log"; exit 1; }
echo "PASS: load spread over 3 servers, 0 answers lost across server 2's SIGTERM, servers 1 and 3 carried on"
