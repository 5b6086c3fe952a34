//! Snapshots: the documented bytes, a round trip, refusals, and decoding that never panics.

use bytes::Bytes;
use proptest::prelude::*;

use crate::ids::Index;
use crate::producers::*;

use super::{Log, batch};

/// Producers at several epochs, a full window, a wrapped sequence and control entries.
fn sample() -> Log {
    let mut log = Log::new(ProducerConfig::default());
    log.commit_control();
    for i in 0..7 {
        log.commit_at(batch(3, 0, i, 1), 1000 + i64::from(i));
    }
    log.commit_at(batch(11, 4, i32::MAX - 1, 3), 900);
    log.commit_at(ProducerBatch::plain(2), 2000);
    log.commit_at(batch(5, 1, 0, 2), 2500);
    log.commit_control();
    log
}

/// Header bytes before the first producer, and the bytes of a producer with one batch.
const HEADER: usize = 21;
const ONE_BATCH_PRODUCER: usize = 27 + 32;

#[test]
fn a_snapshot_restores_the_table_it_was_taken_from() {
    let log = sample();
    let bytes = log.table.snapshot();
    let restored = ProducerTable::restore(bytes.clone(), ProducerConfig::default()).unwrap();
    assert_eq!(restored, log.table);
    assert_eq!(restored.snapshot(), bytes, "one table, one encoding");
    let empty = ProducerTable::new(ProducerConfig::default());
    assert_eq!(ProducerTable::restore(empty.snapshot(), ProducerConfig::default()).unwrap(), empty);
}

#[test]
fn a_snapshot_has_the_documented_bytes() {
    let mut log = Log::new(ProducerConfig::default());
    log.commit_at(batch(0x0102, 3, 9, 2), 77);
    let b = log.table.snapshot();
    assert_eq!(b.len(), HEADER + ONE_BATCH_PRODUCER);
    assert_eq!(b[0], SNAPSHOT_VERSION);
    assert_eq!(b[1..9], 1u64.to_le_bytes(), "applied index");
    assert_eq!(b[9..17], 77i64.to_le_bytes(), "clock");
    assert_eq!(b[17..21], 1u32.to_le_bytes(), "producer count");
    assert_eq!(b[21..29], 0x0102i64.to_le_bytes(), "producer id");
    assert_eq!(b[29..31], 3i16.to_le_bytes(), "epoch");
    assert_eq!(b[31..39], 1u64.to_le_bytes(), "last index");
    assert_eq!(b[39..47], 77i64.to_le_bytes(), "last seen");
    assert_eq!(b[47], 1, "batch count");
    assert_eq!(b[48..52], 9i32.to_le_bytes(), "first sequence");
    assert_eq!(b[52..56], 10i32.to_le_bytes(), "last sequence");
    assert_eq!(b[56..64], 0u64.to_le_bytes(), "base offset");
    assert_eq!(b[64..72], 1u64.to_le_bytes(), "last offset");
    assert_eq!(b[72..80], 77i64.to_le_bytes(), "batch timestamp");
}

/// Two producers (ids 1 and 2, one batch each) and a way to change their bytes.
fn two_producers() -> Vec<u8> {
    let mut log = Log::new(ProducerConfig::default());
    log.commit_at(batch(1, 0, 0, 1), 10);
    log.commit_at(batch(2, 0, 0, 1), 20);
    log.table.snapshot().to_vec()
}

/// A change to a snapshot's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

fn restore(bytes: Vec<u8>) -> Result<ProducerTable, crate::codec::DecodeError> {
    ProducerTable::restore(Bytes::from(bytes), ProducerConfig::default())
}

#[test]
fn restore_refuses_what_breaks_the_format_or_an_invariant() {
    let good = two_producers();
    assert!(restore(good.clone()).is_ok());
    let second = HEADER + ONE_BATCH_PRODUCER;
    let cases: Vec<(&str, Damage)> = vec![
        ("an unknown version", Box::new(|b| b[0] = 2)),
        ("trailing bytes", Box::new(|b| b.push(0))),
        ("ids not ascending", Box::new(move |b| b[second..second + 8].copy_from_slice(&1i64.to_le_bytes()))),
        ("a negative id", Box::new(move |b| b[second..second + 8].copy_from_slice(&(-4i64).to_le_bytes()))),
        ("a negative epoch", Box::new(move |b| b[second + 8..second + 10].copy_from_slice(&(-1i16).to_le_bytes()))),
        ("a shared last index", Box::new(move |b| b[second + 10] = 1)),
        ("a last index beyond the table", Box::new(move |b| b[second + 10] = 3)),
        ("a last index of 0", Box::new(|b| b[HEADER + 10] = 0)),
        ("last seen after the clock", Box::new(move |b| b[second + 18] = 21)),
        ("last seen going back", Box::new(move |b| b[second + 18] = 9)),
        ("a negative sequence", Box::new(move |b| b[second + 27..second + 31].copy_from_slice(&(-1i32).to_le_bytes()))),
        ("offsets out of order", Box::new(move |b| b[second + 35] = 9)),
        ("a count above the bytes", Box::new(|b| b[17..21].copy_from_slice(&3u32.to_le_bytes()))),
    ];
    for (what, break_it) in cases {
        let mut bytes = good.clone();
        break_it(&mut bytes);
        assert!(restore(bytes).is_err(), "{what} was accepted");
    }
    // A producer without batches, followed by enough bytes that the count alone passes.
    let mut log = Log::new(ProducerConfig::default());
    log.commit_at(batch(1, 0, 0, 1), 10);
    log.commit_at(batch(2, 0, 0, 1), 20);
    log.commit_at(batch(2, 0, 1, 1), 30);
    let mut bytes = log.table.snapshot().to_vec();
    bytes[HEADER + 26] = 0;
    bytes.drain(HEADER + 27..HEADER + ONE_BATCH_PRODUCER);
    assert!(restore(bytes).is_err(), "a producer without batches was accepted");
    for len in 0..good.len() {
        assert!(restore(good[..len].to_vec()).is_err(), "a snapshot cut to {len} bytes was accepted");
    }
}

#[test]
fn restore_evicts_down_to_producers_max() {
    let log = sample();
    let config = ProducerConfig::new(PRODUCER_ID_EXPIRATION_MS_DEFAULT, 2).unwrap();
    let restored = ProducerTable::restore(log.table.snapshot(), config).unwrap();
    assert_eq!(restored.len(), 2);
    assert_eq!(restored.epoch_of(3), None, "producer 3 was the least recently active");
    assert_eq!(restored.applied_index(), log.table.applied_index());
}

/// One to three bytes to overwrite: (where, modulo the length; the new value).
fn changes() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = restore(bytes);
    }

    /// A snapshot with bytes changed decodes to an error or to a table whose snapshot is those
    /// very bytes: nothing is accepted that the encoder would not write.
    #[test]
    fn a_damaged_snapshot_is_refused_or_exact(changes in changes()) {
        let mut bytes = sample().table.snapshot().to_vec();
        for (at, value) in changes {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        if let Ok(table) = restore(bytes.clone()) {
            prop_assert_eq!(table.snapshot().to_vec(), bytes);
        }
    }
}

#[test]
fn the_sample_covers_the_index_it_applied() {
    assert_eq!(sample().table.applied_index(), Index(12));
}
