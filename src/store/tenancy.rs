//! The broker's users, vhosts, permissions, policies and limits on disk: one file,
//! `tenancy.json` in the data directory, in RabbitMQ's definitions format
//! ([`crate::definitions`]), rewritten atomically on every change. A file that exists but
//! cannot be read stops the start (nothing is recreated over it or deleted because of it).

use std::path::{Path, PathBuf};

use crate::definitions::Definitions;

pub struct TenancyFile {
    path: PathBuf,
}

impl TenancyFile {
    pub fn new(data_dir: &Path) -> TenancyFile {
        TenancyFile { path: data_dir.join("tenancy.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved definitions; None before the first start.
    pub fn load(&self) -> Result<Option<Definitions>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Definitions::parse(&text).map(Some).map_err(|e| {
                format!(
                    "{} cannot be read ({e}); fix or restore it (it holds the users, vhosts, permissions and policies)",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    pub fn save(&self, d: &Definitions) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&d.to_json()).unwrap_or_default();
        super::write_atomically(&self.path, text.as_bytes())
    }
}
