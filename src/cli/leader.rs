//! `keel leader balance`: leadership back to each partition's preferred replica.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel::client::Client;
use keel::net::client_codec::LeaderMoveView;
use serde_json::json;
use tokio::time::Instant;

use super::args::{LeaderArgs, LeaderCommand, OutputFormat, TIMEOUT_DEFAULT};
use super::{client_config, print_notices};

/// How often the new leaders are looked for while waiting.
const POLL_PERIOD: Duration = Duration::from_millis(200);

pub fn run(args: LeaderArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(leader(args.command))
}

async fn leader(command: LeaderCommand) -> anyhow::Result<ExitCode> {
    match command {
        LeaderCommand::Balance { client, wait, format } => {
            let client = Client::connect(client_config(&client, TIMEOUT_DEFAULT)).await?;
            print_notices(&client, |notice| eprintln!("{notice}"));
            let moves = client.balance_leaders().await?;
            let moved = wait_moved(&client, &moves, wait).await;
            print(&moves, &moved, format);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Which of the started moves the cluster shows done within `wait`.
async fn wait_moved(client: &Client, moves: &[LeaderMoveView], wait: Duration) -> Vec<bool> {
    let deadline = Instant::now() + wait;
    let mut moved = vec![false; moves.len()];
    loop {
        if let Ok(metadata) = client.metadata(None).await {
            for (m, done) in moves.iter().zip(moved.iter_mut()) {
                let leader = metadata.topic(&m.topic).and_then(|t| t.partitions.get(m.partition as usize));
                *done = m.started && leader.is_some_and(|p| p.leader == Some(m.to));
            }
        }
        let pending = moves.iter().zip(&moved).any(|(m, done)| m.started && !done);
        if !pending || Instant::now() >= deadline {
            return moved;
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

fn print(moves: &[LeaderMoveView], moved: &[bool], format: OutputFormat) {
    let node = |n: Option<u64>| n.map_or("none".to_string(), |n| format!("node {n}"));
    match format {
        OutputFormat::Json => {
            let list: Vec<_> = moves
                .iter()
                .zip(moved)
                .map(|(m, done)| {
                    json!({
                        "topic": m.topic, "partition": m.partition, "from": m.from, "to": m.to,
                        "moved": done, "note": note(m, *done),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::from(list));
        }
        OutputFormat::Text if moves.is_empty() => println!("every partition is led by its preferred replica"),
        OutputFormat::Text => {
            for (m, done) in moves.iter().zip(moved) {
                let what = if *done { "moved" } else { "not moved" };
                let (from, to) = (node(m.from), node(Some(m.to)));
                match note(m, *done) {
                    note if note.is_empty() => println!("{what} {}/{}: {from} -> {to}", m.topic, m.partition),
                    note => println!("{what} {}/{}: {from} -> {to}: {note}", m.topic, m.partition),
                }
            }
        }
    }
}

/// Why a move did not happen (empty when it did).
fn note(m: &LeaderMoveView, moved: bool) -> String {
    match (moved, m.started) {
        (true, _) => String::new(),
        (false, true) => "the transfer started but the new leader was not seen in time".into(),
        (false, false) => m.note.clone(),
    }
}
