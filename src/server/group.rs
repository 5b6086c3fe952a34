//! The task that drives one replica: it feeds the `Replica` (`replica/mod.rs`) the node's
//! ticks, peer messages, proposals and sync reports, sends what each Ready says to send,
//! answers producers as their entries commit, and publishes what readers may serve. An
//! fsync task beside it makes appends durable in groups and reports back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{Instrument, debug, error, info, warn};

use super::group_metrics::GroupMetrics;
use super::metadata::{CommandError, CommandResult, MetadataMachine};
use super::offsets_floor::OffsetsFloor;
use super::produce::{ProduceError, ProduceResult, ProduceTable, Proposed};
use super::producer_state::{Admission, GroupProducers};
use super::status::{GroupStatus, MemberStatus, role_name};
use crate::batch::BatchHeader;
use crate::broker::leaders::{LeaderReport, LeaderTable, Offsets};
use crate::metrics as m;
use crate::net::peer::SendError;
use crate::producers::{ProducerBatch, ProducerConfig};
use crate::raft::{Membership, MembershipChange, Message, NodeId, ProposeError, Role, SoftState};
use crate::replica::backend::{Damage, LogBackend, SharedLog};
use crate::replica::hard_state::{HardStateFile, HardStateStore};
use crate::replica::retention::{self, Retention};
use crate::replica::{Committed, Repair, Replica, ReplicaError};

/// Events queued for a group's task before senders wait (or, for peer frames, drop).
pub const EVENTS_MAX: usize = 4096;
/// Events handled before the Ready is applied: one Ready, one write, many events.
const EVENTS_PER_READY_MAX: usize = 256;
/// The metadata group snapshots its state once this many entries were applied since the
/// last snapshot; the log before it is then trimmed a sealed segment at a time, and a
/// follower that needs what was trimmed is sent the snapshot (Raft §7).
pub const METADATA_SNAPSHOT_ENTRIES: u64 = 1000;

pub enum Event {
    Peer(NodeId, Message),
    /// The node's clock advanced one tick (`Raft::tick`); not sent while the group is quiet.
    Tick,
    /// The node's failure detector decided that a node is down (`Raft::wake`): a quiet
    /// group whose leader is there campaigns, a quiet leader resumes its heartbeats.
    Wake(crate::raft::WakeReason),
    /// Once a second: expire produce requests, retention, gauges, the lazy hard state.
    Housekeeping,
    /// `stream`: the client stream the batch came on (0: none); see `produce.rs`.
    Propose {
        payload: Bytes,
        record_count: u32,
        stream: u64,
        received: Instant,
        reply: oneshot::Sender<ProduceResult>,
    },
    /// A client stream ended: forget whether it was refused.
    StreamEnded(u64),
    /// A metadata command (group 0 only), answered once its entry is applied.
    ProposeCommand {
        command: crate::metadata::Command,
        reply: oneshot::Sender<CommandResult>,
    },
    /// New settings from the metadata (a topic's retention changed).
    Configure {
        retention: Retention,
    },
    Synced {
        index: u64,
        term: u64,
        seconds: f64,
    },
    SyncFailed(String),
    Status(oneshot::Sender<GroupStatus>),
    ChangeMembership {
        changes: Vec<MembershipChange>,
        addresses: Vec<(NodeId, SocketAddr)>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    TransferLeadership {
        to: NodeId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A reader found a corrupt entry at or after the checkpoint before this index.
    Corrupt {
        from_index: u64,
        detail: String,
    },
    /// A search for damage (a scrub, or after `Corrupt`) ended: the first damaged entry.
    Damaged(Option<Damage>),
    Shutdown(oneshot::Sender<()>),
}

/// Who leads, for redirecting clients without asking the task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    pub me: bool,
    pub leader: Option<NodeId>,
}

/// How a group's messages leave the node: the node's links, or a test's stand-in.
pub trait PeerSender: Send + Sync + 'static {
    /// Queues one message of `group` for node `to`. A full queue drops it: Raft sends again.
    fn send(&self, to: NodeId, group: u64, msg: &Message) -> Result<(), SendError>;
    /// A configuration entry names a member's address: the node makes sure it can reach it.
    /// Links belong to the node: a group adds what it learns, it never removes a link.
    fn learn_address(&self, id: NodeId, address: SocketAddr);
    /// Whether node `id` was heard from lately (`net::peer::Peers::alive`).
    fn alive(&self, id: NodeId) -> bool;
}

pub type GroupReplica = Replica<SharedLog, HardStateFile>;

pub struct GroupParts {
    pub group: u64,
    pub replica: GroupReplica,
    pub peers: Arc<dyn PeerSender>,
    pub retention: Retention,
    /// This group updates the node's single-group gauges (`group_metrics.rs`).
    pub node_gauges: bool,
    /// The metadata group's state machine (group 0 only).
    pub metadata: Option<MetadataMachine>,
    /// Where the group says who leads it, for the node's metadata answers.
    pub leaders: Arc<LeaderTable>,
    /// Data entries are Kafka batches: the leader stamps each with its base offset and its
    /// term before proposing it (partitions; not the metadata group). Such groups keep a
    /// producer table (`producer_state.rs`).
    pub stamp_batches: bool,
    /// A partition of `__consumer_offsets`: trimmed below its coordinator's checkpoints
    /// (`offsets_floor.rs`), never by retention.
    pub consumer_offsets: bool,
    /// The limits of the producer table (with `stamp_batches`): the same on every replica.
    pub producers: ProducerConfig,
}

/// What a group publishes for readers and redirects, without a round trip to its task.
pub struct Published {
    pub committed: watch::Receiver<Committed>,
    pub leader: watch::Receiver<LeaderHint>,
    /// Whether the group is quiet here (the core's `Ready::quiesced`): the ticker skips it.
    pub quiet: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("log storage failed: {0}; the node stops so that it never acknowledges what it did not write")]
    Sync(String),
    #[error("the metadata snapshot cannot be restored: {0}")]
    Snapshot(String),
}

pub struct Group {
    group: u64,
    replica: GroupReplica,
    log: SharedLog,
    peers: Arc<dyn PeerSender>,
    retention: Retention,
    produce: ProduceTable,
    metadata: Option<MetadataMachine>,
    leaders: Arc<LeaderTable>,
    stamp_batches: bool,
    /// The producer table of a partition (`None` for the metadata group).
    producers: Option<GroupProducers>,
    /// How far a partition of `__consumer_offsets` may be trimmed.
    offsets_floor: Option<OffsetsFloor>,
    committed_tx: watch::Sender<Committed>,
    leader_tx: watch::Sender<LeaderHint>,
    quiet: Arc<std::sync::atomic::AtomicBool>,
    sync: Arc<Notify>,
    metrics: GroupMetrics,
    role: Role,
    leader: Option<NodeId>,
    /// For the tasks the loop starts that report back (set by `run`).
    events_tx: Option<mpsc::Sender<Event>>,
    /// A search for damage is running; another from this index is due after it.
    verifying: bool,
    verify_next: Option<u64>,
    /// `raft.membership_index()` when the members' addresses were last learned.
    addresses_index: u64,
}

impl Group {
    pub fn new(parts: GroupParts) -> (Group, Published) {
        let (committed_tx, committed) = watch::channel(parts.replica.committed());
        let (leader_tx, leader) = watch::channel(LeaderHint::default());
        let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let raft = parts.replica.raft();
        let id = raft.id();
        let producers =
            parts.stamp_batches.then(|| GroupProducers::open(parts.producers, parts.replica.log().read().dir()));
        let group = Group {
            group: parts.group,
            role: raft.role(),
            leader: raft.leader(),
            log: parts.replica.log().clone(),
            replica: parts.replica,
            peers: parts.peers,
            retention: parts.retention,
            produce: ProduceTable::default(),
            metadata: parts.metadata,
            leaders: parts.leaders,
            stamp_batches: parts.stamp_batches,
            offsets_floor: parts.consumer_offsets.then(OffsetsFloor::new),
            producers,
            committed_tx,
            leader_tx,
            quiet: quiet.clone(),
            sync: Arc::new(Notify::new()),
            metrics: GroupMetrics::new(id, parts.node_gauges),
            events_tx: None,
            verifying: false,
            verify_next: None,
            addresses_index: 0,
        };
        (group, Published { committed, leader, quiet })
    }

    /// Runs until shutdown or a storage failure, inside a span naming the group.
    pub async fn run(self, events: mpsc::Receiver<Event>, events_tx: mpsc::Sender<Event>) -> Result<(), GroupError> {
        let span = tracing::info_span!("group", group = self.group);
        self.run_inner(events, events_tx).instrument(span).await
    }

    async fn run_inner(
        mut self,
        mut events: mpsc::Receiver<Event>,
        events_tx: mpsc::Sender<Event>,
    ) -> Result<(), GroupError> {
        tokio::spawn(sync_task(self.log.clone(), self.sync.clone(), events_tx.clone()).in_current_span());
        self.events_tx = Some(events_tx);
        // A scrub after start: sealed segments are not read at open, so damage in them
        // would otherwise wait for a reader (FORMAT.md, "Assumptions about the medium").
        let first = self.log.read().first_index();
        self.suspect(first);
        self.learn_addresses();
        self.publish_role();
        if let Some(machine) = &mut self.metadata {
            // The state through the snapshot kept, then the entries after it.
            if let Some(snapshot) = self.replica.snapshot() {
                machine.restore(snapshot).map_err(|e| GroupError::Snapshot(e.to_string()))?;
            }
            machine.apply_committed(&self.log, self.replica.committed().index);
        }
        // The producer table is rebuilt from the log (`producer_state.rs`).
        if let Some(producers) = &mut self.producers {
            producers.apply_committed(&self.log, self.replica.committed().index);
        }
        while let Some(event) = events.recv().await {
            if let Some(done) = self.handle(event)? {
                return self.shutdown(done, &mut events).await;
            }
            for _ in 0..EVENTS_PER_READY_MAX {
                let Ok(event) = events.try_recv() else { break };
                if let Some(done) = self.handle(event)? {
                    return self.shutdown(done, &mut events).await;
                }
            }
            self.process_ready()?;
        }
        Ok(())
    }

    /// Handles one event; returns the shutdown reply channel when asked to stop.
    fn handle(&mut self, event: Event) -> Result<Option<oneshot::Sender<()>>, GroupError> {
        match event {
            Event::Peer(from, msg) => {
                self.metrics.observe_incoming(from, &msg);
                self.replica.step(from, msg);
            }
            Event::Tick => self.replica.tick(),
            Event::Wake(reason) => self.replica.wake(reason),
            Event::Housekeeping => self.housekeeping()?,
            Event::Propose { payload, record_count, stream, received, reply } => {
                self.propose(payload, record_count, stream, received, reply)
            }
            Event::StreamEnded(stream) => self.produce.stream_ended(stream),
            Event::ProposeCommand { command, reply } => self.propose_command(command, reply),
            Event::Configure { retention } => self.retention = retention,
            Event::Synced { index, term, seconds } => {
                metrics::histogram!(m::FSYNC_SECONDS).record(seconds);
                metrics::counter!(m::FSYNCS).increment(1);
                self.replica.persisted(index, term);
            }
            Event::SyncFailed(why) => return Err(GroupError::Sync(why)),
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Event::ChangeMembership { changes, addresses, reply } => {
                // The addresses travel in the configuration entry: every replica learns
                // them from its log, so any later leader reaches the new members.
                for (id, address) in &addresses {
                    self.peers.learn_address(*id, *address);
                }
                let addresses: Vec<(NodeId, String)> = addresses.iter().map(|(id, a)| (*id, a.to_string())).collect();
                let result = self.replica.propose_membership(&changes, &addresses);
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Event::TransferLeadership { to, reply } => {
                let _ = reply.send(self.replica.transfer_leadership(to).map_err(|e| e.to_string()));
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
            Event::Shutdown(reply) => return Ok(Some(reply)),
        }
        if let Some(hint) = self.replica.take_damage_hint() {
            self.suspect(hint);
        }
        Ok(None)
    }

    fn propose(
        &mut self,
        payload: Bytes,
        record_count: u32,
        stream: u64,
        received: Instant,
        reply: oneshot::Sender<ProduceResult>,
    ) {
        // The producer fields of the bytes that will be stored, as every replica applies them.
        let producer =
            self.producers.as_ref().and(BatchHeader::parse(&payload).ok()).map(|h| ProducerBatch::from_header(&h));
        // An idempotent batch is kept in order by its sequence, not by its stream: after a
        // refused batch the next one leaves a gap, which the producer check refuses.
        let stream = if producer.is_some_and(|p| p.is_idempotent()) { 0 } else { stream };
        if self.produce.is_refused(stream) {
            let why = "an earlier batch on this stream was refused; resend from it".to_string();
            self.produce.refuse(stream, reply, ProduceError::Busy(why));
            return;
        }
        let Some(reply) = self.check_producer(producer.as_ref(), stream, reply) else { return };
        let (payload, stamped) = if self.stamp_batches { self.stamp(payload) } else { (payload, None) };
        match self.replica.propose(&payload, record_count) {
            Ok(p) => {
                assert!(stamped.is_none_or(|o| o == p.base_offset), "a batch is stamped with the offset it gets");
                if let (Some(producers), Some(batch)) = (&mut self.producers, &producer) {
                    producers.proposed(p.index, batch);
                }
                self.produce.add(Proposed {
                    index: p.index,
                    term: p.term,
                    base_offset: p.base_offset,
                    record_count,
                    bytes: payload.len(),
                    stream,
                    received,
                    reply,
                })
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.produce.refuse(stream, reply, ProduceError::NotLeader { leader })
            }
            Err(ProposeError::Busy(why)) => self.produce.refuse(stream, reply, ProduceError::Busy(why.to_string())),
            Err(e) => self.produce.refuse(stream, reply, ProduceError::Refused(e.to_string())),
        }
    }

    /// Kafka's sequence rules before proposing (`producers/mod.rs`): gives the reply back
    /// when the batch is to be proposed, else answers it.
    fn check_producer(
        &mut self,
        batch: Option<&ProducerBatch>,
        stream: u64,
        reply: oneshot::Sender<ProduceResult>,
    ) -> Option<oneshot::Sender<ProduceResult>> {
        let (Some(producers), Some(batch)) = (&mut self.producers, batch) else { return Some(reply) };
        match producers.admit(self.replica.raft(), batch) {
            Admission::Propose => return Some(reply),
            Admission::Answer(result) => {
                let _ = reply.send(result);
            }
            Admission::Join(index) => self.produce.join(index, reply),
            Admission::Refuse(error) => self.produce.refuse(stream, reply, error),
        }
        None
    }

    fn propose_command(&mut self, command: crate::metadata::Command, reply: oneshot::Sender<CommandResult>) {
        let Some(machine) = &mut self.metadata else {
            let _ = reply.send(Err(CommandError::Busy(format!("group {} holds no metadata", self.group))));
            return;
        };
        match self.replica.propose(&command.encode(), 1) {
            Ok(p) => machine.wait(p.index, p.term, reply),
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(Err(CommandError::NotLeader { leader }));
            }
            Err(e) => {
                let _ = reply.send(Err(CommandError::Busy(e.to_string())));
            }
        }
    }

    /// The batch as it will be stored: its baseOffset is the offset its first record gets
    /// (the log's next offset) and its partitionLeaderEpoch this leader's term, both outside
    /// the batch's CRC (DESIGN.md, "Record format"). The core assigns the same offset when
    /// the batch is proposed next (asserted).
    fn stamp(&self, payload: Bytes) -> (Bytes, Option<u64>) {
        let next = self.replica.next_offset();
        let term = self.replica.raft().term();
        let mut bytes = bytes::BytesMut::from(&payload[..]);
        crate::batch::stamp(&mut bytes, crate::ids::Offset(next), crate::ids::Term(term));
        (bytes.freeze(), Some(next))
    }

    /// Carries out the core's outputs: the replica makes the hard state durable and writes
    /// the log; then the fsync task is woken, the messages leave, producers are answered.
    fn process_ready(&mut self) -> Result<(), GroupError> {
        let Some(applied) = self.replica.apply_ready()? else { return Ok(()) };
        let ready = applied.ready;
        if ready.has_storage() {
            self.sync.notify_one();
        }
        if let Some(quiet) = ready.quiesced {
            self.quiet.store(quiet, std::sync::atomic::Ordering::Relaxed);
            self.metrics.set_quiet(quiet);
        }
        if self.replica.raft().membership_index() != self.addresses_index {
            self.learn_addresses();
        }
        for (to, msg) in &ready.messages {
            self.metrics.observe_outgoing(*to, msg);
            if let Err(SendError::QueueFull(_)) = self.peers.send(*to, self.group, msg) {
                metrics::counter!(m::PEER_FRAMES_DROPPED).increment(1);
            }
        }
        // A leader's snapshot, saved and the log restarted after it: the state machine
        // starts over from it before the entries after it are applied.
        if let (Some(snapshot), Some(machine)) = (&ready.snapshot, &mut self.metadata) {
            machine.restore(snapshot).map_err(|e| GroupError::Snapshot(e.to_string()))?;
            info!(index = snapshot.meta.index(), "metadata restored from the leader's snapshot");
        }
        if let Some(committed) = applied.committed {
            if let Some(machine) = &mut self.metadata {
                machine.apply_committed(&self.log, committed.index);
            }
            if let Some(producers) = &mut self.producers {
                producers.apply_committed(&self.log, committed.index);
            }
            // Published before the produce answers leave: a client that asks the end offset
            // right after its ack sees its records in it.
            self.committed_tx.send_replace(committed);
            let log = self.log.read();
            self.produce.committed(committed.index, |i| log.term(i), self.leader);
        }
        if let Some(soft) = ready.soft_state {
            self.on_soft_state(soft);
        }
        Ok(())
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        self.metrics.role_changed(self.role, self.leader, &soft);
        if self.role == Role::Leader && soft.role != Role::Leader {
            warn!(term = soft.term, pending = self.produce.len(), "lost leadership");
            self.produce.leadership_lost(Instant::now());
            if let Some(producers) = &mut self.producers {
                producers.leadership_lost();
            }
        }
        self.role = soft.role;
        self.leader = soft.leader;
        self.publish_role();
        let report = self.leader_report(soft.term);
        self.leaders.report_own(report);
    }

    /// What this replica can say about the group's leadership: with offsets when it leads.
    fn leader_report(&self, term: u64) -> LeaderReport {
        let offsets = (self.role == Role::Leader).then(|| {
            let raft = self.replica.raft();
            let committed = self.replica.committed();
            let mut in_sync = vec![raft.id()];
            in_sync.extend(
                raft.progress()
                    .into_iter()
                    .filter(|p| p.id != raft.id() && p.match_index >= committed.index && self.peers.alive(p.id))
                    .map(|p| p.id),
            );
            Offsets { log_start_offset: self.log.read().start_offset(), high_watermark: committed.next_offset, in_sync }
        });
        LeaderReport { group: self.group, term, leader: self.leader, offsets }
    }

    fn publish_role(&self) {
        self.leader_tx.send_replace(LeaderHint { me: self.role == Role::Leader, leader: self.leader });
        self.metrics.publish_role(self.role, self.leader);
    }

    /// Learns the addresses the committed and the active configuration carry, so that the
    /// node can reach members added after it started.
    fn learn_addresses(&mut self) {
        self.addresses_index = self.replica.raft().membership_index();
        let committed = &self.replica.hard().persisted().membership;
        for (id, text) in committed.addresses.iter().chain(&self.replica.raft().membership().addresses) {
            match text.parse::<SocketAddr>() {
                Ok(addr) => self.peers.learn_address(*id, addr),
                Err(_) => warn!(peer = id, address = %text, "a configuration names an address that is not IP:PORT"),
            }
        }
        let members = members_of(self.replica.raft().membership());
        self.metrics.register_peers(&members);
    }

    /// Once a second: expire produce requests, retention, gauges, the lazy hard state.
    fn housekeeping(&mut self) -> Result<(), GroupError> {
        self.replica.flush_lazy()?;
        self.produce.expire(Instant::now(), self.role == Role::Leader);
        if let Some(machine) = &mut self.metadata {
            machine.expire(Instant::now());
        }
        if let Some(producers) = &mut self.producers {
            producers.snapshot_if_due();
        }
        self.apply_retention();
        self.snapshot_metadata();
        self.metrics.update_gauges(&self.replica);
        if self.role == Role::Leader {
            self.leaders.report(self.leader_report(self.replica.raft().term()));
        }
        Ok(())
    }

    fn apply_retention(&mut self) {
        if self.retention.is_unlimited() && self.offsets_floor.is_none() {
            return;
        }
        let (segments, synced) = {
            let log = self.log.read();
            (log.segments(), log.synced_index())
        };
        let safe = self.replica.committed().index.min(synced);
        // Retention would lose committed offsets: `__consumer_offsets` goes only as far as
        // a checkpoint covers.
        let index = match &mut self.offsets_floor {
            Some(floor) => floor.drop_before(&self.log, safe),
            None => retention::drop_before(&segments, safe, &self.retention, SystemTime::now()),
        };
        let Some(index) = index else { return };
        // The producer table's snapshot must cover what is dropped (`producer_state.rs`).
        let index = self.producers.as_mut().map_or(index, |p| p.retention_floor(index));
        if index <= self.log.read().first_index() {
            return;
        }
        match self.replica.log_mut().drop_before(index) {
            Ok(n) => {
                metrics::counter!(m::RETENTION_DELETED_SEGMENTS).increment(n as u64);
                info!(segments = n, first_index = index, "retention deleted segments");
            }
            Err(e) => warn!(error = %e, "retention could not delete segments"),
        }
    }

    /// The metadata group: once `METADATA_SNAPSHOT_ENTRIES` were applied since the snapshot
    /// kept, saves the state as the new snapshot and trims the log it covers (whole sealed
    /// segments). A failure leaves the last snapshot and the whole log: nothing is lost.
    fn snapshot_metadata(&mut self) {
        let Some(machine) = &self.metadata else { return };
        let index = machine.applied().min(self.replica.committed().index);
        let kept = self.replica.snapshot().map_or(0, |s| s.meta.index());
        if index < kept + METADATA_SNAPSHOT_ENTRIES {
            return;
        }
        let data = machine.state().snapshot();
        let bytes = data.len();
        if let Err(e) = self.replica.save_snapshot(index, data) {
            warn!(index, error = %e, "cannot snapshot the metadata; the log is kept whole");
            return;
        }
        metrics::counter!(m::METADATA_SNAPSHOTS).increment(1);
        match self.replica.log_mut().drop_before(index + 1) {
            Ok(segments) => info!(index, bytes, segments, "metadata snapshot saved; log trimmed"),
            Err(e) => warn!(index, error = %e, "metadata snapshot saved; the log could not be trimmed"),
        }
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
            let found = tokio::task::spawn_blocking(move || log.find_damage(hint)).await.ok().flatten();
            let _ = events.send(Event::Damaged(found)).await;
        });
    }

    /// Damage found: the replica keeps it as a hole and fetches it from the peers, or else
    /// cuts its log and restarts its core (`Replica::repair_damage`); a leader steps down
    /// that way, and producers waiting on it learn their outcome is unknown.
    fn repair(&mut self, damage: Damage) -> Result<(), GroupError> {
        if !self.replica.raft().holes().contains(&damage.index) {
            metrics::counter!(m::STORAGE_CORRUPTIONS).increment(1);
            let (index, role) = (damage.index, role_name(self.role));
            error!(index, detail = %damage.detail, role, "damaged entry in the log");
        }
        match self.replica.repair_damage(damage.index)? {
            Repair::Gone => {
                info!(index = damage.index, "the damaged entry is no longer in the log");
                return Ok(());
            }
            Repair::Hole => return Ok(()),
            Repair::Cut => {}
        }
        self.produce.fail_all("the node found damage in its log and stopped leading");
        if let Some(producers) = &mut self.producers {
            producers.leadership_lost();
        }
        self.committed_tx.send_replace(self.replica.committed());
        self.role = self.replica.raft().role();
        self.leader = None;
        self.publish_role();
        Ok(())
    }

    fn status(&self) -> GroupStatus {
        let raft = self.replica.raft();
        let log = self.log.read();
        let progress: BTreeMap<NodeId, u64> = if self.role == Role::Leader {
            raft.progress().into_iter().map(|p| (p.id, p.match_index)).collect()
        } else {
            BTreeMap::new()
        };
        let membership = raft.membership();
        let members = members_of(membership)
            .into_iter()
            .map(|id| MemberStatus {
                id,
                voter: membership.voters.contains(&id) || membership.voters_outgoing.contains(&id),
                match_index: if id == raft.id() && self.role == Role::Leader {
                    Some(log.last_index())
                } else {
                    progress.get(&id).copied()
                },
            })
            .collect();
        let committed = self.replica.committed();
        GroupStatus {
            node_id: raft.id(),
            role: self.role,
            leader: self.leader,
            term: raft.term(),
            commit_index: committed.index,
            last_index: log.last_index(),
            log_start_offset: log.start_offset(),
            log_end_offset: committed.next_offset,
            members,
            producers_tracked: self.producers.as_ref().map_or(0, |p| p.table().len()),
            membership: membership.clone(),
            membership_committed: raft.membership_index() <= raft.commit(),
        }
    }

    /// Graceful stop: hand leadership to a caught-up voter, make everything durable.
    async fn shutdown(
        mut self,
        done: oneshot::Sender<()>,
        events: &mut mpsc::Receiver<Event>,
    ) -> Result<(), GroupError> {
        if self.role == Role::Leader {
            let raft = self.replica.raft();
            let target = raft
                .progress()
                .into_iter()
                .filter(|p| p.id != raft.id() && raft.membership().voters.contains(&p.id))
                .max_by_key(|p| p.match_index)
                .map(|p| p.id);
            if let Some(to) = target {
                info!(to, "transferring leadership before shutting down");
                let _ = self.replica.transfer_leadership(to);
                self.process_ready()?;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                while self.role == Role::Leader && tokio::time::Instant::now() < deadline {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(Some(event)) => {
                            if !matches!(event, Event::Shutdown(_) | Event::Propose { .. }) {
                                self.handle(event)?;
                            }
                        }
                        _ => break,
                    }
                    self.process_ready()?;
                }
            }
        }
        self.replica.sync_all()?;
        info!("stopped cleanly");
        let _ = done.send(());
        Ok(())
    }
}

pub fn members_of(m: &Membership) -> Vec<NodeId> {
    m.members().into_iter().collect()
}

/// Makes appends durable in groups: each fsync covers every append before it, while the
/// loop goes on appending; the loop hears which index is durable.
async fn sync_task(log: SharedLog, notify: Arc<Notify>, events: mpsc::Sender<Event>) {
    loop {
        notify.notified().await;
        let job = log.write_lock().begin_sync();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || job.run()).await;
        let seconds = started.elapsed().as_secs_f64();
        let event = match outcome {
            Ok(Ok(done)) => {
                let mut log = log.write_lock();
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
