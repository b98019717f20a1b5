//! Exchanges and their bindings. Exchanges are data, not tasks: the publishing connection routes
//! against an immutable snapshot ([`crate::broker::topology::Topology`]), and declare/bind build
//! a new copy of the one exchange they change.

pub mod dedup;
pub mod headers;
pub mod topic;

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

/// A map that clones in O(1) and changes in O(log n) by sharing structure with its clones
/// (a hash array mapped trie): topology snapshots and exchanges are copied on every declare,
/// bind and delete, and with 100,000 queues a full copy per change made declares quadratic.
pub type CowMap<K, V> = imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

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
}

/// Whether two argument tables are identical, bit for bit: a NaN argument is the same NaN
/// (`==` on floats would make a binding with a NaN argument differ from itself, so a
/// redeclare would add it again and an unbind would never find it).
fn same_table(a: &FieldTable, b: &FieldTable) -> bool {
    a == b || crate::protocol::fields::encode_table(a) == crate::protocol::fields::encode_table(b)
}

/// An exchange definition and its bindings (as source).
///
/// Bindings are kept in copy-on-write maps, so binding to an exchange that already has 100,000
/// bindings copies a few trie nodes, not the 100,000 (direct exchanges, the common case with
/// many queues). Fanout, topic and headers exchanges also keep a flat list for routing, rebuilt
/// when their bindings change.
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
    /// (destination, routing key) → the bindings with those (differing in arguments; usually one).
    bindings: CowMap<(Destination, String), SmallVec<[FieldTable; 1]>>,
    /// Destination → the routing keys it is bound with (for removing a queue's bindings).
    by_destination: CowMap<Destination, SmallVec<[String; 1]>>,
    count: usize,
    /// Direct exchanges: routing key → destinations.
    direct: CowMap<String, SmallVec<[Destination; 1]>>,
    /// Fanout, topic and headers exchanges: every binding (topic trie entries index it).
    list: Arc<Vec<Binding>>,
    /// Topic exchanges: the binding patterns as a trie.
    topic: Arc<topic::TopicTrie>,
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
            bindings: CowMap::default(),
            by_destination: CowMap::default(),
            count: 0,
            direct: CowMap::default(),
            list: Arc::default(),
            topic: Arc::default(),
        }
    }

    /// How many bindings this exchange has.
    pub fn binding_count(&self) -> usize {
        self.count
    }

    /// Whether any binding leads to `destination`.
    pub fn binds_to(&self, destination: &Destination) -> bool {
        self.by_destination.contains_key(destination)
    }

    /// Every binding: (destination, routing key, arguments), in no particular order.
    pub fn bindings(&self) -> impl Iterator<Item = (&Destination, &str, &FieldTable)> {
        self.bindings.iter().flat_map(|((d, k), vs)| vs.iter().map(move |a| (d, k.as_str(), a)))
    }

    /// Add a binding; returns false if an identical one already existed.
    pub fn bind(&mut self, b: Binding) -> bool {
        let key = (b.destination.clone(), b.routing_key.clone());
        let variants = self.bindings.entry(key).or_default();
        if variants.iter().any(|a| same_table(a, &b.arguments)) {
            return false;
        }
        let first = variants.is_empty();
        variants.push(b.arguments.clone());
        self.count += 1;
        if first {
            self.by_destination.entry(b.destination.clone()).or_default().push(b.routing_key.clone());
        }
        match self.kind {
            ExchangeKind::Direct => self.direct.entry(b.routing_key.clone()).or_default().push(b.destination.clone()),
            ExchangeKind::Topic => {
                Arc::make_mut(&mut self.topic).insert(&b.routing_key, self.list.len());
                Arc::make_mut(&mut self.list).push(b);
            }
            _ => Arc::make_mut(&mut self.list).push(b),
        }
        true
    }

    /// Remove a binding; returns whether it existed.
    pub fn unbind(&mut self, destination: &Destination, routing_key: &str, arguments: &FieldTable) -> bool {
        let key = (destination.clone(), routing_key.to_string());
        let Some(variants) = self.bindings.get_mut(&key) else { return false };
        let Some(i) = variants.iter().position(|a| same_table(a, arguments)) else { return false };
        variants.remove(i);
        if variants.is_empty() {
            self.bindings.remove(&key);
            self.forget_key(destination, routing_key);
        }
        self.count -= 1;
        match self.kind {
            ExchangeKind::Direct => self.remove_direct(destination, routing_key),
            _ => {
                let list = Arc::make_mut(&mut self.list);
                if let Some(i) = list.iter().position(|b| {
                    b.destination == *destination && b.routing_key == routing_key && same_table(&b.arguments, arguments)
                }) {
                    list.remove(i);
                }
                self.rebuild_topic();
            }
        }
        true
    }

    /// Remove every binding to `destination`; returns how many went.
    pub fn unbind_all(&mut self, destination: &Destination) -> usize {
        let Some(keys) = self.by_destination.remove(destination) else { return 0 };
        let mut n = 0;
        for k in &keys {
            if let Some(vs) = self.bindings.remove(&(destination.clone(), k.clone())) {
                n += vs.len();
            }
            if self.kind == ExchangeKind::Direct {
                self.remove_direct(destination, k);
            }
        }
        self.count -= n;
        if self.kind != ExchangeKind::Direct && n > 0 {
            Arc::make_mut(&mut self.list).retain(|b| b.destination != *destination);
            self.rebuild_topic();
        }
        n
    }

    fn forget_key(&mut self, destination: &Destination, routing_key: &str) {
        if let Some(keys) = self.by_destination.get_mut(destination) {
            keys.retain(|k| k != routing_key);
            if keys.is_empty() {
                self.by_destination.remove(destination);
            }
        }
    }

    fn remove_direct(&mut self, destination: &Destination, routing_key: &str) {
        if let Some(ds) = self.direct.get_mut(routing_key) {
            if let Some(i) = ds.iter().position(|d| d == destination) {
                ds.remove(i);
            }
            if ds.is_empty() {
                self.direct.remove(routing_key);
            }
        }
    }

    /// Topic exchanges: the trie indexes the list, so it follows the list's changes.
    fn rebuild_topic(&mut self) {
        if self.kind != ExchangeKind::Topic {
            return;
        }
        let mut trie = topic::TopicTrie::default();
        for (i, b) in self.list.iter().enumerate() {
            trie.insert(&b.routing_key, i);
        }
        self.topic = Arc::new(trie);
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
            ExchangeKind::Fanout => self.list.iter().for_each(|b| out(&b.destination)),
            ExchangeKind::Topic => {
                let mut hits = SmallVec::<[usize; 16]>::new();
                self.topic.matches(routing_key, &mut hits);
                hits.into_iter().for_each(|i| out(&self.list[i].destination));
            }
            ExchangeKind::Headers => self
                .list
                .iter()
                .filter(|b| headers::matches(b.x_match, &b.arguments, headers))
                .for_each(|b| out(&b.destination)),
        }
    }
}
