//! The corpus side of a recording, on two threads beside capture parsing and reassembly: one
//! builds each case (redacts it, hashes its input for the id), the other encodes and appends
//! it. With redaction on by default, one thread doing both was the slowest of the pipeline
//! (big.pcap: 0.54 s against 0.39 s without redaction); split, the three stages share the two
//! cores. The queues between them are bounded by bytes together, so they never hold more than
//! [`QUEUE_BYTES`] (one larger batch at a time passes alone). Written cases go back to the
//! threads that allocated them to be freed (see [`CaseOut::bury`]); what waits there is at most
//! one batch more.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use corpora::{Appended, Case, CaseData, CorpusError, CorpusWriter, Flag, Source};

use crate::redact::Redactor;

/// Bytes of case data the queue may hold.
pub const QUEUE_BYTES: usize = 4 << 20;

/// One case to build and append. Where it came from is kept raw (a shared file name, numbers)
/// and turned into the case's `source` and tags on the builder thread, off the parsing thread.
pub struct Job {
    /// The input (and output).
    pub data: CaseData,
    /// The capture file, as named.
    pub file: Arc<str>,
    /// Byte offset of the first packet's record.
    pub offset: u64,
    /// Its 1-based packet number.
    pub packet: u64,
    /// Capture time.
    pub time_ns: i64,
    /// For an HTTP exchange: its connection, its place on it and the server's address.
    pub http: Option<HttpTags>,
    /// Flags.
    pub flags: Vec<Flag>,
}

/// The tags of an HTTP case from a capture.
#[derive(Debug, Clone, Copy)]
pub struct HttpTags {
    /// The connection's number in the capture.
    pub connection: u64,
    /// 1-based request number on the connection.
    pub sequence: u64,
    /// The server side's address, when known.
    pub server: Option<SocketAddr>,
}

/// What a queued case costs besides its bodies: the job and the case it becomes, and their
/// small allocations (measured: a SYN's packet case took about ten times the 64 bytes once
/// counted here, so a queue of tiny cases held far more than its budget).
const JOB_OVERHEAD: usize = 512;

/// What one header costs held: its name and value and their two allocations.
fn headers_bytes(headers: &[corpora::Header]) -> usize {
    headers.iter().map(|h| h.0.len() + h.1.len() + 64).sum()
}

impl Job {
    fn bytes(&self) -> usize {
        JOB_OVERHEAD
            + match &self.data {
                CaseData::Http(x) => {
                    let q = &x.request;
                    let req = q.target.len()
                        + q.body.len()
                        + headers_bytes(&q.headers)
                        + headers_bytes(&q.trailers);
                    let resp = |r: &corpora::HttpResponse| {
                        r.body.len()
                            + headers_bytes(&r.headers)
                            + headers_bytes(&r.trailers)
                            + 16 * r.chunks.len()
                    };
                    req + x.response.as_ref().map_or(0, resp) + x.interim.iter().map(resp).sum::<usize>()
                }
                CaseData::Packet(p) => p.data.len(),
                CaseData::Message(m) => m.input.len(),
            }
    }
}

/// New and duplicate appends, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Appends {
    /// HTTP cases written.
    pub http_new: u64,
    /// HTTP cases already present.
    pub http_dup: u64,
    /// Packet cases written.
    pub packet_new: u64,
    /// Packet cases already present.
    pub packet_dup: u64,
    /// HTTP cases with at least one value redacted.
    pub http_redacted: u64,
}

/// Bytes queued, and whether the writer thread has ended (then nothing waits for room).
struct Budget {
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl Budget {
    fn new() -> Budget {
        Budget { state: Mutex::new((0, false)), freed: Condvar::new() }
    }
    fn acquire(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.1 && s.0 > 0 && s.0 + n > QUEUE_BYTES {
            s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 += n;
    }
    fn release(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(n);
        self.freed.notify_all();
    }
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// Marks the budget closed when the writer thread ends, however it ends (error or panic).
struct CloseOnDrop<'a>(&'a Budget);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

type Done = Result<(CorpusWriter, Appends), CorpusError>;

/// Jobs go over in batches of about this many bytes (or [`BATCH_JOBS`]), so the threads wake
/// each other rarely.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_JOBS: usize = 256;

/// The writer thread and the queue to it.
pub struct CaseOut {
    /// Write on this thread instead (no second core to use, or measuring).
    inline: Option<(CorpusWriter, Appends)>,
    /// Server addresses as text, for cases built on this thread (inline).
    servers: Servers,
    redactor: Option<Arc<Redactor>>,
    tx: Option<SyncSender<(Vec<Job>, usize)>>,
    handle: Option<JoinHandle<Done>>,
    /// Ends with how many written cases' labels it freed.
    builder: Option<JoinHandle<u64>>,
    budget: Arc<Budget>,
    batch: Vec<Job>,
    batch_bytes: usize,
    /// Written cases coming back from the writer thread to be freed here, where most of
    /// their allocations were made (see [`CaseOut::bury`]).
    spent: Option<Receiver<Vec<Case>>>,
    /// Cases freed here so far.
    buried: u64,
    /// Cases whose labels the builder thread freed (known once it has ended).
    labels_freed: u64,
}

impl CaseOut {
    /// Starts the writer thread; it owns `writer` until [`CaseOut::finish`]. HTTP cases go
    /// through `redactor` (on that thread) before they are appended.
    pub fn start(writer: CorpusWriter, redactor: Option<Arc<Redactor>>) -> CaseOut {
        let budget = Arc::new(Budget::new());
        let (tx, rx) = sync_channel::<(Vec<Job>, usize)>(64);
        let (built_tx, built_rx) = sync_channel::<(Vec<Built>, usize)>(64);
        let (spent_tx, spent_rx) = channel::<Vec<Case>>();
        let (labels_tx, labels_rx) = channel::<Vec<Labels>>();
        let b = budget.clone();
        let r = redactor.clone();
        let builder = std::thread::Builder::new()
            .name("corpus-build".into())
            .spawn(move || {
                let mut freed = 0u64;
                let mut servers = Servers::default();
                for (batch, n) in rx {
                    // What this thread allocated for cases already written is freed here too.
                    while let Ok(labels) = labels_rx.try_recv() {
                        freed += labels.len() as u64;
                        drop(labels);
                    }
                    let built = batch.into_iter().map(|job| build(job, r.as_deref(), &mut servers)).collect();
                    if built_tx.send((built, n)).is_err() {
                        // The writer stopped (its error is returned by finish).
                        break;
                    }
                }
                freed
            })
            .expect("spawn the case builder thread");
        let handle = std::thread::Builder::new()
            .name("corpus-writer".into())
            .spawn(move || run(writer, built_rx, &b, &spent_tx, &labels_tx))
            .expect("spawn the corpus writer thread");
        CaseOut {
            inline: None,
            servers: Servers::default(),
            redactor,
            tx: Some(tx),
            handle: Some(handle),
            builder: Some(builder),
            budget,
            batch: Vec::new(),
            batch_bytes: 0,
            spent: Some(spent_rx),
            buried: 0,
            labels_freed: 0,
        }
    }

    /// Builds and appends cases on the calling thread.
    pub fn inline(writer: CorpusWriter, redactor: Option<Arc<Redactor>>) -> CaseOut {
        let budget = Arc::new(Budget::new());
        CaseOut {
            inline: Some((writer, Appends::default())),
            servers: Servers::default(),
            redactor,
            tx: None,
            handle: None,
            builder: None,
            budget,
            batch: Vec::new(),
            batch_bytes: 0,
            spent: None,
            buried: 0,
            labels_freed: 0,
        }
    }

    /// Queues a case; waits while the queue holds too many bytes. An error means the writer
    /// thread stopped on a corpus error, which [`CaseOut::finish`] returns.
    pub fn put(&mut self, job: Job) -> Result<(), CorpusError> {
        if let Some((writer, counts)) = &mut self.inline {
            return append(writer, counts, &build(job, self.redactor.as_deref(), &mut self.servers));
        }
        self.batch_bytes += job.bytes();
        self.batch.push(job);
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_JOBS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CorpusError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let n = std::mem::take(&mut self.batch_bytes);
        let batch = std::mem::take(&mut self.batch);
        self.bury();
        self.budget.acquire(n);
        // Waiting for room, the writer will have sent batches back.
        self.bury();
        let sent = self.tx.as_ref().map(|tx| tx.send((batch, n)).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        self.budget.release(n);
        // The thread ended early: its error says why.
        match self.finish_inner() {
            Err(e) => Err(e),
            Ok(_) => Err(CorpusError::Io {
                op: "queue a case for",
                path: "the corpus writer".into(),
                source: std::io::Error::other("the writer thread has stopped"),
            }),
        }
    }

    /// Frees the cases the writer has finished with. A case's strings, headers and bodies were
    /// allocated on this thread; freed on the writer's, every one of them took mimalloc's
    /// cross-thread path on both sides (the writer pushing it onto this thread's pages, this
    /// thread collecting it back): about a sixth of the recording's CPU on big.pcap. Called
    /// before and after waiting for room in the budget: the writer sends each batch back
    /// before it releases the batch's bytes, so what waits here beyond the budget is at most
    /// the batch released since. A source that goes quiet calls [`CaseOut::idle`].
    fn bury(&mut self) {
        if let Some(rx) = &self.spent {
            while let Ok(cases) = rx.try_recv() {
                self.buried += cases.len() as u64;
                drop(cases);
            }
        }
    }

    /// For a source with nothing to send for now (a live capture between packets): the cases
    /// queued so far go to the writer instead of waiting for a full batch, and written ones
    /// are freed, so an idle capture neither holds them in memory nor keeps them from disk.
    pub fn idle(&mut self) -> Result<(), CorpusError> {
        if self.inline.is_some() {
            return Ok(());
        }
        self.flush()?;
        self.bury();
        Ok(())
    }

    fn finish_inner(&mut self) -> Done {
        drop(self.tx.take());
        // The builder ends when its queue closes (or the writer's does); a panic there is
        // reported like the writer's.
        let built = self.builder.take().map(|b| b.join());
        if let Some(Ok(freed)) = built {
            self.labels_freed = freed;
        }
        if let Some(Err(_)) = built {
            return Err(CorpusError::Io {
                op: "build",
                path: "the case builder thread".into(),
                source: std::io::Error::other("the case builder thread panicked"),
            });
        }
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(CorpusError::Io {
                    op: "write",
                    path: "the corpus writer thread".into(),
                    source: std::io::Error::other("the writer thread panicked"),
                })
            }),
            None => Err(CorpusError::Io {
                op: "write",
                path: "the corpus writer thread".into(),
                source: std::io::Error::other("already finished"),
            }),
        }
    }

    /// Waits for every queued case to be written; hands the writer back with the counts.
    pub fn finish(mut self) -> Done {
        self.finish_counting().0
    }

    /// [`CaseOut::finish`], how many cases came back to be freed on this thread, and how many
    /// cases' labels the builder freed.
    fn finish_counting(&mut self) -> (Done, u64, u64) {
        if let Some(done) = self.inline.take() {
            return (Ok(done), 0, 0);
        }
        let done = self.flush().and_then(|()| self.finish_inner());
        self.bury();
        (done, self.buried, self.labels_freed)
    }
}

fn run(
    mut writer: CorpusWriter,
    rx: Receiver<(Vec<Built>, usize)>,
    budget: &Budget,
    spent: &Sender<Vec<Case>>,
    labels: &Sender<Vec<Labels>>,
) -> Done {
    let _closed = CloseOnDrop(budget);
    let mut counts = Appends::default();
    for (batch, n) in rx {
        let mut done = Vec::with_capacity(batch.len());
        let mut made = Vec::with_capacity(batch.len());
        for mut built in batch {
            append(&mut writer, &mut counts, &built)?;
            let c = &mut built.case;
            made.push((
                std::mem::take(&mut c.source),
                std::mem::take(&mut c.tags),
                std::mem::take(&mut c.flags),
            ));
            done.push(built.case);
        }
        // Each part freed by the thread that allocated it (if that thread has gone, here).
        let _ = labels.send(made);
        let _ = spent.send(done);
        budget.release(n);
    }
    Ok((writer, counts))
}

/// The parts of a written case that the builder thread made: its source, tags and flags.
type Labels = (Source, BTreeMap<String, String>, Vec<Flag>);

/// A case ready to append.
struct Built {
    case: Case,
    http: bool,
    redacted: bool,
}

/// The servers' addresses as tag text, each formatted once: a capture has few servers and
/// thousands of exchanges with each, and formatting an address took more of the builder's
/// time than copying its text (big.pcap: about 2.5% of all instructions). Bounded: cleared
/// when it holds [`Servers::MAX`] addresses.
#[derive(Default)]
struct Servers(rustc_hash::FxHashMap<SocketAddr, String>);

impl Servers {
    const MAX: usize = 4096;

    fn text(&mut self, server: SocketAddr) -> String {
        if self.0.len() >= Self::MAX && !self.0.contains_key(&server) {
            self.0.clear();
        }
        self.0.entry(server).or_insert_with(|| server.to_string()).clone()
    }
}

fn build(job: Job, redactor: Option<&Redactor>, servers: &mut Servers) -> Built {
    let http = matches!(job.data, CaseData::Http(_));
    let mut data = job.data;
    // Packets are kept byte for byte (a packet processor replays them as captured); only HTTP
    // exchanges, whose headers and bodies carry credentials, are redacted, before the case
    // is made so that its id is hashed once, from what is stored.
    let redacted = match redactor {
        Some(r) if http => r.data(&mut data),
        _ => Vec::new(),
    };
    let source = Source::File { path: job.file.to_string(), offset: job.offset, packet: Some(job.packet) };
    let mut case = Case::new(data).with_source(source).with_time_ns(job.time_ns);
    if let Some(t) = job.http {
        let mut tags = BTreeMap::new();
        tags.insert("connection".to_string(), t.connection.to_string());
        tags.insert("sequence".to_string(), t.sequence.to_string());
        if let Some(server) = t.server {
            tags.insert("server".to_string(), servers.text(server));
        }
        case.tags = tags;
    }
    for f in job.flags {
        case.add_flag(f);
    }
    let was_redacted = !redacted.is_empty();
    if was_redacted {
        case.add_flag(Flag::Redacted { fields: redacted });
    }
    Built { case, http, redacted: was_redacted }
}

fn append(writer: &mut CorpusWriter, counts: &mut Appends, built: &Built) -> Result<(), CorpusError> {
    let Built { case, http, redacted } = built;
    if *redacted {
        counts.http_redacted += 1;
    }
    match (writer.append(case)?, *http) {
        (Appended::New, true) => counts.http_new += 1,
        (Appended::Duplicate, true) => counts.http_dup += 1,
        (Appended::New, false) => counts.packet_new += 1,
        (Appended::Duplicate, false) => counts.packet_dup += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding: if the writer thread ended with the queue full, a sender waited for room
    /// for ever. Closing the budget wakes it.
    #[test]
    fn a_closed_budget_never_blocks() {
        let b = Arc::new(Budget::new());
        b.acquire(QUEUE_BYTES);
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.acquire(QUEUE_BYTES));
        std::thread::sleep(std::time::Duration::from_millis(50));
        b.close();
        waiter.join().unwrap();
    }

    /// The cached text of an address is its `to_string`, past the bound too, and the cache
    /// never holds more than the bound.
    #[test]
    fn server_texts_are_the_addresses_and_stay_bounded() {
        let mut servers = Servers::default();
        for i in 0..(Servers::MAX as u32 * 2 + 10) {
            let a = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i % 5000), 80 + (i % 7) as u16));
            assert_eq!(servers.text(a), a.to_string());
            assert!(servers.0.len() <= Servers::MAX);
        }
        let v6: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        assert_eq!(servers.text(v6), "[2001:db8::1]:8443");
    }

    fn packet_job(i: u64, len: usize) -> Job {
        use corpora::{Blob, Packet};
        let mut data = vec![(i % 251) as u8; len];
        data[..8].copy_from_slice(&i.to_le_bytes());
        Job {
            data: CaseData::Packet(Packet {
                link_type: 1,
                data: Blob(data),
                original_len: None,
                interface: None,
                flow: None,
            }),
            file: Arc::from("t.pcap"),
            offset: 24 + i * (len as u64 + 16),
            packet: i + 1,
            time_ns: i as i64,
            http: None,
            flags: Vec::new(),
        }
    }

    /// A live capture that goes quiet after a few packets: `idle` sends the partial batch to
    /// the writer and frees what comes back, with no more cases queued.
    #[test]
    fn idle_sends_a_partial_batch_and_frees_what_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let writer = CorpusWriter::create(dir.path(), corpora::WriterOptions::default()).unwrap();
        let mut out = CaseOut::start(writer, None);
        for i in 0..3 {
            out.put(packet_job(i, 100)).unwrap();
        }
        assert!(out.batch.len() == 3 && out.buried == 0);
        let started = std::time::Instant::now();
        while out.buried < 3 && started.elapsed() < std::time::Duration::from_secs(10) {
            out.idle().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(out.batch.is_empty());
        assert_eq!(out.buried, 3, "written and freed while idle");
        let (writer, counts) = out.finish().unwrap();
        assert_eq!(counts.packet_new, 3);
        assert_eq!(writer.close().unwrap().counts.records, 3);
    }

    /// Written cases come back to the thread that queued them (to be freed there), every one,
    /// and the corpus holds them all: nothing is lost on the way back.
    #[test]
    fn every_written_case_comes_back_to_the_queueing_thread() {
        use corpora::{Corpus, WriterOptions};
        let dir = tempfile::tempdir().unwrap();
        let writer = CorpusWriter::create(dir.path(), WriterOptions::default()).unwrap();
        let mut out = CaseOut::start(writer, None);
        let n = 3000u64;
        for i in 0..n {
            // 2 KiB each: several batches, and more than the queue's budget in all.
            out.put(packet_job(i, 2048)).unwrap();
        }
        // More bytes than the budget holds went through: batches came back while the queueing
        // went on, not only at the end.
        assert!(out.buried > 0);
        let (done, buried, labels_freed) = out.finish_counting();
        assert!(labels_freed > 0 && labels_freed <= n, "{labels_freed}");
        let (writer, counts) = done.unwrap();
        writer.close().unwrap();
        assert_eq!(counts.packet_new, n);
        assert_eq!(buried, n, "every written case is freed on the queueing thread");
        let corpus = Corpus::open(dir.path()).unwrap();
        let mut seen: Vec<u64> = corpus
            .cases_checked()
            .map(|c| match c.unwrap().data() {
                CaseData::Packet(p) => u64::from_le_bytes(p.data.0[..8].try_into().unwrap()),
                other => panic!("not a packet case: {other:?}"),
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }
}
