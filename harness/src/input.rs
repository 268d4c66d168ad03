//! What a case hands a target: a kind, a media type and bytes (`docs/target-abi.md`).

use corpora::{Case, CaseData, CaseKind, HttpRequest};

/// The media type of an HTTP request given as bytes (RFC 9112's `message/http`).
pub const HTTP_CONTENT_TYPE: &str = "message/http";

/// One case's input as byte-level targets (Wasm, process) see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The kind of case.
    pub kind: CaseKind,
    /// The media type: the message's own, `application/vnd.replay.packet; link-type=N` for a
    /// packet, `message/http` for an HTTP exchange.
    pub content_type: String,
    /// The bytes: the message input, the packet from its link-layer header, or the request in
    /// HTTP/1.1 wire form.
    pub data: Vec<u8>,
}

impl Input {
    /// The input of a case.
    pub fn of(case: &Case) -> Input {
        match case.data() {
            CaseData::Message(m) => Input {
                kind: CaseKind::Message,
                content_type: m.content_type.clone(),
                data: m.input.as_bytes().to_vec(),
            },
            CaseData::Packet(p) => Input {
                kind: CaseKind::Packet,
                content_type: packet_content_type(p.link_type),
                data: p.data.as_bytes().to_vec(),
            },
            CaseData::Http(x) => Input {
                kind: CaseKind::Http,
                content_type: HTTP_CONTENT_TYPE.into(),
                data: request_bytes(&x.request),
            },
        }
    }

    /// The request frame of the stream and reactor ABIs: `u32` LE length of the rest, `u8`
    /// kind, `u16` LE content-type length, the content type, the data.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let ct = self.content_type.as_bytes();
        let ct = &ct[..ct.len().min(u16::MAX as usize)];
        out.clear();
        out.reserve(7 + ct.len() + self.data.len());
        out.extend_from_slice(&((3 + ct.len() + self.data.len()) as u32).to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&(ct.len() as u16).to_le_bytes());
        out.extend_from_slice(ct);
        out.extend_from_slice(&self.data);
    }
}

/// The media type of a packet case.
pub fn packet_content_type(link_type: u16) -> String {
    format!("application/vnd.replay.packet; link-type={link_type}")
}

/// A request in HTTP/1.1 wire form, exactly as recorded (headers in order, body raw).
pub fn request_bytes(r: &HttpRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.body.as_bytes().len());
    out.extend_from_slice(r.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.version.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in &r.headers {
        out.extend_from_slice(h.0.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(r.body.as_bytes());
    out
}

/// A response frame, decoded: `Ok((content type, data))` for status 0, `Err(message)` for 1.
pub fn decode_response_frame(frame: &[u8]) -> Result<Result<(String, Vec<u8>), String>, String> {
    if frame.len() < 7 {
        return Err(format!("response frame of {} bytes is shorter than its 7-byte header", frame.len()));
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if len != frame.len() - 4 {
        return Err(format!("response frame says {len} bytes after its length, has {}", frame.len() - 4));
    }
    let status = frame[4];
    let ct_len = usize::from(u16::from_le_bytes([frame[5], frame[6]]));
    let Some(ct) = frame.get(7..7 + ct_len) else {
        return Err(format!("response content type of {ct_len} bytes runs past the frame"));
    };
    let ct = String::from_utf8_lossy(ct).into_owned();
    let data = frame[7 + ct_len..].to_vec();
    match status {
        0 => Ok(Ok((ct, data))),
        1 => Ok(Err(String::from_utf8_lossy(&data).into_owned())),
        s => Err(format!("response frame has unknown status {s}")),
    }
}

#[cfg(test)]
mod tests {
    use corpora::{Header, HttpExchange, Message, Packet};

    use super::*;

    #[test]
    fn inputs_of_each_kind() {
        let m = Case::new(CaseData::Message(Message {
            content_type: "application/json".into(),
            input: b"{}".to_vec().into(),
            output: None,
        }));
        assert_eq!(Input::of(&m).data, b"{}");
        let p = Case::new(CaseData::Packet(Packet {
            link_type: 101,
            data: vec![0x45].into(),
            original_len: None,
            interface: None,
            flow: None,
        }));
        assert_eq!(Input::of(&p).content_type, "application/vnd.replay.packet; link-type=101");
        let mut req = HttpRequest::default();
        req.headers.push(Header::new("Host", "a"));
        req.body = b"x".to_vec().into();
        let h = Case::new(CaseData::Http(HttpExchange { request: req, ..Default::default() }));
        assert_eq!(Input::of(&h).data, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nx");
    }

    #[test]
    fn frames_decode_or_say_what_is_wrong() {
        let mut f = vec![0, 0, 0, 0, 0, 2, 0];
        f.extend_from_slice(b"ctdata");
        let n = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(decode_response_frame(&f).unwrap().unwrap(), ("ct".into(), b"data".to_vec()));
        f[4] = 1;
        assert_eq!(decode_response_frame(&f).unwrap().unwrap_err(), "data");
        f[4] = 7;
        assert!(decode_response_frame(&f).unwrap_err().contains("unknown status 7"));
        assert!(decode_response_frame(&f[..5]).unwrap_err().contains("shorter"));
        f[5] = 200;
        f[4] = 0;
        assert!(decode_response_frame(&f).unwrap_err().contains("runs past"));
    }
}
