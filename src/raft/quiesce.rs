//! Quiescence: an idle group stops its timers, so that a node can host a thousand groups
//! without a thousand heartbeats every few ticks (CockroachDB's quiesced ranges). Off
//! unless `Config::quiesce_after_ticks` is set.
//!
//! - A leader whose group stayed idle that many ticks (every member's log durable and
//!   matching through the last index, which is committed; no transfer, no configuration
//!   change under way) sends `Quiesce` instead of its next heartbeat and stops ticking: no
//!   heartbeats, no check-quorum.
//! - A follower that hears it with a log ending exactly at that commit, with the leader's
//!   term there, goes quiet too: its election timer stops, and it keeps its leader lease,
//!   so it goes on ignoring pre-votes from anyone else (a node cut off from the leader
//!   alone cannot depose it). Any other follower answers as to a heartbeat.
//! - A quiet leader wakes on any message from its term or later, a proposal, a
//!   configuration change or a transfer; a quiet follower on anything its leader sends
//!   but `Quiesce`, on a later term, and on a vote request from the leader it follows
//!   (which shows it leads no more: the lease ends at once).
//! - The caller's failure detector covers what nobody says: when it decides a node is down
//!   it calls `wake(NodeDown(node))` on the groups that node leads or votes in. A follower
//!   whose leader is there resumes with its lease expired, so it grants pre-votes and
//!   campaigns after a randomized timeout; a leader resumes heartbeats and check-quorum.
//!
//! Safety is untouched: only timers stop and start. A quiet follower commits nothing a
//! heartbeat would not let it commit (it holds the leader's entry at the commit index),
//! and every vote, term and log rule runs as before, whatever the timers did. What
//! quiescence can cost is liveness, which the wake-ups above restore.

use super::{LogStore, Message, NodeId, Raft, Role};

/// Why the caller wakes a group (`Raft::wake`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// The caller's failure detector decided that this node is down (crashed, or cut off
    /// from this one).
    NodeDown(NodeId),
}

impl Raft {
    /// Whether the group is quiet here: `tick` does nothing, so a ticker may skip it until
    /// a Ready reports `quiesced: Some(false)`.
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// The caller's failure detector woke the group (see `WakeReason`). A follower whose
    /// leader is on the node that went down expires its lease even if it was not quiet.
    pub fn wake(&mut self, reason: WakeReason, store: &impl LogStore) {
        self.log.check_store(store);
        let WakeReason::NodeDown(node) = reason;
        match self.role {
            Role::Leader => self.resume_leading(),
            _ if self.leader == Some(node) => self.expire_lease(),
            _ => self.quiesced = false,
        }
    }

    /// A follower's leader is gone: resume the timer with the lease over, so that this node
    /// grants pre-votes now and campaigns once its randomized timeout runs out.
    pub(super) fn expire_lease(&mut self) {
        if self.quiesced || self.election_elapsed < self.config.election_ticks_min {
            tracing::debug!(id = self.config.id, leader = self.leader, "the leader is gone: lease over");
        }
        self.quiesced = false;
        self.election_elapsed = self.election_elapsed.max(self.config.election_ticks_min);
    }

    /// A quiet leader resumes: it heartbeats now, and must hear from a quorum within an
    /// election timeout from here (check-quorum), as if it had just been elected.
    pub(super) fn resume_leading(&mut self) {
        if !self.quiesced {
            return;
        }
        tracing::debug!(id = self.config.id, term = self.term, "waking up");
        self.quiesced = false;
        self.lead.idle_ticks = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        for pr in self.lead.progress.values_mut() {
            pr.recent_active = false;
        }
        self.broadcast_heartbeat();
    }

    /// A message arrived: whether it wakes this quiet node, before the usual rules see it.
    pub(super) fn wake_on_message(&mut self, from: NodeId, msg: &Message) {
        if !self.quiesced || msg.term() < self.term {
            return;
        }
        match (self.role, msg) {
            (Role::Leader, _) => self.resume_leading(),
            // Our leader asks for votes: it restarted, or stepped down, and leads no more.
            (_, Message::PreVote { .. } | Message::Vote { .. }) if self.leader == Some(from) => self.expire_lease(),
            // The leader's messages wake us as they arrive (`heard_from_leader`); a later
            // term through `become_follower`. The rest (stale answers, others' vote
            // requests, which the lease ignores) leaves us quiet.
            _ => {}
        }
    }

    /// Counts the ticks the leader's group has been idle; true once it may go quiet.
    pub(super) fn idle_long_enough(&mut self, store: &impl LogStore) -> bool {
        let Some(after) = self.config.quiesce_after_ticks else { return false };
        if self.is_idle(store) {
            self.lead.idle_ticks = self.lead.idle_ticks.saturating_add(1);
        } else {
            self.lead.idle_ticks = 0;
        }
        self.lead.idle_ticks >= after
    }

    /// Nothing left to replicate, commit or change: every member's log is durable and
    /// matches ours through our last index, which is committed and durable here too.
    fn is_idle(&self, store: &impl LogStore) -> bool {
        let last = self.log.last_index(store);
        let commit = self.log.commit();
        let configuration_settled = !self.configs.active().is_joint() && self.configs.active_index() <= commit;
        self.lead.transfer.is_none()
            && configuration_settled
            && commit == last
            && self.log.persisted() >= last
            && self.holes.is_empty()
            && self.lead.progress.values().all(|pr| pr.match_index == last)
    }

    /// With quiescence on, a node that cut damaged entries (the vote barrier) never
    /// campaigns, and the others may be quiet, keeping their lease on it as the leader it
    /// was: timing out with no leader, it sends them a pre-vote request it will not act on,
    /// which shows them it leads no more, so that they elect a leader among themselves.
    pub(super) fn announce_no_leader(&mut self, store: &impl LogStore) {
        if self.config.quiesce_after_ticks.is_none() || self.leader.is_some() || !self.barred() {
            return;
        }
        self.reset_election_timer();
        let (term, last_index, last_term) = (self.term + 1, self.log.last_index(store), self.log.last_term(store));
        let voters: Vec<NodeId> = self.configs.active().all_voters().filter(|id| *id != self.config.id).collect();
        for id in voters {
            self.send(id, Message::PreVote { term, last_index, last_term });
        }
    }

    /// Goes quiet, telling every member (`Message::Quiesce`).
    pub(super) fn quiesce(&mut self) {
        let (term, commit) = (self.term, self.log.commit());
        tracing::debug!(id = self.config.id, term, commit, "idle: going quiet");
        let members: Vec<NodeId> = self.lead.progress.keys().copied().collect();
        for id in members {
            self.send(id, Message::Quiesce { term, commit });
        }
        self.quiesced = true;
    }

    /// The leader goes quiet. We go quiet too if our log holds exactly what it holds, all of
    /// it durable; else we answer as to a heartbeat, which wakes the leader.
    pub(super) fn handle_quiesce(&mut self, from: NodeId, commit: u64, store: &impl LogStore) {
        if !self.heard_from_leader(from) {
            return;
        }
        let last = self.log.last_index(store);
        // Holding the leader's entry at `commit` (only it writes entries of its term), our
        // log matches its own through there (Log Matching, Raft §5.3), so it is committed.
        if self.log.term(store, commit) == Some(self.term) {
            if commit > self.log.commit() {
                self.log.commit_to(store, commit);
            }
            // Not with a hole open: a quiet follower would never ask for it again.
            if last == commit && self.log.persisted() >= commit && self.holes.is_empty() {
                self.quiesced = true;
                self.receiving = None;
                return;
            }
        }
        self.answer_heartbeat(from, commit, store);
    }
}
