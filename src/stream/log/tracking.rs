//! Writer deduplication and consumer offset tracking, kept in the log itself as osiris keeps
//! it: a user chunk's trailer lists the last publishing id of each writer in the chunk, a
//! tracking delta chunk (type 1) carries stored consumer offsets, and a tracking snapshot chunk
//! (type 2) at the head of every segment carries all of it, so the last segment alone restores
//! the state after a restart, whatever retention deleted before it.
//!
//! Block format (osiris's trailer format), repeated to the end of the section:
//! `type u8 (0 sequence, 1 offset, 2 timestamp), id size u8, id bytes, data` with data
//! `chunk id u64, sequence u64` for type 0 and one u64 (offset) / i64 (timestamp) otherwise.

use std::collections::HashMap;

/// Most writer references remembered; past it the one whose last chunk is oldest is dropped.
pub const MAX_WRITERS: usize = 1024;
/// Most bytes of a writer or consumer reference (the id size is one byte).
pub const MAX_REFERENCE: usize = 255;

const SEQUENCE: u8 = 0;
const OFFSET: u8 = 1;
const TIMESTAMP: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    #[error("truncated tracking block")]
    Truncated,
    #[error("unknown tracking type {0}")]
    Type(u8),
    #[error("tracking id is not UTF-8")]
    Utf8,
}

/// The last stored publishing id of a writer, and the chunk it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterSeq {
    pub chunk_id: u64,
    pub seq: u64,
}

/// All tracking state of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    pub writers: HashMap<String, WriterSeq>,
    pub offsets: HashMap<String, u64>,
}

/// Append one writer-sequence block.
pub fn encode_sequence(out: &mut Vec<u8>, id: &str, chunk_id: u64, seq: u64) {
    out.push(SEQUENCE);
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&chunk_id.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Append one consumer-offset block.
pub fn encode_offset(out: &mut Vec<u8>, id: &str, offset: u64) {
    out.push(OFFSET);
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
}

impl Tracking {
    pub fn is_empty(&self) -> bool {
        self.writers.is_empty() && self.offsets.is_empty()
    }

    /// Every block of the state (the body of a snapshot chunk).
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        let mut writers: Vec<_> = self.writers.iter().collect();
        writers.sort_by(|a, b| a.0.cmp(b.0));
        for (id, w) in writers {
            encode_sequence(out, id, w.chunk_id, w.seq);
        }
        let mut offsets: Vec<_> = self.offsets.iter().collect();
        offsets.sort();
        for (id, o) in offsets {
            encode_offset(out, id, *o);
        }
    }

    /// Record a writer's publishing id (the larger one wins), evicting the oldest writer past
    /// [`MAX_WRITERS`].
    pub fn set_writer(&mut self, id: &str, chunk_id: u64, seq: u64) {
        match self.writers.get_mut(id) {
            Some(w) => {
                if seq >= w.seq {
                    *w = WriterSeq { chunk_id, seq };
                }
            }
            None => {
                if self.writers.len() >= MAX_WRITERS
                    && let Some(oldest) =
                        self.writers.iter().min_by_key(|(k, w)| (w.chunk_id, (*k).clone())).map(|(k, _)| k.clone())
                {
                    self.writers.remove(&oldest);
                }
                self.writers.insert(id.to_owned(), WriterSeq { chunk_id, seq });
            }
        }
    }

    /// Apply a section of blocks (a trailer, a delta or a snapshot body). Blocks before a
    /// malformed one are applied.
    pub fn apply(&mut self, mut b: &[u8]) -> Result<(), TrackingError> {
        while !b.is_empty() {
            if b.len() < 2 {
                return Err(TrackingError::Truncated);
            }
            let (kind, len) = (b[0], b[1] as usize);
            let data_len = match kind {
                SEQUENCE => 16,
                OFFSET | TIMESTAMP => 8,
                other => return Err(TrackingError::Type(other)),
            };
            let block = b.get(2..2 + len + data_len).ok_or(TrackingError::Truncated)?;
            let id = std::str::from_utf8(&block[..len]).map_err(|_| TrackingError::Utf8)?;
            let u = |at: usize| u64::from_be_bytes(block[len + at..len + at + 8].try_into().expect("8 bytes"));
            match kind {
                SEQUENCE => self.set_writer(id, u(0), u(8)),
                OFFSET => {
                    self.offsets.insert(id.to_owned(), u(0));
                }
                _ => {}
            }
            b = &b[2 + len + data_len..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_errors() {
        let mut t = Tracking::default();
        t.set_writer("w1", 10, 5);
        t.set_writer("w1", 12, 4);
        t.set_writer("w2", 11, 9);
        t.offsets.insert("c".into(), 77);
        assert_eq!(t.writers["w1"], WriterSeq { chunk_id: 10, seq: 5 }, "a lower id never goes back");
        let mut b = Vec::new();
        t.encode_snapshot(&mut b);
        let mut u = Tracking::default();
        u.apply(&b).unwrap();
        assert_eq!(u, t);
        for cut in 1..b.len() {
            let _ = Tracking::default().apply(&b[..cut]);
        }
        assert_eq!(Tracking::default().apply(&[9, 0]), Err(TrackingError::Type(9)));
        assert_eq!(Tracking::default().apply(&[1, 3, b'a']), Err(TrackingError::Truncated));
    }

    #[test]
    fn writers_are_bounded() {
        let mut t = Tracking::default();
        for i in 0..MAX_WRITERS as u64 + 10 {
            t.set_writer(&format!("w{i}"), i, 1);
        }
        assert_eq!(t.writers.len(), MAX_WRITERS);
        assert!(!t.writers.contains_key("w0"));
        assert!(t.writers.contains_key(&format!("w{}", MAX_WRITERS + 9)));
    }
}
