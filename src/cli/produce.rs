//! `keel produce`: one record per stdin line, batched and pipelined, to one topic: to one
//! partition, or spread by key (records without a key in batches, round robin).

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::task::Poll;

use anyhow::Context;
use keel::batch::Record;
use keel::client::{Ack, Client, ClientError, ProducerConfig};
use tokio::io::AsyncBufReadExt;

use super::args::{ProduceArgs, TIMEOUT_DEFAULT};
use super::{client_config, print_notices};

/// Acks awaited at once: bounds memory while stdin is read ahead of the cluster.
const PENDING_ACKS_MAX: usize = 100_000;

pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(produce(args));
    // A read of stdin may still wait in one of the runtime's threads (a run that gave up
    // stops reading while stdin stays open): exit without waiting for it.
    runtime.shutdown_background();
    result
}

/// Whether a failed record ends the run: once the timeout passed without a node taking
/// records, or a certificate was refused, every later record would fail the same way.
fn ends_the_run(e: &ClientError) -> bool {
    matches!(e, ClientError::TimedOut { .. } | ClientError::Certificate(_))
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(client_config(&args.client, TIMEOUT_DEFAULT)).await?;
    print_notices(&client, |notice| eprintln!("{notice}"));
    let idempotence = !args.no_idempotence;
    let config = ProducerConfig { compression: args.compression.into(), idempotence, ..ProducerConfig::default() };
    let producer = client.producer(&args.select.topic, config);
    // With one partition an offset says where a record went; with several, `P:OFFSET`
    // (the producer learns the count at its first send, before any ack).
    let mut one_partition = args.select.partition.is_some();
    let mut lines = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin()).lines();
    let mut pending: VecDeque<Ack> = VecDeque::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut total, mut failed) = (0u64, 0u64);
    let mut first_error: Option<ClientError> = None;
    let mut input_open = true;
    let mut stopped_reading = false;
    let mut producer = Some(producer);
    while input_open || !pending.is_empty() {
        let room = input_open && pending.len() < PENDING_ACKS_MAX;
        // Acks are printed as they come, in input order, also while stdin is quiet.
        tokio::select! {
            ack = std::future::poll_fn(|cx| match pending.front_mut() {
                Some(ack) => std::pin::Pin::new(ack).poll(cx),
                None => Poll::Pending,
            }) => {
                pending.pop_front();
                if let Some(producer) = &producer {
                    one_partition |= producer.partitions() == Some(1);
                }
                let result = ack.unwrap_or_else(|_| Err(ClientError::Unavailable("the producer stopped".into())));
                match result {
                    Ok(d) if args.print_offsets && one_partition => writeln!(out, "{}", d.offset)?,
                    Ok(d) if args.print_offsets => writeln!(out, "{}:{}", d.partition, d.offset)?,
                    Ok(_) => {}
                    Err(e) => {
                        failed += 1;
                        if args.print_offsets {
                            writeln!(out, "-")?;
                        }
                        if ends_the_run(&e)
                            && let Some(producer) = producer.take()
                        {
                            // The records still pending are answered at once, as not acknowledged.
                            producer.abort();
                            stopped_reading = input_open;
                            input_open = false;
                        }
                        first_error.get_or_insert(e);
                    }
                }
                if pending.is_empty() {
                    out.flush()?;
                }
            }
            line = lines.next_line(), if room => {
                let Some(line) = line.context("cannot read stdin")? else {
                    input_open = false;
                    continue;
                };
                total += 1;
                let record = match args.key_separator.and_then(|sep| line.split_once(sep)) {
                    Some((key, value)) => Record::new(value.to_owned()).with_key(key.to_owned()),
                    None => Record::new(line),
                };
                let Some(producer) = &producer else { continue };
                pending.push_back(producer.send_to(args.select.partition, record).await);
            }
        }
    }
    if let Some(producer) = producer {
        producer.close().await;
    }
    out.flush()?;
    drop(out);
    if let Some(e) = first_error {
        let stopped = if stopped_reading { " (stopped reading stdin there)" } else { "" };
        eprintln!("error: {failed} of {total} records were not acknowledged{stopped}; the first failure: {e}");
        return Ok(ExitCode::FAILURE);
    }
    if idempotence && total > 0 {
        // Every ack is of a batch the leader checked by its producer sequence: a resent
        // batch was answered with its first append, never appended again.
        eprintln!("{total} records appended, each exactly once");
    }
    Ok(ExitCode::SUCCESS)
}
