//! The recording proxy: a reverse proxy in front of one upstream (an LLM or copilot API) that
//! records every exchange into a corpus.
//!
//! - Clients speak HTTP/1.1 or HTTP/2 (prior knowledge); the upstream is `http://` or
//!   `https://` (rustls, certificates verified against the system roots plus `ca_certs`; HTTP/2
//!   when the upstream offers it by ALPN).
//! - Bodies stream through in both directions: nothing is held back, so a server-sent-events
//!   completion reaches the client chunk by chunk. A [`Tee`] beside each body copies what
//!   passes (up to `max_body` bytes per body; past it the case is flagged truncated) and, for
//!   the response, when each chunk arrived.
//! - A case is finished when the last of its two bodies is done (or dropped: a client that hangs
//!   up mid-stream gives a case flagged `response_truncated`). It then goes through a bounded
//!   mailbox to one writer thread, which redacts it and appends it to the corpus (the writer
//!   polls while cases come, so a request's path never pays for waking it). The writer
//!   syncs at most `sync_interval` after a case arrives, on a timer as well as on appends, so a
//!   `kill -9` loses at most that much. The bounded mailbox is back-pressure: a slow disk slows
//!   the proxy down instead of growing its memory.
//! - Safe by default: a non-loopback listen address needs an auth token; only the configured
//!   upstream is ever contacted (`CONNECT` gets 405, an absolute-form request for another host
//!   gets 403); corpus files are mode 0600 (the corpus writer's).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use corpora::{
    Appended, Blob, Case, CaseData, CaseId, ChunkMark, CorpusWriter, Flag, Header, HttpExchange, HttpRequest,
    HttpResponse, Source,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;

use crate::mailbox::{Mailbox, Taken};
use crate::redact::Redactor;
use crate::upstream::UpstreamPool;

/// The header a client sends the proxy's auth token in (`Proxy-Authorization: Bearer TOKEN`
/// works too). Never forwarded, never recorded.
pub const TOKEN_HEADER: &str = "x-replay-token";

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Where to listen. A non-loopback address needs `auth_token`.
    pub listen: SocketAddr,
    /// The one upstream: `http://host:port[/base]` or `https://...`. Request paths are appended
    /// to the base path.
    pub upstream: String,
    /// When set, every request must carry it (see [`TOKEN_HEADER`]).
    pub auth_token: Option<String>,
    /// Bytes of each body kept in the recording; the rest still streams through.
    pub max_body: usize,
    /// Extra CA certificates (PEM files) trusted for an HTTPS upstream, beside the system's.
    pub ca_certs: Vec<PathBuf>,
    /// The longest a recorded case waits before it is flushed and synced to disk.
    pub sync_interval: Duration,
    /// On shutdown, how long open exchanges (a long SSE stream) may go on before they are cut
    /// (and recorded as truncated).
    pub grace: Duration,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
    /// Threads serving connections (default: one per core).
    pub threads: Option<usize>,
    /// Stop (as on `shutdown`) once this many exchanges have reached the corpus writer.
    pub stop_after: Option<u64>,
}

impl ProxyOptions {
    /// Defaults for everything but where to listen and the upstream.
    pub fn new(listen: SocketAddr, upstream: impl Into<String>) -> ProxyOptions {
        ProxyOptions {
            listen,
            upstream: upstream.into(),
            auth_token: None,
            max_body: 16 << 20,
            ca_certs: Vec::new(),
            sync_interval: Duration::from_secs(1),
            grace: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            threads: None,
            stop_after: None,
        }
    }
}

/// Why the proxy could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A non-loopback listen address without an auth token.
    #[error(
        "refusing to listen on {0} without --auth-token: anyone who can reach that address could send requests on your upstream credentials; listen on 127.0.0.1 or give a token"
    )]
    OpenListen(SocketAddr),
    /// The upstream URL is not usable.
    #[error("upstream {url:?}: {why}")]
    Upstream {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A CA certificate file could not be read.
    #[error("CA certificate {path}: {why}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The listening socket could not be opened.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime or the writer thread could not start.
    #[error("failed to start: {0}")]
    Start(std::io::Error),
}

/// What a proxy run did; stored in the corpus manifest and printed at the end.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProxyStats {
    /// The upstream.
    pub upstream: String,
    /// Client connections accepted.
    pub connections: u64,
    /// Requests forwarded to the upstream.
    pub requests: u64,
    /// Exchanges written as new cases.
    pub recorded: u64,
    /// Of `recorded`, exchanges whose request was byte for byte one recorded before (in this run
    /// or already in the corpus). Each is kept as a numbered repeat ([`Case::with_repeat`]), so
    /// that playback answers repeated requests in recorded order: a model may answer the same
    /// prompt differently each time.
    pub repeats: u64,
    /// Cases with at least one redacted value.
    pub redacted: u64,
    /// Request bodies recorded cut at the size cap.
    pub request_truncated: u64,
    /// Response bodies recorded cut at the size cap, or cut because the client or the upstream
    /// went away mid-body.
    pub response_truncated: u64,
    /// Requests the upstream did not answer (connection, TLS or protocol error); answered 502
    /// and recorded without a response.
    pub upstream_errors: u64,
    /// Requests refused by the proxy (not forwarded, not recorded), by reason.
    pub refused: BTreeMap<String, u64>,
    /// Cases that could not be written (disk full, ...): each also printed as a warning.
    pub write_errors: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    recorded: AtomicU64,
    repeats: AtomicU64,
    redacted: AtomicU64,
    request_truncated: AtomicU64,
    response_truncated: AtomicU64,
    upstream_errors: AtomicU64,
    refused_connect: AtomicU64,
    refused_host: AtomicU64,
    refused_token: AtomicU64,
    write_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self, upstream: &str) -> ProxyStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut refused = BTreeMap::new();
        for (name, c) in [
            ("connect", &self.refused_connect),
            ("other_host", &self.refused_host),
            ("bad_token", &self.refused_token),
        ] {
            if g(c) > 0 {
                refused.insert(name.to_string(), g(c));
            }
        }
        ProxyStats {
            upstream: upstream.to_string(),
            connections: g(&self.connections),
            requests: g(&self.requests),
            recorded: g(&self.recorded),
            repeats: g(&self.repeats),
            redacted: g(&self.redacted),
            request_truncated: g(&self.request_truncated),
            response_truncated: g(&self.response_truncated),
            upstream_errors: g(&self.upstream_errors),
            refused,
            write_errors: g(&self.write_errors),
        }
    }
}

/// The upstream, parsed.
#[derive(Debug, Clone)]
struct Upstream {
    https: bool,
    authority: http::uri::Authority,
    /// Base path without a trailing slash (`""` for none).
    base: String,
}

impl Upstream {
    fn parse(url: &str) -> Result<Upstream, ProxyError> {
        let bad = |why: &str| ProxyError::Upstream { url: url.to_string(), why: why.to_string() };
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("expected an http:// or https:// URL")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a query string cannot be a base; give scheme, host, port and path only"));
        }
        let base = uri.path().trim_end_matches('/').to_string();
        Ok(Upstream { https, authority, base })
    }

    fn url(&self) -> String {
        format!("{}://{}{}", if self.https { "https" } else { "http" }, self.authority, self.base)
    }

    /// `scheme://authority`, what the proxy connects to.
    fn origin(&self) -> Uri {
        Uri::builder()
            .scheme(if self.https { "https" } else { "http" })
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .expect("a scheme and an authority parsed before make a URI")
    }

    /// The origin-form target sent upstream: the base path, then the client's path and query.
    fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        if self.base.is_empty() {
            Ok(Uri::try_from(path_and_query)?)
        } else {
            Ok(Uri::try_from(format!("{}{}", self.base, path_and_query))?)
        }
    }
}

/// A bound, configured proxy, ready to [`run`](Bound::run).
pub struct Bound {
    listener: std::net::TcpListener,
    local: SocketAddr,
    upstream: Upstream,
    tls: rustls::ClientConfig,
    opts: ProxyOptions,
}

/// Checks the options, reads the CA certificates and opens the listening socket.
pub fn bind(opts: &ProxyOptions) -> Result<Bound, ProxyError> {
    if !opts.listen.ip().is_loopback() && opts.auth_token.as_deref().is_none_or(str::is_empty) {
        return Err(ProxyError::OpenListen(opts.listen));
    }
    let upstream = Upstream::parse(&opts.upstream)?;
    let tls = tls_config(&opts.ca_certs)?;
    let listener = std::net::TcpListener::bind(opts.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ProxyError::Bind { addr: opts.listen, source })?;
    let local = listener.local_addr().map_err(|source| ProxyError::Bind { addr: opts.listen, source })?;
    Ok(Bound { listener, local, upstream, tls, opts: opts.clone() })
}

fn tls_config(extra: &[PathBuf]) -> Result<rustls::ClientConfig, ProxyError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots; a machine without any still works with --ca-cert.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for path in extra {
        let shown = path.display().to_string();
        let ca = |why: String| ProxyError::Ca { path: shown.clone(), why };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| ca(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Ca { path: "(TLS setup)".into(), why: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

type ProxyBody = Either<Tee<Incoming>, Full<Bytes>>;

struct Shared {
    upstream: Upstream,
    upstream_url: String,
    client: UpstreamPool<Tee<Incoming>>,
    token: Option<String>,
    listen: SocketAddr,
    max_body: usize,
    mailbox: Arc<Mailbox<Finished>>,
    counters: Arc<Counters>,
}

impl Bound {
    /// The address the proxy listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes, then lets open exchanges finish for the grace period,
    /// records what they did, and hands back the writer (not closed: the caller adds its summary
    /// and closes it) with the run's figures.
    pub fn run(
        self,
        writer: CorpusWriter,
        redactor: Redactor,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(CorpusWriter, ProxyStats), ProxyError> {
        let counters = Arc::new(Counters::default());
        // The writer polls while cases come (every millisecond at high rates, less often at
        // low ones), so the proxy's tasks never wake it on their way from the upstream's last
        // byte to the client.
        let mailbox = Arc::new(Mailbox::new(1024, Duration::from_millis(1), Duration::from_millis(100)));
        let interval = self.opts.sync_interval;
        let wc = counters.clone();
        let mb = mailbox.clone();
        // Told by the writer when `stop_after` exchanges are in: the acceptor stops as on
        // `shutdown`.
        let enough = Arc::new(tokio::sync::Notify::new());
        let stop = self.opts.stop_after.map(|n| (n, enough.clone()));
        let writer_thread = std::thread::Builder::new()
            .name("replay-proxy-writer".into())
            .spawn(move || {
                // However the loop ends (a panic included), the box closes: workers posting
                // into it get their cases back instead of waiting for room for ever.
                struct CloseOnDrop(Arc<Mailbox<Finished>>);
                impl Drop for CloseOnDrop {
                    fn drop(&mut self) {
                        self.0.close();
                    }
                }
                let _close = CloseOnDrop(mb.clone());
                write_loop(&mb, writer, &redactor, &wc, interval, stop)
            })
            .map_err(ProxyError::Start)?;
        let upstream_url = self.upstream.url();
        // One single-threaded runtime per core, each owning its connections and its pool of
        // upstream connections, the way nginx runs a worker per core: a request never hops
        // between threads (against one shared work-stealing runtime, context switches per
        // request fell from 0.84 to 0.63 under wrk -c32).
        let threads = self
            .opts
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut feeds = Vec::with_capacity(threads);
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (feed, conns) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, u64)>();
            feeds.push(feed);
            let ctx = WorkerCtx {
                upstream: self.upstream.clone(),
                upstream_url: upstream_url.clone(),
                tls: self.tls.clone(),
                token: self.opts.auth_token.clone().filter(|t| !t.is_empty()),
                listen: self.local,
                max_body: self.opts.max_body,
                connect_timeout: self.opts.connect_timeout,
                grace: self.opts.grace,
                mailbox: mailbox.clone(),
                counters: counters.clone(),
            };
            let stop = stop_rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("replay-proxy-{i}"))
                .spawn(move || worker(ctx, conns, stop));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    drop(feeds);
                    let _ = stop_tx.send(true);
                    for w in workers {
                        let _ = w.join();
                    }
                    mailbox.close();
                    let _ = writer_thread.join();
                    return Err(ProxyError::Start(e));
                }
            }
        }
        // This thread accepts and deals connections round-robin to the workers (a hand-off per
        // connection, not per request: clients keep their connections alive).
        let accepted = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ProxyError::Start)
            .and_then(|rt| {
                rt.block_on(async {
                    let listener =
                        tokio::net::TcpListener::from_std(self.listener).map_err(ProxyError::Start)?;
                    let shutdown = async move {
                        tokio::select! {
                            () = shutdown => {}
                            () = enough.notified() => {}
                        }
                    };
                    accept_loop(listener, &feeds, &counters, shutdown).await;
                    Ok(())
                })
            });
        drop(feeds);
        let _ = stop_tx.send(true);
        for w in workers {
            let _ = w.join();
        }
        // Every worker runtime is gone: tasks past the grace period were dropped, and their
        // bodies' tees finished those cases as truncated.
        mailbox.close();
        let writer = writer_thread
            .join()
            .map_err(|_| ProxyError::Start(std::io::Error::other("the corpus writer thread panicked")))?;
        accepted?;
        Ok((writer, counters.snapshot(&upstream_url)))
    }
}

/// What one worker thread needs to build its runtime, its upstream client and its [`Shared`].
struct WorkerCtx {
    upstream: Upstream,
    upstream_url: String,
    tls: rustls::ClientConfig,
    token: Option<String>,
    listen: SocketAddr,
    max_body: usize,
    connect_timeout: Duration,
    grace: Duration,
    mailbox: Arc<Mailbox<Finished>>,
    counters: Arc<Counters>,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    feeds: &[tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, u64)>],
    counters: &Counters,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_conn = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted.and_then(|(s, _)| s.into_std()) {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little instead of spinning.
                        eprintln!("warning: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                next_conn += 1;
                bump(&counters.connections);
                let feed = &feeds[(next_conn as usize) % feeds.len()];
                let _ = feed.send((stream, next_conn));
            }
            () = &mut shutdown => break,
        }
    }
}

fn worker(
    ctx: WorkerCtx,
    mut conns: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, u64)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warning: a proxy worker could not start: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(ctx.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(ctx.tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = UpstreamPool::new(connector, ctx.upstream.origin());
        let shared = Arc::new(Shared {
            upstream: ctx.upstream,
            upstream_url: ctx.upstream_url,
            client,
            token: ctx.token,
            listen: ctx.listen,
            max_body: ctx.max_body,
            mailbox: ctx.mailbox,
            counters: ctx.counters,
        });
        let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        server.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(60));
        server.http2().timer(TokioTimer::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                conn = conns.recv() => {
                    let Some((stream, conn_id)) = conn else { break };
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("warning: connection {conn_id} dropped: {e}");
                            continue;
                        }
                    };
                    let seq = Arc::new(AtomicU64::new(0));
                    let sh = shared.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
                        handle(sh.clone(), conn_id, n, req)
                    });
                    let conn = server.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let _ = tokio::time::timeout(ctx.grace, graceful.shutdown()).await;
    });
    // Drops every task still running (streams past the grace period): their bodies' tees
    // finish those cases as truncated.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

fn text(status: StatusCode, why: &str, message: String) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(message + "\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut()
        .insert("x-replay-proxy", HeaderValue::from_str(why).unwrap_or(HeaderValue::from_static("refused")));
    r
}

/// Removes the hop-by-hop headers (RFC 9110 section 7.6.1), those the `Connection` header
/// lists, `Host` (the next hop's is set by the upstream client) and the proxy's own token,
/// which are neither forwarded nor (for the token) recorded. `keep_te_trailers` keeps
/// `TE: trailers`.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    use http::header::{
        CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    };
    // Before the `Connection` list, which names `TE` when a client sends it.
    let te_trailers = keep_te_trailers
        && headers.get_all(TE).iter().any(|v| {
            v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    headers.remove(TE);
    if headers.contains_key(CONNECTION) {
        for listed in connection_listed(headers) {
            headers.remove(listed.as_str());
        }
        headers.remove(CONNECTION);
    }
    for name in [PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TRAILER, TRANSFER_ENCODING, UPGRADE, HOST] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection", TOKEN_HEADER] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The content codings redaction can see through (see `corpora::body`).
const DECODABLE: &[&str] = &["gzip", "x-gzip", "deflate", "br", "identity"];

/// Offers the upstream only codings the recorder decodes: a body in any other (`zstd`) could
/// not be checked for secrets and would be withheld from the corpus. `*` and the rest are
/// dropped; with nothing left, `identity`.
fn accept_only_decodable(headers: &mut HeaderMap) {
    use http::header::ACCEPT_ENCODING;
    if !headers.contains_key(ACCEPT_ENCODING) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            let coding = t.split(';').next().unwrap_or("").trim();
            DECODABLE.iter().any(|c| c.eq_ignore_ascii_case(coding))
        })
        .map(str::to_string)
        .collect();
    headers.remove(ACCEPT_ENCODING);
    let value = if kept.is_empty() { "identity".to_string() } else { kept.join(", ") };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(ACCEPT_ENCODING, v);
    }
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect()
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn recorded_headers(headers: &HeaderMap, skip: impl Fn(&HeaderName) -> bool) -> Vec<Header> {
    headers.iter().filter(|(n, _)| !skip(n)).map(|(n, v)| Header::new(n.as_str(), v.as_bytes())).collect()
}

fn token_ok(expected: &str, headers: &HeaderMap) -> bool {
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(http::header::PROXY_AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        })
        .unwrap_or("");
    // Constant time in the token's content.
    given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn handle(
    sh: Arc<Shared>,
    conn: u64,
    seq: u64,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let time_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    if let Some(t) = &sh.token
        && !token_ok(t, req.headers())
    {
        bump(&sh.counters.refused_token);
        let mut r = text(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "bad-token",
            format!(
                "replay proxy: this proxy needs its token: send `{TOKEN_HEADER}: TOKEN` or `Proxy-Authorization: Bearer TOKEN`"
            ),
        );
        r.headers_mut().insert(http::header::PROXY_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    if req.method() == Method::CONNECT {
        bump(&sh.counters.refused_connect);
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect-refused",
            format!(
                "replay proxy: CONNECT refused: this is a recording reverse proxy for {} only, not an open proxy",
                sh.upstream_url
            ),
        ));
    }
    // An absolute-form HTTP/1 request names the host it wants: only this proxy's own address or
    // the upstream's is accepted. (HTTP/2 always carries an authority, like a Host header; the
    // request goes to the upstream whatever it says.)
    if req.version() < Version::HTTP_2
        && let Some(auth) = req.uri().authority()
    {
        let ours = auth.as_str() == sh.upstream.authority.as_str()
            || auth.port_u16() == Some(sh.listen.port())
                && (auth.host() == "localhost"
                    || auth.host().trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().ok()
                        == Some(sh.listen.ip()));
        if !ours {
            bump(&sh.counters.refused_host);
            return Ok(text(
                StatusCode::FORBIDDEN,
                "other-host-refused",
                format!(
                    "replay proxy: request for {auth} refused: this proxy forwards only to its upstream {}",
                    sh.upstream_url
                ),
            ));
        }
    }
    bump(&sh.counters.requests);
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = HttpRequest {
        method: parts.method.as_str().into(),
        target: path_and_query.clone(),
        version: version_name(parts.version).into(),
        // What the client said to the proxy itself (its token) is not part of the exchange.
        headers: recorded_headers(&parts.headers, |n| {
            n == TOKEN_HEADER || n == http::header::PROXY_AUTHORIZATION
        }),
        body: Blob::default(),
        trailers: Vec::new(),
    };
    let capture = Arc::new(Mutex::new(Capture {
        mailbox: Some(sh.mailbox.clone()),
        counters: sh.counters.clone(),
        source: Source::Proxy { connection: conn, sequence: seq },
        time_ns,
        started,
        max_body: sh.max_body,
        request,
        request_state: BodyState::Open,
        response: None,
        response_state: BodyState::Open,
        upstream_error: None,
    }));
    let uri = match sh.upstream.uri_for(&path_and_query) {
        Ok(u) => u,
        Err(e) => {
            capture.lock().unwrap().upstream_error = Some(format!("bad request target: {e}"));
            bump(&sh.counters.upstream_errors);
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "bad-target",
                format!("replay proxy: bad request target {path_and_query:?}: {e}"),
            ));
        }
    };
    // The client's request goes on with its own head, less what is hop by hop ("TE: trailers"
    // excepted: it says the client takes trailers, which the upstream should know).
    parts.uri = uri;
    parts.extensions = http::Extensions::new();
    strip_hop_by_hop(&mut parts.headers, true);
    accept_only_decodable(&mut parts.headers);
    let up = Request::from_parts(parts, Tee::new(body, capture.clone(), Side::Request));
    match sh.client.send(up).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            {
                let mut c = capture.lock().unwrap();
                c.response = Some(HttpResponse {
                    version: version_name(parts.version).into(),
                    status: parts.status.as_u16(),
                    reason: parts.status.canonical_reason().unwrap_or("").into(),
                    // The body is recorded with its transfer coding removed (its content coding
                    // kept), so the header that described the framing is not kept either.
                    headers: recorded_headers(&parts.headers, |n| n == http::header::TRANSFER_ENCODING),
                    ..HttpResponse::default()
                });
            }
            // The upstream's head goes back to the client, less what is hop by hop.
            parts.extensions = http::Extensions::new();
            strip_hop_by_hop(&mut parts.headers, false);
            Ok(Response::from_parts(parts, Either::Left(Tee::new(body, capture, Side::Response))))
        }
        Err(e) => {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why.push_str(": ");
                why.push_str(&s.to_string());
                src = s.source();
            }
            bump(&sh.counters.upstream_errors);
            capture.lock().unwrap().upstream_error = Some(why.clone());
            Ok(text(
                StatusCode::BAD_GATEWAY,
                "upstream-error",
                format!("replay proxy: upstream {} failed: {why}", sh.upstream_url),
            ))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BodyState {
    Open,
    Complete,
    /// Ended by an error or a drop before its end.
    Cut,
}

/// One exchange being recorded. Shared by the two body tees and the handler; when the last of
/// them lets go, `Drop` sends the finished case to the writer.
struct Capture {
    mailbox: Option<Arc<Mailbox<Finished>>>,
    counters: Arc<Counters>,
    source: Source,
    time_ns: i64,
    started: Instant,
    max_body: usize,
    request: HttpRequest,
    request_state: BodyState,
    response: Option<HttpResponse>,
    response_state: BodyState,
    upstream_error: Option<String>,
}

impl Capture {
    fn data(&mut self, side: Side, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        let offset_ns = self.started.elapsed().as_nanos() as u64;
        let cap = self.max_body;
        let body = match side {
            Side::Request => &mut self.request.body.0,
            Side::Response => match &mut self.response {
                Some(r) => {
                    if r.body.0.len() < cap {
                        r.chunks.push(ChunkMark { at: r.body.0.len() as u64, offset_ns });
                    }
                    &mut r.body.0
                }
                None => return,
            },
        };
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&data[..data.len().min(room)]);
        // Past the cap only the length is known; remember that the body was longer.
        if data.len() > room {
            match side {
                Side::Request => self.request_state = BodyState::Cut,
                Side::Response => self.response_state = BodyState::Cut,
            }
        }
    }

    fn trailers(&mut self, side: Side, trailers: &HeaderMap) {
        let t = recorded_headers(trailers, |_| false);
        match side {
            Side::Request => self.request.trailers = t,
            Side::Response => {
                if let Some(r) = &mut self.response {
                    r.trailers = t;
                }
            }
        }
    }

    fn end(&mut self, side: Side, complete: bool) {
        let state = match side {
            Side::Request => &mut self.request_state,
            Side::Response => &mut self.response_state,
        };
        // A body already cut at the cap stays cut.
        if *state == BodyState::Open {
            *state = if complete { BodyState::Complete } else { BodyState::Cut };
        }
    }
}

/// A finished exchange on its way to the writer, which redacts it and only then makes it a
/// case (its id hashed once, from what is stored, off the request's path).
struct Finished {
    data: CaseData,
    source: Source,
    time_ns: i64,
    flags: Vec<Flag>,
    tags: BTreeMap<String, String>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let Some(mailbox) = self.mailbox.take() else { return };
        let mut flags = Vec::new();
        let kept_req = self.request.body.len() as u64;
        if self.request_state != BodyState::Complete {
            bump(&self.counters.request_truncated);
            flags.push(Flag::RequestTruncated { kept: kept_req });
        }
        match self.response.as_ref().map(|r| r.body.len() as u64) {
            None => flags.push(Flag::NoResponse),
            Some(kept) if self.response_state != BodyState::Complete => {
                bump(&self.counters.response_truncated);
                flags.push(Flag::ResponseTruncated { kept });
            }
            Some(_) => {}
        }
        let mut tags = BTreeMap::new();
        if let Some(e) = self.upstream_error.take() {
            tags.insert("upstream_error".into(), e);
        }
        let finished = Finished {
            data: CaseData::Http(HttpExchange {
                request: std::mem::take(&mut self.request),
                interim: Vec::new(),
                response: self.response.take(),
            }),
            source: std::mem::take(&mut self.source),
            time_ns: self.time_ns,
            flags,
            tags,
        };
        // Blocks when the writer is behind: back-pressure instead of unbounded memory.
        if let Err(f) = mailbox.post(finished) {
            // Only after the writer has closed: a task that outlived the shutdown.
            bump(&self.counters.write_errors);
            if let CaseData::Http(x) = &f.data {
                eprintln!(
                    "warning: {} {} not recorded: the corpus was already closed",
                    x.request.method, x.request.target
                );
            }
        }
    }
}

/// A body that passes every frame through unchanged and copies it into the exchange's
/// [`Capture`].
pub struct Tee<B> {
    inner: B,
    capture: Arc<Mutex<Capture>>,
    side: Side,
    done: bool,
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let r = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let mut c = this.capture.lock().unwrap();
        match &r {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    c.data(this.side, d);
                } else if let Some(t) = frame.trailers_ref() {
                    c.trailers(this.side, t);
                }
                // A body framed by its length is done at its last byte: the reader need not
                // poll again for the end, and hyper does not.
                if this.inner.is_end_stream() {
                    c.end(this.side, true);
                    this.done = true;
                }
            }
            Some(Err(_)) => {
                c.end(this.side, false);
                this.done = true;
            }
            None => {
                c.end(this.side, true);
                this.done = true;
            }
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body<Data = Bytes> + Unpin> Tee<B> {
    fn new(inner: B, capture: Arc<Mutex<Capture>>, side: Side) -> Tee<B> {
        // A body empty by its framing (no content, `Content-Length: 0`) may never be polled:
        // it is complete now.
        let done = inner.is_end_stream();
        if done {
            capture.lock().unwrap().end(side, true);
        }
        Tee { inner, capture, side, done }
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        if !self.done
            && let Ok(mut c) = self.capture.lock()
        {
            // Dropped before its end: the client or the upstream went away mid-body.
            c.end(self.side, false);
        }
    }
}

/// Numbers recordings of the same request (see [`Case::with_repeat`]).
#[derive(Default)]
struct Repeats {
    /// For inputs seen more than once: the next repeat number. Inputs recorded once are not
    /// kept here (the corpus index already knows them), so this grows with repeated inputs only.
    next: HashMap<CaseId, u32>,
}

impl Repeats {
    /// The repeat number for a new recording of the input whose first recording has id `base`:
    /// 0 if the corpus has none yet, else one past the last present.
    fn number(&mut self, writer: &CorpusWriter, base: CaseId) -> u32 {
        let n = match self.next.get(&base) {
            Some(&n) => n,
            None if !writer.contains(&base) => return 0,
            None => (1..).find(|&k| !writer.contains(&Case::repeat_of(base, k))).unwrap_or(u32::MAX),
        };
        self.next.insert(base, n.saturating_add(1));
        n
    }
}

fn write_loop(
    mailbox: &Mailbox<Finished>,
    mut writer: CorpusWriter,
    redactor: &Redactor,
    counters: &Counters,
    interval: Duration,
    mut stop_after: Option<(u64, Arc<tokio::sync::Notify>)>,
) -> CorpusWriter {
    let mut dirty_since: Option<Instant> = None;
    let mut repeats = Repeats::default();
    let mut taken = 0u64;
    let mut last_batch: Option<Instant> = None;
    loop {
        match mailbox.take(dirty_since.map(|t| t + interval), last_batch) {
            Taken::Batch(cases) => {
                last_batch = Some(Instant::now());
                for f in cases {
                    taken += 1;
                    if let Some((n, enough)) = &stop_after
                        && taken >= *n
                    {
                        // `notify_one` keeps the permit if the acceptor is not waiting yet.
                        enough.notify_one();
                        stop_after = None;
                    }
                    let mut data = f.data;
                    // A panic while redacting leaves the case half redacted: it is not written.
                    let redacted = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        redactor.data(&mut data)
                    })) {
                        Ok(r) => r,
                        Err(_) => {
                            bump(&counters.write_errors);
                            eprintln!(
                                "warning: an exchange not recorded: redacting it failed (a bug: please report it)"
                            );
                            continue;
                        }
                    };
                    let mut case = Case::new(data).with_source(f.source).with_time_ns(f.time_ns);
                    let repeat = repeats.number(&writer, case.id());
                    if repeat > 0 {
                        case = case.with_repeat(repeat);
                        bump(&counters.repeats);
                    }
                    case.tags = f.tags;
                    for flag in f.flags {
                        case.add_flag(flag);
                    }
                    if !redacted.is_empty() {
                        case.add_flag(Flag::Redacted { fields: redacted });
                        bump(&counters.redacted);
                    }
                    match writer.append(&case) {
                        Ok(Appended::New) => {
                            bump(&counters.recorded);
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                        Ok(Appended::Duplicate) => {
                            // Cannot happen: `Repeats` numbered it past every recording present.
                            bump(&counters.write_errors);
                            eprintln!(
                                "warning: case {} not recorded: its repeat number was taken",
                                case.id()
                            );
                        }
                        Err(e) => {
                            bump(&counters.write_errors);
                            eprintln!("warning: case {} not recorded: {e}", case.id());
                        }
                    }
                }
            }
            Taken::Timeout => {}
            Taken::Closed => break,
        }
        // On the timer and under steady load alike: nothing waits longer than the interval.
        if dirty_since.is_some_and(|t| t.elapsed() >= interval) {
            if let Err(e) = writer.sync() {
                eprintln!("warning: {e}");
            }
            dirty_since = None;
        }
    }
    writer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_are_stripped_and_te_trailers_survives() {
        let request = || {
            map(&[
                ("host", "proxy.local"),
                ("connection", "keep-alive, TE, X-Hop"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("x-hop", "1"),
                ("proxy-connection", "keep-alive"),
                ("proxy-authorization", "Bearer t"),
                (TOKEN_HEADER, "t"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("trailer", "x-sum"),
                ("authorization", "Bearer sk-kept"),
                ("accept", "a"),
                ("accept", "b"),
            ])
        };
        let mut h = request();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(names(&h), ["accept: a", "accept: b", "authorization: Bearer sk-kept", "te: trailers"]);
        let mut h = request();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["accept: a", "accept: b", "authorization: Bearer sk-kept"]);
        // `TE` with other codings: only `trailers` goes on.
        let mut h = map(&[("te", "gzip;q=0.5, trailers"), ("content-type", "x")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(names(&h), ["content-type: x", "te: trailers"]);
        let mut h = map(&[("te", "gzip"), ("connection", "close")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty(), "{h:?}");
    }
}
