//! The core's typed errors: what a caller did that cannot proceed, and why.

use super::{ConfigError, MembershipError, NodeId, StoreError};

/// Why `Raft::new` could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the log to find its configuration failed: {0}")]
    Store(#[from] StoreError),
    #[error("the configuration entry at index {index} is unreadable: {source}")]
    Membership { index: u64, source: MembershipError },
    #[error(
        "the hard state's commit index {commit} is past the log's last index {last_index}: the log lost durable entries"
    )]
    CommitBeyondLog { commit: u64, last_index: u64 },
}

/// Why a leader turned a proposal away for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BusyReason {
    #[error("{pending} uncommitted bytes are pending and the limit is {max} (uncommitted_bytes_max)")]
    UncommittedBytes { pending: u64, max: u64 },
    #[error("leadership is being transferred")]
    LeadershipTransfer,
    #[error("a membership change is still in progress, or this leader has not committed an entry of its term yet")]
    MembershipChange,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (the leader is {leader:?}); send the request there")]
    NotLeader { leader: Option<NodeId> },
    #[error("busy, retry later: {0}")]
    Busy(BusyReason),
    #[error("the entry would be {bytes} bytes; the limit is {max} (append_bytes_max)")]
    TooLarge { bytes: usize, max: usize },
    #[error("a data entry holds at least one record")]
    Empty,
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter of the new configuration, so it cannot lead")]
    NotVoter(NodeId),
}
