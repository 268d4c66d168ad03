//! `cargo bench --bench corpus`: corpus write and read throughput for 1 KiB and 64 KiB cases,
//! beside the page-cache ceiling (reading the same segment files with no decoding, as `cat`
//! does). MB/s counts segment-file bytes; cases/s is printed by `benches/corpus-compare.sh`.

use std::hint::black_box;
use std::io::Read;
use std::path::Path;

use corpora::{Blob, Case, CaseData, Corpus, CorpusWriter, Message, RecordedOutput, WriterOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Deterministic JSON-ish text of `len` bytes, different for every `i`.
fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut out = format!("{{\"case\":{i},\"text\":\"").into_bytes();
    let mut x = i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    while out.len() < len - 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b"abcdefghijklmnopqrstuvwxyz0123456789 "[(x % 37) as usize]);
    }
    out.extend_from_slice(b"\"}");
    out
}

fn cases(n: usize, size: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            Case::new(CaseData::Message(Message {
                content_type: "application/json".into(),
                input: Blob(payload(i, size)),
                output: Some(RecordedOutput {
                    content_type: "application/json".into(),
                    data: Blob(b"{\"ok\":true}".to_vec()),
                }),
            }))
            .with_time_ns(1_795_000_000_000_000_000 + i as i64)
            .with_tag("lang", "rust")
        })
        .collect()
}

fn write(dir: &Path, cases: &[Case]) {
    let mut w = CorpusWriter::create(dir, WriterOptions::default()).unwrap();
    for c in cases {
        w.append(c).unwrap();
    }
    w.close().unwrap();
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    for (label, size, n) in [("1KiB", 1024usize, 32_768usize), ("64KiB", 64 * 1024, 512)] {
        let cases = cases(n, size);
        let dir = tmp.path().join(label);
        write(&dir, &cases);
        let corpus = Corpus::open(&dir).unwrap();
        let bytes = corpus.segment_bytes();
        let mut g = c.benchmark_group(format!("corpus/{label}"));
        g.throughput(Throughput::Bytes(bytes));
        g.sample_size(10);

        g.bench_function("write", |b| {
            let mut k = 0;
            b.iter(|| {
                k += 1;
                let d = tmp.path().join(format!("w-{label}-{k}"));
                write(&d, &cases);
                std::fs::remove_dir_all(&d).unwrap();
            })
        });
        g.bench_function("read", |b| {
            b.iter(|| {
                let corpus = Corpus::open(&dir).unwrap();
                let mut n = 0usize;
                for case in corpus.cases() {
                    n += black_box(case.unwrap()).tags.len();
                }
                assert_eq!(n, cases.len());
            })
        });
        g.bench_function("ceiling_read_files", |b| {
            let mut buf = vec![0u8; 256 * 1024];
            b.iter(|| {
                for s in corpus.segments() {
                    let mut f = std::fs::File::open(&s.path).unwrap();
                    while f.read(&mut buf).unwrap() > 0 {
                        black_box(&buf);
                    }
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
