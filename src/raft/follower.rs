//! The follower's side of log replication (Raft §5.3): validate what the leader sent, run
//! the consistency check, truncate a conflicting suffix (never a committed entry), append,
//! and acknowledge only what is durable.

use super::{Conflict, Entry, LogStart, LogStore, Membership, Message, NodeId, Raft, Role, kind};

impl Raft {
    /// A message from the leader of our term: follow it and restart the election timer.
    /// False if we lead this term ourselves, which only a broken peer can cause.
    pub(super) fn heard_from_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => {
                tracing::error!(id = self.config.id, from, term = self.term, "another leader in our term; ignored");
                return false;
            }
            Role::Candidate | Role::PreCandidate => self.become_follower(self.term, Some(from)),
            Role::Follower | Role::Learner => {
                self.leader = Some(from);
                self.election_elapsed = 0;
            }
        }
        // The leader is active again: a quiet follower resumes its timer.
        self.quiesced = false;
        true
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        entries: Vec<Entry>,
        store: &impl LogStore,
    ) {
        if !self.heard_from_leader(from) {
            return;
        }
        let Some(configs) = self.check_entries(prev_index, prev_term, &entries) else {
            tracing::warn!(id = self.config.id, from, prev_index, "malformed Append dropped");
            return;
        };
        // Entries at or below our commit index are ours already: start after it.
        let commit = self.log.commit();
        let (prev_index, prev_term, skip) = if prev_index < commit {
            let skip = commit - prev_index;
            if skip >= entries.len() as u64 {
                self.ack.matched = self.ack.matched.max(commit);
                self.answer_append(from, commit);
                return;
            }
            let term_at_commit = entries[skip as usize - 1].term();
            if self.log.term(store, commit) != Some(term_at_commit) {
                tracing::error!(id = self.config.id, from, commit, "an Append contradicts a committed entry; dropped");
                return;
            }
            (commit, term_at_commit, skip as usize)
        } else {
            (prev_index, prev_term, 0)
        };
        let entries = &entries[skip..];
        if self.log.term(store, prev_index) != Some(prev_term) {
            // Raft §5.3 consistency check failed: say where our log may match the leader's.
            let hint = self.last_with_term_at_most(store, prev_index, prev_term);
            self.send(from, Message::AppendResponse { term: self.term, index: prev_index, reject: Some(hint) });
            return;
        }
        // Skip the entries we hold already; the first one that differs is a conflict.
        let last = self.log.last_index(store);
        let held =
            entries.iter().take_while(|e| e.index() <= last && self.log.term(store, e.index()) == Some(e.term()));
        let new_at = held.count();
        if let Some(first_new) = entries.get(new_at) {
            if !self.append_from_leader(from, prev_index, entries, new_at, store) {
                return;
            }
            let new_configs = configs.into_iter().filter(|(index, _)| *index >= first_new.index());
            let mut changed = false;
            for (index, membership) in new_configs {
                self.configs.push(index, membership);
                changed = true;
            }
            if changed {
                self.membership_changed(store);
            }
        }
        let last_new = prev_index + entries.len() as u64;
        self.ack.matched = self.ack.matched.max(last_new);
        let commit_to = leader_commit.min(last_new);
        if commit_to > self.log.commit() {
            self.log.commit_to(store, commit_to);
        }
        self.answer_append(from, last_new);
    }

    /// Writes `entries[new_at..]`, truncating our conflicting suffix first. False if the
    /// message cannot be applied (it contradicts a committed entry, its record offsets do not
    /// continue ours, or the store cannot be read); the leader retries.
    fn append_from_leader(
        &mut self,
        from: NodeId,
        prev_index: u64,
        entries: &[Entry],
        new_at: usize,
        store: &impl LogStore,
    ) -> bool {
        let first_new = &entries[new_at];
        let at = first_new.index();
        if new_at == 0 {
            // Later entries are checked against the message's own offsets (check_entries).
            let expected = self.log.offset_after(store, prev_index);
            if expected.as_ref().ok() != Some(&first_new.base_offset()) {
                tracing::warn!(id = self.config.id, from, at, ?expected, "an Append's offsets do not continue ours");
                return false;
            }
        }
        if at <= self.log.last_index(store) {
            let keep = at - 1;
            if keep < self.log.commit().max(self.configs.committed().0) {
                tracing::error!(id = self.config.id, from, at, "an Append conflicts with a committed entry; dropped");
                return false;
            }
            if let Err(error) = self.log.truncate_after(store, keep) {
                tracing::warn!(id = self.config.id, from, at, %error, "cannot truncate; dropped the Append");
                return false;
            }
            self.configs.truncate_after(keep);
            self.forget_holes_after(keep);
            self.membership_changed(store);
        }
        self.log.append(store, &entries[new_at..]);
        true
    }

    /// Validates a peer's entries before anything is trusted: contiguous indexes after
    /// `prev_index`, terms that never decrease and never exceed ours, known kinds, dense
    /// record offsets, and decodable configurations (returned with their indexes).
    fn check_entries(&self, prev_index: u64, prev_term: u64, entries: &[Entry]) -> Option<Vec<(u64, Membership)>> {
        if prev_term > self.term {
            return None;
        }
        let mut configs = Vec::new();
        let (mut index, mut term, mut offset) = (prev_index, prev_term, None);
        for entry in entries {
            index = index.checked_add(1)?;
            let records = u64::from(entry.record_count());
            let fits = match entry.kind() {
                kind::DATA => records > 0,
                kind::NOOP | kind::CONFIG => records == 0,
                _ => false,
            };
            let continues = offset.is_none_or(|o| o == entry.base_offset());
            if !fits || !continues || entry.index() != index || entry.term() < term || entry.term() > self.term {
                return None;
            }
            if entry.kind() == kind::CONFIG {
                configs.push((index, Membership::decode(&entry.payload()).ok()?));
            }
            term = entry.term();
            offset = Some(entry.base_offset().checked_add(records)?);
        }
        Some(configs)
    }

    /// The highest index we can acknowledge: it matches the leader's log, is durable, and
    /// comes before any entry our disk damaged (`refetch.rs`).
    fn ackable(&self) -> u64 {
        self.ack.matched.min(self.log.persisted()).min(self.hole_free_through())
    }

    /// Acknowledges an accepted Append that established a match through `want`: now if
    /// durable, else once `persisted` catches up (a follower never acknowledges entries
    /// that a crash could still take away).
    pub(super) fn answer_append(&mut self, to: NodeId, want: u64) {
        let ackable = self.ackable();
        if ackable >= want {
            self.send(to, Message::AppendResponse { term: self.term, index: ackable, reject: None });
            self.ack.acked = self.ack.acked.max(ackable);
        }
        self.ack.waiting = ackable < self.ack.matched;
    }

    /// `persisted` advanced: acknowledge what became durable to the leader waiting for it.
    pub(super) fn flush_ack(&mut self) {
        let Some(leader) = self.leader else { return };
        if !self.ack.waiting {
            return;
        }
        let ackable = self.ackable();
        if ackable > self.ack.acked {
            self.send(leader, Message::AppendResponse { term: self.term, index: ackable, reject: None });
            self.ack.acked = ackable;
        }
        self.ack.waiting = ackable < self.ack.matched;
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, leader_commit: u64, store: &impl LogStore) {
        if !self.heard_from_leader(from) {
            return;
        }
        // The leader sends min(its commit, our match), so the entries are ours and durable.
        let last = self.log.last_index(store);
        let commit_to = leader_commit.min(last);
        if commit_to > self.log.commit() {
            self.log.commit_to(store, commit_to);
        }
        self.answer_heartbeat(from, leader_commit, store);
    }

    /// Answers a heartbeat whose commit index is `leader_commit`.
    pub(super) fn answer_heartbeat(&mut self, from: NodeId, leader_commit: u64, store: &impl LogStore) {
        let last = self.log.last_index(store);
        if leader_commit > last {
            // Only a log that lost entries it acknowledged ends below our match: the glue
            // cut damaged entries. Say where the log ends, or an idle leader, which sends
            // nothing past our match, never sends them again.
            let hint = Conflict { index: last, term: self.log.last_term(store) };
            self.send(from, Message::AppendResponse { term: self.term, index: last, reject: Some(hint) });
        }
        self.send(from, Message::HeartbeatResponse { term: self.term });
    }

    /// The leader's log starts after our last entry (retention deleted the prefix we
    /// need). Everything before its start is committed; take its start and configuration.
    pub(super) fn handle_reset(
        &mut self,
        from: NodeId,
        start: LogStart,
        membership: (u64, Membership),
        store: &impl LogStore,
    ) {
        if !self.heard_from_leader(from) {
            return;
        }
        // Like an Append's entries, the start's term cannot be later than the leader's.
        if start.index == 0 || start.prev_term > self.term || membership.1.validate().is_err() {
            tracing::warn!(id = self.config.id, from, ?start, "malformed Reset dropped");
            return;
        }
        if self.follows_without_install(from, start, store) {
            return;
        }
        tracing::info!(id = self.config.id, from, ?start, "resetting the log to the leader's start");
        self.log.reset(start, membership.1.clone());
        self.log_replaced(from, start, membership, store);
    }

    /// Whether we can follow a leader whose log starts at `start` without a new log: we
    /// hold everything before it (committed already), or its entry at `start.index - 1`,
    /// so we keep our log and commit through it (Raft §7). The leader hears where we are.
    pub(super) fn follows_without_install(&mut self, from: NodeId, start: LogStart, store: &impl LogStore) -> bool {
        let prev = start.index - 1;
        let commit = self.log.commit();
        if prev <= commit {
            self.ack.matched = self.ack.matched.max(commit);
            self.answer_append(from, commit);
            return true;
        }
        if self.log.term(store, prev) != Some(start.prev_term) {
            return false;
        }
        self.log.commit_to(store, prev);
        self.ack.matched = self.ack.matched.max(prev);
        self.answer_append(from, prev);
        true
    }
}
