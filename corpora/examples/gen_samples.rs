//! Generates the bundled sample corpus `corpora/samples/demo`:
//!
//! ```text
//! cargo run -p corpora --example gen_samples -- corpora/samples/demo
//! ```
//!
//! Deterministic: the same source makes the same bytes (a test checks the checked-in corpus
//! against a fresh run). It holds the three kinds of case: copilot editor contexts as message
//! cases with a recorded request, chat-completion HTTP exchanges (JSON and server-sent-event
//! streams with chunk timing), and Ethernet/IPv4/UDP packets of mixed sizes, some over 1500
//! bytes.

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

fn editor_context(rng: &mut Rng, i: usize) -> (String, String) {
    let (lang, path, prefix) = *rng.pick(SNIPPETS);
    let line = 10 + rng.below(400);
    let column = rng.below(60);
    let repeat = 1 + rng.below(6) as usize;
    let prefix: String = std::iter::repeat_n(prefix, repeat).collect::<Vec<_>>().join("\n");
    let diagnostics = if rng.below(3) == 0 {
        format!(r#"[{{"line":{},"severity":"warning","message":"unused variable `x{i}`"}}]"#, line - 2)
    } else {
        "[]".to_string()
    };
    let input = format!(
        r#"{{"file":"{path}","language":"{lang}","cursor":{{"line":{line},"column":{column}}},"prefix":{},"suffix":"\n}}\n","diagnostics":{diagnostics},"open_tabs":["{path}","README.md"]}}"#,
        json_string(&prefix)
    );
    let output = format!(
        r#"{{"model":"copilot-chat","messages":[{{"role":"system","content":"You complete {lang} code."}},{{"role":"user","content":{}}}],"max_tokens":128,"temperature":0,"metadata":{{"editor":"demo","request":{i}}}}}"#,
        json_string(&prefix)
    );
    (input, output)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn chat_exchange(rng: &mut Rng, i: usize) -> Case {
    let (_, body) = editor_context(rng, i);
    let stream = rng.below(2) == 0;
    let body =
        if stream { body.replacen("\"temperature\"", "\"stream\":true,\"temperature\"", 1) } else { body };
    let request = HttpRequest {
        method: "POST".into(),
        target: "/v1/chat/completions".into(),
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
                Header::new("Transfer-Encoding", "chunked"),
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

/// An Ethernet + IPv4 + UDP frame with a `len`-byte payload and a correct IPv4 header checksum.
fn udp_frame(rng: &mut Rng, i: usize, len: usize) -> (Vec<u8>, FlowKey) {
    let src = Ipv4Addr::new(10, 0, (i % 7) as u8, 1 + (i % 200) as u8);
    let dst = Ipv4Addr::new(10, 1, 0, 9);
    let (sport, dport): (u16, u16) = (40_000 + (i % 1000) as u16, 4789);
    let mut f = Vec::with_capacity(42 + len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x09, 0x02, 0, 0, 0, (i % 256) as u8, 0x01, 0x08, 0x00]);
    let total = (20 + 8 + len) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = ip.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    for _ in 0..len {
        f.push(rng.below(256) as u8);
    }
    let flow = FlowKey {
        protocol: 17,
        src: IpAddr::V4(src),
        src_port: sport,
        dst: IpAddr::V4(dst),
        dst_port: dport,
    };
    (f, flow)
}

fn packet(rng: &mut Rng, i: usize) -> Case {
    // Mostly small, a band around the 1500-byte MTU, and some jumbo frames.
    let len = match rng.below(10) {
        0..=5 => 18 + rng.below(300),
        6..=7 => 1200 + rng.below(600),
        _ => 1600 + rng.below(7000),
    } as usize;
    let (data, flow) = udp_frame(rng, i, len);
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
    for i in 0..120 {
        w.append(&message(&mut rng, i))?;
    }
    for i in 0..60 {
        w.append(&chat_exchange(&mut rng, i))?;
    }
    for i in 0..400 {
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
