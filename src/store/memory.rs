//! In-memory message store: a deque indexed by sequence number.
//!
//! Sequence numbers are dense and increasing, so slot `seq - base` holds message `seq`;
//! removing one leaves a hole that is trimmed once it reaches the front. Every operation is
//! O(1) amortised, with no hashing and no per-message allocation beyond the deque's growth.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{MessageStore, StoreError};
use crate::message::Message;

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Sequence number of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<Arc<Message>>>,
    live: usize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn index(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base).map(|i| i as usize).filter(|i| *i < self.slots.len())
    }
}

impl MessageStore for MemoryStore {
    fn append(&mut self, seq: u64, msg: &Arc<Message>) -> Result<(), StoreError> {
        if self.slots.is_empty() {
            self.base = seq;
        }
        let next = self.base + self.slots.len() as u64;
        if seq < next {
            return Err(StoreError::OutOfOrder(seq));
        }
        for _ in next..seq {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(msg.clone()));
        self.live += 1;
        Ok(())
    }

    fn read(&self, seq: u64) -> Option<Arc<Message>> {
        self.index(seq).and_then(|i| self.slots[i].clone())
    }

    fn remove(&mut self, seq: u64) {
        let Some(i) = self.index(seq) else { return };
        if self.slots[i].take().is_some() {
            self.live -= 1;
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BasicProperties;

    fn msg(n: u8) -> Arc<Message> {
        Arc::new(Message::build(
            "".into(),
            "".into(),
            BasicProperties::default(),
            [bytes::Bytes::from(vec![n])].into_iter().collect(),
        ))
    }

    #[test]
    fn append_read_remove_in_any_order() {
        let mut s = MemoryStore::new();
        for seq in 5..10 {
            s.append(seq, &msg(seq as u8)).unwrap();
        }
        assert_eq!(s.len(), 5);
        assert_eq!(s.read(7).unwrap().body[0][0], 7);
        s.remove(7);
        assert!(s.read(7).is_none());
        s.remove(5);
        s.remove(6);
        assert_eq!(s.slots.len(), 2, "holes at the front (5, 6 and 7) are trimmed");
        assert_eq!(s.read(8).unwrap().body[0][0], 8);
        assert!(matches!(s.append(9, &msg(0)), Err(StoreError::OutOfOrder(9))));
        s.remove(8);
        s.remove(9);
        assert!(s.is_empty());
        s.append(20, &msg(20)).unwrap();
        assert_eq!(s.read(20).unwrap().body[0][0], 20);
        s.remove(4);
        s.remove(99);
        assert_eq!(s.len(), 1);
    }
}
