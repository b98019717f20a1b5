//! Shared flow-control counters between a connection and the queues delivering to it.
//!
//! Queues never await a consumer. Instead they read two cheap gauges before each delivery:
//! the channel's shared prefetch limit (`basic.qos global=true`) and the connection's pending
//! output (bytes handed to the writer but not yet on the socket). A queue that finds a consumer's
//! writer congested registers itself as a waiter; the writer wakes it once it has drained.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::queue::QueueCmd;

/// Above this many pending output bytes a connection's consumers are skipped by queues.
///
/// Large enough to keep a socket busy between writer wake-ups (several batches of small
/// deliveries), small enough that a slow consumer does not pull a whole backlog into memory.
pub const WRITER_HIGH_WATERMARK: usize = 4 * 1024 * 1024;
/// Waiting queues are woken once pending output drops below this.
pub const WRITER_LOW_WATERMARK: usize = 1024 * 1024;

/// Pending output of one connection and the queues waiting for it to drain.
#[derive(Debug, Default)]
pub struct FlowGauge {
    pending: AtomicUsize,
    /// Settlement mailboxes of the queues to wake (never full, and read first by the queue).
    waiters: Mutex<Vec<mpsc::UnboundedSender<QueueCmd>>>,
}

impl FlowGauge {
    pub fn add(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// Record `n` bytes written; wakes waiting queues when below the low watermark.
    pub fn written(&self, n: usize) {
        let before = self.pending.fetch_sub(n, Ordering::Relaxed);
        if before.saturating_sub(n) < WRITER_LOW_WATERMARK {
            self.wake();
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn is_congested(&self) -> bool {
        self.pending() >= WRITER_HIGH_WATERMARK
    }

    /// Ask to be sent [`QueueCmd::Resume`] when the writer drains. Returns whether the gauge is
    /// still congested after registering (if not, the caller must retry itself: the writer may
    /// have drained between the check and the registration).
    pub fn wait(&self, queue: &mpsc::UnboundedSender<QueueCmd>) -> bool {
        {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if !w.iter().any(|s| s.same_channel(queue)) {
                w.push(queue.clone());
            }
        }
        self.is_congested()
    }

    fn wake(&self) {
        let waiters = {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if w.is_empty() {
                return;
            }
            std::mem::take(&mut *w)
        };
        for q in waiters {
            let _ = q.send(QueueCmd::Resume);
        }
    }
}

/// A channel's shared prefetch limit (`basic.qos global=true`) and its current use.
#[derive(Debug, Default)]
pub struct ChannelLimit {
    /// 0 = unlimited.
    limit: AtomicU32,
    unacked: AtomicU32,
}

impl ChannelLimit {
    pub fn set_limit(&self, n: u32) {
        self.limit.store(n, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Take one unit of credit if the limit allows.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit();
        let mut cur = self.unacked.load(Ordering::Relaxed);
        loop {
            if limit > 0 && cur >= limit {
                return false;
            }
            match self.unacked.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Give back `n` units (deliveries settled).
    pub fn release(&self, n: u32) {
        let _ = self.unacked.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |c| Some(c.saturating_sub(n)));
    }

    pub fn in_use(&self) -> u32 {
        self.unacked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_limit_counts_and_releases() {
        let l = ChannelLimit::default();
        assert!(l.try_acquire() && l.try_acquire(), "unlimited by default");
        l.set_limit(3);
        assert!(l.try_acquire());
        assert!(!l.try_acquire(), "3 in use, limit 3");
        l.release(2);
        assert_eq!(l.in_use(), 1);
        assert!(l.try_acquire() && l.try_acquire() && !l.try_acquire());
        l.set_limit(0);
        assert!(l.try_acquire());
    }

    #[test]
    fn gauge_wakes_waiters_when_drained() {
        let g = FlowGauge::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        g.add(WRITER_HIGH_WATERMARK);
        assert!(g.is_congested());
        assert!(g.wait(&tx), "still congested after registering");
        g.written(WRITER_HIGH_WATERMARK / 2);
        assert!(rx.try_recv().is_err(), "above the low watermark: nobody woken");
        g.written(WRITER_HIGH_WATERMARK / 2);
        assert!(matches!(rx.try_recv(), Ok(QueueCmd::Resume)));
    }
}
