//! `replay diff` and `replay show`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use harness::diff::{Rule, Rules, Selector, Tolerance};
use harness::engine;
use harness::report::{Clusterer, Side};
use harness::run::SavedTarget;
use harness::{Config, Loaded};

use crate::output::Ui;
use crate::run_cmd::{SelectArgs, load_config, open_corpus};

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
    /// A misses file of `replay serve` (the requests a build sent its played-back upstream
    /// that matched no recorded one): each line joins the report as a differing case, under
    /// `$.upstream_request`, clustered like any other difference. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub misses: Vec<PathBuf>,
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
    /// Also write the report as JUnit XML (one test case per cluster) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write the report as Markdown (for a CI job summary) to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// List every differing and inconclusive case, not only each cluster's example.
    #[arg(long)]
    pub verbose: bool,
    /// Learn noise: run each live side twice and subtract what differs between two runs of
    /// the same build (reported separately, never dropped silently).
    #[arg(long)]
    pub noise: bool,
    /// With --noise: the second run of side A is this target instead of A again.
    #[arg(long, value_name = "TARGET", requires = "noise")]
    pub replica_a: Option<String>,
    /// With --noise: the second run of side B is this target instead of B again.
    #[arg(long, value_name = "TARGET", requires = "noise")]
    pub replica_b: Option<String>,
    /// Show this many clusters in full (the table lists them all).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub examples: usize,
}

fn side(cfg: &Config, name: &str) -> anyhow::Result<Loaded> {
    let p = Path::new(name);
    if p.join("manifest.json").is_file() {
        let t = SavedTarget::open(p).with_context(|| format!("opening saved run {name}"))?;
        for problem in t.problems() {
            eprintln!("warning: saved run {name}: {problem}");
        }
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

fn side_of(cfg: &Config, name: &str, concurrency: Option<usize>) -> anyhow::Result<Loaded> {
    let mut t = side(cfg, name)?;
    if let Some(n) = concurrency {
        t.concurrency = n;
    }
    Ok(t)
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
    let (corpus_dir, corpus) = open_corpus(&cfg, args.corpus.as_deref())?;
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
    let mut targets = vec![a.clone(), b.clone()];
    if args.noise {
        let replica = |r: &Option<String>, side: &Loaded| -> anyhow::Result<Loaded> {
            match r {
                Some(name) => side_of(&cfg, name, args.select.concurrency),
                None => Ok(side.clone()),
            }
        };
        targets.push(replica(&args.replica_a, &a)?);
        targets.push(replica(&args.replica_b, &b)?);
    }
    let summary = engine::run(&corpus, &targets, &sel, &mut clusterer, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let mut problems = summary.problems.clone();
    for f in &args.misses {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match harness::playback::miss_diff(line) {
                Ok((case, d)) => clusterer.add(&case, d),
                Err(why) => problems.push(format!("{}:{}: {why}", f.display(), i + 1)),
            }
        }
    }
    let mut selection = Vec::new();
    selection.extend(args.select.filter.iter().map(|f| format!("--filter {f}")));
    selection.extend(args.misses.iter().map(|f| format!("--misses {}", f.display())));
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
        problems,
    );
    if let Some(f) = &args.junit {
        std::fs::write(f, harness::render::junit(&report))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.markdown {
        std::fs::write(f, harness::render::markdown(&report, args.examples))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.html {
        std::fs::write(f, harness::render::html(&report))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        out.write_all(harness::render::terminal(&report, args.examples, colour).as_bytes())?;
    }
    Ok(if !report.problems.is_empty() {
        crate::exit_codes::INPUT_ERROR
    } else if report.different > 0 {
        crate::exit_codes::DIFFERENCES
    } else {
        crate::exit_codes::OK
    })
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
    let (_, corpus) = open_corpus(&cfg, args.corpus.as_deref())?;
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

/// `replay noise learn`'s options.
#[derive(Debug, Args)]
pub struct NoiseLearnArgs {
    /// A target to run twice.
    #[arg(long, value_name = "TARGET")]
    pub a: String,
    /// Another target to run twice (optional).
    #[arg(long, value_name = "TARGET")]
    pub b: Option<String>,
    /// The corpus (default: `corpus` in replay.toml).
    #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Where to write the proposed rules (a TOML `[diff]` table to review).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
}

/// `replay noise learn`: runs each target twice over the corpus and writes the paths that
/// differed between two runs of the same build as proposed `ignore` rules, for a person to
/// review and commit.
pub fn noise_learn(config: Option<&Path>, args: NoiseLearnArgs, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = load_config(config)?;
    let (corpus_dir, corpus) = open_corpus(&cfg, args.corpus.as_deref())?;
    let mut names = vec![args.a.clone()];
    names.extend(args.b.clone());
    let mut targets = Vec::new();
    for n in &names {
        let t = side_of(&cfg, n, args.select.concurrency)?;
        targets.push(t.clone());
        targets.push(t);
    }
    let rules = cfg.rules();
    // shape -> (cases, targets it was seen on)
    let mut seen: std::collections::BTreeMap<String, (u64, std::collections::BTreeSet<String>)> =
        Default::default();
    let mut cases = 0u64;
    let bar = crate::run_cmd::cases_bar(ui, corpus.manifest().counts.records, "noise");
    let sel = args.select.selection()?;
    let summary = engine::run(
        &corpus,
        &targets,
        &sel,
        &mut |_: &corpora::Case, obs: Vec<harness::Observation>| {
            cases += 1;
            for (i, pair) in obs.chunks(2).enumerate() {
                let d = harness::diff::compare(&pair[0], &pair[1], &rules);
                let mut shapes: Vec<String> = d.differences.into_iter().map(|d| d.shape).collect();
                shapes.sort();
                shapes.dedup();
                for s in shapes {
                    let e = seen.entry(s).or_default();
                    e.0 += 1;
                    e.1.insert(names[i].clone());
                }
            }
            Ok::<bool, harness::engine::EngineError>(true)
        },
        &mut |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    let mut entries: Vec<_> = seen.into_iter().collect();
    entries.sort_by(|x, y| y.1.0.cmp(&x.1.0).then_with(|| x.0.cmp(&y.0)));
    let mut text = format!(
        "# Proposed by `replay noise learn` from {cases} cases of {}: paths that differed between two\n\
         # runs of the same build ({}). Review each one; move the ones you accept into the [diff]\n\
         # table of replay.toml. Nothing here is applied until you do.\n[diff]\nignore = [\n",
        corpus_dir.display(),
        names.join(", ")
    );
    for (shape, (n, on)) in &entries {
        let on: Vec<&str> = on.iter().map(String::as_str).collect();
        text.push_str(&format!(
            "    {},  # differed in {n} of {cases} cases ({})\n",
            toml::Value::String(shape.clone()),
            on.join(", ")
        ));
    }
    text.push_str("]\n");
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    if !ui.is_quiet() {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} noisy path{} in {cases} cases; proposed rules written to {} for review",
            entries.len(),
            if entries.len() == 1 { "" } else { "s" },
            args.out.display()
        )?;
    }
    Ok(if summary.problems.is_empty() { crate::exit_codes::OK } else { crate::exit_codes::INPUT_ERROR })
}

/// `replay report merge`'s options.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard reports (`replay diff --shard K/N --json > shard-K.json`).
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Print the merged report as JSON instead of the terminal view.
    #[arg(long)]
    pub json: bool,
    /// Also write it as JUnit XML.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write it as Markdown.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write it as HTML.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// For matrices: the previous night's matrix.json, to report new, grown and vanished
    /// clusters of the merged matrix.
    #[arg(long, value_name = "MATRIX_JSON")]
    pub previous: Option<PathBuf>,
    /// For matrices: a cluster has grown past this fraction more cases.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1)]
    pub grow_threshold: f64,
}

/// Merges shard matrices (files with `pairs`): exit 1 only on new or grown clusters.
fn merge_matrices(args: &MergeArgs, texts: &[Vec<u8>]) -> anyhow::Result<i32> {
    let mut shards = Vec::new();
    for (t, p) in texts.iter().zip(&args.reports) {
        let m: harness::matrix::Matrix = serde_json::from_slice(t)
            .with_context(|| format!("{} is not a replay matrix.json", p.display()))?;
        shards.push(m);
    }
    let mut m = harness::matrix::Matrix::merge(&shards)?;
    if let Some(p) = &args.previous {
        let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let prev: harness::matrix::Matrix =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a matrix.json", p.display()))?;
        m.compare_with(&prev, args.grow_threshold);
    }
    if let Some(f) = &args.markdown {
        std::fs::write(f, m.markdown()).with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.html {
        std::fs::write(f, m.html()).with_context(|| format!("writing {}", f.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &m)?;
        writeln!(out)?;
    } else {
        out.write_all(m.terminal().as_bytes())?;
    }
    Ok(if m.regressed() { crate::exit_codes::DIFFERENCES } else { crate::exit_codes::OK })
}

/// `replay report merge`: shard reports (or shard matrices) joined into what one unsharded
/// run gives. A diff report exits 1 if any case differs; a matrix only on new or grown
/// clusters against `--previous`.
pub fn merge(args: MergeArgs, _ui: &Ui) -> anyhow::Result<i32> {
    let mut texts = Vec::new();
    for p in &args.reports {
        texts.push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    let is_matrix =
        serde_json::from_slice::<serde_json::Value>(&texts[0]).is_ok_and(|v| v.get("pairs").is_some());
    if is_matrix {
        return merge_matrices(&args, &texts);
    }
    let mut reports = Vec::new();
    for (text, p) in texts.iter().zip(&args.reports) {
        let r: harness::report::Report = serde_json::from_slice(text)
            .with_context(|| format!("{} is not a replay diff --json report", p.display()))?;
        reports.push(r);
    }
    let report = harness::report::merge(&reports)?;
    if let Some(f) = &args.junit {
        std::fs::write(f, harness::render::junit(&report))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.markdown {
        std::fs::write(f, harness::render::markdown(&report, 5))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.html {
        std::fs::write(f, harness::render::html(&report))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(harness::render::terminal(&report, 5, false).as_bytes())?;
    }
    Ok(if report.different > 0 { crate::exit_codes::DIFFERENCES } else { crate::exit_codes::OK })
}

/// `replay serve`'s options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The corpus whose HTTP exchanges are played back (default: `corpus` in replay.toml).
    #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// Where to listen (loopback by default).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Stream recorded responses with their recorded chunk timing scaled by X (2 = twice as
    /// fast, 0.5 = half as fast); by default at the recorded pace.
    #[arg(long, value_name = "X", default_value_t = 1.0, conflicts_with = "fast")]
    pub speed: f64,
    /// Send every chunk as fast as possible, ignoring the recorded timing.
    #[arg(long)]
    pub fast: bool,
    /// Append each request that matched nothing to this file (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub misses: Option<PathBuf>,
}

/// `replay serve`: the recorded upstream, played back. Prints `listening on ADDR`.
pub fn serve(config: Option<&Path>, args: ServeArgs, ui: &Ui) -> anyhow::Result<i32> {
    let cfg = match config.map(Path::to_path_buf).or_else(|| Config::find(Path::new("."))) {
        Some(p) => Some(Config::load(&p)?),
        None => None,
    };
    let dir = match (&args.corpus, cfg.as_ref().and_then(Config::corpus)) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c,
        (None, None) => bail!("no corpus: give --corpus DIR"),
    };
    let corpus = corpora::Corpus::open(&dir).with_context(|| format!("opening corpus {}", dir.display()))?;
    let rules = cfg.as_ref().map(Config::rules).unwrap_or_default();
    let misses = match &args.misses {
        Some(p) => {
            let mut o = std::fs::OpenOptions::new();
            o.create(true).append(true);
            // It holds request bodies, as a corpus does: owner-only, as corpus files are.
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            Some(o.open(p).with_context(|| format!("opening {}", p.display()))?)
        }
        None => None,
    };
    let speed = (!args.fast).then_some(args.speed);
    if let Some(s) = speed
        && !(s.is_finite() && s > 0.0)
    {
        bail!("--speed {s}: must be a positive number");
    }
    let mut problems = 0;
    let cases = corpus.cases().filter_map(|c| match c {
        Ok(c) => Some(c),
        Err(p) => {
            ui.problem(&p);
            problems += 1;
            None
        }
    });
    let redactor = crate::record_cmd::redactor(config)?;
    let playback = Arc::new(
        harness::playback::Playback::new(cases, rules, speed, misses)
            .with_request_hook(Box::new(move |case| redactor.case(case))),
    );
    let listener =
        std::net::TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "listening on {addr} ({} recorded exchanges from {})",
        playback.exchanges(),
        dir.display()
    )?;
    out.flush()?;
    drop(out);
    playback.serve(listener).context("replay serve")?;
    Ok(crate::exit_codes::OK)
}
