//! Readers: cursors over a log's committed chunks. A reader holds an open segment file, a
//! position in it and the id of the chunk it expects there; it finds chunks through the index
//! files (binary search by chunk id or timestamp) and otherwise reads headers in sequence. It
//! shares nothing with the writer but the files and the `watch` of [`Committed`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::watch;

use super::bloom::ChunkFilter;
use super::chunk::{ChunkHeader, ChunkType, HEADER_SIZE};
use super::index::{self, FILE_HEADER, FileAt, IndexRecord};
use super::{Committed, index_path, segment_ids, segment_path};

/// Where a reader starts (the stream protocol's offset specifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log.
    First,
    /// The start of the last user chunk (like `Next` for an empty stream).
    Last,
    /// Only what is committed after the reader opens.
    Next,
    /// From the chunk holding this offset; below the first: the first; beyond the end: waits
    /// at the end, and records below the offset are to be skipped ([`Reader::start_offset`]).
    Offset(u64),
    /// From the first chunk whose timestamp (ms) is at or after this instant.
    Timestamp(i64),
}

/// Chunks a read passes over (tracking chunks, chunks a filter rules out) before it returns
/// `None` for the caller to come back (its `wait` then returns at once).
pub(super) const MAX_SKIPPED_PER_CALL: usize = 4096;

/// One whole chunk as it is on disk (header, bloom filter, data, trailer).
///
/// A stream-protocol Deliver to a consumer carries, as osiris sends it, the 48 header bytes
/// unchanged followed by the data section only (bloom filter and trailer stay on disk; clients
/// read `dataLength` bytes of entries and check the CRC over them): [`Chunk::deliver_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub header: ChunkHeader,
    pub bytes: Bytes,
}

/// Where the chunk a reader just passed is, for `sendfile` from [`Reader::current_file`]:
/// the header at `pos`, the data section at `pos + header.data_start()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub header: ChunkHeader,
    pub pos: u64,
}

impl Chunk {
    /// The header bytes and the data section, as a Deliver frame sends them (no copy).
    pub fn deliver_parts(&self) -> (Bytes, Bytes) {
        let h = &self.header;
        (self.bytes.slice(..HEADER_SIZE), self.bytes.slice(h.data_start() as usize..h.trailer_start() as usize))
    }

    pub fn bloom(&self) -> &[u8] {
        &self.bytes[HEADER_SIZE..self.header.data_start() as usize]
    }

    pub fn data(&self) -> &[u8] {
        &self.bytes[self.header.data_start() as usize..self.header.trailer_start() as usize]
    }
}

struct Location {
    file: File,
    pos: u64,
}

/// A cursor over a log's committed chunks.
pub struct Reader {
    dir: PathBuf,
    committed: watch::Receiver<Committed>,
    next_id: u64,
    start_offset: u64,
    loc: Option<Location>,
    filter: Option<ChunkFilter>,
    all_types: bool,
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// The chunk holding (or the last before) `offset`, with its segment file, or `None` when no
/// segment starts at or before it.
fn locate(dir: &Path, offset: u64) -> io::Result<Option<(File, IndexRecord)>> {
    let ids = segment_ids(dir)?;
    let Some(&seg) = ids.iter().rev().find(|&&s| s <= offset) else { return Ok(None) };
    let idx = match File::open(index_path(dir, seg)) {
        Ok(f) => f,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let src = FileAt { file: &idx, len: idx.metadata()?.len() };
    let Some(r) = index::search_last(&src, index::record_count(src.len), |r| r.chunk_id <= offset) else {
        return Ok(None);
    };
    match File::open(segment_path(dir, seg)) {
        Ok(f) => Ok(Some((f, r))),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first chunk whose timestamp is at or after `ts`.
fn locate_timestamp(dir: &Path, ts: i64) -> io::Result<Option<(File, IndexRecord)>> {
    for seg in segment_ids(dir)? {
        let Ok(idx) = File::open(index_path(dir, seg)) else { continue };
        let src = FileAt { file: &idx, len: idx.metadata()?.len() };
        let n = index::record_count(src.len);
        if let Some(r) = index::search_first(&src, n, |r| r.timestamp >= ts) {
            match File::open(segment_path(dir, seg)) {
                Ok(f) => return Ok(Some((f, r))),
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

impl Reader {
    pub(super) fn open(dir: &Path, committed: watch::Receiver<Committed>, spec: OffsetSpec) -> io::Result<Reader> {
        let c = *committed.borrow();
        let mut r = Reader {
            dir: dir.to_path_buf(),
            committed,
            next_id: c.next_offset,
            start_offset: c.next_offset,
            loc: None,
            filter: None,
            all_types: false,
        };
        let visible = |rec: &IndexRecord| c.chunk_id.is_some_and(|id| rec.chunk_id <= id);
        match spec {
            OffsetSpec::First => r.next_id = c.first_offset,
            OffsetSpec::Next => {}
            OffsetSpec::Last => r.next_id = c.last_user_chunk_id.unwrap_or(c.next_offset),
            OffsetSpec::Offset(n) if n < c.first_offset => r.next_id = c.first_offset,
            OffsetSpec::Offset(n) if n >= c.next_offset => r.start_offset = n,
            OffsetSpec::Offset(n) => {
                r.start_offset = n;
                match locate(dir, n)? {
                    Some((file, rec)) if visible(&rec) => {
                        r.next_id = rec.chunk_id;
                        r.loc = Some(Location { file, pos: rec.pos });
                    }
                    _ => r.next_id = c.first_offset,
                }
            }
            OffsetSpec::Timestamp(ts) => {
                if let Some((file, rec)) = locate_timestamp(dir, ts)?
                    && visible(&rec)
                {
                    r.next_id = rec.chunk_id;
                    r.loc = Some(Location { file, pos: rec.pos });
                }
            }
        }
        if !matches!(spec, OffsetSpec::Offset(_)) {
            r.start_offset = r.next_id;
        }
        Ok(r)
    }

    /// The id of the next chunk this reader reads.
    pub fn next_offset(&self) -> u64 {
        self.next_id
    }

    /// Records below this offset were not asked for (an `Offset` spec inside or beyond a
    /// chunk): the consumer skips them.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// Only chunks that may hold a wanted filter value (None: all).
    pub fn set_filter(&mut self, filter: Option<ChunkFilter>) {
        self.filter = filter;
    }

    /// Also yield tracking chunks (default: user chunks only).
    pub fn set_all_chunk_types(&mut self, all: bool) {
        self.all_types = all;
    }

    /// Wait until a chunk at or after the reader's position is committed. False when the log
    /// was closed.
    pub async fn wait(&mut self) -> bool {
        let next = self.next_id;
        self.committed.wait_for(|c| c.chunk_id.is_some_and(|id| id >= next)).await.is_ok()
    }

    fn relocate(&mut self, first: u64) -> io::Result<()> {
        match locate(&self.dir, self.next_id)? {
            Some((file, rec)) if rec.chunk_id == self.next_id => {
                self.loc = Some(Location { file, pos: rec.pos });
            }
            Some((file, rec)) if rec.next_offset() > self.next_id => {
                // Inside a chunk (a skipped-to offset): start at the chunk.
                self.next_id = rec.chunk_id;
                self.loc = Some(Location { file, pos: rec.pos });
            }
            _ if self.next_id < first => self.next_id = first,
            _ => {
                // Not in any index: the next segment, if one starts later.
                let ids = segment_ids(&self.dir)?;
                match ids.into_iter().find(|&s| s > self.next_id) {
                    Some(s) => self.next_id = s,
                    None => return Err(super::invalid(format!("chunk {} not found in the log", self.next_id))),
                }
            }
        }
        Ok(())
    }

    /// The next committed chunk (user chunks only unless asked; skipping chunks the filter
    /// rules out), read whole into memory, or `None` when the reader has caught up or has passed
    /// over many chunks (then [`Reader::wait`] returns at once and the caller reads again).
    pub fn read_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let Some(at) = self.next_location()? else { return Ok(None) };
        let file = &self.loc.as_ref().expect("next_location leaves the reader in the chunk's file").file;
        // The header was checked, but not against the file: never allocate past its end.
        if at.pos + at.header.total_len() > file.metadata()?.len() {
            return Err(super::invalid(format!("chunk {} extends past its segment file", at.header.chunk_id)));
        }
        let mut buf = vec![0u8; at.header.total_len() as usize];
        file.read_exact_at(&mut buf, at.pos)?;
        Ok(Some(Chunk { header: at.header, bytes: Bytes::from(buf) }))
    }

    /// The segment file of the chunk [`Reader::next_location`] returned last (until the next
    /// call).
    pub fn current_file(&self) -> Option<&File> {
        self.loc.as_ref().map(|l| &l.file)
    }

    /// Like [`Reader::read_chunk`] without reading the chunk: its header and position in
    /// [`Reader::current_file`] (for `sendfile`).
    pub fn next_location(&mut self) -> io::Result<Option<ChunkLocation>> {
        let mut attempts = 0;
        let mut skipped = 0usize;
        loop {
            let c = *self.committed.borrow();
            if self.next_id < c.first_offset {
                self.next_id = c.first_offset;
                self.loc = None;
            }
            if c.chunk_id.is_none_or(|id| self.next_id > id) {
                return Ok(None);
            }
            let Some(loc) = &mut self.loc else {
                attempts += 1;
                if attempts > 8 {
                    return Err(super::invalid(format!("cannot find chunk {}", self.next_id)));
                }
                self.relocate(c.first_offset)?;
                continue;
            };
            let mut hb = [0u8; HEADER_SIZE];
            match loc.file.read_exact_at(&mut hb, loc.pos) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // End of this segment: the next one starts at the expected chunk id.
                    attempts += 1;
                    if attempts > 8 {
                        return Err(super::invalid(format!("chunk {} not where the log says", self.next_id)));
                    }
                    match File::open(segment_path(&self.dir, self.next_id)) {
                        Ok(file) => *loc = Location { file, pos: FILE_HEADER },
                        Err(e) if not_found(&e) => self.loc = None,
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            let h = match ChunkHeader::parse(&hb) {
                Ok(h) if h.chunk_id == self.next_id => h,
                _ => {
                    self.loc = None;
                    attempts += 1;
                    if attempts > 8 {
                        return Err(super::invalid(format!("no valid chunk {} in the log", self.next_id)));
                    }
                    continue;
                }
            };
            let pos = loc.pos;
            loc.pos += h.total_len();
            self.next_id = h.next_offset();
            let skip = h.chunk_type != ChunkType::User && !self.all_types;
            let skip = skip
                || match &self.filter {
                    Some(f) => {
                        let mut bloom = vec![0u8; h.bloom_size as usize];
                        loc.file.read_exact_at(&mut bloom, pos + HEADER_SIZE as u64)?;
                        !f.may_match(&bloom)
                    }
                    None => false,
                };
            if skip {
                // A filter that matches nothing in a long log would otherwise hold the
                // caller (a task on the runtime) for the whole scan: hand back after a while.
                skipped += 1;
                if skipped >= MAX_SKIPPED_PER_CALL {
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some(ChunkLocation { header: h, pos }));
        }
    }
}
