use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::chunk::{self, EntryRef};
use super::reader::MAX_SKIPPED_PER_CALL;
use super::*;

use crate::test_dir::TestDir as TempDir;

/// A clock the test moves.
fn manual_clock(start: i64) -> (Clock, Arc<AtomicI64>) {
    let t = Arc::new(AtomicI64::new(start));
    let c = t.clone();
    (Arc::new(move || c.load(Ordering::SeqCst)), t)
}

fn config(segment_size: u64) -> LogConfig {
    LogConfig { max_segment_size_bytes: segment_size, clock: manual_clock(1_000_000).0, ..LogConfig::default() }
}

fn open(dir: &Path, c: &LogConfig) -> StreamLog {
    StreamLog::open(dir, c.clone()).unwrap().0
}

fn payload(i: u64) -> Vec<u8> {
    format!("message-{i:06}").into_bytes()
}

/// Append `count` records in batches of `per_chunk`, numbering payloads from `from`.
fn append_n(log: &mut StreamLog, from: u64, count: u64, per_chunk: u64) {
    let mut i = from;
    while i < from + count {
        let n = per_chunk.min(from + count - i);
        let bodies: Vec<Vec<u8>> = (i..i + n).map(payload).collect();
        let batch: Vec<Message<'_>> = bodies.iter().map(|b| Message::simple(b)).collect();
        let a = log.append(&batch).unwrap();
        assert_eq!(a.next - a.first, n);
        i += n;
    }
}

/// Every simple record the reader yields, with its offset.
fn drain(r: &mut Reader) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(c) = r.read_chunk().unwrap() {
        chunk::parse_chunk(&c.bytes).expect("a chunk read checks");
        let mut off = c.header.chunk_id;
        for e in chunk::entries(c.data()) {
            match e.unwrap() {
                EntryRef::Simple(b) => {
                    out.push((off, b.to_vec()));
                    off += 1;
                }
                EntryRef::SubBatch { records, .. } => off += records as u64,
            }
        }
    }
    out
}

fn bodies(records: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    records.iter().map(|(_, b)| b.clone()).collect()
}

#[test]
fn append_read_round_trip_dense_offsets_across_segments() {
    let dir = TempDir::new("roundtrip");
    let c = config(2_000);
    let mut log = open(&dir, &c);
    append_n(&mut log, 0, 500, 7);
    let committed = log.flush(true).unwrap();
    assert_eq!(committed.next_offset, 500);
    assert!(log.segments().len() > 5, "small segments roll: {}", log.segments().len());
    let got = drain(&mut log.reader(OffsetSpec::First).unwrap());
    assert_eq!(got.len(), 500);
    for (i, (off, body)) in got.iter().enumerate() {
        assert_eq!((*off, body), (i as u64, &payload(i as u64)), "record {i}");
    }
    // Reopen: the same records, and appending continues densely.
    drop(log);
    let (mut log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
    assert_eq!(report.events, vec![], "a clean log recovers without events");
    assert_eq!(log.next_offset(), 500);
    append_n(&mut log, 500, 10, 3);
    log.flush(false).unwrap();
    let got = drain(&mut log.reader(OffsetSpec::Offset(495)).unwrap());
    assert_eq!(
        got.iter().map(|x| x.0).collect::<Vec<_>>(),
        (490..510).collect::<Vec<_>>(),
        "from the chunk of 495 (490..=496)"
    );
}

#[test]
fn appended_chunks_are_osiris_chunks() {
    let dir = TempDir::new("format");
    let mut log = open(&dir, &config(1 << 20));
    let a = log
        .append(&[
            Message { entry: EntryData::Simple(b"a"), filter: Some(b"eu"), dedup: Some(("w", 1)) },
            Message::simple(b"bb"),
            Message {
                entry: EntryData::SubBatch { compression: 0, records: 3, uncompressed_len: 5, data: b"xyzzy" },
                filter: None,
                dedup: None,
            },
        ])
        .unwrap();
    assert_eq!((a.first, a.next, a.outcomes), (0, 5, vec![Outcome::Stored(0), Outcome::Stored(1), Outcome::Stored(2)]));
    log.flush(false).unwrap();
    let c = log.reader(OffsetSpec::First).unwrap().read_chunk().unwrap().unwrap();
    let v = chunk::parse_chunk(&c.bytes).unwrap();
    assert_eq!(c.bytes[0], 0x50);
    assert_eq!((v.header.num_entries, v.header.num_records, v.header.bloom_size), (3, 5, 16));
    assert_eq!(v.header.timestamp, 1_000_000);
    assert_eq!(v.header.crc, crc::crc32(v.data));
    let mut t = tracking::Tracking::default();
    t.apply(v.trailer).unwrap();
    assert_eq!(t.writers["w"].seq, 1, "the trailer carries the writer's publishing id");
    // The chunk as stored is byte for byte the chunk in the segment file.
    let seg = fs::read(segment_path(&dir, 0)).unwrap();
    assert_eq!(&seg[8..8 + c.bytes.len()], &c.bytes[..]);
    let (header, data) = c.deliver_parts();
    assert_eq!((&header[..], &data[..]), (&c.bytes[..48], v.data));
    let mut r = log.reader(OffsetSpec::First).unwrap();
    let at = r.next_location().unwrap().unwrap();
    assert_eq!((at.pos, at.header), (8, c.header));
    let mut again = vec![0; data.len()];
    std::os::unix::fs::FileExt::read_exact_at(r.current_file().unwrap(), &mut again, at.pos + at.header.data_start())
        .unwrap();
    assert_eq!(again, &data[..]);
}

#[test]
fn committed_visibility() {
    let dir = TempDir::new("commit");
    let mut log = open(&dir, &config(1 << 20));
    let mut r = log.reader(OffsetSpec::First).unwrap();
    append_n(&mut log, 0, 10, 5);
    assert_eq!(log.committed().chunk_id, None);
    assert!(r.read_chunk().unwrap().is_none(), "appended but not flushed: invisible");
    let c = log.flush(false).unwrap();
    assert_eq!((c.chunk_id, c.next_offset, c.last_user_chunk_id), (Some(5), 10, Some(5)));
    assert_eq!(drain(&mut r).len(), 10);
    append_n(&mut log, 10, 1, 1);
    assert!(r.read_chunk().unwrap().is_none());
    assert_eq!(r.committed().chunk_id, Some(5));
    log.flush(true).unwrap();
    assert_eq!(r.committed().chunk_id, Some(10));
    assert_eq!(drain(&mut r), vec![(10, payload(10))]);
}

#[test]
fn group_commit_syncs_off_the_writer() {
    let dir = TempDir::new("group");
    let mut log = open(&dir, &config(700));
    let mut r = log.reader(OffsetSpec::First).unwrap();
    append_n(&mut log, 0, 30, 3);
    let pending = log.prepare_sync().unwrap();
    assert_eq!(pending.state().next_offset, 30);
    // Appends go on while another thread syncs.
    let syncer = std::thread::spawn(move || {
        pending.sync().unwrap();
        pending
    });
    append_n(&mut log, 30, 30, 3);
    let pending = syncer.join().unwrap();
    assert!(r.read_chunk().unwrap().is_none(), "nothing visible before publish");
    assert_eq!(log.publish(&pending).next_offset, 30);
    assert_eq!(drain(&mut r).len(), 30);
    // A later sync publishes the rest; an older one never moves the committed state back.
    let later = log.prepare_sync().unwrap();
    later.sync().unwrap();
    assert_eq!(log.publish(&later).next_offset, 60);
    assert_eq!(log.publish(&pending).next_offset, 60);
    assert_eq!(drain(&mut r).len(), 30);
}

#[tokio::test]
async fn readers_wait_for_committed_data() {
    let dir = TempDir::new("wait");
    let mut log = open(&dir, &config(1 << 20));
    let mut r = log.reader(OffsetSpec::Next).unwrap();
    let waiter = tokio::spawn(async move {
        assert!(r.wait().await);
        drain(&mut r)
    });
    tokio::task::yield_now().await;
    append_n(&mut log, 0, 3, 3);
    log.flush(false).unwrap();
    assert_eq!(waiter.await.unwrap().len(), 3);
}

#[test]
fn offset_specs() {
    let dir = TempDir::new("specs");
    let (clock, now) = manual_clock(10_000);
    let c = LogConfig { clock, max_segment_size_bytes: 1_000, ..LogConfig::default() };
    let mut log = open(&dir, &c);
    // Chunks of 4 records at t = 10000, 10010, ...: chunk k holds offsets 4k..4k+3.
    for k in 0..20 {
        now.store(10_000 + k * 10, Ordering::SeqCst);
        append_n(&mut log, k as u64 * 4, 4, 4);
    }
    log.flush(false).unwrap();
    let first = |log: &StreamLog, spec| drain(&mut log.reader(spec).unwrap()).first().map(|x| x.0);
    assert_eq!(first(&log, OffsetSpec::First), Some(0));
    assert_eq!(first(&log, OffsetSpec::Last), Some(76), "the last chunk, whole");
    assert_eq!(first(&log, OffsetSpec::Next), None);
    assert_eq!(first(&log, OffsetSpec::Offset(0)), Some(0));
    for n in 0..80 {
        let mut r = log.reader(OffsetSpec::Offset(n)).unwrap();
        assert_eq!(r.start_offset(), n);
        assert_eq!(drain(&mut r).first().map(|x| x.0), Some(n / 4 * 4), "offset {n}: from its chunk");
    }
    for k in 0..20i64 {
        assert_eq!(first(&log, OffsetSpec::Timestamp(10_000 + k * 10)), Some(k as u64 * 4));
        assert_eq!(first(&log, OffsetSpec::Timestamp(10_000 + k * 10 - 5)), Some(k as u64 * 4));
    }
    assert_eq!(first(&log, OffsetSpec::Timestamp(0)), Some(0));
    assert_eq!(first(&log, OffsetSpec::Timestamp(99_999)), None, "in the future: like next");
    // Exactly next, and beyond next: wait at the end; start_offset says what to skip.
    let mut at_next = log.reader(OffsetSpec::Offset(80)).unwrap();
    let mut beyond = log.reader(OffsetSpec::Offset(83)).unwrap();
    let mut next = log.reader(OffsetSpec::Next).unwrap();
    let mut tail = log.reader(OffsetSpec::Timestamp(99_999)).unwrap();
    assert_eq!((beyond.next_offset(), beyond.start_offset()), (80, 83));
    append_n(&mut log, 80, 6, 3);
    log.flush(false).unwrap();
    assert_eq!(drain(&mut at_next).first().map(|x| x.0), Some(80));
    assert_eq!(drain(&mut next).len(), 6);
    assert_eq!(drain(&mut tail).len(), 6);
    let got: Vec<u64> = drain(&mut beyond).into_iter().map(|x| x.0).filter(|&o| o >= 83).collect();
    assert_eq!(got, vec![83, 84, 85]);
    // Below the first offset (after retention): clamps to first.
    log.set_retention(Retention { max_bytes: Some(1), max_age: None }).unwrap();
    let first_now = log.first_offset();
    assert!(first_now > 0);
    assert_eq!(first(&log, OffsetSpec::Offset(0)), Some(first_now));
    assert_eq!(first(&log, OffsetSpec::First), Some(first_now));
}

#[test]
fn empty_log_specs() {
    let dir = TempDir::new("empty");
    let mut log = open(&dir, &config(1 << 20));
    for spec in [OffsetSpec::First, OffsetSpec::Last, OffsetSpec::Next, OffsetSpec::Offset(5), OffsetSpec::Timestamp(0)]
    {
        let mut r = log.reader(spec).unwrap();
        assert!(r.read_chunk().unwrap().is_none());
        assert_eq!(r.next_offset(), 0);
    }
    let mut last = log.reader(OffsetSpec::Last).unwrap();
    append_n(&mut log, 0, 2, 1);
    log.flush(false).unwrap();
    assert_eq!(drain(&mut last).len(), 2, "last on an empty stream is next");
}

#[test]
fn tracking_chunks_take_offsets_and_are_skipped() {
    let dir = TempDir::new("trkskip");
    let mut log = open(&dir, &config(1 << 20));
    append_n(&mut log, 0, 2, 2);
    assert_eq!(log.store_offset("consumer", 1).unwrap(), 2);
    append_n(&mut log, 2, 2, 2);
    log.flush(false).unwrap();
    assert_eq!(
        drain(&mut log.reader(OffsetSpec::First).unwrap()).iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![0, 1, 3, 4]
    );
    assert_eq!(log.committed().last_user_chunk_id, Some(3));
    let mut all = log.reader(OffsetSpec::First).unwrap();
    all.set_all_chunk_types(true);
    let mut types = Vec::new();
    while let Some(c) = all.read_chunk().unwrap() {
        types.push(c.header.chunk_type);
    }
    assert_eq!(types, vec![ChunkType::User, ChunkType::TrackingDelta, ChunkType::User]);
    // `last` skips a trailing tracking chunk.
    log.store_offset("consumer", 4).unwrap();
    log.flush(false).unwrap();
    assert_eq!(log.reader(OffsetSpec::Last).unwrap().read_chunk().unwrap().unwrap().header.chunk_id, 3);
}

fn dedup_batch<'a>(w: &'a str, ids: &[u64], bodies: &'a [Vec<u8>]) -> Vec<Message<'a>> {
    ids.iter()
        .zip(bodies)
        .map(|(&id, b)| Message { entry: EntryData::Simple(b), filter: None, dedup: Some((w, id)) })
        .collect()
}

#[test]
fn deduplication_survives_reopen_roll_and_retention() {
    let dir = TempDir::new("dedup");
    let c = config(600);
    let mut log = open(&dir, &c);
    let b: Vec<Vec<u8>> = (0..5).map(payload).collect();
    let a = log.append(&dedup_batch("p1", &[1, 2, 3], &b)).unwrap();
    assert_eq!(a.outcomes, vec![Outcome::Stored(0), Outcome::Stored(1), Outcome::Stored(2)]);
    let a = log.append(&dedup_batch("p1", &[2, 3, 4, 4, 5], &b)).unwrap();
    assert_eq!(
        a.outcomes,
        vec![Outcome::Duplicate, Outcome::Duplicate, Outcome::Stored(3), Outcome::Duplicate, Outcome::Stored(4)]
    );
    let a = log.append(&dedup_batch("p1", &[5], &b)).unwrap();
    assert_eq!((a.chunk_id, a.outcomes), (None, vec![Outcome::Duplicate]), "all duplicates: no chunk");
    assert_eq!(log.last_publishing_id("p1"), Some(5));
    assert_eq!(log.last_publishing_id("other"), None);
    log.flush(true).unwrap();
    drop(log);
    let mut log = open(&dir, &c);
    assert_eq!(log.last_publishing_id("p1"), Some(5), "across reopen");
    assert_eq!(log.append(&dedup_batch("p1", &[5], &b)).unwrap().outcomes, vec![Outcome::Duplicate]);
    // Roll many segments and let retention delete all but the newest.
    log.set_retention(Retention { max_bytes: Some(700), max_age: None }).unwrap();
    append_n(&mut log, 0, 200, 5);
    log.flush(true).unwrap();
    log.evaluate_retention().unwrap();
    assert!(log.first_offset() > 5, "the segments with p1's chunks are gone");
    drop(log);
    let log = open(&dir, &c);
    assert_eq!(log.last_publishing_id("p1"), Some(5), "across retention and reopen");
}

#[test]
fn offset_tracking_survives_reopen_and_retention() {
    let dir = TempDir::new("offsets");
    let c = config(500);
    let mut log = open(&dir, &c);
    assert_eq!(log.query_offset("c1"), None);
    log.store_offset("c1", 42).unwrap();
    log.store_offset("c2", 7).unwrap();
    log.store_offset("c1", 43).unwrap();
    assert_eq!(log.query_offset("c1"), Some(43));
    log.flush(true).unwrap();
    drop(log);
    let mut log = open(&dir, &c);
    assert_eq!((log.query_offset("c1"), log.query_offset("c2")), (Some(43), Some(7)));
    log.set_retention(Retention { max_bytes: Some(1), max_age: None }).unwrap();
    append_n(&mut log, 0, 100, 4);
    log.flush(true).unwrap();
    log.evaluate_retention().unwrap();
    assert_eq!(log.segments().len(), 1);
    assert!(log.first_offset() > 3);
    drop(log);
    let log = open(&dir, &c);
    assert_eq!((log.query_offset("c1"), log.query_offset("c2")), (Some(43), Some(7)));
    // Snapshot chunks were written at the head of the segments.
    let mut r = log.reader(OffsetSpec::First).unwrap();
    r.set_all_chunk_types(true);
    assert_eq!(r.read_chunk().unwrap().unwrap().header.chunk_type, ChunkType::TrackingSnapshot);
}

#[test]
fn retention_by_bytes() {
    let dir = TempDir::new("retbytes");
    let mut log = open(&dir, &config(1_000));
    append_n(&mut log, 0, 300, 5);
    log.flush(false).unwrap();
    let mut old_reader = log.reader(OffsetSpec::First).unwrap();
    old_reader.read_chunk().unwrap().unwrap();
    let total = log.total_bytes();
    let n = log.set_retention(Retention { max_bytes: Some(3_000), max_age: None }).unwrap();
    assert!(n > 0);
    let segs = log.segments();
    assert!(log.total_bytes() <= 3_000 + segs.last().unwrap().bytes && log.total_bytes() < total);
    assert_eq!(log.first_offset(), segs[0].first_id);
    assert_eq!(segment_ids(&dir).unwrap(), segs.iter().map(|s| s.first_id).collect::<Vec<_>>());
    // A reader that was in a deleted segment continues from the new first.
    let got = drain(&mut old_reader);
    assert_eq!((got[0].0, got.last().unwrap().0), (log.first_offset(), 299));
    let mut fresh = log.reader(OffsetSpec::First).unwrap();
    let got = drain(&mut fresh);
    assert_eq!(got[0].0, log.first_offset());
    assert_eq!(got.len() as u64, 300 - log.first_offset());
    let mut lagging = log.reader(OffsetSpec::Offset(0)).unwrap();
    assert_eq!(lagging.next_offset(), log.first_offset());
    assert_eq!(drain(&mut lagging).len() as u64, 300 - log.first_offset());
    // The active segment is never deleted.
    log.set_retention(Retention { max_bytes: Some(0), max_age: None }).unwrap();
    assert_eq!(log.segments().len(), 1);
}

#[test]
fn retention_by_age_with_injected_clock() {
    let dir = TempDir::new("retage");
    let (clock, now) = manual_clock(1_000_000);
    let c = LogConfig {
        clock,
        max_segment_size_bytes: 800,
        retention: Retention { max_bytes: None, max_age: Some(Duration::from_secs(60)) },
        ..LogConfig::default()
    };
    let mut log = open(&dir, &c);
    append_n(&mut log, 0, 100, 5);
    log.flush(false).unwrap();
    let segments = log.segments().len();
    assert!(segments > 3);
    assert_eq!(log.evaluate_retention().unwrap(), 0, "nothing old yet");
    now.store(1_000_000 + 60_001, Ordering::SeqCst);
    assert_eq!(log.evaluate_retention().unwrap(), segments - 1, "all but the active segment");
    assert_eq!(log.first_offset(), log.segments()[0].first_id);
    // At a roll, retention runs by itself.
    append_n(&mut log, 100, 100, 5);
    log.flush(false).unwrap();
    now.store(1_000_000 + 200_000, Ordering::SeqCst);
    append_n(&mut log, 200, 100, 5);
    log.flush(false).unwrap();
    append_n(&mut log, 300, 20, 5);
    assert!(log.segments().iter().all(|s| s.last_timestamp.unwrap() >= 1_200_000 || s.first_id >= 200));
}

#[test]
fn retention_decisions() {
    let seg = |first_id: u64, bytes: u64, ts: i64| SegmentInfo {
        first_id,
        next_offset: first_id + 10,
        bytes,
        chunks: 1,
        first_timestamp: Some(ts),
        last_timestamp: Some(ts),
    };
    let segs = [seg(0, 100, 10), seg(10, 100, 20), seg(20, 100, 30), seg(30, 100, 40)];
    let bytes = |m| segments_to_delete(&segs, &Retention { max_bytes: Some(m), max_age: None }, 0, 40);
    assert_eq!(bytes(1000), 0);
    assert_eq!(bytes(400), 0);
    assert_eq!(bytes(399), 1);
    assert_eq!(bytes(200), 2);
    assert_eq!(bytes(1), 3, "never the active segment");
    let age = |now| {
        segments_to_delete(&segs, &Retention { max_bytes: None, max_age: Some(Duration::from_millis(5)) }, now, 40)
    };
    assert_eq!(age(15), 0);
    assert_eq!(age(26), 2);
    assert_eq!(age(1_000), 3);
    assert_eq!(
        segments_to_delete(&segs, &Retention { max_bytes: Some(1), max_age: None }, 0, 15),
        1,
        "uncommitted kept"
    );
}

#[test]
fn segments_roll_by_size_and_chunk_count() {
    let dir = TempDir::new("roll");
    let c = LogConfig { max_segment_chunks: 10, ..config(1 << 30) };
    let mut log = open(&dir, &c);
    append_n(&mut log, 0, 35, 1);
    assert_eq!(log.segments().iter().map(|s| s.chunks).collect::<Vec<_>>(), vec![10, 10, 10, 5]);
    assert_eq!(log.segments().iter().map(|s| s.first_id).collect::<Vec<_>>(), vec![0, 10, 20, 30]);
    let dir2 = TempDir::new("roll2");
    let mut log = open(&dir2, &config(1_000));
    append_n(&mut log, 0, 200, 4);
    log.flush(false).unwrap();
    for s in &log.segments()[..log.segments().len() - 1] {
        assert!(s.bytes >= 1_000 && s.bytes < 1_000 + 200, "rolled past the size: {}", s.bytes);
    }
    assert_eq!(drain(&mut log.reader(OffsetSpec::First).unwrap()).len(), 200);
}

#[test]
fn timestamps_never_go_back() {
    let dir = TempDir::new("clock");
    let (clock, now) = manual_clock(5_000);
    let mut log = open(&dir, &LogConfig { clock, ..LogConfig::default() });
    append_n(&mut log, 0, 1, 1);
    now.store(1_000, Ordering::SeqCst);
    append_n(&mut log, 1, 1, 1);
    log.flush(false).unwrap();
    let mut r = log.reader(OffsetSpec::First).unwrap();
    let ts: Vec<i64> = std::iter::from_fn(|| r.read_chunk().unwrap()).map(|c| c.header.timestamp).collect();
    assert_eq!(ts, vec![5_000, 5_000]);
}

#[test]
fn chunk_filters() {
    let dir = TempDir::new("filter");
    let mut log = open(&dir, &config(1 << 20));
    let m =
        |b: &'static [u8], f: Option<&'static [u8]>| Message { entry: EntryData::Simple(b), filter: f, dedup: None };
    log.append(&[m(b"1", Some(b"eu")), m(b"2", Some(b"eu"))]).unwrap();
    log.append(&[m(b"3", Some(b"us"))]).unwrap();
    log.append(&[m(b"4", None)]).unwrap();
    log.append(&[m(b"5", Some(b"eu")), m(b"6", None)]).unwrap();
    log.flush(false).unwrap();
    let read = |values: &[&[u8]], match_unfiltered| {
        let mut r = log.reader(OffsetSpec::First).unwrap();
        r.set_filter(Some(ChunkFilter { values: values.iter().map(|v| v.to_vec()).collect(), match_unfiltered }));
        bodies(&drain(&mut r))
    };
    let b = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    // Bloom filters may match more (false positives), never less.
    let eu = read(&[b"eu"], false);
    assert!(eu.starts_with(&b(&[b"1", b"2"])) && eu.ends_with(&b(&[b"5", b"6"])));
    assert!(!eu.contains(&b"4".to_vec()), "an unfiltered-only chunk is skipped");
    assert_eq!(read(&[b"eu"], true).len(), 6 - usize::from(!read(&[b"eu"], true).contains(&b"3".to_vec())));
    assert!(read(&[b"us"], false).contains(&b"3".to_vec()));
    assert_eq!(read(&[], true), b(&[b"4", b"5", b"6"]), "unfiltered only");
}

/// A filter that matches nothing in a long log does not hold its reader for the whole scan:
/// it hands back after a bounded number of chunks, and the next calls go on from there.
#[test]
fn a_long_filtered_scan_hands_back_in_steps() {
    let dir = TempDir::new("filter-scan");
    let mut log = open(&dir, &config(1 << 30));
    let m = |b: &'static [u8], f: &'static [u8]| Message { entry: EntryData::Simple(b), filter: Some(f), dedup: None };
    for _ in 0..(MAX_SKIPPED_PER_CALL + 10) {
        log.append(&[m(b"x", b"eu")]).unwrap();
    }
    log.append(&[m(b"wanted", b"us")]).unwrap();
    log.flush(false).unwrap();
    let mut r = log.reader(OffsetSpec::First).unwrap();
    r.set_filter(Some(ChunkFilter { values: vec![b"us".to_vec()], match_unfiltered: false }));
    assert!(r.read_chunk().unwrap().is_none(), "handed back after the skip budget");
    assert_eq!(r.next_offset(), MAX_SKIPPED_PER_CALL as u64);
    let c = r.read_chunk().unwrap().expect("the wanted chunk, on the next call");
    assert_eq!(c.header.chunk_id, MAX_SKIPPED_PER_CALL as u64 + 10);
    assert!(r.read_chunk().unwrap().is_none());
}

/// The segment files of a log holding `n` single-record chunks with trailers and tracking.
fn small_log(dir: &Path, c: &LogConfig, n: u64) -> StreamLog {
    let mut log = open(dir, c);
    let bodies: Vec<Vec<u8>> = (0..n).map(payload).collect();
    for (i, b) in bodies.iter().enumerate() {
        log.append(&[Message { entry: EntryData::Simple(b), filter: None, dedup: Some(("w", i as u64 + 1)) }]).unwrap();
    }
    log.flush(true).unwrap();
    log
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_path(dir, *segment_ids(dir).unwrap().last().unwrap())
}

#[test]
fn recovery_cuts_a_torn_tail_at_every_byte() {
    let dir = TempDir::new("torn");
    let c = config(1 << 20);
    let log = small_log(&dir, &c, 5);
    let last = *log.segments().last().unwrap();
    drop(log);
    let seg = last_segment(&dir);
    let full = fs::read(&seg).unwrap();
    let index = fs::read(index_path(&dir, 0)).unwrap();
    let last_start = full.len() - (full.len() - 8) / 5; // 5 equal chunks
    for cut in last_start..full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        fs::write(index_path(&dir, 0), &index).unwrap();
        let (mut log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
        if cut > last_start {
            assert!(
                report
                    .events
                    .iter()
                    .any(|e| matches!(e, RecoveryEvent::Truncated { at, .. } if *at == last_start as u64)),
                "cut {cut}: {report:?}"
            );
        }
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_start as u64);
        assert_eq!(log.next_offset(), 4, "cut {cut}");
        assert_eq!(log.last_publishing_id("w"), Some(4), "the torn chunk's writer id is gone with it");
        assert_eq!(drain(&mut log.reader(OffsetSpec::First).unwrap()).len(), 4);
        // Appending continues at the torn chunk's offset, and the index matches.
        log.append(&[Message::simple(b"again")]).unwrap();
        log.flush(true).unwrap();
        drop(log);
        let (log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
        assert_eq!(report.events, vec![], "cut {cut}: clean after recovery");
        assert_eq!(drain(&mut log.reader(OffsetSpec::Offset(4)).unwrap()), vec![(4, b"again".to_vec())]);
        assert_eq!(last.next_offset, 5);
    }
    let _ = last;
}

#[test]
fn recovery_cuts_a_corrupt_last_chunk() {
    let dir = TempDir::new("flip");
    let c = config(1 << 20);
    drop(small_log(&dir, &c, 3));
    let seg = last_segment(&dir);
    let full = fs::read(&seg).unwrap();
    let index = fs::read(index_path(&dir, 0)).unwrap();
    let chunk_len = (full.len() - 8) / 3;
    let last_start = full.len() - chunk_len;
    let header = chunk::ChunkHeader::parse(&full[last_start..]).unwrap();
    let data = last_start + header.data_start() as usize..last_start + header.trailer_start() as usize;
    // Every data byte, and the checked header bytes.
    let positions = data.clone().chain([last_start, last_start + 2, last_start + 5, last_start + 33, last_start + 38]);
    for p in positions {
        let mut bad = full.clone();
        bad[p] ^= 0x10;
        fs::write(&seg, &bad).unwrap();
        fs::write(index_path(&dir, 0), &index).unwrap();
        let (log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
        assert!(report.events.iter().any(|e| matches!(e, RecoveryEvent::Truncated { .. })), "flip at {p}");
        assert_eq!(log.next_offset(), 2, "flip at {p}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_start as u64);
    }
}

#[test]
fn recovery_keeps_and_reports_a_bad_chunk_in_the_middle() {
    let dir = TempDir::new("middle");
    let c = config(1 << 20);
    drop(small_log(&dir, &c, 5));
    let seg = last_segment(&dir);
    let mut bytes = fs::read(&seg).unwrap();
    let chunk_len = (bytes.len() - 8) / 5;
    bytes[8 + chunk_len + 50] ^= 0xff; // data of chunk 1
    fs::write(&seg, &bytes).unwrap();
    fs::remove_file(index_path(&dir, 0)).unwrap(); // force a scan of the whole segment
    let (log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
    assert!(report.events.iter().any(|e| matches!(e, RecoveryEvent::Damaged { damaged, .. } if damaged.chunk_id == 1)));
    assert!(!report.events.iter().any(|e| matches!(e, RecoveryEvent::Truncated { .. })));
    assert_eq!(log.next_offset(), 5, "nothing deleted");
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn missing_and_short_indexes_are_rebuilt() {
    let dir = TempDir::new("noindex");
    let (clock, now) = manual_clock(1_000);
    let c = LogConfig { clock, max_segment_size_bytes: 600, ..LogConfig::default() };
    let mut log = open(&dir, &c);
    for k in 0..40 {
        now.store(1_000 + k * 100, Ordering::SeqCst);
        append_n(&mut log, k as u64 * 2, 2, 2);
    }
    log.flush(true).unwrap();
    let ids = segment_ids(&dir).unwrap();
    assert!(ids.len() >= 3);
    drop(log);
    let before: Vec<Vec<u8>> = ids.iter().map(|&i| fs::read(index_path(&dir, i)).unwrap()).collect();
    fs::remove_file(index_path(&dir, ids[0])).unwrap();
    fs::remove_file(index_path(&dir, *ids.last().unwrap())).unwrap();
    let f = fs::OpenOptions::new().write(true).open(index_path(&dir, ids[1])).unwrap();
    f.set_len(before[1].len() as u64 - 45).unwrap();
    let (log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
    let rebuilt = report.events.iter().filter(|e| matches!(e, RecoveryEvent::IndexRebuilt { .. })).count();
    assert_eq!(rebuilt, 3, "{report:?}");
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(fs::read(index_path(&dir, id)).unwrap(), before[i], "index {id} rebuilt identical");
    }
    assert_eq!(drain(&mut log.reader(OffsetSpec::First).unwrap()).len(), 80);
    assert_eq!(drain(&mut log.reader(OffsetSpec::Timestamp(1_000 + 25 * 100)).unwrap())[0].0, 50);
    // An index whose records are garbage is rebuilt too.
    drop(log);
    let mut garbage = before[1].clone();
    garbage[20] ^= 1;
    fs::write(index_path(&dir, ids[1]), &garbage).unwrap();
    let (_, report) = StreamLog::open(&*dir, c).unwrap();
    assert!(report.events.iter().any(|e| matches!(e, RecoveryEvent::IndexRebuilt { .. })));
    assert_eq!(fs::read(index_path(&dir, ids[1])).unwrap(), before[1]);
}

#[test]
fn an_empty_torn_last_segment_is_dropped() {
    let dir = TempDir::new("emptylast");
    let c = config(300);
    let mut log = small_log(&dir, &c, 6);
    log.store_offset("c", 3).unwrap();
    log.flush(true).unwrap();
    drop(log);
    let ids = segment_ids(&dir).unwrap();
    assert!(ids.len() >= 2);
    // A roll whose new segment never got its first chunk to disk.
    let next = open(&dir, &c).next_offset();
    fs::write(segment_path(&dir, next), b"WSEG").unwrap();
    fs::write(index_path(&dir, next), b"").unwrap();
    let (log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
    assert!(report.events.iter().any(|e| matches!(e, RecoveryEvent::Removed { .. })), "{report:?}");
    assert_eq!(log.next_offset(), next);
    assert_eq!(log.query_offset("c"), Some(3));
    assert_eq!(log.last_publishing_id("w"), Some(6));
}

#[test]
fn garbage_files_never_panic() {
    let dir = TempDir::new("garbage");
    let c = config(1 << 20);
    drop(small_log(&dir, &c, 3));
    let full = fs::read(segment_path(&dir, 0)).unwrap();
    let mut seed = 0x1234_5678_u64;
    for round in 0..200 {
        let mut b = full.clone();
        for _ in 0..(round % 7 + 1) {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (seed >> 33) as usize % b.len();
            b[at] = (seed >> 13) as u8;
        }
        b.truncate(8 + (seed >> 40) as usize % (b.len() - 7));
        let d = TempDir::new("garbage-round");
        fs::create_dir_all(&*d).unwrap();
        fs::write(segment_path(&d, 0), &b).unwrap();
        if let Ok((log, _)) = StreamLog::open(&*d, c.clone()) {
            let mut r = log.reader(OffsetSpec::First).unwrap();
            while let Ok(Some(_)) = r.read_chunk() {}
        }
    }
}

/// Every saved input of the `stream_log` fuzz target replays through its check.
#[test]
fn stream_log_fuzz_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for kind in ["regressions", "seeds"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("stream_log")) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| crate::fuzzing::stream_log(&data));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved stream_log fuzz inputs");
    // Mutations of the seed, deterministic: flipped, overwritten, cut and repeated bytes.
    let seed = fs::read(root.join("seeds/stream_log/segment")).unwrap();
    let mut x = 0x9e37_79b9_u64;
    let mut rnd = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    for round in 0..3000 {
        let mut b = seed.clone();
        for _ in 0..round % 5 + 1 {
            let at = rnd() % b.len();
            match rnd() % 4 {
                0 => b[at] ^= 1 << (rnd() % 8),
                1 => b[at] = rnd() as u8,
                2 => b.truncate(at.max(1)),
                _ => b.extend_from_within(at..),
            }
        }
        crate::fuzzing::stream_log(&b);
    }
    // And the seed itself, made fresh: a real segment.
    let dir = TempDir::new("fuzzseed");
    drop(small_log(&dir, &config(1 << 20), 4));
    crate::fuzzing::stream_log(&fs::read(segment_path(&dir, 0)).unwrap());
}

/// Writes the fuzz seed (`cargo test --lib write_stream_log_fuzz_seed -- --ignored`).
#[test]
#[ignore]
fn write_stream_log_fuzz_seed() {
    let dir = TempDir::new("seed");
    let mut log = open(&dir, &config(1 << 20));
    log.append(&[
        Message { entry: EntryData::Simple(b"one"), filter: Some(b"eu"), dedup: Some(("w", 1)) },
        Message {
            entry: EntryData::SubBatch { compression: 0, records: 2, uncompressed_len: 4, data: b"abcd" },
            filter: None,
            dedup: None,
        },
    ])
    .unwrap();
    log.store_offset("c", 1).unwrap();
    log.append(&[Message::simple(b"two")]).unwrap();
    log.flush(true).unwrap();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/stream_log");
    fs::create_dir_all(&out).unwrap();
    fs::copy(segment_path(&dir, 0), out.join("segment")).unwrap();
}

/// Throughput in release mode: `cargo test --release --lib stream_log_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn stream_log_throughput() {
    for sync in [false, true] {
        let dir = TempDir::new("throughput");
        let mut log = open(&dir, &LogConfig::default());
        let body = [7u8; 100];
        let batch: Vec<Message<'_>> = (0..1000).map(|_| Message::simple(&body)).collect();
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            log.append(&batch).unwrap();
            log.flush(sync).unwrap();
        }
        let t = start.elapsed();
        let mut r = log.reader(OffsetSpec::First).unwrap();
        let rstart = std::time::Instant::now();
        let mut n = 0u64;
        while let Some(c) = r.read_chunk().unwrap() {
            n += c.header.num_records as u64;
        }
        let rt = rstart.elapsed();
        println!(
            "fsync per chunk {sync}: append 1M x 100 B in {t:?} = {:.0} msg/s, {:.0} MB/s; read {n} in {rt:?} = {:.0} msg/s",
            1e6 / t.as_secs_f64(),
            1e6 * 104.0 / t.as_secs_f64() / 1e6,
            n as f64 / rt.as_secs_f64()
        );
    }
}

#[test]
fn sealed_segments_are_reported_never_cut() {
    let dir = TempDir::new("sealed");
    let c = config(400);
    drop(small_log(&dir, &c, 20));
    let ids = segment_ids(&dir).unwrap();
    assert!(ids.len() >= 3);
    let seg = segment_path(&dir, ids[0]);
    let mut bytes = fs::read(&seg).unwrap();
    let chunk_len = chunk::ChunkHeader::parse(&bytes[8..]).unwrap().total_len() as usize;
    assert!(bytes.len() >= 8 + 4 * chunk_len);
    bytes[8 + chunk_len + 60] ^= 0x40; // data of the second chunk: damaged, kept
    let garbage_at = 8 + 3 * chunk_len;
    bytes[garbage_at] = 0; // the fourth chunk's magic: the rest does not scan
    fs::write(&seg, &bytes).unwrap();
    fs::remove_file(index_path(&dir, ids[0])).unwrap();
    let (log, report) = StreamLog::open(&*dir, c.clone()).unwrap();
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::Damaged { damaged, .. } if damaged.chunk_id == ids[0] + 1))
    );
    assert!(
        report.events.iter().any(|e| matches!(e, RecoveryEvent::Unreadable { at, .. } if *at == garbage_at as u64)),
        "{report:?}"
    );
    assert!(!report.events.iter().any(|e| matches!(e, RecoveryEvent::Truncated { .. })));
    assert_eq!(fs::read(&seg).unwrap(), bytes, "a sealed segment is left as it is");
    // Readers get the chunks that scan (the damaged one as it is: its CRC fails at the
    // consumer), then go on with the next segment.
    let mut r = log.reader(OffsetSpec::First).unwrap();
    let got: Vec<(u64, bool)> = std::iter::from_fn(|| r.read_chunk().unwrap())
        .map(|c| (c.header.chunk_id, chunk::parse_chunk(&c.bytes).is_ok()))
        .collect();
    // (The next segment starts with its tracking snapshot, which readers skip.)
    assert_eq!(&got[..4], &[(0, true), (1, false), (2, true), (ids[1] + 1, true)]);
    assert_eq!(got.last().unwrap().0, log.next_offset() - 1);
}
