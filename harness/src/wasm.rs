//! The `wasm` target: a module in wasmtime, a fresh instance per case.
//!
//! Loading compiles the module once (or takes it from the on-disk cache, keyed by the module's
//! hash and the engine's configuration) and pre-links it into an [`InstancePre`] over the
//! pooling allocator. Each case then gets a new [`Store`] and instance: no state leaks from one
//! case to the next. Every call is bounded by an epoch deadline (the `timeout_ms`), optionally
//! by fuel, by a memory cap enforced through a [`ResourceLimiter`], and by the wasm stack
//! limit; hitting a bound is an observation, not an error of the run.
//!
//! Two ABIs (`docs/target-abi.md`): a WASI preview 1 command (input on stdin, output on
//! stdout) and the reactor ABI (`replay_alloc` / `replay_handle` over exported memory).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corpora::Case;
use wasmtime::{
    Config, Engine, Extern, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module, ModuleExport,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use crate::config::{InstanceMode, TargetDef, WasmAbi};
use crate::input::{Input, decode_response_frame};
use crate::observation::Outcome;
use crate::target::Target;

/// How often the epoch advances; time bounds are rounded up to it.
const TICK: Duration = Duration::from_millis(5);
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_MEMORY_MB: u64 = 256;
const DEFAULT_MAX_OUTPUT: usize = 16 << 20;
const STDERR_CAP: usize = 64 << 10;
const WASI: &str = "wasi_snapshot_preview1";

/// Per-store state: WASI (when the module imports it) and the memory bound.
struct Host {
    wasi: Option<WasiP1Ctx>,
    limits: Limits,
}

/// Enforces the memory cap and remembers a refused growth, so that the trap that usually
/// follows is reported as resource exhaustion.
struct Limits {
    memory_bytes: usize,
    refused: Option<String>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let cap = maximum.map_or(self.memory_bytes, |m| m.min(self.memory_bytes));
        if desired > cap {
            self.refused = Some(format!(
                "memory.grow from {} to {} refused (cap {})",
                size(current),
                size(desired),
                size(cap)
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let cap = maximum.map_or(1 << 20, |m| m.min(1 << 20));
        if desired > cap {
            self.refused = Some(format!("table.grow to {desired} elements refused (cap {cap})"));
            return Ok(false);
        }
        Ok(true)
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Advances an engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: &Engine) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("replay-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        Ticker { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reactor exports, resolved once against the module.
struct ReactorExports {
    memory: ModuleExport,
    alloc: ModuleExport,
    handle: ModuleExport,
    initialize: Option<ModuleExport>,
}

/// An instance's memory, `replay_alloc` and `replay_handle`.
type ReactorFuncs = (Memory, TypedFunc<u32, u32>, TypedFunc<(u32, u32), u64>);

/// A warm reactor instance, reused by one worker at a time.
struct Warm {
    store: Store<Host>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    handle: TypedFunc<(u32, u32), u64>,
}

/// A module in wasmtime.
pub struct WasmTarget {
    engine: Engine,
    pre: InstancePre<Host>,
    abi: WasmAbi,
    reactor: Option<ReactorExports>,
    warm: Option<Mutex<Vec<Warm>>>,
    uses_wasi: bool,
    env: Vec<(String, String)>,
    args: Vec<String>,
    memory_bytes: usize,
    fuel: Option<u64>,
    timeout_ms: u64,
    deadline_ticks: u64,
    max_output: usize,
    output_content_type: String,
    cache_hit: bool,
    _ticker: Ticker,
}

impl WasmTarget {
    /// Compiles (or loads from `cache_dir`) the module at `path` and prepares it.
    pub fn load(path: &Path, def: &TargetDef, cache_dir: &Path) -> Result<WasmTarget, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read module {}: {e}", path.display()))?;
        let abi = def.abi.unwrap_or(WasmAbi::Reactor);
        let memory_bytes = (def.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) << 20) as usize;
        let concurrency =
            def.concurrency.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let engine = engine(memory_bytes, def.fuel.is_some(), def.stack_kb, concurrency)?;
        let (module, cache_hit) = compile_cached(&engine, &bytes, cache_dir, path)?;
        let uses_wasi = module.imports().any(|i| i.module() == WASI);
        let mut linker: Linker<Host> = Linker::new(&engine);
        if uses_wasi {
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| {
                h.wasi.as_mut().expect("a WASI context is made for every store of a WASI module")
            })
            .map_err(|e| format!("linking WASI: {e}"))?;
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| format!("module {} cannot be linked: {e}", path.display()))?;
        let export = |name: &str| module.get_export_index(name);
        let reactor = match abi {
            WasmAbi::Command => {
                if export("_start").is_none() {
                    return Err(format!(
                        "module {} has no `_start` export, so it is not a WASI command (abi = \"reactor\"?)",
                        path.display()
                    ));
                }
                None
            }
            WasmAbi::Reactor => {
                let need = |name: &str| {
                    export(name).ok_or_else(|| {
                        format!(
                            "module {} does not export `{name}`, which the reactor ABI needs",
                            path.display()
                        )
                    })
                };
                Some(ReactorExports {
                    memory: need("memory")?,
                    alloc: need("replay_alloc")?,
                    handle: need("replay_handle")?,
                    initialize: export("_initialize"),
                })
            }
        };
        let warm = match def.instance.unwrap_or(InstanceMode::Fresh) {
            InstanceMode::Fresh => None,
            InstanceMode::Warm => {
                if abi != WasmAbi::Reactor {
                    return Err("instance = \"warm\" needs abi = \"reactor\"".into());
                }
                Some(Mutex::new(Vec::new()))
            }
        };
        let timeout_ms = def.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let mut t = WasmTarget {
            _ticker: Ticker::start(&engine),
            engine,
            pre,
            abi,
            reactor,
            warm,
            uses_wasi,
            env: def.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            args: def.args.clone(),
            memory_bytes,
            fuel: def.fuel,
            timeout_ms,
            deadline_ticks: timeout_ms.div_ceil(TICK.as_millis() as u64) + 1,
            max_output: def.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
            output_content_type: def
                .output_content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            cache_hit,
        };
        if t.warm.is_some() {
            // A module must say it keeps no state between cases before it is reused.
            let (mut store, _) = t.store(None);
            let inst = t.pre.instantiate(&mut store).map_err(|e| format!("instantiating: {e}"))?;
            let stateless = inst
                .get_typed_func::<(), u32>(&mut store, "replay_stateless")
                .and_then(|f| f.call(&mut store, ()))
                .unwrap_or(0);
            if stateless != 1 {
                return Err(
                    "instance = \"warm\" needs the module to export `replay_stateless` returning 1".into()
                );
            }
        }
        // Prove the module instantiates and answers the ABI now, not at the first case.
        if t.abi == WasmAbi::Reactor {
            let (mut store, _) = t.store(None);
            let inst = t.pre.instantiate(&mut store).map_err(|e| format!("instantiating: {e}"))?;
            t.reactor_funcs(&mut store, &inst).map_err(|e| e.to_string())?;
        }
        t.cache_hit = cache_hit;
        Ok(t)
    }

    /// Whether the compiled module came from the cache.
    pub fn cache_hit(&self) -> bool {
        self.cache_hit
    }

    /// A new store with the bounds set, and WASI if the module imports it.
    fn store(&self, input: Option<&Input>) -> (Store<Host>, Option<(MemoryOutputPipe, MemoryOutputPipe)>) {
        let mut pipes = None;
        let wasi = self.uses_wasi.then(|| {
            let mut b = WasiCtxBuilder::new();
            b.args(
                &std::iter::once("module".to_string()).chain(self.args.iter().cloned()).collect::<Vec<_>>(),
            );
            b.envs(&self.env);
            if let Some(input) = input {
                b.env("REPLAY_CASE_KIND", input.kind.name());
                b.env("REPLAY_CONTENT_TYPE", &input.content_type);
                if self.abi == WasmAbi::Command {
                    let out = MemoryOutputPipe::new(self.max_output);
                    let err = MemoryOutputPipe::new(STDERR_CAP);
                    b.stdin(MemoryInputPipe::new(input.data.clone()));
                    b.stdout(out.clone());
                    b.stderr(err.clone());
                    pipes = Some((out, err));
                }
            }
            b.build_p1()
        });
        let mut store = Store::new(
            &self.engine,
            Host { wasi, limits: Limits { memory_bytes: self.memory_bytes, refused: None } },
        );
        store.limiter(|h| &mut h.limits);
        self.arm(&mut store);
        (store, pipes)
    }

    fn arm(&self, store: &mut Store<Host>) {
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        if let Some(f) = self.fuel {
            store.set_fuel(f).expect("fuel is enabled when configured");
        }
    }

    fn reactor_funcs(
        &self,
        store: &mut Store<Host>,
        inst: &wasmtime::Instance,
    ) -> wasmtime::Result<ReactorFuncs> {
        let ex = self.reactor.as_ref().expect("reactor ABI");
        let get = |store: &mut Store<Host>, e: &ModuleExport| inst.get_module_export(&mut *store, e);
        if let Some(init) = &ex.initialize
            && let Some(Extern::Func(f)) = get(store, init)
        {
            f.typed::<(), ()>(&*store)?.call(&mut *store, ())?;
        }
        let memory = match get(store, &ex.memory) {
            Some(Extern::Memory(m)) => m,
            _ => wasmtime::bail!("export `memory` is not a memory"),
        };
        let func = |store: &mut Store<Host>, e: &ModuleExport, name: &str| match get(store, e) {
            Some(Extern::Func(f)) => Ok(f),
            _ => wasmtime::bail!("export `{name}` is not a function"),
        };
        let alloc = func(store, &ex.alloc, "replay_alloc")?
            .typed::<u32, u32>(&*store)
            .map_err(|e| wasmtime::format_err!("`replay_alloc` must be (i32) -> i32: {e}"))?;
        let handle = func(store, &ex.handle, "replay_handle")?
            .typed::<(u32, u32), u64>(&*store)
            .map_err(|e| wasmtime::format_err!("`replay_handle` must be (i32, i32) -> i64: {e}"))?;
        Ok((memory, alloc, handle))
    }

    fn run_command(&self, input: &Input) -> Outcome {
        let (mut store, pipes) = self.store(Some(input));
        let (out, err) = pipes.expect("a command's store has pipes");
        let result = self.pre.instantiate(&mut store).and_then(|inst| {
            let start = inst.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        let status = match result {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => exit.0,
                None => return self.classify(e, &store.data().limits, Some(&err)),
            },
        };
        drop(store);
        if status == 0 {
            Outcome::bytes(self.output_content_type.clone(), out.contents().to_vec())
        } else {
            Outcome::Crash { status: Some(status), signal: None, stderr: err.contents().to_vec().into() }
        }
    }

    fn run_reactor(&self, input: &Input) -> Outcome {
        let mut frame = Vec::new();
        input.encode_frame(&mut frame);
        if let Some(pool) = &self.warm {
            let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut w = match taken {
                Some(w) => w,
                None => match self.new_warm() {
                    Ok(w) => w,
                    Err(e) => return Outcome::error(format!("instantiating: {e}")),
                },
            };
            self.arm(&mut w.store);
            w.store.data_mut().limits.refused = None;
            let r = call_reactor(&mut w.store, w.memory, &w.alloc, &w.handle, &frame, self.max_output);
            let outcome = self.finish_reactor(r, &w.store);
            if matches!(outcome, Outcome::Output { .. } | Outcome::Error { .. }) {
                // Only an instance that returned normally goes back; a trapped one is dropped.
                pool.lock().unwrap_or_else(|e| e.into_inner()).push(w);
            }
            return outcome;
        }
        let (mut store, _) = self.store(Some(input));
        let r = self.pre.instantiate(&mut store).and_then(|inst| {
            let (memory, alloc, handle) = self.reactor_funcs(&mut store, &inst)?;
            call_reactor(&mut store, memory, &alloc, &handle, &frame, self.max_output)
        });
        self.finish_reactor(r, &store)
    }

    fn new_warm(&self) -> wasmtime::Result<Warm> {
        let (mut store, _) = self.store(None);
        let inst = self.pre.instantiate(&mut store)?;
        let (memory, alloc, handle) = self.reactor_funcs(&mut store, &inst)?;
        Ok(Warm { store, memory, alloc, handle })
    }

    fn finish_reactor(
        &self,
        r: Result<Result<Vec<u8>, Outcome>, wasmtime::Error>,
        store: &Store<Host>,
    ) -> Outcome {
        match r {
            Err(e) => self.classify(e, &store.data().limits, None),
            Ok(Err(outcome)) => outcome,
            Ok(Ok(frame)) => match decode_response_frame(&frame) {
                Ok(Ok((ct, data))) => Outcome::bytes(ct, data),
                Ok(Err(message)) => Outcome::Error { message },
                Err(e) => Outcome::error(format!("module broke the reactor ABI: {e}")),
            },
        }
    }

    /// Turns a failed call into an observation.
    fn classify(&self, e: wasmtime::Error, limits: &Limits, stderr: Option<&MemoryOutputPipe>) -> Outcome {
        let mut message = format!("{e:?}");
        if let Some(err) = stderr {
            let text = err.contents();
            if !text.is_empty() {
                message.push_str("\nstderr:\n");
                message.push_str(&String::from_utf8_lossy(&text));
            }
        }
        truncate(&mut message, 8 << 10);
        if let Some(refused) = &limits.refused {
            return Outcome::Exhausted {
                resource: "memory".into(),
                message: format!("{refused}; then: {message}"),
            };
        }
        if let Some(trap) = e.downcast_ref::<Trap>() {
            let (code, nondeterministic) = match trap {
                Trap::StackOverflow => ("stack_overflow", true),
                Trap::Interrupt => {
                    message = format!("interrupted at the {} ms deadline: {message}", self.timeout_ms);
                    ("interrupt", true)
                }
                Trap::OutOfFuel => ("out_of_fuel", false),
                Trap::UnreachableCodeReached => ("unreachable", false),
                Trap::MemoryOutOfBounds => ("memory_out_of_bounds", false),
                Trap::IntegerDivisionByZero => ("integer_division_by_zero", false),
                Trap::IntegerOverflow => ("integer_overflow", false),
                Trap::BadConversionToInteger => ("bad_conversion_to_integer", false),
                Trap::IndirectCallToNull => ("indirect_call_to_null", false),
                Trap::BadSignature => ("bad_signature", false),
                Trap::TableOutOfBounds => ("table_out_of_bounds", false),
                Trap::AllocationTooLarge => ("allocation_too_large", true),
                _ => ("other", false),
            };
            return Outcome::Trap { code: code.into(), message, nondeterministic };
        }
        if message.contains("write beyond capacity") {
            return Outcome::Exhausted {
                resource: "output".into(),
                message: format!("wrote more than max_output = {} bytes", self.max_output),
            };
        }
        Outcome::Error { message }
    }
}

/// Copies the frame in, calls `replay_handle`, copies the response frame out. The outer error
/// is a trap (classified by the caller); the inner one an ABI violation or an output cap.
fn call_reactor(
    store: &mut Store<Host>,
    memory: Memory,
    alloc: &TypedFunc<u32, u32>,
    handle: &TypedFunc<(u32, u32), u64>,
    frame: &[u8],
    max_output: usize,
) -> wasmtime::Result<Result<Vec<u8>, Outcome>> {
    let Ok(len) = u32::try_from(frame.len()) else {
        return Ok(Err(Outcome::error("input larger than 4 GiB")));
    };
    let ptr = alloc.call(&mut *store, len)?;
    if memory.write(&mut *store, ptr as usize, frame).is_err() {
        return Ok(Err(Outcome::error(format!(
            "module broke the reactor ABI: replay_alloc({len}) returned {ptr:#x}, outside its memory"
        ))));
    }
    let r = handle.call(&mut *store, (ptr, len))?;
    let (optr, olen) = ((r >> 32) as usize, (r & 0xffff_ffff) as usize);
    if olen > max_output {
        return Ok(Err(Outcome::Exhausted {
            resource: "output".into(),
            message: format!("answered {olen} bytes, more than max_output = {max_output}"),
        }));
    }
    match memory.data(&*store).get(optr..optr + olen) {
        Some(b) => Ok(Ok(b.to_vec())),
        None => Ok(Err(Outcome::error(format!(
            "module broke the reactor ABI: replay_handle returned {olen} bytes at {optr:#x}, outside its memory"
        )))),
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
}

impl Target for WasmTarget {
    fn observe(&self, case: &Case) -> Outcome {
        let input = Input::of(case);
        match self.abi {
            WasmAbi::Command => self.run_command(&input),
            WasmAbi::Reactor => self.run_reactor(&input),
        }
    }

    fn batch(&self) -> usize {
        64
    }
}

/// The engine: epoch interruption always, fuel when asked, the pooling allocator sized for
/// the concurrency.
fn engine(
    memory_bytes: usize,
    fuel: bool,
    stack_kb: Option<usize>,
    concurrency: usize,
) -> Result<Engine, String> {
    let mut pool = PoolingAllocationConfig::new();
    // Fresh instances per worker, plus warm ones, plus the load-time probes.
    let slots = (concurrency * 2 + 4) as u32;
    pool.total_core_instances(slots);
    pool.total_memories(slots);
    pool.total_tables(slots);
    pool.max_memory_size(memory_bytes);
    // A slot reused for the next case is reset by rewriting only the pages the last case
    // dirtied (PAGEMAP_SCAN, Linux 6.7+) instead of dropping every page and faulting them all
    // back in: most of a fresh instance's cost was those page faults.
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.linear_memory_keep_resident(memory_bytes.min(64 << 20));
    pool.table_keep_resident(1 << 20);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    if let Some(kb) = stack_kb {
        config.max_wasm_stack(kb << 10);
    }
    Engine::new(&config).map_err(|e| format!("configuring wasmtime: {e}"))
}

/// Compiles `bytes`, or loads the artifact cached under a key of the module's hash and the
/// engine's configuration. Cache files carry their own BLAKE3 so a damaged one is recompiled,
/// never loaded.
fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: &Path,
    path: &Path,
) -> Result<(Module, bool), String> {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let mut key = blake3::Hasher::new();
    key.update(b"replay.wasm-cache.v1\0");
    key.update(&h.finish().to_le_bytes());
    key.update(bytes);
    let file: PathBuf = cache_dir.join("wasm").join(format!("{}.cwasm", &key.finalize().to_hex()[..32]));
    if let Ok(cached) = std::fs::read(&file)
        && cached.len() > 32
        && blake3::hash(&cached[32..]).as_bytes()[..] == cached[..32]
        && let Ok(m) = deserialize(engine, &cached[32..])
    {
        return Ok((m, true));
    }
    let artifact = engine
        .precompile_module(bytes)
        .map_err(|e| format!("module {} does not compile: {e:?}", path.display()))?;
    let module = deserialize(engine, &artifact).map_err(|e| format!("loading the compiled module: {e}"))?;
    // The cache is an optimisation: failing to write it is not an error of the run.
    let _ = write_cache(&file, &artifact);
    Ok((module, false))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `artifact` is either what `precompile_module` of this same engine configuration
    // just produced, or a cache file whose BLAKE3 over these exact bytes matched the one we
    // wrote next to them; wasmtime itself checks the engine and version header.
    unsafe { Module::deserialize(engine, artifact) }
}

fn write_cache(file: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().expect("a cache file has a directory");
    std::fs::create_dir_all(dir)?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{}-{nanos}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(blake3::hash(artifact).as_bytes())?;
    f.write_all(artifact)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}
