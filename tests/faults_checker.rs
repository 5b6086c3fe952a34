//! The fault harness's checker must be able to fail: hand-made histories, each with one
//! anomaly, and a clean one that passes.
#![allow(dead_code)] // the shared modules serve the harness too

#[path = "faults/checker.rs"]
mod checker;
#[path = "faults/history.rs"]
mod history;

use history::{Op, Outcome, Phase};

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn send(t: f64, writer: u32, list: &[&str], outcome: Outcome) -> Op {
    Op::Send { t, writer, ids: ids(list), outcome, done: t + 0.01 }
}

fn ok(offset: u64) -> Outcome {
    Outcome::Ok { offset }
}

fn poll(t: f64, consumer: u32, offset: u64, list: &[&str]) -> Op {
    Op::Poll { t, consumer, node: u64::from(consumer), offset, ids: ids(list) }
}

fn finals(list: &[&str]) -> Vec<Op> {
    (1..=3).map(|node| Op::Final { t: 100.0, node, ids: ids(list) }).collect()
}

/// Two writers, three records acknowledged, read in order by two consumers, identical
/// final logs on three nodes, and one fault.
fn clean() -> Vec<Op> {
    let mut ops = vec![
        Op::Fault { t: 0.5, phase: Phase::Start, name: "kill n2".into(), detail: String::new() },
        send(1.0, 1, &["w1-000001", "w1-000002"], ok(0)),
        send(2.0, 2, &["w2-000001"], ok(2)),
        poll(2.5, 1, 0, &["w1-000001"]),
        poll(2.6, 1, 1, &["w1-000002", "w2-000001"]),
        poll(2.7, 2, 0, &["w1-000001", "w1-000002", "w2-000001"]),
        Op::Fault { t: 3.0, phase: Phase::Heal, name: "kill n2".into(), detail: String::new() },
        send(4.0, 1, &["w1-000003"], ok(3)),
    ];
    ops.extend(finals(&["w1-000001", "w1-000002", "w2-000001", "w1-000003"]));
    ops
}

#[test]
fn a_clean_history_passes() {
    let r = checker::check(&clean());
    assert!(!r.failed(), "{r}");
    assert_eq!((r.sends_ok, r.records_acked, r.polls, r.final_records, r.faults), (3, 4, 3, 4, 1));
    assert_eq!(r.availability.len(), 1);
    assert!((r.availability[0].longest_gap - 2.0).abs() < 1e-9, "{r}");
}

#[test]
fn a_lost_write_fails() {
    let mut ops = clean();
    ops.retain(|op| !matches!(op, Op::Final { .. }));
    ops.extend(finals(&["w1-000001", "w1-000002", "w2-000001"]));
    let r = checker::check(&ops);
    assert_eq!(r.lost.count, 1, "{r}");
    assert!(r.failed());
}

#[test]
fn a_write_acknowledged_at_another_offset_is_lost() {
    let mut ops = clean();
    ops.push(send(5.0, 2, &["w2-000002"], ok(7)));
    ops.retain(|op| !matches!(op, Op::Final { .. }));
    ops.extend(finals(&["w1-000001", "w1-000002", "w2-000001", "w1-000003", "w2-000002"]));
    let r = checker::check(&ops);
    assert_eq!(r.lost.count, 1, "{r}");
}

#[test]
fn two_records_at_one_offset_are_inconsistent() {
    let mut ops = clean();
    ops.push(poll(3.5, 3, 0, &["w9-000001"]));
    let r = checker::check(&ops);
    assert_eq!(r.inconsistent.count, 1, "{r}");
    assert_eq!(r.aborted.count, 1, "and the consumer read what the log does not hold: {r}");
    assert!(r.failed());
}

#[test]
fn replicas_that_differ_diverge() {
    let mut ops = clean();
    if let Some(Op::Final { ids, .. }) = ops.iter_mut().rev().find(|op| matches!(op, Op::Final { .. })) {
        ids.pop();
    }
    let r = checker::check(&ops);
    assert_eq!(r.divergent.count, 1, "{r}");
    let mut ops = clean();
    ops.push(Op::Compare { t: 101.0, nodes: vec![1, 2, 3], commit: 9, differences: vec!["entry 7 differs".into()] });
    let r = checker::check(&ops);
    assert_eq!(r.divergent.count, 1, "{r}");
    assert!(r.failed());
}

#[test]
fn a_record_read_then_gone_is_an_aborted_read() {
    let mut ops = clean();
    ops.push(poll(3.0, 2, 3, &["w1-000099"]));
    let r = checker::check(&ops);
    assert_eq!(r.aborted.count, 1, "{r}");
    assert!(r.failed());
}

#[test]
fn a_poll_that_skips_or_goes_back_is_non_monotonic() {
    let mut ops = clean();
    ops.push(poll(3.0, 2, 4, &["w1-000003"]));
    let r = checker::check(&ops);
    assert_eq!(r.non_monotonic.count, 1, "skipped offset 3: {r}");
    let mut ops = clean();
    ops.push(poll(3.0, 1, 1, &["w1-000002"]));
    let r = checker::check(&ops);
    assert_eq!(r.non_monotonic.count, 1, "went back to 1: {r}");
    assert!(r.failed());
}

#[test]
fn a_duplicate_fails_and_indeterminate_writes_are_counted() {
    let mut ops = clean();
    ops.push(send(5.0, 2, &["w2-000002"], Outcome::Unknown { error: "timed out".into() }));
    ops.push(send(5.5, 2, &["w2-000003"], Outcome::Unknown { error: "timed out".into() }));
    ops.retain(|op| !matches!(op, Op::Final { .. }));
    ops.extend(finals(&["w1-000001", "w1-000002", "w2-000001", "w1-000003", "w2-000002", "w2-000002"]));
    let r = checker::check(&ops);
    assert_eq!((r.duplicates.count, r.indeterminate, r.indeterminate_present), (1, 2, 1), "{r}");
    assert!(r.failed(), "{r}");
    // Without the duplicate, the indeterminate writes alone pass.
    let mut ops = clean();
    ops.push(send(5.0, 2, &["w2-000002"], Outcome::Unknown { error: "timed out".into() }));
    ops.retain(|op| !matches!(op, Op::Final { .. }));
    ops.extend(finals(&["w1-000001", "w1-000002", "w2-000001", "w1-000003", "w2-000002"]));
    let r = checker::check(&ops);
    assert_eq!((r.duplicates.count, r.indeterminate, r.indeterminate_present), (0, 1, 1), "{r}");
    assert!(!r.failed(), "{r}");
}

#[test]
fn a_refused_or_unsent_record_in_the_log_is_unexpected() {
    let mut ops = clean();
    ops.push(send(5.0, 2, &["w2-000002"], Outcome::Fail { error: "not the leader".into() }));
    ops.retain(|op| !matches!(op, Op::Final { .. }));
    ops.extend(finals(&["w1-000001", "w1-000002", "w2-000001", "w1-000003", "w2-000002", "w7-000001"]));
    let r = checker::check(&ops);
    assert_eq!(r.unexpected.count, 2, "{r}");
    assert!(r.failed());
}

#[test]
fn a_history_without_final_reads_is_incomplete() {
    let mut ops = clean();
    ops.retain(|op| !matches!(op, Op::Final { .. }));
    let r = checker::check(&ops);
    assert!(r.failed() && r.incomplete.count == 1, "{r}");
}

#[test]
fn a_node_that_crashed_fails_the_run() {
    let mut ops = clean();
    ops.push(Op::Problem { t: 5.0, what: "n2 exited by itself: signal 6".into() });
    let r = checker::check(&ops);
    assert!(r.failed() && r.incomplete.count == 1, "{r}");
}

#[test]
fn a_history_round_trips_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let recorder = history::Recorder::create(&path).unwrap();
    for op in clean() {
        recorder.record(op);
    }
    assert_eq!(recorder.ops(), clean());
    assert_eq!(history::read(&path).unwrap(), clean());
}
