//! `keel status`: the cluster as each member sees it, merged into one picture. Every node
//! is asked at once, each within --timeout (handshake included), so a node that is down
//! costs one timeout, not a QUIC idle timeout per node.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel::client::{Client, ClientError};
use keel::net::client_codec::{ClusterView, DiskView};
use serde::Serialize;

use super::args::{OutputFormat, STATUS_TIMEOUT_DEFAULT, StatusArgs};
use super::client_config;

/// The metadata group (its leader, term, log and members) and the cluster's topics.
#[derive(Serialize)]
struct Status {
    cluster_id: String,
    leader: Option<u64>,
    term: u64,
    log_start_offset: u64,
    log_end_offset: u64,
    nodes: Vec<NodeStatus>,
    topics: u32,
    under_replicated_partitions: u32,
}

#[derive(Serialize)]
struct NodeStatus {
    id: u64,
    address: String,
    role: String,
    commit_index: Option<u64>,
    last_index: Option<u64>,
    /// Entries this node is behind the leader's log.
    lag: Option<u64>,
    /// Free bytes on the file system of the node's data directory.
    disk_free_bytes: Option<u64>,
    /// The node's `disk_free_bytes_min`: below it, the node refuses produce.
    disk_reserve_bytes: Option<u64>,
    refuses_produce: Option<bool>,
}

/// What one node answered: its view, and its disk (`None` if that question failed).
type Answer = Result<(ClusterView, Option<DiskView>), ClientError>;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let timeout = args.client.timeout.unwrap_or(STATUS_TIMEOUT_DEFAULT);
        let mut config = client_config(&args.client, timeout);
        config.request_timeout = timeout;
        config.connect_timeout = timeout;
        let client = Client::connect(config).await?;
        if args.ready {
            let addr = args.client.bootstrap.first().context("--bootstrap names no node")?;
            return ready(&client, addr).await;
        }
        let answers = ask_everyone(&client, &args.client.bootstrap).await;
        let status = merge(&answers, timeout)?;
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            OutputFormat::Text => print_text(&status),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `--ready`: whether the node at `addr` knows a leader. A node that does can serve reads
/// and send producers to the leader; one that does not is cut off from a quorum or still
/// starting. Prints one line either way; exit status 1 when not ready.
async fn ready(client: &Client, addr: &str) -> anyhow::Result<ExitCode> {
    let view = match client.status_from(addr).await {
        Ok(view) => view,
        Err(e @ ClientError::Certificate(_)) => return Err(e.into()),
        Err(e) => return Err(e).with_context(|| format!("not ready: {addr} did not answer")),
    };
    match view.leader {
        Some(leader) => {
            println!("ready: node {} ({}) knows leader node {leader} in term {}", view.node_id, view.role, view.term);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("not ready: node {} ({}) knows no leader in term {}", view.node_id, view.role, view.term);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Asks every bootstrap node at once and, as views name members not asked yet, those too;
/// each question is bounded by the client's timeouts. Answers by address.
async fn ask_everyone(client: &Client, bootstrap: &[String]) -> HashMap<SocketAddr, Answer> {
    let mut asks = tokio::task::JoinSet::new();
    let mut asked = BTreeSet::new();
    let mut answers = HashMap::new();
    for name in bootstrap {
        if let Some(addr) = resolve(name)
            && asked.insert(addr)
        {
            asks.spawn(ask(client.clone(), addr));
        }
    }
    while let Some(joined) = asks.join_next().await {
        let Ok((addr, answer)) = joined else { continue };
        if let Ok((view, _)) = &answer {
            for member in &view.members {
                if let Some(other) = resolve(&member.address)
                    && asked.insert(other)
                {
                    asks.spawn(ask(client.clone(), other));
                }
            }
        }
        answers.insert(addr, answer);
    }
    answers
}

async fn ask(client: Client, addr: SocketAddr) -> (SocketAddr, Answer) {
    let name = addr.to_string();
    let answer = match client.status_from(&name).await {
        // The disk is read from memory on the node: once it answered, this is quick.
        Ok(view) => Ok((view, client.disk_from(&name).await.ok())),
        Err(e) => Err(e),
    };
    (addr, answer)
}

fn resolve(name: &str) -> Option<SocketAddr> {
    name.to_socket_addrs().ok()?.next()
}

fn merge(answers: &HashMap<SocketAddr, Answer>, timeout: Duration) -> anyhow::Result<Status> {
    let views = || answers.values().filter_map(|a| a.as_ref().ok()).map(|(view, _)| view);
    // The leader's own view is the authority; else the view with the highest term.
    let leader_view = views().filter(|v| v.role == "leader").max_by_key(|v| v.term);
    let Some(best) = leader_view.or_else(|| views().max_by_key(|v| v.term)) else {
        let mut errors = answers.values().filter_map(|a| a.as_ref().err());
        return Err(match errors.clone().find(|e| matches!(e, ClientError::Certificate(_))) {
            Some(certificate) => certificate.clone().into(),
            None => match errors.next() {
                Some(e) => anyhow::Error::from(e.clone()).context(format!("no node answered within {timeout:?}")),
                None => anyhow::anyhow!("--bootstrap names no address that resolves"),
            },
        });
    };
    let leader_last = leader_view.map(|l| l.last_index);
    let nodes = best
        .members
        .iter()
        .map(|member| {
            let answer = resolve(&member.address).and_then(|a| answers.get(&a)).and_then(|a| a.as_ref().ok());
            let unreachable = NodeStatus {
                id: member.id,
                address: member.address.clone(),
                role: "unreachable".into(),
                commit_index: None,
                last_index: None,
                lag: None,
                disk_free_bytes: None,
                disk_reserve_bytes: None,
                refuses_produce: None,
            };
            let Some((v, disk)) = answer else { return unreachable };
            let matched =
                leader_view.and_then(|l| l.members.iter().find(|m| m.id == member.id)).and_then(|m| m.match_index);
            NodeStatus {
                role: v.role.clone(),
                commit_index: Some(v.commit_index),
                last_index: Some(v.last_index),
                lag: leader_last.map(|last| last.saturating_sub(matched.unwrap_or(v.last_index))),
                disk_free_bytes: disk.map(|d| d.free_bytes),
                disk_reserve_bytes: disk.map(|d| d.reserve_bytes),
                refuses_produce: disk.map(|d| d.refuses_produce()),
                ..unreachable
            }
        })
        .collect();
    Ok(Status {
        cluster_id: format!("{:016x}", best.cluster_id),
        leader: leader_view.map(|l| l.node_id),
        term: best.term,
        log_start_offset: best.log_start_offset,
        log_end_offset: best.log_end_offset,
        nodes,
        topics: best.topics,
        under_replicated_partitions: leader_view
            .map_or(best.under_replicated_partitions, |l| l.under_replicated_partitions),
    })
}

/// Bytes as people read them: `812 MiB`, `61.2 GiB`.
fn bytes_text(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    if bytes >= 10 << 30 {
        format!("{:.0} GiB", bytes as f64 / GIB)
    } else if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn print_text(s: &Status) {
    let leader = s.leader.map_or("none".to_string(), |l| format!("node {l}"));
    println!("cluster {}  metadata leader {leader}  term {}", s.cluster_id, s.term);
    println!(
        "topics {}  under-replicated partitions {}  metadata log {}..{} (committed)",
        s.topics, s.under_replicated_partitions, s.log_start_offset, s.log_end_offset
    );
    println!(
        "{:>4}  {:<22} {:<12} {:>12} {:>12} {:>8} {:>10}",
        "id", "address", "role", "commit", "last", "lag", "disk free"
    );
    let show = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    for n in &s.nodes {
        let refuses = if n.refuses_produce == Some(true) { "  refuses produce" } else { "" };
        println!(
            "{:>4}  {:<22} {:<12} {:>12} {:>12} {:>8} {:>10}{refuses}",
            n.id,
            n.address,
            n.role,
            show(n.commit_index),
            show(n.last_index),
            show(n.lag),
            n.disk_free_bytes.map_or("-".to_string(), bytes_text),
        );
    }
    for n in s.nodes.iter().filter(|n| n.refuses_produce == Some(true)) {
        let reserve = n.disk_reserve_bytes.unwrap_or_default();
        println!(
            "node {} refuses produce: {} free, below the {} reserve (disk_free_bytes_min)",
            n.id,
            bytes_text(n.disk_free_bytes.unwrap_or_default()),
            bytes_text(reserve)
        );
    }
}
