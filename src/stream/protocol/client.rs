//! Test only: a client's encoder for every [`ClientFrame`] (written from PROTOCOL.adoc), and a
//! reader for server frames, so the parser and the encoders can be checked both ways.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{ClientFrame, OffsetSpec, Properties, PublishEntry};

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_map(b: &mut BytesMut, m: &Properties) {
    b.put_i32(m.len() as i32);
    for (k, v) in m {
        put_str(b, k);
        put_str(b, v);
    }
}

fn put_strings(b: &mut BytesMut, items: &[bytestring::ByteString]) {
    b.put_i32(items.len() as i32);
    for s in items {
        put_str(b, s);
    }
}

fn put_offset(b: &mut BytesMut, o: &OffsetSpec) {
    b.put_u16(o.type_code());
    match o {
        OffsetSpec::Offset(v) => b.put_u64(*v),
        OffsetSpec::Timestamp(t) => b.put_i64(*t),
        _ => {}
    }
}

/// The whole frame, size prefix included, as a client would send it.
pub fn encode(f: &ClientFrame) -> Bytes {
    use ClientFrame as F;
    let mut b = BytesMut::new();
    b.put_u32(0);
    b.put_u16(f.key());
    b.put_u16(if let F::Publish { version, .. } = f { *version } else { 1 });
    match f {
        F::PeerProperties { correlation_id, properties } => {
            b.put_u32(*correlation_id);
            put_map(&mut b, properties);
        }
        F::SaslHandshake { correlation_id } => b.put_u32(*correlation_id),
        F::SaslAuthenticate { correlation_id, mechanism, data } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, mechanism);
            b.put_i32(data.len() as i32);
            b.put_slice(data);
        }
        F::Tune { frame_max, heartbeat } => {
            b.put_u32(*frame_max);
            b.put_u32(*heartbeat);
        }
        F::Open { correlation_id, vhost } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, vhost);
        }
        F::Close { correlation_id, code, reason } => {
            b.put_u32(*correlation_id);
            b.put_u16(*code);
            put_str(&mut b, reason);
        }
        F::CloseResponse { correlation_id, code } => {
            b.put_u32(*correlation_id);
            b.put_u16(*code);
        }
        F::Heartbeat => {}
        F::Create { correlation_id, stream, arguments } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, stream);
            put_map(&mut b, arguments);
        }
        F::Delete { correlation_id, stream: s }
        | F::Partitions { correlation_id, super_stream: s }
        | F::StreamStats { correlation_id, stream: s }
        | F::DeleteSuperStream { correlation_id, name: s } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, s);
        }
        F::Metadata { correlation_id, streams } => {
            b.put_u32(*correlation_id);
            put_strings(&mut b, streams);
        }
        F::DeclarePublisher { correlation_id, publisher_id, reference, stream } => {
            b.put_u32(*correlation_id);
            b.put_u8(*publisher_id);
            put_str(&mut b, reference.as_deref().unwrap_or(""));
            put_str(&mut b, stream);
        }
        F::Publish { version, publisher_id, messages } => {
            b.put_u8(*publisher_id);
            b.put_i32(messages.len() as i32);
            for m in messages {
                b.put_u64(m.publishing_id);
                if *version == 2 {
                    match &m.filter_value {
                        Some(v) => put_str(&mut b, v),
                        None => b.put_i16(-1),
                    }
                }
                match &m.entry {
                    PublishEntry::Simple(data) => {
                        b.put_u32(data.len() as u32);
                        b.put_slice(data);
                    }
                    PublishEntry::SubBatch { compression, records, uncompressed_size, data } => {
                        b.put_u8(0x80 | (compression << 4));
                        b.put_u16(*records);
                        b.put_u32(*uncompressed_size);
                        b.put_u32(data.len() as u32);
                        b.put_slice(data);
                    }
                }
            }
        }
        F::QueryPublisherSequence { correlation_id, reference: a, stream: c }
        | F::QueryOffset { correlation_id, reference: a, stream: c }
        | F::Route { correlation_id, routing_key: a, super_stream: c } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, a);
            put_str(&mut b, c);
        }
        F::DeletePublisher { correlation_id, publisher_id: id }
        | F::Unsubscribe { correlation_id, subscription_id: id } => {
            b.put_u32(*correlation_id);
            b.put_u8(*id);
        }
        F::Subscribe { correlation_id, subscription_id, stream, offset, credit, properties } => {
            b.put_u32(*correlation_id);
            b.put_u8(*subscription_id);
            put_str(&mut b, stream);
            put_offset(&mut b, offset);
            b.put_u16(*credit);
            put_map(&mut b, properties);
        }
        F::Credit { subscription_id, credit } => {
            b.put_u8(*subscription_id);
            b.put_u16(*credit);
        }
        F::StoreOffset { reference, stream, offset } => {
            put_str(&mut b, reference);
            put_str(&mut b, stream);
            b.put_u64(*offset);
        }
        F::ConsumerUpdateResponse { correlation_id, code, offset } => {
            b.put_u32(*correlation_id);
            b.put_u16(*code);
            match offset {
                Some(o) => put_offset(&mut b, o),
                None => b.put_u16(0),
            }
        }
        F::ExchangeCommandVersions { correlation_id, versions } => {
            b.put_u32(*correlation_id);
            b.put_i32(versions.len() as i32);
            for v in versions {
                b.put_u16(v.key);
                b.put_u16(v.min);
                b.put_u16(v.max);
            }
        }
        F::CreateSuperStream { correlation_id, name, partitions, binding_keys, arguments } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, name);
            put_strings(&mut b, partitions);
            put_strings(&mut b, binding_keys);
            put_map(&mut b, arguments);
        }
        F::ResolveOffsetSpec { correlation_id, stream, offset, properties } => {
            b.put_u32(*correlation_id);
            put_str(&mut b, stream);
            put_offset(&mut b, offset);
            put_map(&mut b, properties);
        }
    }
    let size = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    b.freeze()
}

/// A reader over a server frame's bytes, for checking what the encoders wrote.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn string(&mut self) -> String {
        let n = self.u16() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    pub fn strings(&mut self) -> Vec<String> {
        let n = self.u32();
        (0..n).map(|_| self.string()).collect()
    }
    pub fn map(&mut self) -> Vec<(String, String)> {
        let n = self.u32();
        (0..n).map(|_| (self.string(), self.string())).collect()
    }
    /// The size prefix (checked against the bytes), key and version.
    pub fn header(&mut self) -> (u16, u16) {
        let size = self.u32() as usize;
        assert_eq!(size, self.0.len(), "size prefix");
        (self.u16(), self.u16())
    }
    pub fn rest(&self) -> &[u8] {
        self.0
    }
}
