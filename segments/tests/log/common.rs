//! Helpers shared by the test modules: deterministic entries, small configs, whole-log checks.

use std::path::Path;

use segments::{Config, Entry, EntryMeta, Error, Log, RecoveryReport};

/// Small segments (a few entries each) so tests roll, seal and cross boundaries often.
pub fn small_config() -> Config {
    Config { segment_bytes: 4096, entry_bytes_max: 1024, index_interval_bytes: 256, timestamp: Some(timestamp) }
}

/// The timestamp of an entry `make` wrote: it follows the index upward but jumps back
/// by up to 31 often (timestamps are not monotonic), and about one entry in five has none.
pub fn timestamp(e: &Entry) -> Option<u64> {
    let first = *e.payload().first()?;
    (first % 5 != 0).then(|| e.index() * 4 + u64::from(first % 32))
}

/// Opens a log, retrying `Locked` for a moment: the crash test forks children while
/// other tests run, and a child holds a copy of every open file (the LOCK file of a
/// log just dropped, too) until it execs, which keeps that flock held.
pub fn open(dir: &Path, config: Config) -> (Log, RecoveryReport) {
    for _ in 0..100 {
        match Log::open(dir, config) {
            Err(Error::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            other => return other.unwrap_or_else(|e| panic!("open {}: {e}", dir.display())),
        }
    }
    panic!("{} stayed locked", dir.display())
}

/// A temporary directory on tmpfs when there is one: for tests of logic, not of
/// durability, where thousands of fsyncs would only cost time.
pub fn fast_tempdir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn mix(index: u64, term: u64) -> u64 {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// The entry a test writes at `index` in `term`: its payload length (up to
/// `payload_max`), bytes and record count follow from (index, term) alone, so any
/// reader can check what it gets back.
pub fn make(index: u64, term: u64, base_offset: u64, payload_max: usize) -> Entry {
    let h = mix(index, term);
    let len = (h % payload_max as u64) as usize;
    let payload: Vec<u8> = (0..len).map(|i| (h >> (i % 7 * 8)) as u8 ^ i as u8).collect();
    let record_count = (h >> 40) as u32 % 4; // some entries hold no records
    Entry::encode(EntryMeta { index, term, kind: 0, base_offset, record_count }, &payload)
}

/// Checks that `e` is exactly what `make` writes for its index and term.
pub fn is_made(e: &Entry, payload_max: usize) -> bool {
    *e == make(e.index(), e.term(), e.base_offset(), payload_max)
}

/// Appends entries `count` entries of `term` to `log`, continuing it.
pub fn append_made(log: &mut Log, count: u64, term: u64, payload_max: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut offset = log.next_offset();
    for index in log.last_index() + 1..=log.last_index() + count {
        let e = make(index, term, offset, payload_max);
        offset = e.next_offset();
        out.push(e);
    }
    log.append(&out).unwrap();
    out
}

/// Every entry of the log, read with a small budget so reads cross segments.
pub fn read_all(log: &Log) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut from = log.first_index();
    while from <= log.last_index() {
        let before = out.len();
        log.read(from, 700, &mut out).unwrap_or_else(|e| panic!("read from {from}: {e}"));
        assert!(out.len() > before, "a read below the end returns at least one entry");
        from = out.last().unwrap().index() + 1;
    }
    out
}

/// Checks the log's invariants against its own entries: contiguous indices,
/// chained offsets, terms and offset lookups that agree with the entries.
pub fn check_consistent(log: &Log) -> Vec<Entry> {
    let all = read_all(log);
    let mut offset = log.start_offset();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.index(), log.first_index() + i as u64);
        assert_eq!(e.base_offset(), offset, "offsets chain at {}", e.index());
        assert_eq!(log.term(e.index()), Some(e.term()));
        if e.record_count() > 0 {
            assert_eq!(log.locate_offset(e.base_offset()).unwrap(), Some(e.index()));
            assert_eq!(log.locate_offset(e.next_offset() - 1).unwrap(), Some(e.index()));
        }
        offset = e.next_offset();
    }
    assert_eq!(offset, log.next_offset());
    assert_eq!(log.locate_offset(log.next_offset()).unwrap(), None);
    assert_eq!(log.term(log.last_index() + 1), None);
    all
}

/// A log in `dir` (small segments) holding `terms` terms of `per_term` entries each, synced after each term.
pub fn synced_log(dir: &Path, terms: u64, per_term: u64) -> Log {
    let (mut log, _) = open(dir, small_config());
    for term in 1..=terms {
        append_made(&mut log, per_term, term, 400);
        log.sync().unwrap();
    }
    log
}
