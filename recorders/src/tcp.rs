//! TCP reassembly per flow and direction.
//!
//! Sequence numbers are unwrapped into 64-bit stream offsets, so wrap-around is invisible.
//! Segments are delivered in order; out-of-order ones wait in a buffer bounded per flow and
//! overall. Overlaps keep the first data seen; a retransmission whose bytes differ from what
//! was delivered is reported. A hole is never papered over: when the buffer bound is reached,
//! the flow ends, or the capture ends with bytes missing, the consumer is told how many bytes
//! are missing and the stream goes on after them.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;

use crate::decode::Tcp;

/// Which end of a connection: `A` sent the first packet seen (the SYN when there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The initiator (as far as the capture shows).
    A,
    /// The other end.
    B,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// Where the bytes came from: the packet that carried them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// Capture time of the packet.
    pub ts_ns: i64,
    /// Byte offset of the packet record in the file.
    pub offset: u64,
    /// 1-based packet number.
    pub packet: u64,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides sent FIN (and every byte before it arrived).
    Fin,
    /// A RST.
    Rst,
    /// No packet for the idle timeout (capture time).
    Idle,
    /// The capture ended.
    CaptureEnd,
    /// A new SYN reused the flow's addresses and ports.
    Reused,
    /// Closed early, among the least recently active, to keep the open flows within
    /// [`Limits::max_flows`].
    Evicted,
}

/// The consumer of reassembled streams.
pub trait StreamSink {
    /// A new connection `conn` between `a` (side A) and `b`.
    fn open(&mut self, conn: u64, a: (IpAddr, u16), b: (IpAddr, u16), syn_seen: bool);
    /// In-order bytes of one side.
    fn data(&mut self, conn: u64, side: Side, bytes: &[u8], origin: Origin);
    /// `missing` bytes of one side were never captured; the stream goes on after them.
    fn gap(&mut self, conn: u64, side: Side, missing: u64, origin: Origin);
    /// A retransmission on `side` carried bytes that differ from the first copy (kept).
    fn conflict(&mut self, conn: u64, side: Side);
    /// The connection is over; no more calls for `conn`.
    fn close(&mut self, conn: u64, end: End, origin: Origin);
}

/// Memory and time bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Out-of-order bytes one direction may hold before the hole is declared a gap.
    pub per_flow: usize,
    /// Out-of-order bytes all flows together may hold.
    pub global: usize,
    /// A flow with no packet for this long (capture time) is flushed and closed.
    pub idle_ns: i64,
    /// Recently delivered bytes kept per direction to compare retransmissions against.
    pub recent: usize,
    /// Bytes all those windows may take together; directions past it are not checked for
    /// conflicting retransmissions (counted in `TcpStats::unchecked_directions`).
    pub recent_total: usize,
    /// Flows open at once. A new flow past it first closes the least recently active eighth,
    /// as the idle timeout would (counted in `TcpStats::evicted`), so that a port scan or a
    /// flood of one-packet connections cannot grow the flow table without bound.
    pub max_flows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_flow: 4 << 20,
            global: 16 << 20,
            idle_ns: 120_000_000_000,
            recent: 4 << 10,
            recent_total: 16 << 20,
            max_flows: 8 << 10,
        }
    }
}

/// Reassembly counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpStats {
    /// Connections seen.
    pub connections: u64,
    /// Connections whose start (SYN) was not in the capture.
    pub without_syn: u64,
    /// Segments that carried only bytes already delivered.
    pub retransmissions: u64,
    /// Retransmissions whose bytes differed from the first copy.
    pub retransmission_conflicts: u64,
    /// Holes in streams.
    pub gaps: u64,
    /// Bytes missing in those holes.
    pub bytes_missing: u64,
    /// Holes declared early because a buffer bound was reached.
    pub forced_gaps: u64,
    /// Connections ended by RST.
    pub resets: u64,
    /// Connections flushed by the idle timeout.
    pub idle_closed: u64,
    /// Connections closed early to keep the open flows within their bound.
    pub evicted: u64,
    /// Segments after a side's FIN (ignored).
    pub after_fin: u64,
    /// Packets of a connection already closed by FIN or RST (late ACKs, repeated FINs).
    pub after_close: u64,
    /// Largest out-of-order buffer held at once, all flows together.
    pub peak_buffered: u64,
    /// Directions whose retransmissions were not compared (the windows' memory bound was reached).
    pub unchecked_directions: u64,
}

#[derive(Default)]
struct Dir {
    started: bool,
    last_seq: u32,
    last_abs: i64,
    next: i64,
    /// Out-of-order segments: start -> (bytes, bytes the snap length cut off after them).
    pending: BTreeMap<i64, (Vec<u8>, u32)>,
    pending_bytes: usize,
    fin_at: Option<i64>,
    done: bool,
    /// The last delivered bytes, as a ring: `recent[(next - k) % len]` is the byte k back.
    recent: Vec<u8>,
    /// How many bytes of `recent` are filled (at most its length).
    recent_fill: usize,
    /// No window could be had for this direction.
    unchecked: bool,
    /// The sequence number of this direction's SYN, if seen.
    syn_seq: Option<u32>,
}

impl Dir {
    /// [`Dir::abs`] without moving the reference point: for acknowledgment numbers, which are
    /// only compared, never trusted to advance the stream.
    fn peek_abs(&self, seq: u32) -> i64 {
        self.last_abs + i64::from(seq.wrapping_sub(self.last_seq) as i32)
    }

    fn abs(&mut self, seq: u32) -> i64 {
        let abs = self.last_abs + i64::from(seq.wrapping_sub(self.last_seq) as i32);
        if abs > self.last_abs {
            self.last_abs = abs;
            self.last_seq = seq;
        }
        abs
    }
}

struct Flow {
    key: Key,
    conn: u64,
    a: (IpAddr, u16),
    dirs: [Dir; 2],
    last_ts: i64,
    last_origin: Origin,
}

type Key = (IpAddr, u16, IpAddr, u16);

fn key(src: (IpAddr, u16), dst: (IpAddr, u16)) -> Key {
    if src <= dst { (src.0, src.1, dst.0, dst.1) } else { (dst.0, dst.1, src.0, src.1) }
}

/// The reassembler: feed it segments, it calls the sink.
pub struct Reassembler {
    /// Boxed: the table's slots stay small, so its spare capacity costs little.
    flows: HashMap<Key, Box<Flow>>,
    limits: Limits,
    buffered: usize,
    /// Bytes of retransmission windows allocated, all flows together.
    windows: usize,
    next_conn: u64,
    last_sweep: i64,
    /// Flows closed by FIN or RST, with when: late ACKs and retransmitted FINs belong to them.
    closed: HashMap<Key, (u64, i64)>,
    /// Counters.
    pub stats: TcpStats,
}

impl Reassembler {
    /// A reassembler with these bounds.
    pub fn new(limits: Limits) -> Reassembler {
        Reassembler {
            flows: HashMap::default(),
            limits,
            buffered: 0,
            windows: 0,
            next_conn: 0,
            last_sweep: i64::MIN,
            closed: HashMap::default(),
            stats: TcpStats::default(),
        }
    }

    /// Feeds one segment; returns its connection number.
    pub fn segment<S: StreamSink>(&mut self, t: &Tcp<'_>, origin: Origin, sink: &mut S) -> u64 {
        self.sweep(origin.ts_ns, sink);
        let src = (t.src, t.src_port);
        let dst = (t.dst, t.dst_port);
        let k = key(src, dst);
        // A SYN (without ACK) on a flow that has carried data starts a new connection.
        if t.syn
            && !t.ack
            && let Some(f) = self.flows.get(&k)
        {
            // A repeated SYN (same initial sequence number, maybe with data: TCP Fast Open) is
            // the same connection; a new one after data has flowed is a new connection.
            let same_isn = f.dirs.iter().any(|d| d.syn_seq == Some(t.seq));
            let reused = !same_isn && f.dirs.iter().any(|d| d.next > 0 || !d.pending.is_empty());
            if reused {
                let f = self.flows.remove(&k).expect("present");
                self.finish(*f, End::Reused, origin, sink);
            }
        }
        if !self.flows.contains_key(&k)
            && !t.syn
            && let Some(&(conn, at)) = self.closed.get(&k)
            && origin.ts_ns.saturating_sub(at) <= self.limits.idle_ns
        {
            self.stats.after_close += 1;
            return conn;
        }
        if !self.flows.contains_key(&k) && self.flows.len() >= self.limits.max_flows.max(1) {
            self.evict(sink);
        }
        let flow = match self.flows.get_mut(&k) {
            Some(f) => f,
            None => {
                self.next_conn += 1;
                self.stats.connections += 1;
                // Without a SYN, the sender of the first packet seen is side A; with a SYN-ACK
                // first, the receiver is the initiator.
                let a = if t.syn && t.ack { dst } else { src };
                let syn_seen = t.syn;
                if !syn_seen {
                    self.stats.without_syn += 1;
                }
                sink.open(self.next_conn, a, if a == src { dst } else { src }, syn_seen);
                self.flows.entry(k).or_insert_with(|| {
                    Box::new(Flow {
                        key: k,
                        conn: self.next_conn,
                        a,
                        dirs: [Dir::default(), Dir::default()],
                        last_ts: origin.ts_ns,
                        last_origin: origin,
                    })
                })
            }
        };
        flow.last_ts = origin.ts_ns;
        flow.last_origin = origin;
        let conn = flow.conn;
        let side = if src == flow.a { Side::A } else { Side::B };
        if t.ack {
            // The other side acknowledged bytes up to `ack_num`. A hole in its stream that lies
            // before held data and before that point was received, so it is not coming: the
            // capture lost it. A gap now, not at a buffer bound or the connection's end, and
            // before this segment's own bytes: what follows the hole (the rest of a request)
            // is delivered before the response that answers it.
            let other = 1 - side.index();
            let odir = &mut flow.dirs[other];
            if odir.started
                && let Some((&first, _)) = odir.pending.first_key_value()
                && first > odir.next
                && first <= odir.peek_abs(t.ack_num)
                && !odir.done
            {
                let mut ctx = Ctx {
                    buffered: &mut self.buffered,
                    windows: &mut self.windows,
                    stats: &mut self.stats,
                    limits: self.limits,
                    conn,
                    side: if other == 0 { Side::A } else { Side::B },
                    origin,
                    sink,
                };
                ctx.gap(odir, first, false);
                ctx.drain(odir);
            }
        }
        let dir = &mut flow.dirs[side.index()];
        if t.syn {
            dir.syn_seq.get_or_insert(t.seq);
            if !dir.started {
                dir.started = true;
                dir.last_seq = t.seq.wrapping_add(1);
                dir.last_abs = 0;
                dir.next = 0;
            }
        } else if !dir.started {
            dir.started = true;
            dir.last_seq = t.seq;
            dir.last_abs = 0;
            dir.next = 0;
        }
        if t.rst {
            self.stats.resets += 1;
            let f = self.flows.remove(&k).expect("present");
            self.finish(*f, End::Rst, origin, sink);
            return conn;
        }
        let start = if t.syn { dir.abs(t.seq.wrapping_add(1)) } else { dir.abs(t.seq) };
        let wire_len = t.payload.len() as i64 + i64::from(t.snapped);
        if t.fin {
            dir.fin_at.get_or_insert(start + wire_len);
        }
        if !t.payload.is_empty() || t.snapped > 0 {
            if dir.done {
                self.stats.after_fin += 1;
            } else {
                let limits = self.limits;
                let mut ctx = Ctx {
                    buffered: &mut self.buffered,
                    windows: &mut self.windows,
                    stats: &mut self.stats,
                    limits,
                    conn,
                    side,
                    origin,
                    sink,
                };
                ctx.accept(dir, start, t.payload, t.snapped);
                if *ctx.buffered > limits.global {
                    // Over the global bound: this flow's holes become gaps now.
                    ctx.force_gaps(dir);
                }
                self.stats.peak_buffered = self.stats.peak_buffered.max(self.buffered as u64);
            }
        }
        let dir = &mut flow.dirs[side.index()];
        if let Some(fin) = dir.fin_at
            && dir.next >= fin
            && !dir.done
        {
            dir.done = true;
        }
        if flow.dirs.iter().all(|d| d.done) {
            let f = self.flows.remove(&k).expect("present");
            self.finish(*f, End::Fin, origin, sink);
        }
        conn
    }

    /// Closes flows idle for longer than the limit (capture time), at most once a second.
    fn sweep<S: StreamSink>(&mut self, now: i64, sink: &mut S) {
        if now < self.last_sweep {
            // Time went backwards (files out of order, or after an outlier): start again.
            self.last_sweep = now;
            return;
        }
        if now < self.last_sweep.saturating_add(1_000_000_000) {
            return;
        }
        if self.last_sweep != i64::MIN && now - self.last_sweep > 3_600_000_000_000 {
            // A jump of more than an hour is more likely one bad timestamp than an hour of
            // silence: do not expire every flow on its word, but start the clock from here.
            // After one bad stamp the next packet goes back in time and resets it (above);
            // after a real silence the next sweep closes what has stayed idle since. (Not
            // moving the clock here turned sweeping off for the rest of the run.)
            self.last_sweep = now;
            return;
        }
        self.last_sweep = now;
        let idle_ns = self.limits.idle_ns;
        self.closed.retain(|_, (_, at)| now.saturating_sub(*at) <= idle_ns);
        let idle: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last_ts) > self.limits.idle_ns)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            let f = self.flows.remove(&k).expect("present");
            self.stats.idle_closed += 1;
            let origin = f.last_origin;
            self.finish(*f, End::Idle, origin, sink);
        }
    }

    /// Closes the least recently active eighth of the open flows (at least one), oldest
    /// first, as the idle timeout would have.
    fn evict<S: StreamSink>(&mut self, sink: &mut S) {
        let n = (self.flows.len() / 8).max(1);
        let mut ages: Vec<(i64, u64, Key)> =
            self.flows.values().map(|f| (f.last_ts, f.conn, f.key)).collect();
        if n < ages.len() {
            ages.select_nth_unstable(n - 1);
            ages.truncate(n);
        }
        ages.sort_unstable();
        for (_, _, k) in ages {
            let f = self.flows.remove(&k).expect("present");
            self.stats.evicted += 1;
            let origin = f.last_origin;
            self.finish(*f, End::Evicted, origin, sink);
        }
    }

    /// Flushes and closes every flow (at the end of the capture).
    pub fn finish_all<S: StreamSink>(&mut self, sink: &mut S) {
        // Still boxed while they wait: the list costs a pointer per flow, not a flow.
        let mut flows: Vec<Box<Flow>> = self.flows.drain().map(|(_, f)| f).collect();
        flows.sort_by_key(|f| f.conn);
        for f in flows {
            let origin = f.last_origin;
            self.finish(*f, End::CaptureEnd, origin, sink);
        }
    }

    fn finish<S: StreamSink>(&mut self, mut f: Flow, end: End, origin: Origin, sink: &mut S) {
        self.windows -= f.dirs.iter().map(|d| d.recent.len()).sum::<usize>();
        for side in [Side::A, Side::B] {
            let dir = &mut f.dirs[side.index()];
            let limits = self.limits;
            let conn = f.conn;
            let mut ctx = Ctx {
                buffered: &mut self.buffered,
                windows: &mut self.windows,
                stats: &mut self.stats,
                limits,
                conn,
                side,
                origin,
                sink,
            };
            ctx.force_gaps(dir);
            // A FIN beyond what arrived: the end of the stream was lost.
            if let Some(fin) = dir.fin_at
                && fin > dir.next
                && !dir.done
            {
                ctx.gap(dir, fin, false);
            }
        }
        if matches!(end, End::Fin | End::Rst) {
            if self.closed.len() >= 1 << 16 {
                // Bounded: forget the oldest half.
                let mut ats: Vec<i64> = self.closed.values().map(|v| v.1).collect();
                ats.sort_unstable();
                let cut = ats[ats.len() / 2];
                self.closed.retain(|_, v| v.1 > cut);
            }
            self.closed.insert(f.key, (f.conn, origin.ts_ns));
        }
        sink.close(f.conn, end, origin);
    }
}

/// What one buffered segment costs: its bytes and the map entry (so that a flood of empty or
/// one-byte segments is bounded too).
fn held_size(seg: &[u8]) -> usize {
    seg.len() + 64
}

/// What the per-direction steps need besides the direction itself.
struct Ctx<'a, S> {
    buffered: &'a mut usize,
    windows: &'a mut usize,
    stats: &'a mut TcpStats,
    limits: Limits,
    conn: u64,
    side: Side,
    origin: Origin,
    sink: &'a mut S,
}

impl<S: StreamSink> Ctx<'_, S> {
    /// Declares the bytes up to `to` missing and moves the stream past them.
    fn gap(&mut self, dir: &mut Dir, to: i64, forced: bool) {
        let missing = (to - dir.next) as u64;
        self.stats.gaps += 1;
        self.stats.bytes_missing += missing;
        if forced {
            self.stats.forced_gaps += 1;
        }
        self.sink.gap(self.conn, self.side, missing, self.origin);
        dir.next = to;
        // The window holds bytes from before the hole; nothing after it is known yet.
        dir.recent_fill = 0;
    }

    /// Delivers everything buffered, declaring each hole before it a gap.
    fn force_gaps(&mut self, dir: &mut Dir) {
        while let Some((&at, _)) = dir.pending.iter().next() {
            if at > dir.next {
                self.gap(dir, at, true);
            }
            self.drain(dir);
        }
    }

    /// Takes one segment's payload starting at stream offset `start`.
    fn accept(&mut self, dir: &mut Dir, start: i64, payload: &[u8], snapped: u32) {
        let end = start + payload.len() as i64;
        if end + i64::from(snapped) <= dir.next {
            self.stats.retransmissions += 1;
            self.check_conflict(dir, start, payload);
            return;
        }
        if start <= dir.next {
            let skip = (dir.next - start).min(payload.len() as i64) as usize;
            self.check_conflict(dir, start, &payload[..skip]);
            self.deliver(dir, &payload[skip..]);
            self.snap_gap(dir, end, snapped);
            self.drain(dir);
            return;
        }
        // Out of order: hold what no held segment covers yet.
        self.hold(dir, start, payload, snapped);
        if dir.pending_bytes > self.limits.per_flow {
            self.force_gaps(dir);
        }
    }

    /// Holds an out-of-order segment. Held segments never overlap: where this one overlaps some,
    /// their bytes stay (the first data wins) and a copy that differs is a conflict; only the
    /// pieces none of them covers are held, each under its own start.
    fn hold(&mut self, dir: &mut Dir, start: i64, payload: &[u8], snapped: u32) {
        let end = start + payload.len() as i64;
        // Uncovered pieces, as offsets into the stream.
        let mut pieces: Vec<(i64, i64)> = Vec::new();
        let mut at = start;
        let mut differs = false;
        let before = dir.pending.range(..start).next_back().map(|(&k, _)| k);
        let overlapping: Vec<i64> =
            before.into_iter().chain(dir.pending.range(start..end).map(|(&k, _)| k)).collect();
        for k in overlapping {
            let seg = &dir.pending[&k].0;
            let seg_end = k + seg.len() as i64;
            if seg_end <= at {
                continue;
            }
            if k > at {
                pieces.push((at, k));
            }
            let (from, to) = (k.max(at), seg_end.min(end));
            differs |= seg[(from - k) as usize..(to - k) as usize]
                != payload[(from - start) as usize..(to - start) as usize];
            at = to;
        }
        if at < end {
            pieces.push((at, end));
        }
        if differs {
            self.stats.retransmission_conflicts += 1;
            self.sink.conflict(self.conn, self.side);
        }
        if pieces.is_empty() {
            // Every byte of it is held already.
            self.stats.retransmissions += 1;
            return;
        }
        for (from, to) in pieces {
            let piece = payload[(from - start) as usize..(to - start) as usize].to_vec();
            // What the capture cut off follows the segment's end, so its last piece.
            let cut = if to == end { snapped } else { 0 };
            *self.buffered += held_size(&piece);
            dir.pending_bytes += held_size(&piece);
            dir.pending.insert(from, (piece, cut));
        }
    }

    /// Delivers buffered segments that now continue the stream.
    fn drain(&mut self, dir: &mut Dir) {
        while let Some(entry) = dir.pending.first_entry() {
            let at = *entry.key();
            if at > dir.next {
                break;
            }
            let (seg, snapped) = entry.remove();
            *self.buffered -= held_size(&seg);
            dir.pending_bytes -= held_size(&seg);
            let end = at + seg.len() as i64;
            if end + i64::from(snapped) <= dir.next {
                if !seg.is_empty() {
                    self.stats.retransmissions += 1;
                    self.check_conflict(dir, at, &seg);
                }
                continue;
            }
            let skip = ((dir.next - at) as usize).min(seg.len());
            self.check_conflict(dir, at, &seg[..skip]);
            self.deliver(dir, &seg[skip..]);
            self.snap_gap(dir, end, snapped);
        }
    }

    /// After a segment the capture cut short, the bytes it lost are a hole.
    fn snap_gap(&mut self, dir: &mut Dir, end: i64, snapped: u32) {
        let wire_end = end + i64::from(snapped);
        if snapped > 0 && dir.next >= end && wire_end > dir.next {
            self.gap(dir, wire_end, false);
        }
    }

    fn deliver(&mut self, dir: &mut Dir, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.sink.data(self.conn, self.side, bytes, self.origin);
        // Keep the last `recent` bytes in a ring (one copy per byte, no shifting), to compare
        // retransmissions against.
        let keep = self.limits.recent;
        if dir.recent.is_empty() {
            if dir.unchecked || keep == 0 || *self.windows + keep > self.limits.recent_total {
                if !dir.unchecked {
                    dir.unchecked = true;
                    self.stats.unchecked_directions += 1;
                }
                dir.next += bytes.len() as i64;
                return;
            }
            *self.windows += keep;
            dir.recent = vec![0; keep];
        }
        let tail = &bytes[bytes.len().saturating_sub(keep)..];
        let start = ((dir.next + (bytes.len() - tail.len()) as i64) as u64 % keep as u64) as usize;
        let first = tail.len().min(keep - start);
        dir.recent[start..start + first].copy_from_slice(&tail[..first]);
        dir.recent[..tail.len() - first].copy_from_slice(&tail[first..]);
        dir.recent_fill = (dir.recent_fill + bytes.len()).min(keep);
        dir.next += bytes.len() as i64;
    }

    /// Compares bytes at `[start, start + len)` (all before `dir.next`) with what was delivered.
    fn check_conflict(&mut self, dir: &Dir, start: i64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let recent_start = dir.next - dir.recent_fill as i64;
        let from = start.max(recent_start);
        let to = (start + bytes.len() as i64).min(dir.next);
        if from >= to {
            return;
        }
        let len = dir.recent.len() as u64;
        if len == 0 {
            return;
        }
        let differs =
            (from..to).any(|at| dir.recent[(at as u64 % len) as usize] != bytes[(at - start) as usize]);
        if differs {
            self.stats.retransmission_conflicts += 1;
            self.sink.conflict(self.conn, self.side);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        data: Vec<u8>,
        gaps: u64,
        conflicts: u64,
    }

    impl StreamSink for Collect {
        fn open(&mut self, _: u64, _: (IpAddr, u16), _: (IpAddr, u16), _: bool) {}
        fn data(&mut self, _: u64, side: Side, bytes: &[u8], _: Origin) {
            if side == Side::A {
                self.data.extend_from_slice(bytes);
            }
        }
        fn gap(&mut self, _: u64, _: Side, missing: u64, _: Origin) {
            self.gaps += missing;
        }
        fn conflict(&mut self, _: u64, _: Side) {
            self.conflicts += 1;
        }
        fn close(&mut self, _: u64, _: End, _: Origin) {}
    }

    fn seg(seq: u32, payload: &[u8]) -> Tcp<'_> {
        Tcp {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            src_port: 1,
            dst_port: 2,
            seq,
            syn: false,
            fin: false,
            rst: false,
            ack: true,
            ack_num: 0,
            payload,
            snapped: 0,
        }
    }

    /// Review finding: a longer copy of a buffered segment whose tail is also buffered left the
    /// byte counts too high for ever, and every later hole became a forced gap.
    #[test]
    fn buffered_bytes_return_to_zero_whatever_the_overlaps() {
        let mut r = Reassembler::new(Limits::default());
        let mut sink = Collect::default();
        let o = Origin::default();
        r.segment(&seg(100, b"a"), o, &mut sink); // starts the stream at 100
        r.segment(&seg(110, b"KLMNO"), o, &mut sink); // ahead: held
        r.segment(&seg(115, b"PQRST"), o, &mut sink); // ahead: held
        r.segment(&seg(110, b"KLMNOPQRST"), o, &mut sink); // longer copy of both: nothing new
        assert_eq!(r.buffered, 2 * held_size(b"KLMNO"));
        r.segment(&seg(101, b"bcdefghij"), o, &mut sink); // fills the hole
        assert_eq!(r.buffered, 0);
        assert_eq!(sink.data, b"abcdefghijKLMNOPQRST");
        assert_eq!((sink.gaps, sink.conflicts), (0, 0));
    }

    /// Audit finding (session 15): a longer copy of a held segment whose tail was held too lost
    /// the bytes past that tail.
    #[test]
    fn a_longer_copy_over_two_held_segments_keeps_its_new_bytes() {
        let mut r = Reassembler::new(Limits::default());
        let mut sink = Collect::default();
        let o = Origin::default();
        r.segment(&seg(100, b"a"), o, &mut sink);
        r.segment(&seg(110, b"KLMNO"), o, &mut sink);
        r.segment(&seg(115, b"PQRST"), o, &mut sink);
        r.segment(&seg(110, b"KLMNOPQRSTUVWXY"), o, &mut sink);
        r.segment(&seg(101, b"bcdefghij"), o, &mut sink);
        assert_eq!(sink.data, b"abcdefghijKLMNOPQRSTUVWXY");
        assert_eq!((sink.gaps, sink.conflicts, r.buffered), (0, 0, 0));
    }

    /// Audit finding (session 15): overlapping out-of-order segments. The bytes that arrived
    /// first stay, whatever the order of the starts; the differing copy is a conflict.
    #[test]
    fn among_held_segments_the_first_data_wins() {
        let mut r = Reassembler::new(Limits::default());
        let mut sink = Collect::default();
        let o = Origin::default();
        r.segment(&seg(100, b"a"), o, &mut sink);
        r.segment(&seg(110, b"KLMNOPQRST"), o, &mut sink);
        r.segment(&seg(105, b"fghijXXXXX"), o, &mut sink); // 110..115 differ from what came first
        r.segment(&seg(107, b"hijKLMNOPQRSTuvw"), o, &mut sink); // same bytes, and 3 new at the end
        r.segment(&seg(101, b"bcde"), o, &mut sink);
        assert_eq!(sink.data, b"abcdefghijKLMNOPQRSTuvw");
        assert_eq!((sink.gaps, sink.conflicts, r.buffered), (0, 1, 0));
    }

    /// Audit finding (session 15): after one packet stamped more than an hour away (forward, or
    /// back to 0 and forward again), idle flows were never closed again for the rest of the run.
    #[test]
    fn idle_flows_close_after_a_bad_timestamp() {
        let mut r = Reassembler::new(Limits::default());
        let mut sink = Collect::default();
        let at =
            |s: i64| Origin { ts_ns: 1_700_000_000_000_000_000 + s * 1_000_000_000, ..Origin::default() };
        let other = |sport: u16, seq: u32| Tcp { src_port: sport, ..seg(seq, b"x") };
        r.segment(&seg(100, b"idle flow"), at(0), &mut sink);
        for (bad, label) in [(Origin { ts_ns: 0, ..Origin::default() }, "zero"), (at(7200), "two hours on")] {
            r.segment(&other(7, 1), bad, &mut sink);
            r.segment(&other(8, 1), at(1), &mut sink);
            r.segment(&other(8, 2), at(2), &mut sink);
            let _ = label;
        }
        // The flows stamped 0 and two hours on may close, by their stamps; the first flow,
        // last seen at 0 s, is not idle at 2 s.
        let before = r.stats.idle_closed;
        assert!(r.flows.len() >= 2, "the first flow and port 8's are open");
        // 200 s on, past the 120 s limit: the first flow and port 8's close as idle.
        r.segment(&other(9, 1), at(200), &mut sink);
        r.segment(&other(9, 2), at(202), &mut sink);
        assert!(r.stats.idle_closed >= before + 2, "{before} then {:?}", r.stats);
    }

    /// Review finding: after a gap, a late copy of the missing bytes was compared with stale
    /// window bytes and reported as a conflict.
    #[test]
    fn a_late_copy_after_a_gap_is_not_a_conflict() {
        let limits = Limits { per_flow: 0, ..Limits::default() };
        let mut r = Reassembler::new(limits);
        let mut sink = Collect::default();
        let o = Origin::default();
        r.segment(&seg(100, b"abc"), o, &mut sink);
        r.segment(&seg(106, b"ghi"), o, &mut sink); // over the bound at once: gap of 3
        assert_eq!(sink.gaps, 3);
        r.segment(&seg(103, b"def"), o, &mut sink); // the lost bytes, late
        assert_eq!(sink.conflicts, 0);
        assert_eq!(sink.data, b"abcghi");
    }
}
