//! Content-header properties read by hand, for the hot path.
//!
//! Decoding `basic` properties into amq-protocol's `BasicProperties` builds a ~300-byte value
//! that then moves through every layer of the publish path (profiled: the moves alone were a
//! tenth of the broker's CPU at 1M msg/s). Most messages need only their delivery mode and
//! priority, so [`scan`] checks the property list the way amq-protocol's parser does (same
//! accept/reject set) and keeps just those; a message decodes its full properties on first use.
//! A header with a `headers` table is decoded at once: the table needs checking (and routing
//! usually reads it).

/// Property flag bits (spec 4.2.6.1 / the `basic` class), most significant first.
pub const CONTENT_TYPE: u16 = 1 << 15;
pub const CONTENT_ENCODING: u16 = 1 << 14;
pub const HEADERS: u16 = 1 << 13;
pub const DELIVERY_MODE: u16 = 1 << 12;
pub const PRIORITY: u16 = 1 << 11;
pub const CORRELATION_ID: u16 = 1 << 10;
pub const REPLY_TO: u16 = 1 << 9;
pub const EXPIRATION: u16 = 1 << 8;
pub const MESSAGE_ID: u16 = 1 << 7;
pub const TIMESTAMP: u16 = 1 << 6;
pub const TYPE: u16 = 1 << 5;
pub const USER_ID: u16 = 1 << 4;
pub const APP_ID: u16 = 1 << 3;
pub const CLUSTER_ID: u16 = 1 << 2;

/// What the hot path needs of a message's properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Which properties are present.
    pub flags: u16,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
}

impl Summary {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Scan a content-header payload (class, weight, body size, flags, properties). `None` when
/// it is malformed (too short, a string running past the end) or carries a `headers` table,
/// which only the full decoder checks.
pub fn scan(raw: &[u8]) -> Option<Summary> {
    // The two low bits (continuation, reserved) name no property; the decoders ignore them too.
    let flags = u16::from_be_bytes(raw.get(12..14)?.try_into().ok()?) & !0b11;
    if flags & HEADERS != 0 {
        return None;
    }
    let mut at = 14;
    let mut summary = Summary { flags, ..Summary::default() };
    for bit in (2..16).rev() {
        let flag = 1u16 << bit;
        if flags & flag == 0 {
            continue;
        }
        match flag {
            DELIVERY_MODE | PRIORITY => {
                let v = *raw.get(at)?;
                at += 1;
                if flag == DELIVERY_MODE {
                    summary.delivery_mode = Some(v);
                } else {
                    summary.priority = Some(v);
                }
            }
            TIMESTAMP => {
                raw.get(at..at + 8)?;
                at += 8;
            }
            _ => {
                // Any bytes: RabbitMQ takes property strings as they come.
                let len = *raw.get(at)? as usize;
                raw.get(at + 1..at + 1 + len)?;
                at += 1 + len;
            }
        }
    }
    // Bytes no flag accounts for: malformed (RabbitMQ's decoder refuses them).
    if at != raw.len() {
        return None;
    }
    Some(summary)
}

/// Where the `headers` table starts in a content-header payload, when the flags say there is
/// one and the two short strings before it (content type and encoding) are whole.
pub fn headers_offset(raw: &[u8]) -> Option<usize> {
    let flags = u16::from_be_bytes(raw.get(12..14)?.try_into().ok()?);
    if flags & HEADERS == 0 {
        return None;
    }
    let mut at = 14;
    for flag in [CONTENT_TYPE, CONTENT_ENCODING] {
        if flags & flag != 0 {
            at += 1 + *raw.get(at)? as usize;
        }
    }
    (at <= raw.len()).then_some(at)
}

/// Decode the properties of a content-header payload into amq-protocol's type. Strings that
/// are not UTF-8 (RabbitMQ accepts any bytes; amq-protocol does not) are decoded from a copy
/// where their non-ASCII bytes read `?`: the decoded view is lossy there, while the raw header
/// forwarded to consumers keeps the bytes as published. `None`: malformed, or a headers table
/// nested too deep.
pub fn decode(raw: &[u8]) -> Option<super::BasicProperties> {
    decode_checked(raw).ok()
}

/// [`decode`], telling a headers table nested too deep ([`FieldError::TooDeep`]) from any other
/// fault ([`FieldError::Malformed`]); the table is walked once.
///
/// [`FieldError::TooDeep`]: super::fields::FieldError::TooDeep
/// [`FieldError::Malformed`]: super::fields::FieldError::Malformed
pub fn decode_checked(raw: &[u8]) -> Result<super::BasicProperties, super::fields::FieldError> {
    if let Some(at) = headers_offset(raw) {
        super::fields::check_table(&raw[at..])?;
    }
    decode_lossy(raw).ok_or(super::fields::FieldError::Malformed)
}

/// Decode properties whose headers table (if any) passed the depth check.
fn decode_lossy(raw: &[u8]) -> Option<super::BasicProperties> {
    let parse = |raw: &[u8]| match amq_protocol::frame::parsing::parse_content_header(raw) {
        Ok(([], h)) => Some(h.properties),
        _ => None,
    };
    if let Some(p) = parse(raw) {
        return Some(p);
    }
    let mut copy = raw.to_vec();
    let flags = u16::from_be_bytes(copy.get(12..14)?.try_into().ok()?);
    let mut at = 14;
    for bit in (2..16).rev() {
        let flag = 1u16 << bit;
        if flags & flag == 0 {
            continue;
        }
        match flag {
            DELIVERY_MODE | PRIORITY => at += 1,
            TIMESTAMP => at += 8,
            HEADERS => at += super::fields::sanitize_keys(copy.get_mut(at..)?).ok()?,
            _ => {
                let len = *copy.get(at)? as usize;
                super::fields::sanitize_str(copy.get_mut(at + 1..at + 1 + len)?);
                at += 1 + len;
            }
        }
    }
    parse(&copy)
}

/// The summary of already decoded properties.
pub fn summarize(p: &super::BasicProperties) -> Summary {
    let mut flags = 0;
    let mut set = |present: bool, flag: u16| {
        if present {
            flags |= flag;
        }
    };
    set(p.content_type().is_some(), CONTENT_TYPE);
    set(p.content_encoding().is_some(), CONTENT_ENCODING);
    set(p.headers().is_some(), HEADERS);
    set(p.delivery_mode().is_some(), DELIVERY_MODE);
    set(p.priority().is_some(), PRIORITY);
    set(p.correlation_id().is_some(), CORRELATION_ID);
    set(p.reply_to().is_some(), REPLY_TO);
    set(p.expiration().is_some(), EXPIRATION);
    set(p.message_id().is_some(), MESSAGE_ID);
    set(p.timestamp().is_some(), TIMESTAMP);
    set(p.kind().is_some(), TYPE);
    set(p.user_id().is_some(), USER_ID);
    set(p.app_id().is_some(), APP_ID);
    set(p.cluster_id().is_some(), CLUSTER_ID);
    Summary { flags, delivery_mode: *p.delivery_mode(), priority: *p.priority() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BasicProperties;
    use crate::protocol::encode::content_header_payload;

    fn decode(raw: &[u8]) -> Option<BasicProperties> {
        amq_protocol::frame::parsing::parse_content_header(raw).ok().map(|(_, h)| h.properties)
    }

    /// The scan agrees with amq-protocol's decoder on every property combination.
    #[test]
    fn scan_agrees_with_the_decoder() {
        let all = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("app".into())
            .with_cluster_id("cl".into());
        let full = content_header_payload(60, 5, &all);
        let full_flags = u16::from_be_bytes([full[12], full[13]]);
        // Every subset of the properties, by masking flags and re-encoding.
        for mask in 0..(1u32 << 14) {
            let flags = ((mask as u16) << 2) & full_flags;
            let p = subset(&all, flags);
            let raw = content_header_payload(60, 5, &p);
            let s = scan(&raw).expect("well-formed");
            assert_eq!(s, summarize(&decode(&raw).unwrap()), "flags {flags:#06x}");
            // Every truncation is refused by both, or accepted by both.
            if mask % 997 == 0 {
                for cut in 0..raw.len() {
                    assert_eq!(scan(&raw[..cut]).is_some(), decode(&raw[..cut]).is_some(), "cut {cut}");
                }
            }
        }
    }

    #[test]
    fn headers_and_bad_utf8_go_to_the_decoder() {
        let mut t = amq_protocol::types::FieldTable::default();
        t.insert("k".into(), amq_protocol::types::AMQPValue::Boolean(true));
        let raw = content_header_payload(60, 0, &BasicProperties::default().with_headers(t));
        assert_eq!(scan(&raw), None);
        let mut raw = content_header_payload(60, 0, &BasicProperties::default().with_app_id("é".into())).to_vec();
        let at = raw.len() - 1;
        raw[at] = 0xFF;
        // Not UTF-8: scanned as RabbitMQ takes it, and decoded (lossily) from a sanitised copy.
        assert_eq!(scan(&raw).map(|s| s.flags), Some(APP_ID));
        assert!(decode(&raw).is_none());
        assert_eq!(super::decode(&raw).unwrap().app_id().as_ref().map(|s| s.as_str()), Some("??"));
    }

    #[test]
    fn headers_with_keys_that_are_not_utf8_decode_lossily() {
        let mut inner = amq_protocol::types::FieldTable::default();
        inner.insert("é".into(), amq_protocol::types::AMQPValue::Boolean(true));
        let mut t = amq_protocol::types::FieldTable::default();
        t.insert("ü".into(), amq_protocol::types::AMQPValue::FieldTable(inner));
        let p = BasicProperties::default().with_headers(t).with_content_type("é".into()).with_priority(3);
        let mut raw = content_header_payload(60, 0, &p).to_vec();
        // Break the UTF-8 of the content type and of both keys (each starts with 0xC3).
        for b in raw.iter_mut().filter(|b| **b == 0xC3) {
            *b = 0xFF;
        }
        let d = super::decode(&raw).unwrap();
        assert_eq!(d.content_type().as_ref().map(|s| s.as_str()), Some("??"));
        assert_eq!(*d.priority(), Some(3));
        let h = d.headers().as_ref().unwrap();
        let amq_protocol::types::AMQPValue::FieldTable(inner) = &h.inner()["??"] else { panic!("{h:?}") };
        assert!(inner.inner().contains_key("??"));
    }

    fn subset(all: &BasicProperties, flags: u16) -> BasicProperties {
        let mut p = BasicProperties::default();
        let on = |f: u16| flags & f != 0;
        if on(CONTENT_TYPE) {
            p = p.with_content_type(all.content_type().clone().unwrap());
        }
        if on(CONTENT_ENCODING) {
            p = p.with_content_encoding(all.content_encoding().clone().unwrap());
        }
        if on(DELIVERY_MODE) {
            p = p.with_delivery_mode(2);
        }
        if on(PRIORITY) {
            p = p.with_priority(7);
        }
        if on(CORRELATION_ID) {
            p = p.with_correlation_id(all.correlation_id().clone().unwrap());
        }
        if on(REPLY_TO) {
            p = p.with_reply_to(all.reply_to().clone().unwrap());
        }
        if on(EXPIRATION) {
            p = p.with_expiration(all.expiration().clone().unwrap());
        }
        if on(MESSAGE_ID) {
            p = p.with_message_id(all.message_id().clone().unwrap());
        }
        if on(TIMESTAMP) {
            p = p.with_timestamp(1);
        }
        if on(TYPE) {
            p = p.with_type(all.kind().clone().unwrap());
        }
        if on(USER_ID) {
            p = p.with_user_id(all.user_id().clone().unwrap());
        }
        if on(APP_ID) {
            p = p.with_app_id(all.app_id().clone().unwrap());
        }
        if on(CLUSTER_ID) {
            p = p.with_cluster_id(all.cluster_id().clone().unwrap());
        }
        p
    }
}
