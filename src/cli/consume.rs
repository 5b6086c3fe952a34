//! `keel consume`: print committed records from an offset.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use keel::client::{Client, ClientError, Offset};
use keel::record::Record;

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

async fn consume(args: ConsumeArgs, from: Offset) -> anyhow::Result<ExitCode> {
    // --timeout bounds each wait for a node that serves, with or without --follow: a quiet
    // log never times out (an empty long poll is an answer), an unreachable cluster does.
    let client = Client::connect(client_config(&args.client, TIMEOUT_DEFAULT)).await?;
    print_notices(&client, |notice| eprintln!("{notice}"));
    let mut consumer = client.consumer(from);
    let start = consumer.start().await?;
    // Without --follow, stop at the end of the committed log as it is now.
    let end = if args.follow { u64::MAX } else { client.end_offset().await? };
    if start > end {
        let first = client.metadata().await?.log_start_offset;
        return Err(ClientError::OffsetOutOfRange { requested: start, start: first, end }.into());
    }
    let mut printed = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        if args.count.is_some_and(|c| printed >= c) || consumer.position().is_some_and(|p| p >= end) {
            break;
        }
        for (offset, record) in consumer.poll().await? {
            if offset >= end || args.count.is_some_and(|c| printed >= c) {
                break;
            }
            print_record(&mut out, args.format, offset, &record)?;
            printed += 1;
        }
        if args.follow {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_record(out: &mut impl Write, format: OutputFormat, offset: u64, record: &Record) -> std::io::Result<()> {
    match format {
        OutputFormat::Text => {
            out.write_all(&record.value)?;
            out.write_all(b"\n")
        }
        OutputFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("offset".into(), offset.into());
            obj.insert("timestamp".into(), record.timestamp_ms.into());
            obj.insert("key".into(), record.key.as_ref().map_or(serde_json::Value::Null, |k| bytes_json(k)));
            let headers: serde_json::Map<String, serde_json::Value> =
                record.headers.iter().map(|(n, v)| (n.clone(), bytes_json(v))).collect();
            obj.insert("headers".into(), headers.into());
            match std::str::from_utf8(&record.value) {
                Ok(s) => {
                    obj.insert("value".into(), s.into());
                }
                Err(_) => {
                    obj.insert("value".into(), base64::engine::general_purpose::STANDARD.encode(&record.value).into());
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
