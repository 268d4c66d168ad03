//! The `http` target against a real HTTP/1.1 server on 127.0.0.1 started by the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corpora::{Case, CaseData, Header, HttpExchange, HttpRequest, Message, Packet};
use harness::{Config, Loaded, Outcome, Output, Registry};

/// A small keep-alive server; returns its port and the count of connections accepted.
fn server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { break };
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(s));
        }
    });
    (port, conns)
}

fn serve(s: TcpStream) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut head = Vec::new();
        loop {
            let n = r.read_until(b'\n', &mut head).unwrap_or(0);
            if n == 0 {
                return;
            }
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        req.parse(&head).unwrap();
        let (method, path) = (req.method.unwrap().to_string(), req.path.unwrap().to_string());
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let reply = |w: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
            let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n", body.len());
            let _ = w.write_all(body);
        };
        match path.strip_prefix("/base").unwrap_or(&path) {
            "/slow" => {
                std::thread::sleep(Duration::from_secs(3));
                reply(&mut w, "200 OK", "", b"late");
            }
            "/chunked" => {
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
                      5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
                );
            }
            "/gzip" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(b"compressed answer").unwrap();
                let gz = gz.finish().unwrap();
                reply(&mut w, "200 OK", "Content-Encoding: gzip\r\nContent-Type: text/plain\r\n", &gz);
            }
            "/close" => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
                return;
            }
            "/replay/message" => {
                reply(&mut w, "200 OK", "Content-Type: text/x-upper\r\n", &body.to_ascii_uppercase())
            }
            "/replay/packet" => reply(&mut w, "500 Internal Server Error", "", b"no packets here"),
            _ => {
                let echo = serde_json::json!({
                    "method": method, "path": path, "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                reply(
                    &mut w,
                    "201 Created",
                    "Content-Type: application/json\r\nConnection: keep-alive\r\nX-Served: 1\r\n",
                    echo.to_string().as_bytes(),
                );
            }
        }
    }
}

fn load(port: u16, keys: &str) -> Loaded {
    let toml = format!(
        "[targets.t]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/base\"\ntimeout_ms = 400\n{keys}\n"
    );
    let cfg = Config::parse(&toml, std::path::Path::new("replay.toml")).unwrap();
    cfg.load_target("t", &Registry::new()).unwrap()
}

fn exchange(method: &str, target: &str, headers: Vec<Header>, body: &[u8]) -> Case {
    Case::new(CaseData::Http(HttpExchange {
        request: HttpRequest {
            method: method.into(),
            target: target.into(),
            headers,
            body: body.to_vec().into(),
            ..HttpRequest::default()
        },
        ..HttpExchange::default()
    }))
}

fn http(o: Outcome) -> (u16, Vec<Header>, Vec<u8>) {
    match o {
        Outcome::Output { output: Output::Http { status, headers, body } } => (status, headers, body.0),
        other => panic!("expected an HTTP output, got {other:?}"),
    }
}

#[test]
fn a_recorded_request_is_sent_as_recorded_less_hop_by_hop_headers() {
    let (port, _) = server();
    let t = load(port, "");
    let case = exchange(
        "POST",
        "/v1/complete?x=1",
        vec![
            Header::new("Host", "api.example.test"),
            Header::new("Connection", "keep-alive"),
            Header::new("Transfer-Encoding", "chunked"),
            Header::new("X-Request-Id", "r-1"),
        ],
        b"4\r\nbody\r\n0\r\n\r\n",
    );
    let (status, headers, body) = http(t.target.observe(&case));
    assert_eq!(status, 201);
    // Hop-by-hop response headers are not part of the output.
    assert!(headers.iter().any(|h| h.0 == "X-Served"));
    assert!(
        !headers
            .iter()
            .any(|h| h.0.eq_ignore_ascii_case("connection") || h.0.eq_ignore_ascii_case("content-length"))
    );
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/base/v1/complete?x=1");
    assert_eq!(echo["body"], "body", "the chunked body is sent decoded");
    let sent: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    let get = |n: &str| sent.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    assert_eq!(get("host"), Some(format!("127.0.0.1:{port}").as_str()));
    assert_eq!(get("x-request-id"), Some("r-1"));
    assert_eq!(get("content-length"), Some("4"));
    assert_eq!(get("transfer-encoding"), None);

    let kept = load(port, "keep_host = true");
    let (_, _, body) = http(kept.target.observe(&case));
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sent: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    assert!(sent.contains(&("Host".into(), "api.example.test".into())), "{sent:?}");
}

#[test]
fn chunked_gzip_and_close_delimited_answers_are_decoded() {
    let (port, _) = server();
    let t = load(port, "");
    let (_, headers, body) = http(t.target.observe(&exchange("GET", "/chunked", vec![], b"")));
    assert_eq!(body, b"hello, world");
    assert!(!headers.iter().any(|h| h.0.eq_ignore_ascii_case("transfer-encoding")));
    let (_, headers, body) = http(t.target.observe(&exchange("GET", "/gzip", vec![], b"")));
    assert_eq!(body, b"compressed answer");
    assert!(!headers.iter().any(|h| h.0.eq_ignore_ascii_case("content-encoding")));
    let (_, _, body) = http(t.target.observe(&exchange("GET", "/close", vec![], b"")));
    assert_eq!(body, b"until the end");
    // And after a closed connection the next request still works.
    assert_eq!(http(t.target.observe(&exchange("GET", "/x", vec![], b""))).0, 201);
}

#[test]
fn connections_are_kept_alive() {
    let (port, conns) = server();
    let t = load(port, "concurrency = 1");
    for i in 0..25 {
        assert_eq!(http(t.target.observe(&exchange("GET", &format!("/n/{i}"), vec![], b""))).0, 201);
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[test]
fn a_slow_answer_is_a_timeout_and_a_closed_port_an_error() {
    let (port, _) = server();
    let t = load(port, "");
    let start = Instant::now();
    assert_eq!(t.target.observe(&exchange("GET", "/slow", vec![], b"")), Outcome::Timeout { after_ms: 400 });
    assert!(start.elapsed() < Duration::from_secs(3));
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = load(closed, "");
    match t.target.observe(&exchange("GET", "/", vec![], b"")) {
        Outcome::Error { message } => assert!(message.contains(&format!("127.0.0.1:{closed}")), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn messages_and_packets_are_posted_and_non_2xx_is_an_error() {
    let (port, _) = server();
    let t = load(port, "");
    let m = Case::new(CaseData::Message(Message {
        content_type: "text/plain".into(),
        input: b"shout".to_vec().into(),
        output: None,
    }));
    assert_eq!(t.target.observe(&m), Outcome::bytes("text/x-upper", b"SHOUT".to_vec()));
    let p = Case::new(CaseData::Packet(Packet {
        link_type: 1,
        data: vec![0u8; 20].into(),
        original_len: None,
        interface: None,
        flow: None,
    }));
    match t.target.observe(&p) {
        Outcome::Error { message } => {
            assert!(message.contains("HTTP 500") && message.contains("no packets here"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn https_urls_are_refused_at_load_with_a_reason() {
    let toml = "[targets.t]\nkind = \"http\"\nurl = \"https://example.test\"\n";
    let cfg = Config::parse(toml, std::path::Path::new("replay.toml")).unwrap();
    let e = cfg.load_target("t", &Registry::new()).unwrap_err().to_string();
    assert!(e.contains("https is not supported"), "{e}");
}
