//! The run's producers and consumers, each over the protocol its side uses: AMQP 0-9-1, or the
//! stream protocol (`--stream-producers`, `--stream-consumers`).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::Args;
use crate::consumer::{Consumer, ConsumerCfg};
use crate::error::{Error, Result};
use crate::producer::{Producer, ProducerCfg};
use crate::stats::Counters;
use crate::stream_consumer::{StreamConsumer, StreamConsumerCfg};
use crate::stream_producer::StreamProducer;
use crate::stream_wire::StreamOffset;
use crate::uri::AmqpUri;

/// Where and how the run's clients connect.
pub struct Clients<'a> {
    pub args: &'a Args,
    pub uri: AmqpUri,
    /// The stream-protocol listener, when a side uses it.
    pub stream_uri: Option<AmqpUri>,
    /// Where consumers of a stream start.
    pub offset: StreamOffset,
}

pub enum AnyProducer {
    Amqp(Producer),
    Stream(StreamProducer),
}

pub enum AnyConsumer {
    Amqp(Consumer),
    Stream(StreamConsumer),
}

impl<'a> Clients<'a> {
    pub fn new(args: &'a Args) -> Result<Clients<'a>> {
        let uri = AmqpUri::parse(&args.uri)?;
        let stream_uri = args.stream_uri.as_deref().map(AmqpUri::parse_stream).transpose()?;
        if (args.stream_producers || args.stream_consumers) && stream_uri.is_none() {
            return Err(Error::Usage("--stream-producers / --stream-consumers need --stream-uri".into()));
        }
        if args.stream_producers && !args.exchange.is_empty() {
            return Err(Error::Usage("stream-protocol producers publish to a stream, not to an exchange (-e)".into()));
        }
        if args.replay && !(args.stream_consumers && args.producers == 0 && args.prefill > 0 && args.time.is_some()) {
            return Err(Error::Usage("--replay needs --stream-consumers, -x 0, --prefill and -z".into()));
        }
        if args.batch_size == 0 || args.credit == 0 {
            return Err(Error::Usage("--batch-size and --credit must be at least 1".into()));
        }
        Ok(Clients { args, uri, stream_uri, offset: StreamOffset::parse(&args.stream_offset)? })
    }

    /// Whether any client of the run speaks AMQP 0-9-1 to the queues (otherwise the streams are
    /// created and deleted over the stream protocol, as stream-perf-test does).
    pub fn amqp_clients(&self) -> bool {
        let a = self.args;
        (!a.stream_producers && (a.producers > 0 || a.prefill > 0)) || (!a.stream_consumers && a.consumers > 0)
    }

    /// The stream-protocol URI when every client uses the stream protocol.
    pub fn stream_only(&self) -> Option<&AmqpUri> {
        self.stream_uri.as_ref().filter(|_| self.args.streams() && !self.amqp_clients())
    }

    /// A producer publishing to `queue` (through `cfg`'s exchange and key over AMQP 0-9-1).
    pub async fn producer(&self, name: &str, queue: &str, cfg: ProducerCfg) -> Result<AnyProducer> {
        match (&self.stream_uri, self.args.stream_producers) {
            (Some(su), true) => {
                Ok(AnyProducer::Stream(StreamProducer::connect(su, name, queue, cfg, self.args.batch_size).await?))
            }
            _ => Ok(AnyProducer::Amqp(Producer::connect(&self.uri, name, cfg).await?)),
        }
    }

    /// Consumer `j`, on `queue`, which holds `held` messages before the run (its prefill).
    pub async fn consumer(&self, j: usize, queue: &str, held: u64) -> Result<AnyConsumer> {
        let a = self.args;
        let name = format!("warren-perf consumer {j}");
        match (&self.stream_uri, a.stream_consumers) {
            (Some(su), true) => {
                let cfg = StreamConsumerCfg {
                    stream: queue.to_string(),
                    offset: self.offset,
                    credit: a.credit,
                    body_size: Some(a.size),
                    replay: a.replay.then_some(held),
                };
                Ok(AnyConsumer::Stream(StreamConsumer::connect(su, &name, cfg).await?))
            }
            _ => {
                let cfg = ConsumerCfg {
                    queue: queue.to_string(),
                    auto_ack: a.autoack,
                    prefetch: a.qos,
                    multi_ack_every: a.multi_ack_every,
                    stream_offset: a.streams().then_some(self.offset),
                };
                Ok(AnyConsumer::Amqp(Consumer::connect(&self.uri, &name, &format!("warren-perf-{j}"), cfg).await?))
            }
        }
    }
}

impl AnyProducer {
    pub async fn run(
        self,
        counters: Arc<Counters>,
        stop: watch::Receiver<bool>,
        fail: mpsc::UnboundedSender<Error>,
    ) -> Result<()> {
        match self {
            AnyProducer::Amqp(p) => p.run(counters, stop, fail).await,
            AnyProducer::Stream(p) => p.run(counters, stop, fail).await,
        }
    }
}

impl AnyConsumer {
    pub async fn run(self, counters: Arc<Counters>, stop: watch::Receiver<bool>) -> Result<()> {
        match self {
            AnyConsumer::Amqp(c) => c.run(counters, stop).await,
            AnyConsumer::Stream(c) => c.run(counters, stop).await,
        }
    }
}
