//! Publisher rate limits (`[[rate_limits]]`, per vhost or per user, in messages/s and/or
//! bytes/s) — a feature RabbitMQ does not have. A publisher over its limit is slowed the way
//! flow control and alarms slow it: its connection stops reading its socket for a while, so
//! nothing is dropped and nothing is refused; TCP pushes back on the client.
//!
//! Each limit is a GCRA (virtual scheduling) meter shared by all the connections it covers:
//! every published message moves the meter's "theoretical arrival time" on by its cost
//! (1/rate seconds per message, size/rate per byte); a connection that finds it more than
//! [`TOLERANCE`] ahead of now pauses reading until it is not. The long-run rate is exact; a
//! burst is at most [`TOLERANCE`] worth of messages.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The burst a meter allows (how far ahead of now its arrival time may run).
pub const TOLERANCE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct RateLimit {
    /// Seconds per message / per byte (None: not limited on that axis).
    per_message: Option<f64>,
    per_byte: Option<f64>,
    /// Theoretical arrival times of the two meters.
    tat: Mutex<(Instant, Instant)>,
}

impl RateLimit {
    /// None when neither rate is set.
    pub fn new(messages_per_second: Option<f64>, bytes_per_second: Option<f64>) -> Option<RateLimit> {
        let inv = |r: Option<f64>| r.filter(|r| *r > 0.0).map(|r| 1.0 / r);
        let (per_message, per_byte) = (inv(messages_per_second), inv(bytes_per_second));
        if per_message.is_none() && per_byte.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(RateLimit { per_message, per_byte, tat: Mutex::new((now, now)) })
    }

    /// Account for `messages` published (`bytes` of bodies) at `now`; the time until which the
    /// publisher must pause, if it went over.
    pub fn charge(&self, messages: u64, bytes: u64, now: Instant) -> Option<Instant> {
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let step = |t: &mut Instant, per: Option<f64>, n: u64| {
            if let Some(per) = per {
                *t = (*t).max(now) + Duration::from_secs_f64(per * n as f64);
            }
        };
        step(&mut tat.0, self.per_message, messages);
        step(&mut tat.1, self.per_byte, bytes);
        let ahead = tat.0.max(tat.1);
        (ahead > now + TOLERANCE).then(|| ahead - TOLERANCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_holds_the_long_run_rate() {
        let l = RateLimit::new(Some(100.0), None).unwrap();
        let start = Instant::now();
        let mut now = start;
        let mut sent = 0u64;
        // A publisher that sends 10 at a time as soon as it may, for 10 simulated seconds.
        while now < start + Duration::from_secs(10) {
            sent += 10;
            if let Some(until) = l.charge(10, 0, now) {
                now = until;
            }
        }
        assert!((990..=1010).contains(&sent), "{sent} messages in 10 s at 100/s");
        assert!(RateLimit::new(None, Some(0.0)).is_none(), "no rate: no limit");
        let b = RateLimit::new(None, Some(1000.0)).unwrap();
        let pause = b.charge(1, 2000, start).expect("2000 bytes at 1000 B/s");
        assert!(pause - start >= Duration::from_millis(1900));
    }
}
