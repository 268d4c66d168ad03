//! The on-disk corpus: a directory of append-only segments, an index and a manifest.
//!
//! ```text
//! CORPUS/
//!   manifest.json        format, version, counts, recorder summaries
//!   index.bin            case id -> segment and offset (derived; rebuilt when missing or stale)
//!   lock                 held (flock) by the one writer
//!   segments/00000001.seg  records, appended only
//! ```
//!
//! [`Corpus`] reads (any number at once, no lock); [`CorpusWriter`] appends (one at a time).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::case::{Case, CaseKind};
use crate::error::{CorpusError, Problem};
use crate::frame::{self, MAX_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentEvent, SegmentReader};
use crate::id::CaseId;
use crate::index::{ENTRY_LEN, Index, IndexEntry, IndexStream, StreamError, encode_entry, encode_head};
use crate::keys::KeyIndex;
use crate::manifest::{Counts, Manifest};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The index's file name.
pub const INDEX_FILE: &str = "index.bin";
/// The writer lock's file name.
pub const LOCK_FILE: &str = "lock";
/// The folder of segment files.
pub const SEGMENTS_DIR: &str = "segments";
const COMPACT_DIR: &str = "compact.tmp";
const COMMIT_FILE: &str = "COMMIT";

/// The content type of a corpus of cases.
pub const CONTENT_CASES: &str = "cases";

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Sequence number (from the name).
    pub seq: u32,
    /// The file.
    pub path: PathBuf,
    /// Its length when listed.
    pub len: u64,
}

fn segment_name(seq: u32) -> String {
    format!("{seq:08}.seg")
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, CorpusError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let rd = match fs::read_dir(&seg_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CorpusError::io("list", &seg_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(CorpusError::io("list", &seg_dir))?;
        let name = entry.file_name();
        // Exactly the names `segment_name` makes, so that one number has one file.
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .filter(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let len = entry.metadata().map_err(CorpusError::io("stat", &path))?.len();
        out.push(SegmentFile { seq, path, len });
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Creates a new file readable and writable by its owner only (corpora hold production traffic).
fn create_private(path: &Path) -> Result<File, CorpusError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(CorpusError::io("create", path))
}

fn sync_dir(dir: &Path) -> Result<(), CorpusError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(CorpusError::io("sync", dir))
}

/// Writes a file so that a crash leaves either the old or the new contents.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CorpusError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = create_private(&tmp)?;
    f.write_all(bytes).map_err(CorpusError::io("write", &tmp))?;
    f.sync_all().map_err(CorpusError::io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(CorpusError::io("rename into place", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn check_dir(dir: &Path) -> Result<(), CorpusError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(CorpusError::NotACorpus { path: dir.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CorpusError::NotFound { path: dir.to_path_buf() });
        }
        Err(e) => return Err(CorpusError::io("open", dir)(e)),
    }
    if !dir.join(MANIFEST_FILE).exists() {
        return Err(CorpusError::NotACorpus { path: dir.to_path_buf() });
    }
    Ok(())
}

/// Counts of what `entries` (unique keys) hold, keeping the duplicates already skipped.
/// Counts zeroed, except what only the writer knows (duplicates it skipped).
fn zero_counts(c: &mut Counts) {
    *c = Counts { duplicates_skipped: c.duplicates_skipped, ..Counts::default() };
}

/// One record in the counts.
fn count_entry(c: &mut Counts, e: &IndexEntry) {
    c.records += 1;
    c.payload_bytes += e.len as u64;
    *c.by_kind.entry(kind_name(e.kind)).or_default() += 1;
}

/// A corpus opened for reading. Any number of readers may read while one writer appends;
/// a reader sees the bytes present when it started each segment.
#[derive(Debug, Clone)]
pub struct Corpus {
    dir: PathBuf,
    manifest: Manifest,
    segments: Vec<SegmentFile>,
    /// Segment files opened by [`Corpus::read_entry`] and [`Corpus::read_payload`], kept open
    /// for the next read (at most [`OPEN_SEGMENTS`], shared by clones).
    open_files: std::sync::Arc<std::sync::Mutex<OpenSegments>>,
}

/// Segment files kept open, by sequence number, oldest first.
type OpenSegments = Vec<(u32, std::sync::Arc<File>)>;

/// Segment files a [`Corpus`] keeps open for reads by index entry: a saved run looked up case
/// by case opened its segment for every case (a path walk, an open and a close each, about a
/// fifth of `replay diff --a runs/X --b runs/Y`'s CPU), and a corpus has few segments.
const OPEN_SEGMENTS: usize = 16;

impl Corpus {
    /// Opens a corpus directory for reading.
    pub fn open(dir: impl AsRef<Path>) -> Result<Corpus, CorpusError> {
        let dir = dir.as_ref();
        check_dir(dir)?;
        let manifest = Manifest::load(&dir.join(MANIFEST_FILE))?;
        if dir.join(COMPACT_DIR).join(COMMIT_FILE).exists() {
            // Finishing a committed compaction needs the lock; take it if it is free.
            let lock = Lock::acquire(dir).map_err(|e| match e {
                CorpusError::Locked { .. } => CorpusError::CompactionPending { path: dir.to_path_buf() },
                other => other,
            })?;
            finish_compaction(dir)?;
            drop(lock);
            return Corpus::open(dir);
        }
        let segments = list_segments(dir)?;
        Ok(Corpus { dir: dir.to_path_buf(), manifest, segments, open_files: Default::default() })
    }

    /// The corpus directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest as read at open.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The segment files as listed at open.
    pub fn segments(&self) -> &[SegmentFile] {
        &self.segments
    }

    /// Total bytes of the segment files.
    pub fn segment_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Streams every record frame, in order, in constant memory.
    pub fn records(&self) -> Records {
        Records::new(self.segments.clone())
    }

    /// Streams every case, in order, in constant memory. Problems (corrupt or undecodable
    /// records) come as `Err` items and reading goes on after them.
    pub fn cases(&self) -> Cases {
        Cases { records: self.records(), check_ids: false }
    }

    /// Like [`Corpus::cases`], and also checks that each case's input hashes to its id.
    pub fn cases_checked(&self) -> Cases {
        Cases { records: self.records(), check_ids: true }
    }

    /// The index, read from `index.bin` and brought up to date with the segments in memory
    /// (a reader never writes it). Problems found on the way are returned with it.
    pub fn index(&self) -> Result<(Index, Vec<Problem>), CorpusError> {
        let mut problems = Vec::new();
        let (index, _) = load_index(&self.dir, &self.segments, false, &mut problems)?;
        Ok((index, problems))
    }

    /// The segment file `seq`, open (from those kept open, or opened now and kept).
    fn segment_file(&self, seq: u32, path: &Path) -> io::Result<std::sync::Arc<File>> {
        let mut open = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = open.iter().find(|(s, _)| *s == seq) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(File::open(path)?);
        if open.len() >= OPEN_SEGMENTS {
            open.remove(0);
        }
        open.push((seq, f.clone()));
        Ok(f)
    }

    /// Reads the case an index entry points at.
    pub fn read_entry(&self, entry: &IndexEntry) -> Result<Case, Problem> {
        let path = self.dir.join(SEGMENTS_DIR).join(segment_name(entry.segment));
        let io_problem =
            |e: io::Error| Problem::Io { path: path.clone(), offset: entry.offset, message: e.to_string() };
        let file = self.segment_file(entry.segment, &path).map_err(io_problem)?;
        match frame::read_record_at(&file, entry.offset).map_err(io_problem)? {
            Some(r) => decode_case(&path, entry.offset, r.kind, r.key, &r.payload, false),
            None => Err(Problem::Corrupt { path, offset: entry.offset, skipped: 0 }),
        }
    }

    /// Reads the raw payload an index entry points at (for stores of other content, such as a
    /// run directory's observations).
    pub fn read_payload(&self, entry: &IndexEntry) -> Result<Vec<u8>, Problem> {
        let path = self.dir.join(SEGMENTS_DIR).join(segment_name(entry.segment));
        let io_problem =
            |e: io::Error| Problem::Io { path: path.clone(), offset: entry.offset, message: e.to_string() };
        let file = self.segment_file(entry.segment, &path).map_err(io_problem)?;
        match frame::read_record_at(&file, entry.offset).map_err(io_problem)? {
            Some(r) => Ok(r.payload),
            None => Err(Problem::Corrupt { path, offset: entry.offset, skipped: 0 }),
        }
    }

    /// `index.bin`'s path, and the file open with its length (`None` when there is none).
    fn open_index(&self) -> Result<(PathBuf, Option<(File, u64)>), CorpusError> {
        let path = self.dir.join(INDEX_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path, None)),
            Err(e) => return Err(CorpusError::io("read", &path)(e)),
        };
        let len = file.metadata().map_err(CorpusError::io("read", &path))?.len();
        Ok((path, Some((file, len))))
    }

    /// The index entries whose key's hex form starts with `prefix` (hex digits), sorted by key,
    /// one per key (the first written, as in [`Corpus::index`]), with the problems found on the
    /// way. Unlike [`Corpus::index`] this holds only the matches: `index.bin` is streamed (with
    /// the same checks, its checksum at the end) and the records the segments hold past what it
    /// covers are scanned one at a time. A damaged `index.bin` is reported and the segments are
    /// scanned whole instead, so what it gave before the damage showed is never used.
    pub fn entries_with_hex_prefix(
        &self,
        prefix: &str,
    ) -> Result<(Vec<IndexEntry>, Vec<Problem>), CorpusError> {
        let mut problems = Vec::new();
        let mut found = Vec::new();
        let (path, file) = self.open_index()?;
        let mut known = Vec::new();
        if let Some((file, len)) = file {
            let streamed = || -> Result<Option<Vec<(u32, u64)>>, StreamError> {
                let mut s = IndexStream::open(BufReader::with_capacity(256 << 10, file), len)?;
                if !index_usable(&s.segments, &self.segments) {
                    return Ok(None);
                }
                while let Some(e) = s.next()? {
                    if has_hex_prefix(&e.key, prefix) {
                        found.push(e);
                    }
                }
                let segments = std::mem::take(&mut s.segments);
                s.finish()?;
                Ok(Some(segments))
            };
            match streamed() {
                Ok(Some(segments)) => known = segments,
                Ok(None) => {}
                Err(StreamError::Io(e)) => return Err(CorpusError::io("read", &path)(e)),
                Err(StreamError::Bad(e)) => {
                    found.clear();
                    problems.push(Problem::IndexCorrupt { path: path.clone(), detail: e.describe(&path) });
                }
            }
        }
        scan_segments(&self.segments, &known, false, &mut problems, &mut |e| {
            if has_hex_prefix(&e.key, prefix) {
                found.push(e);
            }
            Ok(())
        })?;
        // Stable: among equal keys the one met first (the index's, then segment order) stays.
        found.sort_by_key(|e| e.key);
        found.dedup_by(|later, first| later.key == first.key);
        Ok((found, problems))
    }

    /// A lookup of records by key that holds `index.bin` on disk instead of in memory: for a
    /// caller that looks up many keys, one at a time, in a corpus of any size (a saved run
    /// diffed against tonight's). Opening streams `index.bin` once, with the same checks as
    /// [`Corpus::index`] (its checksum at the end), and keeps the first key of every
    /// [`LOOKUP_BLOCK`] entries (16 bytes per 32 records); each lookup then reads one block
    /// of it. Records the segments hold past what the index covers (a writer crashed, or the
    /// index is missing) are held in memory, as [`Corpus::index`] would hold them all; a
    /// damaged `index.bin` is reported with the problems and not used at all.
    pub fn lookup(&self) -> Result<(Lookup, Vec<Problem>), CorpusError> {
        let mut problems = Vec::new();
        let (path, file) = self.open_index()?;
        let mut on_disk = None;
        let mut known = Vec::new();
        if let Some((file, len)) = file {
            let streamed = || -> Result<Option<OnDisk>, StreamError> {
                let mut s = IndexStream::open(BufReader::with_capacity(256 << 10, &file), len)?;
                if !index_usable(&s.segments, &self.segments) {
                    return Ok(None);
                }
                let base = len - 4 - s.entries * ENTRY_LEN as u64;
                let mut fences = Vec::with_capacity(s.entries.div_ceil(LOOKUP_BLOCK) as usize);
                let mut i = 0u64;
                while let Some(e) = s.next()? {
                    if i.is_multiple_of(LOOKUP_BLOCK) {
                        fences.push(e.key);
                    }
                    i += 1;
                }
                let segments = std::mem::take(&mut s.segments);
                let entries = s.entries;
                s.finish()?;
                Ok(Some(OnDisk { base, entries, fences, segments }))
            };
            match streamed() {
                Ok(Some(d)) => {
                    known = d.segments.clone();
                    on_disk = Some((file, d));
                }
                Ok(None) => {}
                Err(StreamError::Io(e)) => return Err(CorpusError::io("read", &path)(e)),
                Err(StreamError::Bad(e)) => {
                    problems.push(Problem::IndexCorrupt { path: path.clone(), detail: e.describe(&path) });
                }
            }
        }
        let mut tail = Index::default();
        scan_segments(&self.segments, &known, false, &mut problems, &mut |e| {
            tail.entries.push(e);
            Ok(())
        })?;
        tail.sort_dedup();
        Ok((Lookup { path, on_disk, tail }, problems))
    }

    /// Fetches one case by id through the index (in bounded memory, as
    /// [`Corpus::entries_with_hex_prefix`]).
    pub fn get(&self, id: &CaseId) -> Result<Option<Case>, CorpusError> {
        let (entries, _) = self.entries_with_hex_prefix(&id.to_hex())?;
        match entries.first() {
            None => Ok(None),
            Some(e) => self.read_entry(e).map(Some).map_err(|p| CorpusError::Io {
                op: "read",
                path: self.dir.clone(),
                source: io::Error::other(p.to_string()),
            }),
        }
    }
}

/// Entries of `index.bin` per block that a [`Lookup`] reads at once (1,152 bytes), and the
/// number of records per key it holds in memory to find the block. Blocks of 128 (4.5 KiB a
/// read) cost more system time than the in-memory search they replaced.
pub const LOOKUP_BLOCK: u64 = 32;

struct OnDisk {
    /// Byte offset of the first entry in `index.bin`.
    base: u64,
    entries: u64,
    /// The key of entry `i * LOOKUP_BLOCK`, for each `i`.
    fences: Vec<[u8; 16]>,
    segments: Vec<(u32, u64)>,
}

/// Records by key, from [`Corpus::lookup`].
pub struct Lookup {
    path: PathBuf,
    /// `index.bin` (held open: a writer that replaces it later does not change what is read
    /// here) and what is known of it.
    on_disk: Option<(File, OnDisk)>,
    /// The records past what `index.bin` covers (all of them without a usable one).
    tail: Index,
}

impl Lookup {
    /// Where the record with `key` is: the first one written, as [`Corpus::index`] says.
    pub fn get(&self, key: &[u8; 16]) -> Result<Option<IndexEntry>, CorpusError> {
        if let Some((file, d)) = &self.on_disk {
            // The last block whose first key is not past `key`.
            let block = d.fences.partition_point(|f| f <= key);
            if block > 0 {
                let first = (block as u64 - 1) * LOOKUP_BLOCK;
                let n = LOOKUP_BLOCK.min(d.entries - first) as usize;
                let mut block = [0u8; LOOKUP_BLOCK as usize * ENTRY_LEN];
                let buf = &mut block[..n * ENTRY_LEN];
                std::os::unix::fs::FileExt::read_exact_at(file, buf, d.base + first * ENTRY_LEN as u64)
                    .map_err(CorpusError::io("read", &self.path))?;
                let at = |i: usize| -> &[u8; ENTRY_LEN] {
                    buf[i * ENTRY_LEN..(i + 1) * ENTRY_LEN].try_into().expect("one entry")
                };
                let (mut lo, mut hi) = (0, n);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    match at(mid)[..16].cmp(&key[..]) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => return Ok(Some(crate::index::decode_entry(at(mid)))),
                    }
                }
            }
        }
        Ok(self.tail.get(key).copied())
    }

    /// How many records' keys are held in memory: the block fences plus the records past what
    /// `index.bin` covers.
    pub fn keys_in_memory(&self) -> usize {
        self.on_disk.as_ref().map_or(0, |(_, d)| d.fences.len()) + self.tail.entries.len()
    }
}

/// One item from [`Records`].
#[derive(Debug)]
pub enum RecordItem<'a> {
    /// A record whose frame checks out.
    Record {
        /// The segment file.
        path: &'a Path,
        /// Segment sequence number.
        segment: u32,
        /// Offset of the frame.
        offset: u64,
        /// Record kind.
        kind: u8,
        /// Record key.
        key: [u8; 16],
        /// The payload.
        payload: &'a [u8],
    },
    /// Something that is not a good record; reading goes on.
    Problem(Problem),
}

/// A streaming reader over every segment's records.
pub struct Records {
    segments: Vec<SegmentFile>,
    next: usize,
    current: Option<(u32, SegmentReader)>,
    done_bytes: u64,
}

impl Records {
    fn new(segments: Vec<SegmentFile>) -> Records {
        Records { segments, next: 0, current: None, done_bytes: 0 }
    }

    /// Bytes of segment files consumed so far (for progress bars).
    pub fn bytes_read(&self) -> u64 {
        self.done_bytes + self.current.as_ref().map_or(0, |(_, r)| r.position())
    }

    /// Total bytes of the segment files.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// The next item, or `None` when every segment has been read.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<RecordItem<'_>> {
        let (offset, kind, key) = loop {
            let Some((_, reader)) = &mut self.current else {
                let seg = self.segments.get(self.next)?.clone();
                self.next += 1;
                match SegmentReader::open(&seg.path, None) {
                    Ok(r) => self.current = Some((seg.seq, r)),
                    Err(e) => {
                        self.done_bytes += seg.len;
                        return Some(RecordItem::Problem(Problem::Io {
                            path: seg.path,
                            offset: 0,
                            message: e.to_string(),
                        }));
                    }
                }
                continue;
            };
            match reader.advance() {
                None => {
                    self.done_bytes += reader.len();
                    self.current = None;
                }
                Some(Ok(SegmentEvent::Record { offset, kind, key })) => break (offset, kind, key),
                Some(Ok(ev)) => {
                    let last = self.next == self.segments.len();
                    let p = event_problem_in(reader.path().to_path_buf(), ev, last);
                    return Some(RecordItem::Problem(p));
                }
                Some(Err(e)) => {
                    let path = reader.path().to_path_buf();
                    let p = Problem::Io { path, offset: reader.position(), message: e.to_string() };
                    return Some(RecordItem::Problem(p));
                }
            }
        };
        let (segment, reader) = self.current.as_ref().expect("set in the loop");
        Some(RecordItem::Record {
            path: reader.path(),
            segment: *segment,
            offset,
            kind,
            key,
            payload: reader.payload(),
        })
    }
}

fn event_problem(path: PathBuf, ev: SegmentEvent, truncated: bool) -> Problem {
    match ev {
        SegmentEvent::Record { .. } => unreachable!("records are not problems"),
        SegmentEvent::BadHeader(detail) => Problem::BadSegmentHeader { path, detail },
        SegmentEvent::NewerVersion(v) => Problem::BadSegmentHeader {
            path,
            detail: format!(
                "format version {v} is newer than this replay reads (up to {}); segment skipped",
                frame::FORMAT_VERSION
            ),
        },
        SegmentEvent::Corrupt { offset, skipped } => Problem::Corrupt { path, offset, skipped },
        SegmentEvent::Tail { offset, bytes } => Problem::TornTail { path, offset, bytes, truncated },
    }
}

/// Like [`event_problem`] for a segment that is not the last: it was synced before the next
/// one was started, so a tail cut short there is damage, not an interrupted write.
fn event_problem_in(path: PathBuf, ev: SegmentEvent, last: bool) -> Problem {
    match ev {
        SegmentEvent::Tail { offset, bytes } if !last => Problem::Corrupt { path, offset, skipped: bytes },
        ev => event_problem(path, ev, false),
    }
}

fn decode_case(
    path: &Path,
    offset: u64,
    kind: u8,
    key: [u8; 16],
    payload: &[u8],
    check_hash: bool,
) -> Result<Case, Problem> {
    let decode = |message: String| Problem::Decode { path: path.to_path_buf(), offset, message };
    let case: Case = rmp_serde::from_slice(payload).map_err(|e| decode(e.to_string()))?;
    if case.kind() as u8 != kind {
        return Err(decode(format!("frame kind {kind} but the case is a {} case", case.kind().name())));
    }
    let stored = CaseId(key);
    let mismatch = |found: CaseId, what: &'static str| Problem::IdMismatch {
        path: path.to_path_buf(),
        offset,
        stored,
        found,
        what,
    };
    if case.id() != stored {
        return Err(mismatch(case.id(), "the case inside names"));
    }
    if check_hash {
        let computed = case.compute_id();
        if computed != stored {
            return Err(mismatch(computed, "its input hashes to"));
        }
    }
    Ok(case)
}

/// A streaming iterator of cases; see [`Corpus::cases`].
pub struct Cases {
    records: Records,
    check_ids: bool,
}

impl Cases {
    /// Bytes of segment files consumed so far (for progress bars).
    pub fn bytes_read(&self) -> u64 {
        self.records.bytes_read()
    }

    /// Total bytes of the segment files.
    pub fn total_bytes(&self) -> u64 {
        self.records.total_bytes()
    }
}

impl Iterator for Cases {
    type Item = Result<Case, Problem>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.records.next()? {
            RecordItem::Problem(p) => Err(p),
            RecordItem::Record { path, offset, kind, key, payload, .. } => {
                decode_case(path, offset, kind, key, payload, self.check_ids)
            }
        })
    }
}

/// Reads `index.bin` and reconciles it with the segments: returns the up-to-date index and each
/// segment's covered length. A writer (`fix_tail`) truncates a torn tail of the last segment.
fn load_index(
    dir: &Path,
    segments: &[SegmentFile],
    fix_tail: bool,
    problems: &mut Vec<Problem>,
) -> Result<(Index, BTreeMap<u32, u64>), CorpusError> {
    let path = dir.join(INDEX_FILE);
    let stored = match fs::read(&path) {
        Ok(bytes) => match Index::decode(&bytes) {
            Ok(idx) => Some(idx),
            Err(e) => {
                problems.push(Problem::IndexCorrupt { path: path.clone(), detail: e.describe(&path) });
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(CorpusError::io("read", &path)(e)),
    };
    let usable = stored.filter(|idx| index_usable(&idx.segments, segments));
    let mut index = usable.unwrap_or_default();
    let known = index.segments.clone();
    let covered = scan_segments(segments, &known, fix_tail, problems, &mut |e| {
        index.entries.push(e);
        Ok(())
    })?;
    index.sort_dedup();
    index.segments = covered.iter().map(|(&s, &c)| (s, c)).collect();
    Ok((index, covered))
}

/// Whether `key`'s hex form starts with `prefix` (hex digits, either case), without forming it.
fn has_hex_prefix(key: &[u8; 16], prefix: &str) -> bool {
    prefix.len() <= 32
        && prefix.bytes().enumerate().all(|(i, c)| {
            let nibble = if i % 2 == 0 { key[i / 2] >> 4 } else { key[i / 2] & 0xf };
            (c as char).to_digit(16) == Some(u32::from(nibble))
        })
}

/// Whether a stored index that covers `known` (segment, length) can be kept: every segment it
/// covers is still there, at least as long, and any new segment comes after the ones it knows.
fn index_usable(known: &[(u32, u64)], segments: &[SegmentFile]) -> bool {
    let max_known = known.iter().map(|s| s.0).max().unwrap_or(0);
    known.iter().all(|&(seq, covered)| segments.iter().any(|s| s.seq == seq && s.len >= covered))
        && segments.iter().all(|s| known.iter().any(|k| k.0 == s.seq) || s.seq > max_known)
}

/// Gives `add` every record the segments hold past what a stored index covers (`known`), in
/// segment order; returns each segment's covered length.
fn scan_segments(
    segments: &[SegmentFile],
    known: &[(u32, u64)],
    fix_tail: bool,
    problems: &mut Vec<Problem>,
    add: &mut dyn FnMut(IndexEntry) -> Result<(), CorpusError>,
) -> Result<BTreeMap<u32, u64>, CorpusError> {
    let known: BTreeMap<u32, u64> = known.iter().copied().collect();
    let mut covered = BTreeMap::new();
    let last = segments.last().map(|s| s.seq);
    for seg in segments {
        let from = known.get(&seg.seq).copied();
        if from == Some(seg.len) {
            covered.insert(seg.seq, seg.len);
            continue;
        }
        let is_last = Some(seg.seq) == last;
        let end = scan_segment(seg, from, fix_tail && is_last, is_last, add, problems)?;
        covered.insert(seg.seq, end);
    }
    Ok(covered)
}

/// The writer's form of [`load_index`]: the same reconciliation, streamed into `keys` (the
/// stored entries straight into a run, the records past them one at a time), so that opening
/// a corpus of any size to append holds bounded memory. Returns each segment's covered length;
/// `counts` are recounted on the way.
fn load_keys(
    dir: &Path,
    segments: &[SegmentFile],
    spill_at: usize,
    counts: &mut Counts,
    problems: &mut Vec<Problem>,
) -> Result<(KeyIndex, BTreeMap<u32, u64>), CorpusError> {
    let path = dir.join(INDEX_FILE);
    let mut keys = KeyIndex::new(dir, spill_at)?;
    zero_counts(counts);
    let mut known = Vec::new();
    let read_err = CorpusError::io("read", &path);
    let file = match File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(e)),
    };
    if let Some(file) = file {
        let len = file.metadata().map_err(CorpusError::io("read", &path))?.len();
        let adopted = match IndexStream::open(BufReader::with_capacity(256 << 10, file), len) {
            Ok(s) if index_usable(&s.segments, segments) => {
                let mut s = s;
                let segs = s.segments.clone();
                let mut failed = None;
                keys.adopt_sorted(s.entries, || match s.next() {
                    Ok(e) => {
                        if let Some(e) = &e {
                            count_entry(counts, e);
                        }
                        e
                    }
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                })?;
                match failed {
                    Some(e) => Err(e),
                    None => s.finish(),
                }
                .map(|()| Some(segs))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        match adopted {
            Ok(Some(segs)) => known = segs,
            Ok(None) => {}
            Err(StreamError::Io(e)) => return Err(CorpusError::io("read", &path)(e)),
            Err(StreamError::Bad(e)) => {
                problems.push(Problem::IndexCorrupt { path: path.clone(), detail: e.describe(&path) })
            }
        }
        if known.is_empty() && keys.len() > 0 {
            // Damaged part way through: start again from the segments alone.
            keys = KeyIndex::new(dir, spill_at)?;
            zero_counts(counts);
        }
    }
    let covered = scan_segments(segments, &known, true, problems, &mut |e| {
        // The first record of a key is the one kept, as the reader's index keeps it.
        if !keys.contains(&e.key)? {
            count_entry(counts, &e);
            keys.insert(e)?;
        }
        Ok(())
    })?;
    counts.segments = covered.len() as u64;
    Ok((keys, covered))
}

/// Gives `add` a segment's records (from `from`, or all); returns the covered length.
fn scan_segment(
    seg: &SegmentFile,
    from: Option<u64>,
    fix_tail: bool,
    is_last: bool,
    add: &mut dyn FnMut(IndexEntry) -> Result<(), CorpusError>,
    problems: &mut Vec<Problem>,
) -> Result<u64, CorpusError> {
    let mut reader = SegmentReader::open(&seg.path, from).map_err(CorpusError::io("open", &seg.path))?;
    let mut end = reader.len();
    while let Some(ev) = reader.advance() {
        match ev.map_err(CorpusError::io("read", &seg.path))? {
            SegmentEvent::Record { offset, kind, key } => add(IndexEntry {
                key,
                segment: seg.seq,
                offset,
                len: (reader.position() - offset - RECORD_HEADER_LEN as u64) as u32,
                kind,
            })?,
            SegmentEvent::Tail { offset, bytes } if fix_tail => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(CorpusError::io("open", &seg.path))?;
                f.set_len(offset).map_err(CorpusError::io("truncate", &seg.path))?;
                f.sync_all().map_err(CorpusError::io("sync", &seg.path))?;
                end = offset;
                problems.push(Problem::TornTail { path: seg.path.clone(), offset, bytes, truncated: true });
            }
            ev => problems.push(event_problem_in(seg.path.clone(), ev, is_last)),
        }
    }
    Ok(end)
}

/// The writer lock: an exclusive `flock` on `CORPUS/lock`, released when dropped (or when the
/// process dies, so a crashed writer never leaves a stale lock).
struct Lock {
    _file: File,
}

impl Lock {
    fn acquire(dir: &Path) -> Result<Lock, CorpusError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(CorpusError::io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(CorpusError::Locked {
                    path,
                    holder: (!holder.is_empty()).then(|| holder.to_string()),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(CorpusError::io("lock", &path)(e)),
        }
        // Say who holds it, for the error a second writer gets.
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = writeln!(file, "pid {}", std::process::id());
        Ok(Lock { _file: file })
    }
}

/// How a writer writes.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// A segment is closed and a new one started when the next record would take it past this
    /// many bytes (a single larger record gets a segment of its own).
    pub segment_bytes: u64,
    /// Data is flushed and `fsync`ed at least this often while appending (and always on close).
    /// `None` syncs only on close.
    pub sync_interval: Option<Duration>,
    /// Index entries kept in memory before they are spilled, sorted, to a run file beside the
    /// segments (merged into `index.bin` at close): what bounds the writer's memory whatever the
    /// number of records (see `keys.rs`). The default, 57,344, is 7/8 of 65,536: the most a
    /// hash table of 65,536 slots holds (2.6 MiB), so the table is allocated once at that size
    /// and never doubles.
    pub index_spill: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            segment_bytes: 64 << 20,
            sync_interval: Some(Duration::from_secs(1)),
            index_spill: 57_344,
        }
    }
}

struct OpenSegment {
    seq: u32,
    path: PathBuf,
    out: SegmentOut,
    len: u64,
    /// `len` when writeback of the file was last started (see [`start_writeback`]).
    kicked: u64,
}

/// Writeback of an open segment's file is started every this many bytes appended.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Starts writeback of `file`'s dirty pages without waiting for it (Linux's
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere nothing). Left to the kernel, a
/// segment's 64 MiB stay dirty until the `fsync` when it is full or closed, which then waited
/// 26-32 ms each, on the writer's thread, with the pipeline behind it stalled (three times on
/// big.pcap's 175 MB corpus). Started as they are appended, the writes overlap the recording
/// and the `fsync` finds little left. Durability is unchanged: the `fsync`s stay where they
/// were. The caller ignores the result: without the `WAIT_*` flags (never add them here) the
/// call does not consume the file's writeback error, so the next `fsync` still reports it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the call takes a descriptor and integers, no memory; the descriptor is borrowed
    // from a `File` that outlives the call.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Bytes a segment's output holds before they go to its file.
const SEGMENT_BUFFER: usize = 256 * 1024;

/// A segment file's output buffer. Unlike `BufWriter`, cases are encoded straight into it
/// (see [`CorpusWriter::append`]): a body is copied once on its way to the kernel, not twice.
/// Only `buf[..done]` is ever written out: a record being encoded after `done` (its header
/// still zero) never reaches the file, whatever happens to the encoding.
struct SegmentOut<W: Write = File> {
    file: W,
    buf: Vec<u8>,
    /// How much of `buf` is whole records (or raw writes), ready for the file.
    done: usize,
}

impl<W: Write> SegmentOut<W> {
    fn new(file: W) -> SegmentOut<W> {
        SegmentOut { file, buf: Vec::with_capacity(SEGMENT_BUFFER), done: 0 }
    }

    fn get_ref(&self) -> &W {
        &self.file
    }

    /// Drops what was appended after `done` (a record that failed to encode or was refused).
    fn discard_pending(&mut self) {
        self.buf.truncate(self.done);
        self.shrink();
    }

    /// One very large case does not keep its buffer for the rest of the run.
    fn shrink(&mut self) {
        if self.buf.capacity() > 4 * SEGMENT_BUFFER && self.buf.len() <= SEGMENT_BUFFER {
            self.buf.shrink_to(SEGMENT_BUFFER);
        }
    }

    /// Marks everything in the buffer whole, and writes it out once it holds
    /// [`SEGMENT_BUFFER`] bytes.
    fn commit(&mut self) -> io::Result<()> {
        self.done = self.buf.len();
        if self.done >= SEGMENT_BUFFER { self.flush() } else { Ok(()) }
    }
}

impl<W: Write> Write for SegmentOut<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.done + data.len() > SEGMENT_BUFFER {
            self.flush()?;
        }
        if self.done == 0 && data.len() >= SEGMENT_BUFFER {
            return self.file.write(data);
        }
        self.buf.truncate(self.done);
        self.buf.extend_from_slice(data);
        self.done = self.buf.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // As `BufWriter` does: what the file took leaves the buffer even when a later write
        // fails, so a retry goes on where the file stopped instead of writing it twice.
        let mut written = 0;
        let result = loop {
            if written == self.done {
                break Ok(());
            }
            match self.file.write(&self.buf[written..self.done]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..written);
        self.done -= written;
        self.shrink();
        result?;
        self.file.flush()
    }
}

/// What [`CorpusWriter::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The case was written.
    New,
    /// A case with this id was already present; nothing was written.
    Duplicate,
}

/// The one writer of a corpus. Holds the lock until [`CorpusWriter::close`] (or drop, which
/// closes as well as it can).
pub struct CorpusWriter {
    dir: PathBuf,
    manifest: Manifest,
    keys: KeyIndex,
    lens: BTreeMap<u32, u64>,
    seg: Option<OpenSegment>,
    opts: WriterOptions,
    last_sync: Instant,
    failed: bool,
    closed: bool,
    problems: Vec<Problem>,
    _lock: Lock,
}

impl CorpusWriter {
    /// Creates a new corpus of cases in `dir` (which must not exist or be empty).
    pub fn create(dir: impl AsRef<Path>, opts: WriterOptions) -> Result<CorpusWriter, CorpusError> {
        Self::create_with(dir.as_ref(), CONTENT_CASES, opts)
    }

    /// Creates a new store of records of some other content (`observations` for a run).
    pub fn create_with(dir: &Path, content: &str, opts: WriterOptions) -> Result<CorpusWriter, CorpusError> {
        match fs::read_dir(dir) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(CorpusError::NotEmpty { path: dir.to_path_buf() });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(CorpusError::io("create directory", dir))?;
            }
            Err(e) => return Err(CorpusError::io("open", dir)(e)),
        }
        let lock = Lock::acquire(dir)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.join(SEGMENTS_DIR))
            .map_err(CorpusError::io("create directory", dir.join(SEGMENTS_DIR)))?;
        let manifest = Manifest::new(content);
        write_atomic(&dir.join(MANIFEST_FILE), &manifest_bytes(&manifest))?;
        Self::open_locked(dir, lock, opts)
    }

    /// Opens an existing corpus to append. Recovers from a crash: a torn tail is truncated, a
    /// stale or damaged index is rebuilt; what was found is in [`CorpusWriter::problems`].
    pub fn open(dir: impl AsRef<Path>, opts: WriterOptions) -> Result<CorpusWriter, CorpusError> {
        let dir = dir.as_ref();
        check_dir(dir)?;
        Manifest::load(&dir.join(MANIFEST_FILE))?;
        let lock = Lock::acquire(dir)?;
        Self::open_locked(dir, lock, opts)
    }

    /// Opens `dir` if it holds a corpus, or creates one there if it does not exist or is empty.
    pub fn open_or_create(dir: impl AsRef<Path>, opts: WriterOptions) -> Result<CorpusWriter, CorpusError> {
        let dir = dir.as_ref();
        let empty = match fs::read_dir(dir) {
            Ok(mut rd) => rd.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(CorpusError::io("open", dir)(e)),
        };
        if empty { Self::create(dir, opts) } else { Self::open(dir, opts) }
    }

    fn open_locked(dir: &Path, lock: Lock, opts: WriterOptions) -> Result<CorpusWriter, CorpusError> {
        finish_compaction(dir)?;
        let manifest = Manifest::load(&dir.join(MANIFEST_FILE))?;
        let segments = list_segments(dir)?;
        let mut problems = Vec::new();
        let mut manifest = manifest;
        let (keys, lens) = load_keys(dir, &segments, opts.index_spill, &mut manifest.counts, &mut problems)?;
        let mut w = CorpusWriter {
            dir: dir.to_path_buf(),
            manifest,
            keys,
            lens,
            seg: None,
            opts,
            last_sync: Instant::now(),
            failed: false,
            closed: false,
            problems,
            _lock: lock,
        };
        if let Some(last) = segments.last() {
            let len = w.lens[&last.seq];
            let mut file = OpenOptions::new()
                .write(true)
                .open(&last.path)
                .map_err(CorpusError::io("open", &last.path))?;
            file.seek(SeekFrom::Start(len)).map_err(CorpusError::io("seek", &last.path))?;
            let out = SegmentOut::new(file);
            let mut seg = OpenSegment { seq: last.seq, path: last.path.clone(), out, len, kicked: len };
            if len == 0 {
                // A segment whose header was torn away: write it again.
                seg.out
                    .write_all(&frame::segment_header(seg.seq))
                    .map_err(CorpusError::io("write", &seg.path))?;
                seg.len = SEGMENT_HEADER_LEN;
                w.lens.insert(seg.seq, seg.len);
            }
            w.seg = Some(seg);
        }
        w.manifest.counts.segments = w.lens.len() as u64;
        Ok(w)
    }

    /// What was found and repaired when the corpus was opened.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The corpus directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a case with this id is present. A spilled run that cannot be read answers
    /// "no" here; [`CorpusWriter::append`] asks again and reports the error.
    pub fn contains(&self, id: &CaseId) -> bool {
        self.keys.contains(id.as_bytes()).unwrap_or(false)
    }

    /// The number of cases present.
    pub fn len(&self) -> usize {
        self.keys.len() as usize
    }

    /// Whether the corpus holds no case.
    pub fn is_empty(&self) -> bool {
        self.keys.len() == 0
    }

    /// The manifest as it will be written on close.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Adds a recorder's summary to the manifest (written on close).
    pub fn add_recording(&mut self, summary: serde_json::Value) {
        self.manifest.recordings.push(summary);
    }

    /// Sets a top-level manifest entry of the store's own (a run directory's `run`, say),
    /// written on close.
    pub fn set_other(&mut self, key: &str, value: serde_json::Value) {
        self.manifest.other.insert(key.to_string(), value);
    }

    /// Appends a case; a case whose id is present already is skipped and counted.
    pub fn append(&mut self, case: &Case) -> Result<Appended, CorpusError> {
        let key = *case.id().as_bytes();
        if self.keys.contains(&key)? {
            self.manifest.counts.duplicates_skipped += 1;
            return Ok(Appended::Duplicate);
        }
        self.usable()?;
        if self.seg.is_none() {
            self.roll()?;
        }
        // Encoded in place, after room for its frame header: the header's length and CRC
        // are filled in once the payload is there.
        let seg = self.seg.as_mut().expect("rolled");
        let mut start = seg.out.done;
        seg.out.buf.resize(start + RECORD_HEADER_LEN, 0);
        if let Err(e) = rmp_serde::encode::write_named(&mut seg.out.buf, case) {
            seg.out.discard_pending();
            return Err(CorpusError::Encode { id: case.id(), message: e.to_string() });
        }
        let len = seg.out.buf.len() - start - RECORD_HEADER_LEN;
        if len > MAX_PAYLOAD as usize {
            seg.out.discard_pending();
            return Err(CorpusError::TooLarge { id: case.id(), len, max: MAX_PAYLOAD });
        }
        let total = (RECORD_HEADER_LEN + len) as u64;
        if seg.len > SEGMENT_HEADER_LEN && seg.len + total > self.opts.segment_bytes {
            // The segment is full: the record moves to a new one (once per segment).
            let record = seg.out.buf.split_off(start);
            self.roll()?;
            let seg = self.seg.as_mut().expect("rolled");
            start = seg.out.buf.len();
            seg.out.buf.extend_from_slice(&record);
        }
        let kind = case.kind() as u8;
        let seg = self.seg.as_mut().expect("rolled");
        let (head, payload) = seg.out.buf[start..].split_at_mut(RECORD_HEADER_LEN);
        head.copy_from_slice(&frame::record_header(kind, &key, payload));
        if let Err(e) = seg.out.commit() {
            self.failed = true;
            return Err(CorpusError::io("write", &seg.path)(e));
        }
        self.committed(kind, key, len)
    }

    /// An error once a write has failed: what follows it could not be read back.
    fn usable(&self) -> Result<(), CorpusError> {
        if self.failed {
            return Err(CorpusError::Io {
                op: "append to",
                path: self.dir.clone(),
                source: io::Error::other("an earlier write to this corpus failed"),
            });
        }
        Ok(())
    }

    /// Appends a raw record (any content) under `key`, with the same framing and dedup.
    pub fn append_record(
        &mut self,
        kind: u8,
        key: &[u8; 16],
        payload: &[u8],
    ) -> Result<Appended, CorpusError> {
        self.usable()?;
        if self.keys.contains(key)? {
            self.manifest.counts.duplicates_skipped += 1;
            return Ok(Appended::Duplicate);
        }
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(CorpusError::TooLarge { id: CaseId(*key), len: payload.len(), max: MAX_PAYLOAD });
        }
        let total = (RECORD_HEADER_LEN + payload.len()) as u64;
        let roll = match &self.seg {
            None => true,
            Some(s) => s.len > SEGMENT_HEADER_LEN && s.len + total > self.opts.segment_bytes,
        };
        if roll {
            self.roll()?;
        }
        let seg = self.seg.as_mut().expect("rolled");
        let header = frame::record_header(kind, key, payload);
        let written = seg.out.write_all(&header).and_then(|()| seg.out.write_all(payload));
        if let Err(e) = written {
            self.failed = true;
            return Err(CorpusError::io("write", &seg.path)(e));
        }
        self.committed(kind, *key, payload.len())
    }

    /// Books a record just written to the open segment.
    fn committed(&mut self, kind: u8, key: [u8; 16], len: usize) -> Result<Appended, CorpusError> {
        let seg = self.seg.as_mut().expect("written to");
        let total = (RECORD_HEADER_LEN + len) as u64;
        let entry = IndexEntry { key, segment: seg.seq, offset: seg.len, len: len as u32, kind };
        seg.len += total;
        if seg.len - seg.kicked >= WRITEBACK_BYTES {
            seg.kicked = seg.len;
            let _ = start_writeback(seg.out.get_ref());
        }
        self.lens.insert(seg.seq, seg.len);
        if let Err(e) = self.keys.insert(entry) {
            // The record is on disk but the index may have lost entries: no more appends, and
            // index.bin is not written from it (the next writer rebuilds it from the segments).
            self.failed = true;
            return Err(e);
        }
        let c = &mut self.manifest.counts;
        c.records += 1;
        c.payload_bytes += len as u64;
        *c.by_kind.entry(kind_name(kind)).or_default() += 1;
        if let Some(every) = self.opts.sync_interval
            && self.last_sync.elapsed() >= every
        {
            self.sync()?;
        }
        Ok(Appended::New)
    }

    /// Flushes buffered records and `fsync`s the current segment.
    pub fn sync(&mut self) -> Result<(), CorpusError> {
        self.last_sync = Instant::now();
        let Some(seg) = &mut self.seg else { return Ok(()) };
        let r = seg.out.flush().and_then(|()| seg.out.get_ref().sync_data());
        if r.is_ok() {
            // Nothing dirty left to start writing back.
            seg.kicked = seg.len;
        }
        r.map_err(|e| {
            self.failed = true;
            CorpusError::io("sync", &seg.path)(e)
        })
    }

    fn roll(&mut self) -> Result<(), CorpusError> {
        if self.seg.is_some() {
            self.sync()?;
        }
        let seq = self.lens.keys().next_back().map_or(1, |s| s + 1);
        let path = self.dir.join(SEGMENTS_DIR).join(segment_name(seq));
        let file = create_private(&path)?;
        let mut out = SegmentOut::new(file);
        out.write_all(&frame::segment_header(seq)).map_err(CorpusError::io("write", &path))?;
        out.flush().map_err(CorpusError::io("write", &path))?;
        sync_dir(&self.dir.join(SEGMENTS_DIR))?;
        self.lens.insert(seq, SEGMENT_HEADER_LEN);
        self.seg = Some(OpenSegment { seq, path, out, len: SEGMENT_HEADER_LEN, kicked: SEGMENT_HEADER_LEN });
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CorpusError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if let Some(seg) = &mut self.seg {
            let r = seg.out.flush().and_then(|()| seg.out.get_ref().sync_all());
            r.map_err(CorpusError::io("sync", &seg.path))?;
        }
        let keys = std::mem::replace(&mut self.keys, KeyIndex::closed());
        let segments: Vec<(u32, u64)> = self.lens.iter().map(|(&s, &l)| (s, l)).collect();
        write_index(&self.dir, &segments, keys, &mut self.manifest.counts)?;
        self.manifest.tool_version = env!("CARGO_PKG_VERSION").into();
        write_atomic(&self.dir.join(MANIFEST_FILE), &manifest_bytes(&self.manifest))
    }

    /// Flushes, `fsync`s, writes the index and manifest, and releases the lock.
    pub fn close(mut self) -> Result<Manifest, CorpusError> {
        self.finish()?;
        Ok(self.manifest.clone())
    }

    /// Rewrites the corpus into full segments, dropping bytes that are not good records, and
    /// swaps it in so that a crash at any point leaves either the old or the new corpus.
    pub fn compact(self) -> Result<CompactStats, CorpusError> {
        self.compact_with(|_| ())
    }

    /// [`CorpusWriter::compact`], calling `progress` now and then with the segment bytes copied.
    pub fn compact_with(mut self, mut progress: impl FnMut(u64)) -> Result<CompactStats, CorpusError> {
        self.finish()?;
        // Report only what the copy itself finds; open-time problems were reported already.
        self.problems.clear();
        let dir = self.dir.clone();
        let old = list_segments(&dir)?;
        let mut stats = CompactStats {
            segments_before: old.len() as u64,
            bytes_before: old.iter().map(|s| s.len).sum(),
            ..CompactStats::default()
        };
        let tmp = dir.join(COMPACT_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(CorpusError::io("remove", &tmp))?;
        }
        fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(CorpusError::io("create directory", &tmp))?;
        let first_new = old.last().map_or(1, |s| s.seq + 1);
        let mut seq = first_new;
        let mut out: Option<(PathBuf, BufWriter<File>, u64)> = None;
        // Keys and index entries in bounded memory, spilled under the compaction's folder.
        let mut keys = KeyIndex::new(&tmp, self.opts.index_spill)?;
        let mut new_segments: Vec<(u32, u64)> = Vec::new();
        let mut records = Records::new(old.clone());
        let close_seg = |o: Option<(PathBuf, BufWriter<File>, u64)>,
                         segs: &mut Vec<(u32, u64)>,
                         seq: u32|
         -> Result<(), CorpusError> {
            if let Some((path, mut w, len)) = o {
                w.flush().and_then(|()| w.get_ref().sync_all()).map_err(CorpusError::io("sync", &path))?;
                segs.push((seq, len));
            }
            Ok(())
        };
        while let Some(item) = records.next() {
            let RecordItem::Record { kind, key, payload, .. } = item else {
                if let RecordItem::Problem(p) = item {
                    self.problems.push(p);
                }
                continue;
            };
            if keys.contains(&key)? {
                stats.duplicates_dropped += 1;
                continue;
            }
            let total = (RECORD_HEADER_LEN + payload.len()) as u64;
            if out.as_ref().is_some_and(|o| o.2 > SEGMENT_HEADER_LEN && o.2 + total > self.opts.segment_bytes)
            {
                close_seg(out.take(), &mut new_segments, seq)?;
                seq += 1;
            }
            if out.is_none() {
                let path = tmp.join(segment_name(seq));
                let mut w = BufWriter::with_capacity(256 * 1024, create_private(&path)?);
                w.write_all(&frame::segment_header(seq)).map_err(CorpusError::io("write", &path))?;
                out = Some((path, w, SEGMENT_HEADER_LEN));
            }
            let (path, w, len) = out.as_mut().expect("opened");
            let header = frame::record_header(kind, &key, payload);
            w.write_all(&header)
                .and_then(|()| w.write_all(payload))
                .map_err(CorpusError::io("write", path.as_path()))?;
            keys.insert(IndexEntry { key, segment: seq, offset: *len, len: payload.len() as u32, kind })?;
            *len += total;
            stats.records += 1;
            if stats.records.is_multiple_of(1024) {
                progress(records.bytes_read());
            }
        }
        close_seg(out.take(), &mut new_segments, seq)?;
        stats.segments_after = new_segments.len() as u64;
        stats.bytes_after = new_segments.iter().map(|s| s.1).sum();
        write_index(&tmp, &new_segments, keys, &mut self.manifest.counts)?;
        self.lens = new_segments.iter().copied().collect();
        write_atomic(&tmp.join(MANIFEST_FILE), &manifest_bytes(&self.manifest))?;
        sync_dir(&tmp)?;
        write_atomic(&tmp.join(COMMIT_FILE), first_new.to_string().as_bytes())?;
        self.seg = None;
        finish_compaction(&dir)?;
        stats.problems = std::mem::take(&mut self.problems);
        Ok(stats)
    }
}

impl Drop for CorpusWriter {
    fn drop(&mut self) {
        if !self.closed && !self.failed {
            let _ = self.finish();
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactStats {
    /// Records kept.
    pub records: u64,
    /// Records dropped because their key was present already.
    pub duplicates_dropped: u64,
    /// Segment files before.
    pub segments_before: u64,
    /// Segment files after.
    pub segments_after: u64,
    /// Segment bytes before.
    pub bytes_before: u64,
    /// Segment bytes after.
    pub bytes_after: u64,
    /// Damage found (and left behind) while copying.
    pub problems: Vec<Problem>,
}

/// Finishes (or throws away) a compaction left by a crash. Idempotent; needs the lock.
/// Writes `dir/index.bin` (atomically) from `keys`, streamed from its runs and memory in key
/// order so that the index never needs to fit in memory at once, then removes the runs;
/// `counts` are recounted from what it writes.
fn write_index(
    dir: &Path,
    segments: &[(u32, u64)],
    keys: KeyIndex,
    counts: &mut Counts,
) -> Result<(), CorpusError> {
    let mut sorted = keys.into_sorted()?;
    let path = dir.join(INDEX_FILE);
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let file = create_private(&tmp)?;
    let mut w = BufWriter::with_capacity(256 << 10, &file);
    let head = encode_head(segments, sorted.n);
    let mut crc = crc32c::crc32c(&head);
    w.write_all(&head).map_err(CorpusError::io("write", &tmp))?;
    zero_counts(counts);
    let mut b = [0u8; ENTRY_LEN];
    while let Some(e) = sorted.next()? {
        encode_entry(&e, &mut b);
        crc = crc32c::crc32c_append(crc, &b);
        w.write_all(&b).map_err(CorpusError::io("write", &tmp))?;
        count_entry(counts, &e);
    }
    counts.segments = segments.len() as u64;
    debug_assert_eq!(counts.records, sorted.n, "keys are unique");
    w.write_all(&crc.to_le_bytes()).map_err(CorpusError::io("write", &tmp))?;
    w.flush().map_err(CorpusError::io("write", &tmp))?;
    drop(w);
    file.sync_all().map_err(CorpusError::io("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(CorpusError::io("rename into place", &path))?;
    sync_dir(dir)?;
    sorted.remove_runs()
}

fn finish_compaction(dir: &Path) -> Result<(), CorpusError> {
    let tmp = dir.join(COMPACT_DIR);
    if !tmp.exists() {
        return Ok(());
    }
    let commit = tmp.join(COMMIT_FILE);
    if !commit.exists() {
        // Never committed: the old segments are the corpus.
        return fs::remove_dir_all(&tmp).map_err(CorpusError::io("remove", &tmp));
    }
    // Committed: the new segments are the corpus. A COMMIT that cannot be read stops here
    // rather than guess, because rolling back a half-moved compaction would lose records.
    let first_new = fs::read_to_string(&commit).map_err(CorpusError::io("read", &commit))?;
    let first_new: u32 = first_new.trim().parse().map_err(|_| CorpusError::Io {
        op: "read",
        path: commit.clone(),
        source: io::Error::other("not a segment number"),
    })?;
    let seg_dir = dir.join(SEGMENTS_DIR);
    for entry in fs::read_dir(&tmp).map_err(CorpusError::io("list", &tmp))? {
        let path = entry.map_err(CorpusError::io("list", &tmp))?.path();
        if path.extension().is_some_and(|e| e == "seg") {
            let to = seg_dir.join(path.file_name().expect("file name"));
            fs::rename(&path, &to).map_err(CorpusError::io("move", &path))?;
        }
    }
    sync_dir(&seg_dir)?;
    for seg in list_segments(dir)? {
        if seg.seq < first_new {
            fs::remove_file(&seg.path).map_err(CorpusError::io("remove", &seg.path))?;
        }
    }
    sync_dir(&seg_dir)?;
    for name in [INDEX_FILE, MANIFEST_FILE] {
        let from = tmp.join(name);
        if from.exists() {
            fs::rename(&from, dir.join(name)).map_err(CorpusError::io("move", &from))?;
        }
    }
    sync_dir(dir)?;
    fs::remove_file(&commit).map_err(CorpusError::io("remove", &commit))?;
    fs::remove_dir_all(&tmp).map_err(CorpusError::io("remove", &tmp))?;
    sync_dir(dir)
}

fn manifest_bytes(m: &Manifest) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(m).expect("a manifest always serialises");
    v.push(b'\n');
    v
}

/// The manifest name of a record kind byte.
pub fn kind_name(kind: u8) -> String {
    match CaseKind::from_byte(kind) {
        Some(k) => k.name().to_string(),
        // A run directory's records (the harness's observations).
        None if kind == 0x10 => "observation".to_string(),
        None => format!("kind{kind}"),
    }
}

/// The state of `index.bin` relative to the segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexStatus {
    /// It covers exactly the segments as they are.
    Fresh,
    /// It is missing (rebuilt in memory when needed, written by the next writer).
    Missing,
    /// It covers less than the segments hold (a writer crashed or is still writing).
    Stale,
    /// It is damaged; what is wrong and where.
    Corrupt(String),
}

/// What [`Corpus::verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Good records read.
    pub records: u64,
    /// Segment bytes read.
    pub bytes: u64,
    /// Every problem, in order.
    pub problems: Vec<Problem>,
    /// The index file's state.
    pub index: IndexStatus,
    /// Records the index (when fresh) places differently from the scan, or misses.
    pub index_mismatches: u64,
    /// Counts from the scan that differ from the manifest's (`field: manifest vs scan`).
    pub manifest_mismatches: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is damaged. A stale or missing index and stale manifest counts are the
    /// normal state after a crash and are not damage: the next writer brings them up to date.
    pub fn is_clean(&self) -> bool {
        !self.problems.iter().any(Problem::is_damage)
            && !matches!(self.index, IndexStatus::Corrupt(_))
            && self.index_mismatches == 0
    }
}

impl Corpus {
    /// The state of `index.bin`.
    pub fn index_status(&self) -> IndexStatus {
        let path = self.dir.join(INDEX_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return IndexStatus::Missing,
            Err(e) => return IndexStatus::Corrupt(format!("{}: {e}", path.display())),
        };
        match Index::decode(&bytes) {
            Err(e) => IndexStatus::Corrupt(e.describe(&path)),
            Ok(idx) => {
                let now: Vec<(u32, u64)> = self.segments.iter().map(|s| (s.seq, s.len)).collect();
                if idx.segments == now { IndexStatus::Fresh } else { IndexStatus::Stale }
            }
        }
    }

    /// Reads every record, checks every checksum, decodes every case and checks that its input
    /// hashes to its id; checks the index against the records and the manifest's counts.
    /// `progress` is called now and then with the bytes read so far. Changes nothing.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> VerifyReport {
        let status = self.index_status();
        let stored_index = match status {
            IndexStatus::Fresh => {
                fs::read(self.dir.join(INDEX_FILE)).ok().and_then(|b| Index::decode(&b).ok())
            }
            _ => None,
        };
        let mut report = VerifyReport {
            records: 0,
            bytes: self.segment_bytes(),
            problems: Vec::new(),
            index: status,
            index_mismatches: 0,
            manifest_mismatches: Vec::new(),
        };
        let mut counts = Counts { segments: self.segments.len() as u64, ..Counts::default() };
        let mut seen = HashSet::new();
        let mut records = self.records();
        let mut n = 0u64;
        while let Some(item) = records.next() {
            n += 1;
            let (path, segment, offset, kind, key, payload) = match item {
                RecordItem::Problem(p) => {
                    report.problems.push(p);
                    continue;
                }
                RecordItem::Record { path, segment, offset, kind, key, payload } => {
                    (path, segment, offset, kind, key, payload)
                }
            };
            // Framing, checksums and the index are the format's; what a payload means is the
            // content's. Only a corpus of cases is decoded here (a run directory's
            // observations are the harness's to read).
            if self.manifest.content == CONTENT_CASES
                && let Err(p) = decode_case(path, offset, kind, key, payload, true)
            {
                report.problems.push(p);
            }
            if !seen.insert(key) {
                // A second copy of a key is ignored by readers of the index; only compaction
                // drops it from the segments.
                continue;
            }
            report.records += 1;
            counts.records += 1;
            counts.payload_bytes += payload.len() as u64;
            *counts.by_kind.entry(kind_name(kind)).or_default() += 1;
            if let Some(idx) = &stored_index
                && idx.get(&key).is_none_or(|e| e.segment != segment || e.offset != offset)
            {
                report.index_mismatches += 1;
            }
            if n.is_multiple_of(1024) {
                progress(records.bytes_read());
            }
        }
        if let Some(idx) = &stored_index {
            report.index_mismatches += (idx.entries.len() as u64).saturating_sub(report.records);
        }
        let m = &self.manifest.counts;
        let mut differ = |field: &str, manifest: String, scan: String| {
            if manifest != scan {
                report.manifest_mismatches.push(format!("{field}: manifest {manifest}, segments {scan}"));
            }
        };
        differ("records", m.records.to_string(), counts.records.to_string());
        differ("payload_bytes", m.payload_bytes.to_string(), counts.payload_bytes.to_string());
        differ("by_kind", format!("{:?}", m.by_kind), format!("{:?}", counts.by_kind));
        differ("segments", m.segments.to_string(), counts.segments.to_string());
        progress(report.bytes);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that takes `room` bytes, then fails once (a full disk freed), then takes all.
    struct Flaky {
        out: Vec<u8>,
        room: usize,
        failed: bool,
    }

    impl Write for Flaky {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if !self.failed && self.out.len() + data.len() > self.room {
                let n = self.room - self.out.len();
                if n == 0 {
                    self.failed = true;
                    return Err(io::Error::other("no space left"));
                }
                self.out.extend_from_slice(&data[..n]);
                return Ok(n);
            }
            self.out.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Review finding: a flush that failed part way kept the bytes the file had taken and
    /// wrote them again on the next flush, so every record after them sat at the wrong offset.
    #[test]
    fn a_failed_flush_goes_on_where_the_file_stopped_and_pending_bytes_never_reach_it() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let mut out = SegmentOut::new(Flaky { out: Vec::new(), room: 1000, failed: false });
        out.write_all(&data).unwrap();
        assert!(out.flush().is_err());
        assert_eq!(out.file.out.len(), 1000);
        // A record being encoded after the whole ones is not written by a flush.
        out.buf.extend_from_slice(b"half a record");
        out.flush().unwrap();
        assert_eq!(out.file.out, data, "each byte once, in order");
        out.commit().unwrap();
        out.flush().unwrap();
        assert_eq!(&out.file.out[2500..], b"half a record");
        // Dropping the pending part leaves the buffer as it was.
        out.buf.extend_from_slice(b"refused");
        out.discard_pending();
        out.flush().unwrap();
        assert_eq!(out.file.out.len(), 2513);
    }

    /// Writeback is started as a segment fills (not left to its `fsync`), across a roll and a
    /// reopen, and every record still reads back whole.
    #[test]
    fn writeback_starts_every_few_mebibytes_and_everything_reads_back() {
        use crate::{Blob, CaseData, Message};
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            segment_bytes: 2 * WRITEBACK_BYTES,
            sync_interval: None,
            ..WriterOptions::default()
        };
        let case = |i: u32| {
            let mut input = vec![(i % 251) as u8; 64 << 10];
            input[..4].copy_from_slice(&i.to_le_bytes());
            Case::new(CaseData::Message(Message {
                content_type: "application/octet-stream".into(),
                input: Blob(input),
                output: None,
            }))
        };
        let per_mib = 16;
        let mut w = CorpusWriter::create(dir.path(), opts.clone()).unwrap();
        let mut n = 0u32;
        while n < per_mib * 9 {
            w.append(&case(n)).unwrap();
            n += 1;
        }
        let seg = w.seg.as_ref().unwrap();
        assert_eq!(seg.seq, 1, "no roll yet");
        assert!(seg.kicked >= WRITEBACK_BYTES && seg.kicked <= seg.len, "{} of {}", seg.kicked, seg.len);
        // Past the segment's size: a new segment starts with nothing to write back.
        while n < per_mib * 17 {
            w.append(&case(n)).unwrap();
            n += 1;
        }
        let seg = w.seg.as_ref().unwrap();
        assert_eq!(seg.seq, 2);
        assert_eq!(seg.kicked, SEGMENT_HEADER_LEN);
        // The call itself works on a segment file (a wrong flag or descriptor would fail here,
        // silently in the writer).
        assert!(start_writeback(seg.out.get_ref()).is_ok());
        w.close().unwrap();
        // Reopened, what is in the file was synced on close: counting starts at its end.
        let mut w = CorpusWriter::open(dir.path(), opts).unwrap();
        let reopened = w.seg.as_ref().unwrap().len;
        assert_eq!(w.seg.as_ref().unwrap().kicked, reopened);
        while n < per_mib * 26 {
            w.append(&case(n)).unwrap();
            n += 1;
        }
        let seg = w.seg.as_ref().unwrap();
        assert_eq!(seg.seq, 2);
        assert!(seg.kicked >= reopened + WRITEBACK_BYTES, "{} from {}", seg.kicked, reopened);
        w.close().unwrap();
        let corpus = Corpus::open(dir.path()).unwrap();
        let mut seen: Vec<u32> = corpus
            .cases_checked()
            .map(|c| match c.unwrap().data() {
                CaseData::Message(m) => u32::from_le_bytes(m.input.0[..4].try_into().unwrap()),
                other => panic!("{other:?}"),
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }
}
