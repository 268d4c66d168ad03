#!/usr/bin/env bash
# Regenerates the tshark reference lists the capture tests compare against:
#   bash recorders/tests/tshark/generate.sh [CAPTURES_DIR]
# One file per capture: "METHOD TARGET STATUS" per HTTP request tshark sees ("-" for a request
# whose response it did not see). Needs tshark (Debian package `tshark`); CI does not, it uses
# the checked-in lists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../../../../shared/captures}
for f in "$dir"/*/*.pcap "$dir"/*/*.pcapng; do
  out="$here/$(basename "$f").txt"
  {
    tshark -2 -r "$f" -Y http.request -T fields -E separator=/t -E occurrence=f \
      -e frame.number -e http.request.method -e http.request.uri -e http.response_in 2>/dev/null
    echo "--"
    tshark -r "$f" -Y http.response -T fields -E separator=/t -E occurrence=f -e frame.number -e http.response.code 2>/dev/null
  } | python3 -c '
import sys
reqs, resps, part = [], {}, 0
for line in sys.stdin:
    line = line.rstrip("\n")
    if line == "--":
        part = 1
        continue
    f = line.split("\t")
    if part == 0:
        reqs.append(f)
    else:
        resps[f[0]] = f[1].split(",")[0]
for f in reqs:
    code = resps.get(f[3].split(",")[0], "-") if len(f) > 3 and f[3] else "-"
    print(f[1], f[2], code)
' > "$out"
done
