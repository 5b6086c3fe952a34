//! The Raft consensus core: a deterministic state machine with no I/O.
//!
//! The core decides *what* to do; the caller (the replica glue, the simulator, the
//! benchmarks) does it. Inputs are `tick` (time), `step` (a message from a peer),
//! `propose*` (a client request) and `persisted` (the disk caught up); every input may
//! leave outputs behind, which [`Raft::take_ready`] hands out as one [`Ready`] batch. The
//! core owns no storage: it reads the caller's log through [`LogStore`] and asks for
//! changes in the Ready. It never reads a clock or a global RNG, so one seed and one
//! sequence of inputs always give the same outputs (the simulator relies on it).
//!
//! The loop around the core, as `replica::Replica` runs it under the server and the simulator:
//!
//! ```text
//! input:  raft.tick(&store) | raft.step(from, msg, &store) | raft.propose(..) | raft.persisted(i, t, &store)
//!         | raft.wake(reason, &store)
//! let ready = raft.take_ready();
//! 0. ready.snapshot: save it durably, restore the state machine from it
//! 1. ready.hard_state (+ committed_membership): fsync it now if hard_state_must_sync, else write it lazily
//! 2. ready.reset, ready.truncate_after, ready.entries: apply to the store, in that order (no fsync needed yet)
//! 3. ready.messages: send
//! 4. ready.commit: serve records up to it
//! 5. ready.quiesced: stop or resume ticking this group
//! later, when an fsync covers index i whose entry has term t: raft.persisted(i, t, &store)
//! ```
//!
//! A data partition's log is its own state machine (keel replicates a log of record
//! batches), so it needs no snapshot: a follower behind the leader's first index is
//! *reset* to the leader's log start and configuration, and catches up from there. A
//! group whose state machine is not the log (the metadata group) keeps a snapshot beside
//! it (`LogStore::snapshot`), which such a follower is sent instead (`snapshot.rs`). An
//! idle group may go quiet, with no timers running, until something wakes it
//! (`quiesce.rs`; off unless configured).
//!
//! Files: `node.rs` (the state and the input/output plumbing), `election.rs` (timeouts,
//! pre-vote, votes, check-quorum, transfer), `leader.rs` (becoming leader, proposals,
//! membership changes), `replication.rs` (the leader's side of AppendEntries),
//! `follower.rs` (the follower's side), `progress.rs` (per-follower flow control),
//! `snapshot.rs` (sending, receiving and installing snapshots), `quiesce.rs` (idle
//! groups and what wakes them), `refetch.rs` (damaged entries kept in place and fetched
//! again), `membership.rs` (configurations, quorums, their codec), `log.rs` (the store
//! seen through the changes not yet handed out), `message.rs`, `ready.rs`, `store.rs`,
//! `config.rs`, `error.rs`; `memstore.rs` is an in-memory store for tests, the
//! simulator and the benchmarks.

mod config;
mod election;
mod error;
mod follower;
mod leader;
mod log;
mod membership;
pub mod memstore;
mod message;
mod node;
mod progress;
mod quiesce;
mod ready;
mod refetch;
mod replication;
mod snapshot;
mod store;

pub use config::{Config, ConfigError, SNAPSHOT_BYTES_LIMIT};
pub use error::{BusyReason, ProposeError, StartError, TransferError};
pub use membership::{MEMBERS_MAX, Membership, MembershipChange, MembershipError};
pub use message::{Conflict, Message, NUMBER_MAX};
pub use node::{Proposal, Raft};
pub use progress::{ProgressState, ProgressView};
pub use quiesce::WakeReason;
pub use ready::{Ready, Role, SoftState};
pub use refetch::HOLES_MAX;
pub use segments::{Entry, EntryMeta};
pub use snapshot::{Snapshot, SnapshotMeta};
pub use store::{LogStore, StoreError};

/// A node's id within the cluster; 0 is never a valid id.
pub type NodeId = u64;

/// The `kind` byte of an entry's header, as the core writes and reads it.
pub mod kind {
    /// A client batch of `record_count >= 1` records.
    pub const DATA: u8 = 0;
    /// The empty entry a new leader appends to commit the entries of earlier terms (Raft §5.4.2).
    pub const NOOP: u8 = 1;
    /// A membership configuration, encoded by `Membership::encode`; carries no records.
    pub const CONFIG: u8 = 2;
}

/// What must survive a crash besides the log: Raft's persistent state (Figure 2) and the commit index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<NodeId>,
    /// Committed and durable on this node; after a restart the core never reports less.
    pub commit: u64,
}

/// The end of the log a node had before it cut entries its disk damaged, which it may
/// have acknowledged: until its durable log reaches `index` again, it votes only for a
/// candidate at least as up to date as (`term`, `index`) and never campaigns
/// (`Raft::set_vote_barrier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct VoteBarrier {
    /// Compared first, as Raft compares logs (§5.4.1): then `index`.
    pub term: u64,
    pub index: u64,
}

/// Where a log begins after retention deleted its prefix (or a reset replaced it): the
/// first index it holds, the term of the entry just before it, and the record offset of
/// its first entry. An empty log holds `start.index - 1` as its last index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogStart {
    pub index: u64,
    pub prev_term: u64,
    pub offset: u64,
}

impl LogStart {
    /// The start of a log that never lost its prefix.
    pub const INITIAL: LogStart = LogStart { index: 1, prev_term: 0, offset: 0 };
}
