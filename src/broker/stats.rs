//! Message counters (RabbitMQ's `message_stats`: publish, confirm, deliver, get, ack, …) for
//! the management API and Prometheus. Each connection counts in plain fields of its own
//! ([`LocalCounters`]) and adds them to the broker-wide atomics once per loop turn, so the
//! per-message cost is an integer increment in the connection's own memory.

use std::sync::atomic::{AtomicU64, Ordering};

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

            /// Add a connection's counts and zero them.
            pub fn absorb(&self, local: &mut LocalCounters) {
                $(if local.$name != 0 {
                    self.$name.fetch_add(local.$name, Ordering::Relaxed);
                })*
                *local = LocalCounters::default();
            }
        }

        impl LocalCounters {
            pub fn is_zero(&self) -> bool {
                true $(&& self.$name == 0)*
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
    ack,
    redeliver,
    return_unroutable,
    drop_unroutable,
);

impl Snapshot {
    /// RabbitMQ's `deliver_get`: every delivery and get.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
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
}
