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

/// Four nodes, so that partitions of three replicas can move and a node can be
/// decommissioned while three remain.
pub const NODES: [u64; 4] = [1, 2, 3, 4];
/// The topic under test: one producer per partition, one consumer per partition (each
/// preferring another node, in turn), three replicas of each placed over the four nodes.
pub const TOPIC: &str = "faults";
pub const PARTITIONS: u32 = 4;
pub const REPLICAS: u16 = 3;
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
            let replicas = nemesis.replicas(p).await;
            let views = nemesis.views(p).await;
            let all = replicas.len() == usize::from(REPLICAS) && replicas.iter().all(|r| views.contains_key(r));
            if all && views.values().any(|v| v.role == "leader") {
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
    check_group_dirs(&nemesis).await?;
    let parts: Vec<Part> = (0..PARTITIONS).map(|p| Part::new(TOPIC, p)).collect();
    // Each consumer prefers one node (partition p node p mod 4 + 1, so every node's reads
    // are checked) and goes on through the others where that one holds no replica: the
    // replicas move.
    let readers =
        (0..PARTITIONS).map(|p| Reader { part: Part::new(TOPIC, p), prefer: p as usize % NODES.len() }).collect();
    let mut workload =
        Workload::start(parts.clone(), addrs, readers, NODES.to_vec(), tls.clone(), recorder.clone(), opts.seed).await;
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
    // Per partition once converged: its commit index, end offset and replicas.
    let converged: Vec<Converged> = match converge(&nemesis).await {
        Ok(c) => c,
        Err(what) => {
            let t = recorder.now();
            recorder.record(Op::Problem { t, what: what.clone() });
            println!("{what}");
            vec![Converged::default(); PARTITIONS as usize]
        }
    };
    let end_of = |part: &Part| converged.get(part.partition as usize).map_or(0, |c| c.end);
    for (part, end, position) in workload.finish_consumers(end_of, READ_MAX).await {
        if position.is_none_or(|p| p < end) {
            let what = format!("the consumer of {part} did not reach offset {end} (at {position:?})");
            let t = recorder.now();
            recorder.record(Op::Problem { t, what });
        }
    }
    // Each partition's current replicas (the moves changed them) are read and compared.
    for (part, c) in parts.iter().zip(&converged) {
        if c.end == 0 {
            continue;
        }
        for &id in &c.replicas {
            match workload::read_all(nemesis.nodes.addr(id), part, &tls, c.end, READ_MAX).await {
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
    for ((part, c), group) in parts.iter().zip(&converged).zip(nemesis.groups.clone()) {
        if c.commit == 0 {
            continue;
        }
        let dirs: Vec<(u64, PathBuf)> =
            c.replicas.iter().map(|id| (*id, group_log_dir(&nemesis.nodes.dir(*id), group))).collect();
        let commit = c.commit;
        let differences = tokio::task::spawn_blocking(move || compare(&dirs, commit))
            .await
            .unwrap_or_else(|e| vec![format!("compare failed: {e}")]);
        let t = recorder.now();
        recorder.record(Op::Compare { t, part: part.clone(), nodes: c.replicas.clone(), commit, differences });
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
/// metadata names: each partition must have a group of its own, in a directory on each of
/// its replicas.
async fn check_group_dirs(nemesis: &Nemesis<'_>) -> Result<(), String> {
    let distinct: std::collections::BTreeSet<u64> = nemesis.groups.iter().copied().collect();
    if distinct.len() != nemesis.groups.len() {
        return Err(format!("the metadata names groups {:?} for {TOPIC}'s partitions: not one each", nemesis.groups));
    }
    for (p, group) in (0..).zip(&nemesis.groups) {
        for id in nemesis.replicas(p).await {
            let dir = group_log_dir(&nemesis.nodes.dir(id), *group);
            if !dir.is_dir() {
                return Err(format!("{TOPIC}/{p} is group {group}, but n{id} has no {}", dir.display()));
            }
        }
    }
    Ok(())
}

/// A partition once converged: its leader's commit index and end offset, its replicas.
#[derive(Clone, Debug, Default)]
struct Converged {
    commit: u64,
    end: u64,
    replicas: Vec<u64>,
}

/// Waits until the members settled (`members_settled`) and, in every partition, one leader
/// is known, its configuration is exactly the replicas the metadata names (voters only:
/// no joint configuration, no learner of an unfinished move left) and every replica has
/// the whole log committed.
async fn converge(nemesis: &Nemesis<'_>) -> Result<Vec<Converged>, String> {
    let deadline = Instant::now() + CONVERGE_MAX;
    while let Err(why) = members_settled(nemesis).await {
        if Instant::now() > deadline {
            return Err(format!("the cluster's members did not settle within {CONVERGE_MAX:?} after healing: {why}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut out = Vec::new();
    for p in 0..nemesis.partitions() {
        loop {
            let placement = nemesis.placement(p).await.unwrap_or_default();
            let views = nemesis.views(p).await;
            let leader = views.values().filter(|v| v.role == "leader").max_by_key(|v| v.term);
            let mut replicas = placement.replicas.clone();
            replicas.sort_unstable();
            if let Some(l) = leader {
                let mut voters: Vec<u64> = l.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
                voters.sort_unstable();
                let settled = placement.target.is_empty() && voters == replicas && l.members.len() == voters.len();
                let all = replicas.iter().all(|r| {
                    views.get(r).is_some_and(|v| {
                        v.commit_index == l.last_index
                            && v.last_index == l.last_index
                            && v.log_end_offset == l.log_end_offset
                    })
                });
                if settled && all {
                    out.push(Converged { commit: l.commit_index, end: l.log_end_offset, replicas });
                    break;
                }
            }
            if Instant::now() > deadline {
                let last = views
                    .values()
                    .map(|v| {
                        let (id, role, term) = (v.node_id, &v.role, v.term);
                        let members: Vec<String> = v
                            .members
                            .iter()
                            .map(|m| format!("{}{}", m.id, if m.voter { "" } else { "(learner)" }))
                            .collect();
                        let members = members.join(",");
                        format!(
                            "n{id}: {role} term {term} commit {} last {} members {members}",
                            v.commit_index, v.last_index
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let (to, moving) = (&placement.target, if placement.target.is_empty() { "" } else { " moving to " });
                return Err(format!(
                    "{TOPIC}/{p}: no convergence within {CONVERGE_MAX:?} after healing (replicas {replicas:?}{moving}\
                     {to:?}): {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(out)
}

/// After the final heal, every node must be an active broker and a voter of the metadata
/// group again (a decommissioned node re-added), and no partition may be moving.
async fn members_settled(nemesis: &Nemesis<'_>) -> Result<(), String> {
    let metadata = nemesis.metadata().await?;
    let not_active: Vec<String> =
        metadata.brokers.iter().filter(|b| b.state != "active").map(|b| format!("n{} {}", b.id, b.state)).collect();
    if !not_active.is_empty() {
        return Err(format!("nodes not active: {}", not_active.join(", ")));
    }
    let moving: Vec<String> = metadata
        .topic(TOPIC)
        .map(|t| t.partitions.iter().filter(|p| !p.target.is_empty()).map(|p| format!("{TOPIC}/{}", p.partition)))
        .into_iter()
        .flatten()
        .collect();
    if !moving.is_empty() {
        return Err(format!("partitions still moving: {}", moving.join(", ")));
    }
    let views = nemesis.metadata_views().await;
    let Some(leader) = views.values().filter(|v| v.role == "leader").max_by_key(|v| v.term) else {
        return Err("no metadata leader".into());
    };
    let mut voters: Vec<u64> = leader.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    voters.sort_unstable();
    if voters != NODES {
        return Err(format!("the metadata group's voters are {voters:?}, not {NODES:?}"));
    }
    Ok(())
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
