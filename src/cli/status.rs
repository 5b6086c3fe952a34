//! `keel status`: the cluster as each member sees it, merged into one picture.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel::client::Client;
use keel::net::client_codec::ClusterView;
use serde::Serialize;

use super::args::{OutputFormat, StatusArgs};
use super::client_config;

#[derive(Serialize)]
struct Status {
    cluster_id: String,
    leader: Option<u64>,
    term: u64,
    log_start_offset: u64,
    log_end_offset: u64,
    nodes: Vec<NodeStatus>,
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
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut config = client_config(&args.client);
        config.request_timeout = Duration::from_secs(3);
        let client = Client::connect(config).await?;
        if args.ready {
            let addr = args.client.bootstrap.first().context("--bootstrap names no node")?;
            return ready(&client, addr).await;
        }
        let first = client.metadata().await.context("no node answered")?;
        let mut views: Vec<(u64, String, Option<ClusterView>)> = Vec::new();
        let asks = first.members.iter().map(|m| {
            let client = client.clone();
            let (id, address) = (m.id, m.address.clone());
            async move {
                let view = if address.is_empty() { None } else { client.metadata_from(&address).await.ok() };
                (id, address, view)
            }
        });
        for answer in futures_join_all(asks).await {
            views.push(answer);
        }
        let status = merge(&first, &views);
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
    let view = client.metadata_from(addr).await.with_context(|| format!("not ready: {addr} did not answer"))?;
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

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("status task"));
    }
    out
}

fn merge(first: &ClusterView, views: &[(u64, String, Option<ClusterView>)]) -> Status {
    // The leader's own view is the authority; else the view with the highest term.
    let reachable = || views.iter().filter_map(|(_, _, v)| v.as_ref());
    let leader_view = reachable().filter(|v| v.role == "leader").max_by_key(|v| v.term);
    let best = leader_view.or_else(|| reachable().max_by_key(|v| v.term)).unwrap_or(first);
    let leader_last = leader_view.map(|l| l.last_index);
    let nodes = views
        .iter()
        .map(|(id, address, view)| match view {
            Some(v) => {
                let matched =
                    leader_view.and_then(|l| l.members.iter().find(|m| m.id == *id)).and_then(|m| m.match_index);
                let lag = leader_last.map(|last| last.saturating_sub(matched.unwrap_or(v.last_index)));
                NodeStatus {
                    id: *id,
                    address: address.clone(),
                    role: v.role.clone(),
                    commit_index: Some(v.commit_index),
                    last_index: Some(v.last_index),
                    lag,
                }
            }
            None => NodeStatus {
                id: *id,
                address: address.clone(),
                role: "unreachable".into(),
                commit_index: None,
                last_index: None,
                lag: None,
            },
        })
        .collect();
    Status {
        cluster_id: format!("{:016x}", best.cluster_id),
        leader: leader_view.map(|l| l.node_id),
        term: best.term,
        log_start_offset: best.log_start_offset,
        log_end_offset: best.log_end_offset,
        nodes,
    }
}

fn print_text(s: &Status) {
    let leader = s.leader.map_or("none".to_string(), |l| format!("node {l}"));
    println!("cluster {}  leader {leader}  term {}", s.cluster_id, s.term);
    println!("offsets {}..{} (committed)", s.log_start_offset, s.log_end_offset);
    println!("{:>4}  {:<22} {:<12} {:>12} {:>12} {:>8}", "id", "address", "role", "commit", "last", "lag");
    let show = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    for n in &s.nodes {
        println!(
            "{:>4}  {:<22} {:<12} {:>12} {:>12} {:>8}",
            n.id,
            n.address,
            n.role,
            show(n.commit_index),
            show(n.last_index),
            show(n.lag)
        );
    }
}
