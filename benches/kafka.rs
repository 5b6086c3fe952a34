//! Throughput of the Kafka front end alone: the listener over the in-memory backend, on
//! loopback, with a client in the same process speaking the wire protocol (kafka-protocol
//! codecs). 1 KiB records in batches of 64, produced with a window of requests in flight
//! on one connection, then fetched back from offset 0 with large fetches. What it measures
//! is the front end's cost (framing, codecs, copies, the loopback socket), not keel's
//! replication or disk: the backend commits at once, in memory.
//!
//! `cargo bench --bench kafka` (`KEEL_BENCH_RECORDS=N` to change the 200 000 records).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use keel::kafka::memory::{MemoryBackend, MemoryConfig, local_broker};
use keel::kafka::{KafkaConfig, serve_on};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 64;
const WINDOW: usize = 16;
const TOPIC: &str = "bench";

fn request<R: Encodable>(api: ApiKey, version: i16, id: i32, body: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(id);
    let mut buf = BytesMut::new();
    header.encode(&mut buf, api.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

async fn response<T: Decodable>(reader: &mut BufReader<OwnedReadHalf>, api: ApiKey, version: i16) -> T {
    let len = reader.read_i32().await.unwrap() as usize;
    let mut frame = vec![0u8; len];
    reader.read_exact(&mut frame).await.unwrap();
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    T::decode(&mut frame, version).unwrap()
}

fn batch(first: usize) -> Bytes {
    let records: Vec<Record> = (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: (first + i) as i64,
            key: None,
            value: Some(Bytes::from(vec![b'x'; RECORD_BYTES])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

fn produce(records: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]),
    ])
}

fn fetch(offset: i64) -> FetchRequest {
    let partition = FetchPartition::default().with_fetch_offset(offset).with_partition_max_bytes(32 << 20);
    FetchRequest::default().with_max_wait_ms(0).with_min_bytes(1).with_max_bytes(32 << 20).with_topics(vec![
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str(TOPIC))).with_partitions(vec![partition]),
    ])
}

/// The offset after the last batch in `records`, from the batch headers alone (a client
/// would check CRCs; that cost is the client's, not the front end's, and is left out).
fn end_of_last_batch(records: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut end = None;
    while at + 61 <= records.len() {
        let field = |from: usize, n: usize| &records[at + from..at + from + n];
        let base = i64::from_be_bytes(field(0, 8).try_into().unwrap());
        let length = i32::from_be_bytes(field(8, 4).try_into().unwrap()) as usize;
        let count = i32::from_be_bytes(field(57, 4).try_into().unwrap());
        end = Some(base + i64::from(count));
        at += 12 + length;
    }
    end
}

async fn connect(addr: std::net::SocketAddr) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, write) = stream.into_split();
    (BufReader::with_capacity(1 << 20, read), write)
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::var("KEEL_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let batches = records / RECORDS_PER_BATCH;
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let mut memory = MemoryConfig::new(local_broker(addr));
    memory.bytes_max = 4 << 30;
    let _listener = serve_on(socket, KafkaConfig::new(addr), Arc::new(MemoryBackend::new(memory)), None).unwrap();
    let (mut reader, mut writer) = connect(addr).await;
    let topics = vec![MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))];
    writer
        .write_all(&request(ApiKey::Metadata, 8, 0, &MetadataRequest::default().with_topics(Some(topics))))
        .await
        .unwrap();
    let _: kafka_protocol::messages::MetadataResponse = response(&mut reader, ApiKey::Metadata, 8).await;

    // Batches are encoded before the clock starts: the client's encoding is not measured.
    let encoded: Vec<Vec<u8>> =
        (0..batches).map(|b| request(ApiKey::Produce, 7, b as i32, &produce(batch(b * RECORDS_PER_BATCH)))).collect();
    let bytes = (batches * RECORDS_PER_BATCH * RECORD_BYTES) as f64;
    let started = Instant::now();
    let (mut sent, mut acked) = (0, 0);
    while acked < batches {
        while sent < batches && sent - acked < WINDOW {
            writer.write_all(&encoded[sent]).await.unwrap();
            sent += 1;
        }
        let answer: ProduceResponse = response(&mut reader, ApiKey::Produce, 7).await;
        assert_eq!(answer.responses[0].partition_responses[0].error_code, 0);
        acked += 1;
    }
    let produce_s = started.elapsed().as_secs_f64();

    let (mut reader, mut writer) = connect(addr).await;
    let end = (batches * RECORDS_PER_BATCH) as i64;
    let started = Instant::now();
    let (mut offset, mut fetched, mut fetches) = (0i64, 0usize, 0);
    while offset < end {
        writer.write_all(&request(ApiKey::Fetch, 11, fetches, &fetch(offset))).await.unwrap();
        let answer: FetchResponse = response(&mut reader, ApiKey::Fetch, 11).await;
        let records = answer.responses[0].partitions[0].records.clone().unwrap();
        offset = end_of_last_batch(&records).expect("a fetch below the end returns a batch");
        fetched += records.len();
        fetches += 1;
    }
    let fetch_s = started.elapsed().as_secs_f64();
    let mib = |b: f64, s: f64| b / s / (1 << 20) as f64;
    println!(
        "kafka front end, in-memory backend, {} records of {RECORD_BYTES} B in batches of {RECORDS_PER_BATCH}:",
        batches * RECORDS_PER_BATCH
    );
    println!(
        "  produce (acks=all, {WINDOW} requests in flight): {:.0} records/s, {:.0} MiB/s",
        (batches * RECORDS_PER_BATCH) as f64 / produce_s,
        mib(bytes, produce_s)
    );
    println!("  fetch ({fetches} fetches of up to 32 MiB): {:.0} MiB/s", mib(fetched as f64, fetch_s));
}
