//! `--connections N`: idle connections (handshake done, one channel open, heartbeats off) held
//! for the run. Anything the broker sends on one of them is an error.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::uri::AmqpUri;

/// Handshakes in flight at once.
const OPEN_CONCURRENCY: usize = 64;

/// Open `n` idle connections; resolves once all are open. Each is held by its own task until
/// `stop`, then closed; errors go to `fail`.
pub async fn open(
    uri: &AmqpUri,
    n: usize,
    stop: watch::Receiver<bool>,
    fail: mpsc::UnboundedSender<Error>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<()>>();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (uri, gate, opened, mut stop, fail) =
            (uri.clone(), gate.clone(), opened_tx.clone(), stop.clone(), fail.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let conn = async {
                let mut c = Conn::open(&uri, &format!("warren-perf idle {i}")).await?;
                c.open_channel().await?;
                Ok::<_, Error>(c)
            }
            .await;
            drop(permit);
            let mut conn = match conn {
                Ok(c) => {
                    let _ = opened.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                    return;
                }
            };
            let err = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                m = conn.recv_method(" on an idle connection") => Some(match m {
                    Ok(m) => Error::Unexpected(format!("{m:?} on idle connection {i}")),
                    Err(e) => e,
                }),
            };
            match err {
                Some(e) => {
                    let _ = fail.send(e);
                }
                None => {
                    if let Err(e) = conn.close().await {
                        let _ = fail.send(e);
                    }
                }
            }
        }));
    }
    drop(opened_tx);
    for _ in 0..n {
        match opened_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tasks.iter().for_each(|t| t.abort());
                return Err(e);
            }
            None => break,
        }
    }
    Ok(tasks)
}
