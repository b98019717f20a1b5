//! One stream-protocol connection over a tokio `TcpStream`: the handshake (PeerProperties,
//! SaslHandshake, SaslAuthenticate PLAIN, Tune, Open), request/response commands (cold path)
//! and a graceful close. Hot paths take the socket halves and the read buffer apart with
//! [`StreamConn::into_parts`].

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::conn::{CLOSE_TIMEOUT, RPC_TIMEOUT, fill, opening};
use crate::error::{Error, Result};
use crate::stream_wire::{self as sw, Frame, code, key, response};
use crate::uri::AmqpUri;

/// The largest frame the tool reads. A Deliver carries a whole chunk, which the broker sends
/// as it is stored; this only stops a corrupt size prefix from growing the buffer without end.
pub const READ_MAX: u32 = 256 << 20;

pub struct StreamConn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    correlation: u32,
    /// The largest frame the broker takes (from its Tune; 0: no limit).
    frame_max: u32,
}

/// What [`StreamConn::into_parts`] hands to a hot path.
pub struct Parts {
    pub rd: OwnedReadHalf,
    pub wr: OwnedWriteHalf,
    pub rbuf: BytesMut,
    /// The next correlation id (for Close).
    pub correlation: u32,
    /// The largest frame the broker takes (0: no limit).
    pub frame_max: u32,
}

impl StreamConn {
    /// Open a TCP connection and authenticate (PLAIN), heartbeats off, then open the vhost.
    pub async fn open(uri: &AmqpUri, name: &str) -> Result<StreamConn> {
        opening(uri, &format!("stream connection {name:?}"), Self::open_inner(uri, name)).await
    }

    async fn open_inner(uri: &AmqpUri, name: &str) -> Result<StreamConn> {
        let stream = TcpStream::connect(uri.addr()).await?;
        stream.set_nodelay(true)?;
        let mut c = StreamConn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::new(),
            correlation: 1,
            frame_max: 0,
        };
        let props = [("product", "warren-perf"), ("version", env!("CARGO_PKG_VERSION")), ("connection_name", name)];
        c.rpc("PeerProperties", |b, id| sw::put_peer_properties(b, id, &props)).await?;
        let mechanisms = c.rpc("SaslHandshake", sw::put_sasl_handshake).await?;
        let mut r = sw::Reader(&mechanisms);
        let mut plain = false;
        for _ in 0..r.count()? {
            plain |= r.str()? == "PLAIN";
        }
        if !plain {
            return Err(Error::Protocol("the broker does not offer the PLAIN mechanism on its stream port".into()));
        }
        c.rpc("SaslAuthenticate", |b, id| sw::put_sasl_plain(b, id, &uri.user, &uri.pass)).await?;
        // The server proposes frame_max and heartbeat; the tool takes its frame_max and turns
        // heartbeats off (runs are short, and both brokers accept 0).
        let (k, body) = c.recv(" waiting for Tune").await?;
        if k != key::TUNE {
            return Err(Error::Unexpected(format!("stream frame key {k:#06x} instead of Tune")));
        }
        let frame_max = sw::Reader(&body).u32()?;
        sw::put_tune_response(&mut c.wbuf, frame_max, 0);
        c.frame_max = frame_max;
        c.flush().await?;
        c.rpc("Open", |b, id| sw::put_open(b, id, &uri.vhost)).await?;
        Ok(c)
    }

    async fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// The next frame's key and body (heartbeats skipped); a broker Close is its error.
    async fn recv(&mut self, when: &'static str) -> Result<(u16, Vec<u8>)> {
        loop {
            let Some(total) = sw::peek(&mut self.rbuf, READ_MAX)? else {
                match fill(&mut self.stream, &mut self.rbuf).await {
                    Err(Error::Eof(_)) => return Err(Error::Eof(when)),
                    r => r?,
                }
                continue;
            };
            let f = Frame::at(&self.rbuf, total);
            let got = (f.key != key::HEARTBEAT).then(|| (f.key, f.body.rest().to_vec()));
            let fatal = f.fatal();
            self.rbuf.advance(total);
            if let Some(e) = fatal {
                return Err(e);
            }
            if let Some(got) = got {
                return Ok(got);
            }
        }
    }

    /// Send a request (written by `encode` with the correlation id it is given) and wait for
    /// its response; a code other than OK is an error. Returns what follows the code.
    async fn rpc(&mut self, what: &str, encode: impl FnOnce(&mut BytesMut, u32)) -> Result<Vec<u8>> {
        let (c, rest) = self.request(what, encode).await?;
        if c != code::OK {
            return Err(sw::refused(what, c));
        }
        Ok(rest)
    }

    /// As [`Self::rpc`], returning the response code as well (for codes the caller accepts).
    async fn request(&mut self, what: &str, encode: impl FnOnce(&mut BytesMut, u32)) -> Result<(u16, Vec<u8>)> {
        let correlation = self.correlation;
        self.correlation += 1;
        encode(&mut self.wbuf, correlation);
        let k = u16::from_be_bytes([self.wbuf[4], self.wbuf[5]]);
        self.flush().await?;
        let reply = async {
            let (got, body) = self.recv(" waiting for a response").await?;
            let mut r = sw::Reader(&body);
            if got == response(k) && r.u32()? == correlation {
                let c = r.u16()?;
                return Ok((c, r.rest().to_vec()));
            }
            Err(Error::Unexpected(format!("stream frame key {got:#06x} while waiting for the {what} response")))
        };
        match tokio::time::timeout(RPC_TIMEOUT, reply).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!("waiting for the response to {what}"))),
        }
    }

    /// Create a stream (no arguments: the broker's defaults); one that exists already is fine.
    pub async fn create(&mut self, stream: &str) -> Result<()> {
        let (c, _) = self.request("Create", |b, id| sw::put_create(b, id, stream)).await?;
        match c {
            code::OK | code::STREAM_ALREADY_EXISTS => Ok(()),
            c => Err(sw::refused(&format!("Create {stream:?}"), c)),
        }
    }

    pub async fn delete(&mut self, stream: &str) -> Result<()> {
        self.rpc(&format!("Delete {stream:?}"), |b, id| sw::put_delete(b, id, stream)).await.map(drop)
    }

    /// A publisher without a reference (no deduplication), as stream-perf-test's.
    pub async fn declare_publisher(&mut self, id: u8, stream: &str) -> Result<()> {
        self.rpc("DeclarePublisher", |b, c| sw::put_declare_publisher(b, c, id, stream)).await.map(drop)
    }

    pub async fn close(self) -> Result<()> {
        let p = self.into_parts();
        close_split(p).await
    }

    pub fn into_parts(self) -> Parts {
        let (rd, wr) = self.stream.into_split();
        Parts { rd, wr, rbuf: self.rbuf, correlation: self.correlation, frame_max: self.frame_max }
    }
}

/// Send Close and read (dropping deliveries, confirms) until its response, bounded by
/// [`CLOSE_TIMEOUT`]. A broker Close crossing ours is reported as its error.
pub async fn close_split(mut p: Parts) -> Result<()> {
    let mut out = BytesMut::new();
    sw::put_close(&mut out, p.correlation);
    p.wr.write_all(&out).await?;
    match tokio::time::timeout(CLOSE_TIMEOUT, await_close_response(&mut p.rd, &mut p.rbuf)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout("waiting for the stream Close response".into())),
    }
}

/// Read until the response to the tool's Close; a broker Close is its error.
pub async fn await_close_response(rd: &mut OwnedReadHalf, rbuf: &mut BytesMut) -> Result<()> {
    loop {
        while let Some(total) = sw::peek(rbuf, READ_MAX)? {
            let f = Frame::at(rbuf, total);
            if f.key == response(key::CLOSE) {
                return Ok(());
            }
            if f.key == key::CLOSE
                && let Some(e) = f.fatal()
            {
                return Err(e);
            }
            rbuf.advance(total);
        }
        fill(rd, rbuf).await?;
    }
}

/// Create `streams` over the stream protocol (before a run).
pub async fn create_streams(uri: &AmqpUri, streams: &[String]) -> Result<()> {
    let mut c = StreamConn::open(uri, "warren-perf setup").await?;
    for s in streams {
        c.create(s).await?;
    }
    c.close().await
}

/// Delete `streams` over the stream protocol (after a run).
pub async fn delete_streams(uri: &AmqpUri, streams: &[String]) -> Result<()> {
    let mut c = StreamConn::open(uri, "warren-perf cleanup").await?;
    for s in streams {
        c.delete(s).await?;
    }
    c.close().await
}
