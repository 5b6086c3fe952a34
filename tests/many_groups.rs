//! One node process hosts many Raft groups: three real `keel serve` processes hosting a
//! thousand groups each (every node a voter of every group).

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use keel::server::layout::group_log_dir;
use segments::{Entry, Log};

const GROUPS: u64 = 1000;

/// The sum of a metric over the running nodes among `ids`.
fn total(cluster: &Cluster, ids: &[u64], name: &str) -> f64 {
    ids.iter().filter_map(|id| cluster.metric(*id, name)).sum()
}

/// Waits until `done` holds, checking every 100 ms; panics with `what` after `within`.
fn wait(cluster: &Cluster, within: Duration, what: &str, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} within {within:?}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Every entry of a group's log on one node (the node is stopped).
fn entries(dir: &std::path::Path, group: u64) -> Vec<Entry> {
    let (log, _) = Log::open(&group_log_dir(dir, group), segments::Config::default()).expect("open log");
    let mut out = Vec::new();
    let mut next = log.first_index();
    while next <= log.last_index() {
        log.read(next, 1 << 20, &mut out).expect("read");
        next = out.last().expect("an entry").index() + 1;
    }
    out
}

/// User and system CPU time a process used, from /proc.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name's closing parenthesis: utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat format").1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Run by hand (`cargo test --release --test many_groups -- --ignored --nocapture`, about a
/// minute): 3 000 replicas on one 2-core machine. With the tick stretched by the groups a
/// node hosts (`server::registry::tick_period`: 50 ms here) it passed each time it was run;
/// at a fixed 10 ms tick the cold start sometimes churned (terms past 40, leaders losing
/// their quorums) for minutes. Kept out of CI for its weight and that history.
#[test]
#[ignore = "heavy: 3 000 replicas on one machine (see above)"]
fn three_nodes_host_a_thousand_groups_through_a_kill_and_a_restart() {
    // The topic `default` with 983 partitions: with the metadata group and the 16 of
    // `__consumer_offsets`, 1 000 groups.
    let partitions = (GROUPS - 1 - u64::from(keel::server::controller::OFFSETS_PARTITIONS)).to_string();
    let mut cluster = Cluster::start(3, &["--default-partitions", &partitions]);
    let all = [1, 2, 3];
    let progress = std::cell::Cell::new(Instant::now());
    let elected = wait(&cluster, Duration::from_secs(120), "every group elects a leader", || {
        let led = total(&cluster, &all, "keel_groups_led");
        if progress.get().elapsed() >= Duration::from_secs(5) {
            progress.set(Instant::now());
            let hosted = total(&cluster, &all, "keel_groups_hosted");
            eprintln!("{led} groups led, {hosted} replicas hosted");
        }
        led == GROUPS as f64 && all.iter().all(|id| cluster.metric(*id, "keel_groups_hosted") == Some(GROUPS as f64))
    });
    eprintln!("{GROUPS} groups hosted on every node and led {elected:?} after start");

    // kill -9 the node that leads the most groups: each of them gets a new leader.
    let victim = *all.iter().max_by_key(|id| cluster.metric(**id, "keel_groups_led").unwrap_or(0.0) as u64).unwrap();
    let led = cluster.metric(victim, "keel_groups_led").unwrap_or(0.0);
    assert!(led > 0.0, "node {victim} leads some groups");
    cluster.kill(victim);
    let others: Vec<u64> = all.into_iter().filter(|id| *id != victim).collect();
    let failover = wait(&cluster, Duration::from_secs(60), "the killed node's groups elect new leaders", || {
        total(&cluster, &others, "keel_groups_led") == GROUPS as f64
    });
    eprintln!("the {led} groups node {victim} led had new leaders {failover:?} after kill -9");

    // Restarted, the node catches up in every group: no leader sees a voter missing entries.
    cluster.restart(victim);
    wait(&cluster, Duration::from_secs(120), "every group catches up on the restarted node", || {
        cluster.metric(victim, "keel_groups_hosted") == Some(GROUPS as f64)
            && all.iter().all(|id| cluster.metric(*id, "keel_groups_under_replicated") == Some(0.0))
            && total(&cluster, &all, "keel_groups_led") == GROUPS as f64
    });
    // Idle, every group goes quiet on every node: nothing is sent, nothing changes.
    let quiet = wait(&cluster, Duration::from_secs(60), "every group goes quiet on every node", || {
        total(&cluster, &all, "keel_groups_quiet") == (3 * GROUPS) as f64
    });
    eprintln!("every group quiet on the three nodes {quiet:?} after the catch-up");
    let cpu = |id: u64| cpu_seconds(cluster.pid(id));
    let before: f64 = all.iter().map(|id| cpu(*id)).sum();
    let idle = Duration::from_secs(5);
    std::thread::sleep(idle);
    let used = all.iter().map(|id| cpu(*id)).sum::<f64>() - before;
    eprintln!("idle: the three nodes used {:.1}% of one core over {idle:?}", 100.0 * used / idle.as_secs_f64());
    // kill -9, not SIGTERM: a node stopped gracefully hands its groups' leadership over,
    // and the new leaders' no-ops would reach only the nodes still running.
    for id in all {
        cluster.kill(id);
    }

    // Byte for byte, every group's log is the same on the three nodes, as far as the
    // shortest goes: a leadership handed back to a preferred replica just before the kill
    // may have logged its no-op on some nodes only, which Raft allows.
    for group in 0..GROUPS {
        let logs: Vec<Vec<Entry>> = all.iter().map(|id| entries(&cluster.node(*id).dir, group)).collect();
        for (k, log) in logs.iter().enumerate().skip(1) {
            for (a, b) in logs[0].iter().zip(log) {
                assert_eq!(a.as_bytes(), b.as_bytes(), "group {group}: entry {} differs on node {}", a.index(), k + 1);
            }
        }
        // The initial configuration is in the hard state; a leader's no-op at least is logged.
        assert!(logs.iter().all(|l| !l.is_empty()), "group {group}: a node holds no entry, though a leader committed");
    }
}
