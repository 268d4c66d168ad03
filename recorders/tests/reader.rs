//! The capture reader's buffering: whatever the read sizes the source gives (a pipe hands out
//! what it has), gzip or not, and packets from empty to larger than its 1 MiB buffer, it yields
//! the same packets, warnings and errors as from one whole read; and a read error part way
//! keeps every packet before it and names where it stopped.

use std::io::{self, Cursor, Read, Write};

use proptest::prelude::*;
use recorders::capture::{self, CaptureEvent, CaptureReader};

/// A little-endian, microsecond pcap with Ethernet framing and a 16 MiB snap length.
fn pcap(sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(16u32 << 20).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, &n) in sizes.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        // Contents that differ by packet and by position, so a misplaced byte shows.
        out.extend((0..n).map(|k| (k as u32).wrapping_mul(31).wrapping_add(i as u32) as u8));
    }
    out
}

/// Everything a reader yields, as text: packets (number, offset, time, length, a hash of the
/// bytes), warnings, and the error that ended it.
fn events<R: Read>(mut r: CaptureReader<R>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match r.next() {
            Ok(Some(CaptureEvent::Packet(p))) => seen.push(format!(
                "packet {} at {} ts {} len {} orig {} hash {}",
                p.number,
                p.offset,
                p.ts_ns,
                p.data.len(),
                p.orig_len,
                blake3::hash(p.data)
            )),
            Ok(Some(CaptureEvent::Warning(w))) => seen.push(format!("warning {w:?}")),
            Ok(None) => return seen,
            Err(e) => {
                seen.push(format!("error {e}"));
                return seen;
            }
        }
    }
}

/// The whole input in one read.
fn whole(bytes: &[u8]) -> Vec<String> {
    match CaptureReader::new(Whole(Cursor::new(bytes.to_vec())), "t.pcap") {
        Ok(r) => events(r),
        Err(e) => vec![format!("error {e}")],
    }
}

/// Hands out everything asked for in one read (`Cursor` does already; named for the reader).
struct Whole(Cursor<Vec<u8>>);

impl Read for Whole {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Through `capture::open`, as `record pcap` reads: gzip detected by its magic number.
fn opened(src: Box<dyn Read>) -> Vec<String> {
    match capture::open(src, "t.pcap") {
        Ok(r) => events(r),
        Err(e) => vec![format!("error {e}")],
    }
}

/// Hands out at most `step` bytes a read, then fails after `fail_at` bytes if set.
struct Trickle {
    data: Cursor<Vec<u8>>,
    step: usize,
    fail_at: Option<u64>,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.data.position();
        let mut n = buf.len().min(self.step);
        if let Some(at) = self.fail_at {
            if pos >= at {
                return Err(io::Error::other("the disk went away"));
            }
            n = n.min((at - pos) as usize);
        }
        self.data.read(&mut buf[..n])
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Packet sizes from empty to past the reader's 1 MiB buffer, so that packets of every kind
/// straddle its refills.
fn sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![4 => 0usize..2_000, 2 => 2_000usize..70_000, 1 => 200_000usize..1_500_000];
    proptest::collection::vec(size, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_read_sizes_and_gzip_yield_what_one_whole_read_does(
        sizes in sizes(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        step in prop_oneof![Just(usize::MAX), 1usize..100_000],
        compressed in any::<bool>(),
    ) {
        let mut bytes = pcap(&sizes);
        if let Some(cut) = cut {
            // A truncated file: the packets before the cut, then an error naming its offset.
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let want = whole(&bytes);
        let src = if compressed { gzip(&bytes) } else { bytes.clone() };
        let got = opened(Box::new(Trickle { data: Cursor::new(src), step, fail_at: None }));
        prop_assert_eq!(&got, &want);
        if cut.is_none() {
            prop_assert_eq!(got.len(), sizes.len());
        }
    }
}

#[test]
fn a_read_error_part_way_keeps_every_packet_before_it_and_names_where() {
    // Four 400 KB packets: the error comes in the third.
    let bytes = pcap(&[400_000; 4]);
    let fail_at = 24 + 2 * (16 + 400_000) + 1_000;
    let src = Trickle { data: Cursor::new(bytes.clone()), step: 64 << 10, fail_at: Some(fail_at) };
    let got = opened(Box::new(src));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].starts_with("packet 1 at 24 "), "{got:?}");
    assert!(got[1].starts_with("packet 2 at 400040 "), "{got:?}");
    assert_eq!(got[2], "error t.pcap: offset 800056, packet 3: cannot read: the disk went away");
    // Compressed, the same packets and the same error at the same (decompressed) offset.
    let gz = gzip(&bytes);
    let src = Trickle { data: Cursor::new(gz.clone()), step: 64 << 10, fail_at: Some(gz.len() as u64 / 2) };
    let got = opened(Box::new(src));
    assert!(got.len() >= 2 && got.len() <= 4, "{got:?}");
    assert_eq!(got[..got.len() - 1], whole(&bytes)[..got.len() - 1]);
    let last = got.last().unwrap();
    assert!(
        last.starts_with("error t.pcap: offset ") && last.ends_with(": cannot read: the disk went away"),
        "{last}"
    );
}
