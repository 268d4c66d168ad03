//! `replay review` and `replay accept`: the snapshot-review loop for scenario baselines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use harness::scenario::{self, Accepted, Baseline, Scenario};

use crate::output::Ui;

/// Where scenarios are.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The scenarios directory.
    #[arg(long, value_name = "DIR", default_value = "scenarios")]
    pub dir: PathBuf,
}

/// `replay accept`'s options.
#[derive(Debug, Args)]
pub struct AcceptArgs {
    /// Scenario names to accept (default: every scenario with a pending baseline).
    pub scenarios: Vec<String>,
    /// The scenarios directory.
    #[arg(long, value_name = "DIR", default_value = "scenarios")]
    pub dir: PathBuf,
}

/// Every scenario of `dir` with a pending baseline: (name, baseline, pending).
fn pending(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for path in Scenario::discover(dir)? {
        let s = Scenario::load(&path).with_context(|| format!("loading {}", path.display()))?;
        if let Some(b) = s.baseline_path() {
            let p = scenario::pending_path(b);
            if p.is_file() {
                out.push((s.name.clone(), b.to_path_buf(), p));
            }
        }
    }
    Ok(out)
}

/// One change between a baseline and its pending proposal.
enum Change {
    New(Accepted),
    Grown { was: Option<u64>, now: Accepted },
    Vanished(Accepted),
}

fn changes(old: &Baseline, new: &Baseline) -> Vec<Change> {
    let mut v = Vec::new();
    for n in &new.accepted {
        match old.accepted.iter().find(|o| o.signature == n.signature) {
            None => v.push(Change::New(n.clone())),
            Some(o) => {
                if let (Some(was), Some(now)) = (o.cases, n.cases)
                    && now > was + was / 10
                {
                    v.push(Change::Grown { was: o.cases, now: n.clone() });
                }
            }
        }
    }
    for o in &old.accepted {
        if !new.accepted.iter().any(|n| n.signature == o.signature) {
            v.push(Change::Vanished(o.clone()));
        }
    }
    v
}

fn header(name: &str) -> String {
    format!("# Accepted clusters of scenario {name}. Each `note` says why it is accepted.\n\n")
}

/// `replay review`: each new, grown or vanished cluster of each pending baseline, accepted
/// (`y`) or rejected (`n`) one by one from standard input; `s` skips the scenario (its pending
/// file stays). Accepting writes the baseline; the pending file is removed once every change
/// was decided.
pub fn review(args: ReviewArgs, _ui: &Ui) -> anyhow::Result<i32> {
    let list = pending(&args.dir)?;
    let mut out = std::io::stdout().lock();
    if list.is_empty() {
        writeln!(out, "nothing to review: no pending baselines in {}", args.dir.display())?;
        return Ok(crate::exit_codes::OK);
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut undecided = 0;
    for (name, baseline, pend) in list {
        let old = scenario::read_baseline(&baseline)?;
        let new = scenario::read_baseline(&pend)?;
        let changes = changes(&old, &new);
        writeln!(
            out,
            "scenario {name}: {} change(s) ({} vs {})",
            changes.len(),
            baseline.display(),
            pend.display()
        )?;
        let mut result = old.clone();
        let mut skipped = false;
        for c in &changes {
            let (what, sig) = match c {
                Change::New(a) => (format!("NEW cluster, {} cases", a.cases.unwrap_or(0)), &a.signature),
                Change::Grown { was, now } => (
                    format!(
                        "GROWN cluster, {} cases (accepted {})",
                        now.cases.unwrap_or(0),
                        was.unwrap_or(0)
                    ),
                    &now.signature,
                ),
                Change::Vanished(a) => ("VANISHED cluster".to_string(), &a.signature),
            };
            writeln!(out, "  {what}: {}", sig.join("; "))?;
            write!(out, "  accept? [y]es / [n]o / [s]kip scenario: ")?;
            out.flush()?;
            let answer = match lines.next() {
                Some(l) => l?.trim().to_ascii_lowercase(),
                None => "s".into(),
            };
            writeln!(out)?;
            match answer.as_str() {
                "y" | "yes" => match c {
                    Change::New(a) => result.accepted.push(a.clone()),
                    Change::Grown { now, .. } => {
                        if let Some(x) = result.accepted.iter_mut().find(|x| x.signature == now.signature) {
                            x.cases = now.cases;
                        }
                    }
                    Change::Vanished(a) => result.accepted.retain(|x| x.signature != a.signature),
                },
                "n" | "no" => {}
                _ => {
                    skipped = true;
                    break;
                }
            }
        }
        if skipped {
            undecided += 1;
            writeln!(out, "  skipped: {} stays for later", pend.display())?;
            continue;
        }
        scenario::write_baseline(&baseline, &result, &header(&name))?;
        std::fs::remove_file(&pend).with_context(|| format!("removing {}", pend.display()))?;
        writeln!(out, "  wrote {} ({} accepted clusters)", baseline.display(), result.accepted.len())?;
    }
    Ok(if undecided > 0 { crate::exit_codes::DIFFERENCES } else { crate::exit_codes::OK })
}

/// `replay accept [SCENARIO...]`: every pending baseline (or those of the named scenarios)
/// becomes the baseline.
pub fn accept(args: AcceptArgs, _ui: &Ui) -> anyhow::Result<i32> {
    let list = pending(&args.dir)?;
    for want in &args.scenarios {
        if !list.iter().any(|(n, ..)| n == want) {
            bail!("scenario {want:?} has no pending baseline in {}", args.dir.display());
        }
    }
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    for (name, baseline, pend) in list {
        if !args.scenarios.is_empty() && !args.scenarios.contains(&name) {
            continue;
        }
        std::fs::rename(&pend, &baseline)
            .with_context(|| format!("moving {} to {}", pend.display(), baseline.display()))?;
        writeln!(out, "accepted {name}: {}", baseline.display())?;
        n += 1;
    }
    if n == 0 {
        writeln!(out, "nothing to accept: no pending baselines in {}", args.dir.display())?;
    }
    Ok(crate::exit_codes::OK)
}
