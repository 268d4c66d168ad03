//! `replay record pcap ...`: captures into a corpus, with an accounting of every packet.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use corpora::{CorpusWriter, WriterOptions};
use recorders::pcap::{Keep, Options, Recorder, Stats};
use recorders::redact::{RedactError, RedactRules, Redactor};

use crate::output::{Ui, size};

/// Recorders.
#[derive(Debug, Subcommand)]
pub enum RecordAction {
    /// Read pcap or pcapng captures (gzip-compressed too; `-` for stdin): HTTP/1.1 exchanges
    /// on any port become HTTP cases, everything else packet cases. Ends with an accounting of
    /// every packet, also stored in the corpus manifest.
    Pcap {
        /// Capture files.
        #[arg(required = true, value_name = "CAPTURE")]
        captures: Vec<PathBuf>,
        /// The corpus to write (created if needed, appended to otherwise).
        #[arg(long, short, value_name = "CORPUS")]
        out: PathBuf,
        /// What to keep: `http`, `packets`, or both (comma-separated).
        #[arg(long, default_value = "http,packets", value_parser = parse_keep)]
        keep: Keep,
        /// Store HTTP exchanges exactly as captured, credentials included (redaction is on by
        /// default: the headers, JSON paths and patterns of `[redact]` and the defaults).
        #[arg(long)]
        no_redact: bool,
    },
    /// A recording reverse proxy in front of one upstream (an LLM or copilot API): clients
    /// (HTTP/1.1 or HTTP/2) talk to it as to the upstream; every exchange is redacted and
    /// recorded, streamed responses with their chunk timing. Ctrl-C (or SIGTERM) lets open
    /// exchanges finish, then closes the corpus.
    Proxy {
        /// Where to listen. An address other than loopback needs --auth-token.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The upstream base URL (`https://api.example.com`, `http://127.0.0.1:9000/v1`).
        #[arg(long)]
        upstream: String,
        /// The corpus to write (created if needed, appended to otherwise).
        #[arg(long, short, value_name = "CORPUS")]
        out: PathBuf,
        /// A token every client must send (`X-Replay-Token: TOKEN` or
        /// `Proxy-Authorization: Bearer TOKEN`); never forwarded nor recorded.
        #[arg(long, env = "REPLAY_PROXY_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
        /// Bytes of each request or response body recorded; longer bodies stream through whole
        /// and are recorded cut and flagged.
        #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
        max_body: usize,
        /// A PEM file of CA certificates trusted for an HTTPS upstream, beside the system's.
        #[arg(long = "ca-cert", value_name = "PEM")]
        ca_certs: Vec<PathBuf>,
        /// The longest a recorded exchange waits before it is synced to disk: after a crash or
        /// `kill -9` only the last this-many seconds can be missing.
        #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
        sync_interval: f64,
        /// On Ctrl-C, how long open exchanges (long streams) may go on before they are cut.
        #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
        grace: f64,
        /// Threads serving connections (default: one per core). The corpus writer has its own.
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Stop by itself after this many seconds (as on Ctrl-C: open exchanges get --grace).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Stop by itself once this many exchanges have been recorded (repeats included);
        /// exchanges already under way still finish and are recorded.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Import HAR files (browser and tool exports; `-` for stdin) as HTTP exchange cases,
    /// redacted before they reach disk. Bad entries are named and skipped.
    Har {
        /// HAR files.
        #[arg(required = true, value_name = "FILE.har")]
        files: Vec<PathBuf>,
        /// The corpus to write (created if needed, appended to otherwise).
        #[arg(long, short, value_name = "CORPUS")]
        out: PathBuf,
    },
    /// Capture from a network interface through libpcap into the same pipeline as `pcap`.
    /// Stops on Ctrl-C (SIGINT), after --duration or after --count packets, and reports what the
    /// kernel dropped. Needs permission to capture (root or CAP_NET_RAW).
    Live {
        /// The interface (`lo`, `eth0`, ...).
        #[arg(long, short)]
        interface: String,
        /// A BPF filter, as for tcpdump (`tcp port 8080`).
        #[arg(long)]
        filter: Option<String>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<u64>,
        /// The corpus to write (created if needed, appended to otherwise).
        #[arg(long, short, value_name = "CORPUS")]
        out: PathBuf,
        /// What to keep: `http`, `packets`, or both (comma-separated).
        #[arg(long, default_value = "http,packets", value_parser = parse_keep)]
        keep: Keep,
        /// Store HTTP exchanges exactly as captured, credentials included.
        #[arg(long)]
        no_redact: bool,
    },
}

fn parse_keep(s: &str) -> Result<Keep, String> {
    let mut keep = Keep { http: false, packets: false };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "http" => keep.http = true,
            "packets" => keep.packets = true,
            other => return Err(format!("unknown kind {other:?}: expected http or packets")),
        }
    }
    if !keep.http && !keep.packets {
        return Err("keep at least one of http, packets".into());
    }
    Ok(keep)
}

/// A capture as read: moves the progress bar and counts the bytes (a pipe has no length to
/// take them from beforehand).
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Transparent huge pages off for the rest of the process. mimalloc asks for them on its whole
/// arena (`madvise(MADV_HUGEPAGE)`), and a capture recorder's memory is bounded (64 MiB whatever
/// the capture): with 2 MiB pages, where they fall moved the peak of a 1,000,000-SYN capture
/// between 61 and 65 MiB from run to run (22 MiB of it in huge pages); with 4 KiB pages it
/// peaks at 57-59 MiB, and every other capture 5-10 MiB lower too. It costs about 2% of the
/// wall time (4% of the CPU) to record big.pcap.
fn small_pages() {
    #[cfg(target_os = "linux")]
    {
        // Best effort: an old kernel without the flag keeps huge pages.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

pub fn run(config: Option<&Path>, action: RecordAction, ui: &Ui) -> anyhow::Result<i32> {
    match action {
        RecordAction::Pcap { captures, out, keep, no_redact } => {
            small_pages();
            let r = if no_redact { None } else { Some(Arc::new(redactor(config)?)) };
            pcap(&captures, &out, keep, r, ui)
        }
        RecordAction::Har { files, out } => har(&files, &out, &redactor(config)?, ui),
        RecordAction::Proxy {
            listen,
            upstream,
            out,
            auth_token,
            max_body,
            ca_certs,
            sync_interval,
            grace,
            threads,
            duration,
            count,
        } => {
            let seconds = |name: &str, s: f64| {
                if s.is_finite() && s > 0.0 {
                    Ok(std::time::Duration::from_secs_f64(s))
                } else {
                    Err(anyhow::anyhow!("--{name} must be a positive number of seconds, not {s}"))
                }
            };
            let opts = recorders::proxy::ProxyOptions {
                auth_token,
                max_body,
                ca_certs,
                sync_interval: seconds("sync-interval", sync_interval)?,
                grace: seconds("grace", grace)?,
                threads,
                stop_after: count,
                ..recorders::proxy::ProxyOptions::new(listen, upstream)
            };
            let duration = duration.map(|d| seconds("duration", d)).transpose()?;
            proxy(&opts, duration, &out, redactor(config)?, ui)
        }
        RecordAction::Live { interface, filter, duration, count, out, keep, no_redact } => {
            small_pages();
            let opts = recorders::live::LiveOptions {
                interface,
                filter,
                duration: duration.map(std::time::Duration::from_secs_f64),
                count,
            };
            let r = if no_redact { None } else { Some(Arc::new(redactor(config)?)) };
            live(&opts, &out, keep, r, ui)
        }
    }
}

/// The redactor of every recorder: the defaults plus `[redact]` of replay.toml (the one named
/// by --config, else the working directory's, if any), keyed by the machine's redaction key.
pub(crate) fn redactor(config: Option<&Path>) -> anyhow::Result<Redactor> {
    let key = recorders::redact::key().context("failed to read the redaction key")?;
    redactor_with_key(config, key)
}

/// The redactor of `[redact]` in the configuration (found as usual) with `key`.
pub(crate) fn redactor_with_key(config: Option<&Path>, key: [u8; 32]) -> anyhow::Result<Redactor> {
    let path = config.map(Path::to_path_buf).or_else(|| harness::Config::find(Path::new(".")));
    let cfg = match &path {
        Some(p) => Some(harness::Config::load(p)?),
        None => None,
    };
    let Some(cfg) = cfg else {
        return Ok(Redactor::new(key, &RedactRules::default())?);
    };
    let r = &cfg.redact;
    let rules = RedactRules {
        headers: r.headers.clone(),
        json_paths: r.json_paths.iter().map(|(p, _)| p.clone()).collect(),
        patterns: r.patterns.iter().map(|(p, _)| p.clone()).collect(),
        query: r.query.clone(),
    };
    Redactor::new(key, &rules).map_err(|e| {
        let (bad, list) = match &e {
            RedactError::Pattern { pattern, .. } => (pattern, &r.patterns),
            RedactError::Path(p) => (p, &r.json_paths),
        };
        let line = list.iter().find(|(p, _)| p == bad).map_or(0, |(_, l)| *l);
        anyhow::anyhow!("{}:{line}: [redact]: {e}", cfg.path.display())
    })
}

fn proxy(
    opts: &recorders::proxy::ProxyOptions,
    duration: Option<std::time::Duration>,
    out: &Path,
    redactor: Redactor,
    ui: &Ui,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let bound = recorders::proxy::bind(opts)?;
    let wopts = WriterOptions { sync_interval: Some(opts.sync_interval), ..WriterOptions::default() };
    let writer = CorpusWriter::open_or_create(out, wopts)?;
    writer.problems().iter().for_each(|p| ui.problem(p));
    if !ui.is_quiet() {
        // The first line of output, so that a script (or a test) can read the real port.
        println!(
            "listening on http://{} -> {}, recording into {} (Ctrl-C to stop)",
            bound.local_addr(),
            opts.upstream,
            out.display()
        );
        let _ = io::stdout().flush();
    }
    let shutdown = async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let term = async {
            match &mut term {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
            () = timer => {}
        }
    };
    let (mut writer, stats) = bound.run(writer, redactor, shutdown)?;
    let mut record = serde_json::to_value(&stats)?;
    if let Some(o) = record.as_object_mut() {
        o.insert("recorder".into(), "proxy".into());
        o.insert("seconds".into(), started.elapsed().as_secs_f64().into());
    }
    writer.add_recording(record);
    writer.close()?;
    if !ui.is_quiet() {
        let s = &stats;
        println!(
            "recorded {} exchanges from {} connections into {} ({} repeats of a request recorded before, {} redacted)",
            s.recorded,
            s.connections,
            out.display(),
            s.repeats,
            s.redacted
        );
        println!(
            "  forwarded {} requests to {}; {} upstream errors (answered 502, recorded without response)",
            s.requests, s.upstream, s.upstream_errors
        );
        println!(
            "  bodies recorded cut: {} requests, {} responses (past --max-body, or the stream ended early)",
            s.request_truncated, s.response_truncated
        );
        if !s.refused.is_empty() {
            let r: Vec<String> = s.refused.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  refused (not forwarded): {}", r.join(", "));
        }
    }
    Ok(if stats.write_errors > 0 { crate::exit_codes::INPUT_ERROR } else { ui.exit_code() })
}

fn har(files: &[PathBuf], out: &std::path::Path, redactor: &Redactor, ui: &Ui) -> anyhow::Result<i32> {
    let mut writer = CorpusWriter::open_or_create(out, WriterOptions::default())?;
    writer.problems().iter().for_each(|p| ui.problem(p));
    let (mut new, mut dup, mut redacted, mut skipped) = (0u64, 0u64, 0u64, 0usize);
    for f in files {
        let name = f.display().to_string();
        let imported = recorders::har::import(&name)?;
        for why in &imported.skipped {
            eprintln!("warning: {why}");
        }
        skipped += imported.skipped.len();
        for mut case in imported.cases {
            redactor.case(&mut case);
            if case.flags.iter().any(|f| matches!(f, corpora::Flag::Redacted { .. })) {
                redacted += 1;
            }
            match writer.append(&case)? {
                corpora::Appended::New => new += 1,
                corpora::Appended::Duplicate => dup += 1,
            }
        }
    }
    writer.add_recording(serde_json::json!({
        "recorder": "har", "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "cases": new, "duplicates": dup, "redacted": redacted, "skipped_entries": skipped,
    }));
    writer.close()?;
    if !ui.is_quiet() {
        println!(
            "imported {new} exchanges ({dup} already present, {redacted} redacted, {skipped} entries skipped) into {}",
            out.display()
        );
    }
    Ok(if skipped > 0 { crate::exit_codes::INPUT_ERROR } else { ui.exit_code() })
}

fn pcap(
    captures: &[PathBuf],
    out: &std::path::Path,
    keep: Keep,
    redactor: Option<Arc<Redactor>>,
    ui: &Ui,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let writer = CorpusWriter::open_or_create(out, WriterOptions::default())?;
    writer.problems().iter().for_each(|p| ui.problem(p));
    let mut recorder = Recorder::redacting(writer, Options { keep, ..Options::default() }, redactor);
    // Bytes read from the inputs as given (compressed ones compressed), stdin included.
    let input_bytes = std::rc::Rc::new(std::cell::Cell::new(0u64));
    for path in captures {
        let (src, total, name): (Box<dyn Read>, u64, String) = if path.as_os_str() == "-" {
            (Box::new(io::stdin().lock()), 0, "<stdin>".to_string())
        } else {
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    // Not the end of the run: the inputs before and after it still count.
                    recorder.unreadable(&path.display().to_string(), &e);
                    continue;
                }
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), len, path.display().to_string())
        };
        let bar = ui.bytes_bar(total, "recording");
        let counted: Box<dyn Read> =
            Box::new(Counting { inner: src, bar: bar.clone(), read: input_bytes.clone() });
        recorder.read(counted, &name)?;
        bar.finish_and_clear();
    }
    let (writer, stats) = recorder.finish()?;
    if stats.packets == 0 && stats.errors.is_empty() {
        writer.close()?;
        bail!(
            "no packets in {}",
            captures.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    finish(writer, stats, None, out, input_bytes.get(), started, ui)
}

fn live(
    opts: &recorders::live::LiveOptions,
    out: &std::path::Path,
    keep: Keep,
    redactor: Option<Arc<Redactor>>,
    ui: &Ui,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed))
        .context("failed to install the Ctrl-C handler")?;
    let writer = CorpusWriter::open_or_create(out, WriterOptions::default())?;
    writer.problems().iter().for_each(|p| ui.problem(p));
    let mut recorder = Recorder::redacting(writer, Options { keep, ..Options::default() }, redactor);
    ui.note(format!("capturing on {} (Ctrl-C to stop)", opts.interface));
    let live = recorders::live::capture(&mut recorder, opts, &stop);
    // Whatever was captured is kept, even when the capture itself failed part-way.
    let (mut writer, stats) = recorder.finish()?;
    let live = match live {
        Ok(l) => l,
        Err(e) => {
            writer.add_recording(serde_json::to_value(&stats)?);
            writer.close()?;
            return Err(e.into());
        }
    };
    let bytes = stats.bytes;
    finish(writer, stats, Some(live), out, bytes, started, ui)
}

fn finish(
    mut writer: CorpusWriter,
    stats: Stats,
    live: Option<recorders::live::LiveStats>,
    out: &std::path::Path,
    input_bytes: u64,
    started: Instant,
    ui: &Ui,
) -> anyhow::Result<i32> {
    let mut record = serde_json::to_value(&stats)?;
    if let (Some(l), Some(obj)) = (&live, record.as_object_mut()) {
        obj.insert("live".into(), serde_json::to_value(l)?);
    }
    writer.add_recording(record);
    writer.close()?;
    let elapsed = started.elapsed().as_secs_f64();
    if !ui.is_quiet() {
        print_summary(&stats, out, input_bytes, elapsed)?;
        if let Some(l) = &live {
            println!(
                "  live        {} packets passed the filter on {}; dropped: {} by the kernel (buffer full), {} by the interface; stopped by {}",
                l.received, l.interface, l.dropped_by_kernel, l.dropped_by_interface, l.stopped_by
            );
        }
    }
    for w in &stats.warnings {
        eprintln!("warning: {w}");
    }
    let counted: u64 = stats.capture_warnings.values().sum();
    if counted > stats.warnings.len() as u64 {
        eprintln!(
            "warning: {} more warnings, counted by reason in the summary",
            counted - stats.warnings.len() as u64
        );
    }
    for e in &stats.errors {
        eprintln!("error: {e}; every packet before it was recorded");
    }
    Ok(if stats.errors.is_empty() { ui.exit_code() } else { crate::exit_codes::INPUT_ERROR })
}

fn list(map: &std::collections::BTreeMap<&'static str, u64>) -> String {
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// The process's peak resident memory so far (Linux: `VmHWM`), to show the bound holding.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How long the capture lasted, from its earliest packet to its latest, and when (UTC). Files
/// from different days, or a clock that was wrong, make for long spans: in days, not seconds.
fn capture_span(first_ns: i64, last_ns: i64) -> String {
    let secs = last_ns.saturating_sub(first_ns) as f64 / 1e9;
    let length = if secs < 120.0 {
        format!("{secs:.3} s")
    } else if secs < 2.0 * 86_400.0 {
        let whole = secs as u64;
        format!("{}h {:02}m {:02}s", whole / 3600, whole % 3600 / 60, whole % 60)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    };
    format!("capture spans {length}: {} to {}", corpora::rfc3339(first_ns), corpora::rfc3339(last_ns))
}

fn print_summary(s: &Stats, out: &std::path::Path, input: u64, elapsed: f64) -> io::Result<()> {
    write_summary(&mut io::stdout().lock(), s, out, input, elapsed)
}

fn write_summary(
    o: &mut impl Write,
    s: &Stats,
    out: &std::path::Path,
    input: u64,
    elapsed: f64,
) -> io::Result<()> {
    let rate = if elapsed > 0.0 { input as f64 / elapsed / 1e6 } else { 0.0 };
    let peak =
        peak_memory_kib().map(|k| format!("; peak memory {:.1} MiB", k as f64 / 1024.0)).unwrap_or_default();
    writeln!(
        o,
        "recorded {} file(s) into {} in {elapsed:.2} s ({}, {rate:.0} MB/s{peak})",
        s.files.len(),
        out.display(),
        size(input)
    )?;
    let span = match (s.first_ns, s.last_ns) {
        (Some(a), Some(b)) => format!(", {}", capture_span(a, b)),
        _ => String::new(),
    };
    let d = &s.disposition;
    writeln!(o, "  packets     {:>10}  ({} captured{span})", s.packets, size(s.bytes))?;
    writeln!(o, "    in HTTP connections   {:>10}", d.http)?;
    writeln!(
        o,
        "    packet cases          {:>10}  (+{} duplicates of a case present)",
        d.packet_cases, d.duplicate_packets
    )?;
    writeln!(o, "    not kept (--keep)     {:>10}", d.not_kept)?;
    writeln!(
        o,
        "  exchanges   {:>10}  new cases (+{} already present); {} with gaps; {} redacted",
        s.exchanges, s.duplicate_exchanges, s.exchanges_with_gaps, s.redacted_exchanges
    )?;
    writeln!(
        o,
        "    requests without response  {:>6}  (kept, flagged no_response)",
        s.requests_without_response
    )?;
    writeln!(
        o,
        "    responses without request  {:>6}  (not kept: no request to replay)",
        s.responses_without_request
    )?;
    let t = &s.tcp;
    writeln!(
        o,
        "  tcp         {:>10}  connections ({}); {} without SYN",
        t.connections,
        list(&s.connections),
        t.without_syn
    )?;
    writeln!(
        o,
        "              {} retransmissions ({} with different bytes), {} gaps ({} bytes missing), {} resets, {} closed idle",
        t.retransmissions, t.retransmission_conflicts, t.gaps, t.bytes_missing, t.resets, t.idle_closed
    )?;
    if t.forced_gaps > 0 {
        writeln!(
            o,
            "              {} of the gaps declared early, at the out-of-order buffer bound",
            t.forced_gaps
        )?;
    }
    if t.after_fin > 0 || t.after_close > 0 {
        writeln!(
            o,
            "              ignored: {} segments after their side's FIN, {} packets of connections already closed by FIN or RST",
            t.after_fin, t.after_close
        )?;
    }
    if t.unchecked_directions > 0 {
        writeln!(
            o,
            "              {} directions whose retransmissions were not compared (the bound on retransmission windows)",
            t.unchecked_directions
        )?;
    }
    if t.evicted > 0 {
        writeln!(
            o,
            "              {} closed early at the bound on open connections (the least recently active first)",
            t.evicted
        )?;
    }
    if s.http_malformed_heads > 0
        || s.http_bytes_skipped > 0
        || s.http_heads_dropped > 0
        || s.http_heads_incomplete > 0
        || s.http_body_bytes_dropped > 0
    {
        writeln!(
            o,
            "  http        {} malformed heads, {} heads cut off by their connection's end, {} over the bound on unfinished heads; {} bytes skipped; {} body bytes not kept at a size or memory bound (messages flagged)",
            s.http_malformed_heads,
            s.http_heads_incomplete,
            s.http_heads_dropped,
            s.http_bytes_skipped,
            s.http_body_bytes_dropped
        )?;
    }
    let f = &s.ipv4_fragments;
    if f.fragments > 0 {
        writeln!(
            o,
            "  fragments   {:>10}  IPv4 fragments: {} datagrams reassembled, {} incomplete, {} dropped for memory, {} oversized",
            f.fragments, f.reassembled, f.incomplete, f.dropped_for_memory, f.oversized
        )?;
    }
    if s.udp > 0 {
        writeln!(o, "  udp         {:>10}  datagrams", s.udp)?;
    }
    if !s.other.is_empty() {
        writeln!(o, "  other       {}", list(&s.other))?;
    }
    if !s.malformed.is_empty() {
        writeln!(o, "  malformed   {} (kept as packet cases flagged malformed)", list(&s.malformed))?;
    }
    if !s.capture_warnings.is_empty() {
        writeln!(o, "  warnings    {}", list(&s.capture_warnings))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Audit finding: counters of what was dropped or left unchecked were in the stats record
    /// but not in the summary a user reads. Each shows when it is not zero.
    #[test]
    fn the_summary_names_what_was_ignored_or_left_unchecked() {
        let mut s = super::Stats::default();
        s.tcp.forced_gaps = 2;
        s.tcp.after_fin = 3;
        s.tcp.after_close = 4;
        s.tcp.unchecked_directions = 5;
        s.http_body_bytes_dropped = 6;
        let mut out = Vec::new();
        super::write_summary(&mut out, &s, std::path::Path::new("c"), 0, 1.0).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "2 of the gaps declared early",
            "ignored: 3 segments after their side's FIN, 4 packets of connections already closed",
            "5 directions whose retransmissions were not compared",
            "6 body bytes not kept",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let mut quiet = Vec::new();
        super::write_summary(&mut quiet, &super::Stats::default(), std::path::Path::new("c"), 0, 1.0)
            .unwrap();
        let quiet = String::from_utf8(quiet).unwrap();
        assert!(!quiet.contains("ignored:") && !quiet.contains("not compared"), "{quiet}");
    }

    use super::capture_span;

    #[test]
    fn a_capture_span_reads_in_seconds_hours_or_days_with_its_utc_bounds() {
        let t0 = 1_795_273_435_120_000_000; // 2026-11-21T15:03:55.120Z
        assert_eq!(
            capture_span(t0, t0 + 28_648_000_000),
            "capture spans 28.648 s: 2026-11-21T15:03:55.120Z to 2026-11-21T15:04:23.768Z"
        );
        assert_eq!(
            capture_span(t0, t0 + (3 * 3600 + 5 * 60 + 7) * 1_000_000_000),
            "capture spans 3h 05m 07s: 2026-11-21T15:03:55.120Z to 2026-11-21T18:09:02.120Z"
        );
        // Two files twenty years apart: days, not 641 million seconds.
        let old = 1_154_000_000_000_000_000; // 2006-07-27
        assert_eq!(
            capture_span(old, t0),
            "capture spans 7422.1 days: 2006-07-27T11:33:20.000Z to 2026-11-21T15:03:55.120Z"
        );
        assert_eq!(
            capture_span(t0, t0),
            "capture spans 0.000 s: 2026-11-21T15:03:55.120Z to 2026-11-21T15:03:55.120Z"
        );
    }

    /// `record pcap` and `record live` run with transparent huge pages off (see `small_pages`):
    /// the flag is set for the process (Linux 3.15 and later have it).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_recorders_turn_huge_pages_off() {
        super::small_pages();
        assert_eq!(rustix::thread::transparent_huge_pages_are_disabled().ok(), Some(true));
    }
}
