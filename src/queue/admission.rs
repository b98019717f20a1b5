//! Publisher flow control: a queue whose consumers are working through a backlog admits new
//! messages only as fast as it delivers them.
//!
//! Without it a publisher faster than the consumers grows the queue without end: the backlog
//! passes the queue's memory budget, is paged out and read back, and every message waits
//! behind all the others (seconds of latency, gigabytes of RSS). RabbitMQ answers this with
//! credit_flow between processes; Warren ties the credit to what matters, the delivery rate.
//!
//! The queue task (the only writer of the state) decides, after each round:
//! - backlog below [`HIGH_MESSAGES`] / [`HIGH_BYTES`], or no consumers: *open* — publishers are
//!   never held (a queue without consumers is a real backlog: it pages, as before);
//! - backlog above, and the consumers delivered something in the last [`STALL`]: *limiting* —
//!   every message the queue delivers grants one message of credit, and a publisher that finds
//!   no credit left stops reading its socket until the queue grants more;
//! - consumers that stopped (nothing delivered for [`STALL`]) open it again: the backlog is then
//!   a real one and pages, instead of holding its publishers for as long as the consumers sleep.
//!
//! A connection never waits for a queue it consumes from itself (RabbitMQ's classic deadlock:
//! a held connection's acks are not read, so its queue never delivers again); any other cycle
//! of connections waiting on each other ends after [`STALL`], when the stalled queue opens.
//!
//! Publishers read the state with two atomic loads per batch; queues write it once per round.
//! The thresholds are process-wide settings (`amqp.flow_backlog_messages` / `_bytes`), set once
//! from the configuration before any queue starts.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Default ready messages above which a queue with working consumers starts limiting its
/// publishers (`amqp.flow_backlog_messages`).
///
/// Enough that consumers never run dry while a held publisher wakes (tens of milliseconds at
/// the fastest consumer rates), small enough that the backlog stays far inside the queue's
/// in-memory budget, so it is never paged out only to be read back.
pub const HIGH_MESSAGES: u32 = 10_000;
/// The same in bytes of ready bodies and headers (large messages; `amqp.flow_backlog_bytes`).
pub const HIGH_BYTES: u64 = 32 * 1024 * 1024;

static LIMIT_MESSAGES: AtomicU32 = AtomicU32::new(HIGH_MESSAGES);
static LIMIT_BYTES: AtomicU64 = AtomicU64::new(HIGH_BYTES);

/// Set the backlog thresholds (from the configuration, at start; 0 turns limiting off).
pub fn configure(messages: u32, bytes: u64) {
    LIMIT_MESSAGES.store(messages, Ordering::Relaxed);
    LIMIT_BYTES.store(bytes, Ordering::Relaxed);
}
/// Limiting ends once the backlog is below half of the thresholds (hysteresis).
const LOW_FACTOR: u64 = 2;
/// Most credit a limiting queue banks: a publisher slower than the consumers is never held,
/// but one that bursts may send at most this many messages ahead of the deliveries.
const MAX_CREDIT: i64 = 10_000;
/// Consumers that delivered nothing for this long are taken to have stopped.
pub const STALL: Duration = Duration::from_secs(1);

/// One queue's admission state, shared (in the [`super::QueueHandle`]) with its publishers.
#[derive(Debug, Default)]
pub struct Admission {
    limiting: AtomicBool,
    /// Messages publishers may still send while limiting; goes below zero by at most one read
    /// turn of each publisher (which then waits).
    credit: AtomicI64,
    /// Held publishers to wake when credit arrives or limiting ends.
    waiters: Mutex<Vec<Arc<Notify>>>,
}

impl Admission {
    /// Publisher side: account for `n` messages just sent; false when the publisher must wait.
    pub fn take(&self, n: usize) -> bool {
        if !self.limiting.load(Ordering::Acquire) {
            return true;
        }
        self.credit.fetch_sub(n as i64, Ordering::AcqRel) > n as i64
    }

    /// Whether publishers may send (not limiting, or credit left).
    pub fn is_open(&self) -> bool {
        !self.limiting.load(Ordering::Acquire) || self.credit.load(Ordering::Acquire) > 0
    }

    pub fn is_limiting(&self) -> bool {
        self.limiting.load(Ordering::Acquire)
    }

    /// Ask for `wake` to be notified when the queue admits again. Returns whether it already
    /// does (then the caller need not wait; the registration is harmless).
    pub fn wait(&self, wake: &Arc<Notify>) -> bool {
        {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if !w.iter().any(|n| Arc::ptr_eq(n, wake)) {
                w.push(wake.clone());
            }
        }
        self.is_open()
    }

    /// Queue side: limiting this round, with `delivered` messages delivered in it.
    pub fn limit(&self, delivered: usize) {
        if !self.limiting.swap(true, Ordering::AcqRel) {
            self.credit.store(0, Ordering::Release);
        }
        if delivered > 0 {
            let d = delivered as i64;
            let before = self.credit.fetch_add(d, Ordering::AcqRel);
            if before + d > MAX_CREDIT {
                // Cap the bank (a racing publisher's decrement may be folded in; harmless).
                self.credit.fetch_min(MAX_CREDIT, Ordering::AcqRel);
            }
            if before + d > 0 {
                self.wake();
            }
        }
    }

    /// Queue side: stop limiting and wake every held publisher.
    pub fn open(&self) {
        if self.limiting.swap(false, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Whether this many ready messages / bytes call for limiting (`limiting`: the current
    /// state, for the hysteresis).
    pub fn over(ready: u32, ready_bytes: u64, limiting: bool) -> bool {
        Self::over_limits(
            ready,
            ready_bytes,
            limiting,
            LIMIT_MESSAGES.load(Ordering::Relaxed),
            LIMIT_BYTES.load(Ordering::Relaxed),
        )
    }

    fn over_limits(ready: u32, ready_bytes: u64, limiting: bool, messages: u32, bytes: u64) -> bool {
        let (m, b) =
            if limiting { (messages as u64 / LOW_FACTOR, bytes / LOW_FACTOR) } else { (messages as u64, bytes) };
        (messages > 0 && ready as u64 > m) || (bytes > 0 && ready_bytes > b)
    }

    fn wake(&self) {
        let waiters = {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if w.is_empty() {
                return;
            }
            std::mem::take(&mut *w)
        };
        for n in waiters {
            n.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_queue_admits_everything() {
        let a = Admission::default();
        assert!(a.take(1_000_000));
        assert!(a.is_open());
    }

    #[test]
    fn limiting_admits_what_was_delivered() {
        let a = Admission::default();
        a.limit(0);
        assert!(!a.is_open());
        assert!(!a.take(1));
        a.limit(101); // credit 100 after the -1 above
        assert!(a.is_open());
        assert!(a.take(99));
        assert!(!a.take(1));
        assert!(!a.is_open());
    }

    #[test]
    fn credit_is_capped() {
        let a = Admission::default();
        a.limit(0);
        a.limit(1_000_000);
        assert!(a.take(MAX_CREDIT as usize - 1));
        assert!(!a.take(1));
    }

    #[tokio::test]
    async fn held_publishers_are_woken_by_credit_and_by_opening() {
        let a = Admission::default();
        a.limit(0);
        let n = Arc::new(Notify::new());
        assert!(!a.wait(&n));
        a.limit(5);
        // The permit is stored: this returns at once.
        tokio::time::timeout(Duration::from_secs(5), n.notified()).await.expect("woken by credit");
        assert!(a.take(5) || !a.is_open());
        assert!(!a.wait(&n));
        a.open();
        tokio::time::timeout(Duration::from_secs(5), n.notified()).await.expect("woken by opening");
        assert!(a.is_open());
    }

    #[test]
    fn hysteresis() {
        let over = |r, b, l| Admission::over_limits(r, b, l, HIGH_MESSAGES, HIGH_BYTES);
        assert!(!over(HIGH_MESSAGES, 0, false));
        assert!(over(HIGH_MESSAGES + 1, 0, false));
        assert!(over(HIGH_MESSAGES / 2 + 1, 0, true));
        assert!(!over(HIGH_MESSAGES / 2, 0, true));
        assert!(over(0, HIGH_BYTES + 1, false));
        // 0 turns a threshold off.
        assert!(!Admission::over_limits(u32::MAX, u64::MAX, false, 0, 0));
    }
}
