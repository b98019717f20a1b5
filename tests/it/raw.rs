//! A tiny hand-written AMQP 0-9-1 client for protocol-level tests.
//!
//! It speaks the wire format directly (tokio + bytes only, no AMQP library), so tests can send
//! malformed or out-of-order frames and see exactly what the broker answers. Encoding is written
//! by hand on purpose: it keeps these tests independent of the codec under test.
//!
//! Frame layout: type (u8), channel (u16), payload size (u32), payload, frame-end `0xCE`.

#![allow(dead_code)]

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The 0-9-1 protocol header a client sends first (and a broker sends back to refuse others).
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_END: u8 = 0xCE;
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;

/// Upper bound for anything that must happen (a reply, a close, EOF).
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Any frame, encoded: header, payload and the frame-end octet.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(payload);
    out.put_u8(FRAME_END);
    out
}

/// A method frame: class id, method id, then the already encoded arguments.
pub fn method_frame(channel: u16, class_id: u16, method_id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(args.len() + 4);
    payload.put_u16(class_id);
    payload.put_u16(method_id);
    payload.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &payload)
}

/// A content header frame: class id, weight 0, body size, property flags, property bytes.
pub fn content_header_frame(channel: u16, class_id: u16, body_size: u64, flags: u16, props: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(props.len() + 14);
    payload.put_u16(class_id);
    payload.put_u16(0);
    payload.put_u64(body_size);
    payload.put_u16(flags);
    payload.extend_from_slice(props);
    frame(FRAME_HEADER, channel, &payload)
}

/// A content body frame.
pub fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
    frame(FRAME_BODY, channel, body)
}

/// A heartbeat frame (valid only on channel 0).
pub fn heartbeat_frame(channel: u16) -> Vec<u8> {
    frame(FRAME_HEARTBEAT, channel, &[])
}

/// A field-table value (only what the tests need to build or inspect).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// `S` long string or `x` byte array.
    Bytes(Vec<u8>),
    Table(Vec<(String, Value)>),
    Array(Vec<Value>),
    Void,
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }
}

/// Look a key up in a decoded field table.
pub fn lookup<'a>(table: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    table.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Builder for method arguments and other AMQP-encoded fields (network byte order).
#[derive(Default, Clone, Debug)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Args {
        Args(Vec::new())
    }
    pub fn octet(mut self, v: u8) -> Args {
        self.0.put_u8(v);
        self
    }
    pub fn short(mut self, v: u16) -> Args {
        self.0.put_u16(v);
        self
    }
    pub fn long(mut self, v: u32) -> Args {
        self.0.put_u32(v);
        self
    }
    pub fn longlong(mut self, v: u64) -> Args {
        self.0.put_u64(v);
        self
    }
    pub fn shortstr(mut self, s: &str) -> Args {
        assert!(s.len() <= 255, "shortstr too long");
        self.0.put_u8(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn longstr(mut self, s: &[u8]) -> Args {
        self.0.put_u32(s.len() as u32);
        self.0.extend_from_slice(s);
        self
    }
    /// Consecutive bit fields, packed LSB-first into one octet.
    pub fn bits(mut self, bits: &[bool]) -> Args {
        assert!(bits.len() <= 8);
        let v = bits.iter().enumerate().fold(0u8, |acc, (i, b)| acc | ((*b as u8) << i));
        self.0.put_u8(v);
        self
    }
    /// A field table (with its 4-byte length prefix).
    pub fn table(mut self, entries: &[(&str, Value)]) -> Args {
        let body = table_body(entries);
        self.0.put_u32(body.len() as u32);
        self.0.extend_from_slice(&body);
        self
    }
    pub fn raw(mut self, bytes: &[u8]) -> Args {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A field table's entries without the 4-byte length prefix (the AMQPLAIN response form).
pub fn table_body(entries: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        out.put_u8(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        encode_value(&mut out, v);
    }
    out
}

fn encode_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(b) => {
            out.put_u8(b't');
            out.put_u8(*b as u8);
        }
        Value::Int(i) => {
            out.put_u8(b'l');
            out.put_i64(*i);
        }
        Value::Float(f) => {
            out.put_u8(b'd');
            out.put_f64(*f);
        }
        Value::Bytes(s) => {
            out.put_u8(b'S');
            out.put_u32(s.len() as u32);
            out.extend_from_slice(s);
        }
        Value::Table(t) => {
            let entries: Vec<(&str, Value)> = t.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let body = table_body(&entries);
            out.put_u8(b'F');
            out.put_u32(body.len() as u32);
            out.extend_from_slice(&body);
        }
        Value::Array(items) => {
            let mut body = Vec::new();
            for item in items {
                encode_value(&mut body, item);
            }
            out.put_u8(b'A');
            out.put_u32(body.len() as u32);
            out.extend_from_slice(&body);
        }
        Value::Void => out.put_u8(b'V'),
    }
}

/// PLAIN response: `\0user\0password`.
pub fn plain_response(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// AMQPLAIN response: LOGIN and PASSWORD as long strings, in the length-less table form.
pub fn amqplain_response(user: &str, password: &str) -> Vec<u8> {
    table_body(&[("LOGIN", Value::str(user)), ("PASSWORD", Value::str(password))])
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Reads AMQP fields out of a server-sent payload; panics (failing the test) if it is malformed.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn need(&self, n: usize, what: &str) {
        assert!(self.0.len() >= n, "server sent a truncated {what}: {} bytes left, need {n}", self.0.len());
    }
    pub fn octet(&mut self) -> u8 {
        self.need(1, "octet");
        self.0.get_u8()
    }
    pub fn short(&mut self) -> u16 {
        self.need(2, "short");
        self.0.get_u16()
    }
    pub fn long(&mut self) -> u32 {
        self.need(4, "long");
        self.0.get_u32()
    }
    pub fn longlong(&mut self) -> u64 {
        self.need(8, "longlong");
        self.0.get_u64()
    }
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        self.need(n, "field");
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    /// A short string; decoded lossily, since reply texts may embed raw non-UTF-8 bytes.
    pub fn shortstr(&mut self) -> String {
        let n = self.octet() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    pub fn longstr(&mut self) -> Vec<u8> {
        let n = self.long() as usize;
        self.take(n).to_vec()
    }
    pub fn table(&mut self) -> Vec<(String, Value)> {
        let n = self.long() as usize;
        let mut inner = Reader(self.take(n));
        let mut out = Vec::new();
        while !inner.0.is_empty() {
            let key = inner.shortstr();
            let value = inner.value();
            out.push((key, value));
        }
        out
    }
    /// A field value in the RabbitMQ dialect of type letters.
    pub fn value(&mut self) -> Value {
        match self.octet() {
            b't' => Value::Bool(self.octet() != 0),
            b'b' => Value::Int(self.octet() as i8 as i64),
            b'B' => Value::Int(self.octet() as i64),
            b's' => Value::Int(self.short() as i16 as i64),
            b'u' => Value::Int(self.short() as i64),
            b'I' => Value::Int(self.long() as i32 as i64),
            b'i' => Value::Int(self.long() as i64),
            b'l' | b'L' | b'T' => Value::Int(self.longlong() as i64),
            b'f' => Value::Float(f32::from_bits(self.long()) as f64),
            b'd' => Value::Float(f64::from_bits(self.longlong())),
            b'D' => {
                let scale = self.octet() as i32;
                let v = self.long() as i32 as f64;
                Value::Float(v / 10f64.powi(scale))
            }
            b'S' | b'x' => Value::Bytes(self.longstr()),
            b'F' => Value::Table(self.table()),
            b'A' => {
                let n = self.long() as usize;
                let mut inner = Reader(self.take(n));
                let mut out = Vec::new();
                while !inner.0.is_empty() {
                    out.push(inner.value());
                }
                Value::Array(out)
            }
            b'V' => Value::Void,
            other => panic!("server sent unknown field type {:?}", other as char),
        }
    }
}

/// A received frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (class id, method id) of a method frame.
    pub fn method(&self) -> Option<(u16, u16)> {
        if self.kind == FRAME_METHOD && self.payload.len() >= 4 {
            Some((
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            ))
        } else {
            None
        }
    }
    pub fn is_method(&self, channel: u16, class_id: u16, method_id: u16) -> bool {
        self.channel == channel && self.method() == Some((class_id, method_id))
    }
    /// The arguments of a method frame.
    pub fn args(&self) -> &[u8] {
        &self.payload[4..]
    }
    pub fn is_heartbeat(&self) -> bool {
        self.kind == FRAME_HEARTBEAT
    }
    /// Decode a connection.close or channel.close.
    pub fn as_close(&self) -> Option<Close> {
        match self.method() {
            Some((10, 50)) | Some((20, 40)) => Some(Close::decode(self.args())),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.method(), self.as_close()) {
            (Some((c, m)), Some(close)) => {
                write!(f, "method {c}.{m} on channel {}: {close:?}", self.channel)
            }
            (Some((c, m)), None) => write!(f, "method {c}.{m} on channel {} args {:?}", self.channel, self.args()),
            _ => write!(f, "frame type {} on channel {} payload {:?}", self.kind, self.channel, self.payload),
        }
    }
}

/// What a connection.close or channel.close carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl Close {
    pub fn new(code: u16, text: &str, class_id: u16, method_id: u16) -> Close {
        Close { code, text: text.to_string(), class_id, method_id }
    }
    pub fn decode(args: &[u8]) -> Close {
        let mut r = Reader(args);
        Close { code: r.short(), text: r.shortstr(), class_id: r.short(), method_id: r.short() }
    }
    /// Assert code, class id and method id exactly and that the text starts with `prefix`
    /// (for texts that embed an Erlang term dump of the offending bytes).
    pub fn assert_prefix(&self, code: u16, prefix: &str, class_id: u16, method_id: u16) {
        assert!(
            self.code == code
                && self.text.starts_with(prefix)
                && self.class_id == class_id
                && self.method_id == method_id,
            "expected close {code} {prefix:?}... {class_id}.{method_id}, got {self:?}"
        );
    }
}

/// Values of connection.tune / tune-ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

impl Default for Tune {
    /// What the tests negotiate unless they say otherwise: RabbitMQ's proposals, heartbeats off.
    fn default() -> Tune {
        Tune { channel_max: 2047, frame_max: 131072, heartbeat: 0 }
    }
}

/// connection.start as received.
#[derive(Clone, Debug)]
pub struct Start {
    pub version_major: u8,
    pub version_minor: u8,
    pub server_properties: Vec<(String, Value)>,
    pub mechanisms: String,
    pub locales: String,
}

/// What arrives next on a connection.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    /// The broker closed the socket (FIN or RST).
    Eof,
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

/// One raw TCP connection to the broker.
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    /// Plain TCP connect, nothing sent yet.
    pub async fn connect(addr: &str) -> RawConn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("timed out connecting")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        RawConn { stream, buf: BytesMut::with_capacity(8192) }
    }

    /// Connect and complete the handshake as guest/guest on vhost `/` with [`Tune::default`].
    pub async fn open(addr: &str) -> RawConn {
        Self::open_with(addr, Tune::default()).await
    }

    /// Connect and complete the handshake (PLAIN guest/guest, vhost `/`) with the given tune-ok.
    pub async fn open_with(addr: &str, tune: Tune) -> RawConn {
        let mut c = Self::connect(addr).await;
        c.send_protocol_header().await;
        c.expect_start().await;
        c.send_start_ok("PLAIN", &plain_response("guest", "guest")).await;
        c.expect_tune().await;
        c.send_tune_ok(tune).await;
        c.send_connection_open("/").await;
        c.expect_method(0, 10, 41).await;
        c
    }

    /// Write raw bytes. Errors (the broker may already have closed the socket) are returned.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Write raw bytes; the write must succeed.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("write to broker");
    }

    /// Half-close: send FIN (EOF to the broker) and keep reading.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown write half");
    }

    pub async fn send_method(&mut self, channel: u16, class_id: u16, method_id: u16, args: &Args) {
        self.send(&method_frame(channel, class_id, method_id, args.bytes())).await;
    }

    pub async fn send_protocol_header(&mut self) {
        self.send(PROTOCOL_HEADER).await;
    }

    /// connection.start-ok with client capability `authentication_failure_close`.
    pub async fn send_start_ok(&mut self, mechanism: &str, response: &[u8]) {
        let props = [
            ("product", Value::str("warren raw test client")),
            ("capabilities", Value::Table(vec![("authentication_failure_close".into(), Value::Bool(true))])),
        ];
        let args = Args::new().table(&props).shortstr(mechanism).longstr(response).shortstr("en_US");
        self.send_method(0, 10, 11, &args).await;
    }

    pub async fn send_tune_ok(&mut self, t: Tune) {
        let args = Args::new().short(t.channel_max).long(t.frame_max).short(t.heartbeat);
        self.send_method(0, 10, 31, &args).await;
    }

    pub async fn send_connection_open(&mut self, vhost: &str) {
        self.send_method(0, 10, 40, &Args::new().shortstr(vhost).shortstr("").bits(&[false])).await;
    }

    pub async fn expect_start(&mut self) -> Start {
        let f = self.expect_method(0, 10, 10).await;
        let mut r = Reader(f.args());
        Start {
            version_major: r.octet(),
            version_minor: r.octet(),
            server_properties: r.table(),
            mechanisms: String::from_utf8(r.longstr()).expect("mechanisms UTF-8"),
            locales: String::from_utf8(r.longstr()).expect("locales UTF-8"),
        }
    }

    pub async fn expect_tune(&mut self) -> Tune {
        let f = self.expect_method(0, 10, 30).await;
        let mut r = Reader(f.args());
        Tune { channel_max: r.short(), frame_max: r.long(), heartbeat: r.short() }
    }

    /// channel.open and wait for open-ok.
    pub async fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, 20, 10, &Args::new().shortstr("")).await;
        self.expect_method(channel, 20, 11).await;
    }

    /// queue.declare arguments: name and flags passive, durable, exclusive, auto-delete (no-wait off).
    pub fn queue_declare_args(name: &str, passive: bool, durable: bool, exclusive: bool, auto_delete: bool) -> Args {
        Args::new().short(0).shortstr(name).bits(&[passive, durable, exclusive, auto_delete, false]).table(&[])
    }

    /// Declare a server-named exclusive queue on `channel`, check declare-ok, then delete it.
    /// Proves the channel (and its connection) still works.
    pub async fn assert_can_declare_queue(&mut self, channel: u16) {
        self.send_method(channel, 50, 10, &Self::queue_declare_args("", false, false, true, false)).await;
        let ok = self.expect_method(channel, 50, 11).await;
        let mut r = Reader(ok.args());
        let name = r.shortstr();
        assert!(!name.is_empty(), "declare-ok carries the server-chosen queue name");
        assert_eq!((r.long(), r.long()), (0, 0), "new queue has no messages and no consumers");
        self.send_method(channel, 50, 40, &Args::new().short(0).shortstr(&name).bits(&[false, false, false])).await;
        let ok = self.expect_method(channel, 50, 41).await;
        assert_eq!(Reader(ok.args()).long(), 0, "delete-ok message count");
    }

    /// Client-initiated connection.close(200) and wait for close-ok.
    pub async fn close(mut self) {
        self.send_method(0, 10, 50, &Args::new().short(200).shortstr("bye").short(0).short(0)).await;
        self.expect_method(0, 10, 51).await;
    }

    /// The next frame or EOF, or None if nothing arrived within `timeout`. Heartbeats included.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.recv_event()).await.ok()
    }

    async fn recv_event(&mut self) -> Event {
        loop {
            if let Some(f) = self.parse_frame() {
                return Event::Frame(f);
            }
            match self.stream.read_buf(&mut self.buf).await {
                // A reset counts as the broker closing the connection.
                Ok(0) | Err(_) => return Event::Eof,
                Ok(_) => {}
            }
        }
    }

    fn parse_frame(&mut self) -> Option<Frame> {
        if self.buf.len() < 7 {
            return None;
        }
        let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
        if self.buf.len() < size + 8 {
            return None;
        }
        let kind = self.buf.get_u8();
        let channel = self.buf.get_u16();
        self.buf.advance(4);
        let payload = self.buf.split_to(size).to_vec();
        let end = self.buf.get_u8();
        assert_eq!(end, FRAME_END, "server frame (type {kind}, channel {channel}) has a bad frame-end octet");
        Some(Frame { kind, channel, payload })
    }

    /// Raw bytes until `n` have arrived or the socket closes (used for protocol-header replies).
    pub async fn read_raw_until_eof(&mut self, n: usize) -> Vec<u8> {
        tokio::time::timeout(WAIT, async {
            while self.buf.len() < n {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.buf.split().to_vec()
        })
        .await
        .expect("timed out reading raw bytes")
    }

    /// Next event within [`WAIT`], skipping heartbeats on channel 0.
    pub async fn recv(&mut self) -> Event {
        loop {
            match self.recv_timeout(WAIT).await {
                None => panic!("timed out waiting for a frame from the broker"),
                Some(Event::Frame(f)) if f.is_heartbeat() && f.channel == 0 => continue,
                Some(e) => return e,
            }
        }
    }

    /// The next frame must be method `class_id.method_id` on `channel`.
    pub async fn expect_method(&mut self, channel: u16, class_id: u16, method_id: u16) -> Frame {
        match self.recv().await {
            Event::Frame(f) if f.is_method(channel, class_id, method_id) => f,
            other => {
                panic!("expected method {class_id}.{method_id} on channel {channel}, got {other:?}")
            }
        }
    }

    /// The next frame must be connection.close. Replies close-ok (ignoring write errors) and
    /// then requires the broker to close the socket.
    pub async fn expect_connection_close(&mut self) -> Close {
        let close = self.expect_connection_close_frame().await;
        self.expect_eof().await;
        close
    }

    /// The next frame must be connection.close; replies close-ok (ignoring write errors) but
    /// does not wait for the socket to close. RabbitMQ stops reading after a fatal frame error
    /// (bad frame-end, oversized frame) and only drops the socket ~3 s later.
    pub async fn expect_connection_close_frame(&mut self) -> Close {
        let close = match self.recv().await {
            Event::Frame(f) if f.is_method(0, 10, 50) => Close::decode(f.args()),
            other => panic!("expected connection.close, got {other:?}"),
        };
        let _ = self.try_send(&method_frame(0, 10, 51, &[])).await;
        close
    }

    /// The next frame must be channel.close on `channel` (no close-ok is sent).
    pub async fn expect_channel_close(&mut self, channel: u16) -> Close {
        match self.recv().await {
            Event::Frame(f) if f.is_method(channel, 20, 40) => Close::decode(f.args()),
            other => panic!("expected channel.close on channel {channel}, got {other:?}"),
        }
    }

    /// The broker must close the socket without sending anything but heartbeats.
    pub async fn expect_eof(&mut self) {
        match self.recv().await {
            Event::Eof => {}
            Event::Frame(f) => panic!("expected the broker to close the socket, got {f:?}"),
        }
    }

    /// The next thing must be connection.close (then close-ok is sent and the socket must
    /// close) or EOF. Returns the close, if any.
    pub async fn expect_connection_close_or_eof(&mut self) -> Option<Close> {
        match self.recv().await {
            Event::Eof => None,
            Event::Frame(f) if f.is_method(0, 10, 50) => {
                let _ = self.try_send(&method_frame(0, 10, 51, &[])).await;
                self.expect_eof().await;
                Some(Close::decode(f.args()))
            }
            Event::Frame(f) => panic!("expected connection.close or EOF, got {f:?}"),
        }
    }

    /// Skip any other frames until connection.close or EOF (for fuzzing, where earlier garbage
    /// may legitimately produce replies). Returns the close, if any; close-ok is sent.
    pub async fn until_connection_close_or_eof(&mut self) -> Option<Close> {
        loop {
            match self.recv().await {
                Event::Eof => return None,
                Event::Frame(f) if f.is_method(0, 10, 50) => {
                    let _ = self.try_send(&method_frame(0, 10, 51, &[])).await;
                    return Some(Close::decode(f.args()));
                }
                Event::Frame(_) => continue,
            }
        }
    }
}

/// A fresh connection can handshake, open a channel, declare a queue and close cleanly.
pub async fn assert_broker_healthy(addr: &str) {
    let mut c = RawConn::open(addr).await;
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
}

/// A connection with channel 1 open, opened before a test provokes an error elsewhere; it
/// must be untouched by the other connection's failure.
pub struct Bystander(pub RawConn);

impl Bystander {
    pub async fn open(addr: &str) -> Bystander {
        let mut c = RawConn::open(addr).await;
        c.open_channel(1).await;
        Bystander(c)
    }

    /// Still works: can declare (and delete) a queue, then closes cleanly.
    pub async fn assert_untouched(mut self) {
        self.0.assert_can_declare_queue(1).await;
        self.0.close().await;
    }
}
