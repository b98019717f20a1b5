//! A hand-written stream protocol client: frames as bytes, so tests can send what no client
//! library would (garbage, unknown keys, oversized frames, commands out of order) and see every
//! frame the server answers, including the ones libraries hide (Credit errors, MetadataUpdate).

use std::time::Duration;

use bytes::{Buf, BufMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything that must happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// One frame the server sent.
#[derive(Debug, Clone)]
pub struct Frame {
    pub key: u16,
    pub version: u16,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn reader(&self) -> Body<'_> {
        Body(&self.body)
    }

    /// A response's correlation id and code.
    pub fn response(&self) -> (u32, u16) {
        let mut r = self.reader();
        (r.u32(), r.u16())
    }
}

/// Reads the fields of a frame body.
pub struct Body<'a>(pub &'a [u8]);

impl Body<'_> {
    pub fn u8(&mut self) -> u8 {
        self.0.get_u8()
    }
    pub fn u16(&mut self) -> u16 {
        self.0.get_u16()
    }
    pub fn u32(&mut self) -> u32 {
        self.0.get_u32()
    }
    pub fn u64(&mut self) -> u64 {
        self.0.get_u64()
    }
    pub fn i64(&mut self) -> i64 {
        self.0.get_i64()
    }
    pub fn string(&mut self) -> String {
        let n = self.0.get_i16();
        if n < 0 {
            return String::new();
        }
        let s = String::from_utf8(self.0[..n as usize].to_vec()).expect("utf-8 string");
        self.0.advance(n as usize);
        s
    }
    pub fn strings(&mut self) -> Vec<String> {
        let n = self.0.get_i32();
        (0..n).map(|_| self.string()).collect()
    }
    pub fn rest(&self) -> &[u8] {
        self.0
    }
}

/// Field encoders for request bodies.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.put_i16(s.len() as i16);
    out.extend_from_slice(s.as_bytes());
}

pub fn map(out: &mut Vec<u8>, kv: &[(&str, &str)]) {
    out.put_i32(kv.len() as i32);
    for (k, v) in kv {
        string(out, k);
        string(out, v);
    }
}

pub struct Raw {
    pub sock: TcpStream,
    buf: Vec<u8>,
    correlation: u32,
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        let sock = TcpStream::connect(addr).await.expect("connect to the stream port");
        Raw { sock, buf: Vec::new(), correlation: 100 }
    }

    /// Connect, log in as guest and open `/`.
    pub async fn open(addr: &str) -> Raw {
        Self::open_as(addr, "guest", "guest", "/").await.expect("open")
    }

    /// The whole handshake; the failing step's response code otherwise.
    pub async fn open_as(addr: &str, user: &str, pass: &str, vhost: &str) -> Result<Raw, u16> {
        let mut r = Raw::connect(addr).await;
        let mut b = Vec::new();
        map(&mut b, &[("product", "raw-test")]);
        let f = r.call(0x0011, &b).await;
        assert_eq!(f.key, 0x8011);
        let f = r.call(0x0012, &[]).await;
        assert_eq!(f.response().1, 1);
        let mut b = Vec::new();
        string(&mut b, "PLAIN");
        let sasl = format!("\0{user}\0{pass}");
        b.put_i32(sasl.len() as i32);
        b.extend_from_slice(sasl.as_bytes());
        let f = r.call(0x0013, &b).await;
        match f.response().1 {
            1 => {}
            c => return Err(c),
        }
        let tune = r.frame().await.expect("the server's tune");
        assert_eq!(tune.key, 0x0014);
        let mut b = Vec::new();
        b.put_u32(1_048_576);
        b.put_u32(0);
        r.send(0x8014, 1, &b).await;
        let mut b = Vec::new();
        string(&mut b, vhost);
        let f = r.call(0x0015, &b).await;
        match f.response().1 {
            1 => Ok(r),
            c => Err(c),
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, key: u16, version: u16, body: &[u8]) {
        let mut f = Vec::with_capacity(body.len() + 8);
        f.put_u32(body.len() as u32 + 4);
        f.put_u16(key);
        f.put_u16(version);
        f.extend_from_slice(body);
        self.send_bytes(&f).await;
    }

    /// Send a request (a fresh correlation id before `body`); returns the id.
    pub async fn request(&mut self, key: u16, body: &[u8]) -> u32 {
        self.correlation += 1;
        let mut b = self.correlation.to_be_bytes().to_vec();
        b.extend_from_slice(body);
        self.send(key, 1, &b).await;
        self.correlation
    }

    /// A request and its response (frames in between are skipped).
    pub async fn call(&mut self, key: u16, body: &[u8]) -> Frame {
        let id = self.request(key, body).await;
        self.expect(|f| f.key == key | 0x8000 && f.response().0 == id).await
    }

    /// The next frame, or None when the server closed the connection.
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.next_frame()).await.expect("a frame or EOF in time")
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 4 {
                let size = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + size {
                    let f: Vec<u8> = self.buf.drain(..4 + size).skip(4).collect();
                    let frame = Frame {
                        key: u16::from_be_bytes([f[0], f[1]]),
                        version: u16::from_be_bytes([f[2], f[3]]),
                        body: f[4..].to_vec(),
                    };
                    if frame.key == 0x0017 {
                        continue;
                    }
                    return Some(frame);
                }
            }
            self.buf.reserve(65536);
            match self.sock.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame for which `want` holds (others are skipped); panics on EOF.
    pub async fn expect(&mut self, want: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let f = self.frame().await.expect("connection closed while waiting for a frame");
            if want(&f) {
                return f;
            }
        }
    }

    /// The server closes the socket (frames before that are returned).
    pub async fn closed(&mut self) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(f) = self.frame().await {
            seen.push(f);
        }
        seen
    }

    /// No frame arrives within `d` (heartbeats aside).
    pub async fn quiet(&mut self, d: Duration) -> Option<Frame> {
        tokio::time::timeout(d, self.next_frame()).await.ok().flatten()
    }

    // ---- commands ------------------------------------------------------------------------

    pub async fn create(&mut self, stream: &str, args: &[(&str, &str)]) -> u16 {
        let mut b = Vec::new();
        string(&mut b, stream);
        map(&mut b, args);
        self.call(0x000d, &b).await.response().1
    }

    pub async fn delete(&mut self, stream: &str) -> u16 {
        let mut b = Vec::new();
        string(&mut b, stream);
        self.call(0x000e, &b).await.response().1
    }

    pub async fn declare_publisher(&mut self, id: u8, reference: &str, stream: &str) -> u16 {
        let mut b = vec![id];
        string(&mut b, reference);
        string(&mut b, stream);
        self.call(0x0001, &b).await.response().1
    }

    /// Publish v1: (publishing id, message) pairs.
    pub async fn publish(&mut self, publisher: u8, messages: &[(u64, &[u8])]) {
        let mut b = vec![publisher];
        b.put_i32(messages.len() as i32);
        for (id, m) in messages {
            b.put_u64(*id);
            b.put_u32(m.len() as u32);
            b.extend_from_slice(m);
        }
        self.send(0x0002, 1, &b).await;
    }

    /// Wait for PublishConfirm frames until these ids are confirmed; returns them in order.
    pub async fn confirms(&mut self, publisher: u8, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let f = self.expect(|f| f.key == 0x0003 || f.key == 0x0004).await;
            assert_eq!(f.key, 0x0003, "a PublishError instead of a confirm: {f:?}");
            let mut r = f.reader();
            assert_eq!(r.u8(), publisher);
            let count = r.u32();
            ids.extend((0..count).map(|_| r.u64()));
        }
        ids
    }

    /// Subscribe with offset spec `kind` (1 first, 2 last, 3 next, 4 offset, 5 timestamp).
    pub async fn subscribe(
        &mut self,
        id: u8,
        stream: &str,
        kind: u16,
        value: u64,
        credit: u16,
        props: &[(&str, &str)],
    ) -> u16 {
        let mut b = vec![id];
        string(&mut b, stream);
        b.put_u16(kind);
        if kind >= 4 {
            b.put_u64(value);
        }
        b.put_u16(credit);
        map(&mut b, props);
        self.call(0x0007, &b).await.response().1
    }

    pub async fn credit(&mut self, id: u8, credit: u16) {
        let mut b = vec![id];
        b.put_u16(credit);
        self.send(0x0009, 1, &b).await;
    }

    /// The next Deliver: (subscription id, first offset of the chunk, its records' bytes).
    pub async fn deliver(&mut self) -> (u8, u64, Vec<Vec<u8>>) {
        let f = self.expect(|f| f.key == 0x0008).await;
        parse_deliver(&f)
    }
}

/// A Deliver frame (v1 or v2): subscription id, chunk id, the records of its simple entries.
pub fn parse_deliver(f: &Frame) -> (u8, u64, Vec<Vec<u8>>) {
    let mut r = f.reader();
    let sub = r.u8();
    if f.version == 2 {
        r.u64();
    }
    assert_eq!(r.u8(), 0x50, "magic and version");
    assert_eq!(r.u8(), 0, "a user chunk");
    let entries = r.u16();
    let _records = r.u32();
    let _timestamp = r.i64();
    let _epoch = r.u64();
    let chunk_id = r.u64();
    let _crc = r.u32();
    let data_len = r.u32() as usize;
    let _trailer = r.u32();
    let _reserved = r.u32();
    let data = r.rest();
    assert_eq!(data.len(), data_len, "a Deliver carries the header and the data section only");
    let mut d = data;
    let mut out = Vec::new();
    for _ in 0..entries {
        let size = d.get_u32() as usize;
        assert_eq!(size & 0x8000_0000, 0, "simple entries");
        out.push(d[..size].to_vec());
        d.advance(size);
    }
    (sub, chunk_id, out)
}
