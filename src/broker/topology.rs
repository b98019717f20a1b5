//! The routing snapshot: every exchange (with its bindings) and queue of a vhost, immutable.
//! Publishers route against an `Arc<Topology>` without locks; declare/bind/delete build a new
//! snapshot ([`super::vhost::VHost`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use amq_protocol::types::FieldTable;

use crate::exchange::{Destination, Exchange};
use crate::queue::QueueEntry;

#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub exchanges: HashMap<String, Arc<Exchange>>,
    pub queues: HashMap<String, Arc<QueueEntry>>,
}

/// Most exchange hops followed for one message (exchange-to-exchange bindings and alternate
/// exchanges); cycles are cut by the visited set, this only bounds pathological fan-in.
const MAX_EXCHANGE_HOPS: usize = 1024;

impl Topology {
    /// Route with several routing keys (publish key plus `CC`/`BCC`, or dead-letter keys):
    /// the union of the queues, each once.
    pub fn route_keys(&self, exchange: &str, keys: &[String], headers: Option<&FieldTable>) -> Vec<Arc<QueueEntry>> {
        let mut out: Vec<Arc<QueueEntry>> = Vec::new();
        for k in keys {
            for q in self.route(exchange, k, headers) {
                if !out.iter().any(|o| Arc::ptr_eq(o, &q)) {
                    out.push(q);
                }
            }
        }
        out
    }

    /// Route a message published to `exchange`: the queues it goes to, each once.
    /// The default exchange (`""`) routes to the queue named by the routing key.
    pub fn route(&self, exchange: &str, routing_key: &str, headers: Option<&FieldTable>) -> Vec<Arc<QueueEntry>> {
        let mut out: Vec<Arc<QueueEntry>> = Vec::new();
        if exchange.is_empty() {
            if let Some(q) = self.queues.get(routing_key) {
                out.push(q.clone());
            }
            return out;
        }
        let mut visited: HashSet<&str> = HashSet::new();
        let mut seen_queues: HashSet<&str> = HashSet::new();
        let mut next_ae = Some(exchange);
        // Follow the alternate-exchange chain while nothing is routed.
        while let Some(start) = next_ae.take() {
            let Some(top) = self.exchanges.get(start) else { break };
            if !visited.insert(top.name.as_str()) {
                break;
            }
            let mut stack: Vec<&Exchange> = vec![top];
            let mut dests = Vec::new();
            let mut hops = 0;
            while let Some(x) = stack.pop() {
                hops += 1;
                if hops > MAX_EXCHANGE_HOPS {
                    break;
                }
                dests.clear();
                x.route(routing_key, headers, &mut dests);
                for d in &dests {
                    match d {
                        Destination::Queue(q) => {
                            if seen_queues.insert(q.as_str())
                                && let Some(entry) = self.queues.get(q.as_str())
                            {
                                out.push(entry.clone());
                            }
                        }
                        Destination::Exchange(e) => {
                            if let Some(next) = self.exchanges.get(e.as_str())
                                && visited.insert(next.name.as_str())
                            {
                                stack.push(next);
                            }
                        }
                    }
                }
            }
            if out.is_empty() {
                next_ae = top.alternate.as_deref();
            }
        }
        out
    }
}
