//! Retention (reference §6): which whole segments go, decided from their summaries alone.

use std::time::Duration;

use super::SegmentInfo;

/// Retention limits, both at whole-segment granularity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// `x-max-length-bytes`.
    pub max_bytes: Option<u64>,
    /// `x-max-age`.
    pub max_age: Option<Duration>,
}

/// How many of the oldest segments retention deletes (reference §6): by bytes, keep the newest
/// segment and older ones while the running total fits; by age, drop segments whose last chunk
/// is older than `now - max_age`. The active (last) segment and segments holding uncommitted
/// data (offsets from `committed_next`) are never deleted.
pub fn segments_to_delete(segments: &[SegmentInfo], retention: &Retention, now_ms: i64, committed_next: u64) -> usize {
    let sealed = segments.len().saturating_sub(1);
    let mut n = 0;
    if let Some(max) = retention.max_bytes {
        let mut total = 0u64;
        let mut keep = 0;
        for s in segments.iter().rev() {
            total = total.saturating_add(s.bytes);
            if keep > 0 && total > max {
                break;
            }
            keep += 1;
        }
        n = n.max(segments.len() - keep);
    }
    if let Some(age) = retention.max_age {
        let limit = now_ms.saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let old = segments[..sealed].iter().take_while(|s| s.last_timestamp.is_none_or(|t| t < limit)).count();
        n = n.max(old);
    }
    let committed = segments.iter().take_while(|s| s.next_offset <= committed_next).count();
    n.min(sealed).min(committed)
}
