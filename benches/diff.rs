//! `cargo bench --bench diff`: comparing pairs of 10 KiB JSON documents (decode both sides,
//! then diff), equal and with a few differences, beside the ceiling: serde_json parsing the
//! same bytes of both sides into its own `Value`.

use std::hint::black_box;
use std::time::Duration;

use corpora::value::{Value, decode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use harness::diff::{Rules, diff_values};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A chat-completions-like response of about 10 KiB.
fn document(variant: u64) -> Vec<u8> {
    let choices: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            serde_json::json!({
                "index": i,
                "message": {"role": "assistant", "content": format!("fn item_{i}() {{ let total = {}; }}", i * 7 + variant as usize * (i == 5) as usize)},
                "logprobs": (0..6).map(|k| (k as f64) * -0.25 - (i as f64) / 10.0).collect::<Vec<_>>(),
                "finish_reason": if i % 3 == 0 { "stop" } else { "length" },
                "tags": ["a", "b", "c"],
            })
        })
        .collect();
    let doc = serde_json::json!({
        "id": "cmpl-0123456789",
        "object": "chat.completion",
        "created": 1_795_000_000u64 + variant,
        "model": "copilot-codex-2",
        "choices": choices,
        "usage": {"prompt_tokens": 812, "completion_tokens": 190, "total_tokens": 1002},
        "system_fingerprint": format!("fp_{variant:08x}"),
        "metadata": {"region": "eu-west-1", "shard": 7, "trace": "0af7651916cd43dd8448eb211c80319c"},
    });
    let mut s = serde_json::to_vec(&doc).unwrap();
    while s.len() < 10 * 1024 {
        // Pad with a realistic-looking array of numbers until the document is 10 KiB.
        let mut v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        let pad = v["usage"].as_object_mut().unwrap().entry("samples").or_insert(serde_json::json!([]));
        pad.as_array_mut().unwrap().extend((0..64).map(|k| serde_json::json!(k * 31 % 977)));
        s = serde_json::to_vec(&v).unwrap();
    }
    s
}

fn bench(c: &mut Criterion) {
    let a = document(0);
    let b = document(0);
    let changed = document(3); // differs in created, one content string, fingerprint
    let rules = Rules::default();
    let mut g = c.benchmark_group("diff/10KiB-json");
    g.sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes((a.len() + b.len()) as u64));
    g.bench_function("ceiling-serde_json-parse-both", |bch| {
        bch.iter(|| {
            let x: serde_json::Value = serde_json::from_slice(black_box(&a)).unwrap();
            let y: serde_json::Value = serde_json::from_slice(black_box(&b)).unwrap();
            black_box((x, y))
        })
    });
    let run = |x: &[u8], y: &[u8]| {
        let (va, _) = decode("application/json", x);
        let (vb, _) = decode("application/json", y);
        diff_values(&va, &vb, &rules)
    };
    assert!(run(&a, &b).is_empty());
    assert_eq!(run(&a, &changed).len(), 3);
    g.bench_function("equal", |bch| bch.iter(|| black_box(run(black_box(&a), black_box(&b)))));
    g.bench_function("three-differences", |bch| {
        bch.iter(|| black_box(run(black_box(&a), black_box(&changed))))
    });
    let (va, _) = decode("application/json", &a);
    let (vb, _) = decode("application/json", &changed);
    g.bench_function("compare-only-decoded", |bch| {
        bch.iter(|| black_box(diff_values(black_box(&va), black_box(&vb), &rules)))
    });
    g.finish();
    black_box(Value::Null);
}

criterion_group!(benches, bench);
criterion_main!(benches);
