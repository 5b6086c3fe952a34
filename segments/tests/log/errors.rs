//! Every kind of bad input gets its own typed error, with a message that says what to do.

use segments::{Config, Entry, EntryMeta, Error, HEADER_LEN, LogStart};

use crate::common::*;

fn entry(index: u64, base_offset: u64, records: u32, payload: usize) -> Entry {
    Entry::encode(EntryMeta { index, term: 1, kind: 0, base_offset, record_count: records }, &vec![7; payload])
}

#[test]
fn bad_appends_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    log.append(&[entry(1, 0, 2, 10)]).unwrap();

    let err = log.append(&[entry(3, 2, 1, 10)]).unwrap_err();
    assert!(matches!(err, Error::NonContiguous { expected: 2, got: 3 }), "{err}");
    let err = log.append(&[entry(2, 2, 1, 10), entry(4, 3, 1, 10)]).unwrap_err();
    assert!(matches!(err, Error::NonContiguous { expected: 3, got: 4 }), "{err}");
    let err = log.append(&[entry(2, 5, 1, 10)]).unwrap_err();
    assert!(matches!(err, Error::OffsetMismatch { index: 2, expected: 2, got: 5 }), "{err}");
    let too_big = entry(3, 3, 1, 1024 - HEADER_LEN + 1);
    let err = log.append(&[entry(2, 2, 1, 10), too_big]).unwrap_err();
    assert!(matches!(err, Error::EntryTooLarge { index: 3, len: 1025, max: 1024 }), "{err}");
    assert!(err.to_string().contains("entry_bytes_max"));
    assert_eq!(log.last_index(), 1, "a refused batch writes nothing");
    log.append(&[entry(2, 2, 1, 1024 - HEADER_LEN)]).unwrap();
}

#[test]
fn out_of_range_reads_and_lookups_name_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    log.reset(LogStart { index: 10, prev_term: 1, offset: 100 }).unwrap();
    log.append(&[entry(10, 100, 3, 10), entry(11, 103, 0, 10)]).unwrap();
    let mut out = Vec::new();
    for bad in [9, 13, u64::MAX] {
        let err = log.read(bad, 100, &mut out).unwrap_err();
        assert!(matches!(err, Error::OutOfRange { requested, first: 10, last: 11 } if requested == bad), "{err}");
        assert!(err.to_string().contains("10..=11"), "{err}");
    }
    assert!(out.is_empty());
    assert!(matches!(log.locate_offset(99), Err(Error::OffsetBelowStart { requested: 99, start: 100 })));
    assert_eq!(log.locate_offset(102).unwrap(), Some(10));
    assert_eq!(log.locate_offset(103).unwrap(), None, "entry 11 holds no records");
    assert_eq!((log.term(8), log.term(9), log.term(12)), (None, Some(1), None));
}

#[test]
fn truncation_below_the_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    log.reset(LogStart { index: 10, prev_term: 1, offset: 0 }).unwrap();
    let err = log.truncate_after(8).unwrap_err();
    assert!(matches!(err, Error::TruncateBelowStart { index: 8, first: 10 }), "{err}");
    log.truncate_after(9).unwrap();
    log.truncate_after(500).unwrap();
    assert!(matches!(log.reset(LogStart { index: 0, prev_term: 0, offset: 0 }), Err(Error::InvalidConfig { .. })));
}

#[test]
fn impossible_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        Config { segment_bytes: 1000, entry_bytes_max: 1000, ..Config::default() },
        Config { entry_bytes_max: 10, ..Config::default() },
        Config { index_interval_bytes: 0, ..Config::default() },
        Config { segment_bytes: u64::MAX, ..Config::default() },
    ] {
        let err = segments::Log::open(dir.path(), config).err().expect("refused");
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    }
}
