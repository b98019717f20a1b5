//! Publisher confirms bookkeeping for one channel (the `rabbit_confirms` role), pure.
//!
//! Each publish in confirm mode gets the next sequence number and the number of queues it went
//! to. Queues report completions in any order; the tracker turns them into as few `basic.ack`
//! frames as possible: one `multiple=true` ack for everything completed below the oldest
//! outstanding publish, and single acks for completions above it.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Confirms {
    /// Last sequence number handed out (the first publish gets 1).
    last: u64,
    /// seq → queues that have not yet accepted it.
    outstanding: BTreeMap<u64, u32>,
    /// Publishes acked so far (for the message counters).
    pub acked: u64,
}

/// A confirm frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    pub tag: u64,
    pub multiple: bool,
    pub ack: bool,
}

impl Confirms {
    /// Number the next publish.
    pub fn next_seq(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// Wait for `queues` acceptances of `seq` (0 = complete at once: unroutable).
    pub fn track(&mut self, seq: u64, queues: u32) {
        if queues > 0 {
            self.outstanding.insert(seq, queues);
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// One queue accepted each of `seqs`; returns the ack frames now due. `done_now` are seqs
    /// completed outside any queue (unroutable publishes).
    pub fn on_accepted(&mut self, seqs: &[u64]) -> Vec<Confirm> {
        let mut done = Vec::new();
        for &s in seqs {
            if let Some(n) = self.outstanding.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.outstanding.remove(&s);
                    done.push(s);
                }
            }
        }
        self.acks_for(done)
    }

    /// Acks for publishes that are complete (given in any order).
    pub fn acks_for(&mut self, mut done: Vec<u64>) -> Vec<Confirm> {
        if done.is_empty() {
            return Vec::new();
        }
        self.acked += done.len() as u64;
        done.sort_unstable();
        let oldest = self.outstanding.keys().next().copied().unwrap_or(u64::MAX);
        let below: Vec<u64> = done.iter().copied().filter(|&s| s < oldest).collect();
        let mut out = Vec::new();
        match below.as_slice() {
            [] => {}
            [one] => out.push(Confirm { tag: *one, multiple: false, ack: true }),
            [.., last] => out.push(Confirm { tag: *last, multiple: true, ack: true }),
        }
        out.extend(done.into_iter().filter(|&s| s >= oldest).map(|tag| Confirm { tag, multiple: false, ack: true }));
        out
    }

    /// A queue refused `seqs` (overflow): each gets a nack, and is no longer outstanding.
    pub fn on_rejected(&mut self, seqs: &[u64]) -> Vec<Confirm> {
        seqs.iter()
            .filter(|s| self.outstanding.remove(s).is_some())
            .map(|&tag| Confirm { tag, multiple: false, ack: false })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tag: u64, multiple: bool) -> Confirm {
        Confirm { tag, multiple, ack: true }
    }

    #[test]
    fn contiguous_completions_become_one_multiple_ack() {
        let mut c = Confirms::default();
        for _ in 0..3 {
            let s = c.next_seq();
            c.track(s, 1);
        }
        assert_eq!(c.on_accepted(&[1, 2, 3]), [ack(3, true)]);
        assert_eq!(c.outstanding(), 0);
    }

    #[test]
    fn completions_above_an_outstanding_publish_are_acked_singly() {
        let mut c = Confirms::default();
        for _ in 0..4 {
            let s = c.next_seq();
            c.track(s, 1);
        }
        // seq 2 waits (say, on a slow queue): 1 is below it, 3 and 4 above.
        assert_eq!(c.on_accepted(&[4, 1, 3]), [ack(1, false), ack(3, false), ack(4, false)]);
        assert_eq!(c.on_accepted(&[2]), [ack(2, false)]);
    }

    #[test]
    fn fanout_publish_waits_for_every_queue() {
        let mut c = Confirms::default();
        let s = c.next_seq();
        c.track(s, 3);
        assert!(c.on_accepted(&[s]).is_empty());
        assert!(c.on_accepted(&[s]).is_empty());
        assert_eq!(c.on_accepted(&[s]), [ack(1, false)]);
    }

    #[test]
    fn unroutable_publish_is_acked_at_once_and_rejections_nack() {
        let mut c = Confirms::default();
        let a = c.next_seq();
        c.track(a, 1);
        let b = c.next_seq();
        c.track(b, 0);
        assert_eq!(c.acks_for(vec![b]), [ack(2, false)], "seq 1 still outstanding");
        assert_eq!(c.on_rejected(&[a]), [Confirm { tag: 1, multiple: false, ack: false }]);
        assert!(c.on_accepted(&[a]).is_empty(), "a rejected publish is not acked too");
    }
}
