//! One run: start a cluster, drive the workload through the schedule's faults, heal,
//! wait for the replicas to converge, read every node's whole log, compare the segment
//! files byte for byte, and check the history.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel::client::Client;
use segments::{Entry, Log};

use super::checker::{self, Report};
use super::history::{Op, Recorder};
use super::nemesis::Nemesis;
use super::net::Topology;
use super::nodes::{Nodes, SEGMENT_BYTES};
use super::schedule::{Fault, Schedule};
use super::workload::{self, Workload};
use keel::server::layout::group_log_dir;
use keel::server::node::DEFAULT_GROUP;

pub const NODES: [u64; 3] = [1, 2, 3];
const WRITERS: u32 = 3;
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// The workload runs this long before the first fault and after the last heal.
const WARM_UP: Duration = Duration::from_secs(3);
const AFTER_HEAL: Duration = Duration::from_secs(5);
const CONVERGE_MAX: Duration = Duration::from_secs(60);
const READ_MAX: Duration = Duration::from_secs(60);

pub struct Options {
    pub seed: u64,
    pub duration: Duration,
    /// Where node data and logs go.
    pub dir: PathBuf,
    pub history: PathBuf,
}

pub struct Outcome {
    pub report: Report,
    pub schedule: Schedule,
    pub windows_run: usize,
    pub elapsed: Duration,
}

pub async fn run(opts: &Options, net: Option<&mut Topology>, schedule: Schedule) -> Result<Outcome, String> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let nodes = Nodes::start(&opts.dir, &NODES, net.as_deref())?;
    let recorder = Recorder::create(&opts.history).map_err(|e| format!("{}: {e}", opts.history.display()))?;
    let tls = nodes.tls.clone();
    let addrs = nodes.addrs();
    let probe = Client::connect(workload::client_config(addrs.clone(), &tls)).await.map_err(|e| e.to_string())?;
    let mut nemesis = Nemesis::new(nodes, net, probe, recorder.clone());
    let deadline = Instant::now() + LEADER_WAIT;
    while nemesis.leader().await.is_none() {
        if Instant::now() > deadline {
            return Err(format!("no leader within {LEADER_WAIT:?}\n{}", nemesis.nodes.log_tail(1, 20)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consumers: Vec<(u64, String)> = NODES.iter().map(|id| (*id, nemesis.nodes.addr(*id))).collect();
    let mut workload = Workload::start(WRITERS, addrs, consumers, tls.clone(), recorder.clone(), opts.seed).await;
    println!("{:>9.1}s  cluster up, workload running", recorder.now());
    tokio::time::sleep(WARM_UP).await;

    // The fault phase: windows one after the other until the duration is spent.
    let faults_from = Instant::now();
    let mut windows_run = 0;
    for window in &schedule.windows {
        if faults_from.elapsed() >= opts.duration {
            break;
        }
        if window.faults.iter().any(Fault::needs_netns) && !nemesis.has_net() {
            continue;
        }
        let mut active = nemesis.start(window).await;
        tokio::time::sleep(window.hold / 2).await;
        nemesis.midway(&mut active);
        tokio::time::sleep(window.hold - window.hold / 2).await;
        nemesis.heal(active).await;
        windows_run += 1;
        note_crashes(&mut nemesis, &recorder);
        tokio::time::sleep(window.calm).await;
    }

    // Heal everything, let the producers see the cluster whole again, then converge.
    nemesis.heal_all().await;
    tokio::time::sleep(AFTER_HEAL).await;
    workload.stop_producers().await;
    note_crashes(&mut nemesis, &recorder);
    println!("{:>9.1}s  healed; producers stopped; waiting for the replicas to converge", recorder.now());
    let converged = converge(&nemesis).await;
    let (commit, end) = match converged {
        Ok(c) => c,
        Err(what) => {
            let t = recorder.now();
            recorder.record(Op::Problem { t, what: what.clone() });
            println!("{what}");
            (0, 0)
        }
    };
    let positions = workload.finish_consumers(end, READ_MAX).await;
    for (k, p) in positions.iter().enumerate() {
        if p.is_none_or(|p| p < end) {
            let what = format!("consumer {} did not reach offset {end} (at {p:?})", k + 1);
            let t = recorder.now();
            recorder.record(Op::Problem { t, what });
        }
    }
    if end > 0 {
        for id in NODES {
            match workload::read_all(nemesis.nodes.addr(id), &tls, end, READ_MAX).await {
                Ok(ids) => {
                    let t = recorder.now();
                    recorder.record(Op::Final { t, node: id, ids });
                }
                Err(what) => {
                    let t = recorder.now();
                    recorder.record(Op::Problem { t, what: format!("final read of n{id}: {what}") });
                }
            }
        }
    }
    println!("{:>9.1}s  final reads done; stopping the nodes to compare their files", recorder.now());
    nemesis.nodes.stop_all(Duration::from_secs(10));
    if commit > 0 {
        let dirs: Vec<(u64, PathBuf)> =
            NODES.iter().map(|id| (*id, group_log_dir(&nemesis.nodes.dir(*id), DEFAULT_GROUP))).collect();
        let differences = tokio::task::spawn_blocking(move || compare(&dirs, commit))
            .await
            .unwrap_or_else(|e| vec![format!("compare failed: {e}")]);
        let t = recorder.now();
        recorder.record(Op::Compare { t, nodes: NODES.to_vec(), commit, differences });
    }
    let ops = recorder.ops();
    let report = checker::check(&ops);
    Ok(Outcome { report, schedule, windows_run, elapsed: started.elapsed() })
}

/// Nodes that exited without being killed crashed: a bug. Note it and restart them.
fn note_crashes(nemesis: &mut Nemesis<'_>, recorder: &Recorder) {
    for id in nemesis.nodes.ids() {
        if let Some(status) = nemesis.nodes.exited(id) {
            let tail = nemesis.nodes.log_tail(id, 15);
            let what =
                format!("n{id} exited by itself ({status}); log: {}\n{tail}", nemesis.nodes.log_path(id).display());
            println!("{what}");
            let t = recorder.now();
            recorder.record(Op::Problem { t, what });
            let _ = nemesis.nodes.restart(id);
        }
    }
}

/// Waits until one leader is known and every node has its whole log committed:
/// (commit index, end offset).
async fn converge(nemesis: &Nemesis<'_>) -> Result<(u64, u64), String> {
    let deadline = Instant::now() + CONVERGE_MAX;
    loop {
        let views = nemesis.views().await;
        let leader = views.values().filter(|v| v.role == "leader").max_by_key(|v| v.term);
        if let Some(l) = leader {
            let all = views.len() == NODES.len()
                && views.values().all(|v| {
                    v.commit_index == l.last_index
                        && v.last_index == l.last_index
                        && v.log_end_offset == l.log_end_offset
                });
            if all {
                return Ok((l.commit_index, l.log_end_offset));
            }
        }
        let last = views
            .values()
            .map(|v| {
                format!("n{}: {} term {} commit {} last {}", v.node_id, v.role, v.term, v.commit_index, v.last_index)
            })
            .collect::<Vec<_>>()
            .join(", ");
        if Instant::now() > deadline {
            return Err(format!("no convergence within {CONVERGE_MAX:?} after healing: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Compares the committed prefix (entries 1..=commit) of every node's log byte for byte.
fn compare(dirs: &[(u64, PathBuf)], commit: u64) -> Vec<String> {
    let config = segments::Config {
        segment_bytes: SEGMENT_BYTES,
        entry_bytes_max: (4 << 20) + 2048,
        ..segments::Config::default()
    };
    let mut logs: Vec<(u64, Vec<Entry>)> = Vec::new();
    let mut out = Vec::new();
    for (id, dir) in dirs {
        match read_log(dir, config, commit) {
            Ok(entries) => logs.push((*id, entries)),
            Err(e) => out.push(format!("n{id}: {e}")),
        }
    }
    let Some((first_id, first)) = logs.first() else { return out };
    for (id, entries) in &logs[1..] {
        if entries.len() != first.len() {
            out.push(format!("n{id} holds {} committed entries, n{first_id} {}", entries.len(), first.len()));
        }
        if let Some(k) = (0..entries.len().min(first.len())).find(|&k| entries[k].as_bytes() != first[k].as_bytes()) {
            out.push(format!("entry {} differs between n{first_id} and n{id}", first[k].index()));
        }
    }
    out
}

fn read_log(dir: &std::path::Path, config: segments::Config, commit: u64) -> Result<Vec<Entry>, String> {
    let (log, _) = Log::open(dir, config).map_err(|e| e.to_string())?;
    if log.first_index() != 1 || log.last_index() < commit {
        return Err(format!("log holds {}..={}, not 1..={commit}", log.first_index(), log.last_index()));
    }
    let mut out = Vec::new();
    while (out.len() as u64) < commit {
        let from = out.len() as u64 + 1;
        log.read(from, 8 << 20, &mut out).map_err(|e| format!("read from {from}: {e}"))?;
    }
    out.truncate(commit as usize);
    Ok(out)
}
