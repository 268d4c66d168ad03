#!/usr/bin/env bash
# The recording proxy's cost: wrk against an upstream directly, and through
# `replay record proxy` in front of the same upstream, at 1 and 32 connections.
#
#   bash benches/proxy-compare.sh [SECONDS] [ROUNDS] [DELAY_MS]     # defaults: 5, 3, 0
#
# - the upstream: `demo-cli serve` (release), the demo as an HTTP/1.1 deployment on 127.0.0.1,
#   answering POST /replay/message with the serializer's JSON. With DELAY_MS 0 that is a few µs
#   of work: the worst case for a proxy, whose own work is then most of the total, on a machine
#   whose two cores also run wrk and the upstream. With DELAY_MS > 0 each answer is held back
#   that long, standing in for a model's service time (real LLM APIs take 100s of ms);
# - the requests: POSTs of distinct JSON editor contexts (a counter in each body), so that every
#   request through the proxy is a new case that is redacted and written to the corpus (no
#   duplicate shortcut); the proxy syncs the corpus every second, as by default;
# - wrk --latency gives p50 and p99; added latency = proxied minus direct at the same
#   percentile, from runs at 1 connection (-t1 -c1); throughput from runs at 32 (-t2 -c32).
# - when nginx is installed (Debian package nginx-light), the same runs through nginx as a plain
#   reverse proxy (proxy_pass with upstream keep-alive, no recording, access log off, 2 workers):
#   the ceiling for "a proxy on this machine", which shares its two cores with wrk and the
#   upstream. Against a zero-work upstream even nginx cannot keep 70% of direct here.
# - CPU per request: the proxy's (all its threads, the corpus writer included) and nginx's
#   (its workers) run time from /proc/PID/task/*/schedstat over each run, divided by the
#   requests wrk completed. It moves much less than latency on this host, and it is what
#   separates the proxy's own cost from the machine's.
# Rounds are interleaved (direct, proxied, nginx, direct, ...) and each figure is the median of
# its rounds: this machine class is noisy from one run to the next.
# IDLE_POLL=1 (root) holds /dev/cpu_dma_latency at 0 for the run, so idle vCPUs poll instead of
# halting. On these VMs a halted vCPU takes a host-dependent time to wake, which swings the
# zero-work rows from one hour to the next (c1 direct: 4,600-11,500 req/s halting, a steady
# ~42,000 polling); polling measures what the proxy's own path costs. Not how users run.
# Needs: wrk (Debian package); nginx optional.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
DELAY=${3:-0}
WORK=${WORK:-$(mktemp -d)}
command -v wrk > /dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 2; }
if [ "${IDLE_POLL:-0}" = 1 ]; then
  python3 -c 'import os, struct, time
fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY); os.write(fd, struct.pack("i", 0)); time.sleep(86400)' &
  POLLER=$!
  trap 'kill $POLLER 2>/dev/null || true' EXIT
  echo "idle vCPUs poll (cpu_dma_latency 0) for this run"
fi
cargo build --release -q -p replay -p demo

./target/release/demo-cli serve --port 0 --delay-ms "$DELAY" > "$WORK/serve.log" &
SERVER=$!
PROXY=
NGINX=
trap 'kill $SERVER $PROXY ${POLLER:-} 2>/dev/null || true; [ -z "$NGINX" ] || nginx -c "$WORK/nginx.conf" -s stop 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$WORK/serve.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")

rm -rf "$WORK/corpus"
REPLAY_REDACT_KEY=$(printf '3%.0s' $(seq 64)) ./target/release/replay record proxy \
  --listen 127.0.0.1:0 --upstream "http://127.0.0.1:$PORT" --out "$WORK/corpus" > "$WORK/proxy.log" &
PROXY=$!
for _ in $(seq 50); do grep -q listening "$WORK/proxy.log" && break; sleep 0.1; done
PPORT=$(sed -n 's/^listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/proxy.log")
SIDES="direct proxy"
if command -v nginx > /dev/null; then
  NPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NPORT;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  nginx -c "$WORK/nginx.conf" && NGINX=1 && SIDES="direct proxy nginx"
  sleep 0.3
fi
echo "upstream: demo-cli serve --delay-ms $DELAY on 127.0.0.1:$PORT; proxy on 127.0.0.1:$PPORT recording into $WORK/corpus"

cat > "$WORK/post.lua" <<'EOF'
local n = 0
local run = 0
-- A different prefix per thread and per wrk run, so that every request is a new case.
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)); run = math.random(1, 1000000000) end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-benchBENCHbench0123456789abcdef"
request = function()
  n = n + 1
  local body = string.format('{"file":"src/lib.rs","language":"rust","cursor":{"line":%d,"column":4},"prefix":"fn item_%d_%d() {\\n    let total = 0;\\n","suffix":"\\n}\\n","diagnostics":[],"open_tabs":["src/lib.rs","README.md"]}', n % 500, run, n)
  return wrk.format(nil, "/replay/message", nil, body)
end
EOF

cpu_ns() { # PID... -> run time of all their threads, in ns
  local total=0 f
  for pid in "$@"; do
    for f in /proc/"$pid"/task/*/schedstat; do
      read -r ns _ < "$f" 2> /dev/null && total=$((total + ns))
    done
  done
  echo "$total"
}

run() { # CONNECTIONS THREADS PORT [PID...] -> "rps p50_us p99_us non2xx cpu_us_per_request"
  local c=$1 t=$2 port=$3 before after
  shift 3
  before=$(cpu_ns "$@")
  wrk -t"$t" -c"$c" -d"${SECS}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$port" > "$WORK/wrk.out"
  after=$(cpu_ns "$@")
  python3 - "$WORK/wrk.out" "$((after - before))" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
cpu_ns = int(sys.argv[2])
done = int(re.search(r"(\d+) requests in", t).group(1))
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p = {k: us(v, u) for k, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", t, re.M)}
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p['50']:.1f} {p['99']:.1f} {errors.group(1) if errors else 0} {cpu_ns / 1e3 / max(done, 1):.1f}")
EOF
}

declare -A R
for k in $(seq "$ROUNDS"); do
  for c in 1 32; do
    t=1; [ "$c" = 32 ] && t=2
    line="round $k, $c connection(s):"
    for side in $SIDES; do
      pids=()
      case $side in
        direct) p=$PORT ;;
        proxy) p=$PPORT; pids=("$PROXY") ;;
        nginx) p=$NPORT; mapfile -t pids < <(pgrep -P "$(cat "$WORK/nginx.pid")") ;;
      esac
      R[${side}_${c}_$k]=$(run "$c" "$t" "$p" "${pids[@]}")
      line="$line $side ${R[${side}_${c}_$k]}"
    done
    echo "$line  (req/s p50µs p99µs non-2xx CPUµs/request)"
  done
done
kill -INT $PROXY; wait $PROXY || true; PROXY=
tail -n 4 "$WORK/proxy.log"

python3 - "$ROUNDS" <<EOF
import statistics, sys
rounds = int(sys.argv[1])
R = {$(for key in "${!R[@]}"; do printf '"%s": "%s", ' "$key" "${R[$key]}"; done)}
def med(side, c, i):
    return statistics.median(float(R[f"{side}_{c}_{k}"].split()[i]) for k in range(1, rounds + 1))
print()
print(f"{'connections':>11} {'direct req/s':>12} {'proxied req/s':>13} {'ratio':>6} {'direct p50':>10} {'proxied p50':>11} {'added p50':>9} {'direct p99':>10} {'proxied p99':>11} {'added p99':>9} {'CPU/request':>11}")
for c in (1, 32):
    d, p = med("direct", c, 0), med("proxy", c, 0)
    d50, p50, d99, p99 = med("direct", c, 1), med("proxy", c, 1), med("direct", c, 2), med("proxy", c, 2)
    print(f"{c:>11} {d:>12.0f} {p:>13.0f} {p / d:>6.0%} {d50:>8.0f}µs {p50:>9.0f}µs {p50 - d50:>7.0f}µs {d99:>8.0f}µs {p99:>9.0f}µs {p99 - d99:>7.0f}µs {med('proxy', c, 4):>9.1f}µs")
if "nginx_1_1" in R:
    print()
    print("the same through nginx proxy_pass (no recording):")
    for c in (1, 32):
        d, n = med("direct", c, 0), med("nginx", c, 0)
        d50, n50, d99, n99 = med("direct", c, 1), med("nginx", c, 1), med("direct", c, 2), med("nginx", c, 2)
        print(f"{c:>11} {d:>12.0f} {n:>13.0f} {n / d:>6.0%} {d50:>8.0f}µs {n50:>9.0f}µs {n50 - d50:>7.0f}µs {d99:>8.0f}µs {n99:>9.0f}µs {n99 - d99:>7.0f}µs {med('nginx', c, 4):>9.1f}µs")
EOF
