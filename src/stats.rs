//! Message counters (RabbitMQ's `message_stats`: publish, confirm, deliver, get, ack, …) for
//! the management API and Prometheus. Each connection counts in plain fields of its own
//! ([`LocalCounters`]) and adds them to the broker-wide atomics once per loop turn, so the
//! per-message cost is an integer increment in the connection's own memory. The same counts
//! are kept per channel (in the channel, read when the management API asks), per vhost (added
//! with the broker-wide ones) and, for exchanges, per exchange ([`ExchangeCounts`]); queues
//! count for themselves in their own task.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytestring::ByteString;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Broker-wide totals since start.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(pub $name: AtomicU64,)*
        }

        /// One connection's counts not yet added to the totals.
        #[derive(Debug, Default, Clone, Copy)]
        pub struct LocalCounters {
            $(pub $name: u64,)*
        }

        /// A copy of the totals.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $(pub $name: u64,)*
        }

        impl Snapshot {
            /// (name, value) of every counter, in RabbitMQ's `message_stats` names.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Add a connection's counts.
            pub fn add(&self, local: &LocalCounters) {
                $(if local.$name != 0 {
                    self.$name.fetch_add(local.$name, Ordering::Relaxed);
                })*
            }

            /// Add a connection's counts and zero them.
            pub fn absorb(&self, local: &mut LocalCounters) {
                self.add(local);
                *local = LocalCounters::default();
            }
        }

        impl LocalCounters {
            pub fn is_zero(&self) -> bool {
                true $(&& self.$name == 0)*
            }
        }

        impl From<LocalCounters> for Snapshot {
            fn from(l: LocalCounters) -> Snapshot {
                Snapshot { $($name: l.$name,)* }
            }
        }
    };
}

counters!(
    publish,
    confirm,
    deliver,
    deliver_no_ack,
    get,
    get_no_ack,
    get_empty,
    ack,
    redeliver,
    return_unroutable,
    drop_unroutable,
    // Churn (RabbitMQ's overview `churn_rates`).
    connection_created,
    connection_closed,
    channel_created,
    channel_closed,
    queue_declared,
    queue_created,
    queue_deleted,
);

impl Snapshot {
    /// RabbitMQ's `deliver_get`: every delivery and get.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// A connection's socket traffic: bytes and reads received, bytes and writes sent (RabbitMQ's
/// `recv_oct`, `recv_cnt`, `send_oct`, `send_cnt`). Updated once per read and per turn's write.
#[derive(Debug, Default)]
pub struct Octets {
    pub recv_oct: AtomicU64,
    pub recv_cnt: AtomicU64,
    pub send_oct: AtomicU64,
    pub send_cnt: AtomicU64,
}

impl Octets {
    pub fn received(&self, n: usize) {
        self.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.recv_cnt.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sent(&self, n: usize) {
        self.send_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.send_cnt.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> [u64; 4] {
        [&self.recv_oct, &self.recv_cnt, &self.send_oct, &self.send_cnt].map(|a| a.load(Ordering::Relaxed))
    }
}

/// Exchanges one connection published to since its counts were last added to its vhost's
/// [`ExchangeCounts`]: (exchange, `publish_in`, `publish_out`). Short: a connection adds them
/// every loop turn, and earlier once [`LocalExchangeCounts::FULL`] exchanges are listed.
#[derive(Debug, Default)]
pub struct LocalExchangeCounts(Vec<(ByteString, u64, u64)>);

impl LocalExchangeCounts {
    pub const FULL: usize = 32;

    /// One message published to `exchange` and routed to `routed` queues; true once full.
    pub fn count(&mut self, exchange: &ByteString, routed: usize) -> bool {
        match self.0.iter_mut().find(|e| e.0 == *exchange) {
            Some(e) => {
                e.1 += 1;
                e.2 += routed as u64;
            }
            None => self.0.push((exchange.clone(), 1, routed as u64)),
        }
        self.0.len() >= Self::FULL
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A vhost's per-exchange totals: exchange name → (`publish_in`, `publish_out`). The default
/// exchange is "".
#[derive(Debug, Default)]
pub struct ExchangeCounts(Mutex<HashMap<String, (u64, u64)>>);

impl ExchangeCounts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a connection's counts and clear them.
    pub fn absorb(&self, local: &mut LocalExchangeCounts) {
        let mut m = self.map();
        for (name, i, o) in local.0.drain(..) {
            match m.get_mut(&*name) {
                Some(e) => {
                    e.0 += i;
                    e.1 += o;
                }
                None => {
                    m.insert(name.to_string(), (i, o));
                }
            }
        }
    }

    /// (`publish_in`, `publish_out`) of one exchange.
    pub fn get(&self, name: &str) -> (u64, u64) {
        self.map().get(name).copied().unwrap_or_default()
    }

    /// Drop the counts of exchanges that no longer exist (after a topology change deleted
    /// some), so exchanges declared and deleted in a loop leave nothing behind.
    pub fn forget_gone(&self, exists: impl Fn(&str) -> bool) {
        self.map().retain(|k, _| exists(k));
    }

    /// Every exchange's counts, dropping those of exchanges that no longer exist.
    pub fn snapshot_of(&self, exists: impl Fn(&str) -> bool) -> HashMap<String, (u64, u64)> {
        let mut m = self.map();
        m.retain(|k, _| exists(k));
        m.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_counts_reach_the_totals_once() {
        let c = Counters::default();
        let mut l = LocalCounters { publish: 3, get_no_ack: 2, ..Default::default() };
        c.absorb(&mut l);
        assert!(l.is_zero());
        c.absorb(&mut l);
        let s = c.snapshot();
        assert_eq!((s.publish, s.get_no_ack, s.deliver_get()), (3, 2, 2));
        assert!(s.fields().contains(&("publish", 3)));
    }

    #[test]
    fn exchange_counts_add_up_per_exchange() {
        let (x, y) = (ByteString::from("x"), ByteString::from("y"));
        let mut l = LocalExchangeCounts::default();
        assert!(!l.count(&x, 2));
        l.count(&x, 0);
        l.count(&y, 1);
        let totals = ExchangeCounts::default();
        totals.absorb(&mut l);
        assert!(l.is_empty());
        l.count(&x, 1);
        totals.absorb(&mut l);
        assert_eq!((totals.get("x"), totals.get("y"), totals.get("z")), ((3, 3), (1, 1), (0, 0)));
        assert_eq!(totals.snapshot_of(|n| n == "y").len(), 1);
        assert_eq!(totals.get("x"), (0, 0), "forgotten once the exchange is gone");
        for i in 0..LocalExchangeCounts::FULL - 1 {
            assert!(!l.count(&ByteString::from(format!("e{i}")), 1));
        }
        assert!(l.count(&ByteString::from("last"), 1), "full: to be added now");
        totals.absorb(&mut l);
        totals.forget_gone(|n| n == "last");
        assert_eq!((totals.get("e0"), totals.get("last")), ((0, 0), (1, 1)), "stale entries dropped");
    }
}
