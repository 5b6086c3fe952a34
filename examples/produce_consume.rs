//! Produce a few records and read them back with the client library.
//!
//! Start a cluster with `cargo run --release -- dev`, then, from the same directory:
//! `cargo run --release --example produce_consume`.

use std::time::Duration;

use keel::client::{Client, ClientConfig, Offset, ProducerConfig};
use keel::record::Record;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KEEL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7000".into());
    let tls = std::env::var("KEEL_TLS").unwrap_or_else(|_| "./keel-data/tls".into());
    let client = Client::connect(ClientConfig::new(bootstrap.split(','), tls)).await?;

    // One batch, acknowledged once committed on a majority.
    let first = client.produce(vec![Record::new("hello"), Record::new("world")]).await?;
    println!("produced 2 records at offsets {first} and {}", first + 1);

    // A batching producer with a window of batches in flight.
    let producer = client.producer(ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..1000 {
        let record = Record { key: Some(format!("key-{}", i % 10).into()), ..Record::new(format!("value-{i}")) };
        acks.push(producer.send(record).await);
    }
    producer.close().await;
    let mut last = first;
    for ack in acks {
        last = last.max(ack.await??);
    }
    println!("produced 1000 more records, the last at offset {last}");

    // Read everything from the first offset, from any node.
    let mut consumer = client.consumer(Offset::At(first)).max_wait(Duration::from_millis(200));
    let mut read = 0;
    while consumer.position().unwrap_or(first) <= last {
        for (offset, record) in consumer.poll().await? {
            if read < 3 {
                println!("offset {offset}: {}", String::from_utf8_lossy(&record.value));
            }
            read += 1;
        }
    }
    println!("read {read} records back");
    Ok(())
}
