//! The deterministic simulator for the Raft core, in the spirit of TigerBeetle's VOPR: one
//! seed picks a whole fault schedule (message loss, duplication, delay and reordering;
//! symmetric, one-way and bridge partitions and an isolated leader; crashes that lose what
//! was not durable, with torn writes, and on some seeds synced entries damaged at restart,
//! or single entries of two nodes damaged in place at different indexes;
//! slow disks; membership changes, leadership transfers and log compaction under all of
//! that), runs 3 or 5 voters (plus two spares) in virtual time, checks the safety
//! invariants after every step, then heals everything and requires a leader to commit a
//! new proposal everywhere within a bounded virtual time.
//!
//! One seed in five (`schedule::two_groups`: `(seed / 2) % 5 == 1`, so both voter counts
//! get some) runs two groups on the same nodes, as keel does: the metadata group, and a
//! partition group on other replicas that the metadata group moves while the faults go on
//! (`moves.rs`: a move committed there, carried out by whoever leads the partition group with
//! learners and joint consensus, ended by a second command). Such a seed ends only once the
//! last move finished and the partition group's committed configuration is its replicas.
//!
//! - `cargo test --release --test raft_sim`: the CI budget (`SEEDS_CI` seeds, split over two tests).
//! - `KEEL_SIM_SEED=<n>`: replay one seed exactly, printing its schedule and trace.
//! - `KEEL_SIM_SEEDS=<count>` (and optionally `KEEL_SIM_SEED_BASE=<first>`): soak.

#[path = "raft_sim/check.rs"]
mod check;
#[path = "raft_sim/moves.rs"]
mod moves;
#[path = "raft_sim/schedule.rs"]
mod schedule;
#[path = "raft_sim/state_machine.rs"]
mod state_machine;
#[path = "raft_sim/world.rs"]
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;
use world::World;

/// Seeds CI runs: even seeds run 3 voters, odd seeds 5.
const SEEDS_CI: u64 = 5_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
}

/// The seeds this run covers whose parity is `parity`.
fn seeds(parity: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("KEEL_SIM_SEED") {
        return if seed % 2 == parity { vec![seed] } else { Vec::new() };
    }
    let base = env_u64("KEEL_SIM_SEED_BASE").unwrap_or(0);
    let count = env_u64("KEEL_SIM_SEEDS").unwrap_or(SEEDS_CI);
    (base..base + count).filter(|s| s % 2 == parity).collect()
}

/// Runs one seed; on a violation or a panic in the core, prints the seed, its schedule,
/// the end of the trace and the replay command, then fails.
fn run_seed(seed: u64, verbose: bool) -> world::Stats {
    let mut world = World::new(schedule::generate(seed));
    world.trace_live = verbose && std::env::var_os("KEEL_SIM_TRACE").is_some();
    if verbose {
        eprintln!("{}", world.schedule);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| world.run()));
    let failure = match outcome {
        Ok(Ok(())) => return world.stats,
        Ok(Err(violation)) => violation,
        Err(panic) => {
            let text =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("the core panicked: {}", text.unwrap_or_default())
        }
    };
    let trace: Vec<&str> = world.trace.iter().map(String::as_str).collect();
    panic!(
        "SIMULATION FAILED at seed {seed}: {failure}\n\n{}\n\nlast events:\n{}\n\nstate:\n{}\n\
         replay: KEEL_SIM_SEED={seed} KEEL_SIM_TRACE=1 cargo test --release --test raft_sim -- --nocapture",
        world.schedule,
        trace.join("\n"),
        world.describe()
    );
}

fn run_many(parity: u64) {
    let seeds = seeds(parity);
    let verbose = seeds.len() == 1;
    let started = Instant::now();
    let mut total = world::Stats::default();
    for &seed in &seeds {
        total.add(&run_seed(seed, verbose));
    }
    if !seeds.is_empty() {
        eprintln!(
            "{} seeds ({} voters) in {:.1}s: {} virtual s, {} events, {} messages, {} crashes, {} elections, \
             {} membership changes, {} transfers, {} truncations, {} resets, {} compactions, {} entries committed, \
             {} quiescences, {} detector wake-ups, {} quiet leaders lost for good, {} snapshots taken, {} installed, \
             {} restarts with damaged synced entries, {} entries damaged in place; \
             {} seeds with a partition group: {} moves started, {} finished, {} configuration changes for them; \
             slowest convergence after healing {}ms",
            seeds.len(),
            if parity == 0 { 3 } else { 5 },
            started.elapsed().as_secs_f64(),
            total.virtual_ms / 1000,
            total.events,
            total.messages,
            total.crashes,
            total.elections,
            total.membership_changes,
            total.transfers,
            total.truncations,
            total.resets,
            total.compactions,
            total.committed,
            total.quiescences,
            total.detector_wakes,
            total.quiet_leaders_lost,
            total.snapshots,
            total.installs,
            total.damaged,
            total.holes,
            total.two_group_seeds,
            total.moves_started,
            total.moves_finished,
            total.move_changes,
            total.liveness_ms
        );
    }
}

#[test]
fn simulate_three_voters() {
    run_many(0);
}

#[test]
fn simulate_five_voters() {
    run_many(1);
}
