//! Exchanges and their bindings. Exchanges are data, not tasks: the publishing connection routes
//! against an immutable snapshot ([`crate::broker::topology::Topology`]), and declare/bind build
//! a new copy of the one exchange they change.

pub mod dedup;
pub mod headers;
pub mod topic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use amq_protocol::types::FieldTable;
use smallvec::SmallVec;

use headers::XMatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
    /// For headers exchanges: the validated `x-match` mode.
    x_match: XMatch,
}

impl Binding {
    pub fn new(destination: Destination, routing_key: String, arguments: FieldTable, x_match: XMatch) -> Self {
        Binding { destination, routing_key, arguments, x_match }
    }

    fn same_as(&self, other: &Binding) -> bool {
        self.destination == other.destination
            && self.routing_key == other.routing_key
            && same_table(&self.arguments, &other.arguments)
    }
}

/// Whether two argument tables are identical, bit for bit: a NaN argument is the same NaN
/// (`==` on floats would make a binding with a NaN argument differ from itself, so a
/// redeclare would add it again and an unbind would never find it).
fn same_table(a: &FieldTable, b: &FieldTable) -> bool {
    a == b || crate::protocol::fields::encode_table(a) == crate::protocol::fields::encode_table(b)
}

/// An exchange definition and its bindings (as source).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// `alternate-exchange` argument: where unroutable messages go.
    pub alternate: Option<String>,
    /// The type as declared (`direct`, …, or a plugin type such as `x-delayed-message`).
    pub declared_type: String,
    /// `x-delayed-message`: messages with an `x-delay` header are held before routing.
    pub delayed: bool,
    /// `x-message-deduplication`: the cache of seen `x-deduplication-header` values.
    pub dedup: Option<Arc<Mutex<dedup::DedupCache>>>,
    bindings: Vec<Binding>,
    /// Direct exchanges: routing key → destinations.
    direct: HashMap<String, Vec<Destination>, foldhash::fast::RandomState>,
    /// Topic exchanges: the binding patterns as a trie.
    topic: topic::TopicTrie,
}

impl Exchange {
    pub fn new(
        name: String,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate = arguments.inner().get("alternate-exchange").and_then(crate::protocol::methods::value_str);
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            declared_type: kind.as_str().to_string(),
            delayed: false,
            dedup: None,
            bindings: Vec::new(),
            direct: HashMap::default(),
            topic: topic::TopicTrie::default(),
        }
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Add a binding; returns false if an identical one already existed.
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.iter().any(|x| x.same_as(&b)) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => self.direct.entry(b.routing_key.clone()).or_default().push(b.destination.clone()),
            ExchangeKind::Topic => self.topic.insert(&b.routing_key, self.bindings.len()),
            _ => {}
        }
        self.bindings.push(b);
        true
    }

    /// Remove a binding; returns whether it existed.
    pub fn unbind(&mut self, destination: &Destination, routing_key: &str, arguments: &FieldTable) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| {
            !(b.destination == *destination && b.routing_key == routing_key && same_table(&b.arguments, arguments))
        });
        let removed = self.bindings.len() != before;
        if removed {
            self.rebuild_index();
        }
        removed
    }

    /// Remove every binding to `destination`; returns how many went.
    pub fn unbind_all(&mut self, destination: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|b| b.destination != *destination);
        let n = before - self.bindings.len();
        if n > 0 {
            self.rebuild_index();
        }
        n
    }

    fn rebuild_index(&mut self) {
        self.direct.clear();
        self.topic = topic::TopicTrie::default();
        for (i, b) in self.bindings.iter().enumerate() {
            match self.kind {
                ExchangeKind::Direct => {
                    self.direct.entry(b.routing_key.clone()).or_default().push(b.destination.clone())
                }
                ExchangeKind::Topic => self.topic.insert(&b.routing_key, i),
                _ => {}
            }
        }
    }

    /// Destinations this exchange alone routes a message to (no exchange-to-exchange follow-up),
    /// each passed to `out` (possibly more than once).
    pub fn route<'a>(&'a self, routing_key: &str, headers: Option<&FieldTable>, mut out: impl FnMut(&'a Destination)) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(d) = self.direct.get(routing_key) {
                    d.iter().for_each(out);
                }
            }
            ExchangeKind::Fanout => self.bindings.iter().for_each(|b| out(&b.destination)),
            ExchangeKind::Topic => {
                let mut hits = SmallVec::<[usize; 16]>::new();
                self.topic.matches(routing_key, &mut hits);
                hits.into_iter().for_each(|i| out(&self.bindings[i].destination));
            }
            ExchangeKind::Headers => self
                .bindings
                .iter()
                .filter(|b| headers::matches(b.x_match, &b.arguments, headers))
                .for_each(|b| out(&b.destination)),
        }
    }
}
