//! Segment files and record framing (see `docs/corpus-format.md`).
//!
//! A segment is a 24-byte header followed by records. Each record is a 32-byte frame header
//! (magic, payload length, kind, key, CRC32C) followed by its payload. The reader validates
//! every frame; when one is bad it finds the next good one and reports what it skipped, and a
//! segment that ends inside a record reports the torn tail.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The current format version of segments, index and manifest.
pub const FORMAT_VERSION: u32 = 1;
/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RPLYSEG\0";
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: u64 = 24;
/// The first four bytes of every record frame.
pub const RECORD_MAGIC: [u8; 4] = *b"RREC";
/// Length of a record frame header.
pub const RECORD_HEADER_LEN: usize = 32;
/// The largest payload a record may have.
pub const MAX_PAYLOAD: u32 = 1 << 30;

/// The segment header for sequence number `seq`.
pub fn segment_header(seq: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentHeader {
    /// A good header.
    Ok {
        /// Format version.
        version: u32,
        /// Sequence number.
        seq: u32,
    },
    /// The header is damaged (what is wrong).
    Damaged(String),
}

/// Checks a segment header.
pub fn parse_segment_header(h: &[u8; SEGMENT_HEADER_LEN as usize]) -> SegmentHeader {
    let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&h[..16]) {
        return SegmentHeader::Damaged("header checksum mismatch".into());
    }
    if h[..8] != SEGMENT_MAGIC {
        return SegmentHeader::Damaged("not a segment magic".into());
    }
    if h[20..24] != [0, 0, 0, 0] {
        return SegmentHeader::Damaged("reserved bytes 20..24 are not zero".into());
    }
    SegmentHeader::Ok {
        version: u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")),
        seq: u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")),
    }
}

/// The frame header for a payload.
pub fn record_header(kind: u8, key: &[u8; 16], payload: &[u8]) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..4].copy_from_slice(&RECORD_MAGIC);
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8] = kind;
    h[12..28].copy_from_slice(key);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..28]), payload);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A frame header that passed the structural checks (its CRC still needs the payload).
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Record kind.
    pub kind: u8,
    /// Record key (the case id).
    pub key: [u8; 16],
    /// Stored CRC32C of header bytes 0..28 and the payload.
    pub crc: u32,
}

/// Checks magic, reserved bytes and the length bound of a frame header.
pub fn parse_record_header(h: &[u8; RECORD_HEADER_LEN]) -> Option<FrameHeader> {
    if h[..4] != RECORD_MAGIC || h[9..12] != [0, 0, 0] {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return None;
    }
    Some(FrameHeader {
        len,
        kind: h[8],
        key: h[12..28].try_into().expect("16 bytes"),
        crc: u32::from_le_bytes(h[28..32].try_into().expect("4 bytes")),
    })
}

/// Whether the payload matches the header's CRC.
pub fn crc_ok(h: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> bool {
    let stored = u32::from_le_bytes(h[28..32].try_into().expect("4 bytes"));
    crc32c::crc32c_append(crc32c::crc32c(&h[..28]), payload) == stored
}

/// One thing a segment reader found. A record's payload is [`SegmentReader::payload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A good record.
    Record {
        /// Offset of the frame header.
        offset: u64,
        /// Record kind.
        kind: u8,
        /// Record key.
        key: [u8; 16],
    },
    /// The segment header is damaged; reading goes on after it.
    BadHeader(String),
    /// The header names a newer format version; nothing more is read from this segment.
    NewerVersion(u32),
    /// Bad bytes from `offset` were skipped up to the next good record or the end.
    Corrupt {
        /// Where the bad bytes start.
        offset: u64,
        /// How many were skipped.
        skipped: u64,
    },
    /// The segment ends inside a record (or inside its own header) at `offset`.
    Tail {
        /// Where the incomplete record starts.
        offset: u64,
        /// How many bytes it has.
        bytes: u64,
    },
}

/// Reads the records of one segment file in order, in constant memory (one payload at a time).
///
/// Only the bytes present when the reader was opened are read, so a writer appending at the
/// same time is never seen half-way.
pub struct SegmentReader {
    path: PathBuf,
    file: File,
    reader: BufReader<File>,
    pos: u64,
    len: u64,
    buf: Vec<u8>,
    state: State,
}

#[derive(PartialEq, Eq)]
enum State {
    Start,
    Records,
    Done,
}

const READ_BUF: usize = 256 * 1024;

impl SegmentReader {
    /// Opens a segment; `start` skips to a record offset (used to read an index's uncovered tail).
    pub fn open(path: &Path, start: Option<u64>) -> io::Result<SegmentReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(READ_BUF, file.try_clone()?);
        let (pos, state) = match start {
            Some(off) if off >= SEGMENT_HEADER_LEN => {
                reader.seek(SeekFrom::Start(off))?;
                (off, State::Records)
            }
            _ => (0, State::Start),
        };
        Ok(SegmentReader { path: path.to_path_buf(), file, reader, pos, len, buf: Vec::new(), state })
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The offset of the next byte to be read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next event, or `None` at the end of the segment. After an I/O error the reader
    /// stops.
    pub fn advance(&mut self) -> Option<io::Result<SegmentEvent>> {
        match self.step() {
            Ok(ev) => ev.map(Ok),
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }

    /// The payload of the record last returned by [`SegmentReader::advance`].
    pub fn payload(&self) -> &[u8] {
        &self.buf
    }

    fn step(&mut self) -> io::Result<Option<SegmentEvent>> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Start => {
                    if self.len < SEGMENT_HEADER_LEN {
                        self.state = State::Done;
                        if self.len == 0 {
                            return Ok(None);
                        }
                        return Ok(Some(SegmentEvent::Tail { offset: 0, bytes: self.len }));
                    }
                    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
                    self.reader.read_exact(&mut h)?;
                    self.pos = SEGMENT_HEADER_LEN;
                    self.state = State::Records;
                    match parse_segment_header(&h) {
                        SegmentHeader::Ok { version, .. } if version > FORMAT_VERSION => {
                            self.state = State::Done;
                            return Ok(Some(SegmentEvent::NewerVersion(version)));
                        }
                        SegmentHeader::Ok { .. } => continue,
                        SegmentHeader::Damaged(why) => {
                            return Ok(Some(SegmentEvent::BadHeader(why)));
                        }
                    }
                }
                State::Records => {
                    if self.pos >= self.len {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    return self.read_record().map(Some);
                }
            }
        }
    }

    fn read_record(&mut self) -> io::Result<SegmentEvent> {
        let at = self.pos;
        let remaining = self.len - at;
        let mut hint = None;
        if remaining >= RECORD_HEADER_LEN as u64 {
            let mut h = [0u8; RECORD_HEADER_LEN];
            self.reader.read_exact(&mut h)?;
            if let Some(fh) = parse_record_header(&h) {
                let end = at + RECORD_HEADER_LEN as u64 + fh.len as u64;
                if end <= self.len {
                    self.buf.resize(fh.len as usize, 0);
                    self.reader.read_exact(&mut self.buf)?;
                    if crc_ok(&h, &self.buf) {
                        self.pos = end;
                        return Ok(SegmentEvent::Record { offset: at, kind: fh.kind, key: fh.key });
                    }
                    hint = Some(end);
                }
            }
        }
        // Bad frame at `at`: find the next good record.
        let next = match hint {
            Some(end) if end == self.len => Some(end),
            Some(end) if valid_record_at(&self.file, end, self.len)?.is_some() => Some(end),
            _ => scan_for_record(&self.file, at + 1, self.len)?,
        };
        match next {
            Some(next) => {
                self.reader.seek(SeekFrom::Start(next))?;
                self.pos = next;
                if next == self.len {
                    self.state = State::Done;
                }
                Ok(SegmentEvent::Corrupt { offset: at, skipped: next - at })
            }
            None => {
                self.state = State::Done;
                self.pos = self.len;
                let bytes = self.len - at;
                if looks_torn(&self.file, at, self.len)? {
                    Ok(SegmentEvent::Tail { offset: at, bytes })
                } else {
                    Ok(SegmentEvent::Corrupt { offset: at, skipped: bytes })
                }
            }
        }
    }
}

/// Whether the bytes from `at` to the end look like a write cut off by a crash rather than
/// damage. A crash only cuts bytes off, or leaves zeros where the file grew before its data
/// reached the disk; it never alters bytes. So the tail is torn when it is all zeros, or when it
/// is shorter than the frame it starts declares (and is not that frame with a damaged length).
fn looks_torn(file: &File, at: u64, len: u64) -> io::Result<bool> {
    let n = (len - at) as usize;
    let mut region = vec![0u8; n.min(RECORD_HEADER_LEN)];
    file.read_exact_at(&mut region, at)?;
    if n <= RECORD_HEADER_LEN && region.iter().all(|&b| b == 0) {
        return Ok(true);
    }
    let magic_len = region.len().min(4);
    if region[..magic_len] != RECORD_MAGIC[..magic_len] {
        return Ok(region.iter().all(|&b| b == 0) && zeros_from(file, at, len)?);
    }
    if n < RECORD_HEADER_LEN {
        return Ok(true);
    }
    let h: [u8; RECORD_HEADER_LEN] = region.try_into().expect("32 bytes");
    let declared = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as u64;
    if RECORD_HEADER_LEN as u64 + declared <= n as u64 {
        // The whole declared frame is there, and it is not valid: damage.
        return Ok(false);
    }
    // Cut short, unless the frame is complete with a damaged length field: then the CRC
    // matches with the length the bytes actually have.
    let actual = (n - RECORD_HEADER_LEN) as u32;
    let mut fixed = h;
    fixed[4..8].copy_from_slice(&actual.to_le_bytes());
    let mut payload = vec![0u8; actual as usize];
    file.read_exact_at(&mut payload, at + RECORD_HEADER_LEN as u64)?;
    Ok(!crc_ok(&fixed, &payload))
}

fn zeros_from(file: &File, at: u64, len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = at;
    while off < len {
        let k = ((len - off) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..k], off)?;
        if buf[..k].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += k as u64;
    }
    Ok(true)
}

/// If a complete, valid record starts at `off` (and ends by `len`), its total length.
pub fn valid_record_at(file: &File, off: u64, len: u64) -> io::Result<Option<u64>> {
    if off + RECORD_HEADER_LEN as u64 > len {
        return Ok(None);
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut h, off)?;
    let Some(fh) = parse_record_header(&h) else { return Ok(None) };
    let total = RECORD_HEADER_LEN as u64 + fh.len as u64;
    if off + total > len {
        return Ok(None);
    }
    let mut payload = vec![0u8; fh.len as usize];
    file.read_exact_at(&mut payload, off + RECORD_HEADER_LEN as u64)?;
    Ok(crc_ok(&h, &payload).then_some(total))
}

/// The offset of the first valid record at or after `from`, if any.
fn scan_for_record(file: &File, from: u64, len: u64) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK + 3];
    let mut base = from;
    while base + RECORD_HEADER_LEN as u64 <= len {
        let n = ((len - base) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], base)?;
        for i in 0..n.saturating_sub(3) {
            if buf[i..i + 4] == RECORD_MAGIC && valid_record_at(file, base + i as u64, len)?.is_some() {
                return Ok(Some(base + i as u64));
            }
        }
        base += CHUNK as u64;
    }
    Ok(None)
}

/// A record read at a known offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Record kind.
    pub kind: u8,
    /// Record key.
    pub key: [u8; 16],
    /// The payload.
    pub payload: Vec<u8>,
}

/// Reads the record at `off` (for lookups through the index), or `None` when the bytes there
/// are not a valid record.
pub fn read_record_at(file: &File, off: u64) -> io::Result<Option<RawRecord>> {
    let len = file.metadata()?.len();
    if off + RECORD_HEADER_LEN as u64 > len {
        return Ok(None);
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut h, off)?;
    let Some(fh) = parse_record_header(&h) else { return Ok(None) };
    if off + RECORD_HEADER_LEN as u64 + fh.len as u64 > len {
        return Ok(None);
    }
    let mut payload = vec![0u8; fh.len as usize];
    file.read_exact_at(&mut payload, off + RECORD_HEADER_LEN as u64)?;
    Ok(crc_ok(&h, &payload).then_some(RawRecord { kind: fh.kind, key: fh.key, payload }))
}
