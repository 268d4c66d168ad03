//! The replay engine: stream a corpus, select cases, run them through targets with bounded
//! concurrency, and hand the observations on in corpus order.
//!
//! One reader thread streams and selects cases (filter, shard, limit) and paces them (`--speed`,
//! `rps`); worker threads call the targets (each worker runs a batch of cases through every
//! target); the calling thread puts results back in corpus order and feeds the [`Sink`]. The
//! reader never gets more than a fixed window of batches ahead of the sink, so memory stays
//! flat whatever the corpus size, and a slow case holds back only that window.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use corpora::{Case, CaseKind, Corpus, Problem};

use crate::observation::{Observation, Outcome};
use crate::target::Loaded;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The sink failed (a run directory could not be written, say).
    #[error("{0}")]
    Sink(String),
    /// A bad option.
    #[error("{0}")]
    Usage(String),
}

/// `--shard K/N`: the cases whose id falls in shard K of N (1-based), so N runs together see
/// each case exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 1..=N.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

impl Shard {
    /// Whether a case id belongs to this shard: the id's first 8 bytes (already a uniform hash)
    /// modulo N.
    pub fn contains(&self, id: &corpora::CaseId) -> bool {
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.as_bytes()[..8]);
        (u64::from_be_bytes(b) % u64::from(self.count)) as u32 == self.index - 1
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?}: expected K/N, such as 2/8"))?;
        let k: u32 = k.trim().parse().map_err(|_| format!("shard {s:?}: K is not a number"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("shard {s:?}: N is not a number"))?;
        if n == 0 || k == 0 || k > n {
            return Err(format!("shard {s:?}: K must be between 1 and N, and N at least 1"));
        }
        Ok(Shard { index: k, count: n })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--filter`: terms separated by commas, all of which must hold: `kind=http`, `id=PREFIX`
/// (hex), `tag.KEY=VALUE`. Several filters all apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Kind(CaseKind),
    Id(String),
    Tag(String, String),
}

impl Filter {
    /// Adds the terms of one `--filter` value.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        for term in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = term.split_once('=').ok_or_else(|| {
                format!("filter term {term:?}: expected kind=K, id=PREFIX or tag.KEY=VALUE")
            })?;
            self.terms.push(match k {
                "kind" => Term::Kind(CaseKind::from_name(v).ok_or_else(|| {
                    format!("filter term {term:?}: unknown kind {v:?}; kinds are http, packet, message")
                })?),
                "id" => {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("filter term {term:?}: an id prefix is hexadecimal"));
                    }
                    Term::Id(v.to_ascii_lowercase())
                }
                _ => match k.strip_prefix("tag.") {
                    Some(key) if !key.is_empty() => Term::Tag(key.to_string(), v.to_string()),
                    _ => {
                        return Err(format!(
                            "filter term {term:?}: unknown key {k:?}; expected kind, id or tag.KEY"
                        ));
                    }
                },
            });
        }
        Ok(())
    }

    /// Whether a case passes.
    pub fn matches(&self, case: &Case) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Kind(k) => case.kind() == *k,
            Term::Id(p) => case.id().to_string().starts_with(p.as_str()),
            Term::Tag(k, v) => case.tags.get(k) == Some(v),
        })
    }
}

/// How cases are chosen and paced.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Which cases.
    pub filter: Filter,
    /// This machine's shard.
    pub shard: Option<Shard>,
    /// At most this many cases (after filter and shard).
    pub limit: Option<u64>,
    /// Replay with the capture's own spacing scaled by this factor (2.0 = twice as fast).
    pub speed: Option<f64>,
}

/// Where observations go, in corpus order.
pub trait Sink {
    /// One case and each target's observation of it, in the order the targets were given.
    /// `Ok(false)` stops the run.
    fn case(&mut self, case: &Case, observations: Vec<Observation>) -> Result<bool, EngineError>;
}

impl<F: FnMut(&Case, Vec<Observation>) -> Result<bool, EngineError>> Sink for F {
    fn case(&mut self, case: &Case, observations: Vec<Observation>) -> Result<bool, EngineError> {
        self(case, observations)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases run.
    pub cases: u64,
    /// Cases read from the corpus.
    pub read: u64,
    /// Cases left out by the filter.
    pub filtered_out: u64,
    /// Cases that belong to other shards.
    pub other_shards: u64,
    /// Observations by outcome name, per target.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Problems reading the corpus (damaged records are skipped, the run goes on).
    pub problems: Vec<String>,
    /// Whether the sink stopped the run.
    pub stopped: bool,
}

type Batch = (u64, Vec<Case>);
type Done = (u64, Vec<(Case, Vec<Observation>)>);

/// Runs every selected case of `corpus` through each of `targets`.
///
/// `progress` is called with the number of cases done so far, from the calling thread.
pub fn run(
    corpus: &Corpus,
    targets: &[Loaded],
    sel: &Selection,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, EngineError> {
    if targets.is_empty() {
        return Err(EngineError::Usage("no target to run".into()));
    }
    if let Some(s) = sel.speed
        && !(s.is_finite() && s > 0.0)
    {
        return Err(EngineError::Usage(format!("--speed {s}: must be a positive number")));
    }
    let workers = targets.iter().map(|t| t.concurrency).max().unwrap_or(1).max(1);
    let rps = targets.iter().filter_map(|t| t.rps).fold(f64::INFINITY, f64::min);
    let paced = sel.speed.is_some() || rps.is_finite();
    // Batches as large as the targets allow, but small enough that every worker gets several.
    let spread = (corpus.manifest().counts.records as usize / (workers * 8)).max(1);
    let batch =
        if paced { 1 } else { targets.iter().map(|t| t.target.batch()).min().unwrap_or(1).clamp(1, spread) };
    // Batches in flight or waiting to be written, at most.
    let window = (workers * 4).max(8) as u64;

    let (job_tx, job_rx) = mpsc::sync_channel::<Batch>(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let stop = AtomicBool::new(false);
    let written = (Mutex::new(0u64), Condvar::new());
    let reader_summary = Mutex::new(Summary::default());

    let mut summary = std::thread::scope(|scope| -> Result<Summary, EngineError> {
        // Reader: stream, select, pace, dispatch.
        let (stop, written, reader_summary) = (&stop, &written, &reader_summary);
        let reader = scope.spawn(move || {
            let mut s = Summary::default();
            let mut next_batch = 0u64;
            let mut pending: Vec<Case> = Vec::with_capacity(batch);
            let mut pace = Pacer::new(sel.speed, rps);
            let send = |b: Vec<Case>, seq: &mut u64| -> bool {
                // Wait for the window.
                let (lock, cv) = written;
                let mut w = lock.lock().unwrap_or_else(|e| e.into_inner());
                while *seq >= *w + window && !stop.load(Ordering::Relaxed) {
                    w = cv.wait(w).unwrap_or_else(|e| e.into_inner());
                }
                drop(w);
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let ok = job_tx.send((*seq, b)).is_ok();
                *seq += 1;
                ok
            };
            for item in corpus.cases() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let case = match item {
                    Ok(c) => c,
                    Err(p) => {
                        s.problems.push(describe(&p));
                        continue;
                    }
                };
                s.read += 1;
                if !sel.filter.matches(&case) {
                    s.filtered_out += 1;
                    continue;
                }
                if let Some(sh) = &sel.shard
                    && !sh.contains(&case.id())
                {
                    s.other_shards += 1;
                    continue;
                }
                if sel.limit.is_some_and(|l| s.cases >= l) {
                    break;
                }
                s.cases += 1;
                pace.wait(case.time_ns);
                pending.push(case);
                if pending.len() >= batch
                    && !send(std::mem::replace(&mut pending, Vec::with_capacity(batch)), &mut next_batch)
                {
                    break;
                }
            }
            if !pending.is_empty() {
                send(pending, &mut next_batch);
            }
            *reader_summary.lock().unwrap_or_else(|e| e.into_inner()) = s;
        });

        // Workers: run each case of a batch through every target.
        for _ in 0..workers {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((seq, cases)) = job else { break };
                    let out = cases
                        .into_iter()
                        .map(|case| {
                            let obs = targets.iter().map(|t| observe(t, &case)).collect();
                            (case, obs)
                        })
                        .collect();
                    if tx.send((seq, out)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);

        // This thread: reorder and feed the sink.
        let mut held: BTreeMap<u64, Vec<(Case, Vec<Observation>)>> = BTreeMap::new();
        let mut next = 0u64;
        let mut done = 0u64;
        let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut result = Ok(());
        let mut stopped = false;
        for (seq, batch) in done_rx.iter() {
            held.insert(seq, batch);
            while let Some(batch) = held.remove(&next) {
                next += 1;
                for (case, obs) in batch {
                    if stopped || result.is_err() {
                        continue;
                    }
                    for (t, o) in targets.iter().zip(&obs) {
                        *counts
                            .entry(t.name.clone())
                            .or_default()
                            .entry(o.outcome.name().to_string())
                            .or_default() += 1;
                    }
                    match sink.case(&case, obs) {
                        Ok(true) => {}
                        Ok(false) => stopped = true,
                        Err(e) => result = Err(e),
                    }
                    done += 1;
                }
                progress(done);
                if stopped || result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                let (lock, cv) = written;
                *lock.lock().unwrap_or_else(|e| e.into_inner()) = next;
                cv.notify_all();
            }
        }
        reader.join().map_err(|_| EngineError::Sink("the corpus reader panicked".into()))?;
        result?;
        let mut s = std::mem::take(&mut *reader_summary.lock().unwrap_or_else(|e| e.into_inner()));
        s.outcomes = counts;
        s.stopped = stopped;
        if stopped {
            s.cases = done;
        }
        Ok(s)
    })?;
    summary.problems.truncate(1000);
    Ok(summary)
}

/// One call, timed, with a panic turned into an observation.
pub fn observe(t: &Loaded, case: &Case) -> Observation {
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| t.target.observe(case))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic".into());
        Outcome::error(format!("target {} panicked: {msg}", t.name))
    });
    Observation { case: case.id(), outcome, duration_ns: start.elapsed().as_nanos() as u64 }
}

fn describe(p: &Problem) -> String {
    p.to_string()
}

/// Paces dispatch: the capture's spacing scaled by `speed`, and at most `rps` per second.
struct Pacer {
    speed: Option<f64>,
    min_gap: Option<Duration>,
    start: Option<(Instant, i64)>,
    last: Option<Instant>,
}

impl Pacer {
    fn new(speed: Option<f64>, rps: f64) -> Pacer {
        let min_gap = rps.is_finite().then(|| Duration::from_secs_f64(1.0 / rps.max(1e-6)));
        Pacer { speed, min_gap, start: None, last: None }
    }

    fn wait(&mut self, time_ns: Option<i64>) {
        if let (Some(speed), Some(t)) = (self.speed, time_ns) {
            let (t0, c0) = *self.start.get_or_insert((Instant::now(), t));
            let offset = (t - c0).max(0) as f64 / speed;
            let due = t0 + Duration::from_nanos(offset as u64);
            sleep_until(due);
        }
        if let Some(gap) = self.min_gap {
            if let Some(last) = self.last {
                sleep_until(last + gap);
            }
            self.last = Some(Instant::now());
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!("2/8".parse::<Shard>().unwrap(), Shard { index: 2, count: 8 });
        for bad in ["0/3", "4/3", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (1..=3).map(|k| Shard { index: k, count: 3 }).collect();
        for i in 0..200u8 {
            let id = corpora::CaseId(blake3::hash(&[i]).as_bytes()[..16].try_into().unwrap());
            assert_eq!(shards.iter().filter(|s| s.contains(&id)).count(), 1);
        }
    }

    #[test]
    fn filters_parse_and_reject_unknown_terms() {
        let mut f = Filter::default();
        f.add("kind=packet, tag.language=rust").unwrap();
        f.add("id=AB").unwrap();
        assert_eq!(f.terms.len(), 3);
        assert!(Filter::default().add("kind=udp").unwrap_err().contains("unknown kind"));
        assert!(Filter::default().add("colour=red").unwrap_err().contains("unknown key"));
        assert!(Filter::default().add("id=xyz").unwrap_err().contains("hexadecimal"));
        assert!(Filter::default().add("kind").unwrap_err().contains("expected"));
    }
}
