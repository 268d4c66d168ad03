//! `replay record live` end to end: in a private network namespace (`unshare -n`, so nothing
//! leaves this machine), a capture on its loopback records real HTTP traffic between Python's
//! own server and client, and stops cleanly on SIGINT.

use std::path::Path;
use std::process::Command;

#[test]
fn live_capture_on_a_private_loopback_records_http_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("live");
    let summary = tmp.path().join("summary.txt");
    let script = format!(
        r#"
set -eu
ip link set lo up
"{replay}" record live --interface lo --filter "tcp port 18080" --duration 20 --out "{corpus}" > "{summary}" 2>&1 &
R=$!
sleep 1.5
python3 - <<'PY'
import http.server, threading, http.client
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("hello " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 18080), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
for conn_no in range(2):
    c = http.client.HTTPConnection("127.0.0.1", 18080, timeout=5)
    for i in range(3):
        c.request("GET", f"/c{{conn_no}}/r{{i}}")
        assert c.getresponse().read() == f"hello /c{{conn_no}}/r{{i}}".encode()
    c.close()
srv.shutdown()
PY
sleep 1
kill -INT $R
wait $R
"#,
        replay = env!("CARGO_BIN_EXE_replay"),
        corpus = corpus.display(),
        summary = summary.display(),
    );
    let out = Command::new("unshare").args(["-n", "sh", "-c", &script]).output().expect("run unshare");
    let summary_text = std::fs::read_to_string(&summary).unwrap_or_default();
    assert!(
        out.status.success(),
        "live capture failed (needs root for unshare -n, ip, python3): {}\n{}\n{summary_text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary_text.contains("stopped by interrupted"), "{summary_text}");
    assert!(summary_text.contains("dropped: 0 by the kernel"), "{summary_text}");
    let c = corpora::Corpus::open(Path::new(&corpus)).unwrap();
    let mut targets: Vec<String> = c
        .cases()
        .filter_map(|c| match c.unwrap().data() {
            corpora::CaseData::Http(x) => {
                Some(format!("{} {}", x.request.target, x.response.as_ref().map_or(0, |r| r.status)))
            }
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        ["/c0/r0 200", "/c0/r1 200", "/c0/r2 200", "/c1/r0 200", "/c1/r1 200", "/c1/r2 200"],
        "{summary_text}"
    );
    let live = &c.manifest().recordings[0]["live"];
    assert_eq!(live["interface"], "lo");
    assert_eq!(live["stopped_by"], "interrupted");
}
