//! A test upstream on 127.0.0.1 that answers like an LLM API, plain or over TLS with a test
//! certificate made at start, and HTTP clients (HTTP/1.1 and HTTP/2) to drive a proxy with.
//! Shared by recorders/tests/proxy.rs and the CLI tests (included by path).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A body fed from a channel: each message is one frame, sent when it arrives.
pub struct ChanBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type UpBody = http_body_util::Either<Full<Bytes>, ChanBody>;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The SSE route's events and the gap between them.
pub const SSE_EVENTS: usize = 5;
pub const SSE_GAP: Duration = Duration::from_millis(120);

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    /// The CA certificate (PEM) that signed the TLS upstream's certificate.
    pub ca_pem: Option<String>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Routes:
/// - `POST /v1/chat/completions`: a JSON completion echoing the request's `prompt` and `n`, and
///   `sample`: how many requests this upstream had seen before, so that a request sent again
///   gets a different answer, as from a sampling model; sets a session cookie (`Set-Cookie: session=<secret>`, the secret given to `start`);
/// - `POST /v1/stream`: server-sent events, [`SSE_EVENTS`] events [`SSE_GAP`] apart, then
///   `data: [DONE]`, chunked;
/// - `GET /gzip`: a gzip-compressed JSON body that contains `secret`;
/// - `GET /chunked`: a chunked body (three frames) that contains `secret`;
/// - `GET /large?n=N`: N bytes;
/// - `POST /echo`: the request body back.
pub fn start(tls: bool, secret: &str) -> Upstream {
    let secret = secret.to_string();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let (acceptor, ca_pem) = if tls {
        let (a, ca) = tls_acceptor();
        (Some(a), Some(ca))
    } else {
        (None, None)
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let seen2 = seen.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        let _ = stream.set_nodelay(true);
                        let seen = seen2.clone();
                        let secret = secret.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| route(req, seen.clone(), secret.clone()));
                            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                            match acceptor {
                                Some(a) => {
                                    if let Ok(s) = a.accept(stream).await {
                                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                                    }
                                }
                                None => {
                                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                                }
                            }
                        });
                    }
                }
            }
        });
        rt.shutdown_timeout(Duration::from_millis(100));
    });
    let url = if tls { format!("https://localhost:{}", addr.port()) } else { format!("http://{addr}") };
    Upstream { addr, url, ca_pem, seen, stop: Some(stop_tx), thread: Some(thread) }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "replay test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = vec![cert.der().clone(), ca.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

fn full(b: impl Into<Bytes>) -> UpBody {
    http_body_util::Either::Left(Full::new(b.into()))
}

async fn route(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    secret: String,
) -> Result<Response<UpBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let sample = seen.lock().unwrap().len();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.clone(),
    });
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let resp = match (parts.method.as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions") => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let answer = serde_json::json!({
                "id": format!("cmpl-{}", v["n"]),
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {}", v["prompt"].as_str().unwrap_or(""))}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                "sample": sample,
            });
            Response::builder()
                .header("content-type", "application/json")
                .header("set-cookie", format!("session={secret}; HttpOnly"))
                .body(full(serde_json::to_vec(&answer).unwrap()))
                .unwrap()
        }
        ("POST", "/v1/stream") => {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            tokio::spawn(async move {
                for i in 0..SSE_EVENTS {
                    if i > 0 {
                        tokio::time::sleep(SSE_GAP).await;
                    }
                    let ev = format!("data: {{\"index\":{i},\"delta\":\"tok{i} \"}}\n\n");
                    if tx.send(Bytes::from(ev)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(http_body_util::Either::Right(ChanBody(rx)))
                .unwrap()
        }
        ("GET", "/gzip") => {
            use std::io::Write;
            let json = format!("{{\"owner\":\"{secret}\",\"items\":[1,2,3]}}");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(json.as_bytes()).unwrap();
            Response::builder()
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(full(gz.finish().unwrap()))
                .unwrap()
        }
        ("GET", "/gzip-large") => {
            // The secret first, then ~200 KB that does not compress: past a 64 KiB cap, the
            // recording holds a gzip stream cut short.
            use std::io::Write;
            let mut x = 0x2545_f491_u32;
            let filler: String = (0..200_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (b'a' + (x % 26) as u8) as char
                })
                .collect();
            let json = format!("{{\"owner\":\"{secret}\",\"filler\":\"{filler}\"}}");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(json.as_bytes()).unwrap();
            Response::builder()
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(full(gz.finish().unwrap()))
                .unwrap()
        }
        ("GET", "/chunked") => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let parts =
                ["{\"note\":\"chunked ".to_string(), format!("answer for {secret}"), "\"}".to_string()];
            tokio::spawn(async move {
                for p in parts {
                    let _ = tx.send(Bytes::from(p)).await;
                }
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(http_body_util::Either::Right(ChanBody(rx)))
                .unwrap()
        }
        ("GET", "/large") => {
            let n: usize = query.strip_prefix("n=").and_then(|n| n.parse().ok()).unwrap_or(0);
            let data: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            Response::builder().header("content-type", "application/octet-stream").body(full(data)).unwrap()
        }
        ("POST", "/echo") => Response::builder()
            .header(
                "content-type",
                parts
                    .headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or(http::HeaderValue::from_static("application/octet-stream")),
            )
            .body(full(body))
            .unwrap(),
        _ => Response::builder().status(StatusCode::NOT_FOUND).body(full("no such route")).unwrap(),
    };
    Ok(resp)
}

/// What a client saw: status, headers, body, and when each body frame arrived (since the
/// request was sent).
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub frames: Vec<(Duration, usize)>,
}

pub type TestClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client, or an HTTP/2 one (prior knowledge) with `h2`.
pub fn client(h2: bool) -> TestClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(h2).build_http()
}

/// Sends one request and reads the whole answer, noting when each frame arrived.
pub async fn send(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Got, String> {
    let mut b = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut frames = Vec::new();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| e.to_string())?;
        if let Some(d) = f.data_ref() {
            frames.push((start.elapsed(), d.len()));
            data.extend_from_slice(d);
        }
    }
    Ok(Got { status, headers, body: data, frames })
}

/// A runtime for driving clients from a plain test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
