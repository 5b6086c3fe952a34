//! `keel produce`: one record per stdin line, batched and pipelined.

use std::collections::VecDeque;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use keel::client::{Client, ClientError, ProducerConfig};
use keel::record::Record;
use tokio::io::AsyncBufReadExt;

use super::args::ProduceArgs;
use super::client_config;

/// Acks awaited at once: bounds memory while stdin is read ahead of the cluster.
const PENDING_ACKS_MAX: usize = 100_000;

pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(produce(args))
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(client_config(&args.client)).await?;
    let producer = client.producer(ProducerConfig::default());
    let mut lines = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin()).lines();
    let mut pending = VecDeque::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut total, mut failed) = (0u64, 0u64);
    let mut first_error: Option<ClientError> = None;
    let mut settle = |ack: Result<Result<u64, ClientError>, _>, out: &mut dyn Write| -> std::io::Result<()> {
        let result = ack.unwrap_or_else(|_| Err(ClientError::Unavailable("the producer stopped".into())));
        match result {
            Ok(offset) if args.print_offsets => writeln!(out, "{offset}")?,
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                if args.print_offsets {
                    writeln!(out, "-")?;
                }
                first_error.get_or_insert(e);
            }
        }
        Ok(())
    };
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        total += 1;
        let record = match args.key_separator.and_then(|sep| line.split_once(sep)) {
            Some((key, value)) => Record { key: Some(key.to_owned().into()), ..Record::new(value.to_owned()) },
            None => Record::new(line),
        };
        pending.push_back(producer.send(record).await);
        // Print acks as soon as the oldest is in, keeping input order.
        while pending.len() >= PENDING_ACKS_MAX || pending.front_mut().is_some_and(|a| !a.is_empty()) {
            let ack = pending.pop_front().expect("non-empty");
            settle(ack.await, &mut out)?;
        }
    }
    producer.close().await;
    for ack in pending {
        settle(ack.await, &mut out)?;
    }
    out.flush()?;
    drop(out);
    if let Some(e) = first_error {
        eprintln!("error: {failed} of {total} records were not acknowledged; the first failure: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
