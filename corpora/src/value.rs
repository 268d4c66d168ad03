//! The format-neutral value the diff compares, and decoders into it by media type.
//!
//! JSON, MessagePack, form-urlencoded, text and server-sent events all become a [`Value`];
//! bytes that decode as nothing stay [`Value::Bytes`]. Maps keep their keys in the order the
//! document had them (the diff compares maps by key, whatever the order).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A decoded document.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (any JSON or MessagePack integer fits).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// Text.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list.
    Array(Vec<Value>),
    /// Keys and values, in document order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The name of the value's type, for "type changed" differences.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// The value at `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short rendering for reports: JSON-like, cut to about `max` characters.
    pub fn short(&self, max: usize) -> String {
        let mut s = String::new();
        self.render(&mut s, max);
        if s.len() > max {
            let mut cut = max;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        s
    }

    fn render(&self, out: &mut String, max: usize) {
        if out.len() > max {
            return;
        }
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(f) => out.push_str(&format_float(*f)),
            Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
            Value::Bytes(b) => {
                out.push_str(&format!("<{} bytes: ", b.len()));
                for x in b.iter().take(16) {
                    out.push_str(&format!("{x:02x}"));
                }
                if b.len() > 16 {
                    out.push('…');
                }
                out.push('>');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.render(out, max);
                    if out.len() > max {
                        return;
                    }
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    v.render(out, max);
                    if out.len() > max {
                        return;
                    }
                }
                out.push('}');
            }
        }
    }
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        let s = f.to_string();
        if s.contains(['.', 'e', 'E']) { s } else { format!("{s}.0") }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short(usize::MAX / 2))
    }
}

/// As JSON would write it: bytes as `{"base64": ...}` (the corpus JSON convention), integers
/// beyond 64 bits as strings, NaN and infinities as `null`.
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(x), _) => s.serialize_i64(x),
                (_, Ok(x)) => s.serialize_u64(x),
                _ => s.serialize_str(&i.to_string()),
            },
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(t) => s.serialize_str(t),
            Value::Bytes(b) => crate::Blob(b.clone()).serialize(s),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(k) = map.next_key::<Key>()? {
            v.push((k.0, map.next_value()?));
        }
        Ok(Value::Map(v))
    }
}

/// A map key: text, or a number or bool rendered as text (MessagePack allows any key).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Key(s)),
            Value::Bytes(b) => Ok(Key(String::from_utf8_lossy(&b).into_owned())),
            other => Ok(Key(other.short(256))),
        }
    }
}

/// How a document was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// MessagePack.
    MessagePack,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// Server-sent events: an array of events.
    EventStream,
    /// UTF-8 text.
    Text,
    /// Nothing decoded it: raw bytes.
    Bytes,
}

/// The media type without parameters, lowercased.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Decodes `data` by its media type. A document that does not parse as its type falls back to
/// text (if UTF-8) or bytes, never an error: the diff then compares what there is.
pub fn decode(content_type: &str, data: &[u8]) -> (Value, Format) {
    let ct = essence(content_type);
    let json_like = ct == "application/json" || ct.ends_with("+json") || ct == "text/json";
    let try_json = json_like || ct.is_empty() || ct == "application/octet-stream";
    if try_json && let Ok(v) = serde_json::from_slice::<Value>(data) {
        return (v, Format::Json);
    }
    if matches!(ct.as_str(), "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack")
        && let Ok(v) = rmp_serde::from_slice::<Value>(data)
    {
        return (v, Format::MessagePack);
    }
    if ct == "application/x-www-form-urlencoded"
        && let Ok(text) = std::str::from_utf8(data)
    {
        return (form(text), Format::Form);
    }
    if ct == "text/event-stream"
        && let Ok(text) = std::str::from_utf8(data)
    {
        return (event_stream(text), Format::EventStream);
    }
    match std::str::from_utf8(data) {
        Ok(text) if ct.starts_with("text/") || json_like || ct.is_empty() || !text.contains('\0') => {
            (Value::String(text.to_string()), Format::Text)
        }
        _ => (Value::Bytes(data.to_vec()), Format::Bytes),
    }
}

/// `a=1&b=x%20y&a=2` as a map; a repeated key becomes an array of its values.
pub fn form(text: &str) -> Value {
    let mut out: Vec<(String, Value)> = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), Value::String(percent_decode(v)));
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some((_, Value::Array(a))) => a.push(v),
            Some((_, old)) => {
                let first = std::mem::replace(old, Value::Null);
                *old = Value::Array(vec![first, v]);
            }
            None => out.push((k, v)),
        }
    }
    Value::Map(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 2;
            }
            x => out.push(x),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A server-sent-events body as the list of its events: each a map with `data` (decoded as
/// JSON where it parses) and `event`, `id`, `retry` where given. Comments are dropped.
pub fn event_stream(text: &str) -> Value {
    let mut events = Vec::new();
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut data: Option<String> = None;
    let mut flush = |fields: &mut Vec<(String, Value)>, data: &mut Option<String>| {
        if let Some(d) = data.take() {
            let v = serde_json::from_str::<Value>(&d).unwrap_or(Value::String(d));
            fields.push(("data".into(), v));
        }
        if !fields.is_empty() {
            events.push(Value::Map(std::mem::take(fields)));
        }
    };
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            flush(&mut fields, &mut data);
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) =
            line.split_once(':').map_or((line, ""), |(n, v)| (n, v.strip_prefix(' ').unwrap_or(v)));
        match name {
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            "event" | "id" | "retry" => fields.push((name.to_string(), Value::String(value.to_string()))),
            _ => {}
        }
    }
    flush(&mut fields, &mut data);
    Value::Array(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn json_keeps_key_order_and_number_kinds() {
        let (v, f) = decode("application/json; charset=utf-8", br#"{"b":1,"a":[1.5,-2,null,true,"x"]}"#);
        assert_eq!(f, Format::Json);
        assert_eq!(
            v,
            m(&[
                ("b", Value::Int(1)),
                (
                    "a",
                    Value::Array(vec![
                        Value::Float(1.5),
                        Value::Int(-2),
                        Value::Null,
                        Value::Bool(true),
                        Value::String("x".into())
                    ])
                ),
            ])
        );
        assert_eq!(decode("application/json", &[0xff, 0]).1, Format::Bytes);
        assert_eq!(decode("application/problem+json", b"[]").1, Format::Json);
    }

    #[test]
    fn messagepack_decodes_to_the_same_value_as_json() {
        let j: serde_json::Value = serde_json::json!({"a": [1, 2.5, "x", null], "b": {"c": false}});
        let mp = rmp_serde::to_vec_named(&j).unwrap();
        let (v, f) = decode("application/msgpack", &mp);
        assert_eq!(f, Format::MessagePack);
        assert_eq!(v, decode("application/json", j.to_string().as_bytes()).0);
    }

    #[test]
    fn forms_text_and_bytes() {
        assert_eq!(
            form("a=1&b=x%20y+z&a=2&c"),
            m(&[
                ("a", Value::Array(vec![Value::String("1".into()), Value::String("2".into())])),
                ("b", Value::String("x y z".into())),
                ("c", Value::String(String::new())),
            ])
        );
        assert_eq!(form("bad=%zz%4"), m(&[("bad", Value::String("%zz%4".into()))]));
        assert_eq!(decode("text/plain", b"hi").0, Value::String("hi".into()));
        assert_eq!(decode("application/octet-stream", &[1, 0, 2]).0, Value::Bytes(vec![1, 0, 2]));
    }

    #[test]
    fn event_streams_become_their_events() {
        let body =
            ": comment\nevent: delta\ndata: {\"x\":1}\n\ndata: line1\ndata: line2\nid: 7\n\ndata: [DONE]\n\n";
        let (v, f) = decode("text/event-stream", body.as_bytes());
        assert_eq!(f, Format::EventStream);
        assert_eq!(
            v,
            Value::Array(vec![
                m(&[("event", Value::String("delta".into())), ("data", m(&[("x", Value::Int(1))]))]),
                m(&[("id", Value::String("7".into())), ("data", Value::String("line1\nline2".into()))]),
                m(&[("data", Value::String("[DONE]".into()))]),
            ])
        );
    }

    #[test]
    fn short_renderings_are_cut() {
        let v = Value::Array((0..100).map(Value::Int).collect());
        let s = v.short(20);
        assert!(s.len() <= 24 && s.ends_with('…'), "{s}");
        assert_eq!(Value::Float(2.0).short(10), "2.0");
        assert_eq!(Value::Float(f64::NAN).short(10), "NaN");
    }
}
