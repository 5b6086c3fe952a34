//! What only a leader does: take office, accept proposals (with backpressure), change the
//! membership by joint consensus (Raft §6) and hand leadership over (thesis §3.10).

use super::error::BusyReason;
use super::node::LeaderState;
use super::progress::Progress;
use super::{Entry, EntryMeta, LogStore, Membership, MembershipChange, Message, NodeId, Proposal, Raft, Role};
use super::{ProposeError, TransferError, kind};
use segments::HEADER_LEN;

impl Raft {
    pub(super) fn become_leader(&mut self, store: &impl LogStore) {
        tracing::info!(id = self.config.id, term = self.term, "elected leader");
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.quiesced = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.lead = LeaderState::default();
        self.sync_progress(self.log.last_index(store) + 1);
        // Raft §5.4.2 and §8: entries of earlier terms commit only once an entry of the
        // leader's own term does, so a new leader appends one at once: a no-op, or, while
        // the configuration in force is still the bootstrap one the caller passed to
        // `new` (index 0, in no entry), that configuration. Nodes that join later then
        // learn it from the log, or from a Reset that carries it once it is committed.
        self.lead.term_start = if self.configs.active_index() == 0 {
            self.append_config(store, self.configs.active().clone())
        } else {
            self.append_own(store, kind::NOOP, &[], 0).index
        };
        self.broadcast_append(store);
        // A joint configuration may already be committed (its leader changed mid-change):
        // finish the change.
        self.maybe_leave_joint(store);
    }

    /// Appends a client batch of `record_count` records. The entry is encoded here, once:
    /// the same bytes go to disk, to the followers and to consumers.
    pub fn propose(
        &mut self,
        payload: &[u8],
        record_count: u32,
        store: &impl LogStore,
    ) -> Result<Proposal, ProposeError> {
        self.log.check_store(store);
        self.check_can_propose()?;
        if record_count == 0 {
            return Err(ProposeError::Empty);
        }
        let bytes = HEADER_LEN + payload.len();
        if bytes > self.config.append_bytes_max {
            return Err(ProposeError::TooLarge { bytes, max: self.config.append_bytes_max });
        }
        let (pending, max) = (self.lead.uncommitted_bytes, self.config.uncommitted_bytes_max);
        if pending > 0 && pending + bytes as u64 > max {
            return Err(ProposeError::Busy(BusyReason::UncommittedBytes { pending, max }));
        }
        let proposal = self.append_own(store, kind::DATA, payload, record_count);
        self.broadcast_append(store);
        Ok(proposal)
    }

    /// Proposes a membership change and returns the index of its configuration entry. A
    /// change of voters appends the joint configuration C_old,new; once it commits, the
    /// leader appends C_new by itself (Raft §6). One change at a time: the previous one
    /// must be committed and left, and this leader must have committed an entry of its own
    /// term (thesis §4.1's fix for changes that start before the leader knows the commit).
    /// `addresses` (`host:port` of new members, opaque here) travel in the entry.
    pub fn propose_membership(
        &mut self,
        changes: &[MembershipChange],
        addresses: &[(NodeId, String)],
        store: &impl LogStore,
    ) -> Result<u64, ProposeError> {
        self.log.check_store(store);
        self.check_can_propose()?;
        let active = self.configs.active();
        let commit = self.log.commit();
        if active.is_joint() || self.configs.active_index() > commit || commit < self.lead.term_start {
            return Err(ProposeError::Busy(BusyReason::MembershipChange));
        }
        let mut next = active.apply(changes)?;
        let members = next.members();
        next.addresses.extend(addresses.iter().filter(|(id, _)| members.contains(id)).cloned());
        next.validate()?;
        let index = self.append_config(store, next);
        self.broadcast_append(store);
        Ok(index)
    }

    /// Hands leadership to voter `to`: replicate until its log matches ours, then tell it
    /// to campaign at once (TimeoutNow). Proposals are refused meanwhile, so the target can
    /// catch up; the transfer is abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId, store: &impl LogStore) -> Result<(), TransferError> {
        self.log.check_store(store);
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        if to == self.config.id {
            return Ok(());
        }
        if !self.configs.active().voters.contains(&to) {
            return Err(TransferError::NotVoter(to));
        }
        self.resume_leading();
        self.lead.transfer = Some((to, 0));
        if !self.maybe_send_timeout_now(to, store) {
            self.send_append(to, store, true);
        }
        Ok(())
    }

    /// A leader may take a proposal; a quiet one wakes for it (`quiesce.rs`).
    fn check_can_propose(&mut self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.lead.transfer.is_some() {
            return Err(ProposeError::Busy(BusyReason::LeadershipTransfer));
        }
        self.resume_leading();
        Ok(())
    }

    /// Sends TimeoutNow if `to` is the transfer target and its log matches ours.
    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId, store: &impl LogStore) -> bool {
        let last = self.log.last_index(store);
        let caught_up = self.lead.progress.get(&to).is_some_and(|pr| pr.match_index == last);
        if self.transferee() != Some(to) || !caught_up {
            return false;
        }
        self.send(to, Message::TimeoutNow { term: self.term });
        true
    }

    /// Builds the next entry of our log. The record offset continues from the last entry.
    fn append_own(&mut self, store: &impl LogStore, kind: u8, payload: &[u8], record_count: u32) -> Proposal {
        let index = self.log.last_index(store) + 1;
        let base_offset = self.log.offset_after(store, index - 1).expect("a log's last offset is always known");
        let meta = EntryMeta { index, term: self.term, kind, base_offset, record_count };
        let entry = Entry::encode(meta, payload);
        let bytes = entry.encoded_len() as u64;
        self.log.append(store, std::slice::from_ref(&entry));
        self.lead.uncommitted.push_back((index, bytes));
        self.lead.uncommitted_bytes += bytes;
        Proposal { index, term: self.term, base_offset }
    }

    /// Appends a configuration entry; like any server, the leader uses it at once (Raft §6).
    fn append_config(&mut self, store: &impl LogStore, membership: Membership) -> u64 {
        let index = self.append_own(store, kind::CONFIG, &membership.encode(), 0).index;
        tracing::info!(id = self.config.id, index, ?membership, "appending a configuration");
        self.configs.push(index, membership);
        self.membership_changed(store);
        index
    }

    /// Keeps one Progress per member of the active configuration; new ones probe from `next`.
    pub(super) fn sync_progress(&mut self, next: u64) {
        let members = self.configs.active().members();
        self.lead.progress.retain(|id, _| members.contains(id));
        for id in members.into_iter().filter(|id| *id != self.config.id) {
            self.lead.progress.entry(id).or_insert_with(|| Progress::new(next));
        }
        if self.transferee().is_some_and(|to| !self.configs.active().voters.contains(&to)) {
            self.lead.transfer = None;
        }
    }

    /// The commit index advanced on this leader.
    pub(super) fn after_commit(&mut self, store: &impl LogStore) {
        let commit = self.log.commit();
        while let Some(&(index, bytes)) = self.lead.uncommitted.front() {
            if index > commit {
                break;
            }
            self.lead.uncommitted.pop_front();
            self.lead.uncommitted_bytes -= bytes;
        }
        self.maybe_leave_joint(store);
        let active = self.configs.active();
        if commit >= self.configs.active_index() && !active.is_voter(self.config.id) {
            self.step_down_removed(store);
        }
    }

    /// Raft §6: once C_old,new is committed, the leader appends C_new.
    fn maybe_leave_joint(&mut self, store: &impl LogStore) {
        let active = self.configs.active();
        if self.role == Role::Leader && active.is_joint() && self.log.commit() >= self.configs.active_index() {
            let next = active.leave_joint();
            self.append_config(store, next);
            self.broadcast_append(store);
        }
    }

    /// Raft §6: a leader that is not part of C_new steps down once C_new is committed. It
    /// first tells the followers the commit index and asks the most caught-up voter of the
    /// new configuration to campaign at once, so the cluster does not wait for a timeout.
    fn step_down_removed(&mut self, store: &impl LogStore) {
        let last = self.log.last_index(store);
        let voters = &self.configs.active().voters;
        let successor = self
            .lead
            .progress
            .iter()
            .filter(|(id, pr)| voters.contains(id) && pr.match_index == last)
            .map(|(id, _)| *id)
            .next();
        self.broadcast_heartbeat();
        if let Some(to) = successor {
            self.send(to, Message::TimeoutNow { term: self.term });
        }
        tracing::info!(id = self.config.id, term = self.term, ?successor, "removed from the configuration");
        self.become_follower(self.term, None);
    }
}
