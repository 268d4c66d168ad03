//! `cargo bench --bench replay`: cases per second through the engine for every target kind,
//! each beside its ceiling measured in the same run.
//!
//! - `engine/noop`: a native target that does nothing, over 50,000 tiny cases: the engine's
//!   own cost per case (read and decode the case, hand it to a worker, put it back in order).
//! - `demo/*`: the bundled sample corpus (3360 packets and editor contexts) through the demo:
//!   native in process, the Wasm reactor (fresh and warm instances), the WASI command, the
//!   native binary in stream mode, per-case processes (first 100 cases), and HTTP to
//!   `demo-cli serve` on 127.0.0.1.
//! - `ceiling/*`: the bare function called natively; a bare wasmtime round trip of the same
//!   module (new `Store`, `InstancePre` on the pooling allocator, copy in, call, copy out),
//!   the same with the default allocator, and one warm instance.
//!
//! `benches/replay-compare.sh` sets the HTTP figure beside wrk at equal concurrency.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use corpora::{Case, CaseData, Corpus, CorpusWriter, Message, WriterOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use harness::engine::{self, EngineError, Selection};
use harness::{Config, FnTarget, Input, Loaded, Observation, Outcome};
use wasmtime::{Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(corpus: &Corpus, t: &Loaded, limit: Option<u64>) -> u64 {
    let sel = Selection { limit, ..Selection::default() };
    let mut n = 0u64;
    engine::run(
        corpus,
        std::slice::from_ref(t),
        &sel,
        &mut |_: &Case, o: Vec<Observation>| {
            black_box(&o);
            n += 1;
            Ok::<bool, EngineError>(true)
        },
        &mut |_| {},
    )
    .unwrap();
    n
}

fn tiny_corpus(dir: &Path, n: usize) -> Corpus {
    let mut w = CorpusWriter::create(dir, WriterOptions::default()).unwrap();
    for i in 0..n {
        w.append(&Case::new(CaseData::Message(Message {
            content_type: "text/plain".into(),
            input: format!("{i}").into_bytes().into(),
            output: None,
        })))
        .unwrap();
    }
    w.close().unwrap();
    Corpus::open(dir).unwrap()
}

/// Loads targets from the bundled replay.toml plus `extra` definitions.
fn targets(extra: &str) -> Config {
    let mut text = std::fs::read_to_string(root().join("replay.toml")).unwrap();
    text.push_str(extra);
    Config::parse(&text, &root().join("replay.toml")).unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(bin: &Path) -> (Server, u16) {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0"])
        .env("DEMO_SERIALIZER", "v2")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    (Server(child), port)
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tiny_corpus(&tmp.path().join("tiny"), 50_000);
    let sample = Corpus::open(root().join("corpora/samples/demo")).unwrap();
    let n_sample = sample.manifest().counts.records;

    let mut g = c.benchmark_group("engine");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(50_000));
    for workers in [1, 2] {
        let mut noop = Loaded::native("noop", Arc::new(FnTarget(|_: &Case| Outcome::bytes("", Vec::new()))));
        noop.concurrency = workers;
        g.bench_function(format!("noop/{workers}-workers"), |b| {
            b.iter(|| assert_eq!(run(&tiny, &noop, None), 50_000))
        });
    }
    g.finish();

    // Release builds of the demo for the bench: the Wasm modules and the native binary.
    let cfg = targets(
        r#"
[targets.bench-warm]
kind = "wasm"
module = "target/wasm32-wasip1/release/demo.wasm"
abi = "reactor"
instance = "warm"
build = "cargo build --quiet --release --target wasm32-wasip1 -p demo"
env = { DEMO_SERIALIZER = "v2" }

[targets.bench-stream]
kind = "process"
command = ["target/release/demo-cli", "stream"]
mode = "stream"
build = "cargo build --quiet --release -p demo --bin demo-cli"
env = { DEMO_SERIALIZER = "v2" }

[targets.bench-per-case]
kind = "process"
command = ["target/release/demo-cli", "once"]
output_content_type = "application/json"
build = "cargo build --quiet --release -p demo --bin demo-cli"
env = { DEMO_SERIALIZER = "v2" }
"#,
    );
    let reg = replay_cli::natives::registry();
    let load = |name: &str| cfg.load_target(name, &reg).unwrap();
    // Loading runs the build steps: the release demo-cli must exist before it serves.
    let stream = load("bench-stream");
    let (_server, port) = serve(&root().join("target/release/demo-cli"));
    let http_cfg = Config::parse(
        &format!("[targets.http]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}\"\nconcurrency = 4\n"),
        Path::new("replay.toml"),
    )
    .unwrap();
    let http = http_cfg.load_target("http", &reg).unwrap();

    let mut g = c.benchmark_group("demo");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n_sample));
    let one = |mut t: Loaded| {
        t.concurrency = 1;
        t
    };
    for (label, t) in [
        ("native", load("local")),
        ("native/1-worker", one(load("local"))),
        ("wasm-reactor", load("wasm")),
        ("wasm-reactor/1-worker", one(load("wasm"))),
        ("wasm-reactor-warm/1-worker", one(load("bench-warm"))),
        ("wasm-reactor-warm", load("bench-warm")),
        ("wasm-command", load("wasm-command")),
        ("process-stream", stream),
        ("http-4", http),
    ] {
        g.bench_function(label, |b| b.iter(|| assert_eq!(run(&sample, &t, None), n_sample)));
    }
    g.throughput(Throughput::Elements(100));
    let per_case = load("bench-per-case");
    g.bench_function("process-per-case", |b| b.iter(|| assert_eq!(run(&sample, &per_case, Some(100)), 100)));
    g.finish();

    // Ceilings over the same inputs.
    let inputs: Vec<Input> = sample.cases().map(|c| Input::of(&c.unwrap())).collect();
    let cfg_demo = demo::Config { serializer: demo::serializer::Version::V2, edge_buffer: false };
    let mut g = c.benchmark_group("ceiling");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("native-fn", |b| {
        b.iter(|| {
            for i in &inputs {
                let kind = demo::Kind::from_byte(i.kind as u8).unwrap();
                let _ = black_box(demo::handle(
                    &cfg_demo,
                    demo::Input { kind, content_type: &i.content_type, data: &i.data },
                ));
            }
        })
    });
    let wasm = std::fs::read(root().join("target/wasm32-wasip1/release/demo.wasm")).unwrap();
    for (pooling, label) in [
        (Pool::Tuned, "wasmtime-fresh-pooling-tuned"),
        (Pool::Plain, "wasmtime-fresh-pooling"),
        (Pool::Off, "wasmtime-fresh-default"),
    ] {
        let bare = Bare::new(&wasm, pooling);
        g.bench_function(label, |b| {
            b.iter(|| {
                for i in &inputs {
                    black_box(bare.fresh(i));
                }
            })
        });
    }
    let bare = Bare::new(&wasm, Pool::Tuned);
    let mut warm = bare.instance();
    g.bench_function("wasmtime-warm", |b| {
        b.iter(|| {
            for i in &inputs {
                black_box(warm.call(i));
            }
        })
    });
    g.finish();
}

struct Host {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
}

/// The bare round trip: no harness, no observation, no classification.
struct Bare {
    engine: Engine,
    pre: wasmtime::InstancePre<Host>,
}

struct Inst {
    store: Store<Host>,
    memory: wasmtime::Memory,
    alloc: wasmtime::TypedFunc<u32, u32>,
    handle: wasmtime::TypedFunc<(u32, u32), u64>,
}

impl Inst {
    fn call(&mut self, i: &Input) -> Vec<u8> {
        let mut frame = Vec::new();
        i.encode_frame(&mut frame);
        let ptr = self.alloc.call(&mut self.store, frame.len() as u32).unwrap();
        self.memory.write(&mut self.store, ptr as usize, &frame).unwrap();
        let r = self.handle.call(&mut self.store, (ptr, frame.len() as u32)).unwrap();
        let (p, n) = ((r >> 32) as usize, (r & 0xffff_ffff) as usize);
        self.memory.data(&self.store)[p..p + n].to_vec()
    }
}

#[derive(Clone, Copy)]
enum Pool {
    /// The default allocator.
    Off,
    /// The pooling allocator as configured by default.
    Plain,
    /// The pooling allocator as the harness configures it (pages reset by PAGEMAP_SCAN).
    Tuned,
}

impl Bare {
    fn new(wasm: &[u8], pool: Pool) -> Bare {
        let mut config = wasmtime::Config::new();
        let mut p = PoolingAllocationConfig::new();
        match pool {
            Pool::Off => {}
            Pool::Plain => {
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
            }
            Pool::Tuned => {
                p.pagemap_scan(wasmtime::Enabled::Auto);
                p.linear_memory_keep_resident(64 << 20);
                p.table_keep_resident(1 << 20);
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
            }
        }
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, wasm).unwrap();
        let mut linker: Linker<Host> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi).unwrap();
        let pre = linker.instantiate_pre(&module).unwrap();
        Bare { engine, pre }
    }

    fn instance(&self) -> Inst {
        let wasi = wasmtime_wasi::WasiCtxBuilder::new().env("DEMO_SERIALIZER", "v2").build_p1();
        let mut store = Store::new(&self.engine, Host { wasi });
        let inst = self.pre.instantiate(&mut store).unwrap();
        if let Ok(init) = inst.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ()).unwrap();
        }
        let memory = inst.get_memory(&mut store, "memory").unwrap();
        let alloc = inst.get_typed_func(&mut store, "replay_alloc").unwrap();
        let handle = inst.get_typed_func(&mut store, "replay_handle").unwrap();
        Inst { store, memory, alloc, handle }
    }

    fn fresh(&self, i: &Input) -> Vec<u8> {
        self.instance().call(i)
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
