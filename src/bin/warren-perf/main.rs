//! `warren-perf`: a load generator for AMQP 0-9-1 brokers (Warren, RabbitMQ), after RabbitMQ's
//! PerfTest and with the same flag meanings.
//!
//! It speaks the protocol itself over tokio sockets rather than through a client library, so
//! that it costs the machine as little as possible: publishes are rendered from a template and
//! written many per system call, deliveries are parsed in place from the read buffer, and acks
//! are batched per read. Each second it prints the send and receive rates and the median
//! latency (from a timestamp in the first 8 body octets, against the same machine's clock); at
//! the end a summary (or `--json`), and its own CPU use (and the broker's, given
//! `--broker-pid`) so a run shows whether the tool or the broker was the bottleneck.
//!
//! Examples:
//!   warren-perf -x 1 -y 1 -s 16 -a -z 10
//!   warren-perf -x 1 -y 10 -e perf-fanout -t fanout --queue-pattern 'fan-%d' --queue-pattern-from 1 --queue-pattern-to 10 -a -z 10
//!   warren-perf -x 1 -y 1 -e perf-topic -t topic -K --bindings 10000 -a -z 10
//!   warren-perf -x 0 -y 1 --prefill 1000000 -s 256 -q 1000 -A 100 --broker-pid 1234
//!   warren-perf --stream-uri rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f --stream-producers -x 1 -y 0 -s 16 -z 10
//!   warren-perf --stream-uri rabbitmq-stream://127.0.0.1:5552 --stream-producers --stream-consumers -x 0 -y 10 --prefill 5000000

mod churn;
mod clients;
mod conn;
mod consumer;
mod error;
mod idle;
mod producer;
mod report;
mod run;
mod stats;
mod stream_conn;
mod stream_consumer;
mod stream_crc;
mod stream_producer;
mod stream_wire;
mod topology;
mod uri;
mod wire;

use std::process::ExitCode;

use clap::{ArgAction, Parser};

/// A load generator for AMQP 0-9-1 brokers, with RabbitMQ PerfTest's flags.
#[derive(Debug, Clone, Parser)]
#[command(name = "warren-perf", version, about, disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,

    /// Broker URI (amqp://user:pass@host:port/vhost).
    #[arg(short = 'h', long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Number of producers (one connection each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers (one connection each).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Queue name (default: a unique name per run).
    #[arg(short = 'u', long)]
    pub queue: Option<String>,
    /// Message body size in bytes (the first 8 carry the send timestamp).
    #[arg(short = 's', long, default_value_t = 12)]
    pub size: usize,
    /// Consumers use automatic acknowledgement (no-ack).
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// Message flag; only `persistent` (delivery_mode 2, durable queues and exchange).
    #[arg(short = 'f', long = "flag")]
    pub flags: Vec<String>,
    /// Publisher confirms: at most this many unconfirmed messages per producer.
    #[arg(short = 'c', long = "confirm")]
    pub confirm: Option<u64>,
    /// Consumer prefetch (basic.qos prefetch-count; 0 = unlimited).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub qos: u16,
    /// Ack with multiple=true every N deliveries (0 or 1: ack each delivery).
    #[arg(short = 'A', long = "multi-ack-every", default_value_t = 0)]
    pub multi_ack_every: u64,
    /// Publishing rate per producer, messages per second (default: unlimited).
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Messages per producer; the run ends once they are all published (and consumed).
    #[arg(short = 'C', long = "pmessages")]
    pub pmessages: Option<u64>,
    /// Run duration in seconds (default: until the message counts are done, or Ctrl-C).
    #[arg(short = 'z', long = "time")]
    pub time: Option<f64>,
    /// Exchange to publish to ("" = the default exchange, routing by queue name).
    #[arg(short = 'e', long, default_value = "")]
    pub exchange: String,
    /// Exchange type (direct, fanout, topic, headers) when the tool declares the exchange.
    #[arg(short = 't', long = "type", default_value = "direct")]
    pub exchange_type: String,
    /// Routing key (default: the queue's name; for fanout, empty). Queues are bound with it.
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,
    /// A random routing key per message, `rA.rB.rC` with A, B, C in 0..100 (see --bindings).
    #[arg(short = 'K', long)]
    pub random_routing_key: bool,
    /// Queue name pattern with %d, e.g. perf-%d: queues FROM..=TO; producers and consumers are
    /// spread over them round-robin.
    #[arg(long)]
    pub queue_pattern: Option<String>,
    /// First number substituted for %d in --queue-pattern.
    #[arg(long, default_value_t = 1)]
    pub queue_pattern_from: usize,
    /// Last number substituted for %d in --queue-pattern (inclusive; default: FROM).
    #[arg(long)]
    pub queue_pattern_to: Option<usize>,
    /// Bind N extra random topic patterns (`rA.rB.*`, `rA.*.rB`, `*.rA.rB`, `rA.rB.#`, A and B
    /// in 0..100, same seed every run) to the queues, round-robin, for topic routing tests with
    /// -K -t topic. With 10,000 bindings about 64% of the random keys match (and exactly the
    /// same messages match on every broker).
    #[arg(long, default_value_t = 0)]
    pub bindings: usize,
    /// Publish N messages (spread over the queues, with confirms) before consumers start; the
    /// run then measures the drain and ends when it is done.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Open N extra idle connections (one channel each, heartbeats off) and hold them.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// The broker's process id (same machine): report its RSS around --connections and
    /// --prefill, and its CPU use during the measurement.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the final summary as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Leave the queues and exchange declared at the end.
    #[arg(long)]
    pub no_cleanup: bool,
    /// After the clean-up, watch the broker's RSS for 5 s and report its lowest value
    /// (`rss.after_cleanup`: does memory go back after a backlog?). Needs --broker-pid.
    #[arg(long)]
    pub rss_after_cleanup: bool,
    /// Churn instead of a message stream: `connections` (connect, handshake, channel, one
    /// persistent confirmed publish, close — per cycle) or `queues` (declare a server-named
    /// exclusive queue, bind, consume, publish one message to it, receive it, delete — per cycle).
    #[arg(long, value_enum)]
    pub churn: Option<churn::ChurnMode>,
    /// Clients looping concurrently in --churn.
    #[arg(long, default_value_t = 8)]
    pub churn_clients: usize,
    /// Declare N queues (-u is their name prefix), then bind each to amq.direct; report the rates
    /// and the broker's RSS per queue and per binding. The queues are left in place.
    #[arg(long, default_value_t = 0)]
    pub declare_queues: u64,
    /// With --declare-queues: non-durable queues.
    #[arg(long)]
    pub transient_queues: bool,
    /// Connect until the broker answers a passive declare of this queue; report the time since
    /// --since (broker start-up with many queues).
    #[arg(long)]
    pub await_queue: Option<String>,
    /// A UNIX time in seconds (e.g. `date +%s.%N` when the broker was started) for --await-queue.
    #[arg(long)]
    pub since: Option<f64>,

    /// The queues are streams (`x-queue-type: stream`, durable); AMQP 0-9-1 consumers pass
    /// `x-stream-offset` (--stream-offset). Implied by --stream-producers / --stream-consumers.
    #[arg(long)]
    pub stream_queue: bool,
    /// The broker's stream-protocol listener, `rabbitmq-stream://user:pass@host:port/vhost`
    /// (RabbitMQ's port 5552 protocol), for --stream-producers / --stream-consumers.
    #[arg(long)]
    pub stream_uri: Option<String>,
    /// Producers (and --prefill) publish over the stream protocol: --batch-size messages per
    /// Publish frame, at most -c unconfirmed (default 10,000), as stream-perf-test does.
    #[arg(long)]
    pub stream_producers: bool,
    /// Consumers subscribe over the stream protocol (--stream-offset, --credit); every chunk is
    /// checked (CRC, counts, offsets, body sizes).
    #[arg(long)]
    pub stream_consumers: bool,
    /// Messages per Publish frame of a stream-protocol producer (stream-perf-test's --batch-size).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Where stream consumers start: first, last, next or an offset.
    #[arg(long, default_value = "first")]
    pub stream_offset: String,
    /// A stream-protocol subscription's initial credit, in chunks (one more per chunk received).
    #[arg(long, default_value_t = 10)]
    pub credit: u16,
    /// With --stream-consumers, -x 0 and --prefill: each consumer reads the prefilled stream
    /// again from --stream-offset whenever it has read all of it, until -z (a replay rate that
    /// does not depend on how fast the prefill was).
    #[arg(long)]
    pub replay: bool,
}

impl Args {
    /// Whether the queues are streams.
    pub fn streams(&self) -> bool {
        self.stream_queue || self.stream_producers || self.stream_consumers
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-perf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(mode) = args.churn {
        return report(runtime.block_on(churn::run_churn(&args, mode)), args.json, churn::ChurnSummary::render);
    }
    if args.declare_queues > 0 {
        return report(runtime.block_on(churn::run_declare(&args)), args.json, churn::ScaleSummary::render);
    }
    if let Some(q) = args.await_queue.clone() {
        return report(runtime.block_on(churn::run_await(&args, &q)), args.json, |s: &churn::AwaitSummary| {
            format!("queue {} answered after {:.3} s ({} attempts)\n", s.queue, s.ready_s, s.attempts)
        });
    }
    match runtime.block_on(run::run(args.clone())) {
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string(&summary).expect("the summary serialises"));
            } else {
                print!("{}", summary.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-perf: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Print a mode's summary (JSON or text) or its error.
fn report<T: serde::Serialize>(r: error::Result<T>, json: bool, render: impl Fn(&T) -> String) -> ExitCode {
    match r {
        Ok(summary) => {
            if json {
                println!("{}", serde_json::to_string(&summary).expect("the summary serialises"));
            } else {
                print!("{}", render(&summary));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-perf: error: {e}");
            ExitCode::FAILURE
        }
    }
}
