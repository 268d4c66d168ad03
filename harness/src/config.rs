//! `replay.toml`: the named targets, and how each is loaded.
//!
//! ```toml
//! corpus = "corpora/samples/demo"          # the default corpus of `run` and `diff`
//!
//! [targets.prod-wasm]
//! kind = "wasm"
//! module = "target/wasm32-wasip1/release/demo.wasm"
//! abi = "reactor"
//! build = "cargo build --release --target wasm32-wasip1 -p demo"
//! env = { DEMO_EDGE_BUFFER = "1" }
//! ```
//!
//! Paths are relative to the file's directory. The keys of every kind are in the README.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::target::{Loaded, Target};

/// The file name looked for in the working directory.
pub const CONFIG_FILE: &str = "replay.toml";

/// Why a configuration or a target could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid, or names a field wrongly.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was expected.
        message: String,
    },
    /// No target of that name.
    #[error("no target named {name:?} in {path}; defined: {known}")]
    UnknownTarget {
        /// The name asked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// The names there are.
        known: String,
    },
    /// The target's `build` command failed.
    #[error("target {target}: build command `{command}` failed ({status}):\n{output}")]
    Build {
        /// The target.
        target: String,
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of what it printed.
        output: String,
    },
    /// The target is configured but cannot be loaded (a missing module, a bad URL, ...).
    #[error("target {target}: {message}")]
    Load {
        /// The target.
        target: String,
        /// Why.
        message: String,
    },
}

/// The kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A module in wasmtime.
    Wasm,
    /// A subprocess.
    Process,
    /// An HTTP deployment.
    Http,
    /// The output recorded in the corpus.
    Recorded,
    /// A Rust value registered from code.
    Native,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Wasm => "wasm",
            Kind::Process => "process",
            Kind::Http => "http",
            Kind::Recorded => "recorded",
            Kind::Native => "native",
        }
    }
}

/// The Wasm ABIs (`docs/target-abi.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasmAbi {
    /// A WASI preview 1 command: input on stdin, output on stdout.
    Command,
    /// `replay_alloc` / `replay_handle` over exported memory.
    Reactor,
}

/// Instance reuse for the reactor ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceMode {
    /// A fresh instance per case (the default).
    Fresh,
    /// One instance reused per worker; only for modules that export `replay_stateless`.
    Warm,
}

/// How a process target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessMode {
    /// A new process per case, input on stdin.
    PerCase,
    /// Long-lived processes speaking length-prefixed frames.
    Stream,
}

/// One `[targets.NAME]` table. Which keys a kind accepts is checked after parsing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDef {
    /// The kind.
    pub kind: Kind,
    /// Free text for `replay targets`.
    pub description: Option<String>,
    /// A shell command run once (in the config's directory) before first use.
    pub build: Option<String>,
    /// Cases in flight at once.
    pub concurrency: Option<usize>,
    /// Per-case time bound in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Environment of the module or process; options of a native target.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Output cap in bytes.
    pub max_output: Option<usize>,
    /// wasm: the `.wasm` or `.wat` file.
    pub module: Option<PathBuf>,
    /// wasm: `command` or `reactor`.
    pub abi: Option<WasmAbi>,
    /// wasm: linear memory cap in MiB.
    pub memory_mb: Option<u64>,
    /// wasm: fuel per case (deterministic bound) in addition to the time bound.
    pub fuel: Option<u64>,
    /// wasm: the wasm stack limit in KiB.
    pub stack_kb: Option<usize>,
    /// wasm: `fresh` or `warm`.
    pub instance: Option<InstanceMode>,
    /// wasm (command) and process: arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// process: the program and its arguments.
    pub command: Option<Vec<String>>,
    /// process: `per-case` or `stream`.
    pub mode: Option<ProcessMode>,
    /// process: the working directory.
    pub cwd: Option<PathBuf>,
    /// process (stream): extra milliseconds the first case a new process answers may take,
    /// for the process's own start-up.
    pub startup_timeout_ms: Option<u64>,
    /// wasm (command) and process (per-case): the media type of what the program writes.
    pub output_content_type: Option<String>,
    /// http: the base URL.
    pub url: Option<String>,
    /// http: send the recorded `Host` instead of the target's.
    pub keep_host: Option<bool>,
    /// http: requests per second at most.
    pub rps: Option<f64>,
    /// http: where message cases are POSTed (default `/replay/message`).
    pub message_path: Option<String>,
    /// http: where packet cases are POSTed (default `/replay/packet`).
    pub packet_path: Option<String>,
    /// native: the registered name (default: the target's own name).
    pub function: Option<String>,
}

impl TargetDef {
    fn set_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut f = |on: bool, name| {
            if on {
                v.push(name)
            }
        };
        f(self.max_output.is_some(), "max_output");
        f(self.module.is_some(), "module");
        f(self.abi.is_some(), "abi");
        f(self.memory_mb.is_some(), "memory_mb");
        f(self.fuel.is_some(), "fuel");
        f(self.stack_kb.is_some(), "stack_kb");
        f(self.instance.is_some(), "instance");
        f(!self.args.is_empty(), "args");
        f(self.command.is_some(), "command");
        f(self.mode.is_some(), "mode");
        f(self.cwd.is_some(), "cwd");
        f(self.startup_timeout_ms.is_some(), "startup_timeout_ms");
        f(self.output_content_type.is_some(), "output_content_type");
        f(self.url.is_some(), "url");
        f(self.keep_host.is_some(), "keep_host");
        f(self.rps.is_some(), "rps");
        f(self.message_path.is_some(), "message_path");
        f(self.packet_path.is_some(), "packet_path");
        f(self.function.is_some(), "function");
        f(!self.env.is_empty(), "env");
        f(self.timeout_ms.is_some(), "timeout_ms");
        v
    }

    fn allowed(kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Wasm => &[
                "module",
                "abi",
                "memory_mb",
                "fuel",
                "stack_kb",
                "instance",
                "args",
                "env",
                "timeout_ms",
                "max_output",
                "output_content_type",
            ],
            Kind::Process => &[
                "command",
                "mode",
                "cwd",
                "args",
                "env",
                "timeout_ms",
                "startup_timeout_ms",
                "max_output",
                "output_content_type",
            ],
            Kind::Http => {
                &["url", "keep_host", "rps", "message_path", "packet_path", "timeout_ms", "max_output"]
            }
            Kind::Recorded => &[],
            Kind::Native => &["function", "env"],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    corpus: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    targets: BTreeMap<String, toml::Spanned<TargetDef>>,
    #[serde(default)]
    diff: RawDiff,
    #[serde(default)]
    redact: RawRedact,
}

/// `[redact]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRedact {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    json_paths: Vec<toml::Spanned<String>>,
    #[serde(default)]
    patterns: Vec<toml::Spanned<String>>,
    #[serde(default)]
    query: Vec<String>,
}

/// The `[redact]` table: what recorders redact beyond their defaults. The recorders check the
/// paths and patterns; the line of each lets the command name where a bad one was written.
#[derive(Debug, Clone, Default)]
pub struct RedactConfig {
    /// More header names (request and response).
    pub headers: Vec<String>,
    /// JSON body paths (`$.a.b`, `$..name`) with their lines.
    pub json_paths: Vec<(String, usize)>,
    /// Regular expressions for secrets in text, with their lines.
    pub patterns: Vec<(String, usize)>,
    /// More query parameter names whose values are redacted in request targets.
    pub query: Vec<String>,
}

/// The rules table as written: `[diff]` in replay.toml, `[rules]` in a scenario.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiff {
    #[serde(default)]
    ignore: Vec<toml::Spanned<String>>,
    #[serde(default)]
    unordered: Vec<toml::Spanned<String>>,
    #[serde(default)]
    tolerance: Vec<toml::Spanned<RawTolerance>>,
    #[serde(default)]
    ignore_headers: Vec<String>,
    #[serde(default)]
    compare_headers: Vec<String>,
    nan_equal: Option<bool>,
}

/// A `{ path, abs, rel }` tolerance as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    path: String,
    #[serde(default)]
    abs: f64,
    #[serde(default)]
    rel: f64,
}

impl DiffRules {
    /// Checks a rules table of `text`: a bad selector or tolerance is `Err((offset, message))`
    /// for the caller to turn into its own file:line error.
    pub(crate) fn parse(raw: &RawDiff, text: &str, table: &str) -> Result<DiffRules, (usize, String)> {
        let sel = |s: &toml::Spanned<String>| {
            crate::diff::Selector::parse(s.get_ref()).map_err(|e| (s.span().start, format!("[{table}]: {e}")))
        };
        let mut d = DiffRules {
            ignore_headers: raw.ignore_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            compare_headers: raw.compare_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            nan_equal: raw.nan_equal,
            ..DiffRules::default()
        };
        for s in &raw.ignore {
            d.ignore.push((sel(s)?, line_of(text, s.span().start)));
        }
        for s in &raw.unordered {
            d.unordered.push((sel(s)?, line_of(text, s.span().start)));
        }
        for t in &raw.tolerance {
            let at = t.span().start;
            let r = t.get_ref();
            let selector = crate::diff::Selector::parse(&r.path)
                .map_err(|e| (at, format!("[{table}] tolerance: {e}")))?;
            if !(r.abs >= 0.0 && r.rel >= 0.0) {
                return Err((at, format!("[{table}] tolerance: abs and rel must be zero or more")));
            }
            d.tolerance.push((
                selector,
                crate::diff::Tolerance { abs: r.abs, rel: r.rel },
                line_of(text, at),
            ));
        }
        Ok(d)
    }

    /// Adds these rules to `r`, each with its origin `file:line`.
    pub fn apply(&self, r: &mut crate::diff::Rules, file: &Path) {
        use crate::diff::Rule;
        let origin = |line: usize| format!("{}:{line}", file.display());
        r.ignore.extend(self.ignore.iter().map(|(s, l)| Rule::new(s.clone(), (), origin(*l))));
        r.unordered.extend(self.unordered.iter().map(|(s, l)| Rule::new(s.clone(), (), origin(*l))));
        r.tolerance.extend(self.tolerance.iter().map(|(s, t, l)| Rule::new(s.clone(), *t, origin(*l))));
        r.ignore_headers.retain(|h| !self.compare_headers.contains(h));
        r.ignore_headers.extend(self.ignore_headers.iter().cloned());
        if let Some(n) = self.nan_equal {
            r.nan_equal = n;
        }
    }
}

/// A parsed `replay.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (relative paths resolve against its directory).
    pub path: PathBuf,
    /// The default corpus.
    pub corpus: Option<PathBuf>,
    /// Where compiled modules are cached.
    pub cache_dir: Option<PathBuf>,
    /// The targets by name, with the line each table starts on.
    pub targets: BTreeMap<String, (TargetDef, usize)>,
    /// The `[diff]` rules, parsed and checked.
    pub diff: DiffRules,
    /// The `[redact]` rules for recorders.
    pub redact: RedactConfig,
}

/// The `[diff]` table: rules with the line each was written on.
#[derive(Debug, Clone, Default)]
pub struct DiffRules {
    /// `ignore = [...]`: selectors with their lines.
    pub ignore: Vec<(crate::diff::Selector, usize)>,
    /// `unordered = [...]`.
    pub unordered: Vec<(crate::diff::Selector, usize)>,
    /// `tolerance = [{ path, abs, rel }]`.
    pub tolerance: Vec<(crate::diff::Selector, crate::diff::Tolerance, usize)>,
    /// Header names added to the default ignore list.
    pub ignore_headers: Vec<String>,
    /// Header names taken off the default ignore list.
    pub compare_headers: Vec<String>,
    /// NaN equals NaN (default true).
    pub nan_equal: Option<bool>,
}

/// Native targets registered from code, by name.
pub type NativeFactory =
    Arc<dyn Fn(&BTreeMap<String, String>) -> Result<Arc<dyn Target>, String> + Send + Sync>;

/// The native targets a program offers to `kind = "native"` entries.
#[derive(Clone, Default)]
pub struct Registry {
    natives: HashMap<String, NativeFactory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a native target under `name`; `make` gets the entry's `env` table.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        make: impl Fn(&BTreeMap<String, String>) -> Result<Arc<dyn Target>, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.natives.insert(name.into(), Arc::new(make));
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.natives.keys().cloned().collect();
        v.sort();
        v
    }
}

impl Config {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(at, e.message().to_string())
        })?;
        let mut targets = BTreeMap::new();
        for (name, spanned) in raw.targets {
            let at = spanned.span().start;
            let def = spanned.into_inner();
            let allowed = TargetDef::allowed(def.kind);
            if let Some(bad) = def.set_fields().into_iter().find(|f| !allowed.contains(f)) {
                return Err(invalid(
                    at,
                    format!(
                        "target {name}: `{bad}` is not a key of kind {}; it takes: kind, description, build, \
                         concurrency{}{}",
                        def.kind.name(),
                        if allowed.is_empty() { "" } else { ", " },
                        allowed.join(", ")
                    ),
                ));
            }
            let required: &[(&str, bool)] = match def.kind {
                Kind::Wasm => &[("module", def.module.is_some())],
                Kind::Process => &[("command", def.command.as_ref().is_some_and(|c| !c.is_empty()))],
                Kind::Http => &[("url", def.url.is_some())],
                _ => &[],
            };
            if let Some((key, _)) = required.iter().find(|(_, ok)| !ok) {
                return Err(invalid(at, format!("target {name}: kind {} needs `{key}`", def.kind.name())));
            }
            if def.concurrency == Some(0) {
                return Err(invalid(at, format!("target {name}: concurrency must be at least 1")));
            }
            targets.insert(name, (def, line_of(text, at)));
        }
        let diff = DiffRules::parse(&raw.diff, text, "diff").map_err(|(at, m)| invalid(at, m))?;
        let lined = |v: Vec<toml::Spanned<String>>| {
            v.into_iter()
                .map(|s| (line_of(text, s.span().start), s.into_inner()))
                .map(|(l, s)| (s, l))
                .collect()
        };
        let redact = RedactConfig {
            headers: raw.redact.headers,
            json_paths: lined(raw.redact.json_paths),
            patterns: lined(raw.redact.patterns),
            query: raw.redact.query,
        };
        Ok(Config {
            path: path.to_path_buf(),
            corpus: raw.corpus,
            cache_dir: raw.cache_dir,
            targets,
            diff,
            redact,
        })
    }

    /// The comparison rules of the `[diff]` table (each rule's origin is `file:line`).
    pub fn rules(&self) -> crate::diff::Rules {
        let mut r = crate::diff::Rules::default();
        self.diff.apply(&mut r, &self.path);
        r
    }

    /// Finds `replay.toml` in `dir`, if there is one.
    pub fn find(dir: &Path) -> Option<PathBuf> {
        let p = dir.join(CONFIG_FILE);
        p.is_file().then_some(p)
    }

    /// The directory relative paths resolve against.
    pub fn base(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// `p` resolved against the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base().join(p) }
    }

    /// The default corpus, resolved.
    pub fn corpus(&self) -> Option<PathBuf> {
        self.corpus.as_deref().map(|p| self.resolve(p))
    }

    /// The module cache directory: `cache_dir`, else `$REPLAY_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/replay`, else `~/.cache/replay`.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return self.resolve(d);
        }
        default_cache_dir()
    }

    /// The target definition of `name`.
    pub fn def(&self, name: &str) -> Result<&TargetDef, ConfigError> {
        self.targets.get(name).map(|(d, _)| d).ok_or_else(|| ConfigError::UnknownTarget {
            name: name.to_string(),
            path: self.path.clone(),
            known: self.targets.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// Loads target `name`: runs its build command (once per process), then prepares it.
    pub fn load_target(&self, name: &str, registry: &Registry) -> Result<Loaded, ConfigError> {
        let def = self.def(name)?;
        if let Some(cmd) = &def.build {
            run_build(name, cmd, self.base())?;
        }
        let load_err = |message: String| ConfigError::Load { target: name.to_string(), message };
        let (target, detail): (Arc<dyn Target>, String) = match def.kind {
            Kind::Wasm => {
                let module = self.resolve(def.module.as_deref().expect("checked on parse"));
                let t = crate::wasm::WasmTarget::load(&module, def, &self.cache_dir()).map_err(load_err)?;
                let detail = format!(
                    "{} ({} ABI, {} instances{})",
                    module.display(),
                    match def.abi.unwrap_or(WasmAbi::Reactor) {
                        WasmAbi::Command => "command",
                        WasmAbi::Reactor => "reactor",
                    },
                    match def.instance.unwrap_or(InstanceMode::Fresh) {
                        InstanceMode::Fresh => "fresh",
                        InstanceMode::Warm => "warm",
                    },
                    if t.cache_hit() { ", compiled module from cache" } else { "" }
                );
                (Arc::new(t), detail)
            }
            Kind::Process => {
                let t = crate::process::ProcessTarget::new(def, self.base()).map_err(load_err)?;
                let detail = format!("{} ({})", t.describe(), if t.stream() { "stream" } else { "per-case" });
                (Arc::new(t), detail)
            }
            Kind::Http => {
                let t = crate::http::HttpTarget::new(def).map_err(load_err)?;
                (Arc::new(t), def.url.clone().unwrap_or_default())
            }
            Kind::Recorded => {
                (Arc::new(crate::recorded::Recorded), "the outputs recorded in the corpus".into())
            }
            Kind::Native => {
                let fname = def.function.clone().unwrap_or_else(|| name.to_string());
                let make = registry.natives.get(&fname).ok_or_else(|| {
                    let known = registry.names();
                    load_err(format!(
                        "no native target {fname:?} is registered in this program (registered: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ))
                })?;
                (make(&def.env).map_err(load_err)?, format!("in-process `{fname}`"))
            }
        };
        let concurrency = def.concurrency.unwrap_or_else(|| target.concurrency());
        Ok(Loaded {
            name: name.to_string(),
            kind: def.kind.name().to_string(),
            detail: def.description.clone().map_or(detail.clone(), |d| format!("{d}: {detail}")),
            target,
            concurrency,
            rps: def.rps,
        })
    }
}

/// See [`Config::cache_dir`].
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("REPLAY_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("replay");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/replay"),
        None => std::env::temp_dir().join("replay-cache"),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

static BUILT: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);

/// Runs a target's build command once per process (per directory and command).
fn run_build(target: &str, command: &str, dir: &Path) -> Result<(), ConfigError> {
    let key = (dir.to_path_buf(), command.to_string());
    // Held while building, so two targets sharing a command build once.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.get_or_insert_with(HashSet::new).contains(&key) {
        return Ok(());
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ConfigError::Build {
            target: target.to_string(),
            command: command.to_string(),
            status: "did not start".into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let tail: String =
            text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(ConfigError::Build {
            target: target.to_string(),
            command: command.to_string(),
            status: out.status.to_string(),
            output: tail,
        });
    }
    built.get_or_insert_with(HashSet::new).insert(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/x/replay.toml"))
    }

    #[test]
    fn targets_parse_with_their_lines() {
        let c = parse("corpus = \"c\"\n\n[targets.a]\nkind = \"recorded\"\n\n[targets.b]\nkind = \"http\"\nurl = \"http://127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.targets["a"].1, 3);
        assert_eq!(c.targets["b"].1, 6);
        assert_eq!(c.corpus(), Some(PathBuf::from("/x/c")));
    }

    #[test]
    fn mistakes_name_the_file_line_and_what_was_expected() {
        let e = parse("[targets.a]\nkind = \"wasm\"\nmodul = \"x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/x/replay.toml:3:") && e.contains("unknown field `modul`"), "{e}");
        let e = parse("\n[targets.a]\nkind = \"process\"\nurl = \"x\"\ncommand = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/x/replay.toml:2:") && e.contains("`url` is not a key of kind process"),
            "{e}"
        );
        let e = parse("[targets.a]\nkind = \"wasm\"\n").unwrap_err().to_string();
        assert!(e.contains("kind wasm needs `module`"), "{e}");
        let e = parse("[targets.a]\nkind = \"ftp\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown variant `ftp`"), "{e}");
        let e = parse("colour = 1\n").unwrap_err().to_string();
        assert!(e.contains("/x/replay.toml:1:") && e.contains("colour"), "{e}");
        let c = parse("[targets.a]\nkind = \"recorded\"\n").unwrap();
        let e = c.def("zz").unwrap_err().to_string();
        assert!(e.contains("no target named \"zz\"") && e.contains("defined: a"), "{e}");
    }

    #[test]
    fn diff_rules_parse_with_their_lines_and_bad_selectors_are_named() {
        let c = parse(
            "[diff]\nignore = [\n  \"$.metadata\",\n  \"$..request_id\",\n]\nunordered = [\"$.tags\"]\n\
             tolerance = [{ path = \"$.score\", abs = 0.5 }]\nignore_headers = [\"X-Trace\"]\ncompare_headers = [\"etag\"]\n",
        )
        .unwrap();
        let r = c.rules();
        assert_eq!(r.ignore.len(), 2);
        assert_eq!(r.ignore[1].origin, "/x/replay.toml:4");
        assert_eq!(r.tolerance[0].param.abs, 0.5);
        assert!(r.ignore_headers.contains(&"x-trace".to_string()));
        assert!(!r.ignore_headers.contains(&"etag".to_string()));
        let e = parse("[diff]\nignore = [\n\"metadata\"]\n").unwrap_err().to_string();
        assert!(e.starts_with("/x/replay.toml:3:") && e.contains("must start with `$`"), "{e}");
        let e = parse("[diff]\nignroe = []\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `ignroe`"), "{e}");
        let e = parse("[diff]\ntolerance = [{ path = \"$.x\", abs = -1 }]\n").unwrap_err().to_string();
        assert!(e.contains("zero or more"), "{e}");
    }

    #[test]
    fn a_failing_build_command_says_so() {
        let text = "[targets.a]\nkind = \"recorded\"\nbuild = \"echo compiling; echo broken >&2; exit 3\"\n";
        let c = Config::parse(text, Path::new("replay.toml")).unwrap();
        let e = c.load_target("a", &Registry::new()).unwrap_err().to_string();
        assert!(e.contains("build command") && e.contains("broken") && e.contains("exit status: 3"), "{e}");
    }
}
