//! The case model: one recorded unit of input and, where known, its recorded output.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::blob::Blob;
use crate::id::{CaseId, ID_LEN};

/// One recorded case: an HTTP exchange, a packet or a message, with where it came from.
///
/// The id is derived from the input (see [`Case::compute_id`]) and kept in step with it: the
/// input can only be replaced through [`Case::set_data`]. Everything else (source, time, tags,
/// flags) is metadata that does not change the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The stable id. Absent in hand-written JSONL, where import computes it.
    #[serde(default)]
    id: CaseId,
    /// Where the case was recorded from.
    #[serde(default)]
    pub source: Source,
    /// Capture time in nanoseconds since the Unix epoch, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<i64>,
    /// Free key/value tags (environment, route, language, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// What the recorder knew was wrong with this case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// Which recording of this same input this is: 0 for the first, 1 for the first repeat, and
    /// so on. Part of the id (see [`Case::with_repeat`]): a recording proxy keeps every answer to
    /// a request sent again byte for byte, so that playback answers repeats in recorded order.
    #[serde(default, skip_serializing_if = "is_zero")]
    repeat: u32,
    /// The recorded input, and output where known.
    data: CaseData,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The kinds of case. The discriminant is the record kind byte of the corpus format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CaseKind {
    /// An HTTP exchange.
    Http = 1,
    /// A packet.
    Packet = 2,
    /// An opaque message.
    Message = 3,
}

impl CaseKind {
    /// Every kind, in kind-byte order.
    pub const ALL: [CaseKind; 3] = [CaseKind::Http, CaseKind::Packet, CaseKind::Message];

    /// The kind's name as written in manifests, filters and JSON.
    pub fn name(self) -> &'static str {
        match self {
            CaseKind::Http => "http",
            CaseKind::Packet => "packet",
            CaseKind::Message => "message",
        }
    }

    /// The kind for a record kind byte.
    pub fn from_byte(b: u8) -> Option<CaseKind> {
        CaseKind::ALL.into_iter().find(|k| *k as u8 == b)
    }

    /// The kind for a name.
    pub fn from_name(name: &str) -> Option<CaseKind> {
        CaseKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The recorded input (and output, where known) of a case.
// Boxing the HTTP variant would cost an allocation per decoded case for no gain: cases live in
// vectors and iterators, not in tight enums.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseData {
    /// An HTTP exchange: a request and, where seen, its response.
    Http(HttpExchange),
    /// A packet from a capture.
    Packet(Packet),
    /// An opaque message with a content type.
    Message(Message),
}

impl CaseData {
    /// This data's kind.
    pub fn kind(&self) -> CaseKind {
        match self {
            CaseData::Http(_) => CaseKind::Http,
            CaseData::Packet(_) => CaseKind::Packet,
            CaseData::Message(_) => CaseKind::Message,
        }
    }
}

/// Where a case was recorded from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Not known.
    #[default]
    Unknown,
    /// A capture or other file, at a byte offset; `packet` is the 1-based packet number.
    File {
        /// The file as it was named to the recorder.
        path: String,
        /// Byte offset of the first record that contributed to the case.
        offset: u64,
        /// 1-based number of that packet in the file, where the file is a capture.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        packet: Option<u64>,
    },
    /// A recording proxy: connection number and the request's sequence on it.
    Proxy {
        /// Connection number, counted from 1 per proxy run.
        connection: u64,
        /// Request number on that connection, counted from 1.
        sequence: u64,
    },
    /// A JSONL import: file and 1-based line.
    Import {
        /// The JSONL file.
        path: String,
        /// 1-based line number.
        line: u64,
    },
    /// Made by a generator (sample corpora, tests).
    Generated {
        /// What made it.
        by: String,
    },
}

/// What a recorder knew was wrong with a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The TCP stream had a hole inside this case; the bytes are missing, not invented.
    TcpGap {
        /// How many bytes the capture lost.
        bytes_missing: u64,
    },
    /// A retransmission carried different bytes than the first copy (the first copy was kept).
    RetransmitConflict,
    /// The request body was cut at the recorder's size cap.
    RequestTruncated {
        /// Bytes kept.
        kept: u64,
    },
    /// The response body was cut at the recorder's size cap, or the stream ended early.
    ResponseTruncated {
        /// Bytes kept.
        kept: u64,
    },
    /// A request whose response was never seen.
    NoResponse,
    /// A response whose request was never seen.
    NoRequest,
    /// Secrets were replaced by placeholders before the case reached disk; `fields` says
    /// where (`request header authorization`, `response body`, ...). A redacted body is
    /// stored decoded (its content and transfer coding removed).
    Redacted {
        /// Where values were replaced.
        fields: Vec<String>,
    },
    /// The packet was cut by the capture's snap length.
    Snapped {
        /// The packet's length on the wire.
        original_len: u32,
    },
    /// The recorder had to guess or skip part of the input; the reason says what.
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

/// An HTTP request and, where seen, its response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpExchange {
    /// The request.
    pub request: HttpRequest,
    /// Interim (1xx) responses, such as `100 Continue`, in the order seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interim: Vec<HttpResponse>,
    /// The final response, if one was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
}

/// A header as it was on the wire: name in its original spelling, value as bytes.
/// Serialised as a two-element array `[name, value]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header(pub Name, pub Blob);

/// A header name or a short field (method, version, reason): stored inline up to 24 bytes,
/// so the common ones cost no allocation of their own. Serialised as a string.
pub type Name = compact_str::CompactString;

impl Header {
    /// A header from a name and a value.
    pub fn new(name: impl Into<Name>, value: impl Into<Blob>) -> Header {
        Header(name.into(), value.into())
    }
}

/// An HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// The method, as sent (`GET`, `POST`, ...).
    pub method: Name,
    /// The request target, as sent (`/v1/chat/completions?x=1`).
    pub target: String,
    /// The protocol version, as sent (`HTTP/1.1`).
    pub version: Name,
    /// Headers in wire order.
    #[serde(default)]
    pub headers: Vec<Header>,
    /// The body as sent (still chunked or compressed if it was on the wire).
    #[serde(default)]
    pub body: Blob,
    /// Trailer fields after a chunked body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<Header>,
}

impl Default for HttpRequest {
    fn default() -> Self {
        HttpRequest {
            method: "GET".into(),
            target: "/".into(),
            version: "HTTP/1.1".into(),
            headers: Vec::new(),
            body: Blob::default(),
            trailers: Vec::new(),
        }
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpResponse {
    /// The protocol version, as sent.
    pub version: Name,
    /// The status code.
    pub status: u16,
    /// The reason phrase, as sent.
    #[serde(default)]
    pub reason: Name,
    /// Headers in wire order.
    #[serde(default)]
    pub headers: Vec<Header>,
    /// The body as sent.
    #[serde(default)]
    pub body: Blob,
    /// Trailer fields after a chunked body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<Header>,
    /// For a streamed response: when each part of `body` arrived. Chunk `i` is
    /// `body[chunks[i].at .. chunks[i+1].at]` (the last runs to the end of the body).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkMark>,
}

impl Default for HttpResponse {
    fn default() -> Self {
        HttpResponse {
            version: "HTTP/1.1".into(),
            status: 200,
            reason: "OK".into(),
            headers: Vec::new(),
            body: Blob::default(),
            trailers: Vec::new(),
            chunks: Vec::new(),
        }
    }
}

impl HttpResponse {
    /// The streamed chunks as `(time offset in ns, bytes)`, or the whole body as one chunk at
    /// offset 0 when no timing was recorded. Marks that point past the body or backwards are
    /// clamped, so this never panics on a hand-edited case.
    pub fn chunk_slices(&self) -> Vec<(u64, &[u8])> {
        let body = self.body.as_bytes();
        if self.chunks.is_empty() {
            return vec![(0, body)];
        }
        let mut out = Vec::with_capacity(self.chunks.len());
        for (i, mark) in self.chunks.iter().enumerate() {
            let start = (mark.at as usize).min(body.len());
            let end = self
                .chunks
                .get(i + 1)
                .map_or(body.len(), |next| (next.at as usize).min(body.len()))
                .max(start);
            out.push((mark.offset_ns, &body[start..end]));
        }
        out
    }
}

/// When a part of a streamed body arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkMark {
    /// Byte offset in the body where this chunk starts.
    pub at: u64,
    /// Nanoseconds after the request was sent (the case's `time_ns`) that the chunk arrived.
    pub offset_ns: u64,
}

/// A packet from a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packet {
    /// The link type (a pcap `LINKTYPE_*` value: 1 Ethernet, 101 raw IP, 113 Linux SLL, ...).
    pub link_type: u16,
    /// The captured bytes, from the link-layer header on.
    pub data: Blob,
    /// The packet's length on the wire, if the capture cut it (snap length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_len: Option<u32>,
    /// The capture interface (pcapng interface id), where there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
    /// The decoded flow, where the packet is TCP or UDP over IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowKey>,
}

/// A transport flow: protocol and both endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// Source address.
    pub src: IpAddr,
    /// Source port (0 where the protocol has none).
    pub src_port: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dst_port: u16,
}

/// An opaque message: input bytes with a content type, and the recorded output if known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The input's media type (`application/json`, ...).
    pub content_type: String,
    /// The input bytes.
    pub input: Blob,
    /// What production answered, where recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RecordedOutput>,
}

/// A recorded output of a message case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedOutput {
    /// The output's media type.
    pub content_type: String,
    /// The output bytes.
    pub data: Blob,
}

impl Case {
    /// A case for this data, with its id computed and no metadata.
    pub fn new(data: CaseData) -> Case {
        let id = compute_id(&data);
        Case {
            id,
            source: Source::Unknown,
            time_ns: None,
            tags: BTreeMap::new(),
            flags: Vec::new(),
            repeat: 0,
            data,
        }
    }

    /// Marks this case as the `repeat`-th recording of the same input (0: the first) and
    /// derives its id from the input's id and that number, without hashing the input again.
    pub fn with_repeat(mut self, repeat: u32) -> Case {
        let base = if self.repeat == 0 { self.id } else { compute_id(&self.data) };
        self.id = repeat_id(base, repeat);
        self.repeat = repeat;
        self
    }

    /// Which recording of the same input this is (0: the first; see [`Case::with_repeat`]).
    pub fn repeat(&self) -> u32 {
        self.repeat
    }

    /// The id of the input's `repeat`-th recording, from the id of its first: `base` itself for
    /// 0, else `BLAKE3("replay.case.repeat.v1\0" || base || u32 LE repeat)[0..16]`.
    pub fn repeat_of(base: CaseId, repeat: u32) -> CaseId {
        repeat_id(base, repeat)
    }

    /// Sets where the case came from (builder style).
    pub fn with_source(mut self, source: Source) -> Case {
        self.source = source;
        self
    }

    /// Sets the capture time in nanoseconds since the Unix epoch (builder style).
    pub fn with_time_ns(mut self, time_ns: i64) -> Case {
        self.time_ns = Some(time_ns);
        self
    }

    /// Adds a tag (builder style).
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Case {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Adds a flag unless an equal one is present (builder style).
    pub fn with_flag(mut self, flag: Flag) -> Case {
        self.add_flag(flag);
        self
    }

    /// Adds a flag unless an equal one is present.
    pub fn add_flag(&mut self, flag: Flag) {
        if !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
    }

    /// The id stored with the case.
    pub fn id(&self) -> CaseId {
        self.id
    }

    /// The recorded input and output.
    pub fn data(&self) -> &CaseData {
        &self.data
    }

    /// The kind of case.
    pub fn kind(&self) -> CaseKind {
        self.data.kind()
    }

    /// Replaces the data and recomputes the id.
    pub fn set_data(&mut self, data: CaseData) {
        self.id = repeat_id(compute_id(&data), self.repeat);
        self.data = data;
    }

    /// Edits the data in place; `edit` returns whether it changed anything, and only then is
    /// the id recomputed (so an edit that finds nothing to do costs no copy and no hash).
    pub fn edit_data(&mut self, edit: impl FnOnce(&mut CaseData) -> bool) -> bool {
        let changed = edit(&mut self.data);
        if changed {
            self.id = repeat_id(compute_id(&self.data), self.repeat);
        }
        changed
    }

    /// Takes the data out of the case.
    pub fn into_data(self) -> CaseData {
        self.data
    }

    /// The id that the data hashes to. Equal to [`Case::id`] unless the stored id is damaged
    /// or the case was read from JSON without one.
    pub fn compute_id(&self) -> CaseId {
        repeat_id(compute_id(&self.data), self.repeat)
    }

    /// Sets the id to the one the data hashes to (after reading JSON, where it may be absent).
    pub fn refresh_id(&mut self) {
        self.id = self.compute_id();
    }
}

/// The id of recording `repeat` of an input whose first recording has id `base`.
fn repeat_id(base: CaseId, repeat: u32) -> CaseId {
    if repeat == 0 {
        return base;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"replay.case.repeat.v1\0");
    h.update(&base.0);
    h.update(&repeat.to_le_bytes());
    let mut out = [0u8; ID_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..ID_LEN]);
    CaseId(out)
}

/// Domain separation for case ids; bump the suffix if the canonical encoding changes.
const ID_DOMAIN: &[u8] = b"replay.case.v1\0";

/// The hasher of case ids, fed through a buffer: the canonical encoding is many short pieces
/// (8-byte lengths, methods, header names), and BLAKE3 takes a few long updates for far less
/// than many short ones. Pieces of [`Feed::PASS`] bytes or more (bodies) go straight in.
struct Feed<'a> {
    hasher: blake3::Hasher,
    buf: &'a mut Vec<u8>,
}

impl Feed<'_> {
    const PASS: usize = 4096;

    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() >= Self::PASS {
            self.hasher.update(self.buf);
            self.buf.clear();
            self.hasher.update(bytes);
        } else {
            if self.buf.len() + bytes.len() > 4 * Self::PASS {
                self.hasher.update(self.buf);
                self.buf.clear();
            }
            self.buf.extend_from_slice(bytes);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.put(&(bytes.len() as u64).to_le_bytes());
        self.put(bytes);
    }

    fn headers(&mut self, list: &[Header]) {
        self.put(&(list.len() as u64).to_le_bytes());
        for Header(name, value) in list {
            self.field(name.as_bytes());
            self.field(value.as_bytes());
        }
    }

    fn finish(self) -> blake3::Hash {
        let Feed { mut hasher, buf } = self;
        hasher.update(buf);
        buf.clear();
        hasher.finalize()
    }
}

thread_local! {
    static FEED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The canonical input encoding described in `docs/corpus-format.md`, hashed with BLAKE3.
fn compute_id(data: &CaseData) -> CaseId {
    let hash = FEED.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        let mut h = Feed { hasher: blake3::Hasher::new(), buf: &mut buf };
        h.put(ID_DOMAIN);
        h.put(&[data.kind() as u8]);
        match data {
            CaseData::Http(x) => {
                let r = &x.request;
                h.field(r.method.as_bytes());
                h.field(r.target.as_bytes());
                h.field(r.version.as_bytes());
                h.headers(&r.headers);
                h.field(r.body.as_bytes());
                h.headers(&r.trailers);
            }
            CaseData::Packet(p) => {
                h.put(&p.link_type.to_le_bytes());
                h.field(p.data.as_bytes());
            }
            CaseData::Message(m) => {
                h.field(m.content_type.as_bytes());
                h.field(m.input.as_bytes());
            }
        }
        h.finish()
    });
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&hash.as_bytes()[..ID_LEN]);
    CaseId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(input: &str) -> CaseData {
        CaseData::Message(Message {
            content_type: "application/json".into(),
            input: input.into(),
            output: None,
        })
    }

    #[test]
    fn id_depends_on_input_only() {
        let a = Case::new(msg("{}")).with_tag("env", "prod").with_time_ns(5);
        let b = Case::new(msg("{}")).with_source(Source::Generated { by: "t".into() });
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), Case::new(msg("{ }")).id());
    }

    #[test]
    fn id_fields_do_not_run_together() {
        let mk = |method: &str, target: &str| {
            Case::new(CaseData::Http(HttpExchange {
                request: HttpRequest { method: method.into(), target: target.into(), ..Default::default() },
                ..Default::default()
            }))
        };
        assert_ne!(mk("GET", "/a").id(), mk("GET/", "a").id());
    }

    #[test]
    fn id_is_pinned() {
        // The id is part of the on-disk format: changing it orphans every baseline.
        let id = Case::new(msg("{}")).id();
        assert_eq!(id.to_hex(), include_str!("../tests/pinned_id.txt").trim());
    }

    /// The canonical encoding hashed piece by piece, as the format document states it: what
    /// the buffered [`Feed`] must hash to, whatever the sizes of the pieces.
    fn id_piece_by_piece(data: &CaseData) -> CaseId {
        let mut h = blake3::Hasher::new();
        h.update(ID_DOMAIN);
        h.update(&[data.kind() as u8]);
        let field = |h: &mut blake3::Hasher, bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        let headers = |h: &mut blake3::Hasher, list: &[Header]| {
            h.update(&(list.len() as u64).to_le_bytes());
            for Header(name, value) in list {
                field(h, name.as_bytes());
                field(h, value.as_bytes());
            }
        };
        match data {
            CaseData::Http(x) => {
                let r = &x.request;
                field(&mut h, r.method.as_bytes());
                field(&mut h, r.target.as_bytes());
                field(&mut h, r.version.as_bytes());
                headers(&mut h, &r.headers);
                field(&mut h, r.body.as_bytes());
                headers(&mut h, &r.trailers);
            }
            CaseData::Packet(p) => {
                h.update(&p.link_type.to_le_bytes());
                field(&mut h, p.data.as_bytes());
            }
            CaseData::Message(m) => {
                field(&mut h, m.content_type.as_bytes());
                field(&mut h, m.input.as_bytes());
            }
        }
        CaseId(h.finalize().as_bytes()[..ID_LEN].try_into().unwrap())
    }

    proptest::proptest! {
        /// Buffering the small pieces changes no id: headers many or none, short and long
        /// values, bodies either side of the pass-through size and past the buffer's flush.
        #[test]
        fn buffered_ids_equal_the_piece_by_piece_hash(
            headers in proptest::collection::vec((0usize..40, 0usize..9000), 0..40),
            body in proptest::sample::select(vec![0usize, 1, 100, 4095, 4096, 4097, 16383, 16384, 70000]),
            trailers in 0usize..3,
            packet in 0usize..20000,
        ) {
            let blob = |n: usize, seed: usize| Blob((0..n).map(|i| (i * 31 + seed) as u8).collect());
            let x = HttpExchange {
                request: HttpRequest {
                    method: "POST".into(),
                    target: "/v1/chat/completions".into(),
                    headers: headers
                        .iter()
                        .enumerate()
                        .map(|(i, &(n, v))| Header::new("h".repeat(n + 1), blob(v, i)))
                        .collect(),
                    body: blob(body, 7),
                    trailers: (0..trailers).map(|i| Header::new(format!("t{i}"), "v")).collect(),
                    ..HttpRequest::default()
                },
                ..HttpExchange::default()
            };
            let p = CaseData::Packet(Packet {
                link_type: 1,
                data: blob(packet, 3),
                original_len: None,
                interface: None,
                flow: None,
            });
            for data in [CaseData::Http(x), p, msg(&"m".repeat(packet))] {
                proptest::prop_assert_eq!(Case::new(data.clone()).id(), id_piece_by_piece(&data));
            }
        }
    }

    #[test]
    fn a_repeat_has_its_own_stable_id_kept_through_edits_and_encodings() {
        let first = Case::new(msg("{}"));
        assert_eq!(first.clone().with_repeat(0).id(), first.id());
        let second = first.clone().with_repeat(1);
        let third = first.clone().with_repeat(2);
        assert_ne!(second.id(), first.id());
        assert_ne!(second.id(), third.id());
        assert_eq!(second.id(), Case::repeat_of(first.id(), 1));
        assert_eq!(second.compute_id(), second.id());
        // Re-marking starts again from the input, not from the derived id.
        assert_eq!(third.clone().with_repeat(1).id(), second.id());
        assert_eq!(third.clone().with_repeat(0).id(), first.id());
        // Editing the input keeps the repeat number.
        let mut edited = second.clone();
        edited.set_data(msg("[]"));
        assert_eq!(edited.repeat(), 1);
        assert_eq!(edited.id(), Case::repeat_of(Case::new(msg("[]")).id(), 1));
        // Both encodings carry it; the first recording's encoding does not mention it.
        let mp = rmp_serde::to_vec_named(&second).unwrap();
        let back: Case = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!((back.repeat(), back.id(), back.compute_id()), (1, second.id(), second.id()));
        let json = serde_json::to_string(&second).unwrap();
        assert!(json.contains("\"repeat\":1"), "{json}");
        assert!(!serde_json::to_string(&first).unwrap().contains("repeat"));
    }

    #[test]
    fn chunk_slices_clamp() {
        let r = HttpResponse {
            body: "abcdef".into(),
            chunks: vec![
                ChunkMark { at: 0, offset_ns: 1 },
                ChunkMark { at: 4, offset_ns: 2 },
                ChunkMark { at: 99, offset_ns: 3 },
            ],
            ..Default::default()
        };
        let got: Vec<_> = r.chunk_slices();
        assert_eq!(got, vec![(1, &b"abcd"[..]), (2, &b"ef"[..]), (3, &b""[..])]);
    }
}
