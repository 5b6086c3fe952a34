//! The fault schedule: everything one seed decides up front, printed before the run so a
//! failure can be read and replayed. Every kind of fault the run can inject comes once,
//! in an order the seed shuffles; after that, faults and pairs of faults at random.
//! Each window names one partition of the topic: a fault on "the leader" hits that
//! partition's leader, a disk fault that partition's files. Choices that depend on the
//! cluster when a fault fires (who leads) are made then, with a random generator seeded
//! from the window, so the same seed makes the same choices given the same cluster.

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::disk::DiskFault;

/// Which node a fault hits, decided when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    Follower,
    Any,
    /// Any replica of the partition (disk faults damage its files).
    Replica,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9; restarted at heal.
    Kill(Target),
    /// kill -9 of a majority; restarted at heal.
    KillMajority,
    /// SIGSTOP; SIGCONT at heal.
    Pause(Target),
    /// SIGSTOP, then kill -9 while paused; restarted at heal.
    PauseThenKill(Target),
    /// The leader hears no node and no node hears it.
    IsolateLeader,
    /// One node on one side, the others on the other (1|3 with four nodes).
    Split,
    /// Two nodes cannot talk; a third, the bridge, talks to both.
    Bridge,
    /// One node's packets to the others are dropped (`outbound`), or theirs to it.
    OneWay { outbound: bool },
    /// A share of the packets to and from one node is dropped.
    Lossy { percent: u32 },
    /// A share of the packets to and from one node queue behind a narrow link: 100% is a
    /// slow link, less also reorders (the rest overtakes them).
    Slow { percent: u32 },
    /// One minority node is killed, its files damaged, and it is restarted; the fault
    /// lasts until it caught up again. Never combined with another fault.
    /// `DiskFault::FlipSealedOnTwo` does this to two nodes at once, at different entries.
    Disk(DiskFault),
    /// `partition move` of the window's partition to another set of replicas (at least one
    /// node new to it); at heal, waits until the move finished (or aborts it).
    Move,
    /// Decommission a node; at heal, once it is removed, wipe its data directory and start
    /// it again as a new node that joins the cluster (same id and address).
    Decommission,
}

impl Fault {
    pub fn needs_netns(&self) -> bool {
        matches!(self, Fault::IsolateLeader | Fault::Split | Fault::Bridge | Fault::OneWay { .. }) || self.needs_nft()
    }

    pub fn needs_nft(&self) -> bool {
        matches!(self, Fault::Lossy { .. } | Fault::Slow { .. })
    }

    fn is_network(&self) -> bool {
        self.needs_netns()
    }

    /// A change of the cluster's members: it goes on through the faults paired with it.
    pub fn is_membership(&self) -> bool {
        matches!(self, Fault::Move | Fault::Decommission)
    }

    /// A fault that takes a node down (killed, or paused then killed).
    fn is_kill(&self) -> bool {
        matches!(self, Fault::Kill(_) | Fault::KillMajority | Fault::PauseThenKill(_))
    }

    /// Whether the fault hits a node by its part in one partition (its leader, a follower,
    /// the replica whose files are damaged).
    pub fn names_partition(&self) -> bool {
        match self {
            Fault::Kill(t) | Fault::Pause(t) | Fault::PauseThenKill(t) => *t != Target::Any,
            Fault::IsolateLeader | Fault::Disk(_) | Fault::Move => true,
            _ => false,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = |t: &Target| match t {
            Target::Leader => "the leader",
            Target::Follower => "a follower",
            Target::Any => "a node",
            Target::Replica => "a replica",
        };
        match self {
            Fault::Kill(t) => write!(f, "kill -9 {}", target(t)),
            Fault::KillMajority => write!(f, "kill -9 a majority"),
            Fault::Pause(t) => write!(f, "pause {}", target(t)),
            Fault::PauseThenKill(t) => write!(f, "pause {} then kill -9 it", target(t)),
            Fault::IsolateLeader => write!(f, "isolate the leader"),
            Fault::Split => write!(f, "split 1|3"),
            Fault::Bridge => write!(f, "bridge"),
            Fault::OneWay { outbound: true } => write!(f, "one-way: a node's packets out dropped"),
            Fault::OneWay { outbound: false } => write!(f, "one-way: packets to a node dropped"),
            Fault::Lossy { percent } => write!(f, "{percent}% loss on a node's links"),
            Fault::Slow { percent: 100 } => write!(f, "slow links to a node"),
            Fault::Slow { percent } => write!(f, "{percent}% of a node's packets delayed (reordering)"),
            Fault::Disk(d) => write!(f, "disk: {}", d.name()),
            Fault::Move => write!(f, "move the partition"),
            Fault::Decommission => write!(f, "decommission a node, wipe it, re-add it"),
        }
    }
}

/// One or two faults, started together and healed together.
#[derive(Clone, Debug)]
pub struct Window {
    pub faults: Vec<Fault>,
    pub hold: Duration,
    /// Quiet time after healing, before the next window.
    pub calm: Duration,
    /// Seeds the choices made when the window fires.
    pub seed: u64,
    /// The partition whose leader (or files) the faults that name one hit.
    pub partition: u32,
}

impl Window {
    pub fn name(&self) -> String {
        let faults = self.faults.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ");
        if self.faults.iter().any(Fault::names_partition) {
            format!("{faults} [partition {}]", self.partition)
        } else {
            faults
        }
    }
}

#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    pub duration: Duration,
    pub windows: Vec<Window>,
}

/// The first pass makes the membership changes within its first this many windows.
const MEMBERSHIP_AMONG_FIRST: usize = 6;

/// Every fault the run can inject (network faults only with namespaces, loss and slow
/// links only with nftables).
fn kinds(netns: bool, nft: bool) -> Vec<Fault> {
    let mut all = vec![
        Fault::Kill(Target::Any),
        Fault::Kill(Target::Leader),
        Fault::KillMajority,
        Fault::Pause(Target::Leader),
        Fault::Pause(Target::Follower),
        Fault::PauseThenKill(Target::Leader),
        Fault::IsolateLeader,
        Fault::Split,
        Fault::Bridge,
        Fault::OneWay { outbound: true },
        Fault::OneWay { outbound: false },
        Fault::Lossy { percent: 30 },
        Fault::Slow { percent: 100 },
        Fault::Slow { percent: 30 },
    ];
    all.extend(DiskFault::ALL.map(Fault::Disk));
    all.extend([Fault::Move, Fault::Decommission]);
    all.retain(|f| (netns || !f.needs_netns()) && (nft || !f.needs_nft()));
    all
}

/// The windows for `duration` of faults on a topic of `partitions` partitions.
pub fn generate(seed: u64, duration: Duration, netns: bool, nft: bool, partitions: u32) -> Schedule {
    let mut rng = SmallRng::seed_from_u64(seed);
    let kinds = kinds(netns, nft);
    let mut first_pass = kinds.clone();
    first_pass.shuffle(&mut rng);
    // The membership changes come among the first windows (the pass is taken from its
    // end), so that the CI schedule, which may not reach the end of the pass, makes both.
    for kind in [Fault::Move, Fault::Decommission] {
        if let Some(at) = first_pass.iter().position(|f| *f == kind) {
            let kind = first_pass.remove(at);
            let len = first_pass.len();
            first_pass.insert(rng.random_range(len.saturating_sub(MEMBERSHIP_AMONG_FIRST)..=len), kind);
        }
    }
    let mut windows = Vec::new();
    let mut planned = Duration::ZERO;
    while planned < duration {
        let faults = match first_pass.pop() {
            Some(f) => vec![f],
            None => {
                let a = kinds[rng.random_range(0..kinds.len())].clone();
                let b = kinds[rng.random_range(0..kinds.len())].clone();
                // Pairs: a network fault with a process or membership fault, a membership
                // change with a kill; disk faults alone.
                let with_kill = |x: &Fault, y: &Fault| x.is_membership() && y.is_kill();
                let pair = rng.random_range(0..3) == 0
                    && !matches!(a, Fault::Disk(_))
                    && !matches!(b, Fault::Disk(_))
                    && (a.is_network() != b.is_network() || with_kill(&a, &b) || with_kill(&b, &a));
                if pair { vec![a, b] } else { vec![a] }
            }
        };
        let hold = Duration::from_millis(rng.random_range(3_000..=8_000));
        let calm = Duration::from_millis(rng.random_range(1_500..=3_500));
        planned += hold + calm;
        let partition = rng.random_range(0..partitions.max(1));
        windows.push(Window { faults, hold, calm, seed: rng.random(), partition });
    }
    Schedule { seed, duration, windows }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule of seed {} ({}s of faults, then heal):", self.seed, self.duration.as_secs())?;
        let mut at = Duration::ZERO;
        for (k, w) in self.windows.iter().enumerate() {
            writeln!(
                f,
                "  #{k:<3} ~{:>6.1}s  hold {:>4.1}s  calm {:>3.1}s  {}",
                at.as_secs_f64(),
                w.hold.as_secs_f64(),
                w.calm.as_secs_f64(),
                w.name()
            )?;
            at += w.hold + w.calm;
        }
        Ok(())
    }
}
