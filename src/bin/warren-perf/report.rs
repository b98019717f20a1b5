//! The end-of-run summary, as text or (with `--json`) one JSON object.

use std::fmt::Write;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct Prefill {
    pub messages: u64,
    pub seconds: f64,
    pub rate: f64,
}

/// Broker resident memory (bytes) at points of the run, from /proc/PID/status.
#[derive(Debug, Default, Serialize)]
pub struct Rss {
    pub start: Option<u64>,
    pub after_connections: Option<u64>,
    pub after_prefill: Option<u64>,
    pub end: Option<u64>,
    /// (after_connections - start) / connections.
    pub per_connection: Option<f64>,
    /// (after_prefill - before prefill) / queued message copies.
    pub per_message: Option<f64>,
    /// Highest RSS seen during the measurement (sampled every 20 ms).
    pub max: Option<u64>,
    /// `max` less the RSS when the measurement started (after any prefill): what the
    /// measured traffic added at its peak.
    pub max_growth: Option<i64>,
    /// The same for the anonymous part of the RSS (heap, stacks), without the file pages a
    /// broker reading its files through mmap would add.
    pub anon_max_growth: Option<i64>,
    /// RSS growth from a quarter into the measurement to its end, bytes per second: about 0
    /// when the broker's memory is flat after the first seconds.
    pub growth_per_s: Option<f64>,
    /// The lowest RSS within [`crate::run::SETTLE`] after the queues were deleted at the end
    /// (memory going back after a backlog).
    pub after_cleanup: Option<u64>,
}

/// CPU used during the measurement, in % of one core.
#[derive(Debug, Serialize)]
pub struct Cpu {
    pub tool_pct: Option<f64>,
    pub broker_pct: Option<f64>,
}

/// What stream-protocol consumers were delivered.
#[derive(Debug, Serialize)]
pub struct StreamStats {
    pub chunks: u64,
    pub records_per_chunk: f64,
    /// Chunks that did not start where the consumer's previous chunk ended (0 expected).
    pub offset_gaps: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub producers: usize,
    pub consumers: usize,
    pub queues: usize,
    pub body_size: usize,
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    /// Deliveries, counted across all queues.
    pub received: u64,
    /// Deliveries a counted run waited for, when known.
    pub expected: Option<u64>,
    pub sent_rate: f64,
    pub sent_mb_s: f64,
    /// Messages confirmed per second of the sending window.
    pub confirmed_rate: f64,
    pub confirmed_mb_s: f64,
    pub received_rate: f64,
    pub received_mb_s: f64,
    pub latency_us: Option<LatencySummary>,
    pub prefill: Option<Prefill>,
    pub connections: usize,
    pub rss: Option<Rss>,
    /// With stream-protocol consumers.
    pub stream: Option<StreamStats>,
    pub cpu: Cpu,
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

impl Summary {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "summary: {:.1} s, {} producer(s), {} consumer(s), {} queue(s), body {} B",
            self.duration_s, self.producers, self.consumers, self.queues, self.body_size
        );
        let _ = writeln!(
            s,
            "sent:     {} msgs, {:.0} msg/s, {:.2} MB/s (confirmed {}, nacked {})",
            self.sent, self.sent_rate, self.sent_mb_s, self.confirmed, self.nacked
        );
        let expected = self.expected.map_or(String::new(), |e| format!(" of {e} expected"));
        let _ = writeln!(
            s,
            "received: {} msgs{expected}, {:.0} msg/s, {:.2} MB/s",
            self.received, self.received_rate, self.received_mb_s
        );
        match &self.latency_us {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "latency:  p50 {} µs, p95 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                    l.p50, l.p95, l.p99, l.p999, l.max
                );
            }
            None => {
                let _ = writeln!(s, "latency:  -");
            }
        }
        if let Some(st) = &self.stream {
            let _ = writeln!(
                s,
                "stream:   {} chunks, {:.1} records/chunk, {} offset gaps",
                st.chunks, st.records_per_chunk, st.offset_gaps
            );
        }
        if let Some(p) = &self.prefill {
            let _ = writeln!(s, "prefill:  {} msgs in {:.1} s ({:.0} msg/s)", p.messages, p.seconds, p.rate);
        }
        if let Some(r) = &self.rss {
            let _ = write!(s, "broker rss: start {}", mib(r.start));
            if self.connections > 0 {
                let _ = write!(s, ", after {} connections {}", self.connections, mib(r.after_connections));
            }
            if r.after_prefill.is_some() {
                let _ = write!(s, ", after prefill {}", mib(r.after_prefill));
            }
            let _ = write!(s, ", max {}, end {}", mib(r.max), mib(r.end));
            if let Some(g) = r.max_growth {
                let _ = write!(s, ", max over the start {:+.1} MiB", g as f64 / 1048576.0);
            }
            if let Some(g) = r.anon_max_growth {
                let _ = write!(s, " (anonymous {:+.1} MiB)", g as f64 / 1048576.0);
            }
            match r.growth_per_s {
                Some(g) => {
                    let _ = writeln!(s, ", growth after the first quarter {:.2} MiB/s", g / 1048576.0);
                }
                None => {
                    let _ = writeln!(s);
                }
            }
            if let Some(c) = r.per_connection {
                let _ = writeln!(s, "broker rss per connection: {:.0} B", c);
            }
            if r.after_cleanup.is_some() {
                let _ = writeln!(s, "broker rss after the clean-up (lowest in 5 s): {}", mib(r.after_cleanup));
            }
            if let Some(m) = r.per_message {
                let _ = writeln!(s, "broker rss per queued message: {:.0} B", m);
            }
        }
        let pct = |p: Option<f64>| p.map_or("-".into(), |p| format!("{p:.0}%"));
        let _ = writeln!(
            s,
            "cpu (% of one core): warren-perf {}, broker {}",
            pct(self.cpu.tool_pct),
            pct(self.cpu.broker_pct)
        );
        s
    }
}
