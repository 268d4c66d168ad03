#!/usr/bin/env bash
# The pcap recorder beside its ceiling and beside what a user would otherwise reach for.
#
#   bash benches/pcap-compare.sh [CAPTURE]        # default: make one with capture-gen
#
# On one real capture (tcpdump of kernel TCP, from ../shared/tools/capture-gen), page cache warm:
#   - cat                                         (the page-cache ceiling)
#   - the bare walk: pcap-file + etherparse to the TCP header, no reassembly (criterion)
#   - replay record pcap, the whole path to a corpus on disk (criterion, and the binary with
#     /usr/bin/time -v for peak memory)
#   - tshark -r F -Y http.request -T fields -e http.request.uri (skip with NO_TSHARK=1)
# Needs: tshark, tcpdump and ethtool (Debian packages) to make the capture; root for unshare.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-$(mktemp -d)}
CAP=${1:-}
if [ -z "$CAP" ]; then
  CAP=$WORK/big.pcap
  bash ../shared/tools/capture-gen/make_capture.sh "$CAP" 16 36 1 > "$WORK/gen.log"
  echo "capture-gen: $(cat "$CAP.client.json")"
fi
cargo build --release -q
SIZE=$(stat -c %s "$CAP")
echo "capture: $CAP ($SIZE bytes)"
mbs() { python3 -c "import sys; print(f'{$SIZE/float(sys.argv[1])/1e6:8.1f} MB/s')" "$1"; }
secs() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }

cat "$CAP" > /dev/null
best=999; for _ in 1 2 3 4 5; do t=$(secs cat "$CAP"); best=$(python3 -c "print(min($t, $best))"); done
echo "cat (best of 5):                  ${best}s $(mbs "$best")"

best=999; rss=0
for _ in 1 2 3; do
  rm -rf "$WORK/corpus"
  /usr/bin/time -v target/release/replay record pcap "$CAP" --out "$WORK/corpus" -q 2> "$WORK/time.txt"
  t=$(awk -F': ' '/Elapsed/ {split($2,a,":"); print a[1]*60+a[2]}' "$WORK/time.txt")
  best=$(python3 -c "print(min($t, $best))")
  rss=$(awk '/Maximum resident/ {print $6}' "$WORK/time.txt")
done
echo "replay record pcap (best of 3):   ${best}s $(mbs "$best"), peak RSS $((rss / 1024)) MiB"
target/release/replay record pcap "$CAP" --out "$WORK/corpus2" | sed 's/^/    /'

if [ -z "${NO_TSHARK:-}" ]; then
  /usr/bin/time -v tshark -r "$CAP" -Y http.request -T fields -e http.request.uri > "$WORK/uris.txt" 2> "$WORK/tshark.txt" || true
  t=$(awk -F': ' '/Elapsed/ {split($2,a,":"); print a[1]*60+a[2]}' "$WORK/tshark.txt")
  rss=$(awk '/Maximum resident/ {print $6}' "$WORK/tshark.txt")
  echo "tshark -Y http.request (1 run):   ${t}s $(mbs "$t"), peak RSS $((rss / 1024)) MiB, $(wc -l < "$WORK/uris.txt") requests"
fi

REPLAY_BENCH_PCAP="$CAP" cargo bench -q --bench pcap_import 2>/dev/null | grep -E "^pcap_import|time:|thrpt:"
