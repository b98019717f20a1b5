//! The definitions journal: `definitions.journal` beside `definitions.json`, one JSON line per
//! durable change (a queue, exchange or binding added or removed). Rewriting the whole
//! definitions file on every change made each declare cost O(queues) in bytes written, so
//! declaring 100,000 durable queues took hours; appending a line costs the same at any size.
//!
//! - A change is appended under the vhost's topology lock and made durable by
//!   [`JournalSync::wait`]: the first waiter runs one `fdatasync` for every line appended so far
//!   (group commit), so a burst of pipelined declares shares one sync. Connections wait before
//!   they send the replies (declare-ok, bind-ok) that follow their changes.
//! - At start the snapshot is read and the journal replayed over it. Every record is "last
//!   writer wins" per name (deleting a queue or exchange also drops the bindings that name it),
//!   so replaying a journal over a snapshot that already contains some of it gives the same
//!   result: a crash between writing a new snapshot and emptying the journal is harmless.
//! - When the journal has grown past the snapshot's size (and [`COMPACT_MIN`]), the snapshot is
//!   rewritten (temporary file, fsync, rename) and the journal emptied: O(n) work every O(n)
//!   changes.
//! - A torn last line (a crash in the middle of an append that was never acknowledged) is
//!   ignored; any other line that cannot be read stops the vhost's start, as an unreadable
//!   snapshot does: nothing is deleted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{BindingDef, Definitions, ExchangeDef, QueueDef, table_from_hex, table_to_hex};

/// The journal is compacted into the snapshot only past this many records.
pub const COMPACT_MIN: usize = 10_000;

/// One durable change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    PutExchange(ExchangeDef),
    /// Also drops the bindings from and to it.
    DeleteExchange(String),
    PutQueue(QueueDef),
    /// Also drops the bindings to it.
    DeleteQueue(String),
    PutBinding(BindingDef),
    DeleteBinding(BindingDef),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    PutExchange {
        name: String,
        r#type: String,
        auto_delete: bool,
        internal: bool,
        arguments: String,
    },
    DeleteExchange {
        name: String,
    },
    PutQueue {
        name: String,
        auto_delete: bool,
        arguments: String,
    },
    DeleteQueue {
        name: String,
    },
    PutBinding {
        source: String,
        destination: String,
        destination_type: String,
        routing_key: String,
        arguments: String,
    },
    DeleteBinding {
        source: String,
        destination: String,
        destination_type: String,
        routing_key: String,
        arguments: String,
    },
}

fn to_line(c: &Change) -> Line {
    match c {
        Change::PutExchange(x) => Line::PutExchange {
            name: x.name.clone(),
            r#type: x.kind.clone(),
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: table_to_hex(&x.arguments),
        },
        Change::DeleteExchange(n) => Line::DeleteExchange { name: n.clone() },
        Change::PutQueue(q) => {
            Line::PutQueue { name: q.name.clone(), auto_delete: q.auto_delete, arguments: table_to_hex(&q.arguments) }
        }
        Change::DeleteQueue(n) => Line::DeleteQueue { name: n.clone() },
        Change::PutBinding(b) => Line::PutBinding {
            source: b.source.clone(),
            destination: b.destination.clone(),
            destination_type: b.destination_type.clone(),
            routing_key: b.routing_key.clone(),
            arguments: table_to_hex(&b.arguments),
        },
        Change::DeleteBinding(b) => Line::DeleteBinding {
            source: b.source.clone(),
            destination: b.destination.clone(),
            destination_type: b.destination_type.clone(),
            routing_key: b.routing_key.clone(),
            arguments: table_to_hex(&b.arguments),
        },
    }
}

fn from_line(l: Line) -> Result<Change, String> {
    let args = |hex: &str| table_from_hex(hex).map_err(|e| format!("arguments cannot be decoded: {e}"));
    let binding = |source, destination, destination_type: String, routing_key, hex: &str| {
        if destination_type != "queue" && destination_type != "exchange" {
            return Err(format!("destination_type {destination_type:?} is neither queue nor exchange"));
        }
        Ok(BindingDef { source, destination, destination_type, routing_key, arguments: args(hex)? })
    };
    Ok(match l {
        Line::PutExchange { name, r#type, auto_delete, internal, arguments } => {
            let arguments = args(&arguments)?;
            Change::PutExchange(ExchangeDef { name, kind: r#type, auto_delete, internal, arguments })
        }
        Line::DeleteExchange { name } => Change::DeleteExchange(name),
        Line::PutQueue { name, auto_delete, arguments } => {
            Change::PutQueue(QueueDef { name, auto_delete, arguments: args(&arguments)? })
        }
        Line::DeleteQueue { name } => Change::DeleteQueue(name),
        Line::PutBinding { source, destination, destination_type, routing_key, arguments } => {
            Change::PutBinding(binding(source, destination, destination_type, routing_key, &arguments)?)
        }
        Line::DeleteBinding { source, destination, destination_type, routing_key, arguments } => {
            Change::DeleteBinding(binding(source, destination, destination_type, routing_key, &arguments)?)
        }
    })
}

/// Render changes as journal lines.
pub fn render(changes: &[Change]) -> String {
    let mut s = String::new();
    for c in changes {
        s.push_str(&serde_json::to_string(&to_line(c)).expect("plain strings and booleans serialize"));
        s.push('\n');
    }
    s
}

/// Parse a journal's text: its changes, in order. A last line without its newline is a torn
/// append and is left out; any other unreadable line is an error naming its line number.
pub fn parse(text: &str) -> Result<Vec<Change>, String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line =
            serde_json::from_str(line).map_err(|e| format!("line {} is not a journal record ({e})", i + 1))?;
        out.push(from_line(l).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// A binding's identity (its arguments compared by their encoding).
type BindingKey = (String, String, String, String, String);

fn binding_key(b: &BindingDef) -> BindingKey {
    (
        b.source.clone(),
        b.destination_type.clone(),
        b.destination.clone(),
        b.routing_key.clone(),
        table_to_hex(&b.arguments),
    )
}

/// Apply changes to definitions (see the module's notes on replay).
pub fn apply(defs: Definitions, changes: Vec<Change>) -> Definitions {
    if changes.is_empty() {
        return defs;
    }
    let mut exchanges: BTreeMap<String, ExchangeDef> =
        defs.exchanges.into_iter().map(|x| (x.name.clone(), x)).collect();
    let mut queues: BTreeMap<String, QueueDef> = defs.queues.into_iter().map(|q| (q.name.clone(), q)).collect();
    let mut bindings: BTreeMap<BindingKey, BindingDef> =
        defs.bindings.into_iter().map(|b| (binding_key(&b), b)).collect();
    for c in changes {
        match c {
            Change::PutExchange(x) => {
                exchanges.insert(x.name.clone(), x);
            }
            Change::DeleteExchange(n) => {
                exchanges.remove(&n);
                bindings.retain(|_, b| b.source != n && !(b.destination_type == "exchange" && b.destination == n));
            }
            Change::PutQueue(q) => {
                queues.insert(q.name.clone(), q);
            }
            Change::DeleteQueue(n) => {
                queues.remove(&n);
                bindings.retain(|_, b| !(b.destination_type == "queue" && b.destination == n));
            }
            Change::PutBinding(b) => {
                bindings.insert(binding_key(&b), b);
            }
            Change::DeleteBinding(b) => {
                bindings.remove(&binding_key(&b));
            }
        }
    }
    Definitions {
        exchanges: exchanges.into_values().collect(),
        queues: queues.into_values().collect(),
        bindings: bindings.into_values().collect(),
    }
}

/// Group commit of the journal: waiters share `fdatasync` calls.
#[derive(Debug)]
pub struct JournalSync {
    file: File,
    /// Records appended so far (a sequence number, never reset).
    appended: AtomicU64,
    /// Records known to be on disk.
    synced: AtomicU64,
    /// One sync at a time; the others wait here and usually find their records synced.
    leader: tokio::sync::Mutex<()>,
}

impl JournalSync {
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    pub fn is_synced(&self, seq: u64) -> bool {
        self.synced.load(Ordering::Acquire) >= seq
    }

    /// Return once every record up to `seq` is on disk.
    pub async fn wait(&self, seq: u64) {
        if self.is_synced(seq) {
            return;
        }
        let _leader = self.leader.lock().await;
        self.sync_now(seq);
    }

    /// Sync now (blocking) if records up to `seq` are not on disk yet.
    pub fn sync_now(&self, seq: u64) {
        if self.is_synced(seq) {
            return;
        }
        let target = self.appended();
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, "cannot sync the definitions journal; recent changes may not survive a power loss");
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
    }
}

/// The journal file of one vhost.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    sync: Arc<JournalSync>,
    /// Records in the file now.
    records: usize,
}

impl Journal {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("definitions.journal")
    }

    /// Read the journal's changes (no file: none).
    pub fn read(dir: &Path) -> Result<Vec<Change>, String> {
        let path = Self::path_in(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| format!("{} is not UTF-8 text ({e})", path.display()))?;
        parse(text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Open for appending; `records` is how many it holds (as read).
    pub fn open(dir: &Path, records: usize) -> std::io::Result<Journal> {
        let path = Self::path_in(dir);
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if !existed {
            // The new file's directory entry must be durable before a sync of the file is
            // taken to make its records durable.
            File::open(dir)?.sync_all()?;
        }
        let sync = Arc::new(JournalSync {
            file: file.try_clone()?,
            appended: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            leader: tokio::sync::Mutex::new(()),
        });
        Ok(Journal { path, file, sync, records })
    }

    pub fn sync(&self) -> &Arc<JournalSync> {
        &self.sync
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// Append changes (not synced yet: see [`JournalSync::wait`]). Returns their sequence number.
    pub fn append(&mut self, changes: &[Change]) -> std::io::Result<u64> {
        let text = render(changes);
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            // A partial line would be torn in the middle of the file: cut it off.
            let _ = self.truncate_to_records();
            return Err(e);
        }
        self.records += changes.len();
        Ok(self.sync.appended.fetch_add(changes.len() as u64, Ordering::AcqRel) + changes.len() as u64)
    }

    /// After a failed write, drop a trailing partial line.
    fn truncate_to_records(&mut self) -> std::io::Result<()> {
        let bytes = std::fs::read(&self.path)?;
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.file.set_len(keep as u64)
    }

    /// The snapshot now holds everything: empty the journal (synced), and count every
    /// appended record as synced.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.records = 0;
        let appended = self.sync.appended();
        self.sync.synced.fetch_max(appended, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, FieldTable};

    fn q(name: &str) -> QueueDef {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(5));
        QueueDef { name: name.into(), auto_delete: false, arguments: args }
    }

    fn b(source: &str, queue: &str, key: &str) -> BindingDef {
        BindingDef {
            source: source.into(),
            destination: queue.into(),
            destination_type: "queue".into(),
            routing_key: key.into(),
            arguments: FieldTable::default(),
        }
    }

    fn x(name: &str) -> ExchangeDef {
        ExchangeDef {
            name: name.into(),
            kind: "topic".into(),
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn records_round_trip() {
        let changes = vec![
            Change::PutExchange(x("x")),
            Change::PutQueue(q("q")),
            Change::PutBinding(b("x", "q", "a.#")),
            Change::DeleteBinding(b("x", "q", "a.#")),
            Change::DeleteQueue("q".into()),
            Change::DeleteExchange("x".into()),
        ];
        assert_eq!(parse(&render(&changes)).unwrap(), changes);
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_other_damage_is_an_error() {
        let text = render(&[Change::PutQueue(q("a")), Change::PutQueue(q("b"))]);
        let torn = &text[..text.len() - 5];
        assert_eq!(parse(torn).unwrap(), vec![Change::PutQueue(q("a"))]);
        let damaged = format!("{{not json\n{text}");
        assert!(parse(&damaged).unwrap_err().contains("line 1"), "{}", parse(&damaged).unwrap_err());
        let bad_type = r#"{"op":"put_binding","source":"x","destination":"q","destination_type":"nope","routing_key":"","arguments":"00000000"}"#;
        assert!(parse(&format!("{bad_type}\n")).is_err());
    }

    #[test]
    fn deletes_take_the_bindings_that_name_them() {
        let defs = Definitions {
            exchanges: vec![x("x"), x("y")],
            queues: vec![q("q"), q("r")],
            bindings: vec![b("x", "q", "1"), b("x", "r", "2"), b("y", "q", "3")],
        };
        let d = apply(defs.clone(), vec![Change::DeleteQueue("q".into())]);
        assert_eq!(d.bindings, vec![b("x", "r", "2")]);
        let d = apply(defs, vec![Change::DeleteExchange("x".into())]);
        assert_eq!(d.bindings, vec![b("y", "q", "3")]);
        assert_eq!(d.exchanges, vec![x("y")]);
    }

    /// Replaying a journal over a snapshot that already holds some or all of it (a crash
    /// between writing the snapshot and emptying the journal) gives the same definitions.
    #[test]
    fn replay_over_any_prefix_of_its_own_history_is_the_same() {
        let history = vec![
            Change::PutExchange(x("x")),
            Change::PutQueue(q("q")),
            Change::PutBinding(b("x", "q", "k")),
            Change::DeleteQueue("q".into()),
            Change::PutQueue(q("q")),
            Change::PutBinding(b("x", "q", "k")),
            Change::PutQueue(q("gone")),
            Change::PutBinding(b("x", "gone", "k")),
            Change::DeleteBinding(b("x", "gone", "k")),
            Change::DeleteQueue("gone".into()),
            Change::PutExchange(x("y")),
            Change::DeleteExchange("y".into()),
        ];
        let want = apply(Definitions::default(), history.clone());
        assert_eq!(want.queues, vec![q("q")]);
        assert_eq!(want.bindings, vec![b("x", "q", "k")]);
        for cut in 0..=history.len() {
            let snapshot = apply(Definitions::default(), history[..cut].to_vec());
            assert_eq!(apply(snapshot, history.clone()), want, "snapshot after {cut} changes");
        }
    }

    #[test]
    fn appends_are_synced_by_the_group_commit_and_reset_empties_the_file() {
        let dir = std::env::temp_dir().join(format!("warren-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut j = Journal::open(&dir, 0).unwrap();
        let seq = j.append(&[Change::PutQueue(q("a")), Change::PutQueue(q("b"))]).unwrap();
        assert_eq!(seq, 2);
        assert!(!j.sync().is_synced(seq));
        j.sync().sync_now(seq);
        assert!(j.sync().is_synced(seq));
        assert_eq!(Journal::read(&dir).unwrap().len(), 2);
        let seq = j.append(&[Change::DeleteQueue("a".into())]).unwrap();
        j.reset().unwrap();
        assert!(j.sync().is_synced(seq), "a reset follows a snapshot holding everything");
        assert_eq!(Journal::read(&dir).unwrap(), vec![]);
        j.append(&[Change::PutQueue(q("c"))]).unwrap();
        assert_eq!(Journal::read(&dir).unwrap(), vec![Change::PutQueue(q("c"))], "appends after a reset start at 0");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
