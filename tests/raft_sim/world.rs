//! The simulated world: nodes driven by the testkit glue, a network that loses,
//! duplicates, delays and reorders, disks that are sometimes slow, and virtual time that
//! jumps from one event to the next. Every random choice comes from the seed.
//!
//! Each node hosts one replica of every group: the metadata group, and on two-group seeds
//! a partition group (`moves.rs`). Messages carry their group; a crash, a partition, a
//! slow disk or a clock hits the node, so every group it hosts at once, as in keel.

use super::check::{Checker, Violation};
use super::moves::{self, Command, MetaState, Step};
use super::schedule::{Fault, MS, Micros, NetworkProfile, Partition, Schedule, Target};
use super::state_machine::StateMachine;
use keel::broker::moves::MOVE_ROUND_PERIOD;
use keel::raft::{Config, LogStore, Membership, MembershipChange, Message, NodeId, Ready, Role, WakeReason, kind};
use keel::replica::Repair;
use keel::replica::testkit::Node;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// After healing, a leader must commit a new proposal and every member catch up within this.
pub const LIVENESS_DEADLINE: Micros = 10_000 * MS;
/// Events in one run at most, so a livelock ends the run instead of hanging it.
const EVENTS_MAX: u64 = 5_000_000;
/// Events waiting at once at most, so a storm of messages ends the run instead of memory.
const EVENTS_QUEUED_MAX: usize = 200_000;
/// Lines of trace kept for the failure report.
const TRACE_LINES_MAX: usize = 400;
/// With `Schedule::hold_leader_down`, the quiet time between healing and the leader's crash.
const HOLD_DOWN_AFTER_HEALING: Micros = 1_000 * MS;
/// Entries a log keeps after its snapshot when compacted in the liveness phase.
const COMPACTION_KEEP_AFTER_HEALING: u64 = 100;
/// Events between two checks of durable majorities besides those after crashes and cuts.
const DURABLE_CHECK_EVERY: u64 = 1_000;

/// A Raft group's index: every seed runs the metadata group, two-group seeds a partition
/// group beside it.
pub type Group = usize;
pub const METADATA: Group = 0;
pub const PARTITION: Group = 1;

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        epoch: u64,
    },
    Deliver {
        group: Group,
        from: NodeId,
        to: NodeId,
        msg: Message,
    },
    DiskDone {
        group: Group,
        node: NodeId,
        epoch: u64,
    },
    Fault(usize),
    Restart(NodeId),
    /// Churn: crash this leader if it still leads in the same life.
    CrashLeader {
        group: Group,
        node: NodeId,
        epoch: u64,
    },
    DiskRecovered {
        node: NodeId,
        epoch: u64,
    },
    Propose,
    Heal,
    /// The liveness phase of `Schedule::hold_leader_down`.
    HoldLeaderDown,
    Marker,
    /// `observer`'s failure detector reports `target` down: if it crashed (`certain`), or
    /// is down or cut off from the observer when the detector's delay has passed.
    Detect {
        observer: NodeId,
        target: NodeId,
        certain: bool,
    },
    /// Two-group seeds: every node that leads the partition group takes the next step of
    /// the move in progress (`broker::moves::MOVE_ROUND_PERIOD`).
    MoveRound,
}

/// One group's replica on a node.
struct SimReplica {
    node: Node,
    /// The state machine beside the log (seeds that snapshot); lost in a crash, rebuilt
    /// from the snapshot and the log on restart.
    sm: StateMachine,
    /// The commit index and the index of the configuration in force after the last step.
    seen: (u64, u64),
}

/// What the simulator knows of one group.
struct SimGroup {
    checker: Checker,
    /// Liveness markers proposed after healing: (index, term).
    markers: Vec<(u64, u64)>,
}

struct SimNode {
    /// One replica per group, indexed by `Group`: a node outside a group's configuration
    /// holds an empty one, as a keel node starts an empty replica of a group it joins.
    replicas: Vec<SimReplica>,
    /// Bumped by every crash, so the events of an earlier life are ignored.
    epoch: u64,
    tick_period: Micros,
    disk_latency: (Micros, Micros),
    disk_epoch: u64,
    /// The disk, shared by the node's groups, completes writes in order: the next one
    /// finishes no earlier than this.
    disk_free_at: Micros,
    /// A `Fault::Crash` took it down in a seed with `Schedule::damage_on_restart`.
    damage_at_restart: bool,
}

pub struct World {
    pub schedule: Schedule,
    now: Micros,
    seq: u64,
    events: BTreeMap<(Micros, u64), Event>,
    nodes: BTreeMap<NodeId, SimNode>,
    rng: SmallRng,
    network: NetworkProfile,
    blocked: BTreeSet<(NodeId, NodeId)>,
    groups: Vec<SimGroup>,
    /// Two-group seeds: the partition's entry in the committed metadata.
    meta: Option<MetaState>,
    /// Two-group seeds: why the last move round could not go on, for a liveness failure.
    move_stuck: Option<String>,
    pub trace: VecDeque<String>,
    pub trace_live: bool,
    healed_at: Option<Micros>,
    /// While `now` is below this, new leaders are crashed soon after their election.
    churn_until: Micros,
    /// The leader crashed for good at healing (`Schedule::hold_leader_down`).
    held_down: Option<NodeId>,
    pub stats: Stats,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub events: u64,
    pub messages: u64,
    pub crashes: u64,
    pub elections: u64,
    pub committed: u64,
    pub virtual_ms: u64,
    pub liveness_ms: u64,
    pub membership_changes: u64,
    pub transfers: u64,
    pub truncations: u64,
    pub resets: u64,
    pub compactions: u64,
    pub quiescences: u64,
    pub detector_wakes: u64,
    /// Leaders of a quiet group that the liveness phase crashed for good.
    pub quiet_leaders_lost: u64,
    pub snapshots: u64,
    pub installs: u64,
    /// Restarts that found synced entries damaged.
    pub damaged: u64,
    /// Entries damaged in place, kept as holes and fetched again.
    pub holes: u64,
    /// Seeds that ran a partition group beside the metadata group.
    pub two_group_seeds: u64,
    /// Partition moves committed in the metadata group, and those finished there.
    pub moves_started: u64,
    pub moves_finished: u64,
    /// Configuration changes the move rounds proposed in the partition group.
    pub move_changes: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.events += other.events;
        self.messages += other.messages;
        self.crashes += other.crashes;
        self.elections += other.elections;
        self.committed += other.committed;
        self.virtual_ms += other.virtual_ms;
        self.liveness_ms = self.liveness_ms.max(other.liveness_ms);
        self.membership_changes += other.membership_changes;
        self.transfers += other.transfers;
        self.truncations += other.truncations;
        self.resets += other.resets;
        self.compactions += other.compactions;
        self.quiescences += other.quiescences;
        self.detector_wakes += other.detector_wakes;
        self.quiet_leaders_lost += other.quiet_leaders_lost;
        self.snapshots += other.snapshots;
        self.installs += other.installs;
        self.damaged += other.damaged;
        self.holes += other.holes;
        self.two_group_seeds += other.two_group_seeds;
        self.moves_started += other.moves_started;
        self.moves_finished += other.moves_finished;
        self.move_changes += other.move_changes;
    }
}

impl World {
    pub fn new(schedule: Schedule) -> World {
        let mut initial = vec![Membership::new(1..=schedule.voters as u64)];
        initial.extend(schedule.partition.iter().map(|p| Membership::new(p.replicas.iter().copied())));
        let mut nodes = BTreeMap::new();
        for (k, &id) in schedule.nodes.iter().enumerate() {
            let replicas = initial
                .iter()
                .enumerate()
                .map(|(group, initial)| {
                    // The metadata group's election seeds are those single-group seeds always had.
                    let election_seed =
                        schedule.seed.wrapping_mul(31).wrapping_add(id).wrapping_add(1_000 * group as u64);
                    let mut config = Config::new(id, election_seed);
                    config.inflight_max = schedule.inflight_max;
                    config.append_entries_max = schedule.append_entries_max;
                    config.append_bytes_max = schedule.append_bytes_max;
                    config.uncommitted_bytes_max = schedule.uncommitted_bytes_max;
                    config.quiesce_after_ticks = schedule.quiesce_after_ticks;
                    config.snapshot_chunk_bytes_max = schedule.snapshot_chunk_bytes_max;
                    let membership = if initial.contains(id) { initial.clone() } else { Membership::default() };
                    SimReplica { node: Node::new(config, membership), sm: StateMachine::default(), seen: (0, 0) }
                })
                .collect();
            let sim = SimNode {
                replicas,
                epoch: 0,
                tick_period: schedule.ticks[k].0,
                disk_latency: (100, 2 * MS),
                disk_epoch: 0,
                disk_free_at: 0,
                damage_at_restart: false,
            };
            nodes.insert(id, sim);
        }
        let meta = schedule.partition.as_ref().map(|p| MetaState::new(p.replicas.iter().copied().collect()));
        let mut world = World {
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            rng: SmallRng::seed_from_u64(schedule.seed ^ 0x5eed_5eed_5eed_5eed),
            network: NetworkProfile::CALM,
            blocked: BTreeSet::new(),
            groups: initial.into_iter().map(|m| SimGroup { checker: Checker::new(m), markers: Vec::new() }).collect(),
            meta,
            move_stuck: None,
            trace: VecDeque::new(),
            trace_live: false,
            healed_at: None,
            churn_until: 0,
            held_down: None,
            stats: Stats::default(),
            schedule,
        };
        for (k, &id) in world.schedule.nodes.clone().iter().enumerate() {
            world.at(world.schedule.ticks[k].1, Event::Tick { node: id, epoch: 0 });
        }
        for k in 0..world.schedule.faults.len() {
            world.at(world.schedule.faults[k].0, Event::Fault(k));
        }
        world.at(0, Event::Propose);
        world.at(world.schedule.fault_phase, Event::Heal);
        if world.meta.is_some() {
            world.stats.two_group_seeds = 1;
            world.at(MOVE_ROUND_PERIOD.as_micros() as Micros, Event::MoveRound);
        }
        world
    }

    /// The groups this seed runs.
    fn group_ids(&self) -> std::ops::Range<Group> {
        0..self.groups.len()
    }

    /// `id`'s replica of `group`.
    fn replica(&self, group: Group, id: NodeId) -> &Node {
        &self.nodes[&id].replicas[group].node
    }

    fn replica_mut(&mut self, group: Group, id: NodeId) -> &mut Node {
        &mut self.nodes.get_mut(&id).expect("node").replicas[group].node
    }

    /// Every node's replica of `group`.
    fn group_nodes(&self, group: Group) -> impl Iterator<Item = &Node> + Clone {
        self.nodes.values().map(move |s| &s.replicas[group].node)
    }

    /// A group a fault aims at: the metadata group, or on two-group seeds either.
    fn pick_group(&mut self) -> Group {
        if self.groups.len() == 1 { METADATA } else { self.rng.random_range(0..self.groups.len()) }
    }

    fn durable_majority(&self, group: Group) -> Result<(), Violation> {
        self.groups[group].checker.durable_majority(self.group_nodes(group)).map_err(|v| in_group(group, v))
    }

    fn at(&mut self, time: Micros, event: Event) {
        self.seq += 1;
        self.events.insert((time, self.seq), event);
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        let line = format!("{:>10.3}ms {}", self.now as f64 / MS as f64, line());
        if self.trace_live {
            eprintln!("{line}");
        }
        if self.trace.len() == TRACE_LINES_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// Runs the fault phase, heals, and runs until the liveness condition holds.
    pub fn run(&mut self) -> Result<(), Violation> {
        while let Some(((time, _), event)) = self.events.pop_first() {
            self.now = time;
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                return Err(format!("more than {EVENTS_MAX} events: livelock?"));
            }
            if self.events.len() > EVENTS_QUEUED_MAX {
                return Err(format!("more than {EVENTS_QUEUED_MAX} events waiting: messages multiply"));
            }
            self.handle(event)?;
            if self.stats.events.is_multiple_of(DURABLE_CHECK_EVERY) {
                for group in self.group_ids() {
                    self.durable_majority(group)?;
                }
            }
            self.learn_metadata();
            if let Some(healed_at) = self.healed_at {
                if self.converged() {
                    self.stats.liveness_ms = (self.now - healed_at) / MS;
                    break;
                }
                if self.now > healed_at + LIVENESS_DEADLINE {
                    let state = self.describe();
                    let moving = self.meta.as_ref().map_or(String::new(), |m| {
                        let stuck = self.move_stuck.as_deref().unwrap_or("-");
                        format!(" (partition move: replicas {:?}, target {:?}, stuck: {stuck})", m.replicas, m.target)
                    });
                    return Err(format!(
                        "liveness: no convergence {}ms after healing{moving}\n{state}",
                        LIVENESS_DEADLINE / MS
                    ));
                }
            }
        }
        self.stats.virtual_ms = self.now / MS;
        self.stats.committed = self.groups.iter().map(|g| g.checker.committed.len() as u64).sum();
        if let Some(meta) = &self.meta {
            (self.stats.moves_started, self.stats.moves_finished) = (meta.started, meta.finished);
        }
        for group in self.group_ids() {
            self.durable_majority(group)?;
            self.groups[group].checker.final_log_matching(self.group_nodes(group)).map_err(|v| in_group(group, v))?;
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick { node, epoch } => {
                let sim = &mut self.nodes.get_mut(&node).expect("node");
                if sim.epoch != epoch || !sim.replicas[METADATA].node.is_up() {
                    return Ok(());
                }
                let next = self.now + sim.tick_period;
                for replica in &mut sim.replicas {
                    // The node's ticker skips quiet groups.
                    if !replica.node.is_quiesced() {
                        replica.node.tick();
                    }
                }
                self.at(next, Event::Tick { node, epoch });
                for group in self.group_ids() {
                    self.flush(group, node)?;
                }
                Ok(())
            }
            Event::Deliver { group, from, to, msg } => {
                if self.blocked.contains(&(from, to)) || !self.replica(group, to).is_up() {
                    return Ok(());
                }
                self.stats.messages += 1;
                if self.trace_live || !matches!(msg, Message::Heartbeat { .. } | Message::HeartbeatResponse { .. }) {
                    let line = describe_message(group, from, to, &msg);
                    self.note(|| line);
                }
                self.replica_mut(group, to).step(from, msg);
                self.flush(group, to)
            }
            Event::DiskDone { group, node, epoch } => {
                if self.nodes[&node].epoch != epoch {
                    return Ok(());
                }
                let replica = self.replica_mut(group, node);
                let cuts = replica.store().durable_cuts();
                replica.complete_write();
                let cut = replica.store().durable_cuts() != cuts;
                self.flush(group, node)?;
                if cut {
                    self.durable_majority(group)?;
                }
                Ok(())
            }
            Event::Fault(k) => self.fault(k),
            Event::Restart(node) => self.restart(node),
            Event::CrashLeader { group, node, epoch } => {
                let leads = self.replica(group, node).try_raft().is_some_and(|r| r.role() == Role::Leader);
                if self.nodes[&node].epoch == epoch && leads && self.healed_at.is_none() {
                    let down = self.rng.random_range(30..=300) * MS;
                    self.at(self.now + down, Event::Restart(node));
                    self.crash(node, true)?;
                }
                Ok(())
            }
            Event::DiskRecovered { node, epoch } => {
                let sim = self.nodes.get_mut(&node).expect("node");
                if sim.disk_epoch == epoch {
                    sim.disk_latency = (100, 2 * MS);
                }
                Ok(())
            }
            Event::Propose => {
                let (lo, hi) = self.schedule.propose_every;
                let next = self.now + self.rng.random_range(lo..=hi);
                self.at(next, Event::Propose);
                // On two-group seeds the client's batches go to either group, so that the
                // load (and the simulator's time) stays that of one group.
                let group = self.pick_group();
                self.propose_somewhere(group);
                Ok(())
            }
            Event::Heal => self.heal(),
            Event::HoldLeaderDown => self.hold_leader_down(),
            Event::Detect { observer, target, certain } => self.detect(observer, target, certain),
            Event::Marker => {
                self.at(self.now + 100 * MS, Event::Marker);
                for group in self.group_ids() {
                    if let Some(leader) = self.leader(group) {
                        if let Ok(p) = self.replica_mut(group, leader).propose(b"marker", 1) {
                            self.groups[group].markers.push((p.index, p.term));
                            self.note(|| {
                                format!("g{group} marker proposed at {leader}: index {} term {}", p.index, p.term)
                            });
                        }
                        self.flush(group, leader)?;
                    }
                }
                Ok(())
            }
            Event::MoveRound => {
                self.at(self.now + MOVE_ROUND_PERIOD.as_micros() as Micros, Event::MoveRound);
                self.move_round()
            }
        }
    }

    /// Runs a node's glue until its core is quiet, checking every Ready and sending its
    /// messages through the network.
    fn flush(&mut self, group: Group, id: NodeId) -> Result<(), Violation> {
        loop {
            let sim = self.nodes.get_mut(&id).expect("node");
            let node = &mut sim.replicas[group].node;
            let writes_before = node.pending_writes();
            let commit_before = node.try_raft().map(|r| r.commit());
            let Some(ready) = node.advance() else { break };
            if node.try_raft().map(|r| r.commit()) < commit_before {
                // A hole no peer filled was cut (`Node::advance`): a fresh core, as at a restart.
                self.note(|| format!("g{group} node {id}: CUT at an unfilled hole"));
                self.groups[group]
                    .checker
                    .on_restart(&self.nodes[&id].replicas[group].node)
                    .map_err(|v| in_group(group, v))?;
            }
            let sim = self.nodes.get_mut(&id).expect("node");
            if sim.replicas[group].node.pending_writes() > writes_before {
                let latency = self.rng.random_range(sim.disk_latency.0..=sim.disk_latency.1);
                let done = (self.now + latency).max(sim.disk_free_at);
                sim.disk_free_at = done;
                let epoch = sim.epoch;
                self.at(done, Event::DiskDone { group, node: id, epoch });
            }
            self.groups[group]
                .checker
                .on_ready(&self.nodes[&id].replicas[group].node, &ready)
                .map_err(|v| in_group(group, v))?;
            self.run_state_machine(group, id, &ready)?;
            if ready.quiesced == Some(true) {
                self.stats.quiescences += 1;
                self.note(|| format!("g{group} node {id}: quiet"));
            }
            if let Some(soft) = ready.soft_state {
                if soft.role == Role::Leader {
                    self.stats.elections += 1;
                    if self.now < self.churn_until {
                        let epoch = self.nodes[&id].epoch;
                        // Often before its first Append lands, so its entries stay its own.
                        let within = if self.rng.random_range(0..2) == 0 { 2 * MS } else { 20 * MS };
                        let when = self.now + self.rng.random_range(0..=within);
                        self.at(when, Event::CrashLeader { group, node: id, epoch });
                    }
                }
                self.note(|| {
                    format!("g{group} node {id}: {:?} term {} leader {:?}", soft.role, soft.term, soft.leader)
                });
            }
            if let Some(after) = ready.truncate_after {
                self.stats.truncations += 1;
                self.note(|| format!("g{group} node {id}: truncate after {after}"));
            }
            if let Some((start, _)) = ready.reset {
                self.stats.resets += 1;
                self.note(|| format!("g{group} node {id}: reset to {start:?}"));
            }
            let leads = self.replica(group, id).raft().role() == Role::Leader;
            if leads && ready.commit.is_some() && self.now < self.churn_until && self.rng.random_range(0..2) == 0 {
                // A crash point: the leader dies right after its commit index moved,
                // before the messages of that step leave.
                let down = self.rng.random_range(30..=300) * MS;
                self.at(self.now + down, Event::Restart(id));
                return self.crash(id, true);
            }
            for (to, msg) in ready.messages {
                self.send(group, id, to, msg);
            }
        }
        self.commit_quorum(group, id)?;
        self.groups[group].checker.after_event(&self.nodes[&id].replicas[group].node).map_err(|v| in_group(group, v))
    }

    /// After a step: if `id` leads and its commit moved, the index is durable on a quorum
    /// of the configuration it had before the step (`Checker::commit_quorum`).
    fn commit_quorum(&mut self, group: Group, id: NodeId) -> Result<(), Violation> {
        let replica = &self.nodes[&id].replicas[group];
        let Some(raft) = replica.node.try_raft() else { return Ok(()) };
        let (commit, config_index) = replica.seen;
        let now = (raft.commit(), raft.membership_index());
        if raft.role() == Role::Leader && now.0 > commit {
            self.groups[group]
                .checker
                .commit_quorum(&replica.node, config_index, self.group_nodes(group))
                .map_err(|v| in_group(group, v))?;
        }
        self.nodes.get_mut(&id).expect("node").replicas[group].seen = now;
        Ok(())
    }

    fn send(&mut self, group: Group, from: NodeId, to: NodeId, msg: Message) {
        if self.blocked.contains(&(from, to)) || self.rng.random_range(0..1000) < self.network.loss_permille {
            return;
        }
        let (lo, hi) = self.network.delay;
        if self.rng.random_range(0..1000) < self.network.dup_permille {
            let again = self.now + self.rng.random_range(lo..=hi);
            self.at(again, Event::Deliver { group, from, to, msg: msg.clone() });
        }
        let when = self.now + self.rng.random_range(lo..=hi);
        self.at(when, Event::Deliver { group, from, to, msg });
    }

    /// The node that leads `group` in the highest term, among those running.
    fn leader(&self, group: Group) -> Option<NodeId> {
        let leaders = self.group_nodes(group).filter_map(Node::try_raft).filter(|r| r.role() == Role::Leader);
        leaders.max_by_key(|r| r.term()).map(|r| r.id())
    }

    /// A client sends a batch to whoever it believes leads (sometimes a stale leader).
    fn propose_somewhere(&mut self, group: Group) {
        let leaders: Vec<NodeId> = self
            .group_nodes(group)
            .filter(|n| n.try_raft().is_some_and(|r| r.role() == Role::Leader))
            .map(Node::id)
            .collect();
        if leaders.is_empty() {
            return;
        }
        let id = leaders[self.rng.random_range(0..leaders.len())];
        let len = self.rng.random_range(0..64);
        let payload: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
        let records = self.rng.random_range(1..=4);
        let _ = self.replica_mut(group, id).propose(&payload, records);
        let _ = self.flush(group, id);
    }

    fn fault(&mut self, k: usize) -> Result<(), Violation> {
        let fault = self.schedule.faults[k].1.clone();
        self.note(|| format!("FAULT {fault:?}"));
        match fault {
            Fault::Network(profile) => {
                self.network = profile;
                if profile.loss_permille >= 200 {
                    // Pings lost too: some node's detector is wrong about another.
                    let nodes = &self.schedule.nodes;
                    let observer = nodes[self.rng.random_range(0..nodes.len())];
                    let target = nodes[self.rng.random_range(0..nodes.len())];
                    if observer != target {
                        self.detect_later(observer, target, true);
                    }
                }
            }
            Fault::Partition(partition) => self.partition(partition),
            Fault::Heal => self.blocked.clear(),
            Fault::Crash { target, down, torn } => {
                let node = match target {
                    Target::Node(node) => Some(node),
                    Target::Leader => {
                        let group = self.pick_group();
                        self.leader(group)
                    }
                };
                if let Some(node) = node {
                    self.at(self.now + down, Event::Restart(node));
                    self.crash(node, torn)?;
                    let damage = self.schedule.damage_on_restart.is_some();
                    self.nodes.get_mut(&node).expect("node").damage_at_restart = damage;
                }
            }
            Fault::SlowDisk { node, latency, duration } => {
                let sim = self.nodes.get_mut(&node).expect("node");
                sim.disk_latency = latency;
                sim.disk_epoch += 1;
                let epoch = sim.disk_epoch;
                self.at(self.now + duration, Event::DiskRecovered { node, epoch });
            }
            Fault::MembershipChange => self.change_membership()?,
            Fault::Transfer => {
                let group = self.pick_group();
                if let Some(leader) = self.leader(group) {
                    let voters: Vec<NodeId> =
                        self.replica(group, leader).raft().membership().voters.iter().copied().collect();
                    let to = voters[self.rng.random_range(0..voters.len())];
                    let result = self.replica_mut(group, leader).transfer_leadership(to);
                    self.stats.transfers += u64::from(result.is_ok() && to != leader);
                    self.note(|| format!("g{group} transfer from {leader} to {to}: {result:?}"));
                    self.flush(group, leader)?;
                }
            }
            Fault::Churn { duration } => self.churn_until = self.now + duration,
            Fault::Compact { node, keep } => {
                let snapshots = self.schedule.snapshot_every.is_some();
                for group in self.group_ids() {
                    let replica = self.replica_mut(group, node);
                    if replica.is_up() {
                        let mut through = replica.reported_commit().saturating_sub(keep);
                        if snapshots {
                            // A state machine's log goes no further than its snapshot.
                            through = through.min(replica.snapshot().map_or(0, |s| s.meta.index()));
                        }
                        if through >= replica.store().first_index() {
                            replica.store_mut().compact(through);
                            self.stats.compactions += 1;
                            self.note(|| format!("g{group} node {node}: compacted through {through}"));
                        }
                    }
                }
            }
            Fault::Move => self.propose_move()?,
        }
        Ok(())
    }

    fn partition(&mut self, partition: Partition) {
        self.blocked.clear();
        let all = self.schedule.nodes.clone();
        let group = if matches!(partition, Partition::IsolateLeader) { self.pick_group() } else { METADATA };
        let leader = self.leader(group);
        let mut cut_between = |a: &[NodeId], b: &[NodeId], both: bool| {
            for &x in a {
                for &y in b.iter().filter(|y| **y != x) {
                    self.blocked.insert((x, y));
                    if both {
                        self.blocked.insert((y, x));
                    }
                }
            }
        };
        match partition {
            Partition::Split { side } => cut_between(&side, &all, true),
            Partition::IsolateLeader => {
                if let Some(leader) = leader {
                    cut_between(&[leader], &all, true);
                }
            }
            Partition::OneWay { from, to } => cut_between(&from, &to, false),
            Partition::Bridge { bridge, left, right } => {
                assert!(!left.contains(&bridge) && !right.contains(&bridge), "the bridge sees both sides");
                cut_between(&left, &right, true);
            }
        }
        // Pings between nodes cut off either way fail: their detectors notice.
        let cut: BTreeSet<(NodeId, NodeId)> = self.blocked.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
        for (observer, target) in cut {
            self.detect_later(observer, target, false);
        }
    }

    /// With quiescence, `observer`'s failure detector looks at `target` after its delay.
    fn detect_later(&mut self, observer: NodeId, target: NodeId, certain: bool) {
        if self.schedule.quiesce_after_ticks.is_none() {
            return;
        }
        let (lo, hi) = self.schedule.detector_delay;
        let when = self.now + self.rng.random_range(lo..=hi);
        self.at(when, Event::Detect { observer, target, certain });
    }

    /// `observer`'s detector reports `target` down, if it still cannot reach it: the
    /// observer's replica is woken as the node would wake every group it hosts.
    fn detect(&mut self, observer: NodeId, target: NodeId, certain: bool) -> Result<(), Violation> {
        let blocked = self.blocked.contains(&(observer, target)) || self.blocked.contains(&(target, observer));
        let down = !self.replica(METADATA, target).is_up();
        if !(certain || blocked || down) || !self.replica(METADATA, observer).is_up() {
            return Ok(());
        }
        self.stats.detector_wakes += 1;
        self.note(|| format!("node {observer}: detector says {target} is down"));
        for group in self.group_ids() {
            self.replica_mut(group, observer).wake(WakeReason::NodeDown(target));
            self.flush(group, observer)?;
        }
        Ok(())
    }

    /// Seeds with a state machine: installs a snapshot the Ready brings, applies what is
    /// committed, checks every state against every other node's at the same index, and
    /// snapshots (and compacts) every `snapshot_every` entries.
    fn run_state_machine(&mut self, group: Group, id: NodeId, ready: &Ready) -> Result<(), Violation> {
        let Some(every) = self.schedule.snapshot_every else { return Ok(()) };
        if ready.reset.is_some() && ready.snapshot.is_none() {
            return Err(format!("g{group} node {id}: a log with a state machine was reset without a snapshot"));
        }
        if let Some(snapshot) = &ready.snapshot {
            let sm = StateMachine::decode(&snapshot.data)
                .ok_or_else(|| format!("g{group} node {id}: undecodable snapshot"))?;
            if sm.applied != snapshot.meta.index() {
                return Err(format!(
                    "g{group} node {id}: a snapshot at {} holds the state at {}",
                    snapshot.meta.index(),
                    sm.applied
                ));
            }
            self.groups[group].checker.state_machine(id, sm.applied, sm.hash).map_err(|v| in_group(group, v))?;
            self.nodes.get_mut(&id).expect("node").replicas[group].sm = sm;
            self.stats.installs += 1;
            self.note(|| format!("g{group} node {id}: installed a snapshot at {}", snapshot.meta.index()));
        }
        self.apply_committed(group, id)?;
        let sim = &mut self.nodes.get_mut(&id).expect("node").replicas[group];
        let kept = sim.node.snapshot().map_or(0, |s| s.meta.index());
        if sim.sm.applied < kept + every {
            return Ok(());
        }
        let index = sim.sm.applied;
        sim.node
            .save_snapshot(index, sim.sm.encode())
            .map_err(|e| format!("g{group} node {id}: snapshot at {index}: {e}"))?;
        self.stats.snapshots += 1;
        // Often the log is compacted right up to the snapshot during the faults. After
        // healing it keeps entries after it, as a caller should (etcd keeps 5000): a
        // follower being sent a snapshot needs the entries that follow it, or a newer
        // snapshot would restart the transfer, under load without end.
        let keep =
            if self.healed_at.is_some() { COMPACTION_KEEP_AFTER_HEALING } else { [0, 10][self.rng.random_range(0..2)] };
        let through = index.saturating_sub(keep);
        if self.rng.random_range(0..2) == 0 && through >= sim.node.store().first_index() {
            sim.node.store_mut().compact(through);
            self.stats.compactions += 1;
        }
        Ok(())
    }

    /// Applies the entries committed and durable on `id` that its state machine lacks.
    fn apply_committed(&mut self, group: Group, id: NodeId) -> Result<(), Violation> {
        let sim = &mut self.nodes.get_mut(&id).expect("node").replicas[group];
        let committed = sim.node.reported_commit();
        while sim.sm.applied < committed {
            let next = sim.sm.applied + 1;
            let entry = sim.node.store().live().entry(next).cloned();
            let entry =
                entry.ok_or_else(|| format!("g{group} node {id}: must apply entry {next}, which its log lacks"))?;
            sim.sm.apply(&entry);
            self.groups[group].checker.state_machine(id, next, sim.sm.hash).map_err(|v| in_group(group, v))?;
        }
        Ok(())
    }

    /// Power loss on a node: every group it hosts loses what was not durable.
    fn crash(&mut self, node: NodeId, torn: bool) -> Result<(), Violation> {
        let sim = self.nodes.get_mut(&node).expect("node");
        if !sim.replicas[METADATA].node.is_up() {
            return Ok(());
        }
        for replica in &mut sim.replicas {
            replica.node.crash(&mut self.rng, torn);
            replica.sm = StateMachine::default();
        }
        sim.epoch += 1;
        sim.disk_free_at = self.now;
        self.stats.crashes += 1;
        self.note(|| format!("node {node}: CRASH (torn: {torn})"));
        for other in self.schedule.nodes.clone().into_iter().filter(|o| *o != node) {
            self.detect_later(other, node, true);
        }
        self.group_ids().try_for_each(|group| self.durable_majority(group))
    }

    fn restart(&mut self, node: NodeId) -> Result<(), Violation> {
        let sim = self.nodes.get_mut(&node).expect("node");
        if sim.replicas[METADATA].node.is_up() {
            return Ok(());
        }
        let damage = std::mem::take(&mut sim.damage_at_restart);
        let (epoch, period) = (sim.epoch, sim.tick_period);
        self.note(|| format!("node {node}: RESTART"));
        for group in self.group_ids() {
            // Disk damage hits the metadata group's replicas only. With damage in both, the
            // partition group's short log had the same few entries damaged again and again
            // and once ended with no leader (a hole in a configuration entry that no peer
            // could fill, beyond what the guards of `damage_two_entries` mean to allow).
            let damage_group = group == METADATA;
            if damage && damage_group {
                self.damage_tail(group, node);
            }
            let sim = &mut self.nodes.get_mut(&node).expect("node").replicas[group];
            sim.node.restart().map_err(|e| format!("g{group} node {node} cannot restart: {e}"))?;
            sim.seen = (sim.node.raft().commit(), sim.node.raft().membership_index());
            if self.schedule.snapshot_every.is_some() {
                // The state machine starts from the snapshot kept, then applies the log.
                let kept = sim.node.snapshot().map(|s| StateMachine::decode(&s.data));
                let kept =
                    kept.map(|sm| sm.ok_or(format!("g{group} node {node}: undecodable snapshot"))).transpose()?;
                sim.sm = kept.unwrap_or_default();
            }
            self.groups[group]
                .checker
                .on_restart(&self.nodes[&node].replicas[group].node)
                .map_err(|v| in_group(group, v))?;
            if self.schedule.snapshot_every.is_some() {
                let sm = &self.nodes[&node].replicas[group].sm;
                if sm.applied > 0 {
                    self.groups[group]
                        .checker
                        .state_machine(node, sm.applied, sm.hash)
                        .map_err(|v| in_group(group, v))?;
                }
                self.apply_committed(group, node)?;
            }
            self.durable_majority(group)?;
            if self.schedule.damage_two_entries && damage_group {
                self.damage_two_entries(group, node)?;
            }
        }
        self.at(self.now + period, Event::Tick { node, epoch });
        self.group_ids().try_for_each(|group| self.flush(group, node))
    }

    /// Damages the synced end of the log of `node`'s replica of `group`, which is down
    /// (`Schedule::damage_on_restart`): recovery will cut it. Only while no other replica
    /// of the group has a vote barrier up (is still repairing): damage on a majority loses
    /// entries for good. And only while the other voters of every configuration known are
    /// a majority of it: the damaged node may have synced entries no other node has, and
    /// its barrier keeps it from voting for any candidate without them until a leader of
    /// a later term exists, which the others must then elect on their own
    /// (ARCHITECTURE.md, "Corruption").
    fn damage_tail(&mut self, group: Group, node: NodeId) {
        let Some(most) = self.schedule.damage_on_restart else { return };
        if self.group_nodes(group).any(|n| n.id() != node && n.vote_barrier().is_some()) {
            return;
        }
        let others_elect = |voters: &std::collections::BTreeSet<NodeId>| {
            voters.is_empty() || voters.iter().filter(|v| **v != node).count() > voters.len() / 2
        };
        let configs = self
            .group_nodes(group)
            .map(|n| n.try_raft().map_or_else(|| n.persisted_membership().1, |r| r.membership().clone()));
        if !configs.collect::<Vec<_>>().iter().all(|m| others_elect(&m.voters) && others_elect(&m.voters_outgoing)) {
            return;
        }
        let entries = self.rng.random_range(1..=most);
        let durable = self.replica(group, node).store().durable();
        let (first, last) = (durable.first_index(), durable.last_index());
        let keep = last.saturating_sub(entries).max(first - 1);
        if keep == last {
            return;
        }
        self.replica_mut(group, node).damage_tail(keep);
        self.stats.damaged += 1;
        self.note(|| format!("g{group} node {node}: DAMAGED synced entries {}..={last}", keep + 1));
    }

    /// Damages one durable entry of `node`'s replica of `group`, just restarted, and
    /// another of a second running node (`Schedule::damage_two_entries`), in place: both
    /// keep them as holes. The in-memory bytes stay as they were, so a copy written back
    /// must equal them (`MemLog::rewrite_damaged` asserts it: a peer's copy that passed the
    /// core's checks is the node's own entry).
    fn damage_two_entries(&mut self, group: Group, node: NodeId) -> Result<(), Violation> {
        let open = self.group_nodes(group).any(|n| n.try_raft().is_some_and(|r| !r.holes().is_empty()));
        let others: Vec<NodeId> =
            self.group_nodes(group).filter(|n| n.id() != node && n.is_up()).map(Node::id).collect();
        if open || others.is_empty() {
            return Ok(());
        }
        let other = others[self.rng.random_range(0..others.len())];
        let range = |n: &Node| {
            let durable = n.store().durable();
            (durable.first_index(), durable.last_index().min(n.raft().persisted_index()))
        };
        let ((a_first, a_last), (b_first, b_last)) =
            (range(self.replica(group, node)), range(self.replica(group, other)));
        if a_first > a_last {
            return Ok(());
        }
        let a = self.rng.random_range(a_first..=a_last);
        let bs: Vec<u64> = (b_first..=b_last).filter(|i| *i != a).collect();
        if bs.is_empty() {
            return Ok(());
        }
        let b = bs[self.rng.random_range(0..bs.len())];
        for (id, index) in [(node, a), (other, b)] {
            let repair = self.replica_mut(group, id).damage_entry(index);
            let repair = repair.map_err(|e| format!("g{group} node {id} cannot repair entry {index}: {e}"))?;
            if repair == Repair::Gone {
                continue; // compacted from the live log since
            }
            if repair != Repair::Hole {
                return Err(format!("g{group} node {id}: damaged entry {index} became {repair:?}, not a hole"));
            }
            self.stats.holes += 1;
            self.note(|| format!("g{group} node {id}: DAMAGED entry {index} in place: {repair:?}"));
            self.flush(group, id)?;
        }
        Ok(())
    }

    /// Proposes, through the metadata group's leader, a change of its voters chosen among
    /// those valid now.
    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader(METADATA) else { return Ok(()) };
        let m = self.replica(METADATA, leader).raft().membership().clone();
        let outsiders: Vec<NodeId> = self.schedule.nodes.iter().copied().filter(|n| !m.contains(*n)).collect();
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let mut options: Vec<Vec<MembershipChange>> = Vec::new();
        for &o in &outsiders {
            options.push(vec![MembershipChange::AddLearner(o)]);
            options.push(vec![MembershipChange::AddVoter(o)]);
        }
        for &l in &m.learners {
            options.push(vec![MembershipChange::PromoteLearner(l)]);
            options.push(vec![MembershipChange::RemoveLearner(l)]);
        }
        if voters.len() > 2 {
            options.extend(voters.iter().map(|v| vec![MembershipChange::RemoveVoter(*v)]));
        }
        if let (Some(&o), true) = (outsiders.first(), voters.len() >= 2) {
            let v = voters[self.rng.random_range(0..voters.len())];
            options.push(vec![MembershipChange::RemoveVoter(v), MembershipChange::AddVoter(o)]);
        }
        if outsiders.len() >= 2 && voters.len() >= 3 {
            // Replacing two voters at once: C_old's and C_new's majorities can be disjoint.
            let (v1, v2) = (voters[0], voters[voters.len() - 1]);
            let mut change: Vec<_> = [v1, v2].map(MembershipChange::RemoveVoter).to_vec();
            change.extend(outsiders[..2].iter().map(|o| MembershipChange::AddVoter(*o)));
            options.push(change.clone());
            options.push(change);
        }
        let change = options.swap_remove(self.rng.random_range(0..options.len()));
        let result = self.replica_mut(METADATA, leader).propose_membership(&change);
        self.stats.membership_changes += u64::from(result.is_ok());
        self.note(|| format!("membership change at {leader}: {change:?} -> {result:?}"));
        self.flush(METADATA, leader)
    }

    /// Two-group seeds: the metadata group's leader proposes a move of the partition group
    /// to replicas chosen now, if its metadata shows no move in progress (the controller's
    /// check; the metadata state refuses a second move anyway, `MetaState::apply`).
    fn propose_move(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader(METADATA) else { return Ok(()) };
        let Some(meta) = &self.meta else { return Ok(()) };
        if meta.target.is_some() {
            return Ok(());
        }
        let current = meta.replicas.clone();
        let count = current.len();
        let mut target = current.clone();
        while target == current {
            let mut pool = self.schedule.nodes.clone();
            target = (0..count).map(|_| pool.swap_remove(self.rng.random_range(0..pool.len()))).collect();
        }
        let result = self.replica_mut(METADATA, leader).propose(&Command::Move(target.clone()).encode(), 1);
        self.note(|| format!("move of the partition group to {target:?} proposed at {leader}: {result:?}"));
        self.flush(METADATA, leader)
    }

    /// Two-group seeds: every node learns the metadata entries committed since the last look.
    fn learn_metadata(&mut self) {
        let Some(meta) = &mut self.meta else { return };
        let committed = &self.groups[METADATA].checker.committed;
        if committed.last_key_value().is_none_or(|(last, _)| *last <= meta.applied) {
            return;
        }
        for line in meta.apply(committed.range(meta.applied + 1..)) {
            self.note(|| line);
        }
    }

    /// Two-group seeds, one round of the controller on every node that leads the partition
    /// group: takes the next step of the move in progress from the node's configuration,
    /// or, once the target is the committed configuration, proposes the end of the move to
    /// the metadata group's leader. A round that cannot go on (no metadata leader, a change
    /// refused) is retried the next round, whoever leads by then.
    fn move_round(&mut self) -> Result<(), Violation> {
        let Some(meta) = &self.meta else { return Ok(()) };
        let Some(target) = meta.target.clone() else { return Ok(()) };
        let replicas = meta.replicas.clone();
        let leaders: Vec<NodeId> = self
            .group_nodes(PARTITION)
            .filter(|n| n.try_raft().is_some_and(|r| r.role() == Role::Leader))
            .map(Node::id)
            .collect();
        for id in leaders {
            match moves::next_step(self.replica(PARTITION, id).raft(), &replicas, &target) {
                Step::Wait => {}
                Step::Propose(changes) => {
                    let result = self.replica_mut(PARTITION, id).propose_membership(&changes);
                    self.stats.move_changes += u64::from(result.is_ok());
                    self.note(|| format!("move round at {id}: {changes:?} -> {result:?}"));
                    self.flush(PARTITION, id)?;
                }
                Step::Finish => {
                    let Some(meta_leader) = self.leader(METADATA) else { continue };
                    let command = Command::Finish(target.clone()).encode();
                    let result = self.replica_mut(METADATA, meta_leader).propose(&command, 1);
                    self.note(|| format!("move round at {id}: finish proposed at {meta_leader}: {result:?}"));
                    self.flush(METADATA, meta_leader)?;
                }
                Step::Stuck(why) => {
                    self.note(|| format!("move round at {id}: stuck: {why}"));
                    self.move_stuck = Some(why);
                }
            }
        }
        Ok(())
    }

    /// The end of the fault phase: a connected network, running nodes, normal disks.
    fn heal(&mut self) -> Result<(), Violation> {
        self.note(|| "HEAL: liveness phase".to_string());
        self.healed_at = Some(self.now);
        self.blocked.clear();
        self.network = NetworkProfile::CALM;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let sim = self.nodes.get_mut(&id).expect("node");
            sim.disk_latency = (100, 2 * MS);
            sim.disk_epoch += 1;
            self.restart(id)?;
        }
        self.events.retain(|_, e| !matches!(e, Event::Fault(_) | Event::Restart(_) | Event::CrashLeader { .. }));
        if self.schedule.hold_leader_down {
            // The client stops, so that the group goes quiet; then its leader dies for good.
            self.events.retain(|_, e| !matches!(e, Event::Propose));
            self.at(self.now + HOLD_DOWN_AFTER_HEALING, Event::HoldLeaderDown);
            self.at(self.now + HOLD_DOWN_AFTER_HEALING, Event::Marker);
        } else {
            self.at(self.now, Event::Marker);
        }
        Ok(())
    }

    /// Crashes the metadata group's leader for good, if every group can go on without it
    /// and, on two-group seeds, no move could need it as a new replica.
    fn hold_leader_down(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader(METADATA).filter(|l| self.majority_without(*l)) else { return Ok(()) };
        if self.move_may_need(leader) {
            return Ok(());
        }
        let quiet = self.replica(METADATA, leader).is_quiesced();
        self.note(|| format!("node {leader}: the leader goes down for good (quiet: {quiet})"));
        self.stats.quiet_leaders_lost += u64::from(quiet);
        self.held_down = Some(leader);
        self.crash(leader, false)
    }

    /// Whether a move in progress, or one a running metadata replica holds uncommitted,
    /// names `node` among its new replicas: a learner down for good never catches up.
    fn move_may_need(&self, node: NodeId) -> bool {
        let Some(meta) = &self.meta else { return false };
        if meta.target.as_ref().is_some_and(|t| t.contains(&node)) {
            return true;
        }
        self.group_nodes(METADATA).filter(|n| n.is_up()).any(|n| {
            let log = n.store().live();
            (n.raft().commit().max(log.first_index()) + 1..=log.last_index()).any(|index| {
                let entry = log.entry(index).filter(|e| e.kind() == kind::DATA);
                let command = entry.and_then(|e| Command::decode(&e.payload()));
                matches!(command, Some(Command::Move(target)) if target.contains(&node))
            })
        })
    }

    /// Whether the running nodes but `down` are a majority of every half of every
    /// configuration a running replica of any group knows, so that every group can elect a
    /// leader and commit.
    fn majority_without(&self, down: NodeId) -> bool {
        let running = self.nodes.values().flat_map(|s| s.replicas.iter().filter_map(|r| r.node.try_raft()));
        running.map(|r| r.membership()).all(|m| {
            [&m.voters, &m.voters_outgoing]
                .into_iter()
                .filter(|half| !half.is_empty())
                .all(|half| half.iter().filter(|id| **id != down).count() > half.len() / 2)
        })
    }

    /// Liveness: in every group some marker proposed after healing is committed, and every
    /// running member of the committed configuration has caught up with it; on two-group
    /// seeds, the last move finished and the partition group's configuration is its
    /// replicas, committed, with no joint configuration and no learner left.
    fn converged(&self) -> bool {
        self.group_ids().all(|group| self.group_converged(group)) && self.moves_converged()
    }

    fn group_converged(&self, group: Group) -> bool {
        let committed = &self.groups[group].checker.committed;
        let markers = &self.groups[group].markers;
        let Some(&(index, _)) = markers.iter().find(|(i, t)| committed.get(i).is_some_and(|e| e.term() == *t)) else {
            return false;
        };
        let Some(leader) = self.leader(group) else { return false };
        let members = self.replica(group, leader).raft().membership().members();
        let running = members.iter().filter(|id| Some(**id) != self.held_down);
        running.into_iter().all(|id| self.replica(group, *id).try_raft().is_some_and(|r| r.commit() >= index))
    }

    fn moves_converged(&self) -> bool {
        let Some(meta) = &self.meta else { return true };
        let Some(leader) = self.leader(PARTITION) else { return false };
        let raft = self.replica(PARTITION, leader).raft();
        let config = raft.membership();
        meta.target.is_none()
            && raft.membership_index() <= raft.commit()
            && !config.is_joint()
            && config.learners.is_empty()
            && config.voters == meta.replicas
    }

    /// Each node's state, for a failure report.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for group in self.group_ids() {
            for (id, sim) in &self.nodes {
                let node = &sim.replicas[group].node;
                let log = node.store().live();
                let line = match node.try_raft() {
                    Some(r) => format!(
                        "g{group} node {id}: {:?} term {} vote {:?} leader {:?} commit {} log {}..={} \
                         membership {:?}\n",
                        r.role(),
                        r.term(),
                        r.vote(),
                        r.leader(),
                        r.commit(),
                        log.first_index(),
                        log.last_index(),
                        r.membership()
                    ),
                    None => format!("g{group} node {id}: down\n"),
                };
                out.push_str(&line);
            }
        }
        if let Some(meta) = &self.meta {
            out.push_str(&format!(
                "metadata: partition replicas {:?}, move target {:?}, applied through {}\n",
                meta.replicas, meta.target, meta.applied
            ));
        }
        out
    }
}

/// Names the group a violation was found in.
fn in_group(group: Group, violation: Violation) -> Violation {
    let name = if group == METADATA { "metadata" } else { "partition" };
    format!("{name} group: {violation}")
}

fn describe_message(group: Group, from: NodeId, to: NodeId, msg: &Message) -> String {
    match msg {
        Message::Append { term, prev_index, prev_term, commit, entries } => format!(
            "g{group} {from}->{to} Append t{term} prev {prev_index}/{prev_term} commit {commit} entries {}",
            entries.len()
        ),
        Message::Snapshot { term, meta, offset, data } => format!(
            "g{group} {from}->{to} Snapshot t{term} through {}/{} bytes {offset}..{} of {}",
            meta.index(),
            meta.term(),
            offset + data.len() as u64,
            meta.bytes
        ),
        other => format!("g{group} {from}->{to} {other:?}"),
    }
}
