//! The groups a node hosts, and the two node-level tasks that serve them all: the router,
//! which hands each peer frame to its group's bounded queue, and the ticker, which drives
//! every group's clock. A full queue drops the frame (Raft sends again), so one stalled
//! group never holds up another's frames; ticks and housekeeping are dropped the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use super::group::{Event, LeaderHint};
use super::produce::{ProduceError, ProduceResult};
use super::status::GroupStatus;
use crate::broker::leaders::LeaderTable;
use crate::metrics as m;
use crate::net::node_codec::{self, NodeMessage};
use crate::net::peer::Inbound;
use crate::net::peer_codec;
use crate::raft::{MembershipChange, NodeId, WakeReason};
use crate::replica::Committed;
use crate::replica::backend::SharedLog;

/// One group hosted on this node: its task's queue and what it publishes.
pub struct GroupHandle {
    pub id: u64,
    pub events: mpsc::Sender<Event>,
    /// The log, for reads that do not need the task (fetch).
    pub log: SharedLog,
    pub committed: watch::Receiver<Committed>,
    pub leader: watch::Receiver<LeaderHint>,
    /// The group is quiet here: the ticker skips it (see `tick`).
    pub quiet: Arc<std::sync::atomic::AtomicBool>,
}

impl GroupHandle {
    pub fn is_quiet(&self) -> bool {
        self.quiet.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn leader(&self) -> LeaderHint {
        *self.leader.borrow()
    }

    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// This replica's view of the group; None once the group stopped.
    pub async fn status(&self) -> Option<GroupStatus> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::Status(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Proposes a batch (a data entry's payload) of `record_count` records; answers once
    /// it is committed.
    pub async fn propose(&self, payload: Bytes, record_count: u32, stream: u64) -> ProduceResult {
        let (reply, rx) = oneshot::channel();
        let event = Event::Propose { payload, record_count, stream, received: Instant::now(), reply };
        let stopped = || ProduceError::OutcomeUnknown("the node stopped".into());
        self.events.send(event).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Appends records as one batch through this replica, which must lead (the library's
    /// way to write to a group without a client).
    pub async fn produce(&self, records: &[crate::batch::Record]) -> ProduceResult {
        let mut builder = crate::batch::BatchBuilder::new(crate::batch::Compression::None);
        for r in records {
            builder.push(r).map_err(|e| ProduceError::Refused(e.to_string()))?;
        }
        self.propose(builder.finish(), records.len() as u32, 0).await
    }

    pub async fn change_membership(
        &self,
        changes: Vec<MembershipChange>,
        addresses: Vec<(NodeId, std::net::SocketAddr)>,
    ) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::ChangeMembership { changes, addresses, reply }).await.map_err(|_| "stopped")?;
        rx.await.map_err(|_| "stopped".to_string())?
    }

    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::TransferLeadership { to, reply }).await.map_err(|_| "stopped")?;
        rx.await.map_err(|_| "stopped".to_string())?
    }
}

/// `GroupId -> GroupHandle`, read on every peer frame, written when groups come and go.
#[derive(Default)]
pub struct Registry {
    groups: RwLock<BTreeMap<u64, Arc<GroupHandle>>>,
}

impl Registry {
    pub fn get(&self, group: u64) -> Option<Arc<GroupHandle>> {
        self.groups.read().expect("registry lock").get(&group).cloned()
    }

    pub fn insert(&self, handle: Arc<GroupHandle>) {
        self.groups.write().expect("registry lock").insert(handle.id, handle);
    }

    pub fn remove(&self, group: u64) -> Option<Arc<GroupHandle>> {
        self.groups.write().expect("registry lock").remove(&group)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.groups.read().expect("registry lock").keys().copied().collect()
    }

    /// Calls `f` on every group, under the read lock: `f` must not wait.
    fn for_each(&self, mut f: impl FnMut(&GroupHandle)) {
        for handle in self.groups.read().expect("registry lock").values() {
            f(handle);
        }
    }
}

/// Hands every frame from a peer to its group's queue. Entries are CRC-checked in the
/// decoder. A frame for a group not hosted here, or whose queue is full, is dropped and
/// counted: Raft tolerates loss, and no group ever waits for another's queue.
pub async fn route(
    mut inbound: mpsc::Receiver<Inbound>,
    registry: Arc<Registry>,
    leaders: Arc<LeaderTable>,
    entry_bytes_max: u32,
) {
    while let Some(inbound) = inbound.recv().await {
        if node_codec::is_node_frame(&inbound.frame) {
            match node_codec::decode(inbound.frame) {
                Ok(NodeMessage::Leaders(reports)) => reports.into_iter().for_each(|r| leaders.report(r)),
                Err(e) => {
                    metrics::counter!(m::FRAMES_REJECTED, "protocol" => "peer").increment(1);
                    warn!(from = inbound.from, error = %e, "malformed node frame dropped");
                }
            }
            continue;
        }
        let (group, msg) = match peer_codec::decode(inbound.frame, entry_bytes_max) {
            Ok(decoded) => decoded,
            Err(e) => {
                metrics::counter!(m::FRAMES_REJECTED, "protocol" => "peer").increment(1);
                warn!(from = inbound.from, error = %e, "malformed peer frame dropped");
                continue;
            }
        };
        let Some(handle) = registry.get(group) else {
            metrics::counter!(m::PEER_FRAMES_UNROUTED, "reason" => "unknown_group").increment(1);
            continue;
        };
        if handle.events.try_send(Event::Peer(inbound.from, msg)).is_err() {
            metrics::counter!(m::PEER_FRAMES_UNROUTED, "reason" => "queue_full").increment(1);
        }
    }
}

/// Drives every group's clock: one timer for the node. A quiet group (its core stopped its
/// timers, `Raft::is_quiesced`) is not ticked; instead the ticker is its failure detector,
/// from the node's pings (`Peers::alive`): a quiet group whose leader is on a node taken as
/// down is woken every tick until it is no longer quiet, and campaigns. A quiet leader is
/// not woken when a follower's node goes down: it still has its majority or, cut off, its
/// followers elect another leader, whose higher term deposes it the moment it hears from
/// anyone (and a produce to it wakes it, and check-quorum steps it down). Waking every quiet
/// leader at each node failure would wake a thousand groups at once for nothing.
/// Housekeeping reaches every group, quiet or not.
///
/// The tick stretches with the groups the node hosts (`tick_period`): every Raft timeout is
/// a number of ticks, so a node with many groups times elections and heartbeats more
/// loosely, in proportion.
pub async fn tick(registry: Arc<Registry>, period: Duration, housekeeping: Duration, peers: crate::net::peer::Peers) {
    let me = peers.id();
    let mut last_housekeeping = tokio::time::Instant::now();
    let mut next = period;
    loop {
        metrics::gauge!(m::RAFT_TICK).set(next.as_secs_f64());
        tokio::time::sleep(next).await;
        let now = tokio::time::Instant::now();
        let chores = now.duration_since(last_housekeeping) >= housekeeping;
        if chores {
            last_housekeeping = now;
        }
        // Asked once a tick, not once a group.
        let down: Vec<NodeId> = peers.ids().into_iter().filter(|&n| n != me && !peers.alive(n)).collect();
        let mut hosted = 0;
        registry.for_each(|handle| {
            hosted += 1;
            if !handle.is_quiet() {
                let _ = handle.events.try_send(Event::Tick);
            } else if let LeaderHint { me: false, leader: Some(leader) } = handle.leader()
                && down.contains(&leader)
            {
                let _ = handle.events.try_send(Event::Wake(WakeReason::NodeDown(leader)));
            }
            if chores {
                let _ = handle.events.try_send(Event::Housekeeping);
            }
        });
        next = tick_period(period, hosted);
    }
}

/// Groups a node hosts at the base tick; each further this many stretch the tick by one
/// base period, up to `TICK_STRETCH_MAX` periods. A thousand groups electing at once at the
/// base tick (10 ms: elections after 150–300 ms) kept a 2-core machine so busy that
/// heartbeats came late, leaders lost their quorums and terms climbed for minutes. The
/// stretch follows the groups hosted, not those active, because the replicas of one group
/// must keep the same time: placement spreads replicas evenly, so nodes' counts differ by
/// less than a step, and neighbouring steps differ by at most 2× — a leader's heartbeats
/// (5 ticks) still come well within a follower's shortest election timeout (15 ticks).
pub const GROUPS_PER_TICK_STRETCH: usize = 200;
pub const TICK_STRETCH_MAX: u32 = 5;

/// The tick for a node hosting `hosted` groups.
pub fn tick_period(base: Duration, hosted: usize) -> Duration {
    let stretch = (hosted / GROUPS_PER_TICK_STRETCH).clamp(1, TICK_STRETCH_MAX as usize);
    base * stretch as u32
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::raft::Message;

    /// A hosted group whose queue holds `capacity` events; the receiver stands for its task.
    fn group(id: u64, dir: &std::path::Path, capacity: usize) -> (Arc<GroupHandle>, mpsc::Receiver<Event>) {
        let dir = dir.join(id.to_string());
        let (log, _) = segments::Log::open(&dir, segments::Config::default()).expect("log");
        let (events, rx) = mpsc::channel(capacity);
        let handle = GroupHandle {
            id,
            events,
            log: SharedLog::new(log),
            committed: watch::channel(Committed::default()).1,
            leader: watch::channel(LeaderHint::default()).1,
            quiet: Arc::default(),
        };
        (Arc::new(handle), rx)
    }

    fn heartbeat(group: u64, term: u64) -> Inbound {
        let frames = peer_codec::encode(group, &Message::Heartbeat { term, commit: 0 });
        // As a link hands frames on: whole, without the length prefix.
        Inbound { from: 2, frame: Bytes::from(frames.concat()).slice(4..) }
    }

    #[test]
    fn the_tick_stretches_with_the_groups_hosted_up_to_its_bound() {
        let base = Duration::from_millis(10);
        assert_eq!(tick_period(base, 0), base);
        assert_eq!(tick_period(base, GROUPS_PER_TICK_STRETCH * 2 - 1), base);
        assert_eq!(tick_period(base, GROUPS_PER_TICK_STRETCH * 2), base * 2);
        assert_eq!(tick_period(base, 1000), Duration::from_millis(50));
        assert_eq!(tick_period(base, 1_000_000), base * TICK_STRETCH_MAX);
    }

    /// Issue 12: one group's queue full (its task stalled) costs the others nothing; what
    /// does not fit is dropped and counted in `keel_peer_frames_unrouted_total`.
    #[test]
    fn a_full_queue_drops_and_counts_its_own_frames_and_delays_no_other_group() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(Registry::default());
        let (stalled, mut stalled_rx) = group(7, dir.path(), 2);
        let (busy, mut busy_rx) = group(8, dir.path(), 2);
        registry.insert(stalled);
        registry.insert(busy);
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let (tx, rx) = mpsc::channel(64);
                let router = tokio::spawn(route(rx, registry, Arc::default(), 1 << 20));
                // Group 7's task never reads: 2 frames fit its queue, 8 more must be dropped.
                // Group 8 reads each frame as it comes, between group 7's.
                for term in 1..=10 {
                    tx.send(heartbeat(7, term)).await.expect("router");
                    tx.send(heartbeat(8, term)).await.expect("router");
                    let got = tokio::time::timeout(Duration::from_secs(5), busy_rx.recv()).await;
                    match got.expect("group 8 waited behind group 7's full queue") {
                        Some(Event::Peer(2, Message::Heartbeat { term: t, .. })) => assert_eq!(t, term),
                        _ => panic!("group 8 got something else than its heartbeat {term}"),
                    }
                }
                drop(tx);
                router.await.expect("router ends with its input");
            });
        });
        let mut kept = 0;
        while let Ok(event) = stalled_rx.try_recv() {
            assert!(
                matches!(event, Event::Peer(2, Message::Heartbeat { term: 1 | 2, .. })),
                "group 7 kept the first two"
            );
            kept += 1;
        }
        assert_eq!(kept, 2);
        let dropped = snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
            let k = key.key();
            let full = k.labels().any(|l| l.key() == "reason" && l.value() == "queue_full");
            (k.name() == m::PEER_FRAMES_UNROUTED && full).then_some(value)
        });
        assert_eq!(dropped, Some(DebugValue::Counter(8)), "the 8 frames group 7 had no room for are counted");
    }
}
