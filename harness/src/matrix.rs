//! The nightly matrix: every target run once and saved, then pairs diffed from the saved runs,
//! and the change since the previous night.

use serde::{Deserialize, Serialize};

use crate::render::xml_escape;
use crate::report::Report;

/// One compared pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Side A's target.
    pub a: String,
    /// Side B's target.
    pub b: String,
    /// The pair's full report.
    pub report: Report,
}

/// A cluster that is new, grown or vanished since the previous matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The pair, `A vs B`.
    pub pair: String,
    /// `new`, `grown` or `vanished`.
    pub change: String,
    /// The cluster's signature.
    pub signature: Vec<String>,
    /// Cases now (0 if vanished).
    pub cases: u64,
    /// Cases in the previous matrix (0 if new).
    pub previous: u64,
}

/// The matrix report (`matrix.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Format version.
    pub format_version: u32,
    /// The targets, in the order given.
    pub targets: Vec<String>,
    /// The reference target, or none for all pairs.
    #[serde(default)]
    pub reference: Option<String>,
    /// The pairs compared.
    pub pairs: Vec<Pair>,
    /// Changes since `--previous`, if given.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Whether a previous matrix was compared.
    #[serde(default)]
    pub compared_with_previous: bool,
}

impl Matrix {
    /// Joins the matrices of shards of one night (`replay matrix --shard K/N`) into what one
    /// unsharded run gives: each pair's reports merged ([`crate::report::merge`]). Changes
    /// are not carried over: compare the merged matrix with the previous one afterwards.
    pub fn merge(shards: &[Matrix]) -> Result<Matrix, crate::report::MergeError> {
        let first = shards.first().ok_or(crate::report::MergeError::Empty)?;
        let mut pairs = Vec::new();
        for p in &first.pairs {
            let mut reports = Vec::new();
            for (i, m) in shards.iter().enumerate() {
                let q = m.pairs.iter().find(|q| q.a == p.a && q.b == p.b).ok_or_else(|| {
                    crate::report::MergeError::Mismatch {
                        index: i + 1,
                        what: "pairs",
                        a: format!("{} vs {}", p.a, p.b),
                        b: "missing".into(),
                    }
                })?;
                reports.push(q.report.clone());
            }
            pairs.push(Pair { a: p.a.clone(), b: p.b.clone(), report: crate::report::merge(&reports)? });
        }
        Ok(Matrix {
            format_version: first.format_version,
            targets: first.targets.clone(),
            reference: first.reference.clone(),
            pairs,
            changes: Vec::new(),
            compared_with_previous: false,
        })
    }

    /// Compares with the previous night's matrix: for every pair present in both, clusters
    /// that are new, grown by more than `threshold` (a fraction), or vanished.
    pub fn compare_with(&mut self, previous: &Matrix, threshold: f64) {
        self.compared_with_previous = true;
        self.changes.clear();
        for p in &self.pairs {
            let Some(old) = previous.pairs.iter().find(|q| q.a == p.a && q.b == p.b) else { continue };
            let name = format!("{} vs {}", p.a, p.b);
            for c in &p.report.clusters {
                match old.report.clusters.iter().find(|o| o.signature == c.signature) {
                    None => self.changes.push(Change {
                        pair: name.clone(),
                        change: "new".into(),
                        signature: c.signature.clone(),
                        cases: c.count,
                        previous: 0,
                    }),
                    Some(o) if c.count as f64 > o.count as f64 * (1.0 + threshold) => {
                        self.changes.push(Change {
                            pair: name.clone(),
                            change: "grown".into(),
                            signature: c.signature.clone(),
                            cases: c.count,
                            previous: o.count,
                        })
                    }
                    Some(_) => {}
                }
            }
            for o in &old.report.clusters {
                if !p.report.clusters.iter().any(|c| c.signature == o.signature) {
                    self.changes.push(Change {
                        pair: name.clone(),
                        change: "vanished".into(),
                        signature: o.signature.clone(),
                        cases: 0,
                        previous: o.count,
                    });
                }
            }
        }
    }

    /// Whether anything got worse: a new or grown cluster.
    pub fn regressed(&self) -> bool {
        self.changes.iter().any(|c| c.change != "vanished")
    }

    fn cell(&self, a: &str, b: &str) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.a == a && p.b == b)
    }

    /// Rows and columns of the differing-case grid: (row targets, column targets).
    fn axes(&self) -> (Vec<String>, Vec<String>) {
        match &self.reference {
            Some(r) => (vec![r.clone()], self.targets.iter().filter(|t| *t != r).cloned().collect()),
            None => (self.targets.clone(), self.targets.clone()),
        }
    }

    /// The terminal view: the grid of differing cases (clusters), then the changes.
    pub fn terminal(&self) -> String {
        let (rows, cols) = self.axes();
        let w = self.targets.iter().map(|t| t.len()).max().unwrap_or(4).max(14);
        let mut o = String::from("differing cases (clusters), A down, B across:\n");
        o.push_str(&format!("{:w$}", ""));
        for c in &cols {
            o.push_str(&format!("  {c:>w$}"));
        }
        o.push('\n');
        for r in &rows {
            o.push_str(&format!("{r:w$}"));
            for c in &cols {
                let cell = match self.cell(r, c) {
                    Some(p) => format!("{} ({})", p.report.different, p.report.clusters.len()),
                    None => "-".into(),
                };
                o.push_str(&format!("  {cell:>w$}"));
            }
            o.push('\n');
        }
        for p in &self.pairs {
            o.push_str(&format!(
                "\n{} vs {}: {} cases, {} different, {} inconclusive\n",
                p.a, p.b, p.report.cases, p.report.different, p.report.inconclusive
            ));
            for c in &p.report.clusters {
                o.push_str(&format!("  {:>8} cases  {}\n", c.count, c.signature.join("; ")));
            }
        }
        if self.compared_with_previous {
            o.push_str(&format!("\nsince the previous run: {} change(s)\n", self.changes.len()));
            for c in &self.changes {
                o.push_str(&format!(
                    "  {:8} {}: {} ({} -> {} cases)\n",
                    c.change.to_uppercase(),
                    c.pair,
                    c.signature.join("; "),
                    c.previous,
                    c.cases
                ));
            }
        }
        o
    }

    /// Markdown (for a CI job summary).
    pub fn markdown(&self) -> String {
        let (rows, cols) = self.axes();
        let mut o = String::from("## replay matrix\n\nDiffering cases (clusters); A down, B across.\n\n| |");
        for c in &cols {
            o.push_str(&format!(" `{c}` |"));
        }
        o.push_str("\n|---|");
        o.push_str(&"---:|".repeat(cols.len()));
        o.push('\n');
        for r in &rows {
            o.push_str(&format!("| `{r}` |"));
            for c in &cols {
                match self.cell(r, c) {
                    Some(p) => {
                        o.push_str(&format!(" {} ({}) |", p.report.different, p.report.clusters.len()))
                    }
                    None => o.push_str(" |"),
                }
            }
            o.push('\n');
        }
        if self.compared_with_previous {
            o.push_str(&format!("\n### Since the previous run: {} change(s)\n\n", self.changes.len()));
            if !self.changes.is_empty() {
                o.push_str("| change | pair | cluster | before | now |\n|---|---|---|---:|---:|\n");
                for c in &self.changes {
                    o.push_str(&format!(
                        "| {} | {} | `{}` | {} | {} |\n",
                        c.change,
                        c.pair,
                        c.signature.join("; ").replace('|', "\\|"),
                        c.previous,
                        c.cases
                    ));
                }
            }
        }
        o
    }

    /// One self-contained HTML page: the grid, each pair's clusters, the changes.
    pub fn html(&self) -> String {
        let e = xml_escape;
        let (rows, cols) = self.axes();
        let mut o = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>replay matrix</title>\n\
             <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:.25em .6em}td.n{text-align:right}.bad{background:#fee}</style>\n\
             </head><body>\n<h1>replay matrix</h1>\n<table id=\"matrix\"><tr><th></th>",
        );
        for c in &cols {
            o.push_str(&format!("<th>{}</th>", e(c)));
        }
        o.push_str("</tr>\n");
        for r in &rows {
            o.push_str(&format!("<tr><th>{}</th>", e(r)));
            for c in &cols {
                match self.cell(r, c) {
                    Some(p) => o.push_str(&format!(
                        "<td class=\"n{}\">{} ({})</td>",
                        if p.report.different > 0 { " bad" } else { "" },
                        p.report.different,
                        p.report.clusters.len()
                    )),
                    None => o.push_str("<td></td>"),
                }
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</table>\n");
        for p in &self.pairs {
            o.push_str(&format!(
                "<details><summary>{} vs {}: {} different</summary><ul>\n",
                e(&p.a),
                e(&p.b),
                p.report.different
            ));
            for c in &p.report.clusters {
                o.push_str(&format!(
                    "<li>{} cases: <code>{}</code></li>\n",
                    c.count,
                    e(&c.signature.join("; "))
                ));
            }
            o.push_str("</ul></details>\n");
        }
        if self.compared_with_previous {
            o.push_str(&format!("<h2>Since the previous run: {} change(s)</h2><ul>\n", self.changes.len()));
            for c in &self.changes {
                o.push_str(&format!(
                    "<li>{} {}: <code>{}</code> ({} &rarr; {})</li>\n",
                    e(&c.change),
                    e(&c.pair),
                    e(&c.signature.join("; ")),
                    c.previous,
                    c.cases
                ));
            }
            o.push_str("</ul>\n");
        }
        o.push_str("</body></html>\n");
        o
    }
}
