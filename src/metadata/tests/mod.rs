//! Tests of the metadata state machine across its files: each command and each refusal
//! (`commands.rs`, `moves.rs`), the encodings (`codec.rs`), random command sequences
//! (`sequences.rs`) and placement (`placement.rs`).

mod codec;
mod commands;
mod moves;
mod placement;
mod sequences;

use crate::ids::{GroupId, Index, NodeId};

use super::{Applied, Command, MetaError, MetadataState, TopicConfig};

pub(super) fn register(n: u64) -> Command {
    Command::RegisterBroker {
        node: NodeId(n),
        address: format!("10.0.0.{n}:7000"),
        kafka_address: Some(format!("10.0.0.{n}:9092")),
        voter: n <= 3,
    }
}

/// A state and the index of the next entry, applying commands as a node would.
pub(super) struct Harness {
    pub state: MetadataState,
    index: u64,
}

impl Harness {
    /// A cluster of brokers 1..=nodes.
    pub fn new(nodes: u64) -> Harness {
        let mut h = Harness { state: MetadataState::new(), index: 0 };
        for n in 1..=nodes {
            h.apply(register(n)).unwrap();
        }
        h
    }

    pub fn apply(&mut self, command: Command) -> Result<Applied, MetaError> {
        self.index += 1;
        self.state.apply(Index(self.index), &command)
    }

    /// Applies a command that must be refused, and checks that it changed nothing.
    pub fn refused(&mut self, command: Command) -> MetaError {
        let before = self.state.clone();
        let error = self.apply(command).expect_err("the command should be refused");
        assert_eq!(self.state, before, "a refused command changed the state ({error})");
        error
    }

    /// Creates a topic placed by the proposer's helper; returns its groups.
    pub fn create(&mut self, name: &str, partitions: u32, factor: u16) -> Vec<GroupId> {
        let command = self.state.create_topic(name, Some(partitions), Some(factor), TopicConfig::default(), false, 7);
        match self.apply(command.unwrap()).unwrap() {
            Applied::TopicCreated { groups, .. } => groups,
            other => panic!("expected a created topic, got {other:?}"),
        }
    }
}

pub(super) fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}
