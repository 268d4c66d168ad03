//! The upstream connections of one proxy worker: hyper's connection-level client, pooled here.
//!
//! hyper-util's pooled `legacy::Client` is general (any host, proxies, a pool shared between
//! threads), and a proxy in front of one upstream pays for that on every request: a pool key
//! built and hashed, a lock, a lazy connect future raced against the checkout, and a task
//! spawned per HTTP/1 request to put its connection back once the response body has been
//! read. Each proxy worker thread here keeps its own connections to its one upstream instead:
//! - HTTP/1.1: a list of connections; a request takes the most recently used one that is
//!   ready (not still streaming an earlier response body), or opens a new one. A connection
//!   stays in the list while it streams, and is ready again when hyper's dispatcher asks for
//!   the next request: nothing to spawn, nothing to put back.
//! - HTTP/2 (when the upstream chose it by ALPN): one connection shared by every request of
//!   the worker, reopened when it closes.
//! - A request sent on a kept connection that the upstream had closed meanwhile (its keep-alive
//!   timeout) comes back unsent from hyper, and is sent again on another connection, as the
//!   legacy client does. A request that was sent is never sent twice.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

/// Kept HTTP/1 connections idle longer than this are closed (checked when a request comes).
const IDLE: Duration = Duration::from_secs(90);
/// At most this many HTTP/1 connections per worker are kept open; past it, a connection
/// serves its request and closes.
const MAX_KEPT: usize = 512;

/// Why a request did not get a response from the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// TCP connect, connect timeout or TLS handshake (certificate verification included).
    #[error("connecting: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/1 or HTTP/2 handshake on a new connection.
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
    /// Sending the request or reading the response head.
    #[error(transparent)]
    Exchange(hyper::Error),
}

/// A request on its way on a kept connection, or back when none was ready.
enum OnKept<A, B, R> {
    H1(A),
    H2(B),
    Unsent(R),
}

struct Kept<B> {
    sender: http1::SendRequest<B>,
    used: Instant,
}

struct Conns<B> {
    h1: Vec<Kept<B>>,
    h2: Option<http2::SendRequest<B>>,
}

pub(crate) struct UpstreamPool<B> {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector connects to.
    origin: Uri,
    /// The Host header of HTTP/1 requests.
    host: HeaderValue,
    conns: Mutex<Conns<B>>,
}

impl<B> UpstreamPool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>, origin: Uri) -> UpstreamPool<B> {
        // As a client names a host: no user info, and the port only when it is not the
        // scheme's own.
        let default_port = if origin.scheme_str() == Some("https") { 443 } else { 80 };
        let host = origin
            .host()
            .map(|h| match origin.port_u16() {
                Some(p) if p != default_port => format!("{h}:{p}"),
                _ => h.to_string(),
            })
            .and_then(|h| HeaderValue::from_str(&h).ok())
            .unwrap_or(HeaderValue::from_static("localhost"));
        UpstreamPool { connector, origin, host, conns: Mutex::new(Conns { h1: Vec::new(), h2: None }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conns<B>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` (its URI in origin form: path and query) to the upstream.
    pub(crate) async fn send(&self, mut req: Request<B>) -> Result<Response<Incoming>, UpstreamError> {
        // A kept connection is tried without waiting: hyper hands the request back, unsent,
        // when the connection turned out closed before it was written. Then the next kept one,
        // a few times at most, then a new connection.
        for _ in 0..4 {
            let sent = match self.try_kept(req) {
                OnKept::H1(sent) => sent.await,
                OnKept::H2(sent) => sent.await,
                OnKept::Unsent(unsent) => {
                    req = unsent;
                    break;
                }
            };
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        self.send_new(req).await
    }

    /// Hands `req` to a kept connection that is ready (the request is then on its way), or
    /// gives it back when there is none. (The two futures are hyper's, unnamed.)
    #[allow(clippy::type_complexity)]
    fn try_kept(
        &self,
        mut req: Request<B>,
    ) -> OnKept<
        impl Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>> + use<B>,
        impl Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>> + use<B>,
        Request<B>,
    > {
        let mut c = self.lock();
        if let Some(h2) = c.h2.as_ref().filter(|s| !s.is_closed()) {
            let mut h2 = h2.clone();
            drop(c);
            self.absolute(&mut req);
            return OnKept::H2(h2.try_send_request(req));
        }
        c.h2 = None;
        let now = Instant::now();
        c.h1.retain(|k| {
            !k.sender.is_closed() && (!k.sender.is_ready() || now.saturating_duration_since(k.used) < IDLE)
        });
        let Some(k) = c.h1.iter_mut().rev().find(|k| k.sender.is_ready()) else { return OnKept::Unsent(req) };
        k.used = now;
        self.origin_form(&mut req);
        OnKept::H1(k.sender.try_send_request(req))
    }

    /// Opens a connection, keeps it, and sends `req` on it.
    async fn send_new(&self, mut req: Request<B>) -> Result<Response<Incoming>, UpstreamError> {
        let mut connector = self.connector.clone();
        let io = connector.call(self.origin.clone()).await.map_err(UpstreamError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(UpstreamError::Handshake)?;
            tokio::spawn(conn);
            self.lock().h2 = Some(sender.clone());
            self.absolute(&mut req);
            return sender.send_request(req).await.map_err(UpstreamError::Exchange);
        }
        let (mut sender, conn) = http1::handshake(io).await.map_err(UpstreamError::Handshake)?;
        tokio::spawn(conn);
        self.origin_form(&mut req);
        let sent = sender.send_request(req);
        {
            let mut c = self.lock();
            if c.h1.len() < MAX_KEPT {
                c.h1.push(Kept { sender, used: Instant::now() });
            }
        }
        sent.await.map_err(UpstreamError::Exchange)
    }

    /// HTTP/1: the request line names the path, the Host header the upstream.
    fn origin_form(&self, req: &mut Request<B>) {
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut().insert(http::header::HOST, self.host.clone());
    }

    /// HTTP/2: the `:scheme` and `:authority` come from the URI.
    fn absolute(&self, req: &mut Request<B>) {
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(http::header::HOST);
        let mut parts = req.uri().clone().into_parts();
        if parts.scheme.is_none() {
            parts.scheme = self.origin.scheme().cloned();
            parts.authority = self.origin.authority().cloned();
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bare HTTP/1.1 upstream on 127.0.0.1: answers each request on a connection with its
    /// sequence number; after `per_conn` answers it closes the connection without saying so
    /// (no `Connection: close`), as a server whose keep-alive timed out does.
    async fn upstream(per_conn: usize) -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let n = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answered in 0..per_conn {
                        // Requests without bodies: read to the end of the head.
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end);
                        assert!(head.contains("\r\nhost: "), "HTTP/1 requests name the upstream: {head}");
                        let body = format!("conn {n} answer {answered}");
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (origin, conns)
    }

    fn pool(origin: Uri) -> UpstreamPool<Full<bytes::Bytes>> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        UpstreamPool::new(connector, origin)
    }

    async fn get(pool: &UpstreamPool<Full<bytes::Bytes>>, path: &str) -> Result<String, UpstreamError> {
        let req = Request::get(path).body(Full::default()).unwrap();
        let resp = pool.send(req).await?;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn the_host_header_names_the_port_only_when_it_is_not_the_schemes() {
        let host = |u: &str| pool(u.parse().unwrap()).host.to_str().unwrap().to_string();
        assert_eq!(host("http://127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(host("http://api.example.com:80/"), "api.example.com");
        assert_eq!(host("https://api.example.com:443/"), "api.example.com");
        assert_eq!(host("https://user:pw@api.example.com:8443/"), "api.example.com:8443");
        assert_eq!(host("http://[::1]:9000/"), "[::1]:9000");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_connection_serves_requests_one_after_another() {
        let (origin, conns) = upstream(usize::MAX).await;
        let pool = pool(origin);
        for i in 0..20 {
            assert_eq!(get(&pool, "/x").await.unwrap(), format!("conn 0 answer {i}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_open_connections_and_later_ones_reuse_them() {
        let (origin, conns) = upstream(usize::MAX).await;
        let pool = pool(origin);
        for round in 0..3 {
            let all = futures_join(&pool, 8).await;
            assert!(all.iter().all(|r| r.as_ref().is_ok_and(|b| b.starts_with("conn "))), "{all:?}");
            assert_eq!(
                conns.load(Ordering::SeqCst),
                8,
                "round {round}: the 8 kept connections are used again"
            );
        }
    }

    /// `n` requests in flight at once on this one thread, polled together.
    async fn futures_join(
        pool: &UpstreamPool<Full<bytes::Bytes>>,
        n: usize,
    ) -> Vec<Result<String, UpstreamError>> {
        let mut pending: Vec<_> = (0..n).map(|_| Box::pin(get(pool, "/c"))).collect();
        let mut done: Vec<Option<Result<String, UpstreamError>>> = (0..n).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            for (f, d) in pending.iter_mut().zip(done.iter_mut()) {
                if d.is_none()
                    && let std::task::Poll::Ready(r) = f.as_mut().poll(cx)
                {
                    *d = Some(r);
                }
            }
            if done.iter().all(Option::is_some) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        done.into_iter().map(Option::unwrap).collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_upstream_closed_is_not_used_and_no_request_fails() {
        // The upstream hangs up after every answer, without a `Connection: close`: the next
        // request finds its kept connection closed (or closing as it is sent, and handed back
        // unsent), and goes out on a new one.
        let (origin, conns) = upstream(1).await;
        let pool = pool(origin);
        for i in 0..30 {
            assert_eq!(get(&pool, "/r").await.unwrap(), format!("conn {i} answer 0"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 30);
        assert!(pool.lock().h1.len() <= 2, "closed connections are dropped from the list");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_upstream_that_is_not_there_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
        drop(listener);
        let e = get(&pool(origin), "/").await.unwrap_err();
        assert!(matches!(e, UpstreamError::Connect(_)), "{e:?}");
        assert!(e.to_string().starts_with("connecting: "), "{e}");
    }
}
