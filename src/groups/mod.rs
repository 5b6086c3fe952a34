//! Consumer groups: the group coordinator of Kafka's classic protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups,
//! ListGroups) as a pure state machine, like the Raft core: no I/O, no clock (time
//! arrives as `now_ms`), no randomness, so the same calls give the same answers.
//!
//! Committed offsets and group metadata live in the internal topic `__consumer_offsets`;
//! the coordinator of group G is the leader of its partition `coordinator_partition(G, N)`.
//! What must survive the coordinator (offsets, the last generation and its assignment) is
//! a record of that partition (`records.rs`); membership, heartbeats and timers live only
//! in the coordinator's memory, and members rejoin after the coordinator moves, as they
//! do after any rebalance.
//!
//! # Driving it
//!
//! **Taking over.** When this node becomes the leader of partition P and the first entry
//! of its term is committed (so nothing it reads can still be cut), make
//! `Coordinator::new(settings, term)`: `term` goes into the member ids it makes, so they
//! differ from every earlier coordinator's. Read P from its start to the commit index and
//! `replay(key, value)` each record, in order (a record that does not decode is refused;
//! count it and go on). Then `finish_loading(now_ms)`. Until then the coordinator answers
//! COORDINATOR_LOAD_IN_PROGRESS itself (REBALANCE_IN_PROGRESS to SyncGroup and nothing
//! to Heartbeat, as Kafka does for older clients). A node that does not lead P answers
//! NOT_COORDINATOR (16) for its groups without asking a coordinator.
//!
//! **Requests.** `join`, `sync`, `leave` and `commit` take a `Handle` the caller picks,
//! unique among the requests still waiting, and return an `Output`: `replies` answer
//! requests by handle, this one or earlier ones (a JoinGroup waits for the other members,
//! a commit for its records), and `appends` are records to write. `heartbeat`,
//! `fetch_offsets`, `describe` and `list` answer at once. Errors are `GroupError`s; each
//! is one Kafka error code (`GroupError::code`) and a message for keel's own client.
//!
//! **Appends.** Write each `Append` as one batch of P: for each record, `key()` as the
//! record key and `value()` as its value (`None`: a null value, or an empty one where
//! the batch format has no null). Once the batch's entry commits, call
//! `committed(token, now_ms)`; if it never will (refused, disk full), call
//! `append_failed(token, error, now_ms)`. Calls for the appends of one `Output` come in
//! its order, the order of the log. A commit is acknowledged to its client only from
//! `committed`, so an acknowledged offset is replicated.
//!
//! **Time.** Call `tick(now_ms)` often (every 100 ms is plenty): it removes members whose
//! session ran out, ends rebalances, and expires offsets past their retention.
//!
//! **Giving up.** When this node stops leading P, `shutdown()` answers every waiting
//! request NOT_COORDINATOR; the appends in flight are the new leader's to commit or cut,
//! and its coordinator reads them when it loads.
//!
//! **Keeping P small.** `compaction.rs` says which records a rewrite keeps; offsets of
//! empty groups expire after `offsets_retention_ms` (seven days, Kafka's default) by
//! tombstones `tick` appends. `lag.rs` computes lag for `keel group describe`.

mod api;
mod assignment;
mod compaction;
mod coordinator;
mod error;
mod group;
mod lag;
mod membership;
mod offsets;
mod rebalance;
mod records;
mod settings;

#[cfg(test)]
mod tests;

pub use api::{
    Append, AppendToken, CommitOffset, CommitRequest, CommitResponse, FetchedOffset, GroupDescription, GroupListing,
    GroupState, Handle, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, JoinedMember, LeaveRequest,
    LeaveResponse, LeavingMember, MemberDescription, Output, PartitionResult, Protocol, Reply, SyncRequest,
    SyncResponse,
};
pub use assignment::{
    Assignor, CONSUMER_PROTOCOL_TYPE, ProtocolError, decode_assignment, decode_subscription, encode_assignment,
    encode_subscription,
};
pub use compaction::{Compaction, compact};
pub use coordinator::Coordinator;
pub use error::{GroupError, check_group_id, error_code};
pub use group::CommittedGroup;
pub use lag::{PartitionLag, lag, total_lag};
pub use records::{
    GroupValue, MemberValue, OffsetKey, OffsetValue, RECORD_VERSION, StoredRecord, checkpoint_floor, checkpoint_marker,
};
pub use settings::{
    CLIENT_TEXT_BYTES_MAX, GROUP_ID_BYTES_MAX, MEMBER_ID_BYTES_MAX, MEMBER_ID_PREFIX_BYTES_MAX,
    PROTOCOL_NAME_BYTES_MAX, PROTOCOLS_PER_MEMBER_MAX, Settings,
};

/// The partition of `__consumer_offsets` whose leader coordinates `group_id`, of
/// `partitions`: FNV-1a (64-bit) of the id's bytes, modulo the partition count. This is a
/// stored contract: every committed offset sits in the partition it names, so it never
/// changes, and neither does the topic's partition count (`metadata` refuses to add any).
pub fn coordinator_partition(group_id: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "__consumer_offsets has at least one partition");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u32
}
