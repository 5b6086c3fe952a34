//! The record codec: every record reads back as itself, and no bytes make it panic.

use proptest::prelude::*;

use super::*;

pub(super) fn offset_record(group: &str, topic: &str, partition: u32, offset: Option<i64>) -> StoredRecord {
    StoredRecord::Offset {
        key: OffsetKey { group: group.into(), topic: topic.into(), partition },
        value: offset.map(|offset| OffsetValue {
            offset,
            leader_epoch: 3,
            metadata: format!("m{offset}"),
            commit_timestamp_ms: 1_700_000_000_000,
        }),
    }
}

pub(super) fn group_record(group: &str, generation: Option<i32>) -> StoredRecord {
    StoredRecord::Group {
        group: group.into(),
        value: generation.map(|generation| GroupValue {
            generation,
            protocol_type: "consumer".into(),
            protocol_name: Some("range".into()),
            leader: Some("a-1".into()),
            written_at_ms: 1_700_000_000_000,
            members: vec![
                MemberValue {
                    member_id: "a-1".into(),
                    instance_id: Some("host-a".into()),
                    client_id: "a".into(),
                    client_host: "/10.0.0.1".into(),
                    session_timeout_ms: 45_000,
                    rebalance_timeout_ms: 300_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"\x00\x01asg"),
                },
                MemberValue {
                    member_id: "b-2".into(),
                    instance_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    session_timeout_ms: 10,
                    rebalance_timeout_ms: 10,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }),
    }
}

fn examples() -> Vec<StoredRecord> {
    vec![
        offset_record("g", "orders", 7, Some(-1)),
        offset_record("", "t", u32::MAX, Some(i64::MAX)),
        offset_record("g", "orders", 7, None),
        group_record("g", Some(i32::MAX)),
        group_record("g", None),
        StoredRecord::Group {
            group: "empty".into(),
            value: Some(GroupValue {
                generation: 4,
                protocol_type: String::new(),
                protocol_name: None,
                leader: None,
                written_at_ms: 0,
                members: vec![],
            }),
        },
    ]
}

#[test]
fn every_record_decodes_to_itself() {
    for record in examples() {
        assert_eq!(StoredRecord::decode(record.key(), record.value()), Ok(record.clone()));
    }
}

#[test]
fn a_null_or_empty_value_is_a_tombstone() {
    let record = offset_record("g", "orders", 0, None);
    assert_eq!(record.value(), None);
    assert_eq!(StoredRecord::decode(record.key(), Some(Bytes::new())), Ok(record));
}

#[test]
fn the_offset_value_is_laid_out_as_documented() {
    let value = offset_record("g", "t", 1, Some(0x0102)).value().unwrap();
    assert_eq!(value[0], RECORD_VERSION);
    assert_eq!(&value[1..9], &0x0102i64.to_le_bytes());
    assert_eq!(&value[9..13], &3i32.to_le_bytes());
    assert_eq!(&value[13..21], &1_700_000_000_000u64.to_le_bytes());
    assert_eq!(&value[21..25], &4u32.to_le_bytes());
    assert_eq!(&value[25..], b"m258");
    let key = offset_record("g", "t", 1, None).key();
    assert_eq!(&key[..], b"\x01\x01\x01\x00\x00\x00g\x01\x00\x00\x00t\x01\x00\x00\x00");
}

#[test]
fn cut_short_extended_or_of_another_version_a_record_is_refused() {
    for record in examples() {
        let (key, value) = (record.key(), record.value());
        for cut in 0..key.len() {
            assert!(StoredRecord::decode(key.slice(..cut), value.clone()).is_err(), "key cut at {cut}");
        }
        if let Some(value) = &value {
            for cut in 1..value.len() {
                assert!(StoredRecord::decode(key.clone(), Some(value.slice(..cut))).is_err(), "value cut at {cut}");
            }
            let mut longer = value.to_vec();
            longer.push(0);
            assert!(StoredRecord::decode(key.clone(), Some(longer.into())).is_err());
            let mut newer = value.to_vec();
            newer[0] = 2;
            assert!(StoredRecord::decode(key.clone(), Some(newer.into())).is_err());
        }
        let mut newer = key.to_vec();
        newer[0] = 2;
        assert!(StoredRecord::decode(newer.into(), value).is_err());
    }
}

#[test]
fn a_checkpoint_marker_is_read_back_and_never_taken_for_a_stored_record() {
    let (key, value) = checkpoint_marker(1_234_567);
    assert_eq!(checkpoint_floor(&key, Some(&value)), Some(1_234_567));
    assert!(StoredRecord::decode(key.clone(), Some(value.clone())).is_err(), "replay skips a marker");
    assert_eq!(checkpoint_floor(&key, None), None);
    assert_eq!(checkpoint_floor(&key, Some(&value[..5])), None, "a short floor is no floor");
    for record in examples() {
        assert_eq!(checkpoint_floor(&record.key(), record.value().as_deref()), None);
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        key in proptest::collection::vec(any::<u8>(), 0..64),
        value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
    ) {
        let _ = checkpoint_floor(&key, value.as_deref());
        let _ = StoredRecord::decode(key.into(), value.map(Bytes::from));
    }

    #[test]
    fn decoding_a_damaged_record_never_panics(
        which in 0usize..6,
        at in any::<usize>(),
        byte in any::<u8>(),
        in_key in any::<bool>(),
    ) {
        let record = &examples()[which];
        let mut key = record.key().to_vec();
        let mut value = record.value().map(|v| v.to_vec()).unwrap_or_default();
        let target = if in_key || value.is_empty() { &mut key } else { &mut value };
        let at = at % target.len();
        target[at] = byte;
        let _ = StoredRecord::decode(key.into(), Some(value.into()));
    }
}
