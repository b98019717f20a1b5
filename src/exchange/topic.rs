//! Topic matching: routing keys and binding keys are words separated by `.`; in a binding, `*`
//! matches exactly one word and `#` zero or more. Empty words count as words (`a..b` has three),
//! and `*`/`#` are special only as whole words, as in RabbitMQ.

use std::collections::{HashMap, HashSet};

use smallvec::SmallVec;

/// Whether `routing_key` matches the topic binding `pattern`.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    let pat: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = if routing_key.is_empty() { Vec::new() } else { routing_key.split('.').collect() };
    let pat: Vec<&str> = if pattern.is_empty() { Vec::new() } else { pat };
    match_words(&pat, &key)
}

/// Iterative matcher with backtracking over the last `#` (linear in practice).
fn match_words(pat: &[&str], key: &[&str]) -> bool {
    let (mut p, mut k) = (0usize, 0usize);
    // Position of the last `#` seen in the pattern and the key position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pat.len() && pat[p] == "#" {
            star = Some((p, k));
            p += 1;
        } else if p < pat.len() && (pat[p] == "*" || pat[p] == key[k]) {
            p += 1;
            k += 1;
        } else if let Some((sp, sk)) = star {
            // Let the last `#` absorb one more word and retry.
            p = sp + 1;
            k = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == "#" {
        p += 1;
    }
    p == pat.len()
}

/// A trie of topic binding patterns, word by word, with `*` and `#` as their own edges: a
/// routing key walks it once instead of being matched against every binding (10,000 bindings
/// cost a few node visits, not 10,000 pattern matches).
#[derive(Debug, Clone)]
pub struct TopicTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    words: HashMap<String, usize, foldhash::fast::RandomState>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Bindings whose pattern ends here (indexes into the exchange's binding list).
    bindings: Vec<usize>,
}

impl Default for TopicTrie {
    fn default() -> Self {
        TopicTrie { nodes: vec![Node::default()] }
    }
}

/// The words of a key or pattern (routing keys rarely have more than 16: no allocation).
fn words(s: &str) -> SmallVec<[&str; 16]> {
    if s.is_empty() { SmallVec::new() } else { s.split('.').collect() }
}

impl TopicTrie {
    /// Add binding number `binding` with this pattern.
    pub fn insert(&mut self, pattern: &str, binding: usize) {
        let mut at = 0;
        for w in words(pattern) {
            let next = self.nodes.len();
            let slot = match w {
                "*" => self.nodes[at].star.get_or_insert(next),
                "#" => self.nodes[at].hash.get_or_insert(next),
                w => self.nodes[at].words.entry(w.to_string()).or_insert(next),
            };
            let child = *slot;
            if child == next {
                self.nodes.push(Node::default());
            }
            at = child;
        }
        self.nodes[at].bindings.push(binding);
    }

    /// The bindings whose pattern matches `routing_key` (a binding may appear more than once).
    pub fn matches<A: smallvec::Array<Item = usize>>(&self, routing_key: &str, out: &mut SmallVec<A>) {
        let key = words(routing_key);
        let mut seen = HashSet::new();
        self.walk(0, &key, 0, out, &mut seen);
    }

    fn walk<A: smallvec::Array<Item = usize>>(
        &self,
        node: usize,
        key: &[&str],
        i: usize,
        out: &mut SmallVec<A>,
        seen: &mut HashSet<(usize, usize)>,
    ) {
        let n = &self.nodes[node];
        if let Some(h) = n.hash {
            // `#` absorbs zero or more words; each (node, position) is visited once.
            for j in i..=key.len() {
                if seen.insert((h, j)) {
                    self.walk(h, key, j, out, seen);
                }
            }
        }
        if i == key.len() {
            out.extend_from_slice(&n.bindings);
            return;
        }
        if let Some(&c) = n.words.get(key[i]) {
            self.walk(c, key, i + 1, out, seen);
        }
        if let Some(c) = n.star {
            self.walk(c, key, i + 1, out, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TopicTrie, matches};
    use smallvec::SmallVec;

    /// The table of RabbitMQ 3.10's measured topic behaviour (reference §3.3).
    #[test]
    fn rabbitmq_topic_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("*", &["a", "b", "#", "*", "a*", "#a"], &["", "a.b", "."]),
            ("#", &["", "a", "a.b", ".", "a.b.c"], &[]),
            ("#.#", &["", "a", "a.b"], &[]),
            ("*.#", &["a", ".", "..", "a.", "a.b.c"], &[""]),
            ("#.*", &["a", ".", "..", "a."], &[""]),
            ("a.#", &["a", "a.b", "a.b.c", "a.", "a..c"], &["b.a", "", "b"]),
            ("#.a", &["a", ".a", "b.a", "a.a"], &["a.b", ""]),
            ("*.*", &["a.b", ".", "a.", ".a"], &["a", "a.b.c", ""]),
            ("a.*.c", &["a.b.c", "a..c"], &["a.c", "a.b.b.c"]),
            ("a.#.c", &["a.c", "a.b.c", "a..c", "a.b.b.c"], &["a.b", "c"]),
            ("*.a.#", &[".a", "b.a", "a.a", "x.a.y"], &["a", ""]),
            ("", &[""], &["a", "."]),
            (".", &["."], &["", "a", ".."]),
            ("a.", &["a."], &["a", "a.b"]),
            (".a", &[".a"], &["a"]),
            ("#a", &["#a"], &["a", "ba"]),
            ("a*", &["a*"], &["ab", "a"]),
            ("a.b", &["a.b"], &["a.b.c", "a"]),
            ("#.b.#.d", &["b.d", "a.b.c.d", "b.b.d", "x.b.y.z.d"], &["b.d.e", "a.c.d"]),
        ];
        for (pattern, yes, no) in cases {
            for k in *yes {
                assert!(matches(pattern, k), "{pattern:?} should match {k:?}");
            }
            for k in *no {
                assert!(!matches(pattern, k), "{pattern:?} should not match {k:?}");
            }
        }
    }

    /// The trie agrees with the pattern matcher on the whole table, with every pattern bound at once.
    #[test]
    fn trie_matches_like_the_matcher() {
        let patterns = [
            "*", "#", "#.#", "*.#", "#.*", "a.#", "#.a", "*.*", "a.*.c", "a.#.c", "*.a.#", "", ".", "a.", ".a", "#a",
            "a*", "a.b", "#.b.#.d",
        ];
        let keys = [
            "", "a", "b", "#", "*", "a*", "#a", "a.b", ".", "..", "a.", ".a", "a.a", "a.b.c", "a..c", "a.c", "a.b.b.c",
            "b.a", "x.a.y", "b.d", "a.b.c.d", "b.b.d", "b.d.e", "a.c.d",
        ];
        let mut trie = TopicTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, i);
        }
        for k in keys {
            let mut got = SmallVec::<[usize; 4]>::new();
            trie.matches(k, &mut got);
            got.sort_unstable();
            got.dedup();
            let want: Vec<usize> = (0..patterns.len()).filter(|i| matches(patterns[*i], k)).collect();
            assert_eq!(got.to_vec(), want, "key {k:?}");
        }
    }
}
