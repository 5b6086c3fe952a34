//! The messages Raft peers exchange. Plain data: the network codec encodes them by hand,
//! and entries travel as their encoded bytes (the same bytes as on disk).
//!
//! Every message carries the sender's `term` (Raft §5.1). A receiver with a lower term
//! adopts it and becomes a follower, except for pre-votes, which never change terms, and
//! (pre-)vote requests that arrive while the receiver has a live leader (the lease); a
//! receiver with a higher term answers requests with its term so the sender steps down.
//! Nothing in a message is trusted: a malformed or out-of-range message is dropped or
//! rejected, never a reason to panic.

use super::{Entry, LogStart, Membership, SnapshotMeta};
use bytes::Bytes;

/// The largest term, index or record offset a peer may name. A message with a larger
/// number is malformed: real clusters never get near it, and the bound keeps every sum
/// and increment in the core far from overflowing.
pub const NUMBER_MAX: u64 = 1 << 62;

/// A follower's hint for where its log stops matching the leader's (fast backtracking,
/// Raft §5.3 and thesis §5.3.2): `index` is the last index at or below the rejected
/// `prev_index` whose entry has a term `<= prev_term`, and `term` that entry's term. The
/// leader resumes at the last index of its own log whose term is `<= term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub index: u64,
    pub term: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me?" sent before campaigning (thesis §9.6). `term` is the term
    /// the sender would campaign in (its own term + 1); `last_index`/`last_term` describe
    /// the end of its log for the up-to-date check (Raft §5.4.1). Changes no state.
    PreVote {
        term: u64,
        last_index: u64,
        last_term: u64,
    },
    /// `term` is the request's term if granted, else the responder's own term.
    PreVoteResponse {
        term: u64,
        granted: bool,
    },
    /// RequestVote (Raft §5.2). `transfer` is set when the leader asked the sender to take
    /// over (TimeoutNow): such a request overrides the receivers' leader lease.
    Vote {
        term: u64,
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    /// Sent only after the vote is durable (hard state fsync'd).
    VoteResponse {
        term: u64,
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): `entries` follow the entry at `prev_index` whose term is
    /// `prev_term`; `commit` is the leader's commit index. Entries are contiguous.
    Append {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        commit: u64,
        entries: Vec<Entry>,
    },
    /// A follower's answer to Append or Reset. Without `reject`: the follower's log matches
    /// the leader's through `index` and is durable through it (never sent before the
    /// follower's `persisted` covers `index`). With `reject`: the entry at `prev_index ==
    /// index` did not match, and the hint says where to resume. A responder with a higher
    /// term sends it (with `index` 0) to make a stale leader step down.
    AppendResponse {
        term: u64,
        index: u64,
        reject: Option<Conflict>,
    },
    /// The leader is alive. `commit` is `min(leader commit, follower's match)`, so it never
    /// names an entry the follower may not have.
    Heartbeat {
        term: u64,
        commit: u64,
    },
    HeartbeatResponse {
        term: u64,
    },
    /// "Campaign now, skipping pre-vote and the lease" from the leader to the node it
    /// transfers leadership to (thesis §3.10), once that node's log matches its own.
    TimeoutNow {
        term: u64,
    },
    /// The follower is behind the leader's first index: replace your log with an empty one
    /// starting at `start`, with `membership` (the configuration committed at
    /// `membership_index`). Acknowledged with AppendResponse `index = start.index - 1` once durable.
    Reset {
        term: u64,
        start: LogStart,
        membership_index: u64,
        membership: Membership,
    },
    /// The leader's group is idle and goes quiet: no heartbeats until something wakes it
    /// (`quiesce.rs`). `commit` is both its commit index and its last index. A follower whose
    /// log ends there with an entry of `term` goes quiet too; any other answers as it would
    /// a Heartbeat, which wakes the leader. Never answered by a follower that went quiet.
    Quiesce {
        term: u64,
        commit: u64,
    },
    /// One chunk of the leader's snapshot (Raft §7, InstallSnapshot), sent to a follower
    /// behind the leader's first index in a group whose state machine is not the log:
    /// bytes `offset..offset + data.len()` of the snapshot `meta` describes. One chunk is in
    /// flight at a time; the follower accumulates them and installs the whole.
    Snapshot {
        term: u64,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
    },
    /// The follower holds the first `received` bytes of the snapshot ending at `index` and
    /// wants the rest from there (0 after a gap it cannot fill, another snapshot or a failed
    /// CRC: start over). Answers every chunk that does not complete the snapshot; the one
    /// that does is answered by AppendResponse `index` once the install is durable.
    SnapshotResponse {
        term: u64,
        index: u64,
        received: u64,
    },
    /// "Send me your entry `index`": the sender's disk damaged it (`refetch.rs`); its log
    /// ends at `last_index`. Sent to every member, leader or not; changes no term.
    Refetch {
        term: u64,
        index: u64,
        last_index: u64,
    },
    /// The answer to Refetch: the entry (none if the responder cannot read it) and the
    /// responder's term `proof_term` at `proof_index`, at or after the entry and at most
    /// the asker's `last_index`. If the asker's log has that term there too, the entry is
    /// the asker's own (Raft §5.3, Log Matching).
    RefetchResponse {
        term: u64,
        proof_index: u64,
        proof_term: u64,
        entries: Vec<Entry>,
    },
}

impl Message {
    pub fn term(&self) -> u64 {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::Append { term, .. }
            | Message::AppendResponse { term, .. }
            | Message::Heartbeat { term, .. }
            | Message::HeartbeatResponse { term }
            | Message::TimeoutNow { term }
            | Message::Reset { term, .. }
            | Message::Quiesce { term, .. }
            | Message::Snapshot { term, .. }
            | Message::SnapshotResponse { term, .. }
            | Message::Refetch { term, .. }
            | Message::RefetchResponse { term, .. } => *term,
        }
    }

    /// Whether every number in the message (entries included) is at most `NUMBER_MAX`.
    pub fn numbers_in_range(&self) -> bool {
        let entry_ok = |e: &Entry| e.index().max(e.term()).max(e.base_offset()) <= NUMBER_MAX;
        let numbers: &[u64] = match self {
            Message::PreVote { term, last_index, last_term } | Message::Vote { term, last_index, last_term, .. } => {
                &[*term, *last_index, *last_term]
            }
            Message::PreVoteResponse { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::HeartbeatResponse { term }
            | Message::TimeoutNow { term } => &[*term],
            Message::Append { term, prev_index, prev_term, commit, entries } => {
                if !entries.iter().all(entry_ok) {
                    return false;
                }
                &[*term, *prev_index, *prev_term, *commit]
            }
            Message::AppendResponse { term, index, reject } => {
                let hint = reject.map_or(0, |c| c.index.max(c.term));
                &[*term, *index, hint]
            }
            Message::Heartbeat { term, commit } => &[*term, *commit],
            Message::Reset { term, start, membership_index, .. } => {
                &[*term, start.index, start.prev_term, start.offset, *membership_index]
            }
            Message::Quiesce { term, commit } => &[*term, *commit],
            Message::Snapshot { term, meta, offset, .. } => {
                let start = meta.start;
                &[*term, start.index, start.prev_term, start.offset, meta.membership_index, meta.bytes, *offset]
            }
            Message::SnapshotResponse { term, index, received } => &[*term, *index, *received],
            Message::Refetch { term, index, last_index } => &[*term, *index, *last_index],
            Message::RefetchResponse { term, proof_index, proof_term, entries } => {
                if !entries.iter().all(entry_ok) {
                    return false;
                }
                &[*term, *proof_index, *proof_term]
            }
        };
        numbers.iter().all(|n| *n <= NUMBER_MAX)
    }

    /// A short name for logs and the simulator's trace.
    pub fn name(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "PreVote",
            Message::PreVoteResponse { .. } => "PreVoteResponse",
            Message::Vote { .. } => "Vote",
            Message::VoteResponse { .. } => "VoteResponse",
            Message::Append { .. } => "Append",
            Message::AppendResponse { .. } => "AppendResponse",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::HeartbeatResponse { .. } => "HeartbeatResponse",
            Message::TimeoutNow { .. } => "TimeoutNow",
            Message::Reset { .. } => "Reset",
            Message::Quiesce { .. } => "Quiesce",
            Message::Snapshot { .. } => "Snapshot",
            Message::SnapshotResponse { .. } => "SnapshotResponse",
            Message::Refetch { .. } => "Refetch",
            Message::RefetchResponse { .. } => "RefetchResponse",
        }
    }
}
