//! The routing snapshot: every exchange (with its bindings) and queue of a vhost, immutable.
//! Publishers route against an `Arc<Topology>` without locks; declare/bind/delete build a new
//! snapshot ([`super::vhost::VHost`]).

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use smallvec::SmallVec;

use crate::exchange::{CowMap, Destination, Exchange};
use crate::queue::QueueEntry;

/// Copy-on-write maps ([`CowMap`]): a change builds the next snapshot in O(log n) whatever the
/// number of queues and exchanges.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub exchanges: CowMap<String, Arc<Exchange>>,
    pub queues: CowMap<String, Arc<QueueEntry>>,
    /// Connection id → the exclusive queues it owns (found without walking every queue when
    /// the connection closes).
    pub exclusive: CowMap<u64, SmallVec<[String; 2]>>,
}

/// Most exchange hops followed for one message (exchange-to-exchange bindings and alternate
/// exchanges); cycles are cut by the visited set, this only bounds pathological fan-in.
const MAX_EXCHANGE_HOPS: usize = 1024;

impl Topology {
    /// Route with several routing keys (publish key plus `CC`/`BCC`, or dead-letter keys):
    /// the union of the queues, each once.
    pub fn route_keys<K: AsRef<str>>(
        &self,
        exchange: &str,
        keys: &[K],
        headers: Option<&FieldTable>,
    ) -> Vec<Arc<QueueEntry>> {
        let mut out = Vec::new();
        self.route_keys_into(exchange, keys, headers, &mut out);
        out
    }

    /// Route a message published to `exchange`: the queues it goes to, each once.
    /// The default exchange (`""`) routes to the queue named by the routing key.
    pub fn route(&self, exchange: &str, routing_key: &str, headers: Option<&FieldTable>) -> Vec<Arc<QueueEntry>> {
        self.route_keys(exchange, &[routing_key], headers)
    }

    /// [`Self::route_keys`] into a caller's buffer (cleared first): the publish path reuses one,
    /// so routing allocates nothing.
    pub fn route_keys_into<K: AsRef<str>>(
        &self,
        exchange: &str,
        keys: &[K],
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<QueueEntry>>,
    ) {
        out.clear();
        for k in keys {
            self.route_one(exchange, k.as_ref(), headers, out);
        }
        if out.len() > 1 {
            // Several bindings, paths or keys may lead to one queue: keep each once.
            out.sort_unstable_by_key(Arc::as_ptr);
            out.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
    }

    /// Append the queues one routing key reaches (duplicates possible).
    fn route_one(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<QueueEntry>>,
    ) {
        if exchange.is_empty() {
            if let Some(q) = self.queues.get(routing_key) {
                out.push(q.clone());
            }
            return;
        }
        let first = out.len();
        // Exchanges reached so far; graphs are small, so a linear set that rarely allocates.
        let mut visited: SmallVec<[&str; 8]> = SmallVec::new();
        let mut next_ae = Some(exchange);
        // Follow the alternate-exchange chain while nothing is routed.
        while let Some(start) = next_ae.take() {
            let Some(top) = self.exchanges.get(start) else { break };
            if visited.contains(&top.name.as_str()) {
                break;
            }
            visited.push(top.name.as_str());
            let mut stack: SmallVec<[&Exchange; 8]> = SmallVec::new();
            stack.push(top);
            let mut hops = 0;
            while let Some(x) = stack.pop() {
                hops += 1;
                if hops > MAX_EXCHANGE_HOPS {
                    break;
                }
                x.route(routing_key, headers, |d| match d {
                    Destination::Queue(q) => {
                        if let Some(entry) = self.queues.get(q.as_str()) {
                            out.push(entry.clone());
                        }
                    }
                    Destination::Exchange(e) => {
                        if let Some(next) = self.exchanges.get(e.as_str())
                            && !visited.contains(&next.name.as_str())
                        {
                            visited.push(next.name.as_str());
                            stack.push(next);
                        }
                    }
                });
            }
            if out.len() == first {
                next_ae = top.alternate.as_deref();
            }
        }
    }
}
