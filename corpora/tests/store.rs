//! The on-disk corpus under crashes, damage, concurrency and arbitrary content.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corpora::frame::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use corpora::{
    Appended, Blob, Case, CaseData, ChunkMark, Corpus, CorpusError, CorpusWriter, Flag, FlowKey, Header,
    HttpExchange, HttpRequest, HttpResponse, IndexStatus, Message, Packet, Problem, RecordedOutput, Source,
    WriterOptions, jsonl,
};
use proptest::prelude::*;

fn opts() -> WriterOptions {
    WriterOptions { segment_bytes: 64 << 20, sync_interval: None, ..WriterOptions::default() }
}

fn message(i: usize, len: usize) -> Case {
    let input: String = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(len));
    Case::new(CaseData::Message(Message {
        content_type: "application/json".into(),
        input: input.into(),
        output: Some(RecordedOutput { content_type: "text/plain".into(), data: Blob(vec![i as u8; 3]) }),
    }))
    .with_tag("i", i.to_string())
}

fn write_corpus(dir: &Path, cases: &[Case], opts: WriterOptions) {
    let mut w = CorpusWriter::create(dir, opts).unwrap();
    for c in cases {
        assert_eq!(w.append(c).unwrap(), Appended::New);
    }
    w.close().unwrap();
}

/// `n` message cases of `len` bytes written into segments of at most `segment_bytes`, without
/// periodic syncs; returns the cases in the order written.
fn write_in_segments(dir: &Path, n: usize, len: usize, segment_bytes: u64) -> Vec<Case> {
    let cases: Vec<Case> = (0..n).map(|i| message(i, len)).collect();
    write_corpus(
        dir,
        &cases,
        WriterOptions { segment_bytes, sync_interval: None, ..WriterOptions::default() },
    );
    cases
}

fn read_all(dir: &Path) -> (Vec<Case>, Vec<Problem>) {
    let corpus = Corpus::open(dir).unwrap();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for item in corpus.cases() {
        match item {
            Ok(c) => cases.push(c),
            Err(p) => problems.push(p),
        }
    }
    (cases, problems)
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs: Vec<_> = fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

/// Offsets at which each record starts, and the end of the last.
fn record_bounds(cases: &[Case]) -> Vec<u64> {
    let mut at = SEGMENT_HEADER_LEN;
    let mut out = vec![at];
    for c in cases {
        at += (RECORD_HEADER_LEN + rmp_serde::to_vec_named(c).unwrap().len()) as u64;
        out.push(at);
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.join("segments")).unwrap();
    for name in ["manifest.json", "index.bin"] {
        if from.join(name).exists() {
            fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
    for e in fs::read_dir(from.join("segments")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join("segments").join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn truncation_at_every_byte_keeps_exactly_the_complete_records() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let cases: Vec<Case> = (0..4).map(|i| message(i, 20 + i * 7)).collect();
    write_corpus(&base, &cases, opts());
    let bounds = record_bounds(&cases);
    let seg = only_segment(&base);
    let full = fs::read(&seg).unwrap();
    assert_eq!(full.len() as u64, *bounds.last().unwrap());
    let extra = message(99, 5);
    for cut in 0..=full.len() as u64 {
        let dir = tmp.path().join(format!("cut{cut}"));
        copy_dir(&base, &dir);
        fs::remove_file(dir.join("index.bin")).ok();
        let seg_copy = only_segment(&dir);
        fs::write(&seg_copy, &full[..cut as usize]).unwrap();
        let complete = bounds.iter().skip(1).filter(|&&end| end <= cut).count();

        // A reader sees exactly the complete records, and a torn tail (not damage) if any.
        let (got, problems) = read_all(&dir);
        assert_eq!(got, cases[..complete], "cut at {cut}");
        let at_boundary = cut == 0 || bounds.contains(&cut);
        assert_eq!(problems.len(), usize::from(!at_boundary), "cut at {cut}: {problems:?}");
        for p in &problems {
            assert!(matches!(p, Problem::TornTail { .. }), "cut at {cut}: {p}");
            assert!(!p.is_damage());
        }

        // A writer truncates the torn tail, says where, and appending works again.
        let mut w = CorpusWriter::open(&dir, opts()).unwrap();
        if !at_boundary {
            let offset = if cut < SEGMENT_HEADER_LEN { 0 } else { bounds[complete] };
            assert!(
                matches!(w.problems(), [Problem::TornTail { offset: o, truncated: true, .. }] if *o == offset),
                "cut at {cut}: {:?}",
                w.problems()
            );
            assert!(w.problems()[0].to_string().contains(&format!("offset {offset}")));
        }
        assert_eq!(w.len(), complete);
        w.append(&extra).unwrap();
        w.close().unwrap();
        let (got, problems) = read_all(&dir);
        assert!(problems.is_empty(), "cut at {cut}: {problems:?}");
        let mut want = cases[..complete].to_vec();
        want.push(extra.clone());
        assert_eq!(got, want, "cut at {cut}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn truncated_index_is_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let cases: Vec<Case> = (0..5).map(|i| message(i, 10)).collect();
    write_corpus(&base, &cases, opts());
    let index = fs::read(base.join("index.bin")).unwrap();
    for cut in 0..index.len() {
        fs::write(base.join("index.bin"), &index[..cut]).unwrap();
        let corpus = Corpus::open(&base).unwrap();
        assert!(matches!(corpus.index_status(), IndexStatus::Corrupt(_)), "cut {cut}");
        let (idx, problems) = corpus.index().unwrap();
        assert_eq!(idx.entries.len(), 5);
        assert!(matches!(&problems[..], [Problem::IndexCorrupt { .. }]), "cut {cut}");
        assert_eq!(corpus.get(&cases[3].id()).unwrap().as_ref(), Some(&cases[3]));
    }
    // A writer rewrites it.
    CorpusWriter::open(&base, opts()).unwrap().close().unwrap();
    assert_eq!(Corpus::open(&base).unwrap().index_status(), IndexStatus::Fresh);
}

#[test]
fn every_single_bit_flip_is_detected_with_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let cases: Vec<Case> = (0..3).map(|i| message(i, 8)).collect();
    write_corpus(&base, &cases, opts());
    let bounds = record_bounds(&cases);
    let seg = only_segment(&base);
    let full = fs::read(&seg).unwrap();
    for bit in 0..full.len() * 8 {
        let byte = (bit / 8) as u64;
        let mut damaged = full.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        fs::write(&seg, &damaged).unwrap();
        let (got, problems) = read_all(&base);
        assert_eq!(problems.len(), 1, "bit {bit}: {problems:?}");
        let p = &problems[0];
        assert!(p.is_damage(), "bit {bit}: {p}");
        if byte < SEGMENT_HEADER_LEN {
            assert!(matches!(p, Problem::BadSegmentHeader { .. }), "bit {bit}: {p}");
            assert_eq!(got, cases, "bit {bit}: a damaged header loses no record");
        } else {
            let hit = bounds.iter().rposition(|&b| b <= byte).unwrap();
            let start = bounds[hit];
            assert!(
                matches!(p, Problem::Corrupt { offset, skipped, .. } if *offset == start && *skipped == bounds[hit + 1] - start),
                "bit {bit} in record {hit} at {start}: {p}"
            );
            assert!(p.to_string().contains(&format!("offset {start}")));
            let mut want = cases.clone();
            want.remove(hit);
            assert_eq!(got, want, "bit {bit}: only the damaged record is lost");
        }
    }
    fs::write(&seg, &full).unwrap();
}

#[test]
fn corrupt_record_in_the_middle_is_skipped_and_appending_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases: Vec<Case> = (0..3).map(|i| message(i, 100)).collect();
    write_corpus(&dir, &cases, opts());
    let bounds = record_bounds(&cases);
    let seg = only_segment(&dir);
    let mut bytes = fs::read(&seg).unwrap();
    // Overwrite the whole middle record's frame header with garbage.
    for b in &mut bytes[bounds[1] as usize..bounds[1] as usize + 40] {
        *b = 0xAB;
    }
    fs::write(&seg, &bytes).unwrap();
    fs::remove_file(dir.join("index.bin")).unwrap();
    let mut w = CorpusWriter::open(&dir, opts()).unwrap();
    assert!(matches!(w.problems(), [Problem::Corrupt { offset, .. }] if *offset == bounds[1]));
    // The lost case can be appended again: its id is no longer present.
    assert_eq!(w.append(&cases[1]).unwrap(), Appended::New);
    w.close().unwrap();
    let (got, problems) = read_all(&dir);
    assert_eq!(problems.len(), 1);
    assert_eq!(got, vec![cases[0].clone(), cases[2].clone(), cases[1].clone()]);
    // Compaction drops the damage; afterwards the corpus verifies clean.
    let stats = CorpusWriter::open(&dir, opts()).unwrap().compact().unwrap();
    assert_eq!(stats.records, 3);
    let corpus = Corpus::open(&dir).unwrap();
    let report = corpus.verify(|_| {});
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(read_all(&dir), (vec![cases[0].clone(), cases[2].clone(), cases[1].clone()], vec![]));
}

#[test]
fn second_writer_gets_a_lock_error_naming_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let w = CorpusWriter::create(&dir, opts()).unwrap();
    let err = CorpusWriter::open(&dir, opts()).err().expect("a second writer must fail");
    assert!(matches!(err, CorpusError::Locked { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&dir.join("lock").display().to_string()), "{msg}");
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    // Readers are not blocked.
    assert!(Corpus::open(&dir).is_ok());
    drop(w);
    CorpusWriter::open(&dir, opts()).unwrap().close().unwrap();
}

#[test]
fn duplicates_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut w = CorpusWriter::create(&dir, opts()).unwrap();
    let a = message(1, 10);
    let same_input = message(1, 10).with_tag("other", "metadata").with_time_ns(7);
    assert_eq!(same_input.id(), a.id());
    assert_eq!(w.append(&a).unwrap(), Appended::New);
    assert_eq!(w.append(&same_input).unwrap(), Appended::Duplicate);
    w.close().unwrap();
    let mut w = CorpusWriter::open(&dir, opts()).unwrap();
    assert_eq!(w.append(&a).unwrap(), Appended::Duplicate);
    let m = w.close().unwrap();
    assert_eq!(m.counts.records, 1);
    assert_eq!(m.counts.duplicates_skipped, 2);
    assert_eq!(read_all(&dir).0, vec![a]);
}

#[test]
fn segments_roll_at_the_limit_and_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases = write_in_segments(&dir, 50, 200, 1024);
    let corpus = Corpus::open(&dir).unwrap();
    assert!(corpus.segments().len() >= 10, "{}", corpus.segments().len());
    for s in corpus.segments() {
        assert!(s.len <= 1024, "{} is {} bytes", s.path.display(), s.len);
    }
    assert_eq!(corpus.manifest().counts.segments, corpus.segments().len() as u64);
    assert_eq!(read_all(&dir).0, cases);
    for f in ["manifest.json", "index.bin", "lock"]
        .map(|n| dir.join(n))
        .into_iter()
        .chain(corpus.segments().iter().map(|s| s.path.clone()))
    {
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    // Each case is found through the index.
    for c in &cases {
        assert_eq!(corpus.get(&c.id()).unwrap().as_ref(), Some(c));
    }
    // Compaction packs them into full segments without losing or reordering any.
    let stats = CorpusWriter::open(
        &dir,
        WriterOptions { segment_bytes: 1 << 20, sync_interval: None, ..WriterOptions::default() },
    )
    .unwrap()
    .compact()
    .unwrap();
    assert_eq!((stats.records, stats.segments_after), (50, 1));
    assert_eq!(read_all(&dir).0, cases);
    assert_eq!(Corpus::open(&dir).unwrap().index_status(), IndexStatus::Fresh);
}

/// Cases are encoded straight into the open segment's 256 KiB buffer: records larger than
/// it, small ones between them, a segment rolling while a record sits encoded in the buffer,
/// and a reopened corpus appending after its last record all read back intact.
#[test]
fn records_larger_than_the_write_buffer_and_rolls_between_them_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let sizes = [100, 300 << 10, 50, 1 << 20, 200 << 10, 10, 260 << 10, 70 << 10, 5];
    let cases: Vec<Case> = sizes.iter().enumerate().map(|(i, &n)| message(i, n)).collect();
    let opts = || WriterOptions { segment_bytes: 512 << 10, sync_interval: None, ..WriterOptions::default() };
    write_corpus(&dir, &cases[..5], opts());
    let mut w = CorpusWriter::open(&dir, opts()).unwrap();
    for c in &cases[5..] {
        assert_eq!(w.append(c).unwrap(), Appended::New);
    }
    w.close().unwrap();
    let corpus = Corpus::open(&dir).unwrap();
    assert!(corpus.segments().len() >= 4, "{} segments", corpus.segments().len());
    // Only one segment passes the limit: the one holding the 1 MiB record, alone (as long as
    // a corpus of just that record).
    let alone = tmp.path().join("alone");
    write_corpus(&alone, &cases[3..4], opts());
    let alone_len = Corpus::open(&alone).unwrap().segments()[0].len;
    let big: Vec<u64> = corpus.segments().iter().map(|s| s.len).filter(|&l| l > 512 << 10).collect();
    assert_eq!(big, vec![alone_len]);
    assert_eq!(read_all(&dir), (cases.clone(), vec![]));
    assert!(corpus.verify(|_| ()).is_clean());
    for c in &cases {
        assert_eq!(corpus.get(&c.id()).unwrap().as_ref(), Some(c));
    }
}

#[test]
fn an_interrupted_compaction_finishes_or_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases = write_in_segments(&dir, 6, 300, 700);
    let before = Corpus::open(&dir).unwrap().segments().to_vec();

    // Not committed: an orphan compact.tmp is thrown away.
    fs::create_dir(dir.join("compact.tmp")).unwrap();
    fs::write(dir.join("compact.tmp/00000099.seg"), b"junk").unwrap();
    CorpusWriter::open(&dir, opts()).unwrap().close().unwrap();
    assert!(!dir.join("compact.tmp").exists());
    assert_eq!(read_all(&dir).0, cases);

    // Committed, and cut off half-way through moving: the next open finishes it.
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);
    CorpusWriter::open(&copy, opts()).unwrap().compact().unwrap();
    let new_segs: Vec<_> = fs::read_dir(copy.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(new_segs.len(), 1);
    let tmpdir = dir.join("compact.tmp");
    fs::create_dir(&tmpdir).unwrap();
    fs::copy(&new_segs[0], tmpdir.join(new_segs[0].file_name().unwrap())).unwrap();
    fs::copy(copy.join("index.bin"), tmpdir.join("index.bin")).unwrap();
    fs::write(tmpdir.join("COMMIT"), (before.last().unwrap().seq + 1).to_string()).unwrap();
    // Simulate the crash after one old segment was already deleted.
    fs::remove_file(&before[0].path).unwrap();
    let (got, problems) = read_all(&dir); // a reader finishes it (the lock is free)
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(got, cases);
    assert!(!tmpdir.exists());
    assert_eq!(Corpus::open(&dir).unwrap().segments().len(), 1);
}

#[test]
fn newer_format_and_bad_manifest_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    write_corpus(&dir, &[message(1, 1)], opts());
    let m = fs::read_to_string(dir.join("manifest.json")).unwrap();
    fs::write(dir.join("manifest.json"), m.replace("\"format_version\": 1", "\"format_version\": 7"))
        .unwrap();
    let err = Corpus::open(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("version 7") && err.contains("up to 1"), "{err}");
    fs::write(dir.join("manifest.json"), "{\"format\": \"replay-corpus\",\n  oops").unwrap();
    let err = Corpus::open(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("line 2"), "{err}");
    let err = Corpus::open(tmp.path().join("missing")).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("does not exist"), "{err}");
    let err = Corpus::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("not a corpus"), "{err}");
}

/// Appends `cases` with a writer that syncs and then never closes: a crash after its last
/// sync, which leaves `index.bin` stale.
fn append_and_crash(dir: &Path, cases: &[Case]) {
    let mut w = CorpusWriter::open(dir, opts()).unwrap();
    for c in cases {
        w.append(c).unwrap();
    }
    w.sync().unwrap();
    std::mem::forget(w);
}

#[test]
fn stale_index_is_brought_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases: Vec<Case> = (0..8).map(|i| message(i, 50)).collect();
    write_corpus(&dir, &cases[..4], opts());
    // The index covers only the first 4.
    append_and_crash(&dir, &cases[4..]);
    let corpus = Corpus::open(&dir).unwrap();
    assert_eq!(corpus.index_status(), IndexStatus::Stale);
    let (idx, problems) = corpus.index().unwrap();
    assert!(problems.is_empty());
    assert_eq!(idx.entries.len(), 8);
    assert_eq!(corpus.get(&cases[7].id()).unwrap().as_ref(), Some(&cases[7]));
    let report = corpus.verify(|_| {});
    assert!(report.is_clean());
    assert!(!report.manifest_mismatches.is_empty(), "the manifest still says 4");
}

/// `entries_with_hex_prefix` streams `index.bin` and holds only the matches; it finds exactly
/// what the whole in-memory index finds, whether `index.bin` is fresh, stale, damaged or gone,
/// for prefixes of every length (the empty one: every entry).
#[test]
fn a_prefix_lookup_streams_to_the_same_answer_as_the_whole_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases: Vec<Case> = (0..300).map(|i| message(i, 20)).collect();
    write_corpus(&dir, &cases[..200], opts());
    let check = |state: &str, want_problem: bool| {
        let corpus = Corpus::open(&dir).unwrap();
        let (idx, _) = corpus.index().unwrap();
        let mut prefixes: Vec<String> =
            ["", "0", "a", "F", "7c", "ff", "000", "zz"].map(String::from).to_vec();
        for c in cases.iter().step_by(37) {
            let hex = c.id().to_hex();
            prefixes.extend([1, 2, 3, 4, 9, 31, 32].map(|n| hex[..n].to_string()));
        }
        for p in &prefixes {
            let (got, problems) = corpus.entries_with_hex_prefix(p).unwrap();
            let lower = p.to_ascii_lowercase();
            let want: Vec<_> =
                idx.entries.iter().filter(|e| hex::encode(e.key).starts_with(&lower)).copied().collect();
            assert_eq!(got, want, "{state}, prefix {p:?}");
            assert_eq!(
                problems.iter().any(|p| matches!(p, Problem::IndexCorrupt { .. })),
                want_problem,
                "{state}: {problems:?}"
            );
        }
        let (all, _) = corpus.entries_with_hex_prefix("").unwrap();
        all.len()
    };
    assert_eq!(check("fresh", false), 200);
    // The index covers only 200.
    append_and_crash(&dir, &cases[200..]);
    assert_eq!(Corpus::open(&dir).unwrap().index_status(), IndexStatus::Stale);
    assert_eq!(check("stale", false), 300);
    // One entry's byte changed: the checksum fails at the end, after the entries were read.
    let path = dir.join("index.bin");
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(check("damaged", true), 300);
    fs::remove_file(&path).unwrap();
    assert_eq!(check("missing", false), 300);
}

/// `Corpus::lookup` keeps `index.bin` on disk (a fence per `LOOKUP_BLOCK` entries in memory)
/// and gives the whole in-memory index's answer for every key, present or not, whether
/// `index.bin` is fresh, stale, damaged or gone; what it holds in memory is the fences plus
/// the records the index does not cover.
#[test]
fn a_lookup_with_the_index_on_disk_answers_as_the_whole_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    // 1,000 written and closed: 31 whole blocks and a short one.
    let cases: Vec<Case> = (0..1300).map(|i| message(i, 12)).collect();
    write_corpus(&dir, &cases[..1000], opts());
    let blocks = 1000u64.div_ceil(corpora::LOOKUP_BLOCK) as usize;
    assert_eq!(blocks, 32);
    let check = |state: &str, in_memory: usize, want_problem: bool| {
        let corpus = Corpus::open(&dir).unwrap();
        let (idx, _) = corpus.index().unwrap();
        let (lookup, problems) = corpus.lookup().unwrap();
        assert_eq!(
            problems.iter().any(|p| matches!(p, Problem::IndexCorrupt { .. })),
            want_problem,
            "{state}: {problems:?}"
        );
        assert_eq!(lookup.keys_in_memory(), in_memory, "{state}");
        // Every key written, the keys of cases never written, and the edges of the key space
        // and of each block (a key just below and just above every entry).
        let mut keys: Vec<[u8; 16]> = cases.iter().map(|c| *c.id().as_bytes()).collect();
        keys.extend([[0u8; 16], [0xff; 16]]);
        for e in &idx.entries {
            let k = u128::from_be_bytes(e.key);
            keys.extend([k.wrapping_sub(1), k.wrapping_add(1)].map(u128::to_be_bytes));
        }
        for k in &keys {
            assert_eq!(lookup.get(k).unwrap(), idx.get(k).copied(), "{state}, key {}", hex::encode(k));
        }
        idx.entries.iter().filter(|e| lookup.get(&e.key).unwrap().is_some()).count()
    };
    assert_eq!(check("fresh", blocks, false), 1000);
    // The index covers only the first 1,000: the other 300 are held in memory.
    append_and_crash(&dir, &cases[1000..]);
    assert_eq!(Corpus::open(&dir).unwrap().index_status(), IndexStatus::Stale);
    assert_eq!(check("stale", blocks + 300, false), 1300);
    // One entry's byte changed: the checksum fails, and the index is not used at all.
    let path = dir.join("index.bin");
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(check("damaged", 1300, true), 1300);
    fs::remove_file(&path).unwrap();
    assert_eq!(check("missing", 1300, false), 1300);
}

/// Reads by index entry keep segment files open (at most 16): across many more segments than
/// that, in an order that keeps evicting them, every read still gives its own case, and a
/// clone of the corpus reads the same.
#[test]
fn reads_by_entry_across_more_segments_than_are_kept_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases = write_in_segments(&dir, 120, 40, 600);
    let corpus = Corpus::open(&dir).unwrap();
    assert!(corpus.segments().len() >= 40, "{} segments", corpus.segments().len());
    let (lookup, _) = corpus.lookup().unwrap();
    let clone = corpus.clone();
    // Strided, so that consecutive reads hit different segments, twice round.
    for round in 0..2 {
        for k in 0..cases.len() {
            let c = &cases[(k * 37 + round) % cases.len()];
            let e = lookup.get(c.id().as_bytes()).unwrap().expect("written");
            let reader = if k % 2 == 0 { &corpus } else { &clone };
            assert_eq!(&reader.read_entry(&e).unwrap(), c);
        }
    }
}

// ---- arbitrary cases ----

fn bytes() -> impl Strategy<Value = Blob> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..64).prop_map(Blob), ".{0,40}".prop_map(Blob::from),]
}

fn headers() -> impl Strategy<Value = Vec<Header>> {
    proptest::collection::vec(("[A-Za-z-]{1,12}", bytes()).prop_map(|(n, v)| Header::new(n, v)), 0..4)
}

fn response() -> impl Strategy<Value = HttpResponse> {
    (
        100u16..600,
        ".{0,10}",
        headers(),
        bytes(),
        headers(),
        proptest::collection::vec(
            (any::<u64>(), any::<u64>()).prop_map(|(at, offset_ns)| ChunkMark { at, offset_ns }),
            0..3,
        ),
    )
        .prop_map(|(status, reason, headers, body, trailers, chunks)| HttpResponse {
            version: "HTTP/1.1".into(),
            status,
            reason: reason.into(),
            headers,
            body,
            trailers,
            chunks,
        })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

fn data() -> impl Strategy<Value = CaseData> {
    let http = (
        "[A-Z]{1,7}",
        ".{0,30}",
        headers(),
        bytes(),
        headers(),
        proptest::collection::vec(response(), 0..2),
        proptest::option::of(response()),
    )
        .prop_map(|(method, target, headers, body, trailers, interim, response)| {
            CaseData::Http(HttpExchange {
                request: HttpRequest {
                    method: method.into(),
                    target,
                    version: "HTTP/1.1".into(),
                    headers,
                    body,
                    trailers,
                },
                interim,
                response,
            })
        });
    let packet = (
        any::<u16>(),
        bytes(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of((any::<u8>(), ip(), any::<u16>(), ip(), any::<u16>())),
    )
        .prop_map(|(link_type, data, original_len, interface, flow)| {
            CaseData::Packet(Packet {
                link_type,
                data,
                original_len,
                interface,
                flow: flow.map(|(protocol, src, src_port, dst, dst_port)| FlowKey {
                    protocol,
                    src,
                    src_port,
                    dst,
                    dst_port,
                }),
            })
        });
    let message =
        (".{0,20}", bytes(), proptest::option::of((".{0,20}", bytes()))).prop_map(|(ct, input, out)| {
            CaseData::Message(Message {
                content_type: ct,
                input,
                output: out.map(|(content_type, data)| RecordedOutput { content_type, data }),
            })
        });
    prop_oneof![http, packet, message]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Unknown),
        (".{0,20}", any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(path, offset, packet)| Source::File { path, offset, packet }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(connection, sequence)| Source::Proxy { connection, sequence }),
        (".{1,20}", any::<u64>()).prop_map(|(path, line)| Source::Import { path, line }),
        ".{0,10}".prop_map(|by| Source::Generated { by }),
    ]
}

fn flag() -> impl Strategy<Value = Flag> {
    prop_oneof![
        any::<u64>().prop_map(|bytes_missing| Flag::TcpGap { bytes_missing }),
        Just(Flag::RetransmitConflict),
        any::<u64>().prop_map(|kept| Flag::RequestTruncated { kept }),
        any::<u64>().prop_map(|kept| Flag::ResponseTruncated { kept }),
        Just(Flag::NoResponse),
        Just(Flag::NoRequest),
        any::<u32>().prop_map(|original_len| Flag::Snapped { original_len }),
        ".{0,20}".prop_map(|reason| Flag::Malformed { reason }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        data(),
        source(),
        proptest::option::of(any::<i64>()),
        proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..3),
        proptest::collection::vec(flag(), 0..3),
    )
        .prop_map(
            |(data, source, time, tags, flags): (
                CaseData,
                Source,
                Option<i64>,
                BTreeMap<String, String>,
                Vec<Flag>,
            )| {
                let mut c = Case::new(data).with_source(source);
                c.time_ns = time;
                c.tags = tags;
                c.flags = flags;
                c
            },
        )
}

/// Cases with distinct ids, in order of first appearance.
fn distinct(cases: Vec<Case>) -> Vec<Case> {
    let mut seen = std::collections::HashSet::new();
    cases.into_iter().filter(|c| seen.insert(c.id())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_cases_roundtrip_through_the_corpus(cases in proptest::collection::vec(case(), 1..12), seg in 200u64..4000) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let mut w = CorpusWriter::create(&dir, WriterOptions { segment_bytes: seg, sync_interval: None, ..WriterOptions::default() }).unwrap();
        for c in &cases {
            w.append(c).unwrap();
        }
        w.close().unwrap();
        let want = distinct(cases);
        let corpus = Corpus::open(&dir).unwrap();
        let got: Vec<Case> = corpus.cases_checked().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&got, &want);
        for c in &want {
            let got = corpus.get(&c.id()).unwrap();
            prop_assert_eq!(got.as_ref(), Some(c));
        }
        let clean = corpus.verify(|_| ()).is_clean();
        prop_assert!(clean);
    }

    #[test]
    fn arbitrary_cases_roundtrip_through_jsonl(c in case()) {
        let mut line = Vec::new();
        jsonl::write_case(&mut line, &c).unwrap();
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = std::str::from_utf8(&line).unwrap();
        let back = jsonl::parse_line(text.trim_end(), Path::new("x.jsonl"), 1).unwrap();
        let mut want = c.clone();
        if want.source == Source::Unknown {
            want.source = Source::Import { path: "x.jsonl".into(), line: 1 };
        }
        prop_assert_eq!(back, want);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = proptest::collection::vec(any::<u8>(), 1..40);
    prop_oneof![
        (any::<usize>(), junk.clone()).prop_map(|(a, b)| Mutation::Overwrite(a, b)),
        (any::<usize>(), junk).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1usize..80).prop_map(|(a, n)| Mutation::Delete(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Overwrite(at, junk) => {
            for (i, b) in junk.iter().enumerate() {
                if let Some(x) = bytes.get_mut(at % len + i) {
                    *x = *b;
                }
            }
        }
        Mutation::Insert(at, junk) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, junk.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever happens to a segment's bytes, reading ends, never panics, and never returns a
    /// case that was not written; a writer can always open it and append again.
    #[test]
    fn mutated_segments_never_invent_cases(muts in proptest::collection::vec(mutation(), 1..5)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let cases: Vec<Case> = (0..6).map(|i| message(i, 30)).collect();
        write_corpus(&dir, &cases, opts());
        let seg = only_segment(&dir);
        let mut bytes = fs::read(&seg).unwrap();
        for m in &muts {
            apply(&mut bytes, m);
        }
        fs::write(&seg, &bytes).unwrap();
        let (got, _problems) = read_all(&dir);
        for c in &got {
            prop_assert!(cases.contains(c));
        }
        let mut w = CorpusWriter::open(&dir, opts()).unwrap();
        let extra = message(1000, 3);
        w.append(&extra).unwrap();
        w.close().unwrap();
        let (after, _) = read_all(&dir);
        prop_assert!(after.contains(&extra));
        for c in &got {
            prop_assert!(after.contains(c), "a case readable before the append was lost");
        }
    }

    /// Arbitrary bytes as an index file are rejected or accepted, never a panic or a huge
    /// allocation.
    #[test]
    fn arbitrary_index_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = corpora::index::Index::decode(&bytes);
    }

    /// A damaged `index.bin` (bytes changed, or cut short) gives the streamed prefix lookup and
    /// the on-disk lookup the same answers as the whole in-memory index, which is the segments'
    /// own: what the damaged file said is never used.
    #[test]
    fn a_damaged_index_never_misleads_the_streamed_lookups(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        pick in any::<proptest::sample::Index>(),
    ) {
        // One corpus for every case; only its index.bin is rewritten.
        static CORPUS: std::sync::LazyLock<(tempfile::TempDir, Vec<u8>, Vec<String>)> =
            std::sync::LazyLock::new(|| {
                let tmp = tempfile::tempdir().unwrap();
                let cases: Vec<Case> = (0..40).map(|i| message(i, 8)).collect();
                write_corpus(tmp.path(), &cases, opts());
                let index = fs::read(tmp.path().join("index.bin")).unwrap();
                (tmp, index, cases.iter().map(|c| c.id().to_hex()).collect())
            });
        let (tmp, index, ids) = &*CORPUS;
        let mut bytes = index.clone();
        for (at, x) in &edits {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        fs::write(tmp.path().join("index.bin"), &bytes).unwrap();
        let corpus = Corpus::open(tmp.path()).unwrap();
        let (idx, _) = corpus.index().unwrap();
        prop_assert_eq!(idx.entries.len(), 40);
        let id = pick.get(ids);
        for p in [&id[..4], &id[..1], &id[..], ""] {
            let (got, _) = corpus.entries_with_hex_prefix(p).unwrap();
            let want: Vec<_> = idx.entries.iter().filter(|e| hex::encode(e.key).starts_with(p)).copied().collect();
            prop_assert_eq!(got, want, "prefix {:?}", p);
        }
        let (lookup, _) = corpus.lookup().unwrap();
        for e in &idx.entries {
            prop_assert_eq!(lookup.get(&e.key).unwrap(), Some(*e));
        }
        prop_assert_eq!(lookup.get(&[0x5a; 16]).unwrap(), None);
    }
}

#[test]
fn a_frame_key_that_disagrees_with_its_case_is_damage_for_readers_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let good = message(1, 10);
    let mut w = CorpusWriter::create(&dir, opts()).unwrap();
    w.append(&good).unwrap();
    let payload = rmp_serde::to_vec_named(&message(2, 10)).unwrap();
    w.append_record(good.kind() as u8, &[7u8; 16], &payload).unwrap();
    w.close().unwrap();
    let (got, problems) = read_all(&dir);
    assert_eq!(got, vec![good]);
    assert!(
        matches!(&problems[..], [Problem::IdMismatch { what: "the case inside names", .. }]),
        "{problems:?}"
    );
    let report = Corpus::open(&dir).unwrap().verify(|_| ());
    assert!(!report.is_clean());
    assert!(report.problems[0].to_string().contains("is stored as case 0707"), "{}", report.problems[0]);
}

#[test]
fn a_torn_tail_in_an_older_segment_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cases = write_in_segments(&dir, 6, 300, 800);
    let first = Corpus::open(&dir).unwrap().segments()[0].clone();
    let bytes = fs::read(&first.path).unwrap();
    fs::write(&first.path, &bytes[..bytes.len() - 10]).unwrap();
    let (got, problems) = read_all(&dir);
    assert_eq!(got.len(), cases.len() - 1);
    assert!(matches!(&problems[..], [Problem::Corrupt { .. }]), "{problems:?}");
    assert!(problems[0].is_damage());
}

#[test]
fn an_unreadable_commit_stops_instead_of_rolling_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    write_corpus(&dir, &[message(1, 1)], opts());
    fs::create_dir_all(dir.join("compact.tmp/COMMIT")).unwrap(); // exists, but is not a file
    let err = CorpusWriter::open(&dir, opts()).err().expect("must refuse");
    assert!(err.to_string().contains("COMMIT"), "{err}");
    assert!(dir.join("compact.tmp").exists(), "nothing was thrown away");
}

#[test]
fn only_segment_names_the_writer_makes_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    write_corpus(&dir, &[message(1, 1)], opts());
    let real = only_segment(&dir);
    fs::copy(&real, dir.join("segments/1.seg")).unwrap();
    fs::copy(&real, dir.join("segments/+0000001.seg")).unwrap();
    let (got, problems) = read_all(&dir);
    assert_eq!((got.len(), problems.len()), (1, 0));
}

/// Session 8: the writer kept every record's index entry and key in memory (about 120 bytes a
/// record: 160 MiB for a million packet cases). It now spills sorted runs past
/// `index_spill` entries and merges them into `index.bin` at close.
#[test]
fn the_writer_index_spills_to_runs_and_the_corpus_reads_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let small = WriterOptions { index_spill: 4, ..opts() };
    let cases: Vec<Case> = (0..300).map(|i| message(i, 10)).collect();
    let runs = dir.join("index-runs.tmp");
    let mut w = CorpusWriter::create(&dir, small.clone()).unwrap();
    let mut most_runs = 0;
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(w.append(c).unwrap(), Appended::New);
        // Earlier cases, spilled long ago or not, are still known.
        assert_eq!(w.append(&cases[i / 2]).unwrap(), Appended::Duplicate, "case {}", i / 2);
        if runs.exists() {
            most_runs = most_runs.max(fs::read_dir(&runs).unwrap().count());
        }
    }
    assert_eq!(w.len(), 300);
    assert!(cases.iter().all(|c| w.contains(&c.id())));
    assert!(!w.contains(&message(1000, 10).id()));
    // 75 spills of 4, merged as they come: never more runs than about log2(75) + 1.
    assert!((2..=8).contains(&most_runs), "{most_runs} runs at once");
    let manifest = w.close().unwrap();
    assert_eq!(manifest.counts.records, 300);
    assert_eq!(manifest.counts.duplicates_skipped, 300);
    assert!(!runs.exists(), "runs are removed at close");
    let corpus = Corpus::open(&dir).unwrap();
    assert_eq!(corpus.index_status(), IndexStatus::Fresh);
    for c in &cases {
        assert_eq!(corpus.get(&c.id()).unwrap().unwrap(), *c);
    }
    let (read, problems) = read_all(&dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read, cases, "in the order written");

    // Appending to it: its index is the first run; runs a crash left behind are cleared.
    fs::create_dir_all(&runs).unwrap();
    fs::write(runs.join("00000009.run"), b"left by a crash").unwrap();
    let mut w = CorpusWriter::open(&dir, small).unwrap();
    assert!(!runs.exists() || fs::read_dir(&runs).unwrap().all(|e| e.unwrap().file_name() != "00000009.run"));
    assert_eq!(w.len(), 300);
    for c in &cases[..20] {
        assert_eq!(w.append(c).unwrap(), Appended::Duplicate);
    }
    let more: Vec<Case> = (300..320).map(|i| message(i, 10)).collect();
    for c in &more {
        assert_eq!(w.append(c).unwrap(), Appended::New);
    }
    assert_eq!(w.close().unwrap().counts.records, 320);
    let corpus = Corpus::open(&dir).unwrap();
    assert_eq!(corpus.index_status(), IndexStatus::Fresh);
    for c in cases.iter().chain(&more) {
        assert_eq!(corpus.get(&c.id()).unwrap().unwrap(), *c);
    }
}

/// A spill that fails (here: the runs folder's name taken by a file) stops the writer, leaves
/// `index.bin` unwritten rather than short, and loses no record: the next writer rebuilds the
/// index from the segments.
#[test]
fn a_failed_index_spill_stops_the_writer_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let small = WriterOptions { index_spill: 4, ..opts() };
    let cases: Vec<Case> = (0..10).map(|i| message(i, 10)).collect();
    let mut w = CorpusWriter::create(&dir, small.clone()).unwrap();
    fs::write(dir.join("index-runs.tmp"), b"in the way").unwrap();
    let mut failed_at = None;
    for (i, c) in cases.iter().enumerate() {
        match w.append(c) {
            Ok(a) => assert_eq!(a, Appended::New),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("index-runs.tmp"), "{msg}");
                failed_at = Some(i);
                break;
            }
        }
    }
    let failed_at = failed_at.expect("the fourth append spills");
    assert_eq!(failed_at, 3);
    assert!(w.append(&cases[9]).is_err(), "no appends after a failed spill");
    assert!(w.close().is_err(), "close reports it instead of writing a short index.bin");
    assert!(!dir.join("index.bin").exists());
    // Every record that reached a segment is there, the one whose spill failed included.
    let w = CorpusWriter::open(&dir, small).unwrap();
    assert_eq!(w.len(), failed_at + 1);
    w.close().unwrap();
    let corpus = Corpus::open(&dir).unwrap();
    assert_eq!(corpus.index_status(), IndexStatus::Fresh);
    let (read, problems) = read_all(&dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read, cases[..=failed_at].to_vec());
}

/// The sizes of the run files a writer holds open, if any.
fn run_sizes(dir: &Path) -> Vec<u64> {
    match fs::read_dir(dir.join("index-runs.tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().metadata().unwrap().len()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Session 9: opening a corpus to append read all of `index.bin` into memory and held every
/// entry (appending ten packets to a 3,000,000-case corpus peaked at 234 MiB). The stored
/// index is now streamed straight into a run and the records past it are added one at a
/// time; a damaged index (bad checksum, or entries out of order under a good one) is named
/// and rebuilt the same way.
#[test]
fn opening_a_corpus_to_append_streams_its_index_and_rebuilds_a_damaged_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let small = WriterOptions { index_spill: 16, ..opts() };
    let cases: Vec<Case> = (0..240).map(|i| message(i, 10)).collect();
    write_corpus(&dir, &cases[..200], small.clone());
    // Twenty more, and then the index of the first 200 put back: a stale index, as a crash
    // after the last sync leaves it.
    let index_of_200 = fs::read(dir.join("index.bin")).unwrap();
    let mut w = CorpusWriter::open(&dir, small.clone()).unwrap();
    for c in &cases[200..220] {
        assert_eq!(w.append(c).unwrap(), Appended::New);
    }
    w.close().unwrap();
    fs::write(dir.join("index.bin"), index_of_200).unwrap();
    assert_eq!(Corpus::open(&dir).unwrap().index_status(), IndexStatus::Stale);

    let check = |w: &CorpusWriter| {
        assert_eq!(w.len(), 220);
        assert!(cases[..220].iter().all(|c| w.contains(&c.id())));
        assert!(!cases[220..].iter().any(|c| w.contains(&c.id())));
    };
    let w = CorpusWriter::open(&dir, small.clone()).unwrap();
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    // The stored 200 went to disk as one run (36 bytes an entry), not into memory.
    assert!(run_sizes(&dir).contains(&(200 * 36)), "{:?}", run_sizes(&dir));
    check(&w);
    let m = w.close().unwrap();
    assert_eq!((m.counts.records, m.counts.by_kind["message"]), (220, 220));

    // A damaged entry (the checksum catches it) and, separately, two entries swapped under a
    // good checksum: each is named, and the index rebuilt from the segments.
    let good = fs::read(dir.join("index.bin")).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let mut swapped = corpora::index::Index::decode(&good).unwrap();
    swapped.entries.swap(100, 101);
    for (what, bytes) in [("checksum mismatch", flipped), ("not sorted", swapped.encode())] {
        fs::write(dir.join("index.bin"), bytes).unwrap();
        let w = CorpusWriter::open(&dir, small.clone()).unwrap();
        match w.problems() {
            [Problem::IndexCorrupt { path, detail }] => {
                assert!(path.ends_with("index.bin") && detail.contains(what), "{detail}");
            }
            other => panic!("{what}: {other:?}"),
        }
        check(&w);
        assert_eq!(w.close().unwrap().counts.records, 220);
        assert_eq!(Corpus::open(&dir).unwrap().index_status(), IndexStatus::Fresh);
    }

    // A second segment that repeats the first's records (as a copy made by hand would):
    // appending keeps the first of each, and compaction, its keys spilled too, drops the rest.
    let seg1 = fs::read(only_segment(&dir)).unwrap();
    let mut seg2 = corpora::frame::segment_header(2).to_vec();
    seg2.extend_from_slice(&seg1[SEGMENT_HEADER_LEN as usize..]);
    fs::write(dir.join("segments/00000002.seg"), seg2).unwrap();
    let mut w = CorpusWriter::open(&dir, small.clone()).unwrap();
    check(&w);
    for c in &cases[220..] {
        assert_eq!(w.append(c).unwrap(), Appended::New);
    }
    let stats = w.compact().unwrap();
    assert_eq!((stats.records, stats.duplicates_dropped), (240, 220));
    assert!(stats.problems.is_empty(), "{:?}", stats.problems);
    assert!(!dir.join("compact.tmp").exists());
    let corpus = Corpus::open(&dir).unwrap();
    assert_eq!(corpus.index_status(), IndexStatus::Fresh);
    assert_eq!(corpus.manifest().counts.records, 240);
    let (read, problems) = read_all(&dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read, cases);
}
