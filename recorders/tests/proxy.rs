//! The recording proxy end to end: a real upstream on 127.0.0.1 (plain and TLS), real HTTP/1.1
//! and HTTP/2 clients, the proxy in this process, and the corpus it wrote read back.

#[path = "support/upstream.rs"]
mod upstream;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use corpora::{Case, CaseData, Corpus, CorpusWriter, Flag, HttpExchange, Source, WriterOptions};
use recorders::proxy::{ProxyError, ProxyOptions, ProxyStats};
use recorders::redact::{RedactRules, Redactor};
use upstream::{SSE_EVENTS, SSE_GAP, client, runtime, send};

/// A canary secret in the shape of a provider API key (caught by the default patterns).
const KEY: &str = "sk-canaryCANARYcanary0123456789abcdefXYZ";
/// A secret no pattern knows, caught only by the configured JSON path.
const PLAIN: &str = "plainsecretvalue42";

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<Result<(CorpusWriter, ProxyStats), ProxyError>>>,
    dir: tempfile::TempDir,
}

fn redactor() -> Redactor {
    let rules = RedactRules { json_paths: vec!["$.user.api_token".into()], ..RedactRules::default() };
    Redactor::new([7u8; 32], &rules).unwrap()
}

fn start(opts: ProxyOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let writer = CorpusWriter::create(dir.path().join("corpus"), WriterOptions::default()).unwrap();
    let bound = recorders::proxy::bind(&opts).unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        bound.run(writer, redactor(), async move {
            let _ = rx.await;
        })
    });
    Running { addr, stop: Some(tx), handle: Some(handle), dir }
}

fn opts(upstream: &str) -> ProxyOptions {
    ProxyOptions::new("127.0.0.1:0".parse().unwrap(), upstream)
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the proxy, closes the corpus and reads every case back, in recorded order.
    fn finish(mut self) -> (Vec<Case>, ProxyStats, tempfile::TempDir) {
        let _ = self.stop.take().unwrap().send(());
        let (writer, stats) = self.handle.take().unwrap().join().unwrap().unwrap();
        writer.close().unwrap();
        let corpus = Corpus::open(self.dir.path().join("corpus")).unwrap();
        let cases: Vec<Case> = corpus.cases().map(|c| c.unwrap()).collect();
        (cases, stats, std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()))
    }
}

fn http(case: &Case) -> &HttpExchange {
    match case.data() {
        CaseData::Http(x) => x,
        other => panic!("not an HTTP case: {other:?}"),
    }
}

fn header<'a>(headers: &'a [corpora::Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.0.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.1.as_bytes()).ok())
}

fn by_target<'a>(cases: &'a [Case], target: &str) -> Vec<&'a Case> {
    cases.iter().filter(|c| http(c).request.target == target).collect()
}

#[test]
fn a_json_completion_over_http1_and_http2_passes_through_and_is_recorded() {
    let up = upstream::start(false, KEY);
    let px = start(opts(&up.url));
    let rt = runtime();
    let (via_h1, via_h2, direct) = rt.block_on(async {
        let body = |n: u32| format!("{{\"n\":{n},\"prompt\":\"hello\"}}");
        let h =
            [("content-type", "application/json"), ("authorization", "Bearer sk-testkeytestkeytestkey0001")];
        let a = send(&client(false), "POST", &px.url("/v1/chat/completions"), &h, body(1)).await.unwrap();
        let b = send(&client(true), "POST", &px.url("/v1/chat/completions"), &h, body(2)).await.unwrap();
        let d = send(&client(false), "POST", &format!("{}/v1/chat/completions", up.url), &h, body(1))
            .await
            .unwrap();
        (a, b, d)
    });
    assert_eq!(via_h1.status, 200);
    // The upstream numbers its answers (`sample`), like a model that answers the same prompt
    // differently each time; apart from that the proxy changes nothing in the answer.
    let unsampled = |body: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v.as_object_mut().unwrap().remove("sample").expect("numbered");
        v
    };
    assert_eq!(unsampled(&via_h1.body), unsampled(&direct.body), "the proxy changes nothing in the answer");
    assert_eq!(via_h2.status, 200);
    assert!(String::from_utf8_lossy(&via_h2.body).contains("cmpl-2"));
    // What the upstream saw through the proxy: its own authority, no hop-by-hop headers.
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for s in &seen[..2] {
        assert_eq!(s.header("host"), Some(up.addr.to_string().as_str()), "{s:?}");
        assert!(s.header("connection").is_none() && s.header(recorders::proxy::TOKEN_HEADER).is_none());
        assert_eq!(s.header("authorization"), Some("Bearer sk-testkeytestkeytestkey0001"));
    }
    let (cases, stats, _dir) = px.finish();
    assert_eq!((stats.requests, stats.recorded, stats.upstream_errors), (2, 2, 0), "{stats:?}");
    assert_eq!(cases.len(), 2);
    let versions: Vec<&str> = cases.iter().map(|c| http(c).request.version.as_str()).collect();
    assert!(versions.contains(&"HTTP/1.1") && versions.contains(&"HTTP/2"), "{versions:?}");
    for c in &cases {
        let x = http(c);
        assert!(matches!(c.source, Source::Proxy { sequence: 1, .. }), "{:?}", c.source);
        assert!(c.time_ns.is_some());
        assert_eq!(x.request.method, "POST");
        let r = x.response.as_ref().unwrap();
        assert_eq!(r.status, 200);
        let got: serde_json::Value = serde_json::from_slice(r.body.as_bytes()).unwrap();
        let n = serde_json::from_slice::<serde_json::Value>(x.request.body.as_bytes()).unwrap()["n"].clone();
        assert_eq!(got["id"], format!("cmpl-{n}"));
        // Credentials became placeholders: the request's bearer token, the response's cookie.
        assert!(header(&x.request.headers, "authorization").unwrap().starts_with("[redacted:"));
        assert!(header(&r.headers, "set-cookie").unwrap().starts_with("[redacted:"));
        assert!(c.flags.iter().any(|f| matches!(f, Flag::Redacted { .. })), "{:?}", c.flags);
    }
}

#[test]
fn a_server_sent_events_stream_reaches_the_client_chunk_by_chunk_and_keeps_its_timing() {
    let up = upstream::start(false, KEY);
    let px = start(opts(&up.url));
    let rt = runtime();
    let got = rt.block_on(async {
        send(&client(false), "POST", &px.url("/v1/stream"), &[("content-type", "application/json")], "{}")
            .await
            .unwrap()
    });
    let (cases, _, _dir) = px.finish();
    assert_eq!(got.status, 200);
    let span = SSE_GAP * (SSE_EVENTS as u32 - 1);
    // Client side: the first event arrived long before the last one (nothing held back).
    assert!(got.frames.len() >= SSE_EVENTS, "{:?}", got.frames);
    let (first, last) = (got.frames[0].0, got.frames[SSE_EVENTS - 1].0);
    assert!(first < SSE_GAP, "first event after {first:?}: held back");
    assert!(last - first >= span * 8 / 10, "events {first:?}..{last:?}, upstream spread them over {span:?}");
    // Recorded side: one mark per event, at the same offsets from the first event as the client
    // saw them (within 60 ms). From the first event, not from the request: the client's clock
    // starts when it sends the request and the recording's when the response starts, and on
    // a loaded machine the round trip between them took 80 ms once.
    let r = http(&cases[0]).response.clone().unwrap();
    assert_eq!(r.body.as_bytes(), &got.body[..], "the recording has the whole stream");
    assert!(r.chunks.len() >= SSE_EVENTS, "{:?}", r.chunks);
    let slices = r.chunk_slices();
    let recorded_first = Duration::from_nanos(slices[0].0);
    assert!(recorded_first < SSE_GAP, "first event recorded after {recorded_first:?}: held back");
    for (i, (slice, frame)) in slices.iter().zip(&got.frames).take(SSE_EVENTS).enumerate() {
        assert!(std::str::from_utf8(slice.1).unwrap().contains(&format!("\"index\":{i}")));
        let recorded = Duration::from_nanos(slice.0) - recorded_first;
        let skew = recorded.abs_diff(frame.0 - first);
        assert!(
            skew < Duration::from_millis(60),
            "event {i}: recorded {recorded:?} after the first, client saw it {:?} after the first",
            frame.0 - first
        );
    }
    let spread = Duration::from_nanos(slices[SSE_EVENTS - 1].0 - slices[0].0);
    assert!(spread >= span * 8 / 10, "recorded spread {spread:?}");
}

#[test]
fn bodies_past_the_cap_stream_through_whole_and_are_recorded_cut_and_flagged() {
    let up = upstream::start(false, KEY);
    let cap = 64 << 10;
    let px = start(ProxyOptions { max_body: cap, ..opts(&up.url) });
    let rt = runtime();
    let big_request: Vec<u8> = (0..200_000u32).map(|i| b'0' + (i % 10) as u8).collect();
    let (large, echo) = rt.block_on(async {
        let c = client(false);
        let l = send(&c, "GET", &px.url("/large?n=1048576"), &[], "").await.unwrap();
        let e = send(&c, "POST", &px.url("/echo"), &[("content-type", "text/plain")], big_request.clone())
            .await
            .unwrap();
        (l, e)
    });
    assert_eq!(large.body.len(), 1 << 20, "the client gets every byte");
    assert_eq!(echo.body, big_request);
    let (cases, stats, _dir) = px.finish();
    assert_eq!((stats.request_truncated, stats.response_truncated), (1, 2), "{stats:?}");
    let l = by_target(&cases, "/large?n=1048576")[0];
    let r = http(l).response.as_ref().unwrap();
    assert_eq!(r.body.len(), cap);
    assert_eq!(r.body.as_bytes(), &large.body[..cap]);
    assert!(l.flags.contains(&Flag::ResponseTruncated { kept: cap as u64 }), "{:?}", l.flags);
    assert!(!l.flags.iter().any(|f| matches!(f, Flag::RequestTruncated { .. })));
    let e = by_target(&cases, "/echo")[0];
    assert_eq!(http(e).request.body.as_bytes(), &big_request[..cap]);
    assert!(e.flags.contains(&Flag::RequestTruncated { kept: cap as u64 }), "{:?}", e.flags);
}

/// Found by the session-15 audit: a gzip body cut at the cap did not decode, so it was stored
/// raw, secret and all; a key in the query string was stored as sent; and the proxy offered
/// the upstream codings it cannot decode.
#[test]
fn a_compressed_body_cut_at_the_cap_and_a_key_in_the_query_are_redacted() {
    let up = upstream::start(false, KEY);
    let cap = 64 << 10;
    let px = start(ProxyOptions { max_body: cap, ..opts(&up.url) });
    let rt = runtime();
    let google = "AIzaSyA0123456789abcdefghijklmnopqrstu";
    rt.block_on(async {
        let c = client(false);
        let g = send(&c, "GET", &px.url("/gzip-large"), &[("accept-encoding", "zstd, gzip;q=0.8, *")], "")
            .await
            .unwrap();
        assert_eq!(g.headers["content-encoding"], "gzip");
        assert!(g.body.len() > cap, "the client gets the whole body: {}", g.body.len());
        let q = send(&c, "GET", &px.url(&format!("/v1/models?key={google}&access_token=opaque-77")), &[], "")
            .await
            .unwrap();
        assert_eq!(q.status, 404);
    });
    // The upstream was offered only what the recorder decodes.
    assert_eq!(up.seen.lock().unwrap()[0].header("accept-encoding"), Some("gzip;q=0.8"));
    let (cases, _stats, dir) = px.finish();
    for f in walk(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [KEY, google, "opaque-77"] {
            assert!(!holds(&bytes, secret), "{} holds {secret}", f.display());
        }
    }
    let r = redactor();
    let large = by_target(&cases, "/gzip-large")[0];
    let resp = http(large).response.as_ref().unwrap();
    assert!(resp.body.as_bytes().starts_with(b"{\"owner\":\"[redacted:"), "stored decoded and redacted");
    assert!(large.flags.contains(&Flag::ResponseTruncated { kept: cap as u64 }), "{:?}", large.flags);
    assert!(large.flags.iter().any(|f| matches!(f, Flag::Redacted { .. })), "{:?}", large.flags);
    let models = cases.iter().find(|c| http(c).request.target.starts_with("/v1/models?")).unwrap();
    let target = &http(models).request.target;
    assert!(target.contains(&r.placeholder(google.as_bytes())), "{target}");
    for c in &cases {
        assert!(r.scan(c).is_empty(), "{:?}", r.scan(c));
    }
}

#[test]
fn fifty_concurrent_clients_are_all_answered_and_all_recorded() {
    let up = upstream::start(false, KEY);
    let px = start(opts(&up.url));
    let rt = runtime();
    let url = px.url("/v1/chat/completions");
    let answers = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..50u32 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                // Each task its own client (own connections); every other one speaks HTTP/2.
                let cl = client(c % 2 == 1);
                let mut ok = Vec::new();
                for k in 0..4u32 {
                    let n = c * 100 + k;
                    let body = format!("{{\"n\":{n},\"prompt\":\"p{n}\"}}");
                    let g =
                        send(&cl, "POST", &url, &[("content-type", "application/json")], body).await.unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
                    assert_eq!(v["choices"][0]["message"]["content"], format!("echo: p{n}"));
                    ok.push(n);
                }
                ok
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(answers.len(), 200);
    let (cases, stats, _dir) = px.finish();
    assert_eq!((stats.requests, stats.recorded), (200, 200), "{stats:?}");
    assert!(stats.connections >= 50, "{stats:?}");
    let mut ns: Vec<u64> = cases
        .iter()
        .map(|c| {
            serde_json::from_slice::<serde_json::Value>(http(c).request.body.as_bytes()).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ns.sort();
    let mut want: Vec<u64> = answers.iter().map(|&n| n as u64).collect();
    want.sort();
    assert_eq!(ns, want);
}

#[test]
fn an_https_upstream_is_verified_and_a_bad_certificate_fails_the_exchange_clearly() {
    let up = upstream::start(true, KEY);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, up.ca_pem.as_ref().unwrap()).unwrap();
    let rt = runtime();
    let body = "{\"n\":7,\"prompt\":\"tls\"}";
    let h = [("content-type", "application/json")];

    let trusted = start(ProxyOptions { ca_certs: vec![ca.clone()], ..opts(&up.url) });
    let ok =
        rt.block_on(send(&client(false), "POST", &trusted.url("/v1/chat/completions"), &h, body)).unwrap();
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("echo: tls"));
    let (cases, stats, _d1) = trusted.finish();
    assert_eq!((stats.recorded, stats.upstream_errors), (1, 0));
    // The TLS upstream offers h2 by ALPN, and the proxy took it.
    assert_eq!(up.seen.lock().unwrap()[0].version, "HTTP/2.0");
    assert_eq!(http(&cases[0]).response.as_ref().unwrap().version, "HTTP/2");

    // Without the test CA the certificate is unknown: a 502 that says so, and a recorded
    // request without response.
    let untrusted = start(opts(&up.url));
    let bad =
        rt.block_on(send(&client(false), "POST", &untrusted.url("/v1/chat/completions"), &h, body)).unwrap();
    assert_eq!(bad.status, 502);
    let text = String::from_utf8_lossy(&bad.body).to_string();
    assert!(text.contains("certificate") && text.contains(&up.url), "{text}");
    let (cases, stats, _d2) = untrusted.finish();
    assert_eq!(stats.upstream_errors, 1);
    assert!(cases[0].flags.contains(&Flag::NoResponse));
    assert!(cases[0].tags["upstream_error"].contains("certificate"), "{:?}", cases[0].tags);
    // A missing CA file is an error naming it.
    let e = recorders::proxy::bind(&ProxyOptions {
        ca_certs: vec![dir.path().join("nope.pem")],
        ..opts(&up.url)
    });
    assert!(matches!(&e, Err(ProxyError::Ca { path, .. }) if path.ends_with("nope.pem")), "{:?}", e.err());
}

/// Sends raw bytes and returns the status line's code and the whole answer.
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    });
                    if len.is_some_and(|l| rest.len() >= l) {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[test]
fn safe_by_default_no_open_listen_no_open_proxy_and_a_token_when_asked() {
    let up = upstream::start(false, KEY);
    // Anything but loopback needs a token.
    let open = recorders::proxy::bind(&ProxyOptions::new("0.0.0.0:0".parse().unwrap(), &up.url));
    let msg = open.err().expect("refused").to_string();
    assert!(msg.contains("--auth-token") && msg.contains("0.0.0.0"), "{msg}");

    let token = "tok-3f9a1c0b7d2e";
    let px = start(ProxyOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        auth_token: Some(token.into()),
        ..opts(&up.url)
    });
    let addr: SocketAddr = format!("127.0.0.1:{}", px.addr.port()).parse().unwrap();
    let get = |extra: &str| format!("GET /large?n=3 HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    let (code, text) = raw(addr, &get(""));
    assert_eq!(code, 407, "{text}");
    assert!(text.contains("x-replay-token"), "{text}");
    assert_eq!(raw(addr, &get("X-Replay-Token: wrong-token-3f9a1c0\r\n")).0, 407);
    let (code, text) = raw(addr, &get(&format!("X-Replay-Token: {token}\r\n")));
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("abc"), "{text}");
    assert_eq!(raw(addr, &get(&format!("Proxy-Authorization: Bearer {token}\r\n"))).0, 200);
    // No open proxy: CONNECT, and absolute-form requests for other hosts, are refused.
    let auth = format!("X-Replay-Token: {token}\r\n");
    let (code, text) =
        raw(addr, &format!("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n{auth}\r\n"));
    assert_eq!(code, 405, "{text}");
    assert!(text.contains("not an open proxy"), "{text}");
    let (code, text) = raw(
        addr,
        &format!("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n{auth}Connection: close\r\n\r\n"),
    );
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("example.com") && text.contains(&up.url), "{text}");
    // Absolute form naming the upstream itself is fine.
    let (code, _) = raw(
        addr,
        &format!("GET {}/large?n=2 HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n", up.url, up.addr),
    );
    assert_eq!(code, 200);
    let (cases, stats, dir) = px.finish();
    assert_eq!(stats.refused.get("bad_token"), Some(&2), "{stats:?}");
    assert_eq!(stats.refused.get("connect"), Some(&1));
    assert_eq!(stats.refused.get("other_host"), Some(&1));
    assert_eq!(up.seen.lock().unwrap().len(), 3, "only the three allowed requests reached the upstream");
    assert!(up.seen.lock().unwrap().iter().all(|s| s.header("x-replay-token").is_none()));
    // Two distinct requests, one sent twice with different proxy credentials, which are not
    // recorded: the same request again, kept as its repeat.
    assert_eq!(cases.len(), 3);
    assert_eq!(cases.iter().map(|c| c.repeat()).collect::<Vec<_>>(), [0, 1, 0]);
    assert_eq!(stats.repeats, 1, "{stats:?}");
    // The token is never recorded, and the corpus files are private.
    for f in walk(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!contains(&bytes, token.as_bytes()), "{} holds the token", f.display());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        if !f.ends_with("lock") {
            assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every way the bytes of a file could hide a string: raw, and gzip/zlib/deflate-decoded from
/// every offset where such a stream could start.
fn holds(bytes: &[u8], secret: &str) -> bool {
    use std::io::Read;
    if contains(bytes, secret.as_bytes()) {
        return true;
    }
    for i in 0..bytes.len().saturating_sub(2) {
        let tail = &bytes[i..];
        let mut out = Vec::new();
        // What a stream yields before it ends or breaks counts too: a stream cut short (a body
        // cut at the cap) still gives up its start.
        if tail.starts_with(&[0x1f, 0x8b]) {
            let _ = flate2::read::GzDecoder::new(tail).take(1 << 20).read_to_end(&mut out);
        } else if tail[0] == 0x78 && (u16::from(tail[0]) << 8 | u16::from(tail[1])) % 31 == 0 {
            let _ = flate2::read::ZlibDecoder::new(tail).take(1 << 20).read_to_end(&mut out);
        }
        if contains(&out, secret.as_bytes()) {
            return true;
        }
    }
    false
}

#[test]
fn redaction_canary_no_secret_reaches_the_corpus_files_raw_or_decompressed() {
    let up = upstream::start(false, KEY);
    let px = start(opts(&up.url));
    let rt = runtime();
    let bearer = format!("Bearer {KEY}");
    let cookie = format!("session={KEY}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
        ("proxy-authorization", bearer.as_str()),
        ("cookie", cookie.as_str()),
        ("x-api-key", KEY),
        ("api-key", KEY),
        ("openai-organization", KEY),
        ("openai-project", KEY),
    ];
    let body = format!("{{\"n\":1,\"prompt\":\"my key is {KEY}\",\"user\":{{\"api_token\":\"{PLAIN}\"}}}}");
    rt.block_on(async {
        let c = client(false);
        let a = send(&c, "POST", &px.url("/v1/chat/completions"), &headers, body.clone()).await.unwrap();
        assert_eq!(a.status, 200);
        // The gzip body reaches the client compressed, exactly as the upstream sent it.
        let g = send(&c, "GET", &px.url("/gzip"), &headers[1..], "").await.unwrap();
        assert_eq!(g.headers["content-encoding"], "gzip");
        let mut plain = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&g.body[..]).read_to_string(&mut plain).unwrap();
        assert!(plain.contains(KEY));
        let k = send(&c, "GET", &px.url("/chunked"), &headers[1..], "").await.unwrap();
        assert!(String::from_utf8_lossy(&k.body).contains(KEY));
        // The upstream got the real credentials: redaction is for the recording only.
        assert_eq!(up.seen.lock().unwrap()[0].header("x-api-key"), Some(KEY));
    });
    let (cases, stats, dir) = px.finish();
    assert_eq!((stats.recorded, stats.redacted), (3, 3), "{stats:?}");
    for f in walk(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [KEY, PLAIN] {
            assert!(!holds(&bytes, secret), "{} holds {secret}", f.display());
        }
    }
    let r = redactor();
    for c in &cases {
        let json = serde_json::to_string(c).unwrap();
        assert!(!json.contains(KEY) && !json.contains(PLAIN), "{json}");
        assert!(r.scan(c).is_empty(), "{:?}", r.scan(c));
        let x = http(c);
        let resp = x.response.as_ref().unwrap();
        let decoded = corpora::body::decoded(&resp.headers, resp.body.as_bytes()).unwrap();
        assert!(!contains(&decoded, KEY.as_bytes()));
    }
    // Equal secrets got one placeholder, wherever they were.
    let completion = &by_target(&cases, "/v1/chat/completions")[0];
    let x = http(completion);
    let placeholder = r.placeholder(KEY.as_bytes());
    assert_eq!(header(&x.request.headers, "x-api-key"), Some(placeholder.as_str()));
    assert!(String::from_utf8_lossy(x.request.body.as_bytes()).contains(&placeholder));
    assert!(String::from_utf8_lossy(x.request.body.as_bytes()).contains(&r.placeholder(PLAIN.as_bytes())));
    let Some(Flag::Redacted { fields }) =
        completion.flags.iter().find(|f| matches!(f, Flag::Redacted { .. }))
    else {
        panic!("not flagged")
    };
    for f in [
        "request header authorization",
        "request header cookie",
        "request body",
        "response header set-cookie",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
}
