//! What goes into the coordinator and what comes out: the requests of Kafka's classic group
//! protocol as plain data (their fields as Kafka names them, whatever the version), the
//! answers, and the `Output` every call returns.

use bytes::Bytes;

use super::error::GroupError;
use super::records::StoredRecord;

/// The caller's name for a request; the reply to it carries the same handle, in this call's
/// `Output` or a later one. Handles must be unique among the requests still waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u64);

/// The coordinator's name for an append it asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppendToken(pub(super) u64);

impl AppendToken {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Records to append to the coordinator's partition, as one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub token: AppendToken,
    pub records: Vec<StoredRecord>,
}

/// What one call produced.
///
/// Ordering contract: `replies` may be sent at once, in order; none of them depends on
/// `appends` (a reply that needs its records committed comes out of `committed`). Append
/// `appends` in order; then, for each, call `committed(token)` once its batch is committed,
/// or `append_failed(token)` if it never will be, in the order of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub replies: Vec<(Handle, Reply)>,
    pub appends: Vec<Append>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.appends.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResponse),
    Sync(SyncResponse),
    Leave(LeaveResponse),
    Commit(CommitResponse),
}

/// One protocol (assignor) a member offers, with its metadata (for consumers: the
/// subscription), which keel passes to the leader without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member that has none yet.
    pub member_id: String,
    /// Set for a static member (KIP-345, JoinGroup v5+).
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: i32,
    /// Below zero (JoinGroup v0 has none): the session timeout.
    pub rebalance_timeout_ms: i32,
    /// JoinGroup v4+ (KIP-394): a member without an id is given one with MEMBER_ID_REQUIRED
    /// and must join again with it; before v4 it is added at once.
    pub require_known_member_id: bool,
    /// From the request header and the connection, for DescribeGroups.
    pub client_id: String,
    pub client_host: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    /// -1 with an error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's member id; empty with an error.
    pub leader: String,
    /// The member's id: the one it sent, or the one it is given.
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol, for the leader only.
    pub members: Vec<JoinedMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The leader's assignment for each member; empty from the other members.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    /// This member's assignment, as the leader sent it; empty with an error.
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error: Option<GroupError>,
}

/// LeaveGroup v3+ names several members; before v3, one member id and no instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// Before v3 the one member's error is the top-level error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: Option<GroupError>,
    pub members: Vec<(LeavingMember, Option<GroupError>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 with an empty member id: a consumer that assigns itself partitions (`assign()`)
    /// and only stores offsets, allowed while the group has no members.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommitOffset>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// -1 for none (OffsetCommit before v6).
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitResponse {
    /// One per partition of the request, in its order.
    pub partitions: Vec<PartitionResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: i32,
    pub error: Option<GroupError>,
}

/// A committed offset as OffsetFetch answers it: -1, epoch -1 and "" when none is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// The states of Kafka's classic group, by the names DescribeGroups and ListGroups use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members; the group may still hold offsets.
    Empty,
    /// Waiting for the members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    Stable,
    /// Being deleted, or unknown.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A group as DescribeGroups answers it; an unknown group is `Dead` with no members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol; empty unless the group is stable.
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the chosen protocol; empty unless the group is stable.
    pub metadata: Bytes,
    /// Empty unless the group is stable.
    pub assignment: Bytes,
}

/// A group as ListGroups answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}
