//! The structural diff: paths, selectors, rules, and the comparison of two observations.
//!
//! Outputs are decoded into [`Value`]s by media type (JSON, MessagePack, forms, server-sent
//! events, text; bytes otherwise) and compared structurally. An HTTP output is compared as
//! `{status, headers, body}`: header names lowercased, a default ignore list for headers that
//! differ on every response (`Date`, `Server`, ...), the body decoded by its `Content-Type`.
//! Each difference has a path (`$.choices[0].message.content`), a kind and both values.

use std::sync::atomic::{AtomicU64, Ordering};

use corpora::value::{self, Format, Value};
use serde::{Deserialize, Serialize};

use crate::observation::{Observation, Outcome, Output};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A map key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// `$.a.b[0]["odd key"]`.
pub fn render(path: &[Seg]) -> String {
    render_with(path, false)
}

/// Like [`render`], with every index written `[*]`: the path's shape, for signatures.
pub fn generalise(path: &[Seg]) -> String {
    render_with(path, true)
}

fn render_with(path: &[Seg], general: bool) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) if is_plain_key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Key(k) => {
                s.push('[');
                s.push_str(&serde_json::to_string(k).unwrap_or_default());
                s.push(']');
            }
            Seg::Index(_) if general => s.push_str("[*]"),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A path selector: `$.metadata`, `$..request_id`, `$.items[*].ts`, `$.headers.*`,
/// `$["odd key"]`. A selector matches a path when it matches the path or one of its
/// ancestors (ignoring `$.metadata` ignores everything under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Key(String),
    AnyKey,
    Index(usize),
    AnyIndex,
    /// `..`: any number of steps (zero or more) before the next part.
    Descend,
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let err = |why: &str| format!("selector {text:?}: {why}");
        let rest = text.trim().strip_prefix('$').ok_or_else(|| err("must start with `$`"))?;
        let b = rest.as_bytes();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    if b.get(i + 1) == Some(&b'.') {
                        parts.push(Part::Descend);
                        i += 2;
                        if b.get(i) == Some(&b'[') {
                            continue;
                        }
                    } else {
                        i += 1;
                    }
                    let start = i;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        i += 1;
                    }
                    let name = &rest[start..i];
                    if name.is_empty() {
                        return Err(err("a `.` must be followed by a key or `*`"));
                    }
                    parts.push(if name == "*" { Part::AnyKey } else { Part::Key(name.to_string()) });
                }
                b'[' => {
                    let end = rest[i..].find(']').map(|e| i + e).ok_or_else(|| err("`[` without `]`"))?;
                    let inner = rest[i + 1..end].trim();
                    parts.push(if inner == "*" {
                        Part::AnyIndex
                    } else if let Ok(n) = inner.parse::<usize>() {
                        Part::Index(n)
                    } else if inner.starts_with('"') {
                        Part::Key(serde_json::from_str(inner).map_err(|_| err("bad quoted key"))?)
                    } else {
                        return Err(err("inside `[]` expected a number, `*` or a quoted key"));
                    });
                    i = end + 1;
                }
                _ => return Err(err("expected `.` or `[` after `$`")),
            }
        }
        if parts.last() == Some(&Part::Descend) {
            return Err(err("`..` must be followed by a key"));
        }
        Ok(Selector { text: text.trim().to_string(), parts })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the selector matches `path` or an ancestor of it.
    pub fn matches(&self, path: &[Seg]) -> bool {
        (0..=path.len()).any(|k| matches_exact(&self.parts, &path[..k]))
    }
}

fn matches_exact(parts: &[Part], path: &[Seg]) -> bool {
    match parts.split_first() {
        None => path.is_empty(),
        Some((Part::Descend, rest)) => (0..=path.len()).any(|skip| matches_exact(rest, &path[skip..])),
        Some((p, rest)) => match path.split_first() {
            None => false,
            Some((seg, tail)) => {
                let ok = match (p, seg) {
                    (Part::Key(k), Seg::Key(s)) => k == s,
                    (Part::AnyKey, Seg::Key(_)) => true,
                    (Part::Index(n), Seg::Index(i)) => n == i,
                    (Part::AnyIndex, Seg::Index(_)) => true,
                    _ => false,
                };
                ok && matches_exact(rest, tail)
            }
        },
    }
}

/// Numeric tolerance: `|a - b| <= abs` or `|a - b| <= rel * max(|a|, |b|)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Absolute tolerance.
    #[serde(default)]
    pub abs: f64,
    /// Relative tolerance.
    #[serde(default)]
    pub rel: f64,
}

impl Tolerance {
    fn accepts(&self, a: f64, b: f64) -> bool {
        let d = (a - b).abs();
        d <= self.abs || d <= self.rel * a.abs().max(b.abs())
    }
}

/// One rule, where it came from, and how often it changed a comparison.
#[derive(Debug)]
pub struct Rule<T> {
    /// Where it applies.
    pub selector: Selector,
    /// Its parameter.
    pub param: T,
    /// Where it was written (`replay.toml:12`, `--ignore`, `scenario x.toml`).
    pub origin: String,
    hits: AtomicU64,
}

impl<T> Rule<T> {
    /// A rule.
    pub fn new(selector: Selector, param: T, origin: impl Into<String>) -> Rule<T> {
        Rule { selector, param, origin: origin.into(), hits: AtomicU64::new(0) }
    }

    /// How many times it changed the outcome of a comparison.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Headers ignored by default: they differ on every response.
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "via",
    "age",
    "etag",
    "expires",
    "last-modified",
    "x-request-id",
    "x-amzn-requestid",
    "x-amz-cf-id",
    "cf-ray",
    "x-cache",
    "x-served-by",
    "x-timer",
    "report-to",
    "nel",
    "alt-svc",
    "set-cookie",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "x-replay-playback",
];

/// The rules of one comparison.
#[derive(Debug)]
pub struct Rules {
    /// Paths whose differences are ignored.
    pub ignore: Vec<Rule<()>>,
    /// Numeric tolerances by path.
    pub tolerance: Vec<Rule<Tolerance>>,
    /// Arrays compared as multisets at these paths.
    pub unordered: Vec<Rule<()>>,
    /// Whether NaN equals NaN (default yes).
    pub nan_equal: bool,
    /// Header names (lowercase) left out of HTTP comparisons.
    pub ignore_headers: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            ignore: Vec::new(),
            tolerance: Vec::new(),
            unordered: Vec::new(),
            nan_equal: true,
            ignore_headers: DEFAULT_IGNORED_HEADERS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Rules {
    /// Every rule that never changed a comparison: `(kind, selector, origin)`.
    pub fn unused(&self) -> Vec<(String, String, String)> {
        let mut v = Vec::new();
        for r in self.ignore.iter().filter(|r| r.hits() == 0) {
            v.push(("ignore".to_string(), r.selector.as_str().to_string(), r.origin.clone()));
        }
        for r in self.tolerance.iter().filter(|r| r.hits() == 0) {
            v.push(("tolerance".to_string(), r.selector.as_str().to_string(), r.origin.clone()));
        }
        for r in self.unordered.iter().filter(|r| r.hits() == 0) {
            v.push(("unordered".to_string(), r.selector.as_str().to_string(), r.origin.clone()));
        }
        v
    }

    fn ignored(&self, path: &[Seg]) -> bool {
        match self.ignore.iter().find(|r| r.selector.matches(path)) {
            Some(r) => {
                r.hit();
                true
            }
            None => false,
        }
    }
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Present in B only.
    Added,
    /// Present in A only.
    Removed,
    /// Both present, different values of one type.
    Changed,
    /// Both present, different types.
    TypeChanged,
    /// One side answered and the other failed, or they failed differently.
    OutcomeChanged,
}

impl Kind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Added => "added",
            Kind::Removed => "removed",
            Kind::Changed => "changed",
            Kind::TypeChanged => "type_changed",
            Kind::OutcomeChanged => "outcome_changed",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Where (`$.choices[0].message.content`).
    pub path: String,
    /// The path's shape, indices as `[*]` (what signatures use).
    pub shape: String,
    /// What kind.
    pub kind: Kind,
    /// A's value, shortened; absent if A has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// B's value, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    /// For outcome changes and byte comparisons: what changed (`output -> trap unreachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How wide a value is shown in a difference.
pub const SHORT: usize = 120;

/// A case's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No difference after the rules.
    Same,
    /// At least one difference.
    Different,
    /// A side failed in a way its target marks non-deterministic.
    Inconclusive,
}

/// The comparison of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseDiff {
    /// The verdict.
    pub verdict: Verdict,
    /// The differences, in document order.
    pub differences: Vec<Difference>,
    /// Why inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Compares two values under `rules`.
pub fn diff_values(a: &Value, b: &Value, rules: &Rules) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk(a, b, &mut path, rules, &mut out);
    out
}

fn diff(path: &[Seg], kind: Kind, a: Option<&Value>, b: Option<&Value>) -> Difference {
    Difference {
        path: render(path),
        shape: generalise(path),
        kind,
        a: a.map(|v| v.short(SHORT)),
        b: b.map(|v| v.short(SHORT)),
        detail: None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Equality as the diff sees it: NaN equals NaN when the rules say so, maps by key.
fn same(a: &Value, b: &Value, nan_equal: bool) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x == y || (nan_equal && x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q, nan_equal))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && (x.iter().zip(y).all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2, nan_equal))
                    || x.iter().all(|(k, v)| {
                        y.iter().find(|(k2, _)| k2 == k).is_some_and(|(_, w)| same(v, w, nan_equal))
                    }))
        }
        _ => a == b,
    }
}

fn walk(a: &Value, b: &Value, path: &mut Vec<Seg>, rules: &Rules, out: &mut Vec<Difference>) {
    if same(a, b, rules.nan_equal) {
        return;
    }
    if rules.ignored(path) {
        return;
    }
    match (a, b) {
        (Value::Map(x), Value::Map(y)) => {
            for (k, v) in x {
                path.push(Seg::Key(k.clone()));
                match y.iter().find(|(k2, _)| k2 == k) {
                    Some((_, w)) => walk(v, w, path, rules, out),
                    None if !rules.ignored(path) => out.push(diff(path, Kind::Removed, Some(v), None)),
                    None => {}
                }
                path.pop();
            }
            for (k, w) in y {
                if !x.iter().any(|(k1, _)| k1 == k) {
                    path.push(Seg::Key(k.clone()));
                    if !rules.ignored(path) {
                        out.push(diff(path, Kind::Added, None, Some(w)));
                    }
                    path.pop();
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if let Some(r) = rules.unordered.iter().find(|r| r.selector.matches(path)) {
                r.hit();
                unordered(x, y, path, rules, out);
                return;
            }
            for i in 0..x.len().max(y.len()) {
                path.push(Seg::Index(i));
                match (x.get(i), y.get(i)) {
                    (Some(v), Some(w)) => walk(v, w, path, rules, out),
                    (Some(v), None) if !rules.ignored(path) => {
                        out.push(diff(path, Kind::Removed, Some(v), None))
                    }
                    (None, Some(w)) if !rules.ignored(path) => {
                        out.push(diff(path, Kind::Added, None, Some(w)))
                    }
                    _ => {}
                }
                path.pop();
            }
        }
        _ => {
            if let (Some(p), Some(q)) = (number(a), number(b)) {
                if let Some(r) = rules.tolerance.iter().find(|r| r.selector.matches(path))
                    && r.param.accepts(p, q)
                {
                    r.hit();
                    return;
                }
                if p == q {
                    // 1 and 1.0: the same number, written differently.
                    out.push(diff(path, Kind::TypeChanged, Some(a), Some(b)));
                    return;
                }
            } else if let (Value::Bytes(x), Value::Bytes(y)) = (a, b) {
                let at = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
                let mut d = diff(path, Kind::Changed, Some(a), Some(b));
                d.detail = Some(format!(
                    "first difference at byte offset {at}; lengths {} and {}",
                    x.len(),
                    y.len()
                ));
                out.push(d);
                return;
            }
            let kind = if std::mem::discriminant(a) == std::mem::discriminant(b) {
                Kind::Changed
            } else {
                Kind::TypeChanged
            };
            out.push(diff(path, kind, Some(a), Some(b)));
        }
    }
}

/// Arrays as multisets: equal elements pair up whatever their position; what is left over is
/// removed (from A, at its index) or added (in B, at its index).
fn unordered(x: &[Value], y: &[Value], path: &mut Vec<Seg>, rules: &Rules, out: &mut Vec<Difference>) {
    let mut used = vec![false; y.len()];
    let mut left = Vec::new();
    for (i, v) in x.iter().enumerate() {
        match (0..y.len()).find(|&j| !used[j] && same(v, &y[j], rules.nan_equal)) {
            Some(j) => used[j] = true,
            None => left.push(i),
        }
    }
    for i in left {
        path.push(Seg::Index(i));
        if !rules.ignored(path) {
            out.push(diff(path, Kind::Removed, Some(&x[i]), None));
        }
        path.pop();
    }
    for (j, w) in y.iter().enumerate().filter(|(j, _)| !used[*j]) {
        path.push(Seg::Index(j));
        if !rules.ignored(path) {
            out.push(diff(path, Kind::Added, None, Some(w)));
        }
        path.pop();
    }
}

/// An output as a value: bytes decoded by media type; HTTP as `{status, headers, body}`.
pub fn output_value(o: &Output, rules: &Rules) -> (Value, Format) {
    match o {
        Output::Bytes { content_type, data } => value::decode(content_type, data.as_bytes()),
        Output::Http { status, headers, body } => {
            let ct = headers
                .iter()
                .find(|h| h.0.eq_ignore_ascii_case("content-type"))
                .map(|h| String::from_utf8_lossy(h.1.as_bytes()).into_owned())
                .unwrap_or_default();
            let mut hs: Vec<(String, Value)> = Vec::new();
            for h in headers {
                let name = h.0.as_str().to_ascii_lowercase();
                if rules.ignore_headers.contains(&name) {
                    continue;
                }
                let v = Value::String(String::from_utf8_lossy(h.1.as_bytes()).into_owned());
                match hs.iter_mut().find(|(k, _)| *k == name) {
                    Some((_, Value::Array(a))) => a.push(v),
                    Some((_, old)) => {
                        let first = std::mem::replace(old, Value::Null);
                        *old = Value::Array(vec![first, v]);
                    }
                    None => hs.push((name, v)),
                }
            }
            let (body, fmt) = value::decode(&ct, body.as_bytes());
            (
                Value::Map(vec![
                    ("status".into(), Value::Int((*status).into())),
                    ("headers".into(), Value::Map(hs)),
                    ("body".into(), body),
                ]),
                fmt,
            )
        }
    }
}

/// A one-line summary of an outcome, for outcome changes.
pub fn outcome_summary(o: &Outcome) -> String {
    let cut = |s: &str| {
        let first = s.lines().next().unwrap_or("");
        if first.len() > 100 {
            let mut end = 100;
            while !first.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &first[..end])
        } else {
            first.to_string()
        }
    };
    match o {
        Outcome::Output { .. } => "output".into(),
        Outcome::Error { message } => format!("error: {}", cut(message)),
        Outcome::Trap { code, .. } => format!("trap {code}"),
        Outcome::Timeout { after_ms } => format!("timeout after {after_ms} ms"),
        Outcome::Crash { status: Some(s), .. } => format!("crash, exit status {s}"),
        Outcome::Crash { signal, .. } => format!("crash, signal {}", signal.unwrap_or(0)),
        Outcome::Exhausted { resource, .. } => format!("exhausted {resource}"),
        Outcome::Unsupported { reason } => format!("unsupported: {}", cut(reason)),
    }
}

/// The outcome's class, for signatures: `output`, `trap unreachable`, `error`, ...
fn outcome_class(o: &Outcome) -> String {
    match o {
        Outcome::Trap { code, .. } => format!("trap {code}"),
        Outcome::Crash { .. } => "crash".into(),
        other => other.name().to_string(),
    }
}

/// Compares two observations of one case.
pub fn compare(a: &Observation, b: &Observation, rules: &Rules) -> CaseDiff {
    let (oa, ob) = (&a.outcome, &b.outcome);
    if let (Outcome::Output { output: x }, Outcome::Output { output: y }) = (oa, ob) {
        let (mut va, _) = output_value(x, rules);
        let (mut vb, _) = output_value(y, rules);
        // A deployment's HTTP answer against a build's bare output: compare the bodies.
        match (x, y) {
            (Output::Http { .. }, Output::Bytes { .. }) => va = take_body(va),
            (Output::Bytes { .. }, Output::Http { .. }) => vb = take_body(vb),
            _ => {}
        }
        let differences = diff_values(&va, &vb, rules);
        let verdict = if differences.is_empty() { Verdict::Same } else { Verdict::Different };
        return CaseDiff { verdict, differences, reason: None };
    }
    // A side that cannot run this kind of case says nothing about the other.
    for (side, o) in [("A", oa), ("B", ob)] {
        if let Outcome::Unsupported { .. } = o {
            return CaseDiff {
                verdict: Verdict::Inconclusive,
                differences: Vec::new(),
                reason: Some(format!("{side} {}", outcome_summary(o))),
            };
        }
    }
    if oa.nondeterministic() || ob.nondeterministic() {
        let side = if oa.nondeterministic() { ("A", oa) } else { ("B", ob) };
        return CaseDiff {
            verdict: Verdict::Inconclusive,
            differences: Vec::new(),
            reason: Some(format!("{} {} (non-deterministic)", side.0, outcome_summary(side.1))),
        };
    }
    if oa == ob {
        return CaseDiff { verdict: Verdict::Same, differences: Vec::new(), reason: None };
    }
    let d = Difference {
        path: "$".into(),
        shape: "$".into(),
        kind: Kind::OutcomeChanged,
        a: Some(outcome_summary(oa)),
        b: Some(outcome_summary(ob)),
        detail: Some(format!("{} -> {}", outcome_class(oa), outcome_class(ob))),
    };
    CaseDiff { verdict: Verdict::Different, differences: vec![d], reason: None }
}

fn take_body(v: Value) -> Value {
    match v {
        Value::Map(m) => m.into_iter().find(|(k, _)| k == "body").map(|(_, b)| b).unwrap_or(Value::Null),
        other => other,
    }
}

/// A case's signature: its differences' shapes and kinds (and outcome transitions), sorted
/// and deduplicated.
pub fn signature(differences: &[Difference]) -> Vec<String> {
    let mut s: Vec<String> = differences
        .iter()
        .map(|d| match (&d.kind, &d.detail) {
            (Kind::OutcomeChanged, Some(detail)) => format!("{} {} ({detail})", d.kind.name(), d.shape),
            _ => format!("{} {}", d.kind.name(), d.shape),
        })
        .collect();
    s.sort();
    s.dedup();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Value {
        value::decode("application/json", s.as_bytes()).0
    }

    fn paths(d: &[Difference]) -> Vec<(String, Kind)> {
        d.iter().map(|d| (d.path.clone(), d.kind)).collect()
    }

    fn rules_with(f: impl FnOnce(&mut Rules)) -> Rules {
        let mut r = Rules::default();
        f(&mut r);
        r
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn differences_have_paths_and_kinds() {
        let a = json(r#"{"a":1,"b":[1,2,3],"c":{"d":"x"},"gone":true,"t":1}"#);
        let b = json(r#"{"a":2,"b":[1,2],"c":{"d":"y","e":null},"t":"1"}"#);
        assert_eq!(
            paths(&diff_values(&a, &b, &Rules::default())),
            [
                ("$.a".into(), Kind::Changed),
                ("$.b[2]".into(), Kind::Removed),
                ("$.c.d".into(), Kind::Changed),
                ("$.c.e".into(), Kind::Added),
                ("$.gone".into(), Kind::Removed),
                ("$.t".into(), Kind::TypeChanged),
            ]
        );
        // Key order does not matter.
        assert!(
            diff_values(&json(r#"{"x":1,"y":2}"#), &json(r#"{"y":2,"x":1}"#), &Rules::default()).is_empty()
        );
    }

    #[test]
    fn selectors_parse_match_and_reject_nonsense() {
        let p = vec![Seg::Key("items".into()), Seg::Index(3), Seg::Key("ts".into())];
        assert!(sel("$.items[*].ts").matches(&p));
        assert!(sel("$.items").matches(&p));
        assert!(sel("$..ts").matches(&p));
        assert!(sel("$.items[3]").matches(&p));
        assert!(!sel("$.items[2]").matches(&p));
        assert!(sel("$.*[*].ts").matches(&p));
        assert!(!sel("$.ts").matches(&p));
        assert!(sel(r#"$["items"][*]"#).matches(&p));
        for bad in ["items", "$.", "$[", "$..", "$[x]", "$x"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(render(&p), "$.items[3].ts");
        assert_eq!(generalise(&p), "$.items[*].ts");
        assert_eq!(render(&[Seg::Key("a b".into())]), r#"$["a b"]"#);
    }

    #[test]
    fn ignore_rules_suppress_and_count() {
        let r = rules_with(|r| {
            r.ignore.push(Rule::new(sel("$.metadata"), (), "t"));
            r.ignore.push(Rule::new(sel("$..request_id"), (), "t"));
            r.ignore.push(Rule::new(sel("$.never"), (), "t"));
        });
        let a = json(r#"{"metadata":{"x":1},"v":[{"request_id":"a","k":1}]}"#);
        let b = json(r#"{"v":[{"request_id":"b","k":2}]}"#);
        assert_eq!(paths(&diff_values(&a, &b, &r)), [("$.v[0].k".into(), Kind::Changed)]);
        assert_eq!(r.unused(), [("ignore".to_string(), "$.never".to_string(), "t".to_string())]);
    }

    #[test]
    fn numeric_tolerance_holds_at_the_boundary() {
        let r =
            rules_with(|r| r.tolerance.push(Rule::new(sel("$.x"), Tolerance { abs: 0.5, rel: 0.0 }, "t")));
        assert!(diff_values(&json(r#"{"x":1.0}"#), &json(r#"{"x":1.5}"#), &r).is_empty());
        assert_eq!(diff_values(&json(r#"{"x":1.0}"#), &json(r#"{"x":1.5000001}"#), &r).len(), 1);
        let r = rules_with(|r| r.tolerance.push(Rule::new(sel("$"), Tolerance { abs: 0.0, rel: 0.01 }, "t")));
        assert!(diff_values(&json("100"), &json("101"), &r).is_empty());
        assert_eq!(diff_values(&json("100"), &json("101.5"), &r).len(), 1);
        // Integers and floats are numbers alike.
        assert!(diff_values(&json("100"), &json("100.5"), &r).is_empty());
    }

    #[test]
    fn unordered_arrays_and_nan() {
        let r = rules_with(|r| r.unordered.push(Rule::new(sel("$.tags"), (), "t")));
        assert!(diff_values(&json(r#"{"tags":[1,2,3]}"#), &json(r#"{"tags":[3,1,2]}"#), &r).is_empty());
        assert_eq!(
            paths(&diff_values(&json(r#"{"tags":[1,2,2]}"#), &json(r#"{"tags":[2,1,4]}"#), &r)),
            [("$.tags[2]".into(), Kind::Removed), ("$.tags[2]".into(), Kind::Added)]
        );
        assert_eq!(diff_values(&json("[1,2]"), &json("[2,1]"), &r).len(), 2, "ordered elsewhere");
        let nan = Value::Float(f64::NAN);
        assert!(diff_values(&nan, &nan, &Rules::default()).is_empty());
        assert_eq!(diff_values(&nan, &nan, &rules_with(|r| r.nan_equal = false)).len(), 1);
    }

    #[test]
    fn outcomes_compare_and_nondeterminism_is_inconclusive() {
        let obs = |outcome| Observation { case: corpora::CaseId([0; 16]), outcome, duration_ns: 0 };
        let out = obs(Outcome::bytes("application/json", br#"{"a":1}"#.to_vec()));
        let trap =
            obs(Outcome::Trap { code: "unreachable".into(), message: "m".into(), nondeterministic: false });
        let so =
            obs(Outcome::Trap { code: "stack_overflow".into(), message: "m".into(), nondeterministic: true });
        let d = compare(&out, &trap, &Rules::default());
        assert_eq!(d.verdict, Verdict::Different);
        assert_eq!(d.differences[0].kind, Kind::OutcomeChanged);
        assert_eq!(signature(&d.differences), ["outcome_changed $ (output -> trap unreachable)"]);
        assert_eq!(compare(&out, &so, &Rules::default()).verdict, Verdict::Inconclusive);
        assert_eq!(compare(&trap, &trap, &Rules::default()).verdict, Verdict::Same);
        let bin = |b: &[u8]| obs(Outcome::bytes("application/octet-stream", b.to_vec()));
        let d = compare(&bin(&[1, 0, 2, 3]), &bin(&[1, 0, 9]), &Rules::default());
        assert_eq!(
            d.differences[0].detail.as_deref(),
            Some("first difference at byte offset 2; lengths 4 and 3")
        );
    }

    #[test]
    fn event_streams_diff_event_by_event() {
        let sse = |word: &str| {
            format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"let \"}}}}]}}\n\n\
                 data: {{\"choices\":[{{\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\ndata: [DONE]\n\n"
            )
        };
        let obs = |body: String| Observation {
            case: corpora::CaseId([0; 16]),
            outcome: Outcome::bytes("text/event-stream", body.into_bytes()),
            duration_ns: 0,
        };
        assert_eq!(compare(&obs(sse("x")), &obs(sse("x")), &Rules::default()).verdict, Verdict::Same);
        let d = compare(&obs(sse("x")), &obs(sse("y")), &Rules::default());
        assert_eq!(paths(&d.differences), [("$[1].data.choices[0].delta.content".into(), Kind::Changed)]);
        assert_eq!(signature(&d.differences), ["changed $[*].data.choices[*].delta.content"]);
    }

    #[test]
    fn http_outputs_compare_status_headers_and_decoded_bodies() {
        use corpora::Header;
        let h = |status, date: &str, body: &str| Observation {
            case: corpora::CaseId([0; 16]),
            outcome: Outcome::Output {
                output: Output::Http {
                    status,
                    headers: vec![
                        Header::new("Content-Type", "application/json"),
                        Header::new("Date", date.to_string()),
                        Header::new("X-Version", "1"),
                    ],
                    body: body.as_bytes().to_vec().into(),
                },
            },
            duration_ns: 0,
        };
        assert_eq!(
            compare(&h(200, "Mon", r#"{"a":1}"#), &h(200, "Tue", r#"{"a":1}"#), &Rules::default()).verdict,
            Verdict::Same
        );
        let d = compare(&h(200, "Mon", r#"{"a":[1]}"#), &h(500, "Mon", r#"{"a":[2]}"#), &Rules::default());
        assert_eq!(
            paths(&d.differences),
            [("$.status".into(), Kind::Changed), ("$.body.a[0]".into(), Kind::Changed)]
        );
        assert_eq!(signature(&d.differences), ["changed $.body.a[*]", "changed $.status"]);
    }
}
