//! The osiris chunk format, byte for byte what a stream-protocol `Deliver` frame carries:
//!
//! ```text
//! 0   magic/version u8 (0x50)      1  chunk type u8 (0 user, 1 tracking delta, 2 tracking snapshot)
//! 2   numEntries u16               4  numRecords u32
//! 8   timestamp i64 (ms)           16 epoch u64
//! 24  chunkFirstOffset u64         32 crc u32 (CRC-32/IEEE of the data section, as erlang:crc32)
//! 36  dataLength u32               40 trailerLength u32
//! 44  bloomSize u8                 45 reserved u24
//! 48  bloom filter (bloomSize bytes), data entries (dataLength), trailer (trailerLength)
//! ```
//!
//! Entries: simple `0|size:31` + bytes, or sub-batch `1|compression:3|reserved:4`,
//! numRecords u16, uncompressedLength u32, length u32, bytes. All big-endian. Pure functions.

use super::bloom::BloomBuilder;
use super::crc::crc32;

/// Size of the fixed chunk header.
pub const HEADER_SIZE: usize = 48;
/// Magic 5, format version 0.
pub const MAGIC_VERSION: u8 = 0x50;
/// Largest simple entry (31-bit length).
pub const MAX_ENTRY_SIZE: usize = (1 << 31) - 1;

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkType {
    /// Messages.
    User = 0,
    /// Tracking changes (offsets stored, writer sequences) without messages.
    TrackingDelta = 1,
    /// All tracking state, written first in each new segment.
    TrackingSnapshot = 2,
}

impl ChunkType {
    pub fn from_u8(b: u8) -> Option<ChunkType> {
        match b {
            0 => Some(ChunkType::User),
            1 => Some(ChunkType::TrackingDelta),
            2 => Some(ChunkType::TrackingSnapshot),
            _ => None,
        }
    }
}

/// Why bytes are not a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("short chunk header")]
    ShortHeader,
    #[error("bad magic/version byte {0:#04x}")]
    Magic(u8),
    #[error("unknown chunk type {0}")]
    Type(u8),
    #[error("chunk with no records")]
    NoRecords,
    #[error("bloom filter size {0} outside 16..=255")]
    BloomSize(u8),
    #[error("chunk offsets overflow")]
    Overflow,
    #[error("chunk extends past the end of the file")]
    Truncated,
    #[error("data CRC mismatch (header {expected:#010x}, data {actual:#010x})")]
    Crc { expected: u32, actual: u32 },
    #[error("malformed entries: {0}")]
    Entries(&'static str),
    #[error("chunk id {found}, expected {expected}")]
    Discontinuous { expected: u64, found: u64 },
}

/// A decoded chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub chunk_type: ChunkType,
    pub num_entries: u16,
    pub num_records: u32,
    pub timestamp: i64,
    pub epoch: u64,
    pub chunk_id: u64,
    pub crc: u32,
    pub data_len: u32,
    pub trailer_len: u32,
    pub bloom_size: u8,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl ChunkHeader {
    /// Parse and validate the 48 header bytes (structure only; the CRC needs the data).
    pub fn parse(b: &[u8]) -> Result<ChunkHeader, ChunkError> {
        if b.len() < HEADER_SIZE {
            return Err(ChunkError::ShortHeader);
        }
        if b[0] != MAGIC_VERSION {
            return Err(ChunkError::Magic(b[0]));
        }
        let chunk_type = ChunkType::from_u8(b[1]).ok_or(ChunkError::Type(b[1]))?;
        let h = ChunkHeader {
            chunk_type,
            num_entries: u16::from_be_bytes([b[2], b[3]]),
            num_records: be_u32(b, 4),
            timestamp: be_u64(b, 8) as i64,
            epoch: be_u64(b, 16),
            chunk_id: be_u64(b, 24),
            crc: be_u32(b, 32),
            data_len: be_u32(b, 36),
            trailer_len: be_u32(b, 40),
            bloom_size: b[44],
        };
        if h.num_records == 0 || h.num_entries == 0 {
            return Err(ChunkError::NoRecords);
        }
        if h.bloom_size != 0 && h.bloom_size < 16 {
            return Err(ChunkError::BloomSize(h.bloom_size));
        }
        if h.chunk_id.checked_add(h.num_records as u64).is_none() {
            return Err(ChunkError::Overflow);
        }
        Ok(h)
    }

    /// The 48 header bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0] = MAGIC_VERSION;
        b[1] = self.chunk_type as u8;
        b[2..4].copy_from_slice(&self.num_entries.to_be_bytes());
        b[4..8].copy_from_slice(&self.num_records.to_be_bytes());
        b[8..16].copy_from_slice(&self.timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_be_bytes());
        b[24..32].copy_from_slice(&self.chunk_id.to_be_bytes());
        b[32..36].copy_from_slice(&self.crc.to_be_bytes());
        b[36..40].copy_from_slice(&self.data_len.to_be_bytes());
        b[40..44].copy_from_slice(&self.trailer_len.to_be_bytes());
        b[44] = self.bloom_size;
        b
    }

    /// Bytes of the whole chunk (header, bloom, data, trailer).
    pub fn total_len(&self) -> u64 {
        HEADER_SIZE as u64 + self.bloom_size as u64 + self.data_len as u64 + self.trailer_len as u64
    }

    /// Offset of the data section from the chunk's start.
    pub fn data_start(&self) -> u64 {
        HEADER_SIZE as u64 + self.bloom_size as u64
    }

    /// Offset of the trailer from the chunk's start.
    pub fn trailer_start(&self) -> u64 {
        self.data_start() + self.data_len as u64
    }

    /// The offset after this chunk's last record.
    pub fn next_offset(&self) -> u64 {
        // parse() checked that this does not overflow.
        self.chunk_id.saturating_add(self.num_records as u64)
    }

    /// The last offset in the chunk.
    pub fn last_offset(&self) -> u64 {
        self.next_offset() - 1
    }
}

/// One data entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRef<'a> {
    /// One record.
    Simple(&'a [u8]),
    /// A client-side batch of `records` records, possibly compressed.
    SubBatch { compression: u8, records: u16, uncompressed_len: u32, data: &'a [u8] },
}

impl EntryRef<'_> {
    /// Records the entry holds.
    pub fn records(&self) -> u32 {
        match self {
            EntryRef::Simple(_) => 1,
            EntryRef::SubBatch { records, .. } => *records as u32,
        }
    }
}

/// Iterate a data section's entries; stops at the first malformed one (yielding its error).
pub fn entries(data: &[u8]) -> Entries<'_> {
    Entries { data, at: 0, failed: false }
}

pub struct Entries<'a> {
    data: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<EntryRef<'a>, ChunkError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.data.len() {
            return None;
        }
        let r = parse_entry(&self.data[self.at..]);
        match r {
            Ok((e, used)) => {
                self.at += used;
                Some(Ok(e))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_entry(b: &[u8]) -> Result<(EntryRef<'_>, usize), ChunkError> {
    if b.len() < 4 {
        return Err(ChunkError::Entries("short entry header"));
    }
    if b[0] & 0x80 == 0 {
        let size = be_u32(b, 0) as usize;
        let body = b.get(4..4 + size).ok_or(ChunkError::Entries("entry past the data section"))?;
        Ok((EntryRef::Simple(body), 4 + size))
    } else {
        if b.len() < 11 {
            return Err(ChunkError::Entries("short sub-batch header"));
        }
        let compression = (b[0] >> 4) & 0x07;
        let records = u16::from_be_bytes([b[1], b[2]]);
        let uncompressed_len = be_u32(b, 3);
        let len = be_u32(b, 7) as usize;
        let data = b.get(11..11 + len).ok_or(ChunkError::Entries("sub-batch past the data section"))?;
        Ok((EntryRef::SubBatch { compression, records, uncompressed_len, data }, 11 + len))
    }
}

/// Check a data section against its header: CRC, entry count, record count, exact length.
pub fn verify_data(h: &ChunkHeader, data: &[u8]) -> Result<(), ChunkError> {
    let actual = crc32(data);
    if actual != h.crc {
        return Err(ChunkError::Crc { expected: h.crc, actual });
    }
    verify_entries(h, data)
}

/// Entry and record counts of a data section match the header.
pub fn verify_entries(h: &ChunkHeader, data: &[u8]) -> Result<(), ChunkError> {
    if data.len() != h.data_len as usize {
        return Err(ChunkError::Truncated);
    }
    let (mut n, mut records) = (0u32, 0u64);
    for e in entries(data) {
        let e = e?;
        n += 1;
        records += e.records() as u64;
        if n > h.num_entries as u32 {
            return Err(ChunkError::Entries("more entries than the header says"));
        }
    }
    if n != h.num_entries as u32 || records != h.num_records as u64 {
        return Err(ChunkError::Entries("entry or record count differs from the header"));
    }
    Ok(())
}

/// Builds one chunk in one reusable buffer. The data section is written after room for the
/// header and the largest bloom filter, so finishing never moves it: the chunk starts at the
/// header's final place.
pub struct ChunkBuilder {
    buf: Vec<u8>,
    filter_size: u8,
    bloom: BloomBuilder,
    entries: u32,
    records: u32,
}

/// An entry of a batch being appended.
#[derive(Debug, Clone, Copy)]
pub enum EntryData<'a> {
    Simple(&'a [u8]),
    SubBatch { compression: u8, records: u16, uncompressed_len: u32, data: &'a [u8] },
}

impl ChunkBuilder {
    /// `filter_size`: bloom filter bytes when any record has a filter value (16..=255).
    pub fn new(filter_size: u8) -> ChunkBuilder {
        let filter_size = filter_size.clamp(16, 255);
        let mut b = ChunkBuilder {
            buf: Vec::new(),
            filter_size,
            bloom: BloomBuilder::new(filter_size),
            entries: 0,
            records: 0,
        };
        b.reset();
        b
    }

    fn prefix(&self) -> usize {
        HEADER_SIZE + self.filter_size as usize
    }

    /// Start a new chunk (keeps the buffer's capacity).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.prefix(), 0);
        self.bloom.clear();
        self.entries = 0;
        self.records = 0;
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    /// Bytes of data added so far.
    pub fn data_len(&self) -> usize {
        self.buf.len() - self.prefix()
    }

    /// Add an entry; `filter` is the record's filter value (None: unfiltered).
    pub fn push(&mut self, entry: EntryData<'_>, filter: Option<&[u8]>) -> Result<(), ChunkError> {
        if self.entries >= u16::MAX as u32 {
            return Err(ChunkError::Entries("more than 65535 entries in a chunk"));
        }
        let (n, len) = match entry {
            EntryData::Simple(d) => (1u32, d.len()),
            EntryData::SubBatch { records, data, .. } => (records as u32, data.len()),
        };
        if len > MAX_ENTRY_SIZE || self.data_len() + len + 11 > u32::MAX as usize {
            return Err(ChunkError::Entries("entry too large"));
        }
        if n == 0 {
            return Err(ChunkError::Entries("sub-batch with no records"));
        }
        match entry {
            EntryData::Simple(d) => {
                self.buf.extend_from_slice(&(d.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(d);
            }
            EntryData::SubBatch { compression, records, uncompressed_len, data } => {
                self.buf.push(0x80 | ((compression & 0x07) << 4));
                self.buf.extend_from_slice(&records.to_be_bytes());
                self.buf.extend_from_slice(&uncompressed_len.to_be_bytes());
                self.buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(data);
            }
        }
        self.bloom.insert(filter);
        self.entries += 1;
        self.records += n;
        Ok(())
    }

    /// Finish the chunk: append `trailer`, write bloom and header. Returns the chunk's bytes
    /// and its header. The builder must be `reset` before the next chunk.
    pub fn finish(
        &mut self,
        chunk_type: ChunkType,
        timestamp: i64,
        epoch: u64,
        chunk_id: u64,
        trailer: &[u8],
    ) -> (ChunkHeader, &[u8]) {
        let prefix = self.prefix();
        let data_len = self.buf.len() - prefix;
        let crc = crc32(&self.buf[prefix..]);
        self.buf.extend_from_slice(trailer);
        let bloom = self.bloom.bytes();
        let bloom_size = bloom.map_or(0, |b| b.len());
        let start = prefix - bloom_size - HEADER_SIZE;
        let h = ChunkHeader {
            chunk_type,
            num_entries: self.entries as u16,
            num_records: self.records,
            timestamp,
            epoch,
            chunk_id,
            crc,
            data_len: data_len as u32,
            trailer_len: trailer.len() as u32,
            bloom_size: bloom_size as u8,
        };
        self.buf[start..start + HEADER_SIZE].copy_from_slice(&h.encode());
        if let Some(b) = bloom {
            self.buf[start + HEADER_SIZE..prefix].copy_from_slice(b);
        }
        (h, &self.buf[start..])
    }
}

/// Encode a whole chunk of simple entries into a fresh buffer (tracking chunks, tests).
pub fn encode_simple(
    chunk_type: ChunkType,
    timestamp: i64,
    epoch: u64,
    chunk_id: u64,
    records: &[&[u8]],
    trailer: &[u8],
) -> Result<Vec<u8>, ChunkError> {
    let mut b = ChunkBuilder::new(16);
    for r in records {
        b.push(EntryData::Simple(r), None)?;
    }
    let (_, bytes) = b.finish(chunk_type, timestamp, epoch, chunk_id, trailer);
    Ok(bytes.to_vec())
}

/// A whole chunk in a byte slice: its header and its sections.
#[derive(Debug, Clone, Copy)]
pub struct ChunkView<'a> {
    pub header: ChunkHeader,
    pub bloom: &'a [u8],
    pub data: &'a [u8],
    pub trailer: &'a [u8],
}

/// Parse and verify one chunk at the start of `b` (extra bytes after it are ignored).
pub fn parse_chunk(b: &[u8]) -> Result<ChunkView<'_>, ChunkError> {
    let header = ChunkHeader::parse(b)?;
    if (b.len() as u64) < header.total_len() {
        return Err(ChunkError::Truncated);
    }
    let ds = header.data_start() as usize;
    let ts = header.trailer_start() as usize;
    let end = header.total_len() as usize;
    let view = ChunkView { header, bloom: &b[HEADER_SIZE..ds], data: &b[ds..ts], trailer: &b[ts..end] };
    verify_data(&header, view.data)?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let bytes = encode_simple(ChunkType::User, 1234, 7, 42, &[b"hello", b"world!"], b"").unwrap();
        assert_eq!(bytes[0], 0x50);
        assert_eq!(bytes[1], 0);
        assert_eq!(&bytes[2..4], &[0, 2]);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 2]);
        assert_eq!(&bytes[24..32], &42u64.to_be_bytes());
        assert_eq!(bytes[44], 0, "no filter values: no bloom");
        assert_eq!(&bytes[48..52], &[0, 0, 0, 5]);
        assert_eq!(&bytes[52..57], b"hello");
        let v = parse_chunk(&bytes).unwrap();
        assert_eq!(v.header.data_len, 4 + 5 + 4 + 6);
        assert_eq!(v.header.crc, crc32(&bytes[48..]));
        let got: Vec<_> = entries(v.data).map(|e| e.unwrap()).collect();
        assert_eq!(got, vec![EntryRef::Simple(b"hello"), EntryRef::Simple(b"world!")]);
        assert_eq!(v.header.next_offset(), 44);
    }

    #[test]
    fn sub_batch_and_bloom_placement() {
        let mut b = ChunkBuilder::new(32);
        b.push(EntryData::SubBatch { compression: 1, records: 3, uncompressed_len: 99, data: b"zzz" }, Some(b"eu"))
            .unwrap();
        b.push(EntryData::Simple(b"x"), None).unwrap();
        let (h, bytes) = b.finish(ChunkType::User, 5, 1, 10, b"TR");
        assert_eq!((h.num_entries, h.num_records, h.bloom_size, h.trailer_len), (2, 4, 32, 2));
        assert_eq!(bytes.len() as u64, h.total_len());
        assert_eq!(bytes[48 + 32], 0x90, "sub-batch flag and gzip compression");
        assert_eq!(&bytes[bytes.len() - 2..], b"TR");
        let v = parse_chunk(bytes).unwrap();
        assert_eq!(v.bloom.len(), 32);
        assert_eq!(
            entries(v.data).next().unwrap().unwrap(),
            EntryRef::SubBatch { compression: 1, records: 3, uncompressed_len: 99, data: b"zzz" }
        );
    }

    #[test]
    fn refuses_bad_chunks() {
        let bytes = encode_simple(ChunkType::User, 1, 1, 0, &[b"abc"], b"").unwrap();
        for cut in 0..bytes.len() {
            assert!(parse_chunk(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            // Fields no check covers (type 0 -> 1 is another valid type; timestamp, epoch,
            // chunk id, reserved) may flip freely.
            let unchecked = i == 1 || (8..24).contains(&i) || (24..32).contains(&i) || (45..48).contains(&i);
            assert_eq!(parse_chunk(&b).is_ok(), unchecked, "flip at {i}");
        }
    }
}
