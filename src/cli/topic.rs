//! `keel topic create|list|describe|delete`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use keel::client::Client;
use keel::net::client_codec::TopicView;
use serde_json::json;

use super::args::{ClientArgs, OutputFormat, TIMEOUT_DEFAULT, TopicArgs, TopicCommand};
use super::{client_config, print_notices};

pub fn run(args: TopicArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(topic(args.command))
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let client = Client::connect(client_config(args, TIMEOUT_DEFAULT)).await?;
    print_notices(&client, |notice| eprintln!("{notice}"));
    Ok(client)
}

async fn topic(command: TopicCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicCommand::Create {
            client,
            name,
            partitions,
            replicas,
            retention_bytes,
            retention_ms,
            max_message_bytes,
            format,
        } => {
            let mut configs = Vec::new();
            let mut set = |key: &str, value: Option<String>| {
                if let Some(value) = value {
                    configs.push((key.to_string(), value));
                }
            };
            set("retention.bytes", retention_bytes.map(|v| v.to_string()));
            set("retention.ms", retention_ms.map(|v| v.to_string()));
            set("max.message.bytes", max_message_bytes.map(|v| v.to_string()));
            let client = connect(&client).await?;
            let created = client.create_topic(&name, partitions, replicas, &configs).await?;
            match format {
                OutputFormat::Json => println!("{}", describe_json(&created, &BTreeMap::new())),
                OutputFormat::Text => {
                    let replicas = created.partitions.first().map_or(0, |p| p.replicas.len());
                    println!("created topic {name}: {} partitions, {replicas} replicas each", created.partitions.len());
                }
            }
        }
        TopicCommand::List { client, internal, format } => {
            let client = connect(&client).await?;
            let metadata = client.metadata_from_leader(None).await?;
            let mut topics = metadata.topics;
            topics.retain(|t| internal || !t.internal);
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            match format {
                OutputFormat::Json => {
                    let list: Vec<_> = topics
                        .iter()
                        .map(|t| {
                            let replicas = t.partitions.first().map_or(0, |p| p.replicas.len());
                            json!({ "name": t.name, "partitions": t.partitions.len(), "replicas": replicas })
                        })
                        .collect();
                    println!("{}", serde_json::Value::from(list));
                }
                OutputFormat::Text => {
                    println!("{:<40} {:>10} {:>8}", "topic", "partitions", "replicas");
                    for t in &topics {
                        let replicas = t.partitions.first().map_or(0, |p| p.replicas.len());
                        println!("{:<40} {:>10} {:>8}", t.name, t.partitions.len(), replicas);
                    }
                }
            }
        }
        TopicCommand::Describe { client, name, format } => {
            let client = connect(&client).await?;
            let metadata = client.metadata_from_leader(Some(&[name.as_str()])).await?;
            let Some(topic) = metadata.topic(&name) else {
                return Err(keel::client::ClientError::UnknownTopic(name).into());
            };
            let topic = with_fresh_offsets(&client, topic.clone()).await;
            let phases = move_phases(&client, &topic).await;
            match format {
                OutputFormat::Json => println!("{}", describe_json(&topic, &phases)),
                OutputFormat::Text => print_describe(&topic, &phases),
            }
        }
        TopicCommand::Delete { client, name } => {
            let client = connect(&client).await?;
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `topic describe` waits for a partition's leader to say its offsets; past it, the
/// offsets the metadata carried (reported by the leaders, up to two seconds old) are shown.
const OFFSETS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long `topic describe` waits for the offsets of all partitions together.
const OFFSETS_WAIT_ALL: std::time::Duration = std::time::Duration::from_secs(60);
/// Partitions asked for their offsets at once.
const OFFSETS_IN_FLIGHT_MAX: usize = 64;

/// `topic` with each partition's start and end offsets asked of its leader, so that what
/// was just produced shows; a leader that does not answer within `OFFSETS_WAIT` leaves the
/// offsets the metadata carried.
async fn with_fresh_offsets(client: &Client, mut topic: TopicView) -> TopicView {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(OFFSETS_IN_FLIGHT_MAX));
    let mut asks = tokio::task::JoinSet::new();
    let started = tokio::time::Instant::now();
    for (i, p) in topic.partitions.iter().enumerate().filter(|(_, p)| p.leader.is_some()) {
        let (client, gate, name, partition) = (client.clone(), gate.clone(), topic.name.clone(), p.partition);
        asks.spawn(async move {
            let _turn = gate.acquire_owned().await;
            // Each ask is bounded from when it may go, and the whole by a minute.
            let until = (tokio::time::Instant::now() + OFFSETS_WAIT).min(started + OFFSETS_WAIT_ALL);
            (i, tokio::time::timeout_at(until, client.log_offsets(&name, partition)).await)
        });
    }
    while let Some(asked) = asks.join_next().await {
        if let Ok((i, Ok(Ok((start, end))))) = asked {
            topic.partitions[i].log_start_offset = Some(start);
            topic.partitions[i].log_end_offset = Some(end);
        }
    }
    topic
}

/// `{"name", "partitions": [{"partition", "group", "leader", "replicas", "in_sync", "log_start_offset",
/// "log_end_offset"}], "config": {...}}`: a stable contract for scripts.
/// Where each moving partition's move stands, as its leader says (`None`: no answer).
async fn move_phases(client: &keel::client::Client, t: &TopicView) -> BTreeMap<u32, Option<String>> {
    let moving = t.partitions.iter().filter(|p| !p.target.is_empty());
    let asks = moving.map(|p| async move {
        let phase = match client.move_status(&t.name, p.partition).await {
            Ok(Some((phase, behind))) if behind.is_empty() => Some(phase),
            Ok(Some((phase, behind))) => Some(format!("{phase} (behind: {behind:?})")),
            Ok(None) => Some("finished".to_string()),
            Err(_) => None,
        };
        (p.partition, phase)
    });
    futures_util::future::join_all(asks).await.into_iter().collect()
}

fn describe_json(t: &TopicView, phases: &BTreeMap<u32, Option<String>>) -> serde_json::Value {
    let partitions: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            json!({
                "target": (!p.target.is_empty()).then_some(&p.target),
                "move_phase": phases.get(&p.partition).cloned().flatten(),
                "partition": p.partition,
                "group": p.group,
                "leader": p.leader,
                "replicas": p.replicas,
                "in_sync": p.in_sync,
                "log_start_offset": p.log_start_offset,
                "log_end_offset": p.log_end_offset,
            })
        })
        .collect();
    let config: serde_json::Map<String, serde_json::Value> =
        t.config.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    json!({ "name": t.name, "partitions": partitions, "config": config })
}

fn print_describe(t: &TopicView, phases: &BTreeMap<u32, Option<String>>) {
    println!("topic {}  partitions {}", t.name, t.partitions.len());
    for (key, value) in &t.config {
        println!("  {key} = {value}");
    }
    let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let show = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    println!("{:>9}  {:>6}  {:<12} {:<12} {:>12} {:>12}", "partition", "leader", "replicas", "in sync", "start", "end");
    for p in &t.partitions {
        println!(
            "{:>9}  {:>6}  {:<12} {:<12} {:>12} {:>12}",
            p.partition,
            show(p.leader),
            ids(&p.replicas),
            ids(&p.in_sync),
            show(p.log_start_offset),
            show(p.log_end_offset)
        );
    }
    for p in t.partitions.iter().filter(|p| !p.target.is_empty()) {
        let phase = phases.get(&p.partition).cloned().flatten().unwrap_or_else(|| "leader not answering".into());
        println!("  partition {} moving to {}: {phase}", p.partition, ids(&p.target));
    }
}
