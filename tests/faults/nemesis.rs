//! The nemesis: starts a window's faults on the running cluster and heals them, writing
//! both to the history. Targets that depend on the cluster (the leader of the window's
//! partition) are chosen when a window starts, with the window's own random generator.

use std::collections::BTreeMap;
use std::time::Duration;

use keel::client::Client;
use keel::net::client_codec::{ClusterMetadata, ClusterView, PartitionView};
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::disk::{self, DiskFault};
use super::history::{Op, Phase, Recorder};
use super::net::{NetState, Topology};
use super::nodes::Nodes;
use super::run::REPLICAS;
use super::schedule::{Fault, Target, Window};
use keel::server::layout::group_log_dir;

/// How long a node's answer to a metadata request may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a disk fault, how long the damaged node may take to catch up before healing goes on.
const CATCH_UP_MAX: Duration = Duration::from_secs(30);
/// At heal, how long a partition move may take to finish before it is aborted.
const MOVE_MAX: Duration = Duration::from_secs(30);
/// At heal, how long a decommissioned node may take to be removed (its replicas moved
/// off), and then, wiped and started again, to be an active voter again.
const DECOMMISSION_MAX: Duration = Duration::from_secs(45);
const REJOIN_MAX: Duration = Duration::from_secs(30);
const POLL_PAUSE: Duration = Duration::from_millis(250);

pub struct Nemesis<'a> {
    pub nodes: Nodes,
    net: Option<&'a mut Topology>,
    probe: Client,
    recorder: Recorder,
    /// The topic under test, and its partitions' Raft groups (by partition).
    pub topic: String,
    pub groups: Vec<u64>,
    /// A decommissioned node not yet removed when its window healed: later heals (and the
    /// end of the run) wipe and re-add it once it is.
    pub draining: Option<u64>,
}

/// What a started window changed, so healing can undo it.
#[derive(Default)]
pub struct Active {
    name: String,
    killed: Vec<u64>,
    paused: Vec<u64>,
    /// Paused now, killed halfway through the window.
    kill_later: Vec<u64>,
    net: bool,
    /// The nodes whose files of this partition were damaged.
    damaged: Vec<(u64, u32)>,
    /// A move started: the partition and its target replicas.
    moving: Option<(u32, Vec<u64>)>,
    /// A node the move adds to the partition.
    new_node: Option<u64>,
    /// A node being decommissioned.
    decommissioning: Option<u64>,
    detail: Vec<String>,
}

impl<'a> Nemesis<'a> {
    pub fn new(nodes: Nodes, net: Option<&'a mut Topology>, probe: Client, recorder: Recorder) -> Nemesis<'a> {
        Nemesis { nodes, net, probe, recorder, topic: String::new(), groups: Vec::new(), draining: None }
    }

    /// Faults from now on name partitions of `topic`, replicated by `groups` (by partition).
    pub fn set_topic(&mut self, topic: &str, groups: Vec<u64>) {
        self.topic = topic.into();
        self.groups = groups;
    }

    pub fn partitions(&self) -> u32 {
        self.groups.len() as u32
    }

    pub fn has_net(&self) -> bool {
        self.net.is_some()
    }

    /// The views the nodes that answer have of their replica of `partition`.
    pub async fn views(&self, partition: u32) -> BTreeMap<u64, ClusterView> {
        let mut out = BTreeMap::new();
        for id in self.nodes.ids() {
            if !self.nodes.running(id) || self.nodes.paused(id) {
                continue;
            }
            let asked = tokio::time::timeout(
                PROBE_TIMEOUT,
                self.probe.partition_status_from(&self.nodes.addr(id), &self.topic, partition),
            )
            .await;
            if let Ok(Ok(view)) = asked {
                out.insert(id, view);
            }
        }
        out
    }

    /// The node that leads `partition` in the highest term, among those that answer.
    pub async fn leader(&self, partition: u32) -> Option<u64> {
        let views = self.views(partition).await;
        views.values().filter(|v| v.role == "leader").max_by_key(|v| v.term).map(|v| v.node_id)
    }

    /// The metadata as its leader has it (any node's if the leader does not answer).
    pub async fn metadata(&self) -> Result<ClusterMetadata, String> {
        let topics = [self.topic.as_str()];
        match tokio::time::timeout(PROBE_TIMEOUT * 2, self.probe.metadata_from_leader(Some(&topics))).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no metadata within {:?}", PROBE_TIMEOUT * 2)),
        }
    }

    /// `partition` as the metadata's leader describes it, if it answers.
    pub async fn placement(&self, partition: u32) -> Option<PartitionView> {
        let metadata = self.metadata().await.ok()?;
        metadata.topic(&self.topic)?.partitions.iter().find(|p| p.partition == partition).cloned()
    }

    /// The replicas of `partition` as the metadata names them (every node if it does not answer).
    pub async fn replicas(&self, partition: u32) -> Vec<u64> {
        self.placement(partition).await.map_or_else(|| self.nodes.ids(), |p| p.replicas)
    }

    /// The metadata group as each node that answers sees it.
    pub async fn metadata_views(&self) -> BTreeMap<u64, ClusterView> {
        let mut out = BTreeMap::new();
        for id in self.nodes.ids() {
            if !self.nodes.running(id) || self.nodes.paused(id) {
                continue;
            }
            if let Ok(Ok(view)) =
                tokio::time::timeout(PROBE_TIMEOUT, self.probe.status_from(&self.nodes.addr(id))).await
            {
                out.insert(id, view);
            }
        }
        out
    }

    /// A node in the role `target` names in `partition`'s group (any node if it has no
    /// known leader), not one of `exclude`.
    async fn pick(&self, target: Target, rng: &mut SmallRng, exclude: &[u64], partition: u32) -> u64 {
        let pool = match target {
            Target::Any => self.nodes.ids(),
            // The partition's leader, a follower of it or a replica: one of its replicas.
            _ => self.replicas(partition).await,
        };
        let mut candidates: Vec<u64> = pool.into_iter().filter(|id| !exclude.contains(id)).collect();
        if candidates.is_empty() {
            candidates = self.nodes.ids().into_iter().filter(|id| !exclude.contains(id)).collect();
        }
        let leader = match target {
            Target::Any | Target::Replica => None,
            _ => self.leader(partition).await.filter(|l| candidates.contains(l)),
        };
        let random = |rng: &mut SmallRng, from: &[u64]| *from.choose(rng).expect("a node");
        match (target, leader) {
            (Target::Leader, Some(l)) => l,
            (Target::Follower, Some(l)) => {
                let followers: Vec<u64> = candidates.iter().copied().filter(|id| *id != l).collect();
                if followers.is_empty() { l } else { random(rng, &followers) }
            }
            _ => random(rng, &candidates),
        }
    }

    pub async fn start(&mut self, window: &Window) -> Active {
        let mut rng = SmallRng::seed_from_u64(window.seed);
        let mut a = Active { name: window.name(), ..Active::default() };
        let p = window.partition % self.partitions().max(1);
        let mut state = NetState::default();
        let ids = self.nodes.ids();
        // A membership change first, so that a kill or a network fault paired with it hits it
        // under way.
        let mut faults: Vec<&Fault> = window.faults.iter().collect();
        faults.sort_by_key(|f| !f.is_membership());
        for fault in faults {
            let busy: Vec<u64> = a.killed.iter().chain(&a.paused).chain(&a.kill_later).copied().collect();
            match fault {
                Fault::Move => self.start_move(&mut a, &mut rng, p).await,
                Fault::Decommission => self.start_decommission(&mut a, &mut rng).await,
                // Paired with a move: the node new to the partition, so that the move must
                // wait for it (or be aborted) and never stays in a joint configuration.
                Fault::Kill(Target::Any) if a.new_node.is_some_and(|n| !busy.contains(&n)) => {
                    let id = a.new_node.expect("checked");
                    self.nodes.kill(id);
                    a.killed.push(id);
                    a.detail.push(format!("killed n{id}, new to the partition"));
                }
                Fault::Kill(t) => {
                    let id = self.pick(*t, &mut rng, &busy, p).await;
                    self.nodes.kill(id);
                    a.killed.push(id);
                    a.detail.push(format!("killed n{id}"));
                }
                Fault::KillMajority => {
                    let mut pool = ids.clone();
                    for _ in 0..ids.len() / 2 + 1 {
                        let id = pool.swap_remove(rng.random_range(0..pool.len()));
                        self.nodes.kill(id);
                        a.killed.push(id);
                    }
                    a.detail.push(format!("killed {:?}", a.killed));
                }
                Fault::Pause(t) => {
                    let id = self.pick(*t, &mut rng, &busy, p).await;
                    self.nodes.pause(id);
                    a.paused.push(id);
                    a.detail.push(format!("paused n{id}"));
                }
                Fault::PauseThenKill(t) => {
                    let id = self.pick(*t, &mut rng, &busy, p).await;
                    self.nodes.pause(id);
                    a.kill_later.push(id);
                    a.detail.push(format!("paused n{id}, to be killed"));
                }
                Fault::IsolateLeader | Fault::Split => {
                    let target = if *fault == Fault::IsolateLeader { Target::Leader } else { Target::Any };
                    let x = self.pick(target, &mut rng, &[], p).await;
                    for &y in ids.iter().filter(|y| **y != x) {
                        state.blocked.insert((x, y));
                        state.blocked.insert((y, x));
                    }
                    a.detail.push(format!("n{x} | the rest"));
                }
                Fault::Bridge => {
                    let bridge = self.pick(Target::Any, &mut rng, &[], p).await;
                    let rest: Vec<u64> = ids.iter().copied().filter(|y| *y != bridge).collect();
                    let (left, right) = rest.split_at(rest.len() / 2);
                    for &l in left {
                        for &r in right {
                            state.blocked.insert((l, r));
                            state.blocked.insert((r, l));
                        }
                    }
                    a.detail.push(format!("{left:?} | {right:?}, bridged by n{bridge}"));
                }
                Fault::OneWay { outbound } => {
                    let x = self.pick(Target::Any, &mut rng, &[], p).await;
                    for &y in ids.iter().filter(|y| **y != x) {
                        state.blocked.insert(if *outbound { (x, y) } else { (y, x) });
                    }
                    a.detail.push(format!("n{x}: {} dropped", if *outbound { "outbound" } else { "inbound" }));
                }
                Fault::Lossy { percent } => {
                    let x = self.pick(Target::Any, &mut rng, &[], p).await;
                    for &y in ids.iter().filter(|y| **y != x) {
                        state.loss.insert((x, y), *percent);
                        state.loss.insert((y, x), *percent);
                    }
                    a.detail.push(format!("n{x}: {percent}% loss"));
                }
                Fault::Slow { percent } => {
                    let x = self.pick(Target::Any, &mut rng, &[], p).await;
                    state.slow.insert(x, *percent);
                    a.detail.push(format!("n{x}: {percent}% of its packets through a narrow queue"));
                }
                Fault::Disk(DiskFault::FlipSealedOnTwo) => {
                    // Two nodes at once (a majority of three), damaged at different entries:
                    // each must fetch its entry from the other or the third, keeping the rest.
                    let first = self.pick(Target::Replica, &mut rng, &busy, p).await;
                    let busy: Vec<u64> = busy.iter().copied().chain([first]).collect();
                    let second = self.pick(Target::Replica, &mut rng, &busy, p).await;
                    let mut avoid = None;
                    for id in [first, second] {
                        self.nodes.kill(id);
                        let dir = group_log_dir(&self.nodes.dir(id), self.groups.get(p as usize).copied().unwrap_or(0));
                        let what = match disk::flip_sealed(&dir, &mut rng, avoid) {
                            Ok((what, index)) => {
                                avoid = avoid.or(index);
                                what
                            }
                            Err(e) => self.disk_fault_failed(id, p, &e),
                        };
                        a.detail.push(format!("n{id}: {what}"));
                    }
                    for id in [first, second] {
                        if let Err(e) = self.nodes.restart(id) {
                            a.detail.push(format!("restart failed: {e}"));
                        }
                        a.damaged.push((id, p));
                    }
                }
                Fault::Disk(kind) => {
                    let id = self.pick(Target::Replica, &mut rng, &busy, p).await;
                    self.nodes.kill(id);
                    let group = self.groups.get(p as usize).copied().unwrap_or(0);
                    let what = match disk::damage(&group_log_dir(&self.nodes.dir(id), group), *kind, &mut rng) {
                        Ok(what) => what,
                        Err(e) => self.disk_fault_failed(id, p, &e),
                    };
                    if let Err(e) = self.nodes.restart(id) {
                        a.detail.push(format!("restart failed: {e}"));
                    }
                    a.damaged.push((id, p));
                    a.detail.push(format!("n{id}: {what}"));
                }
            }
        }
        if state != NetState::default() {
            a.net = true;
            match self.net.as_mut() {
                Some(net) => {
                    if let Err(e) = net.set(&state) {
                        a.detail.push(format!("network fault not applied: {e}"));
                    }
                }
                None => a.detail.push("skipped: no network namespaces".into()),
            }
        }
        let detail = a.detail.join("; ");
        println!("  {:>7.1}s  start  {}: {detail}", self.recorder.now(), a.name);
        let t = self.recorder.now();
        self.recorder.record(Op::Fault { t, phase: Phase::Start, name: a.name.clone(), detail });
        a
    }

    /// Starts moving partition `p` to another set of replicas: one of its replicas is
    /// swapped for an active node that does not host it, in a random order (the first is
    /// the preferred leader).
    async fn start_move(&mut self, a: &mut Active, rng: &mut SmallRng, p: u32) {
        let topic = self.topic.clone();
        let metadata = match self.metadata().await {
            Ok(m) => m,
            Err(e) => return a.detail.push(format!("move of {topic}/{p} not started: {e}")),
        };
        let Some(current) = metadata.topic(&topic).and_then(|t| t.partitions.iter().find(|x| x.partition == p)) else {
            return a.detail.push(format!("move not started: the metadata has no {topic}/{p}"));
        };
        if !current.target.is_empty() {
            let to = &current.target;
            return a.detail.push(format!("move not started: {topic}/{p} is already moving to {to:?}"));
        }
        let fresh: Vec<u64> = metadata
            .brokers
            .iter()
            .filter(|b| b.state == "active" && !current.replicas.contains(&b.id))
            .map(|b| b.id)
            .collect();
        let Some(&new) = fresh.choose(rng) else {
            return a.detail.push(format!("move not started: no active node outside {:?}", current.replicas));
        };
        let from = current.replicas.clone();
        let mut target = from.clone();
        target.remove(rng.random_range(0..target.len()));
        target.push(new);
        target.shuffle(rng);
        match self.probe.move_partition(&topic, p, &target).await {
            Ok(()) => a.detail.push(format!("moving {topic}/{p} from {from:?} to {target:?}")),
            // It may have started all the same: healing looks at what the metadata says.
            Err(e) => a.detail.push(format!("move of {topic}/{p} to {target:?} failed: {e}")),
        }
        a.moving = Some((p, target));
        a.new_node = Some(new);
    }

    /// At heal: waits until the move of `partition` is over (bounded); one still under way
    /// then is aborted, which a move in joint consensus refuses (it completes by itself).
    async fn finish_move(&self, partition: u32, target: &[u64]) -> String {
        let what = format!("{}/{partition}", self.topic);
        let started = tokio::time::Instant::now();
        let mut deadline = started + MOVE_MAX;
        let mut aborted = None;
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        loop {
            if let Some(now) = self.placement(partition).await
                && now.target.is_empty()
            {
                let took = started.elapsed().as_secs_f64();
                return match &aborted {
                    _ if sorted(&now.replicas) == sorted(target) => {
                        format!("{what} moved to {:?} ({took:.1}s after heal)", now.replicas)
                    }
                    Some(why) => format!("{what}: move aborted ({why}); replicas {:?}", now.replicas),
                    None => {
                        format!("{what} not moved: no move under way, replicas {:?} (not the target)", now.replicas)
                    }
                };
            }
            if tokio::time::Instant::now() > deadline {
                if aborted.is_some() {
                    return format!("{what}: move neither finished nor aborted within {:?}", MOVE_MAX * 2);
                }
                let why = match self.probe.abort_move(&self.topic, partition).await {
                    Ok(()) => format!("not finished within {MOVE_MAX:?}"),
                    Err(e) => format!("not finished within {MOVE_MAX:?}, abort refused: {e}"),
                };
                println!("  {what}: move {why}");
                aborted = Some(why);
                deadline += MOVE_MAX;
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Starts decommissioning an active node, if the others can hold every replica.
    async fn start_decommission(&mut self, a: &mut Active, rng: &mut SmallRng) {
        if let Some(id) = self.draining {
            return a.detail.push(format!("decommission not started: n{id} is still draining"));
        }
        let metadata = match self.metadata().await {
            Ok(m) => m,
            Err(e) => return a.detail.push(format!("decommission not started: {e}")),
        };
        let active: Vec<u64> = metadata.brokers.iter().filter(|b| b.state == "active").map(|b| b.id).collect();
        if active.len() <= usize::from(REPLICAS) {
            return a.detail.push(format!("decommission not started: only {active:?} are active"));
        }
        let id = *active.choose(rng).expect("more nodes than replicas");
        match self.probe.decommission(id).await {
            Ok(moves) => a.detail.push(format!("decommissioning n{id} ({moves} replicas to move)")),
            // It may have started all the same: healing looks at what the metadata says.
            Err(e) => a.detail.push(format!("decommission of n{id} failed: {e}")),
        }
        a.decommissioning = Some(id);
    }

    /// At heal: waits up to `wait` until node `id` is removed and no longer a metadata
    /// voter, then wipes its data directory and starts it again, joining the cluster under
    /// the same id and address as a voter, and waits until it is an active voter again.
    /// A node still draining stays in `draining`, for a later heal.
    async fn rejoin(&mut self, id: u64, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let state = self.broker_state(id).await;
            // The others' views (those the join guard asks): the node itself, removed, may not
            // learn the configuration that left it out.
            let views = self.metadata_views().await;
            let others = views.iter().filter(|(n, _)| **n != id).map(|(_, v)| v);
            let voter = others.clone().any(|v| v.members.iter().any(|m| m.id == id && m.voter));
            if state.as_deref() == Some("removed") && !voter && others.count() > 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = state.as_deref().unwrap_or("unknown");
                if self.draining != Some(id) {
                    self.draining = Some(id);
                    println!("  n{id} not removed within {wait:?} ({state}, metadata voter {voter})");
                }
                return format!("n{id} not removed yet ({state}, metadata voter {voter}): re-added once it is");
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
        self.draining = None;
        if let Err(e) = self.nodes.wipe_and_join(id) {
            return format!("n{id} removed, but not started again: {e}");
        }
        let started = tokio::time::Instant::now();
        loop {
            let state = self.broker_state(id).await;
            let views = self.metadata_views().await;
            let voter = views
                .values()
                .filter(|v| v.role == "leader")
                .max_by_key(|v| v.term)
                .is_some_and(|l| l.members.iter().any(|m| m.id == id && m.voter));
            if state.as_deref() == Some("active") && voter {
                let took = started.elapsed().as_secs_f64();
                return format!("n{id} removed, wiped and joined again: an active metadata voter after {took:.1}s");
            }
            if started.elapsed() > REJOIN_MAX {
                let state = state.as_deref().unwrap_or("unknown");
                return format!(
                    "n{id} removed, wiped and started again, but not an active metadata voter within {REJOIN_MAX:?} \
                     ({state}, voter {voter})"
                );
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Node `id`'s state in the metadata (`active`, `draining`, `removed`), if it answers.
    async fn broker_state(&self, id: u64) -> Option<String> {
        self.metadata().await.ok()?.broker(id).map(|b| b.state.clone())
    }

    /// A disk fault that could not be injected tests nothing: the run fails.
    fn disk_fault_failed(&self, id: u64, partition: u32, error: &str) -> String {
        let what = format!("disk fault on n{id}, {}/{partition}: {error}", self.topic);
        let t = self.recorder.now();
        self.recorder.record(Op::Problem { t, what: what.clone() });
        what
    }

    /// Halfway through a window: nodes paused to be killed are killed now.
    pub fn midway(&mut self, a: &mut Active) {
        for id in std::mem::take(&mut a.kill_later) {
            self.nodes.kill(id);
            a.killed.push(id);
        }
    }

    pub async fn heal(&mut self, mut a: Active) {
        self.midway(&mut a);
        let mut detail = Vec::new();
        if a.net
            && let Some(net) = self.net.as_mut()
            && let Err(e) = net.set(&NetState::default())
        {
            detail.push(format!("network not healed: {e}"));
        }
        for id in a.paused {
            self.nodes.resume(id);
        }
        for id in a.killed {
            if let Err(e) = self.nodes.restart(id) {
                detail.push(format!("n{id} not restarted: {e}"));
            }
        }
        for (id, partition) in std::mem::take(&mut a.damaged) {
            detail.push(self.catch_up(id, partition).await);
        }
        if let Some((partition, target)) = a.moving.take() {
            detail.push(self.finish_move(partition, &target).await);
        }
        if let Some(id) = a.decommissioning.take().or(self.draining) {
            // A node left draining by an earlier window is only looked at: a removed one is re-added.
            let wait = if self.draining == Some(id) { Duration::ZERO } else { DECOMMISSION_MAX };
            detail.push(self.rejoin(id, wait).await);
        }
        let detail = detail.join("; ");
        let sep = if detail.is_empty() { "" } else { ": " };
        println!("  {:>7.1}s  heal   {}{sep}{detail}", self.recorder.now(), a.name);
        let t = self.recorder.now();
        self.recorder.record(Op::Fault { t, phase: Phase::Heal, name: a.name, detail });
    }

    /// Waits until node `id` holds what the leader of `partition` committed (bounded).
    async fn catch_up(&self, id: u64, partition: u32) -> String {
        let deadline = tokio::time::Instant::now() + CATCH_UP_MAX;
        let target = loop {
            if let Some(l) = self.leader(partition).await
                && let Some(v) = self.views(partition).await.get(&l)
            {
                break v.commit_index;
            }
            if tokio::time::Instant::now() > deadline {
                return format!("n{id}: no leader to catch up with within {CATCH_UP_MAX:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        loop {
            let view = tokio::time::timeout(
                PROBE_TIMEOUT,
                self.probe.partition_status_from(&self.nodes.addr(id), &self.topic, partition),
            )
            .await;
            if let Ok(Ok(v)) = view
                && v.commit_index >= target
            {
                return format!("n{id} caught up to {target}");
            }
            if tokio::time::Instant::now() > deadline {
                return format!("n{id} did not reach commit index {target} within {CATCH_UP_MAX:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Heals everything: the network, paused and killed nodes; a node left draining is
    /// re-added once removed (bounded).
    pub async fn heal_all(&mut self) {
        if let Some(net) = self.net.as_mut()
            && let Err(e) = net.set(&NetState::default())
        {
            println!("could not heal the network: {e}");
        }
        for id in self.nodes.ids() {
            self.nodes.resume(id);
            if let Err(e) = self.nodes.restart(id) {
                println!("could not restart n{id}: {e}");
            }
        }
        if let Some(id) = self.draining {
            println!("  n{id} was left draining: {}", self.rejoin(id, DECOMMISSION_MAX).await);
        }
    }
}
