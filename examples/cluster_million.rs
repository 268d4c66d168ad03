//! Clusters a million differing cases, to measure peak memory:
//!
//! ```text
//! cargo build --release --example cluster_million
//! /usr/bin/time -v target/release/examples/cluster_million 1000000
//! ```
//!
//! Each case gets a diff of two to four differences drawn from 40 signatures (array indices
//! vary per case, so only the generalised shapes repeat), as a large real run would.

use corpora::{Case, CaseData, Message};
use harness::diff::{CaseDiff, Difference, Kind, Rules, Verdict};
use harness::report::{Clusterer, Side};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let rules = Rules::default();
    let mut c = Clusterer::new(&rules, false);
    for i in 0..n {
        let case = Case::new(CaseData::Message(Message {
            content_type: "application/json".into(),
            input: i.to_le_bytes().to_vec().into(),
            output: None,
        }));
        let sig = i % 40;
        let differences = (0..2 + sig % 3)
            .map(|k| {
                let field = format!("f{}", (sig + k) % 17);
                Difference {
                    path: format!("$.choices[{}].{field}", i % 7),
                    shape: format!("$.choices[*].{field}"),
                    kind: if k == 0 { Kind::Changed } else { Kind::Added },
                    a: Some(format!("\"value {i}\"")),
                    b: Some(format!("\"other {i}\"")),
                    detail: None,
                }
            })
            .collect();
        c.add(&case, CaseDiff { verdict: Verdict::Different, differences, reason: None });
    }
    let side = |n: &str| Side { name: n.into(), kind: "native".into(), detail: String::new() };
    let r = c.finish(side("a"), side("b"), "synthetic".into(), vec![], vec![]);
    println!(
        "{} cases, {} different, {} clusters, largest {}",
        r.cases,
        r.different,
        r.clusters.len(),
        r.clusters[0].count
    );
}
