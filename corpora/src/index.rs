//! The index: case id -> segment and offset, with the segment lengths it covers so that a
//! stale index is noticed and brought up to date from the segments.

use std::io::{self, Read};
use std::path::Path;

use crate::frame::FORMAT_VERSION;

/// The first eight bytes of the index file.
pub const INDEX_MAGIC: [u8; 8] = *b"RPLYIDX\0";
const HEADER_LEN: usize = 24;
const SEGMENT_LEN: usize = 12;
/// Length of one index entry on disk.
pub const ENTRY_LEN: usize = 36;

/// Where one record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record key (case id).
    pub key: [u8; 16],
    /// Segment sequence number.
    pub segment: u32,
    /// Offset of the record's frame header in the segment.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
    /// Record kind.
    pub kind: u8,
}

/// The index: every record's place, sorted by key, and how much of each segment it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// `(segment sequence, bytes covered)`, ascending by sequence.
    pub segments: Vec<(u32, u64)>,
    /// Entries sorted by key, one per key.
    pub entries: Vec<IndexEntry>,
}

impl Index {
    /// Sorts the entries by key (keeping the first of equal keys) and returns how many
    /// duplicates were dropped.
    pub fn sort_dedup(&mut self) -> usize {
        // Stable sort keeps segment order among equal keys, so the first written wins.
        self.entries.sort_by_key(|e| e.key);
        let before = self.entries.len();
        self.entries.dedup_by(|later, first| later.key == first.key);
        before - self.entries.len()
    }

    /// The entry for a key.
    pub fn get(&self, key: &[u8; 16]) -> Option<&IndexEntry> {
        self.entries.binary_search_by(|e| e.key.cmp(key)).ok().map(|i| &self.entries[i])
    }

    /// The bytes of the index file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = encode_head(&self.segments, self.entries.len() as u64);
        out.reserve(self.entries.len() * ENTRY_LEN + 4);
        let mut b = [0u8; ENTRY_LEN];
        for e in &self.entries {
            encode_entry(e, &mut b);
            out.extend_from_slice(&b);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[cfg(test)]
    fn encode_by_hand(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN + self.segments.len() * SEGMENT_LEN + self.entries.len() * ENTRY_LEN + 4,
        );
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (seq, covered) in &self.segments {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&covered.to_le_bytes());
        }
        for e in &self.entries {
            out.extend_from_slice(&e.key);
            out.extend_from_slice(&e.segment.to_le_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
            out.extend_from_slice(&[e.kind, 0, 0, 0]);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses an index file; the error says what is wrong and at which offset. The same
    /// reader as a writer's streamed open ([`IndexStream`]), over bytes in memory.
    pub fn decode(bytes: &[u8]) -> Result<Index, IndexDecodeError> {
        let bad = |e: StreamError| match e {
            StreamError::Bad(e) => e,
            // Only a short slice fails a read, and the length was checked against the counts.
            StreamError::Io(e) => IndexDecodeError { offset: bytes.len() as u64, what: e.to_string() },
        };
        let mut s = IndexStream::open(bytes, bytes.len() as u64).map_err(bad)?;
        let mut entries = Vec::with_capacity(s.entries as usize);
        while let Some(e) = s.next().map_err(bad)? {
            entries.push(e);
        }
        let segments = std::mem::take(&mut s.segments);
        s.finish().map_err(bad)?;
        Ok(Index { segments, entries })
    }
}

/// The start of an index file: header and segment table, for `entries` entries to follow
/// (each [`encode_entry`]), then a CRC-32C of everything before it.
pub(crate) fn encode_head(segments: &[(u32, u64)], entries: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + segments.len() * SEGMENT_LEN);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    out.extend_from_slice(&entries.to_le_bytes());
    for (seq, covered) in segments {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&covered.to_le_bytes());
    }
    out
}

/// One entry as the index file (and the writer's spilled runs) store it.
pub(crate) fn encode_entry(e: &IndexEntry, out: &mut [u8; ENTRY_LEN]) {
    out[..16].copy_from_slice(&e.key);
    out[16..20].copy_from_slice(&e.segment.to_le_bytes());
    out[20..28].copy_from_slice(&e.offset.to_le_bytes());
    out[28..32].copy_from_slice(&e.len.to_le_bytes());
    out[32..].copy_from_slice(&[e.kind, 0, 0, 0]);
}

/// The inverse of [`encode_entry`].
pub(crate) fn decode_entry(b: &[u8; ENTRY_LEN]) -> IndexEntry {
    IndexEntry {
        key: b[..16].try_into().expect("16 bytes"),
        segment: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        offset: u64::from_le_bytes(b[20..28].try_into().expect("8 bytes")),
        len: u32::from_le_bytes(b[28..32].try_into().expect("4 bytes")),
        kind: b[32],
    }
}

/// Why an index file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDecodeError {
    /// Byte offset of the problem.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl IndexDecodeError {
    /// The message with the file named.
    pub fn describe(&self, path: &Path) -> String {
        format!("{} at offset {} of {}", self.what, self.offset, path.display())
    }
}

/// Why a streamed `index.bin` was not used: it could not be read, or it is not a valid index.
#[derive(Debug)]
pub(crate) enum StreamError {
    Io(io::Error),
    Bad(IndexDecodeError),
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> StreamError {
        StreamError::Io(e)
    }
}

/// `index.bin` read as a stream, for a writer opening a corpus of any size in bounded memory:
/// the header and segment table at once, then one entry at a time, each checked to come
/// after the one before, then the checksum ([`IndexStream::finish`]). The same checks as
/// [`Index::decode`], in one pass, holding one entry.
pub(crate) struct IndexStream<R> {
    r: R,
    /// `(segment sequence, bytes covered)`, as [`Index::segments`].
    pub(crate) segments: Vec<(u32, u64)>,
    /// Entries the header announces.
    pub(crate) entries: u64,
    read: u64,
    crc: u32,
    offset: u64,
    last: Option<[u8; 16]>,
}

impl<R: Read> IndexStream<R> {
    /// Reads the header and segment table of an index file `file_len` bytes long.
    pub(crate) fn open(mut r: R, file_len: u64) -> Result<IndexStream<R>, StreamError> {
        let bad =
            |offset: u64, what: &str| StreamError::Bad(IndexDecodeError { offset, what: what.to_string() });
        if file_len < HEADER_LEN as u64 + 4 {
            return Err(bad(file_len, "file too short for the index header"));
        }
        let mut head = [0u8; HEADER_LEN];
        r.read_exact(&mut head)?;
        if head[..8] != INDEX_MAGIC {
            return Err(bad(0, "not an index magic"));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(bad(8, &format!("index format version {version}, expected {FORMAT_VERSION}")));
        }
        let nseg = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as u64;
        let entries = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
        let want =
            HEADER_LEN as u128 + nseg as u128 * SEGMENT_LEN as u128 + entries as u128 * ENTRY_LEN as u128;
        if want + 4 != file_len as u128 {
            return Err(bad(12, "counts do not match the file length"));
        }
        let mut crc = crc32c::crc32c(&head);
        let mut segments = Vec::with_capacity(nseg as usize);
        let mut s = [0u8; SEGMENT_LEN];
        for _ in 0..nseg {
            r.read_exact(&mut s)?;
            crc = crc32c::crc32c_append(crc, &s);
            segments.push((
                u32::from_le_bytes(s[..4].try_into().expect("4 bytes")),
                u64::from_le_bytes(s[4..].try_into().expect("8 bytes")),
            ));
        }
        let offset = HEADER_LEN as u64 + nseg * SEGMENT_LEN as u64;
        Ok(IndexStream { r, segments, entries, read: 0, crc, offset, last: None })
    }

    /// The next entry, or `None` after the last.
    pub(crate) fn next(&mut self) -> Result<Option<IndexEntry>, StreamError> {
        if self.read == self.entries {
            return Ok(None);
        }
        let mut b = [0u8; ENTRY_LEN];
        self.r.read_exact(&mut b)?;
        self.crc = crc32c::crc32c_append(self.crc, &b);
        let e = decode_entry(&b);
        if self.last.is_some_and(|l| l >= e.key) {
            let what = "entries are not sorted by key".to_string();
            return Err(StreamError::Bad(IndexDecodeError { offset: self.offset, what }));
        }
        self.last = Some(e.key);
        self.read += 1;
        self.offset += ENTRY_LEN as u64;
        Ok(Some(e))
    }

    /// Checks the checksum, once every entry has been read.
    pub(crate) fn finish(mut self) -> Result<(), StreamError> {
        debug_assert_eq!(self.read, self.entries, "finish after the last entry");
        let mut t = [0u8; 4];
        self.r.read_exact(&mut t)?;
        if u32::from_le_bytes(t) != self.crc {
            let what = "checksum mismatch".to_string();
            return Err(StreamError::Bad(IndexDecodeError { offset: self.offset, what }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything [`IndexStream`] reads from `bytes`, as an [`Index`].
    fn stream(bytes: &[u8]) -> Result<Index, StreamError> {
        let mut s = IndexStream::open(bytes, bytes.len() as u64)?;
        let mut entries = Vec::new();
        while let Some(e) = s.next()? {
            entries.push(e);
        }
        let segments = s.segments.clone();
        s.finish()?;
        Ok(Index { segments, entries })
    }

    #[test]
    fn the_stream_reads_what_decode_reads_and_rejects_what_it_rejects() {
        let mut idx = Index { segments: vec![(1, 100), (3, 4096)], entries: vec![] };
        for k in 0..300u16 {
            let mut key = [0u8; 16];
            key[..2].copy_from_slice(&k.to_be_bytes());
            idx.entries.push(IndexEntry { key, segment: 1, offset: u64::from(k), len: 5, kind: 1 });
        }
        let bytes = idx.encode();
        assert_eq!(stream(&bytes).unwrap(), idx);
        // Out of order with a valid checksum: named at the entry's offset.
        let mut swapped = idx.clone();
        swapped.entries.swap(10, 11);
        match stream(&swapped.encode()) {
            Err(StreamError::Bad(e)) => {
                assert_eq!(e.offset, (HEADER_LEN + 2 * SEGMENT_LEN + 11 * ENTRY_LEN) as u64);
                assert!(e.what.contains("not sorted"), "{}", e.what);
            }
            other => panic!("{other:?}"),
        }
        assert!(Index::decode(&swapped.encode()).is_err());
        // A length that does not match the counts, and an empty file.
        assert!(matches!(IndexStream::open(&bytes[..], bytes.len() as u64 + 36), Err(StreamError::Bad(_))));
        assert!(matches!(IndexStream::open(&[][..], 0), Err(StreamError::Bad(_))));
    }

    #[test]
    fn roundtrip_and_damage() {
        let mut idx = Index { segments: vec![(1, 100), (2, 24)], entries: vec![] };
        for k in [3u8, 1, 2, 1] {
            idx.entries.push(IndexEntry { key: [k; 16], segment: 1, offset: k as u64 * 10, len: 5, kind: 2 });
        }
        assert_eq!(idx.sort_dedup(), 1);
        assert_eq!(idx.get(&[1; 16]).unwrap().offset, 10);
        let bytes = idx.encode();
        assert_eq!(Index::decode(&bytes).unwrap(), idx);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Index::decode(&b).is_err(), "bit {i} flip undetected");
        }
        assert!(Index::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// The pieces the writer streams `index.bin` from make the same bytes as the layout
    /// written out field by field.
    #[test]
    fn the_streamed_pieces_make_the_documented_layout() {
        let mut idx = Index { segments: vec![(1, 100), (7, 1 << 40)], entries: vec![] };
        for k in 0..5u8 {
            let e = IndexEntry {
                key: [k; 16],
                segment: u32::from(k),
                offset: u64::MAX - u64::from(k),
                len: 77,
                kind: k,
            };
            let mut b = [0u8; ENTRY_LEN];
            encode_entry(&e, &mut b);
            assert_eq!(decode_entry(&b), e);
            idx.entries.push(e);
        }
        assert_eq!(idx.encode(), idx.encode_by_hand());
    }
}
