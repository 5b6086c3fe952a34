//! The fault harness's checker must be able to fail: hand-made histories, each with one
//! anomaly, and a clean one that passes; on several partitions, an anomaly in one of them
//! is found and named by its partition.
#![allow(dead_code)] // the shared modules serve the harness too

#[path = "faults/checker.rs"]
mod checker;
#[path = "faults/history.rs"]
mod history;

use history::{Op, Outcome, Part, Phase};

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// How many of the anomaly `name` (a row of the report) partition `p` holds.
fn count(p: &checker::PartitionReport, name: &str) -> usize {
    p.anomalies.iter().find(|(n, _)| *n == name).map_or(0, |(_, c)| *c)
}

fn part(partition: u32) -> Part {
    Part::new("t", partition)
}

fn send(t: f64, writer: u32, list: &[&str], outcome: Outcome) -> Op {
    send_on(0, t, writer, list, outcome)
}

fn send_on(partition: u32, t: f64, writer: u32, list: &[&str], outcome: Outcome) -> Op {
    Op::Send { t, part: part(partition), writer, ids: ids(list), outcome, done: t + 0.01 }
}

fn ok(offset: u64) -> Outcome {
    Outcome::Ok { offset }
}

fn poll(t: f64, consumer: u32, offset: u64, list: &[&str]) -> Op {
    poll_on(0, t, consumer, offset, list)
}

fn poll_on(partition: u32, t: f64, consumer: u32, offset: u64, list: &[&str]) -> Op {
    Op::Poll { t, part: part(partition), consumer, node: u64::from(consumer), offset, ids: ids(list) }
}

fn finals(list: &[&str]) -> Vec<Op> {
    finals_on(0, list)
}

fn finals_on(partition: u32, list: &[&str]) -> Vec<Op> {
    (1..=3).map(|node| Op::Final { t: 100.0, part: part(partition), node, ids: ids(list) }).collect()
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
    let differences = vec!["entry 7 differs".into()];
    ops.push(Op::Compare { t: 101.0, part: part(0), nodes: vec![1, 2, 3], commit: 9, differences });
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

/// Three partitions, each with its own writer and consumer, and offsets from 0 in each:
/// the same offsets hold different records in different partitions.
fn clean_partitions() -> Vec<Op> {
    let fault = |t, phase| Op::Fault { t, phase, name: "kill -9 the leader [partition 2]".into(), detail: "".into() };
    let mut ops = vec![fault(0.5, Phase::Start)];
    for p in 0..3 {
        let w = p + 1;
        let (a, b) = (format!("w{w}-000001"), format!("w{w}-000002"));
        ops.push(send_on(p, 1.0 + f64::from(p), w, &[&a], ok(0)));
        ops.push(send_on(p, 1.5 + f64::from(p), w, &[&b], ok(1)));
        ops.push(poll_on(p, 2.0 + f64::from(p), w, 0, &[&a, &b]));
    }
    ops.push(fault(6.0, Phase::Heal));
    for p in 0..3 {
        let w = p + 1;
        ops.extend(finals_on(p, &[&format!("w{w}-000001"), &format!("w{w}-000002")]));
    }
    ops
}

#[test]
fn partitions_are_checked_apart_and_a_clean_history_passes() {
    let r = checker::check(&clean_partitions());
    assert!(!r.failed(), "offset 0 holds one record per partition, not three at one offset: {r}");
    assert_eq!((r.sends_ok, r.records_acked, r.final_records), (6, 6, 6), "{r}");
    let per: Vec<(u32, usize, usize)> =
        r.partitions.iter().map(|p| (p.part.partition, p.records_acked, p.final_records)).collect();
    assert_eq!(per, vec![(0, 2, 2), (1, 2, 2), (2, 2, 2)], "{r}");
    assert!(r.partitions.iter().all(|p| p.anomalies.is_empty()), "{r}");
    let text = r.to_string();
    assert!(text.contains("t/2") && text.contains("verdict: PASS"), "{text}");
    // Availability: no partition is produced to after its second send, so the longest
    // stretch overlapping the fault is partition 0's, from its last ack (1.51 s) to the end.
    assert_eq!(r.availability.len(), 1);
    assert_eq!(r.availability[0].part, Some(part(0)), "{r}");
    assert!((r.availability[0].longest_gap - 98.49).abs() < 1e-9, "{r}");
}

#[test]
fn a_lost_write_on_partition_2_only_is_found_and_named() {
    let mut ops = clean_partitions();
    ops.retain(|op| !matches!(op, Op::Final { part: p, .. } if p.partition == 2));
    ops.extend(finals_on(2, &["w3-000001"]));
    let r = checker::check(&ops);
    assert_eq!(r.lost.count, 1, "{r}");
    assert!(r.failed());
    assert!(r.lost.examples[0].starts_with("t/2: w3-000002"), "the example names the partition: {r}");
    let lost: Vec<usize> = r.partitions.iter().map(|p| count(p, "lost writes")).collect();
    assert_eq!(lost, vec![0, 0, 1], "{r}");
    let text = r.to_string();
    assert!(text.lines().any(|l| l.trim_start().starts_with("t/2") && l.contains("FAIL: lost writes 1")), "{text}");
}

#[test]
fn an_anomaly_in_one_partition_fails_the_run_and_names_it() {
    // A consumer of partition 1 read a record its final logs do not hold.
    let mut ops = clean_partitions();
    ops.push(poll_on(1, 7.0, 2, 2, &["w9-000001"]));
    let r = checker::check(&ops);
    assert_eq!(r.aborted.count, 1, "{r}");
    assert!(r.aborted.examples[0].starts_with("t/1: "), "{r}");
    // Partition 1's replicas differ byte for byte.
    let mut ops = clean_partitions();
    let differences = vec!["entry 3 differs between n1 and n2".into()];
    ops.push(Op::Compare { t: 101.0, part: part(1), nodes: vec![1, 2, 3], commit: 3, differences });
    let r = checker::check(&ops);
    assert_eq!(r.divergent.count, 1, "{r}");
    assert_eq!(count(&r.partitions[1], "divergent replicas"), 1, "{r}");
    // Partition 2 was never read back after healing.
    let mut ops = clean_partitions();
    ops.retain(|op| !matches!(op, Op::Final { part: p, .. } if p.partition == 2));
    let r = checker::check(&ops);
    assert!(r.failed() && r.incomplete.count == 1, "{r}");
    assert!(r.incomplete.examples[0].starts_with("t/2: "), "{r}");
}

#[test]
fn a_history_written_before_partitions_reads_as_the_default_topic() {
    let line = r#"{"f":"send","t":1.0,"writer":1,"ids":["w1-000001"],"outcome":{"ok":{"offset":0}},"done":1.1}"#;
    let op: Op = serde_json::from_str(line).unwrap();
    assert_eq!(op.part(), Some(&Part::new("default", 0)));
    let written = serde_json::to_string(&send_on(3, 1.0, 1, &["w1-000001"], ok(0))).unwrap();
    assert!(written.contains(r#""topic":"t","partition":3"#), "{written}");
}
