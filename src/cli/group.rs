//! `keel group list|describe`: consumer groups, whichever protocol their members speak.

use std::process::ExitCode;

use anyhow::Context;
use keel::client::{Client, GroupReport};
use serde_json::json;

use super::args::{ClientArgs, GroupArgs, GroupCommand, OutputFormat, TIMEOUT_DEFAULT};
use super::{client_config, print_notices};

pub fn run(args: GroupArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(group(args.command))
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let client = Client::connect(client_config(args, TIMEOUT_DEFAULT)).await?;
    print_notices(&client, |notice| eprintln!("{notice}"));
    Ok(client)
}

async fn group(command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::List { client, format } => {
            let groups = connect(&client).await?.list_groups().await?;
            match format {
                OutputFormat::Json => {
                    let list: Vec<_> = groups
                        .iter()
                        .map(
                            |g| json!({"group": g.group_id, "protocol_type": g.protocol_type, "state": g.state.name()}),
                        )
                        .collect();
                    println!("{}", serde_json::Value::from(list));
                }
                OutputFormat::Text => {
                    for g in &groups {
                        println!("{}\t{}\t{}", g.group_id, g.state.name(), g.protocol_type);
                    }
                }
            }
        }
        GroupCommand::Describe { client, group, format } => {
            let report = connect(&client).await?.describe_group(&group).await?;
            match format {
                OutputFormat::Json => println!("{}", describe_json(&report)),
                OutputFormat::Text => print_text(&report),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON form of `keel group describe`: a contract for scripts. Unknown numbers
/// (nothing committed, a deleted topic) are null.
fn describe_json(report: &GroupReport) -> serde_json::Value {
    let d = &report.description;
    let members: Vec<_> = d
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<_> = report
                .assignments
                .iter()
                .find(|(id, _)| *id == m.member_id)
                .map(|(_, parts)| parts.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect())
                .unwrap_or_default();
            json!({
                "member_id": m.member_id,
                "instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "host": m.client_host,
                "partitions": assigned,
            })
        })
        .collect();
    let partitions: Vec<_> = report
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "member_id": report.owner(&p.topic, p.partition),
                "committed": p.committed,
                "end": p.end,
                "lag": p.lag,
            })
        })
        .collect();
    json!({
        "group": d.group_id,
        "state": d.state.name(),
        "protocol_type": d.protocol_type,
        "protocol": d.protocol_name,
        "members": members,
        "partitions": partitions,
        "lag": keel::groups::total_lag(&report.partitions),
    })
}

fn print_text(report: &GroupReport) {
    let d = &report.description;
    let protocol = if d.protocol_name.is_empty() { "-" } else { d.protocol_name.as_str() };
    println!("group {}: {}, {} members, protocol {protocol}", d.group_id, d.state.name(), d.members.len());
    for m in &d.members {
        println!("  member {} ({}, {})", m.member_id, m.client_id, m.client_host);
    }
    println!("{:<24} {:>9} {:>12} {:>12} {:>10}  MEMBER", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG");
    let text = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for p in &report.partitions {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
            p.topic,
            p.partition,
            text(p.committed),
            text(p.end),
            text(p.lag),
            report.owner(&p.topic, p.partition).unwrap_or("-")
        );
    }
}
