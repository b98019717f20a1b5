//! Segment and index files as bytes: the file headers, the index record, scanning a segment's
//! chunks (recovery, index rebuild) and searching an index. Everything here reads through
//! [`ReadAt`], implemented for byte slices (tests, fuzzing) and files.
//!
//! Segment file: `WSEG` + version u32, then chunks back to back. Index file: `WIDX` + version
//! u32, then one 40-byte record a chunk:
//! `chunk id u64, timestamp i64, file position u64, records u32, chunk length u32, type u8,
//! bloom size u8, 2 zero bytes, CRC-32 of the 36 bytes before u32`.

use std::io;

use super::chunk::{self, ChunkError, ChunkHeader, ChunkType, HEADER_SIZE};

pub const SEGMENT_MAGIC: &[u8; 8] = b"WSEG\0\0\0\x01";
pub const INDEX_MAGIC: &[u8; 8] = b"WIDX\0\0\0\x01";
/// Bytes of either file's header.
pub const FILE_HEADER: u64 = 8;
pub const RECORD_SIZE: usize = 40;

/// Positioned reads over something with a fixed size.
pub trait ReadAt {
    fn size(&self) -> u64;
    /// Fill `buf` from `pos`; an error if the source ends first.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A file and the size it had when looked at.
pub struct FileAt<'a> {
    pub file: &'a std::fs::File,
    pub len: u64,
}

impl ReadAt for FileAt<'_> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, pos)
    }
}

/// One index record: where a chunk is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    pub chunk_id: u64,
    pub timestamp: i64,
    pub pos: u64,
    pub num_records: u32,
    pub len: u32,
    pub chunk_type: ChunkType,
    pub bloom_size: u8,
}

impl IndexRecord {
    pub fn of(h: &ChunkHeader, pos: u64) -> IndexRecord {
        IndexRecord {
            chunk_id: h.chunk_id,
            timestamp: h.timestamp,
            pos,
            num_records: h.num_records,
            len: h.total_len() as u32,
            chunk_type: h.chunk_type,
            bloom_size: h.bloom_size,
        }
    }

    pub fn next_offset(&self) -> u64 {
        self.chunk_id.saturating_add(self.num_records as u64)
    }

    pub fn end(&self) -> u64 {
        self.pos + self.len as u64
    }

    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..8].copy_from_slice(&self.chunk_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.pos.to_be_bytes());
        b[24..28].copy_from_slice(&self.num_records.to_be_bytes());
        b[28..32].copy_from_slice(&self.len.to_be_bytes());
        b[32] = self.chunk_type as u8;
        b[33] = self.bloom_size;
        let crc = super::crc::crc32(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// A record whose CRC and fields check out.
    pub fn decode(b: &[u8]) -> Option<IndexRecord> {
        let b: &[u8; RECORD_SIZE] = b.get(..RECORD_SIZE)?.try_into().ok()?;
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if super::crc::crc32(&b[..36]) != u32_at(36) {
            return None;
        }
        let r = IndexRecord {
            chunk_id: u64_at(0),
            timestamp: u64_at(8) as i64,
            pos: u64_at(16),
            num_records: u32_at(24),
            len: u32_at(28),
            chunk_type: ChunkType::from_u8(b[32])?,
            bloom_size: b[33],
        };
        let plausible = r.num_records > 0
            && (r.len as usize) >= HEADER_SIZE
            && r.pos >= FILE_HEADER
            && r.chunk_id.checked_add(r.num_records as u64).is_some()
            && r.pos.checked_add(r.len as u64).is_some();
        plausible.then_some(r)
    }
}

/// The valid prefix of an index file's bytes: records that decode, each following the one
/// before (chunk ids and file positions contiguous), the first at `first_id` (if given) and the
/// start of the segment. Trailing bytes after it are ignored (a torn or stale tail).
pub fn parse_index(bytes: &[u8], first_id: Option<u64>) -> Vec<IndexRecord> {
    let mut out: Vec<IndexRecord> = Vec::new();
    if bytes.len() < FILE_HEADER as usize || &bytes[..8] != INDEX_MAGIC {
        return out;
    }
    for rec in bytes[8..].chunks_exact(RECORD_SIZE) {
        let Some(r) = IndexRecord::decode(rec) else { break };
        let follows = match out.last() {
            Some(p) => r.chunk_id == p.next_offset() && r.pos == p.end(),
            None => r.pos == FILE_HEADER && first_id.is_none_or(|f| f == r.chunk_id),
        };
        if !follows {
            break;
        }
        out.push(r);
    }
    out
}

/// A chunk kept although its data does not check (a bad byte in the middle of a segment):
/// readers get it as it is, and the operator a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub pos: u64,
    pub chunk_id: u64,
    pub error: ChunkError,
}

/// What scanning a segment's chunks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Chunks found, in order.
    pub records: Vec<IndexRecord>,
    /// End of the last chunk kept: where the segment should be cut.
    pub end: u64,
    /// Why scanning stopped before the end of the source (the torn or corrupt tail).
    pub stopped: Option<(u64, ChunkError)>,
    /// Chunks kept with bad data, followed by a good chunk.
    pub damaged: Vec<Damaged>,
}

fn header_at(src: &(impl ReadAt + ?Sized), pos: u64) -> Result<ChunkHeader, ChunkError> {
    if src.size().saturating_sub(pos) < HEADER_SIZE as u64 {
        return Err(ChunkError::Truncated);
    }
    let mut h = [0u8; HEADER_SIZE];
    src.read_at(&mut h, pos).map_err(|_| ChunkError::Truncated)?;
    ChunkHeader::parse(&h)
}

/// Read and check the chunk at `pos` (header, extent, CRC, entries). `buf` is reused for the
/// data section, whose length was first checked against the source's size.
pub fn check_chunk_at(
    src: &(impl ReadAt + ?Sized),
    pos: u64,
    expected_id: Option<u64>,
    buf: &mut Vec<u8>,
) -> Result<(ChunkHeader, Result<(), ChunkError>), ChunkError> {
    let h = header_at(src, pos)?;
    if let Some(e) = expected_id
        && h.chunk_id != e
    {
        return Err(ChunkError::Discontinuous { expected: e, found: h.chunk_id });
    }
    if h.total_len() > u32::MAX as u64 || pos + h.total_len() > src.size() {
        return Err(ChunkError::Truncated);
    }
    buf.clear();
    buf.resize(h.data_len as usize, 0);
    src.read_at(buf, pos + h.data_start()).map_err(|_| ChunkError::Truncated)?;
    Ok((h, chunk::verify_data(&h, buf)))
}

/// Scan chunks from `pos` (a chunk boundary) to the end of `src`, expecting the first to be
/// `expected_id` when given. A chunk with bad data is kept (and reported) only when a chunk
/// with the next id follows it; otherwise scanning stops there, the tail to cut.
pub fn scan(src: &(impl ReadAt + ?Sized), mut pos: u64, mut expected_id: Option<u64>) -> Scan {
    let mut out = Scan { end: pos, ..Scan::default() };
    let mut buf = Vec::new();
    while pos < src.size() {
        let (h, data) = match check_chunk_at(src, pos, expected_id, &mut buf) {
            Ok(x) => x,
            Err(e) => {
                out.stopped = Some((pos, e));
                break;
            }
        };
        if let Err(e) = data {
            let next = pos + h.total_len();
            let followed = next < src.size() && header_at(src, next).is_ok_and(|n| n.chunk_id == h.next_offset());
            if !followed {
                out.stopped = Some((pos, e));
                break;
            }
            out.damaged.push(Damaged { pos, chunk_id: h.chunk_id, error: e });
        }
        out.records.push(IndexRecord::of(&h, pos));
        pos += h.total_len();
        out.end = pos;
        expected_id = Some(h.next_offset());
    }
    out
}

/// Number of records in an index file of `len` bytes (whole records only).
pub fn record_count(len: u64) -> u64 {
    len.saturating_sub(FILE_HEADER) / RECORD_SIZE as u64
}

/// The `i`th record of an index.
pub fn record_at(src: &(impl ReadAt + ?Sized), i: u64) -> Option<IndexRecord> {
    let mut b = [0u8; RECORD_SIZE];
    src.read_at(&mut b, FILE_HEADER + i * RECORD_SIZE as u64).ok()?;
    IndexRecord::decode(&b)
}

/// How many of the first `n` records satisfy `pred`, which must hold for a prefix of them
/// (binary search); `None` when a record does not read.
fn partition(src: &(impl ReadAt + ?Sized), n: u64, pred: impl Fn(&IndexRecord) -> bool) -> Option<u64> {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(&record_at(src, mid)?) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// The last of the first `n` records for which `before` holds (it must hold for a prefix).
pub fn search_last(src: &(impl ReadAt + ?Sized), n: u64, before: impl Fn(&IndexRecord) -> bool) -> Option<IndexRecord> {
    match partition(src, n, before)? {
        0 => None,
        k => record_at(src, k - 1),
    }
}

/// The first of the first `n` records for which `after` holds (it must hold for a suffix).
pub fn search_first(src: &(impl ReadAt + ?Sized), n: u64, after: impl Fn(&IndexRecord) -> bool) -> Option<IndexRecord> {
    let k = partition(src, n, |r| !after(r))?;
    if k < n { record_at(src, k) } else { None }
}
