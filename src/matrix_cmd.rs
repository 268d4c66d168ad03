//! `replay matrix`: the nightly cross-environment run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use harness::matrix::{Matrix, Pair};
use harness::report::{Clusterer, Side};
use harness::run::SavedTarget;
use harness::{Loaded, RunInfo, RunWriter, engine};

use crate::output::Ui;
use crate::run_cmd::{SelectArgs, load_config, open_corpus};

/// `replay matrix`'s options.
#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// The targets, comma-separated (default: every target in replay.toml).
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub targets: Vec<String>,
    /// Diff every target against this one (default: the first target).
    #[arg(long, value_name = "TARGET", conflicts_with = "all_pairs")]
    pub reference: Option<String>,
    /// Diff every pair of targets instead of each against a reference.
    #[arg(long)]
    pub all_pairs: bool,
    /// The corpus (default: `corpus` in replay.toml).
    #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Where to keep each target's run and the matrix (`runs/NAME`, `matrix.json`).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// The previous night's matrix.json: report new, grown and vanished clusters.
    #[arg(long, value_name = "MATRIX_JSON")]
    pub previous: Option<PathBuf>,
    /// A cluster has grown when it has more than this fraction more cases than before.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1)]
    pub grow_threshold: f64,
    /// Print matrix.json instead of the terminal view.
    #[arg(long)]
    pub json: bool,
    /// Also write the matrix as Markdown.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write the matrix as HTML.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `replay matrix`: each target run once and saved, pairs diffed from the saved runs, the
/// change since `--previous`. Exit 1 only on a new or grown cluster.
pub fn matrix(config: Option<&std::path::Path>, args: MatrixArgs, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = load_config(config)?;
    let (corpus_dir, corpus) = open_corpus(&cfg, args.corpus.as_deref())?;
    let targets: Vec<String> =
        if args.targets.is_empty() { cfg.targets.keys().cloned().collect() } else { args.targets.clone() };
    if targets.len() < 2 {
        bail!("a matrix needs at least two targets; give --targets A,B,...");
    }
    let reference = if args.all_pairs {
        None
    } else {
        Some(args.reference.clone().unwrap_or_else(|| targets[0].clone()))
    };
    if let Some(r) = &reference
        && !targets.contains(r)
    {
        bail!("--reference {r} is not one of --targets {}", targets.join(","));
    }
    let sel = args.select.selection()?;
    let registry = crate::natives::registry();
    let runs = args.out.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    // Each target once, saved.
    for name in &targets {
        let mut t = cfg.load_target(name, &registry)?;
        if let Some(n) = args.select.concurrency {
            t.concurrency = n;
        }
        let dir = runs.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
        }
        let info = RunInfo {
            target: t.name.clone(),
            kind: t.kind.clone(),
            detail: t.detail.clone(),
            corpus: corpus_dir.clone(),
            filters: args.select.filter.clone(),
            shard: args.select.shard.map(|s| s.to_string()),
            limit: args.select.limit,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            outcomes: Default::default(),
            seconds: 0.0,
        };
        let mut w = RunWriter::create(&dir, info)?;
        let start = std::time::Instant::now();
        engine::run(&corpus, std::slice::from_ref(&t), &sel, &mut w, &mut |_| {})?;
        let info = w.close(start.elapsed().as_secs_f64())?;
        ui.note(format!("ran {name}: {:?}", info.outcomes));
    }
    // Pairs, from the saved runs.
    let pairs: Vec<(String, String)> = match &reference {
        Some(r) => targets.iter().filter(|t| *t != r).map(|t| (r.clone(), t.clone())).collect(),
        None => {
            let mut v = Vec::new();
            for (i, a) in targets.iter().enumerate() {
                for b in &targets[i + 1..] {
                    v.push((a.clone(), b.clone()));
                }
            }
            v
        }
    };
    let rules = cfg.rules();
    let saved = |name: &str| -> anyhow::Result<Loaded> {
        let t = SavedTarget::open(&runs.join(name))?;
        for problem in t.problems() {
            eprintln!("warning: saved run {name}: {problem}");
        }
        Ok(Loaded {
            name: name.to_string(),
            kind: t.info().kind.clone(),
            detail: format!("saved run of {}", t.info().target),
            concurrency: 2,
            rps: None,
            target: Arc::new(t),
        })
    };
    let mut out_pairs = Vec::new();
    for (a, b) in pairs {
        let (sa, sb) = (saved(&a)?, saved(&b)?);
        let mut c = Clusterer::new(&rules, false);
        let s = engine::run(&corpus, &[sa.clone(), sb.clone()], &sel, &mut c, &mut |_| {})?;
        let report = c.finish(
            Side { name: a.clone(), kind: sa.kind.clone(), detail: sa.detail.clone() },
            Side { name: b.clone(), kind: sb.kind.clone(), detail: sb.detail.clone() },
            corpus_dir.display().to_string(),
            args.select.filter.iter().map(|f| format!("--filter {f}")).collect(),
            s.problems,
        );
        out_pairs.push(Pair { a, b, report });
    }
    let mut m = Matrix {
        format_version: 1,
        targets,
        reference,
        pairs: out_pairs,
        changes: Vec::new(),
        compared_with_previous: false,
    };
    if let Some(p) = &args.previous {
        let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let prev: Matrix =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a matrix.json", p.display()))?;
        m.compare_with(&prev, args.grow_threshold);
    }
    let json = serde_json::to_vec_pretty(&m)?;
    std::fs::write(args.out.join("matrix.json"), &json)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(f) = &args.markdown {
        std::fs::write(f, m.markdown()).with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.html {
        std::fs::write(f, m.html()).with_context(|| format!("writing {}", f.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(&json)?;
        writeln!(out)?;
    } else {
        out.write_all(m.terminal().as_bytes())?;
    }
    Ok(if m.regressed() { crate::exit_codes::DIFFERENCES } else { crate::exit_codes::OK })
}
