//! Scenarios: a corpus, two targets, rules, and the expected outcome (`same`, or a baseline
//! of accepted clusters), in `scenarios/*.toml` (`docs/scenarios.md`). `cargo test` runs each
//! as its own test (`tests/scenarios.rs`).
//!
//! A mismatch against a baseline never rewrites it: the observed clusters go to a pending
//! file next to it (`NAME.baseline.toml.pending`) for a person to review; `REPLAY_BLESS=1`
//! accepts them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, DiffRules, RawDiff, Registry};
use crate::diff::Rules;
use crate::engine::{self, Selection};
use crate::report::{Clusterer, Report, Side};

/// Why a scenario could not run (as opposed to failing its expectation).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario file is wrong: file, line, and what was expected.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Loading a target or the run failed.
    #[error("{0}")]
    Run(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    corpus: toml::Spanned<PathBuf>,
    config: Option<toml::Spanned<PathBuf>>,
    a: toml::Spanned<String>,
    b: toml::Spanned<String>,
    #[serde(default)]
    filter: Vec<String>,
    limit: Option<u64>,
    expect: toml::Spanned<String>,
    baseline: Option<toml::Spanned<PathBuf>>,
    #[serde(default)]
    rules: RawDiff,
}

/// What a scenario expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No differing case at all.
    Same,
    /// Only the clusters accepted in this baseline file.
    Baseline(PathBuf),
}

/// A parsed scenario.
#[derive(Debug)]
pub struct Scenario {
    /// Its name (the test's name): `name`, else the file stem.
    pub name: String,
    /// What it checks.
    pub description: String,
    /// The scenario file.
    pub path: PathBuf,
    /// The corpus directory.
    pub corpus: PathBuf,
    /// The targets' configuration.
    pub config: Config,
    /// Side A's target.
    pub a: String,
    /// Side B's target.
    pub b: String,
    /// `--filter` terms.
    pub filter: Vec<String>,
    /// `--limit`.
    pub limit: Option<u64>,
    /// The expectation.
    pub expect: Expect,
    rules: DiffRules,
}

/// One accepted cluster of a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// The cluster's signature.
    pub signature: Vec<String>,
    /// Cases in it when accepted; growing past 10% more is a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<u64>,
    /// Why it is accepted (kept when the baseline is rewritten).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A baseline file: the accepted clusters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The accepted clusters.
    #[serde(default)]
    pub accepted: Vec<Accepted>,
}

/// How a run compared with its expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The run's report.
    pub report: Report,
    /// Clusters not in the baseline (all clusters when `same` was expected).
    pub new: Vec<usize>,
    /// Accepted clusters that grew by more than 10% (index into the report, accepted count).
    pub grown: Vec<(usize, u64)>,
    /// Accepted signatures not seen any more.
    pub vanished: Vec<Vec<String>>,
}

impl Checked {
    /// Whether the expectation holds.
    pub fn passed(&self) -> bool {
        self.new.is_empty()
            && self.grown.is_empty()
            && self.vanished.is_empty()
            && self.report.problems.is_empty()
    }

    /// A readable account of what did not match: each new or grown cluster with its example
    /// diff, each vanished one.
    pub fn explain(&self, scenario: &Scenario) -> String {
        let r = &self.report;
        let mut o = format!(
            "scenario {} ({}): {} vs {}: {} cases, {} same, {} different, {} inconclusive\n",
            scenario.name,
            scenario.path.display(),
            r.a.name,
            r.b.name,
            r.cases,
            r.same,
            r.different,
            r.inconclusive
        );
        let one = |i: usize| {
            let mut single = r.clone();
            single.clusters = vec![r.clusters[i].clone()];
            single.unused_rules.clear();
            crate::render::terminal(&single, 1, false)
                .lines()
                .skip_while(|l| !l.starts_with("cluster 1:"))
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        };
        for &i in &self.new {
            let c = &r.clusters[i];
            o.push_str(&format!("NEW cluster, {} cases: {}\n", c.count, c.signature.join("; ")));
            o.push_str(&one(i));
        }
        for &(i, was) in &self.grown {
            let c = &r.clusters[i];
            o.push_str(&format!(
                "GROWN cluster, {} cases (accepted {was}): {}\n",
                c.count,
                c.signature.join("; ")
            ));
            o.push_str(&one(i));
        }
        for v in &self.vanished {
            o.push_str(&format!("VANISHED cluster (accepted, not seen any more): {}\n", v.join("; ")));
        }
        for p in &r.problems {
            o.push_str(&format!("problem: {p}\n"));
        }
        o
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

impl Scenario {
    /// Reads and checks a scenario file: the corpus must exist and both targets must be
    /// defined (each mistake names the file and line).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Io { path: path.to_path_buf(), message: e.to_string() })?;
        let invalid = |offset: usize, message: String| ScenarioError::Invalid {
            path: path.to_path_buf(),
            line: line_of(&text, offset),
            message,
        };
        let raw: RawScenario = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(at, e.message().to_string())
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let corpus = base.join(raw.corpus.get_ref());
        if !corpus.join("manifest.json").is_file() {
            return Err(invalid(
                raw.corpus.span().start,
                format!("corpus {} does not exist (no manifest.json)", corpus.display()),
            ));
        }
        let config_path = match &raw.config {
            Some(c) => base.join(c.get_ref()),
            None => base.join("..").join(crate::config::CONFIG_FILE),
        };
        let config = Config::load(&config_path).map_err(|e| match (&raw.config, e) {
            (Some(c), ConfigError::Read { .. }) => {
                invalid(c.span().start, format!("config {} cannot be read", config_path.display()))
            }
            (_, other) => ScenarioError::Run(other.to_string()),
        })?;
        for side in [&raw.a, &raw.b] {
            if !config.targets.contains_key(side.get_ref()) {
                return Err(invalid(
                    side.span().start,
                    format!(
                        "unknown target {:?}; {} defines: {}",
                        side.get_ref(),
                        config.path.display(),
                        config.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let expect = match (raw.expect.get_ref().as_str(), &raw.baseline) {
            ("same", None) => Expect::Same,
            ("baseline", Some(b)) => Expect::Baseline(base.join(b.get_ref())),
            ("baseline", None) => {
                return Err(invalid(
                    raw.expect.span().start,
                    "expect = \"baseline\" needs `baseline = \"FILE\"`".into(),
                ));
            }
            ("same", Some(b)) => {
                return Err(invalid(b.span().start, "`baseline` is only for expect = \"baseline\"".into()));
            }
            (other, _) => {
                return Err(invalid(
                    raw.expect.span().start,
                    format!("expect {other:?}: expected \"same\" or \"baseline\""),
                ));
            }
        };
        let rules = DiffRules::parse(&raw.rules, &text, "rules").map_err(|(at, m)| invalid(at, m))?;
        let mut filter = crate::engine::Filter::default();
        for f in &raw.filter {
            filter.add(f).map_err(|e| invalid(0, format!("filter: {e}")))?;
        }
        Ok(Scenario {
            name: raw
                .name
                .unwrap_or_else(|| path.file_stem().unwrap_or_default().to_string_lossy().into_owned()),
            description: raw.description.unwrap_or_default(),
            path: path.to_path_buf(),
            corpus,
            config,
            a: raw.a.into_inner(),
            b: raw.b.into_inner(),
            filter: raw.filter,
            limit: raw.limit,
            expect,
            rules,
        })
    }

    /// Every `*.toml` scenario in `dir` (baselines, `*.baseline.toml`, are not scenarios),
    /// sorted by file name.
    pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| ScenarioError::Io { path: dir.to_path_buf(), message: e.to_string() })?;
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.ends_with(".toml") && !name.ends_with(".baseline.toml")
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The rules: the config's `[diff]` table plus the scenario's own `[rules]`.
    pub fn rules(&self) -> Rules {
        let mut r = self.config.rules();
        self.rules.apply(&mut r, &self.path);
        r
    }

    /// Runs the scenario and compares the outcome with its expectation. Writes nothing.
    pub fn run(&self, registry: &Registry) -> Result<Checked, ScenarioError> {
        let load =
            |n: &str| self.config.load_target(n, registry).map_err(|e| ScenarioError::Run(e.to_string()));
        let (a, b) = (load(&self.a)?, load(&self.b)?);
        let corpus = corpora::Corpus::open(&self.corpus).map_err(|e| ScenarioError::Run(e.to_string()))?;
        let mut filter = crate::engine::Filter::default();
        for f in &self.filter {
            filter.add(f).map_err(ScenarioError::Run)?;
        }
        let sel = Selection { filter, limit: self.limit, ..Selection::default() };
        let rules = self.rules();
        let mut c = Clusterer::new(&rules, false);
        let summary = engine::run(&corpus, &[a.clone(), b.clone()], &sel, &mut c, &mut |_| {})
            .map_err(|e| ScenarioError::Run(e.to_string()))?;
        let report = c.finish(
            Side { name: a.name.clone(), kind: a.kind.clone(), detail: a.detail.clone() },
            Side { name: b.name.clone(), kind: b.kind.clone(), detail: b.detail.clone() },
            self.corpus.display().to_string(),
            self.filter.iter().map(|f| format!("--filter {f}")).collect(),
            summary.problems,
        );
        let baseline = match &self.expect {
            Expect::Same => Baseline::default(),
            Expect::Baseline(p) => read_baseline(p)?,
        };
        Ok(judge(report, &baseline))
    }

    /// The baseline file, for `expect = "baseline"`.
    pub fn baseline_path(&self) -> Option<&Path> {
        match &self.expect {
            Expect::Baseline(p) => Some(p),
            Expect::Same => None,
        }
    }
}

/// Reads a baseline (a missing file is an empty baseline).
pub fn read_baseline(path: &Path) -> Result<Baseline, ScenarioError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| ScenarioError::Invalid {
            path: path.to_path_buf(),
            line: line_of(&text, e.span().map_or(0, |s| s.start)),
            message: e.message().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Baseline::default()),
        Err(e) => Err(ScenarioError::Io { path: path.to_path_buf(), message: e.to_string() }),
    }
}

/// Compares a report with a baseline: new clusters, accepted ones grown by more than 10%, and
/// accepted ones that vanished.
pub fn judge(report: Report, baseline: &Baseline) -> Checked {
    let accepted: BTreeMap<&Vec<String>, &Accepted> =
        baseline.accepted.iter().map(|a| (&a.signature, a)).collect();
    let mut new = Vec::new();
    let mut grown = Vec::new();
    for (i, c) in report.clusters.iter().enumerate() {
        match accepted.get(&c.signature) {
            None => new.push(i),
            Some(a) => {
                if let Some(was) = a.cases
                    && c.count > was + was / 10
                {
                    grown.push((i, was));
                }
            }
        }
    }
    let vanished = baseline
        .accepted
        .iter()
        .filter(|a| !report.clusters.iter().any(|c| c.signature == a.signature))
        .map(|a| a.signature.clone())
        .collect();
    Checked { report, new, grown, vanished }
}

/// The baseline that accepts exactly the clusters of `report`, keeping the notes of
/// signatures `old` already had.
pub fn baseline_for(report: &Report, old: &Baseline) -> Baseline {
    Baseline {
        accepted: report
            .clusters
            .iter()
            .map(|c| Accepted {
                signature: c.signature.clone(),
                cases: Some(c.count),
                note: old
                    .accepted
                    .iter()
                    .find(|a| a.signature == c.signature)
                    .map(|a| a.note.clone())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

/// The pending file of a baseline: where a mismatch is written for review.
pub fn pending_path(baseline: &Path) -> PathBuf {
    let mut p = baseline.as_os_str().to_owned();
    p.push(".pending");
    PathBuf::from(p)
}

/// Writes a baseline (or a pending baseline) as TOML.
pub fn write_baseline(path: &Path, b: &Baseline, header: &str) -> Result<(), ScenarioError> {
    let body = toml::to_string_pretty(b)
        .map_err(|e| ScenarioError::Io { path: path.to_path_buf(), message: e.to_string() })?;
    std::fs::write(path, format!("{header}{body}"))
        .map_err(|e| ScenarioError::Io { path: path.to_path_buf(), message: e.to_string() })
}
