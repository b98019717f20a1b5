//! A scratch directory for unit tests: unique under the system temp dir (tag, process id and a
//! counter), removed when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A fresh directory path named after `tag` (not created; anything left there is removed).
    pub fn new(tag: &str) -> TestDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "warren-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TestDir(p)
    }

    /// [`TestDir::new`], created.
    pub fn created(tag: &str) -> TestDir {
        let d = TestDir::new(tag);
        std::fs::create_dir_all(&d.0).expect("create a test directory");
        d
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
