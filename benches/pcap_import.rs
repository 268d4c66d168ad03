//! `cargo bench --bench pcap_import`: the whole path from a capture to a corpus on disk (redacting
//! with the default rules, as `replay record pcap` does unless `--no-redact`), beside
//! the ceiling of the same crates walking every packet to the TCP header with no reassembly.
//!
//! The capture is `REPLAY_BENCH_PCAP` (use one from `../shared/tools/capture-gen`, as
//! `benches/pcap-compare.sh` does); without it, a synthetic keep-alive capture is built here.

use std::fs::File;
use std::hint::black_box;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corpora::{CorpusWriter, WriterOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use recorders::pcap::{Options, Recorder};
use recorders::redact::{RedactRules, Redactor};

// The same allocator as the `replay` binary, so the bench measures what ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 200 connections x 25 exchanges, bodies 200 B to 20 KB, in 1448-byte segments.
fn synthetic(path: &Path) {
    let mut w = PcapWriter::new(File::create(path).unwrap()).unwrap();
    let mut t = 0u64;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for conn in 0..200u16 {
        let (mut cseq, mut sseq) = (1u32, 1u32);
        for i in 0..25 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 200 + (x % 20_000) as usize;
            let req = format!("GET /item/{conn}/{i} HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\n\r\n");
            let mut resp =
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n")
                    .into_bytes();
            resp.extend(std::iter::repeat_n(b'x', len));
            for (client, data) in [(true, req.as_bytes()), (false, resp.as_slice())] {
                for part in data.chunks(1448) {
                    let (src, dst, sp, dp, seq) = if client {
                        ([10, 0, 0, 1], [10, 0, 0, 2], 10_000 + conn, 80, &mut cseq)
                    } else {
                        ([10, 0, 0, 2], [10, 0, 0, 1], 80, 10_000 + conn, &mut sseq)
                    };
                    let mut f = Vec::with_capacity(1514);
                    PacketBuilder::ethernet2([1; 6], [2; 6])
                        .ipv4(src, dst, 64)
                        .tcp(sp, dp, *seq, 65535)
                        .ack(1)
                        .write(&mut f, part)
                        .unwrap();
                    *seq = seq.wrapping_add(part.len() as u32);
                    t += 10;
                    w.write_packet(&PcapPacket::new(Duration::from_micros(t), f.len() as u32, &f)).unwrap();
                }
            }
        }
    }
}

/// The ceiling: pcap-file reads every record, etherparse slices it to the TCP header.
fn bare_walk(path: &Path) -> u64 {
    let mut r = PcapReader::new(BufReader::with_capacity(1 << 20, File::open(path).unwrap())).unwrap();
    let mut payload = 0u64;
    while let Some(p) = r.next_raw_packet() {
        let p = p.unwrap();
        if let Ok(s) = SlicedPacket::from_ethernet(&p.data)
            && let Some(TransportSlice::Tcp(t)) = s.transport
        {
            payload += t.payload().len() as u64;
        }
    }
    payload
}

fn record(path: &Path, out: &Path) -> u64 {
    let w = CorpusWriter::create(out, WriterOptions::default()).unwrap();
    // Redacting with the default rules, as `replay record pcap` does unless --no-redact.
    let redactor = Redactor::new([7; 32], &RedactRules::default()).unwrap();
    let mut r = Recorder::redacting(w, Options::default(), Some(std::sync::Arc::new(redactor)));
    r.read(Box::new(File::open(path).unwrap()), "bench.pcap").unwrap();
    let (w, stats) = r.finish().unwrap();
    w.close().unwrap();
    stats.exchanges
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let path = match std::env::var_os("REPLAY_BENCH_PCAP") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = tmp.path().join("synthetic.pcap");
            synthetic(&p);
            p
        }
    };
    let size = std::fs::metadata(&path).unwrap().len();
    let mut g = c.benchmark_group("pcap_import");
    g.throughput(Throughput::Bytes(size));
    g.sample_size(10);
    g.bench_function("ceiling_bare_walk", |b| b.iter(|| black_box(bare_walk(&path))));
    let mut k = 0;
    // Timed: creating the corpus, recording into it and closing it (with its fsyncs), as
    // `replay record pcap` does. Not timed: removing it afterwards (about 65 ms for big.pcap's).
    g.bench_function("record_to_corpus", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                k += 1;
                let out = tmp.path().join(format!("c{k}"));
                let started = std::time::Instant::now();
                black_box(record(&path, &out));
                spent += started.elapsed();
                std::fs::remove_dir_all(&out).unwrap();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
