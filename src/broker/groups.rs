//! The consumer group coordinators of one node: for each partition of `__consumer_offsets`
//! this node leads, a task that owns a `groups::Coordinator` and drives it as
//! `groups/mod.rs` says (load by replaying the partition, append through `Broker::produce`,
//! `committed` once an append commits, `tick` every 100 ms, `shutdown` when leadership
//! goes). Front ends ask through `Coordinators::call`; the coordinator of group G is the
//! leader of partition `coordinator_partition(G, N)`, wherever that is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Broker, BrokerError};
use crate::batch::{BatchBuilder, BatchReader, Compression, Record};
use crate::groups::{
    Append, AppendToken, CommittedGroup, Coordinator, GroupError, GroupListing, Handle, Output, Reply, Settings,
    StoredRecord, check_group_id, checkpoint_floor, checkpoint_marker, coordinator_partition,
};
use crate::kafka::backend::{GroupAnswer, GroupCall};
use crate::metadata::CONSUMER_OFFSETS;
use crate::metrics as m;
use crate::raft::{NodeId, Role, kind as entry_kind};
use crate::server::registry::GroupHandle;

/// How often each coordinator's clock is driven, and how often the node looks for
/// partitions of `__consumer_offsets` it started or stopped leading.
const TICK: Duration = Duration::from_millis(100);
/// Requests queued for one coordinator; more are answered COORDINATOR_NOT_AVAILABLE.
const CALLS_MAX: usize = 1_024;
/// Ticks between two computations of the consumer lag metrics.
const LAG_EVERY_TICKS: u32 = 10;
/// Bytes read at a time while loading a partition.
const LOAD_READ_BYTES_MAX: usize = 1 << 20;
/// Largest inflated batch read while loading (the coordinator writes uncompressed ones).
const LOAD_INFLATED_BYTES_MAX: usize = 64 << 20;
/// Record bytes appended since the last checkpoint above which a new one is written (so
/// that the partition can be trimmed before it), unless the partition's segments are
/// smaller: whole segments are what a replica drops, so checkpointing more often than a
/// segment fills gains nothing. The threshold is at least twice the last checkpoint's size,
/// so that checkpoints take at most half of what is written.
const UNCHECKPOINTED_BYTES_MAX: u64 = 64 << 20;

type Answer<T> = oneshot::Sender<Result<T, GroupError>>;

/// What a front end asks of one coordinator.
enum Ask {
    Call(GroupCall, Answer<GroupAnswer>),
    List(Answer<Vec<GroupListing>>),
}

/// The coordinators running on this node, by partition of `__consumer_offsets`.
pub struct Coordinators {
    broker: Arc<Broker>,
    running: Mutex<BTreeMap<u32, Running>>,
    /// Each coordinator's lag (sum over its groups, largest group), for the node's gauges.
    lags: Lags,
}

/// Per partition of `__consumer_offsets` coordinated here: (total lag, largest group's).
type Lags = Arc<Mutex<BTreeMap<u32, (u64, u64)>>>;

struct Running {
    /// The partition's Raft group.
    group: u64,
    asks: mpsc::Sender<Ask>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Coordinators {
    pub fn new(broker: Arc<Broker>) -> Arc<Coordinators> {
        Arc::new(Coordinators { broker, running: Mutex::new(BTreeMap::new()), lags: Lags::default() })
    }

    /// Starts a coordinator for every partition this node comes to lead and forgets those
    /// whose task ended (it ends by itself when leadership goes), until the node stops.
    pub async fn run(self: Arc<Coordinators>) {
        let mut metadata = self.broker.metadata.clone();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The node stopped: its coordinators stop with their tasks.
                changed = metadata.changed() => if changed.is_err() { break },
                _ = ticker.tick() => {}
            }
            self.reconcile();
        }
        self.running.lock().expect("coordinators lock").clear();
    }

    fn reconcile(&self) {
        let state = self.broker.state();
        let groups: Vec<u64> =
            state.partitions(CONSUMER_OFFSETS).map(|ps| ps.iter().map(|p| p.group.get()).collect()).unwrap_or_default();
        let mut running = self.running.lock().expect("coordinators lock");
        running.retain(|p, r| !r.task.is_finished() && groups.get(*p as usize) == Some(&r.group));
        for (partition, group) in groups.iter().enumerate() {
            let partition = partition as u32;
            let Some(replica) = self.broker.registry.get(*group) else { continue };
            if !replica.leader().me || running.contains_key(&partition) {
                continue;
            }
            let (asks, queue) = mpsc::channel(CALLS_MAX);
            let task = tokio::spawn(coordinate(self.broker.clone(), partition, replica, queue, self.lags.clone()));
            running.insert(partition, Running { group: *group, asks, task });
        }
        metrics::gauge!(m::GROUP_COORDINATORS).set(running.len() as f64);
        let mut lags = self.lags.lock().expect("lags lock");
        lags.retain(|p, _| running.contains_key(p));
        metrics::gauge!(m::CONSUMER_LAG).set(lags.values().map(|(sum, _)| *sum).sum::<u64>() as f64);
        metrics::gauge!(m::CONSUMER_LAG_MAX).set(lags.values().map(|(_, max)| *max).max().unwrap_or(0) as f64);
    }

    /// The partition of `__consumer_offsets` that coordinates `group_id`, and its group.
    fn partition_of(&self, group_id: &str) -> Result<(u32, u64), GroupError> {
        let state = self.broker.state();
        let partitions = state.partitions(CONSUMER_OFFSETS).filter(|ps| !ps.is_empty()).ok_or_else(|| {
            GroupError::CoordinatorNotAvailable { reason: "__consumer_offsets is not created yet".into() }
        })?;
        let partition = coordinator_partition(group_id, partitions.len() as u32);
        Ok((partition, partitions[partition as usize].group.get()))
    }

    /// The node that coordinates `group_id` now (the leader of its partition).
    pub fn coordinator(&self, group_id: &str) -> Result<NodeId, GroupError> {
        let (_, group) = self.partition_of(group_id)?;
        if self.broker.registry.get(group).is_some_and(|r| r.leader().me) {
            return Ok(self.broker.node_id);
        }
        self.broker.leaders.leader(group).ok_or_else(|| GroupError::CoordinatorNotAvailable {
            reason: "the group's partition of __consumer_offsets has no leader yet".into(),
        })
    }

    /// Serves one request on this node's coordinator of its group; `NotCoordinator` when
    /// this node does not lead the group's partition.
    pub async fn call(&self, call: GroupCall) -> Result<GroupAnswer, GroupError> {
        // As Kafka does, an id too long for any group is refused before asking whether this
        // node coordinates it: INVALID_GROUP_ID from every node, not NOT_COORDINATOR from
        // all but one (the empty id is the coordinator's to judge: some calls allow it).
        check_group_id(call.group_id(), true)?;
        let (partition, _) = self.partition_of(call.group_id())?;
        let (reply, answer) = oneshot::channel();
        self.ask(partition, Ask::Call(call, reply))?;
        answer.await.unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// The groups of every coordinator on this node.
    pub async fn list(&self) -> Result<Vec<GroupListing>, GroupError> {
        let partitions: Vec<u32> = self.running.lock().expect("coordinators lock").keys().copied().collect();
        let mut all = Vec::new();
        for partition in partitions {
            let (reply, answer) = oneshot::channel();
            if self.ask(partition, Ask::List(reply)).is_err() {
                continue;
            }
            match answer.await {
                Ok(Ok(groups)) => all.extend(groups),
                // A coordinator still loading holds groups it cannot list yet: say so.
                Ok(Err(e @ GroupError::CoordinatorLoadInProgress)) => return Err(e),
                _ => {}
            }
        }
        Ok(all)
    }

    fn ask(&self, partition: u32, ask: Ask) -> Result<(), GroupError> {
        let running = self.running.lock().expect("coordinators lock");
        let Some(r) = running.get(&partition) else {
            // Leading but not started yet (the next reconcile starts it): as if loading.
            let leads = self.broker.state().partitions(CONSUMER_OFFSETS).is_some_and(|ps| {
                ps.get(partition as usize)
                    .is_some_and(|p| self.broker.registry.get(p.group.get()).is_some_and(|r| r.leader().me))
            });
            return Err(if leads { GroupError::CoordinatorLoadInProgress } else { GroupError::NotCoordinator });
        };
        r.asks.try_send(ask).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                GroupError::CoordinatorNotAvailable { reason: format!("{CALLS_MAX} requests are queued") }
            }
            mpsc::error::TrySendError::Closed(_) => GroupError::NotCoordinator,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The coordinator settings a node's limits allow: every append fits one batch.
fn settings(broker: &Broker) -> Settings {
    let defaults = Settings::default();
    // Record framing takes a little beside the keys and values the coordinator counts.
    let room = broker.limits.record_bytes_max.min(broker.limits.batch_bytes_max) / 4 * 3;
    Settings { append_bytes_max: defaults.append_bytes_max.min(room), ..defaults }
}

/// One partition's coordinator, while this node leads the partition in one term.
async fn coordinate(
    broker: Arc<Broker>,
    partition: u32,
    replica: Arc<GroupHandle>,
    mut asks: mpsc::Receiver<Ask>,
    lags: Lags,
) {
    let Some(status) = replica.status().await else { return };
    if status.role != Role::Leader {
        return;
    }
    let term = status.term;
    // Everything up to the leader's no-op is committed once the no-op is: then nothing
    // read while loading can still be cut.
    let mut committed = replica.committed.clone();
    let mut leader = replica.leader.clone();
    while committed.borrow_and_update().index < status.last_index {
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() || !leader.borrow_and_update().me { return },
            Some(ask) = asks.recv() => refuse(ask, GroupError::CoordinatorLoadInProgress),
        }
    }
    let mut coordinator = Coordinator::new(settings(&broker), term);
    let end = replica.committed().next_offset;
    let (records, loaded_bytes) = match load(&broker, partition, &mut coordinator, end).await {
        Ok(loaded) => loaded,
        Err(e) => {
            warn!(partition, error = %e, "cannot load a partition of __consumer_offsets; trying again");
            return;
        }
    };
    coordinator.finish_loading(now_ms());
    info!(partition, term, records, groups = coordinator.committed_state().len(), "coordinating consumer groups");
    let segment_bytes = match broker.replica(CONSUMER_OFFSETS, partition) {
        Ok(r) => r.log.read().config().segment_bytes,
        Err(_) => return,
    };
    let mut driver = Driver {
        broker,
        partition,
        waiting: BTreeMap::new(),
        next_handle: 0,
        pending: FuturesOrdered::new(),
        checkpoint: Checkpoints::new(segment_bytes.min(UNCHECKPOINTED_BYTES_MAX), loaded_bytes),
    };
    let mut ticker = tokio::time::interval(TICK);
    let mut ticks = 0u32;
    loop {
        let output = tokio::select! {
            ask = asks.recv() => match ask {
                Some(ask) => driver.serve(&mut coordinator, ask),
                None => break,
            },
            _ = ticker.tick() => {
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(LAG_EVERY_TICKS) {
                    let lag = lag_of(&driver.broker, &coordinator.committed_state());
                    lags.lock().expect("lags lock").insert(partition, lag);
                }
                coordinator.tick(now_ms())
            }
            Some((token, result)) = driver.pending.next(), if !driver.pending.is_empty() => match result {
                Ok(()) => coordinator.committed(token, now_ms()),
                Err(e) => coordinator.append_failed(token, e, now_ms()),
            },
            floor = driver.checkpoint.committed(), if driver.checkpoint.writing.is_some() => {
                driver.checkpoint.writing = None;
                match floor {
                    Ok(floor) => driver.mark(floor).await,
                    Err(e) => warn!(partition, error = %e, "a checkpoint of __consumer_offsets failed; trying later"),
                }
                Output::default()
            }
            changed = leader.changed() => {
                if changed.is_err() || !still_leads(&replica, term).await {
                    break;
                }
                Output::default()
            }
        };
        driver.deliver(output).await;
        // Only with no append in flight: one placed before the checkpoint and committed
        // after the state was taken would be overridden by the older value it holds.
        if driver.checkpoint.due() && coordinator.appends_in_flight() == 0 && driver.pending.is_empty() {
            driver.write_checkpoint(&coordinator).await;
        }
    }
    info!(partition, term, "no longer coordinating consumer groups: leadership moved");
    for (handle, reply) in coordinator.shutdown() {
        driver.reply(handle, reply);
    }
    // Requests still waiting get NOT_COORDINATOR as their senders drop.
}

/// The lag of the groups of `committed`: summed over all, and the largest group's (each
/// group's summed over its partitions). A partition's end is its high watermark as its
/// leader last reported it (`leaders.rs`); a partition with none known yet, or of a deleted
/// topic, counts as no lag.
fn lag_of(broker: &Broker, committed: &BTreeMap<String, CommittedGroup>) -> (u64, u64) {
    let state = broker.state();
    let end = |topic: &str, partition: u32| {
        let p = state.partitions(topic)?.get(partition as usize)?;
        Some(broker.leaders.get(p.group.get())?.offsets?.high_watermark)
    };
    let mut total = 0;
    let mut largest = 0;
    for group in committed.values() {
        let lag: u64 = group
            .offsets
            .iter()
            .filter_map(|((topic, partition), value)| {
                Some(end(topic, *partition)?.saturating_sub(u64::try_from(value.offset).ok()?))
            })
            .sum();
        total += lag;
        largest = largest.max(lag);
    }
    (total, largest)
}

async fn still_leads(replica: &GroupHandle, term: u64) -> bool {
    replica.leader().me && replica.status().await.is_some_and(|s| s.role == Role::Leader && s.term == term)
}

/// Replays the partition's records below `end`; answers how many, and their bytes.
async fn load(
    broker: &Broker,
    partition: u32,
    coordinator: &mut Coordinator,
    end: u64,
) -> Result<(u64, u64), BrokerError> {
    let mut offset = broker.replica(CONSUMER_OFFSETS, partition)?.log.read().start_offset();
    let mut records = 0;
    let mut bytes = 0;
    let mut undecodable = 0;
    while offset < end {
        let fetched = broker.fetch(CONSUMER_OFFSETS, partition, offset, LOAD_READ_BYTES_MAX, Duration::ZERO).await?;
        let before = offset;
        for entry in fetched.entries.iter().filter(|e| e.kind() == entry_kind::DATA) {
            let reader = BatchReader::new(entry.payload(), LOAD_INFLATED_BYTES_MAX).map_err(BrokerError::Batch)?;
            for read in reader {
                let read = read.map_err(BrokerError::Batch)?;
                let Ok(at) = u64::try_from(read.offset) else { continue };
                if at < offset || at >= end {
                    continue;
                }
                offset = at + 1;
                records += 1;
                let key = read.record.key.unwrap_or_default();
                bytes += (key.len() + read.record.value.as_ref().map_or(0, |v| v.len())) as u64;
                if checkpoint_floor(&key, read.record.value.as_deref()).is_some() {
                    continue;
                }
                if coordinator.replay(key, read.record.value).is_err() {
                    undecodable += 1;
                }
            }
        }
        if offset == before {
            // Only entries without records (a leader's no-op) are left below the end.
            break;
        }
    }
    if undecodable > 0 {
        warn!(partition, undecodable, "records of __consumer_offsets that this keel cannot read were skipped");
    }
    Ok((records, bytes))
}

fn refuse(ask: Ask, error: GroupError) {
    match ask {
        Ask::Call(_, reply) => drop(reply.send(Err(error))),
        Ask::List(reply) => drop(reply.send(Err(error))),
    }
}

/// A commit of the log of an append, in the log's order.
type Pending = BoxFuture<'static, (AppendToken, Result<(), GroupError>)>;

/// What a coordinator task holds beside its coordinator: the requests waiting for an
/// answer and the appends waiting for their commit.
struct Driver {
    broker: Arc<Broker>,
    partition: u32,
    waiting: BTreeMap<Handle, Answer<GroupAnswer>>,
    next_handle: u64,
    pending: FuturesOrdered<Pending>,
    checkpoint: Checkpoints,
}

/// When to write the coordinator's state as a checkpoint, and the one being written.
struct Checkpoints {
    /// Record bytes appended since the last checkpoint began.
    since: u64,
    /// Record bytes of the last checkpoint.
    last: u64,
    /// `UNCHECKPOINTED_BYTES_MAX`, or the partition's segment size if smaller.
    after: u64,
    /// The commit of the checkpoint placed: the offset the partition may be trimmed below.
    writing: Option<BoxFuture<'static, Result<u64, BrokerError>>>,
}

impl Checkpoints {
    fn new(after: u64, loaded: u64) -> Checkpoints {
        Checkpoints { since: loaded, last: 0, after, writing: None }
    }

    fn due(&self) -> bool {
        self.writing.is_none() && self.since > self.after.max(2 * self.last)
    }

    /// Waits for the checkpoint being written to commit (forever when none is).
    async fn committed(&mut self) -> Result<u64, BrokerError> {
        match &mut self.writing {
            Some(writing) => writing.await,
            None => std::future::pending().await,
        }
    }
}

impl Driver {
    fn serve(&mut self, coordinator: &mut Coordinator, ask: Ask) -> Output {
        let now = now_ms();
        let (call, reply) = match ask {
            Ask::List(reply) => {
                let _ = reply.send(coordinator.list());
                return Output::default();
            }
            Ask::Call(call, reply) => (call, reply),
        };
        let answer = match call {
            GroupCall::Heartbeat(r) => Ok(GroupAnswer::Heartbeat(coordinator.heartbeat(r, now))),
            GroupCall::FetchOffsets { group_id, partitions } => {
                coordinator.fetch_offsets(&group_id, partitions.as_deref()).map(GroupAnswer::FetchOffsets)
            }
            GroupCall::Describe { group_id } => coordinator.describe(&group_id).map(GroupAnswer::Describe),
            waits => {
                let handle = Handle(self.next_handle);
                self.next_handle += 1;
                self.waiting.insert(handle, reply);
                return match waits {
                    GroupCall::Join(r) => coordinator.join(handle, r, now),
                    GroupCall::Sync(r) => coordinator.sync(handle, r, now),
                    GroupCall::Leave(r) => coordinator.leave(handle, r, now),
                    GroupCall::Commit(r) => coordinator.commit(handle, r, now),
                    _ => unreachable!("answered above"),
                };
            }
        };
        let _ = reply.send(answer);
        Output::default()
    }

    fn reply(&mut self, handle: Handle, reply: Reply) {
        let Some(waiter) = self.waiting.remove(&handle) else { return };
        let answer = match reply {
            Reply::Join(r) => {
                // Only the leader of a new generation is sent its members: one per rebalance.
                if r.error.is_none() && !r.members.is_empty() {
                    metrics::counter!(m::GROUP_REBALANCES).increment(1);
                }
                GroupAnswer::Join(r)
            }
            Reply::Sync(r) => GroupAnswer::Sync(r),
            Reply::Leave(r) => GroupAnswer::Leave(r),
            Reply::Commit(r) => {
                let committed = r.partitions.iter().filter(|p| p.error.is_none()).count();
                metrics::counter!(m::GROUP_OFFSET_COMMITS).increment(committed as u64);
                GroupAnswer::Commit(r)
            }
        };
        let _ = waiter.send(Ok(answer));
    }

    /// Sends the replies, then places the appends in the log in order.
    async fn deliver(&mut self, output: Output) {
        for (handle, reply) in output.replies {
            self.reply(handle, reply);
        }
        for append in output.appends {
            self.checkpoint.since += append.records.iter().map(|r| r.encoded_len() as u64).sum::<u64>();
            let pending = place(self.broker.clone(), self.partition, append).await;
            self.pending.push_back(pending);
        }
    }

    /// Places the coordinator's whole state in the log, batch after batch with nothing
    /// between them (this task is the partition's only writer). Everything before it is
    /// committed and in that state, so the log's end now is a floor that replay may start
    /// from once the checkpoint commits.
    async fn write_checkpoint(&mut self, coordinator: &Coordinator) {
        let records = coordinator.checkpoint();
        let bytes: u64 = records.iter().map(|r| r.encoded_len() as u64).sum();
        let Ok(replica) = self.broker.replica(CONSUMER_OFFSETS, self.partition) else { return };
        let floor = replica.log.read().next_offset();
        let mut replies = Vec::new();
        for chunk in chunks(records, coordinator.settings().append_bytes_max) {
            let placed = match batch_of(&chunk) {
                Ok(batch) => self.broker.produce(CONSUMER_OFFSETS, self.partition, batch, 0).await,
                Err(e) => Err(BrokerError::Batch(e)),
            };
            match placed {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    warn!(partition = self.partition, error = %e, "cannot place a checkpoint of __consumer_offsets");
                    self.checkpoint.since = 0;
                    return;
                }
            }
        }
        self.checkpoint.since = 0;
        self.checkpoint.last = bytes;
        let (broker, partition) = (self.broker.clone(), self.partition);
        self.checkpoint.writing = Some(Box::pin(async move {
            for reply in replies {
                broker.produced(CONSUMER_OFFSETS, partition, reply).await?;
            }
            Ok(floor)
        }));
    }

    /// Appends the marker of a committed checkpoint: every replica that commits it may drop
    /// the segments below `floor`. Its commit is not waited for: without it, nothing is
    /// trimmed until the next checkpoint, which is safe.
    async fn mark(&mut self, floor: u64) {
        let (key, value) = checkpoint_marker(floor);
        let record = Record { timestamp_ms: now_ms() as i64, key: Some(key), value: Some(value), headers: Vec::new() };
        let mut builder = BatchBuilder::new(Compression::None);
        let placed = match builder.push(&record) {
            Ok(()) => self.broker.produce(CONSUMER_OFFSETS, self.partition, builder.finish(), 0).await.map(drop),
            Err(e) => Err(BrokerError::Batch(e)),
        };
        match placed {
            Ok(()) => info!(partition = self.partition, floor, "__consumer_offsets checkpoint committed"),
            Err(e) => warn!(partition = self.partition, error = %e, "cannot mark a checkpoint of __consumer_offsets"),
        }
    }
}

/// `records` in runs of at most `bytes_max` bytes of keys and values (a larger record alone).
fn chunks(records: Vec<StoredRecord>, bytes_max: usize) -> Vec<Vec<StoredRecord>> {
    let mut chunks: Vec<Vec<StoredRecord>> = Vec::new();
    let mut bytes = 0;
    for record in records {
        let len = record.encoded_len();
        match chunks.last_mut() {
            Some(chunk) if bytes + len <= bytes_max => chunk.push(record),
            _ => {
                chunks.push(vec![record]);
                bytes = 0;
            }
        }
        bytes += len;
    }
    chunks
}

/// One uncompressed batch of `records`, stamped with the time now.
fn batch_of(records: &[StoredRecord]) -> Result<bytes::Bytes, crate::batch::BatchError> {
    let mut builder = BatchBuilder::new(Compression::None);
    let timestamp_ms = now_ms() as i64;
    for stored in records {
        builder.push(&Record { timestamp_ms, key: Some(stored.key()), value: stored.value(), headers: Vec::new() })?;
    }
    Ok(builder.finish())
}

/// Places one append in the partition's log; the future it yields waits for its commit.
async fn place(broker: Arc<Broker>, partition: u32, append: Append) -> Pending {
    let token = append.token;
    let failed = |e: BrokerError| -> Pending { Box::pin(async move { (token, Err(group_error(e))) }) };
    let batch = match batch_of(&append.records) {
        Ok(batch) => batch,
        Err(e) => return failed(BrokerError::Batch(e)),
    };
    let reply = match broker.produce(CONSUMER_OFFSETS, partition, batch, 0).await {
        Ok(reply) => reply,
        Err(e) => return failed(e),
    };
    Box::pin(async move {
        let done = broker.produced(CONSUMER_OFFSETS, partition, reply).await;
        (token, done.map(|_| ()).map_err(group_error))
    })
}

/// Why an append failed, as the coordinator takes it.
fn group_error(e: BrokerError) -> GroupError {
    match e {
        BrokerError::NotLeader { .. } => GroupError::NotCoordinator,
        other => GroupError::CoordinatorNotAvailable { reason: other.to_string() },
    }
}
