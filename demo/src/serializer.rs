//! The copilot request serializer, old (`v1`) and new (`v2`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How much of the prefix is kept: its last `PREFIX_LIMIT` characters (v1) or bytes (v2).
pub const PREFIX_LIMIT: usize = 1024;
/// How much of the suffix is kept: its first `SUFFIX_LIMIT` characters, in both versions.
pub const SUFFIX_LIMIT: usize = 256;

/// Which serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The old serializer: adds a `metadata` object, truncates by characters.
    V1,
    /// The new serializer: the standard request shape, truncates by bytes (the bug).
    V2,
}

/// The editor's state at the moment a completion is asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditorContext {
    /// The file's path in the workspace.
    pub file: String,
    /// The language id (`rust`, `python`, ...).
    pub language: String,
    /// Where the cursor is.
    pub cursor: Cursor,
    /// The text before the cursor.
    pub prefix: String,
    /// The text after the cursor.
    #[serde(default)]
    pub suffix: String,
    /// Problems the editor reports in the file.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    /// The other open tabs.
    #[serde(default)]
    pub open_tabs: Vec<String>,
}

/// A cursor position.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// Line, from 0.
    pub line: u32,
    /// Column, from 0.
    pub column: u32,
}

/// One diagnostic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostic {
    /// The line it is on.
    pub line: u32,
    /// `error`, `warning`, ...
    pub severity: String,
    /// What it says.
    pub message: String,
}

/// Parses an editor context and serializes it into a request.
pub fn serialize_json(input: &[u8], version: Version) -> Result<Vec<u8>, String> {
    let ctx: EditorContext =
        serde_json::from_slice(input).map_err(|e| format!("invalid editor context: {e}"))?;
    let request = serialize(&ctx, version);
    Ok(serde_json::to_vec(&request).expect("a JSON value serialises"))
}

/// The chat-completions request for an editor context.
pub fn serialize(ctx: &EditorContext, version: Version) -> Value {
    let prefix = match version {
        Version::V1 => tail_chars(&ctx.prefix, PREFIX_LIMIT),
        Version::V2 => tail_bytes(&ctx.prefix, PREFIX_LIMIT),
    };
    let suffix: String = ctx.suffix.chars().take(SUFFIX_LIMIT).collect();
    let mut user = format!("<file path=\"{}\">\n{prefix}<cursor/>{suffix}\n</file>", ctx.file);
    if !ctx.diagnostics.is_empty() {
        user.push_str("\nDiagnostics:");
        for d in &ctx.diagnostics {
            user.push_str(&format!("\n- line {}: {}: {}", d.line + 1, d.severity, d.message));
        }
    }
    let mut request = Map::new();
    request.insert("model".into(), json!("copilot-codex-2"));
    request.insert(
        "messages".into(),
        json!([
            {
                "role": "system",
                "content": format!(
                    "You are a code completion engine. Complete the {} code at <cursor/>. \
                     Answer with code only.",
                    ctx.language
                ),
            },
            { "role": "user", "content": user },
        ]),
    );
    request.insert("max_tokens".into(), json!(256));
    request.insert("temperature".into(), json!(0.2));
    request.insert("stream".into(), json!(true));
    request.insert("stop".into(), json!(["\n\n\n", "</file>"]));
    if version == Version::V1 {
        request.insert(
            "metadata".into(),
            json!({
                "editor": "replay-demo",
                "serializer": "v1",
                "file": ctx.file,
                "cursor": [ctx.cursor.line, ctx.cursor.column],
                "open_tabs": ctx.open_tabs.len(),
            }),
        );
    }
    Value::Object(request)
}

/// The last `limit` characters of `s`.
fn tail_chars(s: &str, limit: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(limit)).collect()
}

/// The last `limit` bytes of `s`, cut wherever that falls: a multi-byte character cut in half
/// becomes U+FFFD. This is the deliberate bug of `v2`.
fn tail_bytes(s: &str, limit: usize) -> String {
    let b = s.as_bytes();
    String::from_utf8_lossy(&b[b.len().saturating_sub(limit)..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(prefix: &str) -> EditorContext {
        EditorContext {
            file: "a.rs".into(),
            language: "rust".into(),
            cursor: Cursor { line: 1, column: 2 },
            prefix: prefix.into(),
            suffix: "}".into(),
            diagnostics: Vec::new(),
            open_tabs: vec!["a.rs".into()],
        }
    }

    fn user(v: &Value) -> &str {
        v["messages"][1]["content"].as_str().unwrap()
    }

    #[test]
    fn versions_agree_on_ascii_and_differ_in_metadata() {
        let long = "x".repeat(3000);
        for p in ["fn main() {", long.as_str()] {
            let (a, b) = (serialize(&ctx(p), Version::V1), serialize(&ctx(p), Version::V2));
            assert_eq!(user(&a), user(&b));
            assert!(a.get("metadata").is_some());
            assert!(b.get("metadata").is_none());
        }
        assert_eq!(user(&serialize(&ctx(&long), Version::V2)).matches('x').count(), PREFIX_LIMIT);
    }

    #[test]
    fn v2_cuts_multibyte_text_by_bytes() {
        // 600 characters of 2 bytes: under the character limit, over the byte limit.
        let p = "ж".repeat(600);
        let (a, b) = (serialize(&ctx(&p), Version::V1), serialize(&ctx(&p), Version::V2));
        assert!(user(&a).contains(&p));
        assert!(!user(&b).contains(&p));
        assert_eq!(user(&b).matches('ж').count(), PREFIX_LIMIT / 2);
        // An odd cut splits a character.
        let p = format!("a{}", "ж".repeat(600));
        assert!(!user(&serialize(&ctx(&p), Version::V2)).contains('\u{FFFD}'));
        let p = format!("{}a", "ж".repeat(600));
        assert!(user(&serialize(&ctx(&p), Version::V2)).contains('\u{FFFD}'));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = serialize_json(b"{\"file\":1}", Version::V1).unwrap_err();
        assert!(e.contains("invalid editor context"), "{e}");
    }
}
