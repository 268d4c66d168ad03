//! Snapshot tests of every report rendering on one fixed run; `REPLAY_BLESS=1` rewrites the
//! snapshots (review the diff before committing). The JUnit file is also parsed as XML.

use std::path::PathBuf;

use corpora::{Case, CaseData, Header, HttpExchange, HttpRequest, Message};
use harness::diff::{Rule, Rules, Selector};
use harness::report::{Clusterer, Report, Side};
use harness::{Observation, Outcome, render};

fn message(text: &str) -> Case {
    Case::new(CaseData::Message(Message {
        content_type: "application/json".into(),
        input: text.as_bytes().to_vec().into(),
        output: None,
    }))
}

fn obs(case: &Case, outcome: Outcome) -> Observation {
    Observation { case: case.id(), outcome, duration_ns: 1000 }
}

fn json(s: &str) -> Outcome {
    Outcome::bytes("application/json", s.as_bytes().to_vec())
}

/// A fixed run: 6 cases, 2 same, 3 in two clusters (one an HTTP case), 1 inconclusive.
fn report() -> Report {
    let mut rules = Rules::default();
    rules.ignore.push(Rule::new(Selector::parse("$.id").unwrap(), (), "replay.toml:9"));
    rules.ignore.push(Rule::new(Selector::parse("$.stale").unwrap(), (), "--ignore"));
    let mut c = Clusterer::new(&rules, false);
    let cases: Vec<Case> = (0..5).map(|i| message(&format!("{{\"n\":{i}}}"))).collect();
    let http = Case::new(CaseData::Http(HttpExchange {
        request: HttpRequest {
            method: "POST".into(),
            target: "/v1/complete".into(),
            headers: vec![
                Header::new("Host", "api.example.test"),
                Header::new("Content-Type", "application/json"),
            ],
            body: b"{\"q\":\"it's\"}".to_vec().into(),
            ..HttpRequest::default()
        },
        ..HttpExchange::default()
    }));
    let pairs = [
        (&cases[0], json(r#"{"a":1,"id":"x"}"#), json(r#"{"a":1,"id":"y"}"#)),
        (&cases[1], json(r#"{"a":[1,2]}"#), json(r#"{"a":[1,2]}"#)),
        (&cases[2], json(r#"{"a":[1,2],"m":{"k":"<v>"}}"#), json(r#"{"a":[1,3]}"#)),
        (&http, json(r#"{"a":[5],"m":{"k":"|"}}"#), json(r#"{"a":[6]}"#)),
        (
            &cases[3],
            json(r#"{"a":1}"#),
            Outcome::Trap { code: "unreachable".into(), message: "m".into(), nondeterministic: false },
        ),
        (&cases[4], json(r#"{"a":1}"#), Outcome::Timeout { after_ms: 50 }),
    ];
    for (case, a, b) in pairs {
        let d = harness::diff::compare(&obs(case, a), &obs(case, b), &rules);
        c.add(case, d);
    }
    let side = |n: &str, k: &str| Side { name: n.into(), kind: k.into(), detail: String::new() };
    c.finish(side("old", "native"), side("new", "wasm"), "corpora/x".into(), vec!["--limit 6".into()], vec![])
}

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("REPLAY_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == got,
        "{name} differs from tests/snapshots/{name}; if the change is intended, rerun with REPLAY_BLESS=1 and \
         review it.\n--- want\n{want}\n--- got\n{got}"
    );
}

#[test]
fn the_report_counts_and_clusters() {
    let r = report();
    assert_eq!((r.cases, r.same, r.different, r.inconclusive), (6, 2, 3, 1));
    assert_eq!(r.clusters.len(), 2);
    assert_eq!(r.clusters[0].count, 2);
    assert_eq!(r.clusters[0].signature, ["changed $.a[*]", "removed $.m"]);
    // The smallest example first: the 7-byte message before the 24-byte HTTP request.
    assert_eq!(
        r.clusters[0].examples.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["message", "http"]
    );
    assert_eq!(r.clusters[1].signature, ["outcome_changed $ (output -> trap unreachable)"]);
    assert_eq!(r.unused_rules.len(), 1);
    assert_eq!(r.unused_rules[0].selector, "$.stale");
    // The JSON form reads back to the same report.
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn snapshots_of_every_rendering() {
    let r = report();
    check("terminal.txt", &render::terminal(&r, 5, false));
    check("report.json", &(serde_json::to_string_pretty(&r).unwrap() + "\n"));
    check("report.md", &render::markdown(&r, 5));
    check("junit.xml", &render::junit(&r));
    check("report.html", &render::html(&r));
}

#[test]
fn the_junit_file_is_well_formed_xml_with_one_case_per_cluster() {
    let r = report();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("junit.xml");
    std::fs::write(&f, render::junit(&r)).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.etree.ElementTree as E\n\
             t = E.parse(sys.argv[1]).getroot()\n\
             s = t.find('testsuite')\n\
             cases = s.findall('testcase')\n\
             print(t.tag, s.get('tests'), s.get('failures'), s.get('skipped'), len(cases), \
                   sum(1 for c in cases if c.find('failure') is not None))",
        )
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "testsuites 3 2 1 3 2");
    // And as a JUnit consumer reads it (junitparser, as CI report tools use; .ci/run installs
    // it): the suite's counts and each case's result type.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\nfrom junitparser import JUnitXml\n\
             for s in JUnitXml.fromfile(sys.argv[1]):\n\
             \x20   print(s.tests, s.failures, s.skipped, [type(r).__name__ for c in s for r in c.result])",
        )
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "junitparser (pip install junitparser): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3 2 1 ['Failure', 'Failure', 'Skipped']");
}
