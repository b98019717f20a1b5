//! The writer task: the only writer of a connection's socket.
//!
//! The connection task hands it batches of ready-to-send segments; it drains everything
//! queued (`recv_many`) and writes it with vectored writes, so a burst of deliveries costs few
//! system calls. It reports written delivery bytes to the [`FlowGauge`] so queues resume
//! delivering to this connection once it has drained.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::flow::FlowGauge;

/// What the connection sends its writer.
#[derive(Debug)]
pub enum WriterMsg {
    /// Segments to write in order; `credit` bytes of them were counted in the gauge.
    Data { segments: Vec<Bytes>, credit: usize },
    /// Write everything queued so far, then shut the socket down and stop.
    Close,
}

/// Batches taken per wake-up (bounds the iovec array and the time between gauge updates).
const MAX_BATCH: usize = 64;

/// Run until [`WriterMsg::Close`], the sender is dropped, or the socket fails.
pub async fn run<W: AsyncWrite + Unpin>(
    mut sock: W,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    gauge: Arc<FlowGauge>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut segments: Vec<Bytes> = Vec::new();
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        let mut credit = 0;
        let mut close = false;
        for m in batch.drain(..) {
            match m {
                WriterMsg::Data { segments: s, credit: c } => {
                    segments.extend(s);
                    credit += c;
                }
                WriterMsg::Close => close = true,
            }
        }
        let ok = write_all(&mut sock, &mut segments).await.is_ok();
        gauge.written(credit);
        if !ok || close {
            break;
        }
    }
    let _ = sock.shutdown().await;
    // Anything still queued will never be written: give its credit back.
    rx.close();
    while let Ok(m) = rx.try_recv() {
        if let WriterMsg::Data { credit, .. } = m {
            gauge.written(credit);
        }
    }
}

async fn write_all<W: AsyncWrite + Unpin>(sock: &mut W, segments: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut start = 0;
    while start < segments.len() {
        let slices: Vec<IoSlice<'_>> = segments[start..].iter().take(256).map(|b| IoSlice::new(b)).collect();
        let mut n = sock.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let seg = &mut segments[start];
            if n >= seg.len() {
                n -= seg.len();
                start += 1;
            } else {
                seg.advance(n);
                n = 0;
            }
        }
    }
    segments.clear();
    sock.flush().await
}
