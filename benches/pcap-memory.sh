#!/usr/bin/env bash
# Peak memory of `replay record pcap` on captures shaped to grow its state (open flows,
# unfinished heads, out-of-order data, corpus index entries), beside the 64 MiB the recorder
# promises whatever the capture. Each capture is made by benches/state-captures.py.
#
#   bash benches/pcap-memory.sh [REPLAY_BINARY]     # default: target/release/replay (built)
#
# Prints, per capture: size, time and the peak resident memory the summary reports (the
# kernel's VmHWM, the same figure /usr/bin/time -v gives as "Maximum resident set size").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-}
if [ -z "$BIN" ]; then
  cargo build --release -q -p replay
  BIN=target/release/replay
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
run() { # NAME KIND N [ARGS]
  local name=$1 kind=$2 n=$3
  shift 3
  python3 benches/state-captures.py "$kind" "$WORK/$name.pcap" "$n"
  rm -rf "$WORK/corpus"
  local line
  line=$("$BIN" record pcap "$@" "$WORK/$name.pcap" --out "$WORK/corpus" | head -1)
  printf '%-44s %s\n' "$name ($kind $n${*:+ $*})" "${line#recorded 1 file(s) into $WORK/corpus }"
  rm -f "$WORK/$name.pcap"
}
run "port scan, packets not kept" scan 1000000 --keep http
run "port scan, packets kept" scan 1000000
run "unfinished heads" heads 2000 --keep http
run "scan, then unfinished heads" mix 1200 --keep http
run "holes with 3 MB behind each" ooo 40
run "UDP packet cases" udp 1000000
run "UDP packet cases" udp 3000000
