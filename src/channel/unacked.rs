//! Deliveries awaiting acknowledgement on one channel, by delivery tag (pure).
//!
//! Implements RabbitMQ's rules for `basic.ack`/`nack`/`reject`: tags are per channel and
//! start at 1; `multiple=true` settles every outstanding tag up to N but N itself must be
//! outstanding; tag 0 with `multiple=true` settles everything; anything else unknown is
//! `406 PRECONDITION_FAILED - unknown delivery tag N`.

use std::collections::VecDeque;

use crate::error::{AmqpError, AmqpResult};
use crate::queue::QueueHandle;

/// One outstanding delivery.
#[derive(Debug, Clone)]
pub struct Pending {
    pub queue: QueueHandle,
    /// The queue's sequence number of the message.
    pub seq: u64,
    /// Delivered to a consumer (counts against the channel's shared prefetch), not basic.get.
    pub from_consumer: bool,
}

/// The sequence numbers of `pending` per queue, added to `groups` (one entry per queue, so each
/// queue gets one command for all of them).
pub fn group_by_queue(groups: &mut Vec<(QueueHandle, Vec<u64>)>, pending: impl IntoIterator<Item = Pending>) {
    for p in pending {
        match groups.iter_mut().find(|(q, _)| q.tx.same_channel(&p.queue.tx)) {
            Some((_, seqs)) => seqs.push(p.seq),
            None => groups.push((p.queue, vec![p.seq])),
        }
    }
}

/// Outstanding deliveries in tag order. Tags only grow, so a delivery is a push at the back and
/// in-order acks take from the front: no allocation per delivery (a tree map took one per
/// dozen), and `multiple` is one drain.
#[derive(Debug, Default)]
pub struct Unacked {
    next_tag: u64,
    pending: VecDeque<(u64, Pending)>,
}

impl Unacked {
    /// The next delivery tag (every delivery and get-ok takes one, acked or not).
    pub fn next_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    pub fn insert(&mut self, tag: u64, p: Pending) {
        match self.pending.back() {
            Some((last, _)) if *last >= tag => match self.find(tag) {
                Ok(i) => self.pending[i] = (tag, p),
                Err(i) => self.pending.insert(i, (tag, p)),
            },
            _ => self.pending.push_back((tag, p)),
        }
    }

    fn find(&self, tag: u64) -> Result<usize, usize> {
        self.pending.binary_search_by_key(&tag, |(t, _)| *t)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Take the deliveries an ack/nack/reject with (`tag`, `multiple`) settles.
    pub fn take(&mut self, tag: u64, multiple: bool) -> AmqpResult<Vec<(u64, Pending)>> {
        if multiple && tag == 0 {
            return Ok(self.pending.drain(..).collect());
        }
        let Ok(i) = self.find(tag) else {
            return Err(AmqpError::precondition(format_args!("unknown delivery tag {tag}")));
        };
        if multiple {
            return Ok(self.pending.drain(..=i).collect());
        }
        Ok(self.pending.remove(i).into_iter().collect())
    }

    /// Take every outstanding delivery (recover, channel close).
    pub fn take_all(&mut self) -> Vec<Pending> {
        self.pending.drain(..).map(|(_, p)| p).collect()
    }

    /// Put settled-but-uncommitted deliveries back (transaction rollback).
    pub fn restore(&mut self, entries: Vec<(u64, Pending)>) {
        for (tag, p) in entries {
            self.insert(tag, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn filled(n: u64) -> Unacked {
        let (tx, _rx) = mpsc::channel(1);
        let q = QueueHandle {
            name: "q".into(),
            tx,
            ctl: mpsc::unbounded_channel().0,
            admission: Default::default(),
            activity: Default::default(),
        };
        let mut u = Unacked::default();
        for _ in 0..n {
            let t = u.next_tag();
            u.insert(t, Pending { queue: q.clone(), seq: t * 10, from_consumer: true });
        }
        u
    }

    #[test]
    fn single_and_multiple() {
        let mut u = filled(5);
        assert_eq!(u.take(2, false).unwrap()[0].1.seq, 20);
        let e = u.take(2, false).unwrap_err();
        assert_eq!(e.text, "PRECONDITION_FAILED - unknown delivery tag 2");
        let m: Vec<u64> = u.take(4, true).unwrap().iter().map(|(_, p)| p.seq).collect();
        assert_eq!(m, [10, 30, 40]);
        assert_eq!(u.len(), 1);
    }

    #[test]
    fn multiple_needs_the_tag_itself_outstanding() {
        let mut u = filled(3);
        u.take(3, false).unwrap();
        assert!(u.take(3, true).is_err(), "3 settled already, even though 1 and 2 are outstanding");
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn restored_deliveries_keep_tag_order() {
        let mut u = filled(6);
        let taken = u.take(2, true).unwrap();
        let middle = u.take(4, false).unwrap();
        u.restore(middle);
        u.restore(taken);
        let tags: Vec<u64> = u.take(0, true).unwrap().iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn tag_zero() {
        let mut u = filled(3);
        assert_eq!(u.take(0, false).unwrap_err().text, "PRECONDITION_FAILED - unknown delivery tag 0");
        assert_eq!(u.take(0, true).unwrap().len(), 3);
        assert!(u.take(0, true).unwrap().is_empty(), "no error when nothing is outstanding");
        assert_eq!(u.next_tag(), 4, "tags are never reused");
    }
}
