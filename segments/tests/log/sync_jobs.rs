//! Group commit: a sync job runs without the log and may race appends,
//! truncations and resets; `synced_index` must never claim what it did not flush.

use segments::LogStart;

use crate::common::*;

/// A log of 30 unsynced entries (small segments) and a sync job begun over them.
fn log_and_job(dir: &std::path::Path) -> (segments::Log, segments::SyncJob) {
    let (mut log, _) = open(dir, small_config());
    append_made(&mut log, 30, 1, 300);
    let job = log.begin_sync();
    (log, job)
}

fn run_elsewhere(job: segments::SyncJob) -> segments::SyncDone {
    std::thread::spawn(move || job.run()).join().unwrap().unwrap()
}

#[test]
fn a_sync_covers_only_what_was_appended_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, job) = log_and_job(dir.path());
    assert_eq!(job.covers(), 30);
    append_made(&mut log, 30, 1, 300); // rolls segments meanwhile
    let done = run_elsewhere(job);
    log.finish_sync(done);
    assert_eq!(log.synced_index(), 30);
    log.sync().unwrap();
    assert_eq!(log.synced_index(), 60);
}

#[test]
fn a_truncation_during_a_sync_caps_what_it_may_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, first) = log_and_job(dir.path());
    log.truncate_after(12).unwrap();
    assert_eq!(log.synced_index(), 0);
    append_made(&mut log, 30, 2, 300); // new entries 13..=42, written after the job began
    let second = log.begin_sync();
    log.truncate_after(20).unwrap();
    log.finish_sync(run_elsewhere(first));
    assert_eq!(log.synced_index(), 12, "the first job flushed 1..=30 of the old log, of which 1..=12 remain");
    log.finish_sync(run_elsewhere(second));
    assert_eq!(log.synced_index(), 20, "the second job flushed 13..=42 of the new entries; 20 remain");
    check_consistent(&log);
}

#[test]
fn a_reset_during_a_sync_caps_what_it_may_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, job) = log_and_job(dir.path());
    log.reset(LogStart { index: 10, prev_term: 4, offset: 77 }).unwrap();
    assert_eq!(log.synced_index(), 9);
    append_made(&mut log, 5, 5, 300);
    log.finish_sync(run_elsewhere(job));
    assert_eq!(log.synced_index(), 9);
    log.sync().unwrap();
    assert_eq!(log.synced_index(), 14);
}

#[test]
fn synced_entries_are_indexed_and_sealed_for_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = synced_log(dir.path(), 12, 10);
    let expected = check_consistent(&log);
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    // Only the last segment (whose seal is written after the next sync) is scanned.
    assert!(report.scans.len() <= 2, "{report}");
    assert_eq!(check_consistent(&log), expected);
}

#[test]
fn a_sync_job_raises_the_sync_mark_to_what_it_made_durable_and_is_still_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, job) = log_and_job(dir.path());
    assert_eq!(log.sync_mark().index, 0, "nothing synced yet");
    log.truncate_after(12).unwrap();
    append_made(&mut log, 5, 2, 300);
    log.finish_sync(run_elsewhere(job));
    // The job flushed 1..=30 of the old log; 1..=12 are left, and 13..=17 are new.
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 12, term: 1 });
    assert_eq!(log.synced_index(), 12, "the mark never trails what the log reports durable");
    log.sync().unwrap();
    assert_eq!(log.sync_mark(), segments::SyncMark { index: 17, term: 2 });
}
