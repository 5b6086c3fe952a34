//! The fault schedule: everything one seed decides up front, printable so a failure can
//! be read and replayed. Choices that depend on the run (which node leads when a fault
//! fires, which membership change is valid then) are made at fire time from the same
//! seed, so a replay is exact.

use keel::raft::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;

/// Microseconds of virtual time.
pub type Micros = u64;

pub const MS: Micros = 1_000;

/// How the network treats messages for a while.
#[derive(Clone, Copy, Debug)]
pub struct NetworkProfile {
    /// Per mille of messages dropped.
    pub loss_permille: u32,
    /// Per mille of messages delivered twice.
    pub dup_permille: u32,
    /// Each delivery takes a uniform delay in this range; a wide range reorders messages.
    pub delay: (Micros, Micros),
}

impl NetworkProfile {
    pub const CALM: NetworkProfile = NetworkProfile { loss_permille: 0, dup_permille: 0, delay: (200, 2 * MS) };
}

#[derive(Clone, Debug)]
pub enum Partition {
    /// The nodes of `side` hear nobody else, and nobody else hears them.
    Split { side: Vec<NodeId> },
    /// Whoever leads when the fault fires is cut off from everyone.
    IsolateLeader,
    /// Messages from `from` to `to` are dropped; the other direction works.
    OneWay { from: Vec<NodeId>, to: Vec<NodeId> },
    /// `left` and `right` cannot talk, but `bridge` talks to both.
    Bridge { bridge: NodeId, left: Vec<NodeId>, right: Vec<NodeId> },
}

/// A node a fault hits: a fixed one, or whoever leads when it fires.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Node(NodeId),
    Leader,
}

#[derive(Clone, Debug)]
pub enum Fault {
    Network(NetworkProfile),
    Partition(Partition),
    Heal,
    /// Power loss: what was not durable is lost (with `torn`, the last write may be cut).
    Crash {
        target: Target,
        down: Micros,
        torn: bool,
    },
    SlowDisk {
        node: NodeId,
        latency: (Micros, Micros),
        duration: Micros,
    },
    /// The leader proposes a membership change chosen among those valid when this fires.
    MembershipChange,
    /// The leader hands leadership to a random other voter.
    Transfer,
    /// The node deletes its log prefix up to a little below its commit index (retention).
    Compact {
        node: NodeId,
        keep: u64,
    },
    /// For a while every new leader crashes soon after its election and restarts shortly
    /// after: leaders come and go with entries of their terms half replicated (Figure 8).
    Churn {
        duration: Micros,
    },
    /// Two-group seeds: the metadata group's leader commits a move of the partition group
    /// to replicas chosen when this fires, unless a move is still in progress.
    Move,
}

/// Two-group seeds: a partition group beside the metadata group, on the same nodes.
#[derive(Clone, Debug)]
pub struct PartitionGroup {
    /// Its replicas at start: as many as the metadata group has voters, never the same set.
    pub replicas: Vec<NodeId>,
}

/// One seed's run.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    /// Voters at start: 1..=voters.
    pub voters: usize,
    /// Every node, spares (which may join through membership changes) included.
    pub nodes: Vec<NodeId>,
    /// Faults happen before this; then everything heals and liveness is checked.
    pub fault_phase: Micros,
    pub faults: Vec<(Micros, Fault)>,
    /// Per node: tick period (a little clock drift) and first tick.
    pub ticks: Vec<(Micros, Micros)>,
    /// A client proposes every so often, uniformly in this range.
    pub propose_every: (Micros, Micros),
    /// The core's bounds, small so batching, windows and backpressure all get exercised.
    pub inflight_max: usize,
    pub append_entries_max: usize,
    pub append_bytes_max: usize,
    pub uncommitted_bytes_max: u64,
    /// Quiescence (`Config::quiesce_after_ticks`), with the node-level failure detector
    /// modelled: a node that crashed, or that a partition cuts off from another, is
    /// reported down to the other's replicas after a delay in `detector_delay`.
    pub quiesce_after_ticks: Option<u32>,
    pub detector_delay: (Micros, Micros),
    /// With quiescence: the liveness phase starts with the leader crashed for good (when
    /// the rest remains a majority of every configuration), so the detector must do its job.
    pub hold_leader_down: bool,
    /// A state machine beside the log (a running hash of the applied entries) that every
    /// node snapshots every so many applied entries, compacting its log up to there.
    pub snapshot_every: Option<u64>,
    pub snapshot_chunk_bytes_max: usize,
    /// A node that a `Fault::Crash` took down finds, at its restart, up to this many
    /// synced entries at the end of its log damaged (recovery cuts them; the sync mark
    /// says they were synced), unless another node is still repairing damage.
    pub damage_on_restart: Option<u64>,
    /// A node that a `Fault::Crash` took down finds, at its restart, one durable entry
    /// damaged in place, and so does another running node, at a different entry: each
    /// keeps it as a hole and fetches it from a peer (`raft/refetch.rs`). Only while no
    /// node has a hole open: two holes at the same entry may leave no intact copy.
    pub damage_two_entries: bool,
    /// Two-group seeds (`two_groups`): the partition group, moved by the metadata group
    /// (`Fault::Move`) while the faults go on.
    pub partition: Option<PartitionGroup>,
}

/// Whether a seed runs a partition group beside the metadata group: one seed in five of
/// each parity (seeds 2..=3, 12..=13, 22..=23, ...), so both voter counts get some.
pub fn two_groups(seed: u64) -> bool {
    (seed / 2) % 5 == 1
}

/// Seeds with an even number run 3 voters, odd ones 5; two spares each.
pub fn generate(seed: u64) -> Schedule {
    let mut rng = SmallRng::seed_from_u64(seed);
    let voters = if seed.is_multiple_of(2) { 3 } else { 5 };
    let nodes: Vec<NodeId> = (1..=voters as u64 + 2).collect();
    let fault_phase = rng.random_range(3_000..=7_000) * MS;
    // Each seed has its own temperament: how often faults come and which kinds dominate.
    let gap_max = [150, 400, 1_000][rng.random_range(0..3)] * MS;
    let mut weights: Vec<u32> = (0..9).map(|_| rng.random_range(0..=10)).collect();
    let mut faults = Vec::new();
    // A quarter of the seeds are leader storms: every leader crashes soon after its
    // election, the whole fault phase long, and Appends carry one entry each. That is
    // where entries of several terms pile up unevenly (the histories of Figure 8).
    let storm = rng.random_range(0..4) == 0;
    if storm {
        faults.push((0, Fault::Churn { duration: fault_phase }));
        weights = vec![weights[0], weights[1], weights[2], 0, 0, 0, 0, 0, 0];
    }
    let mut t = rng.random_range(0..gap_max);
    while t < fault_phase {
        let kind = pick_weighted(&mut rng, &weights);
        faults.push((t, fault(&mut rng, kind, &nodes)));
        t += rng.random_range(10 * MS..=gap_max);
    }
    let ticks = nodes.iter().map(|_| (rng.random_range(9_800..=10_200), rng.random_range(0..10 * MS))).collect();
    let slow_client = rng.random_range(0..4) == 0;
    // Drawn from a second generator, so that the schedules drawn above stay what they
    // were before quiescence and snapshots came.
    let mut more = SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let quiesce_after_ticks = (more.random_range(0..3) == 0).then(|| [2, 5, 10, 30][more.random_range(0..4)]);
    let detector_delay = [(20 * MS, 100 * MS), (100 * MS, 500 * MS)][more.random_range(0..2)];
    let hold_leader_down = quiesce_after_ticks.is_some() && more.random_range(0..2) == 0;
    let snapshot_every = (more.random_range(0..3) == 0).then(|| [3, 10, 40][more.random_range(0..3)]);
    let snapshot_chunk_bytes_max = [16, 64, 256, 4096][more.random_range(0..4)];
    // Not with the leader held down at healing: a damaged node waits for a leader that
    // holds what it lost, and the one held down may be the only one.
    let damage_on_restart =
        (!hold_leader_down && more.random_range(0..3) == 0).then(|| [1, 4, 20][more.random_range(0..3)]);
    // From a third generator, so that single-group seeds keep the schedules they had.
    let mut groups = SmallRng::seed_from_u64(seed ^ 0x6a09_e667_f3bc_c908);
    let partition = two_groups(seed).then(|| {
        let metadata: Vec<NodeId> = (1..=voters as u64).collect();
        let mut replicas = metadata.clone();
        while replicas == metadata {
            replicas = some_nodes(&mut groups, &nodes, voters, voters);
        }
        let moves = groups.random_range(2..=6);
        faults.extend((0..moves).map(|_| (groups.random_range(0..fault_phase), Fault::Move)));
        faults.sort_by_key(|(at, _)| *at);
        PartitionGroup { replicas }
    });
    Schedule {
        seed,
        voters,
        nodes,
        fault_phase,
        faults,
        ticks,
        propose_every: if slow_client { (20 * MS, 80 * MS) } else { (2 * MS, 20 * MS) },
        inflight_max: [1, 2, 4, 16][rng.random_range(0..4)],
        append_entries_max: if storm { 1 } else { [1, 2, 16, 256][rng.random_range(0..4)] },
        append_bytes_max: [256, 1_024, 64 * 1_024][rng.random_range(0..3)],
        uncommitted_bytes_max: [64 * 1_024, 1 << 20][rng.random_range(0..2)],
        quiesce_after_ticks,
        detector_delay,
        hold_leader_down,
        snapshot_every,
        snapshot_chunk_bytes_max,
        damage_on_restart,
        // Not with snapshots: a hole whose entry every peer compacted stays open until the
        // server's scrub cuts it (`Raft::take_unfilled`), which the simulator does not model.
        damage_two_entries: more.random_range(0..3) == 0 && snapshot_every.is_none(),
        partition,
    }
}

fn pick_weighted(rng: &mut SmallRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum::<u32>().max(1);
    let mut roll = rng.random_range(0..total);
    for (k, w) in weights.iter().enumerate() {
        if roll < *w {
            return k;
        }
        roll -= w;
    }
    0
}

/// `count_min..=count_max` distinct nodes of `nodes`, sorted.
fn some_nodes(rng: &mut SmallRng, nodes: &[NodeId], count_min: usize, count_max: usize) -> Vec<NodeId> {
    let count = rng.random_range(count_min..=count_max);
    let mut pool = nodes.to_vec();
    let mut out = Vec::new();
    for _ in 0..count.min(pool.len()) {
        out.push(pool.swap_remove(rng.random_range(0..pool.len())));
    }
    out.sort_unstable();
    out
}

fn fault(rng: &mut SmallRng, kind: usize, nodes: &[NodeId]) -> Fault {
    let node = nodes[rng.random_range(0..nodes.len())];
    match kind {
        0 => Fault::Network(NetworkProfile {
            loss_permille: [0, 10, 50, 200, 400][rng.random_range(0..5)],
            dup_permille: [0, 10, 100][rng.random_range(0..3)],
            delay: [(100, MS), (200, 5 * MS), (0, 30 * MS), (5 * MS, 60 * MS)][rng.random_range(0..4)],
        }),
        1 => Fault::Partition(match rng.random_range(0..4) {
            0 => Partition::Split { side: some_nodes(rng, nodes, 1, 2) },
            1 => Partition::IsolateLeader,
            2 => {
                let from = some_nodes(rng, nodes, 1, 2);
                let rest: Vec<NodeId> = nodes.iter().copied().filter(|n| !from.contains(n)).collect();
                let to = some_nodes(rng, &rest, 1, rest.len());
                Partition::OneWay { from, to }
            }
            _ => {
                let rest: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != node).collect();
                let left = some_nodes(rng, &rest, rest.len() / 2, rest.len() / 2);
                let right = rest.into_iter().filter(|n| !left.contains(n)).collect();
                Partition::Bridge { bridge: node, left, right }
            }
        }),
        2 => Fault::Heal,
        3 => Fault::Crash {
            target: if rng.random_range(0..3) == 0 { Target::Leader } else { Target::Node(node) },
            down: [20, 200, 1_000, 3_000][rng.random_range(0..4)] * MS,
            torn: rng.random_range(0..2) == 0,
        },
        4 => Fault::SlowDisk {
            node,
            latency: [(5 * MS, 30 * MS), (50 * MS, 200 * MS)][rng.random_range(0..2)],
            duration: rng.random_range(100..=2_000) * MS,
        },
        5 => Fault::MembershipChange,
        6 => Fault::Transfer,
        7 => Fault::Compact { node, keep: [0, 5, 50][rng.random_range(0..3)] },
        _ => Fault::Churn { duration: rng.random_range(200..=2_000) * MS },
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} voters, nodes {:?}, faults until {}ms, proposals every {}..{}ms",
            self.seed,
            self.voters,
            self.nodes,
            self.fault_phase / MS,
            self.propose_every.0 / MS,
            self.propose_every.1 / MS
        )?;
        writeln!(
            f,
            "  bounds: inflight_max {}, append_entries_max {}, append_bytes_max {}, uncommitted_bytes_max {}",
            self.inflight_max, self.append_entries_max, self.append_bytes_max, self.uncommitted_bytes_max
        )?;
        if let Some(ticks) = self.quiesce_after_ticks {
            writeln!(
                f,
                "  quiescence after {ticks} idle ticks; failure detector in {}..{}ms{}",
                self.detector_delay.0 / MS,
                self.detector_delay.1 / MS,
                if self.hold_leader_down { "; the leader stays down after healing" } else { "" }
            )?;
        }
        if let Some(every) = self.snapshot_every {
            writeln!(
                f,
                "  state machine snapshotted every {every} entries, sent in chunks of {} bytes",
                self.snapshot_chunk_bytes_max
            )?;
        }
        if let Some(entries) = self.damage_on_restart {
            writeln!(f, "  crashed nodes restart with up to {entries} synced entries at their log's end damaged")?;
        }
        if self.damage_two_entries {
            writeln!(f, "  crashed nodes restart with a damaged entry, and another node is damaged at another")?;
        }
        if let Some(partition) = &self.partition {
            writeln!(
                f,
                "  a partition group on replicas {:?} beside the metadata group, moved by it",
                partition.replicas
            )?;
        }
        for (at, fault) in &self.faults {
            writeln!(f, "  {:>9.3}ms  {fault:?}", *at as f64 / MS as f64)?;
        }
        write!(f, "  {:>9.3}ms  heal everything; liveness phase", self.fault_phase as f64 / MS as f64)
    }
}
