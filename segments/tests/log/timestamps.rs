//! `Log::locate_timestamp` (Kafka's ListOffsets by time): the first entry in log order
//! whose timestamp is at least T, with timestamps that go backwards and entries that
//! have none, across segments, restarts, lost index files, truncation, retention and reset.

use segments::{Config, Entry, EntryMeta, Error, Log, LogStart};

use crate::common::*;

/// Test entries carry a marker byte (1: a timestamp follows, 0: none), then the timestamp.
fn timestamp(e: &Entry) -> Option<u64> {
    let p = e.payload();
    (p[0] == 1).then(|| u64::from_le_bytes(p[1..9].try_into().unwrap()))
}

fn config() -> Config {
    // A checkpoint every ~1 KiB (6-7 entries), ~25 entries a segment.
    Config { segment_bytes: 4096, entry_bytes_max: 1024, index_interval_bytes: 1024, timestamp: Some(timestamp) }
}

/// Entry `index`'s timestamp: rising by 10 an entry, every 7th far back in time, every 11th none.
fn time_of(index: u64) -> Option<u64> {
    match index {
        i if i % 11 == 0 => None,
        i if i % 7 == 0 => Some((i * 10).saturating_sub(500)),
        i => Some(i * 10),
    }
}

fn append(log: &mut Log, count: u64) {
    let mut entries = Vec::new();
    let mut offset = log.next_offset();
    for index in log.last_index() + 1..=log.last_index() + count {
        let mut payload = time_of(index).map_or(vec![0], |t| [&[1], &t.to_le_bytes()[..]].concat());
        payload.resize(109, 0xab);
        let e = Entry::encode(EntryMeta { index, term: 1, kind: 0, base_offset: offset, record_count: 1 }, &payload);
        offset = e.next_offset();
        entries.push(e);
    }
    log.append(&entries).unwrap();
}

/// Compares every answer with a linear scan of the log's entries.
fn check_all(log: &Log, what: &str) {
    let entries = read_all(log);
    let top = entries.iter().filter_map(timestamp).max().unwrap_or(0);
    for target in (0..=top + 20).step_by(3) {
        let want = entries.iter().find(|e| timestamp(e).is_some_and(|t| t >= target)).map(Entry::index);
        assert_eq!(log.locate_timestamp(target).unwrap(), want, "{what}: timestamp {target}");
    }
}

fn reopen(log: Log, dir: &std::path::Path, config: Config) -> Log {
    drop(log);
    open(dir, config).0
}

#[test]
fn finds_the_earliest_entry_at_or_after_through_everything_a_log_goes_through() {
    let dir = fast_tempdir();
    let (mut log, _) = open(dir.path(), config());
    append(&mut log, 200);
    assert!(log.segments().len() > 5, "the entries span several segments");
    check_all(&log, "before any sync");
    log.sync().unwrap();
    check_all(&log, "synced");
    let mut log = reopen(log, dir.path(), config());
    check_all(&log, "reopened (sealed segments answer from their index files)");
    for path in std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()) {
        if path.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(path).unwrap();
        }
    }
    log = reopen(log, dir.path(), config());
    check_all(&log, "reopened without index files");
    log.truncate_after(150).unwrap();
    check_all(&log, "truncated after 150");
    append(&mut log, 30);
    check_all(&log, "truncated, then appended");
    assert!(log.drop_before(60).unwrap() > 0);
    check_all(&log, "after retention");
    log.sync().unwrap();
    log = reopen(log, dir.path(), config());
    check_all(&log, "after retention, reopened");
    log.reset(LogStart { index: 500, prev_term: 1, offset: 900 }).unwrap();
    assert_eq!(log.locate_timestamp(0).unwrap(), None);
    append(&mut log, 40);
    check_all(&log, "after reset");
}

#[test]
fn an_index_written_without_timestamps_is_rebuilt_with_them() {
    let dir = fast_tempdir();
    let without = Config { timestamp: None, ..config() };
    let (mut log, _) = open(dir.path(), without);
    append(&mut log, 120);
    log.sync().unwrap();
    let err = log.locate_timestamp(5).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("set Config::timestamp"), "{err}");
    // Its index files say they hold no timestamps: opened with a function, the log reads
    // the segments again instead of trusting maxima of 0.
    let log = reopen(log, dir.path(), config());
    check_all(&log, "reopened with a timestamp function");
}
