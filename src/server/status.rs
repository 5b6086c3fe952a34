//! What one replica reports about its group: a domain type, which each front end turns
//! into its own wire form (`keel-client`'s metadata, `keel status`).

use crate::raft::{Membership, NodeId, Role};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub node_id: NodeId,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub last_index: u64,
    pub log_start_offset: u64,
    /// The offset after the last committed record.
    pub log_end_offset: u64,
    pub members: Vec<MemberStatus>,
    /// Idempotent producers in the partition's producer table (0 in the metadata group).
    pub producers_tracked: usize,
    /// The latest configuration in this replica's log, and whether it is committed: a move
    /// (`broker/moves.rs`) reads its phase from the leader's.
    pub membership: Membership,
    pub membership_committed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub voter: bool,
    /// Known on the leader: the highest index replicated to this member.
    pub match_index: Option<u64>,
}

/// The role as users see it (`keel status`, the client protocol): a pre-candidate is a
/// candidate. (Metrics tell the two apart: `metrics::role_label`.)
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate | Role::PreCandidate => "candidate",
        Role::Learner => "learner",
    }
}
