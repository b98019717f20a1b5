//! Counters shared by all connections, latency histograms, and CPU/RSS readings from /proc.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Log-linear histogram: exact below 128, then 64 sub-buckets per power of two (≤ 1.6% error).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB: u32 = 64;
const BUCKETS: usize = 58 * SUB as usize + 2 * SUB as usize;

fn index(v: u64) -> usize {
    if v < 2 * SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - 6;
    (shift * SUB) as usize + (v >> shift) as usize
}

/// The midpoint of bucket `i`.
fn value(i: usize) -> u64 {
    if i < 2 * SUB as usize {
        return i as u64;
    }
    let shift = (i / SUB as usize - 1) as u32;
    let mantissa = (i % SUB as usize) as u64 + SUB as u64;
    (mantissa << shift) + ((1u64 << shift) >> 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

impl Histogram {
    /// Add another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), or None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
            self.total = 0;
            self.max = 0;
        }
    }
}

/// Latencies of the current progress interval and of the whole measurement.
#[derive(Default)]
pub struct Latency {
    pub interval: Histogram,
    pub total: Histogram,
}

/// Counters every task adds to (once per batch, not per message).
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub received: AtomicU64,
    /// Producers that have published their message count (and had it confirmed).
    pub producers_done: AtomicU64,
    /// When the latest delivery batch arrived (ns since the UNIX epoch).
    pub last_delivery_ns: AtomicU64,
    /// Chunks delivered to stream-protocol consumers.
    pub chunks: AtomicU64,
    /// Times a stream-protocol consumer's next chunk did not start where the previous ended.
    pub offset_gaps: AtomicU64,
    pub latency: Mutex<Latency>,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Record a batch of latencies (µs) under one lock.
    pub fn record_latencies(&self, us: &[u64]) {
        if us.is_empty() {
            return;
        }
        let mut l = self.latency.lock().expect("latency lock");
        for &v in us {
            l.interval.record(v);
            l.total.record(v);
        }
    }
}

/// Nanoseconds since the UNIX epoch: what the body's first 8 octets carry.
#[inline]
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Resident set size of a process in bytes (Linux /proc), if readable.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    memory(pid).map(|(rss, _)| rss)
}

/// Resident set size and its anonymous part (heap, stacks: not file pages mapped from disk),
/// in bytes (Linux /proc), if readable.
pub fn memory(pid: u32) -> Option<(u64, Option<u64>)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("RssAnon:")))
}

/// CPU time (user + system) a process has used so far, in seconds (Linux /proc, USER_HZ 100).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 65_535, 1 << 40, u64::MAX / 2] {
            let i = index(v);
            assert!(i >= last && i < BUCKETS, "{v}");
            last = i;
            let back = value(i);
            assert!(back.abs_diff(v) as f64 <= v as f64 * 0.016 + 1.0, "{v} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((490..=510).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((975..=1000).contains(&p99), "{p99}");
        assert_eq!(h.max(), 1000);
        assert_eq!(h.quantile(1.0), Some(1000));
        h.clear();
        assert_eq!(h.count(), 0);
    }
}
