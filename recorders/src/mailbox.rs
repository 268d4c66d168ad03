//! A bounded hand-off from many producers to one consumer thread that the producers almost
//! never have to wake.
//!
//! `std::sync::mpsc` wakes the consumer on every message: one futex call per message on the
//! producer's side, on the proxy's path between the upstream's last byte and the client's
//! answer, and one scheduler wake-up per message for the consumer. Here the consumer, while
//! messages keep coming, polls every `poll` (taking everything queued at once); only after
//! `linger` without a message does it go to sleep, and only then does a producer pay for a
//! wake-up. A full box blocks its producers (back-pressure) until the consumer has taken the
//! batch.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What [`Mailbox::take`] hands the consumer.
pub enum Taken<T> {
    /// Everything that was queued, in the order it was posted (never empty).
    Batch(Vec<T>),
    /// The deadline passed with nothing queued.
    Timeout,
    /// Closed, and everything posted has been taken.
    Closed,
}

struct State<T> {
    queue: Vec<T>,
    asleep: bool,
    closed: bool,
}

pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    room: Condvar,
    cap: usize,
    poll: Duration,
    linger: Duration,
}

impl<T> Mailbox<T> {
    /// A box holding at most `cap` messages; the consumer polls every `poll` while messages
    /// arrived within the last `linger`.
    pub fn new(cap: usize, poll: Duration, linger: Duration) -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(State { queue: Vec::new(), asleep: false, closed: false }),
            wake: Condvar::new(),
            room: Condvar::new(),
            cap: cap.max(1),
            poll,
            linger,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg`; blocks while the box is full. Returns it back when the box is closed.
    pub fn post(&self, msg: T) -> Result<(), T> {
        let mut s = self.lock();
        while s.queue.len() >= self.cap && !s.closed {
            if s.asleep {
                s.asleep = false;
                self.wake.notify_one();
            }
            s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.closed {
            return Err(msg);
        }
        s.queue.push(msg);
        if s.asleep {
            s.asleep = false;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// No more messages: `post` fails from now on, and the consumer gets [`Taken::Closed`] once
    /// it has taken what is queued.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        self.wake.notify_one();
        self.room.notify_all();
    }

    /// The consumer's side: waits for messages until `deadline` (forever with `None`).
    /// `last` is when the consumer last got a batch (it polls instead of sleeping for
    /// `linger` after it).
    pub fn take(&self, deadline: Option<Instant>, last: Option<Instant>) -> Taken<T> {
        loop {
            let mut s = self.lock();
            if !s.queue.is_empty() {
                let batch = std::mem::take(&mut s.queue);
                self.room.notify_all();
                return Taken::Batch(batch);
            }
            if s.closed {
                return Taken::Closed;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Taken::Timeout;
            }
            let busy = last.is_some_and(|l| now.saturating_duration_since(l) < self.linger);
            if busy {
                // Polling: producers do not wake us.
                drop(s);
                let nap = deadline.map_or(self.poll, |d| self.poll.min(d.saturating_duration_since(now)));
                std::thread::sleep(nap);
                continue;
            }
            s.asleep = true;
            let s = match deadline {
                Some(d) => {
                    self.wake
                        .wait_timeout(s, d.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
            let mut s = s;
            s.asleep = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_message_arrives_once_in_order_per_producer_and_close_ends_it() {
        let mb = Arc::new(Mailbox::new(8, Duration::from_millis(1), Duration::from_millis(20)));
        let producers: Vec<_> = (0..4u32)
            .map(|p| {
                let mb = mb.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        mb.post((p, i)).unwrap();
                        if i % 100 == 0 {
                            // Let the consumer fall asleep now and then, so waking it is tested.
                            std::thread::sleep(Duration::from_millis(30));
                        }
                    }
                })
            })
            .collect();
        let consumer = {
            let mb = mb.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut last = None;
                let mut max_batch = 0;
                loop {
                    match mb.take(None, last) {
                        Taken::Batch(b) => {
                            assert!(b.len() <= 8, "the cap bounds a batch: {}", b.len());
                            max_batch = max_batch.max(b.len());
                            got.extend(b);
                            last = Some(Instant::now());
                        }
                        Taken::Timeout => panic!("no deadline was given"),
                        Taken::Closed => return (got, max_batch),
                    }
                }
            })
        };
        for p in producers {
            p.join().unwrap();
        }
        mb.close();
        assert_eq!(mb.post((9, 9)), Err((9, 9)), "a closed box refuses");
        let (got, max_batch) = consumer.join().unwrap();
        assert_eq!(got.len(), 2000);
        for p in 0..4 {
            let mine: Vec<u32> = got.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "producer {p}: each once, in order");
        }
        assert!(max_batch > 1, "polling takes several messages at once");
    }

    #[test]
    fn a_deadline_with_nothing_queued_is_a_timeout_and_a_sleeping_consumer_is_woken() {
        let mb = Arc::new(Mailbox::<u8>::new(4, Duration::from_millis(1), Duration::from_millis(5)));
        let t0 = Instant::now();
        assert!(matches!(mb.take(Some(t0 + Duration::from_millis(30)), None), Taken::Timeout));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let m2 = mb.clone();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            m2.post(7).unwrap();
        });
        let t0 = Instant::now();
        // Asleep (no recent batch), no deadline: only the post can end this.
        match mb.take(None, None) {
            Taken::Batch(b) => assert_eq!(b, vec![7]),
            _ => panic!("expected the posted message"),
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        poster.join().unwrap();
    }
}
