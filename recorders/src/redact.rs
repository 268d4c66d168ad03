//! Redaction before anything reaches disk, shared by every recorder.
//!
//! Secrets are replaced by a stable placeholder derived from a keyed hash of the secret
//! (`[redacted:3f9a1c0b7d2e]`), so equal secrets stay equal and diffs still line up, while the
//! placeholder reveals nothing without the key. What is redacted:
//! - headers, request and response, by name: a default list (`Authorization`,
//!   `Proxy-Authorization`, `Cookie`, `Set-Cookie`, `X-Api-Key`, `Api-Key`, provider
//!   organisation and project headers) plus the configured ones;
//! - JSON bodies at configured paths (`$.api_key`, `$..password`), after the body is decoded
//!   (chunking, gzip, deflate, br removed);
//! - any text body or JSON string matching a secret pattern: API-key shapes and e-mail
//!   addresses by default, plus configured regular expressions.
//!
//! A body that had to be changed is stored decoded (its coding headers adjusted) and the case
//! is flagged [`Flag::Redacted`] with where.

use aho_corasick::AhoCorasick;
use corpora::value::{self, Value};
use corpora::{Blob, Case, CaseData, ChunkMark, Flag, Header, body};
use regex::{Regex, RegexSet};

/// Header names redacted by default (lowercase).
pub const DEFAULT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "openai-organization",
    "openai-project",
    "anthropic-api-key",
    "x-goog-api-key",
    "x-amz-security-token",
    "x-auth-token",
];

/// Query parameters whose values are credentials whatever they look like (lower case, compared
/// after percent-decoding the name): API keys and tokens passed in the URL, and the signatures
/// and credentials of pre-signed cloud URLs.
pub const DEFAULT_QUERY_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "auth",
    "client_secret",
    "password",
    "secret",
    "sig",
    "signature",
    "x-amz-credential",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-credential",
    "x-goog-signature",
];

/// Secret shapes redacted by default wherever they appear: bodies, header values, request
/// targets, trailers.
pub const DEFAULT_PATTERNS: &[&str] = &[
    // Provider API keys: OpenAI/Anthropic style, GitHub tokens, AWS access key ids, Slack, Google.
    r"sk-(?:ant-)?[A-Za-z0-9_\-]{20,}",
    r"gh[pousr]_[A-Za-z0-9]{30,}",
    r"AKIA[0-9A-Z]{16}",
    r"xox[baprs]-[A-Za-z0-9\-]{10,}",
    r"AIza[0-9A-Za-z_\-]{35}",
    // Bearer tokens written into text.
    r"(?i)bearer\s+[A-Za-z0-9._~+/\-]{20,}=*",
    // E-mail addresses.
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
];

/// For each default pattern, literals one of which every match of it contains. A text with
/// none of them cannot hold a default secret shape; finding that takes one SIMD literal scan
/// (Teddy, about 6 GB/s here) instead of the patterns' automaton (about 0.5 GB/s).
/// `(?i)bearer` is covered by the eight case forms of its first three letters.
const DEFAULT_LITERALS: &[&[&str]] = &[
    &["sk-"],
    &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
    &["AKIA"],
    &["xox"],
    &["AIza"],
    &["bea", "beA", "bEa", "bEA", "Bea", "BeA", "BEa", "BEA"],
    &["@"],
];

/// A set of literals, searched for at SIMD speed: single bytes with memchr, the rest with a
/// packed (Teddy) searcher, or an Aho-Corasick automaton where Teddy cannot be built (more
/// than 64 literals, no SIMD on this CPU).
struct Literals {
    bytes: Vec<u8>,
    packed: Option<aho_corasick::packed::Searcher>,
    automaton: Option<AhoCorasick>,
}

impl Literals {
    fn new(literals: &[String]) -> Result<Literals, aho_corasick::BuildError> {
        let mut bytes: Vec<u8> = literals.iter().filter(|l| l.len() == 1).map(|l| l.as_bytes()[0]).collect();
        bytes.sort_unstable();
        bytes.dedup();
        let longer: Vec<&String> = literals.iter().filter(|l| l.len() > 1).collect();
        let mut packed = None;
        let mut automaton = None;
        if !longer.is_empty() {
            packed = aho_corasick::packed::Config::new().builder().extend(&longer).build();
            if packed.is_none() {
                automaton = Some(AhoCorasick::new(&longer)?);
            }
        }
        Ok(Literals { bytes, packed, automaton })
    }

    fn is_match(&self, text: &[u8]) -> bool {
        let one = match self.bytes.as_slice() {
            [] => false,
            [a] => memchr::memchr(*a, text).is_some(),
            [a, b] => memchr::memchr2(*a, *b, text).is_some(),
            [a, b, c] => memchr::memchr3(*a, *b, *c, text).is_some(),
            many => many.iter().any(|&b| memchr::memchr(b, text).is_some()),
        };
        one || self.longer_match(text)
    }

    /// Whether a literal of two or more bytes occurs.
    fn longer_match(&self, text: &[u8]) -> bool {
        self.packed.as_ref().is_some_and(|p| p.find(text).is_some())
            || self.automaton.as_ref().is_some_and(|a| a.is_match(text))
    }

    /// [`Literals::is_match`], or a JSON escape that could hide part of a secret from a text
    /// scan (`\u0040` for `@`, `\/`). With at most two single-byte literals (the defaults
    /// have one, `@`), those and the escapes' backslash are found in one memchr pass, not
    /// three. The escapes stay out of the packed set: their two bytes would weaken its
    /// fingerprints for all the others.
    fn is_match_or_escape(&self, text: &[u8]) -> bool {
        let listed = self.bytes.contains(&b'\\');
        let hit = |i: usize| text[i] != b'\\' || listed || matches!(text.get(i + 1), Some(b'u' | b'/'));
        let one = match self.bytes.as_slice() {
            [] => memchr::memchr_iter(b'\\', text).any(hit),
            [a] => memchr::memchr2_iter(*a, b'\\', text).any(hit),
            [a, b] => memchr::memchr3_iter(*a, *b, b'\\', text).any(hit),
            _ => {
                return self.is_match(text)
                    || memchr::memmem::find(text, b"\\u").is_some()
                    || memchr::memmem::find(text, b"\\/").is_some();
            }
        };
        one || self.longer_match(text)
    }
}

/// What to redact, beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RedactRules {
    /// More header names.
    pub headers: Vec<String>,
    /// JSON paths: `$.a.b` (exact) or `$..name` (a key at any depth).
    pub json_paths: Vec<String>,
    /// More regular expressions for text.
    pub patterns: Vec<String>,
    /// More query parameter names whose values are redacted in request targets.
    pub query: Vec<String>,
}

/// Why redaction rules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// A pattern is not a valid regular expression.
    #[error("redaction pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What the regex compiler said.
        message: String,
    },
    /// A JSON path is not `$.a.b` or `$..name`.
    #[error("redaction path {0:?}: expected $.a.b or $..name")]
    Path(String),
}

enum JsonPath {
    Exact(Vec<String>),
    Anywhere(String),
}

/// `[redacted:` twelve hex digits `]`.
const PLACEHOLDER_LEN: usize = 23;

/// A header name's length and first and last bytes, lower case: equal for two names that are
/// equal ignoring ASCII case.
fn name_key(name: &str) -> u64 {
    let b = name.as_bytes();
    let end = |x: Option<&u8>| u64::from(x.map_or(0, u8::to_ascii_lowercase));
    (b.len() as u64) << 16 | end(b.first()) << 8 | end(b.last())
}

thread_local! {
    /// The header values of one message, joined for [`Redactor::headers`] to screen at once.
    static SCREEN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Applies the rules with a key.
pub struct Redactor {
    key: [u8; 32],
    headers: Vec<String>,
    /// [`name_key`] of each of `headers`.
    header_keys: Vec<u64>,
    paths: Vec<JsonPath>,
    patterns: Vec<Regex>,
    /// Every pattern in one automaton: one pass tells whether a text needs the others.
    any: RegexSet,
    /// The same patterns over bytes, for bodies that are not UTF-8 (a binary part, text cut
    /// inside a character at a size cap).
    bytes_patterns: Vec<regex::bytes::Regex>,
    bytes_any: regex::bytes::RegexSet,
    /// Query parameter names redacted by value (lower case).
    query: Vec<String>,
    /// Literals that any secret shape, hidden escape or configured JSON key contains (see
    /// [`DEFAULT_LITERALS`]; for configured patterns, their prefixes when the regex parser can
    /// list them). A text without one is clean unless `unfiltered` matches it.
    literals: Literals,
    /// The configured patterns without such literals: always run.
    unfiltered: Option<regex::bytes::RegexSet>,
    /// The key each JSON path ends in, quoted as in JSON text (`"password"`).
    path_keys: Vec<String>,
}

impl Redactor {
    /// A redactor with the default lists plus `rules`, keyed by `key`.
    pub fn new(key: [u8; 32], rules: &RedactRules) -> Result<Redactor, RedactError> {
        let mut headers: Vec<String> = DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect();
        headers.extend(rules.headers.iter().map(|h| h.to_ascii_lowercase()));
        let mut patterns = Vec::new();
        for p in DEFAULT_PATTERNS.iter().map(|s| s.to_string()).chain(rules.patterns.iter().cloned()) {
            patterns.push(
                Regex::new(&p)
                    .map_err(|e| RedactError::Pattern { pattern: p.clone(), message: e.to_string() })?,
            );
        }
        let mut paths = Vec::new();
        for p in &rules.json_paths {
            if let Some(name) = p.strip_prefix("$..") {
                if name.is_empty() || name.contains('.') {
                    return Err(RedactError::Path(p.clone()));
                }
                paths.push(JsonPath::Anywhere(name.to_string()));
            } else if let Some(rest) = p.strip_prefix("$.") {
                let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(RedactError::Path(p.clone()));
                }
                paths.push(JsonPath::Exact(parts));
            } else {
                return Err(RedactError::Path(p.clone()));
            }
        }
        let any = RegexSet::new(patterns.iter().map(Regex::as_str)).map_err(|e| RedactError::Pattern {
            pattern: "(all patterns together)".into(),
            message: e.to_string(),
        })?;
        let path_keys: Vec<String> = paths
            .iter()
            .map(|p| match p {
                JsonPath::Exact(parts) => parts.last().cloned().unwrap_or_default(),
                JsonPath::Anywhere(name) => name.clone(),
            })
            .map(|k| serde_json::to_string(&k).unwrap_or_default())
            .collect();
        // The prefilter: the defaults' literals, each configured pattern's prefixes, the JSON
        // escapes that could hide a secret from a text scan, and the configured keys.
        let mut literals: Vec<String> =
            DEFAULT_LITERALS.iter().flat_map(|l| l.iter().map(|s| s.to_string())).collect();
        let mut unfiltered = Vec::new();
        for p in &rules.patterns {
            match required_prefixes(p) {
                Some(prefixes) => literals.extend(prefixes),
                None => unfiltered.push(p.as_str()),
            }
        }
        literals.extend(path_keys.iter().cloned());
        literals.retain(|l| !l.is_empty());
        let literals = Literals::new(&literals).map_err(|e| RedactError::Pattern {
            pattern: "(the patterns' literals)".into(),
            message: e.to_string(),
        })?;
        let unfiltered = if unfiltered.is_empty() {
            None
        } else {
            Some(regex::bytes::RegexSet::new(unfiltered).map_err(|e| RedactError::Pattern {
                pattern: "(the patterns without literals)".into(),
                message: e.to_string(),
            })?)
        };
        let header_keys = headers.iter().map(|h| name_key(h)).collect();
        let bytes_patterns = patterns
            .iter()
            .map(|p| regex::bytes::Regex::new(p.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RedactError::Pattern {
                pattern: "(a pattern over bytes)".into(),
                message: e.to_string(),
            })?;
        let bytes_any = regex::bytes::RegexSet::new(patterns.iter().map(Regex::as_str)).map_err(|e| {
            RedactError::Pattern {
                pattern: "(all patterns together, over bytes)".into(),
                message: e.to_string(),
            }
        })?;
        let mut query: Vec<String> = DEFAULT_QUERY_PARAMS.iter().map(|s| s.to_string()).collect();
        query.extend(rules.query.iter().map(|q| q.to_ascii_lowercase()));
        Ok(Redactor {
            key,
            headers,
            header_keys,
            paths,
            patterns,
            any,
            bytes_patterns,
            bytes_any,
            query,
            literals,
            unfiltered,
            path_keys,
        })
    }

    /// The placeholder of a secret: stable for a key, revealing nothing without it.
    pub fn placeholder(&self, secret: &[u8]) -> String {
        let h = blake3::keyed_hash(&self.key, secret);
        let mut out = String::with_capacity(PLACEHOLDER_LEN);
        out.push_str("[redacted:");
        out.push_str(&h.to_hex()[..12]);
        out.push(']');
        out
    }

    /// Whether `text` may hold something to redact (false: it certainly does not): a literal
    /// of a secret shape or JSON key, a JSON escape, or a configured pattern without literals.
    fn suspect(&self, text: &[u8]) -> bool {
        self.literals.is_match_or_escape(text) || self.unfiltered.as_ref().is_some_and(|u| u.is_match(text))
    }

    fn redact_text(&self, text: &str) -> Option<String> {
        // Most texts hold no secret: a literal scan, else one pass over the union of the
        // patterns, says so.
        if !self.suspect(text.as_bytes()) {
            return None;
        }
        let hits = self.any.matches(text);
        if !hits.matched_any() {
            return None;
        }
        let mut out = text.to_string();
        let mut changed = false;
        for re in hits.iter().map(|i| &self.patterns[i]) {
            if re.is_match(&out) {
                out = re
                    .replace_all(&out, |c: &regex::Captures<'_>| {
                        let m = &c[0];
                        if m.starts_with("[redacted:") {
                            m.to_string()
                        } else {
                            self.placeholder(m.as_bytes())
                        }
                    })
                    .into_owned();
                changed = true;
            }
        }
        (changed && out != text).then_some(out)
    }

    /// [`Redactor::redact_text`] over bytes that are not UTF-8.
    fn redact_bytes(&self, text: &[u8]) -> Option<Vec<u8>> {
        if !self.suspect(text) {
            return None;
        }
        let hits = self.bytes_any.matches(text);
        if !hits.matched_any() {
            return None;
        }
        let mut out = text.to_vec();
        for re in hits.iter().map(|i| &self.bytes_patterns[i]) {
            out = re
                .replace_all(&out, |c: &regex::bytes::Captures<'_>| {
                    let m = &c[0];
                    if m.starts_with(b"[redacted:") { m.to_vec() } else { self.placeholder(m).into_bytes() }
                })
                .into_owned();
        }
        (out != text).then_some(out)
    }

    /// Text or bytes, whichever `body` is.
    fn redact_any(&self, body: &[u8]) -> Option<Vec<u8>> {
        match std::str::from_utf8(body) {
            Ok(t) => self.redact_text(t).map(String::into_bytes),
            Err(_) => self.redact_bytes(body),
        }
    }

    /// Whether a query parameter's value is redacted by its name.
    fn query_listed(&self, name: &str) -> bool {
        if name.contains('%') {
            let name = percent_decoded(name);
            return self.query.iter().any(|q| q.as_bytes().eq_ignore_ascii_case(&name));
        }
        // Most names are ruled out by their length, without a copy.
        self.query.iter().any(|q| q.len() == name.len() && q.eq_ignore_ascii_case(name))
    }

    /// Whether a `name=value` pair's value is redacted by its name (and not a placeholder yet).
    fn query_secret(&self, pair: &str) -> bool {
        pair.split_once('=').is_some_and(|(name, value)| {
            !value.is_empty() && !value.starts_with("[redacted:") && self.query_listed(name)
        })
    }

    /// Redacts a request target in place: the values of credential query parameters by name,
    /// then, when `patterns` (the literal screen found something), the secret patterns over the
    /// whole target. Returns whether it changed.
    fn target(&self, target: &mut String, patterns: bool) -> bool {
        let mut changed = false;
        let by_name = target.split_once('?').and_then(|(path, query)| {
            // Most targets hold no credential parameter: that is settled without a copy.
            if !query.split('&').any(|pair| self.query_secret(pair)) {
                return None;
            }
            let mut out = String::with_capacity(target.len() + 16);
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, value)) if self.query_secret(pair) => {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(&self.placeholder(&percent_decoded(value)));
                    }
                    _ => out.push_str(pair),
                }
            }
            Some(out)
        });
        if let Some(out) = by_name {
            *target = out;
            changed = true;
        }
        if patterns && let Some(r) = self.redact_text(target) {
            *target = r;
            changed = true;
        }
        changed
    }

    fn redact_value(&self, v: &mut Value, path: &mut Vec<String>) -> bool {
        let mut changed = false;
        match v {
            Value::Map(m) => {
                for (k, x) in m.iter_mut() {
                    path.push(k.clone());
                    let hit = self.paths.iter().any(|p| match p {
                        JsonPath::Exact(parts) => parts == path,
                        JsonPath::Anywhere(name) => name == k,
                    });
                    let done = matches!(x, Value::Null)
                        || matches!(x, Value::String(s) if s.starts_with("[redacted:"));
                    if hit && !done {
                        // A string hashes as its text, so that a secret here and the same
                        // secret in a header get one placeholder; anything else as its JSON.
                        let secret = match &*x {
                            Value::String(s) => s.as_bytes().to_vec(),
                            other => serde_json::to_vec(other).unwrap_or_default(),
                        };
                        *x = Value::String(self.placeholder(&secret));
                        changed = true;
                    } else {
                        changed |= self.redact_value(x, path);
                    }
                    path.pop();
                }
            }
            Value::Array(a) => {
                for x in a {
                    changed |= self.redact_value(x, path);
                }
            }
            Value::String(s) => {
                if let Some(r) = self.redact_text(s) {
                    *s = r;
                    changed = true;
                }
            }
            _ => {}
        }
        changed
    }

    /// Whether a header is redacted by name, whatever its value. The list is lower case; most
    /// names are ruled out by their length and their first and last letters.
    fn listed(&self, name: &str) -> bool {
        let key = name_key(name);
        self.header_keys.iter().zip(&self.headers).any(|(&k, l)| k == key && l.eq_ignore_ascii_case(name))
    }

    /// Whether a header's value is left to the patterns: not listed, or already a placeholder.
    fn scanned(&self, h: &Header) -> bool {
        !self.listed(&h.0) || h.1.as_bytes().starts_with(b"[redacted:")
    }

    /// Redacts headers in place; returns the names changed.
    fn headers(&self, headers: &mut [Header]) -> Vec<String> {
        if headers.is_empty() {
            return Vec::new();
        }
        self.headers_screening(headers, None).0
    }

    /// [`Redactor::headers`], screening `extra` (a request target) in the same literal scan;
    /// also returns whether that screen hit, that is whether `extra` needs the patterns.
    fn headers_screening(&self, headers: &mut [Header], extra: Option<&str>) -> (Vec<String>, bool) {
        // The values left to the patterns are screened together: one literal scan over all of
        // them, each followed by a newline, instead of one per value (a dozen short scans a
        // message, each paying the searcher's set-up). A literal in one value is a literal in
        // them all, so a clean screen clears every value; a hit, even one across two values,
        // sends each to its own scan below. Configured patterns without literals, which the
        // screen cannot stand for (a `^` would anchor differently), always scan each value.
        //
        // Which of the first 64 headers are left to the patterns, worked out once.
        let mut first = 0u64;
        for (i, h) in headers.iter().take(64).enumerate() {
            first |= u64::from(self.scanned(h)) << i;
        }
        let scanned = |i: usize, h: &Header| if i < 64 { first >> i & 1 == 1 } else { self.scanned(h) };
        let each = self.unfiltered.is_some()
            || SCREEN.with(|screen| {
                let mut screen = screen.borrow_mut();
                screen.clear();
                for (_, h) in headers.iter().enumerate().filter(|(i, h)| scanned(*i, h)) {
                    screen.extend_from_slice(h.1.as_bytes());
                    screen.push(b'\n');
                }
                if let Some(x) = extra {
                    screen.extend_from_slice(x.as_bytes());
                }
                let hit = self.suspect(&screen);
                if screen.capacity() > 64 << 10 {
                    *screen = Vec::new();
                }
                hit
            });
        let mut changed = Vec::new();
        for (i, h) in headers.iter_mut().enumerate() {
            if !scanned(i, h) {
                // A name is lowered (allocated) only when it is reported.
                h.1 = Blob(self.placeholder(h.1.as_bytes()).into_bytes());
                changed.push(h.0.as_str().to_ascii_lowercase());
            } else if each
                && let Ok(text) = std::str::from_utf8(h.1.as_bytes())
                && let Some(r) = self.redact_text(text)
            {
                h.1 = Blob(r.into_bytes());
                changed.push(h.0.as_str().to_ascii_lowercase());
            }
        }
        (changed, each)
    }

    /// Redacts a body given its headers: decoded, redacted, and if anything changed stored
    /// decoded with the coding headers adjusted. Returns whether it changed. `marks` (a
    /// streamed response's chunk timing, offsets into `raw`) are moved to the new body: exactly
    /// when the body was stored without codings and redacting it chunk by chunk gives the same
    /// text as redacting it whole, else in proportion to the lengths (order and timing kept).
    fn body(
        &self,
        headers: &mut Vec<Header>,
        raw: &mut Blob,
        marks: Option<&mut Vec<ChunkMark>>,
    ) -> BodyChange {
        if raw.as_bytes().is_empty() {
            return BodyChange::Kept;
        }
        // Without codings the body is its own decoded form: no copy.
        let identity = !body::is_chunked(headers)
            && body::header(headers, "content-encoding").is_none_or(|e| {
                let e = e.trim();
                e.is_empty() || e.eq_ignore_ascii_case("identity")
            });
        let decoded: std::borrow::Cow<'_, [u8]> = if identity {
            std::borrow::Cow::Borrowed(raw.as_bytes())
        } else {
            match body::decoded(headers, raw.as_bytes()) {
                Ok(d) => std::borrow::Cow::Owned(d),
                Err(e) => return self.undecodable(headers, raw, marks, &e),
            }
        };
        // The common case, a body with nothing to redact, is settled on its text without
        // decoding it into values: no secret shape anywhere in it, and no configured JSON key.
        // A JSON escape could hide part of a secret from the text (`\u0040` for `@`, `\/`), so
        // a body with one takes the full path.
        // Literals first, on the bytes: most bodies end here, without even a UTF-8 check (the
        // patterns and JSON paths apply to text, and every one of them needs a literal).
        if !self.suspect(&decoded) {
            return BodyChange::Kept;
        }
        if let Ok(text) = std::str::from_utf8(&decoded)
            && (!self.any.is_match(text)
                && !self.path_keys.iter().any(|k| text.contains(k.as_str()))
                && !text.contains("\\u")
                && !text.contains("\\/"))
        {
            return BodyChange::Kept;
        }
        let ct = body::header(headers, "content-type").unwrap_or("").to_string();
        let (mut v, format) = value::decode(&ct, &decoded);
        let (new, as_text) = match format {
            value::Format::Json => {
                if !self.redact_value(&mut v, &mut Vec::new()) {
                    return BodyChange::Kept;
                }
                (serde_json::to_vec(&v).unwrap_or_default(), false)
            }
            _ => match self.redact_any(&decoded) {
                Some(r) => (r, true),
                None => return BodyChange::Kept,
            },
        };
        if let Some(m) = marks
            && !m.is_empty()
        {
            let exact = (identity && as_text)
                .then(|| std::str::from_utf8(&decoded).ok().and_then(|t| self.marks_by_chunk(t, m, &new)))
                .flatten();
            match exact {
                Some(moved) => *m = moved,
                None => scale_marks(m, raw.len(), new.len()),
            }
        }
        drop(decoded);
        store_decoded(headers, raw, new);
        BodyChange::Redacted
    }

    /// A body [`body::decoded`] refuses. Its raw bytes are scanned as they are (a body that
    /// only claims a coding, a chunked body with a hole); what decodes of it (a compressed body
    /// cut at a size cap or by a lost capture) is scanned too, and stored decoded and redacted
    /// if it held a secret. A body in a coding this build does not decode (`zstd`), or one
    /// that inflates past [`body::MAX_DECODED`], cannot be checked: it is withheld (stored
    /// empty), never written as it came.
    fn undecodable(
        &self,
        headers: &mut Vec<Header>,
        raw: &mut Blob,
        marks: Option<&mut Vec<ChunkMark>>,
        e: &body::BodyError,
    ) -> BodyChange {
        if matches!(e, body::BodyError::Unsupported(_) | body::BodyError::TooLarge) {
            if let Some(m) = marks {
                m.clear();
            }
            store_decoded(headers, raw, Vec::new());
            return BodyChange::Withheld;
        }
        let old_len = raw.len();
        let new = match self.redact_any(raw.as_bytes()) {
            Some(r) => {
                *raw = Blob(r);
                Some(raw.len())
            }
            None => match self.redact_any(&body::decoded_prefix(headers, raw.as_bytes())) {
                Some(r) => {
                    let n = r.len();
                    store_decoded(headers, raw, r);
                    Some(n)
                }
                None => None,
            },
        };
        match (new, marks) {
            (None, _) => BodyChange::Kept,
            (Some(n), m) => {
                if let Some(m) = m {
                    scale_marks(m, old_len, n);
                }
                BodyChange::Redacted
            }
        }
    }

    /// The chunk marks of `text` moved onto its redacted form `whole`, when redacting each
    /// chunk on its own gives exactly `whole` (no secret spans two chunks); `None` otherwise.
    fn marks_by_chunk(&self, text: &str, marks: &[ChunkMark], whole: &[u8]) -> Option<Vec<ChunkMark>> {
        let mut bounds: Vec<usize> = marks.iter().map(|m| m.at as usize).collect();
        if bounds.windows(2).any(|w| w[0] > w[1])
            || bounds.iter().any(|&b| b > text.len() || !text.is_char_boundary(b))
        {
            return None;
        }
        bounds.push(text.len());
        let mut out = String::with_capacity(whole.len());
        let mut moved = Vec::with_capacity(marks.len());
        out.push_str(self.redact_text(&text[..bounds[0]]).as_deref().unwrap_or(&text[..bounds[0]]));
        for (i, m) in marks.iter().enumerate() {
            moved.push(ChunkMark { at: out.len() as u64, offset_ns: m.offset_ns });
            let piece = &text[bounds[i]..bounds[i + 1]];
            out.push_str(self.redact_text(piece).as_deref().unwrap_or(piece));
        }
        (out.as_bytes() == whole).then_some(moved)
    }

    /// Redacts case data in place; returns where it changed something (sorted, each once),
    /// empty when it changed nothing. The caller computes the case id afterwards, once.
    pub fn data(&self, data: &mut CaseData) -> Vec<String> {
        let mut fields = Vec::new();
        match data {
            CaseData::Http(x) => {
                // The target is screened with the header values: one literal scan for both.
                let (changed, screen_hit) =
                    self.headers_screening(&mut x.request.headers, Some(&x.request.target));
                fields.extend(changed.into_iter().map(|h| format!("request header {h}")));
                if self.target(&mut x.request.target, screen_hit) {
                    fields.push("request target".into());
                }
                fields.extend(
                    self.headers(&mut x.request.trailers).into_iter().map(|h| format!("request trailer {h}")),
                );
                self.body(&mut x.request.headers, &mut x.request.body, None)
                    .report("request body", &mut fields);
                for r in x.interim.iter_mut().chain(x.response.as_mut()) {
                    fields.extend(
                        self.headers(&mut r.headers).into_iter().map(|h| format!("response header {h}")),
                    );
                    fields.extend(
                        self.headers(&mut r.trailers).into_iter().map(|h| format!("response trailer {h}")),
                    );
                    self.body(&mut r.headers, &mut r.body, Some(&mut r.chunks))
                        .report("response body", &mut fields);
                }
            }
            CaseData::Message(m) => {
                let mut hs = vec![Header::new("Content-Type", m.content_type.clone())];
                self.body(&mut hs, &mut m.input, None).report("message input", &mut fields);
                if let Some(o) = &mut m.output {
                    let mut hs = vec![Header::new("Content-Type", o.content_type.clone())];
                    self.body(&mut hs, &mut o.data, None).report("message output", &mut fields);
                }
            }
            CaseData::Packet(_) => {}
        }
        fields.sort();
        fields.dedup();
        fields
    }

    /// Redacts a case in place (its id is recomputed from the redacted input) and flags it.
    pub fn case(&self, case: &mut Case) {
        let mut fields = Vec::new();
        case.edit_data(|data| {
            fields = self.data(data);
            !fields.is_empty()
        });
        if !fields.is_empty() {
            case.add_flag(Flag::Redacted { fields });
        }
    }

    /// What in a case still looks like a secret: `(where, what)` for each finding. It looks
    /// wherever redaction does: the request target (patterns, and credential query parameters
    /// by name), every header and trailer value (the listed names by name, all of them by the
    /// patterns), interim and final responses, and bodies decoded (as far as they decode, and
    /// raw); a body in a coding this build cannot decode is reported as unchecked.
    pub fn scan(&self, case: &Case) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let look = |found: &mut Vec<(String, String)>, place: &str, text: &[u8]| {
            let text = String::from_utf8_lossy(text);
            for re in &self.patterns {
                for m in re.find_iter(&text) {
                    let s = m.as_str();
                    if !s.starts_with("[redacted:") {
                        let shown = if s.len() > 12 {
                            format!("{}…", &s[..s.char_indices().nth(8).map_or(s.len(), |(i, _)| i)])
                        } else {
                            s.to_string()
                        };
                        found.push((place.to_string(), shown));
                    }
                }
            }
        };
        let headers = |found: &mut Vec<(String, String)>, prefix: &str, hs: &[Header]| {
            for h in hs {
                if self.listed(&h.0) && !h.1.as_bytes().starts_with(b"[redacted:") {
                    found.push((format!("{prefix} {}", h.0), "a value in a secret header".into()));
                } else {
                    look(found, &format!("{prefix} {}", h.0), h.1.as_bytes());
                }
            }
        };
        let body =
            |found: &mut Vec<(String, String)>, place: &str, hs: &[Header], raw: &[u8]| match body::decoded(
                hs, raw,
            ) {
                Ok(b) => look(found, place, &b),
                Err(e @ (body::BodyError::Unsupported(_) | body::BodyError::TooLarge)) => {
                    found.push((place.to_string(), format!("not checked: {e}")));
                }
                Err(_) => {
                    let before = found.len();
                    look(found, place, raw);
                    if found.len() == before {
                        look(found, place, &body::decoded_prefix(hs, raw));
                    }
                }
            };
        match case.data() {
            CaseData::Http(x) => {
                let r = &x.request;
                look(&mut found, "request target", r.target.as_bytes());
                if let Some((_, query)) = r.target.split_once('?') {
                    for pair in query.split('&').filter(|p| self.query_secret(p)) {
                        let name = pair.split('=').next().unwrap_or_default();
                        found.push((
                            format!("request target parameter {name}"),
                            "a value in a secret parameter".into(),
                        ));
                    }
                }
                headers(&mut found, "request header", &r.headers);
                headers(&mut found, "request trailer", &r.trailers);
                body(&mut found, "request body", &r.headers, r.body.as_bytes());
                for (i, resp) in x.interim.iter().chain(x.response.as_ref()).enumerate() {
                    let what = if i < x.interim.len() { "interim response" } else { "response" };
                    headers(&mut found, &format!("{what} header"), &resp.headers);
                    headers(&mut found, &format!("{what} trailer"), &resp.trailers);
                    body(&mut found, &format!("{what} body"), &resp.headers, resp.body.as_bytes());
                }
            }
            CaseData::Message(m) => {
                look(&mut found, "message input", m.input.as_bytes());
                if let Some(o) = &m.output {
                    look(&mut found, "message output", o.data.as_bytes());
                }
            }
            CaseData::Packet(p) => look(&mut found, "packet", p.data.as_bytes()),
        }
        found
    }
}

/// What redacting a body did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyChange {
    Kept,
    Redacted,
    /// It could not be checked and was stored empty.
    Withheld,
}

impl BodyChange {
    fn report(self, place: &str, fields: &mut Vec<String>) {
        match self {
            BodyChange::Kept => {}
            BodyChange::Redacted => fields.push(place.to_string()),
            BodyChange::Withheld => fields.push(format!("{place} withheld (undecodable)")),
        }
    }
}

/// Stores `new` as a message's body without codings: the coding headers go, the length is
/// set to the new one.
fn store_decoded(headers: &mut Vec<Header>, raw: &mut Blob, new: Vec<u8>) {
    headers.retain(|h| {
        !h.0.eq_ignore_ascii_case("content-encoding") && !h.0.eq_ignore_ascii_case("transfer-encoding")
    });
    for h in headers.iter_mut().filter(|h| h.0.eq_ignore_ascii_case("content-length")) {
        h.1 = Blob(new.len().to_string().into_bytes());
    }
    *raw = Blob(new);
}

/// `%XX` escapes decoded (a malformed one is kept as written); `+` stays `+`.
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Moves chunk marks from a body of `old` bytes onto one of `new` bytes in proportion: order
/// and timing stay, positions are approximate.
fn scale_marks(marks: &mut [ChunkMark], old: usize, new: usize) {
    for m in marks {
        m.at = (u128::from(m.at.min(old as u64)) * new as u128 / (old.max(1) as u128)) as u64;
    }
}

/// Literals every match of `pattern` starts with, when the regex parser can list a few of
/// them (`corp-[0-9]{8}` gives `corp-`); `None` when it cannot or they are too short to
/// filter anything (a leading class, a one-byte or empty prefix, a pattern that does not parse
/// here).
fn required_prefixes(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::parse(pattern).ok()?;
    let mut seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    seq.optimize_for_prefix_by_preference();
    let lits = seq.literals()?;
    // A one-byte prefix (a digit, a letter) is in nearly every text: it would filter nothing.
    if lits.is_empty() || lits.len() > 64 || lits.iter().any(|l| l.as_bytes().len() < 2) {
        return None;
    }
    lits.iter().map(|l| String::from_utf8(l.as_bytes().to_vec()).ok()).collect()
}

/// The redaction key: `$REPLAY_REDACT_KEY` (64 hex digits), else `~/.config/replay/redact.key`,
/// created (mode 0600) with random bytes on first use, so placeholders are stable across runs
/// on this machine and the key is never stored beside a corpus.
pub fn key() -> std::io::Result<[u8; 32]> {
    if let Ok(hexkey) = std::env::var("REPLAY_REDACT_KEY") {
        let mut k = [0u8; 32];
        hex::decode_to_slice(hexkey.trim(), &mut k).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("REPLAY_REDACT_KEY: {e}"))
        })?;
        return Ok(k);
    }
    let dir = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) => std::path::PathBuf::from(d).join("replay"),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".config/replay"),
    };
    let path = dir.join("redact.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut k = [0u8; 32];
        if hex::decode_to_slice(text.trim(), &mut k).is_ok() {
            return Ok(k);
        }
    }
    std::fs::create_dir_all(&dir)?;
    let mut seed = Vec::new();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&format!("{:?}", std::time::SystemTime::now()).into_bytes());
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let mut r = [0u8; 32];
        f.read_exact(&mut r)?;
        seed.extend_from_slice(&r);
    }
    let k = *blake3::hash(&seed).as_bytes();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    f.write_all(hex::encode(k).as_bytes())?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use corpora::{HttpExchange, HttpRequest, HttpResponse, Message};

    use super::*;

    proptest::proptest! {
        /// The one-pass prefilter says exactly what the three separate scans it replaced
        /// said: a literal, or `\u`, or `\/`, wherever they fall (ends of the text too),
        /// with no, one, two or three single-byte literals (a backslash among them too).
        #[test]
        fn the_one_pass_prefilter_matches_the_separate_scans(
            text in proptest::collection::vec(proptest::sample::select(b"@\\u/ax-ksAK#".to_vec()), 0..40),
            singles in proptest::sample::subsequence(b"@#\\".to_vec(), 0..=3),
        ) {
            let mut lits: Vec<String> = singles.iter().map(|&b| (b as char).to_string()).collect();
            lits.push("sk-".into());
            lits.push("AKIA".into());
            let l = Literals::new(&lits).unwrap();
            let want = l.is_match(&text)
                || memchr::memmem::find(&text, b"\\u").is_some()
                || memchr::memmem::find(&text, b"\\/").is_some();
            proptest::prop_assert_eq!(l.is_match_or_escape(&text), want, "{:?} with {:?}", String::from_utf8_lossy(&text), lits);
        }
    }

    const SECRET: &str = "sk-canary0123456789abcdefghijklmnop";

    fn redactor() -> Redactor {
        Redactor::new(
            [7; 32],
            &RedactRules {
                json_paths: vec!["$..password".into(), "$.auth.token".into()],
                ..RedactRules::default()
            },
        )
        .unwrap()
    }

    fn json_request(body: &str) -> Case {
        Case::new(CaseData::Http(HttpExchange {
            request: HttpRequest {
                method: "POST".into(),
                headers: vec![Header::new("Content-Type", "application/json")],
                body: body.as_bytes().into(),
                ..HttpRequest::default()
            },
            ..HttpExchange::default()
        }))
    }

    /// The text pre-check (no secret shape, no configured key: skip the body) must not let a
    /// secret through that JSON escapes hide from the raw text, nor touch a clean body.
    #[test]
    fn the_fast_path_skips_clean_bodies_and_never_escaped_secrets() {
        let r = redactor();
        let clean = r#"{"prompt":"fn main() {\n}","n":3}"#;
        let mut c = json_request(clean);
        r.case(&mut c);
        assert!(c.flags.is_empty());
        let CaseData::Http(x) = c.data() else { panic!() };
        assert_eq!(x.request.body.as_bytes(), clean.as_bytes(), "untouched, byte for byte");
        for hidden in [r#"{"to":"ada\u0040example.com"}"#, r#"{"k":"Bearer abcdefghij\/klmnopqrstuvwxyz"}"#] {
            let mut c = json_request(hidden);
            r.case(&mut c);
            let CaseData::Http(x) = c.data() else { panic!() };
            let text = String::from_utf8_lossy(x.request.body.as_bytes()).to_string();
            assert!(
                text.contains("[redacted:") && !text.contains("example.com") && !text.contains("klmnop"),
                "{text}"
            );
        }
        // A configured key is found even when no pattern matches its value.
        let mut c = json_request(r#"{"auth":{"token":"plain"}}"#);
        r.case(&mut c);
        assert!(!c.flags.is_empty());
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b).unwrap();
        gz.finish().unwrap()
    }

    fn canary_case() -> Case {
        let mut headers: Vec<Header> =
            DEFAULT_HEADERS.iter().map(|h| Header::new(*h, format!("Bearer {SECRET}"))).collect();
        headers.push(Header::new("Content-Type", "application/json"));
        headers.push(Header::new("Content-Encoding", "gzip"));
        let body = format!(
            r#"{{"prompt":"use {SECRET} please","password":"hunter2-{SECRET}","auth":{{"token":"t-{SECRET}"}},"user":"ada@example.com"}}"#
        );
        let piece = format!("key={SECRET};");
        let chunked = format!("{:x}\r\n{piece}\r\n0\r\n\r\n", piece.len());
        Case::new(CaseData::Http(HttpExchange {
            request: HttpRequest {
                method: "POST".into(),
                target: "/v1/chat".into(),
                headers,
                body: gzip(body.as_bytes()).into(),
                ..HttpRequest::default()
            },
            interim: Vec::new(),
            response: Some(HttpResponse {
                headers: vec![
                    Header::new("Set-Cookie", format!("session={SECRET}")),
                    Header::new("Content-Type", "text/plain"),
                    Header::new("Transfer-Encoding", "chunked"),
                ],
                body: chunked.into_bytes().into(),
                ..HttpResponse::default()
            }),
        }))
    }

    /// Where the audit of session 15 found secrets reaching disk: the request target, trailers,
    /// bodies that are not UTF-8, compressed bodies cut short, codings not decoded here.
    fn case_with(request: HttpRequest, response: HttpResponse) -> Case {
        Case::new(CaseData::Http(HttpExchange { request, interim: Vec::new(), response: Some(response) }))
    }

    fn stored(c: &Case) -> Vec<u8> {
        rmp_serde::to_vec_named(c).unwrap()
    }

    fn holds(bytes: &[u8], secret: &str) -> bool {
        bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
    }

    #[test]
    fn targets_and_trailers_are_redacted_and_the_target_stays_a_valid_uri() {
        let r = redactor();
        let google = "AIzaSyA0123456789abcdefghijklmnopqrstu";
        let mut c = case_with(
            HttpRequest {
                method: "GET".into(),
                target: format!("/v1/models?alt=json&%61ccess_token=opaque-session-77&key={google}&page=2"),
                trailers: vec![Header::new("X-Api-Key", "trailer-secret-1"), Header::new("X-Note", SECRET)],
                ..HttpRequest::default()
            },
            HttpResponse {
                status: 200,
                trailers: vec![Header::new("Authorization", "Bearer trailer-secret-2")],
                ..HttpResponse::default()
            },
        );
        r.case(&mut c);
        let bytes = stored(&c);
        for secret in [google, "opaque-session-77", "trailer-secret-1", "trailer-secret-2", SECRET] {
            assert!(!holds(&bytes, secret), "{secret} survived");
        }
        let CaseData::Http(x) = c.data() else { panic!() };
        let t = &x.request.target;
        assert!(
            t.starts_with("/v1/models?alt=json&%61ccess_token=[redacted:") && t.ends_with("&page=2"),
            "{t}"
        );
        t.parse::<http::Uri>().expect("a redacted target is still a URI");
        // The placeholder of a query value is the one of the same secret anywhere else.
        assert!(t.contains(&r.placeholder(google.as_bytes())), "{t}");
        let Some(corpora::Flag::Redacted { fields }) = c.flags.first() else { panic!("{:?}", c.flags) };
        for f in [
            "request target",
            "request trailer x-api-key",
            "request trailer x-note",
            "response trailer authorization",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
        // Redacting again changes nothing: placeholders are left alone.
        let again = c.clone();
        r.case(&mut c);
        assert_eq!(c.data(), again.data());
        assert!(r.scan(&c).is_empty(), "{:?}", r.scan(&c));
    }

    #[test]
    fn bodies_that_are_not_utf8_cut_short_or_in_an_unknown_coding_never_reach_disk_as_they_came() {
        let r = redactor();
        let response = |headers: Vec<Header>, body: Vec<u8>| HttpResponse {
            status: 200,
            headers,
            body: body.into(),
            ..HttpResponse::default()
        };
        let request = || HttpRequest { method: "GET".into(), target: "/".into(), ..HttpRequest::default() };
        // Not UTF-8: a binary part, or text cut inside a character at a size cap.
        let mut binary = b"\xff\xfe--part ".to_vec();
        binary.extend_from_slice(SECRET.as_bytes());
        binary.extend_from_slice(b" \xc3");
        let mut c = case_with(
            request(),
            response(vec![Header::new("Content-Type", "application/octet-stream")], binary),
        );
        r.case(&mut c);
        assert!(!holds(&stored(&c), SECRET));
        let CaseData::Http(x) = c.data() else { panic!() };
        assert!(x.response.as_ref().unwrap().body.as_bytes().starts_with(b"\xff\xfe--part [redacted:"));

        // gzip cut at a cap: what decodes is scanned; with a secret in it, stored decoded.
        let text: String = format!("{{\"key\":\"{SECRET}\",\"filler\":\"") + &"z".repeat(4000) + "\"}";
        let gz = gzip(text.as_bytes());
        let cut = gz[..gz.len() - 8].to_vec();
        assert!(body::decoded(&[Header::new("Content-Encoding", "gzip")], &cut).is_err());
        let mut c = case_with(
            request(),
            response(
                vec![
                    Header::new("Content-Encoding", "gzip"),
                    Header::new("Content-Length", cut.len().to_string()),
                ],
                cut,
            ),
        );
        r.case(&mut c);
        let CaseData::Http(x) = c.data() else { panic!() };
        let resp = x.response.as_ref().unwrap();
        let stored_body = String::from_utf8_lossy(resp.body.as_bytes()).to_string();
        assert!(stored_body.starts_with("{\"key\":\"[redacted:"), "{}", &stored_body[..60]);
        assert!(body::header(&resp.headers, "content-encoding").is_none());
        assert_eq!(body::header(&resp.headers, "content-length"), Some(resp.body.len().to_string().as_str()));
        assert!(!holds(&stored(&c), SECRET));

        // A coding not decoded here cannot be checked: withheld, and said so.
        let mut c = case_with(
            request(),
            response(vec![Header::new("Content-Encoding", "zstd")], b"(\xb5/\xfd opaque".to_vec()),
        );
        r.case(&mut c);
        let CaseData::Http(x) = c.data() else { panic!() };
        assert!(x.response.as_ref().unwrap().body.is_empty());
        let Some(corpora::Flag::Redacted { fields }) = c.flags.first() else { panic!("{:?}", c.flags) };
        assert_eq!(fields, &["response body withheld (undecodable)".to_string()]);

        // A chunked body with a hole (a capture that lost bytes): its raw text is scanned.
        let mut c = case_with(
            request(),
            response(
                vec![Header::new("Transfer-Encoding", "chunked")],
                format!("40\r\nuse {SECRET} here").into_bytes(),
            ),
        );
        r.case(&mut c);
        assert!(!holds(&stored(&c), SECRET));
        // A clean body cut short is kept as it came, byte for byte.
        let clean = gzip(&b"nothing to see ".repeat(500));
        let cut = clean[..clean.len() / 2].to_vec();
        let mut c =
            case_with(request(), response(vec![Header::new("Content-Encoding", "gzip")], cut.clone()));
        r.case(&mut c);
        assert!(c.flags.is_empty());
        let CaseData::Http(x) = c.data() else { panic!() };
        assert_eq!(x.response.as_ref().unwrap().body.as_bytes(), &cut[..]);
    }

    #[test]
    fn the_scan_looks_where_redaction_does() {
        let r = redactor();
        let mut interim = HttpResponse { status: 103, ..HttpResponse::default() };
        interim.headers.push(Header::new("Link", format!("</a>; rel=preload; note={SECRET}")));
        let gz = gzip(format!("{{\"k\":\"{SECRET}\"}}").as_bytes());
        let c = Case::new(CaseData::Http(HttpExchange {
            request: HttpRequest {
                method: "GET".into(),
                target: "/x?token=plain-opaque".into(),
                headers: vec![Header::new("X-Custom", SECRET)],
                trailers: vec![Header::new("Cookie", "a=b")],
                ..HttpRequest::default()
            },
            interim: vec![interim],
            response: Some(HttpResponse {
                status: 200,
                headers: vec![Header::new("Content-Encoding", "gzip")],
                body: gz[..gz.len() - 6].to_vec().into(),
                ..HttpResponse::default()
            }),
        }));
        let found: Vec<String> = r.scan(&c).into_iter().map(|(place, _)| place).collect();
        for place in [
            "request target parameter token",
            "request header X-Custom",
            "request trailer Cookie",
            "interim response header Link",
            "response body",
        ] {
            assert!(found.iter().any(|f| f == place), "{place} not in {found:?}");
        }
        let zstd = case_with(
            HttpRequest::default(),
            HttpResponse {
                headers: vec![Header::new("Content-Encoding", "zstd")],
                body: b"x".to_vec().into(),
                ..HttpResponse::default()
            },
        );
        assert_eq!(
            r.scan(&zstd),
            vec![(
                "response body".to_string(),
                "not checked: content encoding \"zstd\" is not supported".to_string()
            )]
        );
    }

    #[test]
    fn the_canary_is_gone_from_every_header_and_body_and_placeholders_are_stable() {
        let r = redactor();
        let mut c = canary_case();
        let before = c.id();
        r.case(&mut c);
        let bytes = rmp_serde::to_vec_named(&c).unwrap();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret survived");
        assert!(!String::from_utf8_lossy(&bytes).contains("hunter2"));
        assert!(!String::from_utf8_lossy(&bytes).contains("ada@example.com"));
        assert_ne!(c.id(), before, "the id follows the redacted input");
        let Some(Flag::Redacted { fields }) = c.flags.last() else { panic!("{:?}", c.flags) };
        assert!(
            fields.contains(&"request header authorization".to_string())
                && fields.contains(&"request body".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"response body".to_string())
                && fields.contains(&"response header set-cookie".to_string())
        );
        // The redacted body is stored decoded, and still JSON.
        let CaseData::Http(x) = c.data() else { unreachable!() };
        assert!(body::header(&x.request.headers, "content-encoding").is_none());
        let v: serde_json::Value = serde_json::from_slice(x.request.body.as_bytes()).unwrap();
        assert!(v["password"].as_str().unwrap().starts_with("[redacted:"));
        // Equal secrets, equal placeholders; a different key, a different one.
        assert_eq!(r.placeholder(b"x"), redactor().placeholder(b"x"));
        assert_ne!(
            r.placeholder(b"x"),
            Redactor::new([8; 32], &RedactRules::default()).unwrap().placeholder(b"x")
        );
        // Redacting again changes nothing, and the scan finds nothing left.
        let again = c.clone();
        r.case(&mut c);
        assert_eq!(c.data(), again.data());
        assert!(r.scan(&c).is_empty(), "{:?}", r.scan(&c));
        assert!(!r.scan(&canary_case()).is_empty());
    }

    #[test]
    fn plain_cases_are_untouched_and_bad_rules_are_named() {
        let r = redactor();
        let mut m = Case::new(CaseData::Message(Message {
            content_type: "application/json".into(),
            input: br#"{"a":1}"#.to_vec().into(),
            output: None,
        }));
        let before = m.clone();
        r.case(&mut m);
        assert_eq!(m, before);
        let e = Redactor::new([0; 32], &RedactRules { patterns: vec!["(".into()], ..RedactRules::default() })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("redaction pattern \"(\""), "{e}");
        let e = Redactor::new(
            [0; 32],
            &RedactRules { json_paths: vec!["password".into()], ..RedactRules::default() },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("expected $.a.b or $..name"), "{e}");
    }

    /// `PROPTEST_CASES` when set (a long run), else `n`.
    fn cases(n: u32) -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
    }

    fn with_patterns(patterns: &[&str]) -> Redactor {
        Redactor::new(
            [7; 32],
            &RedactRules {
                patterns: patterns.iter().map(|p| p.to_string()).collect(),
                ..RedactRules::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn configured_patterns_get_literal_prefilters_when_they_have_prefixes() {
        assert_eq!(required_prefixes("corp-[0-9]{4}"), Some(vec!["corp-".to_string()]));
        assert_eq!(required_prefixes("[0-9]{3}-[0-9]{4}"), None, "a class of single bytes filters nothing");
        assert_eq!(required_prefixes("a*b"), None, "an empty prefix filters nothing");
        let r = with_patterns(&["corp-[0-9]{4}", "[0-9]{3}-[0-9]{4}"]);
        assert!(r.unfiltered.is_some(), "the class-led pattern always runs");
        // Both still redact: the prefixed one through its literal, the other through the set.
        for (text, gone) in [("id corp-1234 here", "corp-1234"), ("call 555-0100 now", "555-0100")] {
            let out = r.redact_text(text).expect("redacted");
            assert!(!out.contains(gone) && out.contains("[redacted:"), "{out}");
        }
        assert_eq!(r.redact_text("nothing to see, corp- alone, 55-01"), None);
    }

    /// What [`Redactor::headers`] did before it screened the values together: each header on
    /// its own, by name, else by its text.
    fn headers_one_by_one(r: &Redactor, headers: &mut [Header]) -> Vec<String> {
        let mut changed = Vec::new();
        for h in headers.iter_mut() {
            let listed = r.headers.iter().any(|n| n.eq_ignore_ascii_case(&h.0));
            if listed && !h.1.as_bytes().starts_with(b"[redacted:") {
                h.1 = Blob(r.placeholder(h.1.as_bytes()).into_bytes());
                changed.push(h.0.as_str().to_ascii_lowercase());
            } else if let Ok(text) = std::str::from_utf8(h.1.as_bytes())
                && let Some(out) = r.redact_text(text)
            {
                h.1 = Blob(out.into_bytes());
                changed.push(h.0.as_str().to_ascii_lowercase());
            }
        }
        changed
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases(2000)))]
        /// Screening all the values of a message at once redacts exactly what scanning each
        /// value did: wherever the secrets fall (one value, split over two, none), whatever the
        /// names (listed in any case, long, or not) and however many (past the 64 whose names
        /// are looked up once), with and without a configured pattern that
        /// has no literal (which turns the screen off).
        #[test]
        fn screening_header_values_together_redacts_what_one_by_one_did(
            list in proptest::collection::vec((
                proptest::sample::select(vec![
                    "Host", "AUTHORIZATION", "x-Api-Key", "Cookie", "X-Trace", "User-Agent",
                    "Accept", "set-cookie", "X-Long-Header-Name-That-Is-Not-Listed-Anywhere",
                ]),
                proptest::collection::vec(proptest::sample::select(vec![
                    "sk-", "ABCDEFGHIJKLMNOPQRSTUVWX", "ada", "@", "example.com", "Bearer ",
                    "0123456789abcdef0123", "\\u0040", "\\", "[redacted:", "555-01", "é", " ", "AKIA",
                ]), 0..6),
            ), 0..70),
            unfiltered in proptest::bool::ANY,
        ) {
            static PLAIN: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(redactor);
            static RAW: std::sync::LazyLock<Redactor> =
                std::sync::LazyLock::new(|| with_patterns(&["[0-9]{3}-[0-9]{2}"]));
            let r = if unfiltered { &*RAW } else { &*PLAIN };
            proptest::prop_assert_eq!(r.unfiltered.is_some(), unfiltered);
            let headers: Vec<Header> =
                list.iter().map(|(name, parts)| Header::new(*name, parts.concat())).collect();
            let (mut screened, mut each) = (headers.clone(), headers);
            let a = r.headers(&mut screened);
            let b = headers_one_by_one(r, &mut each);
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(screened, each);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases(2000)))]
        /// The prefilter never hides a match: any text one of the patterns (defaults and
        /// configured) matches is suspect, and redacting it leaves none of them matching.
        #[test]
        fn the_literal_prefilter_never_hides_a_secret(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "sk-", "sk-ant-", "ghp_", "gho_", "ghr_", "gh", "AKIA", "akia", "xoxb-", "xox", "AIza",
                "Bearer ", "BEARER\t", "bearer", "@", "a.b", ".com", ".io", "X", "0", "7", "-", "_", " ",
                "abcdefghij", "ABCDEFGHIJKLMNOP", "0123456789", "QRSTUVWXYZ0123", "é", "\"", "corp-", "555",
            ]), 0..24)
        ) {
            static R: std::sync::LazyLock<Redactor> =
                std::sync::LazyLock::new(|| with_patterns(&["corp-[0-9]{2}", "[0-9]{3}-[0-9]{2}"]));
            let r = &*R;
            let text: String = parts.concat();
            let matched = r.patterns.iter().any(|re| re.is_match(&text));
            if matched {
                proptest::prop_assert!(r.suspect(text.as_bytes()), "missed: {text:?}");
                let out = r.redact_text(&text).unwrap_or(text.clone());
                proptest::prop_assert!(
                    r.patterns.iter().all(|re| re.find_iter(&out).all(|m| m.as_str().starts_with("[redacted:"))),
                    "left a secret in {out:?}"
                );
            }
        }
    }

    fn sse_case(body: &str, at: &[usize], chunked: bool) -> Case {
        let mut headers = vec![Header::new("Content-Type", "text/event-stream")];
        let raw = if chunked {
            headers.push(Header::new("Transfer-Encoding", "chunked"));
            format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
        } else {
            body.to_string()
        };
        Case::new(CaseData::Http(HttpExchange {
            request: HttpRequest {
                method: "POST".into(),
                target: "/v1/chat".into(),
                ..HttpRequest::default()
            },
            interim: Vec::new(),
            response: Some(HttpResponse {
                status: 200,
                headers,
                body: raw.into_bytes().into(),
                chunks: at
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| ChunkMark { at: a as u64, offset_ns: 1_000_000 * (i as u64 + 1) })
                    .collect(),
                ..HttpResponse::default()
            }),
        }))
    }

    fn response(case: &Case) -> &HttpResponse {
        match case.data() {
            CaseData::Http(x) => x.response.as_ref().unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_redacted_stream_keeps_its_chunk_timing() {
        let events =
            ["data: {\"t\":\"Hello\"}\n\n", "data: {\"t\":\"mail ada@example.com\"}\n\n", "data: [DONE]\n\n"];
        let body = events.concat();
        let at = [0, events[0].len(), events[0].len() + events[1].len()];
        let mut case = sse_case(&body, &at, false);
        redactor().case(&mut case);
        let r = response(&case);
        let text = std::str::from_utf8(r.body.as_bytes()).unwrap();
        assert!(!text.contains("ada@example.com") && text.contains("[redacted:"), "{text}");
        // Exact: each mark still starts its event, with its time.
        assert_eq!(r.chunks.len(), 3);
        for (i, m) in r.chunks.iter().enumerate() {
            assert_eq!(m.offset_ns, 1_000_000 * (i as u64 + 1));
        }
        assert_eq!(r.chunks[0].at, 0);
        assert!(text[r.chunks[1].at as usize..].starts_with("data: {\"t\":\"mail [redacted:"), "{text}");
        assert!(text[r.chunks[2].at as usize..].starts_with("data: [DONE]"), "{text}");

        // A secret cut in two by a chunk boundary is still redacted whole; the marks then move in
        // proportion, in order and inside the body.
        let split = body.find("example").unwrap();
        let mut case = sse_case(&body, &[0, split, at[2]], false);
        redactor().case(&mut case);
        let r = response(&case);
        let text = std::str::from_utf8(r.body.as_bytes()).unwrap();
        assert!(!text.contains("ada@example.com") && !text.contains("example.com"), "{text}");
        let ats: Vec<u64> = r.chunks.iter().map(|m| m.at).collect();
        assert!(
            ats.windows(2).all(|w| w[0] <= w[1]) && ats.iter().all(|&a| a as usize <= text.len()),
            "{ats:?}"
        );
        assert_eq!(
            r.chunks.iter().map(|m| m.offset_ns).collect::<Vec<_>>(),
            vec![1_000_000, 2_000_000, 3_000_000]
        );

        // A chunked body (as a capture stores it) is stored decoded: marks in proportion.
        let mut case = sse_case(&body, &[0, 30, 60], true);
        redactor().case(&mut case);
        let r = response(&case);
        assert!(!String::from_utf8_lossy(r.body.as_bytes()).contains("ada@"));
        assert_eq!(r.chunks.len(), 3);
        assert!(r.chunks.iter().all(|m| m.at as usize <= r.body.len()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases(500)))]
        /// Moving chunk marks: every mark kept with its time, in order, inside the new body, and
        /// no secret left whatever the boundaries cut.
        #[test]
        fn redacted_streams_keep_ordered_marks_inside_the_body(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "data: {\"t\":\"", "\"}\n\n", "ada@example.com", "sk-abcdefghijklmnopqrstuvwx", " tok ", "é", "\n",
            ]), 1..16),
            cuts in proptest::collection::vec(0usize..400, 0..6),
            chunked in proptest::bool::ANY,
        ) {
            static R: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(redactor);
            let body = parts.concat();
            let mut at: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).filter(|&c| body.is_char_boundary(c)).collect();
            at.push(0);
            at.sort_unstable();
            at.dedup();
            let mut case = sse_case(&body, &at, chunked);
            R.case(&mut case);
            let r = response(&case);
            let n = r.body.len() as u64;
            proptest::prop_assert_eq!(r.chunks.len(), at.len());
            proptest::prop_assert!(r.chunks.windows(2).all(|w| w[0].at <= w[1].at && w[0].offset_ns < w[1].offset_ns));
            proptest::prop_assert!(r.chunks.iter().all(|m| m.at <= n), "{:?} past {}", r.chunks, n);
            let text = String::from_utf8_lossy(r.body.as_bytes());
            proptest::prop_assert!(!text.contains("ada@example.com") && !text.contains("sk-abcdefghijklmnopqrstuvwx"), "{}", text);
        }
    }
}
