//! The nemesis: starts a window's faults on the running cluster and heals them, writing
//! both to the history. Targets that depend on the cluster (the leader of the window's
//! partition) are chosen when a window starts, with the window's own random generator.

use std::collections::BTreeMap;
use std::time::Duration;

use keel::client::Client;
use keel::net::client_codec::ClusterView;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::disk::{self, DiskFault};
use super::history::{Op, Phase, Recorder};
use super::net::{NetState, Topology};
use super::nodes::Nodes;
use super::schedule::{Fault, Target, Window};
use keel::server::layout::group_log_dir;

/// How long a node's answer to a metadata request may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a disk fault, how long the damaged node may take to catch up before healing goes on.
const CATCH_UP_MAX: Duration = Duration::from_secs(30);

pub struct Nemesis<'a> {
    pub nodes: Nodes,
    net: Option<&'a mut Topology>,
    probe: Client,
    recorder: Recorder,
    /// The topic under test, and its partitions' Raft groups (by partition).
    pub topic: String,
    pub groups: Vec<u64>,
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
    detail: Vec<String>,
}

impl<'a> Nemesis<'a> {
    pub fn new(nodes: Nodes, net: Option<&'a mut Topology>, probe: Client, recorder: Recorder) -> Nemesis<'a> {
        Nemesis { nodes, net, probe, recorder, topic: String::new(), groups: Vec::new() }
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

    /// A node in the role `target` names in `partition`'s group (any node if it has no
    /// known leader), not one of `exclude`.
    async fn pick(&self, target: Target, rng: &mut SmallRng, exclude: &[u64], partition: u32) -> u64 {
        let candidates: Vec<u64> = self.nodes.ids().into_iter().filter(|id| !exclude.contains(id)).collect();
        let leader = match target {
            Target::Any => None,
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
        for fault in &window.faults {
            let busy: Vec<u64> = a.killed.iter().chain(&a.paused).chain(&a.kill_later).copied().collect();
            match fault {
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
                    let first = self.pick(Target::Any, &mut rng, &busy, p).await;
                    let busy: Vec<u64> = busy.iter().copied().chain([first]).collect();
                    let second = self.pick(Target::Any, &mut rng, &busy, p).await;
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
                    let id = self.pick(Target::Any, &mut rng, &busy, p).await;
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

    /// Heals everything: the network, paused and killed nodes.
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
    }
}
