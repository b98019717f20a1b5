//! Socket writes: inline when the socket takes them, else the writer task.
//!
//! The connection task hands each turn's output to a [`Writer`]. When nothing is queued it
//! writes straight to the socket without blocking (`try_write_vectored`): the common case
//! costs one system call and no task wake-up. Whatever the socket does not take goes, in
//! order, to the writer task, which drains everything queued (`recv_many`) with vectored
//! writes, so a burst of deliveries costs few system calls. Either way written delivery bytes
//! are reported to the [`FlowGauge`] so queues resume delivering once the connection drains.
//!
//! Every byte handed to the task and not yet written is counted ([`Writer::unsent`]), deliveries
//! or not (`basic.return`, `basic.get-ok`, direct replies, method replies). Above
//! [`OUTPUT_HIGH_WATERMARK`] the connection stops reading its socket, so a peer that does not
//! read cannot make the broker produce more replies for it; it resumes once the task has brought
//! the backlog below [`OUTPUT_LOW_WATERMARK`] ([`Writer::drained`]). This is RabbitMQ's
//! behaviour: its writer process blocks on a full socket, and credit flow from the writer back
//! through the channel stops the reader.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::server::TlsStream;

use super::flow::FlowGauge;

/// What the connection sends its writer task.
#[derive(Debug)]
pub enum WriterMsg {
    /// Segments to write in order; `credit` bytes of them were counted in the gauge.
    Data { segments: Vec<Bytes>, credit: usize },
    /// Write everything queued so far, then shut the socket down and stop.
    Close,
}

/// Batches taken per wake-up (bounds the iovec array and the time between gauge updates).
const MAX_BATCH: usize = 64;
/// Segments per vectored write (below the kernel's IOV_MAX).
const MAX_IOV: usize = 256;

/// Above this many unsent output bytes the connection stops reading its socket.
///
/// Twice the queues' delivery watermark ([`super::flow::WRITER_HIGH_WATERMARK`]): deliveries alone
/// stay below it, so a consumer that reads slowly is not also stopped from acking; what pushes
/// past it is output the peer caused by its own requests and did not read.
pub const OUTPUT_HIGH_WATERMARK: usize = 8 * 1024 * 1024;
/// The socket is read again once unsent output is below this.
pub const OUTPUT_LOW_WATERMARK: usize = 2 * 1024 * 1024;

/// Output bytes handed to the writer task and not yet written, and the signal that they fell
/// below [`OUTPUT_LOW_WATERMARK`].
#[derive(Debug, Default)]
pub struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    fn written(&self, n: usize) {
        let before = self.bytes.fetch_sub(n, Ordering::AcqRel);
        if before >= OUTPUT_LOW_WATERMARK && before - n < OUTPUT_LOW_WATERMARK {
            // notify_one keeps a permit when nobody waits yet: no wake-up is lost.
            self.drained.notify_one();
        }
    }
}

/// The write side of a connection's socket.
pub enum Sink {
    /// Plain TCP: written inline without blocking when the socket takes it.
    Tcp(OwnedWriteHalf),
    /// TLS: always written by the writer task (encryption and partial records need awaiting).
    Tls(tokio::sync::Mutex<tokio::io::WriteHalf<TlsStream<TcpStream>>>),
}

/// The connection's side: writes inline while the writer task has nothing queued.
pub struct Writer {
    sock: Arc<Sink>,
    tx: mpsc::UnboundedSender<WriterMsg>,
    /// Messages sent to the writer task and not yet written. Only this side increments it, and
    /// the task decrements it after writing, so 0 means the socket is ours to write in order.
    queued: Arc<AtomicUsize>,
    gauge: Arc<FlowGauge>,
    backlog: Arc<Backlog>,
}

impl Writer {
    /// Split off the write half and start its writer task.
    pub fn start(sock: Sink, gauge: Arc<FlowGauge>) -> Writer {
        let sock = Arc::new(sock);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let backlog = Arc::new(Backlog::default());
        tokio::spawn(run(sock.clone(), rx, gauge.clone(), queued.clone(), backlog.clone()));
        Writer { sock, tx, queued, gauge, backlog }
    }

    /// Output bytes the writer task holds, not yet written to the socket.
    pub fn unsent(&self) -> usize {
        self.backlog.bytes.load(Ordering::Acquire)
    }

    /// Whether the unsent output is past [`OUTPUT_HIGH_WATERMARK`] (stop reading the peer).
    pub fn is_backed_up(&self) -> bool {
        self.unsent() >= OUTPUT_HIGH_WATERMARK
    }

    /// Completes after the unsent output fell below [`OUTPUT_LOW_WATERMARK`] (possibly before
    /// this call: callers check [`Writer::unsent`] again).
    pub async fn drained(&self) {
        self.backlog.drained.notified().await
    }

    /// Write `segments` (of which `credit` bytes were counted in the gauge), in order after
    /// everything before them.
    pub fn send(&self, mut segments: Vec<Bytes>, credit: usize) {
        if let Sink::Tcp(sock) = self.sock.as_ref()
            && self.queued.load(Ordering::Acquire) == 0
        {
            let done = write_now(sock, &mut segments);
            if done.is_err() || segments.is_empty() {
                // Written (or the socket failed: the reader side will notice and close).
                self.gauge.written(credit);
                return;
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let bytes = segments.iter().map(Bytes::len).sum();
        self.backlog.add(bytes);
        if self.tx.send(WriterMsg::Data { segments, credit }).is_err() {
            self.gauge.written(credit);
            self.backlog.written(bytes);
        }
    }

    /// Write what is queued, then shut the socket down.
    pub fn close(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(WriterMsg::Close);
    }
}

/// Write as much as the socket takes without blocking, removing what was written.
fn write_now(sock: &OwnedWriteHalf, segments: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut start = 0;
    let result = loop {
        if start == segments.len() {
            break Ok(());
        }
        let written = {
            let slices: smallvec::SmallVec<[IoSlice<'_>; 16]> =
                segments[start..].iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
            sock.try_write_vectored(&slices)
        };
        match written {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => advance(segments, &mut start, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    segments.drain(..start);
    result
}

/// Mark `n` written octets from `segments[*start..]` as done.
fn advance(segments: &mut [Bytes], start: &mut usize, mut n: usize) {
    while n > 0 {
        let seg = &mut segments[*start];
        if n >= seg.len() {
            n -= seg.len();
            *start += 1;
        } else {
            seg.advance(n);
            n = 0;
        }
    }
}

/// The writer task: until [`WriterMsg::Close`], the sender is dropped, or the socket fails.
async fn run(
    sock: Arc<Sink>,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    gauge: Arc<FlowGauge>,
    queued: Arc<AtomicUsize>,
    backlog: Arc<Backlog>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut segments: Vec<Bytes> = Vec::new();
    loop {
        let taken = rx.recv_many(&mut batch, MAX_BATCH).await;
        if taken == 0 {
            break;
        }
        let mut credit = 0;
        let mut close = false;
        let mut bytes = 0;
        for m in batch.drain(..) {
            match m {
                WriterMsg::Data { segments: s, credit: c } => {
                    bytes += s.iter().map(Bytes::len).sum::<usize>();
                    segments.extend(s);
                    credit += c;
                }
                WriterMsg::Close => close = true,
            }
        }
        let ok = write_all(&sock, &mut segments).await.is_ok();
        gauge.written(credit);
        backlog.written(bytes);
        queued.fetch_sub(taken, Ordering::AcqRel);
        if !ok || close {
            break;
        }
    }
    // Anything still queued will never be written: give its credit back.
    rx.close();
    while let Ok(m) = rx.try_recv() {
        if let WriterMsg::Data { credit, segments } = m {
            gauge.written(credit);
            backlog.written(segments.iter().map(Bytes::len).sum());
        }
    }
    // The connection side may still hold the socket: shut the write direction down now
    // rather than when the last holder drops it.
    match sock.as_ref() {
        Sink::Tcp(s) => {
            let _ = socket2::SockRef::from(s.as_ref()).shutdown(std::net::Shutdown::Write);
        }
        Sink::Tls(s) => {
            // close_notify, then the TCP write direction.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.lock().await.shutdown()).await;
        }
    }
}

async fn write_all(sock: &Sink, segments: &mut Vec<Bytes>) -> std::io::Result<()> {
    let sock = match sock {
        Sink::Tcp(s) => s,
        Sink::Tls(s) => {
            let mut s = s.lock().await;
            for seg in segments.drain(..) {
                s.write_all(&seg).await?;
            }
            return s.flush().await;
        }
    };
    loop {
        write_now(sock, segments)?;
        if segments.is_empty() {
            return Ok(());
        }
        sock.writable().await?;
    }
}
