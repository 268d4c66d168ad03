//! `demo-cli`: the demo as a program.
//!
//! - `demo-cli` or `demo-cli once`: the command ABI: the case input on stdin, the output on
//!   stdout, `REPLAY_CASE_KIND` and `REPLAY_CONTENT_TYPE` in the environment; exit 1 with the
//!   error on stderr when the case is refused. Native, or as a WASI command module.
//! - `demo-cli stream`: the stream ABI: request frames on stdin, response frames on stdout,
//!   until end of input.
//! - `demo-cli serve [--port P] [--delay-ms D]`: the demo as an HTTP/1.1 deployment on
//!   127.0.0.1 (keep-alive, a thread per connection; each answer held back D ms, to stand in
//!   for a model's service time in proxy benchmarks): `POST /replay/message` and `POST /replay/packet` take a case
//!   input with its media type, any other `POST` takes an editor context as its body. The
//!   switches come from the environment, as everywhere. Prints `listening on ADDR` when ready.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
        "serve" => serve(cfg),
        other => Err(format!("unknown mode {other:?}; expected once, stream or serve")),
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

fn serve(cfg: Config) -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let usage = || "usage: demo-cli serve [--port P] [--delay-ms D]".to_string();
    let (mut port, mut delay) = (0u16, 0u64);
    for pair in args.chunks(2) {
        match pair {
            [flag, p] if flag == "--port" => {
                port = p.parse().map_err(|_| format!("--port {p:?} is not a port number"))?
            }
            [flag, d] if flag == "--delay-ms" => {
                delay = d.parse().map_err(|_| format!("--delay-ms {d:?} is not a number"))?
            }
            _ => return Err(usage()),
        }
    }
    let delay = std::time::Duration::from_millis(delay);
    let listener =
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("binding 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = connection(&cfg, conn, delay);
        });
    }
    Ok(())
}

/// Serves one keep-alive connection until the peer closes it.
fn connection(cfg: &Config, conn: TcpStream, delay: std::time::Duration) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = io::BufWriter::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let (mut len, mut content_type, mut close) = (0usize, String::new(), false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "content-type" => content_type = v.to_string(),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len.min(64 << 20)];
        reader.read_exact(&mut body)?;
        let kind = match path.as_str() {
            "/replay/packet" => Kind::Packet,
            _ => Kind::Message,
        };
        let (status, ct, out) = if method != "POST" {
            ("405 Method Not Allowed", "text/plain".to_string(), b"POST a case input\n".to_vec())
        } else {
            match abi::handle(cfg, Input { kind, content_type: &content_type, data: &body }) {
                Ok(o) => ("200 OK", o.content_type, o.data),
                Err(e) => ("422 Unprocessable Content", "text/plain".to_string(), e.into_bytes()),
            }
        };
        write!(writer, "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n", out.len())?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        writer.write_all(&out)?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}
