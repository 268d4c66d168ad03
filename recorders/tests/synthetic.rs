//! Captures built in code (etherparse frames, pcap-file writers), one per reassembly, HTTP,
//! link-type and file-format case the recorder must handle.

use std::io::{Cursor, Write};
use std::time::Duration;

use corpora::{Case, CaseData, Corpus, CorpusWriter, Flag, HttpExchange, WriterOptions};
use etherparse::{PacketBuilder, VlanId};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::{DataLink, Endianness, TsResolution};
use recorders::pcap::{Keep, Options, Recorder, Stats};

const C: [u8; 4] = [10, 0, 0, 1];
const S: [u8; 4] = [10, 0, 0, 2];
const T0: i64 = 1_700_000_000_000_000_000;

#[derive(Clone, Copy)]
enum F {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
}

/// One TCP connection's packets, with sequence numbers tracked.
struct Conn {
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
    pkts: Vec<Vec<u8>>,
}

impl Conn {
    fn new(cport: u16, cseq: u32, sseq: u32) -> Conn {
        Conn { cport, sport: 80, cseq, sseq, pkts: Vec::new() }
    }
    fn frame(&self, from_client: bool, seq: u32, ack: u32, flag: Option<F>, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sp, dp) =
            if from_client { (C, S, self.cport, self.sport) } else { (S, C, self.sport, self.cport) };
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 65535);
        let b = match flag {
            Some(F::Syn) => b.syn(),
            Some(F::SynAck) => b.syn().ack(ack),
            Some(F::Fin) => b.fin().ack(ack),
            Some(F::Rst) => b.rst(),
            Some(F::Ack) | None => b.ack(ack),
        };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }
    /// Client sends `first`, server answers `second`, client acks: the handshake or the close.
    fn three_way(&mut self, first: F, second: F) -> &mut Self {
        let p = self.frame(true, self.cseq, self.sseq, Some(first), b"");
        self.pkts.push(p);
        let p = self.frame(false, self.sseq, self.cseq + 1, Some(second), b"");
        self.pkts.push(p);
        self.cseq += 1;
        self.sseq += 1;
        let p = self.frame(true, self.cseq, self.sseq, Some(F::Ack), b"");
        self.pkts.push(p);
        self
    }
    fn handshake(&mut self) -> &mut Self {
        self.three_way(F::Syn, F::SynAck)
    }
    /// A data segment (not pushed: the caller decides order).
    fn seg(&mut self, from_client: bool, data: &[u8]) -> Vec<u8> {
        let (seq, ack) = if from_client { (self.cseq, self.sseq) } else { (self.sseq, self.cseq) };
        let p = self.frame(from_client, seq, ack, None, data);
        if from_client {
            self.cseq = self.cseq.wrapping_add(data.len() as u32);
        } else {
            self.sseq = self.sseq.wrapping_add(data.len() as u32);
        }
        p
    }
    fn send(&mut self, from_client: bool, data: &[u8]) -> &mut Self {
        let p = self.seg(from_client, data);
        self.pkts.push(p);
        self
    }
    fn fin(&mut self) -> &mut Self {
        self.three_way(F::Fin, F::Fin)
    }
    fn rst(&mut self, from_client: bool) -> &mut Self {
        let seq = if from_client { self.cseq } else { self.sseq };
        let p = self.frame(from_client, seq, 0, Some(F::Rst), b"");
        self.pkts.push(p);
        self
    }
}

fn pcap_bytes(frames: &[Vec<u8>], datalink: DataLink, endianness: Endianness, ts: TsResolution) -> Vec<u8> {
    let header =
        PcapHeader { datalink, endianness, ts_resolution: ts, snaplen: 65535, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let t = Duration::from_nanos((T0 + i as i64 * 1_000_000) as u64);
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f)).unwrap();
    }
    w.into_writer()
}

fn eth(frames: &[Vec<u8>]) -> Vec<u8> {
    pcap_bytes(frames, DataLink::ETHERNET, Endianness::Little, TsResolution::MicroSecond)
}

fn record_with(bytes: Vec<u8>, opts: Options) -> (Stats, Vec<Case>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let w = CorpusWriter::create(&dir, WriterOptions { sync_interval: None, ..WriterOptions::default() })
        .unwrap();
    let mut r = Recorder::new(w, opts);
    r.read(Box::new(Cursor::new(bytes)), "test.pcap").unwrap();
    let (w, stats) = r.finish().unwrap();
    w.close().unwrap();
    let cases = Corpus::open(&dir).unwrap().cases().collect::<Result<Vec<_>, _>>().unwrap();
    let d = &stats.disposition;
    assert_eq!(
        d.http + d.packet_cases + d.duplicate_packets + d.not_kept,
        stats.packets,
        "every packet once"
    );
    (stats, cases)
}

fn record(bytes: Vec<u8>) -> (Stats, Vec<Case>) {
    record_with(bytes, Options::default())
}

fn exchanges(cases: &[Case]) -> Vec<(&HttpExchange, &[Flag])> {
    cases
        .iter()
        .filter_map(|c| match c.data() {
            CaseData::Http(x) => Some((x, c.flags.as_slice())),
            _ => None,
        })
        .collect()
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[test]
fn one_thread_and_two_threads_write_the_same_corpus() {
    let mut c = Conn::new(999, 1, 1);
    c.handshake().send(true, GET).send(false, &ok("same")).send(true, b"GET /b HTTP/1.1\r\n\r\n");
    c.send(false, &ok("again")).fin();
    let mut frames = c.pkts.clone();
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(C, S, 64).udp(1, 2).write(&mut udp, b"u").unwrap();
    frames.push(udp);
    let (s1, one) = record_with(eth(&frames), Options { one_thread: true, ..Options::default() });
    let (s2, two) = record(eth(&frames));
    assert_eq!(one, two);
    assert_eq!((s1.exchanges, s1.disposition.clone()), (s2.exchanges, s2.disposition.clone()));
    assert_eq!(s2.exchanges, 2);
}

#[test]
fn a_plain_exchange() {
    let mut c = Conn::new(1000, 100, 900);
    c.handshake().send(true, GET).send(false, &ok("hello")).fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].0.request.target, "/a");
    assert_eq!(x[0].0.request.headers[0].0, "Host");
    let r = x[0].0.response.as_ref().unwrap();
    assert_eq!((r.status, r.body.as_bytes()), (200, &b"hello"[..]));
    assert!(x[0].1.is_empty());
    assert_eq!(stats.disposition.http, stats.packets);
    assert_eq!(cases[0].time_ns, Some(T0 + 3_000_000), "the time of the request's first packet");
    assert_eq!(cases[0].tags["server"], "10.0.0.2:80");
}

#[test]
fn out_of_order_segments_are_put_back_in_order() {
    let mut c = Conn::new(1001, 5, 7);
    c.handshake().send(true, GET);
    let resp = ok("0123456789abcdefghij");
    let a = c.seg(false, &resp[..10]);
    let b = c.seg(false, &resp[10..25]);
    let d = c.seg(false, &resp[25..]);
    c.pkts.extend([d, a, b]);
    c.fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"0123456789abcdefghij");
    assert!(x[0].1.is_empty(), "{:?}", x[0].1);
    assert_eq!(stats.tcp.gaps, 0);
}

#[test]
fn overlapping_retransmission_with_other_bytes_keeps_the_first_and_is_flagged() {
    let mut c = Conn::new(1002, 1, 1);
    c.handshake().send(true, GET);
    let resp = ok("AAAAAAAAAA");
    let start = c.sseq;
    c.send(false, &resp[..resp.len() - 10]);
    let first = c.seg(false, b"AAAAAAAAAA");
    c.pkts.push(first);
    // A retransmission of the body with different bytes, overlapping the head's tail.
    let mut fake = resp[resp.len() - 12..resp.len() - 10].to_vec();
    fake.extend_from_slice(b"BBBBBBBBBB");
    let p = c.frame(false, start + (resp.len() - 12) as u32, c.cseq, None, &fake);
    c.pkts.push(p);
    c.fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"AAAAAAAAAA", "first data wins");
    assert!(x[0].1.contains(&Flag::RetransmitConflict), "{:?}", x[0].1);
    assert_eq!(stats.tcp.retransmission_conflicts, 1);
}

#[test]
fn a_stream_without_syn_is_reassembled() {
    let mut c = Conn::new(1003, 1000, 2000);
    c.send(true, GET).send(false, &ok("x")).send(true, GET).send(false, &ok("y"));
    let (stats, cases) = record(eth(&c.pkts));
    assert_eq!(stats.tcp.without_syn, 1);
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1, "identical requests are one case");
    assert_eq!(stats.exchanges + stats.duplicate_exchanges, 2);
}

#[test]
fn a_hole_flags_the_exchange_with_the_bytes_missing_and_parsing_goes_on() {
    let mut c = Conn::new(1004, 1, 1);
    c.handshake().send(true, GET);
    let resp = ok("0123456789");
    c.send(false, &resp[..resp.len() - 10]);
    c.send(false, b"0123");
    let _lost = c.seg(false, b"456");
    c.send(false, b"789");
    c.send(true, b"GET /b HTTP/1.1\r\n\r\n").send(false, &ok("next")).fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"0123789", "nothing invented");
    assert!(x[0].1.contains(&Flag::TcpGap { bytes_missing: 3 }), "{:?}", x[0].1);
    assert!(x[1].1.is_empty());
    assert_eq!(x[1].0.response.as_ref().unwrap().body.as_bytes(), b"next");
    assert_eq!((stats.tcp.gaps, stats.tcp.bytes_missing), (1, 3));
}

/// Audit finding (session 15): a hole that ran past the end of a body flagged only that body;
/// the message found after it, which may have lost its start (here a whole response is gone,
/// so the next one pairs with the wrong request), was not flagged.
#[test]
fn a_hole_past_the_end_of_a_body_flags_what_follows_it() {
    let mut c = Conn::new(1031, 1, 1);
    c.handshake();
    c.send(true, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n");
    let (r1, r2, r3) = (ok("0123456789"), ok("second"), ok("third"));
    c.send(false, &r1[..r1.len() - 5]);
    let mut lost = r1[r1.len() - 5..].to_vec();
    lost.extend_from_slice(&r2);
    let _lost = c.seg(false, &lost);
    c.send(false, &r3).fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    let by_body = |b: &[u8]| {
        x.iter().find(|(e, _)| e.response.as_ref().is_some_and(|r| r.body.as_bytes() == b)).unwrap()
    };
    assert!(by_body(b"01234").1.contains(&Flag::TcpGap { bytes_missing: 5 }), "{x:?}");
    let third = by_body(b"third");
    assert!(third.1.contains(&Flag::TcpGap { bytes_missing: r2.len() as u64 }), "{:?}", third.1);
    assert_eq!(stats.tcp.bytes_missing, 5 + r2.len() as u64);
}

/// Audit finding (session 15): a keep-alive connection the capture began in the middle of a
/// body was taken for another protocol for good, its later exchanges lost to packet cases.
#[test]
fn a_connection_seen_mid_message_is_found_to_be_http_at_its_next_message() {
    let mut c = Conn::new(1032, 5000, 9000); // no handshake: the capture starts here
    c.send(true, b"\"tail of a body the capture missed the start of\"}");
    c.send(true, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    c.send(false, &ok("next"));
    c.send(true, b"...more}\nGET /third HTTP/1.1\r\nHost: h\r\n\r\n"); // inside one segment
    c.send(false, &ok("third"));
    c.fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    let targets: Vec<&str> = x.iter().map(|(e, _)| e.request.target.as_str()).collect();
    assert_eq!(targets, ["/next", "/third"], "{x:?}");
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"next");
    assert_eq!(stats.tcp.without_syn, 1);
    assert!(
        stats.http_bytes_skipped >= 49,
        "the tail before it is counted as skipped: {}",
        stats.http_bytes_skipped
    );

    // The same tail, then a message start after a line break in the same segment.
    let mut c = Conn::new(1033, 5000, 9000);
    c.send(true, b"end of a previous body\r\nPOST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    c.send(false, &ok("posted")).fin();
    let (_, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!(x[0].0.request.target, "/p");

    // Seen mid-stream and never HTTP: still packet cases once the search bound is passed.
    let mut c = Conn::new(1034, 5000, 9000);
    for _ in 0..70 {
        c.send(true, &[0x42u8; 1000]);
    }
    c.fin();
    let (stats, cases) = record(eth(&c.pkts));
    assert!(exchanges(&cases).is_empty());
    assert!(stats.disposition.packet_cases > 0, "{:?}", stats.disposition);
}

#[test]
fn a_reset_in_the_middle_of_a_body_keeps_what_came() {
    let mut c = Conn::new(1005, 1, 1);
    c.handshake().send(true, GET);
    c.send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").rst(false);
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"0123456789");
    assert!(x[0].1.contains(&Flag::ResponseTruncated { kept: 10 }), "{:?}", x[0].1);
    assert_eq!(stats.tcp.resets, 1);
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut c = Conn::new(1006, u32::MAX - 20, u32::MAX - 3);
    c.handshake().send(true, b"POST /w HTTP/1.1\r\nContent-Length: 30\r\n\r\n").send(true, &[b'z'; 30]);
    c.send(false, &ok("wrapped body")).fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x[0].0.request.body.as_bytes(), &[b'z'; 30]);
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"wrapped body");
    assert_eq!(stats.tcp.gaps, 0);
}

#[test]
fn pipelined_requests_pair_with_responses_in_order() {
    let mut c = Conn::new(1007, 1, 1);
    c.handshake().send(true, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n");
    c.send(true, b"GET /4 HTTP/1.1\r\n\r\n");
    let mut resp = ok("one");
    resp.extend(ok("two"));
    resp.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    resp.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
    c.send(false, &resp).fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    let got: Vec<(String, Option<u16>, Vec<u8>)> = x
        .iter()
        .map(|(e, _)| {
            let r = e.response.as_ref();
            (e.request.target.clone(), r.map(|r| r.status), r.map_or(vec![], |r| r.body.0.clone()))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/1".into(), Some(200), b"one".to_vec()),
            ("/2".into(), Some(200), b"two".to_vec()),
            ("/3".into(), Some(200), vec![]),
            ("/4".into(), Some(204), vec![]),
        ],
        "HEAD has no body even with Content-Length; 204 has none"
    );
    assert_eq!(stats.requests_without_response, 0);
}

#[test]
fn chunked_bodies_with_trailers_are_kept_as_sent() {
    let mut c = Conn::new(1008, 1, 1);
    let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n";
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    resp.extend_from_slice(body);
    c.handshake().send(true, GET);
    // Split the body at awkward places.
    c.send(false, &resp[..50]).send(false, &resp[50..53]).send(false, &resp[53..]);
    c.send(true, b"GET /next HTTP/1.1\r\n\r\n").send(false, &ok("n")).fin();
    let (_, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    let r = x[0].0.response.as_ref().unwrap();
    assert_eq!(r.body.as_bytes(), body, "raw, as sent");
    assert_eq!(r.trailers.len(), 1);
    assert_eq!((r.trailers[0].0.as_str(), r.trailers[0].1.as_bytes()), ("X-Checksum", &b"abc"[..]));
    assert_eq!(x[1].0.request.target, "/next");
}

#[test]
fn expect_100_continue_keeps_the_interim_response() {
    let mut c = Conn::new(1009, 1, 1);
    c.handshake()
        .send(true, b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .send(false, b"HTTP/1.1 100 Continue\r\n\r\n")
        .send(true, b"data")
        .send(false, &ok("stored"))
        .fin();
    let (_, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].0.interim.len(), 1);
    assert_eq!(x[0].0.interim[0].status, 100);
    assert_eq!(x[0].0.request.body.as_bytes(), b"data");
    assert_eq!(x[0].0.response.as_ref().unwrap().status, 200);
}

#[test]
fn upgrade_ends_http_parsing_and_close_delimited_bodies_end_at_fin() {
    let mut c = Conn::new(1010, 1, 1);
    c.handshake()
        .send(true, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .send(false, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        .send(true, b"\x81\x05hello-not-http")
        .fin();
    let (stats, cases) = record(eth(&c.pkts));
    assert_eq!(exchanges(&cases).len(), 1);
    assert_eq!(stats.connections.get("http_upgraded"), Some(&1));

    let mut c = Conn::new(1011, 1, 1);
    c.handshake().send(true, GET).send(false, b"HTTP/1.0 200 OK\r\n\r\nuntil the ").send(false, b"end").fin();
    let (_, cases) = record(eth(&c.pkts));
    assert_eq!(exchanges(&cases)[0].0.response.as_ref().unwrap().body.as_bytes(), b"until the end");
}

#[test]
fn a_request_never_answered_is_kept_flagged() {
    let mut c = Conn::new(1012, 1, 1);
    c.handshake().send(true, GET);
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert!(x[0].0.response.is_none());
    assert!(x[0].1.contains(&Flag::NoResponse));
    assert_eq!(stats.requests_without_response, 1);
}

#[test]
fn non_http_tcp_and_udp_become_packet_cases_and_keep_selects() {
    let mut c = Conn::new(1013, 1, 1);
    c.handshake().send(true, b"\x16\x03\x01\x02\x00 tls hello").send(false, b"\x16\x03\x03 server").fin();
    let mut frames = c.pkts.clone();
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(C, S, 64).udp(5353, 53).write(&mut udp, b"dns?").unwrap();
    frames.push(udp);
    let (stats, cases) = record(eth(&frames));
    assert_eq!(exchanges(&cases).len(), 0);
    assert_eq!(stats.disposition.packet_cases as usize, frames.len());
    let udp_case = cases
        .iter()
        .find(|c| matches!(c.data(), CaseData::Packet(p) if p.flow.is_some_and(|f| f.protocol == 17)));
    assert!(udp_case.is_some());
    assert_eq!(stats.connections.get("not_http"), Some(&1));

    let (stats, cases) = record_with(
        eth(&frames),
        Options { keep: Keep { http: true, packets: false }, ..Options::default() },
    );
    assert!(cases.is_empty());
    assert_eq!(stats.disposition.not_kept as usize, frames.len());
}

/// The same GET over other link layers.
#[test]
fn link_types_vlan_qinq_sll_sll2_null_raw_ipv6() {
    let tcp_ip = |v6: bool| {
        let mut out = Vec::new();
        let b =
            if v6 { PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64) } else { PacketBuilder::ipv4(C, S, 64) };
        b.tcp(4000, 80, 1, 100).ack(1).write(&mut out, GET).unwrap();
        out
    };
    let vlan = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(VlanId::try_new(7).unwrap())
            .ipv4(C, S, 64)
            .tcp(4000, 80, 1, 100)
            .ack(1)
            .write(&mut out, GET)
            .unwrap();
        out
    };
    let qinq = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(VlanId::try_new(7).unwrap(), VlanId::try_new(8).unwrap())
            .ipv4(C, S, 64)
            .tcp(4000, 80, 1, 100)
            .ack(1)
            .write(&mut out, GET)
            .unwrap();
        out
    };
    let sll = [&[0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00][..], &tcp_ip(false)].concat();
    let sll2 =
        [&[0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0][..], &tcp_ip(false)].concat();
    let null = [&2u32.to_le_bytes()[..], &tcp_ip(false)].concat();
    let cases: [(&str, DataLink, Vec<u8>); 6] = [
        ("vlan", DataLink::ETHERNET, vlan),
        ("qinq", DataLink::ETHERNET, qinq),
        ("sll", DataLink::LINUX_SLL, sll),
        ("sll2", DataLink::LINUX_SLL2, sll2),
        ("null", DataLink::NULL, null),
        ("raw ipv6", DataLink::RAW, tcp_ip(true)),
    ];
    for (name, link, frame) in cases {
        let bytes = pcap_bytes(&[frame], link, Endianness::Little, TsResolution::MicroSecond);
        let (stats, cases) = record(bytes);
        assert_eq!(exchanges(&cases).len(), 1, "{name}: {stats:?}");
        assert!(stats.malformed.is_empty(), "{name}: {:?}", stats.malformed);
    }
}

#[test]
fn big_endian_nanosecond_pcap_and_gzip() {
    let mut c = Conn::new(1014, 1, 1);
    c.handshake().send(true, GET).send(false, &ok("be")).fin();
    let bytes = pcap_bytes(&c.pkts, DataLink::ETHERNET, Endianness::Big, TsResolution::NanoSecond);
    let (stats, cases) = record(bytes.clone());
    assert_eq!(exchanges(&cases).len(), 1);
    assert_eq!(stats.first_ns, Some(T0));
    assert_eq!(stats.last_ns, Some(T0 + (c.pkts.len() as i64 - 1) * 1_000_000));

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let (stats2, cases2) = record(gz.finish().unwrap());
    assert_eq!(cases2, cases);
    assert_eq!(stats2.packets, stats.packets);
}

#[test]
fn pcapng_with_two_interfaces_and_their_own_resolution() {
    let mut c = Conn::new(1015, 1, 1);
    c.handshake().send(true, GET).send(false, &ok("ng")).fin();
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    let ns = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    let us = InterfaceDescriptionBlock { linktype: DataLink::RAW, snaplen: 0, options: vec![] };
    w.write_pcapng_block(ns).unwrap();
    w.write_pcapng_block(us).unwrap();
    for (i, f) in c.pkts.iter().enumerate() {
        // pcap-file writes the Duration's nanoseconds as the raw tick count.
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos((T0 + i as i64) as u64),
            original_len: f.len() as u32,
            data: f.as_slice().into(),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
    }
    // A raw-IP packet on interface 1, whose ticks are microseconds (the default).
    let mut udp = Vec::new();
    PacketBuilder::ipv4(C, S, 64).udp(1, 2).write(&mut udp, b"u").unwrap();
    let t_us = (T0 / 1000 + 5) as u64;
    let epb = EnhancedPacketBlock {
        interface_id: 1,
        timestamp: Duration::from_nanos(t_us),
        original_len: udp.len() as u32,
        data: udp.as_slice().into(),
        options: vec![],
    };
    w.write_pcapng_block(epb).unwrap();
    // A block type nobody knows: a warning, and reading goes on.
    let mut bytes = w.into_inner();
    let block_at = bytes.len();
    bytes.extend_from_slice(&0x0000_0F00u32.to_le_bytes());
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&[0xAA; 4]);
    bytes.extend_from_slice(&16u32.to_le_bytes());
    let (stats, cases) = record(bytes);
    assert_eq!(exchanges(&cases).len(), 1);
    assert_eq!(stats.first_ns, Some(T0));
    assert_eq!(stats.last_ns, Some(T0 + 5000), "interface 1 counts in microseconds");
    assert_eq!(stats.udp, 1);
    assert_eq!(stats.capture_warnings.get("unknown_block"), Some(&1));
    // The warning itself names the file, the byte offset and the packet number.
    assert_eq!(
        stats.warnings,
        [format!(
            "test.pcap: offset {block_at}, packet {}: pcapng block of unknown type 0xf00 skipped",
            stats.packets + 1
        )]
    );
}

/// Audit finding (session 15): a segment of a request body lost by the capture left the
/// request unfinished until the connection closed, so every later response on the connection
/// was counted as one without a request and dropped. The server's acknowledgment past the hole
/// now settles it as a gap at once.
#[test]
fn a_hole_in_a_request_body_is_settled_by_the_servers_ack_and_pairing_goes_on() {
    let mut c = Conn::new(1030, 1, 1);
    c.handshake();
    c.send(true, b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\n\r\n");
    c.send(true, b"0123456789");
    let _lost = c.seg(true, b"abcdefghij"); // the capture never saw it
    c.send(true, b"ABCDEFGHIJ");
    c.send(false, &ok("one"));
    c.send(true, b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    c.send(false, &ok("two"));
    c.fin();
    let (stats, cases) = record(eth(&c.pkts));
    assert_eq!(stats.responses_without_request, 0, "{stats:?}");
    assert_eq!(stats.requests_without_response, 0);
    let ex = exchanges(&cases);
    let find = |target: &str| {
        ex.iter().find(|(x, _)| x.request.target == target).unwrap_or_else(|| panic!("{target}"))
    };
    let (one, flags) = find("/1");
    assert_eq!(one.response.as_ref().unwrap().body.as_bytes(), b"one");
    assert_eq!(one.request.body.as_bytes(), b"0123456789ABCDEFGHIJ", "what was captured, around the hole");
    assert!(flags.contains(&Flag::TcpGap { bytes_missing: 10 }), "{flags:?}");
    let (two, flags) = find("/2");
    assert_eq!(two.response.as_ref().unwrap().body.as_bytes(), b"two");
    assert!(flags.is_empty(), "{flags:?}");
    assert_eq!((stats.tcp.gaps, stats.tcp.bytes_missing, stats.tcp.forced_gaps), (1, 10, 0));
}

/// Audit finding (session 15): the interface list grew with every description block, 24 bytes
/// per 20-byte block, whatever the file's size. Past recorders::capture::MAX_INTERFACES they
/// are ignored with a warning; packets on the ones kept still read.
#[test]
fn a_flood_of_interface_descriptions_is_bounded() {
    let mut udp = Vec::new();
    PacketBuilder::ipv4(C, S, 64).udp(1, 2).write(&mut udp, b"u").unwrap();
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    let n = recorders::capture::MAX_INTERFACES + 1000;
    for _ in 0..n {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
    }
    for interface_id in [3, recorders::capture::MAX_INTERFACES as u32 + 10] {
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_micros(1),
            original_len: udp.len() as u32,
            data: udp.as_slice().into(),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
    }
    let (stats, _) = record(w.into_inner());
    assert_eq!(stats.udp, 1, "the packet on interface 3 is read, the one past the bound skipped");
    assert_eq!(stats.capture_warnings.get("bad_block"), Some(&1001), "{:?}", stats.capture_warnings);
    assert!(
        stats.warnings[0].contains("interfaces in one section; this one ignored"),
        "{:?}",
        stats.warnings[0]
    );
}

#[test]
fn bad_input_names_the_offset_and_packet_and_keeps_what_came_before() {
    let mut c = Conn::new(1016, 1, 1);
    c.handshake().send(true, GET).send(false, &ok("kept")).fin();
    let n = c.pkts.len();
    c.send(true, b"GET /after HTTP/1.1\r\n\r\n");
    let bytes = eth(&c.pkts);
    // Cut inside the last packet.
    let cut = bytes.len() - 10;
    let (stats, cases) = record(bytes[..cut].to_vec());
    assert_eq!(exchanges(&cases).len(), 1, "the exchange before the damage is kept");
    assert_eq!(stats.errors.len(), 1);
    let e = &stats.errors[0];
    let last_offset = 24 + c.pkts[..n].iter().map(|p| 16 + p.len()).sum::<usize>();
    assert!(e.contains(&format!("offset {last_offset}")) && e.contains(&format!("packet {}", n + 1)), "{e}");
    assert!(e.contains("truncated"), "{e}");

    // A record length beyond any packet.
    let mut bad = eth(&c.pkts[..2]);
    let second = 24 + 16 + c.pkts[0].len();
    bad[second + 8..second + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (stats, _) = record(bad);
    assert!(stats.errors[0].contains(&format!("offset {second}, packet 2")), "{}", stats.errors[0]);
    assert_eq!(stats.packets, 1);

    // Not a capture at all.
    let (stats, _) = record(b"this is not a capture file".to_vec());
    assert!(stats.errors[0].contains("not a pcap or pcapng capture"), "{}", stats.errors[0]);

    // A record longer than the snap length: a warning, and the packet is kept.
    let mut long = eth(&c.pkts[..1]);
    long[16..20].copy_from_slice(&20u32.to_le_bytes());
    let (stats, _) = record(long);
    assert_eq!(stats.packets, 1);
    assert_eq!(stats.capture_warnings.get("record_longer_than_snaplen"), Some(&1));
    assert!(stats.warnings[0].starts_with("test.pcap: offset 24, packet 1: "), "{:?}", stats.warnings);
}

#[test]
fn a_response_whose_request_was_before_the_capture_is_counted() {
    let mut c = Conn::new(1017, 1, 1);
    c.send(false, &ok("orphan")).send(true, GET).send(false, &ok("x"));
    let (stats, cases) = record(eth(&c.pkts));
    assert_eq!(stats.responses_without_request, 1);
    assert_eq!(exchanges(&cases).len(), 1);
}

/// Splits an Ethernet/IPv4 frame into IPv4 fragments of `chunk` payload bytes (a multiple of 8).
fn fragment(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let (hdr, payload) = ip.split_at(20);
    payload
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut h = hdr.to_vec();
            h[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
            let more = (i + 1) * chunk < payload.len();
            let field = ((i * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&field.to_be_bytes());
            [eth, &h, part].concat()
        })
        .collect()
}

#[test]
fn ipv4_fragments_are_reassembled_and_kept_as_packets() {
    let mut c = Conn::new(1018, 1, 1);
    c.handshake();
    let req = c.seg(
        true,
        b"POST /frag HTTP/1.1\r\nContent-Length: 40\r\n\r\n0123456789012345678901234567890123456789",
    );
    let mut frags = fragment(&req, 32);
    assert_eq!(frags.len(), 4);
    frags.swap(0, 2);
    c.pkts.extend(frags);
    c.send(false, &ok("got it")).fin();
    let (stats, cases) = record(eth(&c.pkts));
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1, "{stats:?}");
    assert_eq!(x[0].0.request.body.as_bytes(), b"0123456789012345678901234567890123456789");
    assert_eq!(stats.ipv4_fragments.fragments, 4);
    assert_eq!(stats.ipv4_fragments.reassembled, 1);
    assert_eq!(stats.disposition.packet_cases, 4, "each fragment is also a packet case");
}

#[test]
fn bodies_in_flight_on_all_connections_share_one_bound() {
    use recorders::http::HttpLimits;
    // Two connections send their request heads, then their 80-byte bodies interleaved: with
    // 100 bytes for all bodies in flight, the second is cut (and flagged), never mixed up.
    let mut a = Conn::new(2001, 1, 1);
    let mut b = Conn::new(2002, 1, 1);
    a.handshake();
    b.handshake();
    let head = b"POST /up HTTP/1.1\r\nContent-Length: 80\r\n\r\n";
    let mut frames = a.pkts.clone();
    frames.extend(b.pkts.clone());
    frames.push(a.seg(true, head));
    frames.push(b.seg(true, head));
    frames.push(a.seg(true, &[b'a'; 80]));
    frames.push(b.seg(true, &[b'b'; 80]));
    frames.push(a.seg(false, &ok("ok")));
    frames.push(b.seg(false, &ok("ok")));
    // Later, with the budget free again, a third body fits whole.
    frames.push(a.seg(true, b"POST /again HTTP/1.1\r\nContent-Length: 50\r\n\r\n"));
    frames.push(a.seg(true, &[b'c'; 50]));
    frames.push(a.seg(false, &ok("ok")));
    let opts = Options { http: HttpLimits { max_total: 100, ..HttpLimits::default() }, ..Options::default() };
    let (stats, cases) = record_with(eth(&frames), opts);
    let x = exchanges(&cases);
    let mut ups: Vec<(Vec<u8>, Vec<Flag>)> = x
        .iter()
        .filter(|(e, _)| e.request.target == "/up")
        .map(|(e, f)| (e.request.body.0.clone(), f.to_vec()))
        .collect();
    ups.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ups[0].0, vec![b'a'; 80], "the first body in is kept whole");
    let cut = &ups[1];
    assert!(cut.0.len() < 80 && cut.0.iter().all(|&c| c == b'b'), "a prefix of its own bytes only");
    assert!(cut.1.contains(&Flag::RequestTruncated { kept: cut.0.len() as u64 }), "{:?}", cut.1);
    // Every body that lost bytes says so.
    for (e, f) in &x {
        let r = e.response.as_ref().unwrap();
        if r.body.len() < 2 {
            assert!(f.iter().any(|f| matches!(f, Flag::ResponseTruncated { .. })), "{f:?}");
        }
    }
    assert!(stats.http_body_bytes_dropped >= 80 - cut.0.len() as u64);
}

#[test]
fn unanswered_pipelined_requests_are_bounded() {
    use recorders::http::HttpLimits;
    let mut c = Conn::new(2003, 1, 1);
    c.handshake().send(true, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    let opts = Options { http: HttpLimits { max_waiting: 2, ..HttpLimits::default() }, ..Options::default() };
    let (stats, cases) = record_with(eth(&c.pkts), opts);
    assert_eq!(exchanges(&cases).len(), 3);
    assert_eq!(stats.requests_without_response, 3);
}

#[test]
fn retransmission_windows_share_one_bound() {
    use recorders::tcp::Limits;
    let mut frames = Vec::new();
    for port in [3001, 3002] {
        let mut c = Conn::new(port, 1, 1);
        c.handshake().send(true, GET).send(false, &ok("x")).fin();
        frames.extend(c.pkts);
    }
    // Room for one 4 KiB window: on each connection the client's direction gets it and the
    // server's is delivered unchecked (counted); a closed connection returns its window.
    let opts = Options { tcp: Limits { recent_total: 4096, ..Limits::default() }, ..Options::default() };
    let (stats, cases) = record_with(eth(&frames), opts);
    assert_eq!(exchanges(&cases).len(), 1, "two identical exchanges are one case");
    assert_eq!(stats.exchanges + stats.duplicate_exchanges, 2);
    assert_eq!(stats.tcp.unchecked_directions, 2);
}

/// Review finding: a record whose original length claims gigabytes were cut off moved the
/// stream four gigabytes ahead, and everything after it was dropped as old.
#[test]
fn an_impossible_original_length_does_not_derail_the_stream() {
    let mut c = Conn::new(2004, 1, 1);
    c.handshake();
    let req = b"POST /x HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234567890123456789";
    // Head (40 bytes) and 10 body bytes, then the other 10.
    let first = c.seg(true, &req[..50]);
    c.send(true, &req[50..]).send(false, &ok("fine")).fin();
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for (i, f) in c.pkts.iter().enumerate() {
        let t = Duration::from_micros(i as u64 + 10);
        if i == 3 {
            // The first data segment, cut 10 bytes short, claiming 4 GB on the wire.
            let cut = &first[..first.len() - 10];
            w.write_packet(&PcapPacket::new(t, u32::MAX, cut)).unwrap();
        }
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f)).unwrap();
    }
    let (stats, cases) = record(w.into_writer());
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1, "{stats:?}");
    assert!(x[0].1.contains(&Flag::TcpGap { bytes_missing: 10 }), "{:?}", x[0].1);
    assert_eq!(x[0].0.request.body.as_bytes(), b"0123456789", "the second half; nothing invented");
    assert_eq!(x[0].0.response.as_ref().unwrap().body.as_bytes(), b"fine");
    assert_eq!(stats.tcp.bytes_missing, 10);
}

/// Review finding: a 101 whose request was before the capture did not end HTTP parsing, so the
/// WebSocket bytes after it were parsed as HTTP.
#[test]
fn a_101_without_its_request_still_ends_http_parsing() {
    let mut c = Conn::new(2005, 1, 1);
    c.send(false, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    c.send(false, b"\x81\x05hello").send(true, b"\x81\x85masked").fin();
    let (stats, _) = record(eth(&c.pkts));
    assert_eq!(stats.responses_without_request, 1);
    assert_eq!(stats.connections.get("http_upgraded"), Some(&1), "{:?}", stats.connections);
    assert_eq!(stats.http_malformed_heads, 0);
    assert_eq!(stats.http_bytes_skipped, 0);
}

/// Review finding (session 8): a SYN scan of 1,000,000 ports grew the flow table to 4.7 GB.
/// Open flows are bounded now: past the bound the least recently active are closed as idle
/// ones are, counted, and their packets still become cases; an active connection goes on.
#[test]
fn a_flood_of_connections_is_bounded_and_the_active_ones_are_kept() {
    use recorders::tcp::Limits;
    let mut real = Conn::new(4000, 1, 1);
    real.handshake();
    let mut frames = real.pkts.clone();
    let head = b"POST /kept HTTP/1.1\r\nContent-Length: 30\r\n\r\n";
    let mut pieces = vec![real.seg(true, head)];
    for chunk in [b"0123456789".as_slice(), b"abcdefghij", b"ABCDEFGHIJ"] {
        pieces.push(real.seg(true, chunk));
    }
    pieces.push(real.seg(false, &ok("fine")));
    // 40 connections that never carry a byte, the real one's segments among them.
    for i in 0..40u16 {
        let scan = Conn::new(5000 + i, 7, 7);
        frames.push(scan.frame(true, 7, 0, Some(F::Syn), b""));
        // Never three scans in a row while the exchange is in progress: it stays among the
        // most recently active.
        if i % 2 == 1 && !pieces.is_empty() {
            frames.push(pieces.remove(0));
        }
    }
    frames.append(&mut pieces);
    let opts = Options { tcp: Limits { max_flows: 4, ..Limits::default() }, ..Options::default() };
    let (stats, cases) = record_with(eth(&frames), opts);
    let x = exchanges(&cases);
    assert_eq!(x.len(), 1, "{:?}", x.iter().map(|e| &e.0.request.target).collect::<Vec<_>>());
    let (e, flags) = x[0];
    assert_eq!(e.request.target, "/kept");
    assert_eq!(e.request.body.0, b"0123456789abcdefghijABCDEFGHIJ");
    assert_eq!(e.response.as_ref().unwrap().body.0, b"fine");
    assert!(flags.is_empty(), "{flags:?}");
    assert_eq!(stats.tcp.connections, 41);
    // All but the four open at the end were closed early (the real one too, once its
    // exchange was done), and every SYN is a packet case: nothing went missing.
    assert_eq!(stats.tcp.evicted, 37);
    assert_eq!(stats.disposition.packet_cases, 40);
    assert_eq!(stats.connections.get("no_payload"), Some(&40));
}

#[test]
fn unfinished_heads_on_all_connections_share_one_bound() {
    use recorders::http::HttpLimits;
    let mut a = Conn::new(4101, 1, 1);
    let mut b = Conn::new(4102, 1, 1);
    a.handshake();
    b.handshake();
    let mut frames = a.pkts.clone();
    frames.extend(b.pkts.clone());
    // Both send 60 bytes of a head; together the bound holds 100.
    let mut part = b"GET /long HTTP/1.1\r\nX-Pad: ".to_vec();
    part.resize(60, b'a');
    frames.push(a.seg(true, &part));
    frames.push(b.seg(true, &part));
    frames.push(a.seg(true, b"\r\n\r\n"));
    frames.push(b.seg(true, b"\r\n\r\n"));
    frames.push(a.seg(false, &ok("a")));
    // B's next request, with the bound free again, is whole.
    frames.push(b.seg(true, b"GET /next HTTP/1.1\r\n\r\n"));
    frames.push(b.seg(false, &ok("b")));
    let opts =
        Options { http: HttpLimits { max_heads_total: 100, ..HttpLimits::default() }, ..Options::default() };
    let (stats, cases) = record_with(eth(&frames), opts);
    let mut got: Vec<(String, Vec<u8>)> = exchanges(&cases)
        .iter()
        .map(|(e, _)| {
            (e.request.target.clone(), e.response.as_ref().map(|r| r.body.0.clone()).unwrap_or_default())
        })
        .collect();
    got.sort();
    // A's head fit and pairs with its response; B's did not: skipped and counted.
    assert_eq!(got, vec![("/long".to_string(), b"a".to_vec()), ("/next".to_string(), b"b".to_vec())]);
    assert_eq!(stats.http_heads_dropped, 1);
    assert_eq!(stats.http_bytes_skipped, 64, "the 60 bytes held, then the rest up to the next request");
    assert_eq!(stats.http_malformed_heads, 0);
}

#[test]
fn a_connection_that_ends_inside_a_head_is_counted() {
    let mut c = Conn::new(4201, 1, 1);
    let part = b"GET /cut HTTP/1.1\r\nHost: x\r\n";
    c.handshake().send(true, GET).send(false, &ok("x")).send(true, part).fin();
    let (stats, cases) = record(eth(&c.pkts));
    assert_eq!(exchanges(&cases).len(), 1);
    assert_eq!(stats.http_heads_incomplete, 1);
    assert_eq!(stats.http_bytes_skipped, part.len() as u64);
}
