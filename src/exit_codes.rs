//! The process exit codes of `replay`, in one place. Scripts and CI depend on them.
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`OK`] | success; for `diff`, no differences |
//! | 1 | [`DIFFERENCES`] | differences found (`diff`, `matrix`, scenarios) |
//! | 2 | [`INPUT_ERROR`] | bad usage or bad input: a missing or damaged corpus, a bad line, a locked corpus. The command still did all it could (every good record kept) |
//! | 3 | [`INTERNAL`] | an internal failure: a bug in `replay` |

/// Success; no differences.
pub const OK: i32 = 0;
/// Differences were found.
pub const DIFFERENCES: i32 = 1;
/// Usage or input error (including damage found in a corpus).
pub const INPUT_ERROR: i32 = 2;
/// Internal failure.
pub const INTERNAL: i32 = 3;

/// Marks an error as an internal failure (exit code [`INTERNAL`]) rather than an input error.
#[derive(Debug, thiserror::Error)]
#[error("internal failure: {0}")]
pub struct Internal(pub String);
