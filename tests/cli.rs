//! End-to-end tests of the `replay` binary: what a user types, what they see, and the exit code.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use corpora::{Case, CaseData, CorpusWriter, Message, WriterOptions};
use replay_cli::exit_codes;

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .env_remove("REPLAY_CORPUS")
        .stdin(Stdio::null())
        .output()
        .expect("run replay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/samples/demo")
}

/// A private copy of the sample corpus (tests must not touch the checked-in one).
fn sample_copy(tmp: &Path) -> PathBuf {
    let dir = tmp.join("demo");
    fs::create_dir_all(dir.join("segments")).unwrap();
    for f in ["manifest.json", "index.bin", "segments/00000001.seg"] {
        fs::copy(sample().join(f), dir.join(f)).unwrap();
    }
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn stats_on_the_bundled_sample() {
    let out = replay(&["corpus", "stats", "--corpus", s(&sample())]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |name: &str| {
        stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&name))
            .unwrap_or_else(|| panic!("no {name} row in {stdout}"))
    };
    assert_eq!(row("cases")[1], "3360");
    assert_eq!(row("packet")[1], "3000");
    assert_eq!(row("http")[1], "60");
    assert!(stdout.contains("no_response 1"), "{stdout}");
    // Not a terminal: no progress bar.
    assert!(!text(&out.stderr).contains('\r'));

    let out = replay(&["corpus", "stats", "--json", "-c", s(&sample())]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cases"], 3360);
    assert_eq!(v["by_kind"]["http"]["cases"], 60);
    assert_eq!(v["by_kind"]["http"]["with_output"], 59);
    assert_eq!(v["damaged"], 0);
}

#[test]
fn export_import_export_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("a.jsonl");
    let out = replay(&["corpus", "export", "-c", s(&sample()), "--out", s(&first)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o600);
    let lines = fs::read_to_string(&first).unwrap();
    assert_eq!(lines.lines().count(), 3360);
    // Every line is one JSON object jq could read; text bodies are text.
    let v: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(v["data"]["message"]["input"].as_str().unwrap().starts_with("{\"file\""));

    let copy = tmp.path().join("copy");
    let out = replay(&["corpus", "import", "-c", s(&copy), s(&first)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("imported 3360 new cases"), "{}", text(&out.stderr));
    let out = replay(&["corpus", "export", "-c", s(&copy)]);
    assert_eq!(text(&out.stdout), lines);

    // Importing again adds nothing.
    let out = replay(&["corpus", "import", "-c", s(&copy), s(&first)]);
    assert!(
        text(&out.stderr).contains("imported 0 new cases")
            && text(&out.stderr).contains("3360 already present")
    );
}

#[test]
fn bad_jsonl_lines_are_named_and_good_lines_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("in.jsonl");
    fs::write(
        &file,
        concat!(
            "{\"data\":{\"message\":{\"content_type\":\"text/plain\",\"input\":\"one\"}}}\n",
            "\n",
            "{\"data\":{\"message\":{\"content_type\":\"text/plain\",\"input\":{\"base64\":\"!!\"}}}}\n",
            "{\"data\":{\"mesage\":{}}}\n",
            "{\"data\":{\"message\":{\"content_type\":\"text/plain\",\"input\":\"two\"}}}\n",
        ),
    )
    .unwrap();
    let dir = tmp.path().join("c");
    let out = replay(&["corpus", "import", "-c", s(&dir), s(&file)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:3:", file.display())) && err.contains("base64"), "{err}");
    assert!(err.contains(&format!("{}:4:", file.display())) && err.contains("mesage"), "{err}");
    assert!(err.contains("imported 2 new cases") && err.contains("2 bad lines"), "{err}");
    let out = replay(&["corpus", "ls", "-c", s(&dir)]);
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

#[test]
fn user_errors_exit_2_and_name_what_and_where() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = replay(&["corpus", "stats", "-c", s(&missing)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stderr).contains(&format!("no corpus at {}", missing.display())));

    let out = replay(&["corpus", "stats"]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stderr).contains("--corpus"));

    let out = replay(&["corpus", "frobnicate"]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert_eq!(replay(&["--help"]).status.code(), Some(exit_codes::OK));

    // A corpus of a newer format version.
    let dir = sample_copy(tmp.path());
    let m = fs::read_to_string(dir.join("manifest.json")).unwrap();
    fs::write(dir.join("manifest.json"), m.replace("\"format_version\": 1", "\"format_version\": 2"))
        .unwrap();
    let out = replay(&["corpus", "ls", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = text(&out.stderr);
    assert!(err.contains("manifest.json") && err.contains("format version 2"), "{err}");
    // Nothing was changed.
    assert!(fs::read_to_string(dir.join("manifest.json")).unwrap().contains("\"format_version\": 2"));
}

#[test]
fn a_corrupted_index_is_reported_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_copy(tmp.path());
    let mut idx = fs::read(dir.join("index.bin")).unwrap();
    idx[100] ^= 0x40;
    fs::write(dir.join("index.bin"), &idx).unwrap();
    let export = replay(&["corpus", "export", "-c", s(&sample())]);
    let first_id: String = text(&export.stdout).lines().nth(7).unwrap()[7..39].to_string();

    let out = replay(&["corpus", "show", &first_id[..10], "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = text(&out.stderr);
    assert!(
        err.contains("index.bin") && err.contains("checksum mismatch") && err.contains("rebuilt"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], first_id.as_str());

    let out = replay(&["corpus", "verify", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stdout).contains("index: DAMAGED"), "{}", text(&out.stdout));
    // compact rewrites the index; then verify is clean and every case is still there.
    let out = replay(&["corpus", "compact", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let out = replay(&["corpus", "verify", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stdout));
    let after = replay(&["corpus", "export", "-c", s(&dir)]);
    assert_eq!(after.stdout, export.stdout);
}

#[test]
fn a_corrupted_record_is_reported_with_its_offset_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_copy(tmp.path());
    let seg = dir.join("segments/00000001.seg");
    let mut bytes = fs::read(&seg).unwrap();
    bytes[5000] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    let out = replay(&["corpus", "stats", "--json", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = text(&out.stderr);
    assert!(err.contains("00000001.seg: corrupt record at offset"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cases"], 3359);
    assert_eq!(v["damaged"], 1);
    let out = replay(&["corpus", "verify", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stdout).contains("3359 good records"));
}

#[test]
fn a_second_writer_is_refused_naming_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut w = CorpusWriter::create(&dir, WriterOptions::default()).unwrap();
    w.append(&Case::new(CaseData::Message(Message {
        content_type: "text/plain".into(),
        input: "held".into(),
        output: None,
    })))
    .unwrap();
    let file = tmp.path().join("in.jsonl");
    fs::write(&file, "{\"data\":{\"message\":{\"content_type\":\"text/plain\",\"input\":\"x\"}}}\n").unwrap();
    let out = replay(&["corpus", "import", "-c", s(&dir), s(&file)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = text(&out.stderr);
    assert!(err.contains(&dir.join("lock").display().to_string()) && err.contains("locked"), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    w.close().unwrap();
    let out = replay(&["corpus", "import", "-c", s(&dir), s(&file)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    assert_eq!(text(&replay(&["corpus", "ls", "-c", s(&dir)]).stdout).lines().count(), 2);
}

#[test]
fn show_takes_a_unique_prefix() {
    let out = replay(&["corpus", "ls", "-c", s(&sample()), "--kind", "packet", "--limit", "1"]);
    let line = text(&out.stdout);
    assert_eq!(line.lines().count(), 1);
    assert!(line.contains("packet") && line.contains("udp 10."), "{line}");
    let prefix = &line[..8];
    let out = replay(&["corpus", "show", prefix, "-c", s(&sample())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with(prefix));
    assert_eq!(v["data"]["packet"]["link_type"], 1);

    let out = replay(&["corpus", "show", "0", "-c", s(&sample())]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let out = replay(&["corpus", "show", "ffffffffffff", "-c", s(&sample())]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stderr).contains("no case with id ffffffffffff"));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["corpus", "export", "-c", s(&sample())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("error"), "{}", text(&out.stderr));
}

#[test]
fn kill_9_during_import_loses_nothing_that_was_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.jsonl");
    let n = 20_000;
    let mut lines = String::with_capacity(n * 2100);
    for i in 0..n {
        let pad = format!("{i:08}").repeat(250);
        lines.push_str(&format!(
            "{{\"data\":{{\"message\":{{\"content_type\":\"text/plain\",\"input\":\"{i} {pad}\"}}}}}}\n"
        ));
    }
    fs::write(&file, lines).unwrap();
    let dir = tmp.path().join("c");
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["corpus", "import", "-q", "-c", s(&dir), s(&file)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a few MB are written, then kill without warning.
    let seg = dir.join("segments/00000001.seg");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs::metadata(&seg).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(std::time::Instant::now() < deadline, "import made no progress");
        if child.try_wait().unwrap().is_some() {
            break; // finished before we could kill it: still a valid (if weaker) run
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();

    // What survived reads without damage (a torn tail is not damage) ...
    let out = replay(&["corpus", "verify", "-c", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}{}", text(&out.stdout), text(&out.stderr));
    let survived = text(&replay(&["corpus", "ls", "-c", s(&dir)]).stdout).lines().count();
    assert!(survived > 0);
    // ... and importing again completes the corpus: every case exactly once.
    let out = replay(&["corpus", "import", "-c", s(&dir), s(&file)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("{survived} already present")), "{}", text(&out.stderr));
    let out = replay(&["corpus", "stats", "--json", "-c", s(&dir)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cases"], n);
    assert_eq!(replay(&["corpus", "verify", "-c", s(&dir)]).status.code(), Some(exit_codes::OK));
}

#[test]
fn record_pcap_from_stdin_and_a_damaged_file() {
    let Some(dir) = std::env::var_os("REPLAY_CAPTURES").map(PathBuf::from) else {
        eprintln!("NOT RUN: needs REPLAY_CAPTURES (set by .ci/run to ../shared/captures)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let capture = fs::read(dir.join("zeek/http_get.pcap")).unwrap();
    let out = tmp.path().join("c");
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["record", "pcap", "-", "--out", s(&out)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&capture).unwrap();
    }
    let res = child.wait_with_output().unwrap();
    assert_eq!(res.status.code(), Some(exit_codes::OK), "{}", text(&res.stderr));
    let summary = text(&res.stdout);
    assert!(summary.contains("exchanges") && summary.contains("packets"), "{summary}");
    // The bytes that came through the pipe (6,335: 6.2 KiB), not 0 for want of a file length.
    assert_eq!(capture.len(), 6335);
    assert!(summary.lines().next().unwrap().contains("(6.2 KiB, "), "{summary}");
    let ls = text(&replay(&["corpus", "ls", "-c", s(&out), "--kind", "http"]).stdout);
    assert!(ls.contains("GET /download/CHANGES.bro-aux.txt -> 200"), "{ls}");

    // The same capture cut inside its last packet: exit 2, the place named, the rest kept.
    let cut = tmp.path().join("cut.pcap");
    fs::write(&cut, &capture[..capture.len() - 20]).unwrap();
    let out2 = tmp.path().join("c2");
    let res = replay(&["record", "pcap", s(&cut), "--out", s(&out2)]);
    assert_eq!(res.status.code(), Some(exit_codes::INPUT_ERROR));
    let err = text(&res.stderr);
    assert!(
        err.contains("cut.pcap: offset") && err.contains("packet 14") && err.contains("truncated"),
        "{err}"
    );
    assert!(text(&res.stdout).contains("exchanges"), "the summary still prints");
    let ls = text(&replay(&["corpus", "ls", "-c", s(&out2), "--kind", "http"]).stdout);
    assert!(ls.contains("GET /download/CHANGES.bro-aux.txt"), "what came before is kept: {ls}");

    // An input that does not open is an error in the accounting, not the end of the run: the
    // inputs before and after it are recorded (audit finding: the cases before it were lost).
    let good = tmp.path().join("good.pcap");
    fs::write(&good, &capture).unwrap();
    let missing = tmp.path().join("missing.pcap");
    let out3 = tmp.path().join("c3");
    let res = replay(&["record", "pcap", s(&good), s(&missing), "--out", s(&out3)]);
    assert_eq!(res.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&res.stderr).contains("missing.pcap: cannot be read"), "{}", text(&res.stderr));
    let ls = text(&replay(&["corpus", "ls", "-c", s(&out3), "--kind", "http"]).stdout);
    assert!(ls.contains("GET /download/CHANGES.bro-aux.txt -> 200"), "{ls}");
    let stats = fs::read_to_string(out3.join("manifest.json")).unwrap();
    assert!(stats.contains("missing.pcap: cannot be read"), "the manifest's stats name it: {stats}");

    // A warning (records longer than a snap length of 20) names file, offset and packet too.
    let mut snapped = capture.clone();
    snapped[16..20].copy_from_slice(&20u32.to_le_bytes());
    let short = tmp.path().join("short.pcap");
    fs::write(&short, &snapped).unwrap();
    let res = replay(&["record", "pcap", s(&short), "--out", s(&tmp.path().join("c4"))]);
    assert_eq!(res.status.code(), Some(exit_codes::OK), "{}", text(&res.stderr));
    assert!(
        text(&res.stderr).contains("warning: ")
            && text(&res.stderr).contains("short.pcap: offset 24, packet 1: "),
        "{}",
        text(&res.stderr)
    );
}

fn replay_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .current_dir(dir)
        .env_remove("REPLAY_CORPUS")
        .stdin(Stdio::null())
        .output()
        .expect("run replay")
}

#[test]
fn run_saves_observations_and_summarises_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tmp.path().join("run");
    let out = replay_in(
        root,
        &["run", "--target", "local", "--out", s(&out_dir), "--filter", "kind=packet", "--limit", "50"],
    );
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ran 50 cases through local (native)") && stdout.contains("50 output"),
        "{stdout}"
    );
    assert!(stdout.contains("selected 50 of"), "{stdout}");
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["content"], "observations");
    assert_eq!(m["run"]["target"], "local");
    assert_eq!(m["run"]["outcomes"]["output"], 50);
    assert_eq!(m["counts"]["by_kind"]["observation"], 50);
    // The run directory verifies like a corpus.
    let out = replay(&["corpus", "verify", "-c", s(&out_dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}{}", text(&out.stdout), text(&out.stderr));
    // And is never overwritten.
    let out = replay_in(root, &["run", "-t", "local", "-o", s(&out_dir), "--limit", "1"]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(
        text(&out.stderr).contains("not empty") || text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn targets_and_run_name_configuration_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = replay_in(tmp.path(), &["targets"]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stderr).contains("no replay.toml in the working directory"), "{}", text(&out.stderr));

    let cfg = tmp.path().join("replay.toml");
    fs::write(
        &cfg,
        "[targets.a]\nkind = \"recorded\"\n\n[targets.b]\nkind = \"wasm\"\nmodule = \"missing.wasm\"\n",
    )
    .unwrap();
    let out = replay_in(tmp.path(), &["targets"]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("a ") && l.contains(" ok ")), "{stdout}");
    assert!(stdout.contains("cannot read module") && stdout.contains("replay.toml:4"), "{stdout}");

    let out = replay_in(tmp.path(), &["run", "-t", "zz", "-o", "r", "-c", s(&sample())]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(
        text(&out.stderr).contains("no target named \"zz\"") && text(&out.stderr).contains("defined: a, b")
    );

    fs::write(&cfg, "[targets.a]\nkind = \"recorded\"\ntimeout = 5\n").unwrap();
    let out = replay_in(tmp.path(), &["targets"]);
    assert!(
        text(&out.stderr).contains("replay.toml:3") && text(&out.stderr).contains("unknown field `timeout`"),
        "{}",
        text(&out.stderr)
    );

    let out = replay(&["--config", s(&tmp.path().join("nope.toml")), "targets"]);
    assert!(text(&out.stderr).contains("nope.toml"), "{}", text(&out.stderr));
    let out = replay_in(root_dir(), &["run", "-t", "local", "-o", "x", "--shard", "3/2"]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(text(&out.stderr).contains("K must be between 1 and N"), "{}", text(&out.stderr));
}

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn diff_finds_the_demo_edge_bug_as_one_cluster() {
    let out = replay_in(root_dir(), &["diff", "--a", "local", "--b", "prod-wasm"]);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("3360 cases: 2812 same, 548 different, 0 inconclusive"), "{stdout}");
    assert!(stdout.contains("1 cluster:"), "{stdout}");
    assert!(
        stdout.contains("changed $.payload.fnv1a64") && stdout.contains("changed $.payload.head"),
        "{stdout}"
    );
    assert!(stdout.contains("reproduce: replay show"), "{stdout}");

    // The same as JSON, and ignoring the payload leaves nothing.
    let out = replay_in(root_dir(), &["diff", "--a", "local", "--b", "prod-wasm", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clusters"].as_array().unwrap().len(), 1);
    assert_eq!(r["clusters"][0]["count"], 548);
    assert_eq!(
        r["clusters"][0]["signature"],
        serde_json::json!(["changed $.payload.fnv1a64", "changed $.payload.head"])
    );
    let out = replay_in(
        root_dir(),
        &["diff", "--a", "local", "--b", "prod-wasm", "--ignore", "$.payload", "--ignore", "$.nothing"],
    );
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("3360 same, 0 different"), "{stdout}");
    assert!(stdout.contains("ignore rule $.nothing (--ignore) changed nothing"), "{stdout}");
    assert!(!stdout.contains("rule $.payload "), "{stdout}");
}

#[test]
fn diff_of_the_serializers_shows_two_clusters_and_saved_runs_diff_like_live_ones() {
    let out = replay_in(root_dir(), &["diff", "--a", "serializer-v1", "--b", "serializer-v2", "--json"]);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sigs: Vec<&serde_json::Value> =
        r["clusters"].as_array().unwrap().iter().map(|c| &c["signature"]).collect();
    assert_eq!(
        sigs,
        [
            &serde_json::json!(["removed $.metadata"]),
            &serde_json::json!(["changed $.messages[*].content", "removed $.metadata"])
        ]
    );

    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (t, dir) in [("local", &a), ("prod-wasm", &b)] {
        let out = replay_in(root_dir(), &["run", "-t", t, "-o", s(dir), "--filter", "kind=packet"]);
        assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    }
    let out =
        replay_in(root_dir(), &["diff", "--a", s(&a), "--b", s(&b), "--filter", "kind=packet", "--json"]);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cases"], 3000);
    assert_eq!(r["clusters"][0]["count"], 548);
    // A saved run against a live target.
    let out = replay_in(root_dir(), &["diff", "--a", s(&a), "--b", "local", "--filter", "kind=packet"]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stdout));
    // A damaged index.bin in a saved run: named in a warning, and the run is read from its
    // segments instead, to the same answer.
    let index = a.join("index.bin");
    let mut bytes = std::fs::read(&index).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&index, &bytes).unwrap();
    let out =
        replay_in(root_dir(), &["diff", "--a", s(&a), "--b", s(&b), "--filter", "kind=packet", "--json"]);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
    let warned = text(&out.stderr);
    assert!(warned.contains("warning: saved run") && warned.contains("index.bin"), "{warned}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cases"], 3000);
    assert_eq!(r["clusters"][0]["count"], 548);
}

#[test]
fn show_runs_one_case_through_a_target() {
    let out = replay_in(root_dir(), &["diff", "--a", "local", "--b", "prod-wasm", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = r["clusters"][0]["examples"][0]["case"].as_str().unwrap().to_string();
    let out = replay_in(root_dir(), &["show", &id[..10], "--target", "prod-wasm"]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["case"], id);
    assert_eq!(v["decoded"]["format"], "json");
    assert!(v["decoded"]["value"]["payload"]["len"].as_u64().unwrap() > 1500);
}

/// A replay.toml with two per-case process targets that stamp each answer with the time
/// (noise), B also adding a field (a real difference).
fn noisy_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("replay.toml");
    let stamp = r#"printf '{"t":%s,"n":%s%s}' "$(date +%s%N)" "$(wc -c | tr -d ' ')" "$EXTRA""#;
    fs::write(
        &cfg,
        format!(
            "corpus = {:?}\n\n[targets.a]\nkind = \"process\"\ncommand = [\"sh\", \"-c\", {stamp:?}]\noutput_content_type = \"application/json\"\n\n\
             [targets.b]\nkind = \"process\"\ncommand = [\"sh\", \"-c\", {stamp:?}]\noutput_content_type = \"application/json\"\nenv = {{ EXTRA = ',\"v\":2' }}\n",
            s(&sample())
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn noise_is_learned_subtracted_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = noisy_config(tmp.path());
    let args = [
        "--config",
        s(&cfg),
        "diff",
        "--a",
        "a",
        "--b",
        "b",
        "--filter",
        "kind=message",
        "--limit",
        "8",
        "--json",
    ];
    // Without noise cancellation the timestamp is part of every difference.
    let out = replay(&args);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clusters"][0]["signature"], serde_json::json!(["added $.v", "changed $.t"]), "{r}");
    // With it, the timestamp is noise, reported separately, and the real difference remains.
    let mut noisy = args.to_vec();
    noisy.push("--noise");
    let out = replay(&noisy);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clusters"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["clusters"][0]["signature"], serde_json::json!(["added $.v"]));
    assert_eq!(r["clusters"][0]["count"], 8);
    let noise = r["noise"].as_array().unwrap();
    assert!(
        noise.iter().any(|n| n["signature"] == "changed $.t" && n["side"] == "a" && n["cases"] == 8),
        "{r}"
    );

    // `replay noise learn` proposes the rule for review.
    let rules = tmp.path().join("noise.toml");
    let out = replay(&[
        "--config",
        s(&cfg),
        "noise",
        "learn",
        "--a",
        "a",
        "--filter",
        "kind=message",
        "--limit",
        "8",
        "-o",
        s(&rules),
    ]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let proposed = fs::read_to_string(&rules).unwrap();
    assert!(proposed.contains("\"$.t\",  # differed in 8 of 8 cases (a)"), "{proposed}");
    // The proposal is valid [diff] TOML: with it appended, the timestamp is ignored.
    let mut text_cfg = fs::read_to_string(&cfg).unwrap();
    text_cfg.push('\n');
    text_cfg.push_str(&proposed);
    fs::write(&cfg, text_cfg).unwrap();
    let out = replay(&args);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clusters"][0]["signature"], serde_json::json!(["added $.v"]), "{r}");
}

/// The HTML report opened in headless Chromium (Debian's `chromium`, which `.ci/run`
/// installs): the page shows the counts and cluster table, and a cluster expands.
#[test]
fn the_html_report_shows_its_clusters_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("report.html");
    let out = replay_in(
        root_dir(),
        &[
            "diff",
            "--a",
            "local",
            "--b",
            "prod-wasm",
            "--html",
            s(&page),
            "--junit",
            s(&tmp.path().join("j.xml")),
            "--markdown",
            s(&tmp.path().join("r.md")),
        ],
    );
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
    let html = fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "the page must not load anything");
    assert!(fs::read_to_string(tmp.path().join("r.md")).unwrap().contains("| 1 | 548 | 16.3% |"));
    assert!(fs::read_to_string(tmp.path().join("j.xml")).unwrap().contains("tests=\"1\" failures=\"1\""));

    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("this test needs Chromium: apt-get install chromium (.ci/run installs it)");
    let dump = |url: String| {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=2000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium failed: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let url = format!("file://{}", page.display());
    let dom = dump(url.clone());
    assert!(dom.contains("<span id=\"different\">548</span>"), "{dom}");
    assert!(dom.contains("<td class=\"num count\">548</td>"), "{dom}");
    assert!(dom.contains("<details id=\"cluster-1\">"), "closed until asked: {dom}");
    // Following a link to the cluster expands it: the page's own script ran in the browser.
    let dom = dump(format!("{url}#cluster-1"));
    assert!(dom.contains("<details id=\"cluster-1\" open=\"\">"), "{dom}");
    assert!(dom.contains("$.payload.fnv1a64"), "{dom}");
}

#[test]
fn shard_reports_merge_into_exactly_the_unsharded_report() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = |extra: &[&str]| {
        // --verbose: every differing case is in the report, so equality is case for case.
        let mut args = vec!["diff", "--a", "serializer-v1", "--b", "serializer-v2", "--json", "--verbose"];
        args.extend_from_slice(extra);
        let out = replay_in(root_dir(), &args);
        assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
        out.stdout
    };
    let whole: serde_json::Value = serde_json::from_slice(&diff(&[])).unwrap();
    let mut files = Vec::new();
    for k in 1..=3 {
        let f = tmp.path().join(format!("shard-{k}.json"));
        fs::write(&f, diff(&["--shard", &format!("{k}/3")])).unwrap();
        files.push(f);
    }
    let mut args = vec!["report", "merge", "--json"];
    args.extend(files.iter().map(|f| s(f)));
    let out = replay(&args);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES), "{}", text(&out.stderr));
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(merged["verbose"].as_array().unwrap().len(), 360);
    assert_eq!(merged, whole);
    // Reports of different runs do not merge.
    let other = tmp.path().join("other.json");
    let out = replay_in(root_dir(), &["diff", "--a", "local", "--b", "prod-wasm", "--json"]);
    fs::write(&other, out.stdout).unwrap();
    let out = replay(&["report", "merge", s(&files[0]), s(&other)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
    assert!(
        text(&out.stderr).contains("report 2 is not a shard of the same run: side a differs"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn review_accepts_and_rejects_cluster_by_cluster_and_accept_takes_all() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scenarios");
    fs::create_dir_all(&dir).unwrap();
    let scenario = format!(
        "corpus = {:?}\nconfig = {:?}\na = \"local\"\nb = \"prod-wasm\"\nexpect = \"baseline\"\nbaseline = \"edge.baseline.toml\"\n",
        sample(),
        root_dir().join("replay.toml")
    );
    fs::write(dir.join("edge.toml"), scenario).unwrap();
    let old = "[[accepted]]\nsignature = [\"removed $.old\"]\nnote = \"was accepted\"\n";
    let pending = "[[accepted]]\nsignature = [\"changed $.payload.fnv1a64\", \"changed $.payload.head\"]\ncases = 548\n\n\
                   [[accepted]]\nsignature = [\"added $.other\"]\ncases = 3\n";
    fs::write(dir.join("edge.baseline.toml"), old).unwrap();
    fs::write(dir.join("edge.baseline.toml.pending"), pending).unwrap();

    // Accept the first new cluster, reject the second, keep the vanished one.
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["review", "--dir", s(&dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"y\nn\nn\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("NEW cluster, 548 cases: changed $.payload.fnv1a64; changed $.payload.head"),
        "{stdout}"
    );
    assert!(stdout.contains("VANISHED cluster: removed $.old"), "{stdout}");
    let b = harness::scenario::read_baseline(&dir.join("edge.baseline.toml")).unwrap();
    let sigs: Vec<String> = b.accepted.iter().map(|a| a.signature.join("; ")).collect();
    assert_eq!(sigs, ["removed $.old", "changed $.payload.fnv1a64; changed $.payload.head"]);
    assert_eq!(b.accepted[0].note, "was accepted");
    assert!(!dir.join("edge.baseline.toml.pending").exists());

    // `replay accept` takes a pending baseline as it is.
    fs::write(dir.join("edge.baseline.toml.pending"), pending).unwrap();
    let out = replay(&["accept", "--dir", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("accepted edge"), "{}", text(&out.stdout));
    assert_eq!(fs::read_to_string(dir.join("edge.baseline.toml")).unwrap(), pending);
    let out = replay(&["accept", "nope", "--dir", s(&dir)]);
    assert_eq!(out.status.code(), Some(exit_codes::INPUT_ERROR));
}

/// `demo-cli serve` with the given switches on a free port of 127.0.0.1.
struct Deployment(std::process::Child, u16);

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn deploy(serializer: &str) -> Deployment {
    use std::io::BufRead as _;
    let bin = root_dir().join("target/debug/demo-cli");
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0"])
        .env("DEMO_SERIALIZER", serializer)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start demo-cli serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Deployment(child, port)
}

#[test]
fn a_simulated_cross_cloud_night_through_http_deployments() {
    let built = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "demo", "--bin", "demo-cli"])
        .current_dir(root_dir())
        .status()
        .unwrap();
    assert!(built.success());
    let tmp = tempfile::tempdir().unwrap();
    let night = |name: &str, serializers: [&str; 3], previous: Option<&Path>| {
        let deps: Vec<Deployment> = serializers.iter().map(|s| deploy(s)).collect();
        let cfg = tmp.path().join(format!("{name}.toml"));
        let mut text = format!("corpus = {:?}\n", sample());
        for (t, d) in ["cloud-a", "cloud-b", "edge-c"].iter().zip(&deps) {
            text.push_str(&format!(
                "\n[targets.{t}]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}\"\nconcurrency = 4\n",
                d.1
            ));
        }
        fs::write(&cfg, text).unwrap();
        let out_dir = tmp.path().join(name);
        let md = tmp.path().join(format!("{name}.md"));
        let mut args = vec![
            "--config",
            s(&cfg),
            "matrix",
            "--targets",
            "cloud-a,cloud-b,edge-c",
            "--out",
            s(&out_dir),
            "--limit",
            "400",
            "--markdown",
            s(&md),
        ];
        if let Some(p) = previous {
            args.extend(["--previous", s(p)]);
        }
        let out = replay(&args);
        drop(deps);
        (out, out_dir.join("matrix.json"), fs::read_to_string(md).unwrap())
    };
    // Night 1: every deployment runs the same build.
    let (out, m1, md) = night("night1", ["v2", "v2", "v2"], None);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}{}", text(&out.stdout), text(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&m1).unwrap()).unwrap();
    assert_eq!(m["pairs"].as_array().unwrap().len(), 2);
    assert!(
        m["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["report"]["different"] == 0 && p["report"]["cases"] == 400),
        "{m}"
    );
    assert!(md.contains("| `cloud-a` | 0 (0) | 0 (0) |"), "{md}");
    // Night 2: the edge rolled back to the old serializer: new clusters, exit 1.
    let (out, _, md) = night("night2", ["v2", "v2", "v1"], Some(&m1));
    assert_eq!(
        out.status.code(),
        Some(exit_codes::DIFFERENCES),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("NEW      cloud-a vs edge-c: added $.body.metadata"), "{stdout}");
    assert!(!stdout.contains("cloud-a vs cloud-b: added"), "{stdout}");
    assert!(md.contains("### Since the previous run"), "{md}");
    // Night 3: the same builds as night 2, compared with night 2: nothing new, exit 0.
    let m2 = tmp.path().join("night2/matrix.json");
    let (out, _, _) = night("night3", ["v2", "v2", "v1"], Some(&m2));
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("since the previous run: 0 change(s)"), "{}", text(&out.stdout));
}

#[test]
fn sharded_matrices_merge_into_the_unsharded_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &Path, shard: Option<&str>| {
        let mut args = vec!["-q", "matrix", "--targets", "local,prod-wasm,serializer-v2", "--out", s(out)];
        if let Some(k) = shard {
            args.extend(["--shard", k]);
        }
        let o = replay_in(root_dir(), &args);
        assert_eq!(o.status.code(), Some(exit_codes::OK), "{}", text(&o.stderr));
        out.join("matrix.json")
    };
    let whole = run(&tmp.path().join("whole"), None);
    let shards: Vec<PathBuf> =
        (1..=3).map(|k| run(&tmp.path().join(format!("s{k}")), Some(&format!("{k}/3")))).collect();
    let mut args = vec!["report", "merge", "--json"];
    args.extend(shards.iter().map(|p| s(p)));
    let out = replay(&args);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let whole: serde_json::Value = serde_json::from_slice(&fs::read(whole).unwrap()).unwrap();
    assert_eq!(merged, whole);
    assert_eq!(merged["pairs"][0]["report"]["different"], 548);
}

/// The deploy files parse as YAML and wire shards the way `replay` expects.
#[test]
fn the_deploy_files_are_valid_and_shard_consistently() {
    let check = r#"
import sys, yaml
gh = yaml.safe_load(open(sys.argv[1]))
shards = gh['jobs']['shard']['strategy']['matrix']['shard']
assert shards == list(range(1, int(gh['env']['SHARDS']) + 1)), shards
run = ' '.join(s.get('run', '') for s in gh['jobs']['shard']['steps'])
assert '--shard ${{ matrix.shard }}/${{ env.SHARDS }}' in run, run
merge = ' '.join(s.get('run', '') for s in gh['jobs']['merge']['steps'])
assert gh['jobs']['merge']['needs'] == 'shard'
assert 'replay report merge' in merge and 'GITHUB_STEP_SUMMARY' in merge, merge
k8s = yaml.safe_load(open(sys.argv[2]))
spec = k8s['spec']
assert spec['completionMode'] == 'Indexed'
env = {e['name']: e['value'] for e in spec['template']['spec']['containers'][0]['env']}
assert spec['completions'] == int(env['SHARDS']), (spec['completions'], env)
args = spec['template']['spec']['containers'][0]['args'][0]
assert '--shard "$((JOB_COMPLETION_INDEX + 1))/$SHARDS"' in args, args
print('ok')
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(root_dir().join("deploy/github-actions-nightly.yml"))
        .arg(root_dir().join("deploy/k8s-indexed-job.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // The shard arithmetic the Job uses: indexes 0..N-1 map to shards 1..N, which `replay`
    // accepts and which together cover the corpus.
    for k in 0..4 {
        let out = replay_in(
            root_dir(),
            &[
                "run",
                "-t",
                "local",
                "-o",
                s(&tempfile::tempdir().unwrap().path().join("r")),
                "--shard",
                &format!("{}/4", k + 1),
                "--limit",
                "1",
            ],
        );
        assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    }
}

#[test]
fn a_deliberately_broken_build_fails_the_right_scenario_with_a_readable_cluster() {
    // The same targets, but the "wasm" build has the edge bug switched on.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fs::read_to_string(root_dir().join("replay.toml")).unwrap();
    let broken = cfg.replace(
        "description = \"the demo's Wasm build with the edge buffer off\"",
        "description = \"a broken build\"\nenv = { DEMO_SERIALIZER = \"v2\", DEMO_EDGE_BUFFER = \"1\" }",
    );
    let broken = broken.replacen(
        "env = { DEMO_SERIALIZER = \"v2\" }\ntimeout_ms = 2000\nmemory_mb = 64\n\n[targets.wasm-command]",
        "timeout_ms = 2000\nmemory_mb = 64\n\n[targets.wasm-command]",
        1,
    );
    assert_ne!(broken, cfg);
    let base = root_dir().to_path_buf();
    let broken = broken.replace("corpus = \"corpora/samples/demo\"", &format!("corpus = {:?}", sample()));
    let broken = broken.replace("module = \"target/", &format!("module = \"{}/target/", base.display()));
    let broken = broken.replace("command = [\"target/", &format!("command = [\"{}/target/", base.display()));
    let broken = broken.replace("build = \"rustup", &format!("build = \"cd {} && rustup", base.display()));
    let broken = broken.replace("build = \"cargo", &format!("build = \"cd {} && cargo", base.display()));
    fs::write(tmp.path().join("replay.toml"), broken).unwrap();
    let scen = fs::read_to_string(root_dir().join("scenarios/native-vs-wasm.toml"))
        .unwrap()
        .replace("\"../corpora/samples/demo\"", &format!("{:?}", sample()));
    let dir = tmp.path().join("scenarios");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("native-vs-wasm.toml"), scen).unwrap();
    let s = harness::scenario::Scenario::load(&dir.join("native-vs-wasm.toml")).unwrap();
    let checked = s.run(&replay_cli::natives::registry()).unwrap();
    assert!(!checked.passed());
    let msg = checked.explain(&s);
    assert!(
        msg.contains("NEW cluster, 548 cases: changed $.payload.fnv1a64; changed $.payload.head"),
        "{msg}"
    );
    assert!(msg.contains("$.payload.fnv1a64") && msg.contains("replay show"), "{msg}");
}

/// `replay review` driven through a pseudo-terminal, as a person would use it.
#[test]
fn review_works_in_a_pseudo_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scenarios");
    fs::create_dir_all(&dir).unwrap();
    let scenario = format!(
        "corpus = {:?}\nconfig = {:?}\na = \"local\"\nb = \"prod-wasm\"\nexpect = \"baseline\"\nbaseline = \"edge.baseline.toml\"\n",
        sample(),
        root_dir().join("replay.toml")
    );
    fs::write(dir.join("edge.toml"), scenario).unwrap();
    fs::write(dir.join("edge.baseline.toml"), "").unwrap();
    fs::write(
        dir.join("edge.baseline.toml.pending"),
        "[[accepted]]\nsignature = [\"changed $.payload.fnv1a64\", \"changed $.payload.head\"]\ncases = 548\n",
    )
    .unwrap();
    let drive = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], 'review', '--dir', sys.argv[2]])
out = b''
answered = False
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not answered and b'accept?' in out:
        os.write(fd, b'y\n')
        answered = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode('utf-8', 'replace'))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(drive)
        .arg(env!("CARGO_BIN_EXE_replay"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("NEW cluster, 548 cases"), "{}", text(&out.stdout));
    let b = harness::scenario::read_baseline(&dir.join("edge.baseline.toml")).unwrap();
    assert_eq!(b.accepted.len(), 1);
    assert!(!dir.join("edge.baseline.toml.pending").exists());
}

#[test]
fn har_import_redacts_before_disk_and_scan_and_export_work() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "sk-canaryZYXWVUTSRQPONMLKJIHGFEDCBA0123";
    let har = format!(
        r#"{{"log":{{"version":"1.2","entries":[{{"startedDateTime":"2026-11-21T10:00:00Z",
        "request":{{"method":"POST","url":"https://api.example.test/v1/chat","httpVersion":"HTTP/1.1",
          "headers":[{{"name":"Authorization","value":"Bearer {secret}"}},{{"name":"Content-Type","value":"application/json"}},{{"name":"OpenAI-Organization","value":"org-{secret}"}}],
          "postData":{{"mimeType":"application/json","text":"{{\"key\":\"{secret}\",\"email\":\"ada@example.com\",\"q\":\"hi\"}}"}}}},
        "response":{{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1","headers":[{{"name":"Set-Cookie","value":"s={secret}"}},{{"name":"Content-Type","value":"text/plain"}}],
          "content":{{"size":10,"mimeType":"text/plain","text":"echo {secret}"}}}}}}]}}}}"#
    );
    let file = tmp.path().join("in.har");
    fs::write(&file, har).unwrap();
    let corpus = tmp.path().join("c");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(args)
            .env("REPLAY_REDACT_KEY", "11".repeat(32))
            .env_remove("REPLAY_CORPUS")
            .output()
            .unwrap()
    };
    let out = run(&["record", "har", s(&file), "--out", s(&corpus)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("imported 1 exchanges (0 already present, 1 redacted"),
        "{}",
        text(&out.stdout)
    );
    for entry in fs::read_dir(corpus.join("segments")).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret reached disk");
        assert!(!bytes.windows(15).any(|w| w == b"ada@example.com"));
    }
    let out = run(&["corpus", "scan", "-c", s(&corpus)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("scanned 1 cases: 0 possible secret(s)"));
    // The export is HAR again, with the placeholders.
    let exported = tmp.path().join("out.har");
    let out = run(&["corpus", "export", "--format", "har", "-c", s(&corpus), "--out", s(&exported)]);
    assert_eq!(out.status.code(), Some(exit_codes::OK), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&exported).unwrap()).unwrap();
    let headers = v["log"]["entries"][0]["request"]["headers"].as_array().unwrap();
    let auth = headers.iter().find(|h| h["name"] == "Authorization").unwrap();
    assert!(auth["value"].as_str().unwrap().starts_with("[redacted:"), "{auth}");
    // A corpus recorded without redaction is caught by the scan.
    let leaky = tmp.path().join("leaky.jsonl");
    fs::write(
        &leaky,
        format!(
            "{{\"data\":{{\"message\":{{\"content_type\":\"text/plain\",\"input\":\"token {secret}\"}}}}}}\n"
        ),
    )
    .unwrap();
    let c2 = tmp.path().join("c2");
    assert_eq!(run(&["corpus", "import", "-c", s(&c2), s(&leaky)]).status.code(), Some(exit_codes::OK));
    let out = run(&["corpus", "scan", "-c", s(&c2)]);
    assert_eq!(out.status.code(), Some(exit_codes::DIFFERENCES));
    assert!(text(&out.stdout).contains("message input: sk-canar"), "{}", text(&out.stdout));
}

#[test]
fn serve_plays_back_the_recorded_upstream_and_reports_misses() {
    use std::io::{BufRead as _, Read as _, Write as _};
    let tmp = tempfile::tempdir().unwrap();
    let misses = tmp.path().join("misses.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["serve", "--corpus", s(&sample()), "--listen", "127.0.0.1:0", "--misses", s(&misses)])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.split_whitespace().nth(2).unwrap().rsplit(':').next().unwrap().parse().unwrap();
    assert!(line.contains("59 recorded exchanges"), "{line}");
    // Every recorded request, replayed through an http target, gets the recorded answer.
    let cfg = tmp.path().join("replay.toml");
    fs::write(
        &cfg,
        format!("[targets.production]\nkind = \"recorded\"\n\n[targets.playback]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}\"\nkeep_host = true\n"),
    )
    .unwrap();
    let out = replay(&[
        "--config",
        s(&cfg),
        "diff",
        "--a",
        "production",
        "--b",
        "playback",
        "-c",
        s(&sample()),
        "--filter",
        "kind=http",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (r["same"].as_u64(), r["different"].as_u64(), r["inconclusive"].as_u64()),
        (Some(59), Some(0), Some(1)),
        "{r}"
    );
    assert_eq!(out.status.code(), Some(exit_codes::OK));

    // A changed request: 502 naming the closest recorded one, and a line in the misses file.
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["serve", "--corpus", s(&sample()), "--listen", "127.0.0.1:0", "--misses", s(&misses)])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.split_whitespace().nth(2).unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let body = br#"{"file":"x.rs","language":"rust","cursor":{"line":1,"column":1},"prefix":"fn"}"#;
    let mut s2 = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s2, "POST /v1/complete HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s2.write_all(body).unwrap();
    let mut resp = String::new();
    s2.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(resp.contains("closest_case") && resp.contains("$.file"), "{resp}");
    // Two misses: the recorded request that never got a response (nothing to play back, from
    // the diff above), and this one.
    let logged = fs::read_to_string(&misses).unwrap();
    assert_eq!(logged.lines().count(), 2, "{logged}");
    let last = logged.lines().last().unwrap();
    assert!(last.contains("\"path\":\"/v1/complete\"") && last.contains("x.rs"), "{last}");
}

/// Runs `replay record pcap - --keep http` on `capture` (through stdin); its summary and the
/// peak memory it reports (the kernel's `VmHWM`).
fn record_pcap_stdin(capture: Vec<u8>, out: &Path) -> (String, f64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["record", "pcap", "-", "--keep", "http", "--out", s(out)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&capture).unwrap();
    });
    let res = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(res.status.code(), Some(exit_codes::OK), "{}", text(&res.stderr));
    let summary = text(&res.stdout);
    let peak = summary
        .split("peak memory ")
        .nth(1)
        .and_then(|r| r.split(" MiB").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in the summary: {summary}"));
    (summary, peak)
}

/// Session 8 found two captures that blew the recorder's memory: a SYN scan (a flow for each
/// of its 1,000,000 packets: 4.7 GB) and many connections each in the middle of a long head
/// (2,000 x 60 KiB: 293 MB). Both are bounded now. Measured by the kernel (`VmHWM`, printed in
/// the summary): what such a capture adds over a ten-packet one must stay under 40 MiB (it
/// was about 30 in both builds; before the bounds, over 700); and in a release build, where
/// the binary's own footprint is about 21 MiB (a debug build's is about 37), the whole run
/// must stay under the 64 MiB the recorder promises.
#[test]
fn a_port_scan_and_thousands_of_unfinished_heads_stay_bounded() {
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    use std::time::Duration;

    let capture = |scan: u32, conns: u32, head: usize| {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let mut t = 0u64;
        let mut put = |src: [u8; 4], sport: u16, dport: u16, seq: u32, syn: bool, payload: &[u8]| {
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(src, [10, 0, 0, 2], 64)
                .tcp(sport, dport, seq, 65535);
            let b = if syn { b.syn() } else { b.ack(1) };
            let mut f = Vec::with_capacity(64 + payload.len());
            b.write(&mut f, payload).unwrap();
            t += 1_000;
            let at = Duration::from_nanos(1_700_000_000_000_000_000 + t);
            w.write_packet(&PcapPacket::new(at, f.len() as u32, &f)).unwrap();
        };
        let client = |i: u32| [10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        // A scan: SYNs to as many ports, never answered.
        for i in 0..scan {
            put(client(i), 40000, 1 + (i % 60000) as u16, 7, true, b"");
        }
        // Connections each sending `head` bytes of a head that never ends, 1,400 at a time.
        const SEG: usize = 1400;
        for i in 0..conns {
            put(client(i), 41000, 80, 99, true, b"");
        }
        let mut first = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        first.resize(SEG, b'a');
        let more = vec![b'a'; SEG];
        for k in 0..head / SEG {
            for i in 0..conns {
                put(client(i), 41000, 80, 100 + (k * SEG) as u32, false, if k == 0 { &first } else { &more });
            }
        }
        w.into_writer()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_, base) = record_pcap_stdin(capture(10, 0, 0), &tmp.path().join("small"));
    let (summary, peak) = record_pcap_stdin(capture(150_000, 1200, 48 << 10), &tmp.path().join("big"));
    assert!(peak - base < 40.0, "peak memory {peak} MiB against {base} MiB for ten packets: {summary}");
    if !cfg!(debug_assertions) {
        assert!(peak < 64.0, "peak memory {peak} MiB: {summary}");
    }
    assert!(summary.contains("151200  connections"), "{summary}");
    assert!(summary.contains("closed early at the bound on open connections"), "{summary}");
    assert!(summary.contains("over the bound on unfinished heads"), "{summary}");
}
