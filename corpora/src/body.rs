//! How an HTTP body reads: transfer coding (chunked) and content coding (gzip, deflate, br)
//! removed.
//!
//! Bodies are stored as they were on the wire; the harness (and later the diff) reads them
//! through here. Decoding is bounded: a body that inflates past [`MAX_DECODED`] is an error,
//! not an allocation.

use std::io::Read;

use crate::case::Header;

/// The most a decoded body may grow to (64 MiB).
pub const MAX_DECODED: usize = 64 << 20;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The chunked framing is broken at this offset of the raw body.
    #[error("chunked body broken at offset {offset}: {what}")]
    Chunked {
        /// Offset in the raw body.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// The content coding is not one this build decodes.
    #[error("content encoding {0:?} is not supported")]
    Unsupported(String),
    /// The compressed stream is damaged.
    #[error("{coding} body does not decode: {message}")]
    Corrupt {
        /// `gzip` or `deflate`.
        coding: String,
        /// What the decoder said.
        message: String,
    },
    /// The decoded body would pass [`MAX_DECODED`].
    #[error("decoded body is larger than {MAX_DECODED} bytes")]
    TooLarge,
}

/// The value of the first header called `name` (case-insensitive), as text.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.0.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.1.as_bytes()).ok())
        .map(str::trim)
}

/// Whether `headers` say the body is chunked.
pub fn is_chunked(headers: &[Header]) -> bool {
    headers.iter().filter(|h| h.0.eq_ignore_ascii_case("transfer-encoding")).any(|h| {
        std::str::from_utf8(h.1.as_bytes())
            .map(|v| v.split(',').any(|c| c.trim().eq_ignore_ascii_case("chunked")))
            .unwrap_or(false)
    })
}

/// Removes chunked framing. A body that ends before its last chunk (a capture that lost the
/// end) is an error naming where.
pub fn dechunk(raw: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    loop {
        let line_end =
            find_crlf(raw, at).ok_or(BodyError::Chunked { offset: at, what: "no chunk size line" })?;
        let line = &raw[at..line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).map(str::trim).unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| BodyError::Chunked { offset: at, what: "chunk size is not hexadecimal" })?;
        at = line_end + 2;
        if size == 0 {
            return Ok(out);
        }
        if raw.len() - at < size {
            return Err(BodyError::Chunked { offset: at, what: "chunk runs past the body" });
        }
        if out.len() + size > MAX_DECODED {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&raw[at..at + size]);
        at += size;
        if raw.get(at..at + 2) != Some(b"\r\n") {
            return Err(BodyError::Chunked { offset: at, what: "chunk data not followed by CRLF" });
        }
        at += 2;
    }
}

fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

/// Removes the content codings named by `Content-Encoding` (applied in order, so removed in
/// reverse). `identity` and no header leave the body as it is.
pub fn decode_content(body: &[u8], content_encoding: Option<&str>) -> Result<Vec<u8>, BodyError> {
    let Some(ce) = content_encoding else { return Ok(body.to_vec()) };
    let codings: Vec<&str> = ce.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    let mut data = body.to_vec();
    for coding in codings.iter().rev() {
        data = match coding.to_ascii_lowercase().as_str() {
            "identity" => data,
            "gzip" | "x-gzip" => inflate(flate2::read::MultiGzDecoder::new(&data[..]), "gzip")?,
            "br" => inflate(brotli_decompressor::Decompressor::new(&data[..], 64 << 10), "br")?,
            "deflate" => {
                // Servers send both zlib-wrapped (as the RFC says) and raw deflate.
                inflate(flate2::read::ZlibDecoder::new(&data[..]), "deflate")
                    .or_else(|_| inflate(flate2::read::DeflateDecoder::new(&data[..]), "deflate"))?
            }
            other => return Err(BodyError::Unsupported(other.to_string())),
        };
    }
    Ok(data)
}

fn inflate(r: impl Read, coding: &str) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    let n = r
        .take(MAX_DECODED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Corrupt { coding: coding.into(), message: e.to_string() })?;
    if n > MAX_DECODED {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// A message body as it reads: chunking and content coding removed, per its headers.
pub fn decoded(headers: &[Header], raw: &[u8]) -> Result<Vec<u8>, BodyError> {
    let body = if is_chunked(headers) { dechunk(raw)? } else { raw.to_vec() };
    decode_content(&body, header(headers, "content-encoding"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn chunked_bodies_decode_and_broken_ones_say_where() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n").unwrap(), b"abcde");
        assert_eq!(
            dechunk(b"3\r\nabc\r\n5\r\nde").unwrap_err(),
            BodyError::Chunked { offset: 11, what: "chunk runs past the body" }
        );
        assert!(matches!(dechunk(b"zz\r\n"), Err(BodyError::Chunked { offset: 0, .. })));
    }

    #[test]
    fn gzip_and_deflate_decode() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello hello").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode_content(&gz, Some("gzip")).unwrap(), b"hello hello");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"zz").unwrap();
        assert_eq!(decode_content(&z.finish().unwrap(), Some("deflate")).unwrap(), b"zz");
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(b"brotli body brotli body").unwrap();
        }
        assert_eq!(decode_content(&br, Some("br")).unwrap(), b"brotli body brotli body");
        assert!(matches!(decode_content(b"x", Some("zstd")), Err(BodyError::Unsupported(_))));
        assert!(matches!(decode_content(b"not brotli at all", Some("br")), Err(BodyError::Corrupt { .. })));
        assert!(matches!(decode_content(b"not gzip", Some("gzip")), Err(BodyError::Corrupt { .. })));
    }
}
