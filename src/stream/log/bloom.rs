//! The per-chunk bloom filter of stream filtering (RabbitMQ 3.13), laid out as osiris lays it
//! out: `bloomSize` bytes (16..=255) right after the chunk header, bits numbered from the most
//! significant bit of the first byte, bit 0 reserved for "this chunk has records without a
//! filter value", each value setting two bits in 1..bits-1. A chunk none of whose records has a
//! filter value carries no filter (bloomSize 0).
//!
//! The two bit positions come from FNV-1a (two seeds), not from Erlang's `phash2` as in osiris:
//! the server is the only one that evaluates these filters, and what matters is that a chunk
//! holding a value always matches it (no false negatives). The hash is fixed: filters are on disk.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(seed: u64, v: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ seed;
    for &b in v {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The two bits a (non-empty) value sets in a filter of `bits` bits.
pub fn value_bits(v: &[u8], bits: usize) -> (usize, usize) {
    let m = (bits - 1) as u64;
    ((fnv1a(0, v) % m) as usize + 1, (fnv1a(0x9e37_79b9_7f4a_7c15, v) % m) as usize + 1)
}

fn set(bits: &mut [u8], i: usize) {
    bits[i / 8] |= 0x80 >> (i % 8);
}

fn is_set(bits: &[u8], i: usize) -> bool {
    bits[i / 8] & (0x80 >> (i % 8)) != 0
}

/// Accumulates one chunk's filter.
#[derive(Debug, Clone)]
pub struct BloomBuilder {
    bits: Vec<u8>,
    filtered: bool,
    unfiltered: bool,
}

impl BloomBuilder {
    pub fn new(size: u8) -> BloomBuilder {
        BloomBuilder { bits: vec![0; size.max(16) as usize], filtered: false, unfiltered: false }
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
        self.filtered = false;
        self.unfiltered = false;
    }

    /// A record's filter value; `None` or empty: unfiltered.
    pub fn insert(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) if !v.is_empty() => {
                let (a, b) = value_bits(v, self.bits.len() * 8);
                set(&mut self.bits, a);
                set(&mut self.bits, b);
                self.filtered = true;
            }
            _ => self.unfiltered = true,
        }
    }

    /// The filter to store, or `None` when no record had a filter value.
    pub fn bytes(&mut self) -> Option<&[u8]> {
        if !self.filtered {
            return None;
        }
        if self.unfiltered {
            set(&mut self.bits, 0);
        }
        Some(&self.bits)
    }
}

/// What a consumer asks for: chunks that may hold any of `values`, and (with
/// `match_unfiltered`) chunks holding records without a filter value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    pub values: Vec<Vec<u8>>,
    pub match_unfiltered: bool,
}

impl ChunkFilter {
    /// May a chunk with this bloom filter (empty: no filter values in the chunk) hold a
    /// wanted record? Never false for a chunk that does.
    pub fn may_match(&self, bloom: &[u8]) -> bool {
        if bloom.is_empty() {
            return self.match_unfiltered;
        }
        if self.match_unfiltered && is_set(bloom, 0) {
            return true;
        }
        let bits = bloom.len() * 8;
        self.values.iter().filter(|v| !v.is_empty()).any(|v| {
            let (a, b) = value_bits(v, bits);
            is_set(bloom, a) && is_set(bloom, b)
        }) || (self.match_unfiltered && self.values.iter().any(|v| v.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_layout() {
        for size in [16u8, 17, 100, 255] {
            let mut b = BloomBuilder::new(size);
            let values: Vec<Vec<u8>> = (0..40).map(|i| format!("value-{i}").into_bytes()).collect();
            for v in &values {
                b.insert(Some(v));
            }
            let bits = b.bytes().unwrap().to_vec();
            assert_eq!(bits.len(), size as usize);
            assert_eq!(bits[0] & 0x80, 0, "bit 0 only for unfiltered records");
            for v in &values {
                assert!(ChunkFilter { values: vec![v.clone()], match_unfiltered: false }.may_match(&bits));
            }
            let (x, y) = value_bits(b"value-0", size as usize * 8);
            assert!((1..size as usize * 8).contains(&x) && (1..size as usize * 8).contains(&y));
        }
    }

    #[test]
    fn unfiltered_records() {
        let mut b = BloomBuilder::new(16);
        b.insert(None);
        assert!(b.bytes().is_none(), "only unfiltered: no filter");
        b.insert(Some(b"eu"));
        let bits = b.bytes().unwrap().to_vec();
        assert_eq!(bits[0] & 0x80, 0x80);
        let want_us = ChunkFilter { values: vec![b"us".to_vec()], match_unfiltered: false };
        let want_us_or_none = ChunkFilter { values: vec![b"us".to_vec()], match_unfiltered: true };
        assert!(want_us_or_none.may_match(&bits));
        assert!(want_us_or_none.may_match(&[]));
        assert!(!want_us.may_match(&[]));
        let mut only_eu = BloomBuilder::new(16);
        only_eu.insert(Some(b"eu"));
        let bits = only_eu.bytes().unwrap().to_vec();
        assert!(
            !want_us_or_none.may_match(&bits) || {
                let (a, b) = value_bits(b"us", 128);
                bits[a / 8] & (0x80 >> (a % 8)) != 0 && bits[b / 8] & (0x80 >> (b % 8)) != 0
            }
        );
    }
}
