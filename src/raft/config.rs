//! How one node runs Raft: timeouts in ticks, the bounds on replication, the switches.

use super::NodeId;
use segments::HEADER_LEN;

/// One node's settings. Times are in ticks: the caller calls `Raft::tick` at a fixed period
/// (the server ticks every 10 ms), so the defaults are 150–300 ms elections and 50 ms heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// A follower that hears no leader for a random number of ticks in
    /// `election_ticks_min..=election_ticks_max` campaigns: randomized timeouts make split
    /// votes rare (Raft §5.2). The minimum is also the leader lease: a follower that heard
    /// from its leader this recently ignores (pre-)vote requests, and with `check_quorum` a
    /// leader that did not hear from a quorum for this long steps down.
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
    /// A leader sends heartbeats this often: well below `election_ticks_min`.
    pub heartbeat_ticks: u32,
    /// Entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Encoded entry bytes in one AppendEntries message (one larger entry still travels
    /// alone); also the largest entry `propose` accepts.
    pub append_bytes_max: usize,
    /// AppendEntries in flight to one follower in the replicate state: the pipelining window.
    pub inflight_max: usize,
    /// Encoded bytes this leader appended that are not committed yet; past it `propose` is Busy.
    pub uncommitted_bytes_max: u64,
    /// Campaign only after a pre-vote round shows a quorum would vote (thesis §9.6), so a
    /// node cut off from the cluster does not inflate its term and disrupt it on return.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within `election_ticks_min` steps down
    /// (thesis §6.2), and followers keep a leader lease (see `election_ticks_min`).
    pub check_quorum: bool,
    /// Seeds the election timeout RNG; give every node its own.
    pub seed: u64,
    /// A leader whose group was idle this many ticks (nothing to replicate or commit, no
    /// change or transfer under way) tells its followers and goes quiet: no heartbeats, no
    /// check-quorum, no election timers, until something wakes the group (`quiesce.rs`).
    /// `None` (the default): never. Needs `check_quorum`, whose lease keeps a quiet group's
    /// leader in office.
    pub quiesce_after_ticks: Option<u32>,
    /// Bytes of a snapshot in one message. A chunk never exceeds `append_bytes_max` either,
    /// so that it travels within the same frame bound as an entry.
    pub snapshot_chunk_bytes_max: usize,
    /// The largest snapshot this node accepts from a leader: it is accumulated in memory
    /// until complete, and a larger one is refused.
    pub snapshot_bytes_max: u64,
}

/// The largest `snapshot_bytes_max` allowed: a snapshot is kept in one state file, whose
/// payload length is 32 bits (`segments::state_file`), with room for its metadata.
pub const SNAPSHOT_BYTES_LIMIT: u64 = (u32::MAX as u64) - (1 << 20);

impl Config {
    /// The defaults the server uses, for node `id`.
    pub fn new(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 5,
            append_entries_max: 1024,
            append_bytes_max: 1 << 20,
            inflight_max: 64,
            uncommitted_bytes_max: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            seed,
            quiesce_after_ticks: None,
            snapshot_chunk_bytes_max: 1 << 20,
            snapshot_bytes_max: 256 << 20,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &'static str| Err(ConfigError { why });
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return bad("heartbeat_ticks must be at least 1 and below election_ticks_min");
        }
        if self.election_ticks_max < self.election_ticks_min {
            return bad("election_ticks_max must be at least election_ticks_min");
        }
        if self.append_entries_max == 0 || self.inflight_max == 0 {
            return bad("append_entries_max and inflight_max must be at least 1");
        }
        if self.append_bytes_max <= HEADER_LEN || self.uncommitted_bytes_max < self.append_bytes_max as u64 {
            return bad("append_bytes_max must exceed an entry header and fit in uncommitted_bytes_max");
        }
        if self.quiesce_after_ticks.is_some_and(|t| t == 0)
            || (self.quiesce_after_ticks.is_some() && !self.check_quorum)
        {
            return bad("quiesce_after_ticks must be at least 1, and quiescence needs check_quorum (the leader lease)");
        }
        if self.snapshot_chunk_bytes_max == 0 {
            return bad("snapshot_chunk_bytes_max must be at least 1");
        }
        if self.snapshot_bytes_max > SNAPSHOT_BYTES_LIMIT {
            return bad("snapshot_bytes_max must be at most SNAPSHOT_BYTES_LIMIT (a snapshot is one state file)");
        }
        Ok(())
    }

    /// Bytes of a snapshot one message carries.
    pub(super) fn snapshot_chunk_bytes(&self) -> usize {
        self.snapshot_chunk_bytes_max.min(self.append_bytes_max)
    }
}

/// Why a `Config` cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {why}")]
pub struct ConfigError {
    pub why: &'static str,
}
