//! From link-layer bytes to the transport: Ethernet (802.1Q/QinQ), Linux SLL and SLL2, BSD
//! null/loopback, raw IPv4/IPv6; then IP and TCP/UDP through etherparse.

use std::net::IpAddr;

use etherparse::{IpNumber, IpSlice, TcpSlice, UdpSlice};

/// Link types (`LINKTYPE_*` values).
pub mod link {
    /// BSD loopback: 4-byte address family in host byte order.
    pub const NULL: u16 = 0;
    /// Ethernet II.
    pub const ETHERNET: u16 = 1;
    /// Raw IP (some systems).
    pub const RAW_12: u16 = 12;
    /// Raw IP (some systems).
    pub const RAW_14: u16 = 14;
    /// Raw IPv4 or IPv6.
    pub const RAW: u16 = 101;
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: u16 = 108;
    /// Linux cooked capture v1.
    pub const LINUX_SLL: u16 = 113;
    /// Raw IPv4.
    pub const IPV4: u16 = 228;
    /// Raw IPv6.
    pub const IPV6: u16 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: u16 = 276;
}

/// Why a packet did not decode to a transport segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Undecoded {
    /// The link type is not one this recorder reads.
    UnknownLinkType,
    /// Shorter than its link-layer header.
    TruncatedLink,
    /// Not IP (ARP, LLDP, ...): kept as a packet case, not an error.
    NotIp,
    /// The IP header is malformed or cut short.
    BadIp,
    /// An IPv6 fragment (kept as a packet case; IPv4 fragments are reassembled).
    Fragment,
    /// The TCP header is malformed or cut short.
    BadTcp,
    /// The UDP header is malformed or cut short.
    BadUdp,
    /// Another IP protocol (ICMP, ...): kept as a packet case, not an error.
    OtherProtocol,
}

impl Undecoded {
    /// The reason as written in the accounting.
    pub fn name(self) -> &'static str {
        match self {
            Undecoded::UnknownLinkType => "unknown_link_type",
            Undecoded::TruncatedLink => "truncated_link_header",
            Undecoded::NotIp => "not_ip",
            Undecoded::BadIp => "bad_ip_header",
            Undecoded::Fragment => "ipv6_fragment",
            Undecoded::BadTcp => "bad_tcp_header",
            Undecoded::BadUdp => "bad_udp_header",
            Undecoded::OtherProtocol => "other_ip_protocol",
        }
    }

    /// Whether this is damage (counted as malformed) rather than a packet that simply is not
    /// TCP or UDP.
    pub fn is_malformed(self) -> bool {
        !matches!(self, Undecoded::NotIp | Undecoded::OtherProtocol | Undecoded::Fragment)
    }
}

/// A decoded TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Tcp<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// ACK flag.
    pub ack: bool,
    /// Acknowledgment number (meaningful with `ack`).
    pub ack_num: u32,
    /// Payload (may be shorter than on the wire if the capture cut the packet).
    pub payload: &'a [u8],
    /// Payload bytes the capture's snap length cut off.
    pub snapped: u32,
}

/// What a packet decodes to.
#[derive(Debug, Clone, Copy)]
pub enum Decoded<'a> {
    /// A TCP segment.
    Tcp(Tcp<'a>),
    /// A UDP datagram: `(src, src_port, dst, dst_port)`.
    Udp(IpAddr, u16, IpAddr, u16),
    /// An IPv4 fragment, for the defragmenter.
    Fragment(crate::defrag::Fragment<'a>),
    /// Anything else, and why.
    Other(Undecoded),
}

/// The bytes after an ethertype, skipping 802.1Q, 802.1ad (QinQ) and 0x9100 tags, any number deep.
fn ethertype_payload(mut ethertype: u16, mut rest: &[u8]) -> Result<&[u8], Undecoded> {
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        if rest.len() < 4 {
            return Err(Undecoded::TruncatedLink);
        }
        ethertype = u16::from_be_bytes([rest[2], rest[3]]);
        rest = &rest[4..];
    }
    match ethertype {
        0x0800 | 0x86dd => Ok(rest),
        _ => Err(Undecoded::NotIp),
    }
}

/// Strips the link layer: the IP bytes, or why there are none.
pub fn ip_bytes(link_type: u16, data: &[u8]) -> Result<&[u8], Undecoded> {
    match link_type {
        link::ETHERNET => {
            if data.len() < 14 {
                return Err(Undecoded::TruncatedLink);
            }
            ethertype_payload(u16::from_be_bytes([data[12], data[13]]), &data[14..])
        }
        link::LINUX_SLL => {
            if data.len() < 16 {
                return Err(Undecoded::TruncatedLink);
            }
            ethertype_payload(u16::from_be_bytes([data[14], data[15]]), &data[16..])
        }
        link::LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(Undecoded::TruncatedLink);
            }
            ethertype_payload(u16::from_be_bytes([data[0], data[1]]), &data[20..])
        }
        link::NULL | link::LOOP => {
            if data.len() < 4 {
                return Err(Undecoded::TruncatedLink);
            }
            let le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let be = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24, 28 or 30 (BSDs, macOS).
            let family = if link_type == link::LOOP {
                be
            } else if le <= 0xffff {
                le
            } else {
                be
            };
            match family {
                2 | 10 | 24 | 28 | 30 => Ok(&data[4..]),
                _ => Err(Undecoded::NotIp),
            }
        }
        link::RAW | link::RAW_12 | link::RAW_14 | link::IPV4 | link::IPV6 => Ok(data),
        _ => Err(Undecoded::UnknownLinkType),
    }
}

/// Decodes a captured packet to its transport. `orig_len` is the length on the wire, to tell
/// how much of a TCP payload the snap length cut off.
pub fn decode(link_type: u16, data: &[u8], orig_len: u32) -> Decoded<'_> {
    let ip = match ip_bytes(link_type, data) {
        Ok(ip) => ip,
        Err(why) => return Decoded::Other(why),
    };
    let snapped_total = orig_len.saturating_sub(data.len() as u32);
    let ip = match IpSlice::from_slice(ip) {
        Ok(ip) => ip,
        Err(_) if snapped_total > 0 => return decode_snapped(ip, snapped_total),
        Err(_) => return Decoded::Other(Undecoded::BadIp),
    };
    if ip.is_fragmenting_payload() {
        return match &ip {
            IpSlice::Ipv4(v4) => {
                let h = v4.header();
                Decoded::Fragment(crate::defrag::Fragment {
                    src: h.source_addr(),
                    dst: h.destination_addr(),
                    id: h.identification(),
                    protocol: h.protocol().0,
                    offset: usize::from(h.fragments_offset().value()) * 8,
                    more: h.more_fragments(),
                    payload: v4.payload().payload,
                })
            }
            // IPv6 fragments are kept as packet cases, not reassembled.
            IpSlice::Ipv6(_) => Decoded::Other(Undecoded::Fragment),
        };
    }
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let payload = ip.payload();
    match payload.ip_number {
        IpNumber::TCP => match TcpSlice::from_slice(payload.payload) {
            Ok(t) => Decoded::Tcp(tcp(src, dst, &t, 0)),
            Err(_) => Decoded::Other(Undecoded::BadTcp),
        },
        IpNumber::UDP => match UdpSlice::from_slice(payload.payload) {
            Ok(u) => Decoded::Udp(src, u.source_port(), dst, u.destination_port()),
            Err(_) => Decoded::Other(Undecoded::BadUdp),
        },
        _ => Decoded::Other(Undecoded::OtherProtocol),
    }
}

/// The TCP segment in a reassembled IPv4 datagram's payload.
pub fn tcp_in(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Option<Tcp<'_>> {
    TcpSlice::from_slice(payload).ok().map(|t| tcp(src, dst, &t, 0))
}

fn tcp<'a>(src: IpAddr, dst: IpAddr, t: &TcpSlice<'a>, snapped: u32) -> Tcp<'a> {
    Tcp {
        src,
        dst,
        src_port: t.source_port(),
        dst_port: t.destination_port(),
        seq: t.sequence_number(),
        syn: t.syn(),
        fin: t.fin(),
        rst: t.rst(),
        ack: t.ack(),
        ack_num: t.acknowledgment_number(),
        payload: t.payload(),
        snapped,
    }
}

/// A packet cut by the snap length: read what is there, and count the rest as missing.
fn decode_snapped(ip: &[u8], snapped: u32) -> Decoded<'_> {
    let Ok(lax) = etherparse::LaxIpSlice::from_slice(ip) else {
        return Decoded::Other(Undecoded::BadIp);
    };
    let (lax, _) = lax;
    // What the capture cut is what the IP header says is there minus what was captured: never
    // more, whatever the record's original length claims.
    let expected = match &lax {
        etherparse::LaxIpSlice::Ipv4(v4) => usize::from(v4.header().total_len()),
        etherparse::LaxIpSlice::Ipv6(v6) => 40 + usize::from(v6.header().payload_length()),
    };
    let snapped = snapped.min(expected.saturating_sub(ip.len()) as u32);
    let payload = lax.payload();
    if payload.fragmented {
        return Decoded::Other(Undecoded::Fragment);
    }
    let (src, dst) = (lax.source_addr(), lax.destination_addr());
    match payload.ip_number {
        IpNumber::TCP => match TcpSlice::from_slice(payload.payload) {
            Ok(t) => Decoded::Tcp(tcp(src, dst, &t, snapped)),
            Err(_) => Decoded::Other(Undecoded::BadTcp),
        },
        IpNumber::UDP => match UdpSlice::from_slice(payload.payload) {
            Ok(u) => Decoded::Udp(src, u.source_port(), dst, u.destination_port()),
            Err(_) => Decoded::Other(Undecoded::BadUdp),
        },
        _ => Decoded::Other(Undecoded::OtherProtocol),
    }
}
