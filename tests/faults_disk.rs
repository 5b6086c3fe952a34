//! The fault harness's disk faults do what they say to a real segments log.
#![allow(dead_code)] // the shared module serves the harness too

#[path = "faults/disk.rs"]
mod disk;

use disk::DiskFault;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use segments::{Config, Entry, EntryMeta, Log};

/// Small segments (the smallest entries keel writes are far larger than these).
fn config() -> Config {
    Config { segment_bytes: 8192, entry_bytes_max: 1024, index_interval_bytes: 512, timestamp: None }
}

/// `count` entries of ~300 bytes appended; synced when `sync`.
fn append(log: &mut Log, count: u64, sync: bool) {
    let mut entries = Vec::new();
    let mut offset = log.next_offset();
    for index in log.last_index() + 1..=log.last_index() + count {
        let meta = EntryMeta { index, term: 1, kind: 0, base_offset: offset, record_count: 1 };
        let e = Entry::encode(meta, &[index as u8; 300]);
        offset = e.next_offset();
        entries.push(e);
    }
    log.append(&entries).unwrap();
    if sync {
        log.sync().unwrap();
    }
}

fn first_damage(log: &Log) -> Option<u64> {
    let mut next = log.first_index();
    while next <= log.last_index() {
        match log.verify(next, usize::MAX) {
            Ok(after) => next = after,
            Err(d) => return Some(d.index),
        }
    }
    None
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_found_by_a_check_not_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append(&mut log, 100, true);
    drop(log);
    let what = disk::damage(dir.path(), DiskFault::FlipSealed, &mut SmallRng::seed_from_u64(1)).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.last_index(), 100, "open does not read sealed segments: {report}");
    let bad = first_damage(&log).expect("the damage is found");
    assert!(what.contains(&format!("entry {bad} ")), "{what} vs entry {bad}");
}

#[test]
fn two_nodes_are_damaged_at_different_entries() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        let (mut log, _) = Log::open(dir.path(), config()).unwrap();
        append(&mut log, 100, true);
    }
    let mut rng = SmallRng::seed_from_u64(5);
    let (_, first) = disk::flip_sealed(dirs[0].path(), &mut rng, None).unwrap();
    // The same seed again would pick the same entry: the second must avoid it.
    let (_, second) = disk::flip_sealed(dirs[1].path(), &mut SmallRng::seed_from_u64(5), first).unwrap();
    assert!(first.is_some() && second.is_some() && first != second, "{first:?} {second:?}");
    for (dir, bad) in dirs.iter().zip([first, second]) {
        let (log, _) = Log::open(dir.path(), config()).unwrap();
        assert_eq!(first_damage(&log), bad);
    }
}

#[test]
fn truncating_the_active_segment_loses_synced_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append(&mut log, 100, true);
    drop(log);
    let what = disk::damage(dir.path(), DiskFault::TruncateActive, &mut SmallRng::seed_from_u64(2)).unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert!(log.last_index() < 100, "{what}");
    assert_eq!(first_damage(&log), None, "what is left is intact");
}

#[test]
fn deleted_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append(&mut log, 100, true);
    drop(log);
    let what = disk::damage(dir.path(), DiskFault::DeleteIndexes, &mut SmallRng::seed_from_u64(3)).unwrap();
    assert!(what.starts_with("deleted") && !what.starts_with("deleted 0"), "{what}");
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.last_index(), first_damage(&log)), (100, None));
}

#[test]
fn losing_unsynced_data_keeps_every_synced_entry_the_index_names() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append(&mut log, 60, true);
    let synced = log.synced_index();
    append(&mut log, 40, false);
    drop(log);
    let what = disk::damage(dir.path(), DiskFault::LoseUnsynced, &mut SmallRng::seed_from_u64(4)).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(log.last_index() < 100, "the unsynced entries are gone: {what}; {report}");
    // Up to one index interval of synced entries may go too (they are not named yet).
    assert!(log.last_index() + 3 >= synced, "kept {} of {synced} synced entries: {what}", log.last_index());
    assert_eq!(first_damage(&log), None, "{what}; {report}");
}
