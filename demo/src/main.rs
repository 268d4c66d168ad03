//! `demo-cli`: the demo as a program.
//!
//! - `demo-cli` or `demo-cli once`: the command ABI: the case input on stdin, the output on
//!   stdout, `REPLAY_CASE_KIND` and `REPLAY_CONTENT_TYPE` in the environment; exit 1 with the
//!   error on stderr when the case is refused. Native, or as a WASI command module.
//! - `demo-cli stream`: the stream ABI: request frames on stdin, response frames on stdout,
//!   until end of input.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use demo::abi::{self, Config, Input, Kind};

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "once".into());
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-cli: {e}");
            return ExitCode::from(2);
        }
    };
    let r = match mode.as_str() {
        "once" => once(&cfg),
        "stream" => stream(&cfg),
        other => Err(format!("unknown mode {other:?}; expected once or stream")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-cli: {e}");
            ExitCode::from(1)
        }
    }
}

fn once(cfg: &Config) -> Result<(), String> {
    let kind = std::env::var("REPLAY_CASE_KIND").unwrap_or_else(|_| "message".into());
    let kind = Kind::from_name(&kind).ok_or_else(|| format!("REPLAY_CASE_KIND: unknown kind {kind:?}"))?;
    let content_type = std::env::var("REPLAY_CONTENT_TYPE").unwrap_or_default();
    let mut data = Vec::new();
    io::stdin().read_to_end(&mut data).map_err(|e| format!("reading stdin: {e}"))?;
    let out = abi::handle(cfg, Input { kind, content_type: &content_type, data: &data })?;
    io::stdout().write_all(&out.data).map_err(|e| format!("writing stdout: {e}"))
}

fn stream(cfg: &Config) -> Result<(), String> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    let (mut frame, mut out) = (Vec::new(), Vec::new());
    loop {
        let mut len = [0u8; 4];
        match stdin.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("reading a frame: {e}")),
        }
        let n = u32::from_le_bytes(len) as usize;
        frame.clear();
        frame.extend_from_slice(&len);
        frame.resize(4 + n, 0);
        stdin.read_exact(&mut frame[4..]).map_err(|e| format!("reading a frame of {n} bytes: {e}"))?;
        let result = abi::decode_request(&frame).and_then(|input| abi::handle(cfg, input));
        abi::encode_response(&result, &mut out);
        stdout.write_all(&out).and_then(|()| stdout.flush()).map_err(|e| format!("writing a frame: {e}"))?;
    }
}
