//! Opening a log after a crash: the last segment's tail, sealed segments' indexes, tracking.
//! The rules are in the module documentation of [`super`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::chunk::{self, ChunkHeader, ChunkType, EntryRef};
use super::index::{self, Damaged, FILE_HEADER, FileAt, INDEX_MAGIC, IndexRecord, RECORD_SIZE, ReadAt, SEGMENT_MAGIC};
use super::tracking::Tracking;
use super::{SegmentInfo, file_len, index_path, invalid, segment_path};

/// Something recovery found and what it did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// A torn or corrupt tail was cut from the last segment (and its index).
    Truncated { segment: PathBuf, at: u64, bytes: u64, reason: String },
    /// An index was missing, short or inconsistent and was rebuilt from its segment.
    IndexRebuilt { index: PathBuf, chunks: u64 },
    /// A chunk in the middle of a segment does not check; it is kept as it is.
    Damaged { segment: PathBuf, damaged: Damaged },
    /// A sealed segment has unreadable bytes from `at`; they are kept, not indexed.
    Unreadable { segment: PathBuf, at: u64, reason: String },
    /// A file that was of no use was removed (an empty last segment, an index without segment).
    Removed { path: PathBuf },
}

/// What [`super::StreamLog::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub events: Vec<RecoveryEvent>,
}

/// Read a whole index file, at most `cap` bytes of it.
fn read_index(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file_len(&f)?.min(cap);
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, 0)?;
    Ok(b)
}

/// Replace an index file with these records (write to a temporary name, rename).
fn write_index(dir: &Path, id: u64, records: &[IndexRecord]) -> io::Result<()> {
    let tmp = dir.join(format!("{id:020}.index.tmp"));
    let mut b = Vec::with_capacity(8 + records.len() * RECORD_SIZE);
    b.extend_from_slice(INDEX_MAGIC);
    for r in records {
        b.extend_from_slice(&r.encode());
    }
    let f = File::create(&tmp)?;
    f.write_all_at(&b, 0)?;
    f.sync_data()?;
    fs::rename(&tmp, index_path(dir, id))
}

/// Largest index a segment of `seg_len` bytes can have.
fn index_cap(seg_len: u64) -> u64 {
    FILE_HEADER + (seg_len / chunk::HEADER_SIZE as u64 + 1) * RECORD_SIZE as u64
}

/// Check the last segment: trust the index's valid prefix down to a chunk that verifies, scan
/// the rest of the segment chunk by chunk, cut a torn or corrupt tail, fix the index.
pub(super) fn recover_last(dir: &Path, id: u64, report: &mut RecoveryReport) -> io::Result<Vec<IndexRecord>> {
    let seg_path = segment_path(dir, id);
    let seg = OpenOptions::new().read(true).write(true).open(&seg_path)?;
    let mut seg_len = file_len(&seg)?;
    let mut head = [0u8; 8];
    if seg_len < FILE_HEADER || {
        seg.read_exact_at(&mut head, 0)?;
        &head != SEGMENT_MAGIC
    } {
        if seg_len >= FILE_HEADER && head.iter().any(|&b| b != 0) {
            return Err(invalid(format!("{}: not a Warren stream segment", seg_path.display())));
        }
        // Created but its header never reached the disk.
        seg.set_len(0)?;
        seg.write_all_at(SEGMENT_MAGIC, 0)?;
        seg.sync_data()?;
        seg_len = FILE_HEADER;
    }
    let idx_bytes = read_index(&index_path(dir, id), index_cap(seg_len))?;
    let on_disk = index::record_count(idx_bytes.len() as u64);
    let mut records = index::parse_index(&idx_bytes, Some(id));
    let src = FileAt { file: &seg, len: seg_len };
    let mut buf = Vec::new();
    while let Some(r) = records.last() {
        let ok = r.end() <= seg_len
            && matches!(index::check_chunk_at(&src, r.pos, Some(r.chunk_id), &mut buf), Ok((h, Ok(()))) if IndexRecord::of(&h, r.pos) == *r);
        if ok {
            break;
        }
        records.pop();
    }
    let from = records.last().map_or(FILE_HEADER, |r| r.end());
    let expected = records.last().map_or(id, |r| r.next_offset());
    let scan = index::scan(&src, from, Some(expected));
    for d in scan.damaged {
        report.events.push(RecoveryEvent::Damaged { segment: seg_path.clone(), damaged: d });
    }
    if let Some((at, e)) = &scan.stopped {
        seg.set_len(scan.end)?;
        seg.sync_data()?;
        report.events.push(RecoveryEvent::Truncated {
            segment: seg_path.clone(),
            at: *at,
            bytes: seg_len - scan.end,
            reason: e.to_string(),
        });
    }
    let kept = records.len() as u64;
    records.extend(scan.records);
    let index_ok = kept == records.len() as u64 && on_disk == kept && idx_bytes.len() as u64 == FILE_HEADER + kept * 40;
    if !index_ok {
        write_index(dir, id, &records)?;
        report.events.push(RecoveryEvent::IndexRebuilt { index: index_path(dir, id), chunks: records.len() as u64 });
    }
    Ok(records)
}

/// A sealed segment's summary from its index when the index is whole and matches the segment;
/// otherwise the index is rebuilt from a scan. Bad bytes are reported and left in place.
pub(super) fn recover_sealed(dir: &Path, id: u64, report: &mut RecoveryReport) -> io::Result<Option<SegmentInfo>> {
    let seg_path = segment_path(dir, id);
    let seg = File::open(&seg_path)?;
    let seg_len = file_len(&seg)?;
    let ipath = index_path(dir, id);
    let summary = (|| -> Option<SegmentInfo> {
        let idx = File::open(&ipath).ok()?;
        let len = file_len(&idx).ok()?;
        let n = index::record_count(len);
        let src = FileAt { file: &idx, len };
        let mut head = [0u8; 8];
        src.read_at(&mut head, 0).ok()?;
        if &head != INDEX_MAGIC || n == 0 || len != FILE_HEADER + n * RECORD_SIZE as u64 {
            return None;
        }
        let (first, last) = (index::record_at(&src, 0)?, index::record_at(&src, n - 1)?);
        (first.chunk_id == id && first.pos == FILE_HEADER && last.end() == seg_len).then_some(SegmentInfo {
            first_id: id,
            next_offset: last.next_offset(),
            bytes: seg_len,
            chunks: n,
            first_timestamp: Some(first.timestamp),
            last_timestamp: Some(last.timestamp),
        })
    })();
    if summary.is_some() {
        return Ok(summary);
    }
    let mut head = [0u8; 8];
    if seg_len < FILE_HEADER || seg.read_exact_at(&mut head, 0).is_err() || &head != SEGMENT_MAGIC {
        report.events.push(RecoveryEvent::Unreadable { segment: seg_path, at: 0, reason: "no segment header".into() });
        return Ok(None);
    }
    let scan = index::scan(&FileAt { file: &seg, len: seg_len }, FILE_HEADER, Some(id));
    for d in scan.damaged {
        report.events.push(RecoveryEvent::Damaged { segment: seg_path.clone(), damaged: d });
    }
    if let Some((at, e)) = scan.stopped {
        report.events.push(RecoveryEvent::Unreadable { segment: seg_path.clone(), at, reason: e.to_string() });
    }
    write_index(dir, id, &scan.records)?;
    report.events.push(RecoveryEvent::IndexRebuilt { index: ipath, chunks: scan.records.len() as u64 });
    let mut info = SegmentInfo::empty(id);
    scan.records.iter().for_each(|r| info.add(r));
    info.bytes = seg_len;
    Ok((info.chunks > 0).then_some(info))
}

/// Tracking state from the active segment: its snapshot chunk, then every delta and trailer.
pub(super) fn recover_tracking(seg: &File, records: &[IndexRecord]) -> io::Result<Tracking> {
    let mut t = Tracking::default();
    let mut buf = Vec::new();
    for r in records {
        let h = {
            let mut b = [0u8; chunk::HEADER_SIZE];
            seg.read_exact_at(&mut b, r.pos)?;
            ChunkHeader::parse(&b).map_err(|e| invalid(e.to_string()))?
        };
        let section = match r.chunk_type {
            ChunkType::User if h.trailer_len > 0 => (h.trailer_start(), h.trailer_len),
            ChunkType::User => continue,
            _ => (h.data_start(), h.data_len),
        };
        buf.clear();
        buf.resize(section.1 as usize, 0);
        seg.read_exact_at(&mut buf, r.pos + section.0)?;
        let result = if r.chunk_type == ChunkType::User {
            t.apply(&buf)
        } else {
            if r.chunk_type == ChunkType::TrackingSnapshot {
                t = Tracking::default();
            }
            chunk::entries(&buf).try_for_each(|e| match e {
                Ok(EntryRef::Simple(body)) => t.apply(body),
                _ => Ok(()),
            })
        };
        if let Err(e) = result {
            tracing::warn!(chunk_id = r.chunk_id, "stream log: unreadable tracking data: {e}");
        }
    }
    Ok(t)
}

/// Read a sealed segment's index backwards for the last record matching `want`.
fn last_record_before(dir: &Path, segments: &[SegmentInfo], want: impl Fn(&IndexRecord) -> bool) -> Option<u64> {
    for s in segments[..segments.len().saturating_sub(1)].iter().rev() {
        let idx = File::open(index_path(dir, s.first_id)).ok()?;
        let src = FileAt { file: &idx, len: file_len(&idx).ok()? };
        for i in (0..index::record_count(src.len)).rev() {
            let r = index::record_at(&src, i)?;
            if want(&r) {
                return Some(r.chunk_id);
            }
        }
    }
    None
}

pub(super) fn last_user_before(dir: &Path, segments: &[SegmentInfo]) -> io::Result<Option<u64>> {
    Ok(last_record_before(dir, segments, |r| r.chunk_type == ChunkType::User))
}

pub(super) fn last_chunk_before(dir: &Path, segments: &[SegmentInfo]) -> Option<u64> {
    last_record_before(dir, segments, |_| true)
}
