//! One AMQP connection over a tokio `TcpStream`: the handshake, synchronous (cold-path)
//! methods on channel 1, and a graceful close. Hot paths take the socket halves and the read
//! buffer apart with [`Conn::into_parts`].

use std::future::Future;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, channel, connection};
use amq_protocol_types::{AMQPValue, FieldTable, LongString};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Error, Result};
use crate::uri::AmqpUri;
use crate::wire::{self, FRAME_HEARTBEAT, FRAME_METHOD};

/// How long a synchronous reply (or the handshake) may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for `connection.close-ok`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer growth step.
pub const READ_CHUNK: usize = 64 * 1024;

/// The channel every connection of the tool uses.
pub const CH: u16 = 1;

pub struct Conn {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    wbuf: BytesMut,
    pub frame_max: u32,
}

/// Read more bytes into `buf` (at least `READ_CHUNK` of room); EOF is an error.
pub async fn fill(rd: &mut (impl AsyncReadExt + Unpin), buf: &mut BytesMut) -> Result<()> {
    if buf.capacity() - buf.len() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    if rd.read_buf(buf).await? == 0 {
        return Err(Error::Eof(""));
    }
    Ok(())
}

fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(k.into(), v);
    }
    t
}

/// A connection's opening, bounded by [`RPC_TIMEOUT`]; a socket error is a failure to connect.
pub async fn opening<T>(uri: &AmqpUri, what: &str, open: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(RPC_TIMEOUT, open).await {
        Ok(Err(Error::Io(source))) => Err(Error::Connect { addr: uri.addr(), source }),
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(format!("opening {what} to {}", uri.addr()))),
    }
}

impl Conn {
    /// Open a TCP connection and perform the AMQP handshake (heartbeats disabled).
    pub async fn open(uri: &AmqpUri, name: &str) -> Result<Conn> {
        opening(uri, &format!("connection {name:?}"), Self::open_inner(uri, name)).await
    }

    async fn open_inner(uri: &AmqpUri, name: &str) -> Result<Conn> {
        let stream = TcpStream::connect(uri.addr()).await?;
        stream.set_nodelay(true)?;
        let mut c =
            Conn { stream, rbuf: BytesMut::with_capacity(4096), wbuf: BytesMut::with_capacity(512), frame_max: 4096 };
        c.stream.write_all(wire::PROTOCOL_HEADER).await?;
        let start = c.recv_method(" during the handshake").await?;
        let AMQPClass::Connection(connection::AMQPMethod::Start(start)) = start else {
            return Err(Error::Unexpected(format!("{start:?} instead of connection.start")));
        };
        if !String::from_utf8_lossy(start.mechanisms.as_bytes()).split(' ').any(|m| m == "PLAIN") {
            return Err(Error::Protocol("the broker does not offer the PLAIN mechanism".into()));
        }
        let capabilities = table(vec![
            ("publisher_confirms", AMQPValue::Boolean(true)),
            ("basic.nack", AMQPValue::Boolean(true)),
            ("consumer_cancel_notify", AMQPValue::Boolean(true)),
            ("authentication_failure_close", AMQPValue::Boolean(true)),
            ("connection.blocked", AMQPValue::Boolean(false)),
        ]);
        let props = table(vec![
            ("product", AMQPValue::LongString("warren-perf".into())),
            ("version", AMQPValue::LongString(env!("CARGO_PKG_VERSION").into())),
            ("connection_name", AMQPValue::LongString(name.into())),
            ("capabilities", AMQPValue::FieldTable(capabilities)),
        ]);
        let response: LongString = format!("\0{}\0{}", uri.user, uri.pass).into();
        c.send(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response,
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = c.recv_method(" after start-ok (authentication refused?)").await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = tune else {
            return Err(Error::Unexpected(format!("{tune:?} instead of connection.tune")));
        };
        let frame_max =
            if tune.frame_max == 0 { wire::CLIENT_FRAME_MAX } else { tune.frame_max.min(wire::CLIENT_FRAME_MAX) };
        c.send(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        c.frame_max = frame_max;
        c.send(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        )
        .await?;
        match c.recv_method(" after connection.open").await? {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => Ok(c),
            other => Err(Error::Unexpected(format!("{other:?} instead of connection.open-ok"))),
        }
    }

    /// Write one method frame.
    pub async fn send(&mut self, channel: u16, m: &AMQPClass) -> Result<()> {
        self.queue(channel, m);
        self.flush().await
    }

    /// Append a method frame to the write buffer without writing it yet.
    pub fn queue(&mut self, channel: u16, m: &AMQPClass) {
        wire::put_method(&mut self.wbuf, channel, m);
    }

    pub async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Read the next method (heartbeats skipped). A broker close is returned as its error.
    pub async fn recv_method(&mut self, when: &'static str) -> Result<AMQPClass> {
        loop {
            let frame = match wire::peek_frame(&mut self.rbuf, self.frame_max.max(wire::CLIENT_FRAME_MAX))? {
                Some(f) => f,
                None => {
                    match fill(&mut self.stream, &mut self.rbuf).await {
                        Err(Error::Eof(_)) => return Err(Error::Eof(when)),
                        r => r?,
                    }
                    continue;
                }
            };
            let kind = frame.kind;
            let channel = frame.channel;
            let parsed = if kind == FRAME_METHOD { Some(wire::parse_method(frame.payload(&self.rbuf))) } else { None };
            self.rbuf.advance(frame.total());
            match parsed {
                None if kind == FRAME_HEARTBEAT => continue,
                None => return Err(Error::Unexpected(format!("a frame of type {kind} on channel {channel}{when}"))),
                Some(m) => {
                    let m = m?;
                    if let Some(e) = wire::close_error(channel, &m) {
                        return Err(e);
                    }
                    return Ok(m);
                }
            }
        }
    }

    /// Send a synchronous method on channel 1 and wait for its reply.
    pub async fn rpc(&mut self, m: AMQPClass, expect: fn(&AMQPClass) -> bool, what: &str) -> Result<AMQPClass> {
        self.send(CH, &m).await?;
        let fut = self.recv_method(" waiting for a reply");
        let reply = match tokio::time::timeout(RPC_TIMEOUT, fut).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Timeout(format!("waiting for the reply to {what}"))),
        };
        if expect(&reply) { Ok(reply) } else { Err(Error::Unexpected(format!("{reply:?} in reply to {what}"))) }
    }

    pub async fn open_channel(&mut self) -> Result<()> {
        self.rpc(
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            |m| matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))),
            "channel.open",
        )
        .await
        .map(drop)
    }

    /// Send `connection.close` and wait (bounded) for `close-ok`, discarding what arrives first.
    pub async fn close(mut self) -> Result<()> {
        let (rd, wr) = self.stream.into_split();
        close_split(rd, wr, &mut self.rbuf, self.frame_max).await
    }

    pub fn into_parts(self) -> (OwnedReadHalf, OwnedWriteHalf, BytesMut, u32) {
        let (rd, wr) = self.stream.into_split();
        (rd, wr, self.rbuf, self.frame_max)
    }
}

/// The `connection.close` method the tool sends.
pub fn close_method() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 200,
        reply_text: "warren-perf done".into(),
        class_id: 0,
        method_id: 0,
    }))
}

/// Write `connection.close` then read until `close-ok`, bounded by [`CLOSE_TIMEOUT`].
pub async fn close_split(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    rbuf: &mut BytesMut,
    frame_max: u32,
) -> Result<()> {
    let mut out = BytesMut::new();
    wire::put_method(&mut out, 0, &close_method());
    wr.write_all(&out).await?;
    wait_close_ok(&mut rd, rbuf, frame_max).await
}

/// Read (and drop) frames until `connection.close-ok`, bounded by [`CLOSE_TIMEOUT`]. A broker
/// `connection.close` crossing ours is reported as the error it carries.
pub async fn wait_close_ok(rd: &mut OwnedReadHalf, rbuf: &mut BytesMut, frame_max: u32) -> Result<()> {
    let work = async {
        loop {
            while let Some(f) = wire::peek_frame(rbuf, frame_max)? {
                if f.kind == FRAME_METHOD {
                    let p = f.payload(rbuf);
                    match wire::method_id(p)? {
                        wire::CONNECTION_CLOSE_OK => return Ok(()),
                        wire::CONNECTION_CLOSE => {
                            let m = wire::parse_method(p)?;
                            return Err(wire::close_error(f.channel, &m).expect("a close"));
                        }
                        _ => {}
                    }
                }
                rbuf.advance(f.total());
            }
            fill(rd, rbuf).await?;
        }
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout("waiting for connection.close-ok".into())),
    }
}
