#!/usr/bin/env bash
# Corpus throughput beside the page-cache ceiling, on the same segment files.
#
#   bash benches/corpus-compare.sh            # figures for the notes and README
#
# For 1 KiB and 64 KiB cases it builds a corpus with `replay corpus import`, then times
#   - `cat` over the segment files, warm (the page-cache ceiling),
#   - `replay corpus stats` (every record read, CRC-checked and decoded),
# and reports MB/s of segment bytes, cases/s and peak memory (`/usr/bin/time -v`).
# Then it runs the criterion bench `corpus` (library write and read, no JSON, no process).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
REPLAY=target/release/replay
WORK=${WORK:-$(mktemp -d)}
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
rate() { python3 -c "import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/t/1e6:9.1f} MB/s')" "$1" "$2"; }
calc() { python3 -c "print($1)"; }
per_s() { python3 -c "import sys; n,t=float(sys.argv[1]),float(sys.argv[2]); print(f'{n/t:11.0f} cases/s')" "$1" "$2"; }

for spec in "1KiB 1024 131072" "64KiB 65536 4096"; do
  set -- $spec
  label=$1 size=$2 n=$3
  python3 - "$size" "$n" > "$WORK/$label.jsonl" <<'PY'
import json, random, sys
size, n = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(7)
alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 "
for i in range(n):
    text = "".join(rng.choice(alphabet) for _ in range(64))
    body = (json.dumps({"case": i, "text": ""})[:-2] + (text * (size // 64 + 1)))[: size - 2] + '"}'
    print(json.dumps({"data": {"message": {"content_type": "application/json", "input": body,
                                           "output": {"content_type": "application/json", "data": "{\"ok\":true}"}}},
                      "tags": {"lang": "rust"}}))
PY
  dir="$WORK/$label"
  t0=$(now); $REPLAY corpus import -q -c "$dir" "$WORK/$label.jsonl"; t1=$(now)
  bytes=$(cat "$dir"/segments/*.seg | wc -c)
  echo "== $label cases: $n cases, $bytes segment bytes"
  echo "import (JSON parse + write + fsync): $(rate "$bytes" "$(calc "$t1 - $t0")")  $(per_s "$n" "$(calc "$t1 - $t0")")"
  cat "$dir"/segments/*.seg > /dev/null
  best=999
  for _ in 1 2 3 4 5; do
    t0=$(now); cat "$dir"/segments/*.seg > /dev/null; t1=$(now)
    best=$(calc "min($t1 - $t0, $best)")
  done
  echo "cat (ceiling, best of 5):            $(rate "$bytes" "$best")"
  best=999
  for _ in 1 2 3; do
    t0=$(now); $REPLAY corpus stats -q -c "$dir" > /dev/null; t1=$(now)
    best=$(calc "min($t1 - $t0, $best)")
  done
  echo "replay corpus stats (best of 3):     $(rate "$bytes" "$best")  $(per_s "$n" "$best")"
  /usr/bin/time -v $REPLAY corpus stats -q -c "$dir" 2>&1 >/dev/null | awk '/Maximum resident/ {printf "replay corpus stats peak memory:     %.1f MiB\n", $6/1024}'
done

cargo bench -q --bench corpus -- --noplot 2>/dev/null | grep -E "^corpus/|thrpt" || cargo bench --bench corpus
