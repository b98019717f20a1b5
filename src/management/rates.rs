//! The API's statistics over time: every [`INTERVAL`] (RabbitMQ's `collect_statistics_interval`,
//! 5 s, on wall-clock multiples of it) the sampler reads every object's counters and lengths —
//! the node's and each vhost's counters, each queue's counters and depth (one `QueueCmd::Info`
//! per queue), each exchange's `publish_in`/`publish_out`, each connection's octets and each
//! channel's counters — and keeps them for [`RETENTION`]. A rate (`*_details.rate`) is the
//! change over the last interval per second; `?msg_rates_age=&msg_rates_incr=` (and
//! `lengths_…` for depths, `data_rates_…` for octets) add RabbitMQ's `samples`, `avg` and
//! `avg_rate`, the series the web UI plots.
//!
//! A series stores a point only when a value changed (an idle queue costs one point; a queue
//! that never had anything costs none), and the value at a time is that of the last point at or
//! before it. Queues whose task did nothing since the last sample are not asked again
//! ([`crate::queue::QueueHandle::activity`]), so idle queues cost the sampler nothing but a
//! load. Objects that disappeared are forgotten at the next sample. Nothing here is on the message path: queues, connections and
//! channels count in their own memory (see [`crate::stats`]) and are read from here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::broker::Broker;
use crate::stats::Snapshot;

pub const INTERVAL: Duration = Duration::from_secs(5);
const INTERVAL_MS: u64 = INTERVAL.as_millis() as u64;
/// How long samples are kept: RabbitMQ's first retention step (10 minutes at 5 s).
pub const RETENTION: Duration = Duration::from_secs(600);
/// Most samples one `*_details.samples` list may have (a request's age / incr): what the kept
/// 10 minutes hold at the 5 s interval. It bounds the answer to a request asking for a long age
/// at a small increment (each queue of a listed page carries these lists for every field).
const MAX_SAMPLES: u64 = RETENTION.as_secs() / INTERVAL.as_secs();

/// The message counters every object kind with `message_stats` samples, then `deliver_get`.
pub fn counter_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Snapshot::default().fields().into_iter().map(|(k, _)| k).collect();
    v.push("deliver_get");
    v
}

/// Queue depths (sampled for the node, vhosts and queues after the counters).
pub const LENGTHS: [&str; 3] = ["messages", "messages_ready", "messages_unacknowledged"];
pub const EXCHANGE_FIELDS: [&str; 2] = ["publish_in", "publish_out"];
pub const OCTET_FIELDS: [&str; 2] = ["recv_oct", "send_oct"];

/// Whose statistics a series holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Node,
    VHost(String),
    Queue(String, String),
    Exchange(String, String),
    Connection(u64),
    Channel(u64, u16),
}

/// One sample of an object: its values in the order of its kind's field list.
pub type Values = Vec<u64>;

/// Counter values, as [`counter_names`].
pub fn counter_values(c: Snapshot) -> Values {
    let mut v: Values = c.fields().into_iter().map(|(_, n)| n).collect();
    v.push(c.deliver_get());
    v
}

/// Counter values (as [`counter_names`]) followed by the depths (as [`LENGTHS`]).
pub fn counters_and_lengths(c: Snapshot, lengths: [u64; 3]) -> Values {
    let mut v = counter_values(c);
    v.extend(lengths);
    v
}

/// The depth fields (as [`LENGTHS`]) of `ready` and `unacked` messages, for [`Rates::stats`].
pub fn lengths(ready: u64, unacked: u64) -> [(&'static str, u64); 3] {
    [(LENGTHS[0], ready + unacked), (LENGTHS[1], ready), (LENGTHS[2], unacked)]
}

/// Bytes received and sent by the connections of `vhost` among `conns` (those open now).
pub fn vhost_octets(conns: &[Arc<crate::broker::connections::ConnectionInfo>], vhost: &str) -> (u64, u64) {
    conns.iter().filter(|c| c.vhost == vhost).fold((0, 0), |(r, s), c| {
        let [recv, _, send, _] = c.details.octets.get();
        (r + recv, s + send)
    })
}

#[derive(Debug)]
struct Series {
    names: Arc<[&'static str]>,
    /// (timestamp ms, values), oldest first; a point only when something changed.
    points: VecDeque<(u64, Box<[u64]>)>,
}

impl Series {
    fn at(&self, t: u64) -> Option<&[u64]> {
        let i = self.points.partition_point(|(ts, _)| *ts <= t);
        i.checked_sub(1).map(|i| &*self.points[i].1)
    }
}

#[derive(Debug, Default)]
struct Inner {
    series: HashMap<Key, Series>,
    /// Timestamp of the last sample (ms since the epoch; 0 before the first).
    last: u64,
}

/// The samples of every object.
#[derive(Debug, Default)]
pub struct Rates {
    inner: Mutex<Inner>,
    /// Each queue's activity count and depths when it was last asked.
    queues: Mutex<QueueCache>,
    /// Each connection's traffic when its channels were last asked, and its channels with
    /// counts.
    connections: Mutex<ConnCache>,
}

type ConnCache = HashMap<u64, ([u64; 2], Vec<u16>)>;

/// Each queue (by its activity counter's address; the entry holds the counter, so the address
/// cannot be reused while it is cached) as it was when last asked.
type QueueCache = HashMap<usize, CachedQueue>;

#[derive(Debug)]
struct CachedQueue {
    activity: Arc<std::sync::atomic::AtomicU64>,
    /// The activity count then.
    count: u64,
    lengths: [u64; 3],
    /// Whether it ever had a non-zero value (only then does it have a series to keep).
    used: bool,
}

/// One object's sample: its values, or None when unchanged since the last one.
pub type Sample = (Key, Arc<[&'static str]>, Option<Values>);

/// `?xxx_age=&xxx_incr=` of a request, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    age: u64,
    incr: u64,
}

/// The sample windows a request asked for: (messages, lengths, data).
#[derive(Debug, Clone, Copy, Default)]
pub struct Windows {
    msg: Option<Window>,
    lengths: Option<Window>,
    data: Option<Window>,
}

impl Windows {
    pub fn from_query(q: &HashMap<String, String>) -> Windows {
        let one = |prefix: &str| {
            let age: u64 = q.get(&format!("{prefix}_age"))?.parse().ok()?;
            let incr: u64 = q.get(&format!("{prefix}_incr"))?.parse().ok().filter(|i| *i > 0)?;
            Some(Window { age: age.saturating_mul(1000), incr: incr.saturating_mul(1000) })
        };
        Windows { msg: one("msg_rates"), lengths: one("lengths"), data: one("data_rates") }
    }

    fn for_field(&self, name: &str) -> Option<Window> {
        if LENGTHS.contains(&name) {
            self.lengths
        } else if OCTET_FIELDS.contains(&name) {
            self.data
        } else {
            self.msg
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Rates {
    /// Start sampling `broker` until it shuts down.
    pub fn start(broker: &Arc<Broker>) -> Arc<Rates> {
        let rates = Arc::new(Rates::default());
        let (r, b) = (rates.clone(), broker.clone());
        tokio::spawn(async move {
            loop {
                // The next wall-clock multiple of the interval, as RabbitMQ aligns its samples.
                let wait = INTERVAL_MS - now_ms() % INTERVAL_MS;
                tokio::select! {
                    _ = b.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                }
                let ts = now_ms() / INTERVAL_MS * INTERVAL_MS;
                let samples = r.collect(&b).await;
                r.record(ts, samples);
            }
        });
        rates
    }

    /// Add one sample of every object at `ts` (ms); objects absent from it are forgotten.
    pub fn record(&self, ts: u64, samples: Vec<Sample>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut old = std::mem::take(&mut inner.series);
        let horizon = ts.saturating_sub(RETENTION.as_millis() as u64);
        for (key, names, values) in samples {
            let mut s = old.remove(&key).unwrap_or(Series { names, points: VecDeque::new() });
            match values {
                // Nothing yet and all zero: no point needed (a missing value reads as 0).
                Some(v) if s.points.is_empty() && v.iter().all(|x| *x == 0) => continue,
                Some(v) if s.points.back().is_none_or(|(_, last)| **last != *v) => {
                    s.points.push_back((ts, v.into_boxed_slice()));
                }
                _ => {}
            }
            if s.points.is_empty() {
                continue;
            }
            // Keep the newest point at or before the horizon: it is the value from then on.
            while s.points.len() >= 2 && s.points[1].0 <= horizon {
                s.points.pop_front();
            }
            inner.series.insert(key, s);
        }
        inner.last = ts;
    }

    /// RabbitMQ's statistics object for `key`: each `(name, current value)` and its
    /// `name_details` (`rate`, plus `samples`/`avg`/`avg_rate` for the windows asked for).
    pub fn stats(&self, key: &Key, now: &[(&str, u64)], w: &Windows) -> Map<String, Value> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let series = inner.series.get(key);
        let mut m = Map::new();
        for &(name, value) in now {
            let i = series.and_then(|s| s.names.iter().position(|n| *n == name));
            let value_at = |t: u64| -> Option<u64> { Some(series?.at(t)?[i?]) };
            let mut d = Map::new();
            let rate = match (value_at(inner.last), value_at(inner.last.saturating_sub(INTERVAL_MS))) {
                (Some(b), Some(a)) => (b as f64 - a as f64) / INTERVAL.as_secs_f64(),
                _ => 0.0,
            };
            d.insert("rate".into(), round(rate).into());
            if let Some(win) = w.for_field(name) {
                let end = inner.last / win.incr * win.incr;
                let n = (win.age / win.incr).min(MAX_SAMPLES) + 1;
                let samples: Vec<(u64, u64)> = (0..n)
                    .map(|k| end.saturating_sub(k.saturating_mul(win.incr)))
                    .map(|t| (value_at(t).unwrap_or(0), t))
                    .collect();
                let first = samples.last().map_or(0, |s| s.0);
                let span = (n - 1).saturating_mul(win.incr);
                let avg_rate = if span == 0 { 0.0 } else { (value as f64 - first as f64) / (span as f64 / 1000.0) };
                let avg = samples.iter().map(|s| s.0 as f64).sum::<f64>() / n as f64;
                let list: Vec<Value> = samples.iter().map(|(v, t)| json!({"sample": v, "timestamp": t})).collect();
                d.insert("samples".into(), Value::Array(list));
                d.insert("avg_rate".into(), avg_rate.into());
                d.insert("avg".into(), avg.into());
            }
            m.insert(name.into(), value.into());
            m.insert(format!("{name}_details"), Value::Object(d));
        }
        m
    }

    /// `message_stats` of an object whose counters are `c`, limited to `names`.
    pub fn message_stats(&self, key: &Key, c: Snapshot, names: &[&str], w: &Windows) -> Value {
        let all: Vec<(&str, u64)> = c
            .fields()
            .into_iter()
            .chain([("deliver_get", c.deliver_get())])
            .filter(|(k, _)| names.contains(k))
            .collect();
        Value::Object(self.stats(key, &all, w))
    }
}

/// A request's view of the statistics: the samples and the windows its query asked for.
pub struct Stats {
    rates: Arc<Rates>,
    windows: Windows,
}

impl Stats {
    /// See [`Rates::stats`].
    pub fn stats(&self, key: &Key, now: &[(&str, u64)]) -> Map<String, Value> {
        self.rates.stats(key, now, &self.windows)
    }

    /// See [`Rates::message_stats`].
    pub fn message_stats(&self, key: &Key, c: Snapshot, names: &[&str]) -> Value {
        self.rates.message_stats(key, c, names, &self.windows)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Stats {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Stats, Self::Rejection> {
        let rates = parts.extensions.get::<Arc<Rates>>().cloned().unwrap_or_default();
        let query =
            axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
        Ok(Stats { rates, windows: Windows::from_query(&query) })
    }
}

/// RabbitMQ's queue `message_stats` keys.
pub const QUEUE_MESSAGE_STATS: &[&str] =
    &["publish", "deliver", "deliver_no_ack", "get", "get_no_ack", "get_empty", "ack", "redeliver", "deliver_get"];

/// RabbitMQ's channel (and node/vhost) `message_stats` keys.
pub const CHANNEL_MESSAGE_STATS: &[&str] = &[
    "publish",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "ack",
    "redeliver",
    "deliver_get",
];

impl Rates {
    /// Read every object's counters and lengths once.
    async fn collect(&self, b: &Broker) -> Vec<Sample> {
        let mut counters_names = counter_names();
        counters_names.extend(LENGTHS);
        let cl: Arc<[&'static str]> = counters_names.clone().into();
        counters_names.extend(OCTET_FIELDS);
        let vhost_names: Arc<[&'static str]> = counters_names.into();
        let conns = b.connections.snapshot();
        let xs: Arc<[&'static str]> = Arc::new(EXCHANGE_FIELDS);
        let octets: Arc<[&'static str]> = Arc::new(OCTET_FIELDS);
        let channel: Arc<[&'static str]> = counter_names().into();
        let mut out = Vec::new();
        let mut node_lengths = [0u64; 3];
        let mut seen = std::collections::HashSet::new();
        let mut cache = std::mem::take(&mut *self.queue_cache());
        for v in b.vhosts_sorted() {
            let t = v.snapshot();
            let mut lengths = [0u64; 3];
            for q in t.queues.values() {
                let activity = &q.handle.activity;
                let ptr = Arc::as_ptr(activity) as usize;
                let count = activity.load(std::sync::atomic::Ordering::Relaxed);
                let cached = cache.get(&ptr).filter(|c| Arc::ptr_eq(&c.activity, activity));
                let (l, values, used) = match cached {
                    Some(c) if c.count == count => (c.lengths, None, c.used),
                    _ => {
                        let was_used = cached.is_some_and(|c| c.used);
                        let Some(i) = q.handle.info().await else { continue };
                        let (r, u) = (i.messages_ready as u64, i.messages_unacknowledged as u64);
                        let l = [r + u, r, u];
                        let values = counters_and_lengths(i.counters.into(), l);
                        let used = was_used || values.iter().any(|x| *x != 0);
                        let entry = CachedQueue { activity: activity.clone(), count, lengths: l, used };
                        cache.insert(ptr, entry);
                        (l, Some(values), used)
                    }
                };
                for k in 0..3 {
                    lengths[k] += l[k];
                }
                seen.insert(ptr);
                // A queue that never had anything has no series: nothing to send for it.
                if used {
                    out.push((Key::Queue(v.name().into(), q.name.clone()), cl.clone(), values));
                }
            }
            for k in 0..3 {
                node_lengths[k] += lengths[k];
            }
            let mut values = counters_and_lengths(v.counters.snapshot(), lengths);
            let (recv, send) = vhost_octets(&conns, v.name());
            values.extend([recv, send]);
            out.push((Key::VHost(v.name().into()), vhost_names.clone(), Some(values)));
            let counts = v.exchange_counts.snapshot_of(|x| x.is_empty() || t.exchanges.contains_key(x));
            for (x, (i, o)) in counts {
                out.push((Key::Exchange(v.name().into(), x), xs.clone(), Some(vec![i, o])));
            }
        }
        cache.retain(|ptr, _| seen.contains(ptr));
        *self.queue_cache() = cache;
        out.push((Key::Node, cl, Some(counters_and_lengths(b.counters.snapshot(), node_lengths))));
        // A connection whose traffic did not change has the same channel counters as last time:
        // only the others are asked (idle connections cost the sampler nothing).
        let mut known = std::mem::take(&mut *self.conn_cache());
        let mut ask = Vec::new();
        for c in &conns {
            let [recv, _, send, _] = c.details.octets.get();
            out.push((Key::Connection(c.id), octets.clone(), Some(vec![recv, send])));
            match known.get(&c.id).filter(|(o, _)| *o == [recv, send]) {
                Some((_, used)) => {
                    out.extend(used.iter().map(|n| (Key::Channel(c.id, *n), channel.clone(), None)));
                }
                None => ask.push((c, [recv, send])),
            }
        }
        let described = futures_util::future::join_all(ask.iter().map(|(c, _)| c.channels_summary())).await;
        for ((c, traffic), chans) in ask.into_iter().zip(described) {
            let mut used = Vec::new();
            for ch in chans.unwrap_or_default() {
                let v = counter_values(ch.counters.into());
                if v.iter().any(|x| *x != 0) {
                    used.push(ch.number);
                    out.push((Key::Channel(c.id, ch.number), channel.clone(), Some(v)));
                }
            }
            known.insert(c.id, (traffic, used));
        }
        let open: std::collections::HashSet<u64> = conns.iter().map(|c| c.id).collect();
        known.retain(|id, _| open.contains(id));
        *self.conn_cache() = known;
        out
    }

    fn conn_cache(&self) -> std::sync::MutexGuard<'_, ConnCache> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue_cache(&self) -> std::sync::MutexGuard<'_, QueueCache> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn round(r: f64) -> f64 {
    (r * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Arc<[&'static str]> {
        Arc::new(["publish", "messages"])
    }

    #[test]
    fn rates_are_the_change_over_the_last_interval() {
        let r = Rates::default();
        let w = Windows::default();
        let m = r.stats(&Key::Node, &[("publish", 5)], &w);
        assert_eq!(m["publish_details"]["rate"], 0.0, "no samples yet");
        r.record(10_000, vec![(Key::Node, names(), Some(vec![100, 0]))]);
        r.record(15_000, vec![(Key::Node, names(), Some(vec![600, 0]))]);
        let m = r.stats(&Key::Node, &[("publish", 600)], &w);
        assert_eq!((m["publish"].clone(), m["publish_details"]["rate"].clone()), (json!(600), json!(100.0)));
        // Unchanged values add no point, and still read as the same value.
        r.record(20_000, vec![(Key::Node, names(), Some(vec![600, 0]))]);
        assert_eq!(r.stats(&Key::Node, &[("publish", 600)], &w)["publish_details"]["rate"], 0.0);
        assert_eq!(r.inner.lock().unwrap().series[&Key::Node].points.len(), 2);
    }

    #[test]
    fn samples_follow_rabbitmqs_shape() {
        let r = Rates::default();
        for (i, depth) in [0u64, 0, 3, 3, 5].into_iter().enumerate() {
            r.record(
                100_000 + i as u64 * 5000,
                vec![(Key::Queue("/".into(), "q".into()), names(), Some(vec![0, depth]))],
            );
        }
        let q: HashMap<String, String> =
            [("lengths_age", "20"), ("lengths_incr", "5")].into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        let m = r.stats(&Key::Queue("/".into(), "q".into()), &[("messages", 5)], &Windows::from_query(&q));
        let d = &m["messages_details"];
        let samples: Vec<(u64, u64)> = d["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["sample"].as_u64().unwrap(), s["timestamp"].as_u64().unwrap()))
            .collect();
        assert_eq!(samples, vec![(5, 120_000), (3, 115_000), (3, 110_000), (0, 105_000), (0, 100_000)], "newest first");
        assert_eq!(d["avg_rate"], 0.25, "(5 - 0) / 20 s");
        assert_eq!(d["avg"], 2.2);
        assert_eq!(d["rate"], 0.4, "(5 - 3) / 5 s");
        // Message counters did not ask for samples.
        let m = r.stats(&Key::Queue("/".into(), "q".into()), &[("publish", 0)], &Windows::from_query(&q));
        assert!(m["publish_details"].get("samples").is_none());
    }

    #[test]
    fn huge_windows_are_bounded_not_overflowed() {
        let r = Rates::default();
        r.record(10_000, vec![(Key::Node, names(), Some(vec![1, 2]))]);
        let max = u64::MAX.to_string();
        for (age, incr) in [(max.as_str(), "5"), ("60", max.as_str()), (max.as_str(), max.as_str())] {
            let q: HashMap<String, String> =
                [("lengths_age", age), ("lengths_incr", incr)].into_iter().map(|(a, b)| (a.into(), b.into())).collect();
            let m = r.stats(&Key::Node, &[("messages", 2)], &Windows::from_query(&q));
            let n = m["messages_details"]["samples"].as_array().unwrap().len() as u64;
            assert!((1..=MAX_SAMPLES + 1).contains(&n), "{age}/{incr}: {n} samples");
            assert!(m["messages_details"]["avg_rate"].as_f64().is_some_and(f64::is_finite));
        }
    }

    #[test]
    fn gone_objects_are_forgotten_and_old_points_pruned() {
        let r = Rates::default();
        let q = Key::Queue("/".into(), "q".into());
        r.record(0, vec![(q.clone(), names(), Some(vec![1, 0]))]);
        let later = RETENTION.as_millis() as u64 + 20_000;
        for (i, t) in [5_000, 10_000, later].into_iter().enumerate() {
            r.record(t, vec![(q.clone(), names(), Some(vec![2 + i as u64, 0]))]);
        }
        assert_eq!(r.inner.lock().unwrap().series[&q].points.len(), 2, "only the base point before the horizon");
        r.record(later + 5000, vec![]);
        assert!(r.inner.lock().unwrap().series.is_empty());
    }

    #[test]
    fn unchanged_and_empty_objects_cost_no_points() {
        let r = Rates::default();
        let q = Key::Queue("/".into(), "q".into());
        r.record(5_000, vec![(q.clone(), names(), Some(vec![0, 0]))]);
        assert!(r.inner.lock().unwrap().series.is_empty(), "never had anything: nothing kept");
        r.record(10_000, vec![(q.clone(), names(), Some(vec![3, 3]))]);
        r.record(15_000, vec![(q.clone(), names(), None)]);
        r.record(20_000, vec![(q.clone(), names(), None)]);
        assert_eq!(r.inner.lock().unwrap().series[&q].points.len(), 1, "unchanged: kept, no new point");
        let m = r.stats(&q, &[("messages", 3)], &Windows::default());
        assert_eq!(m["messages_details"]["rate"], 0.0);
    }
}
