#!/usr/bin/env bash
# Runs the SIGTERM/drain tests N times (default 20) while `pear-client bench`
# keeps another server busy on every core, and says how many runs passed.
# Needs the debug binaries: `cargo test --no-run` builds them.
#
#     tools/drain_under_load.sh 20
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
work=$(mktemp -d)
trap 'kill $bench $srv 2>/dev/null; rm -rf "$work"' EXIT
# The shipped config, its paths made absolute, metrics on a free port.
sed "s/^listen = .*/listen = \"127.0.0.1:0\"/; s#\"weights\"#\"$PWD/weights\"#g; s#\"samples\"#\"$PWD/samples\"#g" server.toml > "$work/server.toml"
target/debug/pear-server --config "$work/server.toml" --port 0 > "$work/out" 2> "$work/log" &
srv=$!
for _ in $(seq 100); do grep -q listening "$work/out" && break; sleep 0.1; done
addr=$(awk '/listening/ {print $NF}' "$work/out")
[ -n "$addr" ] || { echo "load server did not start:"; cat "$work/log"; exit 2; }
target/debug/pear-client --server "$addr" bench --connections 4 --duration 3600 > /dev/null 2>&1 &
bench=$!
pass=0
for i in $(seq "$runs"); do
  if cargo test -q --test it -- hostile::sigterm_answers_everything_received hostile::a_second_signal_exits_at_once \
      hostile::an_expired_drain_still_answers metrics::health_and_readiness > "$work/run-$i" 2>&1; then
    pass=$((pass + 1)); r=ok
  else
    r=FAILED; cp "$work/run-$i" "drain-run-$i.log"
  fi
  echo "run $i: $r ($(grep -o '[0-9]* passed; [0-9]* failed' "$work/run-$i" | tail -1)), load average $(cut -d' ' -f1 /proc/loadavg)"
done
echo "load server answered $(grep -c 'answered in' "$work/log") requests meanwhile"
echo "$pass passed, $((runs - pass)) failed"
[ "$pass" -eq "$runs" ]
