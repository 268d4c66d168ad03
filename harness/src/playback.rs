//! Playback (`replay serve`): answer as the recorded upstream would have.
//!
//! Each incoming request is matched to a recorded exchange: same method and path, and a body
//! that compares equal the way the diff compares values (decoded by content type, under the
//! same rules, so an ignored `$.request_id` does not break a match). Repeated identical
//! requests are answered in recorded order. The recorded response is streamed back with its
//! original chunk timing, scaled by `speed`. A request that matches nothing gets a 502 whose
//! body names the closest recorded request and how they differ, and is appended to a misses
//! file (JSON lines). Playback never contacts an upstream.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corpora::value::{self, Value};
use corpora::{Case, CaseData, HttpResponse, body};
use serde_json::json;

use crate::diff::{Rules, diff_values};

struct Recorded {
    case: corpora::CaseId,
    body: Value,
    response: HttpResponse,
}

/// The recorded exchanges, by method and path, in recorded order.
pub struct Playback {
    by_route: HashMap<(String, String), Vec<Recorded>>,
    next: Mutex<HashMap<(String, String, usize), usize>>,
    rules: Rules,
    speed: Option<f64>,
    misses: Option<Mutex<std::fs::File>>,
    exchanges: usize,
    hook: Option<RequestHook>,
}

/// Applied to each incoming request (as an HTTP case) before it is matched: the recorders'
/// redaction, so that a request carrying the same secret as a recorded one matches the
/// recorded placeholder, and no secret reaches the misses file.
pub type RequestHook = Box<dyn Fn(&mut Case) + Send + Sync>;

/// One request as received.
struct Incoming {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
    close: bool,
}

impl Playback {
    /// Loads every HTTP exchange with a response from `cases`.
    pub fn new(
        cases: impl Iterator<Item = Case>,
        rules: Rules,
        speed: Option<f64>,
        misses: Option<std::fs::File>,
    ) -> Playback {
        let mut by_route: HashMap<(String, String), Vec<Recorded>> = HashMap::new();
        let mut exchanges = 0;
        for case in cases {
            let id = case.id();
            let CaseData::Http(x) = case.into_data() else { continue };
            let Some(response) = x.response else { continue };
            let r = &x.request;
            let raw =
                body::decoded(&r.headers, r.body.as_bytes()).unwrap_or_else(|_| r.body.as_bytes().to_vec());
            let ct = body::header(&r.headers, "content-type").unwrap_or("").to_string();
            let key = (r.method.clone(), path_of(&r.target));
            by_route.entry(key).or_default().push(Recorded {
                case: id,
                body: value::decode(&ct, &raw).0,
                response,
            });
            exchanges += 1;
        }
        Playback {
            by_route,
            next: Mutex::new(HashMap::new()),
            rules,
            speed,
            misses: misses.map(Mutex::new),
            exchanges,
            hook: None,
        }
    }

    /// Runs `hook` on every incoming request before matching (see [`RequestHook`]).
    pub fn with_request_hook(mut self, hook: RequestHook) -> Playback {
        self.hook = Some(hook);
        self
    }

    fn prepare(&self, req: Incoming) -> Incoming {
        let Some(hook) = &self.hook else { return req };
        let mut headers = Vec::new();
        if !req.content_type.is_empty() {
            headers.push(corpora::Header::new("Content-Type", req.content_type.clone()));
        }
        let mut case = Case::new(CaseData::Http(corpora::HttpExchange {
            request: corpora::HttpRequest {
                method: req.method.clone(),
                target: req.path.clone(),
                headers,
                body: req.body.into(),
                ..corpora::HttpRequest::default()
            },
            ..corpora::HttpExchange::default()
        }));
        hook(&mut case);
        let CaseData::Http(x) = case.into_data() else { unreachable!("an HTTP case stays one") };
        let r = x.request;
        let body = body::decoded(&r.headers, r.body.as_bytes()).unwrap_or_else(|_| r.body.0.clone());
        Incoming { body, ..req }
    }

    /// How many recorded exchanges can be played back.
    pub fn exchanges(&self) -> usize {
        self.exchanges
    }

    /// Serves on `listener` until the process ends: a thread per connection, keep-alive.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let me = self.clone();
            std::thread::spawn(move || {
                let _ = me.connection(conn);
            });
        }
    }

    fn connection(&self, conn: TcpStream) -> std::io::Result<()> {
        conn.set_nodelay(true)?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut writer = conn;
        while let Some(req) = read_request(&mut reader)? {
            let req = self.prepare(req);
            self.answer(&req, &mut writer)?;
            if req.close {
                break;
            }
        }
        Ok(())
    }

    /// Finds the recorded exchange for a request: the next unused equal one on its route, or
    /// (all used) the last equal one again. `Err` carries the closest and its differences.
    fn find(&self, req: &Incoming) -> Result<&Recorded, serde_json::Value> {
        let route = (req.method.clone(), req.path.clone());
        let (got, _) = value::decode(&req.content_type, &req.body);
        let Some(list) = self.by_route.get(&route) else {
            let known: Vec<String> = self.by_route.keys().take(20).map(|(m, p)| format!("{m} {p}")).collect();
            return Err(
                json!({"reason": "no recorded request has this method and path", "recorded_routes": known}),
            );
        };
        let diffs: Vec<_> = list.iter().map(|r| diff_values(&r.body, &got, &self.rules)).collect();
        let equal: Vec<usize> = (0..list.len()).filter(|&i| diffs[i].is_empty()).collect();
        if let Some(&first) = equal.first() {
            // Repeated identical requests: answered in recorded order.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let n = next.entry((route.0, route.1, first)).or_insert(0);
            let pick = equal[(*n).min(equal.len() - 1)];
            *n += 1;
            return Ok(&list[pick]);
        }
        let (i, d) = diffs.iter().enumerate().min_by_key(|(_, d)| d.len()).expect("a route has exchanges");
        Err(json!({
            "reason": "no recorded request with this method and path has this body",
            "closest_case": list[i].case.to_string(),
            "differences": d.iter().take(20).map(|x| json!({"path": x.path, "shape": x.shape, "kind": x.kind.name(), "recorded": x.a, "received": x.b})).collect::<Vec<_>>(),
        }))
    }

    fn answer(&self, req: &Incoming, w: &mut TcpStream) -> std::io::Result<()> {
        let rec = match self.find(req) {
            Ok(r) => r,
            Err(why) => {
                let miss = json!({"method": req.method, "path": req.path, "content_type": req.content_type,
                                  "body": String::from_utf8_lossy(&req.body), "miss": why});
                if let Some(f) = &self.misses {
                    let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                    writeln!(f, "{miss}")?;
                }
                let body = serde_json::to_vec_pretty(&miss).unwrap_or_default();
                write!(
                    w,
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Replay-Playback: miss\r\n\r\n",
                    body.len()
                )?;
                w.write_all(&body)?;
                return w.flush();
            }
        };
        let r = &rec.response;
        let data =
            body::decoded(&r.headers, r.body.as_bytes()).unwrap_or_else(|_| r.body.as_bytes().to_vec());
        let mut head =
            format!("HTTP/1.1 {} {}\r\n", r.status, if r.reason.is_empty() { "OK" } else { &r.reason });
        for h in crate::http::end_to_end(&r.headers, true) {
            head.push_str(&format!("{}: {}\r\n", h.0, String::from_utf8_lossy(h.1.as_bytes())));
        }
        head.push_str("X-Replay-Playback: hit\r\n");
        let streamed = r.chunks.len() > 1 && body::header(&r.headers, "content-encoding").is_none();
        if !streamed {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", data.len()));
            w.write_all(head.as_bytes())?;
            w.write_all(&data)?;
            return w.flush();
        }
        // The recorded stream, chunk by chunk, at its recorded offsets (scaled by speed).
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        w.write_all(head.as_bytes())?;
        w.flush()?;
        let start = Instant::now();
        for (offset_ns, part) in r.chunk_slices() {
            if let Some(speed) = self.speed {
                let due = Duration::from_nanos((offset_ns as f64 / speed) as u64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            if !part.is_empty() {
                write!(w, "{:x}\r\n", part.len())?;
                w.write_all(part)?;
                w.write_all(b"\r\n")?;
                w.flush()?;
            }
        }
        w.write_all(b"0\r\n\r\n")?;
        w.flush()
    }
}

fn path_of(target: &str) -> String {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string()),
        None => target.to_string(),
    }
}

/// Reads one request (Content-Length or chunked body); `None` at end of connection.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Incoming>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = path_of(parts.next().unwrap_or("/"));
    let http10 = parts.next() == Some("HTTP/1.0");
    let (mut len, mut chunked, mut content_type, mut close) = (0usize, false, String::new(), http10);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "content-type" => content_type = v.to_string(),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size.min(64 << 20), 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else {
        body.resize(len.min(64 << 20), 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(Incoming { method, path, content_type, body, close }))
}

/// One line of a misses file as a case (the request the build sent) and its difference from
/// the closest recorded request, for `replay diff --misses`: body paths appear under
/// `$.upstream_request.body`, a request whose method and path were never recorded as an
/// added `$.upstream_request`.
pub fn miss_diff(line: &str) -> Result<(Case, crate::diff::CaseDiff), String> {
    use crate::diff::{CaseDiff, Difference, Kind, Verdict};
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
    let method = s("method").ok_or("no `method`")?;
    let path = s("path").ok_or("no `path`")?;
    let content_type = s("content_type").unwrap_or_default();
    let body = s("body").unwrap_or_default();
    let miss = v.get("miss").ok_or("no `miss`")?;
    let mut differences = Vec::new();
    let under = |p: &str| format!("$.upstream_request.body{}", p.strip_prefix('$').unwrap_or(p));
    for d in miss.get("differences").and_then(serde_json::Value::as_array).into_iter().flatten() {
        let g = |k: &str| d.get(k).and_then(serde_json::Value::as_str);
        let kind = match g("kind") {
            Some("added") => Kind::Added,
            Some("removed") => Kind::Removed,
            Some("changed") => Kind::Changed,
            Some("type_changed") => Kind::TypeChanged,
            other => return Err(format!("unknown difference kind {other:?}")),
        };
        let p = g("path").unwrap_or("$");
        differences.push(Difference {
            path: under(p),
            shape: under(g("shape").unwrap_or(p)),
            kind,
            a: g("recorded").map(str::to_string),
            b: g("received").map(str::to_string),
            detail: None,
        });
    }
    if differences.is_empty() {
        let reason = miss.get("reason").and_then(serde_json::Value::as_str).unwrap_or("no match");
        differences.push(Difference {
            path: "$.upstream_request".into(),
            shape: "$.upstream_request".into(),
            kind: Kind::Added,
            a: None,
            b: Some(format!("{method} {path}")),
            detail: Some(reason.to_string()),
        });
    }
    let mut headers = Vec::new();
    if !content_type.is_empty() {
        headers.push(corpora::Header::new("Content-Type", content_type));
    }
    let case = Case::new(CaseData::Http(corpora::HttpExchange {
        request: corpora::HttpRequest {
            method,
            target: path,
            headers,
            body: body.into(),
            ..Default::default()
        },
        ..Default::default()
    }));
    Ok((case, CaseDiff { verdict: Verdict::Different, differences, reason: None }))
}
