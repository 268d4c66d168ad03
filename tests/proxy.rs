//! The recording proxy and its playback as a user runs them: `replay record proxy` as a
//! process (stopped by SIGINT, or killed with `kill -9` under load), `replay serve` answering
//! the same client traffic, `replay diff --misses`; and redaction in `replay record pcap`.

#[path = "../recorders/tests/support/upstream.rs"]
mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corpora::{CaseData, Corpus};
use replay_cli::exit_codes;
use upstream::{client, runtime, send};

const KEY: &str = "sk-canaryCANARYcanary0123456789abcdefXYZ";
const REDACT_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn replay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_replay"));
    c.env("REPLAY_REDACT_KEY", REDACT_KEY).env_remove("REPLAY_CORPUS").env_remove("REPLAY_PROXY_TOKEN");
    c
}

/// Starts a long-running `replay` command and reads the address from its first line
/// (`listening on [http://]ADDR ...`).
fn spawn(args: &[&str]) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut child = replay().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if !line.starts_with("listening on ") {
        let _ = child.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        panic!("replay {args:?} did not start: first line {line:?}, stderr: {err}");
    }
    let addr = line
        .strip_prefix("listening on ")
        .unwrap()
        .trim_start_matches("http://")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (child, addr, out)
}

/// `replay record proxy` on a free loopback port in front of `upstream`, recording into `out`.
fn spawn_proxy(
    upstream: &str,
    out: &str,
    extra: &[&str],
) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut args = vec!["record", "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream, "--out", out];
    args.extend_from_slice(extra);
    spawn(&args)
}

fn signal(child: &Child, sig: &str) {
    // The shell's own `kill`, so that no procps package is needed.
    let ok = Command::new("sh").args(["-c", &format!("kill {sig} {}", child.id())]).status().unwrap();
    assert!(ok.success());
}

fn rest(mut out: BufReader<std::process::ChildStdout>) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut out, &mut s).unwrap();
    s
}

#[test]
fn recorded_traffic_plays_back_the_same_and_a_changed_request_is_a_reported_miss() {
    let up = upstream::start(false, KEY);
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("copilot");
    let (mut proxy, addr, out) = spawn_proxy(&up.url, s(&corpus), &[]);
    let rt = runtime();
    let bearer = format!("Bearer {KEY}");
    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    let completion =
        |n: u32, prompt: &str| format!("{{\"n\":{n},\"prompt\":\"{prompt}\",\"key\":\"{KEY}\"}}");
    // What the client sees through the recording proxy...
    // (HTTP/2 for the second request, through the proxy and through playback.)
    let traffic = |base: String, h2: bool| {
        let c1 = completion(1, "fn main() {");
        let c2 = completion(2, "def f():");
        async move {
            let c = client(false);
            let a = send(&c, "POST", &format!("{base}/v1/chat/completions"), &headers, c1).await.unwrap();
            let b = send(&client(h2), "POST", &format!("{base}/v1/chat/completions"), &headers, c2)
                .await
                .unwrap();
            let st =
                send(&c, "POST", &format!("{base}/v1/stream"), &headers, "{\"stream\":true}").await.unwrap();
            [a, b, st]
        }
    };
    let recorded = rt.block_on(traffic(format!("http://{addr}"), true));
    signal(&proxy, "-INT");
    assert_eq!(proxy.wait().unwrap().code(), Some(exit_codes::OK));
    let summary = rest(out);
    assert!(summary.contains("recorded 3 exchanges"), "{summary}");
    let verify = replay().args(["corpus", "verify", "-c", s(&corpus)]).output().unwrap();
    assert_eq!(verify.status.code(), Some(exit_codes::OK), "{}", String::from_utf8_lossy(&verify.stdout));
    let manifest = std::fs::read_to_string(corpus.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"recorder\": \"proxy\"") || manifest.contains("\"recorder\":\"proxy\""),
        "{manifest}"
    );

    // ...is what it sees from the played-back upstream, without the real one.
    let misses = tmp.path().join("misses.jsonl");
    let (mut serve, saddr, _o) =
        spawn(&["serve", "--corpus", s(&corpus), "--listen", "127.0.0.1:0", "--misses", s(&misses)]);
    drop(up);
    let played = rt.block_on(traffic(format!("http://{saddr}"), true));
    for (r, p) in recorded.iter().zip(&played) {
        assert_eq!((r.status, &r.body), (p.status, &p.body), "{}", String::from_utf8_lossy(&p.body));
    }
    assert_eq!(played[0].headers["x-replay-playback"], "hit");
    assert_eq!(played[1].headers["x-replay-playback"], "hit", "the HTTP/2 client is answered too");
    // The stream comes back at its recorded pace: events spread over the upstream's gaps.
    let (rec, play) = (&recorded[2].frames, &played[2].frames);
    assert!(play.len() > 2, "streamed in several frames: {play:?}");
    let span = |f: &[(Duration, usize)]| f.last().unwrap().0 - f.first().unwrap().0;
    let expected = upstream::SSE_GAP * (upstream::SSE_EVENTS as u32 - 1);
    assert!(span(rec) >= expected * 8 / 10, "recorded {rec:?}");
    assert!(
        span(play) >= expected * 7 / 10 && span(play) < expected * 3,
        "played {play:?} vs recorded {rec:?}"
    );
    // The new build sends the model a different prompt: a 502 naming the closest recording.
    let changed = rt
        .block_on(send(
            &client(false),
            "POST",
            &format!("http://{saddr}/v1/chat/completions"),
            &headers,
            completion(1, "fn main() { // new serializer"),
        ))
        .unwrap();
    signal(&serve, "-TERM");
    let _ = serve.wait();
    assert_eq!(changed.status, 502);
    let why: serde_json::Value = serde_json::from_slice(&changed.body).unwrap();
    assert_eq!(why["miss"]["differences"][0]["path"], "$.prompt", "{why}");
    assert!(why["miss"]["closest_case"].is_string());
    let lines = std::fs::read_to_string(&misses).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&misses).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the misses file holds request bodies: owner only, like the corpus");
    }
    assert!(!lines.contains(KEY), "the misses file is redacted like the corpus: {lines}");
    // `replay diff --misses` reports it as a cluster of its own.
    let out = replay()
        .args(["diff", "--a", "local", "--b", "local", "--limit", "3", "--json", "--misses", s(&misses)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sigs: Vec<String> = report["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["signature"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect();
    assert_eq!(sigs, ["changed $.upstream_request.body.prompt"], "{report}");

    // `--speed 2` plays the stream in about half the recorded time; `--fast` at once.
    let stream_span = |extra: &[&str]| {
        let mut args = vec!["serve", "--corpus", s(&corpus), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (mut serve, saddr, _o) = spawn(&args);
        let got = rt
            .block_on(send(
                &client(false),
                "POST",
                &format!("http://{saddr}/v1/stream"),
                &headers,
                "{\"stream\":true}",
            ))
            .unwrap();
        signal(&serve, "-TERM");
        let _ = serve.wait();
        assert_eq!(got.headers["x-replay-playback"], "hit");
        span(&got.frames)
    };
    let twice = stream_span(&["--speed", "2"]);
    assert!(twice >= expected * 4 / 10 && twice < expected * 8 / 10, "--speed 2: {twice:?} of {expected:?}");
    let fast = stream_span(&["--fast"]);
    assert!(fast < expected / 4, "--fast: {fast:?}");
}

/// Playback matches a request whose body the client compressed (the recording keeps it
/// decodable, playback decodes it too), and a request with a key in its query string (both
/// sides redact the target the same way).
#[test]
fn playback_matches_compressed_request_bodies_and_redacted_query_keys() {
    use std::io::Write;
    let up = upstream::start(false, KEY);
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("gz");
    let (mut proxy, addr, _out) = spawn_proxy(&up.url, s(&corpus), &[]);
    let rt = runtime();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"n\":1,\"prompt\":\"compressed\"}").unwrap();
    let gz = gz.finish().unwrap();
    let headers = [("content-type", "application/json"), ("content-encoding", "gzip")];
    let google = "AIzaSyA0123456789abcdefghijklmnopqrstu";
    let traffic = |base: String| {
        let gz = gz.clone();
        rt.block_on(async move {
            let c = client(false);
            let a = send(&c, "POST", &format!("{base}/echo"), &headers, gz).await.unwrap();
            let b = send(&c, "POST", &format!("{base}/echo?key={google}"), &[], "{}").await.unwrap();
            (a, b)
        })
    };
    let (a, b) = traffic(format!("http://{addr}"));
    assert_eq!((a.status, b.status), (200, 200));
    signal(&proxy, "-INT");
    assert_eq!(proxy.wait().unwrap().code(), Some(exit_codes::OK));
    let stored: Vec<u8> = std::fs::read_dir(corpus.join("segments"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!stored.windows(google.len()).any(|w| w == google.as_bytes()), "the query key reached disk");

    let (mut serve, saddr, _o) = spawn(&["serve", "--corpus", s(&corpus), "--listen", "127.0.0.1:0"]);
    drop(up);
    let (pa, pb) = traffic(format!("http://{saddr}"));
    signal(&serve, "-TERM");
    let _ = serve.wait();
    assert_eq!(
        pa.headers.get("x-replay-playback").map(|v| v.to_str().unwrap()),
        Some("hit"),
        "{:?}",
        String::from_utf8_lossy(&pa.body)
    );
    assert_eq!(pa.body, a.body);
    assert_eq!(
        pb.headers.get("x-replay-playback").map(|v| v.to_str().unwrap()),
        Some("hit"),
        "{:?}",
        String::from_utf8_lossy(&pb.body)
    );
}

/// A model answers the same prompt differently from one call to the next. The proxy keeps every
/// answer to a request sent again byte for byte (as a numbered repeat, in this run and across
/// runs into the same corpus), and playback answers the repeats in recorded order, then the last
/// one again.
#[test]
fn repeated_identical_requests_are_all_recorded_and_answered_in_recorded_order() {
    let up = upstream::start(false, KEY);
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("repeats");
    let rt = runtime();
    // The same Host each time: the proxy listens on a new port each run, and the request as
    // recorded (what its id is made of) carries the Host the client sent.
    let headers = [("content-type", "application/json"), ("host", "copilot.example")];
    let same = "{\"n\":7,\"prompt\":\"same prompt\"}";
    let ask = |base: String, times: usize| {
        rt.block_on(async move {
            let c = client(false);
            let mut answers = Vec::new();
            for _ in 0..times {
                let r =
                    send(&c, "POST", &format!("{base}/v1/chat/completions"), &headers, same).await.unwrap();
                assert_eq!(r.status, 200);
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                answers.push(v["sample"].as_u64().unwrap());
            }
            answers
        })
    };
    // Two runs into the same corpus: 2 answers, then 1 more.
    let mut recorded = Vec::new();
    for (times, repeats) in [(2, 1), (1, 1)] {
        let (mut proxy, addr, out) = spawn_proxy(&up.url, s(&corpus), &[]);
        recorded.extend(ask(format!("http://{addr}"), times));
        signal(&proxy, "-INT");
        assert_eq!(proxy.wait().unwrap().code(), Some(exit_codes::OK));
        let summary = rest(out);
        assert!(
            summary.contains(&format!("recorded {times} exchanges"))
                && summary.contains(&format!("({repeats} repeats of a request recorded before")),
            "{summary}"
        );
    }
    assert_eq!(recorded, [0, 1, 2], "the upstream answered each call differently");
    let verify = replay().args(["corpus", "verify", "-c", s(&corpus)]).output().unwrap();
    assert_eq!(verify.status.code(), Some(exit_codes::OK), "{}", String::from_utf8_lossy(&verify.stdout));
    let repeats: Vec<u32> = Corpus::open(&corpus).unwrap().cases().map(|c| c.unwrap().repeat()).collect();
    assert_eq!(repeats, [0, 1, 2]);

    let (mut serve, saddr, _o) = spawn(&["serve", "--corpus", s(&corpus), "--listen", "127.0.0.1:0"]);
    drop(up);
    let played = ask(format!("http://{saddr}"), 4);
    signal(&serve, "-TERM");
    let _ = serve.wait();
    assert_eq!(played, [0, 1, 2, 2], "recorded order, then the last answer again");
}

/// Waits for a child to end by itself, at most `limit`; `None` if it did not.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn the_proxy_stops_by_itself_after_count_exchanges_or_duration() {
    let up = upstream::start(false, KEY);
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("counted");
    let (mut proxy, addr, out) = spawn_proxy(&up.url, s(&corpus), &["--count", "3"]);
    let rt = runtime();
    let c = client(false);
    for n in 0..3 {
        let got = rt
            .block_on(send(&c, "POST", &format!("http://{addr}/echo"), &[], format!("{{\"n\":{n}}}")))
            .unwrap();
        assert_eq!(got.status, 200);
    }
    let st = wait_for(&mut proxy, Duration::from_secs(15)).expect("stopped by itself after --count 3");
    assert_eq!(st.code(), Some(exit_codes::OK));
    let summary = rest(out);
    assert!(summary.contains("recorded 3 exchanges"), "{summary}");
    assert_eq!(Corpus::open(&corpus).unwrap().cases().count(), 3);

    // --duration: no traffic at all, and it still ends, with a valid (empty) corpus.
    let corpus = tmp.path().join("timed");
    let t0 = Instant::now();
    let (mut proxy, _addr, _out) = spawn_proxy(&up.url, s(&corpus), &["--duration", "0.5"]);
    let st = wait_for(&mut proxy, Duration::from_secs(15)).expect("stopped by itself after --duration");
    assert_eq!(st.code(), Some(exit_codes::OK));
    assert!(t0.elapsed() >= Duration::from_millis(500), "not before the duration: {:?}", t0.elapsed());
    let verify = replay().args(["corpus", "verify", "-c", s(&corpus)]).output().unwrap();
    assert_eq!(verify.status.code(), Some(exit_codes::OK), "{}", String::from_utf8_lossy(&verify.stdout));
    let bad = replay()
        .args(["record", "proxy", "--upstream", &up.url, "--out", s(&corpus), "--duration", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--duration"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn kill_9_under_load_loses_nothing_older_than_the_sync_interval() {
    let up = upstream::start(false, KEY);
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("c");
    let (mut proxy, addr, _out) = spawn_proxy(&up.url, s(&corpus), &["--sync-interval", "0.2"]);
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let (stop, done) = (stop.clone(), done.clone());
            rt.spawn(async move {
                let c = client(false);
                let url = format!("http://{addr}/v1/chat/completions");
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = t * 1_000_000 + k;
                    k += 1;
                    let body = format!("{{\"n\":{n},\"prompt\":\"load\"}}");
                    match send(&c, "POST", &url, &[("content-type", "application/json")], body).await {
                        Ok(g) if g.status == 200 => done.lock().unwrap().push((n, Instant::now())),
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    proxy.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = proxy.wait();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let done = done.lock().unwrap().clone();
    let c = Corpus::open(&corpus).expect("a killed recording reopens");
    let mut survived = std::collections::HashSet::new();
    for case in c.cases() {
        let case = case.unwrap();
        let CaseData::Http(x) = case.data() else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(x.request.body.as_bytes()).unwrap();
        survived.insert(v["n"].as_u64().unwrap());
    }
    let succeeded: std::collections::HashSet<u64> = done.iter().map(|(n, _)| *n).collect();
    // Everything answered well before the kill (sync interval 0.2 s + 0.3 s for the case to
    // reach the writer on a busy 2-core machine) is on disk...
    let old: Vec<u64> = done
        .iter()
        .filter(|(_, at)| killed.duration_since(*at) > Duration::from_millis(500))
        .map(|(n, _)| *n)
        .collect();
    let lost: Vec<&u64> = old.iter().filter(|n| !survived.contains(n)).collect();
    assert!(old.len() > 100, "too little load to judge: {} old exchanges", old.len());
    assert!(
        lost.is_empty(),
        "{} of {} exchanges older than the sync interval were lost",
        lost.len(),
        old.len()
    );
    // ...and nothing is there that no client sent (a request in flight at the kill may be).
    assert!(survived.iter().all(|n| n % 1_000_000 < 100_000), "invented cases");
    eprintln!(
        "kill -9: {} exchanges answered, {} on disk after the kill ({} answered in the last 0.5 s)",
        succeeded.len(),
        survived.len(),
        done.len() - old.len()
    );
}

#[test]
fn the_cli_refuses_an_open_listen_and_a_bad_redact_rule_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = replay()
        .args(["record", "proxy", "--listen", "0.0.0.0:0", "--upstream", "http://127.0.0.1:9", "--out"])
        .arg(tmp.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth-token"), "{err}");
    assert!(!tmp.path().join("c").exists(), "nothing is created when the proxy cannot start");
    let cfg = tmp.path().join("replay.toml");
    std::fs::write(&cfg, "[redact]\nheaders = [\"x-session\"]\npatterns = [\"tok_[a-z]+\", \"(unclosed\"]\n")
        .unwrap();
    let out = replay()
        .args(["--config", s(&cfg), "record", "proxy", "--upstream", "http://127.0.0.1:9", "--out"])
        .arg(tmp.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3: [redact]", cfg.display())) && err.contains("(unclosed"), "{err}");
}

#[test]
fn record_pcap_redacts_by_default_and_keeps_everything_with_no_redact() {
    let dir = match std::env::var_os("REPLAY_CAPTURES") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            eprintln!("NOT RUN: needs REPLAY_CAPTURES (set by .ci/run to ../shared/captures)");
            return;
        }
    };
    let capture = dir.join("zeek/http_cooper-grill-dvwa.pcapng");
    let session = b"456ec6eeb2fa0f99ed26aedc5eb25698"; // the capture's PHPSESSID cookie
    let tmp = tempfile::tempdir().unwrap();
    let holds = |c: &Path| {
        std::fs::read_dir(c.join("segments"))
            .unwrap()
            .any(|e| std::fs::read(e.unwrap().path()).unwrap().windows(session.len()).any(|w| w == session))
    };
    let red = tmp.path().join("red");
    let out = replay().args(["record", "pcap", s(&capture), "--out", s(&red)]).output().unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let redacted: u64 = text
        .split("; ")
        .find_map(|p| p.strip_suffix(" redacted\n").or_else(|| p.split_once(" redacted").map(|x| x.0)))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no redacted count in {text}"));
    assert!(redacted > 0, "{text}");
    assert!(!holds(&red), "the session cookie reached disk");
    let raw = tmp.path().join("raw");
    let out =
        replay().args(["record", "pcap", "--no-redact", s(&capture), "--out", s(&raw)]).output().unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::OK));
    assert!(holds(&raw), "--no-redact keeps the capture as it was");
    // Same exchanges either way: redaction changes values, never what is kept.
    let count = |c: &Path| Corpus::open(c).unwrap().manifest().counts.records;
    assert_eq!(count(&red), count(&raw));
}
