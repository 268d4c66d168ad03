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

/// As much of a body as decodes, for one that [`decoded`] refuses: cut short (a capture that
/// lost its end, a body cut at a size cap) or damaged part way, it gives what its codings
/// yield before the cut or the damage, at most [`MAX_DECODED`] bytes. A coding this build
/// does not decode gives nothing. Redaction and the secret scan read such bodies through here.
pub fn decoded_prefix(headers: &[Header], raw: &[u8]) -> Vec<u8> {
    let mut data = if is_chunked(headers) { dechunk_prefix(raw) } else { raw.to_vec() };
    let Some(ce) = header(headers, "content-encoding") else { return data };
    for coding in ce.split(',').map(str::trim).filter(|c| !c.is_empty()).rev() {
        data = match coding.to_ascii_lowercase().as_str() {
            "identity" => data,
            "gzip" | "x-gzip" => inflate_prefix(flate2::read::MultiGzDecoder::new(&data[..])),
            "br" => inflate_prefix(brotli_decompressor::Decompressor::new(&data[..], 64 << 10)),
            "deflate" => {
                let z = inflate_prefix(flate2::read::ZlibDecoder::new(&data[..]));
                if z.is_empty() { inflate_prefix(flate2::read::DeflateDecoder::new(&data[..])) } else { z }
            }
            _ => return Vec::new(),
        };
    }
    data
}

/// What a decoder yields before its input ends or turns out damaged (`read_to_end` keeps
/// what it read before an error).
fn inflate_prefix(r: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = r.take(MAX_DECODED as u64).read_to_end(&mut out);
    out
}

/// [`dechunk`] up to the first fault: the whole chunks before it and what there is of the
/// chunk it cuts.
fn dechunk_prefix(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(line_end) = find_crlf(raw, at) {
        let size_text = raw[at..line_end].split(|&b| b == b';').next().unwrap_or_default();
        let Some(size) =
            std::str::from_utf8(size_text).ok().and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
        else {
            break;
        };
        at = line_end + 2;
        if size == 0 {
            break;
        }
        let want = size.min(MAX_DECODED - out.len());
        let end = at.saturating_add(want).min(raw.len());
        out.extend_from_slice(&raw[at..end]);
        if end - at < size || out.len() >= MAX_DECODED || raw.get(end..end + 2) != Some(b"\r\n") {
            break;
        }
        at = end + 2;
    }
    out
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

    #[test]
    fn the_prefix_of_a_cut_or_damaged_body_decodes_as_far_as_it_goes() {
        let hs = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| Header::new(*n, *v)).collect::<Vec<_>>();
        let text: Vec<u8> =
            (0..20_000u32).flat_map(|i| format!("line {i} of the body\n").into_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let gzip = hs(&[("Content-Encoding", "gzip")]);
        // Cut at half: `decoded` refuses it, the prefix is the start of the text.
        let cut = &gz[..gz.len() / 2];
        assert!(decoded(&gzip, cut).is_err());
        let p = decoded_prefix(&gzip, cut);
        assert!(p.len() > text.len() / 4, "{} of {}", p.len(), text.len());
        assert_eq!(&p[..], &text[..p.len()]);
        // Whole, it is the whole text.
        assert_eq!(decoded_prefix(&gzip, &gz), text);
        // Chunked, cut inside the second chunk: the first and what there is of the second.
        let chunked = hs(&[("Transfer-Encoding", "chunked")]);
        assert_eq!(decoded_prefix(&chunked, b"3\r\nabc\r\n5\r\nde"), b"abcde");
        assert_eq!(decoded_prefix(&chunked, b"3\r\nabc\r\nzz\r\nxyz"), b"abc");
        assert_eq!(decoded_prefix(&chunked, b"3\r\nabc\r\n0\r\n\r\n"), b"abc");
        // A chunk size past any length does not overflow.
        assert_eq!(decoded_prefix(&chunked, b"ffffffffffffffff\r\nab"), b"ab");
        // A coding this build does not decode gives nothing.
        assert!(decoded_prefix(&hs(&[("Content-Encoding", "zstd")]), b"(\xb5/\xfd").is_empty());
    }
}
