//! Live capture through libpcap: packets from a network interface feed the same pipeline as a
//! capture file. Stops on a flag (SIGINT), after a duration, or after a packet count, and
//! reports what the kernel dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corpora::CorpusError;
use serde::Serialize;

use crate::capture::RawPacket;
use crate::pcap::Recorder;

/// What to capture and when to stop.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The interface (`lo`, `eth0`, ...).
    pub interface: String,
    /// A BPF filter (`tcp port 8080`).
    pub filter: Option<String>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many packets.
    pub count: Option<u64>,
}

/// What libpcap says it saw and dropped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveStats {
    /// The interface.
    pub interface: String,
    /// Packets the kernel filter passed.
    pub received: u64,
    /// Packets dropped because the buffer was full (we did not read fast enough).
    pub dropped_by_kernel: u64,
    /// Packets dropped by the interface or its driver.
    pub dropped_by_interface: u64,
    /// Why the capture stopped (`interrupted`, `duration`, `count`).
    pub stopped_by: &'static str,
}

/// Why a live capture could not run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// libpcap refused (no such interface, no permission, bad filter...).
    #[error("live capture on {interface}: {message}")]
    Pcap {
        /// The interface.
        interface: String,
        /// What libpcap said.
        message: String,
    },
    /// Writing the corpus failed.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
}

/// Captures until `stop` is set, the duration passes, or the count is reached.
pub fn capture(rec: &mut Recorder, opts: &LiveOptions, stop: &AtomicBool) -> Result<LiveStats, LiveError> {
    let err = |e: pcap::Error| LiveError::Pcap { interface: opts.interface.clone(), message: e.to_string() };
    let mut cap = pcap::Capture::from_device(opts.interface.as_str())
        .map_err(err)?
        .promisc(false)
        .snaplen(262_144)
        .immediate_mode(true)
        // Room for bursts while a packet is being recorded (the ring is the kernel's memory).
        .buffer_size(8 << 20)
        .open()
        .map_err(err)?
        // Non-blocking, so stop, duration and count are checked even when no packet comes:
        // libpcap's read timeout does not fire on Linux when the ring stays empty.
        .setnonblock()
        .map_err(err)?;
    if let Some(f) = &opts.filter {
        cap.filter(f, true).map_err(err)?;
    }
    let link_type = cap.get_datalink().0 as u16;
    rec.begin_source(&format!("live:{}", opts.interface));
    let started = Instant::now();
    let mut n = 0u64;
    let stopped_by = loop {
        if stop.load(Ordering::Relaxed) {
            break "interrupted";
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break "duration";
        }
        if opts.count.is_some_and(|c| n >= c) {
            break "count";
        }
        match cap.next_packet() {
            Ok(p) => {
                n += 1;
                let ts_ns = p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec * 1000;
                rec.feed(&RawPacket {
                    number: n,
                    offset: 0,
                    ts_ns,
                    link_type,
                    data: p.data,
                    orig_len: p.header.len,
                    interface: None,
                })?;
            }
            // Nothing waiting: sleep in poll(2) on the capture's socket, which wakes as soon
            // as the kernel has a packet, or after 50 ms to look at stop, duration and count
            // again. (A fixed sleep here let a burst overrun the ring: with a 256 KiB snap
            // length libpcap's default 2 MiB ring holds about eight packets; seen in CI as kernel drops.)
            Err(pcap::Error::TimeoutExpired) => {
                use rustix::event::{PollFd, PollFlags, Timespec, poll};
                // A quiet moment: what is queued goes to the corpus now.
                rec.idle()?;
                let mut fds = [PollFd::new(&cap, PollFlags::IN)];
                let _ = poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 50_000_000 }));
            }
            Err(e) => return Err(err(e)),
        }
    };
    let s = cap.stats().map_err(err)?;
    Ok(LiveStats {
        interface: opts.interface.clone(),
        received: u64::from(s.received),
        dropped_by_kernel: u64::from(s.dropped),
        dropped_by_interface: u64::from(s.if_dropped),
        stopped_by,
    })
}
