//! `keel consume`: print committed records of a topic from an offset: of one partition, or
//! of every partition at once (each read from the offset `--from` names in it).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use keel::batch::Record;
use keel::client::{Client, ClientError, GroupConfig, GroupConsumer, Offset};
use tokio::sync::mpsc;

use super::args::{ConsumeArgs, OutputFormat, TIMEOUT_DEFAULT};
use super::{Usage, client_config, print_notices};

pub fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let from = parse_offset(&args.from)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(consume(args, from))
}

pub fn parse_offset(text: &str) -> anyhow::Result<Offset> {
    match text {
        "earliest" => Ok(Offset::Earliest),
        "latest" => Ok(Offset::Latest),
        n => match n.parse::<u64>() {
            Ok(o) => Ok(Offset::At(o)),
            Err(_) => Err(Usage(format!(
                "--from `{text}` is not an offset: give a non-negative number, `earliest` or `latest`"
            ))
            .into()),
        },
    }
}

/// Records read ahead of printing, over every partition.
const READ_AHEAD_MAX: usize = 64;

/// What a partition's reader hands the printer.
type Read = Result<Vec<(u32, u64, Record)>, ClientError>;

async fn consume(args: ConsumeArgs, from: Offset) -> anyhow::Result<ExitCode> {
    // --timeout bounds each wait for a node that serves, with or without --follow: a quiet
    // log never times out (an empty long poll is an answer), an unreachable cluster does.
    let client = Client::connect(client_config(&args.client, TIMEOUT_DEFAULT)).await?;
    print_notices(&client, |notice| eprintln!("{notice}"));
    if let Some(group) = args.group.clone() {
        return consume_group(&client, &group, &args, from).await;
    }
    let topic = args.select.topic.clone();
    let partitions: Vec<u32> = match args.select.partition {
        Some(p) => vec![p],
        None => (0..client.partitions(&topic).await?).collect(),
    };
    let (tx, mut rx) = mpsc::channel::<Read>(READ_AHEAD_MAX);
    for partition in partitions {
        let (client, tx, topic) = (client.clone(), tx.clone(), topic.clone());
        tokio::spawn(async move {
            let result = read_partition(&client, &topic, partition, from, args.follow, &tx).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    drop(tx);
    let mut printed = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(read) = rx.recv().await {
        for (partition, offset, record) in read? {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            print_record(&mut out, args.format, &topic, partition, offset, &record)?;
            printed += 1;
        }
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        if args.follow {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `keel consume --group`: reads what the group assigns this member, printing each batch of
/// records and then committing the offset after the last printed of each partition, until
/// every assigned partition is read to the end it had when assigned (or on and on with
/// `--follow`), `--count` records are printed, or SIGINT/SIGTERM; then leaves the group, so
/// that its partitions go to the other members at once.
async fn consume_group(client: &Client, group: &str, args: &ConsumeArgs, from: Offset) -> anyhow::Result<ExitCode> {
    let config = GroupConfig { from, ..GroupConfig::default() };
    let mut consumer = client.group_consumer(group, &[args.select.topic.as_str()], config);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    // The ends of the assigned partitions when they were assigned, by generation.
    let mut ends: (i32, BTreeMap<(String, u32), u64>) = (-1, BTreeMap::new());
    let stop = super::signals::terminate();
    tokio::pin!(stop);
    loop {
        let records = tokio::select! {
            records = consumer.poll() => records?,
            _ = &mut stop => break,
        };
        let mut next: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for r in &records {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            print_record(&mut out, args.format, &r.topic, r.partition, r.offset, &r.record)?;
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
            printed += 1;
        }
        out.flush()?;
        // Committed only once printed: a crash between the two prints them again.
        match consumer.commit_offsets(&next).await {
            Ok(()) => {}
            Err(ClientError::Group(e)) => eprintln!("warning: commit refused ({e}); joining the group again"),
            Err(e) => return Err(e.into()),
        }
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        if !args.follow && !consumer.must_join() && read_to_end(client, &consumer, &mut ends).await? {
            break;
        }
    }
    out.flush()?;
    drop(out);
    if let Err(e) = consumer.leave().await {
        eprintln!("warning: could not leave group {group} ({e}); its partitions move once the session times out");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether every partition assigned in this generation is read up to the end it had when
/// first looked at in this generation.
async fn read_to_end(
    client: &Client,
    consumer: &GroupConsumer,
    ends: &mut (i32, BTreeMap<(String, u32), u64>),
) -> Result<bool, ClientError> {
    if ends.0 != consumer.generation() {
        ends.1.clear();
        for (topic, partition) in consumer.assignment() {
            let end = client.end_offset(&topic, partition).await?;
            ends.1.insert((topic, partition), end);
        }
        ends.0 = consumer.generation();
    }
    Ok(consumer.positions().iter().all(|(key, position)| {
        let end = ends.1.get(key).copied().unwrap_or(0);
        position.is_some_and(|p| p >= end) || end == 0
    }))
}

/// Reads one partition from `from` and hands its records over in order: up to the end of
/// the committed log as it is now, or on and on with `follow`.
async fn read_partition(
    client: &Client,
    topic: &str,
    partition: u32,
    from: Offset,
    follow: bool,
    tx: &mpsc::Sender<Read>,
) -> Result<(), ClientError> {
    let mut consumer = client.consumer_of(topic, partition, from);
    let start = consumer.start().await?;
    let end = if follow { u64::MAX } else { client.end_offset(topic, partition).await? };
    if start > end {
        let first = client.start_offset(topic, partition).await?;
        return Err(ClientError::OffsetOutOfRange { requested: start, start: first, end });
    }
    while consumer.position().is_none_or(|p| p < end) {
        let records: Vec<(u32, u64, Record)> = consumer
            .poll()
            .await?
            .into_iter()
            .take_while(|(offset, _)| *offset < end)
            .map(|(offset, record)| (partition, offset, record))
            .collect();
        if !records.is_empty() && tx.send(Ok(records)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn print_record(
    out: &mut impl Write,
    format: OutputFormat,
    topic: &str,
    partition: u32,
    offset: u64,
    record: &Record,
) -> std::io::Result<()> {
    let value = record.value_bytes();
    match format {
        OutputFormat::Text => {
            out.write_all(value)?;
            out.write_all(b"\n")
        }
        OutputFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("topic".into(), topic.into());
            obj.insert("partition".into(), partition.into());
            obj.insert("offset".into(), offset.into());
            obj.insert("timestamp".into(), record.timestamp_ms.into());
            obj.insert("key".into(), record.key.as_ref().map_or(serde_json::Value::Null, |k| bytes_json(k)));
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.as_ref().map_or(serde_json::Value::Null, |v| bytes_json(v))))
                .collect();
            obj.insert("headers".into(), headers.into());
            match (&record.value, std::str::from_utf8(value)) {
                (None, _) => {
                    obj.insert("value".into(), serde_json::Value::Null);
                }
                (Some(_), Ok(s)) => {
                    obj.insert("value".into(), s.into());
                }
                (Some(_), Err(_)) => {
                    obj.insert("value".into(), base64::engine::general_purpose::STANDARD.encode(value).into());
                    obj.insert("encoding".into(), "base64".into());
                }
            }
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")
        }
    }
}

/// A key or header value: a string when it is UTF-8, else `{"base64": "..."}`.
fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}
