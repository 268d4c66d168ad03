//! Generates the bundled sample corpus `corpora/samples/demo`:
//!
//! ```text
//! cargo run -p corpora --example gen_samples -- corpora/samples/demo
//! ```
//!
//! Deterministic: the same source makes the same bytes (a test checks the checked-in corpus
//! against a fresh run). It holds the three kinds of case:
//! - copilot editor contexts as message cases (several languages and scripts, some prefixes
//!   near the serializer's truncation limit), each with the old serializer's (`v1`) request
//!   recorded as production's answer;
//! - chat-completion HTTP exchanges (JSON and server-sent-event streams with chunk timing)
//!   whose request bodies are editor contexts as the demo's HTTP front end receives them;
//! - Ethernet/IPv4 packets of realistic mixed sizes and protocols (DNS, QUIC, VXLAN over UDP;
//!   HTTP and TLS over TCP), some with payloads over 1500 bytes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use corpora::{
    Blob, Case, CaseData, ChunkMark, CorpusWriter, Flag, FlowKey, Header, HttpExchange, HttpRequest,
    HttpResponse, Message, Packet, RecordedOutput, Source, WriterOptions,
};

/// A small deterministic generator (xorshift64*), so the corpus does not depend on a crate's
/// random stream staying the same across versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const BASE_NS: i64 = 1_795_000_000_000_000_000;

const SNIPPETS: &[(&str, &str, &str)] = &[
    (
        "rust",
        "src/lib.rs",
        "fn parse(input: &str) -> Result<Config, Error> {\n    let mut cfg = Config::default();\n    for line in input.lines() {",
    ),
    (
        "python",
        "app/views.py",
        "def handle(request):\n    # Обработка запроса пользователя\n    data = json.loads(request.body)\n    return",
    ),
    (
        "typescript",
        "web/src/cart.ts",
        "export function total(items: Item[]): number {\n  // 合計金額を計算する\n  return items.reduce((sum, it) =>",
    ),
    (
        "go",
        "cmd/server/main.go",
        "func main() {\n\tmux := http.NewServeMux()\n\t// 🚀 start the server\n\tmux.HandleFunc(\"/health\",",
    ),
    (
        "java",
        "src/main/java/Shop.java",
        "public class Shop {\n    // Größe des Warenkorbs\n    private final List<Item> items = new ArrayList<>();\n    public int size() {",
    ),
    (
        "c",
        "src/ring.c",
        "static size_t ring_push(struct ring *r, const uint8_t *buf, size_t len) {\n    size_t n = 0;\n    while (n < len &&",
    ),
];

/// Filler in several scripts, so prefixes reach the truncation limit in characters and bytes.
const FILLER: &[&str] = &[
    "    // keep going\n",
    "    // продолжаем обработку\n",
    "    // 次の要素を処理する\n",
    "    // 🚀🚀 fast path\n",
    "    let value = compute(x, y);\n",
];

fn editor_context(rng: &mut Rng, i: usize) -> (String, String) {
    let (lang, path, prefix) = *rng.pick(SNIPPETS);
    let line = 10 + rng.below(400);
    let column = rng.below(60);
    // Most prefixes are short; a third are grown to around the 1024 limit, where counting
    // characters and counting bytes disagree on multi-byte text.
    let mut prefix = prefix.to_string();
    if rng.below(3) == 0 {
        let filler = *rng.pick(FILLER);
        let target = 900 + rng.below(400) as usize;
        while prefix.chars().count() < target {
            prefix.push_str(filler);
        }
    } else {
        let repeat = rng.below(4) as usize;
        for _ in 0..repeat {
            let filler: &str = rng.pick::<&str>(FILLER);
            prefix.push_str(filler);
        }
    }
    let diagnostics = if rng.below(3) == 0 {
        format!(r#"[{{"line":{},"severity":"warning","message":"unused variable `x{i}`"}}]"#, line - 2)
    } else {
        "[]".to_string()
    };
    let input = format!(
        r#"{{"file":"{path}","language":"{lang}","cursor":{{"line":{line},"column":{column}}},"prefix":{},"suffix":"\n}}\n","diagnostics":{diagnostics},"open_tabs":["{path}","README.md"]}}"#,
        json_string(&prefix)
    );
    let output = demo::serializer::serialize_json(input.as_bytes(), demo::serializer::Version::V1)
        .expect("the generator writes valid editor contexts");
    (input, String::from_utf8(output).expect("JSON is UTF-8"))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn chat_exchange(rng: &mut Rng, i: usize) -> Case {
    let (body, _) = editor_context(rng, i);
    let stream = rng.below(2) == 0;
    let request = HttpRequest {
        method: "POST".into(),
        target: "/v1/complete".into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            Header::new("Host", "api.example.test"),
            Header::new("Content-Type", "application/json"),
            Header::new("Authorization", "Bearer [redacted:3f9a1c]"),
            Header::new("Content-Length", body.len().to_string()),
        ],
        body: body.into(),
        trailers: Vec::new(),
    };
    let words = ["let ", "mut ", "total ", "= ", "0;", "\n", "for ", "item ", "in ", "items ", "{"];
    let n = 3 + rng.below(8) as usize;
    let mut case = if stream {
        let mut body = String::new();
        let mut chunks = Vec::new();
        let mut t = 180_000_000u64 + rng.below(50_000_000);
        for k in 0..n {
            chunks.push(ChunkMark { at: body.len() as u64, offset_ns: t });
            let delta = json_string(words[k % words.len()]);
            body.push_str(&format!(
                "data: {{\"id\":\"cmpl-{i}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{delta}}}}}]}}\n\n"
            ));
            t += 15_000_000 + rng.below(30_000_000);
        }
        chunks.push(ChunkMark { at: body.len() as u64, offset_ns: t });
        body.push_str("data: [DONE]\n\n");
        let response = HttpResponse {
            headers: vec![
                Header::new("Content-Type", "text/event-stream"),
                Header::new("Cache-Control", "no-cache"),
                Header::new("Date", "Wed, 18 Nov 2026 11:06:40 GMT"),
            ],
            body: body.into(),
            chunks,
            ..HttpResponse::default()
        };
        Case::new(CaseData::Http(HttpExchange { request, interim: Vec::new(), response: Some(response) }))
    } else if rng.below(25) == 0 {
        Case::new(CaseData::Http(HttpExchange { request, interim: Vec::new(), response: None }))
            .with_flag(Flag::NoResponse)
    } else {
        let text: String = (0..n).map(|k| words[k % words.len()]).collect();
        let body = format!(
            r#"{{"id":"cmpl-{i}","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{n}}}}}"#,
            json_string(&text),
            40 + rng.below(400)
        );
        let response = HttpResponse {
            headers: vec![
                Header::new("Content-Type", "application/json"),
                Header::new("Content-Length", body.len().to_string()),
                Header::new("Date", "Wed, 18 Nov 2026 11:06:40 GMT"),
            ],
            body: body.into(),
            ..HttpResponse::default()
        };
        Case::new(CaseData::Http(HttpExchange { request, interim: Vec::new(), response: Some(response) }))
    };
    case.source = Source::Generated { by: "gen_samples".into() };
    case.time_ns = Some(BASE_NS + i as i64 * 1_500_000_000);
    case.tags.insert("route".into(), "chat".into());
    case
}

/// The IPv4 header checksum.
fn ip_checksum(ip: &[u8]) -> u16 {
    let mut sum: u32 = ip.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + UDP or TCP frame carrying `payload`, with a correct IPv4 checksum.
fn frame(i: usize, protocol: u8, sport: u16, dport: u16, payload: &[u8]) -> (Vec<u8>, FlowKey) {
    let src = Ipv4Addr::new(10, 0, (i % 7) as u8, 1 + (i % 200) as u8);
    let dst = Ipv4Addr::new(10, 1, 0, 9);
    let l4_len = if protocol == 6 { 20 } else { 8 };
    let mut f = Vec::with_capacity(34 + l4_len + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x09, 0x02, 0, 0, 0, (i % 256) as u8, 0x01, 0x08, 0x00]);
    let total = (20 + l4_len + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if protocol == 6 {
        f.extend_from_slice(&(1_000_000u32 + i as u32 * 7919).to_be_bytes()); // seq
        f.extend_from_slice(&(2_000_000u32 + i as u32 * 104_729).to_be_bytes()); // ack
        f.extend_from_slice(&[0x50, 0x18, 0x01, 0xf6, 0, 0, 0, 0]); // PSH|ACK, window 502
    } else {
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    let flow =
        FlowKey { protocol, src: IpAddr::V4(src), src_port: sport, dst: IpAddr::V4(dst), dst_port: dport };
    (f, flow)
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

fn packet(rng: &mut Rng, i: usize) -> Case {
    // Mostly small, a band around the 1500-byte MTU, and some jumbo/GRO-sized segments.
    let len = match rng.below(20) {
        0..=11 => 18 + rng.below(300),
        12..=16 => 1200 + rng.below(600),
        _ => 1600 + rng.below(7000),
    } as usize;
    let ephemeral = 40_000 + (i % 1000) as u16;
    let (data, flow) = match rng.below(6) {
        0 => {
            // DNS query-ish.
            let mut p = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(b"\x07example\x04test\x00\x00\x01\x00\x01");
            frame(i, 17, ephemeral, 53, &p)
        }
        1 => frame(i, 17, ephemeral, 443, &random_bytes(rng, len)),
        2 => frame(i, 17, ephemeral, 4789, &random_bytes(rng, len)),
        3 => {
            let mut p =
                format!("GET /items/{i} HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\n\r\n").into_bytes();
            let pad = len.saturating_sub(p.len());
            p.extend(std::iter::repeat_n(b'x', pad.min(64)));
            frame(i, 6, ephemeral, 80, &p)
        }
        4 => {
            let mut p = vec![0x17, 0x03, 0x03, (len >> 8) as u8, len as u8];
            p.extend(random_bytes(rng, len));
            frame(i, 6, 443, ephemeral, &p)
        }
        _ => frame(i, 6, ephemeral, 8443, &random_bytes(rng, len)),
    };
    let mut case = Case::new(CaseData::Packet(Packet {
        link_type: 1,
        data: Blob(data),
        original_len: None,
        interface: None,
        flow: Some(flow),
    }));
    case.source = Source::Generated { by: "gen_samples".into() };
    case.time_ns = Some(BASE_NS + i as i64 * 250_000);
    case
}

fn message(rng: &mut Rng, i: usize) -> Case {
    let (input, output) = editor_context(rng, i);
    let lang = serde_json::from_str::<serde_json::Value>(&input).expect("valid JSON")["language"]
        .as_str()
        .expect("a language")
        .to_string();
    let mut case = Case::new(CaseData::Message(Message {
        content_type: "application/json".into(),
        input: input.into(),
        output: Some(RecordedOutput { content_type: "application/json".into(), data: output.into() }),
    }));
    case.source = Source::Generated { by: "gen_samples".into() };
    case.time_ns = Some(BASE_NS + i as i64 * 2_000_000_000);
    case.tags.insert("language".into(), lang);
    case
}

/// Writes the sample corpus into `dir` (which must not exist or be empty).
pub fn generate(dir: &Path) -> Result<(), corpora::CorpusError> {
    let mut rng = Rng(0x5EED_2026_1121_0001);
    let mut w = CorpusWriter::create(dir, WriterOptions::default())?;
    for i in 0..300 {
        w.append(&message(&mut rng, i))?;
    }
    for i in 0..60 {
        w.append(&chat_exchange(&mut rng, i))?;
    }
    for i in 0..3000 {
        w.append(&packet(&mut rng, i))?;
    }
    w.close()?;
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpora/samples/demo".into());
    let dir = Path::new(&dir);
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove the old sample corpus");
    }
    if let Err(e) = generate(dir) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    // The lock file is per-machine state, not part of the sample.
    let _ = std::fs::remove_file(dir.join(corpora::LOCK_FILE));
    println!("wrote {}", dir.display());
}
