//! Property: take a random value, apply random known edits, and the diff reports exactly
//! those paths and kinds; with the edited paths ignored it reports nothing.

use std::collections::BTreeSet;

use corpora::value::Value;
use harness::diff::{Kind, Rule, Rules, Seg, Selector, diff_values, render};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(|i| Value::Int(i.into())),
        (-1000.0f64..1000.0).prop_map(Value::Float),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                .prop_map(|m| Value::Map(m.into_iter().collect())),
        ]
    })
}

/// Every node's path, parents before children.
fn nodes(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(path.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                nodes(x, path, out);
                path.pop();
            }
        }
        Value::Map(m) => {
            for (k, x) in m {
                path.push(Seg::Key(k.clone()));
                nodes(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match (v, seg) {
        (Value::Array(a), Seg::Index(i)) => &mut a[*i],
        (Value::Map(m), Seg::Key(k)) => &mut m.iter_mut().find(|(key, _)| key == k).unwrap().1,
        _ => unreachable!(),
    })
}

fn is_prefix(a: &[Seg], b: &[Seg]) -> bool {
    a.len() <= b.len() && a == &b[..a.len()]
}

/// Applies up to `picks.len()` independent edits; returns the edited value and the expected
/// `(path, kind)` set.
fn edit(original: &Value, picks: &[(usize, u8)]) -> (Value, BTreeSet<(String, Kind)>, Vec<Vec<Seg>>) {
    let mut v = original.clone();
    let mut all = Vec::new();
    nodes(original, &mut Vec::new(), &mut all);
    let mut touched: Vec<Vec<Seg>> = Vec::new();
    let mut expected = BTreeSet::new();
    for &(pick, op) in picks {
        let path = all[pick % all.len()].clone();
        // Independent edits only: nothing above or below an earlier edit.
        if touched.iter().any(|t| is_prefix(t, &path) || is_prefix(&path, t)) {
            continue;
        }
        let node = at(&mut v, &path).clone();
        let parent_is_map = path.last().is_some_and(|s| matches!(s, Seg::Key(_)));
        match (op % 4, &node) {
            // Change a scalar within its type.
            (0, Value::Int(i)) => *at(&mut v, &path) = Value::Int(i + 1),
            (0, Value::String(s)) => *at(&mut v, &path) = Value::String(format!("{s}!")),
            (0, Value::Bool(b)) => *at(&mut v, &path) = Value::Bool(!b),
            // Change a leaf's type.
            (1, Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::String(_)) => {
                let new = if matches!(node, Value::String(_)) {
                    Value::Bool(true)
                } else {
                    Value::String("t".into())
                };
                *at(&mut v, &path) = new;
                touched.push(path.clone());
                expected.insert((render(&path), Kind::TypeChanged));
                continue;
            }
            // Remove a map entry.
            (2, _) if parent_is_map => {
                let Some(Seg::Key(k)) = path.last() else { unreachable!() };
                if let Value::Map(m) = at(&mut v, &path[..path.len() - 1]) {
                    m.retain(|(key, _)| key != k);
                }
                touched.push(path.clone());
                expected.insert((render(&path), Kind::Removed));
                continue;
            }
            // Add an entry to a map.
            (3, Value::Map(m)) if !m.iter().any(|(k, _)| k == "added") => {
                if let Value::Map(m) = at(&mut v, &path) {
                    m.push(("added".into(), Value::Int(7)));
                }
                let mut p = path.clone();
                p.push(Seg::Key("added".into()));
                touched.push(p.clone());
                expected.insert((render(&p), Kind::Added));
                continue;
            }
            _ => continue,
        }
        touched.push(path.clone());
        expected.insert((render(&path), Kind::Changed));
    }
    (v, expected, touched)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_diff_reports_exactly_the_edits(v in value(), picks in prop::collection::vec((0usize..1000, 0u8..4), 0..6)) {
        let (edited, expected, touched) = edit(&v, &picks);
        let got: BTreeSet<(String, Kind)> =
            diff_values(&v, &edited, &Rules::default()).into_iter().map(|d| (d.path, d.kind)).collect();
        prop_assert_eq!(&got, &expected);
        // Nothing at all between a value and itself.
        prop_assert!(diff_values(&v, &v, &Rules::default()).is_empty());
        // With every edited path ignored, nothing is reported, and every ignore rule was used.
        let mut rules = Rules::default();
        for p in &touched {
            rules.ignore.push(Rule::new(Selector::parse(&render(p)).unwrap(), (), "test"));
        }
        prop_assert!(diff_values(&v, &edited, &rules).is_empty());
        prop_assert!(rules.unused().is_empty(), "{:?}", rules.unused());
    }

    #[test]
    fn selectors_round_trip_through_their_rendering(v in value()) {
        let mut all = Vec::new();
        nodes(&v, &mut Vec::new(), &mut all);
        for p in all {
            let s = Selector::parse(&render(&p)).unwrap();
            prop_assert!(s.matches(&p));
        }
    }
}
