//! Producer ids: blocks handed out in order and never twice, and InitProducerId (KIP-360).

use crate::metadata::PRODUCER_ID_LIMIT;
use crate::producers::*;

use super::{Log, batch};

#[test]
fn ids_come_from_the_blocks_in_order_and_a_block_is_asked_for_when_few_are_left() {
    let mut ids = IdBlocks::new(2, 2);
    assert!(ids.wants_block());
    ids.block_requested();
    assert!(!ids.wants_block(), "one request at a time");
    ids.add(100, 3).unwrap();
    assert_eq!(ids.take(), Some(100));
    assert!(!ids.wants_block(), "2 left is not fewer than 2");
    assert_eq!(ids.take(), Some(101));
    assert!(ids.wants_block());
    ids.block_requested();
    ids.add(500, 2).unwrap();
    assert_eq!([ids.take(), ids.take(), ids.take(), ids.take()], [Some(102), Some(500), Some(501), None]);
    ids.request_lost();
    assert!(ids.wants_block());
}

#[test]
fn a_block_is_refused_if_it_could_hand_out_an_id_twice() {
    let mut ids = IdBlocks::new(10, 1);
    ids.add(100, 10).unwrap();
    assert_eq!(ids.add(100, 10), Err(IdBlockError::NotAbove { first: 100, end: 110, next: 110 }), "applied twice");
    for _ in 0..10 {
        ids.take();
    }
    assert!(ids.add(105, 10).is_err(), "overlaps ids already handed out");
    assert_eq!(
        ids.add(PRODUCER_ID_LIMIT - 1, 2),
        Err(IdBlockError::PastLimit { first: PRODUCER_ID_LIMIT - 1, end: PRODUCER_ID_LIMIT + 1 })
    );
    assert_eq!(ids.add(200, 0), Err(IdBlockError::Empty));
    ids.add(200, 1).unwrap();
    assert_eq!(ids.add(300, 1), Err(IdBlockError::Full { blocks_max: 1 }));
}

#[test]
fn init_gives_a_new_producer_a_new_id_at_epoch_zero() {
    let mut ids = IdBlocks::new(1, 1);
    assert_eq!(init_producer_id((-1, -1), [], 0, &mut ids), InitOutcome::NoIds);
    ids.add(40, 2).unwrap();
    assert_eq!(init_producer_id((-1, -1), [], 42, &mut ids), InitOutcome::Granted { producer_id: 40, epoch: 0 });
    assert_eq!(init_producer_id((-1, -1), [], 42, &mut ids), InitOutcome::Granted { producer_id: 41, epoch: 0 });
}

#[test]
fn init_with_the_current_id_and_epoch_bumps_the_epoch() {
    // KIP-360: the same id at the next epoch; the old epoch's batches are fenced from then on.
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(40, 2, 0, 1));
    let mut ids = IdBlocks::new(1, 1);
    let granted = init_producer_id((40, 2), [&log.table], 100, &mut ids);
    assert_eq!(granted, InitOutcome::Granted { producer_id: 40, epoch: 3 });
    assert_eq!(log.table.check(&batch(40, 3, 0, 1)), Verdict::Append);
    log.commit(batch(40, 3, 0, 1));
    assert_eq!(log.table.check(&batch(40, 2, 1, 1)), Verdict::FencedEpoch { current: 3 });
}

#[test]
fn init_with_an_epoch_older_than_a_partition_knows_is_fenced() {
    let mut log = Log::new(ProducerConfig::default());
    log.commit(batch(40, 5, 0, 1));
    let empty = ProducerTable::new(ProducerConfig::default());
    let mut ids = IdBlocks::new(1, 1);
    let outcome = init_producer_id((40, 4), [&empty, &log.table], 100, &mut ids);
    assert_eq!(outcome, InitOutcome::Fenced { producer_id: 40, known_epoch: 5 });
    assert_eq!(outcome.kafka_error_code(), 47);
}

#[test]
fn init_at_the_last_epoch_gets_a_new_id() {
    let mut ids = IdBlocks::new(1, 1);
    ids.add(70, 1).unwrap();
    let outcome = init_producer_id((40, i16::MAX), [], 100, &mut ids);
    assert_eq!(outcome, InitOutcome::Granted { producer_id: 70, epoch: 0 });
}

#[test]
fn init_refuses_ids_never_allocated_and_half_set_fields() {
    let mut ids = IdBlocks::new(1, 1);
    // Bumping an id the cluster has not handed out yet would fence its future owner.
    assert!(matches!(init_producer_id((100, 0), [], 100, &mut ids), InitOutcome::Invalid(_)));
    assert!(matches!(init_producer_id((99, 0), [], 100, &mut ids), InitOutcome::Granted { .. }));
    for current in [(-1, 0), (5, -1), (-3, 2), (5, -2)] {
        let outcome = init_producer_id(current, [], 100, &mut ids);
        assert!(matches!(outcome, InitOutcome::Invalid(_)), "{current:?} gave {outcome:?}");
        assert_eq!(outcome.kafka_error_code(), 42);
    }
}
