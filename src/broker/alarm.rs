//! Resource alarms: disk and memory, one mechanism, as RabbitMQ has.
//!
//! * Disk: free space on the data directory's file system below `storage.disk_free_limit`.
//! * Memory: the broker's resident set (RSS, read from `/proc/self/statm`) at or above
//!   `memory.high_watermark` (a fraction of the machine's RAM, RabbitMQ's
//!   `vm_memory_high_watermark.relative`, default 0.4) or `memory.high_watermark_absolute`
//!   (bytes, RabbitMQ's `vm_memory_high_watermark.absolute`).
//!
//! While any alarm is raised, publishing connections are blocked: the broker stops reading
//! their sockets, and those that advertised the `connection.blocked` capability are told why
//! (`low on memory`, `low on disk` or `low on memory & disk`). Consumers and other connections
//! keep working, so queues can drain. `connection.unblocked` follows when every alarm cleared.
//!
//! Each resource has a monitor task that polls it and sets its bit in one shared mask; a
//! `watch` channel carries the mask to blocked connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;

/// How often free disk space is checked.
///
/// RabbitMQ checks every 10 s by default and faster near the limit; one second keeps the window
/// in which a filling disk is missed short, at the cost of one statvfs call per second.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the broker's memory use is read (RabbitMQ: `memory_monitor_interval`, 2.5 s).
/// Reading `/proc/self/statm` costs microseconds; a short interval keeps the overshoot of a
/// fast publisher past the watermark small.
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The alarmed resources, one bit each.
pub const DISK: u8 = 1;
pub const MEMORY: u8 = 2;

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

/// This process's resident set size in bytes (`/proc/self/statm`, second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Return the allocator's free memory to the operating system (glibc only; elsewhere a no-op).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes the allocator holds free (in its free lists, counted in RSS but unused), where it
/// can say (glibc).
fn allocator_free_bytes() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics; it has no preconditions.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks as u64)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// Memory goes back after a backlog: when the allocator holds at least this much free...
const TRIM_MIN_FREE: u64 = 32 * 1024 * 1024;
/// ...and a quarter of the resident memory, it is returned to the OS (checked every this
/// many memory ticks).
const TRIM_EVERY_TICKS: u32 = 8;

/// Return free allocator memory to the OS once a drained backlog or deleted queue left
/// enough of it (glibc keeps freed memory of its per-thread arenas otherwise: a broker that
/// held a 1 GB backlog stayed at 100+ MB idle after it drained).
fn trim_if_worthwhile(used: u64) {
    if let Some(free) = allocator_free_bytes()
        && free >= TRIM_MIN_FREE
        && free >= used / 4
    {
        release_free_memory();
        tracing::debug!(free, before = used, after = resident_bytes().unwrap_or(0), "free memory returned to the OS");
    }
}

/// The machine's RAM in bytes (`MemTotal` in `/proc/meminfo`), capped by a cgroup v2 memory
/// limit when the broker runs in a container that sets one.
pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let ram = kb * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(ram, |c| c.min(ram)))
}

/// The `connection.blocked` reason for an alarm mask, as RabbitMQ words it.
pub fn reason(mask: u8) -> &'static str {
    match (mask & MEMORY != 0, mask & DISK != 0) {
        (true, true) => "low on memory & disk",
        (true, false) => "low on memory",
        _ => "low on disk",
    }
}

/// The alarms as seen by connections: a mask checked on every publish (one relaxed load) and
/// a channel to await its clearing.
#[derive(Debug, Clone)]
pub struct Alarm {
    pub raised: Arc<AtomicU8>,
    pub changes: watch::Receiver<u8>,
}

/// The former name, from when the disk was the only alarmed resource.
pub type DiskAlarm = Alarm;

impl Alarm {
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed) != 0
    }

    /// The raised resources ([`DISK`], [`MEMORY`] bits).
    pub fn mask(&self) -> u8 {
        self.raised.load(Ordering::Relaxed)
    }
}

/// Sets and clears one resource's bit.
struct Setter {
    bit: u8,
    raised: Arc<AtomicU8>,
    tx: Arc<watch::Sender<u8>>,
}

impl Setter {
    /// Returns whether the state changed.
    fn set(&self, on: bool) -> bool {
        let before = if on {
            self.raised.fetch_or(self.bit, Ordering::Relaxed)
        } else {
            self.raised.fetch_and(!self.bit, Ordering::Relaxed)
        };
        let changed = (before & self.bit != 0) != on;
        if changed {
            self.tx.send_replace(self.raised.load(Ordering::Relaxed));
        }
        changed
    }
}

/// The memory watermark in bytes the configuration asks for.
pub fn memory_limit(config: &Config) -> u64 {
    if let Some(abs) = config.memory.high_watermark_absolute.as_ref() {
        return abs.bytes();
    }
    let total = total_memory().unwrap_or(0);
    (total as f64 * config.memory.high_watermark) as u64
}

/// Start the disk and memory monitors.
pub fn start(config: &Config) -> Alarm {
    let (tx, rx) = watch::channel(0u8);
    let tx = Arc::new(tx);
    let raised = Arc::new(AtomicU8::new(0));
    let disk = Setter { bit: DISK, raised: raised.clone(), tx: tx.clone() };
    let dir: PathBuf = config.data_dir.clone();
    let limit = config.storage.disk_free_limit;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DISK_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let Some(free) = free_bytes(&dir) else { continue };
            let low = free < limit;
            if disk.set(low) {
                if low {
                    warn!(free, limit, "disk alarm: free space below storage.disk_free_limit; publishers are blocked");
                } else {
                    info!(free, limit, "disk alarm cleared");
                }
            }
        }
    });
    let memory = Setter { bit: MEMORY, raised: raised.clone(), tx };
    let watermark = memory_limit(config);
    if watermark > 0 {
        info!(watermark, "memory high watermark");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MEMORY_CHECK_INTERVAL);
            let mut ticks = 0u32;
            loop {
                tick.tick().await;
                let Some(mut used) = resident_bytes() else { continue };
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(TRIM_EVERY_TICKS) {
                    trim_if_worthwhile(used);
                }
                if used >= watermark {
                    // Memory freed since (queues drained) may still sit in the allocator's free
                    // lists, counted in RSS: hand it back to the OS before deciding.
                    release_free_memory();
                    used = resident_bytes().unwrap_or(used);
                }
                let high = used >= watermark;
                if memory.set(high) {
                    if high {
                        warn!(
                            used,
                            watermark, "memory alarm: resident memory above the high watermark; publishers are blocked"
                        );
                    } else {
                        info!(used, watermark, "memory alarm cleared");
                    }
                }
            }
        });
    }
    Alarm { raised, changes: rx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_match_rabbitmq() {
        assert_eq!(reason(MEMORY), "low on memory");
        assert_eq!(reason(DISK), "low on disk");
        assert_eq!(reason(MEMORY | DISK), "low on memory & disk");
    }

    #[test]
    fn process_memory_is_readable() {
        let rss = resident_bytes().expect("/proc/self/statm");
        assert!(rss > 1024 * 1024, "a test process uses more than 1 MiB: {rss}");
        assert!(total_memory().expect("/proc/meminfo") > rss);
    }

    #[tokio::test]
    async fn bits_are_independent_and_changes_are_published() {
        let (tx, mut rx) = watch::channel(0u8);
        let tx = Arc::new(tx);
        let raised = Arc::new(AtomicU8::new(0));
        let disk = Setter { bit: DISK, raised: raised.clone(), tx: tx.clone() };
        let mem = Setter { bit: MEMORY, raised: raised.clone(), tx };
        assert!(mem.set(true));
        assert!(!mem.set(true), "no change");
        assert!(disk.set(true));
        assert_eq!(*rx.borrow_and_update(), MEMORY | DISK);
        assert!(mem.set(false));
        assert_eq!(*rx.borrow_and_update(), DISK, "still raised for the disk");
        assert!(disk.set(false));
        assert_eq!(*rx.borrow_and_update(), 0);
    }
}
