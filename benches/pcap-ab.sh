#!/usr/bin/env bash
# Two builds of `replay` against each other on one capture: interleaved runs (A, B, A, B, ...)
# of `replay record pcap`, then the median and best wall time, the median CPU (user + system)
# and the largest peak RSS of each. On this noisy machine class one run of each tells nothing;
# interleaving spreads the noise over both.
#
#   cp target/release/replay /tmp/replay-before   # build the other side, then:
#   bash benches/pcap-ab.sh /tmp/replay-before target/release/replay CAPTURE [PAIRS] [-- ARGS]
#
# ARGS go to `record pcap` (e.g. --no-redact). Needs /usr/bin/time (Debian package time).
set -euo pipefail
A=$1 B=$2 CAPTURE=$3 PAIRS=${4:-8}
shift $(( $# >= 4 ? 4 : 3 ))
[ "${1:-}" = -- ] && shift
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for _ in $(seq "$PAIRS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    rm -rf "$WORK/corpus"
    /usr/bin/time -f "$side %e %U %S %M" -a -o "$WORK/times" "$bin" record pcap -q "$@" --out "$WORK/corpus" "$CAPTURE"
  done
done
python3 - "$WORK/times" "$A" "$B" <<'P'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, wall, user, system, peak_kb = line.split()
    runs[side].append((float(wall), float(user) + float(system), int(peak_kb) / 1024))
for side, name in (("A", sys.argv[2]), ("B", sys.argv[3])):
    v = runs[side]
    print(f"{side} {name}: wall median {statistics.median(w for w, _, _ in v):.3f} s, best {min(w for w, _, _ in v):.3f} s;"
          f" CPU median {statistics.median(c for _, c, _ in v):.3f} s; peak {max(m for *_, m in v):.1f} MiB;"
          f" walls {[w for w, _, _ in v]}")
P
