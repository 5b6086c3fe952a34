//! Leader election (Raft §5.2, §5.4.1): randomized timeouts, pre-vote (thesis §9.6), the
//! up-to-date vote rule, check-quorum (thesis §6.2) and leadership transfer (thesis §3.10).

use super::membership::VoteResult;
use super::{LogStore, Message, NodeId, Raft, Role};

impl Raft {
    pub(super) fn tick_election(&mut self, store: &impl LogStore) {
        self.tick_refetch(store);
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed < self.election_timeout {
            return;
        }
        if !self.promotable() {
            self.announce_no_leader(store);
        } else if self.config.pre_vote {
            self.campaign_pre_vote(store);
        } else {
            self.campaign(store, false);
        }
    }

    pub(super) fn tick_leader(&mut self, store: &impl LogStore) {
        self.tick_refetch(store);
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if let Some((to, elapsed)) = &mut self.lead.transfer {
            *elapsed += 1;
            if *elapsed >= self.config.election_ticks_min {
                // The target did not take over within an election timeout: keep leading.
                tracing::info!(id = self.config.id, to = *to, "leadership transfer timed out");
                self.lead.transfer = None;
            }
        }
        if self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                tracing::info!(id = self.config.id, term = self.term, "no quorum heard within an election timeout");
                self.become_follower(self.term, None);
                return;
            }
            for pr in self.lead.progress.values_mut() {
                pr.recent_active = false;
            }
        }
        let idle = self.idle_long_enough(store);
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            // In place of a heartbeat, so that the answers to the last one are in.
            if idle {
                self.quiesce();
            } else {
                self.broadcast_heartbeat();
            }
        }
    }

    /// Whether a quorum of voters was heard from since the last check (the leader counts).
    fn quorum_active(&self) -> bool {
        let me = self.config.id;
        let progress = &self.lead.progress;
        self.configs.active().has_quorum(|id| id == me || progress.get(&id).is_some_and(|pr| pr.recent_active))
    }

    /// Asks whether a quorum would vote for us, without touching our term (thesis §9.6).
    fn campaign_pre_vote(&mut self, store: &impl LogStore) {
        self.quiesced = false;
        self.role = Role::PreCandidate;
        self.leader = None;
        self.start_poll(store, self.term + 1, |term, last_index, last_term| Message::PreVote {
            term,
            last_index,
            last_term,
        });
    }

    /// Starts an election in the next term, voting for ourselves (Raft §5.2).
    pub(super) fn campaign(&mut self, store: &impl LogStore, transfer: bool) {
        self.set_term(self.term + 1);
        self.set_vote(self.config.id);
        self.quiesced = false;
        self.role = Role::Candidate;
        self.leader = None;
        tracing::debug!(id = self.config.id, term = self.term, transfer, "campaigning");
        self.start_poll(store, self.term, |term, last_index, last_term| Message::Vote {
            term,
            last_index,
            last_term,
            transfer,
        });
    }

    /// Votes for ourselves and asks every other voter of both halves of the configuration.
    fn start_poll(&mut self, store: &impl LogStore, term: u64, request: impl Fn(u64, u64, u64) -> Message) {
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        if self.tally(store) != VoteResult::Pending {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(store), self.log.last_term(store));
        let voters: Vec<NodeId> = self.configs.active().all_voters().filter(|id| *id != self.config.id).collect();
        for id in voters {
            self.send(id, request(term, last_index, last_term));
        }
    }

    /// Acts on the votes counted so far: a won pre-vote starts the real election, a won
    /// election makes us leader, a lost one sends us back to following.
    fn tally(&mut self, store: &impl LogStore) -> VoteResult {
        let result = self.configs.active().vote_result(&self.votes);
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.campaign(store, false),
            (VoteResult::Won, Role::Candidate) => self.become_leader(store),
            (VoteResult::Lost, _) => self.become_follower(self.term, None),
            _ => {}
        }
        result
    }

    /// RequestVote and PreVote (the term rules in `step` already ran). Grants only a
    /// candidate whose log is at least as up to date as ours: a higher last term, or the
    /// same last term and a last index at least ours (Raft §5.4.1).
    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        last_index: u64,
        last_term: u64,
        pre_vote: bool,
        store: &impl LogStore,
    ) {
        let can_vote =
            self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none()) || (pre_vote && term > self.term);
        let mut ours = (self.log.last_term(store), self.log.last_index(store));
        if let Some(b) = self.vote_barrier {
            // A log cut below what this node acknowledged judges as the log it had (see
            // `set_vote_barrier`), or as the one it has if that is more up to date.
            ours = ours.max((b.term, b.index));
        }
        let up_to_date = (last_term, last_index) >= ours;
        let granted = can_vote && up_to_date;
        if self.barred() {
            tracing::debug!(id = self.config.id, from, term, granted, ?ours, "vote request while under repair");
        }
        if pre_vote {
            let term = if granted { term } else { self.term };
            self.send(from, Message::PreVoteResponse { term, granted });
            return;
        }
        if granted {
            // Granting a vote restarts the timer, so we do not compete with the candidate.
            self.reset_election_timer();
            self.set_vote(from);
        }
        self.send(from, Message::VoteResponse { term: self.term, granted });
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: u64,
        granted: bool,
        pre_vote: bool,
        store: &impl LogStore,
    ) {
        let counts = if pre_vote {
            self.role == Role::PreCandidate && (!granted || term == self.term + 1)
        } else {
            self.role == Role::Candidate && term == self.term
        };
        if counts {
            self.votes.entry(from).or_insert(granted);
            self.tally(store);
        }
    }

    /// The leader is handing leadership to us: campaign at once, past pre-vote and leases.
    pub(super) fn handle_timeout_now(&mut self, from: NodeId, store: &impl LogStore) {
        if self.promotable() && self.role != Role::Leader {
            tracing::info!(id = self.config.id, from, term = self.term, "leadership transferred to us");
            self.campaign(store, true);
        }
    }
}
