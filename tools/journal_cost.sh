#!/bin/bash
# One fixed load against a fresh server with the journal on or off, for a
# side-by-side timing of the journal's cost (time two runs in turn, e.g.
# `/usr/bin/time -v tools/journal_cost.sh on` then `... off`, alternated).
# The load: 4 clients at once, each classifying the 10 samples 8 times,
# 2 images per request (320 images). Needs the release build.
set -eu
mode=${1:?on or off}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PEAR_BIN:-$ROOT/target/release}
work=$(mktemp -d /tmp/pear-journal-cost.XXXXXX)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
sed -e "s#\"weights\"#\"$ROOT/weights\"#g; s#\"samples\"#\"$ROOT/samples\"#g; s#listen = \"127.0.0.1:9091\"#listen = \"127.0.0.1:0\"#" \
    -e "s#^path = \"journal/inspections.sqlite\"#path = \"$work/inspections.sqlite\"#" "$ROOT/server.toml" > "$work/server.toml"
[ "$mode" = off ] && sed -i '/^path = .*inspections.sqlite/d' "$work/server.toml"
"$BIN/pear-server" --config "$work/server.toml" --port 0 > "$work/out" 2>"$work/log" & pid=$!
for _ in $(seq 200); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.05; done
addr=$(head -1 "$work/out" | awk '{print $NF}')
for c in 1 2 3 4; do
  ( for r in 1 2 3 4 5 6 7 8; do "$BIN/pear-client" --server "$addr" classify --dir "$ROOT/samples" --batch 2 > /dev/null; done ) &
done
wait $(jobs -p | grep -v "^$pid$")
