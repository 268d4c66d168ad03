//! [`CaseId`]: the stable identity of a case, a hash of its input.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The length of a case id in bytes.
pub const ID_LEN: usize = 16;

/// A case id: the first 16 bytes of the BLAKE3 hash of the case's canonical input encoding
/// (see `docs/corpus-format.md`). The same input recorded twice has the same id. Displayed and
/// written in JSON as 32 lowercase hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId(pub [u8; ID_LEN]);

impl CaseId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The id as 32 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first `n` hex digits, for display in tables.
    pub fn short(&self, n: usize) -> String {
        let mut s = self.to_hex();
        s.truncate(n);
        s
    }

    /// A stable 64-bit value from the id, used to shard cases over machines.
    pub fn shard_key(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaseId({})", self.to_hex())
    }
}

/// An id that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid case id {text:?}: expected 32 hex digits")]
pub struct ParseIdError {
    /// The text that did not parse.
    pub text: String,
}

impl FromStr for CaseId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError { text: s.to_string() })?;
        Ok(CaseId(out))
    }
}

impl Serialize for CaseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&self.to_hex()) } else { s.serialize_bytes(&self.0) }
    }
}

impl<'de> Deserialize<'de> for CaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CaseId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a case id (16 bytes, or 32 hex digits)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CaseId, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<CaseId, E> {
                let arr: [u8; ID_LEN] = v.try_into().map_err(|_| E::invalid_length(v.len(), &"16 bytes"))?;
                Ok(CaseId(arr))
            }
        }
        if d.is_human_readable() { d.deserialize_str(V) } else { d.deserialize_bytes(V) }
    }
}
