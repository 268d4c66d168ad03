//! Run directories: a target's observations of a corpus, saved with the same framing,
//! checksums, index and durability as a corpus, so tonight's run can be diffed against last
//! night's.

use std::path::{Path, PathBuf};

use corpora::{Case, Corpus, CorpusError, CorpusWriter, RecordItem, WriterOptions};
use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, Sink};
use crate::observation::{OBSERVATION_KIND, Observation};

/// The manifest `content` of a run directory.
pub const CONTENT_OBSERVATIONS: &str = "observations";

/// What a run was: stored under `run` in the run directory's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The target's name.
    pub target: String,
    /// Its kind.
    pub kind: String,
    /// What it was (module path, command, URL).
    pub detail: String,
    /// The corpus directory.
    pub corpus: PathBuf,
    /// `--filter` values.
    #[serde(default)]
    pub filters: Vec<String>,
    /// `--shard`, as `K/N`.
    #[serde(default)]
    pub shard: Option<String>,
    /// `--limit`.
    #[serde(default)]
    pub limit: Option<u64>,
    /// When it started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Cases observed, by outcome (written on close).
    #[serde(default)]
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Wall time of the run in seconds (written on close).
    #[serde(default)]
    pub seconds: f64,
}

/// Writes observations into a new run directory.
pub struct RunWriter {
    w: CorpusWriter,
    info: RunInfo,
    scratch: Vec<u8>,
}

impl RunWriter {
    /// Creates `dir` (which must not exist or be empty).
    pub fn create(dir: &Path, info: RunInfo) -> Result<RunWriter, CorpusError> {
        let w = CorpusWriter::create_with(dir, CONTENT_OBSERVATIONS, WriterOptions::default())?;
        Ok(RunWriter { w, info, scratch: Vec::new() })
    }

    /// Appends one observation.
    pub fn append(&mut self, obs: &Observation) -> Result<(), CorpusError> {
        self.scratch.clear();
        rmp_serde::encode::write_named(&mut self.scratch, obs)
            .map_err(|e| CorpusError::Encode { id: obs.case, message: e.to_string() })?;
        *self.info.outcomes.entry(obs.outcome.name().to_string()).or_default() += 1;
        self.w.append_record(OBSERVATION_KIND, obs.case.as_bytes(), &self.scratch).map(|_| ())
    }

    /// Finishes: records the run's info and outcome counts in the manifest and syncs.
    pub fn close(mut self, seconds: f64) -> Result<RunInfo, CorpusError> {
        self.info.seconds = seconds;
        let info = serde_json::to_value(&self.info).expect("run info serialises");
        self.w.set_other("run", info);
        self.w.close()?;
        Ok(self.info)
    }
}

impl Sink for RunWriter {
    fn case(&mut self, _case: &Case, observations: Vec<Observation>) -> Result<bool, EngineError> {
        for o in &observations {
            self.append(o).map_err(|e| EngineError::Sink(e.to_string()))?;
        }
        Ok(true)
    }
}

/// A saved run, read back.
pub struct Run {
    corpus: Corpus,
    info: RunInfo,
}

/// Why a run directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store itself.
    #[error(transparent)]
    Store(#[from] CorpusError),
    /// Not a run directory.
    #[error("{path} is not a run directory (its manifest says content {content:?}, not \"observations\")")]
    NotARun {
        /// The directory.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The manifest's `run` entry is missing or damaged.
    #[error("{path}: manifest has no valid `run` entry: {message}")]
    Info {
        /// The directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A saved run as a target: each case's observation is the one saved, so tonight's run can
/// be diffed against last night's, or against a live target. Its index stays on disk
/// ([`Corpus::lookup`]): a nightly matrix holds several saved runs of a corpus of millions of
/// cases at once, at 16 bytes per 32 of them each instead of 40 bytes per case.
pub struct SavedTarget {
    run: Run,
    index: corpora::Lookup,
    problems: Vec<corpora::Problem>,
}

impl SavedTarget {
    /// Opens a run directory as a target.
    pub fn open(dir: &Path) -> Result<SavedTarget, RunError> {
        let run = Run::open(dir)?;
        let (index, problems) = run.corpus.lookup()?;
        Ok(SavedTarget { run, index, problems })
    }

    /// What opening the run's index found wrong (a damaged `index.bin`, damaged records in the
    /// segments' tails): the lookups work around it, and the caller should say so.
    pub fn problems(&self) -> &[corpora::Problem] {
        &self.problems
    }

    /// How many observations' keys the target holds in memory (see [`corpora::Lookup`]).
    pub fn keys_in_memory(&self) -> usize {
        self.index.keys_in_memory()
    }

    /// What the run was.
    pub fn info(&self) -> &RunInfo {
        &self.run.info
    }
}

impl crate::target::Target for SavedTarget {
    fn observe(&self, case: &Case) -> crate::observation::Outcome {
        use crate::observation::Outcome;
        let entry = match self.index.get(case.id().as_bytes()) {
            Ok(e) => e,
            Err(e) => return Outcome::error(format!("looking up {} in the saved run: {e}", case.id())),
        };
        let Some(entry) = entry else {
            return Outcome::Unsupported {
                reason: format!(
                    "case {} is not in the saved run {}",
                    case.id(),
                    self.run.corpus.dir().display()
                ),
            };
        };
        match self.run.corpus.read_payload(&entry) {
            Ok(p) => match rmp_serde::from_slice::<Observation>(&p) {
                Ok(o) => o.outcome,
                Err(e) => Outcome::error(format!("saved observation of {} does not decode: {e}", case.id())),
            },
            Err(p) => Outcome::error(format!("saved observation of {}: {p}", case.id())),
        }
    }

    fn batch(&self) -> usize {
        64
    }
}

impl Run {
    /// Opens a run directory.
    pub fn open(dir: &Path) -> Result<Run, RunError> {
        let corpus = Corpus::open(dir)?;
        let m = corpus.manifest();
        if m.content != CONTENT_OBSERVATIONS {
            return Err(RunError::NotARun { path: dir.to_path_buf(), content: m.content.clone() });
        }
        let info = m
            .other
            .get("run")
            .cloned()
            .ok_or_else(|| "missing".to_string())
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
            .map_err(|message| RunError::Info { path: dir.to_path_buf(), message })?;
        Ok(Run { corpus, info })
    }

    /// What the run was.
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The observations in the order written (corpus order). Damaged records come as `Err`
    /// naming the file and offset; reading goes on after them.
    pub fn observations(&self) -> impl Iterator<Item = Result<Observation, String>> + '_ {
        let mut records = self.corpus.records();
        std::iter::from_fn(move || {
            Some(match records.next()? {
                RecordItem::Problem(p) => Err(p.to_string()),
                RecordItem::Record { path, offset, kind, payload, .. } => {
                    if kind != OBSERVATION_KIND {
                        Err(format!(
                            "{}: record at offset {offset} has kind {kind}, not an observation",
                            path.display()
                        ))
                    } else {
                        rmp_serde::from_slice(payload).map_err(|e| {
                            format!("{}: observation at offset {offset} does not decode: {e}", path.display())
                        })
                    }
                }
            })
        })
    }
}
