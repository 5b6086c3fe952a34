//! `keel node list`: every registered node, its role in the metadata group, the replicas
//! it hosts and leads, and whether it answers. Composed from the metadata and each node's
//! own status, asked of all nodes at once within --timeout. And `keel node decommission`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel::client::Client;
use keel::net::client_codec::{ClusterMetadata, ClusterView};
use serde::Serialize;

use super::args::{NodeArgs, NodeCommand, OutputFormat, STATUS_TIMEOUT_DEFAULT, TIMEOUT_DEFAULT};
use super::client_config;

/// How often a decommission's progress is looked at.
const POLL_PERIOD: Duration = Duration::from_millis(500);

#[derive(Serialize)]
struct NodeRow {
    id: u64,
    address: String,
    kafka_address: Option<String>,
    /// `voter` in the metadata group, `learner` (receives the metadata, votes on none; a
    /// `--voter` node stays one until caught up), or `broker` (not in the metadata group:
    /// being added, or removed).
    role: &'static str,
    /// Partition replicas placed on it (moves to it included; for a draining node, the
    /// replicas left to move off), and those it leads as far as the metadata says.
    partitions: usize,
    leaders: usize,
    /// `active` when it answers, `down` when it does not within --timeout; `draining` or
    /// `removed` as the metadata says once it is decommissioned.
    state: &'static str,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            NodeCommand::List { client, format } => {
                let timeout = client.timeout.unwrap_or(STATUS_TIMEOUT_DEFAULT);
                let mut config = client_config(&client, timeout);
                config.request_timeout = timeout;
                config.connect_timeout = timeout;
                // The metadata may take longer than one node's answer: a node may be down.
                config.timeout = timeout.max(super::args::TIMEOUT_DEFAULT.min(std::time::Duration::from_secs(10)));
                let client = Client::connect(config).await?;
                let metadata = client.metadata(None).await?;
                let asks = metadata.brokers.iter().map(|b| client.status_from(&b.address));
                let views: Vec<Option<ClusterView>> =
                    futures_util::future::join_all(asks).await.into_iter().map(Result::ok).collect();
                print(&rows(&metadata, &views), format);
                Ok(ExitCode::SUCCESS)
            }
            NodeCommand::Add { client, id, address, kafka_address, voter } => {
                let client = Client::connect(client_config(&client, TIMEOUT_DEFAULT)).await?;
                client.add_node(id, &address, kafka_address.as_deref(), voter).await?;
                let then = if voter { ", then a voter once caught up" } else { "" };
                println!(
                    "node {id} is registered at {address}: it joins the metadata group as a learner{then} once it \
                     runs (`keel serve --id {id} --join ...`); `keel node list` shows it"
                );
                Ok(ExitCode::SUCCESS)
            }
            NodeCommand::Decommission { client, id, wait } => {
                let client = Client::connect(client_config(&client, TIMEOUT_DEFAULT)).await?;
                let voters = metadata_voters(&client).await;
                let moves = client.decommission(id).await?;
                println!("node {id} is draining: {moves} partition replicas to move off");
                if let Some(voters) = voters.filter(|v| v.contains(&id)) {
                    let left = voters.len() - 1;
                    println!(
                        "node {id} is a metadata voter: once drained it leaves the metadata group, which then has \
                         {left} voters and keeps working with up to {} of them down{}",
                        (left - 1) / 2,
                        if left % 2 == 0 { " (an even count tolerates no more failures than one less)" } else { "" }
                    );
                }
                match wait {
                    Some(wait) => wait_removed(&client, id, wait).await,
                    None => Ok(ExitCode::SUCCESS),
                }
            }
        }
    })
}

/// The metadata group's voters, as a node that answers sees them.
async fn metadata_voters(client: &Client) -> Option<Vec<u64>> {
    let metadata = client.metadata(None).await.ok()?;
    for b in &metadata.brokers {
        if let Ok(view) = client.status_from(&b.address).await {
            return Some(view.members.iter().filter(|m| m.voter).map(|m| m.id).collect());
        }
    }
    None
}

/// Polls the metadata until node `id` is removed, printing the replicas it still hosts.
async fn wait_removed(client: &Client, id: u64, wait: Duration) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = None;
    loop {
        if let Ok(metadata) = client.metadata_from_leader(None).await {
            let state = metadata.broker(id).map_or("unknown", |b| b.state.as_str());
            if state == "removed" {
                println!("node {id} is removed: it hosts nothing and may be stopped");
                return Ok(ExitCode::SUCCESS);
            }
            let left = hosted(&metadata, id);
            if last != Some(left) {
                println!("  node {id} {state}: {left} partition replicas left");
                last = Some(left);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "node {id} still hosts {} partition replicas after {wait:?}; the moves go on in the cluster \
                 (`keel topic describe` shows each one's phase)",
                last.map_or("some".to_string(), |n| n.to_string())
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

/// The partitions node `id` hosts: those it is a replica of or a move adds it to.
fn hosted(metadata: &ClusterMetadata, id: u64) -> usize {
    let partitions = metadata.topics.iter().flat_map(|t| &t.partitions);
    partitions.filter(|p| p.replicas.contains(&id) || p.target.contains(&id)).count()
}

/// One row per broker; `views[i]` is broker i's own status, if it answered.
fn rows(metadata: &ClusterMetadata, views: &[Option<ClusterView>]) -> Vec<NodeRow> {
    // The metadata group's members as the metadata leader (else any node that answered)
    // sees them: a follower may not have applied the latest configuration.
    let leader = views.iter().flatten().find_map(|v| v.leader);
    let members = views
        .iter()
        .flatten()
        .find(|v| Some(v.node_id) == leader)
        .or_else(|| views.iter().flatten().next())
        .map(|v| &v.members);
    metadata
        .brokers
        .iter()
        .zip(views)
        .map(|(b, view)| {
            let replicas = metadata.topics.iter().flat_map(|t| &t.partitions);
            let member = members.and_then(|m| m.iter().find(|m| m.id == b.id));
            NodeRow {
                id: b.id,
                address: b.address.clone(),
                kafka_address: b.kafka_address.clone(),
                role: match member {
                    Some(m) if m.voter => "voter",
                    Some(_) => "learner",
                    None => "broker",
                },
                partitions: hosted(metadata, b.id),
                leaders: replicas.filter(|p| p.leader == Some(b.id)).count(),
                state: match (b.state.as_str(), view.is_some()) {
                    ("draining", true) => "draining",
                    ("draining", false) => "draining, down",
                    ("removed", true) => "removed",
                    ("removed", false) => "removed, down",
                    (_, true) => "active",
                    (_, false) => "down",
                },
            }
        })
        .collect()
}

fn print(rows: &[NodeRow], format: OutputFormat) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(rows).expect("rows serialize")),
        OutputFormat::Text => {
            println!("{:>4}  {:<22} {:<7} {:>10} {:>8}  state", "id", "address", "role", "partitions", "leaders");
            for r in rows {
                let (id, address, role, partitions, leaders) = (r.id, &r.address, r.role, r.partitions, r.leaders);
                println!("{id:>4}  {address:<22} {role:<7} {partitions:>10} {leaders:>8}  {}", r.state);
            }
        }
    }
}
