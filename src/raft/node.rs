//! One node's Raft state and its plumbing: construction from persisted state, the term
//! rules every message passes through, role changes, and the Ready batch.

use super::kind;
use super::log::RaftLog;
use super::membership::Configs;
use super::progress::Progress;
use super::snapshot::Receiving;
use super::{Config, Entry, HardState, LogStore, Membership, Message, NodeId, ProgressView, StartError, VoteBarrier};
use super::{Ready, Role, SoftState};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Where a proposal landed: the producer's ack carries `base_offset` once `index` commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
    pub base_offset: u64,
}

/// State only a leader has; dropped when it steps down.
#[derive(Debug, Default)]
pub(super) struct LeaderState {
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// The index of this term's no-op: entries from here on are this leader's.
    pub(super) term_start: u64,
    /// (node, ticks since the transfer began).
    pub(super) transfer: Option<(NodeId, u32)>,
    /// (index, encoded bytes) of this leader's entries not yet committed, oldest first.
    pub(super) uncommitted: VecDeque<(u64, u64)>,
    pub(super) uncommitted_bytes: u64,
    /// Ticks the group has been idle (`quiesce.rs`).
    pub(super) idle_ticks: u32,
}

/// A follower's acknowledgements to the leader of the current term.
#[derive(Debug, Default)]
pub(super) struct AckState {
    /// The log matches the current leader's through here (learned from its Appends).
    pub(super) matched: u64,
    /// The highest index acknowledged so far.
    pub(super) acked: u64,
    /// An accepted Append waits for `persisted` before it can be acknowledged.
    pub(super) waiting: bool,
}

/// The Raft core. See the module documentation for the loop that drives it.
pub struct Raft {
    pub(super) config: Config,
    pub(super) rng: SmallRng,
    pub(super) term: u64,
    pub(super) vote: Option<NodeId>,
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog,
    pub(super) configs: Configs,
    /// Ticks since the last election timeout reset; for a leader, since the last check-quorum.
    pub(super) election_elapsed: u32,
    /// This round's randomized timeout, in `election_ticks_min..=election_ticks_max`.
    pub(super) election_timeout: u32,
    pub(super) heartbeat_elapsed: u32,
    /// Answers to this node's (pre-)vote requests.
    pub(super) votes: BTreeMap<NodeId, bool>,
    pub(super) lead: LeaderState,
    pub(super) ack: AckState,
    /// While set, this node never campaigns and votes only for candidates at least as up
    /// to date as it (see `set_vote_barrier`).
    pub(super) vote_barrier: Option<VoteBarrier>,
    /// The group is quiet: no timers run here until something wakes it (`quiesce.rs`).
    pub(super) quiesced: bool,
    /// Damaged entries kept in place and fetched again from the peers (`refetch.rs`).
    pub(super) holes: BTreeSet<u64>,
    /// Holes found at start after the commit index: each might be a configuration entry
    /// (`with_holes`). Emptied as they are written back.
    pub(super) unknown_configs: BTreeSet<u64>,
    /// Checked copies of holes for the caller to write back (`take_rewrites`).
    pub(super) rewrites: Vec<Entry>,
    /// Ticks since holes were last asked for.
    pub(super) refetch_elapsed: u32,
    /// Ticks since the first hole opened or a hole was written back.
    pub(super) hole_open_ticks: u32,
    /// The first hole, once no peer filled it for long (`take_unfilled`).
    pub(super) unfilled: Vec<u64>,
    /// The leader's snapshot as received so far (`snapshot.rs`); dropped on a new term.
    pub(super) receiving: Option<Receiving>,
    messages: Vec<(NodeId, Message)>,
    pub(super) committed_membership: Option<(u64, Membership)>,
    reported_hard_state: HardState,
    reported_soft_state: SoftState,
    reported_quiesced: bool,
}

impl Raft {
    /// Restarts (or first starts) a node from what the caller persisted: its hard state,
    /// the last committed configuration it was handed (with its index), and its log. Every
    /// entry in `store` is taken as durable: the caller recovered it from disk. The latest
    /// configuration in the log wins (Raft §6), so the entries after both the membership's
    /// index and the commit index are scanned for configuration entries.
    pub fn new(
        config: Config,
        hard_state: HardState,
        membership: (u64, Membership),
        store: &impl LogStore,
    ) -> Result<Raft, StartError> {
        Raft::with_holes(config, hard_state, membership, store, &BTreeSet::new())
    }

    /// As `new`, on a log whose entries `holes` read back damaged (`refetch.rs`): they
    /// start as holes, fetched from the peers. The scan for configuration entries passes
    /// over them, so one after the commit index might be a configuration this node does
    /// not know yet: until it is written back, the node does not campaign, and takes no
    /// configuration at or after it as committed.
    pub fn with_holes(
        config: Config,
        hard_state: HardState,
        membership: (u64, Membership),
        store: &impl LogStore,
        holes: &BTreeSet<u64>,
    ) -> Result<Raft, StartError> {
        config.validate()?;
        let last_index = store.last_index();
        // Entries before the log or in the snapshot were committed when they were dropped.
        let snapshot_index = store.snapshot().map_or(0, |s| s.meta.index());
        let commit = hard_state.commit.max(store.first_index() - 1).max(snapshot_index);
        if commit > last_index {
            return Err(StartError::CommitBeyondLog { commit, last_index });
        }
        let mut configs = Configs::new(membership);
        let mut next = configs.committed().0.max(commit) + 1;
        let holes: BTreeSet<u64> = holes.range(store.first_index()..=last_index).copied().collect();
        let unknown_configs: BTreeSet<u64> = holes.range(next..).copied().collect();
        let mut batch = Vec::new();
        while next <= last_index {
            if holes.contains(&next) {
                next += 1;
                continue;
            }
            // Up to the next hole: reading it would fail.
            let before_hole = holes.range(next..).next().map_or(u64::MAX, |h| h - next);
            let entries_max = usize::try_from(before_hole).unwrap_or(usize::MAX).min(config.append_entries_max);
            batch.clear();
            store.entries(next, config.append_bytes_max, entries_max, &mut batch)?;
            for entry in batch.iter().filter(|e| e.kind() == kind::CONFIG) {
                let parsed = Membership::decode(&entry.payload());
                let membership = parsed.map_err(|source| StartError::Membership { index: entry.index(), source })?;
                configs.push(entry.index(), membership);
            }
            next = batch.last().map_or(last_index, |e| e.index()) + 1;
        }
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let election_timeout = rng.random_range(config.election_ticks_min..=config.election_ticks_max);
        let mut raft = Raft {
            rng,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::new(store, commit),
            configs,
            election_elapsed: 0,
            election_timeout,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            lead: LeaderState::default(),
            ack: AckState::default(),
            vote_barrier: None,
            quiesced: false,
            holes,
            unknown_configs,
            rewrites: Vec::new(),
            refetch_elapsed: 0,
            hole_open_ticks: 0,
            unfilled: Vec::new(),
            receiving: None,
            messages: Vec::new(),
            committed_membership: None,
            reported_hard_state: hard_state,
            reported_soft_state: SoftState { role: Role::Follower, leader: None, term: hard_state.term },
            reported_quiesced: false,
            config,
        };
        raft.role = raft.follower_role();
        Ok(raft)
    }

    /// The caller cut entries this node may have acknowledged (storage damage, FAST'18
    /// "Protocol-Aware Recovery"): `barrier` is where the log ended before the cut (the
    /// term of its last entry may be an upper bound, e.g. the current term, when it is not
    /// known any more). Until the durable log reaches `barrier.index` again, the node
    /// never campaigns (its log lacks entries) and grants a vote or pre-vote only to a
    /// candidate at least as up to date as the log it had (Raft §5.4.1, with `barrier`
    /// standing in for its last entry). Judged by its shorter log, it and a node that
    /// never had the lost entries could elect a leader without committed entries; judged
    /// by the log it had, every vote it grants is one it could have granted before the
    /// damage. It still accepts and acknowledges entries from a leader. Call it right
    /// after `new`; persist it beside the hard state and pass it again after a restart.
    /// A leader steps down.
    pub fn set_vote_barrier(&mut self, barrier: Option<VoteBarrier>) {
        let Some(barrier) = barrier.filter(|b| b.index > self.log.persisted()) else { return };
        let last = self.log.persisted();
        tracing::warn!(id = self.config.id, ?barrier, last, "log cut below what it acknowledged: no campaigns");
        self.vote_barrier = Some(self.vote_barrier.map_or(barrier, |b| b.max(barrier)));
        if matches!(self.role, Role::Leader | Role::Candidate | Role::PreCandidate) {
            self.become_follower(self.term, None);
        }
    }

    /// The vote barrier in force (`None` once the durable log reached it again).
    pub fn vote_barrier(&self) -> Option<VoteBarrier> {
        self.vote_barrier
    }

    /// Whether the vote barrier holds.
    pub(super) fn barred(&self) -> bool {
        self.vote_barrier.is_some()
    }

    /// Lifts the vote barrier once the durable log reached its index. Entries a leader
    /// sent hold every committed entry up to there (Leader Completeness), so the log
    /// again holds whatever this node acknowledged before the cut and may vote with it.
    fn maybe_lift_vote_barrier(&mut self) {
        if let Some(barrier) = self.vote_barrier.filter(|b| self.log.persisted() >= b.index) {
            tracing::info!(id = self.config.id, ?barrier, "log repaired: campaigning and voting as usual again");
            self.vote_barrier = None;
        }
    }

    /// Advances time by one tick: election timeouts, heartbeats, check-quorum. Nothing
    /// while the group is quiet.
    pub fn tick(&mut self, store: &impl LogStore) {
        self.log.check_store(store);
        if self.quiesced {
            return;
        }
        if self.role == Role::Leader {
            self.tick_leader(store);
        } else {
            self.tick_election(store);
        }
    }

    /// Handles a message from peer `from`. Nothing a peer sends can make this panic:
    /// malformed or out-of-range messages are dropped or rejected.
    pub fn step(&mut self, from: NodeId, msg: Message, store: &impl LogStore) {
        self.log.check_store(store);
        if from == self.config.id || from == 0 || !msg.numbers_in_range() {
            tracing::warn!(id = self.config.id, from, msg = msg.name(), "malformed message dropped");
            return;
        }
        self.wake_on_message(from, &msg);
        // Refetches change no term and need none (`refetch.rs`): any peer may answer.
        match msg {
            Message::Refetch { index, last_index, .. } => return self.handle_refetch(from, index, last_index, store),
            Message::RefetchResponse { proof_index, proof_term, entries, .. } => {
                return self.handle_refetch_response(from, proof_index, proof_term, entries, store);
            }
            _ => {}
        }
        let term = msg.term();
        if term > self.term {
            let vote_request = match &msg {
                Message::PreVote { .. } => Some(false),
                Message::Vote { transfer, .. } => Some(*transfer),
                _ => None,
            };
            if vote_request == Some(false) && self.in_lease() {
                // Thesis §4.2.3: a node that hears from a live leader ignores elections, so a
                // node rejoining after a partition cannot depose a healthy leader.
                tracing::debug!(id = self.config.id, from, term, "ignoring a vote request during the leader lease");
                return;
            }
            match &msg {
                // A pre-vote changes no term, and a granted pre-vote answer is for a term we
                // have not entered yet.
                Message::PreVote { .. } | Message::PreVoteResponse { granted: true, .. } => {}
                Message::Append { .. }
                | Message::Heartbeat { .. }
                | Message::Reset { .. }
                | Message::Snapshot { .. }
                | Message::Quiesce { .. } => self.become_follower(term, Some(from)),
                _ => self.become_follower(term, None),
            }
        } else if term < self.term {
            self.answer_stale(from, &msg);
            return;
        }
        match msg {
            Message::PreVote { term, last_index, last_term } => {
                self.handle_vote_request(from, term, last_index, last_term, true, store)
            }
            Message::Vote { term, last_index, last_term, .. } => {
                self.handle_vote_request(from, term, last_index, last_term, false, store)
            }
            Message::PreVoteResponse { term, granted } => self.handle_vote_response(from, term, granted, true, store),
            Message::VoteResponse { term, granted } => self.handle_vote_response(from, term, granted, false, store),
            Message::Append { prev_index, prev_term, commit, entries, .. } => {
                self.handle_append(from, prev_index, prev_term, commit, entries, store)
            }
            Message::AppendResponse { index, reject, .. } => self.handle_append_response(from, index, reject, store),
            Message::Heartbeat { commit, .. } => self.handle_heartbeat(from, commit, store),
            Message::HeartbeatResponse { .. } => self.handle_heartbeat_response(from, store),
            Message::TimeoutNow { .. } => self.handle_timeout_now(from, store),
            Message::Reset { start, membership_index, membership, .. } => {
                self.handle_reset(from, start, (membership_index, membership), store)
            }
            Message::Quiesce { commit, .. } => self.handle_quiesce(from, commit, store),
            Message::Snapshot { meta, offset, data, .. } => self.handle_snapshot(from, meta, offset, data, store),
            Message::SnapshotResponse { index, received, .. } => {
                self.handle_snapshot_response(from, index, received, store)
            }
            Message::Refetch { .. } | Message::RefetchResponse { .. } => unreachable!("handled above"),
        }
    }

    /// A message from an older term. Tell a stale leader or candidate our term so it steps
    /// down; with pre-vote or check-quorum this also frees a node whose term ran ahead.
    fn answer_stale(&mut self, from: NodeId, msg: &Message) {
        let term = self.term;
        match msg {
            Message::Append { .. }
            | Message::Heartbeat { .. }
            | Message::Reset { .. }
            | Message::Snapshot { .. }
            | Message::Quiesce { .. }
                if self.config.pre_vote || self.config.check_quorum =>
            {
                self.send(from, Message::HeartbeatResponse { term })
            }
            Message::PreVote { .. } => self.send(from, Message::PreVoteResponse { term, granted: false }),
            Message::Vote { .. } => self.send(from, Message::VoteResponse { term, granted: false }),
            _ => {}
        }
    }

    /// The caller made the entries through `index` durable, and the entry at `index` has
    /// `term`. A report about an entry since truncated or replaced is ignored.
    pub fn persisted(&mut self, index: u64, term: u64, store: &impl LogStore) {
        self.log.check_store(store);
        if !self.log.persisted_to(store, index, term) {
            return;
        }
        self.maybe_lift_vote_barrier();
        if self.role == Role::Leader {
            self.maybe_commit(store);
        } else {
            self.flush_ack();
        }
    }

    /// Whether `take_ready` would return anything.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || !self.rewrites.is_empty()
            || !self.unfilled.is_empty()
            || self.log.has_pending()
            || self.committed_membership.is_some()
            || self.hard_state() != self.reported_hard_state
            || self.soft_state() != self.reported_soft_state
            || self.quiesced != self.reported_quiesced
    }

    /// Drains the outputs accumulated since the last call. See `Ready` for the order in
    /// which the caller must apply them.
    pub fn take_ready(&mut self) -> Ready {
        let snapshot = self.log.take_snapshot();
        let (reset, truncate_after, entries) = self.log.take();
        let hard_state = self.hard_state();
        let commit = (hard_state.commit > self.reported_hard_state.commit).then_some(hard_state.commit);
        let mut committed_membership = self.committed_membership.take();
        if let Some(newest) = commit.and_then(|c| self.configs.take_committed(c.min(self.configs_known_through()))) {
            committed_membership = Some(newest);
        }
        // A term or a vote must be durable before anyone hears of it (Raft Figure 2).
        let term_changed = hard_state.term != self.reported_hard_state.term;
        let vote_changed = hard_state.vote != self.reported_hard_state.vote;
        let soft_state = self.soft_state();
        let ready = Ready {
            snapshot,
            hard_state: (hard_state != self.reported_hard_state).then_some(hard_state),
            hard_state_must_sync: term_changed || vote_changed,
            reset,
            truncate_after,
            entries,
            messages: std::mem::take(&mut self.messages),
            commit,
            committed_membership,
            soft_state: (soft_state != self.reported_soft_state).then_some(soft_state),
            quiesced: (self.quiesced != self.reported_quiesced).then_some(self.quiesced),
        };
        self.reported_hard_state = hard_state;
        self.reported_soft_state = soft_state;
        self.reported_quiesced = self.quiesced;
        ready
    }

    fn hard_state(&self) -> HardState {
        let commit = self.log.durable_commit().max(self.reported_hard_state.commit);
        HardState { term: self.term, vote: self.vote, commit }
    }

    fn soft_state(&self) -> SoftState {
        SoftState { role: self.role, leader: self.leader, term: self.term }
    }

    pub(super) fn send(&mut self, to: NodeId, msg: Message) {
        self.messages.push((to, msg));
    }

    /// A configuration came with a reset: the caller persists it (see `Ready`).
    pub(super) fn report_membership(&mut self, committed: (u64, Membership)) {
        self.committed_membership = Some(committed);
    }

    /// Moves to `term` (never backwards); a new term has no vote yet (Raft Figure 2).
    pub(super) fn set_term(&mut self, term: u64) {
        assert!(term >= self.term, "the term never goes backwards ({} to {term})", self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.ack = AckState::default();
            // Chunks of another term's snapshot are stale.
            self.receiving = None;
        }
    }

    /// Records this term's vote: at most one per term (Raft §5.2).
    pub(super) fn set_vote(&mut self, candidate: NodeId) {
        assert!(self.vote.is_none_or(|v| v == candidate), "one vote per term: already voted for {:?}", self.vote);
        self.vote = Some(candidate);
    }

    pub(super) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if self.role == Role::Leader {
            tracing::info!(id = self.config.id, term = self.term, "stepping down");
        }
        self.set_term(term);
        self.role = self.follower_role();
        self.leader = leader;
        self.lead = LeaderState::default();
        self.votes.clear();
        self.quiesced = false;
        self.reset_election_timer();
    }

    /// Follower, or Learner when this node only learns in the active configuration.
    pub(super) fn follower_role(&self) -> Role {
        if self.configs.active().learners.contains(&self.config.id) { Role::Learner } else { Role::Follower }
    }

    /// Whether this node may campaign: it votes in the latest configuration it knows, or
    /// that configuration is not committed yet and it votes in an earlier one still in
    /// play. Thesis §4.2.2: a server removed by an uncommitted C_new may still be needed to
    /// elect a leader; it campaigns, though its own vote does not count (`vote_result`
    /// counts the latest configuration's voters only). Never while the vote barrier holds.
    pub(super) fn promotable(&self) -> bool {
        let id = self.config.id;
        let voter = self.configs.active().is_voter(id)
            || (self.log.commit() < self.configs.active_index() && self.configs.any_has_voter(id));
        voter && !self.barred() && self.unknown_configs.is_empty()
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self.rng.random_range(self.config.election_ticks_min..=self.config.election_ticks_max);
    }

    /// Heard from a leader within the minimum election timeout (thesis §4.2.3), or quiet
    /// with a leader believed alive (`quiesce.rs`).
    pub(super) fn in_lease(&self) -> bool {
        let recent = self.quiesced || self.election_elapsed < self.config.election_ticks_min;
        self.config.check_quorum && self.leader.is_some() && recent
    }

    /// The active configuration changed (an entry was appended, truncated or reset):
    /// roles and the leader's follower set follow it.
    pub(super) fn membership_changed(&mut self, store: &impl LogStore) {
        match self.role {
            // A leader's configuration changes only by appending its own entry, the last
            // one: new members are probed from it, so it is the first thing they are sent.
            Role::Leader => self.sync_progress(self.log.last_index(store)),
            Role::Candidate | Role::PreCandidate if !self.promotable() => {
                self.become_follower(self.term, None);
            }
            Role::Follower | Role::Learner => self.role = self.follower_role(),
            Role::Candidate | Role::PreCandidate => {}
        }
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The current leader as far as this node knows, to redirect clients to.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The index of this leader's first entry of its term (its no-op or bootstrap
    /// configuration); `None` when not leading.
    pub fn term_start(&self) -> Option<u64> {
        (self.role == Role::Leader).then_some(self.lead.term_start)
    }

    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The commit index as known here (possibly not yet durable here; see `Ready::commit`).
    pub fn commit(&self) -> u64 {
        self.log.commit()
    }

    /// The highest index `persisted` reported (0 while a reset is not yet durable).
    pub fn persisted_index(&self) -> u64 {
        self.log.persisted()
    }

    /// The latest configuration in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.configs.active()
    }

    /// The record offset the next proposal's first record gets.
    pub fn next_offset(&self, store: &impl LogStore) -> u64 {
        let last = self.log.last_index(store);
        self.log.offset_after(store, last).expect("a log's last offset is always known")
    }

    /// The record offset after the entry at `index` (`first_index - 1 ..= last_index`),
    /// seeing the changes not handed out yet.
    pub fn offset_after(&self, index: u64, store: &impl LogStore) -> Result<u64, super::StoreError> {
        self.log.offset_after(store, index)
    }

    /// The index of the entry holding `membership()`.
    pub fn membership_index(&self) -> u64 {
        self.configs.active_index()
    }

    /// The node leadership is being transferred to, if any.
    pub fn transferee(&self) -> Option<NodeId> {
        self.lead.transfer.map(|(to, _)| to)
    }

    /// Each follower's replication progress (leader only; empty otherwise).
    pub fn progress(&self) -> Vec<ProgressView> {
        self.lead.progress.iter().map(|(id, pr)| pr.view(*id)).collect()
    }
}

impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.config.id)
            .field("term", &self.term)
            .field("vote", &self.vote)
            .field("role", &self.role)
            .field("leader", &self.leader)
            .field("commit", &self.log.commit())
            .field("persisted", &self.log.persisted())
            .field("vote_barrier", &self.vote_barrier)
            .field("quiesced", &self.quiesced)
            .field("membership", self.configs.active())
            .finish()
    }
}
