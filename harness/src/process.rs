//! The `process` target: a command line, spawned per case or kept alive speaking frames.
//!
//! `per-case`: the case input on stdin, `REPLAY_CASE_KIND` and `REPLAY_CONTENT_TYPE` in the
//! environment, stdout is the output; exit status 0 is an answer, anything else a crash.
//! `stream`: long-lived processes (one per worker) reading request frames on stdin and
//! writing response frames on stdout (`docs/target-abi.md`); a process that dies, hangs,
//! floods or writes garbage is killed, the case gets the observation, and the next case
//! starts a new process. Every call is bounded by `timeout_ms` and `max_output`; in stream
//! mode the first case a new process answers also gets `startup_timeout_ms`, so that a process
//! that takes a while to start (a JVM, a Python with heavy imports, a restart under load) does
//! not turn one case into a timeout, a difference that is not the target's.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use corpora::Case;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::{ProcessMode, TargetDef};
use crate::input::{Input, decode_response_frame};
use crate::observation::Outcome;
use crate::target::Target;

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Stream mode: what a new process may add to its first case's time bound.
const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_OUTPUT: usize = 16 << 20;
const STDERR_TAIL: usize = 16 << 10;

/// The runtime that drives child processes' pipes and timers. Engine threads block on it.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replay-io")
            .enable_all()
            .build()
            .expect("start the I/O runtime")
    })
}

/// A subprocess target.
pub struct ProcessTarget {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    timeout: Duration,
    /// Stream mode: added to the time bound of a new process's first case.
    startup: Duration,
    max_output: usize,
    output_content_type: String,
    stream: bool,
    pool: Mutex<Vec<StreamProc>>,
}

impl ProcessTarget {
    /// Prepares the target; the program must exist (relative paths with a `/` resolve against
    /// `base`, bare names through `PATH`).
    pub fn new(def: &TargetDef, base: &Path) -> Result<ProcessTarget, String> {
        let command = def.command.as_deref().unwrap_or_default();
        let (program, rest) = command.split_first().ok_or("`command` is empty")?;
        let program = if program.contains('/') { base.join(program) } else { PathBuf::from(program) };
        if program.components().count() > 1 && !program.is_file() {
            return Err(format!("program {} does not exist (is there a `build` step?)", program.display()));
        }
        let mut args: Vec<String> = rest.to_vec();
        args.extend(def.args.iter().cloned());
        let stream = def.mode == Some(ProcessMode::Stream);
        if def.startup_timeout_ms.is_some() && !stream {
            return Err("`startup_timeout_ms` applies to `mode = \"stream\"` only (per-case processes \
                        start within `timeout_ms`)"
                .into());
        }
        Ok(ProcessTarget {
            program,
            args,
            env: def.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cwd: def.cwd.as_deref().map_or_else(|| base.to_path_buf(), |c| base.join(c)),
            timeout: Duration::from_millis(def.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            startup: Duration::from_millis(def.startup_timeout_ms.unwrap_or(DEFAULT_STARTUP_TIMEOUT_MS)),
            max_output: def.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
            output_content_type: def
                .output_content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            stream,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// The command line, for display.
    pub fn describe(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether this is stream mode.
    pub fn stream(&self) -> bool {
        self.stream
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn per_case(&self, input: &Input) -> Outcome {
        let mut cmd = self.command();
        cmd.env("REPLAY_CASE_KIND", input.kind.name()).env("REPLAY_CONTENT_TYPE", &input.content_type);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::error(format!("cannot start {}: {e}", self.program.display())),
        };
        let (mut stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let data = input.data.clone();
        // Written on its own task: a child that never reads its input must not block the rest.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
        let max = self.max_output;
        // stderr on its own task too: a flooding child is killed as soon as stdout passes the cap.
        let err_task = tokio::spawn(read_tail(stderr));
        let stderr_of = |t: tokio::task::JoinHandle<Vec<u8>>| async move {
            tokio::time::timeout(Duration::from_millis(500), t)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        match tokio::time::timeout(self.timeout, read_capped(stdout, max)).await {
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Outcome::Timeout { after_ms: self.timeout.as_millis() as u64 }
            }
            Ok(Err(e)) => {
                let _ = child.start_kill();
                Outcome::error(format!("reading stdout: {e}"))
            }
            Ok(Ok((_, true))) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Outcome::Exhausted {
                    resource: "output".into(),
                    message: format!("wrote more than max_output = {max} bytes; killed"),
                }
            }
            Ok(Ok((out, false))) => {
                let status = match tokio::time::timeout(self.timeout, child.wait()).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Outcome::error(format!("waiting for the process: {e}")),
                    Err(_) => {
                        let _ = child.start_kill();
                        return Outcome::Timeout { after_ms: self.timeout.as_millis() as u64 };
                    }
                };
                if status.success() {
                    Outcome::bytes(self.output_content_type.clone(), out)
                } else {
                    crash(status, stderr_of(err_task).await)
                }
            }
        }
    }

    async fn streamed(&self, input: &Input) -> Outcome {
        let taken = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut p = match taken {
            Some(p) => p,
            None => match self.spawn_stream() {
                Ok(p) => p,
                Err(e) => return Outcome::error(e),
            },
        };
        let mut frame = Vec::new();
        input.encode_frame(&mut frame);
        let bound = if p.answered { self.timeout } else { self.timeout + self.startup };
        match tokio::time::timeout(bound, p.call(&frame, self.max_output)).await {
            Ok(Ok(outcome)) => {
                p.answered = true;
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                outcome
            }
            Ok(Err(broken)) => p.kill(broken).await,
            Err(_) => {
                let _ = p.kill(Outcome::Timeout { after_ms: 0 }).await;
                Outcome::Timeout { after_ms: bound.as_millis() as u64 }
            }
        }
    }

    fn spawn_stream(&self) -> Result<StreamProc, String> {
        let mut child =
            self.command().spawn().map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::with_capacity(64 << 10, child.stdout.take().expect("piped"));
        let mut stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t = tail.clone();
        // Drained all the time so a chatty process never blocks on a full stderr pipe.
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                t.extend(&buf[..n]);
                while t.len() > STDERR_TAIL {
                    t.pop_front();
                }
            }
        });
        Ok(StreamProc { child, stdin, stdout, tail, answered: false })
    }
}

/// One long-lived stream-mode process.
struct StreamProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    tail: Arc<Mutex<VecDeque<u8>>>,
    /// It has answered a case: start-up is behind it.
    answered: bool,
}

impl StreamProc {
    /// One request/response. `Err` means the process is no longer usable; the outcome says why.
    async fn call(&mut self, frame: &[u8], max_output: usize) -> Result<Outcome, Outcome> {
        let died = |what: &str| Outcome::error(format!("stream process {what}"));
        if self.stdin.write_all(frame).await.is_err() || self.stdin.flush().await.is_err() {
            return Err(died("closed its input"));
        }
        let mut len = [0u8; 4];
        if self.stdout.read_exact(&mut len).await.is_err() {
            return Err(died("ended without answering"));
        }
        let n = u32::from_le_bytes(len) as usize;
        if n < 3 {
            return Err(Outcome::error(format!(
                "garbage frame from the stream process: length {n} is under 3"
            )));
        }
        if n > max_output + 3 + u16::MAX as usize {
            return Err(Outcome::Exhausted {
                resource: "output".into(),
                message: format!(
                    "stream process announced a {n}-byte frame, more than max_output = {max_output}"
                ),
            });
        }
        let mut buf = vec![0u8; 4 + n];
        buf[..4].copy_from_slice(&len);
        if self.stdout.read_exact(&mut buf[4..]).await.is_err() {
            return Err(died(&format!("ended in the middle of a {n}-byte frame")));
        }
        match decode_response_frame(&buf) {
            Ok(Ok((ct, data))) => Ok(Outcome::bytes(ct, data)),
            Ok(Err(message)) => Ok(Outcome::Error { message }),
            Err(e) => Err(Outcome::error(format!("garbage frame from the stream process: {e}"))),
        }
    }

    /// Kills the process; if it had died on its own, the observation is its crash.
    async fn kill(mut self, why: Outcome) -> Outcome {
        let exited = tokio::time::timeout(Duration::from_millis(200), self.child.wait()).await;
        let _ = self.child.start_kill();
        let status = match exited {
            Ok(Ok(s)) => Some(s),
            _ => {
                let _ = self.child.wait().await;
                None
            }
        };
        // Give the stderr drain a moment to catch the last words.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let err: Vec<u8> = self.tail.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        match status {
            Some(s) if !s.success() => crash(s, err),
            _ => match why {
                Outcome::Error { message } if !err.is_empty() => Outcome::Error {
                    message: format!("{message}; stderr: {}", String::from_utf8_lossy(&err)),
                },
                other => other,
            },
        }
    }
}

fn crash(status: std::process::ExitStatus, stderr: Vec<u8>) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    Outcome::Crash { status: status.code(), signal: status.signal(), stderr: stderr.into() }
}

/// Reads up to `max` bytes; `true` if there was more (the reader stops at `max + 1`).
async fn read_capped(r: impl AsyncRead + Unpin, max: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    r.take(max as u64 + 1).read_to_end(&mut out).await?;
    let over = out.len() > max;
    out.truncate(max);
    Ok((out, over))
}

/// Reads to the end, keeping the last [`STDERR_TAIL`] bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut tail = VecDeque::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend(&buf[..n]);
        while tail.len() > STDERR_TAIL {
            tail.pop_front();
        }
    }
    tail.into_iter().collect()
}

impl Target for ProcessTarget {
    fn observe(&self, case: &Case) -> Outcome {
        let input = Input::of(case);
        if self.stream {
            runtime().block_on(self.streamed(&input))
        } else {
            runtime().block_on(self.per_case(&input))
        }
    }

    fn batch(&self) -> usize {
        if self.stream { 64 } else { 1 }
    }
}
