//! The demo system under test, through the bundled `replay.toml`: native and Wasm agree with
//! the switches off; the edge switch changes exactly the packets with payloads over 1500
//! bytes, and only in Wasm; serializer v1 reproduces production and v2 differs from it.

use std::path::Path;

use corpora::{Case, CaseData, CaseKind, Corpus};
use harness::engine::{self, EngineError, Filter, Selection};
use harness::{Config, Loaded, Observation, Outcome, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn targets(names: &[&str]) -> Vec<Loaded> {
    let cfg = Config::load(&root().join("replay.toml")).unwrap();
    let reg = replay_cli::natives::registry();
    names.iter().map(|n| cfg.load_target(n, &reg).unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// Runs the sample corpus (optionally filtered) through `names`, returning each case with its
/// observations.
fn run(names: &[&str], filter: Option<&str>) -> Vec<(Case, Vec<Observation>)> {
    let corpus = Corpus::open(root().join("corpora/samples/demo")).unwrap();
    let mut sel = Selection::default();
    if let Some(f) = filter {
        let mut flt = Filter::default();
        flt.add(f).unwrap();
        sel.filter = flt;
    }
    let mut out = Vec::new();
    let s = engine::run(
        &corpus,
        &targets(names),
        &sel,
        &mut |c: &Case, o: Vec<Observation>| {
            out.push((c.clone(), o));
            Ok::<bool, EngineError>(true)
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    out
}

fn json(o: &Outcome) -> serde_json::Value {
    match o {
        Outcome::Output { output: Output::Bytes { data, .. } } => {
            serde_json::from_slice(data.as_bytes()).unwrap()
        }
        other => panic!("expected JSON output, got {other:?}"),
    }
}

#[test]
fn native_and_wasm_agree_on_every_case_with_the_switches_off() {
    let all = run(&["local", "wasm", "wasm-command", "stream"], None);
    assert_eq!(all.len(), 3360);
    let mut outputs = 0;
    for (case, obs) in &all {
        for o in &obs[1..] {
            assert_eq!(
                o.outcome,
                obs[0].outcome,
                "case {} ({:?}): {} vs local",
                case.id(),
                case.kind(),
                o.case
            );
        }
        outputs += matches!(obs[0].outcome, Outcome::Output { .. }) as usize;
    }
    // Every case of the sample is one the demo answers.
    assert_eq!(outputs, all.len());
}

#[test]
fn the_edge_switch_changes_exactly_the_large_payloads_and_only_in_wasm() {
    let all = run(&["local", "prod-wasm"], None);
    let mut large = 0;
    for (case, obs) in &all {
        let (a, b) = (&obs[0].outcome, &obs[1].outcome);
        let over = case.kind() == CaseKind::Packet && json(a)["payload"]["len"].as_u64().unwrap() > 1500;
        if !over {
            assert_eq!(a, b, "case {}", case.id());
            continue;
        }
        large += 1;
        let (mut a, mut b) = (json(a), json(b));
        assert_ne!(a["payload"]["fnv1a64"], b["payload"]["fnv1a64"], "case {}", case.id());
        // Everything but the payload's bytes is the same: one cause, one cluster.
        for v in [&mut a, &mut b] {
            let p = v["payload"].as_object_mut().unwrap();
            p.remove("fnv1a64");
            p.remove("head");
        }
        assert_eq!(a, b, "case {}", case.id());
    }
    assert!(large > 100, "the sample has {large} packets with payloads over 1500 bytes");
    // Natively the switch does nothing.
    let native = run(&["local"], Some("kind=packet"));
    let cfg = Config::parse(
        "[targets.edge-native]\nkind = \"native\"\nfunction = \"demo\"\nenv = { DEMO_EDGE_BUFFER = \"1\" }\n",
        Path::new("replay.toml"),
    )
    .unwrap();
    let t = cfg.load_target("edge-native", &replay_cli::natives::registry()).unwrap();
    for (case, obs) in &native {
        assert_eq!(t.target.observe(case), obs[0].outcome);
    }
}

#[test]
fn serializer_v1_reproduces_production_and_v2_differs() {
    let all = run(&["production", "serializer-v1", "serializer-v2"], Some("kind=message"));
    assert_eq!(all.len(), 300);
    let mut truncated_differently = 0;
    for (case, obs) in &all {
        assert_eq!(obs[0].outcome, obs[1].outcome, "v1 vs production, case {}", case.id());
        let (v1, v2) = (json(&obs[1].outcome), json(&obs[2].outcome));
        assert!(v1.get("metadata").is_some() && v2.get("metadata").is_none());
        if v1["messages"] != v2["messages"] {
            truncated_differently += 1;
            let CaseData::Message(m) = case.data() else { unreachable!() };
            let ctx: serde_json::Value = serde_json::from_slice(m.input.as_bytes()).unwrap();
            let prefix = ctx["prefix"].as_str().unwrap();
            assert!(
                prefix.len() > 1024 && !prefix.is_ascii(),
                "case {}: the bug needs multi-byte text over the byte limit",
                case.id()
            );
        }
    }
    assert!(truncated_differently > 10, "{truncated_differently} cases show the truncation bug");
    assert!(truncated_differently < 200, "{truncated_differently}: the bug shows only near the limit");
}
