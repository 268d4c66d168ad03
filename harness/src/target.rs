//! The one trait every target kind implements, and the loaded form the engine runs.
//!
//! Two levels, as in wasmtime's differential fuzzing (`DiffEngine` -> `DiffInstance`): loading
//! a target ([`crate::config::Config::load`]) does the expensive once-per-run work (compile
//! and cache a module, resolve a command, parse a URL); [`Target::observe`] then runs one case
//! in isolation (a fresh Wasm instance, a fresh process or a pooled one, one HTTP request).

use std::sync::Arc;

use corpora::Case;

use crate::observation::Outcome;

/// Something that turns a case into an outcome.
///
/// `observe` is called from up to [`Target::concurrency`] engine threads at once and must
/// never panic on bad input (the engine catches a panic anyway and records it as an error).
/// It blocks: CPU-bound targets do their work on the calling thread; I/O-bound ones wait on
/// it.
pub trait Target: Send + Sync {
    /// Runs one case.
    fn observe(&self, case: &Case) -> Outcome;

    /// How many cases may run at once. The default is the number of CPUs.
    fn concurrency(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// At most how many cases the engine hands a worker at a time. Every hand-off between
    /// threads costs a wakeup, so large batches pay off for cheap calls and for I/O alike; the
    /// engine shrinks them for small corpora (so every worker gets work) and uses 1 when
    /// pacing (`--speed`, `rps`). Per-case processes, which cost a spawn each, say 1.
    fn batch(&self) -> usize {
        32
    }
}

/// A target as the engine runs it: the implementation and what the configuration said.
#[derive(Clone)]
pub struct Loaded {
    /// The target's name in `replay.toml` (or as registered).
    pub name: String,
    /// The kind (`wasm`, `process`, `http`, `recorded`, `native`).
    pub kind: String,
    /// What it is, for `replay targets`.
    pub detail: String,
    /// The implementation.
    pub target: Arc<dyn Target>,
    /// Concurrency, after the configuration's override.
    pub concurrency: usize,
    /// Requests per second at most, if limited.
    pub rps: Option<f64>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .field("concurrency", &self.concurrency)
            .field("rps", &self.rps)
            .finish()
    }
}

impl Loaded {
    /// Wraps an in-process target (the `native` kind, registered from code).
    pub fn native(name: impl Into<String>, target: Arc<dyn Target>) -> Loaded {
        let concurrency = target.concurrency();
        Loaded {
            name: name.into(),
            kind: "native".into(),
            detail: "in-process".into(),
            target,
            concurrency,
            rps: None,
        }
    }
}

/// A native target from a function of the case.
pub struct FnTarget<F>(pub F);

impl<F: Fn(&Case) -> Outcome + Send + Sync> Target for FnTarget<F> {
    fn observe(&self, case: &Case) -> Outcome {
        (self.0)(case)
    }
}
