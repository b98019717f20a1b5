//! Rendering: aligned text tables for people, JSON for scripts.

use serde_json::{Map, Value};

/// The value at a dotted column path (`queue.name`), Null when absent.
pub fn pick<'a>(item: &'a Value, column: &str) -> &'a Value {
    column.split('.').fold(item, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// Only the named columns of `item`, keyed by the column names.
pub fn narrow(item: &Value, columns: &[String]) -> Value {
    let m: Map<String, Value> = columns.iter().map(|c| (c.clone(), pick(item, c).clone())).collect();
    Value::Object(m)
}

/// One table cell: strings as they are, nothing for null, a list of strings comma-joined,
/// other lists and objects as compact JSON; control characters escaped so a row stays a line.
pub fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect()
}

/// Rows as columns aligned with two spaces between them (the last column is not padded).
pub fn table(header: Option<&[String]>, rows: &[Vec<String>]) -> String {
    let all: Vec<&[String]> = header.into_iter().chain(rows.iter().map(Vec::as_slice)).collect();
    let columns = all.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| all.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `items` under `columns` as a table (with a header row unless `headers` is false).
pub fn items_table(items: &[Value], columns: &[String], headers: bool) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(|i| columns.iter().map(|c| cell(pick(i, c))).collect()).collect();
    table(headers.then_some(columns), &rows)
}

pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_render_values() {
        let items = vec![
            json!({"name": "a", "messages": 10, "tags": ["x", "y"], "queue": {"name": "q1"}}),
            json!({"name": "longer", "messages": 2, "tags": [], "args": {"k": 1}, "queue": {"name": "q2"}}),
        ];
        let cols: Vec<String> = ["name", "messages", "tags", "queue.name", "args"].map(String::from).to_vec();
        assert_eq!(
            items_table(&items, &cols, true),
            "name    messages  tags  queue.name  args\n\
             a       10        x,y   q1\n\
             longer  2               q2          {\"k\":1}\n"
        );
        assert_eq!(items_table(&items[..1], &cols[..1], false), "a\n");
        assert_eq!(cell(&json!("two\nlines\t")), "two\\nlines\\t");
        assert_eq!(narrow(&items[0], &cols[3..4]), json!({"queue.name": "q1"}));
    }
}
