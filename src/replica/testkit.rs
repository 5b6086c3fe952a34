//! A harness for tests, the simulator and the benchmarks: `Node` is one `Replica` on
//! in-memory storage, driven as the server drives it (hard state fsync'd before messages
//! leave, log writes made durable later, crashes that lose what was not durable), and
//! `Cluster` runs several nodes over an in-memory network that delivers in order unless a
//! link is cut.

use super::hard_state::Persisted;
pub use super::mem::PendingWrite;
use super::mem::{MemHardState, MemLog};
use super::{Repair, Replica, ReplicaError};
use crate::raft::memstore::MemStore;
use crate::raft::{Config, HardState, Membership, MembershipChange, Message, NodeId, Proposal, Snapshot, SnapshotMeta};
use crate::raft::{Entry, EntryMeta, ProposeError, Raft, Ready, Role, TransferError, VoteBarrier, WakeReason, kind};
use bytes::Bytes;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A running replica, or the storage a crashed one left. (The harness holds a few of
/// these; their size does not matter.)
#[allow(clippy::large_enum_variant)]
enum State {
    Up(Replica<MemLog, MemHardState>),
    Down(MemLog, MemHardState),
    /// Only between two states, never observed.
    Moving,
}

/// One node: its replica (absent while crashed) and what its disk holds.
pub struct Node {
    pub config: Config,
    state: State,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.config.id).field("raft", &self.try_raft()).finish()
    }
}

impl Node {
    /// A node's first start, with the cluster's initial configuration (empty for a node
    /// that will be added later and learns the configuration from the leader).
    pub fn new(config: Config, membership: Membership) -> Node {
        let hard = MemHardState::new(Persisted {
            hard_state: HardState::default(),
            membership_index: 0,
            membership,
            vote_barrier: None,
        });
        let replica = Replica::open(config.clone(), MemLog::default(), hard).expect("a new node starts");
        Node { config, state: State::Up(replica) }
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    fn parts(&self) -> (&MemLog, &MemHardState) {
        match &self.state {
            State::Up(r) => (r.log(), r.hard()),
            State::Down(log, hard) => (log, hard),
            State::Moving => unreachable!("a node is never observed between states"),
        }
    }

    /// The replica; panics while the node is down.
    pub fn replica(&self) -> &Replica<MemLog, MemHardState> {
        match &self.state {
            State::Up(r) => r,
            _ => panic!("node {} is down", self.config.id),
        }
    }

    fn replica_mut(&mut self) -> Option<&mut Replica<MemLog, MemHardState>> {
        match &mut self.state {
            State::Up(r) => Some(r),
            _ => None,
        }
    }

    /// The core; panics while the node is down.
    pub fn raft(&self) -> &Raft {
        self.replica().raft()
    }

    pub fn try_raft(&self) -> Option<&Raft> {
        match &self.state {
            State::Up(r) => Some(r.raft()),
            _ => None,
        }
    }

    /// The in-memory log (live and durable images), up or down.
    pub fn store(&self) -> &MemStore {
        &self.parts().0.store
    }

    /// The log's storage, for tests that change it behind the core's back (retention).
    pub fn store_mut(&mut self) -> &mut MemStore {
        match &mut self.state {
            State::Up(r) => &mut r.log_mut().store,
            State::Down(log, _) => &mut log.store,
            State::Moving => unreachable!("a node is never observed between states"),
        }
    }

    /// The hard state as made durable.
    pub fn hard_state(&self) -> HardState {
        self.parts().1.persisted.hard_state
    }

    /// The committed configuration as persisted, what a restart starts from.
    pub fn persisted_membership(&self) -> (u64, Membership) {
        let p = &self.parts().1.persisted;
        (p.membership_index, p.membership.clone())
    }

    /// The vote barrier as persisted beside the hard state (`Raft::set_vote_barrier`).
    pub fn vote_barrier(&self) -> Option<VoteBarrier> {
        self.parts().1.persisted.vote_barrier
    }

    /// The highest commit reported since the last start: entries the glue may compact.
    pub fn reported_commit(&self) -> u64 {
        self.replica().committed().index
    }

    /// The snapshot kept (durable as soon as it is saved), up or down.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.parts().1.snapshot.as_ref()
    }

    /// Keeps `data` as the state machine through `index` (`Replica::save_snapshot`).
    pub fn save_snapshot(&mut self, index: u64, data: Bytes) -> Result<SnapshotMeta, ReplicaError> {
        self.replica_mut().expect("the node is up").save_snapshot(index, data)
    }

    /// Whether the group is quiet here (false while down).
    pub fn is_quiesced(&self) -> bool {
        self.try_raft().is_some_and(Raft::is_quiesced)
    }

    /// The node's failure detector woke the group (`Raft::wake`); nothing while down.
    pub fn wake(&mut self, reason: WakeReason) {
        if let Some(r) = self.replica_mut() {
            r.wake(reason);
        }
    }

    pub fn tick(&mut self) {
        if let Some(r) = self.replica_mut() {
            r.tick();
        }
    }

    pub fn step(&mut self, from: NodeId, msg: Message) {
        if let Some(r) = self.replica_mut() {
            r.step(from, msg);
        }
    }

    pub fn propose(&mut self, payload: &[u8], record_count: u32) -> Result<Proposal, ProposeError> {
        let r = self.replica_mut().ok_or(ProposeError::NotLeader { leader: None })?;
        r.propose(payload, record_count)
    }

    pub fn propose_membership(&mut self, changes: &[MembershipChange]) -> Result<u64, ProposeError> {
        let r = self.replica_mut().ok_or(ProposeError::NotLeader { leader: None })?;
        r.propose_membership(changes, &[])
    }

    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let r = self.replica_mut().ok_or(TransferError::NotLeader { leader: None })?;
        r.transfer_leadership(to)
    }

    /// Runs the replica's `apply_ready`: what must happen before the Ready's messages
    /// leave. Returns the Ready so the caller can send the messages and look at the rest.
    /// A hole to be cut (one no peer filled for long) is cut here first, as the server's
    /// scrub and repair would: the in-memory storage has no scrub.
    pub fn advance(&mut self) -> Option<Ready> {
        let r = self.replica_mut()?;
        let applied = r.apply_ready().expect("in-memory storage does not fail");
        if r.take_damage_hint().is_some() {
            for index in r.holes_to_cut() {
                r.repair_damage(index).expect("in-memory storage does not fail");
            }
        }
        Some(applied?.ready)
    }

    pub fn pending_writes(&self) -> usize {
        self.parts().0.pending_writes()
    }

    /// The disk finished the oldest pending write: it is durable, the lazily written hard
    /// state rides along, and the core hears of it. False if nothing was pending.
    pub fn complete_write(&mut self) -> bool {
        let Some(r) = self.replica_mut() else { return false };
        let Some(write) = r.log_mut().complete_write() else { return false };
        r.flush_lazy().expect("in-memory storage does not fail");
        r.persisted(write.index, write.term);
        true
    }

    /// Power loss: the core's memory, unsynced log writes (but an in-order prefix, maybe
    /// torn) and the lazily written hard state are gone.
    pub fn crash(&mut self, rng: &mut impl Rng, torn: bool) {
        let (mut log, hard) = match std::mem::replace(&mut self.state, State::Moving) {
            State::Up(r) => r.into_parts(),
            State::Down(log, hard) => (log, hard),
            State::Moving => unreachable!("a node is never observed between states"),
        };
        log.crash(rng, torn);
        self.state = State::Down(log, hard);
    }

    /// Replaces the node's disk with `store` (made durable) and `hard_state`, and starts a
    /// fresh core on it: tests set up a history this way.
    pub fn reload(&mut self, mut store: MemStore, hard_state: HardState) -> Result<(), ReplicaError> {
        store.sync(store.written());
        let (membership_index, membership) = self.persisted_membership();
        let persisted = Persisted { hard_state, membership_index, membership, vote_barrier: self.vote_barrier() };
        self.state = State::Down(MemLog::new(store), MemHardState::new(persisted));
        self.restart()
    }

    /// The disk damaged the entries after `keep` (the server finds this by CRC): the
    /// replica cuts them as the server's does (`Replica::repair`).
    pub fn cut_damaged(&mut self, keep: u64) -> Result<(), ReplicaError> {
        let r = self.replica_mut().expect("the node is up");
        assert!(r.repair(keep + 1)?, "entries after {keep} are in the log");
        Ok(())
    }

    /// The disk damaged entry `index` alone (the server finds it by CRC): the replica
    /// keeps it as a hole if it can, and fetches it from the peers (`Replica::repair_damage`).
    /// The bytes stay readable in memory; what this checks is what the core does with a hole.
    pub fn damage_entry(&mut self, index: u64) -> Result<Repair, ReplicaError> {
        self.replica_mut().expect("the node is up").repair_damage(index)
    }

    /// While the node is down, the disk damaged synced entries after `keep`: the next
    /// start finds a log that ends there, as the server's recovery cuts its tail at the
    /// first entry that does not decode. The sync mark still names what was synced.
    pub fn damage_tail(&mut self, keep: u64) {
        let State::Down(log, _) = &mut self.state else {
            panic!("the disk of a running node is damaged by cut_damaged")
        };
        log.damage_after(keep);
    }

    /// Starts the replica again from what the disk holds.
    pub fn restart(&mut self) -> Result<(), ReplicaError> {
        let (log, hard) = match std::mem::replace(&mut self.state, State::Moving) {
            State::Up(r) => r.into_parts(),
            State::Down(log, hard) => (log, hard),
            State::Moving => unreachable!("a node is never observed between states"),
        };
        self.state = State::Up(Replica::open(self.config.clone(), log, hard)?);
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

    /// Node `id`'s failure detector decided that `down` is down.
    pub fn wake(&mut self, id: NodeId, down: NodeId) {
        self.node_mut(id).wake(WakeReason::NodeDown(down));
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
