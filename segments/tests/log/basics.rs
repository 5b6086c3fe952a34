//! Appends, reads, lookups and reopening across many segments.

use segments::{Config, Error, LogStart};

use crate::common::*;

#[test]
fn entries_round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open(dir.path(), small_config());
    assert!(report.is_clean(), "{report}");
    assert_eq!((log.first_index(), log.last_index(), log.next_offset()), (1, 0, 0));
    assert_eq!(log.term(0), Some(0));
    let written: Vec<_> = (1..=6).flat_map(|term| append_made(&mut log, 50, term, 300)).collect();
    assert!(log.segments().len() > 10, "small segments roll often");
    assert_eq!(check_consistent(&log), written);
    log.sync().unwrap();
    assert_eq!(log.synced_index(), 300);
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(report.is_clean(), "{report}");
    assert_eq!(check_consistent(&log), written);
    assert!(written.iter().all(|e| is_made(e, 300)));
}

#[test]
fn lookups_at_every_segment_boundary_survive_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = synced_log(dir.path(), 40, 10);
    let check_boundaries = |log: &segments::Log| {
        let infos = log.segments();
        for (i, s) in infos.iter().enumerate() {
            assert!(s.readable);
            assert_eq!(s.sealed, i + 1 < infos.len());
            if let Some(next) = infos.get(i + 1) {
                assert_eq!(s.last_index + 1, next.first_index);
                assert_eq!(s.next_offset, next.first_offset);
            }
            for index in [s.first_index, s.last_index] {
                if index < log.first_index() || index > log.last_index() {
                    continue;
                }
                let mut out = Vec::new();
                log.read(index, 1, &mut out).unwrap();
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].index(), index);
                assert_eq!(log.term(index), Some(out[0].term()));
                if out[0].record_count() > 0 {
                    assert_eq!(log.locate_offset(out[0].base_offset()).unwrap(), Some(index));
                }
            }
            if s.first_offset < s.next_offset {
                assert!(log.locate_offset(s.first_offset).unwrap().is_some_and(|i| i >= s.first_index));
                assert_eq!(log.locate_offset(s.next_offset - 1).unwrap().map(|i| i <= s.last_index), Some(true));
            }
        }
    };
    check_boundaries(&log);
    let before = log.segments();
    let cut = before[10].first_index + 1;
    assert_eq!(log.drop_before(cut).unwrap(), 10);
    assert_eq!(log.first_index(), before[10].first_index);
    assert_eq!(log.start_offset(), before[10].first_offset);
    let prev_term = log.term(log.first_index() - 1).unwrap();
    check_consistent(&log);
    check_boundaries(&log);
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(report.is_clean(), "{report}");
    assert_eq!(log.first_index(), before[10].first_index);
    assert_eq!(log.term(log.first_index() - 1), Some(prev_term));
    assert_eq!(
        log.locate_offset(before[9].first_offset).unwrap_err().to_string(),
        Error::OffsetBelowStart { requested: before[9].first_offset, start: log.start_offset() }.to_string()
    );
    check_consistent(&log);
    check_boundaries(&log);
}

#[test]
fn open_reads_only_the_tail_whatever_the_number_of_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = synced_log(dir.path(), 30, 20);
    append_made(&mut log, 3, 31, 400);
    log.sync().unwrap();
    let segments = log.segments().len();
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(segments > 30);
    assert!(report.scans.len() <= 2, "only unsealed tail segments are scanned: {report}");
    assert!(report.segments_read <= 3, "sealed segments load on first use: {report}");
    assert!(report.scans.iter().map(|s| s.to - s.from).sum::<u64>() < 2 * 4096, "{report}");
    check_consistent(&log);
}

#[test]
fn a_missing_or_damaged_index_file_is_rebuilt_from_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = synced_log(dir.path(), 20, 10);
    let expected = check_consistent(&log);
    let infos = log.segments();
    drop(log);
    let idx = |s: &segments::SegmentInfo| s.path.with_extension("idx");
    std::fs::remove_file(idx(&infos[3])).unwrap();
    let mut damaged = std::fs::read(idx(&infos[5])).unwrap();
    damaged[45] ^= 0xff; // inside the first record
    std::fs::write(idx(&infos[5]), damaged).unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert!(report.indexes_rebuilt.contains(&idx(&infos[3])), "{report}");
    assert_eq!(check_consistent(&log), expected);
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(report.indexes_rebuilt.is_empty(), "rebuilt once, then trusted: {report}");
    assert_eq!(check_consistent(&log), expected);
}

#[test]
fn truncation_keeps_old_bytes_and_continues_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), Config::default());
    let old = append_made(&mut log, 100, 1, 200);
    log.sync().unwrap();
    let held = old[60..].to_vec();
    log.truncate_after(50).unwrap();
    assert_eq!((log.last_index(), log.synced_index()), (50, 50));
    assert_eq!(log.next_offset(), old[49].next_offset());
    assert_eq!(log.segments().iter().map(|s| s.first_index).collect::<Vec<_>>(), [1, 51]);
    let new = append_made(&mut log, 30, 2, 200);
    assert!(held.iter().zip(&old[60..]).all(|(a, b)| a == b && is_made(a, 200)), "views stay intact");
    let mut expected = old[..50].to_vec();
    expected.extend(new.iter().cloned());
    assert_eq!(check_consistent(&log), expected);
    drop(log);
    let (mut log, report) = open(dir.path(), Config::default());
    assert!(report.is_clean(), "{report}");
    assert_eq!(check_consistent(&log), expected);
    // Truncating to the very start empties the log; its start stays.
    log.truncate_after(0).unwrap();
    assert_eq!((log.first_index(), log.last_index(), log.next_offset()), (1, 0, 0));
    drop(log);
    let (log, _) = open(dir.path(), Config::default());
    assert_eq!((log.first_index(), log.last_index(), log.next_offset()), (1, 0, 0));
}

#[test]
fn reset_starts_an_empty_log_that_reopens_where_it_was_told() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let held = append_made(&mut log, 40, 1, 300);
    let start = LogStart { index: 1000, prev_term: 7, offset: 5000 };
    log.reset(start).unwrap();
    assert!(held.iter().all(|e| is_made(e, 300)), "entries read before a reset stay valid");
    assert_eq!((log.first_index(), log.last_index(), log.synced_index()), (1000, 999, 999));
    assert_eq!((log.start_offset(), log.next_offset(), log.term(999)), (5000, 5000, Some(7)));
    assert_eq!(log.segments().len(), 1);
    drop(log);
    let (mut log, _) = open(dir.path(), small_config());
    assert_eq!(log.log_start(), start);
    assert_eq!((log.last_index(), log.term(999), log.next_offset()), (999, Some(7), 5000));
    let written = append_made(&mut log, 30, 8, 300);
    assert_eq!(check_consistent(&log), written);
}

#[test]
fn a_second_open_of_a_locked_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config());
    let err = segments::Log::open(dir.path(), small_config()).err().expect("second open must fail");
    assert!(matches!(&err, Error::Locked { dir: d } if d == dir.path()), "{err}");
    assert!(err.to_string().contains("locked"));
    drop(log);
    open(dir.path(), small_config());
}

#[test]
fn reads_respect_the_budget_but_return_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), Config::default());
    let written = append_made(&mut log, 20, 1, 500);
    let mut out = Vec::new();
    log.read(1, 0, &mut out).unwrap();
    assert_eq!(out, written[..1]);
    out.clear();
    let budget = written[..5].iter().map(|e| e.encoded_len()).sum::<usize>();
    log.read(1, budget, &mut out).unwrap();
    assert_eq!(out, written[..5]);
    out.clear();
    log.read(21, 1 << 20, &mut out).unwrap();
    assert!(out.is_empty(), "reading at last + 1 is the end, not an error");
}
