//! A harness for tests, the simulator and the benchmarks: `Node` is the glue around one
//! core as the server runs it (hard state fsync'd before messages leave, log writes made
//! durable later, crashes that lose what was not durable), and `Cluster` runs several
//! nodes over an in-memory network that delivers in order unless a link is cut.

use super::memstore::MemStore;
use super::{Config, HardState, LogStore, Membership, MembershipChange, Message, NodeId, Proposal};
use super::{Entry, EntryMeta, ProposeError, Raft, Ready, Role, StartError, TransferError, VoteBarrier, kind};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A log write the disk has not finished: once synced, the core hears `persisted(index, term)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    pub seq: u64,
    pub index: u64,
    pub term: u64,
}

/// One node: its core (absent while crashed), its store, and what its disk holds besides the log.
#[derive(Debug)]
pub struct Node {
    pub config: Config,
    raft: Option<Raft>,
    pub store: MemStore,
    /// The hard state as fsync'd.
    pub hard_state: HardState,
    /// The hard state written without fsync: lost in a crash, synced with the next log write.
    lazy_hard_state: Option<HardState>,
    /// The committed configuration as persisted, what `Raft::new` restarts from.
    pub membership: (u64, Membership),
    /// The highest commit a Ready reported since the last start: entries the glue may compact.
    pub reported_commit: u64,
    /// The vote barrier as persisted beside the hard state (`Raft::set_vote_barrier`).
    pub vote_barrier: Option<VoteBarrier>,
    writes: VecDeque<PendingWrite>,
}

impl Node {
    /// A node's first start, with the cluster's initial configuration (empty for a node
    /// that will be added later and learns the configuration from the leader).
    pub fn new(config: Config, membership: Membership) -> Node {
        let store = MemStore::default();
        let raft = Raft::new(config.clone(), HardState::default(), (0, membership.clone()), &store)
            .expect("a new node starts");
        Node {
            config,
            raft: Some(raft),
            store,
            hard_state: HardState::default(),
            lazy_hard_state: None,
            membership: (0, membership),
            reported_commit: 0,
            vote_barrier: None,
            writes: VecDeque::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// The core; panics while the node is down.
    pub fn raft(&self) -> &Raft {
        self.raft.as_ref().expect("the node is up")
    }

    pub fn try_raft(&self) -> Option<&Raft> {
        self.raft.as_ref()
    }

    pub fn tick(&mut self) {
        if let Some(raft) = &mut self.raft {
            raft.tick(&self.store);
        }
    }

    pub fn step(&mut self, from: NodeId, msg: Message) {
        if let Some(raft) = &mut self.raft {
            raft.step(from, msg, &self.store);
        }
    }

    pub fn propose(&mut self, payload: &[u8], record_count: u32) -> Result<Proposal, ProposeError> {
        let raft = self.raft.as_mut().ok_or(ProposeError::NotLeader { leader: None })?;
        raft.propose(payload, record_count, &self.store)
    }

    pub fn propose_membership(&mut self, changes: &[MembershipChange]) -> Result<u64, ProposeError> {
        let raft = self.raft.as_mut().ok_or(ProposeError::NotLeader { leader: None })?;
        raft.propose_membership(changes, &[], &self.store)
    }

    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let raft = self.raft.as_mut().ok_or(TransferError::NotLeader { leader: None })?;
        raft.transfer_leadership(to, &self.store)
    }

    /// Takes the core's Ready and does what must happen before its messages leave: the
    /// hard state is fsync'd (or written lazily when only the commit moved), the committed
    /// configuration is persisted, the log changes are written (durable later). Returns
    /// the Ready so the caller can send the messages and look at the rest.
    pub fn advance(&mut self) -> Option<Ready> {
        let raft = self.raft.as_mut()?;
        if !raft.has_ready() {
            return None;
        }
        let ready = raft.take_ready();
        // A lifted barrier may be forgotten lazily: a restart below it is impossible, as
        // the core lifts it only once the entries up to it are durable.
        if raft.vote_barrier().is_none() {
            self.vote_barrier = None;
        }
        if let Some(membership) = &ready.committed_membership {
            self.membership = membership.clone();
        }
        if let Some(hard_state) = ready.hard_state {
            if ready.hard_state_must_sync {
                self.hard_state = hard_state;
                self.lazy_hard_state = None;
            } else {
                self.lazy_hard_state = Some(hard_state);
            }
        }
        if let Some(commit) = ready.commit {
            self.reported_commit = commit;
        }
        if self.store.apply(&ready) {
            let index = self.store.last_index();
            let term = self.store.term(index).expect("the last index has a term");
            self.writes.push_back(PendingWrite { seq: self.store.written(), index, term });
        }
        Some(ready)
    }

    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// The disk finished the oldest pending write: it is durable, the lazily written hard
    /// state rides along, and the core hears of it. False if nothing was pending.
    pub fn complete_write(&mut self) -> bool {
        let Some(write) = self.writes.pop_front() else { return false };
        self.store.sync(write.seq);
        if let Some(hard_state) = self.lazy_hard_state.take() {
            self.hard_state = hard_state;
        }
        if let Some(raft) = &mut self.raft {
            raft.persisted(write.index, write.term, &self.store);
        }
        true
    }

    /// Power loss: the core's memory, unsynced log writes (but an in-order prefix, maybe
    /// torn) and the lazily written hard state are gone.
    pub fn crash(&mut self, rng: &mut impl Rng, torn: bool) {
        self.raft = None;
        self.store.crash(rng, torn);
        self.lazy_hard_state = None;
        self.writes.clear();
    }

    /// Replaces the node's disk with `store` (made durable) and `hard_state`, and starts a
    /// fresh core on it: tests set up a history this way.
    pub fn reload(&mut self, mut store: MemStore, hard_state: HardState) -> Result<(), StartError> {
        store.sync(store.written());
        self.store = store;
        self.hard_state = hard_state;
        self.lazy_hard_state = None;
        self.writes.clear();
        self.restart()
    }

    /// The disk damaged the entries after `keep` (the server finds this by CRC): cut them
    /// as the server does. Whatever was durable may have been acknowledged, so the vote
    /// barrier goes at the durable log's end (or the persisted commit, if higher); the
    /// cut is made durable with everything kept, the persisted commit index is lowered
    /// to the log, and the core restarts from that.
    pub fn cut_damaged(&mut self, keep: u64) -> Result<(), StartError> {
        let acked = self.store.durable().last_index().max(self.hard_state.commit);
        if acked > keep {
            let term = self.store.live().term(acked).expect("what was acknowledged is in the log");
            let barrier = VoteBarrier { term, index: acked };
            self.vote_barrier = Some(self.vote_barrier.map_or(barrier, |b| b.max(barrier)));
        }
        self.store.apply(&Ready { truncate_after: Some(keep), ..Ready::default() });
        self.store.sync(self.store.written());
        self.hard_state.commit = self.hard_state.commit.min(keep);
        self.lazy_hard_state = None;
        self.writes.clear();
        self.restart()
    }

    /// Starts the core again from what the disk holds.
    pub fn restart(&mut self) -> Result<(), StartError> {
        let mut raft = Raft::new(self.config.clone(), self.hard_state, self.membership.clone(), &self.store)?;
        raft.set_vote_barrier(self.vote_barrier);
        self.raft = Some(raft);
        self.reported_commit = self.hard_state.commit;
        Ok(())
    }
}

/// Deliveries one `Cluster::deliver` performs at most, so a livelock fails a test instead of hanging it.
pub const DELIVERIES_MAX: usize = 1_000_000;

/// Election timeouts `Cluster::elect` waits through before giving up.
pub const ELECTION_ROUNDS_MAX: usize = 10;

/// Nodes over an in-memory network: messages are delivered in the order sent, except on
/// cut links, where they are dropped.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub network: VecDeque<(NodeId, NodeId, Message)>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Log writes become durable as soon as they are written; else call `sync`.
    pub auto_sync: bool,
}

impl Cluster {
    /// A cluster whose voters are `ids`, with default configs adjusted by `tweak`.
    pub fn new(ids: &[NodeId], tweak: impl Fn(&mut Config)) -> Cluster {
        let membership = Membership::new(ids.iter().copied());
        let mut cluster =
            Cluster { nodes: BTreeMap::new(), network: VecDeque::new(), cut: BTreeSet::new(), auto_sync: true };
        for &id in ids {
            cluster.add_node(id, membership.clone(), &tweak);
        }
        cluster
    }

    /// Starts a node with `membership` (empty for a node to be added to the cluster later).
    pub fn add_node(&mut self, id: NodeId, membership: Membership, tweak: impl Fn(&mut Config)) {
        let mut config = Config::new(id, id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        tweak(&mut config);
        self.nodes.insert(id, Node::new(config, membership));
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("a node of this cluster")
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.node(id).raft()
    }

    /// The leader with the highest term among the running nodes.
    pub fn leader(&self) -> Option<NodeId> {
        let leaders = self.nodes.values().filter_map(Node::try_raft).filter(|r| r.role() == Role::Leader);
        leaders.max_by_key(|r| r.term()).map(Raft::id)
    }

    /// Runs node `id`'s glue until its core has nothing more to say, queueing its messages.
    pub fn flush(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).expect("a node of this cluster");
            let ready = node.advance();
            let synced = self.auto_sync && node.complete_write();
            let Some(ready) = ready else {
                if synced {
                    continue;
                }
                return;
            };
            for (to, msg) in ready.messages {
                if !self.cut.contains(&(id, to)) {
                    self.network.push_back((id, to, msg));
                }
            }
        }
    }

    /// Makes node `id`'s pending writes durable (with `auto_sync` off).
    pub fn sync(&mut self, id: NodeId) {
        while self.node_mut(id).complete_write() {
            self.flush(id);
        }
        self.flush(id);
    }

    /// Delivers the oldest message in flight; false if there is none.
    pub fn deliver_one(&mut self) -> bool {
        let Some((from, to, msg)) = self.network.pop_front() else { return false };
        if !self.cut.contains(&(from, to)) && self.nodes.contains_key(&to) {
            self.node_mut(to).step(from, msg);
            self.flush(to);
        }
        true
    }

    /// Delivers messages until none are in flight.
    pub fn deliver(&mut self) {
        self.deliver_until(|c| c.network.is_empty());
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.flush(id);
    }

    /// `ticks` rounds of: every node ticks, then the network drains.
    pub fn run(&mut self, ticks: u32) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..ticks {
            for &id in &ids {
                self.tick(id);
            }
            self.deliver();
        }
    }

    /// Delivers messages one at a time until `done` holds; false if the network went quiet first.
    pub fn deliver_until(&mut self, done: impl Fn(&Cluster) -> bool) -> bool {
        for _ in 0..DELIVERIES_MAX {
            if done(self) {
                return true;
            }
            if !self.deliver_one() {
                return done(self);
            }
        }
        panic!("no end after {DELIVERIES_MAX} deliveries");
    }

    /// Ticks node `id` alone until it campaigns and lets the election run, message by
    /// message, until it leads; its first Appends stay queued. Retries for a few timeouts.
    pub fn elect(&mut self, id: NodeId) {
        let ticks_max = self.node(id).config.election_ticks_max * 2;
        for _ in 0..ELECTION_ROUNDS_MAX {
            for _ in 0..ticks_max {
                self.tick(id);
                if self.raft(id).role() != Role::Follower {
                    break;
                }
            }
            if self.deliver_until(|c| c.raft(id).role() == Role::Leader) {
                return;
            }
        }
        panic!("node {id} did not win an election in {ELECTION_ROUNDS_MAX} rounds: {:?}", self.raft(id));
    }

    /// Proposes on node `id` and queues what follows.
    pub fn propose(&mut self, id: NodeId, payload: &[u8]) -> Result<Proposal, ProposeError> {
        let proposal = self.node_mut(id).propose(payload, 1);
        self.flush(id);
        proposal
    }

    /// Gives node `id` a log whose entries have `terms` (index 1 on, one record each) and
    /// `hard_state`, as if it had lived that history and restarted.
    pub fn load_log(&mut self, id: NodeId, terms: &[u64], hard_state: HardState) {
        let mut store = MemStore::default();
        store.apply(&Ready { entries: data_entries(terms), ..Ready::default() });
        self.node_mut(id).reload(store, hard_state).expect("the loaded history is valid");
    }

    /// Proposes `count` one-record entries (payloads 0, 1, ...) on leader `id` and delivers
    /// what follows.
    pub fn propose_entries(&mut self, id: NodeId, count: u8) {
        for k in 0..count {
            self.propose(id, &[k]).expect("the node leads and has room");
        }
        self.deliver();
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}

/// Data entries with `terms`, from index 1, one record each, payload `[index]`.
pub fn data_entries(terms: &[u64]) -> Vec<Entry> {
    let entry = |k: usize, term: u64| {
        let meta = EntryMeta { index: k as u64 + 1, term, kind: kind::DATA, base_offset: k as u64, record_count: 1 };
        Entry::encode(meta, &[k as u8 + 1])
    };
    terms.iter().enumerate().map(|(k, t)| entry(k, *t)).collect()
}
