//! What a crash or a bad disk leaves behind: lost unsynced writes (power cut),
//! torn entries, flipped bits. Synced entries survive; the rest vanishes as a
//! suffix; damage in sealed segments is reported on read, never returned as data.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use segments::{DecodeError, Error, SEGMENT_HEADER_LEN, Stop};

use crate::common::*;

#[derive(Clone, Copy, Debug)]
enum Loss {
    /// The pages never reached the disk: zeros (preallocated space).
    Zeros,
    /// The file ends early (e.g. a file system without preallocation).
    Cut,
    /// Stale or half-written sectors.
    Garbage,
}

fn lose(path: &Path, from: u64, loss: Loss) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    match loss {
        Loss::Zeros => file.write_all_at(&vec![0; (len - from) as usize], from).unwrap(),
        Loss::Cut => file.set_len(from).unwrap(),
        Loss::Garbage => {
            let junk: Vec<u8> = (0..(len - from).min(9000)).map(|i| (i * 7919 % 251) as u8 | 1).collect();
            file.write_all_at(&junk, from).unwrap()
        }
    }
}

fn flip(path: &Path, at: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

/// Simulates a power cut: everything written after the last sync is lost, in the
/// file that holds the first unsynced entry and in every segment created after it.
#[test]
fn unsynced_writes_lost_in_a_power_cut_vanish_as_a_suffix() {
    for loss in [Loss::Zeros, Loss::Cut, Loss::Garbage] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = synced_log(dir.path(), 10, 10);
        append_made(&mut log, 40, 11, 400); // unsynced, across several segments
        let synced = log.synced_index();
        assert_eq!(synced, 100);
        let (path, position) = log.position_of(synced + 1).unwrap();
        let later: Vec<PathBuf> =
            log.segments().into_iter().filter(|s| s.first_index > synced + 1).map(|s| s.path).collect();
        assert!(later.len() >= 2, "the unsynced entries span segments");
        let mut expected = Vec::new();
        log.read(1, usize::MAX, &mut expected).unwrap();
        expected.truncate(synced as usize);
        drop(log);
        lose(&path, position, loss);
        for p in &later {
            lose(p, SEGMENT_HEADER_LEN as u64, loss);
        }
        let (mut log, report) = open(dir.path(), small_config());
        assert_eq!(log.last_index(), synced, "{loss:?}: {report}");
        assert_eq!(check_consistent(&log), expected, "{loss:?}");
        assert_eq!(
            report.discarded.len(),
            later.len() - usize::from(position == SEGMENT_HEADER_LEN as u64),
            "{report}"
        );
        append_made(&mut log, 20, 12, 400);
        log.sync().unwrap();
        drop(log);
        let (log, report) = open(dir.path(), small_config());
        assert!(report.is_clean(), "{loss:?}: {report}");
        assert_eq!(log.last_index(), synced + 20);
        check_consistent(&log);
    }
}

/// A log of 20 entries in one segment, closed, with the position of entry 15.
fn one_segment_log(dir: &Path) -> (PathBuf, u64, Vec<segments::Entry>) {
    let (mut log, _) = open(dir, segments::Config::default());
    let written = append_made(&mut log, 20, 1, 300);
    log.sync().unwrap();
    let (path, position) = log.position_of(15).unwrap();
    (path, position, written)
}

#[test]
fn an_entry_torn_mid_write_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, position, written) = one_segment_log(dir.path());
    lose(&path, position + 10, Loss::Cut);
    let (log, report) = open(dir.path(), segments::Config::default());
    assert_eq!(check_consistent(&log), written[..14]);
    let scan = report.scans.iter().find(|s| s.segment == path).expect("the tail was scanned");
    assert!(scan.is_cut() && !report.is_clean(), "{report}");
    assert_eq!(scan.to, position, "{report}");
    assert!((1..=10).contains(&scan.bytes_dropped), "the 10 bytes left (trailing zeros not counted): {report}");
    assert!(matches!(scan.stop, Stop::Torn(DecodeError::Truncated { .. })), "{report}");
    assert!(report.to_string().contains("CUT at byte"), "{report}");
}

#[test]
fn a_flipped_byte_in_the_tail_cuts_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let (path, position, written) = one_segment_log(dir.path());
    flip(&path, position + 17); // the index field of entry 15
    let (log, report) = open(dir.path(), segments::Config::default());
    assert_eq!(check_consistent(&log), written[..14]);
    let scan = report.scans.iter().find(|s| s.segment == path).unwrap();
    assert!(matches!(scan.stop, Stop::Torn(DecodeError::BadCrc { .. })), "{report}");
    let tail: usize = written[14..].iter().map(|e| e.encoded_len()).sum();
    assert_eq!(scan.bytes_dropped, tail as u64, "{report}");
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_on_read_then_repaired_by_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = synced_log(dir.path(), 20, 10);
    let expected = check_consistent(&log);
    let sealed = &log.segments()[3];
    let bad = sealed.first_index + 1;
    let (path, position) = log.position_of(bad).unwrap();
    assert_eq!(path, sealed.path);
    let bad_term = expected[bad as usize - 1].term();
    // Live: the map shows the damage at once (entries are views of it: `expected[bad]`
    // changes too), and every read checks the CRC again.
    flip(&path, position + 30);
    let corrupt_at = |log: &segments::Log, from: u64| {
        let err = log.read(from, usize::MAX, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { segment, position: p, reason: DecodeError::BadCrc { .. } }
                if *segment == path && *p == position),
            "{err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    };
    corrupt_at(&log, 1);
    corrupt_at(&log, bad);
    drop(log);
    // On disk: open does not scan sealed segments, reads still catch it.
    let (mut log, report) = open(dir.path(), small_config());
    assert!(report.is_clean() && !report.scans.iter().any(|s| s.segment == path), "{report}");
    corrupt_at(&log, 1);
    let mut after = Vec::new();
    log.read(bad + 1, usize::MAX, &mut after).unwrap();
    assert_eq!(after, expected[bad as usize..], "entries after the damage are intact");
    assert_eq!(log.term(bad), Some(bad_term), "terms need no entry bytes");
    // The replica's repair: drop the damaged suffix and fetch it again.
    log.truncate_after(bad - 1).unwrap();
    let refetched = append_made(&mut log, 30, 50, 400);
    let mut want = expected[..bad as usize - 1].to_vec();
    want.extend(refetched);
    assert_eq!(check_consistent(&log), want);
    log.sync().unwrap();
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(report.is_clean(), "{report}");
    assert_eq!(check_consistent(&log), want, "the damaged bytes stay behind the next segment's start");
}

/// An owned copy of an entry's bytes (entries read from the log are views of its map).
fn copy(e: &segments::Entry) -> segments::Entry {
    segments::Entry::decode(bytes::Bytes::copy_from_slice(e.as_bytes()), u32::MAX).unwrap()
}

#[test]
fn a_damaged_entry_is_written_back_in_place_from_an_intact_copy_and_the_suffix_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = synced_log(dir.path(), 20, 10);
    let expected: Vec<segments::Entry> = check_consistent(&log).iter().map(copy).collect();
    for (k, nth) in [(3usize, 1u64), (5, 0)] {
        let segment = &log.segments()[k];
        let bad = segment.first_index + nth;
        let (path, position) = log.position_of(bad).unwrap();
        flip(&path, position + 30);
        assert!(log.read(bad, 1, &mut Vec::new()).is_err(), "entry {bad} is damaged");
        let good = expected[bad as usize - 1].clone();
        // A copy of another term, or of another length, is refused before a byte is written.
        let other_term = make(bad, good.term() + 1, good.base_offset(), 400);
        assert!(matches!(log.rewrite_damaged(&other_term), Err(Error::RewriteRefused { .. })));
        let other = expected.iter().find(|e| e.term() == good.term() && e.encoded_len() != good.encoded_len());
        if let Some(other) = other {
            let meta = segments::EntryMeta { index: bad, ..other.meta() };
            let longer = segments::Entry::encode(meta, &other.payload());
            assert!(matches!(log.rewrite_damaged(&longer), Err(Error::RewriteRefused { .. })));
        }
        assert!(log.read(bad, 1, &mut Vec::new()).is_err(), "still damaged");
        assert!(log.rewrite_damaged(&good).unwrap(), "written back");
        assert!(!log.rewrite_damaged(&good).unwrap(), "an intact entry is left alone");
    }
    assert_eq!(check_consistent(&log), expected, "every entry reads back, none was cut");
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(report.is_clean(), "{report}");
    assert_eq!(check_consistent(&log), expected, "durable");
}

#[test]
fn a_corrupt_log_start_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(synced_log(dir.path(), 2, 5));
    flip(&dir.path().join("log-start"), 20);
    let err = segments::Log::open(dir.path(), small_config()).err().expect("refused");
    assert!(matches!(err, Error::BadFile { .. }), "{err}");
}

/// Checks the whole log a little at a time, as a scrub does: the first damaged entry, if any.
fn scrub(log: &segments::Log, chunk: usize) -> Option<segments::Damage> {
    let mut next = log.first_index();
    while next <= log.last_index() {
        match log.verify(next, chunk) {
            Ok(after) => {
                assert!(after > next, "verify makes progress");
                next = after;
            }
            Err(damage) => return Some(damage),
        }
    }
    None
}

#[test]
fn verify_finds_the_first_damaged_entry_of_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = synced_log(dir.path(), 20, 10);
    assert!(scrub(&log, 500).is_none(), "an intact log has no damage");
    let sealed = &log.segments()[4];
    let bad = sealed.first_index + 2;
    let (path, position) = log.position_of(bad).unwrap();
    flip(&path, position + 45);
    for chunk in [1, 500, usize::MAX] {
        let damage = scrub(&log, chunk).expect("the flipped byte is found");
        assert_eq!(damage.index, bad, "chunk {chunk}: {}", damage.error);
        assert!(matches!(damage.error, Error::Corrupt { .. }), "{}", damage.error);
    }
    // A read from after the damage in the same segment still walks over it: so does verify.
    let err = log.verify(bad + 1, 1).unwrap_err();
    assert!(err.index <= bad + 1, "{}", err.error);
    // Past the damage's segment the log is intact.
    assert!(log.verify(sealed.last_index + 1, usize::MAX).is_ok());
}

#[test]
fn a_sealed_segment_without_its_index_and_with_a_damaged_first_entry_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let log = synced_log(dir.path(), 20, 10);
    let sealed = log.segments()[2].clone();
    drop(log);
    flip(&sealed.path, SEGMENT_HEADER_LEN as u64 + 45);
    std::fs::remove_file(sealed.path.with_extension("idx")).unwrap();
    let (log, _) = open(dir.path(), small_config());
    let err = log.read(sealed.first_index, usize::MAX, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let damage = scrub(&log, 500).expect("found");
    assert_eq!(damage.index, sealed.first_index, "{}", damage.error);
}

/// Recovery cuts the tail at the first entry that does not decode. The sync mark says
/// whether a sync had made what it cut durable: damage (which a replica must treat as
/// the loss of entries it may have acknowledged), or an unsynced tail (which it never
/// acknowledged).
#[test]
fn damage_to_synced_entries_in_the_tail_is_told_from_an_unsynced_tail() {
    // Synced, then damaged: the mark names the last synced entry, past the cut.
    let dir = tempfile::tempdir().unwrap();
    let (path, position, written) = one_segment_log(dir.path());
    flip(&path, position + 17);
    let (log, report) = open(dir.path(), segments::Config::default());
    assert_eq!(log.last_index(), 14, "{report}");
    let mark = segments::SyncMark { index: 20, term: written[19].term() };
    assert_eq!((report.lost_synced(), log.sync_mark()), (Some(mark), mark), "{report}");
    assert!(!report.is_clean() && report.to_string().contains("LOST entries 15..=20"), "{report}");
    // Written but never synced, then lost in a power cut: no loss of synced entries.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), segments::Config::default());
    append_made(&mut log, 20, 1, 300);
    log.sync().unwrap();
    append_made(&mut log, 10, 1, 300);
    let (path, position) = log.position_of(25).unwrap();
    drop(log);
    lose(&path, position, Loss::Garbage);
    let (log, report) = open(dir.path(), segments::Config::default());
    assert_eq!((log.last_index(), report.lost_synced()), (24, None), "{report}");
    assert_eq!(log.sync_mark().index, 24, "recovery made what it kept durable, and the mark says so");
}

/// Truncations and resets lower the mark before they remove anything, so the next open
/// does not take entries they removed for damage; syncs raise it again.
#[test]
fn truncations_and_resets_lower_the_sync_mark_and_syncs_raise_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = synced_log(dir.path(), 3, 10);
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 30, term: 3 });
    log.truncate_after(25).unwrap();
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 25, term: 3 });
    append_made(&mut log, 5, 4, 400);
    assert_eq!(log.sync_mark().index, 25, "appends alone do not raise it");
    drop(log);
    let (mut log, report) = open(dir.path(), small_config());
    assert_eq!(report.lost_synced(), None, "{report}");
    log.sync().unwrap();
    assert_eq!(log.sync_mark(), segments::SyncMark { index: log.last_index(), term: 4 });
    log.reset(segments::LogStart { index: 8, prev_term: 2, offset: 7 }).unwrap();
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 7, term: 2 });
    drop(log);
    let (_, report) = open(dir.path(), small_config());
    assert!(report.is_clean(), "{report}");
}

/// A mark write torn by a crash spoils only its own slot: the other holds the one before.
#[test]
fn a_torn_sync_mark_write_leaves_the_mark_before_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(synced_log(dir.path(), 2, 10));
    // FORMAT.md: slot `seq % 2` at byte 4096 * (seq % 2); the sequence number at +16.
    let mark_file = dir.path().join("sync-mark");
    let bytes = std::fs::read(&mark_file).unwrap();
    let seq = |at: usize| u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap());
    assert_eq!((seq(0), seq(4096)), (2, 1), "created with 0, then one write per sync, in turn");
    flip(&mark_file, 30); // the newest slot's index field, as a crash in its write would
    let mark_of = |at: usize| {
        let bytes = std::fs::read(&mark_file).unwrap();
        let field = |k: usize| u64::from_le_bytes(bytes[at + k..at + k + 8].try_into().unwrap());
        (field(16), field(24), field(32))
    };
    assert_eq!(mark_of(4096), (1, 10, 1), "the slot before: (seq, index, term)");
    // Recovery raises the mark again to what it kept (entries 1..=20, durable), over the torn slot.
    let (log, report) = open(dir.path(), small_config());
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 20, term: 2 }, "{report}");
    assert_eq!(mark_of(0), (2, 20, 2));
    drop(log);
    // Both slots spoilt: a new file holds the recovered end, and the report says so.
    flip(&mark_file, 30);
    flip(&mark_file, 4096 + 30);
    let (log, report) = open(dir.path(), small_config());
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 20, term: 2 }, "{report}");
    assert!(report.to_string().contains("sync-mark file missing or damaged"), "{report}");
}
