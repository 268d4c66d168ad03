//! JSON Lines export and import: one case per line, the shape documented in
//! `docs/corpus-format.md`, so that `jq` and other tools can read and write corpora.

use std::io::{self, BufRead, Write};
use std::path::Path;

use crate::case::{Case, Source};
use crate::error::Problem;

/// Writes one case as one JSON line.
pub fn write_case<W: Write>(out: &mut W, case: &Case) -> io::Result<()> {
    serde_json::to_writer(&mut *out, case).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Parses one JSONL line into a case. The id is recomputed from the input (an edited line gets
/// the id of what it now says); a line without a source gets `import` with its file and line.
pub fn parse_line(line: &str, path: &Path, line_no: u64) -> Result<Case, Problem> {
    let mut case: Case = serde_json::from_str(line).map_err(|e| Problem::BadLine {
        path: path.to_path_buf(),
        line: line_no,
        column: e.column(),
        message: e.to_string(),
    })?;
    case.refresh_id();
    if case.source == Source::Unknown {
        case.source = Source::Import { path: path.display().to_string(), line: line_no };
    }
    Ok(case)
}

/// Reads JSONL from `input`, calling `each` with every case or problem in order. Blank lines
/// are skipped. Stops early (returning the error) only if reading or `each` fails.
pub fn read_cases<R: BufRead, E: From<io::Error>>(
    input: R,
    path: &Path,
    mut each: impl FnMut(Result<Case, Problem>) -> Result<(), E>,
) -> Result<(), E> {
    let mut line_no = 0u64;
    for line in input.split(b'\n') {
        line_no += 1;
        let line = line?;
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t,
            Err(e) => {
                each(Err(Problem::BadLine {
                    path: path.to_path_buf(),
                    line: line_no,
                    column: e.valid_up_to() + 1,
                    message: "not valid UTF-8".into(),
                }))?;
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        each(parse_line(text, path, line_no))?;
    }
    Ok(())
}
