//! The loop that drives one Raft group: it owns the core, feeds it ticks, peer messages
//! and proposals, and carries out each Ready in the order the core's contract gives
//! (`raft/ready.rs`): hard state durable, then the log written, then messages sent. An
//! fsync task beside it makes appends durable in groups and reports back.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use segments::{Entry, Log};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::repair::{self, Damage};
use crate::metrics as m;
use crate::net::client_codec::{ClusterView, ErrorReply, MemberView};
use crate::net::peer::{Peers, SendError};
use crate::net::peer_codec;
use crate::raft::{self, Membership, MembershipChange, Message, NodeId, ProposeError, Raft, Role};
use crate::replica::hard_state::{HardStateFile, Persisted};
use crate::replica::store::{SegmentStore, to_segments_start};

/// The one log this version serves. Every peer frame names its group, so that a node can
/// later host many (one per partition) over the same connections.
pub const GROUP: u64 = 1;
/// Events queued for the loop before senders wait.
pub const EVENTS_MAX: usize = 4096;
/// How long a produce waits for its entry to commit before the outcome is reported unknown.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// After losing leadership, how long a pending produce waits to learn its fate.
const ORPHAN_GRACE: Duration = Duration::from_secs(3);
/// How often the commit index is written to the hard-state file when nothing else forces it.
const LAZY_HARD_STATE: Duration = Duration::from_secs(1);
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Round-trip samples remembered per peer.
const RTT_SAMPLES_MAX: usize = 256;

pub type ProduceResult = Result<(u64, u32), ErrorReply>;

pub enum Event {
    Peer(NodeId, Message),
    /// `stream`: the client stream the batch came on (0: none). Once a batch of a stream is
    /// refused, every later batch of that stream is refused too, so a producer that resends
    /// from the refused batch keeps its order.
    Propose {
        payload: Bytes,
        record_count: u32,
        stream: u64,
        received: Instant,
        reply: oneshot::Sender<ProduceResult>,
    },
    /// A client stream ended: forget whether it was refused.
    StreamEnded(u64),
    Synced {
        index: u64,
        term: u64,
        seconds: f64,
    },
    SyncFailed(String),
    Status(oneshot::Sender<ClusterView>),
    ChangeMembership {
        changes: Vec<MembershipChange>,
        addresses: Vec<(NodeId, SocketAddr)>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    TransferLeadership {
        to: NodeId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A peer was found at a new address (its host name now resolves elsewhere).
    PeerAddress(NodeId, SocketAddr),
    /// A reader found a corrupt entry at or after the checkpoint before this index.
    Corrupt {
        from_index: u64,
        detail: String,
    },
    /// A search for damage (a scrub, or after `Corrupt`) ended: the first damaged entry.
    Damaged(Option<Damage>),
    Shutdown(oneshot::Sender<()>),
}

/// What readers may serve: the committed prefix of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    /// The offset after the last committed record.
    pub next_offset: u64,
}

/// Who leads, for redirecting clients without asking the loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    pub me: bool,
    pub leader: Option<NodeId>,
    pub address: Option<SocketAddr>,
}

struct Pending {
    term: u64,
    /// The client stream it came on (0: none); see `refused_streams`.
    stream: u64,
    base_offset: u64,
    record_count: u32,
    bytes: usize,
    received: Instant,
    deadline: Instant,
    reply: oneshot::Sender<ProduceResult>,
}

pub struct GroupParts {
    pub id: NodeId,
    pub cluster_id: u64,
    pub raft: Raft,
    pub log: Arc<RwLock<Log>>,
    pub hard: HardStateFile,
    pub peers: Peers,
    pub addresses: BTreeMap<NodeId, SocketAddr>,
    pub retention: super::config::Retention,
    pub tick: Duration,
}

pub struct Group {
    id: NodeId,
    cluster_id: u64,
    raft: Raft,
    log: Arc<RwLock<Log>>,
    hard: HardStateFile,
    next_hard: Persisted,
    hard_dirty: bool,
    peers: Peers,
    addresses: BTreeMap<NodeId, SocketAddr>,
    retention: super::config::Retention,
    tick: Duration,
    pending: BTreeMap<u64, Pending>,
    /// Client streams with a refused batch: their later batches are refused too.
    refused_streams: std::collections::HashSet<u64>,
    committed: Committed,
    committed_tx: watch::Sender<Committed>,
    leader_tx: watch::Sender<LeaderHint>,
    sync: Arc<Notify>,
    rtt: BTreeMap<NodeId, VecDeque<(u64, Instant)>>,
    role: Role,
    leader: Option<NodeId>,
    /// For the tasks the loop starts that report back (set by `run`).
    events_tx: Option<mpsc::Sender<Event>>,
    /// A search for damage is running; another from this index is due after it.
    verifying: bool,
    verify_next: Option<u64>,
    /// `raft.membership_index()` when the links were last updated.
    linked_index: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("log storage failed: {0}; the node stops so that it never acknowledges what it did not write")]
    Storage(String),
    #[error("hard state: {0}")]
    HardState(#[from] crate::replica::hard_state::StateError),
}

impl Group {
    pub fn new(parts: GroupParts) -> (Group, watch::Receiver<Committed>, watch::Receiver<LeaderHint>) {
        let next_hard = parts.hard.persisted().clone();
        let committed = {
            let log = parts.log.read().expect("log lock");
            let index = parts.raft.commit();
            Committed { index, next_offset: offset_after(&log, index).unwrap_or(log.start_offset()) }
        };
        let (committed_tx, committed_rx) = watch::channel(committed);
        let (leader_tx, leader_rx) = watch::channel(LeaderHint::default());
        let group = Group {
            id: parts.id,
            cluster_id: parts.cluster_id,
            role: parts.raft.role(),
            leader: parts.raft.leader(),
            raft: parts.raft,
            log: parts.log,
            hard: parts.hard,
            next_hard,
            hard_dirty: false,
            peers: parts.peers,
            addresses: parts.addresses,
            retention: parts.retention,
            tick: parts.tick,
            pending: BTreeMap::new(),
            refused_streams: std::collections::HashSet::new(),
            committed,
            committed_tx,
            leader_tx,
            sync: Arc::new(Notify::new()),
            rtt: BTreeMap::new(),
            events_tx: None,
            verifying: false,
            verify_next: None,
            linked_index: 0,
        };
        (group, committed_rx, leader_rx)
    }

    /// Runs until shutdown or a storage failure.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        events_tx: mpsc::Sender<Event>,
    ) -> Result<(), GroupError> {
        tokio::spawn(sync_task(self.log.clone(), self.sync.clone(), events_tx.clone()));
        self.events_tx = Some(events_tx);
        // A scrub after start: sealed segments are not read at open, so damage in them
        // would otherwise wait for a reader (FORMAT.md, "Assumptions about the medium").
        let first = self.log.read().expect("log lock").first_index();
        self.suspect(first);
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut lazy_hard = tokio::time::interval(LAZY_HARD_STATE);
        // Members added after start are reached at the addresses their configurations carry.
        self.update_links();
        self.publish_role();
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    if let Some(done) = self.handle(event)? {
                        return self.shutdown(done, &mut events).await;
                    }
                    // Take what else is queued before writing: one Ready, one write, many events.
                    for _ in 0..256 {
                        match events.try_recv() {
                            Ok(event) => {
                                if let Some(done) = self.handle(event)? {
                                    return self.shutdown(done, &mut events).await;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = ticker.tick() => self.core(|raft, store| raft.tick(store)),
                _ = lazy_hard.tick() => self.flush_lazy_hard_state()?,
                _ = housekeeping.tick() => self.housekeeping(),
            }
            self.process_ready()?;
        }
    }

    /// Handles one event; returns the shutdown reply channel when asked to stop.
    fn handle(&mut self, event: Event) -> Result<Option<oneshot::Sender<()>>, GroupError> {
        match event {
            Event::Peer(from, msg) => {
                self.observe_incoming(from, &msg);
                self.core(|raft, store| raft.step(from, msg, store));
            }
            Event::Propose { payload, record_count, stream, received, reply } => {
                if stream != 0 && self.refused_streams.contains(&stream) {
                    m::produce_error("busy");
                    let why = "an earlier batch on this stream was refused; resend from it".to_string();
                    let _ = reply.send(Err(ErrorReply::Busy(why)));
                } else if !self.propose(payload, record_count, stream, received, reply) && stream != 0 {
                    self.refused_streams.insert(stream);
                }
            }
            Event::StreamEnded(stream) => {
                self.refused_streams.remove(&stream);
            }
            Event::Synced { index, term, seconds } => {
                metrics::histogram!(m::FSYNC_SECONDS).record(seconds);
                metrics::counter!(m::FSYNCS).increment(1);
                // The log's own synced index is the truth: a cut since this sync ended
                // (a repair, a conflict) lowered it, and entries written again after the
                // cut are not durable until the next sync, which will say so.
                let (index, term) = {
                    let log = self.log.read().expect("log lock");
                    let durable = log.synced_index();
                    if index <= durable { (index, term) } else { (durable, log.term(durable).unwrap_or(0)) }
                };
                self.core(|raft, store| raft.persisted(index, term, store));
            }
            Event::SyncFailed(why) => return Err(GroupError::Storage(why)),
            Event::Status(reply) => {
                let _ = reply.send(self.view());
            }
            Event::ChangeMembership { changes, addresses, reply } => {
                // The addresses travel in the configuration entry: every replica learns
                // them from its log (`update_links`), so any later leader reaches the new members.
                let addresses: Vec<(NodeId, String)> = addresses.iter().map(|(id, a)| (*id, a.to_string())).collect();
                let result = self.core(|raft, store| raft.propose_membership(&changes, &addresses, store));
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Event::TransferLeadership { to, reply } => {
                let result = self.core(|raft, store| raft.transfer_leadership(to, store));
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Event::Corrupt { from_index, detail } => {
                warn!(from_index, detail, "a read found damaged bytes; looking for the first damaged entry");
                self.suspect(from_index);
            }
            Event::Damaged(found) => {
                self.verifying = false;
                match found {
                    Some(damage) => self.repair(damage)?,
                    None => debug!("no damage found"),
                }
                if let Some(hint) = self.verify_next.take() {
                    self.suspect(hint);
                }
            }
            Event::PeerAddress(id, addr) => {
                self.addresses.insert(id, addr);
                self.publish_role();
            }
            Event::Shutdown(reply) => return Ok(Some(reply)),
        }
        Ok(None)
    }

    /// Proposes a batch; false if it was refused (the reply says why).
    fn propose(
        &mut self,
        payload: Bytes,
        record_count: u32,
        stream: u64,
        received: Instant,
        reply: oneshot::Sender<ProduceResult>,
    ) -> bool {
        match self.core(|raft, store| raft.propose(&payload, record_count, store)) {
            Ok(p) => {
                let pending = Pending {
                    term: p.term,
                    stream,
                    base_offset: p.base_offset,
                    record_count,
                    bytes: payload.len(),
                    received,
                    deadline: received + PRODUCE_TIMEOUT,
                    reply,
                };
                self.pending.insert(p.index, pending);
                return true;
            }
            Err(ProposeError::NotLeader { leader }) => {
                m::produce_error("not_leader");
                let _ = reply.send(Err(ErrorReply::NotLeader { leader, address: self.address_text(leader) }));
            }
            Err(ProposeError::Busy(why)) => {
                m::produce_error("busy");
                let _ = reply.send(Err(ErrorReply::Busy(why.to_string())));
            }
            Err(e) => {
                m::produce_error("refused");
                let _ = reply.send(Err(ErrorReply::Refused(e.to_string())));
            }
        }
        false
    }

    /// Carries out the core's outputs in the contract's order.
    fn process_ready(&mut self) -> Result<(), GroupError> {
        if !self.raft.has_ready() {
            return Ok(());
        }
        let ready = self.raft.take_ready();
        if self.raft.vote_barrier().is_none() && self.next_hard.vote_barrier.is_some() {
            // Lifted: the entries up to it are durable again. Forgetting it may be lazy.
            self.next_hard.vote_barrier = None;
            self.hard_dirty = true;
        }
        // 1. Hard state: durable before any message of this Ready leaves.
        let mut save_now = false;
        if let Some(hs) = ready.hard_state {
            self.next_hard.hard_state = hs;
            save_now |= ready.hard_state_must_sync;
            self.hard_dirty = true;
        }
        let mut links_stale = false;
        if let Some((index, membership)) = &ready.committed_membership {
            self.next_hard.membership_index = *index;
            self.next_hard.membership = membership.clone();
            save_now = true;
            links_stale = true;
        }
        if save_now {
            self.hard.save(self.next_hard.clone())?;
            self.hard_dirty = false;
        }
        // 2. The log: reset, truncate, append. Written now, made durable by the fsync task.
        if ready.has_storage() {
            let mut log = self.log.write().expect("log lock");
            let storage = |e: segments::Error| GroupError::Storage(e.to_string());
            if let Some((start, _)) = ready.reset {
                info!(index = start.index, offset = start.offset, "log reset to the leader's log start");
                log.reset(to_segments_start(start)).map_err(storage)?;
            }
            if let Some(index) = ready.truncate_after {
                assert!(index >= self.committed.index, "a committed entry is never truncated");
                log.truncate_after(index).map_err(storage)?;
            }
            if !ready.entries.is_empty() {
                log.append(&ready.entries).map_err(storage)?;
            }
            drop(log);
            self.sync.notify_one();
        }
        // 3. Messages, over links to every member of the configurations now in the log.
        if links_stale || self.raft.membership_index() != self.linked_index {
            self.update_links();
        }
        for (to, msg) in &ready.messages {
            self.send(*to, msg);
        }
        // 4. Commit: serve up to it and answer producers.
        if let Some(commit) = ready.commit {
            self.advance_commit(commit);
        }
        // 5. Role and leader.
        if let Some(soft) = ready.soft_state {
            self.on_soft_state(soft);
        }
        Ok(())
    }

    fn send(&mut self, to: NodeId, msg: &Message) {
        match msg {
            Message::Append { entries, .. } if !entries.is_empty() => {
                let bytes: usize = entries.iter().map(Entry::encoded_len).sum();
                metrics::counter!(m::APPEND_BATCHES_SENT).increment(1);
                metrics::counter!(m::APPEND_ENTRIES_SENT).increment(entries.len() as u64);
                metrics::histogram!(m::APPEND_BATCH_BYTES).record(bytes as f64);
                let last = entries.last().map_or(0, Entry::index);
                self.remember_send(to, last);
            }
            Message::Heartbeat { .. } => self.remember_send(to, 0),
            _ => {}
        }
        match self.peers.send(to, peer_codec::lane(msg), peer_codec::encode(GROUP, msg)) {
            Ok(()) => {}
            Err(SendError::QueueFull(_)) => metrics::counter!(m::PEER_FRAMES_DROPPED).increment(1),
            Err(SendError::UnknownPeer(_)) => {}
        }
    }

    /// Remembers when a message that will be answered left, for round-trip times.
    fn remember_send(&mut self, to: NodeId, index: u64) {
        let samples = self.rtt.entry(to).or_default();
        if samples.len() == RTT_SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back((index, Instant::now()));
    }

    fn observe_incoming(&mut self, from: NodeId, msg: &Message) {
        match msg {
            Message::Append { entries, .. } if !entries.is_empty() => {
                metrics::counter!(m::APPEND_BATCHES_RECEIVED).increment(1);
                metrics::counter!(m::APPEND_ENTRIES_RECEIVED).increment(entries.len() as u64);
            }
            Message::PreVoteResponse { granted: false, .. } => metrics::counter!(m::PRE_VOTES_REJECTED).increment(1),
            Message::AppendResponse { index, reject: None, .. } => self.observe_rtt(from, |i| i > 0 && i <= *index),
            Message::HeartbeatResponse { .. } => self.observe_rtt(from, |i| i == 0),
            _ => {}
        }
    }

    fn observe_rtt(&mut self, from: NodeId, answered: impl Fn(u64) -> bool) {
        let Some(samples) = self.rtt.get_mut(&from) else { return };
        if let Some(pos) = samples.iter().position(|(i, _)| answered(*i)) {
            let (_, sent) = samples[pos];
            samples.drain(..=pos);
            metrics::histogram!(m::REPLICATION_RTT, "peer" => from.to_string()).record(sent.elapsed().as_secs_f64());
        }
    }

    fn advance_commit(&mut self, commit: u64) {
        assert!(commit >= self.committed.index, "the commit index never decreases");
        let log = self.log.read().expect("log lock");
        let next_offset = offset_after(&log, commit).unwrap_or(self.committed.next_offset);
        self.committed = Committed { index: commit, next_offset };
        let done: Vec<u64> = self.pending.range(..=commit).map(|(i, _)| *i).collect();
        for index in done {
            let p = self.pending.remove(&index).expect("present");
            let result = match log.term(index) {
                Some(term) if term == p.term => {
                    metrics::counter!(m::PRODUCE_RECORDS).increment(u64::from(p.record_count));
                    metrics::counter!(m::PRODUCE_BYTES).increment(p.bytes as u64);
                    metrics::histogram!(m::PRODUCE_LATENCY).record(p.received.elapsed().as_secs_f64());
                    Ok((p.base_offset, p.record_count))
                }
                Some(_) => {
                    // Another leader's entry won the index: ours will never commit.
                    m::produce_error("not_leader");
                    Err(ErrorReply::NotLeader { leader: self.leader, address: self.address_text(self.leader) })
                }
                None => {
                    m::produce_error("outcome_unknown");
                    Err(ErrorReply::OutcomeUnknown { reason: "the log was reset past the entry".into() })
                }
            };
            let _ = p.reply.send(result);
        }
        drop(log);
        self.committed_tx.send_replace(self.committed);
    }

    fn on_soft_state(&mut self, soft: raft::SoftState) {
        if soft.role == Role::Candidate && self.role != Role::Candidate {
            metrics::counter!(m::ELECTIONS_STARTED).increment(1);
        }
        if soft.role == Role::Leader && self.role != Role::Leader {
            metrics::counter!(m::ELECTIONS_WON).increment(1);
            info!(term = soft.term, "became leader");
        }
        // As etcd's leader_changes_seen_total: a leader became known that is not the last one seen.
        if let Some(leader) = soft.leader
            && soft.leader != self.leader
        {
            metrics::counter!(m::LEADER_CHANGES).increment(1);
            info!(leader, term = soft.term, "leader known");
        }
        if self.role == Role::Leader && soft.role != Role::Leader {
            warn!(term = soft.term, pending = self.pending.len(), "lost leadership");
            self.zero_peer_gauges();
            let grace = Instant::now() + ORPHAN_GRACE;
            for p in self.pending.values_mut() {
                p.deadline = p.deadline.min(grace);
            }
            self.refuse_pending_streams();
        }
        self.role = soft.role;
        self.leader = soft.leader;
        self.publish_role();
    }

    /// A batch pending at a node that stops leading may yet be answered "not appended,
    /// resend it"; no later batch of its stream may be appended before that answer, or the
    /// resent batch would land behind its successors. So its stream is refused from here on.
    fn refuse_pending_streams(&mut self) {
        let streams = self.pending.values().map(|p| p.stream).filter(|&s| s != 0);
        self.refused_streams.extend(streams);
    }

    fn publish_role(&self) {
        let hint =
            LeaderHint { me: self.role == Role::Leader, leader: self.leader, address: self.address_of(self.leader) };
        self.leader_tx.send_replace(hint);
        let current = match self.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre_candidate",
            Role::Learner => "learner",
        };
        for name in m::ROLES {
            metrics::gauge!(m::RAFT_ROLE, "role" => *name).set(if *name == current { 1.0 } else { 0.0 });
        }
        metrics::gauge!(m::RAFT_LEADER_ID).set(self.leader.unwrap_or(0) as f64);
    }

    fn address_of(&self, node: Option<NodeId>) -> Option<SocketAddr> {
        node.and_then(|n| self.addresses.get(&n).copied())
    }

    fn address_text(&self, node: Option<NodeId>) -> Option<String> {
        self.address_of(node).map(|a| a.to_string())
    }

    /// Keeps one link per member of the committed and the active configuration: learns the
    /// addresses the configurations carry (an address already known, from --peers or a
    /// lookup, wins), adds links for new members and drops links to nodes neither names.
    fn update_links(&mut self) {
        self.linked_index = self.raft.membership_index();
        let (committed, active) = (&self.next_hard.membership, self.raft.membership());
        for (id, text) in committed.addresses.iter().chain(&active.addresses) {
            match text.parse::<SocketAddr>() {
                Ok(addr) => {
                    self.addresses.entry(*id).or_insert(addr);
                }
                Err(_) => warn!(peer = id, address = %text, "a configuration names an address that is not IP:PORT"),
            }
        }
        let mut members = members_of(committed);
        members.extend(members_of(active));
        members.sort_unstable();
        members.dedup();
        for id in &members {
            if let Some(addr) = self.addresses.get(id) {
                self.peers.add(*id, *addr);
            }
        }
        m::register_peers(members.iter().copied().filter(|&id| id != self.id));
        for id in self.addresses.keys().copied().collect::<Vec<_>>() {
            if !members.contains(&id) && id != self.id {
                self.peers.remove(id);
            }
        }
    }

    fn flush_lazy_hard_state(&mut self) -> Result<(), GroupError> {
        if self.hard_dirty {
            self.hard.save(self.next_hard.clone())?;
            self.hard_dirty = false;
        }
        Ok(())
    }

    /// Once a second: expire produce requests, retention, gauges.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(i, _)| *i).collect();
        for index in expired {
            let p = self.pending.remove(&index).expect("present");
            m::produce_error("outcome_unknown");
            let reason = if self.role == Role::Leader {
                format!("entry {index} was not committed within {PRODUCE_TIMEOUT:?}")
            } else {
                format!("leadership was lost before entry {index} was known to be committed")
            };
            let _ = p.reply.send(Err(ErrorReply::OutcomeUnknown { reason }));
        }
        self.apply_retention();
        self.update_gauges();
    }

    fn apply_retention(&mut self) {
        if self.retention.bytes.is_none() && self.retention.age.is_none() {
            return;
        }
        let (segments, synced) = {
            let log = self.log.read().expect("log lock");
            (log.segments(), log.synced_index())
        };
        // Only sealed segments whose entries are all committed and durable here.
        let safe = self.committed.index.min(synced);
        let mut total: u64 = segments.iter().map(|s| s.bytes_used).sum();
        let mut drop_before = None;
        for s in segments.iter().filter(|s| s.sealed && s.last_index <= safe) {
            let too_big = self.retention.bytes.is_some_and(|max| total > max);
            let too_old = self
                .retention
                .age
                .is_some_and(|age| s.modified.and_then(|m| m.elapsed().ok()).is_some_and(|e| e > age));
            if !(too_big || too_old) {
                break;
            }
            total -= s.bytes_used;
            drop_before = Some(s.last_index + 1);
        }
        if let Some(index) = drop_before {
            let mut log = self.log.write().expect("log lock");
            match log.drop_before(index) {
                Ok(n) => {
                    metrics::counter!(m::RETENTION_DELETED_SEGMENTS).increment(n as u64);
                    info!(segments = n, first_index = log.first_index(), "retention deleted segments");
                }
                Err(e) => warn!(error = %e, "retention could not delete segments"),
            }
        }
    }

    fn update_gauges(&self) {
        let log = self.log.read().expect("log lock");
        metrics::gauge!(m::RAFT_TERM).set(self.raft.term() as f64);
        metrics::gauge!(m::RAFT_COMMIT_INDEX).set(self.committed.index as f64);
        metrics::gauge!(m::RAFT_LAST_INDEX).set(log.last_index() as f64);
        metrics::gauge!(m::RAFT_VOTE_BARRIER).set(self.raft.vote_barrier().map_or(0, |b| b.index) as f64);
        metrics::gauge!(m::LOG_START_OFFSET).set(log.start_offset() as f64);
        metrics::gauge!(m::LOG_END_OFFSET).set(self.committed.next_offset as f64);
        let segments = log.segments();
        metrics::gauge!(m::LOG_SEGMENTS).set(segments.len() as f64);
        metrics::gauge!(m::LOG_BYTES).set(segments.iter().map(|s| s.bytes_used).sum::<u64>() as f64);
        metrics::gauge!(m::LOG_DISK_BYTES).set(segments.iter().map(|s| s.file_bytes).sum::<u64>() as f64);
        if self.role != Role::Leader {
            return;
        }
        for p in self.raft.progress() {
            if p.id == self.id {
                continue;
            }
            let peer = p.id.to_string();
            let lag = log.last_index().saturating_sub(p.match_index);
            metrics::gauge!(m::REPLICATION_MATCH_INDEX, "peer" => peer.clone()).set(p.match_index as f64);
            metrics::gauge!(m::REPLICATION_LAG_ENTRIES, "peer" => peer.clone()).set(lag as f64);
            metrics::gauge!(m::REPLICATION_LAG_BYTES, "peer" => peer.clone())
                .set(bytes_after(&segments, p.match_index) as f64);
            metrics::gauge!(m::REPLICATION_INFLIGHT, "peer" => peer).set(p.inflight as f64);
        }
    }

    /// The per-peer gauges are the leader's view; a node that is not the leader shows 0, not
    /// what it knew when it last led.
    fn zero_peer_gauges(&self) {
        for peer in self.addresses.keys().filter(|&&id| id != self.id) {
            let peer = peer.to_string();
            for name in [m::REPLICATION_MATCH_INDEX, m::REPLICATION_LAG_ENTRIES, m::REPLICATION_LAG_BYTES] {
                metrics::gauge!(name, "peer" => peer.clone()).set(0.0);
            }
            metrics::gauge!(m::REPLICATION_INFLIGHT, "peer" => peer).set(0.0);
        }
    }

    /// Calls into the core with a view of the log; damage a read came across is searched.
    fn core<R>(&mut self, f: impl FnOnce(&mut Raft, &SegmentStore<'_>) -> R) -> R {
        let (out, damaged) = {
            let log = self.log.read().expect("log lock");
            let store = SegmentStore::new(&log);
            let out = f(&mut self.raft, &store);
            (out, store.damaged())
        };
        if let Some(index) = damaged {
            warn!(index, "reading entries for a follower found damaged bytes");
            self.suspect(index);
        }
        out
    }

    /// Damaged bytes lie at or after the checkpoint before `hint`: find the first damaged
    /// entry off the loop; `Event::Damaged` brings the answer back. One search at a time.
    fn suspect(&mut self, hint: u64) {
        if self.verifying {
            self.verify_next = Some(self.verify_next.map_or(hint, |h| h.min(hint)));
            return;
        }
        let Some(events) = self.events_tx.clone() else { return };
        self.verifying = true;
        let log = self.log.clone();
        tokio::spawn(async move {
            let found = tokio::task::spawn_blocking(move || repair::find_damage(&log, hint)).await.ok().flatten();
            let _ = events.send(Event::Damaged(found)).await;
        });
    }

    /// Damage found: the node stops serving and voting with what it cannot trust. The
    /// log is cut before the damaged entry (ARCHITECTURE.md, "Corruption"), and a fresh
    /// core starts on it as a follower in the same term, with the same vote, the lowered
    /// commit index and, if the cut took entries it may have acknowledged, the vote
    /// barrier; the leader sends the entries again. A leader steps down this way:
    /// producers waiting on it learn that their outcome is unknown.
    fn repair(&mut self, damage: Damage) -> Result<(), GroupError> {
        if !repair::still_damaged(&self.log.read().expect("log lock"), damage.index) {
            info!(index = damage.index, "the damaged entry is no longer in the log");
            return Ok(());
        }
        metrics::counter!(m::STORAGE_CORRUPTIONS).increment(1);
        error!(index = damage.index, detail = %damage.detail, role = role_name(self.role), "damaged entry in the log");
        let storage = |e: repair::RepairError| GroupError::Storage(e.to_string());
        let (log, hard, next) = (&self.log, &mut self.hard, &mut self.next_hard);
        let commit = repair::cut_before(log, hard, next, damage.index, self.raft.commit()).map_err(storage)?;
        let config = self.raft.config().clone();
        self.raft = repair::start_core(config, log, hard, next, commit).map_err(storage)?;
        self.hard_dirty = false;
        self.refuse_pending_streams();
        for (_, p) in std::mem::take(&mut self.pending) {
            m::produce_error("outcome_unknown");
            let reason = "the node found damage in its log and stopped leading".to_string();
            let _ = p.reply.send(Err(ErrorReply::OutcomeUnknown { reason }));
        }
        let index = self.raft.commit();
        let next_offset = {
            let log = self.log.read().expect("log lock");
            offset_after(&log, index).unwrap_or(log.start_offset())
        };
        self.committed = Committed { index, next_offset };
        self.committed_tx.send_replace(self.committed);
        self.role = self.raft.role();
        self.leader = None;
        self.publish_role();
        Ok(())
    }

    fn view(&self) -> ClusterView {
        let log = self.log.read().expect("log lock");
        let progress: BTreeMap<NodeId, u64> = if self.role == Role::Leader {
            self.raft.progress().into_iter().map(|p| (p.id, p.match_index)).collect()
        } else {
            BTreeMap::new()
        };
        let membership = self.raft.membership();
        let members = members_of(membership)
            .into_iter()
            .map(|id| MemberView {
                id,
                address: self.addresses.get(&id).map(ToString::to_string).unwrap_or_default(),
                voter: membership.voters.contains(&id) || membership.voters_outgoing.contains(&id),
                match_index: if id == self.id && self.role == Role::Leader {
                    Some(log.last_index())
                } else {
                    progress.get(&id).copied()
                },
            })
            .collect();
        ClusterView {
            cluster_id: self.cluster_id,
            node_id: self.id,
            role: role_name(self.role).into(),
            leader: self.leader,
            term: self.raft.term(),
            commit_index: self.committed.index,
            last_index: log.last_index(),
            log_start_offset: log.start_offset(),
            log_end_offset: self.committed.next_offset,
            members,
        }
    }

    /// Graceful stop: hand leadership to a caught-up voter, make everything durable.
    async fn shutdown(
        mut self,
        done: oneshot::Sender<()>,
        events: &mut mpsc::Receiver<Event>,
    ) -> Result<(), GroupError> {
        if self.role == Role::Leader {
            let target = self
                .raft
                .progress()
                .into_iter()
                .filter(|p| p.id != self.id && self.raft.membership().voters.contains(&p.id))
                .max_by_key(|p| p.match_index)
                .map(|p| p.id);
            if let Some(to) = target {
                info!(to, "transferring leadership before shutting down");
                let _ = self.core(|raft, store| raft.transfer_leadership(to, store));
                self.process_ready()?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                let mut ticker = tokio::time::interval(self.tick);
                while self.role == Role::Leader && tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        Some(event) = events.recv() => {
                            if !matches!(event, Event::Shutdown(_) | Event::Propose { .. }) {
                                self.handle(event)?;
                            }
                        }
                        _ = ticker.tick() => self.core(|raft, store| raft.tick(store)),
                    }
                    self.process_ready()?;
                }
            }
        }
        self.log.write().expect("log lock").sync().map_err(|e| GroupError::Storage(e.to_string()))?;
        self.flush_lazy_hard_state()?;
        info!("stopped cleanly");
        let _ = done.send(());
        Ok(())
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate | Role::PreCandidate => "candidate",
        Role::Learner => "learner",
    }
}

fn members_of(m: &Membership) -> Vec<NodeId> {
    let mut all: Vec<NodeId> = m.voters.iter().chain(&m.voters_outgoing).chain(&m.learners).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The record offset after the entry at `index` (the log start's offset for the index just
/// before the first entry).
pub fn offset_after(log: &Log, index: u64) -> Option<u64> {
    if index < log.first_index() {
        return (index + 1 == log.first_index()).then(|| log.start_offset());
    }
    let mut out = Vec::with_capacity(1);
    log.read(index, 0, &mut out).ok()?;
    out.first().map(Entry::next_offset)
}

/// Bytes of the entries after `index`, from the segment table (whole segments; the
/// segment holding `index` counts in full, an over-estimate of at most one segment).
fn bytes_after(segments: &[segments::SegmentInfo], index: u64) -> u64 {
    segments.iter().filter(|s| s.last_index > index).map(|s| s.bytes_used).sum()
}

/// Makes appends durable in groups: each fsync covers every append before it, while the
/// loop goes on appending; the loop hears which index is durable.
async fn sync_task(log: Arc<RwLock<Log>>, notify: Arc<Notify>, events: mpsc::Sender<Event>) {
    loop {
        notify.notified().await;
        let job = log.write().expect("log lock").begin_sync();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || job.run()).await;
        let seconds = started.elapsed().as_secs_f64();
        let event = match outcome {
            Ok(Ok(done)) => {
                let mut log = log.write().expect("log lock");
                log.finish_sync(done);
                let index = log.synced_index();
                let term = log.term(index).unwrap_or(0);
                Event::Synced { index, term, seconds }
            }
            Ok(Err(e)) => Event::SyncFailed(e.to_string()),
            Err(e) => Event::SyncFailed(format!("fsync task failed: {e}")),
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}
