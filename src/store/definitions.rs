//! The definitions store: durable exchanges, durable queues (with their arguments) and the
//! bindings between durable entities of one vhost, kept in `definitions.json` and restored at
//! start. Changes are appended to a journal beside it ([`journal`]); the file itself is
//! rewritten atomically (temporary file, fsync, rename) when the journal has outgrown it, at a
//! clean stop, and at the start after a crash.
//!
//! Format (version 2): plain JSON for what a person skims (names, types, flags), and every
//! arguments table as the hex of its AMQP wire encoding, so that each field type comes back
//! exactly (NaN and infinite floats, decimals, timestamps, byte arrays, void, every integer
//! width, long strings that are not UTF-8, nesting up to [`fields::MAX_NESTING`]):
//!
//! ```json
//! { "version": 2,
//!   "exchanges": [{ "name": "x", "type": "direct", "auto_delete": false, "internal": false, "arguments": "00000000" }],
//!   "queues": [{ "name": "q", "auto_delete": false, "arguments": "0000000f0b782d6d61782d6c656e677468490000000a" }],
//!   "bindings": [{ "source": "x", "destination": "q", "destination_type": "queue", "routing_key": "k", "arguments": "00000000" }] }
//! ```
//!
//! A file without `"version"` is the first format (serde's form of the tables) and is still
//! read; it is rewritten in the current format on the next change.
//!
//! A file that cannot be read is an error the vhost refuses to start on: nothing is renamed,
//! rewritten or deleted, and the message says how to recover.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::fields;

/// The format written by this version.
pub const FORMAT_VERSION: u64 = 2;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    pub name: String,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    pub source: String,
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: String,
    pub routing_key: String,
    pub arguments: FieldTable,
}

// ---- the stored form (version 2) ----------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct StoredDefinitions {
    version: u64,
    exchanges: Vec<StoredExchange>,
    queues: Vec<StoredQueue>,
    bindings: Vec<StoredBinding>,
}

#[derive(Serialize, Deserialize)]
struct StoredExchange {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    auto_delete: bool,
    internal: bool,
    /// Hex of the AMQP encoding of the table (length prefix included).
    arguments: String,
}

#[derive(Serialize, Deserialize)]
struct StoredQueue {
    name: String,
    auto_delete: bool,
    arguments: String,
}

#[derive(Serialize, Deserialize)]
struct StoredBinding {
    source: String,
    destination: String,
    destination_type: String,
    routing_key: String,
    arguments: String,
}

/// The AMQP wire encoding of a table, as lower-case hex.
pub fn table_to_hex(t: &FieldTable) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = fields::encode_table(t);
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Decode [`table_to_hex`]'s output, checking structure and nesting before building anything.
pub fn table_from_hex(s: &str) -> Result<FieldTable, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("'{}' is not a hex digit", c as char)),
    };
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let bytes =
        s.as_bytes().chunks(2).map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?)).collect::<Result<Vec<u8>, String>>()?;
    let used = fields::check_table(&bytes).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} bytes after the table", bytes.len() - used));
    }
    fields::decode_table(&bytes).map_err(|e| e.to_string())
}

fn to_stored(defs: &Definitions) -> StoredDefinitions {
    StoredDefinitions {
        version: FORMAT_VERSION,
        exchanges: defs
            .exchanges
            .iter()
            .map(|x| StoredExchange {
                name: x.name.clone(),
                kind: x.kind.clone(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: table_to_hex(&x.arguments),
            })
            .collect(),
        queues: defs
            .queues
            .iter()
            .map(|q| StoredQueue {
                name: q.name.clone(),
                auto_delete: q.auto_delete,
                arguments: table_to_hex(&q.arguments),
            })
            .collect(),
        bindings: defs
            .bindings
            .iter()
            .map(|b| StoredBinding {
                source: b.source.clone(),
                destination: b.destination.clone(),
                destination_type: b.destination_type.clone(),
                routing_key: b.routing_key.clone(),
                arguments: table_to_hex(&b.arguments),
            })
            .collect(),
    }
}

fn from_stored(s: StoredDefinitions) -> Result<Definitions, String> {
    let args = |what: &str, name: &str, hex: &str| {
        table_from_hex(hex).map_err(|e| format!("the arguments of {what} '{name}' cannot be decoded: {e}"))
    };
    let mut d = Definitions::default();
    for x in s.exchanges {
        let arguments = args("exchange", &x.name, &x.arguments)?;
        d.exchanges.push(ExchangeDef {
            name: x.name,
            kind: x.kind,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments,
        });
    }
    for q in s.queues {
        let arguments = args("queue", &q.name, &q.arguments)?;
        d.queues.push(QueueDef { name: q.name, auto_delete: q.auto_delete, arguments });
    }
    for b in s.bindings {
        let what = format!("the binding of '{}' to {}", b.source, b.destination_type);
        let arguments = args(&what, &b.destination, &b.arguments)?;
        d.bindings.push(BindingDef {
            source: b.source,
            destination: b.destination,
            destination_type: b.destination_type,
            routing_key: b.routing_key,
            arguments,
        });
    }
    Ok(d)
}

/// Render `defs` as the text of `definitions.json`.
pub fn render(defs: &Definitions) -> String {
    let mut text = serde_json::to_string_pretty(&to_stored(defs)).expect("plain strings and booleans serialize");
    text.push('\n');
    text
}

/// Read the text of a `definitions.json` (any known format version).
pub fn parse(text: &str) -> Result<Definitions, String> {
    parse_versioned(text).map(|(d, _)| d)
}

/// [`parse`], and whether the text is in the current format.
fn parse_versioned(text: &str) -> Result<(Definitions, bool), String> {
    // The current format straight into its types (a 100,000-queue file in half the time of
    // going through a `Value`); anything else takes the general path below.
    if let Ok(s) = serde_json::from_str::<StoredDefinitions>(text)
        && s.version == FORMAT_VERSION
    {
        return from_stored(s).map(|d| (d, true));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    match v.get("version") {
        None => legacy::definitions(&v).map(|d| (d, false)),
        Some(Value::Number(n)) if n.as_u64() == Some(FORMAT_VERSION) => {
            let s: StoredDefinitions = serde_json::from_value(v).map_err(|e| format!("malformed ({e})"))?;
            from_stored(s).map(|d| (d, true))
        }
        Some(other) => Err(format!(
            "format version {other} is not one this Warren reads (it reads {FORMAT_VERSION} and the unversioned first \
             format); it was probably written by a newer Warren"
        )),
    }
}

/// Where a vhost keeps its definitions: a snapshot (`definitions.json`) and the journal of
/// changes since (see [`journal`]).
#[derive(Debug)]
pub struct DefinitionsFile {
    path: PathBuf,
    /// The text last written (or read): saving the same again is skipped.
    last: Option<String>,
    /// Opened by [`Self::load`].
    journal: Option<journal::Journal>,
    /// Entries in the snapshot (the journal is compacted once it outgrows them).
    snapshot_entries: usize,
    /// The snapshot read is in an older format.
    stale: bool,
}

impl DefinitionsFile {
    pub fn new(dir: &Path) -> Self {
        DefinitionsFile {
            path: dir.join("definitions.json"),
            last: None,
            journal: None,
            snapshot_entries: 0,
            stale: false,
        }
    }

    /// Whether the snapshot is behind: the journal holds changes, or the snapshot is in an
    /// older format (see [`Self::compact`]).
    pub fn needs_compaction(&self) -> bool {
        self.stale || self.journal.as_ref().is_some_and(|j| j.records() > 0)
    }

    /// Write `defs` (everything durable now) as the snapshot and empty the journal: at a clean
    /// stop, so that the next start reads one file, and at start after a crash or an upgrade.
    pub fn compact(&mut self, defs: &Definitions) -> std::io::Result<()> {
        self.save(defs)?;
        self.stale = false;
        match self.journal.as_mut() {
            Some(j) if j.records() > 0 => j.reset(),
            _ => Ok(()),
        }
    }

    /// The journal's group commit (after [`Self::load`]).
    pub fn journal_sync(&self) -> Option<Arc<journal::JournalSync>> {
        self.journal.as_ref().map(|j| j.sync().clone())
    }

    /// Record durable changes: appended to the journal (synced by the caller through
    /// [`Self::journal_sync`]), or, when the journal has outgrown the snapshot, by writing a
    /// new snapshot from `full()` (everything durable now) and emptying the journal.
    pub fn append(&mut self, changes: &[journal::Change], full: impl FnOnce() -> Definitions) -> std::io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let journal = match self.journal.as_mut() {
            Some(j) => j,
            None => self.journal.insert(journal::Journal::open(&dir, 0)?),
        };
        let records = journal.records() + changes.len();
        if records <= journal::COMPACT_MIN.max(self.snapshot_entries) {
            return journal.append(changes).map(|_| ());
        }
        // Appended first so that the sequence numbers of these changes are counted as synced
        // by the reset below.
        journal.append(changes)?;
        self.save(&full())?;
        match self.journal.as_mut() {
            Some(j) => j.reset(),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the stored definitions (no file yet: empty). A file that exists but cannot be read
    /// is an error (`InvalidData`) whose text names the file and says how to recover; the file
    /// itself is left exactly as it is.
    /// The journal is replayed over the snapshot, and opened for appending.
    pub fn load(&mut self) -> std::io::Result<Definitions> {
        let snapshot = self.load_snapshot()?;
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let changes = journal::Journal::read(&dir).map_err(|why| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, unreadable_journal_message(&self.path, &why))
        })?;
        let records = changes.len();
        self.snapshot_entries = snapshot.exchanges.len() + snapshot.queues.len() + snapshot.bindings.len();
        let defs = journal::apply(snapshot, changes);
        self.journal = Some(journal::Journal::open(&dir, records)?);
        Ok(defs)
    }

    fn load_snapshot(&mut self) -> std::io::Result<Definitions> {
        let bytes = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Definitions::default()),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("cannot read {}: {e}", self.path.display()))),
        };
        let parsed = std::str::from_utf8(&bytes).map_err(|e| format!("not UTF-8 text ({e})")).and_then(parse_versioned);
        match parsed {
            Ok((d, current)) => {
                self.last = std::str::from_utf8(&bytes).ok().map(str::to_string);
                self.stale = !current;
                Ok(d)
            }
            Err(why) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, unreadable_message(&self.path, &why))),
        }
    }

    /// Write `defs` if they differ from what was last written.
    pub fn save(&mut self, defs: &Definitions) -> std::io::Result<()> {
        let text = render(defs);
        if self.last.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.snapshot_entries = defs.exchanges.len() + defs.queues.len() + defs.bindings.len();
        self.last = Some(text);
        Ok(())
    }
}

/// What the broker says when it refuses to start on an unreadable journal.
fn unreadable_journal_message(snapshot: &Path, why: &str) -> String {
    let journal = journal::Journal::path_in(snapshot.parent().unwrap_or(Path::new(".")));
    format!(
        "the definitions journal cannot be read: {why}. Warren will not start on it, and has changed and deleted \
         nothing. To recover, either restore {journal} from a backup, or move it aside (e.g. `mv {journal} \
         {journal}.damaged`) to start this vhost with the definitions of {snapshot} alone (changes recorded since \
         its last rewrite are then lost)",
        journal = journal.display(),
        snapshot = snapshot.display(),
    )
}

/// What the broker says when it refuses to start on an unreadable definitions file.
fn unreadable_message(path: &Path, why: &str) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    format!(
        "the definitions file {path} cannot be read: {why}. Warren will not start on it, and has changed and deleted \
         nothing. To recover, either restore {path} from a backup, or move it aside (e.g. `mv {path} {path}.damaged`) \
         to start this vhost with no durable exchanges, queues or bindings; the queue message directories under {queues} \
         are then kept untouched and logged as orphaned at start",
        path = path.display(),
        queues = dir.join("queues").display(),
    )
}

/// The first (unversioned) format: serde's externally tagged form of `AMQPValue`. NaN and
/// infinite floats were written as `null`; they come back as NaN (the exact value is lost).
mod legacy {
    use super::*;

    fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
        v.get(key).ok_or_else(|| format!("missing \"{key}\""))
    }

    fn string(v: &Value, key: &str) -> Result<String, String> {
        field(v, key)?.as_str().map(str::to_string).ok_or_else(|| format!("\"{key}\" is not a string"))
    }

    fn boolean(v: &Value, key: &str) -> Result<bool, String> {
        field(v, key)?.as_bool().ok_or_else(|| format!("\"{key}\" is not a boolean"))
    }

    fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], String> {
        match v.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(format!("\"{key}\" is not a list")),
        }
    }

    pub(super) fn definitions(v: &Value) -> Result<Definitions, String> {
        let mut d = Definitions::default();
        for x in list(v, "exchanges")? {
            let name = string(x, "name")?;
            let ctx = |e: String| format!("exchange '{name}': {e}");
            d.exchanges.push(ExchangeDef {
                kind: string(x, "type").map_err(ctx)?,
                auto_delete: boolean(x, "auto_delete").map_err(ctx)?,
                internal: boolean(x, "internal").map_err(ctx)?,
                arguments: table(field(x, "arguments").map_err(ctx)?).map_err(ctx)?,
                name: name.clone(),
            });
        }
        for q in list(v, "queues")? {
            let name = string(q, "name")?;
            let ctx = |e: String| format!("queue '{name}': {e}");
            d.queues.push(QueueDef {
                auto_delete: boolean(q, "auto_delete").map_err(ctx)?,
                arguments: table(field(q, "arguments").map_err(ctx)?).map_err(ctx)?,
                name: name.clone(),
            });
        }
        for b in list(v, "bindings")? {
            let ctx = |e: String| format!("binding: {e}");
            d.bindings.push(BindingDef {
                source: string(b, "source").map_err(ctx)?,
                destination: string(b, "destination").map_err(ctx)?,
                destination_type: string(b, "destination_type").map_err(ctx)?,
                routing_key: string(b, "routing_key").map_err(ctx)?,
                arguments: table(field(b, "arguments").map_err(ctx)?).map_err(ctx)?,
            });
        }
        Ok(d)
    }

    pub(super) fn table(v: &Value) -> Result<FieldTable, String> {
        let Value::Object(m) = v else { return Err("a table is not a JSON object".into()) };
        let mut t = FieldTable::default();
        for (k, val) in m {
            let key = ShortString::try_new(k.as_str()).map_err(|e| e.to_string())?;
            t.insert(key, value(val).map_err(|e| format!("'{k}': {e}"))?);
        }
        Ok(t)
    }

    fn bytes(v: &Value) -> Result<Vec<u8>, String> {
        let Value::Array(a) = v else { return Err("bytes are not a JSON list".into()) };
        a.iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).ok_or_else(|| "not a byte".to_string()))
            .collect()
    }

    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Result<T, String> {
        let r = match (v.as_i64(), v.as_u64()) {
            (_, Some(u)) => T::try_from(u).ok(),
            (Some(i), None) => T::try_from(i).ok(),
            _ => None,
        };
        r.ok_or_else(|| format!("{v} is not an integer of the stored type"))
    }

    fn float(v: &Value) -> Result<f64, String> {
        match v {
            // serde_json wrote NaN and ±infinity as null.
            Value::Null => Ok(f64::NAN),
            _ => v.as_f64().ok_or_else(|| format!("{v} is not a number")),
        }
    }

    fn value(v: &Value) -> Result<AMQPValue, String> {
        if v.as_str() == Some("Void") {
            return Ok(AMQPValue::Void);
        }
        let Some((tag, inner)) = v.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
            return Err(format!("{v} is not a tagged value"));
        };
        Ok(match tag.as_str() {
            "Boolean" => AMQPValue::Boolean(inner.as_bool().ok_or("not a boolean")?),
            "ShortShortInt" => AMQPValue::ShortShortInt(int(inner)?),
            "ShortShortUInt" => AMQPValue::ShortShortUInt(int(inner)?),
            "ShortInt" => AMQPValue::ShortInt(int(inner)?),
            "ShortUInt" => AMQPValue::ShortUInt(int(inner)?),
            "LongInt" => AMQPValue::LongInt(int(inner)?),
            "LongUInt" => AMQPValue::LongUInt(int(inner)?),
            "LongLongInt" => AMQPValue::LongLongInt(int(inner)?),
            "Timestamp" => AMQPValue::Timestamp(int(inner)?),
            "Float" => AMQPValue::Float(float(inner)? as f32),
            "Double" => AMQPValue::Double(float(inner)?),
            "DecimalValue" => AMQPValue::DecimalValue(DecimalValue {
                scale: int(field(inner, "scale")?)?,
                value: int(field(inner, "value")?)?,
            }),
            // A short string has no type tag on the wire: keep it as the long string it means.
            "ShortString" => {
                AMQPValue::LongString(LongString::from(inner.as_str().ok_or("not a string")?.as_bytes().to_vec()))
            }
            "LongString" => AMQPValue::LongString(LongString::from(bytes(inner)?)),
            "ByteArray" => AMQPValue::ByteArray(ByteArray::from(bytes(inner)?)),
            "FieldArray" => {
                let Value::Array(a) = inner else { return Err("an array is not a JSON list".into()) };
                AMQPValue::FieldArray(FieldArray::from(a.iter().map(value).collect::<Result<Vec<_>, _>>()?))
            }
            "FieldTable" => AMQPValue::FieldTable(table(inner)?),
            other => return Err(format!("unknown value type '{other}'")),
        })
    }
}

pub mod journal;
#[cfg(test)]
mod tests;
