//! What a run declares (exchange, queues, bindings), where each producer publishes and each
//! consumer consumes, and the clean-up at the end.

use amq_protocol::protocol::{AMQPClass, exchange, queue};
use amq_protocol_types::{AMQPValue, FieldTable};

use crate::conn::{CH, Conn};
use crate::error::{Error, Result};
use crate::uri::AmqpUri;

/// Random routing keys are three words `rA.rB.rC` with A, B, C in `0..KEY_WORDS`.
pub const KEY_WORDS: u64 = 100;
/// queue.bind methods sent before reading their replies.
const BIND_WINDOW: usize = 200;

/// A small deterministic PRNG (xorshift64*), so both brokers see the same keys and patterns.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    #[inline]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 32) % n
    }
}

/// A random routing key (see [`KEY_WORDS`]) written into `out`.
pub fn random_key(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let (a, b, c) = (rng.below(KEY_WORDS), rng.below(KEY_WORDS), rng.below(KEY_WORDS));
    let _ = write!(out, "r{a}.r{b}.r{c}");
}

/// A random topic binding pattern over the same words: two fixed words and a wildcard.
pub fn random_pattern(rng: &mut Rng) -> String {
    let (a, b) = (rng.below(KEY_WORDS), rng.below(KEY_WORDS));
    match rng.below(4) {
        0 => format!("r{a}.r{b}.*"),
        1 => format!("r{a}.*.r{b}"),
        2 => format!("*.r{a}.r{b}"),
        _ => format!("r{a}.r{b}.#"),
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub queues: Vec<String>,
    /// "" is the default exchange.
    pub exchange: String,
    pub kind: String,
    /// Whether the tool declares (and later deletes) the exchange.
    pub declare_exchange: bool,
    pub durable: bool,
    /// Routing key a producer publishing "to queue i" uses; None = a random key per message.
    pub routing_keys: Vec<Option<String>>,
    /// Binding key of queue i to the exchange (unused with the default exchange).
    pub binding_keys: Vec<String>,
    /// Extra random topic patterns, bound round-robin to the queues.
    pub extra_bindings: usize,
    /// How many queues one published message reaches, when known.
    pub copies: Option<u64>,
    /// The queues are streams (`x-queue-type: stream`, durable).
    pub stream: bool,
}

impl Plan {
    pub fn new(
        queues: Vec<String>,
        exchange: &str,
        kind: &str,
        routing_key: Option<&str>,
        random_keys: bool,
        extra_bindings: usize,
        durable: bool,
    ) -> Result<Plan> {
        let n = queues.len() as u64;
        if exchange.is_empty() && extra_bindings > 0 {
            return Err(Error::Usage(
                "--bindings needs an exchange (-e); the default exchange takes no bindings".into(),
            ));
        }
        if exchange.is_empty() && random_keys {
            return Err(Error::Usage("--random-routing-key needs an exchange (-e)".into()));
        }
        let fanout = kind == "fanout" && !exchange.is_empty();
        let binding_keys: Vec<String> = queues
            .iter()
            .map(|q| if fanout { routing_key.unwrap_or("").to_string() } else { routing_key.unwrap_or(q).to_string() })
            .collect();
        let routing_keys = queues
            .iter()
            .map(|q| {
                if random_keys {
                    None
                } else if exchange.is_empty() {
                    Some(q.clone())
                } else {
                    Some(routing_key.unwrap_or(if fanout { "" } else { q }).to_string())
                }
            })
            .collect();
        let copies = if random_keys {
            None
        } else if fanout || (routing_key.is_some() && !exchange.is_empty() && matches!(kind, "direct" | "topic")) {
            Some(n)
        } else if exchange.is_empty() || matches!(kind, "direct" | "topic") {
            Some(1)
        } else {
            None
        };
        Ok(Plan {
            queues,
            exchange: exchange.to_string(),
            kind: kind.to_string(),
            declare_exchange: !exchange.is_empty() && !exchange.starts_with("amq."),
            durable,
            routing_keys,
            binding_keys,
            extra_bindings,
            copies,
            stream: false,
        })
    }

    /// Declare the exchange, the queues and their bindings.
    pub async fn declare(&self, uri: &AmqpUri) -> Result<()> {
        let mut c = Conn::open(uri, "warren-perf setup").await?;
        c.open_channel().await?;
        if self.declare_exchange {
            c.rpc(
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: self.exchange.as_str().into(),
                    kind: self.kind.as_str().into(),
                    durable: self.durable,
                    ..Default::default()
                })),
                |m| matches!(m, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))),
                "exchange.declare",
            )
            .await?;
        }
        for (i, q) in self.queues.iter().enumerate() {
            let mut arguments = FieldTable::default();
            if self.stream {
                arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
            }
            c.rpc(
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: q.as_str().into(),
                    durable: self.durable || self.stream,
                    arguments,
                    ..Default::default()
                })),
                |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
                "queue.declare",
            )
            .await?;
            if !self.exchange.is_empty() {
                bind(&mut c, q, &self.exchange, &self.binding_keys[i]).await?;
            }
        }
        // Extra bindings are pipelined: a window of queue.bind methods in one write, then
        // their replies (the broker handles a channel's methods in order).
        let mut rng = Rng::new(0xB1_4D);
        let mut i = 0;
        while i < self.extra_bindings {
            let n = (self.extra_bindings - i).min(BIND_WINDOW);
            for j in i..i + n {
                let q = &self.queues[j % self.queues.len()];
                c.queue(CH, &bind_method(q, &self.exchange, &random_pattern(&mut rng)));
            }
            c.flush().await?;
            for _ in 0..n {
                let m = c.recv_method(" waiting for queue.bind-ok").await?;
                if !matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_))) {
                    return Err(Error::Unexpected(format!("{m:?} in reply to queue.bind")));
                }
            }
            i += n;
        }
        c.close().await
    }

    /// Delete what [`Plan::declare`] declared.
    pub async fn delete(&self, uri: &AmqpUri) -> Result<()> {
        let mut c = Conn::open(uri, "warren-perf cleanup").await?;
        c.open_channel().await?;
        for q in &self.queues {
            c.rpc(
                AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                    queue: q.as_str().into(),
                    ..Default::default()
                })),
                |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))),
                "queue.delete",
            )
            .await?;
        }
        if self.declare_exchange {
            c.rpc(
                AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                    exchange: self.exchange.as_str().into(),
                    ..Default::default()
                })),
                |m| matches!(m, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_))),
                "exchange.delete",
            )
            .await?;
        }
        c.close().await
    }
}

fn bind_method(q: &str, ex: &str, key: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: q.into(),
        exchange: ex.into(),
        routing_key: key.into(),
        ..Default::default()
    }))
}

async fn bind(c: &mut Conn, q: &str, ex: &str, key: &str) -> Result<()> {
    c.rpc(bind_method(q, ex, key), |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_))), "queue.bind")
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qs(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("perf-{i}")).collect()
    }

    #[test]
    fn default_exchange_routes_by_queue_name() {
        let p = Plan::new(qs(2), "", "direct", None, false, 0, false).unwrap();
        assert_eq!(p.routing_keys, [Some("perf-1".to_string()), Some("perf-2".to_string())]);
        assert_eq!(p.copies, Some(1));
        assert!(!p.declare_exchange);
    }

    #[test]
    fn fanout_reaches_every_queue() {
        let p = Plan::new(qs(10), "fan", "fanout", None, false, 0, false).unwrap();
        assert_eq!(p.copies, Some(10));
        assert!(p.binding_keys.iter().all(|k| k.is_empty()));
        assert!(p.declare_exchange);
    }

    #[test]
    fn topic_with_random_keys_has_unknown_fan_out() {
        let p = Plan::new(qs(1), "t", "topic", None, true, 10_000, false).unwrap();
        assert_eq!(p.copies, None);
        assert_eq!(p.routing_keys, [None]);
        assert!(Plan::new(qs(1), "", "direct", None, false, 5, false).is_err());
    }

    #[test]
    fn random_keys_and_patterns_are_topic_words() {
        let mut r = Rng::new(1);
        let mut k = String::new();
        random_key(&mut r, &mut k);
        assert_eq!(k.split('.').count(), 3);
        let p = random_pattern(&mut r);
        assert!(p.contains('*') || p.ends_with(".#"), "{p}");
    }
}
