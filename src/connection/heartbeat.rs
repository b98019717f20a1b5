//! Heartbeat deadlines, computed from `now` (no timers inside).
//!
//! The broker sends a heartbeat when it has sent nothing for half the negotiated interval, and
//! gives up on a peer from which no byte at all has arrived for two whole intervals (any
//! inbound byte counts, not just heartbeat frames).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    Nothing,
    /// Send a heartbeat frame now (then call [`Heartbeat::sent`]).
    Send,
    /// The peer has been silent too long: drop the connection.
    TimedOut,
}

#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    last_rx_bytes: u64,
    last_rx: Instant,
    last_tx: Instant,
}

impl Heartbeat {
    /// `interval_secs` = 0 disables heartbeats (returns None).
    pub fn new(interval_secs: u16, now: Instant) -> Option<Self> {
        (interval_secs > 0).then(|| Heartbeat {
            interval: Duration::from_secs(interval_secs as u64),
            last_rx_bytes: 0,
            last_rx: now,
            last_tx: now,
        })
    }

    /// Count the peer as alive at `now` (while the broker itself is not reading the socket).
    pub fn touch(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// Note that output was written at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_tx = now;
    }

    /// Check the deadlines given the total bytes received so far.
    pub fn poll(&mut self, now: Instant, rx_bytes: u64) -> HeartbeatAction {
        if rx_bytes != self.last_rx_bytes {
            self.last_rx_bytes = rx_bytes;
            self.last_rx = now;
        }
        if now.duration_since(self.last_rx) >= 2 * self.interval {
            return HeartbeatAction::TimedOut;
        }
        if now.duration_since(self.last_tx) >= self.interval / 2 {
            return HeartbeatAction::Send;
        }
        HeartbeatAction::Nothing
    }

    /// When [`Heartbeat::poll`] should next be called.
    pub fn next_deadline(&self) -> Instant {
        (self.last_tx + self.interval / 2).min(self.last_rx + 2 * self.interval)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_at_half_interval_and_times_out_after_two_silent_intervals() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut hb = Heartbeat::new(10, t0).unwrap();
        assert_eq!(hb.poll(t0 + 4 * s, 0), HeartbeatAction::Nothing);
        assert_eq!(hb.poll(t0 + 5 * s, 0), HeartbeatAction::Send);
        hb.sent(t0 + 5 * s);
        assert_eq!(hb.next_deadline(), t0 + 10 * s);
        // Bytes arrived at 15 s: the silence clock restarts there.
        hb.sent(t0 + 15 * s);
        assert_eq!(hb.poll(t0 + 15 * s, 100), HeartbeatAction::Nothing);
        hb.sent(t0 + 34 * s);
        assert_eq!(hb.poll(t0 + 34 * s, 100), HeartbeatAction::Nothing);
        assert_eq!(hb.poll(t0 + 35 * s, 100), HeartbeatAction::TimedOut);
    }

    #[test]
    fn zero_disables() {
        assert!(Heartbeat::new(0, Instant::now()).is_none());
    }
}
