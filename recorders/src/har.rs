//! HAR (HTTP Archive 1.2) files: browser and tool exports in, HTTP exchange cases out, and back.
//!
//! Each `log.entries[i]` becomes one case: the request (method, path and query of `url`,
//! `httpVersion`, headers in order, `postData.text`) and the response (status, status text,
//! headers, `content.text`, base64-decoded when `content.encoding` says so). HAR stores bodies
//! decoded, so a `Content-Encoding` or chunked `Transfer-Encoding` header of the original is
//! dropped to keep the case consistent. A bad entry is reported with its index and skipped;
//! the others are kept.

use std::io::Read;

use base64::Engine as _;
use corpora::{Blob, Case, CaseData, Header, HttpExchange, HttpRequest, HttpResponse, Source};
use serde_json::{Value, json};

/// Why a HAR file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum HarError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON, or not a HAR log.
    #[error("{path}: not a HAR file: {message}")]
    Format {
        /// The file.
        path: String,
        /// What was wrong (with line and column for JSON errors).
        message: String,
    },
}

/// What an import produced: the cases, and each skipped entry with why.
#[derive(Debug, Default)]
pub struct Imported {
    /// The cases, in entry order.
    pub cases: Vec<Case>,
    /// `entry N: why` for each entry skipped.
    pub skipped: Vec<String>,
}

/// Reads a HAR file (`-` for stdin).
pub fn import(path: &str) -> Result<Imported, HarError> {
    let mut text = String::new();
    let r = if path == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    r.map_err(|source| HarError::Io { path: path.to_string(), source })?;
    parse(path, &text)
}

/// Parses HAR text named `path` (for messages and sources).
pub fn parse(path: &str, text: &str) -> Result<Imported, HarError> {
    let fmt = |message: String| HarError::Format { path: path.to_string(), message };
    let v: Value = serde_json::from_str(text).map_err(|e| fmt(e.to_string()))?;
    let entries = v
        .get("log")
        .and_then(|l| l.get("entries"))
        .and_then(Value::as_array)
        .ok_or_else(|| fmt("no log.entries array".into()))?;
    let mut out = Imported::default();
    for (i, e) in entries.iter().enumerate() {
        match entry(e) {
            Ok(mut case) => {
                case.source = Source::Import { path: path.to_string(), line: i as u64 + 1 };
                out.cases.push(case);
            }
            Err(why) => out.skipped.push(format!("{path}: entry {}: {why}", i + 1)),
        }
    }
    Ok(out)
}

fn headers(v: Option<&Value>) -> Vec<Header> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|h| {
                    Some(Header::new(h.get("name")?.as_str()?, h.get("value")?.as_str()?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Drops the headers that described the wire form of a body HAR stores decoded.
fn decoded_form(mut hs: Vec<Header>) -> Vec<Header> {
    hs.retain(|h| {
        let n = h.0.to_ascii_lowercase();
        n != "content-encoding"
            && !(n == "transfer-encoding"
                && String::from_utf8_lossy(h.1.as_bytes()).to_ascii_lowercase().contains("chunked"))
    });
    hs
}

fn entry(e: &Value) -> Result<Case, String> {
    let req = e.get("request").ok_or("no request")?;
    let method = req.get("method").and_then(Value::as_str).ok_or("request has no method")?;
    let url = req.get("url").and_then(Value::as_str).ok_or("request has no url")?;
    let target = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string()),
        None => url.to_string(),
    };
    let version = req.get("httpVersion").and_then(Value::as_str).unwrap_or("HTTP/1.1");
    let version = if version.is_empty() || version.starts_with("h2") || version.starts_with("HTTP/2") {
        "HTTP/1.1"
    } else {
        version
    };
    let mut request_headers = decoded_form(headers(req.get("headers")));
    if !request_headers.iter().any(|h| h.0.eq_ignore_ascii_case("host"))
        && let Some((_, rest)) = url.split_once("://")
    {
        let host = rest.split('/').next().unwrap_or("");
        request_headers.insert(0, Header::new("Host", host.to_string()));
    }
    request_headers.retain(|h| !h.0.starts_with(':'));
    let body = req.get("postData").and_then(|p| p.get("text")).and_then(Value::as_str).unwrap_or("");
    let request = HttpRequest {
        method: method.into(),
        target,
        version: version.into(),
        headers: request_headers,
        body: Blob(body.as_bytes().to_vec()),
        trailers: Vec::new(),
    };
    let response = match e.get("response") {
        Some(r) if r.get("status").and_then(Value::as_u64).is_some_and(|s| s > 0) => {
            let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
            let status =
                u16::try_from(status).map_err(|_| format!("response status {status} is out of range"))?;
            let content = r.get("content");
            let text = content.and_then(|c| c.get("text")).and_then(Value::as_str).unwrap_or("");
            let base64 = content.and_then(|c| c.get("encoding")).and_then(Value::as_str) == Some("base64");
            let data = if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("response content is not valid base64: {e}"))?
            } else {
                text.as_bytes().to_vec()
            };
            let mut hs = decoded_form(headers(r.get("headers")));
            hs.retain(|h| !h.0.starts_with(':'));
            Some(HttpResponse {
                version: version.into(),
                status,
                reason: r.get("statusText").and_then(Value::as_str).unwrap_or("").into(),
                headers: hs,
                body: Blob(data),
                trailers: Vec::new(),
                chunks: Vec::new(),
            })
        }
        _ => None,
    };
    let no_response = response.is_none();
    let mut case = Case::new(CaseData::Http(HttpExchange { request, interim: Vec::new(), response }));
    if no_response {
        case.add_flag(corpora::Flag::NoResponse);
    }
    if let Some(t) = e.get("startedDateTime").and_then(Value::as_str)
        && let Some(ns) = rfc3339_ns(t)
    {
        case.time_ns = Some(ns);
    }
    Ok(case)
}

/// `2026-11-21T10:00:00.123Z` (or with an offset) in nanoseconds since the epoch.
fn rfc3339_ns(t: &str) -> Option<i64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset) = match time.find(['Z', '+']).or_else(|| time.rfind('-')) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, "Z"),
    };
    let mut c = clock.split(':');
    let (hh, mm) = (c.next()?.parse::<i64>().ok()?, c.next()?.parse::<i64>().ok()?);
    let secs: f64 = c.next().unwrap_or("0").parse().ok()?;
    let off = if offset == "Z" || offset.is_empty() {
        0
    } else {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let mut o = offset[1..].split(':');
        sign * (o.next()?.parse::<i64>().ok()? * 3600 + o.next().unwrap_or("0").parse::<i64>().ok()? * 60)
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let whole = days * 86_400 + hh * 3600 + mm * 60 - off;
    Some(whole * 1_000_000_000 + (secs * 1e9) as i64)
}

/// The HTTP exchange cases as one HAR 1.2 document (other kinds are left out). Bodies go out
/// decoded; binary ones base64-encoded.
pub fn export<'a>(cases: impl Iterator<Item = &'a Case>) -> Value {
    let mut entries = Vec::new();
    for c in cases {
        let CaseData::Http(x) = c.data() else { continue };
        let r = &x.request;
        let hs = |h: &[Header]| -> Vec<Value> {
            h.iter().map(|h| json!({"name": h.0, "value": String::from_utf8_lossy(h.1.as_bytes())})).collect()
        };
        let host = corpora::body::header(&r.headers, "host").unwrap_or("localhost");
        let url =
            if r.target.contains("://") { r.target.clone() } else { format!("http://{host}{}", r.target) };
        let req_body = corpora::body::decoded(&r.headers, r.body.as_bytes())
            .unwrap_or_else(|_| r.body.as_bytes().to_vec());
        let mut request = json!({
            "method": r.method, "url": url, "httpVersion": r.version, "headers": hs(&decoded_form(r.headers.clone())),
            "queryString": [], "cookies": [], "headersSize": -1, "bodySize": req_body.len(),
        });
        if !req_body.is_empty() {
            let mime =
                corpora::body::header(&r.headers, "content-type").unwrap_or("application/octet-stream");
            request["postData"] = json!({"mimeType": mime, "text": String::from_utf8_lossy(&req_body)});
        }
        let response = match &x.response {
            Some(resp) => {
                let data = corpora::body::decoded(&resp.headers, resp.body.as_bytes())
                    .unwrap_or_else(|_| resp.body.as_bytes().to_vec());
                let mime = corpora::body::header(&resp.headers, "content-type")
                    .unwrap_or("application/octet-stream");
                let content = match std::str::from_utf8(&data) {
                    Ok(t) => json!({"size": data.len(), "mimeType": mime, "text": t}),
                    Err(_) => json!({"size": data.len(), "mimeType": mime, "encoding": "base64",
                                     "text": base64::engine::general_purpose::STANDARD.encode(&data)}),
                };
                json!({"status": resp.status, "statusText": resp.reason, "httpVersion": resp.version,
                       "headers": hs(&decoded_form(resp.headers.clone())), "cookies": [], "content": content,
                       "redirectURL": "", "headersSize": -1, "bodySize": data.len()})
            }
            None => json!({"status": 0, "statusText": "", "httpVersion": "", "headers": [], "cookies": [],
                           "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1, "bodySize": -1}),
        };
        let started = c.time_ns.map(corpora::rfc3339).unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into());
        entries.push(json!({"startedDateTime": started, "time": 0, "request": request, "response": response,
                            "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0}, "comment": c.id().to_string()}));
    }
    json!({"log": {"version": "1.2", "creator": {"name": "replay", "version": env!("CARGO_PKG_VERSION")}, "entries": entries}})
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAR: &str = r#"{"log":{"version":"1.2","entries":[
      {"startedDateTime":"2026-11-21T10:00:00.250Z","request":{"method":"POST","url":"https://api.example.test/v1/chat?x=1",
        "httpVersion":"HTTP/1.1","headers":[{"name":"Content-Type","value":"application/json"},{"name":"Authorization","value":"Bearer sk-secret"}],
        "postData":{"mimeType":"application/json","text":"{\"q\":1}"}},
       "response":{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1","headers":[{"name":"Content-Encoding","value":"gzip"},{"name":"Content-Type","value":"application/json"}],
        "content":{"size":7,"mimeType":"application/json","text":"{\"a\":2}"}}},
      {"request":{"url":"https://x.test/"}},
      {"startedDateTime":"2026-11-21T10:00:01+01:00","request":{"method":"GET","url":"https://x.test/img.png","httpVersion":"h2","headers":[{"name":":authority","value":"x.test"}]},
       "response":{"status":200,"statusText":"","httpVersion":"h2","headers":[],"content":{"size":3,"mimeType":"image/png","encoding":"base64","text":"AAEC"}}}
    ]}}"#;

    #[test]
    fn entries_become_cases_and_bad_entries_are_named() {
        let got = parse("t.har", HAR).unwrap();
        assert_eq!(got.cases.len(), 2);
        assert_eq!(got.skipped, ["t.har: entry 2: request has no method"]);
        let CaseData::Http(x) = got.cases[0].data() else { panic!() };
        assert_eq!(x.request.target, "/v1/chat?x=1");
        assert_eq!(corpora::body::header(&x.request.headers, "host"), Some("api.example.test"));
        let r = x.response.as_ref().unwrap();
        assert!(corpora::body::header(&r.headers, "content-encoding").is_none(), "HAR bodies are decoded");
        assert_eq!(r.body.as_bytes(), br#"{"a":2}"#);
        assert_eq!(got.cases[0].time_ns, Some(1_795_255_200_250_000_000));
        let CaseData::Http(y) = got.cases[1].data() else { panic!() };
        assert_eq!(y.response.as_ref().unwrap().body.as_bytes(), &[0, 1, 2]);
        assert_eq!(got.cases[1].time_ns, Some(1_795_255_201_000_000_000 - 3_600_000_000_000));
        assert!(parse("t.har", "{}").unwrap_err().to_string().contains("no log.entries"));
        assert!(parse("t.har", "{").unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn export_then_import_keeps_the_exchanges() {
        let first = parse("t.har", HAR).unwrap();
        let har = export(first.cases.iter());
        let again = parse("e.har", &har.to_string()).unwrap();
        assert!(again.skipped.is_empty());
        assert_eq!(again.cases.len(), 2);
        for (a, b) in first.cases.iter().zip(&again.cases) {
            assert_eq!(a.data(), b.data());
            assert_eq!(a.time_ns, b.time_ns);
        }
    }
}
