//! How a case reaches the demo: the switches, the dispatch, and the frame codec of
//! `docs/target-abi.md` (one codec for the process stream mode and the Wasm reactor module).

use crate::packet;
use crate::serializer::{self, Version};

/// The demo's switches, read from the environment in every build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `DEMO_SERIALIZER=v1|v2` (default `v2`).
    pub serializer: Version,
    /// `DEMO_EDGE_BUFFER=1` turns on the edge build's 1500-byte payload buffer (Wasm only).
    pub edge_buffer: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { serializer: Version::V2, edge_buffer: false }
    }
}

impl Config {
    /// The switches from the process (or WASI) environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// The switches from any key lookup (a native target's `env` table, say).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut c = Config::default();
        if let Some(v) = get("DEMO_SERIALIZER") {
            c.serializer = match v.as_str() {
                "v1" => Version::V1,
                "v2" => Version::V2,
                other => return Err(format!("DEMO_SERIALIZER: expected v1 or v2, found {other:?}")),
            };
        }
        if let Some(v) = get("DEMO_EDGE_BUFFER") {
            c.edge_buffer = match v.as_str() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" | "" => false,
                other => return Err(format!("DEMO_EDGE_BUFFER: expected 1 or 0, found {other:?}")),
            };
        }
        Ok(c)
    }
}

/// The kind of case, as the kind byte of the corpus format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP exchange; the input is the request as `message/http`.
    Http = 1,
    /// A packet; the content type names the link type.
    Packet = 2,
    /// A message.
    Message = 3,
}

impl Kind {
    /// The kind for a kind byte.
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Http),
            2 => Some(Kind::Packet),
            3 => Some(Kind::Message),
            _ => None,
        }
    }

    /// The kind for its name (`REPLAY_CASE_KIND` in the command ABI).
    pub fn from_name(s: &str) -> Option<Kind> {
        match s {
            "http" => Some(Kind::Http),
            "packet" => Some(Kind::Packet),
            "message" => Some(Kind::Message),
            _ => None,
        }
    }
}

/// One case's input.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// What kind of case.
    pub kind: Kind,
    /// The input's media type.
    pub content_type: &'a str,
    /// The input bytes.
    pub data: &'a [u8],
}

/// One case's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The output's media type.
    pub content_type: String,
    /// The output bytes.
    pub data: Vec<u8>,
}

/// Runs one case: packets through the normalizer, editor contexts (a message, or the body of
/// an HTTP request) through the serializer.
pub fn handle(cfg: &Config, input: Input<'_>) -> Result<Output, String> {
    let json = |v: serde_json::Value| Output {
        content_type: "application/json".into(),
        data: serde_json::to_vec(&v).expect("a JSON value serialises"),
    };
    match input.kind {
        Kind::Packet => {
            let link = param(input.content_type, "link-type").unwrap_or("1");
            let link: u32 = link.parse().map_err(|_| format!("bad link-type {link:?} in content type"))?;
            Ok(json(packet::normalize(link, input.data, cfg.edge_buffer)))
        }
        Kind::Message => {
            let data = serializer::serialize_json(input.data, cfg.serializer)?;
            Ok(Output { content_type: "application/json".into(), data })
        }
        Kind::Http => {
            let body = http_body(input.data).ok_or("the HTTP request has no header end")?;
            let data = serializer::serialize_json(body, cfg.serializer)?;
            Ok(Output { content_type: "application/json".into(), data })
        }
    }
}

/// The value of `name=` among a media type's parameters.
fn param<'a>(content_type: &'a str, name: &str) -> Option<&'a str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"'))
    })
}

fn http_body(msg: &[u8]) -> Option<&[u8]> {
    msg.windows(4).position(|w| w == b"\r\n\r\n").map(|i| &msg[i + 4..])
}

/// A request frame's fixed part: `u32` length of the rest, `u8` kind, `u16` content-type length.
pub const REQUEST_HEAD: usize = 4 + 1 + 2;

/// Decodes a request frame (with its length prefix).
pub fn decode_request(frame: &[u8]) -> Result<Input<'_>, String> {
    if frame.len() < REQUEST_HEAD {
        return Err(format!("request frame of {} bytes is shorter than its header", frame.len()));
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if len != frame.len() - 4 {
        return Err(format!("request frame says {len} bytes, has {}", frame.len() - 4));
    }
    let kind = Kind::from_byte(frame[4]).ok_or_else(|| format!("unknown case kind {}", frame[4]))?;
    let ct_len = usize::from(u16::from_le_bytes([frame[5], frame[6]]));
    let ct = frame
        .get(REQUEST_HEAD..REQUEST_HEAD + ct_len)
        .ok_or_else(|| format!("content type of {ct_len} bytes runs past the frame"))?;
    let content_type = std::str::from_utf8(ct).map_err(|_| "content type is not UTF-8".to_string())?;
    Ok(Input { kind, content_type, data: &frame[REQUEST_HEAD + ct_len..] })
}

/// Encodes a response frame: `u32` length of the rest, `u8` status (0 output, 1 error),
/// `u16` content-type length, the content type, the data (for an error, its message).
pub fn encode_response(result: &Result<Output, String>, out: &mut Vec<u8>) {
    let (status, ct, data): (u8, &[u8], &[u8]) = match result {
        Ok(o) => (0, o.content_type.as_bytes(), &o.data),
        Err(e) => (1, b"text/plain", e.as_bytes()),
    };
    let ct = &ct[..ct.len().min(u16::MAX as usize)];
    out.clear();
    out.extend_from_slice(&((1 + 2 + ct.len() + data.len()) as u32).to_le_bytes());
    out.push(status);
    out.extend_from_slice(&(ct.len() as u16).to_le_bytes());
    out.extend_from_slice(ct);
    out.extend_from_slice(data);
}

/// Encodes a request frame (the host's side; used by tests and the stream client).
pub fn encode_request(input: Input<'_>, out: &mut Vec<u8>) {
    let ct = input.content_type.as_bytes();
    out.clear();
    out.extend_from_slice(&((1 + 2 + ct.len() + input.data.len()) as u32).to_le_bytes());
    out.push(input.kind as u8);
    out.extend_from_slice(&(ct.len() as u16).to_le_bytes());
    out.extend_from_slice(ct);
    out.extend_from_slice(input.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let mut f = Vec::new();
        let input = Input {
            kind: Kind::Packet,
            content_type: "application/vnd.replay.packet; link-type=101",
            data: b"xyz",
        };
        encode_request(input, &mut f);
        let back = decode_request(&f).unwrap();
        assert_eq!(
            (back.kind, back.content_type, back.data),
            (Kind::Packet, input.content_type, &b"xyz"[..])
        );
        assert_eq!(param(back.content_type, "link-type"), Some("101"));
        for n in 0..f.len() {
            assert!(decode_request(&f[..n]).is_err(), "{n}");
        }
        f[4] = 9;
        assert!(decode_request(&f).unwrap_err().contains("kind 9"));
    }

    #[test]
    fn switches_parse_and_reject_nonsense() {
        let c = Config::from_lookup(|k| (k == "DEMO_SERIALIZER").then(|| "v1".to_string())).unwrap();
        assert_eq!(c, Config { serializer: Version::V1, edge_buffer: false });
        assert!(Config::from_lookup(|_| Some("v3".into())).unwrap_err().contains("DEMO_SERIALIZER"));
    }
}
