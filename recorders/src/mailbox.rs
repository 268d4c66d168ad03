//! A bounded hand-off from many producers to one consumer thread that the producers almost
//! never have to wake.
//!
//! `std::sync::mpsc` wakes the consumer on every message: one futex call per message on the
//! producer's side, on the proxy's path between the upstream's last byte and the client's
//! answer, and one scheduler wake-up per message for the consumer. Here the consumer, while
//! messages keep coming, polls (taking everything queued at once); only after `linger` without
//! a message does it go to sleep, and only then does a producer pay for a wake-up.
//!
//! The polling adapts to the rate: every `poll` while each look finds several messages, and
//! twice as long after each look that finds one, up to a [`Mailbox::max_nap`] of an eighth of
//! `linger`. At 50 messages a second (a proxy in front of a model answering in 20 ms) a fixed
//! 1 ms poll woke the consumer 1,000 times a second, more CPU than the proxy's own work; now
//! about 80 times. A box half full wakes a polling consumer at once, so a burst after a quiet
//! spell does not wait out a long nap; a full box blocks its producers (back-pressure) until
//! the consumer has taken the batch.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The consumer waits, and any post wakes it.
    asleep: bool,
    /// The consumer naps between looks, and a post that fills the box to half wakes it.
    napping: bool,
    /// How long the consumer naps between looks now.
    nap: Duration,
    closed: bool,
}

pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    room: Condvar,
    cap: usize,
    poll: Duration,
    linger: Duration,
    /// Times the consumer woke to look (a nap or a sleep ended), for tests and figures.
    looks: AtomicU64,
}

impl<T> Mailbox<T> {
    /// A box holding at most `cap` messages; the consumer polls, every `poll` at the most
    /// often, while messages arrived within the last `linger`.
    pub fn new(cap: usize, poll: Duration, linger: Duration) -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(State {
                queue: Vec::new(),
                asleep: false,
                napping: false,
                nap: poll,
                closed: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            cap: cap.max(1),
            poll,
            linger,
            looks: AtomicU64::new(0),
        }
    }

    /// The longest nap between two looks while polling.
    pub fn max_nap(&self) -> Duration {
        (self.linger / 8).max(self.poll)
    }

    /// How many times the consumer has woken to look so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the consumer if it sleeps, or if it naps and the box is half full.
    fn nudge(&self, s: &mut State<T>) {
        if s.asleep || (s.napping && s.queue.len() * 2 >= self.cap) {
            s.asleep = false;
            s.napping = false;
            self.wake.notify_one();
        }
    }

    /// Queues `msg`; blocks while the box is full. Returns it back when the box is closed.
    pub fn post(&self, msg: T) -> Result<(), T> {
        let mut s = self.lock();
        while s.queue.len() >= self.cap && !s.closed {
            self.nudge(&mut s);
            s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.closed {
            return Err(msg);
        }
        s.queue.push(msg);
        self.nudge(&mut s);
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
        let mut s = self.lock();
        loop {
            if !s.queue.is_empty() {
                let batch = std::mem::take(&mut s.queue);
                // Several at once: the rate is up, look often. One: look half as often.
                s.nap = if batch.len() > 1 { self.poll } else { (s.nap * 2).min(self.max_nap()) };
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
            let left = deadline.map(|d| d.saturating_duration_since(now));
            let busy = last.is_some_and(|l| now.saturating_duration_since(l) < self.linger);
            let wait = if busy {
                s.napping = true;
                Some(left.map_or(s.nap, |l| l.min(s.nap)))
            } else {
                s.asleep = true;
                left
            };
            s = match wait {
                Some(d) => self.wake.wait_timeout(s, d).unwrap_or_else(|e| e.into_inner()).0,
                None => self.wake.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
            s.asleep = false;
            s.napping = false;
            self.looks.fetch_add(1, Ordering::Relaxed);
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

    /// A slow, steady trickle (one message every 20 ms, as a proxy sees in front of a model)
    /// does not keep the consumer looking every millisecond.
    #[test]
    fn a_slow_trickle_is_polled_rarely() {
        let mb = Arc::new(Mailbox::new(1024, Duration::from_millis(1), Duration::from_millis(100)));
        let m2 = mb.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..25u32 {
                std::thread::sleep(Duration::from_millis(20));
                m2.post(i).unwrap();
            }
            m2.close();
        });
        let mut got = Vec::new();
        let mut last = None;
        loop {
            match mb.take(None, last) {
                Taken::Batch(b) => {
                    got.extend(b);
                    last = Some(Instant::now());
                }
                Taken::Timeout => panic!("no deadline was given"),
                Taken::Closed => break,
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..25).collect::<Vec<_>>());
        // 500 ms of trickle: a fixed 1 ms poll looks about 500 times; naps that grow to
        // 12.5 ms look about 50 times.
        assert!(mb.looks() < 150, "looked {} times", mb.looks());
    }

    /// A polling consumer in a long nap is woken when the box is half full, not at the nap's
    /// end; a full box then takes more posts only after the batch is taken.
    #[test]
    fn a_half_full_box_wakes_a_napping_consumer() {
        let mb = Arc::new(Mailbox::new(8, Duration::from_secs(2), Duration::from_secs(60)));
        let m2 = mb.clone();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            for i in 0..4u8 {
                m2.post(i).unwrap();
            }
        });
        let t0 = Instant::now();
        // Busy (a batch just now): the consumer naps 2 s between looks.
        let mut got = Vec::new();
        while got.len() < 4 {
            match mb.take(None, Some(Instant::now())) {
                Taken::Batch(b) => got.extend(b),
                _ => panic!("expected messages"),
            }
        }
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(t0.elapsed() < Duration::from_millis(1500), "woken after {:?}", t0.elapsed());
        poster.join().unwrap();
    }
}
