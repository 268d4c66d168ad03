//! The packet normalizer: raw packet bytes in, a JSON summary out.

use serde_json::{Map, Value, json};

/// Payloads are copied through a buffer this big at the edge (the Wasm build's bug).
pub const EDGE_BUFFER: usize = 1500;

/// Summarises one packet captured with `link_type` (a pcap `LINKTYPE_*` value).
///
/// `edge_buffer` turns on the edge build's payload copy through a fixed
/// [`EDGE_BUFFER`]-byte buffer. It has an effect only in the Wasm build: natively the switch
/// is read and ignored, which is the inconsistency the demo exists to show.
pub fn normalize(link_type: u32, data: &[u8], edge_buffer: bool) -> Value {
    let mut out = Map::new();
    out.insert("captured_len".into(), json!(data.len()));
    let (link, rest) = match link(link_type, data) {
        Ok(v) => v,
        Err(e) => {
            out.insert("error".into(), json!(e));
            return Value::Object(out);
        }
    };
    out.insert("link".into(), link);
    let Some((ethertype, l3)) = rest else {
        out.insert("guess".into(), json!("non-ip"));
        return Value::Object(out);
    };
    let (ip, proto, src, dst, l4) = match ip(ethertype, l3) {
        Ok(v) => v,
        Err(e) => {
            out.insert("error".into(), json!(e));
            return Value::Object(out);
        }
    };
    out.insert("ip".into(), ip);
    let (transport, ports, payload) = transport(proto, l4);
    out.insert("transport".into(), transport);
    let (sport, dport) = ports.unwrap_or((0, 0));
    out.insert("flow".into(), json!(format!("{} {}:{} > {}:{}", proto_name(proto), src, sport, dst, dport)));
    let payload = copy_payload(payload, edge_buffer);
    out.insert(
        "payload".into(),
        json!({
            "len": payload.len,
            "fnv1a64": format!("{:016x}", fnv1a64(&payload.bytes)),
            "head": hex(&payload.bytes[..payload.bytes.len().min(8)]),
        }),
    );
    out.insert("guess".into(), json!(guess(proto, sport, dport, &payload.bytes)));
    Value::Object(out)
}

struct Payload {
    len: usize,
    bytes: Vec<u8>,
}

#[cfg(target_arch = "wasm32")]
fn copy_payload(p: &[u8], edge_buffer: bool) -> Payload {
    if !edge_buffer {
        return Payload { len: p.len(), bytes: p.to_vec() };
    }
    // The edge build's copy: through one MTU-sized buffer, reused for each 1500-byte piece,
    // and the whole buffer handed on. A payload up to 1500 bytes survives; a longer one comes
    // out as its last piece followed by stale bytes of the one before.
    let mut buf = [0u8; EDGE_BUFFER];
    for piece in p.chunks(EDGE_BUFFER) {
        buf[..piece.len()].copy_from_slice(piece);
    }
    let n = p.len().min(EDGE_BUFFER);
    Payload { len: p.len(), bytes: buf[..n].to_vec() }
}

#[cfg(not(target_arch = "wasm32"))]
fn copy_payload(p: &[u8], _edge_buffer: bool) -> Payload {
    Payload { len: p.len(), bytes: p.to_vec() }
}

type Link<'a> = (Value, Option<(u16, &'a [u8])>);

fn link(link_type: u32, d: &[u8]) -> Result<Link<'_>, String> {
    match link_type {
        // Ethernet, with any number of 802.1Q / 802.1ad tags.
        1 => {
            need(d, 14, "ethernet header")?;
            let mut ethertype = be16(d, 12);
            let mut at = 14;
            let mut vlans = Vec::new();
            while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                need(d, at + 4, "vlan tag")?;
                vlans.push(be16(d, at) & 0x0fff);
                ethertype = be16(d, at + 2);
                at += 4;
            }
            let mut l = json!({"type": "ethernet", "dst": mac(&d[0..6]), "src": mac(&d[6..12])});
            if !vlans.is_empty() {
                l["vlans"] = json!(vlans);
            }
            l["ethertype"] = json!(format!("0x{ethertype:04x}"));
            Ok((l, Some((ethertype, &d[at..]))))
        }
        // Raw IP.
        101 | 228 | 229 | 12 | 14 => {
            need(d, 1, "ip version")?;
            let ethertype = if d[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
            Ok((json!({"type": "raw"}), Some((ethertype, d))))
        }
        // BSD loopback: a 4-byte address family in host order.
        0 | 108 => {
            need(d, 4, "loopback header")?;
            // Written in the capturing host's byte order: a small number either way round.
            let le = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            let family = if le > 0xffff { le.swap_bytes() } else { le };
            let ethertype = if family == 2 { 0x0800 } else { 0x86dd };
            Ok((json!({"type": "null", "family": family}), Some((ethertype, &d[4..]))))
        }
        // Linux cooked capture v1.
        113 => {
            need(d, 16, "sll header")?;
            let ethertype = be16(d, 14);
            Ok((
                json!({"type": "sll", "ethertype": format!("0x{ethertype:04x}")}),
                Some((ethertype, &d[16..])),
            ))
        }
        other => Ok((json!({"type": format!("linktype-{other}")}), None)),
    }
}

type Ip<'a> = (Value, u8, String, String, &'a [u8]);

fn ip(ethertype: u16, d: &[u8]) -> Result<Ip<'_>, String> {
    match ethertype {
        0x0800 => {
            need(d, 20, "ipv4 header")?;
            let ihl = usize::from(d[0] & 0x0f) * 4;
            if ihl < 20 {
                return Err(format!("ipv4 header length {ihl} is under 20"));
            }
            need(d, ihl, "ipv4 options")?;
            let total = usize::from(be16(d, 2)).clamp(ihl, d.len());
            let (src, dst) = (ipv4(&d[12..16]), ipv4(&d[16..20]));
            let v = json!({
                "version": 4, "src": src, "dst": dst, "ttl": d[8], "protocol": d[9],
                "total_len": be16(d, 2), "id": be16(d, 4), "dont_fragment": d[6] & 0x40 != 0,
            });
            Ok((v, d[9], src, dst, &d[ihl..total]))
        }
        0x86dd => {
            need(d, 40, "ipv6 header")?;
            let len = usize::from(be16(d, 4));
            let end = (40 + len).min(d.len());
            let (src, dst) = (ipv6(&d[8..24]), ipv6(&d[24..40]));
            let v = json!({
                "version": 6, "src": src, "dst": dst, "hop_limit": d[7], "next_header": d[6],
                "payload_len": len,
            });
            Ok((v, d[6], src, dst, &d[40..end]))
        }
        other => Err(format!("ethertype 0x{other:04x} is not IP")),
    }
}

fn transport(proto: u8, d: &[u8]) -> (Value, Option<(u16, u16)>, &[u8]) {
    match proto {
        6 if d.len() >= 20 => {
            let off = (usize::from(d[12] >> 4) * 4).clamp(20, d.len());
            let flags = d[13];
            let names: String =
                [(0x02, 'S'), (0x10, 'A'), (0x08, 'P'), (0x01, 'F'), (0x04, 'R'), (0x20, 'U')]
                    .iter()
                    .filter(|(bit, _)| flags & bit != 0)
                    .map(|(_, c)| *c)
                    .collect();
            let (s, t) = (be16(d, 0), be16(d, 2));
            let v = json!({
                "protocol": "tcp", "src_port": s, "dst_port": t,
                "seq": u32::from_be_bytes([d[4], d[5], d[6], d[7]]), "flags": names,
                "window": be16(d, 14),
            });
            (v, Some((s, t)), &d[off..])
        }
        17 if d.len() >= 8 => {
            let (s, t) = (be16(d, 0), be16(d, 2));
            let v = json!({"protocol": "udp", "src_port": s, "dst_port": t, "len": be16(d, 4)});
            (v, Some((s, t)), &d[8..])
        }
        1 | 58 if d.len() >= 4 => {
            let v =
                json!({"protocol": if proto == 1 { "icmp" } else { "icmpv6" }, "type": d[0], "code": d[1]});
            (v, None, &d[4..])
        }
        other => (json!({"protocol": other, "truncated": true}), None, d),
    }
}

fn guess(proto: u8, sport: u16, dport: u16, p: &[u8]) -> &'static str {
    let methods: [&[u8]; 5] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"HTTP/1."];
    if proto == 6 && methods.iter().any(|m| p.starts_with(m)) {
        "http"
    } else if proto == 6 && p.len() >= 3 && p[0] == 0x16 && p[1] == 3 {
        "tls"
    } else if proto == 6 && p.starts_with(b"SSH-") {
        "ssh"
    } else if proto == 17 && (sport == 53 || dport == 53) {
        "dns"
    } else if proto == 17 && (sport == 4789 || dport == 4789) {
        "vxlan"
    } else if proto == 17 && (sport == 443 || dport == 443) {
        "quic"
    } else {
        "unknown"
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => format!("ip-proto-{n}"),
    }
}

fn need(d: &[u8], n: usize, what: &str) -> Result<(), String> {
    if d.len() < n { Err(format!("{what}: {n} bytes needed, {} captured", d.len())) } else { Ok(()) }
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn ipv4(b: &[u8]) -> String {
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

fn ipv6(b: &[u8]) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    std::net::Ipv6Addr::from(a).to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// FNV-1a, 64 bits: a checksum with no dependency, the same on every build.
pub fn fnv1a64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(payload: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 1, 1, 0x08, 0x00];
        let total = (28 + payload) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 7, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, ((8 + payload) >> 8) as u8, (8 + payload) as u8, 0, 0]);
        f.extend((0..payload).map(|i| (i * 7) as u8));
        f
    }

    #[test]
    fn summarises_a_udp_packet() {
        let v = normalize(1, &udp(100), false);
        assert_eq!(v["flow"], "udp 10.0.0.1:40000 > 10.0.0.2:53");
        assert_eq!(v["payload"]["len"], 100);
        assert_eq!(v["guess"], "dns");
        assert_eq!(v["ip"]["ttl"], 64);
    }

    #[test]
    fn native_ignores_the_edge_switch() {
        let p = udp(4000);
        assert_eq!(normalize(1, &p, true), normalize(1, &p, false));
    }

    #[test]
    fn short_packets_are_described_not_panicked_on() {
        let p = udp(10);
        for n in 0..p.len() {
            let v = normalize(1, &p[..n], false);
            assert!(v.get("error").is_some() || v.get("payload").is_some(), "{n}: {v}");
        }
        assert!(normalize(1, &p[..10], false)["error"].as_str().unwrap().contains("ethernet header"));
    }
}
