//! One run: start a cluster, create a topic of several partitions, drive the workload
//! through the schedule's faults, heal, wait for every partition's replicas to converge,
//! read every node's whole log of every partition, compare the segment files byte for
//! byte, and check the history.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel::client::{Client, ClientError};
use segments::{Entry, Log};

use super::checker::{self, Report};
use super::history::{Op, Part, Recorder};
use super::nemesis::Nemesis;
use super::net::Topology;
use super::nodes::{Nodes, SEGMENT_BYTES};
use super::schedule::{Fault, Schedule};
use super::workload::{self, Reader, Workload};
use keel::server::layout::group_log_dir;

pub const NODES: [u64; 3] = [1, 2, 3];
/// The topic under test: one producer per partition, one consumer per partition (each
/// through another node, in turn), every replica on every node.
pub const TOPIC: &str = "faults";
pub const PARTITIONS: u32 = 4;
const REPLICAS: u16 = 3;
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
    let mut nemesis = Nemesis::new(nodes, net, probe.clone(), recorder.clone());
    let groups = create_topic(&probe).await.map_err(|e| format!("{e}\n{}", nemesis.nodes.log_tail(1, 20)))?;
    nemesis.set_topic(TOPIC, groups);
    let deadline = Instant::now() + LEADER_WAIT;
    for p in 0..PARTITIONS {
        loop {
            let views = nemesis.views(p).await;
            if views.len() == NODES.len() && views.values().any(|v| v.role == "leader") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{TOPIC}/{p} has no leader, or a node no replica, within {LEADER_WAIT:?}\n{}",
                    nemesis.nodes.log_tail(1, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    check_group_dirs(&nemesis)?;
    let parts: Vec<Part> = (0..PARTITIONS).map(|p| Part::new(TOPIC, p)).collect();
    let readers = (0..PARTITIONS)
        .map(|p| {
            let node = NODES[p as usize % NODES.len()];
            Reader { part: Part::new(TOPIC, p), node, addr: nemesis.nodes.addr(node) }
        })
        .collect();
    let mut workload = Workload::start(parts.clone(), addrs, readers, tls.clone(), recorder.clone(), opts.seed).await;
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
    // Per partition: (commit index, end offset) once converged.
    let converged: Vec<(u64, u64)> = match converge(&nemesis).await {
        Ok(c) => c,
        Err(what) => {
            let t = recorder.now();
            recorder.record(Op::Problem { t, what: what.clone() });
            println!("{what}");
            vec![(0, 0); PARTITIONS as usize]
        }
    };
    let end_of = |part: &Part| converged.get(part.partition as usize).map_or(0, |c| c.1);
    for (part, end, position) in workload.finish_consumers(end_of, READ_MAX).await {
        if position.is_none_or(|p| p < end) {
            let what = format!("the consumer of {part} did not reach offset {end} (at {position:?})");
            let t = recorder.now();
            recorder.record(Op::Problem { t, what });
        }
    }
    for (part, (_, end)) in parts.iter().zip(&converged) {
        if *end == 0 {
            continue;
        }
        for id in NODES {
            match workload::read_all(nemesis.nodes.addr(id), part, &tls, *end, READ_MAX).await {
                Ok(ids) => {
                    let t = recorder.now();
                    recorder.record(Op::Final { t, part: part.clone(), node: id, ids });
                }
                Err(what) => {
                    let t = recorder.now();
                    recorder.record(Op::Problem { t, what: format!("final read of {part} from n{id}: {what}") });
                }
            }
        }
    }
    println!("{:>9.1}s  final reads done; stopping the nodes to compare their files", recorder.now());
    nemesis.nodes.stop_all(Duration::from_secs(10));
    for ((part, (commit, _)), group) in parts.iter().zip(&converged).zip(nemesis.groups.clone()) {
        if *commit == 0 {
            continue;
        }
        let dirs: Vec<(u64, PathBuf)> =
            NODES.iter().map(|id| (*id, group_log_dir(&nemesis.nodes.dir(*id), group))).collect();
        let commit = *commit;
        let differences = tokio::task::spawn_blocking(move || compare(&dirs, commit))
            .await
            .unwrap_or_else(|e| vec![format!("compare failed: {e}")]);
        let t = recorder.now();
        recorder.record(Op::Compare { t, part: part.clone(), nodes: NODES.to_vec(), commit, differences });
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

/// Creates the topic under test (the cluster's metadata group may still be electing its
/// first leader: retried until `LEADER_WAIT`); returns its partitions' Raft groups.
async fn create_topic(probe: &Client) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + LEADER_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let created = match probe.create_topic(TOPIC, Some(PARTITIONS), Some(REPLICAS), &[]).await {
            Ok(created) => Some(created),
            // An attempt that timed out may have created it.
            Err(ClientError::TopicExists(_)) => match probe.metadata(Some(&[TOPIC])).await {
                Ok(metadata) => metadata.topic(TOPIC).cloned(),
                Err(e) => {
                    last = e.to_string();
                    None
                }
            },
            Err(e) => {
                last = e.to_string();
                None
            }
        };
        if let Some(topic) = created {
            let mut partitions = topic.partitions;
            partitions.sort_by_key(|p| p.partition);
            if partitions.len() == PARTITIONS as usize {
                return Ok(partitions.iter().map(|p| p.group).collect());
            }
            last = format!("{TOPIC} has {} partitions, not {PARTITIONS}", partitions.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("could not create the topic {TOPIC} within {LEADER_WAIT:?}: {last}"))
}

/// Disk faults and the final comparison find a partition's files by the group the
/// metadata names: each partition must have a group of its own, in a directory on every node.
fn check_group_dirs(nemesis: &Nemesis<'_>) -> Result<(), String> {
    let distinct: std::collections::BTreeSet<u64> = nemesis.groups.iter().copied().collect();
    if distinct.len() != nemesis.groups.len() {
        return Err(format!("the metadata names groups {:?} for {TOPIC}'s partitions: not one each", nemesis.groups));
    }
    for id in NODES {
        for (p, group) in nemesis.groups.iter().enumerate() {
            let dir = group_log_dir(&nemesis.nodes.dir(id), *group);
            if !dir.is_dir() {
                return Err(format!("{TOPIC}/{p} is group {group}, but n{id} has no {}", dir.display()));
            }
        }
    }
    Ok(())
}

/// Waits until, in every partition, one leader is known and every node has its whole
/// log committed: (commit index, end offset) per partition.
async fn converge(nemesis: &Nemesis<'_>) -> Result<Vec<(u64, u64)>, String> {
    let deadline = Instant::now() + CONVERGE_MAX;
    let mut out = Vec::new();
    for p in 0..nemesis.partitions() {
        loop {
            let views = nemesis.views(p).await;
            let leader = views.values().filter(|v| v.role == "leader").max_by_key(|v| v.term);
            if let Some(l) = leader {
                let all = views.len() == NODES.len()
                    && views.values().all(|v| {
                        v.commit_index == l.last_index
                            && v.last_index == l.last_index
                            && v.log_end_offset == l.log_end_offset
                    });
                if all {
                    out.push((l.commit_index, l.log_end_offset));
                    break;
                }
            }
            if Instant::now() > deadline {
                let last = views
                    .values()
                    .map(|v| {
                        let (id, role, term) = (v.node_id, &v.role, v.term);
                        format!("n{id}: {role} term {term} commit {} last {}", v.commit_index, v.last_index)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!("{TOPIC}/{p}: no convergence within {CONVERGE_MAX:?} after healing: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(out)
}

/// Compares the committed prefix (entries 1..=commit) of every node's log byte for byte.
fn compare(dirs: &[(u64, PathBuf)], commit: u64) -> Vec<String> {
    let config = segments::Config {
        segment_bytes: SEGMENT_BYTES,
        // Any entry a segment can hold: the node's own limit is below it.
        entry_bytes_max: (SEGMENT_BYTES - segments::SEGMENT_HEADER_LEN as u64) as u32,
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
