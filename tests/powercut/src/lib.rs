//! Power-cut shim for Warren's tests: an `LD_PRELOAD` library that watches the broker's file
//! system calls under one directory and logs what the kernel has made *durable*, so that a
//! test can kill the broker and put the directory back in a state a power cut could leave.
//!
//! It changes nothing the broker does: every call goes on to the C library unchanged; the shim
//! only appends one line to its log after a call that matters succeeded:
//!
//! - `S path size`: `fsync`/`fdatasync` of a regular file returned 0; its first `size` bytes
//!   (the length just before the call) are on disk.
//! - `D path`: `fsync` of a directory returned 0; the names created in it so far are on disk.
//! - `C path`: `open` with `O_CREAT` created a file that did not exist (its name is not
//!   durable until its directory is synced).
//! - `M path`: `mkdir` created a directory (same rule).
//! - `R from to saved`: a rename; when it replaced a file, that file was first hard-linked to
//!   `saved` (`-` if none) so the test can bring it back if the rename is lost.
//! - `T path len`: the file was truncated (`ftruncate`, or `open` with `O_TRUNC`).
//!
//! Active only when `WARREN_POWERCUT_LOG` (the log file) and `WARREN_POWERCUT_ROOT` (the
//! watched directory, absolute) are set; `WARREN_POWERCUT_SAVE` is the directory (on the same
//! file system, outside the root) for files a rename replaced. Writes are not watched: a
//! write only reaches the disk through a later fsync, which the log records. The test-side
//! model (tests/it/power_loss.rs) replays the log; the production binary is untouched.

use std::ffi::{CStr, c_char, c_int};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libc::{mode_t, off_t};

struct Config {
    root: Vec<u8>,
    log_fd: c_int,
    save_dir: Option<Vec<u8>>,
}

static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
static SAVED: AtomicU64 = AtomicU64::new(0);

fn env(name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: getenv returns null or a NUL-terminated string owned by the environment.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated (above).
    Some(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
}

fn config() -> Option<&'static Config> {
    CONFIG
        .get_or_init(|| {
            let log = env(c"WARREN_POWERCUT_LOG")?;
            let mut root = env(c"WARREN_POWERCUT_ROOT")?;
            while root.len() > 1 && root.ends_with(b"/") {
                root.pop();
            }
            let mut log = log;
            log.push(0);
            // A raw system call: the C library's open is the one this library replaces.
            // SAFETY: `log` is NUL-terminated and outlives the call.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    log.as_ptr(),
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
                    0o644,
                )
            } as c_int;
            if fd < 0 {
                return None;
            }
            Some(Config { root, log_fd: fd, save_dir: env(c"WARREN_POWERCUT_SAVE") })
        })
        .as_ref()
}

/// The real C library function `name`, looked up once.
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static ADDR: AtomicUsize = AtomicUsize::new(0);
        let mut a = ADDR.load(Ordering::Relaxed);
        if a == 0 {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the C library's symbol.
            a = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) } as usize;
            ADDR.store(a, Ordering::Relaxed);
        }
        assert!(a != 0, concat!("powercut: no real ", $name));
        // SAFETY: the symbol has this C signature.
        unsafe { std::mem::transmute::<usize, $ty>(a) }
    }};
}

fn log(kind: &str, fields: &[&[u8]]) {
    let Some(cfg) = config() else { return };
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(kind.as_bytes());
    for f in fields {
        line.push(b'\t');
        line.extend_from_slice(f);
    }
    line.push(b'\n');
    // One write per line on an O_APPEND file: lines of different threads never interleave.
    // SAFETY: a valid buffer of that length.
    unsafe { libc::write(cfg.log_fd, line.as_ptr().cast(), line.len()) };
}

fn readlink(path: &[u8]) -> Option<Vec<u8>> {
    let mut p = path.to_vec();
    p.push(0);
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated path, buffer of the given length.
    let n = unsafe { libc::readlink(p.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn fd_path(fd: c_int) -> Option<Vec<u8>> {
    readlink(format!("/proc/self/fd/{fd}").as_bytes())
}

/// The absolute path `path` names relative to `dirfd`, if it lies under the watched root.
fn watched(dirfd: c_int, path: *const c_char) -> Option<Vec<u8>> {
    let cfg = config()?;
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller passed a NUL-terminated path.
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    let full = if p.starts_with(b"/") {
        p.to_vec()
    } else {
        let mut base = if dirfd == libc::AT_FDCWD {
            std::env::current_dir().ok()?.into_os_string().into_encoded_bytes()
        } else {
            fd_path(dirfd)?
        };
        base.push(b'/');
        base.extend_from_slice(p);
        base
    };
    under_root(cfg, full)
}

fn under_root(cfg: &Config, full: Vec<u8>) -> Option<Vec<u8>> {
    let inside = full == cfg.root || (full.starts_with(&cfg.root) && full.get(cfg.root.len()) == Some(&b'/'));
    inside.then_some(full)
}

fn exists(path: &[u8]) -> bool {
    let mut p = path.to_vec();
    p.push(0);
    // SAFETY: NUL-terminated path.
    unsafe { libc::access(p.as_ptr().cast(), libc::F_OK) == 0 }
}

fn is_file(path: &[u8]) -> bool {
    let mut p = path.to_vec();
    p.push(0);
    // SAFETY: NUL-terminated path and a stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::lstat(p.as_ptr().cast(), &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
    }
}

fn opened(dirfd: c_int, path: *const c_char, flags: c_int, open: impl FnOnce() -> c_int) -> c_int {
    let watch = if flags & (libc::O_CREAT | libc::O_TRUNC) != 0 { watched(dirfd, path) } else { None };
    let Some(full) = watch else { return open() };
    let existed = exists(&full);
    let fd = open();
    if fd >= 0 {
        if flags & libc::O_CREAT != 0 && !existed {
            log("C", &[&full]);
        } else if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            log("T", &[&full, b"0"]);
        }
    }
    fd
}

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, mode_t) -> c_int;
type OpenAtFn = unsafe extern "C" fn(c_int, *const c_char, c_int, mode_t) -> c_int;

/// # Safety
/// The C library's `open` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    let f = real!("open", OpenFn);
    // SAFETY: forwarded unchanged.
    opened(libc::AT_FDCWD, path, flags, || unsafe { f(path, flags, mode) })
}

/// # Safety
/// The C library's `open64` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    let f = real!("open64", OpenFn);
    // SAFETY: forwarded unchanged.
    opened(libc::AT_FDCWD, path, flags, || unsafe { f(path, flags, mode) })
}

/// # Safety
/// The C library's `openat` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    let f = real!("openat", OpenAtFn);
    // SAFETY: forwarded unchanged.
    opened(dirfd, path, flags, || unsafe { f(dirfd, path, flags, mode) })
}

/// # Safety
/// The C library's `openat64` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    let f = real!("openat64", OpenAtFn);
    // SAFETY: forwarded unchanged.
    opened(dirfd, path, flags, || unsafe { f(dirfd, path, flags, mode) })
}

/// # Safety
/// The C library's `creat` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn creat(path: *const c_char, mode: mode_t) -> c_int {
    let f = real!("creat", unsafe extern "C" fn(*const c_char, mode_t) -> c_int);
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    // SAFETY: forwarded unchanged.
    opened(libc::AT_FDCWD, path, flags, || unsafe { f(path, mode) })
}

fn made_dir(dirfd: c_int, path: *const c_char, mkdir: impl FnOnce() -> c_int) -> c_int {
    let full = watched(dirfd, path);
    let r = mkdir();
    if r == 0
        && let Some(full) = full
    {
        log("M", &[&full]);
    }
    r
}

/// # Safety
/// The C library's `mkdir` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: mode_t) -> c_int {
    let f = real!("mkdir", unsafe extern "C" fn(*const c_char, mode_t) -> c_int);
    // SAFETY: forwarded unchanged.
    made_dir(libc::AT_FDCWD, path, || unsafe { f(path, mode) })
}

/// # Safety
/// The C library's `mkdirat` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    let f = real!("mkdirat", unsafe extern "C" fn(c_int, *const c_char, mode_t) -> c_int);
    // SAFETY: forwarded unchanged.
    made_dir(dirfd, path, || unsafe { f(dirfd, path, mode) })
}

fn renamed(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    rename: impl FnOnce() -> c_int,
) -> c_int {
    let (Some(from), Some(to)) = (watched(olddirfd, old), watched(newdirfd, new)) else { return rename() };
    // Keep the file the rename replaces, so that a lost rename can be undone.
    let mut saved: Option<Vec<u8>> = None;
    if let Some(dir) = config().and_then(|c| c.save_dir.as_ref())
        && is_file(&to)
    {
        let n = SAVED.fetch_add(1, Ordering::Relaxed);
        let mut path = dir.clone();
        // SAFETY: getpid has no preconditions.
        path.extend_from_slice(format!("/{}-{n}", unsafe { libc::getpid() }).as_bytes());
        let (mut t, mut p) = (to.clone(), path.clone());
        t.push(0);
        p.push(0);
        // SAFETY: NUL-terminated paths.
        if unsafe { libc::link(t.as_ptr().cast(), p.as_ptr().cast()) } == 0 {
            saved = Some(path);
        }
    }
    let r = rename();
    if r == 0 {
        log("R", &[&from, &to, saved.as_deref().unwrap_or(b"-")]);
    } else if let Some(mut p) = saved {
        p.push(0);
        // SAFETY: NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr().cast()) };
    }
    r
}

/// # Safety
/// The C library's `rename` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    let f = real!("rename", unsafe extern "C" fn(*const c_char, *const c_char) -> c_int);
    // SAFETY: forwarded unchanged.
    renamed(libc::AT_FDCWD, old, libc::AT_FDCWD, new, || unsafe { f(old, new) })
}

/// # Safety
/// The C library's `renameat` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn renameat(od: c_int, old: *const c_char, nd: c_int, new: *const c_char) -> c_int {
    let f = real!("renameat", unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char) -> c_int);
    // SAFETY: forwarded unchanged.
    renamed(od, old, nd, new, || unsafe { f(od, old, nd, new) })
}

/// # Safety
/// The C library's `renameat2` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn renameat2(
    od: c_int,
    old: *const c_char,
    nd: c_int,
    new: *const c_char,
    flags: libc::c_uint,
) -> c_int {
    let f = real!("renameat2", unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, libc::c_uint) -> c_int);
    // SAFETY: forwarded unchanged.
    renamed(od, old, nd, new, || unsafe { f(od, old, nd, new, flags) })
}

fn synced(fd: c_int, sync: impl FnOnce() -> c_int) -> c_int {
    let Some(path) = config().and_then(|c| under_root(c, fd_path(fd)?)) else { return sync() };
    // SAFETY: a stat buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd and buffer are valid.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return sync();
    }
    // Only what was written before the call is known to be on disk when it returns.
    let r = sync();
    if r == 0 {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => log("D", &[&path]),
            libc::S_IFREG => log("S", &[&path, st.st_size.to_string().as_bytes()]),
            _ => {}
        }
    }
    r
}

/// # Safety
/// The C library's `fsync` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    let f = real!("fsync", unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: forwarded unchanged.
    synced(fd, || unsafe { f(fd) })
}

/// # Safety
/// The C library's `fdatasync` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    let f = real!("fdatasync", unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: forwarded unchanged.
    synced(fd, || unsafe { f(fd) })
}

fn truncated(fd: c_int, len: off_t, truncate: impl FnOnce() -> c_int) -> c_int {
    let path = config().and_then(|c| under_root(c, fd_path(fd)?));
    let r = truncate();
    if r == 0
        && let Some(path) = path
    {
        log("T", &[&path, len.to_string().as_bytes()]);
    }
    r
}

/// # Safety
/// The C library's `ftruncate` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    let f = real!("ftruncate", unsafe extern "C" fn(c_int, off_t) -> c_int);
    // SAFETY: forwarded unchanged.
    truncated(fd, len, || unsafe { f(fd, len) })
}

/// # Safety
/// The C library's `ftruncate64` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ftruncate64(fd: c_int, len: off_t) -> c_int {
    let f = real!("ftruncate64", unsafe extern "C" fn(c_int, off_t) -> c_int);
    // SAFETY: forwarded unchanged.
    truncated(fd, len, || unsafe { f(fd, len) })
}
