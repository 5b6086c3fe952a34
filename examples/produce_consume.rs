//! Create a topic, produce keyed records to it and read one partition back with the client
//! library.
//!
//! Start a cluster with `cargo run --release -- dev`, then, from the same directory:
//! `cargo run --release --example produce_consume`.

use std::time::Duration;

use keel::batch::Record;
use keel::client::{Client, ClientConfig, ClientError, Offset, ProducerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KEEL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7000".into());
    let tls = std::env::var("KEEL_TLS").unwrap_or_else(|_| "./keel-data/tls".into());
    let client = Client::connect(ClientConfig::new(bootstrap.split(','), tls)).await?;

    // A topic of 4 partitions (already there on a second run).
    match client.create_topic("example", Some(4), None, &[]).await {
        Ok(_) | Err(ClientError::TopicExists(_)) => {}
        Err(e) => return Err(e.into()),
    }

    // One batch to partition 0, acknowledged once committed on a majority.
    let first = client.produce_to("example", 0, vec![Record::new("hello"), Record::new("world")]).await?;
    println!("produced 2 records to partition 0 at offsets {first} and {}", first + 1);

    // A batching producer: a record's key picks its partition (as in any Kafka client).
    let producer = client.producer("example", ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..1000 {
        acks.push(producer.send(Record::new(format!("value-{i}")).with_key(format!("key-{}", i % 10))).await);
    }
    producer.close().await;
    let mut last_in_0 = first + 1;
    for ack in acks {
        let delivered = ack.await??;
        if delivered.partition == 0 {
            last_in_0 = last_in_0.max(delivered.offset);
        }
    }
    println!("produced 1000 keyed records; partition 0 ends at offset {last_in_0}");

    // Read partition 0 from the first offset, from any of its replicas.
    let mut consumer = client.consumer_of("example", 0, Offset::At(first)).max_wait(Duration::from_millis(200));
    let mut read = 0;
    while consumer.position().unwrap_or(first) <= last_in_0 {
        for (offset, record) in consumer.poll().await? {
            if read < 3 {
                println!("offset {offset}: {}", String::from_utf8_lossy(record.value_bytes()));
            }
            read += 1;
        }
    }
    println!("read {read} records of partition 0 back");
    Ok(())
}
