use std::fs;

use super::queue_dirs::{self, Probe};
use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("warren-qdirs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn settings(&self) -> StorageSettings {
        StorageSettings {
            dir: self.0.clone(),
            fsync: true,
            segment_size: 1 << 20,
            persister: persister::Persister::start(),
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn name_in(dir: &std::path::Path) -> String {
    queue_dirs::read_name(dir).unwrap().unwrap()
}

#[test]
fn colliding_names_get_distinct_directories_that_stay_found() {
    let d = Dir::new("collide");
    let s = d.settings();
    const H: u64 = 0x0123_4567_89ab_cdef;
    let a = s.durable_queue_dir_hashed("a", H, true).unwrap();
    let b = s.durable_queue_dir_hashed("b", H, true).unwrap();
    let c = s.durable_queue_dir_hashed("c", H, true).unwrap();
    assert_ne!(a, b);
    assert_ne!(b, c);
    assert_eq!(a.file_name().unwrap(), "0123456789abcdef");
    assert_eq!(b.file_name().unwrap(), "0123456789abcdef-1");
    assert_eq!(c.file_name().unwrap(), "0123456789abcdef-2");
    assert_eq!((name_in(&a), name_in(&b), name_in(&c)), ("a".into(), "b".into(), "c".into()));
    fs::write(b.join("0000000001.msgs"), b"b's data").unwrap();

    // Restarting finds each name's own directory.
    assert_eq!(s.durable_queue_dir_hashed("b", H, false).unwrap(), b);
    assert_eq!(s.durable_queue_dir_hashed("c", H, false).unwrap(), c);

    // The first one is deleted: the others are still found past the hole.
    fs::remove_dir_all(&a).unwrap();
    assert_eq!(s.durable_queue_dir_hashed("c", H, false).unwrap(), c);
    assert_eq!(s.durable_queue_dir_hashed("b", H, false).unwrap(), b);
    assert_eq!(fs::read(b.join("0000000001.msgs")).unwrap(), b"b's data");
    // A fourth name takes the hole.
    assert_eq!(s.durable_queue_dir_hashed("d", H, true).unwrap(), a);
    assert_eq!(name_in(&a), "d");
}

#[test]
fn a_fresh_declare_moves_a_leftover_directory_aside_instead_of_deleting_it() {
    let d = Dir::new("leftover");
    let s = d.settings();
    let q = s.durable_queue_dir("q", true).unwrap();
    fs::write(q.join("0000000001.msgs"), b"old data").unwrap();
    // The definition is gone (not restored), and the queue is declared again.
    let again = s.durable_queue_dir("q", true).unwrap();
    assert_eq!(again, q);
    assert_eq!(name_in(&again), "q");
    assert!(!again.join("0000000001.msgs").exists(), "the new queue starts empty");
    let kept: Vec<_> = fs::read_dir(s.orphaned_root()).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(fs::read(kept[0].join("0000000001.msgs")).unwrap(), b"old data");
    assert_eq!(name_in(&kept[0]), "q");
}

#[test]
fn a_directory_from_an_older_warren_is_adopted_on_restore() {
    let d = Dir::new("legacy");
    let s = d.settings();
    let legacy = s.queues_root().join(format!("{:016x}", queue_dirs::hash("old")));
    fs::create_dir_all(&legacy).unwrap();
    fs::write(legacy.join("0000000001.msgs"), b"x").unwrap();
    assert_eq!(
        queue_dirs::probe(&s.queues_root(), queue_dirs::hash("old"), "old").unwrap(),
        Probe::Unnamed(legacy.clone())
    );
    assert_eq!(s.durable_queue_dir("old", false).unwrap(), legacy);
    assert_eq!(name_in(&legacy), "old");
    assert_eq!(s.find_queue_dir("old"), Some(legacy.clone()));
    assert!(legacy.join("0000000001.msgs").exists());
}

#[test]
fn transient_directories_are_unique_and_outside_the_durable_area() {
    let d = Dir::new("transient");
    let s = d.settings();
    let (a, b) = (s.transient_queue_dir(), s.transient_queue_dir());
    assert_ne!(a, b);
    assert!(a.starts_with(s.transient_root()));
    assert!(!a.starts_with(s.queues_root()));
}

#[test]
fn the_hash_is_stable() {
    // Directory names of existing data directories depend on it.
    assert_eq!(queue_dirs::hash(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(queue_dirs::hash("a"), 0xaf63_dc4c_8601_ec8c);
}
