//! The definitions store: durable exchanges, durable queues (with their arguments) and the
//! bindings between durable entities of one vhost, kept in `definitions.json` and restored at
//! start. Written atomically (temporary file, fsync, rename) whenever they change.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    pub source: String,
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: String,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// Where a vhost keeps its definitions.
#[derive(Debug)]
pub struct DefinitionsFile {
    path: PathBuf,
    last: Option<Definitions>,
}

impl DefinitionsFile {
    pub fn new(dir: &Path) -> Self {
        DefinitionsFile { path: dir.join("definitions.json"), last: None }
    }

    /// Read the stored definitions (none yet: empty). A file that cannot be parsed is kept
    /// aside as `definitions.json.corrupt` and the vhost starts empty.
    pub fn load(&mut self) -> std::io::Result<Definitions> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Definitions::default()),
            Err(e) => return Err(e),
        };
        match serde_json::from_str::<Definitions>(&text) {
            Ok(d) => {
                self.last = Some(d.clone());
                Ok(d)
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "unreadable definitions kept aside; starting empty");
                let _ = fs::rename(&self.path, self.path.with_extension("json.corrupt"));
                Ok(Definitions::default())
            }
        }
    }

    /// Write `defs` if they differ from what was last written.
    pub fn save(&mut self, defs: &Definitions) -> std::io::Result<()> {
        if self.last.as_ref() == Some(defs) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(defs).map_err(std::io::Error::other)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.last = Some(defs.clone());
        Ok(())
    }
}
