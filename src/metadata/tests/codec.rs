//! The encodings of commands and snapshots: round trips, the documented layout, refusals,
//! and no panic on any bytes.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use crate::codec::DecodeError;
use crate::ids::{GroupId, Index, NodeId};
use crate::metadata::*;

use super::sequences::{command, ops};
use super::{Harness, nodes};

fn one_of_each() -> Vec<Command> {
    let config = TopicConfig {
        retention_bytes: Some(-1),
        retention_ms: Some(1000),
        max_message_bytes: Some(10),
        segment_bytes: Some(1 << 30),
        cleanup_policy: Some(CleanupPolicy::Compact),
    };
    vec![
        Command::RegisterBroker { node: NodeId(1), address: "a:1".into(), kafka_address: None, voter: true },
        Command::RegisterBroker {
            node: NodeId(2),
            address: "b:1".into(),
            kafka_address: Some("b:2".into()),
            voter: false,
        },
        Command::SetBrokerState { node: NodeId(3), state: BrokerState::Draining },
        Command::CreateTopic(CreateTopic {
            name: "t".into(),
            internal: true,
            created_at_ms: u64::MAX,
            config: config.clone(),
            replicas: vec![nodes(&[1, 2]), nodes(&[2, 1])],
        }),
        Command::DeleteTopic { name: "t".into() },
        Command::AlterTopicConfig {
            name: "t".into(),
            set: config,
            reset: vec![ConfigKey::SegmentBytes, ConfigKey::RetentionMs],
        },
        Command::AddPartitions { name: "t".into(), count: 3, replicas: vec![nodes(&[3])] },
        Command::MovePartition { group: GroupId(4), target: nodes(&[1, 5]) },
        Command::FinishMove { group: GroupId(4), replicas: nodes(&[1, 5]) },
        Command::AllocateProducerIds { node: NodeId(2), count: 1000 },
        Command::SetClusterSettings(ClusterSettings {
            auto_create_topics: true,
            producer_id_expiration_ms: 2000,
            producers_max: 7,
            ..ClusterSettings::default()
        }),
    ]
}

#[test]
fn every_kind_of_command_decodes_to_itself() {
    for command in one_of_each() {
        assert_eq!(Command::decode(command.encode()), Ok(command.clone()), "{command:?}");
    }
}

#[test]
fn the_command_layout_is_as_documented() {
    let bytes = Command::DeleteTopic { name: "t".into() }.encode();
    assert_eq!(&bytes[..], &[COMMAND_VERSION, 4, 1, 0, 0, 0, b't']);
    let bytes = Command::AllocateProducerIds { node: NodeId(2), count: 3 }.encode();
    assert_eq!(&bytes[..], &[2, 9, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]);
    let settings = ClusterSettings { producer_id_expiration_ms: 2000, producers_max: 7, ..ClusterSettings::default() };
    let bytes = Command::SetClusterSettings(settings).encode();
    assert_eq!(bytes.len(), 2 + 51, "settings take 51 bytes");
    assert_eq!(&bytes[2 + 39..2 + 47], &2000u64.to_le_bytes(), "producer_id_expiration_ms at settings byte 39");
    assert_eq!(&bytes[2 + 47..], &7u32.to_le_bytes(), "producers_max at settings byte 47");
}

/// Version 1 of a settings command: the layout before the producer limits.
fn settings_v1(auto_create_topics: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_slice(&[1, 10, u8::from(auto_create_topics)]);
    b.put_u32_le(4);
    b.put_u16_le(3);
    b.put_u32_le(100);
    b.put_i64_le(-1);
    b.put_i64_le(60_000);
    b.put_u32_le(1 << 20);
    b.put_u64_le(128 << 20);
    b
}

#[test]
fn a_version_1_settings_command_is_read_with_the_default_producer_limits() {
    let expected = ClusterSettings {
        auto_create_topics: true,
        default_partitions: 4,
        cluster_partitions_max: 100,
        topic_defaults: TopicDefaults { retention_ms: 60_000, ..TopicDefaults::default() },
        ..ClusterSettings::default()
    };
    assert_eq!(Command::decode(settings_v1(true).freeze()), Ok(Command::SetClusterSettings(expected.clone())));
    assert_eq!(expected.producer_config(), Ok(crate::producers::ProducerConfig::default()));
    // Version 1 ends after 39 bytes of settings: the producer limits would be trailing.
    let mut longer = settings_v1(true);
    longer.put_u64_le(2000);
    longer.put_u32_le(7);
    assert_eq!(Command::decode(longer.freeze()), Err(DecodeError::Trailing(12)));
}

#[test]
fn a_version_1_snapshot_is_restored_with_the_default_producer_limits() {
    let state = busy_state();
    let v2 = state.snapshot();
    // The same state in version 1: the version byte, and settings without the last 12 bytes.
    let settings_end = 1 + 8 + 8 + 51;
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&v2[1..settings_end - 12]);
    v1.extend_from_slice(&v2[settings_end..]);
    assert_eq!(MetadataState::restore(v1.into()), Ok(state));
}

#[test]
fn a_command_of_an_unknown_version_or_kind_or_with_bytes_after_it_is_refused() {
    let good = Command::DeleteTopic { name: "t".into() }.encode();
    for version in [0, 3] {
        let mut bytes = good.to_vec();
        bytes[0] = version;
        let error = Command::decode(bytes.into());
        assert!(matches!(error, Err(DecodeError::Invalid { what }) if what.contains("version")), "{version}");
    }
    let mut bytes = good.to_vec();
    bytes[1] = 99;
    assert!(matches!(Command::decode(bytes.into()), Err(DecodeError::Invalid { what }) if what.contains("kind")));
    let mut bytes = good.to_vec();
    bytes.push(0);
    assert_eq!(Command::decode(bytes.into()), Err(DecodeError::Trailing(1)));
    assert!(matches!(Command::decode(good.slice(..good.len() - 1)), Err(DecodeError::Truncated { .. })));
}

#[test]
fn config_keys_are_refused_unknown_repeated_or_out_of_order() {
    let encode = |entries: &[(u8, u64)]| {
        let mut b = BytesMut::new();
        b.put_slice(&[COMMAND_VERSION, 5, 1, 0, 0, 0, b't']);
        b.put_u32_le(entries.len() as u32);
        for (key, value) in entries {
            b.put_u8(*key);
            b.put_u64_le(*value);
        }
        b.put_u32_le(0);
        b.freeze()
    };
    assert!(Command::decode(encode(&[(1, 5), (5, 1)])).is_ok());
    for bad in [&[(6, 0)][..], &[(2, 0), (1, 0)], &[(1, 0), (1, 0)], &[(5, 2)], &[(3, u64::from(u32::MAX) + 1)]] {
        assert!(matches!(Command::decode(encode(bad)), Err(DecodeError::Invalid { .. })), "{bad:?}");
    }
}

#[test]
fn a_forged_count_is_refused_before_anything_is_allocated() {
    let mut b = BytesMut::new();
    b.put_slice(&[COMMAND_VERSION, 7]);
    b.put_u64_le(1);
    b.put_u32_le(u32::MAX);
    assert!(matches!(Command::decode(b.freeze()), Err(DecodeError::Truncated { .. })));
}

fn busy_state() -> MetadataState {
    let mut h = Harness::new(4);
    h.create("orders", 3, 3);
    h.create("clicks", 2, 1);
    let offsets = TopicConfig { cleanup_policy: Some(CleanupPolicy::Compact), ..TopicConfig::default() };
    let command = h.state.create_topic(CONSUMER_OFFSETS, Some(2), None, offsets, true, 9).unwrap();
    h.apply(command).unwrap();
    h.apply(Command::DeleteTopic { name: "clicks".into() }).unwrap();
    let target = nodes(&[4, 1]);
    h.apply(Command::MovePartition { group: GroupId(7), target }).unwrap();
    h.apply(Command::SetBrokerState { node: NodeId(2), state: BrokerState::Draining }).unwrap();
    h.apply(Command::AllocateProducerIds { node: NodeId(1), count: 10 }).unwrap();
    h.state
}

#[test]
fn a_snapshot_restores_the_state_it_was_taken_from() {
    let state = busy_state();
    let restored = MetadataState::restore(state.snapshot()).unwrap();
    assert_eq!(restored, state);
    assert_eq!(restored.group_fate(GroupId(4)), Fate::Removed);
    assert_eq!(restored.next_producer_id(), 10);
    assert_eq!(MetadataState::restore(MetadataState::new().snapshot()), Ok(MetadataState::new()));
}

#[test]
fn the_snapshot_layout_is_as_documented() {
    let empty = MetadataState::new().snapshot();
    assert_eq!(empty.len(), 1 + 8 + 8 + 51 + 4 + 4);
    assert_eq!(empty[0], SNAPSHOT_VERSION);
    assert_eq!(&empty[1..9], &1u64.to_le_bytes(), "the next group id follows the version");
}

#[test]
fn a_snapshot_of_an_unknown_version_is_refused() {
    let mut bytes = MetadataState::new().snapshot().to_vec();
    bytes[0] = 3;
    let error = MetadataState::restore(bytes.into()).unwrap_err();
    assert!(matches!(error, DecodeError::Invalid { what } if what.contains("version")));
}

#[test]
fn a_snapshot_with_brokers_out_of_order_is_refused() {
    let mut state = MetadataState::new();
    for (i, n) in [1u64, 2].iter().enumerate() {
        state.apply(Index(i as u64 + 1), &super::register(*n)).unwrap();
    }
    let bytes = state.snapshot();
    let header = 1 + 8 + 8 + 51 + 4;
    let one = (bytes.len() - header - 4) / 2;
    let mut swapped = bytes[..header].to_vec();
    swapped.extend_from_slice(&bytes[header + one..header + 2 * one]);
    swapped.extend_from_slice(&bytes[header..header + one]);
    swapped.extend_from_slice(&bytes[header + 2 * one..]);
    let error = MetadataState::restore(swapped.into()).unwrap_err();
    assert!(matches!(error, DecodeError::Invalid { what } if what.contains("broker order")), "{error}");
}

#[test]
fn a_snapshot_of_a_state_that_breaks_an_invariant_is_refused() {
    type Breaking = fn(&mut MetadataState);
    let cases: [(&str, Breaking); 4] = [
        ("group id allocated", |s| s.next_group_id = GroupId(2)),
        ("a replica on an unregistered node", |s| {
            s.brokers.remove(&NodeId(3));
        }),
        ("a replica on a removed broker", |s| s.brokers.get_mut(&NodeId(1)).unwrap().state = BrokerState::Removed),
        ("a replica listed twice", |s| {
            s.topics.get_mut("orders").unwrap().partitions[0].replicas = nodes(&[1, 1]);
        }),
    ];
    for (what, breaking) in cases {
        let mut state = busy_state();
        breaking(&mut state);
        assert_eq!(state.check(), Err(what));
        assert_eq!(MetadataState::restore(state.snapshot()), Err(DecodeError::Invalid { what }));
    }
}

fn mutate(bytes: &Bytes, flips: &[(usize, u8)], cut: Option<usize>) -> Bytes {
    let mut bytes = bytes.to_vec();
    for (at, x) in flips {
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] ^= x.max(&1);
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes.into()
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Command::decode(bytes.clone().into());
        let _ = MetadataState::restore(bytes.into());
    }

    /// Damage to a valid encoding gives an error or a value, never a panic; what decodes
    /// encodes back to the same bytes, and a restored state keeps every invariant.
    #[test]
    fn decoding_damaged_encodings_never_panics(
        ops in ops(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut state = MetadataState::new();
        for (i, op) in ops.iter().enumerate() {
            let command = command(&state, *op);
            let damaged = mutate(&command.encode(), &flips, cut);
            if let Ok(decoded) = Command::decode(damaged.clone()) {
                // A version byte damaged into an older version the decoder still reads
                // gives the same command, which encodes at the newest version.
                if damaged[0] == COMMAND_VERSION {
                    prop_assert_eq!(decoded.encode(), damaged);
                } else {
                    prop_assert_eq!(Command::decode(decoded.encode()), Ok(decoded));
                }
            }
            let _ = state.apply(Index(i as u64 + 1), &command);
        }
        let damaged = mutate(&state.snapshot(), &flips, cut);
        if let Ok(restored) = MetadataState::restore(damaged.clone()) {
            prop_assert_eq!(restored.check(), Ok(()));
            if damaged[0] == SNAPSHOT_VERSION {
                prop_assert_eq!(restored.snapshot(), damaged);
            } else {
                prop_assert_eq!(MetadataState::restore(restored.snapshot()), Ok(restored));
            }
        }
    }
}
