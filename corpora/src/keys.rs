//! The corpus writer's record of what the corpus holds: every key, for the duplicate check, and
//! every index entry, for `index.bin` at close. In bounded memory whatever the number of
//! records: the newest entries are in a hash map; past [`WriterOptions::index_spill`] of them
//! they go to a sorted run file on disk, and runs of similar size are merged so that there are
//! never more than about log2(records / spill) of them. A Bloom filter over the spilled keys
//! (10 bits a key) answers most "is it there?" questions without reading a run; the rest read
//! a run by binary search. At close the runs and the map are merged, in key order, straight
//! into `index.bin`.
//!
//! Memory per record: about 1.25 to 2.5 bytes of filter once spilled, until the filter reaches
//! 8 MiB (6.7 million keys) and stops growing, against about 120 bytes when every entry and key
//! stayed in memory (a million packet cases: 160 MiB peak). The rest is fixed: the table of
//! unspilled entries (2.6 MiB at the default spill size) and one fence per 256 spilled entries.
//!
//! [`WriterOptions::index_spill`]: crate::WriterOptions::index_spill

use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::CorpusError;
use crate::index::{ENTRY_LEN, IndexEntry, decode_entry, encode_entry};

/// Where runs go, inside the corpus directory; removed at close and when a writer opens.
pub(crate) const RUNS_DIR: &str = "index-runs.tmp";

#[derive(Clone, Copy)]
struct Loc {
    segment: u32,
    offset: u64,
    len: u32,
    kind: u8,
}

impl Loc {
    fn of(e: &IndexEntry) -> Loc {
        Loc { segment: e.segment, offset: e.offset, len: e.len, kind: e.kind }
    }

    fn entry(self, key: [u8; 16]) -> IndexEntry {
        IndexEntry { key, segment: self.segment, offset: self.offset, len: self.len, kind: self.kind }
    }
}

/// Keys are case ids (BLAKE3 output), uniform already: their first eight bytes are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only the key's bytes come here (the array's length goes to `write_usize`).
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

type Fresh = HashMap<[u8; 16], Loc, BuildHasherDefault<KeyHasher>>;

/// A key as a number that orders as its bytes do.
fn ord(key: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*key)
}

/// Entries per block of a run: a lookup reads one block (9 KiB), found through the fences.
const BLOCK: u64 = 256;

struct Run {
    path: PathBuf,
    file: File,
    n: u64,
    /// The first key of each block, in memory (16 bytes per 256 entries).
    fences: Vec<u128>,
}

impl Run {
    fn contains(&self, key: &[u8; 16]) -> io::Result<bool> {
        let k = ord(key);
        let blk = self.fences.partition_point(|f| *f <= k);
        if blk == 0 {
            return Ok(false);
        }
        let first = (blk as u64 - 1) * BLOCK;
        let count = BLOCK.min(self.n - first) as usize;
        let mut buf = vec![0u8; count * ENTRY_LEN];
        self.file.read_exact_at(&mut buf, first * ENTRY_LEN as u64)?;
        let at = |i: usize| -> &[u8] { &buf[i * ENTRY_LEN..i * ENTRY_LEN + 16] };
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match at(mid).cmp(key.as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }

    fn reader(&self) -> io::Result<RunReader> {
        Ok(RunReader { r: BufReader::with_capacity(64 << 10, File::open(&self.path)?), left: self.n })
    }
}

/// A run read in order.
struct RunReader {
    r: BufReader<File>,
    left: u64,
}

impl RunReader {
    fn next(&mut self) -> io::Result<Option<IndexEntry>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut b = [0u8; ENTRY_LEN];
        self.r.read_exact(&mut b)?;
        self.left -= 1;
        Ok(Some(decode_entry(&b)))
    }
}

/// A Bloom filter over 16-byte keys that are already uniform hashes (case ids are BLAKE3
/// output): the probes come from the key's two halves.
struct Bloom {
    bits: Vec<u64>,
    /// Keys it was sized for; past them it is rebuilt twice as large.
    capacity: u64,
    len: u64,
}

const BLOOM_BITS_PER_KEY: u64 = 10;
/// The filter grows to at most 8 MiB (6.7 million keys at 10 bits each). Past that it stops
/// growing and answers "maybe" more often (a run lookup each, from the page cache): past 13
/// million records the writer's memory stops growing, and lookups slow down gradually.
const BLOOM_MAX_KEYS: u64 = (8 << 20) * 8 / BLOOM_BITS_PER_KEY;
const BLOOM_PROBES: u64 = 7;

impl Bloom {
    fn new(capacity: u64) -> Bloom {
        let words = (capacity * BLOOM_BITS_PER_KEY).div_ceil(64).max(1);
        Bloom { bits: vec![0; words as usize], capacity, len: 0 }
    }

    fn probes(&self, key: &[u8; 16]) -> impl Iterator<Item = (usize, u64)> + use<> {
        let h1 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let h2 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes")) | 1;
        let m = self.bits.len() as u64 * 64;
        (0..BLOOM_PROBES).map(move |i| {
            // Multiply-shift onto 0..m: no division.
            let bit = ((u128::from(h1.wrapping_add(i.wrapping_mul(h2))) * u128::from(m)) >> 64) as u64;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    fn insert(&mut self, key: &[u8; 16]) {
        for (w, mask) in self.probes(key) {
            self.bits[w] |= mask;
        }
        self.len += 1;
    }

    fn may_contain(&self, key: &[u8; 16]) -> bool {
        self.probes(key).all(|(w, mask)| self.bits[w] & mask != 0)
    }
}

/// See the module documentation.
pub(crate) struct KeyIndex {
    dir: PathBuf,
    fresh: Fresh,
    runs: Vec<Run>,
    filter: Bloom,
    spill_at: usize,
    /// Keys the filter is sized for at most ([`BLOOM_MAX_KEYS`]; smaller in tests).
    bloom_max: u64,
    next_run: u64,
    /// A spill or merge failed part way: entries may be missing, so `index.bin` must not be
    /// written from this (the next writer rebuilds it from the segments).
    broken: bool,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CorpusError + use<> {
    let path = path.to_path_buf();
    move |source| CorpusError::Io { op, path, source }
}

impl KeyIndex {
    /// An empty index for the corpus in `corpus_dir`. Runs left there by a writer that
    /// crashed are removed.
    pub(crate) fn new(corpus_dir: &Path, spill_at: usize) -> Result<KeyIndex, CorpusError> {
        let dir = corpus_dir.join(RUNS_DIR);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?,
            Ok(_) => fs::remove_file(&dir).map_err(io_err("remove", &dir))?,
            Err(_) => {}
        }
        let spill_at = spill_at.max(1);
        // Allocated once at the size it fills to (growing by doubling would hold the old
        // table and the new one at once); a larger spill size than a million entries grows.
        let fresh = Fresh::with_capacity_and_hasher(spill_at.min(1 << 20), Default::default());
        Ok(KeyIndex {
            dir,
            fresh,
            runs: Vec::new(),
            filter: Bloom::new(spill_at as u64),
            spill_at,
            bloom_max: BLOOM_MAX_KEYS,
            next_run: 0,
            broken: false,
        })
    }

    /// Takes an existing corpus's entries, `n` of them in strictly ascending key order (its
    /// `index.bin`, streamed), into an empty index: in memory if fewer than the spill size,
    /// else straight into a run, so that opening a corpus of any size holds one entry at a
    /// time. `next` ends the entries with `None` (early if it failed; the caller then
    /// starts again from a new index).
    pub(crate) fn adopt_sorted(
        &mut self,
        n: u64,
        mut next: impl FnMut() -> Option<IndexEntry>,
    ) -> Result<(), CorpusError> {
        debug_assert_eq!(self.len(), 0, "adopt into an empty index");
        if n < self.spill_at as u64 {
            while let Some(e) = next() {
                self.fresh.insert(e.key, Loc::of(&e));
            }
            return Ok(());
        }
        let r = self.write_run_from(|| Ok(next()), true);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// An empty index with nowhere to spill, left in a writer once it has written
    /// `index.bin`.
    pub(crate) fn closed() -> KeyIndex {
        KeyIndex {
            dir: PathBuf::new(),
            fresh: Fresh::default(),
            runs: Vec::new(),
            filter: Bloom::new(1),
            spill_at: usize::MAX,
            bloom_max: BLOOM_MAX_KEYS,
            next_run: 0,
            broken: false,
        }
    }

    /// Records present.
    pub(crate) fn len(&self) -> u64 {
        self.fresh.len() as u64 + self.runs.iter().map(|r| r.n).sum::<u64>()
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &[u8; 16]) -> Result<bool, CorpusError> {
        if self.fresh.contains_key(key) {
            return Ok(true);
        }
        if self.runs.is_empty() || !self.filter.may_contain(key) {
            return Ok(false);
        }
        for r in &self.runs {
            if r.contains(key).map_err(io_err("read", &r.path))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds an entry whose key is not present (the caller checked).
    pub(crate) fn insert(&mut self, e: IndexEntry) -> Result<(), CorpusError> {
        self.fresh.insert(e.key, Loc::of(&e));
        if self.fresh.len() >= self.spill_at {
            self.spill()?;
        }
        Ok(())
    }

    /// The entries held in memory, sorted by key; the map is left empty.
    fn take_fresh_sorted(&mut self) -> Vec<IndexEntry> {
        let mut entries: Vec<IndexEntry> = self.fresh.drain().map(|(key, l)| l.entry(key)).collect();
        entries.sort_unstable_by_key(|e| ord(&e.key));
        entries
    }

    fn spill(&mut self) -> Result<(), CorpusError> {
        let r = self.spill_and_merge();
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn spill_and_merge(&mut self) -> Result<(), CorpusError> {
        let entries = self.take_fresh_sorted();
        self.write_run(entries.into_iter())?;
        // Merge while the newest run is as large as the one before, as a binary counter
        // carries: sizes then more than double going back, so there are at most about
        // log2(records / spill) + 1 runs, and each entry is rewritten about that many times.
        while self.runs.len() >= 2 && self.runs[self.runs.len() - 2].n <= self.runs[self.runs.len() - 1].n {
            let newer = self.runs.pop().expect("two runs");
            let older = self.runs.pop().expect("two runs");
            let a = older.reader().map_err(io_err("read", &older.path))?;
            let b = newer.reader().map_err(io_err("read", &newer.path))?;
            let mut m = Merge::new(vec![a, b]);
            self.write_run_from(|| m.next(), false)?;
            // The merged run is last; the two it came from go.
            for r in [older, newer] {
                fs::remove_file(&r.path).map_err(io_err("remove", &r.path))?;
            }
        }
        Ok(())
    }

    fn write_run(&mut self, entries: impl Iterator<Item = IndexEntry>) -> Result<(), CorpusError> {
        let mut entries = entries;
        self.write_run_from(|| Ok(entries.next()), true)
    }

    /// Writes what `next` yields, in key order, as a new run (last in the list); `new_keys`
    /// when they are not in the filter yet (a merge's are).
    fn write_run_from(
        &mut self,
        mut next: impl FnMut() -> io::Result<Option<IndexEntry>>,
        new_keys: bool,
    ) -> Result<(), CorpusError> {
        if !self.dir.exists() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&self.dir)
                .map_err(io_err("create directory", &self.dir))?;
        }
        self.next_run += 1;
        let path = self.dir.join(format!("{:08}.run", self.next_run));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let mut w = BufWriter::with_capacity(64 << 10, &file);
        let mut n = 0u64;
        let mut fences = Vec::new();
        let mut b = [0u8; ENTRY_LEN];
        while let Some(e) = next().map_err(io_err("read", &self.dir))? {
            if n.is_multiple_of(BLOCK) {
                fences.push(ord(&e.key));
            }
            encode_entry(&e, &mut b);
            w.write_all(&b).map_err(io_err("write", &path))?;
            if new_keys {
                self.filter.insert(&e.key);
            }
            n += 1;
        }
        w.flush().map_err(io_err("write", &path))?;
        drop(w);
        self.runs.push(Run { path, file, n, fences });
        let spilled: u64 = self.runs.iter().map(|r| r.n).sum();
        if spilled > self.filter.capacity && self.filter.capacity < self.bloom_max {
            // Rebuilt from every run, sized for twice what there is now (up to the most it may
            // take): each key is read again about as many times as the filter doubles. The old
            // one goes first, so the two are never held at once.
            self.filter.bits = Vec::new();
            self.filter = Bloom::new((spilled * 2).min(self.bloom_max));
            for r in &self.runs {
                let mut rd = r.reader().map_err(io_err("read", &r.path))?;
                while let Some(e) = rd.next().map_err(io_err("read", &r.path))? {
                    self.filter.insert(&e.key);
                }
            }
        }
        Ok(())
    }

    /// Every entry in key order (the first of equal keys), for `index.bin`; the runs are
    /// removed after.
    pub(crate) fn into_sorted(mut self) -> Result<SortedEntries, CorpusError> {
        if self.broken {
            return Err(CorpusError::Io {
                op: "merge the index runs in",
                path: self.dir.clone(),
                source: io::Error::other(
                    "an earlier spill of index entries failed; index.bin is left for the next writer to rebuild from the segments",
                ),
            });
        }
        let fresh = self.take_fresh_sorted();
        let mut readers = Vec::new();
        for r in &self.runs {
            readers.push(r.reader().map_err(io_err("read", &r.path))?);
        }
        let n = self.len() + fresh.len() as u64;
        let mut merge = Merge::new(readers);
        merge.add_memory(fresh);
        Ok(SortedEntries { merge, n, dir: std::mem::take(&mut self.dir) })
    }
}

/// What [`KeyIndex::into_sorted`] gives: entries in key order, and how many.
pub(crate) struct SortedEntries {
    merge: Merge,
    /// Entries (keys are unique, so this is what the merge yields).
    pub(crate) n: u64,
    dir: PathBuf,
}

impl SortedEntries {
    pub(crate) fn next(&mut self) -> Result<Option<IndexEntry>, CorpusError> {
        self.merge.next().map_err(io_err("read", &self.dir))
    }

    /// Removes the runs (once index.bin is written).
    pub(crate) fn remove_runs(self) -> Result<(), CorpusError> {
        drop(self.merge);
        if self.dir.as_os_str().is_empty() || !self.dir.exists() {
            return Ok(());
        }
        fs::remove_dir_all(&self.dir).map_err(io_err("remove", &self.dir))
    }
}

/// A k-way merge, by key, of sorted sources with unique keys each; the first source wins
/// among equal keys.
struct Merge {
    readers: Vec<RunReader>,
    memory: std::vec::IntoIter<IndexEntry>,
    heads: Vec<Option<IndexEntry>>,
    started: bool,
}

impl Merge {
    fn new(readers: Vec<RunReader>) -> Merge {
        Merge { readers, memory: Vec::new().into_iter(), heads: Vec::new(), started: false }
    }

    /// A sorted list in memory, as the last (newest) source.
    fn add_memory(&mut self, sorted: Vec<IndexEntry>) {
        self.memory = sorted.into_iter();
    }

    fn pull(&mut self, i: usize) -> io::Result<Option<IndexEntry>> {
        if i == self.readers.len() { Ok(self.memory.next()) } else { self.readers[i].next() }
    }

    fn next(&mut self) -> io::Result<Option<IndexEntry>> {
        if !self.started {
            self.started = true;
            for i in 0..=self.readers.len() {
                let h = self.pull(i)?;
                self.heads.push(h);
            }
        }
        // Few sources (about log2 of the records over the spill size): a scan beats a heap.
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(e) = h
                && best.is_none_or(|b| ord(&e.key) < ord(&self.heads[b].as_ref().expect("some").key))
            {
                best = Some(i);
            }
        }
        let Some(b) = best else { return Ok(None) };
        let out = self.heads[b].take().expect("some");
        self.heads[b] = self.pull(b)?;
        for i in 0..self.heads.len() {
            if i != b && self.heads[i].as_ref().is_some_and(|e| e.key == out.key) {
                self.heads[i] = self.pull(i)?;
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> [u8; 16] {
        blake3::hash(&i.to_le_bytes()).as_bytes()[..16].try_into().unwrap()
    }

    fn entry(i: u64) -> IndexEntry {
        IndexEntry {
            key: key(i),
            segment: (i % 7) as u32,
            offset: i * 100,
            len: i as u32,
            kind: (i % 3) as u8,
        }
    }

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::new(10_000);
        for i in 0..10_000 {
            b.insert(&key(i));
        }
        assert!((0..10_000).all(|i| b.may_contain(&key(i))));
        let false_positives = (10_000..20_000).filter(|&i| b.may_contain(&key(i))).count();
        assert!(false_positives < 300, "{false_positives} of 10,000");
    }

    #[test]
    fn spilled_runs_answer_lookups_and_merge_into_one_sorted_list() {
        let tmp = tempfile::tempdir().unwrap();
        // Two entries already in the corpus: below the spill size, they stay in memory.
        let mut k = KeyIndex::new(tmp.path(), 3).unwrap();
        let mut old: Vec<IndexEntry> = (0..2).map(entry).collect();
        old.sort_by_key(|e| e.key);
        let mut old = old.into_iter();
        k.adopt_sorted(2, || old.next()).unwrap();
        assert!(k.runs.is_empty());
        for i in 2..1000 {
            assert!(!k.contains(&key(i)).unwrap());
            k.insert(entry(i)).unwrap();
            assert!(k.runs.len() <= 10, "{} runs after {i}", k.runs.len());
        }
        assert_eq!(k.len(), 1000);
        assert!((0..1000).all(|i| k.contains(&key(i)).unwrap()));
        assert!(!(1000..1100).any(|i| k.contains(&key(i)).unwrap()));
        let runs = tmp.path().join(RUNS_DIR);
        assert!(runs.exists());
        let mut sorted = k.into_sorted().unwrap();
        assert_eq!(sorted.n, 1000);
        let mut got = Vec::new();
        while let Some(e) = sorted.next().unwrap() {
            got.push(e);
        }
        sorted.remove_runs().unwrap();
        assert!(!runs.exists());
        let mut want: Vec<IndexEntry> = (0..1000).map(entry).collect();
        want.sort_by_key(|e| e.key);
        assert_eq!(got, want);
    }

    #[test]
    fn an_existing_index_past_the_spill_size_is_adopted_as_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let mut old: Vec<IndexEntry> = (0..500).map(entry).collect();
        old.sort_by_key(|e| e.key);
        let mut k = KeyIndex::new(tmp.path(), 100).unwrap();
        let mut it = old.into_iter();
        k.adopt_sorted(500, || it.next()).unwrap();
        assert_eq!((k.runs.len(), k.runs[0].n, k.fresh.len()), (1, 500, 0));
        assert!((0..500).all(|i| k.contains(&key(i)).unwrap()));
        assert!(!(500..600).any(|i| k.contains(&key(i)).unwrap()));
        for i in 500..800 {
            k.insert(entry(i)).unwrap();
        }
        let mut sorted = k.into_sorted().unwrap();
        let mut got = Vec::new();
        while let Some(e) = sorted.next().unwrap() {
            got.push(e);
        }
        let mut want: Vec<IndexEntry> = (0..800).map(entry).collect();
        want.sort_by_key(|e| e.key);
        assert_eq!(got, want);
    }

    #[test]
    fn the_filter_stops_growing_at_its_bound_and_lookups_stay_right() {
        let tmp = tempfile::tempdir().unwrap();
        let mut k = KeyIndex::new(tmp.path(), 50).unwrap();
        k.bloom_max = 400;
        for i in 0..3000 {
            k.insert(entry(i)).unwrap();
        }
        assert_eq!(k.filter.capacity, 400);
        assert_eq!(k.filter.bits.len(), (400 * BLOOM_BITS_PER_KEY).div_ceil(64) as usize);
        assert!((0..3000).all(|i| k.contains(&key(i)).unwrap()));
        assert!(!(3000..3500).any(|i| k.contains(&key(i)).unwrap()));
    }

    #[test]
    fn a_merge_keeps_the_first_of_equal_keys() {
        let mut older = vec![entry(1), entry(2), entry(3)];
        older.sort_by_key(|e| e.key);
        let mut newer = vec![IndexEntry { offset: 9, ..entry(2) }, entry(4)];
        newer.sort_by_key(|e| e.key);
        let tmp = tempfile::tempdir().unwrap();
        let mut k = KeyIndex::new(tmp.path(), 1000).unwrap();
        k.write_run(older.into_iter()).unwrap();
        let run = k.runs.pop().unwrap();
        let mut m = Merge::new(vec![run.reader().unwrap()]);
        m.add_memory(newer);
        let mut got = Vec::new();
        while let Some(e) = m.next().unwrap() {
            got.push(e);
        }
        let mut want = vec![entry(1), entry(2), entry(3), entry(4)];
        want.sort_by_key(|e| e.key);
        assert_eq!(got, want, "entry 2 from the older source, once");
    }
}
