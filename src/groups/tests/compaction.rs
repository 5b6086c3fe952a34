//! Compaction keeps the latest record of each key, and a compacted log replays the same.

use proptest::prelude::*;

use super::records::{group_record, offset_record};
use super::*;

#[test]
fn compaction_keeps_the_latest_record_of_each_key_in_log_order() {
    let log = vec![
        offset_record("g", "orders", 0, Some(1)),
        group_record("g", Some(1)),
        offset_record("g", "orders", 1, Some(5)),
        offset_record("g", "orders", 0, Some(2)),
        offset_record("h", "orders", 0, Some(9)),
        offset_record("h", "orders", 0, None),
        group_record("g", Some(2)),
    ];
    assert_eq!(compact(&log), vec![log[2].clone(), log[3].clone(), log[6].clone()]);
}

#[test]
fn the_streaming_compaction_needs_one_position_per_key() {
    let log: Vec<StoredRecord> = (0..1_000).map(|i| offset_record("g", "orders", i % 10, Some(i64::from(i)))).collect();
    let mut compaction = Compaction::new();
    for (position, record) in log.iter().enumerate() {
        compaction.scan(position as u64, &record.key());
    }
    assert_eq!(compaction.keys(), 10);
    let kept = log.iter().enumerate().filter(|(p, r)| compaction.keeps(*p as u64, Some(&r.key()), r.is_tombstone()));
    assert_eq!(kept.map(|(p, _)| p).collect::<Vec<_>>(), (990..1_000).collect::<Vec<_>>());
    assert!(!compaction.keeps(999, None, false), "a record without a key is not the coordinator's");
}

/// A random log over a few keys, tombstones included.
fn logs() -> impl Strategy<Value = Vec<StoredRecord>> {
    let record = (0u8..2, 0u8..3, 0u32..3, proptest::option::weighted(0.8, 0i64..100)).prop_map(|(kind, g, p, v)| {
        let group = format!("g{g}");
        if kind == 0 { offset_record(&group, "orders", p, v) } else { group_record(&group, v.map(|v| v as i32)) }
    });
    proptest::collection::vec(record, 0..60)
}

fn replayed(log: &[StoredRecord]) -> BTreeMap<String, CommittedGroup> {
    let mut c = Coordinator::new(settings(), 1);
    for record in log {
        c.replay(record.key(), record.value()).unwrap();
    }
    c.committed_state()
}

proptest! {
    #[test]
    fn a_compacted_log_keeps_exactly_the_last_live_record_of_each_key_and_replays_the_same(log in logs()) {
        let compacted = compact(&log);
        for record in &compacted {
            prop_assert!(!record.is_tombstone());
            let last = log.iter().rev().find(|r| r.key() == record.key()).unwrap();
            prop_assert_eq!(last, record);
        }
        for record in &log {
            let last = log.iter().rev().find(|r| r.key() == record.key()).unwrap();
            prop_assert_eq!(last.is_tombstone(), !compacted.contains(last));
        }
        prop_assert_eq!(replayed(&compacted), replayed(&log));
        prop_assert_eq!(compact(&compacted), compacted.clone(), "compacting twice changes nothing");
    }
}
