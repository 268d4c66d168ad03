//! The `process` target against real subprocesses: echo, hang, crash, flood, garbage frames,
//! and a stream process that dies and is restarted.

use std::path::Path;
use std::time::{Duration, Instant};

use corpora::{Case, CaseData, Message};
use harness::{Config, Loaded, Outcome, Output, Registry};

fn message(text: &str) -> Case {
    Case::new(CaseData::Message(Message {
        content_type: "text/plain".into(),
        input: text.as_bytes().to_vec().into(),
        output: None,
    }))
}

fn load(dir: &Path, keys: &str) -> Loaded {
    load_with(dir, 500, keys)
}

fn load_with(dir: &Path, timeout_ms: u64, keys: &str) -> Loaded {
    let toml = format!("[targets.t]\nkind = \"process\"\ntimeout_ms = {timeout_ms}\n{keys}\n");
    let cfg = Config::parse(&toml, &dir.join("replay.toml")).unwrap();
    cfg.load_target("t", &Registry::new()).unwrap()
}

fn bytes(o: Outcome) -> Vec<u8> {
    match o {
        Outcome::Output { output: Output::Bytes { data, .. } } => data.0,
        other => panic!("expected an output, got {other:?}"),
    }
}

#[test]
fn per_case_passes_input_kind_and_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(
        dir.path(),
        r#"command = ["sh", "-c", "printf '%s|%s|%s|' \"$REPLAY_CASE_KIND\" \"$REPLAY_CONTENT_TYPE\" \"$GREETING\"; cat"]
env = { GREETING = "hi" }"#,
    );
    assert_eq!(bytes(t.target.observe(&message("body"))), b"message|text/plain|hi|body");
}

#[test]
fn a_hung_process_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), r#"command = ["sleep", "30"]"#);
    let start = Instant::now();
    assert_eq!(t.target.observe(&message("x")), Outcome::Timeout { after_ms: 500 });
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_crash_keeps_its_status_signal_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), r#"command = ["sh", "-c", "echo 'it broke' >&2; exit 3"]"#);
    match t.target.observe(&message("x")) {
        Outcome::Crash { status, signal, stderr } => {
            assert_eq!((status, signal), (Some(3), None));
            assert_eq!(stderr.as_bytes(), b"it broke\n");
        }
        other => panic!("{other:?}"),
    }
    let t = load(dir.path(), r#"command = ["sh", "-c", "kill -SEGV $$"]"#);
    match t.target.observe(&message("x")) {
        Outcome::Crash { status, signal, .. } => assert_eq!((status, signal), (None, Some(11))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_flooding_process_is_killed_at_the_output_cap() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), "command = [\"yes\"]\nmax_output = 100000");
    let start = Instant::now();
    match t.target.observe(&message("x")) {
        Outcome::Exhausted { resource, .. } => assert_eq!(resource, "output"),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_missing_program_is_a_load_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[targets.t]\nkind = \"process\"\ncommand = [\"./no/such/prog\"]\n";
    let cfg = Config::parse(toml, &dir.path().join("replay.toml")).unwrap();
    let e = cfg.load_target("t", &Registry::new()).unwrap_err().to_string();
    assert!(e.contains("no/such/prog does not exist"), "{e}");
}

/// A stream-mode server in Python: answers each frame by `behaviour` of its data.
const STREAM: &str = r#"
import os, struct, sys, time
inp, out = sys.stdin.buffer, sys.stdout.buffer
served = 0
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    (n,) = struct.unpack('<I', head)
    body = inp.read(n)
    kind, ctlen = body[0], struct.unpack('<H', body[1:3])[0]
    ct, data = body[3:3 + ctlen], body[3 + ctlen:]
    served += 1
    if data == b'die':
        sys.stderr.write('dying on purpose\n'); sys.stderr.flush()
        os._exit(7)
    if data == b'hang':
        time.sleep(30)
    if data == b'garbage':
        out.write(b'\x02\x00\x00\x00\x00\x00'); out.flush(); continue
    if data == b'huge':
        out.write(struct.pack('<I', 1 << 30)); out.flush(); continue
    if data == b'refuse':
        msg = b'cannot do that'
        out.write(struct.pack('<IBH', 3 + 10 + len(msg), 1, 10) + b'text/plain' + msg); out.flush(); continue
    answer = b'%d:%s' % (os.getpid(), data)
    out.write(struct.pack('<IBH', 3 + len(ct) + len(answer), 0, len(ct)) + ct + answer)
    out.flush()
"#;

const STREAM_TIMEOUT_MS: u64 = 3000;

fn stream_target(dir: &Path) -> Loaded {
    std::fs::write(dir.join("stream.py"), STREAM).unwrap();
    // A restarted stream process answers its first case only after Python has started, which
    // on a loaded 2-core CI machine took more than 500 ms (seen once as a timeout on the case
    // after a replaced process): a timeout that startup always fits in.
    load_with(
        dir,
        STREAM_TIMEOUT_MS,
        "command = [\"python3\", \"stream.py\"]\nmode = \"stream\"\nconcurrency = 1\nmax_output = 1000000",
    )
}

fn answer(o: Outcome) -> (String, String) {
    let b = String::from_utf8(bytes(o)).unwrap();
    let (pid, data) = b.split_once(':').unwrap();
    (pid.to_string(), data.to_string())
}

#[test]
fn a_stream_process_is_kept_alive_between_cases() {
    let dir = tempfile::tempdir().unwrap();
    let t = stream_target(dir.path());
    let (pid1, d1) = answer(t.target.observe(&message("one")));
    let (pid2, d2) = answer(t.target.observe(&message("two")));
    assert_eq!((d1.as_str(), d2.as_str()), ("one", "two"));
    assert_eq!(pid1, pid2, "one process serves both cases");
    assert_eq!(t.target.observe(&message("refuse")), Outcome::error("cannot do that"));
    // A refusal is an answer: the process stays.
    assert_eq!(answer(t.target.observe(&message("three"))).0, pid1);
}

#[test]
fn a_stream_process_that_dies_is_a_crash_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let t = stream_target(dir.path());
    let (pid1, _) = answer(t.target.observe(&message("a")));
    match t.target.observe(&message("die")) {
        Outcome::Crash { status, stderr, .. } => {
            assert_eq!(status, Some(7));
            assert!(String::from_utf8_lossy(stderr.as_bytes()).contains("dying on purpose"));
        }
        other => panic!("{other:?}"),
    }
    let (pid2, d) = answer(t.target.observe(&message("b")));
    assert_eq!(d, "b");
    assert_ne!(pid1, pid2, "a new process after the crash");
}

#[test]
fn a_stream_process_that_hangs_garbles_or_floods_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let t = stream_target(dir.path());
    let (pid1, _) = answer(t.target.observe(&message("a")));
    assert_eq!(t.target.observe(&message("hang")), Outcome::Timeout { after_ms: STREAM_TIMEOUT_MS });
    let (pid2, _) = answer(t.target.observe(&message("b")));
    assert_ne!(pid1, pid2);
    match t.target.observe(&message("garbage")) {
        Outcome::Error { message } => assert!(message.contains("garbage frame"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (pid3, _) = answer(t.target.observe(&message("c")));
    assert_ne!(pid2, pid3);
    match t.target.observe(&message("huge")) {
        Outcome::Exhausted { resource, message } => {
            assert_eq!(resource, "output");
            assert!(message.contains("1073741824"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(answer(t.target.observe(&message("d"))).1, "d");
}

/// A stream server that takes `delay` seconds to start (heavy imports, a JVM) and then echoes.
fn slow_start_target(dir: &Path, timeout_ms: u64, startup: Option<u64>) -> Loaded {
    let script = STREAM.replace("served = 0", "served = 0\ntime.sleep(1.0)");
    std::fs::write(dir.join("slow.py"), script).unwrap();
    let startup = startup.map_or(String::new(), |ms| format!("\nstartup_timeout_ms = {ms}"));
    load_with(
        dir,
        timeout_ms,
        &format!("command = [\"python3\", \"slow.py\"]\nmode = \"stream\"\nconcurrency = 1{startup}"),
    )
}

#[test]
fn a_stream_process_start_up_is_not_charged_to_its_first_case() {
    let dir = tempfile::tempdir().unwrap();
    // 1 s to start, 300 ms per case: the first case fits only with the start-up allowance
    // (10 s by default), and the ones after it need no allowance.
    let t = slow_start_target(dir.path(), 300, None);
    let start = Instant::now();
    let (pid1, d1) = answer(t.target.observe(&message("one")));
    assert!(start.elapsed() >= Duration::from_millis(900), "the process did take its second");
    let (pid2, d2) = answer(t.target.observe(&message("two")));
    assert_eq!((d1.as_str(), d2.as_str(), pid1), ("one", "two", pid2));
    // Only the first case of a process gets it: a hang later is cut at the plain bound.
    assert_eq!(t.target.observe(&message("hang")), Outcome::Timeout { after_ms: 300 });
}

#[test]
fn with_no_start_up_allowance_a_slow_start_is_a_timeout_and_the_key_is_stream_only() {
    let dir = tempfile::tempdir().unwrap();
    let t = slow_start_target(dir.path(), 300, Some(0));
    assert_eq!(t.target.observe(&message("one")), Outcome::Timeout { after_ms: 300 });
    // A per-case process starts within `timeout_ms`: the key is refused there, by name.
    let toml = "[targets.t]\nkind = \"process\"\ncommand = [\"cat\"]\nstartup_timeout_ms = 5000\n";
    let cfg = Config::parse(toml, &dir.path().join("replay.toml")).unwrap();
    let e = cfg.load_target("t", &Registry::new()).unwrap_err().to_string();
    assert!(e.contains("startup_timeout_ms") && e.contains("stream"), "{e}");
}
