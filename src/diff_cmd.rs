//! `replay diff` and `replay show`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use harness::diff::{Rule, Rules, Selector, Tolerance};
use harness::engine;
use harness::report::{Clusterer, Report, Side};
use harness::run::SavedTarget;
use harness::{Config, Loaded};

use crate::output::Ui;
use crate::run_cmd::{SelectArgs, load_config};

/// `replay diff`'s options.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Side A: a target name from replay.toml, or a saved run directory.
    #[arg(long, value_name = "TARGET|RUN_DIR")]
    pub a: String,
    /// Side B: a target name from replay.toml, or a saved run directory.
    #[arg(long, value_name = "TARGET|RUN_DIR")]
    pub b: String,
    /// The corpus (default: `corpus` in replay.toml).
    #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Ignore differences at this path selector (`$.metadata`, `$..request_id`,
    /// `$.items[*].ts`); repeatable. Added to the `[diff]` rules of replay.toml.
    #[arg(long, value_name = "SELECTOR")]
    pub ignore: Vec<String>,
    /// Compare the arrays at this selector as unordered; repeatable.
    #[arg(long, value_name = "SELECTOR")]
    pub unordered: Vec<String>,
    /// Numeric tolerance at a selector: `SELECTOR=ABS` or `SELECTOR=ABS,REL`; repeatable.
    #[arg(long, value_name = "SELECTOR=ABS[,REL]")]
    pub tolerance: Vec<String>,
    /// Print the report as JSON (docs/report-format.md) instead of the terminal view.
    #[arg(long)]
    pub json: bool,
    /// List every differing and inconclusive case, not only each cluster's example.
    #[arg(long)]
    pub verbose: bool,
    /// Show this many clusters in full (the table lists them all).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub examples: usize,
}

fn side(cfg: &Config, name: &str) -> anyhow::Result<Loaded> {
    let p = Path::new(name);
    if p.join("manifest.json").is_file() {
        let t = SavedTarget::open(p).with_context(|| format!("opening saved run {name}"))?;
        let info = t.info().clone();
        return Ok(Loaded {
            name: name.to_string(),
            kind: "saved run".into(),
            detail: format!("{} ({}) saved run", info.target, info.kind),
            concurrency: 2,
            rps: None,
            target: Arc::new(t),
        });
    }
    Ok(cfg.load_target(name, &crate::natives::registry())?)
}

fn rules(cfg: &Config, args: &DiffArgs) -> anyhow::Result<Rules> {
    let mut r = cfg.rules();
    for s in &args.ignore {
        r.ignore.push(Rule::new(Selector::parse(s).map_err(anyhow::Error::msg)?, (), "--ignore"));
    }
    for s in &args.unordered {
        r.unordered.push(Rule::new(Selector::parse(s).map_err(anyhow::Error::msg)?, (), "--unordered"));
    }
    for t in &args.tolerance {
        let (sel, nums) = t
            .rsplit_once('=')
            .ok_or_else(|| anyhow::anyhow!("--tolerance {t:?}: expected SELECTOR=ABS[,REL]"))?;
        let mut it = nums.split(',').map(|n| n.trim().parse::<f64>());
        let abs = it.next().and_then(Result::ok);
        let rel = it.next().map(|r| r.ok());
        let (Some(abs), Some(rel)) = (abs, rel.unwrap_or(Some(0.0))) else {
            bail!("--tolerance {t:?}: ABS and REL must be numbers");
        };
        r.tolerance.push(Rule::new(
            Selector::parse(sel).map_err(anyhow::Error::msg)?,
            Tolerance { abs, rel },
            "--tolerance",
        ));
    }
    Ok(r)
}

/// `replay diff`.
pub fn diff(config: Option<&Path>, args: DiffArgs, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = load_config(config)?;
    let corpus_dir = match (&args.corpus, cfg.corpus()) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c,
        (None, None) => bail!("no corpus: give --corpus DIR or set `corpus` in {}", cfg.path.display()),
    };
    let corpus = corpora::Corpus::open(&corpus_dir)
        .with_context(|| format!("opening corpus {}", corpus_dir.display()))?;
    let rules = rules(&cfg, &args)?;
    let mut a = side(&cfg, &args.a)?;
    let mut b = side(&cfg, &args.b)?;
    if let Some(n) = args.select.concurrency {
        a.concurrency = n;
        b.concurrency = n;
    }
    let sel = args.select.selection()?;
    let mut clusterer = Clusterer::new(&rules, args.verbose);
    let bar = crate::run_cmd::cases_bar(ui, corpus.manifest().counts.records, "diff");
    let summary =
        engine::run(&corpus, &[a.clone(), b.clone()], &sel, &mut clusterer, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let mut selection = Vec::new();
    selection.extend(args.select.filter.iter().map(|f| format!("--filter {f}")));
    if let Some(s) = args.select.shard {
        selection.push(format!("--shard {s}"));
    }
    if let Some(l) = args.select.limit {
        selection.push(format!("--limit {l}"));
    }
    let report = clusterer.finish(
        Side { name: a.name.clone(), kind: a.kind.clone(), detail: a.detail.clone() },
        Side { name: b.name.clone(), kind: b.kind.clone(), detail: b.detail.clone() },
        corpus_dir.display().to_string(),
        selection,
        summary.problems.clone(),
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        out.write_all(render_terminal(&report, args.examples, colour).as_bytes())?;
    }
    Ok(if !report.problems.is_empty() {
        crate::exit_codes::INPUT_ERROR
    } else if report.different > 0 {
        crate::exit_codes::DIFFERENCES
    } else {
        crate::exit_codes::OK
    })
}

/// The terminal view of a report.
pub fn render_terminal(r: &Report, full: usize, colour: bool) -> String {
    let paint = |code: &str, s: &str| if colour { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() };
    let mut o = String::new();
    o.push_str(&format!(
        "{} {} ({}) vs {} ({}) on {}{}\n",
        paint("1", "replay diff:"),
        r.a.name,
        r.a.kind,
        r.b.name,
        r.b.kind,
        r.corpus,
        if r.selection.is_empty() { String::new() } else { format!(" [{}]", r.selection.join(" ")) }
    ));
    o.push_str(&format!(
        "{} cases: {} same, {} different, {} inconclusive\n",
        r.cases,
        paint("32", &r.same.to_string()),
        paint(if r.different > 0 { "31" } else { "32" }, &r.different.to_string()),
        r.inconclusive
    ));
    for (why, n) in &r.inconclusive_reasons {
        o.push_str(&format!("  inconclusive: {n} x {why}\n"));
    }
    if !r.clusters.is_empty() {
        o.push_str(&format!(
            "\n{} cluster{}:\n",
            r.clusters.len(),
            if r.clusters.len() == 1 { "" } else { "s" }
        ));
        o.push_str("   #    cases   share  differences\n");
        for (i, c) in r.clusters.iter().enumerate() {
            for (j, s) in c.signature.iter().enumerate() {
                if j == 0 {
                    o.push_str(&format!("{:>4} {:>8} {:>6.1}%  {s}\n", i + 1, c.count, c.share * 100.0));
                } else {
                    o.push_str(&format!("{:>4} {:>8} {:>7}  {s}\n", "", "", ""));
                }
            }
        }
    }
    for (i, c) in r.clusters.iter().enumerate().take(full) {
        o.push_str(&format!(
            "\n{} {} cases ({:.1}%)\n",
            paint("1", &format!("cluster {}:", i + 1)),
            c.count,
            c.share * 100.0
        ));
        let ex: Vec<String> =
            c.examples.iter().map(|e| format!("{} ({}, {} B)", e.case, e.kind, e.size)).collect();
        o.push_str(&format!("  smallest examples: {}\n", ex.join(", ")));
        o.push_str(&format!("  case {}:\n", c.examples[0].case));
        o.push_str(&side_by_side(&c.representative, &r.a.name, &r.b.name, &paint));
        for cmd in &c.reproduce {
            o.push_str(&format!("  reproduce: {cmd}\n"));
        }
        if let Some(curl) = &c.curl {
            o.push_str(&format!("  request:   {curl}\n"));
        }
    }
    if r.clusters.len() > full {
        o.push_str(&format!(
            "\n({} more clusters in the table above; --examples N shows more)\n",
            r.clusters.len() - full
        ));
    }
    for e in &r.verbose {
        o.push_str(&format!("\ncase {} ({:?})", e.case, e.diff.verdict).to_lowercase());
        if let Some(why) = &e.diff.reason {
            o.push_str(&format!(": {why}"));
        }
        o.push('\n');
        o.push_str(&side_by_side(&e.diff.differences, &r.a.name, &r.b.name, &paint));
    }
    for u in &r.unused_rules {
        o.push_str(&format!(
            "{} {} rule {} ({}) changed nothing in this run\n",
            paint("33", "warning:"),
            u.kind,
            u.selector,
            u.origin
        ));
    }
    for p in &r.problems {
        o.push_str(&format!("{} {p}\n", paint("33", "warning:")));
    }
    o
}

fn side_by_side(
    diffs: &[harness::diff::Difference],
    a: &str,
    b: &str,
    paint: &dyn Fn(&str, &str) -> String,
) -> String {
    const SHOWN: usize = 20;
    let w = diffs.iter().take(SHOWN).map(|d| d.path.chars().count()).max().unwrap_or(4).clamp(4, 48);
    let col = 42;
    let cut = |s: &str| {
        if s.chars().count() > col {
            format!("{}…", s.chars().take(col - 1).collect::<String>())
        } else {
            s.to_string()
        }
    };
    let mut o = format!(
        "    {:w$}  {:15}  {:col$}  {}\n",
        "path",
        "kind",
        cut(&format!("A: {a}")),
        cut(&format!("B: {b}"))
    );
    for d in diffs.iter().take(SHOWN) {
        let (x, y) = (d.a.clone().unwrap_or_else(|| "-".into()), d.b.clone().unwrap_or_else(|| "-".into()));
        o.push_str(&format!(
            "    {:w$}  {:15}  {}  {}\n",
            d.path,
            d.kind.name(),
            paint("31", &format!("{:col$}", cut(&x))),
            paint("32", &cut(&y))
        ));
        if let Some(detail) = &d.detail {
            o.push_str(&format!("    {:w$}  {detail}\n", ""));
        }
    }
    if diffs.len() > SHOWN {
        o.push_str(&format!("    ... and {} more differences\n", diffs.len() - SHOWN));
    }
    o
}

/// `replay show`'s options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The case id (4 or more hex digits of it).
    pub case: String,
    /// Run it through this target (or read it from this saved run) and print the observation.
    #[arg(long, short = 't', value_name = "TARGET|RUN_DIR")]
    pub target: String,
    /// The corpus (default: `corpus` in replay.toml).
    #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR")]
    pub corpus: Option<PathBuf>,
}

/// `replay show CASE --target T`: one case through one target, the observation as JSON with
/// the output decoded.
pub fn show(config: Option<&Path>, args: ShowArgs, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = load_config(config)?;
    let corpus_dir = match (&args.corpus, cfg.corpus()) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c,
        (None, None) => bail!("no corpus: give --corpus DIR or set `corpus` in {}", cfg.path.display()),
    };
    let corpus = corpora::Corpus::open(&corpus_dir)
        .with_context(|| format!("opening corpus {}", corpus_dir.display()))?;
    let case = crate::corpus_cmd::find_case(&corpus, &args.case, ui)?;
    let t = side(&cfg, &args.target)?;
    let obs = engine::observe(&t, &case);
    let mut v = serde_json::to_value(&obs)?;
    if let harness::Outcome::Output { output } = &obs.outcome {
        let (value, format) = harness::diff::output_value(output, &Rules::default());
        v["decoded"] = serde_json::json!({ "format": format!("{format:?}").to_lowercase(), "value": value });
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &v)?;
    writeln!(out)?;
    Ok(crate::exit_codes::OK)
}
