//! Reading capture files: pcap (both byte orders, micro- and nanosecond stamps), pcapng
//! (sections, several interfaces with their own link types and `if_tsresol`/`if_tsoffset`), and
//! either one gzip-compressed. Streams through a bounded buffer: memory does not grow with the
//! file, and no length read from the file can make it allocate more than [`MAX_RECORD`].

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;
use pcap_file::pcap::PcapParser;
use pcap_file::{Endianness, PcapError, TsResolution};

/// The largest packet record or pcapng block accepted; a larger length is taken as damage.
pub const MAX_RECORD: usize = 16 << 20;
const READ_CHUNK: usize = 1 << 20;

/// One captured packet.
#[derive(Debug)]
pub struct RawPacket<'a> {
    /// 1-based packet number in the file.
    pub number: u64,
    /// Byte offset of the packet's record in the file (in the decompressed stream for gzip).
    pub offset: u64,
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Link type (`LINKTYPE_*`).
    pub link_type: u16,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
    /// pcapng interface id.
    pub interface: Option<u32>,
}

/// Interfaces described in one pcapng section, at most (real captures have a handful).
pub const MAX_INTERFACES: usize = 4096;

/// Something wrong in a capture that reading survived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureWarning {
    /// Byte offset (decompressed, for gzip).
    pub offset: u64,
    /// The packet number the problem is at (the next packet's, for a block between packets).
    pub packet: u64,
    /// A short machine-friendly reason (`record_longer_than_snaplen`, `unknown_block`, ...).
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

/// An error that stops reading a capture. Every packet before it was delivered.
#[derive(Debug, thiserror::Error)]
#[error("{file}: offset {offset}, packet {packet}: {message}")]
pub struct CaptureError {
    /// The file as named by the user.
    pub file: String,
    /// Byte offset (decompressed, for gzip).
    pub offset: u64,
    /// The packet number where reading stopped.
    pub packet: u64,
    /// What is wrong.
    pub message: String,
}

/// What the reader yields.
#[derive(Debug)]
pub enum CaptureEvent<'a> {
    /// A packet.
    Packet(RawPacket<'a>),
    /// A problem that reading survived.
    Warning(CaptureWarning),
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u16,
    snaplen: u32,
    /// Ticks per second (from `if_tsresol`; 1e6 by default).
    ticks_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_s: i64,
}

enum Format {
    Pcap { link_type: u16, snaplen: u32, nanos: bool, big: bool },
    PcapNg { big: bool, interfaces: Vec<Interface> },
}

/// A streaming reader over one capture file.
pub struct CaptureReader<R: Read> {
    src: R,
    file: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    eof: bool,
    format: Format,
    packets: u64,
    done: bool,
}

/// Opens a capture from a reader, detecting gzip, pcap and pcapng by their magic numbers.
pub fn open(src: Box<dyn Read>, file: &str) -> Result<CaptureReader<Box<dyn Read>>, CaptureError> {
    let mut src = src;
    let mut head = [0u8; 2];
    let n = read_full(&mut src, &mut head).map_err(|e| err(file, 0, 0, format!("cannot read: {e}")))?;
    let chained: Box<dyn Read> = Box::new(io::Cursor::new(head[..n].to_vec()).chain(src));
    let src: Box<dyn Read> =
        if n == 2 && head == [0x1f, 0x8b] { Box::new(MultiGzDecoder::new(chained)) } else { chained };
    CaptureReader::new(src, file)
}

fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn err(file: &str, offset: u64, packet: u64, message: String) -> CaptureError {
    CaptureError { file: file.to_string(), offset, packet, message }
}

fn u16_at(b: &[u8], big: bool) -> u16 {
    let a = [b[0], b[1]];
    if big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
}

fn u32_at(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
}

fn u64_at(b: &[u8], big: bool) -> u64 {
    let a: [u8; 8] = b[..8].try_into().expect("8 bytes");
    if big { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) }
}

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OBSOLETE_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and prepares to stream packets.
    pub fn new(src: R, file: &str) -> Result<CaptureReader<R>, CaptureError> {
        let mut r = CaptureReader {
            src,
            file: file.to_string(),
            buf: vec![0u8; READ_CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            format: Format::PcapNg { big: false, interfaces: Vec::new() },
            packets: 0,
            done: false,
        };
        r.fill(24).map_err(|e| r.error(format!("cannot read: {e}")))?;
        let head = &r.buf[r.start..r.end];
        if head.len() < 4 {
            return Err(r.error(format!("not a capture: the file has {} bytes", head.len())));
        }
        let magic = [head[0], head[1], head[2], head[3]];
        if u32::from_be_bytes(magic) == PCAPNG_SHB {
            // The section header is handled as the first block.
            return Ok(r);
        }
        match PcapParser::new(head) {
            Ok((rest, parser)) => {
                let h = parser.header();
                let consumed = head.len() - rest.len();
                r.format = Format::Pcap {
                    link_type: u32::from(h.datalink) as u16,
                    snaplen: h.snaplen,
                    nanos: h.ts_resolution == TsResolution::NanoSecond,
                    big: h.endianness == Endianness::Big,
                };
                r.consume(consumed);
                Ok(r)
            }
            Err(PcapError::IncompleteBuffer) => {
                Err(r.error(format!("truncated: the file ends inside the {}-byte pcap header", 24)))
            }
            Err(_) => Err(r.error(format!(
                "not a pcap or pcapng capture: it starts with {:02x} {:02x} {:02x} {:02x}",
                magic[0], magic[1], magic[2], magic[3]
            ))),
        }
    }

    fn error(&self, message: String) -> CaptureError {
        err(&self.file, self.offset, self.packets + 1, message)
    }

    fn warning(&self, reason: &'static str, message: String) -> CaptureWarning {
        CaptureWarning { offset: self.offset, packet: self.packets + 1, reason, message }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }

    /// Makes at least `want` bytes available (fewer only at the end of the file).
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < want {
            self.buf.resize(want.next_power_of_two(), 0);
        }
        while self.end < want {
            let n = match self.src.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
                break;
            }
            self.end += n;
        }
        Ok(())
    }

    /// The next packet or warning; `Ok(None)` at the end of the file. After an error, reading
    /// stops (every packet before it was delivered).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<CaptureEvent<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let r = match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        match r {
            Ok(Some(Step::Packet { at, len, ts_ns, link_type, orig_len, interface, consumed })) => {
                self.packets += 1;
                let number = self.packets;
                let offset = self.offset;
                self.consume(consumed);
                Ok(Some(CaptureEvent::Packet(RawPacket {
                    number,
                    offset,
                    ts_ns,
                    link_type,
                    data: &self.buf[at..at + len],
                    orig_len,
                    interface,
                })))
            }
            Ok(Some(Step::Warning(w))) => Ok(Some(CaptureEvent::Warning(w))),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn next_pcap(&mut self) -> Result<Option<Step>, CaptureError> {
        let Format::Pcap { link_type, snaplen, nanos, big, .. } = self.format else { unreachable!() };
        self.fill(16).map_err(|e| self.error(format!("cannot read: {e}")))?;
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        if avail < 16 {
            return Err(
                self.error(format!("truncated: the file ends inside a record header ({avail} of 16 bytes)"))
            );
        }
        let h = &self.buf[self.start..self.start + 16];
        let ts_sec = u32_at(&h[0..4], big);
        let ts_frac = u32_at(&h[4..8], big);
        let incl = u32_at(&h[8..12], big) as usize;
        let orig_len = u32_at(&h[12..16], big);
        if incl > MAX_RECORD {
            return Err(self.error(format!(
                "record length {incl} is larger than the snap length {snaplen} and than any packet \
                 ({MAX_RECORD} bytes): the file is damaged here"
            )));
        }
        self.fill(16 + incl).map_err(|e| self.error(format!("cannot read: {e}")))?;
        if self.end - self.start < 16 + incl {
            let have = self.end - self.start - 16;
            return Err(
                self.error(format!("truncated: the file ends inside a packet ({have} of {incl} bytes)"))
            );
        }
        if snaplen > 0 && incl as u32 > snaplen && !self.warned_snaplen() {
            // Keep the packet: its bytes are there. Say it once per file.
            return Ok(Some(Step::Warning(self.warning(
                "record_longer_than_snaplen",
                format!("record length {incl} is larger than the snap length {snaplen}; kept"),
            ))));
        }
        let frac_ns = if nanos { ts_frac as i64 } else { ts_frac as i64 * 1000 };
        Ok(Some(Step::Packet {
            at: self.start + 16,
            len: incl,
            ts_ns: ts_sec as i64 * 1_000_000_000 + frac_ns,
            link_type,
            orig_len,
            interface: None,
            consumed: 16 + incl,
        }))
    }

    fn warned_snaplen(&mut self) -> bool {
        if let Format::Pcap { snaplen, .. } = &mut self.format {
            // After the first warning, treat the snap length as unlimited for this file.
            let already = *snaplen == 0;
            *snaplen = 0;
            return already;
        }
        true
    }

    fn next_pcapng(&mut self) -> Result<Option<Step>, CaptureError> {
        loop {
            self.fill(12).map_err(|e| self.error(format!("cannot read: {e}")))?;
            let avail = self.end - self.start;
            if avail == 0 {
                return Ok(None);
            }
            if avail < 12 {
                return Err(
                    self.error(format!("truncated: the file ends inside a block header ({avail} bytes)"))
                );
            }
            let head: [u8; 12] = self.buf[self.start..self.start + 12].try_into().expect("12 bytes");
            let raw_type = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
            let mut big = match self.format {
                Format::PcapNg { big, .. } => big,
                Format::Pcap { .. } => unreachable!(),
            };
            if raw_type == PCAPNG_SHB {
                // The byte-order magic after the length says how this section is written.
                big = match u32::from_be_bytes(head[8..12].try_into().expect("4 bytes")) {
                    BYTE_ORDER_MAGIC => true,
                    m if m.swap_bytes() == BYTE_ORDER_MAGIC => false,
                    _ => return Err(self.error("section header with a bad byte-order magic".into())),
                };
            }
            let btype = u32_at(&head[0..4], big);
            let blen = u32_at(&head[4..8], big) as usize;
            if blen < 12 || !blen.is_multiple_of(4) || blen > MAX_RECORD {
                return Err(self.error(format!(
                    "block of type {btype:#x} has an impossible length {blen}: the file is damaged here"
                )));
            }
            self.fill(blen).map_err(|e| self.error(format!("cannot read: {e}")))?;
            if self.end - self.start < blen {
                let have = self.end - self.start;
                return Err(
                    self.error(format!("truncated: the file ends inside a {blen}-byte block ({have} bytes)"))
                );
            }
            let block = &self.buf[self.start..self.start + blen];
            if u32_at(&block[blen - 4..], big) as usize != blen {
                return Err(self.error(format!(
                    "block of type {btype:#x}: trailing length does not match the leading length {blen}"
                )));
            }
            let body = &block[8..blen - 4];
            let Format::PcapNg { big: fmt_big, interfaces } = &mut self.format else { unreachable!() };
            match btype {
                PCAPNG_SHB => {
                    *fmt_big = big;
                    interfaces.clear();
                    self.consume(blen);
                }
                PCAPNG_IDB => {
                    if body.len() < 8 {
                        let w = self
                            .warning("bad_block", "interface description block too short; skipped".into());
                        self.consume(blen);
                        return Ok(Some(Step::Warning(w)));
                    }
                    let mut iface = Interface {
                        link_type: u16_at(&body[0..2], big),
                        snaplen: u32_at(&body[4..8], big),
                        ticks_per_sec: 1_000_000,
                        offset_s: 0,
                    };
                    let mut opts = &body[8..];
                    while opts.len() >= 4 {
                        let code = u16_at(&opts[0..2], big);
                        let len = u16_at(&opts[2..4], big) as usize;
                        let padded = (len + 3) & !3;
                        if code == 0 || opts.len() < 4 + padded {
                            break;
                        }
                        let value = &opts[4..4 + len];
                        match (code, len) {
                            (9, 1) => {
                                let v = value[0];
                                let exp = u32::from(v & 0x7f);
                                iface.ticks_per_sec = if v & 0x80 == 0 {
                                    10u64.checked_pow(exp).unwrap_or(0)
                                } else {
                                    1u64.checked_shl(exp).unwrap_or(0)
                                };
                            }
                            (14, 8) => iface.offset_s = u64_at(value, big) as i64,
                            _ => {}
                        }
                        opts = &opts[4 + padded..];
                    }
                    let bad_res = iface.ticks_per_sec == 0;
                    if bad_res {
                        iface.ticks_per_sec = 1_000_000;
                    }
                    if interfaces.len() >= MAX_INTERFACES {
                        // Bounded whatever the file: a flood of description blocks would grow
                        // this list by 24 bytes per 20-byte block. Packets on interfaces past
                        // the bound are skipped with a warning, as on an undescribed one.
                        self.consume(blen);
                        let w = self.warning(
                            "bad_block",
                            format!("more than {MAX_INTERFACES} interfaces in one section; this one ignored"),
                        );
                        return Ok(Some(Step::Warning(w)));
                    }
                    interfaces.push(iface);
                    self.consume(blen);
                    if bad_res {
                        return Ok(Some(Step::Warning(self.warning(
                            "bad_block",
                            "interface with an impossible if_tsresol; microseconds assumed".into(),
                        ))));
                    }
                }
                PCAPNG_EPB | PCAPNG_OBSOLETE_PB => {
                    if body.len() < 20 {
                        let w = self.warning("bad_block", "packet block too short; skipped".into());
                        self.consume(blen);
                        return Ok(Some(Step::Warning(w)));
                    }
                    let (if_id, caplen_at) = if btype == PCAPNG_EPB {
                        (u32_at(&body[0..4], big), 12)
                    } else {
                        (u32::from(u16_at(&body[0..2], big)), 12)
                    };
                    let ticks =
                        (u64::from(u32_at(&body[4..8], big)) << 32) | u64::from(u32_at(&body[8..12], big));
                    let caplen = u32_at(&body[caplen_at..caplen_at + 4], big) as usize;
                    let orig_len = u32_at(&body[caplen_at + 4..caplen_at + 8], big);
                    let Some(iface) = interfaces.get(if_id as usize).copied() else {
                        let w = self.warning(
                            "bad_block",
                            format!("packet names interface {if_id}, which was never described; skipped"),
                        );
                        self.consume(blen);
                        self.packets += 1;
                        return Ok(Some(Step::Warning(w)));
                    };
                    if caplen > body.len() - 20 {
                        let w = self.warning(
                            "bad_block",
                            format!("packet length {caplen} is larger than its block; skipped"),
                        );
                        self.consume(blen);
                        self.packets += 1;
                        return Ok(Some(Step::Warning(w)));
                    }
                    let secs = ((ticks / iface.ticks_per_sec) as i64).saturating_add(iface.offset_s);
                    let frac = ticks % iface.ticks_per_sec;
                    let frac_ns = (u128::from(frac) * 1_000_000_000 / u128::from(iface.ticks_per_sec)) as i64;
                    let _ = iface.snaplen;
                    return Ok(Some(Step::Packet {
                        at: self.start + 8 + 20,
                        len: caplen,
                        ts_ns: secs.saturating_mul(1_000_000_000).saturating_add(frac_ns),
                        link_type: iface.link_type,
                        orig_len,
                        interface: Some(if_id),
                        consumed: blen,
                    }));
                }
                PCAPNG_SPB => {
                    let Some(iface) = interfaces.first().copied() else {
                        let w =
                            self.warning("bad_block", "simple packet before any interface; skipped".into());
                        self.consume(blen);
                        self.packets += 1;
                        return Ok(Some(Step::Warning(w)));
                    };
                    if body.len() < 4 {
                        let w = self.warning("bad_block", "simple packet block too short; skipped".into());
                        self.consume(blen);
                        return Ok(Some(Step::Warning(w)));
                    }
                    let orig_len = u32_at(&body[0..4], big);
                    let len = (orig_len as usize).min(body.len() - 4).min(if iface.snaplen > 0 {
                        iface.snaplen as usize
                    } else {
                        usize::MAX
                    });
                    return Ok(Some(Step::Packet {
                        at: self.start + 8 + 4,
                        len,
                        ts_ns: 0,
                        link_type: iface.link_type,
                        orig_len,
                        interface: Some(0),
                        consumed: blen,
                    }));
                }
                // Statistics, name resolution, journal, decryption secrets, custom blocks:
                // nothing to replay.
                4 | 5 | 9 | 10 | 0x0BAD | 0x40000BAD => self.consume(blen),
                other => {
                    let w = self
                        .warning("unknown_block", format!("pcapng block of unknown type {other:#x} skipped"));
                    self.consume(blen);
                    return Ok(Some(Step::Warning(w)));
                }
            }
        }
    }
}

enum Step {
    Packet {
        at: usize,
        len: usize,
        ts_ns: i64,
        link_type: u16,
        orig_len: u32,
        interface: Option<u32>,
        consumed: usize,
    },
    Warning(CaptureWarning),
}
