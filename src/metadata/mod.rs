//! The metadata state machine: what group 0, the metadata group, replicates. Its log holds
//! `Command`s; every node applies the committed ones in order to a `MetadataState` and so
//! learns the brokers, the topics, where every partition's replicas are, and the id
//! counters. The module is pure: no I/O, no clocks (times arrive inside commands), no
//! randomness, so every node that applies the same commands holds the same state.
//!
//! # Driving it
//!
//! **Applying.** For each committed entry of group 0, in index order, decode its payload
//! with `Command::decode` and call `state.apply(index, &command)`. A refused command
//! (`Err(MetaError)`) changes nothing and is not a fault: it is the answer to that entry's
//! proposer, who hands the message on (it names the rule broken). An entry whose payload
//! does not decode is refused the same way: every node holds the same bytes, so every node
//! refuses it. Never skip an entry and never apply one twice: after a restart, start from
//! the snapshot (`MetadataState::restore`) and apply the entries after its index.
//!
//! **Proposing.** A proposer (on the metadata leader, or any node forwarding a client's
//! request) computes what needs a decision from its current state, then proposes:
//! - create a topic: `state.create_topic(name, partitions, factor, config, internal, now_ms)`
//!   validates the request and places the partitions on the least-loaded active brokers
//!   (`placement.rs`); propose the `Command` it returns. Applying checks everything again,
//!   since the state may have changed in between (two creates of one name race, a broker
//!   was drained): the first to commit wins and the other is refused. The topic's group ids
//!   are allocated when the command is applied; `Applied::TopicCreated` lists them.
//! - add partitions: `state.add_partitions(name, total)`.
//! - drain a node (issue 17): propose `SetBrokerState { Draining }`, then each command of
//!   `state.drain_moves(node)`; once `groups_hosted_by(node)` is empty, `SetBrokerState
//!   { Removed }`.
//! - leader balancing: `state.leader_moves(&who_leads_now)` lists the partitions whose
//!   leadership should move; transfer it only to a replica that is up and caught up.
//! - delete a topic, alter its config, set a broker's state, set cluster settings,
//!   allocate producer ids: build the command directly; `apply` validates it.
//!
//! **Moving replicas** takes two commands around the group's own membership change:
//! `MovePartition { group, target }` makes the target's nodes host the group (they start
//! empty replicas, as learners); the group's leader then changes its Raft configuration
//! (joint consensus) and, once the new configuration is committed, proposes
//! `FinishMove { group, replicas: target }` (or the old replicas, to abandon the move).
//! Only then does the metadata drop the nodes that left, so that no node deletes a replica
//! that is still a voter of its group.
//!
//! **Hosting replicas.** After applying, a node compares the state with the group
//! directories it has: `state.local_plan(me, local_groups)` lists the groups to create and
//! the local replicas to delete. The rule behind it is `group_fate`: group ids are
//! allocated in order and never reused, so a group below `next_group_id` that no topic holds
//! belongs to a deleted topic (delete it), a partition whose replicas (and move target) do
//! not name this node was moved off it (delete it), and a group at or above
//! `next_group_id` is from a future this node has not applied yet (keep it). A node that was
//! down while its topic was deleted deletes the files once it has caught up.
//!
//! **Snapshots.** `state.snapshot()` is the whole state as bytes; `MetadataState::restore`
//! gives it back (`restore(snapshot(s)) == s`) and refuses bytes that are malformed or hold
//! a state that breaks an invariant. The bytes of commands and snapshots are documented in
//! `codec.rs`.
//!
//! **First start.** A new cluster's first metadata leader proposes a `RegisterBroker` for
//! each initial member (`voter: true`), `SetClusterSettings` seeded from its configuration,
//! and the topic `default` with one partition (DESIGN.md).

mod apply;
mod codec;
mod command;
mod config;
mod error;
mod names;
mod placement;
mod propose;
mod state;

#[cfg(test)]
mod tests;

pub use apply::{PRODUCER_ID_BLOCK_MAX, PRODUCER_ID_LIMIT};
pub use codec::{COMMAND_VERSION, SNAPSHOT_VERSION};
pub use command::{Applied, Command, CreateTopic};
pub use config::{
    CLUSTER_PARTITIONS_LIMIT, CleanupPolicy, ClusterSettings, ConfigKey, EffectiveConfig, MESSAGE_BYTES_MAX,
    PARTITIONS_PER_TOPIC_MAX, SEGMENT_BYTES_MIN, SEGMENT_ROOM_BYTES, TopicConfig, TopicDefaults,
};
pub use error::MetaError;
pub use names::{CONSUMER_OFFSETS, INTERNAL_PREFIX, TOPIC_NAME_CHARS_MAX, check_address, check_topic_name};
pub use placement::{place_partitions, replace_replica, topic_seed};
pub use propose::LeaderMove;
pub use state::{
    BROKERS_MAX, Broker, BrokerState, Fate, LocalPlan, MetadataState, NodeLoad, Partition, Topic, TopicId,
};
