//! Mutated captures through the whole recorder: every input ends with a result or an error,
//! never a panic, a hang or an unbounded allocation (every length read from a file is capped
//! before anything is allocated for it).
//!
//! `cargo test` runs a short pass. The long run quoted in the notes:
//! `PROPTEST_CASES=230000 REPLAY_CAPTURES=$(realpath ../shared/captures) cargo test --release -p recorders --test fuzz`

use std::io::Cursor;
use std::time::Duration;

use corpora::{Corpus, CorpusWriter, WriterOptions};
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use proptest::prelude::*;
use recorders::pcap::{Options, Recorder};

fn builtin_seed() -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let frames: Vec<(bool, u32, &[u8])> = vec![
        (true, 1, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        (false, 1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        (true, 29, b"POST /y HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"),
        (false, 67, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ];
    for (i, (client, seq, payload)) in frames.into_iter().enumerate() {
        let (src, dst, sp, dp) = if client {
            ([10, 0, 0, 1], [10, 0, 0, 2], 5000, 80)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 80, 5000)
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 1000)
            .ack(1)
            .write(&mut f, payload)
            .unwrap();
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, &f)).unwrap();
    }
    w.into_writer()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![builtin_seed()];
    if let Some(dir) = std::env::var_os("REPLAY_CAPTURES") {
        let dir = std::path::PathBuf::from(dir);
        for f in [
            "zeek/http_get.pcap",
            "zeek/http_cooper-grill-dvwa.pcapng",
            "zeek/tcp_truncated-header.pcap",
            "zeek/http_post.pcap",
            "suricata/eve-overlap-payload-01_tcp-overlap.pcap",
            "zeek/http_docker-http-upgrade.pcap",
        ] {
            // Named, not skipped: a relative REPLAY_CAPTURES resolves against this crate's
            // folder, and earlier long runs quietly fuzzed the built-in seed alone that way.
            let path = dir.join(f);
            let b = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "REPLAY_CAPTURES is set but {} cannot be read: {e} (give an absolute path)",
                    path.display()
                )
            });
            out.push(b);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// A plausible but wrong 32-bit length somewhere.
    Length(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = proptest::collection::vec(any::<u8>(), 1..24);
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        2 => (any::<usize>(), junk.clone()).prop_map(|(a, b)| Mutation::Overwrite(a, b)),
        1 => (any::<usize>(), junk).prop_map(|(a, b)| Mutation::Insert(a, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop_oneof![0u32..2000, Just(u32::MAX), Just(1 << 24), any::<u32>()])
            .prop_map(|(a, n)| Mutation::Length(a, n)),
    ]
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    if b.is_empty() {
        return;
    }
    let at = |x: usize, b: &Vec<u8>| x % b.len();
    match m {
        Mutation::Flip(x, v) => {
            let i = at(*x, b);
            b[i] ^= v | 1;
        }
        Mutation::Overwrite(x, junk) => {
            let i = at(*x, b);
            for (k, v) in junk.iter().enumerate() {
                if let Some(slot) = b.get_mut(i + k) {
                    *slot = *v;
                }
            }
        }
        Mutation::Insert(x, junk) => {
            let i = at(*x, b);
            b.splice(i..i, junk.iter().copied());
        }
        Mutation::Delete(x, n) => {
            let i = at(*x, b);
            let end = (i + n).min(b.len());
            b.drain(i..end);
        }
        Mutation::Truncate(x) => {
            let i = at(*x, b);
            b.truncate(i);
        }
        Mutation::Length(x, n) => {
            let i = at(*x, b) & !3;
            if i + 4 <= b.len() {
                b[i..i + 4].copy_from_slice(&n.to_le_bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64), ..ProptestConfig::default() })]

    #[test]
    fn mutated_captures_end_with_a_result_or_an_error(seed in any::<prop::sample::Index>(), muts in proptest::collection::vec(mutation(), 1..6), gzip in any::<bool>(), redact in any::<bool>()) {
        let seeds = seeds();
        let mut bytes = seed.get(&seeds).clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        if gzip {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            bytes = gz.finish().unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let w = CorpusWriter::create(&dir, WriterOptions { sync_interval: None, ..WriterOptions::default() }).unwrap();
        // Redacting, as `replay record pcap` does by default, in half the cases.
        let mut r = if redact {
            let redactor = recorders::redact::Redactor::new([9; 32], &Default::default()).unwrap();
            Recorder::redacting(w, Options::default(), Some(std::sync::Arc::new(redactor)))
        } else {
            Recorder::new(w, Options::default())
        };
        r.read(Box::new(Cursor::new(bytes)), "fuzz.pcap").unwrap();
        let (w, stats) = r.finish().unwrap();
        w.close().unwrap();
        let d = &stats.disposition;
        prop_assert_eq!(d.http + d.packet_cases + d.duplicate_packets + d.not_kept, stats.packets);
        // Whatever was written reads back.
        let cases: Vec<_> = Corpus::open(&dir).unwrap().cases().filter_map(Result::ok).collect();
        prop_assert_eq!(cases.len() as u64, stats.exchanges + d.packet_cases);
        // Redacting, no listed header keeps its value, whatever the damage around it.
        for c in cases.iter().filter(|_| redact) {
            let corpora::CaseData::Http(x) = c.data() else { continue };
            let heads = x.response.iter().chain(&x.interim).flat_map(|r| &r.headers).chain(&x.request.headers);
            for h in heads {
                let listed = recorders::redact::DEFAULT_HEADERS.iter().any(|n| n.eq_ignore_ascii_case(&h.0));
                prop_assert!(!listed || h.1.as_bytes().starts_with(b"[redacted:"), "{}: {:?}", h.0, h.1);
            }
        }
        for e in &stats.errors {
            prop_assert!(e.contains("offset") && e.contains("packet"), "{}", e);
        }
    }
}
