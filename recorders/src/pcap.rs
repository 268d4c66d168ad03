//! The pcap recorder: capture files -> packets -> TCP streams -> HTTP exchanges -> cases.
//!
//! Every packet ends in exactly one place of the accounting ([`Disposition`]), so the summary
//! adds up: part of an HTTP connection, a packet case, a duplicate of a packet case, or not
//! kept (because `--keep` left packets out).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::io::Read;
use std::net::IpAddr;

use corpora::{Blob, CaseData, CorpusError, CorpusWriter, Flag, FlowKey, Packet};
use serde::Serialize;

use crate::capture::{self, CaptureError, CaptureEvent, RawPacket};
use crate::decode::{self, Decoded};
use crate::defrag::{Defrag, DefragLimits, DefragStats};
use crate::http::{Budgets, HttpConn, HttpEvent, HttpLimits, Mode};
use crate::out::{CaseOut, HttpTags, Job};
use crate::tcp::{End, Limits, Origin, Reassembler, Side, StreamSink, TcpStats};

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// HTTP exchanges.
    pub http: bool,
    /// Packet cases (non-HTTP TCP, UDP, everything else).
    pub packets: bool,
}

impl Default for Keep {
    fn default() -> Self {
        Keep { http: true, packets: true }
    }
}

/// Recorder settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Build, encode and append cases on the calling thread instead of a second one.
    pub one_thread: bool,
    /// What to keep.
    pub keep: Keep,
    /// TCP reassembly bounds.
    pub tcp: Limits,
    /// HTTP bounds.
    pub http: HttpLimits,
    /// IPv4 fragment reassembly bounds.
    pub defrag: DefragLimits,
}

/// Where each packet went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Disposition {
    /// Carried an HTTP connection (its bytes are in exchanges).
    pub http: u64,
    /// Became a packet case.
    pub packet_cases: u64,
    /// Same bytes as a packet case already in the corpus.
    pub duplicate_packets: u64,
    /// Left out by `--keep`.
    pub not_kept: u64,
}

/// The accounting of one recording run, stored in the corpus manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Always `pcap`.
    pub recorder: &'static str,
    /// The files read, as named.
    pub files: Vec<String>,
    /// Packets read.
    pub packets: u64,
    /// Captured bytes of those packets.
    pub bytes: u64,
    /// First capture time (ns since the epoch).
    pub first_ns: Option<i64>,
    /// Last capture time.
    pub last_ns: Option<i64>,
    /// Where each packet went (adds up to `packets`).
    pub disposition: Disposition,
    /// HTTP exchanges written (new cases).
    pub exchanges: u64,
    /// Exchanges whose id was already in the corpus.
    pub duplicate_exchanges: u64,
    /// Exchanges with a value redacted (a credential header, a secret-shaped string) before
    /// they reached disk.
    pub redacted_exchanges: u64,
    /// Exchanges with a hole in them.
    pub exchanges_with_gaps: u64,
    /// Requests whose response never came (kept, flagged).
    pub requests_without_response: u64,
    /// Responses with no request to pair with (counted, not kept: there is no input to replay).
    pub responses_without_request: u64,
    /// TCP connections by what they carried.
    pub connections: BTreeMap<&'static str, u64>,
    /// UDP datagrams.
    pub udp: u64,
    /// TCP reassembly counters.
    pub tcp: TcpStats,
    /// IPv4 fragment reassembly counters (fragments are also kept as packet cases).
    pub ipv4_fragments: DefragStats,
    /// HTTP bytes skipped: while looking for a message start after a hole or a malformed
    /// head, and in heads past a bound or cut off by their connection's end.
    pub http_bytes_skipped: u64,
    /// Message heads that did not parse.
    pub http_malformed_heads: u64,
    /// Body bytes not kept because a size or memory bound was reached (messages flagged).
    pub http_body_bytes_dropped: u64,
    /// Message heads skipped because the unfinished heads of all connections together reached
    /// their memory bound (their bytes are in `http_bytes_skipped`).
    pub http_heads_dropped: u64,
    /// Connections that ended (or the capture did) in the middle of a message head (its bytes
    /// are in `http_bytes_skipped`).
    pub http_heads_incomplete: u64,
    /// Packets that did not decode, by reason (kept as packet cases, flagged `malformed`).
    pub malformed: BTreeMap<&'static str, u64>,
    /// Packets that are simply not TCP/UDP over IP, by kind.
    pub other: BTreeMap<&'static str, u64>,
    /// Problems in the capture files that reading survived, by reason.
    pub capture_warnings: BTreeMap<&'static str, u64>,
    /// The first [`WARNINGS_KEPT`] of them in full: file, byte offset, packet number, what.
    pub warnings: Vec<String>,
    /// Problems that stopped reading a file (every packet before them was kept).
    pub errors: Vec<String>,
}

/// How many warnings are kept in full (the rest are counted by reason): enough to find each
/// kind of damage, bounded whatever the capture.
pub const WARNINGS_KEPT: usize = 20;

/// Packets of a TCP connection not yet known to be HTTP or not.
struct Held {
    packets: Vec<OwnedPacket>,
}

struct OwnedPacket {
    number: u64,
    offset: u64,
    ts_ns: i64,
    link_type: u16,
    data: Vec<u8>,
    orig_len: u32,
    interface: Option<u32>,
    flow: Option<FlowKey>,
    flag: Option<Flag>,
}

/// How many packets a connection may hold before its first payload decides what it is.
const HOLD_MAX: usize = 32;
/// How many bytes of such packets all connections together may hold.
const HOLD_BYTES: usize = 4 << 20;

struct Conn {
    /// Made at the first payload byte: a connection that never carries any (a port scan's
    /// SYNs) costs only this small struct.
    http: Option<Box<HttpConn>>,
    /// The capture did not see its SYN.
    mid_stream: bool,
    server: (IpAddr, u16),
    held: Held,
}

impl Conn {
    fn mode(&self) -> Mode {
        self.http.as_ref().map_or(Mode::Detecting, |h| h.mode())
    }
}

#[derive(Default)]
struct Sink {
    conns: HashMap<u64, Conn>,
    events: Vec<(u64, HttpEvent)>,
    closed: Vec<(u64, Conn)>,
    limits: HttpLimits,
    budgets: Budgets,
}

impl StreamSink for Sink {
    fn open(&mut self, conn: u64, _a: (IpAddr, u16), b: (IpAddr, u16), syn_seen: bool) {
        self.conns.insert(
            conn,
            Conn { http: None, mid_stream: !syn_seen, server: b, held: Held { packets: Vec::new() } },
        );
    }

    fn data(&mut self, conn: u64, side: Side, bytes: &[u8], origin: Origin) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let mut out = Vec::new();
            let (limits, budgets) = (self.limits, &self.budgets);
            let mid_stream = c.mid_stream;
            let http = c.http.get_or_insert_with(|| {
                let h = HttpConn::new(limits, budgets.clone());
                Box::new(if mid_stream { h.seen_mid_stream() } else { h })
            });
            http.data(side, bytes, origin, &mut out);
            self.events.extend(out.into_iter().map(|e| (conn, e)));
        }
    }

    fn gap(&mut self, conn: u64, side: Side, missing: u64, origin: Origin) {
        if let Some(http) = self.conns.get_mut(&conn).and_then(|c| c.http.as_mut()) {
            let mut out = Vec::new();
            http.gap(side, missing, origin, &mut out);
            self.events.extend(out.into_iter().map(|e| (conn, e)));
        }
    }

    fn conflict(&mut self, conn: u64, side: Side) {
        if let Some(http) = self.conns.get_mut(&conn).and_then(|c| c.http.as_mut()) {
            http.conflict(side);
        }
    }

    fn close(&mut self, conn: u64, _end: End, _origin: Origin) {
        if let Some(mut c) = self.conns.remove(&conn) {
            let mut out = Vec::new();
            if let Some(http) = c.http.as_mut() {
                http.close(&mut out);
            }
            self.events.extend(out.into_iter().map(|e| (conn, e)));
            self.closed.push((conn, c));
        }
    }
}

/// Records capture files into a corpus.
pub struct Recorder {
    out: CaseOut,
    opts: Options,
    reasm: Reassembler,
    defrag: Defrag,
    sink: Sink,
    /// The accounting so far.
    pub stats: Stats,
    file: std::sync::Arc<str>,
    /// What recently closed connections were, for their late packets.
    closed_modes: HashMap<u64, Mode>,
    /// Bytes of packets held by connections not yet known to be HTTP or not.
    held_bytes: usize,
}

impl Recorder {
    /// A recorder writing into `writer`, which it hands back from [`Recorder::finish`]. Cases
    /// are built, encoded and appended on a second thread. Nothing is redacted (see
    /// [`Recorder::redacting`]).
    pub fn new(writer: CorpusWriter, opts: Options) -> Recorder {
        Recorder::redacting(writer, opts, None)
    }

    /// Like [`Recorder::new`], with HTTP exchanges redacted by `redactor` before they are
    /// written (on the writer thread).
    pub fn redacting(
        writer: CorpusWriter,
        opts: Options,
        redactor: Option<std::sync::Arc<crate::redact::Redactor>>,
    ) -> Recorder {
        Recorder {
            out: if opts.one_thread {
                CaseOut::inline(writer, redactor)
            } else {
                CaseOut::start(writer, redactor)
            },
            opts,
            reasm: Reassembler::new(opts.tcp),
            defrag: Defrag::new(opts.defrag),
            sink: Sink { limits: opts.http, ..Sink::default() },
            stats: Stats { recorder: "pcap", ..Stats::default() },
            file: std::sync::Arc::from(""),
            closed_modes: HashMap::default(),
            held_bytes: 0,
        }
    }

    /// Reads one capture (pcap, pcapng, or either gzip-compressed). A damaged file stops with an
    /// error in the stats naming the offset and packet, after every packet before it was
    /// recorded; only a corpus write error is returned.
    pub fn read(&mut self, src: Box<dyn Read>, name: &str) -> Result<(), CorpusError> {
        self.file = std::sync::Arc::from(name);
        self.stats.files.push(name.to_string());
        let mut reader = match capture::open(src, name) {
            Ok(r) => r,
            Err(e) => {
                self.stats.errors.push(e.to_string());
                return Ok(());
            }
        };
        loop {
            match reader.next() {
                Ok(Some(CaptureEvent::Packet(p))) => self.packet(&p)?,
                Ok(Some(CaptureEvent::Warning(w))) => {
                    *self.stats.capture_warnings.entry(w.reason).or_default() += 1;
                    if self.stats.warnings.len() < WARNINGS_KEPT {
                        self.stats
                            .warnings
                            .push(format!("{name}: offset {}, packet {}: {}", w.offset, w.packet, w.message));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.error(e);
                    break;
                }
            }
        }
        Ok(())
    }

    fn error(&mut self, e: CaptureError) {
        self.stats.errors.push(e.to_string());
    }

    /// An input that could not be read at all (it does not open): an error in the accounting
    /// like any other, and the run goes on with the next input, keeping every case so far.
    pub fn unreadable(&mut self, name: &str, why: &dyn std::fmt::Display) {
        self.stats.files.push(name.to_string());
        self.stats.errors.push(format!("{name}: cannot be read: {why}"));
    }

    /// Starts a source that is not a file (a live interface): names it in the stats and cases.
    pub fn begin_source(&mut self, name: &str) {
        self.file = std::sync::Arc::from(name);
        self.stats.files.push(name.to_string());
    }

    /// Feeds one packet (from a live capture; files go through [`Recorder::read`]).
    pub fn feed(&mut self, p: &RawPacket<'_>) -> Result<(), CorpusError> {
        self.packet(p)
    }

    /// Nothing to feed for now (a live capture waiting for packets): cases queued so far go
    /// to the corpus writer without waiting for a full batch (see [`CaseOut::idle`]).
    pub fn idle(&mut self) -> Result<(), CorpusError> {
        self.out.idle()
    }

    fn packet(&mut self, p: &RawPacket<'_>) -> Result<(), CorpusError> {
        let s = &mut self.stats;
        s.packets += 1;
        s.bytes += p.data.len() as u64;
        s.first_ns = Some(s.first_ns.map_or(p.ts_ns, |f| f.min(p.ts_ns)));
        s.last_ns = Some(s.last_ns.map_or(p.ts_ns, |l| l.max(p.ts_ns)));
        let origin = Origin { ts_ns: p.ts_ns, offset: p.offset, packet: p.number };
        let snapped_flag =
            (p.orig_len as usize > p.data.len()).then_some(Flag::Snapped { original_len: p.orig_len });
        match decode::decode(p.link_type, p.data, p.orig_len) {
            Decoded::Tcp(t) => {
                let conn = self.reasm.segment(&t, origin, &mut self.sink);
                let flow = FlowKey {
                    protocol: 6,
                    src: t.src,
                    src_port: t.src_port,
                    dst: t.dst,
                    dst_port: t.dst_port,
                };
                self.place_tcp(conn, p, flow, snapped_flag)?;
                self.drain_events()?;
                self.drain_closed()?;
            }
            Decoded::Fragment(f) => {
                // The fragment itself is a packet case (a packet processor sees fragments); the
                // datagram, once whole, goes on like any other.
                self.packet_case(owned(p, None, snapped_flag))?;
                if let Some((src, dst, proto, data)) = self.defrag.add(&f, p.ts_ns) {
                    match proto {
                        6 => {
                            if let Some(t) = decode::tcp_in(src.into(), dst.into(), &data) {
                                self.reasm.segment(&t, origin, &mut self.sink);
                                self.drain_events()?;
                                self.drain_closed()?;
                            }
                        }
                        17 => self.stats.udp += 1,
                        _ => {}
                    }
                }
            }
            Decoded::Udp(src, src_port, dst, dst_port) => {
                self.stats.udp += 1;
                let flow = FlowKey { protocol: 17, src, src_port, dst, dst_port };
                self.packet_case(owned(p, Some(flow), snapped_flag))?;
            }
            Decoded::Other(why) => {
                let flag = if why.is_malformed() {
                    *self.stats.malformed.entry(why.name()).or_default() += 1;
                    Some(Flag::Malformed { reason: why.name().to_string() })
                } else {
                    *self.stats.other.entry(why.name()).or_default() += 1;
                    snapped_flag
                };
                self.packet_case(owned(p, None, flag))?;
            }
        }
        Ok(())
    }

    /// Puts a TCP packet where its connection says: held until the connection shows what it
    /// is, counted as HTTP, or a packet case.
    fn place_tcp(
        &mut self,
        conn: u64,
        p: &RawPacket<'_>,
        flow: FlowKey,
        flag: Option<Flag>,
    ) -> Result<(), CorpusError> {
        // Copied only when it is not (yet) known to be HTTP: the common case copies nothing.
        let pkt = || owned(p, Some(flow), flag);
        let mode = match self.sink.conns.get(&conn) {
            Some(c) => c.mode(),
            // Closed by this very packet: its fate is the closed connection's.
            None => match self.sink.closed.iter().find(|(id, _)| *id == conn) {
                Some((_, c)) => c.mode(),
                None => self.closed_modes.get(&conn).copied().unwrap_or(Mode::NotHttp),
            },
        };
        match mode {
            Mode::Http { .. } | Mode::Upgraded => {
                let held = self.take_held(conn);
                self.count_http_packets(1 + held.len() as u64);
            }
            Mode::NotHttp => {
                for h in self.take_held(conn) {
                    self.packet_case(h)?;
                }
                self.packet_case(pkt())?;
            }
            Mode::Detecting => {
                let room = self.held_bytes + p.data.len() <= HOLD_BYTES;
                match self.sink.conns.get_mut(&conn) {
                    Some(c) if c.held.packets.len() < HOLD_MAX && room => {
                        self.held_bytes += p.data.len();
                        // Most such connections hold one packet (a SYN, a scan): room for one,
                        // not the four a first push would make.
                        c.held.packets.reserve_exact(1);
                        c.held.packets.push(pkt());
                    }
                    Some(_) => {
                        // Too long without payload to decide, or too much held overall: these
                        // are packets, not HTTP.
                        for h in self.take_held(conn) {
                            self.packet_case(h)?;
                        }
                        self.packet_case(pkt())?;
                    }
                    None => self.packet_case(pkt())?,
                }
            }
        }
        Ok(())
    }

    /// Packets whose bytes went into HTTP exchanges: kept, unless `--keep` leaves HTTP out.
    fn count_http_packets(&mut self, n: u64) {
        if self.opts.keep.http {
            self.stats.disposition.http += n;
        } else {
            self.stats.disposition.not_kept += n;
        }
    }

    /// Takes a connection's held packets out of the bound.
    fn take_held(&mut self, conn: u64) -> Vec<OwnedPacket> {
        let held =
            self.sink.conns.get_mut(&conn).map(|c| std::mem::take(&mut c.held.packets)).unwrap_or_default();
        self.held_bytes -= held.iter().map(|h| h.data.len()).sum::<usize>();
        held
    }

    fn drain_closed(&mut self) -> Result<(), CorpusError> {
        for (id, c) in std::mem::take(&mut self.sink.closed) {
            if self.closed_modes.len() >= 1 << 16 {
                let newest = id;
                self.closed_modes.retain(|k, _| newest.saturating_sub(*k) < 1 << 15);
            }
            self.closed_modes.insert(id, c.mode());
            let name = match c.mode() {
                Mode::Http { .. } => "http",
                Mode::Upgraded => "http_upgraded",
                Mode::NotHttp => "not_http",
                Mode::Detecting => "no_payload",
            };
            *self.stats.connections.entry(name).or_default() += 1;
            if let Some(h) = &c.http {
                self.stats.http_bytes_skipped += h.skipped;
                self.stats.http_malformed_heads += h.malformed;
                self.stats.http_body_bytes_dropped += h.body_bytes_dropped;
                self.stats.http_heads_dropped += h.heads_dropped;
                self.stats.http_heads_incomplete += h.heads_incomplete;
            }
            self.held_bytes -= c.held.packets.iter().map(|h| h.data.len()).sum::<usize>();
            match c.mode() {
                Mode::Http { .. } | Mode::Upgraded => self.count_http_packets(c.held.packets.len() as u64),
                Mode::NotHttp | Mode::Detecting => {
                    for h in c.held.packets {
                        self.packet_case(h)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn drain_events(&mut self) -> Result<(), CorpusError> {
        for (conn, ev) in std::mem::take(&mut self.sink.events) {
            match ev {
                HttpEvent::ResponseWithoutRequest => self.stats.responses_without_request += 1,
                HttpEvent::Exchange(x) => {
                    let x = *x;
                    if x.flags.contains(&Flag::NoResponse) {
                        self.stats.requests_without_response += 1;
                    }
                    if x.flags.iter().any(|f| matches!(f, Flag::TcpGap { .. })) {
                        self.stats.exchanges_with_gaps += 1;
                    }
                    if !self.opts.keep.http {
                        continue;
                    }
                    let server = self.sink.conns.get(&conn).map(|c| c.server).or_else(|| {
                        self.sink.closed.iter().find(|(id, _)| *id == conn).map(|(_, c)| c.server)
                    });
                    self.out.put(Job {
                        data: CaseData::Http(x.exchange),
                        file: self.file.clone(),
                        offset: x.origin.offset,
                        packet: x.origin.packet,
                        time_ns: x.origin.ts_ns,
                        http: Some(HttpTags {
                            connection: conn,
                            sequence: x.sequence,
                            server: server.map(|(ip, port)| std::net::SocketAddr::new(ip, port)),
                        }),
                        flags: x.flags,
                    })?;
                }
            }
        }
        Ok(())
    }

    fn packet_case(&mut self, p: OwnedPacket) -> Result<(), CorpusError> {
        if !self.opts.keep.packets {
            self.stats.disposition.not_kept += 1;
            return Ok(());
        }
        let snapped = (p.orig_len as usize > p.data.len()).then_some(p.orig_len);
        self.out.put(Job {
            data: CaseData::Packet(Packet {
                link_type: p.link_type,
                data: Blob(p.data),
                original_len: snapped,
                interface: p.interface,
                flow: p.flow,
            }),
            file: self.file.clone(),
            offset: p.offset,
            packet: p.number,
            time_ns: p.ts_ns,
            http: None,
            flags: p.flag.into_iter().collect(),
        })
    }

    /// Ends the run: flushes every open connection (requests still waiting become cases flagged
    /// `no_response`) and returns the accounting.
    pub fn finish(mut self) -> Result<(CorpusWriter, Stats), CorpusError> {
        self.reasm.finish_all(&mut self.sink);
        self.defrag.finish();
        self.stats.ipv4_fragments = self.defrag.stats.clone();
        self.drain_events()?;
        self.drain_closed()?;
        self.stats.tcp = self.reasm.stats.clone();
        let (writer, n) = self.out.finish()?;
        self.stats.exchanges = n.http_new;
        self.stats.duplicate_exchanges = n.http_dup;
        self.stats.redacted_exchanges = n.http_redacted;
        self.stats.disposition.packet_cases = n.packet_new;
        self.stats.disposition.duplicate_packets = n.packet_dup;
        Ok((writer, self.stats))
    }
}

fn owned(p: &RawPacket<'_>, flow: Option<FlowKey>, flag: Option<Flag>) -> OwnedPacket {
    OwnedPacket {
        number: p.number,
        offset: p.offset,
        ts_ns: p.ts_ns,
        link_type: p.link_type,
        data: p.data.to_vec(),
        orig_len: p.orig_len,
        interface: p.interface,
        flow,
        flag,
    }
}
