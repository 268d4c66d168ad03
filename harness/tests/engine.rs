//! The engine: order, shards, filters, limits, failures as data, pacing, and run directories.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corpora::{Case, CaseData, CaseId, Corpus, CorpusWriter, Message, WriterOptions};
use harness::engine::{self, EngineError, Filter, Selection, Shard};
use harness::{FnTarget, Loaded, Observation, Outcome, Run, RunInfo, RunWriter};

fn corpus(dir: &std::path::Path, n: usize) -> Corpus {
    let mut w = CorpusWriter::create(dir, WriterOptions::default()).unwrap();
    for i in 0..n {
        let mut c = Case::new(CaseData::Message(Message {
            content_type: "text/plain".into(),
            input: format!("case {i}").into_bytes().into(),
            output: None,
        }));
        c.tags.insert("parity".into(), if i % 2 == 0 { "even" } else { "odd" }.into());
        c.time_ns = Some(i as i64 * 1_000_000);
        w.append(&c).unwrap();
    }
    w.close().unwrap();
    Corpus::open(dir).unwrap()
}

fn echo(concurrency: usize) -> Loaded {
    let mut t = Loaded::native(
        "echo",
        Arc::new(FnTarget(|case: &Case| {
            let CaseData::Message(m) = case.data() else { unreachable!() };
            // Uneven work, so workers finish out of order.
            let spin = case.id().as_bytes()[0] as u64 * 2;
            std::thread::sleep(Duration::from_micros(spin));
            Outcome::bytes("text/plain", m.input.clone())
        })),
    );
    t.concurrency = concurrency;
    t
}

fn collect(
    c: &Corpus,
    targets: &[Loaded],
    sel: &Selection,
) -> (Vec<(CaseId, Vec<Observation>)>, engine::Summary) {
    let mut seen = Vec::new();
    let s = engine::run(
        c,
        targets,
        sel,
        &mut |case: &Case, obs: Vec<Observation>| {
            seen.push((case.id(), obs));
            Ok::<bool, EngineError>(true)
        },
        &mut |_| {},
    )
    .unwrap();
    (seen, s)
}

fn corpus_order(c: &Corpus) -> Vec<CaseId> {
    c.cases().map(|r| r.unwrap().id()).collect()
}

#[test]
fn output_order_is_the_corpus_order_whatever_the_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path(), 700);
    let order = corpus_order(&c);
    for concurrency in [1, 3, 16] {
        let (seen, s) = collect(&c, &[echo(concurrency)], &Selection::default());
        assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), order, "concurrency {concurrency}");
        assert_eq!(s.cases, 700);
        assert_eq!(s.outcomes["echo"]["output"], 700);
        for (id, obs) in &seen {
            assert_eq!(obs.len(), 1);
            assert_eq!(obs[0].case, *id);
        }
    }
}

#[test]
fn shards_together_run_each_case_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path(), 500);
    let mut all = Vec::new();
    for k in 1..=4 {
        let sel = Selection { shard: Some(Shard { index: k, count: 4 }), ..Selection::default() };
        let (seen, s) = collect(&c, &[echo(4)], &sel);
        assert_eq!(s.cases + s.other_shards, 500);
        assert!(s.cases > 60, "shard {k} has {} cases", s.cases);
        all.extend(seen.into_iter().map(|(id, _)| id));
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 500);
    assert_eq!(all.len(), 500);
}

#[test]
fn filters_and_limits_select_cases() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path(), 100);
    let mut filter = Filter::default();
    filter.add("kind=message,tag.parity=odd").unwrap();
    let (seen, s) = collect(&c, &[echo(2)], &Selection { filter: filter.clone(), ..Selection::default() });
    assert_eq!((seen.len(), s.filtered_out), (50, 50));
    let (seen, _) = collect(&c, &[echo(2)], &Selection { filter, limit: Some(7), ..Selection::default() });
    assert_eq!(seen.len(), 7);
    let first = corpus_order(&c)[3].to_string();
    let mut by_id = Filter::default();
    by_id.add(&format!("id={}", &first[..12])).unwrap();
    let (seen, _) = collect(&c, &[echo(2)], &Selection { filter: by_id, ..Selection::default() });
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.to_string(), first);
}

#[test]
fn a_panicking_target_is_an_observation_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path(), 50);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = calls.clone();
    let bad = Loaded::native(
        "bad",
        Arc::new(FnTarget(move |_: &Case| {
            if k.fetch_add(1, Ordering::SeqCst).is_multiple_of(5) {
                panic!("boom in the target");
            }
            Outcome::error("refused")
        })),
    );
    let (seen, s) = collect(&c, &[echo(2), bad], &Selection::default());
    assert_eq!(seen.len(), 50);
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    let panics = seen
        .iter()
        .filter(|(_, o)| matches!(&o[1].outcome, Outcome::Error { message } if message.contains("boom in the target")))
        .count();
    assert_eq!(panics, 10);
    assert_eq!(s.outcomes["bad"]["error"], 50);
    assert_eq!(s.outcomes["echo"]["output"], 50);
}

#[test]
fn a_sink_can_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path(), 400);
    let mut n = 0;
    let s = engine::run(
        &c,
        &[echo(4)],
        &Selection::default(),
        &mut |_: &Case, _: Vec<Observation>| {
            n += 1;
            Ok::<bool, EngineError>(n < 10)
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(s.stopped);
    assert_eq!(n, 10);
    assert_eq!(s.cases, 10);
}

#[test]
fn a_rate_limit_paces_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path(), 11);
    let mut t = echo(4);
    t.rps = Some(100.0);
    let start = Instant::now();
    let (seen, _) = collect(&c, &[t], &Selection::default());
    assert_eq!(seen.len(), 11);
    // Ten gaps of at least 10 ms.
    assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());
    // The capture's own spacing (1 ms apart), ten times slower: ten gaps of 10 ms.
    let start = Instant::now();
    let (seen, _) = collect(&c, &[echo(4)], &Selection { speed: Some(0.1), ..Selection::default() });
    assert_eq!(seen.len(), 11);
    assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());
}

#[test]
fn a_run_directory_holds_the_observations_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(&dir.path().join("corpus"), 300);
    let info = RunInfo {
        target: "echo".into(),
        kind: "native".into(),
        detail: String::new(),
        corpus: dir.path().join("corpus"),
        filters: vec![],
        shard: None,
        limit: None,
        started_unix: 1,
        outcomes: Default::default(),
        seconds: 0.0,
    };
    let run_dir = dir.path().join("run");
    let mut w = RunWriter::create(&run_dir, info).unwrap();
    let s = engine::run(&c, &[echo(3)], &Selection::default(), &mut w, &mut |_| {}).unwrap();
    assert_eq!(s.cases, 300);
    let info = w.close(1.5).unwrap();
    assert_eq!(info.outcomes["output"], 300);
    let run = Run::open(&run_dir).unwrap();
    assert_eq!(run.info().target, "echo");
    assert_eq!(run.info().outcomes["output"], 300);
    let obs: Vec<Observation> = run.observations().map(Result::unwrap).collect();
    assert_eq!(obs.iter().map(|o| o.case).collect::<Vec<_>>(), corpus_order(&c));
    // A corpus of cases is not a run.
    let e = Run::open(&dir.path().join("corpus")).err().unwrap().to_string();
    assert!(e.contains("not a run directory"), "{e}");
}
