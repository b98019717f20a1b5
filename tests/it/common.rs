//! Shared harness for the integration tests: start the real `warren` binary on a free loopback
//! port and connect real clients to it.
//!
//! Set `WARREN_TEST_ADDR=127.0.0.1:5690` to run the same tests against an already running broker
//! instead (this is how the suite is checked against RabbitMQ 3.10 itself).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

/// A broker under test. Dropping it kills the child process (if we started one).
pub struct Broker {
    pub addr: String,
    child: Option<Child>,
    _data_dir: Option<TempDir>,
}

impl Broker {
    /// Start a fresh `warren` on 127.0.0.1 with an OS-chosen port, or use `WARREN_TEST_ADDR`.
    pub fn start() -> Broker {
        Self::start_with_args(&[])
    }

    /// Like [`Broker::start`], with extra command-line arguments for `warren`.
    pub fn start_with_args(extra: &[&str]) -> Broker {
        if let Ok(addr) = std::env::var("WARREN_TEST_ADDR") {
            return Broker { addr, child: None, _data_dir: None };
        }
        let data_dir = TempDir::new();
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir.0)
            .args(extra)
            .env("RUST_LOG", std::env::var("WARREN_TEST_LOG").unwrap_or_else(|_| "warn,warren=info".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn warren binary");
        // The broker prints `listening on ADDR` on stdout once the socket is bound.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("warren exited before it was listening")
                .expect("read warren stdout");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker { addr, child: Some(child), _data_dir: Some(data_dir) }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Open a lapin connection to this broker.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("lapin connect")
    }

    /// Open a lapin connection and one channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("create channel");
        (conn, ch)
    }

    /// Whether the broker process is still alive (always true for an external broker).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => true,
        }
    }

    /// Send SIGTERM and wait for the exit status (None for an external broker).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        Some(child.wait().expect("wait warren"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "warren-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique name for a test entity (queues/exchanges), so tests can share an external broker.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Bound for waiting on events that must happen; a test fails rather than hangs.
pub const WAIT: Duration = Duration::from_secs(10);

/// Await `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
