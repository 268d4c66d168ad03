//! Clusters and the serialisable [`Report`] of a diff run.
//!
//! A case's signature is the set of its differences' shapes and kinds; cases with one
//! signature form a cluster. The [`Clusterer`] keeps, per cluster, only a count, the few
//! smallest example cases and one representative diff, so memory depends on the number of
//! clusters, not of cases.

use std::collections::{BTreeMap, HashMap};

use corpora::{Case, CaseData, CaseId};
use serde::{Deserialize, Serialize};

use crate::diff::{self, CaseDiff, Difference, Rules, Verdict};
use crate::engine::{EngineError, Sink};
use crate::observation::Observation;

/// How many example cases a cluster keeps.
pub const EXAMPLES: usize = 3;

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// The target name (or saved run directory).
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// What it is.
    pub detail: String,
}

/// An example case of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The case id.
    pub case: CaseId,
    /// Its kind.
    pub kind: String,
    /// Its input size in bytes (examples are the smallest).
    pub size: u64,
}

/// A group of cases that differ the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// `kind shape` entries, sorted: what these cases' differences have in common.
    pub signature: Vec<String>,
    /// How many cases.
    pub count: u64,
    /// `count` over the cases compared.
    pub share: f64,
    /// The smallest cases of the cluster.
    pub examples: Vec<Example>,
    /// The smallest example's differences.
    pub representative: Vec<Difference>,
    /// Commands that reproduce the smallest example on each side.
    pub reproduce: Vec<String>,
    /// For an HTTP case: the request as a `curl` command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curl: Option<String>,
}

/// A case in the verbose listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEntry {
    /// The case.
    pub case: CaseId,
    /// Its comparison.
    #[serde(flatten)]
    pub diff: CaseDiff,
}

/// A path that differed between two runs of the same side: noise, subtracted from the A-B
/// comparison and reported here instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noise {
    /// The path's shape (`$.created`, `$.choices[*].id`), with the difference kind.
    pub signature: String,
    /// `a` or `b`: which side's two runs disagreed.
    pub side: String,
    /// In how many cases.
    pub cases: u64,
}

/// A rule that never changed a comparison in the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusedRule {
    /// `ignore`, `tolerance`, `unordered`.
    pub kind: String,
    /// The selector.
    pub selector: String,
    /// Where it was written.
    pub origin: String,
}

/// Everything a diff run found; every renderer reads only this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Format version of this JSON (`docs/report-format.md`).
    pub format_version: u32,
    /// Side A.
    pub a: Side,
    /// Side B.
    pub b: Side,
    /// The corpus.
    pub corpus: String,
    /// The selection (`--filter`, `--shard`, `--limit`), as given.
    #[serde(default)]
    pub selection: Vec<String>,
    /// Cases compared.
    pub cases: u64,
    /// Cases with no difference.
    pub same: u64,
    /// Cases with differences.
    pub different: u64,
    /// Cases where a side failed non-deterministically.
    pub inconclusive: u64,
    /// Why cases were inconclusive, with counts.
    #[serde(default)]
    pub inconclusive_reasons: BTreeMap<String, u64>,
    /// Clusters, largest first.
    pub clusters: Vec<Cluster>,
    /// Rules that changed nothing in this run (stale rules).
    #[serde(default)]
    pub unused_rules: Vec<UnusedRule>,
    /// With `--noise`: what differed between two runs of the same side, most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noise: Vec<Noise>,
    /// With `--noise`: differing cases whose every difference was noise (counted as same).
    #[serde(default)]
    pub noise_only: u64,
    /// Every differing or inconclusive case (only with `--verbose`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbose: Vec<CaseEntry>,
    /// Problems reading the corpus or a saved run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The current [`Report::format_version`].
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// One kept example: input size, id, kind, its differences, its curl line.
type Kept = (u64, CaseId, String, Vec<Difference>, Option<String>);

struct Acc {
    count: u64,
    examples: Vec<Kept>,
}

/// A sink that compares each case's two observations and clusters the differences.
pub struct Clusterer<'r> {
    rules: &'r Rules,
    verbose: bool,
    cases: u64,
    same: u64,
    different: u64,
    inconclusive: u64,
    reasons: BTreeMap<String, u64>,
    clusters: HashMap<Vec<String>, Acc>,
    listing: Vec<CaseEntry>,
    noise: BTreeMap<(String, String), u64>,
    noise_only: u64,
}

impl<'r> Clusterer<'r> {
    /// A clusterer comparing under `rules`; `verbose` keeps every differing case.
    pub fn new(rules: &'r Rules, verbose: bool) -> Clusterer<'r> {
        Clusterer {
            rules,
            verbose,
            cases: 0,
            same: 0,
            different: 0,
            inconclusive: 0,
            reasons: BTreeMap::new(),
            clusters: HashMap::new(),
            listing: Vec::new(),
            noise: BTreeMap::new(),
            noise_only: 0,
        }
    }

    /// Compares `a` and `b` after subtracting the noise seen between `a` and `a2` (two runs of
    /// side A) and between `b` and `b2`: a difference at a path (shape) that differed between
    /// two runs of either side, in this case, is noise. Noise is counted per path and reported,
    /// never silently dropped.
    pub fn add_with_noise(
        &mut self,
        case: &Case,
        a: &Observation,
        b: &Observation,
        a2: &Observation,
        b2: &Observation,
    ) {
        let mut noisy: Vec<String> = Vec::new();
        for (side, x, y) in [("a", a, a2), ("b", b, b2)] {
            let d = diff::compare(x, y, self.rules);
            for sig in diff::signature(&d.differences) {
                *self.noise.entry((sig, side.to_string())).or_default() += 1;
            }
            noisy.extend(d.differences.into_iter().map(|d| d.shape));
        }
        let mut d = diff::compare(a, b, self.rules);
        if d.verdict == Verdict::Different && !noisy.is_empty() {
            d.differences
                .retain(|x| !noisy.iter().any(|n| *n == x.shape && x.kind != diff::Kind::OutcomeChanged));
            if d.differences.is_empty() {
                d.verdict = Verdict::Same;
                self.noise_only += 1;
            }
        }
        self.add(case, d);
    }

    /// Adds one case's comparison.
    pub fn add(&mut self, case: &Case, d: CaseDiff) {
        self.cases += 1;
        match d.verdict {
            Verdict::Same => self.same += 1,
            Verdict::Inconclusive => {
                self.inconclusive += 1;
                *self.reasons.entry(d.reason.clone().unwrap_or_default()).or_default() += 1;
            }
            Verdict::Different => {
                self.different += 1;
                let sig = diff::signature(&d.differences);
                let acc = self.clusters.entry(sig).or_insert_with(|| Acc { count: 0, examples: Vec::new() });
                acc.count += 1;
                let size = input_size(case);
                if acc.examples.len() < EXAMPLES
                    || acc.examples.last().is_some_and(|e| (e.0, e.1) > (size, case.id()))
                {
                    acc.examples.push((
                        size,
                        case.id(),
                        case.kind().name().to_string(),
                        d.differences.clone(),
                        curl(case),
                    ));
                    acc.examples.sort_by_key(|e| (e.0, e.1));
                    acc.examples.truncate(EXAMPLES);
                }
            }
        }
        if self.verbose && d.verdict != Verdict::Same {
            self.listing.push(CaseEntry { case: case.id(), diff: d });
        }
    }

    /// The report, clusters ranked by size (then signature, so the order is stable).
    pub fn finish(
        self,
        a: Side,
        b: Side,
        corpus: String,
        selection: Vec<String>,
        problems: Vec<String>,
    ) -> Report {
        let total = self.cases.max(1) as f64;
        let mut clusters: Vec<Cluster> = self
            .clusters
            .into_iter()
            .map(|(signature, acc)| {
                let first = &acc.examples[0];
                let id = first.1.to_string();
                Cluster {
                    signature,
                    count: acc.count,
                    share: acc.count as f64 / total,
                    representative: first.3.clone(),
                    reproduce: [&a, &b]
                        .iter()
                        .map(|s| format!("replay show {id} --target {}", shell_word(&s.name)))
                        .collect(),
                    curl: first.4.clone(),
                    examples: acc
                        .examples
                        .into_iter()
                        .map(|(size, case, kind, ..)| Example { case, kind, size })
                        .collect(),
                }
            })
            .collect();
        clusters.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.signature.cmp(&y.signature)));
        let mut verbose = self.listing;
        verbose.sort_by_key(|e| e.case);
        Report {
            format_version: REPORT_FORMAT_VERSION,
            a,
            b,
            corpus,
            selection,
            cases: self.cases,
            same: self.same,
            different: self.different,
            inconclusive: self.inconclusive,
            inconclusive_reasons: self.reasons,
            clusters,
            unused_rules: self
                .rules
                .unused()
                .into_iter()
                .map(|(kind, selector, origin)| UnusedRule { kind, selector, origin })
                .collect(),
            verbose,
            problems,
            noise: {
                let mut n: Vec<Noise> = self
                    .noise
                    .into_iter()
                    .map(|((signature, side), cases)| Noise { signature, side, cases })
                    .collect();
                n.sort_by(|x, y| {
                    y.cases.cmp(&x.cases).then_with(|| (&x.signature, &x.side).cmp(&(&y.signature, &y.side)))
                });
                n
            },
            noise_only: self.noise_only,
        }
    }
}

impl Sink for Clusterer<'_> {
    fn case(&mut self, case: &Case, observations: Vec<Observation>) -> Result<bool, EngineError> {
        match observations.as_slice() {
            [a, b] => {
                let d = diff::compare(a, b, self.rules);
                self.add(case, d);
            }
            [a, b, a2, b2] => self.add_with_noise(case, a, b, a2, b2),
            other => {
                return Err(EngineError::Usage(format!(
                    "a diff needs 2 or 4 observations per case, got {}",
                    other.len()
                )));
            }
        }
        Ok(true)
    }
}

fn input_size(case: &Case) -> u64 {
    match case.data() {
        CaseData::Message(m) => m.input.as_bytes().len() as u64,
        CaseData::Packet(p) => p.data.as_bytes().len() as u64,
        CaseData::Http(x) => x.request.body.as_bytes().len() as u64 + x.request.target.len() as u64,
    }
}

/// A word quoted for a POSIX shell when it needs to be.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The recorded request of an HTTP case as a `curl` command line (hop-by-hop headers left
/// out; the URL uses the recorded `Host`).
pub fn curl(case: &Case) -> Option<String> {
    let CaseData::Http(x) = case.data() else { return None };
    let r = &x.request;
    let host = corpora::body::header(&r.headers, "host").unwrap_or("localhost");
    let url = if r.target.contains("://") { r.target.clone() } else { format!("http://{host}{}", r.target) };
    let mut cmd = format!("curl -sS -X {} {}", shell_word(&r.method), shell_word(&url));
    for h in crate::http::end_to_end(&r.headers, false) {
        let n = h.0.to_ascii_lowercase();
        if n == "host" || n == "content-length" {
            continue;
        }
        cmd.push_str(&format!(
            " -H {}",
            shell_word(&format!("{}: {}", h.0, String::from_utf8_lossy(h.1.as_bytes())))
        ));
    }
    let body = r.body.as_bytes();
    if !body.is_empty() {
        let body = if corpora::body::is_chunked(&r.headers) {
            corpora::body::dechunk(body).unwrap_or_else(|_| body.to_vec())
        } else {
            body.to_vec()
        };
        match std::str::from_utf8(&body) {
            Ok(text) => cmd.push_str(&format!(" --data-binary {}", shell_word(text))),
            Err(_) => cmd.push_str(" --data-binary @body.bin"),
        }
    }
    Some(cmd)
}

/// Why shard reports could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No report given.
    #[error("no report to merge")]
    Empty,
    /// The reports are not shards of one run.
    #[error("report {index} is not a shard of the same run: {what} differs ({a:?} vs {b:?})")]
    Mismatch {
        /// 1-based position of the odd report.
        index: usize,
        /// What differs.
        what: &'static str,
        /// The first report's value.
        a: String,
        /// This report's value.
        b: String,
    },
}

/// Joins the reports of shards of one run (`--shard K/N` for every K) into exactly the report
/// one unsharded run gives: counts add up, each cluster keeps the three smallest examples
/// over all shards and the smallest one's diff, a rule is unused only if no shard used it.
pub fn merge(reports: &[Report]) -> Result<Report, MergeError> {
    let first = reports.first().ok_or(MergeError::Empty)?;
    let unsharded =
        |sel: &[String]| sel.iter().filter(|s| !s.starts_with("--shard")).cloned().collect::<Vec<_>>();
    for (i, r) in reports.iter().enumerate().skip(1) {
        let checks: [(&'static str, String, String); 4] = [
            ("side a", format!("{:?}", first.a), format!("{:?}", r.a)),
            ("side b", format!("{:?}", first.b), format!("{:?}", r.b)),
            ("corpus", first.corpus.clone(), r.corpus.clone()),
            ("selection", unsharded(&first.selection).join(" "), unsharded(&r.selection).join(" ")),
        ];
        for (what, a, b) in checks {
            if a != b {
                return Err(MergeError::Mismatch { index: i + 1, what, a, b });
            }
        }
    }
    let mut out = first.clone();
    out.selection = unsharded(&first.selection);
    out.cases = reports.iter().map(|r| r.cases).sum();
    out.same = reports.iter().map(|r| r.same).sum();
    out.different = reports.iter().map(|r| r.different).sum();
    out.inconclusive = reports.iter().map(|r| r.inconclusive).sum();
    out.noise_only = reports.iter().map(|r| r.noise_only).sum();
    out.inconclusive_reasons = BTreeMap::new();
    for r in reports {
        for (k, v) in &r.inconclusive_reasons {
            *out.inconclusive_reasons.entry(k.clone()).or_default() += v;
        }
    }
    let mut noise: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in reports {
        for n in &r.noise {
            *noise.entry((n.signature.clone(), n.side.clone())).or_default() += n.cases;
        }
    }
    let mut noise: Vec<Noise> =
        noise.into_iter().map(|((signature, side), cases)| Noise { signature, side, cases }).collect();
    noise.sort_by(|x, y| {
        y.cases.cmp(&x.cases).then_with(|| (&x.signature, &x.side).cmp(&(&y.signature, &y.side)))
    });
    out.noise = noise;
    out.unused_rules = first
        .unused_rules
        .iter()
        .filter(|u| reports.iter().all(|r| r.unused_rules.contains(u)))
        .cloned()
        .collect();
    let mut clusters: HashMap<Vec<String>, Cluster> = HashMap::new();
    for r in reports {
        for c in &r.clusters {
            match clusters.get_mut(&c.signature) {
                None => {
                    clusters.insert(c.signature.clone(), c.clone());
                }
                Some(m) => {
                    m.count += c.count;
                    let before = m.examples[0].clone();
                    m.examples.extend(c.examples.iter().cloned());
                    m.examples.sort_by_key(|e| (e.size, e.case));
                    m.examples.dedup_by_key(|e| e.case);
                    m.examples.truncate(EXAMPLES);
                    if m.examples[0] != before {
                        m.representative = c.representative.clone();
                        m.reproduce = c.reproduce.clone();
                        m.curl = c.curl.clone();
                    }
                }
            }
        }
    }
    let total = out.cases.max(1) as f64;
    let mut clusters: Vec<Cluster> = clusters.into_values().collect();
    for c in &mut clusters {
        c.share = c.count as f64 / total;
    }
    clusters.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.signature.cmp(&y.signature)));
    out.clusters = clusters;
    out.verbose = reports.iter().flat_map(|r| r.verbose.iter().cloned()).collect();
    out.verbose.sort_by_key(|e| e.case);
    out.problems = reports.iter().flat_map(|r| r.problems.iter().cloned()).collect();
    Ok(out)
}
