//! Holes: entries of this node's log whose bytes its disk damaged, kept in place with the
//! intact entries after them, and fetched again from any peer (FAST'18, "Protocol-Aware
//! Recovery for Consensus-Based Storage", §5: CTRL's storage-level repair of a single
//! damaged entry, which keeps the rest of the log).
//!
//! The caller finds the damage and tells the core (`Raft::add_hole`). The node's log, as
//! Raft sees it, does not change: it still holds the entry, only not readably, so it
//! votes and campaigns with its last (index, term) as before. What changes: it counts as
//! holding nothing from its first hole on — a follower acknowledges no further, a leader
//! counts itself no further towards a commit — until the entry is written back.
//!
//! Any node may answer a refetch, leader or not, in any term (a refetch changes no term,
//! like a pre-vote): an entry is the same in every log that holds the same (index, term)
//! at or after it (Raft §5.3, Log Matching), so the answer carries the responder's term
//! at an index at or after every entry it sends, which the asker checks against its own
//! log, and each entry's term must match the asker's term of that index too. The caller
//! writes the entry back durably (`take_rewrites`) and then says so (`rewritten`). A
//! majority damaged in the same entry has no intact copy left, and the entry is lost.

use std::collections::BTreeSet;

use super::{Entry, LogStore, Membership, Message, NodeId, Raft, Role, kind};

/// Holes one node tracks at once; damage beyond this many is cut as before (the caller
/// checks `add_hole`'s answer).
pub const HOLES_MAX: usize = 64;

/// Election timeouts a hole may stay open before the caller is asked to cut the log
/// there instead (`take_unfilled`): every peer may have dropped the entry (retention, a
/// snapshot) or lost it too, and a leader sends a cut log what it lacks.
const HOLE_OPEN_TIMEOUTS_MAX: u32 = 10;

impl Raft {
    /// Entry `index`, durable in the store, reads back damaged: keep it as a hole and fetch
    /// it again from the peers. False (nothing changed) if it cannot be a hole: outside the
    /// durable log, or too many holes already; the caller then cuts the log before it.
    pub fn add_hole(&mut self, index: u64, store: &impl LogStore) -> bool {
        self.log.check_store(store);
        let durable = self.log.persisted().min(store.last_index());
        if index < store.first_index() || index > durable {
            return false;
        }
        if !self.holes.contains(&index) && self.holes.len() >= HOLES_MAX {
            return false;
        }
        if self.holes.insert(index) {
            tracing::warn!(id = self.config.id, index, "damaged entry kept as a hole; fetching it from the peers");
            self.hole_open_ticks = 0;
            // Timers run while a hole is open, so the refetch is sent again until answered.
            self.quiesced = false;
            self.send_refetch(store);
        }
        true
    }

    /// The damaged entries this node is fetching again, lowest first.
    pub fn holes(&self) -> &BTreeSet<u64> {
        &self.holes
    }

    /// The highest index this node may count as holding, by its holes: everything before
    /// the first one (`u64::MAX` without holes).
    pub(super) fn hole_free_through(&self) -> u64 {
        self.holes.first().map_or(u64::MAX, |h| h - 1)
    }

    /// Intact copies of holes, checked, for the caller to write back in place and make
    /// durable, then report with `rewritten`. Each is handed out once.
    pub fn take_rewrites(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.rewrites)
    }

    /// The caller wrote entry `index` back durably: the hole is closed. A follower
    /// acknowledges what it now holds, a leader may commit further.
    pub fn rewritten(&mut self, index: u64, store: &impl LogStore) {
        self.log.check_store(store);
        if !self.holes.remove(&index) {
            return;
        }
        tracing::info!(id = self.config.id, index, "damaged entry written back from a peer's copy");
        self.hole_open_ticks = 0;
        if self.unknown_configs.remove(&index) {
            self.learn_config_at(index, store);
            self.configs_settled();
        }
        if self.role == Role::Leader {
            self.maybe_commit(store);
        } else {
            self.flush_ack();
        }
    }

    /// The highest index through which this node knows every configuration entry of its
    /// log: before the first hole found at start after the commit index (`Raft::with_holes`).
    pub(super) fn configs_known_through(&self) -> u64 {
        self.unknown_configs.first().map_or(u64::MAX, |h| h - 1)
    }

    /// Hole `index`, found at start after the commit index, was written back: if it is a
    /// configuration entry, the node learns it now (Raft §6: the latest in the log wins).
    fn learn_config_at(&mut self, index: u64, store: &impl LogStore) {
        let mut entries = Vec::new();
        if let Err(error) = self.log.entries(store, index, 1, 1, &mut entries) {
            tracing::error!(id = self.config.id, index, %error, "cannot read an entry just written back");
            return;
        }
        let Some(entry) = entries.first().filter(|e| e.kind() == kind::CONFIG) else { return };
        match Membership::decode(&entry.payload()) {
            Ok(membership) => {
                tracing::info!(id = self.config.id, index, ?membership, "a written-back entry is a configuration");
                self.configs.insert(index, membership);
                self.membership_changed(store);
            }
            Err(error) => {
                tracing::error!(id = self.config.id, index, %error, "a written-back configuration is malformed")
            }
        }
    }

    /// Fewer configurations are unknown: those now known to be committed are reported,
    /// which `take_ready` held back (it takes none past `configs_known_through`).
    fn configs_settled(&mut self) {
        let through = self.log.commit().min(self.configs_known_through());
        if let Some(newest) = self.configs.take_committed(through) {
            self.committed_membership = Some(newest);
        }
    }

    /// Holes no peer filled for a long time, for the caller to cut the log at instead.
    /// They stay holes here (counted as not held) until the cut restarts the core.
    pub fn take_unfilled(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.unfilled)
    }

    /// Every heartbeat interval while holes are open, ask again (answers may be lost).
    /// A first hole open for `HOLE_OPEN_TIMEOUTS_MAX` election timeouts is handed out
    /// (`take_unfilled`), and again each time as long after, until the caller acts.
    pub(super) fn tick_refetch(&mut self, store: &impl LogStore) {
        // Retention may have dropped the log's prefix, holes included.
        let first_index = self.log.first_index(store);
        self.holes.retain(|h| *h >= first_index);
        if self.unknown_configs.first().is_some_and(|h| *h < first_index) {
            self.unknown_configs.retain(|h| *h >= first_index);
            self.configs_settled();
        }
        let Some(&first) = self.holes.first() else { return };
        self.hole_open_ticks += 1;
        if self.hole_open_ticks >= self.config.election_ticks_max.saturating_mul(HOLE_OPEN_TIMEOUTS_MAX) {
            tracing::warn!(id = self.config.id, index = first, "no peer sent a damaged entry; cutting the log there");
            self.hole_open_ticks = 0;
            self.unfilled = vec![first];
        }
        self.refetch_elapsed += 1;
        if self.refetch_elapsed >= self.config.heartbeat_ticks {
            self.send_refetch(store);
        }
    }

    /// Asks every other member for the entry of the first hole.
    fn send_refetch(&mut self, store: &impl LogStore) {
        self.refetch_elapsed = 0;
        let Some(&index) = self.holes.first() else { return };
        let last_index = self.log.last_index(store);
        let members: Vec<NodeId> =
            self.configs.active().members().into_iter().filter(|id| *id != self.config.id).collect();
        for id in members {
            self.send(id, Message::Refetch { term: self.term, index, last_index });
        }
    }

    /// A peer asks for our entry `index`, and holds its log through `last_index`. We send
    /// it if we hold it intact, with our term at the last index both logs may share: the
    /// asker's proof that the entry is its own.
    pub(super) fn handle_refetch(&mut self, from: NodeId, index: u64, last_index: u64, store: &impl LogStore) {
        // Our holes do not matter here: terms come from the log's index, not the entries.
        let proof_index = last_index.min(self.log.last_index(store));
        let Some(proof_term) = self.log.term(store, proof_index) else { return };
        if index == 0 || index > proof_index {
            return;
        }
        // One entry: a longer read could run into damage of our own after it.
        let mut entries = Vec::new();
        if let Err(error) = self.log.entries(store, index, 1, 1, &mut entries) {
            tracing::debug!(id = self.config.id, from, index, %error, "cannot read the entry a peer asked for");
            return;
        }
        self.send(from, Message::RefetchResponse { term: self.term, proof_index, proof_term, entries });
    }

    /// A peer's entries for our holes: each is taken if the peer's log matches ours at
    /// `proof_index` (so its entries up to there are ours, Log Matching) and its term is
    /// the one our log records for that index.
    pub(super) fn handle_refetch_response(
        &mut self,
        from: NodeId,
        proof_index: u64,
        proof_term: u64,
        entries: Vec<Entry>,
        store: &impl LogStore,
    ) {
        if self.holes.is_empty() || self.log.term(store, proof_index) != Some(proof_term) {
            return;
        }
        for entry in entries {
            let index = entry.index();
            let wanted = self.holes.contains(&index) && !self.rewrites.iter().any(|e| e.index() == index);
            if !wanted || index > proof_index || self.log.term(store, index) != Some(entry.term()) {
                continue;
            }
            tracing::debug!(id = self.config.id, from, index, "a peer sent an intact copy of a damaged entry");
            self.rewrites.push(entry);
        }
    }

    /// The log was truncated after `keep`, or replaced: holes past it are gone with it.
    pub(super) fn forget_holes_after(&mut self, keep: u64) {
        self.holes.retain(|h| *h <= keep);
        self.rewrites.retain(|e| e.index() <= keep);
        if self.unknown_configs.last().is_some_and(|h| *h > keep) {
            self.unknown_configs.retain(|h| *h <= keep);
            self.configs_settled();
        }
    }
}
