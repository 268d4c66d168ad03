/*!
Targets, the replay engine, the structural diff and the reports of `replay`.

- [`config`]: `replay.toml`, the named targets, and how each kind is loaded.
- [`target`]: the one [`Target`] trait every kind implements (`wasm`, `process`, `http`,
  `recorded`, and `native` values registered from code).
- [`observation`]: what a target did with a case: an output, or an error, a trap, a timeout,
  a crash, an exhausted resource.
- [`engine`]: stream a corpus through targets with bounded concurrency, filters, shards and
  pacing, in deterministic order.
- [`run`]: run directories, the saved observations of one target over a corpus.
- [`diff`]: the structural comparison of two observations under rules.
- [`report`]: clusters of differing cases and the serialisable [`report::Report`].
- [`render`]: the report as a terminal view, Markdown, JUnit XML and HTML.
- [`scenario`]: scenario files, their baselines, and how a run is judged against them.
*/

pub mod config;
pub mod diff;
pub mod engine;
pub mod http;
pub mod input;
pub mod matrix;
pub mod observation;
pub mod playback;
pub mod process;
pub mod recorded;
pub mod render;
pub mod report;
pub mod run;
pub mod scenario;
pub mod target;
pub mod wasm;

pub use config::{Config, ConfigError, Registry};
pub use engine::{Filter, Selection, Shard, Sink, Summary};
pub use input::Input;
pub use observation::{Observation, Outcome, Output};
pub use run::{Run, RunInfo, RunWriter};
pub use target::{FnTarget, Loaded, Target};
