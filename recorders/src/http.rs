//! HTTP/1.1 over reassembled TCP streams, detected by content on any port.
//!
//! Requests and responses are parsed with httparse; bodies are framed by `Content-Length`,
//! chunked encoding (trailers too) or the end of the connection, and stored as sent. Pipelined
//! requests are paired with responses in order; `1xx` interim responses are kept with their
//! exchange; `HEAD`, `204` and `304` have no body; `101 Switching Protocols` and a successful
//! `CONNECT` end HTTP parsing on the connection. A hole in a stream flags the message that
//! crosses it with the bytes missing, and parsing resumes at the next message start.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use corpora::{Blob, ChunkMark, Flag, Header, HttpExchange, HttpRequest, HttpResponse, Name};

use crate::tcp::{Origin, Side};

/// Bounds on what one connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest message head (request or status line plus headers).
    pub max_head: usize,
    /// Body bytes kept per message; the rest is counted and the message flagged truncated.
    pub max_body: usize,
    /// Body bytes all connections together may hold in messages not yet handed on; past it,
    /// bodies are cut the same way (so many large uploads at once cannot exhaust memory).
    pub max_total: usize,
    /// Requests one connection may have waiting for responses; past it, the oldest is handed
    /// on as never answered.
    pub max_waiting: usize,
    /// Bytes of unfinished message heads all connections together may hold; a head that
    /// would go past it is skipped and counted (so thousands of connections each sending a
    /// long head at once cannot exhaust memory).
    pub max_heads_total: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 64 << 10,
            max_body: 16 << 20,
            max_total: 24 << 20,
            max_waiting: 1024,
            max_heads_total: 4 << 20,
        }
    }
}

/// Trailer fields parsed per message, and interim responses kept per request; more are
/// counted as malformed and not kept (the raw body still has the trailers).
const MAX_FIELDS: usize = 128;

/// Body bytes held by every connection of a recording, shared by their parsers.
pub type BodyBudget = Rc<Cell<usize>>;

/// What all the connections of a recording hold together, shared by their parsers: body bytes
/// in messages not yet handed on, and bytes of heads not yet complete.
#[derive(Clone, Default)]
pub struct Budgets {
    /// Body bytes (bounded by [`HttpLimits::max_total`]).
    pub bodies: BodyBudget,
    /// Unfinished head bytes (bounded by [`HttpLimits::max_heads_total`]).
    pub heads: Rc<Cell<usize>>,
}

/// A head buffer emptied: its bytes leave the shared count, and a buffer grown by a long head
/// is let go instead of kept for the connection's life.
fn release_head(heads: &Cell<usize>, buf: &mut Vec<u8>) {
    heads.set(heads.get().saturating_sub(buf.len()));
    if buf.capacity() > 2048 {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

fn event_bytes(ev: &HttpEvent) -> usize {
    match ev {
        HttpEvent::Exchange(x) => {
            let e = &x.exchange;
            e.request.body.len()
                + e.response.as_ref().map_or(0, |r| r.body.len())
                + e.interim.iter().map(|r| r.body.len()).sum::<usize>()
        }
        HttpEvent::ResponseWithoutRequest => 0,
    }
}

/// A finished exchange, with what the parser knew was wrong and where it started.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The exchange.
    pub exchange: HttpExchange,
    /// Flags for the case.
    pub flags: Vec<Flag>,
    /// The packet that carried the request's first byte.
    pub origin: Origin,
    /// 1-based request number on the connection.
    pub sequence: u64,
}

/// What a connection produced.
#[derive(Debug)]
pub enum HttpEvent {
    /// A request and its response (or a request whose response never came).
    Exchange(Box<Exchange>),
    /// A response with no request to pair it with (its request was before the capture or lost).
    ResponseWithoutRequest,
}

/// What a connection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No bytes yet.
    Detecting,
    /// HTTP/1.x; `client` is the side that sends requests.
    Http {
        /// The requesting side.
        client: Side,
    },
    /// Not HTTP: its packets are kept as packet cases.
    NotHttp,
    /// Was HTTP until an upgrade or a CONNECT tunnel.
    Upgraded,
}

#[derive(Debug)]
enum Body {
    None,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    /// The empty line after the trailers: the body is complete.
    Done,
}

#[derive(Debug, Default)]
struct Message {
    request: Option<HttpRequest>,
    response: Option<HttpResponse>,
    flags: Vec<Flag>,
    origin: Origin,
    /// Interim (1xx) responses to this request.
    interim: Vec<HttpResponse>,
    /// 1-based request number on the connection.
    sequence: u64,
    body_dropped: u64,
    sse: bool,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Body),
    /// Lost our place (a hole): skip to the next thing that looks like a message start.
    Resync,
}

struct Parser {
    state: State,
    buf: Vec<u8>,
    msg: Message,
    line: Vec<u8>,
    /// Bytes lost between messages: the next message on this side is flagged with them, since
    /// what was lost may have been (part of) it.
    gap_before_next: u64,
}

impl Parser {
    fn new() -> Parser {
        Parser {
            state: State::Head,
            buf: Vec::new(),
            msg: Message::default(),
            line: Vec::new(),
            gap_before_next: 0,
        }
    }
}

/// One TCP connection's HTTP state.
pub struct HttpConn {
    mode: Mode,
    limits: HttpLimits,
    /// Parsers for side A and side B (which one requests is known once detected).
    parsers: [Parser; 2],
    /// Requests waiting for their responses, oldest first.
    waiting: VecDeque<Message>,
    requests: u64,
    /// The last finished exchange, held until the next one finishes or the connection closes,
    /// so that a late retransmission with different bytes can still flag it.
    held: Option<Box<Exchange>>,
    /// Bytes skipped while looking for a message start after a hole.
    pub skipped: u64,
    /// Malformed heads seen.
    pub malformed: u64,
    /// Body bytes dropped because a bound was reached (the messages are flagged truncated).
    pub body_bytes_dropped: u64,
    /// Heads skipped because the heads of all connections together reached their bound.
    pub heads_dropped: u64,
    /// Heads the connection ended in the middle of (their bytes are counted as skipped).
    pub heads_incomplete: u64,
    budget: BodyBudget,
    heads: Rc<Cell<usize>>,
    /// Bytes still to search for a message start before deciding the connection is not HTTP:
    /// [`MID_STREAM_SEARCH`] for a connection seen without its SYN (the capture began inside
    /// a message), 0 otherwise (its first bytes decide).
    search_left: usize,
    /// Bytes searched so far without finding a start (skipped, if it turns out to be HTTP).
    searched: usize,
}

/// How far into a connection seen mid-stream a message start is looked for.
pub const MID_STREAM_SEARCH: usize = 64 << 10;

impl Drop for HttpConn {
    fn drop(&mut self) {
        // A head still in progress leaves the shared count with its connection.
        for p in &self.parsers {
            self.heads.set(self.heads.get().saturating_sub(p.buf.len()));
        }
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
    b"REPORT ",
];

fn looks_like_request(b: &[u8]) -> bool {
    METHODS.iter().any(|m| b.len() >= m.len() && &b[..m.len()] == *m || m.starts_with(b) && !b.is_empty())
}

fn looks_like_response(b: &[u8]) -> bool {
    let pre = b"HTTP/1.";
    let n = b.len().min(pre.len());
    n > 0 && b[..n] == pre[..n]
}

/// Where the next message start is in `b` (at 0 or after a line break), for resync.
fn find_start(b: &[u8], request: bool) -> Option<usize> {
    let ok = |at: usize| {
        let rest = &b[at..];
        if request { METHODS.iter().any(|m| rest.starts_with(m)) } else { rest.starts_with(b"HTTP/1.") }
    };
    if ok(0) {
        return Some(0);
    }
    (1..b.len()).find(|&i| b[i - 1] == b'\n' && ok(i))
}

/// `HTTP/1.x` as parsed (httparse knows only 0 and 1), without the formatting machinery: this
/// runs twice per exchange on the parsing thread.
fn http_version(minor: Option<u8>) -> Name {
    match minor {
        Some(0) => Name::const_new("HTTP/1.0"),
        Some(m) if m != 1 => compact_str::format_compact!("HTTP/1.{m}"),
        _ => Name::const_new("HTTP/1.1"),
    }
}

fn headers(list: &[httparse::Header<'_>]) -> Vec<Header> {
    list.iter().map(|h| Header(Name::from(h.name), Blob(h.value.to_vec()))).collect()
}

fn header<'a>(list: &'a [Header], name: &str) -> Option<&'a [u8]> {
    list.iter().find(|h| h.0.eq_ignore_ascii_case(name)).map(|h| h.1.as_bytes())
}

fn has_token(list: &[Header], name: &str, token: &str) -> bool {
    list.iter().filter(|h| h.0.eq_ignore_ascii_case(name)).any(|h| {
        h.1.as_bytes().split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn content_length(list: &[Header]) -> Option<u64> {
    header(list, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

impl HttpConn {
    /// A connection not yet known to be HTTP, sharing `budgets` with the other connections.
    pub fn new(limits: HttpLimits, budgets: Budgets) -> HttpConn {
        HttpConn {
            mode: Mode::Detecting,
            limits,
            parsers: [Parser::new(), Parser::new()],
            waiting: VecDeque::new(),
            requests: 0,
            held: None,
            skipped: 0,
            malformed: 0,
            body_bytes_dropped: 0,
            heads_dropped: 0,
            heads_incomplete: 0,
            budget: budgets.bodies,
            heads: budgets.heads,
            search_left: 0,
            searched: 0,
        }
    }

    /// A connection whose start the capture did not see: its first bytes may be the end of a
    /// message, so the start of the next one is looked for, within [`MID_STREAM_SEARCH`] bytes,
    /// before it is taken for another protocol.
    pub fn seen_mid_stream(mut self) -> HttpConn {
        self.search_left = MID_STREAM_SEARCH;
        self
    }

    /// What the connection is.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// In-order bytes from one side.
    pub fn data(&mut self, side: Side, mut bytes: &[u8], origin: Origin, out: &mut Vec<HttpEvent>) {
        if self.mode == Mode::Detecting {
            self.mode = if looks_like_request(bytes) {
                Mode::Http { client: side }
            } else if looks_like_response(bytes) {
                Mode::Http { client: side.other() }
            } else if self.search_left > 0 {
                // Seen mid-stream: a request or status line after a line break starts the
                // next message; what comes before it (the end of one) is skipped and counted.
                let at = |request: bool| find_start(bytes, request).map(|i| (i, request));
                match [at(true), at(false)].into_iter().flatten().min() {
                    Some((i, request)) => {
                        // Searched past: the end of a message (its start was before the capture).
                        self.searched += i;
                        bytes = &bytes[i..];
                        Mode::Http { client: if request { side } else { side.other() } }
                    }
                    None if bytes.len() < self.search_left => {
                        self.search_left -= bytes.len();
                        self.searched += bytes.len();
                        return;
                    }
                    None => Mode::NotHttp,
                }
            } else {
                Mode::NotHttp
            };
        }
        let Mode::Http { client } = self.mode else { return };
        self.skipped += std::mem::take(&mut self.searched) as u64;
        self.feed(side, side == client, bytes, origin, out);
    }

    /// A hole of `missing` bytes in one side's stream.
    pub fn gap(&mut self, side: Side, missing: u64, _origin: Origin, out: &mut Vec<HttpEvent>) {
        let Mode::Http { client } = self.mode else { return };
        let is_request = side == client;
        let p = &mut self.parsers[idx(side)];
        let flag = |msg: &mut Message, n: u64| {
            let total = msg
                .flags
                .iter()
                .find_map(
                    |f| if let Flag::TcpGap { bytes_missing } = f { Some(*bytes_missing) } else { None },
                )
                .unwrap_or(0);
            msg.flags.retain(|f| !matches!(f, Flag::TcpGap { .. }));
            msg.flags.push(Flag::TcpGap { bytes_missing: total + n });
        };
        match &mut p.state {
            State::Body(Body::Length(rem)) if missing < *rem => {
                *rem -= missing;
                flag(&mut p.msg, missing);
            }
            State::Body(Body::Length(rem)) => {
                let rem = *rem;
                flag(&mut p.msg, rem);
                self.complete(side, is_request, out);
                if missing > rem {
                    // The hole runs past this body: the rest of it belongs to what follows,
                    // and the next message found flags it (it may have lost its start).
                    let p = &mut self.parsers[idx(side)];
                    p.state = State::Resync;
                    p.gap_before_next += missing - rem;
                }
            }
            State::Body(Body::UntilClose) => flag(&mut p.msg, missing),
            State::Body(_) => {
                flag(&mut p.msg, missing);
                self.complete(side, is_request, out);
                self.parsers[idx(side)].state = State::Resync;
            }
            State::Head => {
                if !p.buf.is_empty() {
                    self.skipped += p.buf.len() as u64;
                    release_head(&self.heads, &mut p.buf);
                }
                p.gap_before_next += missing;
                p.state = State::Resync;
            }
            State::Resync => p.gap_before_next += missing,
        }
    }

    /// A retransmission on `side` carried different bytes: flag the message in progress there,
    /// or, between messages, the exchange that just finished.
    pub fn conflict(&mut self, side: Side) {
        let client = matches!(self.mode, Mode::Http { client } if client == side);
        let p = &mut self.parsers[idx(side)];
        let in_progress = p.msg.request.is_some() || p.msg.response.is_some() || !p.buf.is_empty();
        let flags = match (in_progress, client, self.waiting.back_mut(), &mut self.held) {
            (true, ..) => &mut p.msg.flags,
            // The request just sent, still waiting for its response.
            (false, true, Some(last), _) => &mut last.flags,
            // The response just finished.
            (false, _, _, Some(h)) => &mut h.flags,
            _ => &mut p.msg.flags,
        };
        if !flags.contains(&Flag::RetransmitConflict) {
            flags.push(Flag::RetransmitConflict);
        }
    }

    /// Passes an event on, holding back the newest exchange (see `held`).
    fn emit(&mut self, ev: HttpEvent, out: &mut Vec<HttpEvent>) {
        match ev {
            HttpEvent::Exchange(x) => {
                if let Some(prev) = self.held.replace(x) {
                    self.hand_on(HttpEvent::Exchange(prev), out);
                }
            }
            other => out.push(other),
        }
    }

    /// An event leaves this connection: its bodies no longer count against the budget.
    fn hand_on(&mut self, ev: HttpEvent, out: &mut Vec<HttpEvent>) {
        self.budget.set(self.budget.get().saturating_sub(event_bytes(&ev)));
        out.push(ev);
    }

    /// The connection is over: finish close-delimited bodies, and emit every request still
    /// waiting, flagged as never answered.
    pub fn close(&mut self, out: &mut Vec<HttpEvent>) {
        let client = match self.mode {
            Mode::Http { client } => client,
            Mode::Upgraded => {
                self.flush_waiting(out);
                if let Some(h) = self.held.take() {
                    self.hand_on(HttpEvent::Exchange(h), out);
                }
                return;
            }
            Mode::Detecting | Mode::NotHttp => return,
        };
        for side in [Side::A, Side::B] {
            let is_request = side == client;
            let p = &mut self.parsers[idx(side)];
            let kept = if is_request {
                p.msg.request.as_ref().map_or(0, |r| r.body.len() as u64)
            } else {
                p.msg.response.as_ref().map_or(0, |r| r.body.len() as u64)
            };
            match &p.state {
                State::Body(Body::UntilClose | Body::None) => self.complete(side, is_request, out),
                State::Body(Body::Length(_) | Body::Chunked(_)) => {
                    // The connection ended inside the body.
                    p.msg.flags.push(if is_request {
                        Flag::RequestTruncated { kept }
                    } else {
                        Flag::ResponseTruncated { kept }
                    });
                    self.complete(side, is_request, out);
                }
                State::Head if !p.buf.is_empty() => {
                    // It ended in the middle of a head: not a message, but not lost silently.
                    self.heads_incomplete += 1;
                    self.skipped += p.buf.len() as u64;
                    release_head(&self.heads, &mut p.buf);
                }
                State::Head | State::Resync => {}
            }
        }
        self.flush_waiting(out);
        if let Some(h) = self.held.take() {
            self.hand_on(HttpEvent::Exchange(h), out);
        }
    }

    fn flush_waiting(&mut self, out: &mut Vec<HttpEvent>) {
        while let Some(mut req) = self.waiting.pop_front() {
            req.flags.push(Flag::NoResponse);
            self.emit(exchange(req, None), out);
        }
    }

    fn feed(
        &mut self,
        side: Side,
        is_request: bool,
        mut bytes: &[u8],
        origin: Origin,
        out: &mut Vec<HttpEvent>,
    ) {
        while !bytes.is_empty() {
            if self.mode == Mode::Upgraded {
                return;
            }
            let p = &mut self.parsers[idx(side)];
            match &mut p.state {
                State::Resync => match find_start(bytes, is_request) {
                    Some(at) => {
                        self.skipped += at as u64;
                        bytes = &bytes[at..];
                        p.state = State::Head;
                    }
                    None => {
                        self.skipped += bytes.len() as u64;
                        return;
                    }
                },
                State::Head => {
                    if p.buf.is_empty() {
                        p.msg.origin = origin;
                        if p.gap_before_next > 0 {
                            p.msg
                                .flags
                                .push(Flag::TcpGap { bytes_missing: std::mem::take(&mut p.gap_before_next) });
                        }
                    }
                    let before = p.buf.len();
                    let take = bytes.len().min(self.limits.max_head + 1 - before.min(self.limits.max_head));
                    if self.heads.get() + take > self.limits.max_heads_total {
                        // The heads in progress on all connections together are at their
                        // bound: this one cannot be held. Skip to the next message start.
                        self.heads_dropped += 1;
                        self.skipped += (before + take) as u64;
                        release_head(&self.heads, &mut p.buf);
                        p.state = State::Resync;
                        bytes = &bytes[take..];
                        continue;
                    }
                    // Exact growth: what the bound counts is what the buffer takes, not up to
                    // twice that (a long head arrives in a few dozen segments at most).
                    p.buf.reserve_exact(take);
                    p.buf.extend_from_slice(&bytes[..take]);
                    self.heads.set(self.heads.get() + take);
                    match self.parse_head(side, is_request) {
                        Ok(Some(head_len)) => {
                            // `head_len` counts from the start of buf; what we consumed of
                            // `bytes` is the part of the head that came from them.
                            let used = head_len - before;
                            bytes = &bytes[used..];
                            let p = &mut self.parsers[idx(side)];
                            release_head(&self.heads, &mut p.buf);
                            if matches!(p.state, State::Body(Body::None)) {
                                self.complete(side, is_request, out);
                            }
                        }
                        Ok(None) => {
                            bytes = &bytes[take..];
                            let p = &mut self.parsers[idx(side)];
                            if p.buf.len() > self.limits.max_head {
                                self.malformed += 1;
                                self.skipped += p.buf.len() as u64;
                                release_head(&self.heads, &mut p.buf);
                                p.state = State::Resync;
                            }
                        }
                        Err(()) => {
                            self.malformed += 1;
                            let p = &mut self.parsers[idx(side)];
                            // The next message may start later in these same bytes (junk, then
                            // a request line): the search resumes just past the bad start, not
                            // at the end of the segment.
                            let past = usize::from(before == 0);
                            self.skipped += (before + past) as u64;
                            release_head(&self.heads, &mut p.buf);
                            bytes = &bytes[past..];
                            // Its packets were counted as HTTP already: the connection stays HTTP,
                            // and the skipped bytes and malformed head are counted instead.
                            p.state = State::Resync;
                        }
                    }
                }
                State::Body(body) => {
                    let limits = self.limits;
                    let mut bounds =
                        Bounds { limits, budget: &self.budget, dropped: &mut self.body_bytes_dropped };
                    let used =
                        consume_body(body, &mut p.msg, &mut p.line, bytes, origin, is_request, &mut bounds);
                    bytes = &bytes[used..];
                    if let State::Body(Body::Length(0)) = p.state {
                        self.complete(side, is_request, out);
                    } else if let State::Body(Body::Chunked(Chunk::Done)) = p.state {
                        self.complete(side, is_request, out);
                    }
                }
            }
        }
    }

    /// Parses the head in the side's buffer: `Ok(Some(len))` when complete, `Ok(None)` when
    /// more bytes are needed, `Err` when it is not HTTP.
    fn parse_head(&mut self, side: Side, is_request: bool) -> Result<Option<usize>, ()> {
        let p = &mut self.parsers[idx(side)];
        let mut hdrs = [httparse::EMPTY_HEADER; 128];
        if is_request {
            let mut req = httparse::Request::new(&mut hdrs);
            let n = match req.parse(&p.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            };
            let request = HttpRequest {
                method: req.method.unwrap_or_default().into(),
                target: req.path.unwrap_or_default().to_string(),
                version: http_version(req.version),
                headers: headers(req.headers),
                body: Blob::default(),
                trailers: Vec::new(),
            };
            let body = if has_token(&request.headers, "transfer-encoding", "chunked") {
                Body::Chunked(Chunk::Size)
            } else {
                match content_length(&request.headers) {
                    Some(0) | None => Body::None,
                    Some(n) => Body::Length(n),
                }
            };
            let mut request = request;
            if let Body::Length(n) = body {
                request.body.0.reserve((n as usize).min(self.limits.max_body).min(1 << 20));
            }
            p.msg.request = Some(request);
            p.state = State::Body(body);
            Ok(Some(n))
        } else {
            let mut resp = httparse::Response::new(&mut hdrs);
            let n = match resp.parse(&p.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            };
            let status = resp.code.unwrap_or(0);
            let response = HttpResponse {
                version: http_version(resp.version),
                status,
                reason: resp.reason.unwrap_or_default().into(),
                headers: headers(resp.headers),
                body: Blob::default(),
                trailers: Vec::new(),
                chunks: Vec::new(),
            };
            let method = self.waiting.front().and_then(|m| m.request.as_ref()).map(|r| r.method.as_str());
            let head = method == Some("HEAD");
            let connect_ok = method == Some("CONNECT") && (200..300).contains(&status);
            let body = if (100..200).contains(&status) || status == 204 || status == 304 || head || connect_ok
            {
                Body::None
            } else if has_token(&response.headers, "transfer-encoding", "chunked") {
                Body::Chunked(Chunk::Size)
            } else {
                match content_length(&response.headers) {
                    Some(0) => Body::None,
                    Some(n) => Body::Length(n),
                    None => Body::UntilClose,
                }
            };
            let p = &mut self.parsers[idx(side)];
            p.msg.sse = header(&response.headers, "content-type")
                .is_some_and(|v| v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream"));
            let mut response = response;
            if let Body::Length(n) = body {
                response.body.0.reserve((n as usize).min(self.limits.max_body).min(1 << 20));
            }
            p.msg.response = Some(response);
            p.state = State::Body(body);
            Ok(Some(n))
        }
    }

    /// The side's message is complete: queue a request, or pair a response.
    fn complete(&mut self, side: Side, is_request: bool, out: &mut Vec<HttpEvent>) {
        let p = &mut self.parsers[idx(side)];
        let msg = std::mem::take(&mut p.msg);
        p.state = State::Head;
        p.line.clear();
        if is_request {
            let Some(_) = &msg.request else { return };
            self.requests += 1;
            let mut msg = msg;
            msg.sequence = self.requests;
            self.waiting.push_back(msg);
            if self.waiting.len() > self.limits.max_waiting {
                let mut oldest = self.waiting.pop_front().expect("not empty");
                oldest.flags.push(Flag::NoResponse);
                self.emit(exchange(oldest, None), out);
            }
            return;
        }
        let Some(resp) = &msg.response else { return };
        let status = resp.status;
        if (100..200).contains(&status) && status != 101 {
            // Interim: kept with the exchange it belongs to.
            // It answers the oldest unanswered request: one waiting, or the one still being sent.
            let Some(r) = msg.response else { return };
            let interim = match self.waiting.front_mut() {
                Some(front) => &mut front.interim,
                None => &mut self.parsers[idx(side.other())].msg.interim,
            };
            if interim.len() < MAX_FIELDS {
                interim.push(r);
            } else {
                self.malformed += 1;
            }
            return;
        }
        let Some(req) = self.waiting.pop_front() else {
            let dropped = msg.response.as_ref().map_or(0, |r| r.body.len());
            self.budget.set(self.budget.get().saturating_sub(dropped));
            out.push(HttpEvent::ResponseWithoutRequest);
            if status == 101 {
                // Whatever its request was, what follows is not HTTP.
                self.mode = Mode::Upgraded;
            }
            return;
        };
        let method_connect = req.request.as_ref().is_some_and(|r| r.method == "CONNECT");
        self.emit(exchange(req, Some(msg)), out);
        if status == 101 || (method_connect && (200..300).contains(&status)) {
            self.mode = Mode::Upgraded;
            self.flush_waiting(out);
        }
    }
}

/// What bounds a body: the limits, the budget shared by all connections, and where to count
/// the bytes dropped.
struct Bounds<'a> {
    limits: HttpLimits,
    budget: &'a Cell<usize>,
    dropped: &'a mut u64,
}

/// Consumes body bytes; returns how many of `bytes` were used.
fn consume_body(
    body: &mut Body,
    msg: &mut Message,
    line: &mut Vec<u8>,
    bytes: &[u8],
    origin: Origin,
    is_request: bool,
    bounds: &mut Bounds<'_>,
) -> usize {
    let Bounds { limits, budget, dropped } = bounds;
    let (limits, budget) = (*limits, &**budget);
    let start_ts = msg.origin.ts_ns;
    let sse = msg.sse;
    let mut keep = |msg: &mut Message, data: &[u8]| {
        let target = if is_request {
            &mut msg.request.as_mut().expect("request").body
        } else {
            &mut msg.response.as_mut().expect("response").body
        };
        // Once cut, a body stays cut: bytes after a cut would sit after a hole.
        let room = if msg.body_dropped > 0 {
            0
        } else {
            limits.max_body.saturating_sub(target.0.len()).min(limits.max_total.saturating_sub(budget.get()))
        };
        let n = data.len().min(room);
        if sse && !is_request && n > 0 {
            let at = target.0.len() as u64;
            let offset_ns = origin.ts_ns.saturating_sub(start_ts).max(0) as u64;
            let r = msg.response.as_mut().expect("response");
            if r.chunks.last().is_none_or(|c| c.offset_ns != offset_ns) {
                r.chunks.push(ChunkMark { at, offset_ns });
            }
        }
        let target = if is_request {
            &mut msg.request.as_mut().expect("request").body
        } else {
            &mut msg.response.as_mut().expect("response").body
        };
        target.0.extend_from_slice(&data[..n]);
        budget.set(budget.get() + n);
        if n < data.len() {
            if msg.body_dropped == 0 {
                let kept = target.0.len() as u64;
                msg.flags.push(if is_request {
                    Flag::RequestTruncated { kept }
                } else {
                    Flag::ResponseTruncated { kept }
                });
            }
            msg.body_dropped += (data.len() - n) as u64;
            **dropped += (data.len() - n) as u64;
        }
    };
    match body {
        Body::None => 0,
        Body::UntilClose => {
            keep(msg, bytes);
            bytes.len()
        }
        Body::Length(rem) => {
            let n = (*rem).min(bytes.len() as u64) as usize;
            keep(msg, &bytes[..n]);
            *rem -= n as u64;
            n
        }
        Body::Chunked(state) => {
            let mut used = 0;
            while used < bytes.len() {
                let rest = &bytes[used..];
                match *state {
                    Chunk::Done => return used,
                    Chunk::Size | Chunk::DataEnd | Chunk::Trailers => {
                        // Line-oriented states: gather one line (raw bytes kept as sent).
                        let nl = rest.iter().position(|&b| b == b'\n');
                        let take = nl.map_or(rest.len(), |i| i + 1);
                        line.extend_from_slice(&rest[..take]);
                        keep(msg, &rest[..take]);
                        used += take;
                        if nl.is_none() {
                            if line.len() > 8192 {
                                // Not chunked framing after all: keep the rest until close.
                                line.clear();
                                *body = Body::UntilClose;
                                return used;
                            }
                            break;
                        }
                        let text = std::mem::take(line);
                        let text = text.strip_suffix(b"\n").unwrap_or(&text);
                        let text = text.strip_suffix(b"\r").unwrap_or(text);
                        match *state {
                            Chunk::Size => {
                                let hex = text.split(|&c| c == b';').next().unwrap_or(b"").trim_ascii();
                                let size = std::str::from_utf8(hex)
                                    .ok()
                                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                                match size {
                                    Some(0) => *state = Chunk::Trailers,
                                    Some(n) => *state = Chunk::Data(n),
                                    None => {
                                        *body = Body::UntilClose;
                                        return used;
                                    }
                                }
                            }
                            Chunk::DataEnd => *state = Chunk::Size,
                            Chunk::Trailers => {
                                if text.is_empty() {
                                    *state = Chunk::Done;
                                    return used;
                                }
                                let count = if is_request {
                                    msg.request.as_ref().map_or(0, |r| r.trailers.len())
                                } else {
                                    msg.response.as_ref().map_or(0, |r| r.trailers.len())
                                };
                                if count >= MAX_FIELDS {
                                    // Kept in the raw body, not parsed further.
                                } else if let Some(colon) = text.iter().position(|&c| c == b':') {
                                    let name = Name::from(String::from_utf8_lossy(&text[..colon]).trim());
                                    let value = text[colon + 1..].trim_ascii().to_vec();
                                    let t = Header(name, Blob(value));
                                    if is_request {
                                        msg.request.as_mut().expect("request").trailers.push(t);
                                    } else {
                                        msg.response.as_mut().expect("response").trailers.push(t);
                                    }
                                }
                            }
                            Chunk::Data(_) | Chunk::Done => unreachable!(),
                        }
                    }
                    Chunk::Data(rem) => {
                        let n = rem.min(rest.len() as u64) as usize;
                        keep(msg, &rest[..n]);
                        used += n;
                        *state = if rem == n as u64 { Chunk::DataEnd } else { Chunk::Data(rem - n as u64) };
                    }
                }
            }
            used
        }
    }
}

/// A request (and its response, if any) as one exchange, with the flags of both.
fn exchange(req: Message, resp: Option<Message>) -> HttpEvent {
    let mut flags = req.flags;
    let response = resp.map(|r| {
        for f in r.flags {
            if !flags.contains(&f) {
                flags.push(f);
            }
        }
        r.response.expect("a response message")
    });
    HttpEvent::Exchange(Box::new(Exchange {
        exchange: HttpExchange {
            request: req.request.expect("a request message"),
            interim: req.interim,
            response,
        },
        flags,
        origin: req.origin,
        sequence: req.sequence,
    }))
}
