//! The manifest: what the corpus is, which version wrote it, and its counts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CorpusError;
use crate::frame::FORMAT_VERSION;

/// The value of the manifest's `format` field.
pub const FORMAT_NAME: &str = "replay-corpus";

/// `manifest.json`, the corpus's description. Unknown keys are kept when it is rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `replay-corpus`.
    pub format: String,
    /// The format version (segments, index and this file).
    pub format_version: u32,
    /// The `replay` version that last wrote the corpus.
    pub tool_version: String,
    /// What the records are: `cases` (a corpus) or `observations` (a run).
    pub content: String,
    /// Counts as of the last clean close (recomputed from the segments when stale).
    pub counts: Counts,
    /// Summaries written by recorders, one per recording run, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<serde_json::Value>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Record counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records (cases) in the corpus.
    pub records: u64,
    /// Records per kind (`http`, `packet`, `message`, ...).
    pub by_kind: BTreeMap<String, u64>,
    /// Total payload bytes of the records.
    pub payload_bytes: u64,
    /// Appends that were skipped because the id was already present.
    pub duplicates_skipped: u64,
    /// Segment files.
    pub segments: u64,
}

impl Manifest {
    /// A fresh manifest for `content`.
    pub fn new(content: &str) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            content: content.into(),
            counts: Counts::default(),
            recordings: Vec::new(),
            other: serde_json::Map::new(),
        }
    }

    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, CorpusError> {
        let text = std::fs::read(path).map_err(CorpusError::io("read", path))?;
        let bad = |detail: String| CorpusError::Manifest { path: path.to_path_buf(), detail };
        // Check the version before the shape, so a newer corpus says "newer", not "bad field".
        let loose: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("line {} column {}: {e}", e.line(), e.column())))?;
        if loose.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(bad(format!("field `format` is not \"{FORMAT_NAME}\"")));
        }
        let version = loose
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad("field `format_version` is missing or not a number".into()))?;
        if version > FORMAT_VERSION as u64 {
            return Err(CorpusError::NewerFormat {
                path: path.to_path_buf(),
                found: version.min(u32::MAX as u64) as u32,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_value(loose).map_err(|e| bad(e.to_string()))
    }
}
