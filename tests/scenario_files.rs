//! Scenario files and baselines through the library API: a baseline missing a cluster fails
//! with a message naming the new cluster, and bad scenario files name the file and line.

use std::fs;
use std::path::{Path, PathBuf};

use harness::scenario::{self, Scenario};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of a bundled scenario in `dir`, with absolute paths and its own baseline copy.
fn copy_scenario(dir: &Path, name: &str, baseline: Option<&str>) -> PathBuf {
    let text = fs::read_to_string(root().join("scenarios").join(format!("{name}.toml"))).unwrap();
    let mut text =
        text.replace("\"../corpora/samples/demo\"", &format!("{:?}", root().join("corpora/samples/demo")));
    text.push_str(&format!("config = {:?}\n", root().join("replay.toml")));
    if let Some(b) = baseline {
        fs::write(dir.join(format!("{name}.baseline.toml")), b).unwrap();
    }
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_baseline_without_a_cluster_fails_naming_the_new_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let full = fs::read_to_string(root().join("scenarios/copilot-serializer.baseline.toml")).unwrap();
    // Drop the truncation bug's entry (the second [[accepted]] table).
    let cut = full.rfind("[[accepted]]").unwrap();
    let path = copy_scenario(tmp.path(), "copilot-serializer", Some(&full[..cut]));
    let s = Scenario::load(&path).unwrap();
    let checked = s.run(&replay_cli::natives::registry()).unwrap();
    assert!(!checked.passed());
    assert_eq!(checked.new.len(), 1);
    let msg = checked.explain(&s);
    assert!(
        msg.contains("NEW cluster, 63 cases: changed $.messages[*].content; removed $.metadata"),
        "{msg}"
    );
    assert!(msg.contains("$.messages[1].content") && msg.contains("reproduce: replay show"), "{msg}");
    // The full baseline passes.
    fs::write(tmp.path().join("copilot-serializer.baseline.toml"), &full).unwrap();
    assert!(Scenario::load(&path).unwrap().run(&replay_cli::natives::registry()).unwrap().passed());
}

#[test]
fn grown_and_vanished_clusters_are_mismatches_and_the_proposal_keeps_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let baseline = "[[accepted]]\nsignature = [\"changed $.payload.fnv1a64\", \"changed $.payload.head\"]\ncases = 100\nnote = \"keep me\"\n\n\
                    [[accepted]]\nsignature = [\"removed $.gone\"]\n";
    let path = copy_scenario(tmp.path(), "edge-buffer", Some(baseline));
    let s = Scenario::load(&path).unwrap();
    let checked = s.run(&replay_cli::natives::registry()).unwrap();
    assert_eq!(checked.grown, vec![(0, 100)]);
    assert_eq!(checked.vanished, vec![vec!["removed $.gone".to_string()]]);
    let msg = checked.explain(&s);
    assert!(
        msg.contains("GROWN cluster, 548 cases (accepted 100)") && msg.contains("VANISHED cluster"),
        "{msg}"
    );
    let old = scenario::read_baseline(s.baseline_path().unwrap()).unwrap();
    let proposed = scenario::baseline_for(&checked.report, &old);
    assert_eq!(proposed.accepted.len(), 1);
    assert_eq!(proposed.accepted[0].cases, Some(548));
    assert_eq!(proposed.accepted[0].note, "keep me");
    // Written and read back, the proposal is what passes.
    let pending = scenario::pending_path(s.baseline_path().unwrap());
    scenario::write_baseline(&pending, &proposed, "# test\n").unwrap();
    assert_eq!(scenario::read_baseline(&pending).unwrap(), proposed);
}

#[test]
fn bad_scenario_files_name_the_file_line_and_what_was_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let p = tmp.path().join("bad.toml");
        fs::write(&p, text).unwrap();
        Scenario::load(&p).unwrap_err().to_string()
    };
    let corpus = format!("{:?}", root().join("corpora/samples/demo"));
    let config = format!("{:?}", root().join("replay.toml"));
    let ok = |extra: &str| {
        format!(
            "corpus = {corpus}\nconfig = {config}\na = \"local\"\nb = \"wasm\"\nexpect = \"same\"\n{extra}"
        )
    };
    let e = write(&ok("colour = \"red\"\n"));
    assert!(e.contains("bad.toml:6:") && e.contains("unknown field `colour`"), "{e}");
    let e = write(&ok("").replace(&corpus, "\"/no/such/corpus\""));
    assert!(e.contains("bad.toml:1:") && e.contains("/no/such/corpus does not exist"), "{e}");
    let e = write(&ok("").replace("\"wasm\"", "\"wasn\""));
    assert!(e.contains("bad.toml:4:") && e.contains("unknown target \"wasn\"") && e.contains("local"), "{e}");
    let e = write(&ok("").replace("\"same\"", "\"similar\""));
    assert!(e.contains("bad.toml:5:") && e.contains("expected \"same\" or \"baseline\""), "{e}");
    let e = write(&ok("[rules]\nignore = [\"metadata\"]\n"));
    assert!(e.contains("bad.toml:7:") && e.contains("must start with `$`"), "{e}");
    let e = write(&ok("").replace("expect = \"same\"", "expect = \"baseline\""));
    assert!(e.contains("needs `baseline = \\\"FILE\\\"`") || e.contains("needs `baseline"), "{e}");
}

#[test]
fn scenario_rules_apply_and_name_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = copy_scenario(tmp.path(), "edge-buffer", None);
    let mut text = fs::read_to_string(&path).unwrap();
    text =
        text.replace("expect = \"baseline\"\nbaseline = \"edge-buffer.baseline.toml\"", "expect = \"same\"");
    text.push_str("[rules]\nignore = [\"$.payload\", \"$.stale\"]\n");
    fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("ignore = [")).unwrap() + 1;
    let s = Scenario::load(&path).unwrap();
    let checked = s.run(&replay_cli::natives::registry()).unwrap();
    assert!(checked.passed(), "{}", checked.explain(&s));
    assert_eq!(checked.report.unused_rules.len(), 1);
    let origin = &checked.report.unused_rules[0].origin;
    assert!(origin.ends_with(&format!("edge-buffer.toml:{line}")), "{origin}");
}
