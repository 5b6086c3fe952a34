//! The leader's in-flight layer: pipelined batches checked against each other, retries of
//! batches not yet committed, a change of leader, the bound.

use crate::ids::{Index, Offset};
use crate::producers::*;

use super::{Log, batch};

/// A leader of a fresh partition: its no-op is committed and applied at index 1.
fn leader(batches_max: usize) -> (Log, InFlight) {
    let mut log = Log::new(ProducerConfig::default());
    let ready_at = log.commit_control();
    (log, InFlight::new(ready_at, batches_max))
}

/// Five batches of two records each from producer 7, sequences 0..10.
fn five() -> Vec<ProducerBatch> {
    (0..5).map(|i| batch(7, 0, i * 2, 2)).collect()
}

#[test]
fn five_pipelined_batches_are_checked_against_each_other() {
    let (log, mut inflight) = leader(64);
    for (i, b) in five().iter().enumerate() {
        assert_eq!(inflight.check(&log.table, b), Verdict::Append, "batch {i}");
        inflight.proposed(Index(2 + i as u64), b);
    }
    // The table alone knows nothing of them: a retry would be appended twice.
    assert_eq!(log.table.check(&five()[0]), Verdict::Append);
    assert_eq!(inflight.check(&log.table, &five()[0]), Verdict::InFlightDuplicate { index: Index(2) });
    assert_eq!(inflight.check(&log.table, &five()[3]), Verdict::InFlightDuplicate { index: Index(5) });
    assert_eq!(inflight.check(&log.table, &batch(7, 0, 11, 1)), Verdict::OutOfOrder { expected: 10 });
    assert_eq!(inflight.check(&log.table, &batch(7, 0, 10, 1)), Verdict::Append);
}

#[test]
fn committed_batches_leave_the_layer_and_are_answered_with_their_offsets() {
    let (mut log, mut inflight) = leader(64);
    for (i, b) in five().iter().enumerate() {
        inflight.proposed(Index(2 + i as u64), b);
    }
    for b in &five()[..3] {
        log.commit(*b);
    }
    inflight.forget_applied(log.table.applied_index());
    assert_eq!(inflight.len(), 2);
    let expected = Verdict::Duplicate { base_offset: Offset(2), last_offset: Offset(3) };
    assert_eq!(inflight.check(&log.table, &five()[1]), expected);
    assert_eq!(inflight.check(&log.table, &five()[4]), Verdict::InFlightDuplicate { index: Index(6) });
    assert_eq!(inflight.check(&log.table, &batch(7, 0, 10, 1)), Verdict::Append);
}

#[test]
fn the_window_spans_committed_and_in_flight_batches() {
    // Kafka's leader counts every batch it appended, replicated or not: the window is the
    // newest five of the committed and the proposed together.
    let (mut log, mut inflight) = leader(64);
    for b in &five()[..3] {
        log.commit(*b);
    }
    for (i, b) in (3..6).map(|i| batch(7, 0, i * 2, 2)).enumerate() {
        inflight.proposed(Index(5 + i as u64), &b);
    }
    assert_eq!(inflight.check(&log.table, &five()[0]), Verdict::OutOfOrder { expected: 12 }, "sixth newest");
    let expected = Verdict::Duplicate { base_offset: Offset(2), last_offset: Offset(3) };
    assert_eq!(inflight.check(&log.table, &five()[1]), expected, "fifth newest");
}

#[test]
fn a_leader_change_with_five_batches_in_flight() {
    // The old leader proposed five batches at indexes 2..=6; the new one won with only 2..=4
    // in its log, put its no-op at 5, and starts with an empty layer.
    let (mut log, mut old) = leader(64);
    for (i, b) in five().iter().enumerate() {
        old.proposed(Index(2 + i as u64), b);
    }
    drop(old);
    let mut new = InFlight::new(Index(5), 64);
    assert_eq!(new.check(&log.table, &five()[3]), Verdict::NotReady, "entries 2..=4 are not applied yet");
    let offsets: Vec<Offset> = five()[..3].iter().map(|b| log.commit(*b)).collect();
    assert_eq!(new.check(&log.table, &five()[3]), Verdict::NotReady, "its own no-op is not applied yet");
    assert_eq!(new.check(&log.table, &ProducerBatch::plain(1)), Verdict::Append, "plain batches need no table");
    assert_eq!(log.commit_control(), Index(5));
    // The client retries all five: those that survived get their original offsets, the lost
    // ones are appended, in order, once.
    for (b, base) in five().iter().zip(&offsets) {
        let expected = Verdict::Duplicate { base_offset: *base, last_offset: Offset(base.get() + 1) };
        assert_eq!(new.check(&log.table, b), expected);
    }
    assert_eq!(new.check(&log.table, &five()[4]), Verdict::OutOfOrder { expected: 6 }, "the fifth before the fourth");
    assert_eq!(new.check(&log.table, &five()[3]), Verdict::Append);
    new.proposed(Index(6), &five()[3]);
    assert_eq!(new.check(&log.table, &five()[3]), Verdict::InFlightDuplicate { index: Index(6) });
    assert_eq!(new.check(&log.table, &five()[4]), Verdict::Append);
}

#[test]
fn a_new_epoch_in_flight_fences_the_old_one() {
    let (log, mut inflight) = leader(64);
    inflight.proposed(Index(2), &batch(7, 0, 0, 1));
    assert_eq!(inflight.check(&log.table, &batch(7, 1, 0, 1)), Verdict::Append);
    inflight.proposed(Index(3), &batch(7, 1, 0, 1));
    assert_eq!(inflight.check(&log.table, &batch(7, 0, 1, 1)), Verdict::FencedEpoch { current: 1 });
    assert_eq!(inflight.check(&log.table, &batch(7, 1, 1, 1)), Verdict::Append);
}

#[test]
fn in_flight_batches_are_bounded() {
    let (mut log, mut inflight) = leader(3);
    for (i, b) in five()[..3].iter().enumerate() {
        inflight.proposed(Index(2 + i as u64), b);
    }
    assert_eq!(inflight.check(&log.table, &five()[3]), Verdict::Busy);
    // What needs no proposal is still answered, and batches that are not tracked still pass.
    assert_eq!(inflight.check(&log.table, &five()[0]), Verdict::InFlightDuplicate { index: Index(2) });
    assert_eq!(inflight.check(&log.table, &ProducerBatch::plain(1)), Verdict::Append);
    log.commit(five()[0]);
    inflight.forget_applied(log.table.applied_index());
    assert_eq!(inflight.check(&log.table, &five()[3]), Verdict::Append);
}
