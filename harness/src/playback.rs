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
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

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
    /// `Content-Encoding`, when the client compressed its body.
    content_encoding: String,
    body: Vec<u8>,
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
            let key = (r.method.to_string(), path_of(&r.target));
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
        let mut headers = Vec::new();
        if !req.content_type.is_empty() {
            headers.push(corpora::Header::new("Content-Type", req.content_type.clone()));
        }
        if !req.content_encoding.is_empty() {
            headers.push(corpora::Header::new("Content-Encoding", req.content_encoding.clone()));
        }
        let mut case = Case::new(CaseData::Http(corpora::HttpExchange {
            request: corpora::HttpRequest {
                method: req.method.as_str().into(),
                target: req.path.clone(),
                headers,
                body: req.body.into(),
                ..corpora::HttpRequest::default()
            },
            ..corpora::HttpExchange::default()
        }));
        if let Some(hook) = &self.hook {
            hook(&mut case);
        }
        let CaseData::Http(x) = case.into_data() else { unreachable!("an HTTP case stays one") };
        let r = x.request;
        // Decoded as the recorded side is (a compressed request body matches its recording),
        // with the target as the hook left it (credential query parameters redacted).
        let body = body::decoded(&r.headers, r.body.as_bytes()).unwrap_or_else(|_| r.body.0.clone());
        Incoming { body, path: r.target, content_encoding: String::new(), ..req }
    }

    /// How many recorded exchanges can be played back.
    pub fn exchanges(&self) -> usize {
        self.exchanges
    }

    /// Serves on `listener` until the process ends: HTTP/1.1 (keep-alive, pipelining) and
    /// HTTP/2 (prior knowledge) through hyper, like the recording proxy, so a client that
    /// spoke HTTP/2 to the proxy can speak it to playback.
    pub fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("replay-serve").build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            server.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(60));
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little instead of spinning.
                        eprintln!("warning: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let me = self.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, std::convert::Infallible>(me.respond(req).await) }
                    });
                    let _ = server.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        })
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

    async fn respond(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<PlayBody> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(e) => {
                let (status, why) = if e.is::<http_body_util::LengthLimitError>() {
                    (
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over {MAX_REQUEST_BODY} bytes"),
                    )
                } else {
                    (http::StatusCode::BAD_REQUEST, format!("request body: {e}"))
                };
                return plain(status, why);
            }
        };
        let req = Incoming {
            method: parts.method.as_str().to_string(),
            // Origin form, also for an absolute-form request (`http://host/path`).
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            content_encoding: parts
                .headers
                .get(http::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            body,
        };
        let req = self.prepare(req);
        let rec = match self.find(&req) {
            Ok(r) => r,
            Err(why) => {
                let miss = json!({"method": req.method, "path": req.path, "content_type": req.content_type,
                                  "body": String::from_utf8_lossy(&req.body), "miss": why});
                if let Some(f) = &self.misses {
                    let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = writeln!(f, "{miss}") {
                        eprintln!("warning: misses file: {e}");
                    }
                }
                let mut resp = http::Response::new(Either::Left(Full::new(Bytes::from(
                    serde_json::to_vec_pretty(&miss).unwrap_or_default(),
                ))));
                *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
                let h = resp.headers_mut();
                h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                h.insert(PLAYBACK_HEADER, http::HeaderValue::from_static("miss"));
                return resp;
            }
        };
        let r = &rec.response;
        let data = Bytes::from(
            body::decoded(&r.headers, r.body.as_bytes()).unwrap_or_else(|_| r.body.as_bytes().to_vec()),
        );
        let streamed = r.chunks.len() > 1 && body::header(&r.headers, "content-encoding").is_none();
        let body = if streamed {
            Either::Right(Paced::new(paced_parts(r, &data), self.speed))
        } else {
            Either::Left(Full::new(data))
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::OK);
        let h = resp.headers_mut();
        // Framing is hyper's (a length, or chunks / HTTP/2 frames for a stream); a recorded
        // header that is not valid HTTP any more is left out.
        for x in crate::http::end_to_end(&r.headers, true) {
            if x.0.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(x.0.as_bytes()), http::HeaderValue::from_bytes(x.1.as_bytes()))
            {
                h.append(name, value);
            }
        }
        h.insert(PLAYBACK_HEADER, http::HeaderValue::from_static("hit"));
        if !r.reason.is_empty()
            && Some(r.reason.as_str()) != resp.status().canonical_reason()
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(r.reason.as_bytes().to_vec())
        {
            resp.extensions_mut().insert(reason);
        }
        resp
    }
}

/// The largest request body playback reads (413 past it).
const MAX_REQUEST_BODY: usize = 64 << 20;

/// Says whether playback found the request (`hit`) or not (`miss`); left out of diffs.
const PLAYBACK_HEADER: &str = "x-replay-playback";

type PlayBody = Either<Full<Bytes>, Paced>;

fn plain(status: http::StatusCode, why: String) -> http::Response<PlayBody> {
    let mut resp = http::Response::new(Either::Left(Full::new(Bytes::from(why + "\n"))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The recorded chunks of a streamed response as `(offset ns, bytes)` of its decoded body.
/// The marks point into the body as recorded: the same bytes unless it was stored with its
/// chunked framing (a capture), where they are moved in proportion.
fn paced_parts(r: &HttpResponse, data: &Bytes) -> Vec<(u64, Bytes)> {
    let raw = r.body.len().max(1) as u128;
    let framed = body::is_chunked(&r.headers);
    let at = |m: &corpora::ChunkMark| {
        let a = m.at as usize;
        let a = if framed { (m.at as u128 * data.len() as u128 / raw) as usize } else { a };
        a.min(data.len())
    };
    let mut out = Vec::with_capacity(r.chunks.len());
    for (i, m) in r.chunks.iter().enumerate() {
        let start = at(m);
        let end = r.chunks.get(i + 1).map_or(data.len(), at).max(start);
        out.push((m.offset_ns, data.slice(start..end)));
    }
    // Bytes before the first mark go with it.
    if let (Some(first), Some(m)) = (out.first_mut(), r.chunks.first()) {
        let start = at(m);
        if start > 0 {
            first.1 = data.slice(0..start + first.1.len());
        }
    }
    out
}

/// A streamed response body that releases each recorded chunk at its recorded offset (scaled
/// by the speed; as fast as possible without one).
struct Paced {
    parts: std::collections::VecDeque<(u64, Bytes)>,
    start: tokio::time::Instant,
    speed: Option<f64>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(parts: Vec<(u64, Bytes)>, speed: Option<f64>) -> Paced {
        Paced { parts: parts.into(), start: tokio::time::Instant::now(), speed, sleep: None }
    }
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(&(offset_ns, _)) = this.parts.front() else { return Poll::Ready(None) };
            if let Some(speed) = this.speed {
                let due = this.start + Duration::from_nanos((offset_ns as f64 / speed) as u64);
                if tokio::time::Instant::now() < due {
                    let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    if sleep.deadline() != due {
                        sleep.as_mut().reset(due);
                    }
                    ready!(sleep.as_mut().poll(cx));
                }
            }
            let Some((_, data)) = this.parts.pop_front() else { return Poll::Ready(None) };
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }
}

/// The origin-form path of a recorded request target (`http://host/p?q` -> `/p?q`).
fn path_of(target: &str) -> String {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string()),
        None => target.to_string(),
    }
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
            method: method.into(),
            target: path,
            headers,
            body: body.into(),
            ..Default::default()
        },
        ..Default::default()
    }));
    Ok((case, CaseDiff { verdict: Verdict::Different, differences, reason: None }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corpora::{ChunkMark, Header};

    fn streamed(headers: Vec<Header>, raw: &[u8], marks: &[(u64, u64)]) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers,
            body: raw.to_vec().into(),
            chunks: marks.iter().map(|&(at, offset_ns)| ChunkMark { at, offset_ns }).collect(),
            ..HttpResponse::default()
        }
    }

    /// The README says a request matches under replay.toml's `[diff]` rules, with paths from the
    /// body's root: an ignored `$.request_id` does not break a match (audit: untested).
    #[test]
    fn ignore_rules_apply_to_request_bodies_from_their_root() {
        let recorded = Case::new(CaseData::Http(corpora::HttpExchange {
            request: corpora::HttpRequest {
                method: "POST".into(),
                target: "/v1/complete".into(),
                headers: vec![Header::new("Content-Type", "application/json")],
                body: br#"{"request_id":"a1","prompt":"p"}"#.to_vec().into(),
                ..corpora::HttpRequest::default()
            },
            response: Some(HttpResponse { status: 200, ..HttpResponse::default() }),
            ..corpora::HttpExchange::default()
        }));
        let incoming = |body: &str| Incoming {
            method: "POST".into(),
            path: "/v1/complete".into(),
            content_type: "application/json".into(),
            content_encoding: String::new(),
            body: body.as_bytes().to_vec(),
        };
        let other_id = incoming(r#"{"request_id":"b2","prompt":"p"}"#);
        let plain = Playback::new(std::iter::once(recorded.clone()), Rules::default(), None, None);
        assert!(plain.find(&other_id).is_err(), "without the rule the ids differ");
        let rule = crate::diff::Rule::new(crate::diff::Selector::parse("$.request_id").unwrap(), (), "test");
        let rules = Rules { ignore: vec![rule], ..Rules::default() };
        let ignoring = Playback::new(std::iter::once(recorded), rules, None, None);
        assert!(ignoring.find(&other_id).is_ok());
        assert!(ignoring.find(&incoming(r#"{"request_id":"b2","prompt":"changed"}"#)).is_err());
    }

    #[test]
    fn paced_parts_cover_the_body_once_in_order() {
        // Marks into the body as sent; bytes before the first mark go out with it.
        let r = streamed(vec![], b"xxdata: a\n\ndata: b\n\n", &[(2, 10), (11, 20)]);
        let data = Bytes::from_static(b"xxdata: a\n\ndata: b\n\n");
        let parts = paced_parts(&r, &data);
        assert_eq!(
            parts,
            vec![(10, Bytes::from_static(b"xxdata: a\n\n")), (20, Bytes::from_static(b"data: b\n\n"))]
        );
        // A body stored with its chunked framing (a capture): the decoded bytes, split in
        // proportion, nothing lost or repeated, times kept.
        let raw = b"9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n";
        let r = streamed(vec![Header::new("Transfer-Encoding", "chunked")], raw, &[(0, 5), (14, 9)]);
        let data = Bytes::from(body::decoded(&r.headers, r.body.as_bytes()).unwrap());
        let parts = paced_parts(&r, &data);
        assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), vec![5, 9]);
        assert_eq!(parts.iter().flat_map(|p| p.1.to_vec()).collect::<Vec<u8>>(), data.to_vec());
        // Marks past the end or backwards are clamped, never a panic.
        let r = streamed(vec![], b"abc", &[(2, 1), (1, 2), (99, 3)]);
        let parts = paced_parts(&r, &Bytes::from_static(b"abc"));
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.1.len() <= 3));
    }

    proptest::proptest! {
        /// Whatever the marks (a hand-edited case, a capture), the parts never panic, keep
        /// every mark's time in order, and for marks in order cover the body exactly once.
        #[test]
        fn paced_parts_never_lose_or_repeat_bytes_for_ordered_marks(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            mut ats in proptest::collection::vec(0u64..260, 1..8),
            framed in proptest::bool::ANY,
        ) {
            let headers = if framed { vec![Header::new("Transfer-Encoding", "chunked")] } else { vec![] };
            let marks: Vec<(u64, u64)> = ats.iter().enumerate().map(|(i, &a)| (a, i as u64)).collect();
            let r = streamed(headers.clone(), &body, &marks);
            let data = Bytes::from(body.clone());
            let parts = paced_parts(&r, &data);
            proptest::prop_assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), (0..ats.len() as u64).collect::<Vec<_>>());
            ats.sort_unstable();
            let marks: Vec<(u64, u64)> = ats.iter().enumerate().map(|(i, &a)| (a, i as u64)).collect();
            let r = streamed(headers, &body, &marks);
            let joined: Vec<u8> = paced_parts(&r, &data).iter().flat_map(|p| p.1.to_vec()).collect();
            proptest::prop_assert_eq!(joined, body);
        }
    }
}
