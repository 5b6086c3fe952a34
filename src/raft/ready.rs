//! The batch of outputs the core hands out, with the order the caller must follow.

use super::{Entry, HardState, LogStart, Membership, Message, NodeId, Snapshot};

/// A node's role. A learner replicates but never votes or campaigns; a node in no
/// configuration at all is a `Follower` that never campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
}

/// What the server shows and redirects by; not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    /// The leader of `term` as far as this node knows, so clients can be redirected.
    pub leader: Option<NodeId>,
    pub term: u64,
}

/// Everything the core produced since the last `take_ready`. Apply it in the order of the
/// fields below (etcd's Ready contract, adapted to a core that owns no storage).
#[derive(Debug, Default)]
#[must_use = "a Ready holds messages to send and state to persist"]
pub struct Ready {
    /// A snapshot from the leader (Raft §7; `snapshot.rs`), to install before anything else
    /// in this Ready: make it durable, replacing the one kept, then restore the state
    /// machine from it. The `reset` below restarts the log right after it. A crash after
    /// this and before the reset is durable leaves a snapshot ahead of the log: on restart,
    /// restart the log right after the snapshot unless it holds the snapshot's last entry.
    pub snapshot: Option<Snapshot>,
    /// Write before sending any message of this Ready. Set whenever term, vote or commit changed.
    pub hard_state: Option<HardState>,
    /// True when term or vote changed: fsync `hard_state` before sending `messages` (a vote
    /// or a term must survive a crash before anyone hears of it). False when only `commit`
    /// advanced: the write may be lazy, since a restart from an older commit is safe (the
    /// core learns the commit again; it never reports less than what was persisted).
    pub hard_state_must_sync: bool,
    /// Apply to the store before calling the core again, in this order: `reset`, then
    /// `truncate_after`, then append `entries`. Writing is enough; no fsync is needed before
    /// the messages go out. Once an fsync covers these writes, report the store's last
    /// index as it was right after them, with that entry's term, to `Raft::persisted` (after
    /// a reset alone: `start.index - 1` and `start.prev_term`). Fsyncs may cover several
    /// Readies at once; reports must follow the order of the writes.
    ///
    /// `reset`: replace the whole log with an empty one starting at this `LogStart`, whose
    /// configuration is this membership (also given in `committed_membership`). With
    /// `snapshot`, the log restarts right after it; without, the log is its own state
    /// machine and only its start moved.
    pub reset: Option<(LogStart, Membership)>,
    /// Delete every entry after this index. It is never below the commit index, so no
    /// committed entry is ever deleted (asserted).
    pub truncate_after: Option<u64>,
    /// Append these, contiguous with the log (after reset and truncation).
    pub entries: Vec<Entry>,
    /// Send once `hard_state` is durable (when `hard_state_must_sync`). A leader's Append
    /// may leave before the leader's own copy of its entries is durable (thesis §10.2.1):
    /// it counts itself in a quorum only once `persisted` says so. A follower's acknowledging
    /// AppendResponse is only produced after `persisted` covered the entries.
    pub messages: Vec<(NodeId, Message)>,
    /// The highest index both committed and durable on this node, when it advanced (never
    /// decreases). Serve records up to here.
    pub commit: Option<u64>,
    /// A configuration became committed and durable (or came with a reset): persist it with
    /// the hard state, before persisting any commit at or above its index. On restart pass
    /// the last one persisted to `Raft::new`.
    pub committed_membership: Option<(u64, Membership)>,
    /// Role, leader or term changed.
    pub soft_state: Option<SoftState>,
    /// The group went quiet here (`true`: `tick` does nothing, a ticker may skip it) or woke
    /// up (`false`: tick it again). See `quiesce.rs`; never set unless `quiesce_after_ticks` is.
    pub quiesced: Option<bool>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.hard_state.is_none()
            && self.reset.is_none()
            && self.truncate_after.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.commit.is_none()
            && self.committed_membership.is_none()
            && self.soft_state.is_none()
            && self.quiesced.is_none()
    }

    /// Whether the store must change.
    pub fn has_storage(&self) -> bool {
        self.reset.is_some() || self.truncate_after.is_some() || !self.entries.is_empty()
    }
}
