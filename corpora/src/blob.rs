//! [`Blob`]: recorded bytes that stay bytes on disk and read as text in JSON.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Bytes as they were recorded: a body, a header value, a packet.
///
/// In MessagePack (the corpus records) a blob is a `bin` value. In JSON (the JSONL export) a blob
/// that is valid UTF-8 is a plain string and any other blob is `{"base64": "..."}`, so that `jq`
/// works on the common case and nothing is lost on the rare one.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes as text, if they are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(v)
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Self {
        Blob(v.to_vec())
    }
}

impl From<&str> for Blob {
    fn from(v: &str) -> Self {
        Blob(v.as_bytes().to_vec())
    }
}

impl From<String> for Blob {
    fn from(v: String) -> Self {
        Blob(v.into_bytes())
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 64;
        let shown = &self.0[..self.0.len().min(SHOW)];
        write!(f, "Blob({} bytes: {:?}", self.0.len(), String::from_utf8_lossy(shown))?;
        if self.0.len() > SHOW {
            f.write_str("...")?;
        }
        f.write_str(")")
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_bytes(&self.0);
        }
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("base64", &BASE64.encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(BlobVisitor)
        } else {
            d.deserialize_byte_buf(BlobVisitor)
        }
    }
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes: a string, or an object {\"base64\": \"...\"}")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
        Ok(Blob(v.as_bytes().to_vec()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Blob, E> {
        Ok(Blob(v.into_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Blob(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Blob, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "base64" {
                return Err(de::Error::unknown_field(&key, &["base64"]));
            }
            if found.is_some() {
                return Err(de::Error::duplicate_field("base64"));
            }
            let text: String = map.next_value()?;
            let bytes = BASE64
                .decode(text.as_bytes())
                .map_err(|e| de::Error::custom(format_args!("invalid base64: {e}")))?;
            found = Some(Blob(bytes));
        }
        found.ok_or_else(|| de::Error::missing_field("base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_and_binary() {
        assert_eq!(serde_json::to_string(&Blob::from("hé")).unwrap(), "\"hé\"");
        let bin = Blob(vec![0xff, 0x00, 0x80]);
        let json = serde_json::to_string(&bin).unwrap();
        assert_eq!(json, r#"{"base64":"/wCA"}"#);
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), bin);
        assert!(serde_json::from_str::<Blob>(r#"{"base64":"%%"}"#).is_err());
        assert!(serde_json::from_str::<Blob>(r#"{"hex":"00"}"#).is_err());
    }

    #[test]
    fn msgpack_is_bin() {
        let bytes = rmp_serde::to_vec(&Blob(vec![1, 2, 3])).unwrap();
        assert_eq!(bytes, vec![0xc4, 3, 1, 2, 3]);
        assert_eq!(rmp_serde::from_slice::<Blob>(&bytes).unwrap(), Blob(vec![1, 2, 3]));
    }
}
