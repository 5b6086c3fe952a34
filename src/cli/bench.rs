//! `keel bench`: produce N records of S bytes with a window of batches in flight, report
//! throughput and ack latency percentiles, optionally read everything back and verify it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel::batch::Record;
use keel::client::{Client, ClientError, Offset};
use tokio::sync::Mutex;

use super::args::{BenchArgs, TIMEOUT_DEFAULT};
use super::{Usage, client_config, print_notices};

/// A record's first 16 bytes say who wrote it (producer, sequence); the rest is derived
/// from those, so the consume phase can verify every byte without keeping a copy.
/// Sequences are global across producers (each record has a unique one).
const RECORD_HEADER: usize = 16;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.size < RECORD_HEADER {
        let why =
            format!("--size must be at least {RECORD_HEADER} bytes (each record carries its producer and sequence)");
        return Err(Usage(why).into());
    }
    if args.records == 0 || args.producers == 0 || args.window == 0 || args.batch_bytes == 0 {
        return Err(Usage("--records, --producers, --window and --batch-bytes must be at least 1".into()).into());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(bench(args))
}

fn value(producer: u64, seq: u64, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size);
    buf.put_u64_le(producer);
    buf.put_u64_le(seq);
    let mut x = producer.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    while buf.len() < size {
        // xorshift64*: cheap, deterministic filler.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let n = (size - buf.len()).min(8);
        buf.put_slice(&word[..n]);
    }
    buf.freeze()
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(client_config(&args.client, TIMEOUT_DEFAULT)).await?;
    let bar = ProgressBar::new(args.records);
    bar.set_style(
        ProgressStyle::with_template("{spinner} produce [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let said = bar.clone();
    print_notices(&client, move |notice| said.suspend(|| eprintln!("{notice}")));
    let topic = args.topic.clone();
    let partitions = bench_partitions(&client, &topic, args.partitions).await?;
    // Where each partition's records begin: what `--consume` reads back from.
    let mut start_offsets = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        start_offsets.push(client.end_offset(&topic, partition).await?);
    }
    let compression: keel::batch::Compression = args.compression.into();
    // The first failure a lane met; the other lanes then stop too (a bench that cannot
    // produce measures nothing).
    let stop: Arc<std::sync::Mutex<Option<ClientError>>> = Arc::default();
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")));
    let started = Instant::now();
    let per_batch = (args.batch_bytes / args.size).max(1) as u64;
    // Every producer runs `window` lanes; a lane sends one batch and waits for its ack, so
    // `window` batches are in flight and the latency is the request's, not a queue's.
    let lanes = (args.producers * args.window) as u64;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let produced: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..partitions).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    for lane in 0..lanes {
        let (client, latency, bar, next) = (client.clone(), latency.clone(), bar.clone(), next.clone());
        let (stop, topic, produced) = (stop.clone(), topic.clone(), produced.clone());
        let (size, total, producer) = (args.size, args.records, lane / args.window as u64);
        // Lanes take the partitions in turn, so every partition is written at once.
        let partition = (lane % u64::from(partitions)) as u32;
        tasks.spawn(async move {
            let mut failed = 0u64;
            loop {
                let first = next.fetch_add(per_batch, std::sync::atomic::Ordering::Relaxed);
                if first >= total || stop.lock().expect("stop lock").is_some() {
                    return failed;
                }
                let n = per_batch.min(total - first);
                let records: Vec<Record> =
                    (first..first + n).map(|seq| Record::new(value(producer, seq, size))).collect();
                let sent = Instant::now();
                match client.produce_compressed(&topic, partition, records, compression).await {
                    Ok(_) => {
                        produced[partition as usize].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        let micros = sent.elapsed().as_micros().max(1) as u64;
                        let _ = latency.lock().await.record_n(micros, n);
                        bar.inc(n);
                    }
                    Err(e) => {
                        failed += n;
                        stop.lock().expect("stop lock").get_or_insert(e);
                    }
                }
            }
        });
    }
    let mut failed = 0;
    while let Some(lane) = tasks.join_next().await {
        failed += lane.context("bench lane")?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let stopped = stop.lock().expect("stop lock").take();
    if let Some(e) = stopped {
        let acked = latency.lock().await.len();
        return Err(anyhow::Error::from(e).context(format!("bench stopped after {acked} acknowledged records")));
    }
    let acked = args.records - failed;
    let h = latency.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let rate = acked as f64 / elapsed.as_secs_f64();
    let mbps = rate * args.size as f64 / 1e6;
    println!(
        "produced {acked} records of {} B in {:.2?}: {rate:.0} records/s, {mbps:.1} MB/s ({failed} failed)",
        args.size, elapsed
    );
    println!(
        "ack latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    let mut summary = serde_json::json!({
        "topic": topic, "partitions": partitions,
        "records": acked, "failed": failed, "size": args.size, "window": args.window, "producers": args.producers,
        "batch_records": per_batch,
        "seconds": elapsed.as_secs_f64(), "records_per_sec": rate, "mb_per_sec": mbps,
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0
        },
    });
    drop(h);
    if args.consume {
        let counts: Vec<u64> = produced.iter().map(|c| c.load(std::sync::atomic::Ordering::Relaxed)).collect();
        let (verified, seconds) = consume_and_verify(&client, &topic, &start_offsets, &counts, args.size).await?;
        let rate = verified as f64 / seconds;
        println!(
            "consumed and verified {verified} records in {seconds:.2} s: {rate:.0} records/s, {:.1} MB/s",
            rate * args.size as f64 / 1e6
        );
        let consumed = &mut summary["consume"];
        consumed["records"] = verified.into();
        consumed["seconds"] = seconds.into();
        consumed["records_per_sec"] = rate.into();
        consumed["mb_per_sec"] = (rate * args.size as f64 / 1e6).into();
    }
    println!("{summary}");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// How many partitions of `topic` the bench writes: `wanted` (the topic is created with
/// that many if it does not exist), or all it has.
async fn bench_partitions(client: &Client, topic: &str, wanted: Option<u32>) -> anyhow::Result<u32> {
    let existing = match client.partitions(topic).await {
        Ok(count) => Some(count),
        Err(ClientError::UnknownTopic(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match (existing, wanted) {
        (Some(count), None) => Ok(count),
        (Some(count), Some(n)) if n <= count => Ok(n),
        (Some(count), Some(n)) => {
            bail!("topic {topic} has {count} partitions, fewer than --partitions {n}: use another --topic")
        }
        (None, wanted) => {
            let created = client.create_topic(topic, wanted, None, &[]).await?;
            Ok(created.partitions.len().max(1) as u32)
        }
    }
}

/// Reads every partition back from where the bench began in it (in turn) and checks every
/// record's bytes; `counts` says how many records each partition got.
async fn consume_and_verify(
    client: &Client,
    topic: &str,
    from: &[u64],
    counts: &[u64],
    size: usize,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut verified = 0u64;
    for (partition, (&from, &expected)) in from.iter().zip(counts).enumerate() {
        verified += verify_partition(client, topic, partition as u32, from, expected, size).await?;
    }
    Ok((verified, started.elapsed().as_secs_f64()))
}

async fn verify_partition(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
    expected: u64,
    size: usize,
) -> anyhow::Result<u64> {
    let mut consumer =
        client.consumer_of(topic, partition, Offset::At(from)).max_bytes(8 << 20).max_wait(Duration::from_millis(200));
    let mut verified = 0u64;
    let mut idle = 0;
    while verified < expected {
        let batch = consumer.poll().await?;
        if batch.is_empty() {
            idle += 1;
            if idle > 50 {
                bail!(
                    "only {verified} of {expected} records of partition {partition} came back within 10 s of silence"
                );
            }
            continue;
        }
        idle = 0;
        for (offset, record) in batch {
            let v = record.value_bytes();
            if v.len() != size {
                bail!("record at offset {offset} of partition {partition} has {} bytes, expected {size}", v.len());
            }
            let producer = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
            let seq = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
            if v != value(producer, seq, size) {
                bail!("record at offset {offset} (producer {producer}, seq {seq}) differs from what was sent");
            }
            verified += 1;
        }
    }
    Ok(verified)
}
