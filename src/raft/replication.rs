//! The leader's side of log replication (Raft §5.3): batched, pipelined AppendEntries,
//! backing off with the follower's conflict hint, resets for followers behind our log
//! start, heartbeats, and the commit rule (Raft §5.4.2).

use super::progress::ProgressState;
use super::{Conflict, Entry, LogStore, Message, NodeId, Raft, Role};

impl Raft {
    pub(super) fn broadcast_append(&mut self, store: &impl LogStore) {
        let peers: Vec<NodeId> = self.lead.progress.keys().copied().collect();
        for id in peers {
            self.send_append(id, store, false);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit();
        let beats: Vec<(NodeId, u64)> =
            self.lead.progress.iter().map(|(id, pr)| (*id, pr.match_index.min(commit))).collect();
        for (id, commit) in beats {
            self.send(id, Message::Heartbeat { term: self.term, commit });
        }
    }

    /// Sends `to` the next batch of entries, if its flow control allows. With `allow_empty`
    /// an Append goes out even with no entries (a probe, or to carry the commit index).
    /// Returns whether a message was sent. A store read error skips the send: the next
    /// heartbeat answer retries it.
    pub(super) fn send_append(&mut self, to: NodeId, store: &impl LogStore, allow_empty: bool) -> bool {
        let (inflight_max, bytes_max, count_max) =
            (self.config.inflight_max, self.config.append_bytes_max, self.config.append_entries_max);
        let first_index = self.log.first_index(store);
        let Some(pr) = self.lead.progress.get_mut(&to) else { return false };
        if pr.state == ProgressState::Snapshot && pr.next_index >= first_index {
            // An answer showed the follower's log reaches ours: entries will do.
            pr.become_probe(pr.next_index);
        }
        if pr.is_paused(inflight_max) {
            return false;
        }
        let next = pr.next_index;
        if next < first_index {
            // A state machine that is not the log needs a snapshot: the one being sent while
            // our log still continues it (a newer one would start the transfer over, and
            // might never let it end), else the latest. The log alone needs its start.
            let sent = pr.snapshot_sent().filter(|s| s.meta.start.index >= first_index);
            if let Some(snapshot) = sent.or(store.snapshot()).cloned() {
                return self.send_snapshot_chunk(to, &snapshot);
            }
            self.send_reset(to, store);
            return true;
        }
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(store, prev_index) else { return false };
        let mut entries = Vec::new();
        if let Err(error) = self.log.entries(store, next, bytes_max, count_max, &mut entries) {
            tracing::warn!(id = self.config.id, to, next, %error, "cannot read entries to replicate; will retry");
            return false;
        }
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = entries.last().map_or(prev_index, Entry::index);
        let sent_entries = !entries.is_empty();
        let commit = self.log.commit();
        self.send(to, Message::Append { term: self.term, prev_index, prev_term, commit, entries });
        if let Some(pr) = self.lead.progress.get_mut(&to) {
            pr.sent(last, sent_entries, inflight_max);
        }
        true
    }

    /// The follower needs entries we no longer have: it restarts its log at our start.
    fn send_reset(&mut self, to: NodeId, store: &impl LogStore) {
        let start = self.log.start(store);
        let (membership_index, membership) = self.configs.committed().clone();
        // The leader's log starts after a committed entry, so some configuration was
        // committed by then: the bootstrap one is in the log (see `become_leader`).
        assert!(membership.validate().is_ok(), "a Reset carries a valid configuration, not {membership:?}");
        self.send(to, Message::Reset { term: self.term, start, membership_index, membership });
        if let Some(pr) = self.lead.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe(pr.next_index);
            }
            pr.probe_sent = true;
        }
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        index: u64,
        reject: Option<Conflict>,
        store: &impl LogStore,
    ) {
        let last = self.log.last_index(store);
        if self.role != Role::Leader || index > last {
            return;
        }
        let resume_after = reject.map(|hint| self.last_with_term_at_most(store, hint.index, hint.term).index);
        let Some(pr) = self.lead.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if let Some(resume_after) = resume_after {
            if reject.is_some_and(|hint| hint.index < pr.match_index) {
                // The follower's log ends below what it acknowledged: it cut entries its
                // disk damaged (or this rejection is stale; another probe does no harm).
                tracing::warn!(id = self.config.id, from, resume_after, "a follower lost entries; sending them again");
                pr.lost_entries(resume_after);
                self.send_append(from, store, true);
                return;
            }
            if pr.maybe_back_off(index, resume_after) {
                self.send_append(from, store, true);
            }
            return;
        }
        let updated = pr.maybe_update(index);
        let confirmed_probe = pr.state == ProgressState::Probe && pr.match_index == index;
        if !updated && !confirmed_probe {
            return;
        }
        if pr.state == ProgressState::Probe {
            pr.become_replicate();
        }
        if updated {
            self.maybe_commit(store);
        }
        self.maybe_send_timeout_now(from, store);
        while self.send_append(from, store, false) {}
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, store: &impl LogStore) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index(store);
        let Some(pr) = self.lead.progress.get_mut(&from) else { return };
        pr.heard_heartbeat(self.config.inflight_max);
        if pr.match_index < last {
            self.send_append(from, store, true);
        }
    }

    /// Raft §5.4.2, Figure 8: an index is committed once a quorum holds it *and* its entry
    /// is from the current term; earlier entries then commit with it. The leader counts
    /// itself only for entries `persisted` reported durable (thesis §10.2.1), and never
    /// for an entry its disk damaged or any after it (`refetch.rs`).
    pub(super) fn maybe_commit(&mut self, store: &impl LogStore) {
        let (me, persisted) = (self.config.id, self.log.persisted().min(self.hole_free_through()));
        let progress = &self.lead.progress;
        let quorum = self
            .configs
            .active()
            .quorum_index(|id| if id == me { persisted } else { progress.get(&id).map_or(0, |pr| pr.match_index) });
        if quorum > self.log.commit() && self.log.term(store, quorum) == Some(self.term) {
            self.log.commit_to(store, quorum);
            self.after_commit(store);
        }
    }

    /// The last index at or below `index` whose entry has a term `<= term`, with that term
    /// (0 past the log start): where a follower's log may match ours (thesis §5.3.2).
    pub(super) fn last_with_term_at_most(&self, store: &impl LogStore, index: u64, term: u64) -> Conflict {
        let mut index = index.min(self.log.last_index(store));
        loop {
            match self.log.term(store, index) {
                Some(t) if t <= term => return Conflict { index, term: t },
                Some(_) if index > 0 => index -= 1,
                _ => return Conflict { index, term: 0 },
            }
        }
    }
}
