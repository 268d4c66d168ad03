#!/usr/bin/env bash
# The http target beside a plain load generator, against the same server at equal concurrency.
#
#   bash benches/replay-compare.sh [CONCURRENCY] [CASES]      # defaults: 4, 100000
#
# - the server: `demo-cli serve` (release), the demo as an HTTP deployment on 127.0.0.1;
# - the cases: CASES editor contexts (message cases) in a fresh corpus, POSTed to
#   /replay/message by both sides;
# - wrk -t2 -c CONCURRENCY, cycling through exactly those request bodies;
# - `replay run --target http --concurrency CONCURRENCY` over the corpus (the whole path:
#   read the corpus, send, read and decode the answer, write the observation to disk).
# Needs: wrk (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-4}
N=${2:-100000}
WORK=${WORK:-$(mktemp -d)}
cargo build --release -q -p replay -p demo
command -v wrk > /dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 2; }

# CASES distinct editor contexts, as JSONL for `replay corpus import` and as one body per line
# for wrk.
python3 - "$N" "$WORK" <<'EOF'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
langs = [("rust", "src/lib.rs"), ("python", "app/views.py"), ("go", "main.go"), ("typescript", "web/cart.ts")]
with open(f"{work}/cases.jsonl", "w") as cases, open(f"{work}/bodies.txt", "w") as bodies:
    for i in range(n):
        lang, path = langs[i % len(langs)]
        ctx = {"file": path, "language": lang, "cursor": {"line": i % 500, "column": i % 40},
               "prefix": f"fn item_{i}() {{\n    let total = 0;\n" * (1 + i % 8), "suffix": "\n}\n",
               "diagnostics": [], "open_tabs": [path, "README.md"]}
        body = json.dumps(ctx, separators=(",", ":"))
        bodies.write(body + "\n")
        cases.write(json.dumps({"data": {"message": {"content_type": "application/json", "input": body}}}) + "\n")
EOF
rm -rf "$WORK/corpus"
./target/release/replay -q corpus import -c "$WORK/corpus" "$WORK/cases.jsonl"

./target/release/demo-cli serve --port 0 > "$WORK/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$WORK/serve.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
echo "server: demo-cli serve on 127.0.0.1:$PORT; $N cases; concurrency $C"

cat > "$WORK/post.lua" <<EOF
bodies = {}
for line in io.lines("$WORK/bodies.txt") do bodies[#bodies + 1] = line end
i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/replay/message", nil, bodies[i])
end
EOF
cat > "$WORK/replay.toml" <<EOF
[targets.http]
kind = "http"
url = "http://127.0.0.1:$PORT"
concurrency = $C
EOF
# Interleaved, three rounds: this machine class is noisy (the same wrk run varies by a
# quarter from one run to the next), so quote each side's median.
for k in 1 2 3; do
  echo "== round $k: wrk -t2 -c$C -d5s"
  wrk -t2 -c"$C" -d5s -s "$WORK/post.lua" "http://127.0.0.1:$PORT" | grep -E "Requests/sec"
  echo "== round $k: replay run --target http --concurrency $C"
  rm -rf "$WORK/run"
  ./target/release/replay --config "$WORK/replay.toml" run -t http -c "$WORK/corpus" -o "$WORK/run" --concurrency "$C" | head -1
done
