//! The disk alarm: when free space on the data directory's file system drops below
//! `storage.disk_free_limit`, publishing connections are blocked (`connection.blocked` to
//! clients that asked for it, and the broker stops reading their sockets) until space returns,
//! as RabbitMQ does. Consumers and other connections keep working, so queues can drain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// How often free disk space is checked.
///
/// RabbitMQ checks every 10 s by default and faster near the limit; one second keeps the window
/// in which a filling disk is missed short, at the cost of one statvfs call per second.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Free bytes available to the broker on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized, writable struct.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The alarm as seen by connections: a flag checked on every publish (one relaxed load) and a
/// channel to await its clearing.
#[derive(Debug, Clone)]
pub struct DiskAlarm {
    pub raised: Arc<AtomicBool>,
    pub changes: watch::Receiver<bool>,
}

impl DiskAlarm {
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }
}

/// Start the monitor.
pub fn start(dir: PathBuf, limit: u64) -> DiskAlarm {
    let (tx, rx) = watch::channel(false);
    let raised = Arc::new(AtomicBool::new(false));
    let flag = raised.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DISK_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let Some(free) = free_bytes(&dir) else { continue };
            let low = free < limit;
            if low != *tx.borrow() {
                if low {
                    warn!(free, limit, "disk alarm: free space below storage.disk_free_limit; publishers are blocked");
                } else {
                    info!(free, limit, "disk alarm cleared; publishers resume");
                }
                flag.store(low, Ordering::Relaxed);
                if tx.send(low).is_err() {
                    return;
                }
            }
        }
    });
    DiskAlarm { raised, changes: rx }
}
