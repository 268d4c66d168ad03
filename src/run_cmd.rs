//! `replay targets` and `replay run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use harness::engine::{self, Filter, Selection, Shard};
use harness::{Config, RunInfo, RunWriter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Ui;

/// Where `replay.toml` is: `--config`, else the working directory's.
pub fn load_config(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => Config::find(Path::new(".")).ok_or_else(|| {
            anyhow::anyhow!("no replay.toml in the working directory; give one with --config FILE")
        })?,
    };
    Ok(Config::load(&path)?)
}

/// The corpus a command works on: `--corpus`, else `corpus` in replay.toml; opened.
pub fn open_corpus(cfg: &Config, explicit: Option<&Path>) -> anyhow::Result<(PathBuf, corpora::Corpus)> {
    let dir = match (explicit, cfg.corpus()) {
        (Some(c), _) => c.to_path_buf(),
        (None, Some(c)) => c,
        (None, None) => bail!("no corpus: give --corpus DIR or set `corpus` in {}", cfg.path.display()),
    };
    let corpus = corpora::Corpus::open(&dir).with_context(|| format!("opening corpus {}", dir.display()))?;
    Ok((dir, corpus))
}

/// `replay run`'s options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The target, by its name in replay.toml.
    #[arg(long, short = 't', value_name = "NAME")]
    pub target: String,
    /// The corpus (default: `corpus` in replay.toml).
    #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// The run directory to write (must not exist or be empty).
    #[arg(long, short = 'o', value_name = "RUN_DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Case selection, shared by the commands that run cases.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Only cases matching: `kind=http|packet|message`, `id=HEXPREFIX`, `tag.KEY=VALUE`;
    /// terms separated by commas; repeat to add more. All must hold.
    #[arg(long, value_name = "TERMS")]
    pub filter: Vec<String>,
    /// At most this many cases (after filter and shard).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Run shard K of N (1-based) by case id: N runs together cover each case exactly once.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Replay with the capture's spacing scaled by X (2 = twice as fast); default: as fast as
    /// the targets' limits allow.
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Cases in flight at once (default: the target's own).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

impl SelectArgs {
    /// The engine's selection from the flags.
    pub fn selection(&self) -> anyhow::Result<Selection> {
        let mut filter = Filter::default();
        for f in &self.filter {
            filter.add(f).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
        }
        Ok(Selection { filter, shard: self.shard, limit: self.limit, speed: self.speed })
    }
}

/// `replay targets`: each target, its kind, and whether it loads.
pub fn targets(config: Option<&Path>, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = load_config(config)?;
    let registry = crate::natives::registry();
    let mut failed = 0;
    let mut out = std::io::stdout().lock();
    let width = cfg.targets.keys().map(|k| k.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:width$}  {:8}  status", "name", "kind")?;
    for (name, (def, line)) in &cfg.targets {
        let kind = format!("{:?}", def.kind).to_lowercase();
        let start = Instant::now();
        match cfg.load_target(name, &registry) {
            Ok(t) => writeln!(
                out,
                "{name:width$}  {kind:8}  ok ({:.0} ms)  {}",
                start.elapsed().as_secs_f64() * 1000.0,
                t.detail
            )?,
            Err(e) => {
                failed += 1;
                writeln!(out, "{name:width$}  {kind:8}  FAILED: {e} ({}:{line})", cfg.path.display())?;
            }
        }
    }
    if failed > 0 {
        ui.note(format!("{failed} of {} targets failed to load", cfg.targets.len()));
        return Ok(crate::exit_codes::INPUT_ERROR);
    }
    Ok(crate::exit_codes::OK)
}

/// `replay run`.
pub fn run(config: Option<&Path>, args: RunArgs, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = load_config(config)?;
    let (corpus_dir, corpus) = open_corpus(&cfg, args.corpus.as_deref())?;
    let sel = args.select.selection()?;
    let mut target = cfg.load_target(&args.target, &crate::natives::registry())?;
    if let Some(n) = args.select.concurrency {
        if n == 0 {
            bail!("--concurrency must be at least 1");
        }
        target.concurrency = n;
    }
    let started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let info = RunInfo {
        target: target.name.clone(),
        kind: target.kind.clone(),
        detail: target.detail.clone(),
        corpus: corpus_dir.clone(),
        filters: args.select.filter.clone(),
        shard: args.select.shard.map(|s| s.to_string()),
        limit: args.select.limit,
        started_unix,
        outcomes: Default::default(),
        seconds: 0.0,
    };
    let mut writer = RunWriter::create(&args.out, info)
        .with_context(|| format!("creating run directory {}", args.out.display()))?;
    let bar = cases_bar(ui, corpus.manifest().counts.records, &format!("run {}", target.name));
    let start = Instant::now();
    let summary =
        engine::run(&corpus, std::slice::from_ref(&target), &sel, &mut writer, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let info = writer.close(secs).with_context(|| format!("closing run directory {}", args.out.display()))?;
    for p in &summary.problems {
        eprintln!("warning: {p}");
    }
    if !ui.is_quiet() {
        let mut out = std::io::stdout().lock();
        let outcomes: Vec<String> = info.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        writeln!(
            out,
            "ran {} cases through {} ({}) in {:.2} s ({:.0} cases/s): {}",
            summary.cases,
            target.name,
            target.kind,
            secs,
            summary.cases as f64 / secs.max(1e-9),
            if outcomes.is_empty() { "nothing".to_string() } else { outcomes.join(", ") }
        )?;
        if summary.filtered_out + summary.other_shards > 0 {
            writeln!(
                out,
                "  selected {} of {} cases read ({} filtered out, {} in other shards)",
                summary.cases, summary.read, summary.filtered_out, summary.other_shards
            )?;
        }
        writeln!(out, "  observations in {}", args.out.display())?;
    }
    Ok(if summary.problems.is_empty() { crate::exit_codes::OK } else { crate::exit_codes::INPUT_ERROR })
}

/// A progress bar of cases (hidden unless both stdout and stderr are terminals).
pub fn cases_bar(ui: &Ui, total: u64, what: &str) -> ProgressBar {
    if !crate::progress_allowed(ui.is_quiet()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} cases {per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
