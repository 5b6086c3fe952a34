//! Proposals committed per second through a 3-node in-memory cluster: the Raft core, the
//! testkit glue and MemStore, with no I/O (writes are durable the moment they are written
//! and messages are delivered in process). It measures the core's own cost per proposal:
//! building the entry once, the Ready batches, AppendEntries and their acknowledgements.
//!
//! Then the idle cost of many groups (issue 12's 1 000 groups on 3 nodes): every group's 3
//! replicas are ticked for 10 virtual seconds (10 ms ticks) as a node's ticker would, with
//! and without quiescence, counting the messages and the CPU time of the core and the
//! replica alone (no network, no disk, no tokio): a floor under the server's cost.
//!
//! `cargo bench --bench raft` (about 20 s). `KEEL_BENCH_SECONDS=<s>` sets the time per case.

use keel::raft::{LogStore, NodeId, ProposeError};
use keel::replica::testkit::Cluster;
use std::time::{Duration, Instant};

const LEADER: NodeId = 1;
/// Deliveries between two rounds of retention, which keeps the in-memory logs short as
/// the server's retention keeps its segments bounded.
const RETENTION_EVERY: u64 = 4096;
/// Committed entries each node keeps behind its commit index.
const RETAINED_ENTRIES: u64 = 1024;

/// Deletes each node's log prefix up to `RETAINED_ENTRIES` below what it reported committed.
fn retain(c: &mut Cluster) {
    for node in c.nodes.values_mut() {
        let through = node.reported_commit().saturating_sub(RETAINED_ENTRIES);
        if through >= node.store().first_index() {
            node.store_mut().compact(through);
        }
    }
}

/// Groups in the idle case, and the virtual time they idle for (ticks of 10 ms).
const IDLE_GROUPS: usize = 1_000;
const IDLE_TICKS: u32 = 1_000;

/// Ticks `IDLE_GROUPS` settled 3-replica groups `IDLE_TICKS` times, skipping quiet replicas
/// as a node's ticker does; returns the messages sent and the CPU time it took.
fn idle(quiesce_after_ticks: Option<u32>) -> (usize, Duration) {
    let mut groups: Vec<Cluster> = (0..IDLE_GROUPS)
        .map(|_| {
            let mut c = Cluster::new(&[1, 2, 3], |config| config.quiesce_after_ticks = quiesce_after_ticks);
            c.elect(LEADER);
            c.run(100);
            c
        })
        .collect();
    let (mut messages, started) = (0, Instant::now());
    for _ in 0..IDLE_TICKS {
        for c in &mut groups {
            for id in 1..=3 {
                if !c.node(id).is_quiesced() {
                    c.tick(id);
                }
            }
            messages += c.network.len();
            c.deliver();
        }
    }
    (messages, started.elapsed())
}

struct Outcome {
    committed: u64,
    elapsed: Duration,
}

/// Keeps `window` proposals of `payload` bytes in flight for `budget`: propose until the
/// window is full, deliver one message, repeat. Returns how many committed, and in what time.
fn run(payload: usize, window: u64, budget: Duration) -> Outcome {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(LEADER);
    c.deliver();
    let body = vec![0x5a; payload];
    let start_commit = c.raft(LEADER).commit();
    let started = Instant::now();
    let mut proposed = c.node(LEADER).store().last_index();
    let mut rounds: u64 = 0;
    loop {
        while proposed - c.raft(LEADER).commit() < window {
            match c.propose(LEADER, &body) {
                Ok(p) => proposed = p.index,
                Err(ProposeError::Busy(_)) => break,
                Err(e) => panic!("the leader refused a proposal: {e}"),
            }
        }
        if !c.deliver_one() {
            panic!("the network went quiet with proposals in flight");
        }
        rounds += 1;
        if rounds.is_multiple_of(RETENTION_EVERY) {
            retain(&mut c);
        }
        // Reading the clock every message would cost more than a message.
        if rounds.is_multiple_of(256) && started.elapsed() >= budget {
            break;
        }
    }
    c.deliver();
    let elapsed = started.elapsed();
    Outcome { committed: c.raft(LEADER).commit() - start_commit, elapsed }
}

fn main() {
    let seconds: f64 = std::env::var("KEEL_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let budget = Duration::from_secs_f64(seconds);
    println!("raft core: proposals committed per second, 3-node in-memory cluster, no I/O ({seconds} s per case)");
    println!(
        "{:>8} {:>7} {:>11} {:>8} {:>13} {:>9} {:>11}",
        "payload", "window", "committed", "seconds", "proposals/s", "MiB/s", "us/proposal"
    );
    for payload in [100, 1024] {
        for window in [1, 64] {
            run(payload, window, Duration::from_millis(200));
            let o = run(payload, window, budget);
            let secs = o.elapsed.as_secs_f64();
            let rate = o.committed as f64 / secs;
            println!(
                "{:>6} B {:>7} {:>11} {:>8.2} {:>13.0} {:>9.1} {:>11.2}",
                payload,
                window,
                o.committed,
                secs,
                rate,
                rate * payload as f64 / (1 << 20) as f64,
                1e6 / rate
            );
        }
    }
    let virtual_seconds = f64::from(IDLE_TICKS) / 100.0;
    println!("\nidle: {IDLE_GROUPS} groups of 3 replicas in one thread for {virtual_seconds} virtual s (10 ms ticks)");
    println!("{:>22} {:>10} {:>19} {:>16}", "quiescence", "messages", "messages/group/s", "CPU % of a core");
    for quiesce in [None, Some(20)] {
        let (messages, elapsed) = idle(quiesce);
        let label = quiesce.map_or("off".to_string(), |t| format!("after {t} idle ticks"));
        println!(
            "{:>22} {:>10} {:>19.2} {:>16.2}",
            label,
            messages,
            messages as f64 / IDLE_GROUPS as f64 / virtual_seconds,
            100.0 * elapsed.as_secs_f64() / virtual_seconds
        );
    }
}
