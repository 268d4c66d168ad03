//! Errors that stop an operation ([`CorpusError`]) and problems that are reported while the
//! operation goes on ([`Problem`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::id::CaseId;

/// An error that stops a corpus operation. Every message names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The corpus directory does not exist.
    #[error("no corpus at {}: the directory does not exist", path.display())]
    NotFound {
        /// The directory.
        path: PathBuf,
    },
    /// The directory exists but holds no manifest.
    #[error("{} is not a corpus: it has no manifest.json", path.display())]
    NotACorpus {
        /// The directory.
        path: PathBuf,
    },
    /// `create` on a directory that already has files in it.
    #[error("cannot create a corpus in {}: the directory is not empty", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The manifest does not parse or lacks a field.
    #[error("manifest {}: {detail}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        detail: String,
    },
    /// The corpus was written by a newer `replay`.
    #[error(
        "{}: format version {found} is newer than this replay reads (up to {supported}); \
         upgrade replay to read it",
        path.display()
    )]
    NewerFormat {
        /// The file whose version is too new.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Another writer holds the corpus lock.
    #[error(
        "corpus is locked by another writer: {} is held{}; only one writer at a time",
        path.display(),
        holder.as_deref().map(|h| format!(" by {h}")).unwrap_or_default()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it (`pid 1234`).
        holder: Option<String>,
    },
    /// A compaction was interrupted and must be finished by a writer first.
    #[error(
        "{}: a compaction was interrupted and another writer holds the lock; \
         it finishes when that writer (or `replay corpus compact`) opens the corpus",
        path.display()
    )]
    CompactionPending {
        /// The corpus directory.
        path: PathBuf,
    },
    /// An I/O error on a named file.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `open`, `sync`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A case could not be encoded.
    #[error("failed to encode case {id}: {message}")]
    Encode {
        /// The case.
        id: CaseId,
        /// What the encoder said.
        message: String,
    },
    /// A record is larger than the format allows.
    #[error("case {id} is {len} bytes encoded, more than the {max}-byte record limit")]
    TooLarge {
        /// The case.
        id: CaseId,
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: u32,
    },
}

impl CorpusError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| CorpusError::Io { op, path, source }
    }
}

/// A problem found while reading or opening a corpus. The operation goes on: every record that
/// is intact is still read. Each names the file and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Bytes in the middle of a segment that are not a valid record were skipped.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the bad bytes start.
        offset: u64,
        /// How many bytes were skipped to reach the next good record (or the end of the file).
        skipped: u64,
    },
    /// A segment ends in an incomplete record (a write cut off by a crash).
    TornTail {
        /// The segment file.
        path: PathBuf,
        /// Where the incomplete record starts.
        offset: u64,
        /// Its length.
        bytes: u64,
        /// Whether a writer truncated it away (only the last segment, only when opened to write).
        truncated: bool,
    },
    /// A segment's header is damaged; its records were still read.
    BadSegmentHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A record's checksum is good but its content is not a case this build can decode.
    Decode {
        /// The segment file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// What the decoder said.
        message: String,
    },
    /// A record's frame key does not match the case inside it, or the id its input hashes to.
    IdMismatch {
        /// The segment file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// The key in the frame (what the index and dedup use).
        stored: CaseId,
        /// The other id: the case's own id field, or the hash of its input.
        found: CaseId,
        /// Which of the two `found` is (`the case inside names`, `its input hashes to`).
        what: &'static str,
    },
    /// The index file is damaged; it was rebuilt from the segments.
    IndexCorrupt {
        /// The index file.
        path: PathBuf,
        /// What is wrong, with the offset.
        detail: String,
    },
    /// A JSONL line that is not a case.
    BadLine {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column, where the parser knows it.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A read failed; reading of this file stopped here.
    Io {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The error.
        message: String,
    },
}

impl Problem {
    /// Whether this problem means data was damaged or rejected (rather than an interrupted write
    /// that recovery handled). The CLI exits with the input-error code when any is damage.
    pub fn is_damage(&self) -> bool {
        !matches!(self, Problem::TornTail { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Corrupt { path, offset, skipped } => write!(
                f,
                "{}: corrupt record at offset {offset}: skipped {skipped} bytes to the next good record",
                path.display()
            ),
            Problem::TornTail { path, offset, bytes, truncated } => write!(
                f,
                "{}: incomplete record at offset {offset} ({bytes} bytes, a write cut off by a crash){}",
                path.display(),
                if *truncated { "; truncated so that appending can go on" } else { "" }
            ),
            Problem::BadSegmentHeader { path, detail } => {
                write!(f, "{}: damaged segment header at offset 0: {detail}", path.display())
            }
            Problem::Decode { path, offset, message } => write!(
                f,
                "{}: record at offset {offset} has a good checksum but does not decode: {message}",
                path.display()
            ),
            Problem::IdMismatch { path, offset, stored, found, what } => write!(
                f,
                "{}: record at offset {offset} is stored as case {stored} but {what} {found}",
                path.display()
            ),
            Problem::IndexCorrupt { path, detail } => {
                write!(f, "{}: damaged index ({detail}); rebuilt from the segments", path.display())
            }
            Problem::BadLine { path, line, column, message } => {
                write!(f, "{}:{line}:{column}: not a case: {message}", path.display())
            }
            Problem::Io { path, offset, message } => {
                write!(f, "{}: read failed at offset {offset}: {message}", path.display())
            }
        }
    }
}
