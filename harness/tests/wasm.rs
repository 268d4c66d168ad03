//! The `wasm` target against a real wasmtime and hostile modules: every bound becomes an
//! observation, and the run goes on.

use std::path::Path;

use corpora::{Case, CaseData, Message};
use harness::{Config, Loaded, Outcome, Registry};

fn message(text: &str) -> Case {
    Case::new(CaseData::Message(Message {
        content_type: "text/plain".into(),
        input: text.as_bytes().to_vec().into(),
        output: None,
    }))
}

/// Writes `wat` as a module and loads it as target `t` with extra TOML keys.
fn load(dir: &Path, wat: &str, extra: &str) -> Result<Loaded, String> {
    let module = dir.join("m.wat");
    std::fs::write(&module, wat).unwrap();
    let toml = format!(
        "cache_dir = \"cache\"\n[targets.t]\nkind = \"wasm\"\nmodule = \"m.wat\"\ntimeout_ms = 300\n{extra}\n"
    );
    let cfg = Config::parse(&toml, &dir.join("replay.toml")).map_err(|e| e.to_string())?;
    cfg.load_target("t", &Registry::new()).map_err(|e| e.to_string())
}

/// A reactor whose `replay_handle` runs `body` (which leaves an i64 on the stack).
fn reactor(body: &str, extra_funcs: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "replay_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $p))
  {extra_funcs}
  (func (export "replay_handle") (param $p i32) (param $n i32) (result i64)
    {body}))"#
    )
}

/// An echo reactor: answers with a response frame built in place from the request frame
/// (status 0, the same content type and data) — the request's kind byte becomes the status.
const ECHO: &str = r#"
    ;; request: len u32 | kind u8 | ctlen u16 | ct | data  -> response: same layout, status 0
    (i32.store8 (i32.add (local.get $p) (i32.const 4)) (i32.const 0))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
      (i64.extend_i32_u (local.get $n)))"#;

#[test]
fn a_reactor_answers_and_each_case_gets_a_fresh_instance() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), &reactor(ECHO, ""), "abi = \"reactor\"").unwrap();
    // A fresh instance per case: the bump allocator starts at 1024 every time, so the cases
    // never run out of the one page of memory that 1000 cases would exhaust if state leaked.
    for i in 0..1000 {
        let text = format!("case {i} {}", "x".repeat(100));
        match t.target.observe(&message(&text)) {
            Outcome::Output { output: harness::Output::Bytes { content_type, data } } => {
                assert_eq!(content_type, "text/plain");
                assert_eq!(data.as_bytes(), text.as_bytes());
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
}

#[test]
fn an_infinite_loop_is_interrupted_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), &reactor("(loop $l (br $l)) (i64.const 0)", ""), "").unwrap();
    let start = std::time::Instant::now();
    match t.target.observe(&message("x")) {
        Outcome::Trap { code, nondeterministic, message } => {
            assert_eq!(code, "interrupt");
            assert!(nondeterministic);
            assert!(message.contains("300 ms"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed().as_secs() < 5);
}

#[test]
fn fuel_stops_a_loop_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), &reactor("(loop $l (br $l)) (i64.const 0)", ""), "fuel = 100000").unwrap();
    match t.target.observe(&message("x")) {
        Outcome::Trap { code, nondeterministic, .. } => {
            assert_eq!(code, "out_of_fuel");
            assert!(!nondeterministic);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_4_gib_grow_is_refused_and_reported_as_exhaustion() {
    let dir = tempfile::tempdir().unwrap();
    // Grow by 65535 pages (4 GiB), and trap if refused, as an allocator would.
    let body =
        "(if (i32.eq (memory.grow (i32.const 65535)) (i32.const -1)) (then unreachable)) (i64.const 0)";
    let t = load(dir.path(), &reactor(body, ""), "memory_mb = 16").unwrap();
    match t.target.observe(&message("x")) {
        Outcome::Exhausted { resource, message } => {
            assert_eq!(resource, "memory");
            assert!(message.contains("refused (cap 16 MiB)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(Outcome::Exhausted { resource: "memory".into(), message: String::new() }.nondeterministic());
}

#[test]
fn deep_recursion_is_a_nondeterministic_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let funcs = "(func $r (param i32) (result i32) (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))";
    let body = "(drop (call $r (i32.const 0))) (i64.const 0)";
    let t = load(dir.path(), &reactor(body, funcs), "").unwrap();
    match t.target.observe(&message("x")) {
        Outcome::Trap { code, nondeterministic, .. } => {
            assert_eq!(code, "stack_overflow");
            assert!(nondeterministic);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_trap_is_an_observation_with_its_code_and_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let t = load(dir.path(), &reactor("unreachable", ""), "").unwrap();
    match t.target.observe(&message("x")) {
        Outcome::Trap { code, message, nondeterministic } => {
            assert_eq!(code, "unreachable");
            assert!(!nondeterministic);
            assert!(message.contains("replay_handle") || message.contains("wasm backtrace"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // And the next case runs normally on a fresh instance of a good module.
    let good = load(dir.path(), &reactor(ECHO, ""), "").unwrap();
    assert!(matches!(good.target.observe(&message("y")), Outcome::Output { .. }));
}

#[test]
fn abi_violations_and_output_caps_are_observations() {
    let dir = tempfile::tempdir().unwrap();
    // Points its answer past the end of memory.
    let t = load(dir.path(), &reactor("(i64.const 0x00fffff000000010)", ""), "").unwrap();
    match t.target.observe(&message("x")) {
        Outcome::Error { message } => assert!(message.contains("outside its memory"), "{message}"),
        other => panic!("{other:?}"),
    }
    let t = load(dir.path(), &reactor(ECHO, ""), "max_output = 8").unwrap();
    match t.target.observe(&message("longer than eight bytes")) {
        Outcome::Exhausted { resource, .. } => assert_eq!(resource, "output"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_module_missing_an_export_fails_to_load_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path(), "(module (memory (export \"memory\") 1))", "").unwrap_err();
    assert!(e.contains("does not export `replay_alloc`"), "{e}");
    let e = load(dir.path(), "(module (memory (export \"memory\") 1))", "abi = \"command\"").unwrap_err();
    assert!(e.contains("no `_start` export"), "{e}");
    let e = load(dir.path(), "(module (func (export \"f\") (", "").unwrap_err();
    assert!(e.contains("does not compile"), "{e}");
}

#[test]
fn warm_instances_need_a_stateless_declaration_and_reuse_the_instance() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path(), &reactor(ECHO, ""), "instance = \"warm\"").unwrap_err();
    assert!(e.contains("replay_stateless"), "{e}");
    // Declares itself stateless (but leaks allocations, so reuse shows in its addresses).
    let funcs = "(func (export \"replay_stateless\") (result i32) (i32.const 1))";
    let t = load(dir.path(), &reactor(ECHO, funcs), "instance = \"warm\"\nconcurrency = 1").unwrap();
    for i in 0..20 {
        let text = format!("warm {i}");
        match t.target.observe(&message(&text)) {
            Outcome::Output { output: harness::Output::Bytes { data, .. } } => {
                assert_eq!(data.as_bytes(), text.as_bytes())
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_wasi_command_reads_stdin_writes_stdout_and_its_exit_status_counts() {
    let dir = tempfile::tempdir().unwrap();
    // Copies stdin to stdout in one read and one write; exits with the first byte - 'a' when
    // that byte is a digit's neighbour... simply: exit 3 if the input starts with '!'.
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; iovec at 0: buf 1024, len 4096; nread at 16
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
    (if (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 33))
      (then (call $exit (i32.const 3))))
    (i32.store (i32.const 4) (i32.load (i32.const 16)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;
    let t = load(dir.path(), wat, "abi = \"command\"\noutput_content_type = \"text/plain\"").unwrap();
    match t.target.observe(&message("hello wasi")) {
        Outcome::Output { output: harness::Output::Bytes { content_type, data } } => {
            assert_eq!(content_type, "text/plain");
            assert_eq!(data.as_bytes(), b"hello wasi");
        }
        other => panic!("{other:?}"),
    }
    match t.target.observe(&message("!boom")) {
        Outcome::Crash { status, .. } => assert_eq!(status, Some(3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_compiled_module_is_cached_on_disk_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = load(dir.path(), &reactor(ECHO, ""), "").unwrap();
    assert!(!a.detail.contains("from cache"), "{}", a.detail);
    let b = load(dir.path(), &reactor(ECHO, ""), "").unwrap();
    assert!(b.detail.contains("from cache"), "{}", b.detail);
    // A damaged cache file is recompiled, not loaded.
    let cache = dir.path().join("cache/wasm");
    for f in std::fs::read_dir(&cache).unwrap() {
        let p = f.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
    let c = load(dir.path(), &reactor(ECHO, ""), "").unwrap();
    assert!(!c.detail.contains("from cache"), "{}", c.detail);
    assert!(matches!(c.target.observe(&message("z")), Outcome::Output { .. }));
    // A different module is a different key.
    let d = load(dir.path(), &reactor(ECHO, "(func $unused)"), "").unwrap();
    assert!(!d.detail.contains("from cache"), "{}", d.detail);
}
