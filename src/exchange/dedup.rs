//! The deduplication cache of an `x-message-deduplication` exchange (compatible with the
//! rabbitmq-message-deduplication plugin): a message whose `x-deduplication-header` value was
//! seen within the cache TTL is not routed. The cache holds at most `x-cache-size` entries;
//! the oldest go first when it is full.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use amq_protocol::types::AMQPValue;
use tokio::time::Instant;

/// The deduplication key of an `x-deduplication-header` value (exchange and queue level).
pub fn dedup_key(v: &AMQPValue) -> Vec<u8> {
    match v {
        AMQPValue::LongString(s) => s.as_bytes().to_vec(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
        other => format!("{other:?}").into_bytes(),
    }
}

#[derive(Debug)]
pub struct DedupCache {
    size: usize,
    ttl: Option<Duration>,
    /// key → expiry (None = until evicted).
    entries: HashMap<Vec<u8>, Option<Instant>>,
    /// Insertion order, for eviction.
    order: VecDeque<Vec<u8>>,
}

impl DedupCache {
    pub fn new(size: usize, ttl: Option<Duration>) -> Self {
        DedupCache { size: size.max(1), ttl, entries: HashMap::new(), order: VecDeque::new() }
    }

    /// Whether `key` is a duplicate; if not, remember it (for `ttl_override` or the cache TTL).
    pub fn check(&mut self, key: Vec<u8>, ttl_override: Option<Duration>, now: Instant) -> bool {
        if let Some(expiry) = self.entries.get(&key) {
            if expiry.is_none_or(|e| e > now) {
                return true;
            }
            self.entries.remove(&key);
            self.order.retain(|k| k != &key);
        }
        while self.entries.len() >= self.size {
            let Some(old) = self.order.pop_front() else { break };
            self.entries.remove(&old);
        }
        let expiry = ttl_override.or(self.ttl).map(|t| now + t);
        self.entries.insert(key.clone(), expiry);
        self.order.push_back(key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_ttl_and_size_bound() {
        let t0 = Instant::now();
        let mut c = DedupCache::new(2, Some(Duration::from_millis(100)));
        assert!(!c.check(b"a".to_vec(), None, t0));
        assert!(c.check(b"a".to_vec(), None, t0 + Duration::from_millis(99)));
        assert!(!c.check(b"a".to_vec(), None, t0 + Duration::from_millis(100)), "expired: routed again");
        assert!(!c.check(b"b".to_vec(), None, t0));
        assert!(!c.check(b"c".to_vec(), None, t0), "evicts the oldest (a)");
        assert!(!c.check(b"a".to_vec(), Some(Duration::from_secs(5)), t0 + Duration::from_millis(150)));
        assert!(c.check(b"a".to_vec(), None, t0 + Duration::from_secs(4)), "per-message TTL override");
    }
}
