//! Segment store: round trips through the files, and recovery from damaged files.

use std::fs;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::protocol::BasicProperties;

use crate::test_dir::TestDir as Dir;

fn msg(body: &str, persistent: bool) -> Arc<Message> {
    let mut props = BasicProperties::default().with_content_type("text/plain".into());
    if persistent {
        props = props.with_delivery_mode(2);
    }
    Arc::new(Message::build("ex".into(), "rk".into(), props, [Bytes::from(body.to_string())].into_iter().collect()))
}

fn bodies(store: &SegmentStore, rec: &[Recovered]) -> Vec<String> {
    rec.iter().map(|r| String::from_utf8(store.read(r.seq).unwrap().body_bytes().to_vec()).unwrap()).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "msgs"))
        .collect();
    v.sort();
    v
}

#[test]
fn persistent_messages_survive_and_transient_ones_do_not() {
    let d = Dir::new("rt");
    {
        let (mut s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        assert!(rec.is_empty());
        s.append(1, &msg("p1", true)).unwrap();
        s.append(2, &msg("t2", false)).unwrap();
        s.append(3, &msg("p3", true)).unwrap();
        assert!(s.flush().unwrap().is_some(), "persistent writes need a sync");
        assert!(s.flush().unwrap().is_none(), "nothing new since");
    }
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(rec.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(bodies(&s, &rec), ["p1", "p3"]);
    let m = s.read(1).unwrap();
    assert_eq!(m.exchange, "ex");
    assert_eq!(m.properties().content_type().as_ref().map(|c| c.as_str()), Some("text/plain"));
    assert!(rec.iter().all(|r| !r.redelivered));
}

#[test]
fn routing_keys_that_are_not_utf8_are_stored_byte_exact() {
    let d = Dir::new("bytes");
    let key = crate::protocol::routing_key::RoutingKey::from_wire(Bytes::from_static(b"k\xff"));
    {
        let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        let props = BasicProperties::default().with_delivery_mode(2);
        let m = Message::build("ex".into(), key.clone(), props, [Bytes::from_static(b"b")].into_iter().collect());
        s.append(1, &Arc::new(m)).unwrap();
        s.flush().unwrap();
    }
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!(s.read(1).unwrap().routing_key.as_wire(), b"k\xff");
}

#[test]
fn settled_messages_stay_gone_and_delivered_ones_come_back_redelivered() {
    let d = Dir::new("ack");
    {
        let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        for i in 1..=4 {
            s.append(i, &msg(&format!("m{i}"), true)).unwrap();
        }
        s.delivered(2);
        s.remove(1);
        s.delivered(3);
        s.remove(3);
        s.flush().unwrap();
    }
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(bodies(&s, &rec), ["m2", "m4"]);
    assert_eq!(rec.iter().map(|r| r.redelivered).collect::<Vec<_>>(), [true, false]);
}

#[test]
fn acks_files_are_synced_with_the_next_confirm_round() {
    let d = Dir::new("acksync");
    let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    s.append(1, &msg("m1", true)).unwrap();
    assert_eq!(s.flush().unwrap().map(|f| f.len()), Some(1), "only the segment: no marks yet");
    s.delivered(1);
    assert!(s.flush().unwrap().is_none(), "a mark alone asks for no sync");
    s.append(2, &msg("m2", true)).unwrap();
    assert_eq!(s.flush().unwrap().map(|f| f.len()), Some(2), "the segment and the acks file with the mark");
    s.append(3, &msg("m3", true)).unwrap();
    assert_eq!(s.flush().unwrap().map(|f| f.len()), Some(1), "the mark was handed out once");
}

#[test]
fn a_torn_acks_entry_does_not_shift_the_marks_after_it() {
    let d = Dir::new("tornacks");
    {
        let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        for i in 1..=4 {
            s.append(i, &msg(&format!("m{i}"), true)).unwrap();
        }
        s.delivered(1);
        s.flush().unwrap();
    }
    // A power cut kept 3 bytes of the next entry.
    let acks = acks_path(&d.0, 1);
    fs::OpenOptions::new().append(true).open(&acks).unwrap().write_all(&[0x02, 0, 0]).unwrap();
    {
        let (mut s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        assert_eq!(rec.iter().map(|r| r.redelivered).collect::<Vec<_>>(), [true, false, false, false]);
        s.delivered(2);
        s.remove(3);
        s.flush().unwrap();
    }
    assert_eq!(fs::metadata(&acks).unwrap().len() % 8, 0, "whole entries only");
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(bodies(&s, &rec), ["m1", "m2", "m4"]);
    assert_eq!(rec.iter().map(|r| r.redelivered).collect::<Vec<_>>(), [true, true, false]);
}

#[test]
fn fully_settled_segments_are_deleted() {
    let d = Dir::new("roll");
    let (mut s, _) = SegmentStore::open(&d.0, 4096).unwrap();
    let big = "x".repeat(3000);
    for i in 1..=6 {
        s.append(i, &msg(&big, true)).unwrap();
        s.flush().unwrap();
    }
    let before = segment_files(&d.0).len();
    assert!(before >= 3, "small segments roll: {before}");
    for i in 1..=5 {
        s.remove(i);
    }
    s.flush().unwrap();
    let after = segment_files(&d.0).len();
    assert!(after <= 2, "settled segments removed: {before} -> {after}");
    drop(s);
    let (s, rec) = SegmentStore::open(&d.0, 4096).unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!(s.read(6).unwrap().body_size, 3000);
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_recovered() {
    let d = Dir::new("torn");
    {
        let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        for i in 1..=3 {
            s.append(i, &msg(&format!("m{i}"), true)).unwrap();
        }
        s.flush().unwrap();
    }
    let seg = segment_files(&d.0).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(bodies(&s, &rec), ["m1", "m2"]);
    assert!(fs::metadata(&seg).unwrap().len() < len - 5, "the partial record was cut off");
}

#[test]
fn a_corrupt_record_is_skipped_and_the_others_recovered() {
    let d = Dir::new("flip");
    {
        let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        for i in 1..=3 {
            s.append(i, &msg(&format!("message-{i}"), true)).unwrap();
        }
        s.flush().unwrap();
    }
    let seg = segment_files(&d.0).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    // Flip a byte inside the second record's body ("message-2").
    let at = data.windows(9).position(|w| w == b"message-2").unwrap();
    data[at + 3] ^= 0xFF;
    fs::write(&seg, &data).unwrap();
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(bodies(&s, &rec), ["message-1", "message-3"]);
}

#[test]
fn a_missing_acks_file_brings_settled_messages_back() {
    let d = Dir::new("noacks");
    {
        let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
        s.append(1, &msg("a", true)).unwrap();
        s.append(2, &msg("b", true)).unwrap();
        s.remove(1);
        s.flush().unwrap();
    }
    for e in fs::read_dir(&d.0).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "acks") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let (s, rec) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    assert_eq!(bodies(&s, &rec), ["a", "b"], "at-least-once: an unrecorded ack means a redelivery");
}

#[test]
fn garbage_files_never_panic() {
    let d = Dir::new("garbage");
    fs::create_dir_all(&d.0).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for id in 1..=20u32 {
        let len = (x % 300) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(msgs_path(&d.0, id), &data).unwrap();
        fs::write(acks_path(&d.0, id), &data[..len / 2]).unwrap();
    }
    let (mut s, _) = SegmentStore::open(&d.0, 1 << 20).unwrap();
    s.append(1_000_000, &msg("after", true)).unwrap();
    s.flush().unwrap();
}

#[test]
fn a_backlog_beyond_the_memory_budget_is_served_from_disk() {
    let d = Dir::new("evict");
    let (mut s, _) = SegmentStore::open(&d.0, 1 << 30).unwrap();
    let body = "y".repeat(64 * 1024);
    let n = (MEMORY_BUDGET / (64 * 1024)) * 2;
    for i in 1..=n {
        s.append(i, &msg(&body, true)).unwrap();
    }
    s.append(n + 1, &msg("transient", false)).unwrap();
    s.flush().unwrap();
    assert!(s.mem_bytes <= MEMORY_BUDGET + 128 * 1024, "{} bytes still in memory", s.mem_bytes);
    assert!(s.slots.iter().any(|x| matches!(x, Slot::Disk(_))), "some bodies live only on disk");
    for i in [1, n / 2, n] {
        assert_eq!(s.read(i).unwrap().body_size, body.len() as u64, "message {i} read back");
    }
    assert_eq!(s.read(n + 1).unwrap().body_bytes(), "transient", "transient messages stay in memory");
    for i in 1..=n + 1 {
        s.remove(i);
    }
    assert!(s.is_empty());
}

#[test]
fn mostly_settled_segments_are_compacted_and_stay_readable() {
    let d = Dir::new("compact");
    let body = "z".repeat(1000);
    let (mut s, _) = SegmentStore::open(&d.0, 16 * 1024).unwrap();
    s.set_compact_interval(std::time::Duration::ZERO);
    for i in 1..=256 {
        s.append(i, &msg(&format!("{i:04}{body}"), true)).unwrap();
        s.flush().unwrap();
    }
    let disk_before: u64 = segment_files(&d.0).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    // Settle all but every 10th message: every closed segment is now mostly dead (the oldest,
    // being drained, and the current one are left alone).
    for i in 1..=256u64 {
        if i % 10 != 0 {
            s.remove(i);
        }
    }
    s.delivered(10);
    s.delivered(130);
    for _ in 0..16 {
        s.flush().unwrap();
    }
    let disk_after: u64 = segment_files(&d.0).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(disk_after * 3 < disk_before, "compaction shrank the files: {disk_before} -> {disk_after}");
    for i in [10u64, 20, 130, 250] {
        assert!(s.read(i).unwrap().body_bytes().starts_with(format!("{i:04}").as_bytes()), "message {i} readable");
    }
    drop(s);
    let (s, rec) = SegmentStore::open(&d.0, 16 * 1024).unwrap();
    assert_eq!(rec.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=25).map(|i| i * 10).collect::<Vec<u64>>());
    assert!(rec[0].redelivered, "delivered mark kept");
    assert!(rec.iter().find(|r| r.seq == 130).unwrap().redelivered, "delivered mark kept across compaction");
    assert!(s.read(130).unwrap().body_bytes().starts_with(b"0130"));
}

#[test]
fn recovered_delivered_marks_survive_a_compaction_in_the_next_run() {
    let d = Dir::new("compact-marks");
    let body = "z".repeat(1000);
    {
        let (mut s, _) = SegmentStore::open(&d.0, 16 * 1024).unwrap();
        for i in 1..=64 {
            s.append(i, &msg(&format!("{i:04}{body}"), true)).unwrap();
        }
        s.delivered(30);
        s.flush().unwrap();
    }
    // Next run: the mark comes back; settling most of the segment compacts it.
    let (mut s, rec) = SegmentStore::open(&d.0, 16 * 1024).unwrap();
    s.set_compact_interval(std::time::Duration::ZERO);
    assert!(rec.iter().find(|r| r.seq == 30).unwrap().redelivered);
    for i in 65..=128 {
        s.append(i, &msg(&format!("{i:04}{body}"), true)).unwrap();
        s.flush().unwrap();
    }
    // Message 1 stays, so the oldest segment (left alone while it drains) is not 30's.
    for i in (2..=64u64).filter(|i| *i != 30) {
        s.remove(i);
    }
    for _ in 0..16 {
        s.flush().unwrap();
    }
    drop(s);
    let (_, rec) = SegmentStore::open(&d.0, 16 * 1024).unwrap();
    assert!(rec.iter().find(|r| r.seq == 30).unwrap().redelivered, "mark kept across the compaction");
}

#[test]
fn transient_messages_are_paged_out_and_never_recovered() {
    let d = Dir::new("paging");
    let body = "t".repeat(64 * 1024);
    let n = (MEMORY_BUDGET / (64 * 1024)) * 2;
    let mut s = SegmentStore::open_transient(&d.0, 1 << 30).unwrap();
    assert!(!s.is_durable());
    assert!(!d.0.join("0000000001.msgs").exists(), "no file until something is written");
    for i in 1..=n {
        s.append(i, &msg(&body, false)).unwrap();
    }
    assert!(s.flush().unwrap().is_none(), "paging never asks for an fsync");
    assert!(s.mem_bytes <= MEMORY_BUDGET + 128 * 1024, "{} bytes still in memory", s.mem_bytes);
    assert_eq!(s.read(n).unwrap().body_size, body.len() as u64, "paged message read back");
    drop(s);
    // Even a durable store opened on these files recovers nothing: paged records are transient.
    let (_, rec) = SegmentStore::open(&d.0, 1 << 30).unwrap();
    assert!(rec.is_empty());
}

#[test]
fn a_slot_is_24_bytes() {
    assert!(std::mem::size_of::<Slot>() <= 24, "{}", std::mem::size_of::<Slot>());
}

#[test]
fn a_transient_store_never_wipes_a_directory_that_holds_something() {
    let d = Dir::new("transient-refuses");
    fs::create_dir_all(&d.0).unwrap();
    fs::write(d.0.join("0000000001.msgs"), b"someone's data").unwrap();
    let e = SegmentStore::open_transient(&d.0, 1 << 20).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    assert_eq!(fs::read(d.0.join("0000000001.msgs")).unwrap(), b"someone's data");
}
