//! `replay corpus ...`: stats, ls, show, verify, export, import, compact.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use corpora::{
    Appended, Case, CaseData, CaseId, CaseKind, Corpus, CorpusWriter, IndexStatus, WriterOptions, jsonl,
};
use serde::Serialize;

use crate::output::{Ui, size, time};

/// What to do with a corpus.
#[derive(Debug, Subcommand)]
pub enum CorpusAction {
    /// Count what the corpus holds: cases by kind, flags, sizes, time span, tags.
    Stats {
        /// Print the counts as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the cases, one line each.
    Ls {
        /// Only cases of this kind (http, packet, message).
        #[arg(long, value_parser = parse_kind)]
        kind: Option<CaseKind>,
        /// At most this many lines.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print one case in full, as JSON (the export shape). An id prefix of 4 or more hex
    /// digits will do when it names one case.
    Show {
        /// The case id, or a prefix of it.
        id: String,
    },
    /// Read every record and check checksums, ids, index and manifest. Changes nothing.
    /// Exits 2 if anything is damaged.
    Verify,
    /// Write every case out, one JSON object per line (bodies as text when valid UTF-8, else
    /// `{"base64": ...}`). The file is created readable by its owner only.
    Export {
        /// The output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Append cases from JSON Lines files (`-` for stdin), creating the corpus if needed.
    /// Bad lines are reported with file, line and column and skipped; every good line is kept.
    Import {
        /// JSONL files.
        #[arg(required = true, value_name = "FILE.jsonl")]
        files: Vec<PathBuf>,
    },
    /// Report anything that still looks like a secret: a value in a secret header that is not a
    /// redaction placeholder, an API-key shape or e-mail address in a body. Exit 1 if found.
    Scan,
    /// Rewrite the corpus into full segments, dropping damaged bytes and duplicate records.
    /// Crash-safe: an interrupted compaction leaves the old corpus or the new one.
    Compact,
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per case per line.
    Jsonl,
    /// A HAR 1.2 document of the HTTP exchange cases (other kinds are left out).
    Har,
}

fn parse_kind(s: &str) -> Result<CaseKind, String> {
    CaseKind::from_name(s).ok_or_else(|| format!("unknown kind {s:?}: expected http, packet or message"))
}

pub fn run(
    dir: Option<PathBuf>,
    config: Option<&Path>,
    action: CorpusAction,
    ui: &Ui,
) -> anyhow::Result<i32> {
    let dir = dir.ok_or_else(|| anyhow!("no corpus given: pass --corpus DIR or set REPLAY_CORPUS"))?;
    match action {
        CorpusAction::Stats { json } => stats(&dir, json, ui),
        CorpusAction::Ls { kind, limit } => ls(&dir, kind, limit, ui),
        CorpusAction::Show { id } => show(&dir, &id, ui),
        CorpusAction::Verify => verify(&dir, ui),
        CorpusAction::Export { format, out } => export(&dir, format, out.as_deref(), ui),
        CorpusAction::Scan => scan(&dir, config, ui),
        CorpusAction::Import { files } => import(&dir, &files, ui),
        CorpusAction::Compact => compact(&dir, ui),
    }
}

fn open(dir: &Path) -> anyhow::Result<Corpus> {
    Ok(Corpus::open(dir)?)
}

/// Streams every case through `each`, reporting problems and drawing a progress bar.
fn for_each_case(
    corpus: &Corpus,
    ui: &Ui,
    what: &str,
    mut each: impl FnMut(Case) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut cases = corpus.cases();
    let bar = ui.bytes_bar(cases.total_bytes(), what);
    let mut n = 0u64;
    while let Some(item) = cases.next() {
        match item {
            Ok(case) => {
                if !each(case)? {
                    break;
                }
            }
            Err(p) => ui.problem(&p),
        }
        n += 1;
        if n.is_multiple_of(256) {
            bar.set_position(cases.bytes_read());
        }
    }
    bar.finish_and_clear();
    Ok(())
}

#[derive(Debug, Default, Serialize)]
struct KindStats {
    cases: u64,
    input_bytes: u64,
    output_bytes: u64,
    with_output: u64,
}

#[derive(Debug, Default, Serialize)]
struct Stats {
    corpus: String,
    format_version: u32,
    tool_version: String,
    segments: u64,
    segment_bytes: u64,
    cases: u64,
    by_kind: BTreeMap<&'static str, KindStats>,
    flags: BTreeMap<String, u64>,
    bytes_missing_in_gaps: u64,
    first_time_ns: Option<i64>,
    last_time_ns: Option<i64>,
    tags: BTreeMap<String, u64>,
    duplicates_skipped: u64,
    recordings: usize,
    damaged: u64,
}

fn flag_name(flag: &corpora::Flag) -> String {
    match serde_json::to_value(flag) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
        _ => "unknown".into(),
    }
}

fn io_sizes(data: &CaseData) -> (u64, Option<u64>) {
    match data {
        CaseData::Http(x) => (x.request.body.len() as u64, x.response.as_ref().map(|r| r.body.len() as u64)),
        CaseData::Packet(p) => (p.data.len() as u64, None),
        CaseData::Message(m) => (m.input.len() as u64, m.output.as_ref().map(|o| o.data.len() as u64)),
    }
}

fn stats(dir: &Path, json: bool, ui: &Ui) -> anyhow::Result<i32> {
    let corpus = open(dir)?;
    let m = corpus.manifest();
    let mut s = Stats {
        corpus: dir.display().to_string(),
        format_version: m.format_version,
        tool_version: m.tool_version.clone(),
        segments: corpus.segments().len() as u64,
        segment_bytes: corpus.segment_bytes(),
        duplicates_skipped: m.counts.duplicates_skipped,
        recordings: m.recordings.len(),
        ..Stats::default()
    };
    let damage_before = ui.damage();
    for_each_case(&corpus, ui, "reading", |case| {
        s.cases += 1;
        let k = s.by_kind.entry(case.kind().name()).or_default();
        k.cases += 1;
        let (input, output) = io_sizes(case.data());
        k.input_bytes += input;
        if let Some(o) = output {
            k.output_bytes += o;
            k.with_output += 1;
        }
        for f in &case.flags {
            *s.flags.entry(flag_name(f)).or_default() += 1;
            if let corpora::Flag::TcpGap { bytes_missing } = f {
                s.bytes_missing_in_gaps += bytes_missing;
            }
        }
        if let Some(t) = case.time_ns {
            s.first_time_ns = Some(s.first_time_ns.map_or(t, |f| f.min(t)));
            s.last_time_ns = Some(s.last_time_ns.map_or(t, |l| l.max(t)));
        }
        for key in case.tags.keys() {
            *s.tags.entry(key.clone()).or_default() += 1;
        }
        Ok(true)
    })?;
    s.damaged = ui.damage() - damage_before;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
        return Ok(ui.exit_code());
    }
    writeln!(
        out,
        "corpus {} (format {}, last written by replay {})",
        s.corpus, s.format_version, s.tool_version
    )?;
    writeln!(
        out,
        "  cases       {:>9}  in {} segment{}, {}",
        s.cases,
        s.segments,
        if s.segments == 1 { "" } else { "s" },
        size(s.segment_bytes)
    )?;
    for (kind, k) in &s.by_kind {
        let output = if k.with_output > 0 {
            format!(", {} with recorded output ({})", k.with_output, size(k.output_bytes))
        } else {
            String::new()
        };
        writeln!(out, "  {kind:<10}  {:>9}  input {}{output}", k.cases, size(k.input_bytes))?;
    }
    if !s.flags.is_empty() {
        let list: Vec<String> = s.flags.iter().map(|(f, n)| format!("{f} {n}")).collect();
        writeln!(out, "  flags       {}", list.join(", "))?;
        if s.bytes_missing_in_gaps > 0 {
            writeln!(out, "              {} bytes missing in TCP gaps", s.bytes_missing_in_gaps)?;
        }
    }
    if let (Some(a), Some(b)) = (s.first_time_ns, s.last_time_ns) {
        writeln!(out, "  time        {} .. {}", time(a), time(b))?;
    }
    if !s.tags.is_empty() {
        let list: Vec<String> = s.tags.iter().map(|(t, n)| format!("{t} ({n})")).collect();
        writeln!(out, "  tags        {}", list.join(", "))?;
    }
    if s.duplicates_skipped > 0 {
        writeln!(
            out,
            "  duplicates  {} appends skipped (same input as a case present)",
            s.duplicates_skipped
        )?;
    }
    if s.recordings > 0 {
        writeln!(out, "  recordings  {} (summaries in manifest.json)", s.recordings)?;
    }
    if s.damaged > 0 {
        writeln!(out, "  damaged     {} (see the warnings; `replay corpus verify` for all)", s.damaged)?;
    }
    Ok(ui.exit_code())
}

fn summary(case: &Case) -> String {
    match case.data() {
        CaseData::Http(x) => {
            let r = &x.request;
            let resp = match &x.response {
                Some(resp) => format!("{} ({})", resp.status, size(resp.body.len() as u64)),
                None => "no response".into(),
            };
            format!("{} {} -> {resp}", r.method, r.target)
        }
        CaseData::Packet(p) => {
            let flow = p.flow.map(|f| {
                let proto = match f.protocol {
                    6 => "tcp".to_string(),
                    17 => "udp".to_string(),
                    n => format!("proto {n}"),
                };
                format!(" {proto} {}:{} > {}:{}", f.src, f.src_port, f.dst, f.dst_port)
            });
            format!("link {} {}{}", p.link_type, size(p.data.len() as u64), flow.unwrap_or_default())
        }
        CaseData::Message(m) => {
            let out = m
                .output
                .as_ref()
                .map(|o| format!(" -> {} {}", o.content_type, size(o.data.len() as u64)))
                .unwrap_or_default();
            format!("{} {}{out}", m.content_type, size(m.input.len() as u64))
        }
    }
}

fn ls(dir: &Path, kind: Option<CaseKind>, limit: Option<usize>, ui: &Ui) -> anyhow::Result<i32> {
    let corpus = open(dir)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut shown = 0usize;
    for_each_case(&corpus, ui, "reading", |case| {
        if kind.is_some_and(|k| k != case.kind()) {
            return Ok(true);
        }
        if limit.is_some_and(|l| shown >= l) {
            return Ok(false);
        }
        shown += 1;
        let when = case.time_ns.map(time).unwrap_or_else(|| "-".into());
        let flags: Vec<String> = case.flags.iter().map(flag_name).collect();
        let flags = if flags.is_empty() { String::new() } else { format!("  [{}]", flags.join(",")) };
        writeln!(
            out,
            "{}  {:<7}  {when:<24}  {}{flags}",
            case.id().short(12),
            case.kind().name(),
            summary(&case)
        )?;
        Ok(true)
    })?;
    out.flush()?;
    Ok(ui.exit_code())
}

fn show(dir: &Path, id: &str, ui: &Ui) -> anyhow::Result<i32> {
    let corpus = open(dir)?;
    let case = find_case(&corpus, id, ui)?;
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &case)?;
    writeln!(out)?;
    Ok(ui.exit_code())
}

/// The one case whose id starts with `id` (4 to 32 hex digits).
pub(crate) fn find_case(corpus: &corpora::Corpus, id: &str, ui: &Ui) -> anyhow::Result<corpora::Case> {
    let dir = corpus.dir();
    let prefix = id.to_ascii_lowercase();
    if prefix.len() < 4 || prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid case id {id:?}: expected 4 to 32 hex digits");
    }
    // Only the matches are held, whatever the corpus's size.
    let (matches, problems) = corpus.entries_with_hex_prefix(&prefix)?;
    problems.iter().for_each(|p| ui.problem(p));
    let entry = match matches.as_slice() {
        [] => bail!("no case with id {prefix}... in {}", dir.display()),
        [one] => one,
        many => {
            let ids: Vec<String> = many.iter().take(5).map(|e| CaseId(e.key).to_hex()).collect();
            bail!(
                "case id {prefix} is ambiguous: {} cases start with it ({}, ...)",
                many.len(),
                ids.join(", ")
            );
        }
    };
    corpus.read_entry(entry).map_err(|p| anyhow!("{p}"))
}

fn verify(dir: &Path, ui: &Ui) -> anyhow::Result<i32> {
    let corpus = open(dir)?;
    let bar = ui.bytes_bar(corpus.segment_bytes(), "verifying");
    let report = corpus.verify(|n| bar.set_position(n));
    bar.finish_and_clear();
    for p in &report.problems {
        ui.problem(p);
    }
    let mut out = io::stdout().lock();
    let index = match &report.index {
        IndexStatus::Fresh if report.index_mismatches == 0 => "fresh".to_string(),
        IndexStatus::Fresh => {
            format!("WRONG for {} records (rebuilt on next write or compact)", report.index_mismatches)
        }
        IndexStatus::Missing => "missing (rebuilt on next write)".to_string(),
        IndexStatus::Stale => "stale (brought up to date on next write)".to_string(),
        IndexStatus::Corrupt(why) => format!("DAMAGED: {why} (rebuilt on next write or compact)"),
    };
    writeln!(
        out,
        "{}: {} good records in {} segment(s) ({})",
        dir.display(),
        report.records,
        corpus.segments().len(),
        size(report.bytes)
    )?;
    writeln!(out, "  index: {index}")?;
    if report.manifest_mismatches.is_empty() {
        writeln!(out, "  manifest counts: match")?;
    } else {
        for m in &report.manifest_mismatches {
            writeln!(out, "  manifest counts differ (normal after a crash; fixed on next write): {m}")?;
        }
    }
    let damage = report.problems.iter().filter(|p| p.is_damage()).count();
    if report.is_clean() {
        writeln!(out, "  ok: no damage")?;
        Ok(crate::exit_codes::OK)
    } else {
        writeln!(
            out,
            "  DAMAGE: {damage} damaged regions or records; `replay corpus compact` keeps every good record and drops the rest"
        )?;
        Ok(crate::exit_codes::INPUT_ERROR)
    }
}

fn export(dir: &Path, format: ExportFormat, out: Option<&Path>, ui: &Ui) -> anyhow::Result<i32> {
    let corpus = open(dir)?;
    let sink: Box<dyn Write> = match out {
        None => Box::new(io::stdout().lock()),
        Some(path) => Box::new(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("failed to create {}", path.display()))?,
        ),
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let mut n = 0u64;
    if let ExportFormat::Har = format {
        // HAR is one JSON document: the HTTP cases are gathered, then written.
        let mut cases = Vec::new();
        for_each_case(&corpus, ui, "exporting", |case| {
            if case.kind() == CaseKind::Http {
                cases.push(case);
            }
            Ok(true)
        })?;
        serde_json::to_writer_pretty(&mut w, &recorders::har::export(cases.iter()))?;
        writeln!(w)?;
        w.flush()?;
        ui.note(format!("exported {} HTTP exchanges as HAR", cases.len()));
        return Ok(ui.exit_code());
    }
    for_each_case(&corpus, ui, "exporting", |case| {
        jsonl::write_case(&mut w, &case)?;
        n += 1;
        Ok(true)
    })?;
    w.flush()?;
    ui.note(format!("exported {n} cases"));
    Ok(ui.exit_code())
}

fn scan(dir: &Path, config: Option<&Path>, ui: &Ui) -> anyhow::Result<i32> {
    let corpus = open(dir)?;
    // The rules of `[redact]`, so that a configured pattern or header counts; the key does not
    // matter for finding secrets (placeholders are recognised by their shape).
    let r = crate::record_cmd::redactor_with_key(config, [0; 32])?;
    let mut out = io::stdout().lock();
    let (mut cases, mut findings) = (0u64, 0u64);
    for_each_case(&corpus, ui, "scanning", |case| {
        cases += 1;
        for (place, what) in r.scan(&case) {
            findings += 1;
            writeln!(out, "{}  {place}: {what}", case.id())?;
        }
        Ok(true)
    })?;
    writeln!(out, "scanned {cases} cases: {findings} possible secret(s)")?;
    Ok(if findings > 0 { crate::exit_codes::DIFFERENCES } else { ui.exit_code() })
}

fn import(dir: &Path, files: &[PathBuf], ui: &Ui) -> anyhow::Result<i32> {
    let mut writer = CorpusWriter::open_or_create(dir, WriterOptions::default())?;
    writer.problems().iter().for_each(|p| ui.problem(p));
    let (mut new, mut dup, mut bad) = (0u64, 0u64, 0u64);
    for file in files {
        let (input, total): (Box<dyn Read>, u64) = if file.as_os_str() == "-" {
            (Box::new(io::stdin().lock()), 0)
        } else {
            let f = File::open(file).with_context(|| format!("failed to open {}", file.display()))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), len)
        };
        let bar = ui.bytes_bar(total, "importing");
        let counted = CountingReader { inner: input, n: 0, bar: bar.clone() };
        let reader: Box<dyn BufRead> = Box::new(BufReader::with_capacity(1 << 20, counted));
        let shown = if file.as_os_str() == "-" { Path::new("<stdin>") } else { file.as_path() };
        jsonl::read_cases(reader, shown, |item| -> anyhow::Result<()> {
            match item {
                Ok(case) => match writer.append(&case)? {
                    Appended::New => new += 1,
                    Appended::Duplicate => dup += 1,
                },
                Err(p) => {
                    bad += 1;
                    ui.problem(&p);
                }
            }
            Ok(())
        })
        .with_context(|| format!("failed to read {}", shown.display()))?;
        bar.finish_and_clear();
    }
    writer.close()?;
    ui.note(format!(
        "imported {new} new cases into {}; {dup} already present; {bad} bad lines skipped",
        dir.display()
    ));
    Ok(ui.exit_code())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        self.bar.set_position(self.n);
        Ok(k)
    }
}

fn compact(dir: &Path, ui: &Ui) -> anyhow::Result<i32> {
    let writer = CorpusWriter::open(dir, WriterOptions::default())?;
    // What opening found (a damaged index, a torn tail) compaction repairs; records that the
    // copy cannot read are what was lost.
    // Damaged records found on open are found again by the copy and reported there.
    writer
        .problems()
        .iter()
        .filter(|p| matches!(p, corpora::Problem::IndexCorrupt { .. } | corpora::Problem::TornTail { .. }))
        .for_each(|p| ui.repaired(p));
    let bar = ui.bytes_bar(Corpus::open(dir)?.segment_bytes(), "compacting");
    let stats = writer.compact_with(|n| bar.set_position(n))?;
    bar.finish_and_clear();
    stats.problems.iter().for_each(|p| ui.problem(p));
    ui.note(format!(
        "compacted {}: {} records; {} segments ({}) -> {} segments ({}); {} duplicate records dropped",
        dir.display(),
        stats.records,
        stats.segments_before,
        size(stats.bytes_before),
        stats.segments_after,
        size(stats.bytes_after),
        stats.duplicates_dropped
    ));
    // The corpus is clean now, but damaged records that were dropped still end with the
    // input-error code, so that a script notices that records were lost.
    Ok(ui.exit_code())
}
