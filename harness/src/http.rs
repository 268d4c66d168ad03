//! The `http` target: each case sent to a base URL over HTTP/1.1 with keep-alive.
//!
//! An HTTP exchange case is sent as recorded: method, target (under the base URL's path),
//! headers in order with the hop-by-hop ones dropped and `Host` rewritten (unless
//! `keep_host`), the body with its transfer coding removed and sent with a `Content-Length`.
//! The response's status, end-to-end headers and body (chunking and gzip/deflate removed) are
//! the output. Message and packet cases are POSTed to `message_path` / `packet_path` with
//! their media type; a 2xx answer's body is their output, any other status an error.
//!
//! The client is a small blocking one over `std::net` (one pooled connection per engine
//! worker): each worker has exactly one request in flight, which is what `concurrency` means,
//! and there is no runtime between the socket and the engine.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use corpora::{Case, CaseData, Header, body};

use crate::config::TargetDef;
use crate::input::Input;
use crate::observation::{Outcome, Output};
use crate::target::Target;

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_MAX_OUTPUT: usize = 64 << 20;
const DEFAULT_CONCURRENCY: usize = 16;
const MAX_HEAD: usize = 64 << 10;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The end-to-end headers of a message. With `decoded`, also drops those that described the
/// encoded body (`Content-Length`, `Content-Encoding`), since the body given is decoded.
pub fn end_to_end(headers: &[Header], decoded: bool) -> Vec<Header> {
    let named_by_connection: Vec<String> = headers
        .iter()
        .filter(|h| h.0.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(h.1.as_bytes())
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    headers
        .iter()
        .filter(|h| {
            let n = h.0.as_str().to_ascii_lowercase();
            !HOP_BY_HOP.contains(&n.as_str())
                && !named_by_connection.contains(&n)
                && !(decoded && (n == "content-length" || n == "content-encoding"))
        })
        .cloned()
        .collect()
}

/// An HTTP deployment.
pub struct HttpTarget {
    addr: String,
    authority: String,
    base_path: String,
    keep_host: bool,
    timeout: Duration,
    max_output: usize,
    message_path: String,
    packet_path: String,
    concurrency: usize,
    pool: Mutex<Vec<BufReader<TcpStream>>>,
}

impl HttpTarget {
    /// Parses the target's URL (`http://host[:port][/path]`).
    pub fn new(def: &TargetDef) -> Result<HttpTarget, String> {
        let url = def.url.as_deref().unwrap_or_default();
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(format!(
                    "url {url:?}: https is not supported yet; put a TLS-terminating proxy in front, or use http"
                ));
            }
            _ => return Err(format!("url {url:?} is not an http:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("url {url:?} has no host"));
        }
        let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpTarget {
            addr,
            authority: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
            keep_host: def.keep_host.unwrap_or(false),
            timeout: Duration::from_millis(def.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            max_output: def.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
            message_path: def.message_path.clone().unwrap_or_else(|| "/replay/message".into()),
            packet_path: def.packet_path.clone().unwrap_or_else(|| "/replay/packet".into()),
            concurrency: def.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            pool: Mutex::new(Vec::new()),
        })
    }

    fn connect(&self) -> io::Result<BufReader<TcpStream>> {
        let addrs: Vec<_> = self.addr.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to nothing", self.addr));
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(self.timeout))?;
                    s.set_write_timeout(Some(self.timeout))?;
                    return Ok(BufReader::with_capacity(64 << 10, s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The request for a case: method, path, headers, body.
    fn request(&self, case: &Case) -> Result<(String, String, Vec<Header>, Vec<u8>), String> {
        match case.data() {
            CaseData::Http(x) => {
                let r = &x.request;
                let raw = r.body.as_bytes();
                let body = if body::is_chunked(&r.headers) {
                    body::dechunk(raw).map_err(|e| format!("recorded request body: {e}"))?
                } else {
                    raw.to_vec()
                };
                let mut headers: Vec<Header> = end_to_end(&r.headers, false)
                    .into_iter()
                    .filter(|h| !h.0.eq_ignore_ascii_case("content-length"))
                    .filter(|h| self.keep_host || !h.0.eq_ignore_ascii_case("host"))
                    .collect();
                if !self.keep_host || !headers.iter().any(|h| h.0.eq_ignore_ascii_case("host")) {
                    headers.insert(0, Header::new("Host", self.authority.clone()));
                }
                // An absolute-form target (as sent to a proxy) keeps only its path.
                let target = match r.target.split_once("://") {
                    Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
                    None => r.target.clone(),
                };
                Ok((r.method.to_string(), format!("{}{}", self.base_path, target), headers, body))
            }
            CaseData::Message(_) | CaseData::Packet(_) => {
                let input = Input::of(case);
                let path = if matches!(case.data(), CaseData::Message(_)) {
                    &self.message_path
                } else {
                    &self.packet_path
                };
                let headers = vec![
                    Header::new("Host", self.authority.clone()),
                    Header::new("Content-Type", input.content_type.clone()),
                ];
                Ok(("POST".into(), format!("{}{}", self.base_path, path), headers, input.data))
            }
        }
    }

    /// A request in wire form: head and body in one buffer, so it goes out in one write.
    fn encode(method: &str, path: &str, headers: &[Header], body: &[u8]) -> Vec<u8> {
        let mut req = Vec::with_capacity(256 + body.len());
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\n");
        for h in headers {
            req.extend_from_slice(h.0.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(h.1.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        req
    }

    /// Sends `req` on a pooled connection (or a new one). Returns the connection and whether
    /// it was reused (a reused one may turn out to be closed by the server).
    fn send(&self, req: &[u8], fresh: bool) -> Result<(BufReader<TcpStream>, bool), Failure> {
        let pooled = if fresh { None } else { self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| Failure::Connect(e.to_string()))?,
        };
        match conn.get_mut().write_all(req) {
            Ok(()) => Ok((conn, reused)),
            // The server closed an idle pooled connection: a new one.
            Err(_) if reused => self.send(req, true),
            Err(e) => Err(Failure::io("sending the request", e)),
        }
    }

    /// Reads the answer on a connection `send` returned; a reused connection the server had
    /// closed is retried once on a new one.
    fn receive(
        &self,
        mut conn: BufReader<TcpStream>,
        reused: bool,
        req: &[u8],
        head_request: bool,
    ) -> Result<Response, Failure> {
        match read_response(&mut conn, head_request, self.max_output) {
            Ok((resp, keep)) => {
                if keep {
                    self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
                }
                Ok(resp)
            }
            Err(Failure::Closed) if reused => {
                let (conn, _) = self.send(req, true)?;
                self.receive(conn, false, req, head_request)
            }
            Err(e) => Err(e),
        }
    }

    /// The observation of a case from its response (or failure).
    fn outcome(&self, case: &Case, resp: Result<Response, Failure>) -> Outcome {
        let resp = match resp {
            Ok(r) => r,
            Err(Failure::Timeout) => return Outcome::Timeout { after_ms: self.timeout.as_millis() as u64 },
            Err(Failure::TooLarge(n)) => {
                return Outcome::Exhausted {
                    resource: "output".into(),
                    message: format!("response body of {n} bytes is over max_output = {}", self.max_output),
                };
            }
            Err(Failure::Connect(e)) => {
                return Outcome::error(format!("cannot connect to {}: {e}", self.addr));
            }
            Err(Failure::Closed) => {
                return Outcome::error(format!("{} closed the connection without answering", self.addr));
            }
            Err(Failure::Protocol(e)) => return Outcome::error(format!("{}: {e}", self.addr)),
        };
        let decoded = match body::header(&resp.headers, "content-encoding") {
            None => resp.body,
            Some(ce) => match body::decode_content(&resp.body, Some(ce)) {
                Ok(b) => b,
                Err(e) => return Outcome::error(format!("response body: {e}")),
            },
        };
        match case.data() {
            CaseData::Http(_) => Outcome::Output {
                output: Output::Http {
                    status: resp.status,
                    headers: end_to_end(&resp.headers, true),
                    body: decoded.into(),
                },
            },
            _ if (200..300).contains(&resp.status) => {
                let ct = body::header(&resp.headers, "content-type")
                    .unwrap_or("application/octet-stream")
                    .to_string();
                Outcome::bytes(ct, decoded)
            }
            _ => Outcome::error(format!(
                "HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&decoded[..decoded.len().min(2048)])
            )),
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
}

enum Failure {
    Connect(String),
    /// The connection closed before any byte of a response.
    Closed,
    Timeout,
    TooLarge(usize),
    Protocol(String),
}

impl Failure {
    fn io(what: &str, e: io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Protocol(format!("{what}: {e}")),
        }
    }
}

/// Reads one final response (skipping 1xx). Returns it and whether the connection may be
/// reused.
fn read_response(
    conn: &mut BufReader<TcpStream>,
    head_request: bool,
    max: usize,
) -> Result<(Response, bool), Failure> {
    let mut first = true;
    loop {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let n =
                conn.read_until(b'\n', &mut buf).map_err(|e| Failure::io("reading the response head", e))?;
            if n == 0 {
                return Err(if first && buf.is_empty() {
                    Failure::Closed
                } else {
                    Failure::Protocol("connection closed inside the response head".into())
                });
            }
            first = false;
            if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
                break;
            }
            if buf.len() > MAX_HEAD {
                return Err(Failure::Protocol(format!("response head longer than {MAX_HEAD} bytes")));
            }
        }
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Response::new(&mut fields);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(Failure::Protocol("incomplete response head".into()));
            }
            Err(e) => return Err(Failure::Protocol(format!("bad response head: {e}"))),
        }
        let status = r.code.unwrap_or(0);
        let http10 = r.version == Some(0);
        let headers: Vec<Header> = r.headers.iter().map(|h| Header::new(h.name, h.value.to_vec())).collect();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let conn_close = body::header(&headers, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (http10
                && !body::header(&headers, "connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
        let no_body = head_request || status == 204 || status == 304 || status == 101;
        let (raw, keep) = if no_body {
            (Vec::new(), !conn_close)
        } else if body::is_chunked(&headers) {
            (read_chunked(conn, max)?, !conn_close)
        } else if let Some(len) = body::header(&headers, "content-length") {
            let len: usize =
                len.parse().map_err(|_| Failure::Protocol(format!("bad Content-Length {len:?}")))?;
            if len > max {
                return Err(Failure::TooLarge(len));
            }
            let mut b = vec![0u8; len];
            conn.read_exact(&mut b).map_err(|e| Failure::io("reading the response body", e))?;
            (b, !conn_close)
        } else {
            let mut b = Vec::new();
            conn.take(max as u64 + 1)
                .read_to_end(&mut b)
                .map_err(|e| Failure::io("reading the response body", e))?;
            if b.len() > max {
                return Err(Failure::TooLarge(b.len()));
            }
            (b, false)
        };
        return Ok((Response { status, headers, body: raw }, keep));
    }
}

/// Reads a chunked body to its end (trailers read and dropped), returning the data.
fn read_chunked(conn: &mut BufReader<TcpStream>, max: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        conn.read_until(b'\n', &mut line).map_err(|e| Failure::io("reading a chunk size", e))?;
        let text = String::from_utf8_lossy(&line);
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Failure::Protocol(format!("bad chunk size line {:?}", text.trim_end())))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                let n = conn.read_until(b'\n', &mut line).map_err(|e| Failure::io("reading trailers", e))?;
                if n == 0 || line == b"\r\n" || line == b"\n" {
                    return Ok(out);
                }
            }
        }
        if out.len() + size > max {
            return Err(Failure::TooLarge(out.len() + size));
        }
        let start = out.len();
        out.resize(start + size, 0);
        conn.read_exact(&mut out[start..]).map_err(|e| Failure::io("reading a chunk", e))?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf).map_err(|e| Failure::io("reading a chunk end", e))?;
        if &crlf != b"\r\n" {
            return Err(Failure::Protocol("chunk data not followed by CRLF".into()));
        }
    }
}

impl Target for HttpTarget {
    fn observe(&self, case: &Case) -> Outcome {
        let (method, path, headers, body) = match self.request(case) {
            Ok(r) => r,
            Err(e) => return Outcome::error(e),
        };
        let req = HttpTarget::encode(&method, &path, &headers, &body);
        let resp = self
            .send(&req, false)
            .and_then(|(conn, reused)| self.receive(conn, reused, &req, method == "HEAD"));
        self.outcome(case, resp)
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Each worker takes many cases at a time: every hand-off between threads costs a wakeup,
    /// which on a small machine costs as much as a request. The engine makes batches smaller
    /// for small corpora, and sends cases one by one under `--speed` or `rps`.
    fn batch(&self) -> usize {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_so_do_those_connection_names() {
        let h = vec![
            Header::new("Host", "a"),
            Header::new("Connection", "keep-alive, X-Trace"),
            Header::new("X-Trace", "1"),
            Header::new("Transfer-Encoding", "chunked"),
            Header::new("Content-Encoding", "gzip"),
            Header::new("Accept", "*/*"),
        ];
        let names = |v: Vec<Header>| v.into_iter().map(|h| h.0).collect::<Vec<_>>();
        assert_eq!(names(end_to_end(&h, false)), ["Host", "Content-Encoding", "Accept"]);
        assert_eq!(names(end_to_end(&h, true)), ["Host", "Accept"]);
    }
}
