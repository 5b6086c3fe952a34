//! Kafka's sequence rules, one at a time, against committed state (`ProducerTable::check`).

use crate::ids::{Index, Offset};
use crate::producers::*;

use super::{Log, batch};

#[test]
fn a_duplicate_within_the_window_gets_the_original_offsets() {
    let mut log = Log::new(ProducerConfig::default());
    let mut originals = Vec::new();
    for i in 0..WINDOW as i32 {
        // Another producer's batch between them, so offsets are not simply the sequences.
        log.commit(batch(99, 0, i, 1));
        let base = log.commit(batch(7, 0, i * 3, 3));
        originals.push((i * 3, base));
    }
    for (first_seq, base) in originals {
        let expected = Verdict::Duplicate { base_offset: base, last_offset: Offset(base.get() + 2) };
        assert_eq!(log.table.check(&batch(7, 0, first_seq, 3)), expected, "retry of the batch at sequence {first_seq}");
    }
}

#[test]
fn a_retry_older_than_the_window_is_out_of_order() {
    let mut log = Log::new(ProducerConfig::default());
    for i in 0..=WINDOW as i32 {
        log.commit(batch(7, 0, i * 2, 2));
    }
    let next = (WINDOW as i32 + 1) * 2;
    // The first batch fell out of the window: no offsets to answer with, so it is refused as
    // Kafka does (not DUPLICATE_SEQUENCE_NUMBER).
    assert_eq!(log.table.check(&batch(7, 0, 0, 2)), Verdict::OutOfOrder { expected: next });
    assert!(matches!(log.table.check(&batch(7, 0, 2, 2)), Verdict::Duplicate { .. }), "the second is still inside");
}

#[test]
fn a_gap_is_out_of_order() {
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(7, 0, 0, 3));
    assert_eq!(log.table.check(&batch(7, 0, 4, 1)), Verdict::OutOfOrder { expected: 3 });
    assert_eq!(log.table.check(&batch(7, 0, 3, 1)), Verdict::Append);
    // A batch that overlaps a committed one without matching it is no duplicate either.
    assert_eq!(log.table.check(&batch(7, 0, 0, 2)), Verdict::OutOfOrder { expected: 3 });
    assert_eq!(log.table.check(&batch(7, 0, 1, 2)), Verdict::OutOfOrder { expected: 3 });
}

#[test]
fn an_older_epoch_is_fenced() {
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(7, 0, 0, 1));
    log.commit(batch(7, 1, 0, 1));
    assert_eq!(log.table.check(&batch(7, 0, 1, 1)), Verdict::FencedEpoch { current: 1 });
    // Even a retry of a batch the old epoch committed: the zombie gets no answer but fenced.
    assert_eq!(log.table.check(&batch(7, 0, 0, 1)), Verdict::FencedEpoch { current: 1 });
}

#[test]
fn a_new_epoch_starts_at_sequence_zero() {
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(7, 0, 0, 5));
    assert_eq!(log.table.check(&batch(7, 1, 5, 1)), Verdict::OutOfOrder { expected: 0 });
    assert_eq!(log.table.check(&batch(7, 1, 0, 1)), Verdict::Append);
    log.commit(batch(7, 1, 0, 1));
    assert_eq!(log.table.batches_of(7).unwrap().len(), 1, "the old epoch's batches are gone");
    assert_eq!(log.table.check(&batch(7, 1, 1, 1)), Verdict::Append);
}

#[test]
fn an_unknown_producer_is_accepted_at_any_sequence() {
    let mut log = Log::new(ProducerConfig::default());
    assert_eq!(log.table.check(&batch(7, 3, 7, 2)), Verdict::Append);
    let base = log.commit(batch(7, 3, 7, 2));
    assert_eq!(log.table.check(&batch(7, 3, 9, 1)), Verdict::Append);
    assert_eq!(log.table.check(&batch(7, 3, 7, 2)), Verdict::Duplicate { base_offset: base, last_offset: Offset(1) });
    assert_eq!(log.table.check(&batch(7, 3, 10, 1)), Verdict::OutOfOrder { expected: 9 });
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(sequence_after(i32::MAX, 1), 0);
    assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
    assert_eq!(sequence_after(5, 0), 5);
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(7, 0, i32::MAX - 2, 3));
    assert_eq!(log.table.check(&batch(7, 0, 0, 1)), Verdict::Append, "after i32::MAX comes 0");
    assert_eq!(log.table.check(&batch(7, 0, i32::MAX, 1)), Verdict::OutOfOrder { expected: 0 });
    // A batch that spans the wrap ends at a small sequence, and its retry is found.
    log.commit(batch(8, 0, i32::MAX - 1, 4));
    assert_eq!(batch(8, 0, i32::MAX - 1, 4).last_seq(), 1);
    assert_eq!(log.table.check(&batch(8, 0, 2, 1)), Verdict::Append);
    assert!(matches!(log.table.check(&batch(8, 0, i32::MAX - 1, 4)), Verdict::Duplicate { .. }));
    assert_eq!(log.table.check(&batch(8, 0, 0, 2)), Verdict::OutOfOrder { expected: 2 });
}

#[test]
fn a_batch_without_a_producer_id_is_always_appended() {
    let mut log = Log::new(ProducerConfig::default());
    for _ in 0..3 {
        assert_eq!(log.table.check(&ProducerBatch::plain(4)), Verdict::Append);
        log.commit(ProducerBatch::plain(4));
    }
    // Kafka counts every negative producer id as none, not only -1.
    assert_eq!(log.table.check(&batch(-5, 0, 0, 1)), Verdict::Append);
    log.commit(batch(-5, 0, 0, 1));
    assert!(log.table.is_empty(), "batches without a producer id are not tracked");
    assert_eq!(log.table.applied_index(), Index(4));
}

#[test]
fn producer_fields_no_producer_sends_are_invalid() {
    let table = ProducerTable::new(ProducerConfig::default());
    assert!(matches!(table.check(&batch(7, -1, 0, 1)), Verdict::Invalid(_)));
    assert!(matches!(table.check(&batch(7, 0, -3, 1)), Verdict::Invalid(_)));
    assert!(matches!(table.check(&batch(7, 0, 0, 0)), Verdict::Invalid(_)));
}

#[test]
fn applying_an_entry_twice_changes_nothing() {
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(7, 0, 0, 1));
    log.commit(batch(7, 0, 1, 1));
    let before = log.table.clone();
    log.table.apply(Index(2), &batch(7, 0, 1, 1), Offset(1), 0);
    log.table.apply(Index(1), &batch(9, 0, 0, 1), Offset(0), 5);
    log.table.advance(Index(1));
    assert_eq!(log.table, before);
}

#[test]
fn the_log_is_the_truth_when_applying() {
    // A replica records what was committed, even a batch `check` would have refused: only
    // then do all replicas agree whatever a leader did.
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(7, 2, 0, 1));
    log.commit(batch(7, 1, 4, 1));
    assert_eq!(log.table.epoch_of(7), Some(1));
    assert_eq!(log.table.check(&batch(7, 1, 5, 1)), Verdict::Append);
}

#[test]
fn each_verdict_maps_to_its_kafka_error() {
    let cases = [
        (Verdict::Append, 0),
        (Verdict::Duplicate { base_offset: Offset(1), last_offset: Offset(2) }, 0),
        (Verdict::InFlightDuplicate { index: Index(3) }, 0),
        (Verdict::OutOfOrder { expected: 1 }, 45),
        (Verdict::FencedEpoch { current: 1 }, 47),
        (Verdict::Invalid("x"), 87),
        (Verdict::NotReady, 6),
        (Verdict::Busy, 7),
    ];
    for (verdict, code) in cases {
        assert_eq!(verdict.kafka_error_code(), code, "{verdict:?}");
    }
}
