//! Random command sequences: a refused command changes nothing, every invariant holds
//! after every command, and a snapshot taken anywhere, restored and fed the rest of the
//! sequence ends equal to the state that never stopped.

use proptest::prelude::*;

use crate::ids::{GroupId, Index, NodeId};
use crate::metadata::*;

/// One step of a sequence: which kind of command, and numbers that pick its fields.
pub(super) type Op = (u8, u64, u64, u64);

const KINDS: u8 = 11;

pub(super) fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec((0..KINDS, any::<u64>(), any::<u64>(), any::<u64>()), 0..80)
}

const NAMES: [&str; 6] = ["orders", "clicks", "a.b-c_d", CONSUMER_OFFSETS, "..", "__x"];

fn nodes_from(bits: u64, len: u64) -> Vec<NodeId> {
    (0..len).map(|i| NodeId((bits >> (i * 4)) % 7)).collect()
}

fn config_from(x: u64) -> TopicConfig {
    let bit = |b: u32| x & (1 << b) != 0;
    TopicConfig {
        retention_bytes: bit(0).then_some(((x >> 8) % 5) as i64 - 2),
        retention_ms: bit(1).then_some(((x >> 12) % 5) as i64 * 1000 - 1),
        max_message_bytes: bit(2).then_some(((x >> 16) % 3) as u32 * (1 << 20)),
        segment_bytes: bit(3).then_some([1 << 20, 2 << 20, 1 << 10][((x >> 20) % 3) as usize]),
        cleanup_policy: bit(4).then_some(if bit(5) { CleanupPolicy::Compact } else { CleanupPolicy::Delete }),
    }
}

/// A command built from `op` against the state `s`: most are what a proposer would send
/// (so that they apply), the rest are raw and often break a rule.
pub(super) fn command(s: &MetadataState, (kind, a, b, c): Op) -> Command {
    let name = NAMES[(a % NAMES.len() as u64) as usize].to_string();
    let node = NodeId(a % 7);
    // Mostly a partition that exists, sometimes any id up to just past the allocated ones.
    let groups: Vec<GroupId> = s.topics().flat_map(|t| t.partitions.iter().map(|p| p.group)).collect();
    let group = match groups.len() {
        0 => GroupId(b % (s.next_group_id().get() + 2)),
        _ if c % 7 == 0 => GroupId(b % (s.next_group_id().get() + 2)),
        n => groups[(b % n as u64) as usize],
    };
    let raw = c % 5 == 0;
    match kind {
        0 => Command::RegisterBroker {
            node,
            address: format!("10.0.0.{}:{}", b % 6, 7000 + c % 2),
            kafka_address: (c % 3 != 0).then(|| format!("k{}:9092", (c >> 4) % 6)),
            voter: c % 2 == 0,
        },
        1 => {
            let state = [BrokerState::Active, BrokerState::Draining, BrokerState::Removed][(b % 3) as usize];
            Command::SetBrokerState { node, state }
        }
        2 => {
            let internal = name.starts_with("__") != (c % 11 == 0);
            let config = config_from(c >> 8);
            let (partitions, factor) = (1 + (b % 6) as u32, 1 + ((b >> 8) % 4) as u16);
            match s.create_topic(&name, Some(partitions), Some(factor), config.clone(), internal, c) {
                Ok(command) if !raw => command,
                _ => Command::CreateTopic(CreateTopic {
                    name,
                    internal,
                    created_at_ms: c,
                    config,
                    replicas: (0..b % 4).map(|i| nodes_from(c >> (i * 3), 1 + (a >> 8) % 3)).collect(),
                }),
            }
        }
        3 => Command::DeleteTopic { name },
        4 => {
            let reset = ConfigKey::ALL.into_iter().filter(|k| c & (1 << k.code()) != 0).collect();
            Command::AlterTopicConfig { name, set: config_from(b), reset }
        }
        5 => {
            let current = s.partitions(&name).map_or(0, |p| p.len() as u32);
            let count = current + (b % 4) as u32;
            match s.add_partitions(&name, count) {
                Ok(command) if !raw => command,
                _ => {
                    let replicas = (0..c % 3).map(|i| nodes_from(b >> (i * 5), 1 + a % 3)).collect();
                    Command::AddPartitions { name, count, replicas }
                }
            }
        }
        6 => {
            let target = match s.replicas(group) {
                Some(replicas) if !raw => {
                    let mut target = replicas.to_vec();
                    let at = (c % target.len() as u64) as usize;
                    let active = s.active_brokers();
                    target[at] = active.get(((c >> 8) % 6) as usize).copied().unwrap_or(NodeId(1 + (c >> 8) % 6));
                    target
                }
                _ => nodes_from(c, 1 + a % 4),
            };
            Command::MovePartition { group, target }
        }
        7 => {
            let replicas = match (s.group(group), c % 3) {
                (Some((_, _, p)), 0) => p.target.clone().unwrap_or_default(),
                (Some((_, _, p)), 1) => p.replicas.clone(),
                _ => nodes_from(c, 2),
            };
            Command::FinishMove { group, replicas }
        }
        8 => {
            let count = if raw { PRODUCER_ID_BLOCK_MAX + (c % 2) as u32 } else { (b % 3000) as u32 };
            Command::AllocateProducerIds { node, count }
        }
        9 => {
            let mut settings = s.settings().clone();
            settings.auto_create_topics = c % 2 == 0;
            settings.cluster_partitions_max = 5 + (b % 60) as u32;
            settings.default_partitions = ((c >> 4) % 5) as u32;
            settings.default_replication_factor = ((c >> 8) % 4) as u16;
            settings.topic_defaults.max_message_bytes = [1 << 20, 4 << 20][((c >> 12) % 2) as usize];
            Command::SetClusterSettings(settings)
        }
        _ => match s.drain_moves(node).ok().and_then(|moves| moves.into_iter().next()) {
            Some(command) => command,
            None => Command::SetBrokerState { node, state: BrokerState::Draining },
        },
    }
}

proptest! {
    #[test]
    fn a_snapshot_restored_anywhere_goes_on_like_the_state_that_never_stopped(ops in ops(), split in 0usize..80) {
        let mut state = MetadataState::new();
        let mut restored: Option<MetadataState> = None;
        let split = split.min(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if i == split {
                let bytes = state.snapshot();
                let copy = MetadataState::restore(bytes.clone()).unwrap();
                prop_assert_eq!(&copy, &state);
                prop_assert_eq!(copy.snapshot(), bytes, "one state, one encoding");
                restored = Some(copy);
            }
            let command = command(&state, *op);
            prop_assert_eq!(Command::decode(command.encode()), Ok(command.clone()));
            let index = Index(i as u64 + 1);
            let before = state.clone();
            let result = state.apply(index, &command);
            if let Err(error) = &result {
                prop_assert_eq!(&state, &before, "refused ({}) yet changed: {:?}", error, command);
            }
            prop_assert_eq!(state.check(), Ok(()));
            if let Some(copy) = restored.as_mut() {
                prop_assert_eq!(copy.apply(index, &command), result);
            }
        }
        if let Some(copy) = restored {
            prop_assert_eq!(copy, state);
        }
    }
}

/// The generator must make commands that apply, or the property above proves little:
/// over a fixed pseudo-random run, every kind of command is applied at least once.
#[test]
fn the_sequence_generator_makes_every_kind_of_command_apply() {
    let mut state = MetadataState::new();
    let mut applied = [0u32; KINDS as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000u64 {
        let op = ((next() % u64::from(KINDS)) as u8, next(), next(), next());
        if state.apply(Index(i + 1), &command(&state, op)).is_ok() {
            applied[op.0 as usize] += 1;
        }
    }
    assert!(applied.iter().all(|n| *n > 0), "applied per kind: {applied:?}");
}
