//! Topic matching: routing keys and binding keys are words separated by `.`; in a binding, `*`
//! matches exactly one word and `#` zero or more. Empty words count as words (`a..b` has three),
//! and `*`/`#` are special only as whole words, as in RabbitMQ.

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

#[cfg(test)]
mod tests {
    use super::matches;

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
}
