//! IPv4 fragment reassembly with a memory cap.
//!
//! Fragments are held per (source, destination, identification, protocol) until the datagram
//! is complete. Overlaps keep the first bytes seen. Bounded: a datagram is at most 64 KiB, all
//! datagrams together at most [`DefragLimits::max_bytes`] (the oldest is dropped, and counted,
//! to make room), and one incomplete for longer than the timeout (capture time) is dropped.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;

/// One IPv4 fragment.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Identification field.
    pub id: u16,
    /// Protocol of the whole datagram.
    pub protocol: u8,
    /// Byte offset of this fragment's payload.
    pub offset: usize,
    /// More fragments follow.
    pub more: bool,
    /// This fragment's payload.
    pub payload: &'a [u8],
}

/// Bounds.
#[derive(Debug, Clone, Copy)]
pub struct DefragLimits {
    /// Bytes all incomplete datagrams may hold together.
    pub max_bytes: usize,
    /// Capture time after which an incomplete datagram is dropped.
    pub timeout_ns: i64,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits { max_bytes: 8 << 20, timeout_ns: 30_000_000_000 }
    }
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DefragStats {
    /// Fragments seen.
    pub fragments: u64,
    /// Datagrams put back together.
    pub reassembled: u64,
    /// Incomplete datagrams dropped because the memory cap was reached.
    pub dropped_for_memory: u64,
    /// Incomplete datagrams dropped after the timeout (or at the end of the capture).
    pub incomplete: u64,
    /// Fragments that would make a datagram larger than 64 KiB.
    pub oversized: u64,
}

struct Pending {
    data: Vec<u8>,
    /// Received byte ranges, sorted and merged.
    have: Vec<(usize, usize)>,
    total: Option<usize>,
    first_ts: i64,
}

type Key = (Ipv4Addr, Ipv4Addr, u16, u8);

/// A complete datagram: `(source, destination, protocol, payload)`.
pub type Datagram = (Ipv4Addr, Ipv4Addr, u8, Vec<u8>);

/// The defragmenter.
pub struct Defrag {
    pending: HashMap<Key, Pending>,
    bytes: usize,
    limits: DefragLimits,
    last_expire: i64,
    /// Counters.
    pub stats: DefragStats,
}

const MAX_DATAGRAM: usize = 65_535;
/// What an entry costs besides its bytes (map slot, range list), so empty fragments count too.
const ENTRY_OVERHEAD: usize = 128;
/// Datagrams held at once.
const MAX_DATAGRAMS: usize = 4096;

impl Defrag {
    /// A defragmenter with these bounds.
    pub fn new(limits: DefragLimits) -> Defrag {
        Defrag {
            pending: HashMap::default(),
            bytes: 0,
            limits,
            last_expire: i64::MIN,
            stats: DefragStats::default(),
        }
    }

    /// Adds a fragment; returns the datagram when it is complete.
    pub fn add(&mut self, f: &Fragment<'_>, ts_ns: i64) -> Option<Datagram> {
        self.stats.fragments += 1;
        self.expire(ts_ns);
        let end = f.offset + f.payload.len();
        if end > MAX_DATAGRAM {
            self.stats.oversized += 1;
            return None;
        }
        let key = (f.src, f.dst, f.id, f.protocol);
        // What this fragment will cost: the datagram's growth, or a new entry.
        let growth = match self.pending.get(&key) {
            Some(p) => end.saturating_sub(p.data.len()),
            None => end + ENTRY_OVERHEAD,
        };
        while !self.pending.is_empty()
            && (self.bytes + growth > self.limits.max_bytes
                || (!self.pending.contains_key(&key) && self.pending.len() >= MAX_DATAGRAMS))
        {
            self.drop_oldest();
        }
        let p = self.pending.entry(key).or_insert_with(|| Pending {
            data: Vec::new(),
            have: Vec::new(),
            total: None,
            first_ts: ts_ns,
        });
        if p.data.is_empty() && p.have.is_empty() {
            self.bytes += ENTRY_OVERHEAD;
        }
        if p.data.len() < end {
            self.bytes += end - p.data.len();
            p.data.resize(end, 0);
        }
        // Copy only the bytes not already received (first copy wins).
        let mut at = f.offset;
        for &(s, e) in p.have.iter() {
            if at >= end {
                break;
            }
            if e <= at {
                continue;
            }
            if s > at {
                let stop = s.min(end);
                p.data[at..stop].copy_from_slice(&f.payload[at - f.offset..stop - f.offset]);
            }
            at = at.max(e);
        }
        if at < end {
            p.data[at..end].copy_from_slice(&f.payload[at - f.offset..]);
        }
        p.have.push((f.offset, end));
        p.have.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(p.have.len());
        for &(s, e) in &p.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        p.have = merged;
        if !f.more {
            p.total = Some(end);
        }
        let complete = p.total.is_some_and(|t| p.have.len() == 1 && p.have[0] == (0, t));
        if !complete {
            return None;
        }
        let mut p = self.pending.remove(&key).expect("present");
        self.bytes -= p.data.len() + ENTRY_OVERHEAD;
        p.data.truncate(p.total.expect("complete"));
        self.stats.reassembled += 1;
        Some((f.src, f.dst, f.protocol, p.data))
    }

    fn drop_oldest(&mut self) {
        if let Some(key) = self.pending.iter().min_by_key(|(_, p)| p.first_ts).map(|(k, _)| *k) {
            let p = self.pending.remove(&key).expect("present");
            self.bytes -= p.data.len() + ENTRY_OVERHEAD;
            self.stats.dropped_for_memory += 1;
        }
    }

    fn expire(&mut self, now: i64) {
        // At most once a second of capture time: a scan of every datagram per fragment would be
        // quadratic on a flood of fragments.
        if now >= self.last_expire && now.saturating_sub(self.last_expire) < 1_000_000_000 {
            return;
        }
        self.last_expire = now;
        let timeout = self.limits.timeout_ns;
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let keep = now.saturating_sub(p.first_ts) <= timeout;
            if !keep {
                freed += p.data.len() + ENTRY_OVERHEAD;
            }
            keep
        });
        self.bytes -= freed;
        self.stats.incomplete += (before - self.pending.len()) as u64;
    }

    /// Drops whatever is still incomplete (at the end of the capture).
    pub fn finish(&mut self) {
        self.stats.incomplete += self.pending.len() as u64;
        self.pending.clear();
        self.bytes = 0;
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(offset: usize, more: bool, payload: &[u8]) -> Fragment<'_> {
        Fragment {
            src: [1, 1, 1, 1].into(),
            dst: [2, 2, 2, 2].into(),
            id: 7,
            protocol: 17,
            offset,
            more,
            payload,
        }
    }

    #[test]
    fn out_of_order_and_overlapping_fragments() {
        let mut d = Defrag::new(DefragLimits::default());
        assert!(d.add(&frag(16, false, b"QRSTUVWX"), 0).is_none());
        assert!(d.add(&frag(0, true, b"ABCDEFGH"), 0).is_none());
        // Overlaps the first fragment with other bytes: the first copy wins.
        assert!(
            d.add(&frag(4, true, b"zzzzIJKLMNOP"), 0)
                .is_some_and(|(_, _, p, data)| { p == 17 && data == b"ABCDEFGHIJKLMNOPQRSTUVWX" })
        );
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.stats.reassembled, 1);
    }

    #[test]
    fn memory_cap_and_timeout_drop_the_oldest() {
        // Each 40-byte fragment costs 40 + 128 (its entry): two fit in 400 bytes.
        let mut d = Defrag::new(DefragLimits { max_bytes: 400, timeout_ns: 10_000_000_000 });
        for id in 0..5u16 {
            let f = Fragment { id, ..frag(0, true, &[0; 40]) };
            d.add(&f, i64::from(id) * 1_000_000_000);
        }
        assert!(d.held_bytes() <= 400, "{}", d.held_bytes());
        assert_eq!(d.stats.dropped_for_memory, 3);
        d.add(&Fragment { id: 99, ..frag(0, true, &[0; 8]) }, 100_000_000_000);
        assert_eq!(d.stats.incomplete, 2, "timed out");
        assert!(d.add(&frag(65_530, true, &[0; 10]), 100_000_000_000).is_none());
        assert_eq!(d.stats.oversized, 1);
        // Empty fragments cost their entry too: a flood of them stays bounded.
        for id in 0..10_000u16 {
            d.add(&Fragment { id, ..frag(0, true, &[]) }, 100_000_000_000);
        }
        assert!(d.held_bytes() <= 400, "{}", d.held_bytes());
    }
}
