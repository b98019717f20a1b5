//! Message rates for the API's `message_stats`: the broker's counters sampled every
//! [`INTERVAL`] (RabbitMQ's `collect_statistics_interval`, 5 s); a rate is the change between
//! the last two samples per second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::broker::Broker;
use crate::broker::stats::Snapshot;

pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept (a minute).
const KEPT: usize = 13;

#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, Snapshot)>>,
}

impl Rates {
    /// Start sampling `broker`'s counters until it shuts down.
    pub fn start(broker: &Arc<Broker>) -> Arc<Rates> {
        let rates = Arc::new(Rates::default());
        let (r, b) = (rates.clone(), broker.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tokio::select! {
                    _ = b.shutdown.cancelled() => break,
                    _ = tick.tick() => r.sample(Instant::now(), b.counters.snapshot()),
                }
            }
        });
        rates
    }

    pub fn sample(&self, at: Instant, s: Snapshot) {
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((at, s));
        while q.len() > KEPT {
            q.pop_front();
        }
    }

    /// Per-second change of each counter over the last interval (0 before two samples).
    fn per_second(&self) -> Vec<(&'static str, f64)> {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(&(t1, s1)), Some(&(t0, s0))) = (q.back(), q.len().checked_sub(2).and_then(|i| q.get(i))) else {
            return Snapshot::default().fields().into_iter().map(|(k, _)| (k, 0.0)).collect();
        };
        let dt = (t1 - t0).as_secs_f64().max(0.001);
        s1.fields().into_iter().zip(s0.fields()).map(|((k, a), (_, b))| (k, a.saturating_sub(b) as f64 / dt)).collect()
    }

    /// RabbitMQ's `message_stats` object for the totals `now`: each counter and its
    /// `_details.rate`, plus `deliver_get`.
    pub fn message_stats(&self, now: Snapshot) -> Value {
        let rates = self.per_second();
        let mut m = Map::new();
        let rate_of = |k: &str| rates.iter().find(|(n, _)| *n == k).map_or(0.0, |(_, r)| *r);
        for (k, v) in now.fields() {
            m.insert(k.into(), v.into());
            m.insert(format!("{k}_details"), json!({"rate": round(rate_of(k))}));
        }
        let dg = ["deliver", "deliver_no_ack", "get", "get_no_ack"].iter().map(|k| rate_of(k)).sum::<f64>();
        m.insert("deliver_get".into(), now.deliver_get().into());
        m.insert("deliver_get_details".into(), json!({"rate": round(dg)}));
        Value::Object(m)
    }
}

fn round(r: f64) -> f64 {
    (r * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_change_over_the_last_interval() {
        let r = Rates::default();
        let t = Instant::now();
        let stats = |p| Snapshot { publish: p, ..Default::default() };
        assert_eq!(r.message_stats(stats(5))["publish_details"]["rate"], 0.0, "no samples yet");
        r.sample(t, stats(100));
        r.sample(t + Duration::from_secs(5), stats(600));
        let m = r.message_stats(stats(600));
        assert_eq!((m["publish"].clone(), m["publish_details"]["rate"].clone()), (json!(600), json!(100.0)));
    }
}
