//! `keel partition move TOPIC/PARTITION --to 1,4,5 [--wait 60s] [--abort]`: starts a move
//! (or follows the one in progress to the same target), prints each phase its group's
//! leader reports, and exits 0 once the metadata shows the new replicas.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel::client::{Client, ClientError};
use keel::net::client_codec::PartitionView;
use tokio::time::Instant;

use super::Usage;
use super::args::{PartitionArgs, PartitionCommand, TIMEOUT_DEFAULT};
use super::{client_config, print_notices};

/// How often the move's progress is looked at.
const POLL_PERIOD: Duration = Duration::from_millis(300);

pub fn run(args: PartitionArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            PartitionCommand::Move { client, partition, to, wait, abort } => {
                let (topic, partition) = parse_partition(&partition)?;
                let client = Client::connect(client_config(&client, TIMEOUT_DEFAULT)).await?;
                print_notices(&client, |notice| eprintln!("{notice}"));
                if abort {
                    abort_move(&client, &topic, partition, wait).await
                } else {
                    move_partition(&client, &topic, partition, &to, wait).await
                }
            }
        }
    })
}

/// `orders/0` -> ("orders", 0); a topic name may not hold '/', so the last one splits.
fn parse_partition(text: &str) -> Result<(String, u32), Usage> {
    let usage = || Usage(format!("{text:?} is not TOPIC/PARTITION (e.g. orders/0)"));
    let (topic, partition) = text.rsplit_once('/').ok_or_else(usage)?;
    let partition = partition.parse().map_err(|_| usage())?;
    if topic.is_empty() {
        return Err(usage());
    }
    Ok((topic.to_string(), partition))
}

/// The partition as the metadata leader has it.
async fn partition_view(client: &Client, topic: &str, partition: u32) -> Result<PartitionView, ClientError> {
    let metadata = client.metadata_from_leader(Some(&[topic])).await?;
    let t = metadata.topic(topic).ok_or_else(|| ClientError::UnknownTopic(topic.to_string()))?;
    let count = t.partitions.len() as u32;
    t.partitions
        .get(partition as usize)
        .cloned()
        .ok_or_else(|| ClientError::Invalid(format!("topic {topic:?} has no partition {partition} (it has {count})")))
}

async fn move_partition(
    client: &Client,
    topic: &str,
    partition: u32,
    to: &[u64],
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let now = partition_view(client, topic, partition).await?;
    if now.target.is_empty() {
        if now.replicas == to {
            println!("{topic}/{partition} already has the replicas {}", ids(to));
            return Ok(ExitCode::SUCCESS);
        }
        client.move_partition(topic, partition, to).await?;
        println!("moving {topic}/{partition} from {} to {}", ids(&now.replicas), ids(to));
    } else if now.target == to {
        println!("{topic}/{partition} is already moving to {}; following it", ids(to));
    } else {
        let why = format!(
            "{topic}/{partition} is already moving to {}; wait for that move to finish, or abandon it with --abort",
            ids(&now.target)
        );
        return Err(ClientError::Invalid(why).into());
    }
    let deadline = Instant::now() + wait;
    let mut last = String::new();
    loop {
        if let Ok(p) = partition_view(client, topic, partition).await
            && p.target.is_empty()
        {
            if p.replicas == to {
                println!("moved {topic}/{partition}: replicas {}", ids(&p.replicas));
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("the move of {topic}/{partition} was abandoned: replicas {}", ids(&p.replicas));
            return Ok(ExitCode::FAILURE);
        }
        if let Ok(Some((phase, behind))) = client.move_status(topic, partition).await {
            let line = if behind.is_empty() { phase } else { format!("{phase} (not caught up: {})", ids(&behind)) };
            if line != last {
                println!("  {line}");
                last = line;
            }
        }
        if Instant::now() >= deadline {
            let at = if last.is_empty() { "unknown (its leader did not answer)".to_string() } else { last };
            eprintln!(
                "the move of {topic}/{partition} to {} did not finish within {wait:?}; it is at: {at}. It goes on in \
                 the cluster: run the same command to follow it, or add --abort to abandon it (possible until it \
                 enters joint consensus)",
                ids(to)
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

async fn abort_move(client: &Client, topic: &str, partition: u32, wait: Duration) -> anyhow::Result<ExitCode> {
    let now = partition_view(client, topic, partition).await?;
    if now.target.is_empty() {
        println!("{topic}/{partition} has no move in progress (replicas {})", ids(&now.replicas));
        return Ok(ExitCode::SUCCESS);
    }
    client.abort_move(topic, partition).await?;
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(p) = partition_view(client, topic, partition).await
            && p.target.is_empty()
        {
            println!("abandoned the move of {topic}/{partition}: replicas {}", ids(&p.replicas));
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            eprintln!("the abort of {topic}/{partition}'s move was accepted but the metadata did not show it in time");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse_as_topic_slash_number() {
        assert_eq!(parse_partition("orders/3").unwrap(), ("orders".to_string(), 3));
        for bad in ["orders", "/1", "orders/", "orders/x", "orders/-1"] {
            assert!(parse_partition(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
