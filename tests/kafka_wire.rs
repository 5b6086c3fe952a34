//! The Kafka front end on loopback, over the in-memory backend, spoken to byte for byte as a
//! Kafka client would (requests encoded and responses decoded by kafka-protocol): every
//! advertised version, the produce and fetch semantics, pipelining, the limits, and bad
//! input. Real clients (kcat, librdkafka, kafka-python, aiokafka) are in `tests/kafka/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::CreateTopicsResponse;
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::DeleteTopicsResponse;
use kafka_protocol::messages::describe_configs_request::{DescribeConfigsRequest, DescribeConfigsResource};
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsResponse;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::OffsetForLeaderEpochResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, ProducerId, RequestHeader, ResponseHeader, TopicName, TransactionalId};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use kafka_protocol::records::{NO_PARTITION_LEADER_EPOCH, TimestampType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use keel::ids::Term;
use keel::kafka::backend::*;
use keel::kafka::memory::{MemoryBackend, MemoryConfig, local_broker};
use keel::kafka::versions::APIS;
use keel::kafka::{KafkaConfig, KafkaListener, serve_on};

/// Longest a test waits for any one answer.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(10);

async fn start(tune: impl FnOnce(&mut KafkaConfig, &mut MemoryConfig)) -> KafkaListener {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let mut config = KafkaConfig::new(addr);
    let mut memory = MemoryConfig::new(local_broker(addr));
    memory.auto_create_partitions = Some(2);
    tune(&mut config, &mut memory);
    serve_on(socket, config, Arc::new(MemoryBackend::new(memory)), None).unwrap()
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(text: &str) -> TopicName {
    TopicName(s(text))
}

/// A byte stream to the listener: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

struct Conn {
    stream: Box<dyn Stream>,
    next_id: i32,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn { stream: Box::new(TcpStream::connect(addr).await.unwrap()), next_id: 1 }
    }

    /// Sends a request; returns its correlation id.
    async fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, request: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(s("keel-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, api.request_header_version(version)).unwrap();
        request.encode(&mut body, version).unwrap();
        self.raw(&frame(&body)).await;
        id
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response frame; `None` once the server closed the connection.
    async fn recv_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let len = self.stream.read_i32().await.ok()?;
            let mut body = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Bytes::from(body))
        };
        tokio::time::timeout(ANSWER_WAIT_MAX, read).await.expect("an answer or a close in time")
    }

    async fn recv<T: Decodable + HeaderVersion>(&mut self, version: i16) -> (i32, T) {
        let mut frame = self.recv_frame().await.expect("a response, not a closed connection");
        let header = ResponseHeader::decode(&mut frame, T::header_version(version)).unwrap();
        let body = T::decode(&mut frame, version).unwrap_or_else(|e| panic!("decoding a v{version} response: {e}"));
        assert!(frame.is_empty(), "{} bytes left after a v{version} response", frame.len());
        (header.correlation_id, body)
    }

    async fn call<R: Encodable, T: Decodable + HeaderVersion>(&mut self, api: ApiKey, version: i16, request: &R) -> T {
        let id = self.send(api, version, request).await;
        let (got, response) = self.recv(version).await;
        assert_eq!(got, id, "answers come in request order");
        response
    }

    /// True once the server has closed the connection (after any answers still due).
    async fn closed(&mut self) -> bool {
        self.recv_frame().await.is_none()
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.put_i32(i32::try_from(body.len()).unwrap());
    out.extend_from_slice(body);
    out
}

fn record(key: &str, value: &str, timestamp: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: IndexMap::from([(s("h"), Some(Bytes::from_static(b"v")))]),
    }
}

/// One RecordBatch v2 of `n` records, timestamps from `t0` on, one millisecond apart.
fn batch(n: usize, t0: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let mut r = record(&format!("k{i}"), &format!("v{i}"), t0 + i as i64);
            r.offset = i as i64;
            // The encoder starts a new batch when offset - sequence changes; -1 is "none".
            r.sequence = i as i32 - 1;
            r
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .unwrap();
    buf.freeze()
}

/// Creates `name` (two partitions) the way clients do: by asking for its metadata.
async fn create(conn: &mut Conn, name: &str) {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic(name)))]));
    let response: MetadataResponse = conn.call(ApiKey::Metadata, 8, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
}

fn produce(name: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic(name)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ])
}

fn fetch(name: &str, partition: i32, offset: i64, max_wait_ms: i32, partition_max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(topic(name)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes),
        ])])
}

/// (error, base offset) of the only partition of a produce response.
fn produced(response: &ProduceResponse) -> (i16, i64) {
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// (error, high watermark, records) of the only partition of a fetch response.
fn fetched(response: &FetchResponse) -> (i16, i64, Bytes) {
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.high_watermark, p.records.clone().expect("records are never null"))
}

#[tokio::test]
async fn api_versions_answers_every_form_and_a_too_new_request_in_v0_with_error_35() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    for version in 0..=3 {
        let response: ApiVersionsResponse =
            conn.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default()).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(response.api_keys.len(), APIS.len());
        let produce = response.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (3, 7));
    }
    // v4 is newer than we advertise: the answer is the v0 body (and header v0).
    let id = conn.send(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default()).await;
    let (got, response): (i32, ApiVersionsResponse) = conn.recv(0).await;
    assert_eq!((got, response.error_code), (id, 35));
    assert_eq!(response.api_keys.len(), APIS.len());
}

/// Every advertised version of every API is answered with a response that decodes in that
/// version (the codecs refuse to encode a field the version lacks, so this catches it).
#[tokio::test]
async fn every_advertised_version_is_answered() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    for v in 0..=8 {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("t")))]));
        let response: MetadataResponse = conn.call(ApiKey::Metadata, v, &request).await;
        assert_eq!(response.topics[0].error_code, 0, "metadata v{v} auto-creates t");
        assert_eq!(response.topics[0].partitions.len(), 2);
        assert_eq!(response.brokers[0].port, i32::from(listener.local_addr().port()));
    }
    for v in 3..=7 {
        let response: ProduceResponse = conn.call(ApiKey::Produce, v, &produce("t", 0, batch(2, 1000), -1)).await;
        assert_eq!(produced(&response), (0, i64::from(v - 3) * 2), "produce v{v}");
    }
    for v in 4..=11 {
        let response: FetchResponse = conn.call(ApiKey::Fetch, v, &fetch("t", 0, 0, 0, 1 << 20)).await;
        let (error, high_watermark, records) = fetched(&response);
        assert_eq!((error, high_watermark), (0, 10), "fetch v{v}");
        assert_eq!(RecordBatchDecoder::decode_batch_info(&mut records.clone()).unwrap().len(), 5, "whole batches");
    }
    for v in 1..=4 {
        let request = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)]),
        ]);
        let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, v, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, 10), "list offsets v{v}");
    }
    for v in 2..=5 {
        let name = format!("created-{v}");
        let request = CreateTopicsRequest::default().with_timeout_ms(1000).with_topics(vec![
            CreatableTopic::default()
                .with_name(topic(&name))
                .with_num_partitions(3)
                .with_replication_factor(-1)
                .with_configs(vec![
                    CreatableTopicConfig::default().with_name(s("retention.ms")).with_value(Some(s("60000"))),
                ]),
        ]);
        let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, v, &request).await;
        assert_eq!(response.topics[0].error_code, 0, "create topics v{v}");
    }
    for v in 1..=4 {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("created-5"))
                .with_configuration_keys(None),
        ]);
        let response: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, v, &request).await;
        let result = &response.results[0];
        assert_eq!(result.error_code, 0);
        let retention = result.configs.iter().find(|c| c.name.as_str() == "retention.ms").unwrap();
        assert_eq!(retention.value.as_ref().map(|v| v.as_str()), Some("60000"), "describe configs v{v}");
    }
    for v in 2..=4 {
        let request = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default().with_topic(topic("t")).with_partitions(vec![
                OffsetForLeaderPartition::default().with_partition(0).with_current_leader_epoch(1).with_leader_epoch(1),
            ]),
        ]);
        let response: OffsetForLeaderEpochResponse = conn.call(ApiKey::OffsetForLeaderEpoch, v, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 1, 10), "offset for leader epoch v{v}");
    }
    for v in 0..=3 {
        let request = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        let response: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, v, &request).await;
        assert_eq!((response.error_code, response.producer_id.0, response.producer_epoch), (0, i64::from(v), 0));
        let transactional = request.with_transactional_id(Some(TransactionalId(s("tx"))));
        let response: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, v, &transactional).await;
        assert_eq!(response.error_code, 42, "init producer id v{v}: no transactions");
    }
    let bump = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_producer_id(ProducerId(3))
        .with_producer_epoch(0);
    let response: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 3, &bump).await;
    assert_eq!((response.error_code, response.producer_id.0, response.producer_epoch), (0, 3, 1), "KIP-360 bump");
    for v in 1..=5 {
        let name = format!("deleted-{v}");
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic(&name)))]));
        let _: MetadataResponse = conn.call(ApiKey::Metadata, 8, &request).await;
        let request = DeleteTopicsRequest::default().with_timeout_ms(1000).with_topic_names(vec![topic(&name)]);
        let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, v, &request).await;
        assert_eq!(response.responses[0].error_code, 0, "delete topics v{v}");
        let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, v, &request).await;
        assert_eq!(response.responses[0].error_code, 3, "delete topics v{v}: gone");
    }
}

/// A partition's records may hold several batches: each is appended, in order, and a fetch
/// from an offset inside a batch returns that whole batch, bytes unchanged but for the
/// stamped base offset and leader epoch.
#[tokio::test]
async fn produce_splits_batches_and_fetch_serves_them_whole() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    create(&mut conn, "split").await;
    let (first, second) = (batch(3, 1000), batch(2, 2000));
    let both = Bytes::from([first.clone(), second.clone()].concat());
    let response: ProduceResponse = conn.call(ApiKey::Produce, 7, &produce("split", 1, both, -1)).await;
    assert_eq!(produced(&response), (0, 0));
    let response: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch("split", 1, 1, 0, 1 << 20)).await;
    let (error, high_watermark, records) = fetched(&response);
    assert_eq!((error, high_watermark), (0, 5));
    assert_eq!(records.len(), first.len() + second.len());
    // Bytes 0..8 (base offset) and 12..16 (leader epoch) are stamped; all else is as sent.
    let stored_second = &records[first.len()..];
    assert_eq!((&stored_second[..8]).get_i64(), 3);
    assert_eq!((&stored_second[12..16]).get_i32(), 1);
    assert_eq!(&stored_second[16..], &second[16..]);
    assert_eq!(&records[8..12], &first[8..12]);
    let sets = RecordBatchDecoder::decode_all(&mut records.clone()).unwrap();
    let offsets: Vec<i64> = sets.iter().flat_map(|s| s.records.iter().map(|r| r.offset)).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    // Below the limit, the first batch still comes whole; the limit stops the second.
    let response: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch("split", 1, 4, 0, 10)).await;
    assert_eq!(fetched(&response).2.len(), second.len());
    let response: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch("split", 1, 0, 0, 10)).await;
    assert_eq!(fetched(&response).2.len(), first.len());
    // At the end: no records, but an empty set, never null.
    let response: FetchResponse = conn.call(ApiKey::Fetch, 4, &fetch("split", 1, 5, 0, 1 << 20)).await;
    assert_eq!(fetched(&response), (0, 5, Bytes::new()));
    let response: FetchResponse = conn.call(ApiKey::Fetch, 4, &fetch("split", 1, 6, 0, 1 << 20)).await;
    assert_eq!(fetched(&response).0, 1, "past the end: OFFSET_OUT_OF_RANGE");
}

#[tokio::test]
async fn a_produce_with_acks_0_gets_no_answer() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    create(&mut conn, "quiet").await;
    conn.send(ApiKey::Produce, 7, &produce("quiet", 0, batch(1, 1), 0)).await;
    let id = conn.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    let (got, _): (i32, ApiVersionsResponse) = conn.recv(3).await;
    assert_eq!(got, id, "the next answer is the next request's");
    let response: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch("quiet", 0, 0, 0, 1 << 20)).await;
    assert_eq!(fetched(&response).1, 1, "the acks=0 batch was appended");
}

/// A fetch at the end of the log waits until a batch commits (not until max_wait_ms), and
/// one that nothing arrives for waits max_wait_ms and answers empty.
#[tokio::test]
async fn fetch_long_polls_until_data_arrives_or_max_wait() {
    let listener = start(|_, _| {}).await;
    let mut producer = Conn::open(listener.local_addr()).await;
    create(&mut producer, "poll").await;
    let response: ProduceResponse = producer.call(ApiKey::Produce, 7, &produce("poll", 0, batch(1, 1), -1)).await;
    assert_eq!(produced(&response), (0, 0));
    let mut consumer = Conn::open(listener.local_addr()).await;
    let started = Instant::now();
    let response: FetchResponse = consumer.call(ApiKey::Fetch, 11, &fetch("poll", 0, 1, 300, 1 << 20)).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "waited max_wait_ms");
    assert_eq!(fetched(&response), (0, 1, Bytes::new()));
    let started = Instant::now();
    let id = consumer.send(ApiKey::Fetch, 11, &fetch("poll", 0, 1, 8000, 1 << 20)).await;
    let response: ProduceResponse = producer.call(ApiKey::Produce, 7, &produce("poll", 0, batch(2, 5), -1)).await;
    assert_eq!(produced(&response), (0, 1));
    let (got, response): (i32, FetchResponse) = consumer.recv(11).await;
    assert_eq!(got, id);
    assert!(started.elapsed() < Duration::from_secs(8), "answered when the batch came, not at max_wait_ms");
    assert_eq!(fetched(&response).1, 3);
}

/// Requests sent back to back are served at once and answered in order: a long poll first
/// does not hold back the answers behind it from being computed, only from being sent.
#[tokio::test]
async fn pipelined_requests_are_answered_in_request_order() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    create(&mut conn, "order").await;
    let mut ids = vec![conn.send(ApiKey::Fetch, 11, &fetch("order", 0, 0, 400, 1 << 20)).await];
    for i in 0..5 {
        ids.push(conn.send(ApiKey::Produce, 7, &produce("order", 0, batch(1, i), -1)).await);
    }
    let (got, response): (i32, FetchResponse) = conn.recv(11).await;
    assert_eq!(got, ids[0]);
    // The produce behind it arrived while it waited, so it answers with that data.
    assert!(fetched(&response).1 >= 1);
    for (i, &id) in ids[1..].iter().enumerate() {
        let (got, response): (i32, ProduceResponse) = conn.recv(7).await;
        assert_eq!((got, produced(&response)), (id, (0, i as i64)), "batches keep the order of their requests");
    }
}

/// What cannot be parsed closes that connection (after the answers due before it), and the
/// listener goes on serving everyone else.
#[tokio::test]
async fn bad_input_closes_only_its_connection() {
    let listener = start(|_, _| {}).await;
    let addr = listener.local_addr();
    let api_versions_v0 = {
        let mut body = BytesMut::new();
        RequestHeader::default().with_request_api_key(ApiKey::ApiVersions as i16).encode(&mut body, 1).unwrap();
        body
    };
    let header = |api: i16, version: i16| {
        let mut body = BytesMut::new();
        body.put_i16(api);
        body.put_i16(version);
        body.put_i32(7);
        body.put_i16(-1);
        body
    };
    let mut forged_metadata = header(ApiKey::Metadata as i16, 1);
    forged_metadata.put_i32(i32::MAX);
    forged_metadata.put_slice(b"only a few bytes");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 2 GiB length", i32::MAX.to_be_bytes().to_vec()),
        ("a negative length", (-4i32).to_be_bytes().to_vec()),
        ("a length over request_bytes_max", (64i32 << 20).to_be_bytes().to_vec()),
        ("an unknown api key", frame(&header(999, 0))),
        ("an api keel does not serve (FindCoordinator)", frame(&header(10, 0))),
        ("an unadvertised version (Produce v8)", frame(&header(0, 8))),
        ("an unadvertised version (Fetch v3)", frame(&header(1, 3))),
        ("a forged array count", frame(&forged_metadata)),
        ("garbage", frame(&[0x42; 40])),
    ];
    for (what, bytes) in cases {
        let mut conn = Conn::open(addr).await;
        // An answer due before the bad frame still comes.
        conn.raw(&frame(&api_versions_v0)).await;
        conn.raw(&bytes).await;
        assert!(conn.recv_frame().await.is_some(), "{what}: the answer due before it");
        assert!(conn.closed().await, "{what}: the connection is closed");
    }
    // A truncated frame: the length promises more than ever comes.
    let mut conn = Conn::open(addr).await;
    conn.raw(&[0, 0, 0, 100, 0, 18, 0, 0]).await;
    conn.stream.shutdown().await.unwrap();
    assert!(conn.closed().await, "a truncated frame: closed");
    // And others are still served.
    let mut conn = Conn::open(addr).await;
    let response: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
}

/// A batch whose CRC does not match is refused with CORRUPT_MESSAGE and not stored; a
/// partition's records that end inside a batch likewise.
#[tokio::test]
async fn a_batch_with_a_bad_crc_is_refused_as_corrupt() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    create(&mut conn, "crc").await;
    let mut bad = BytesMut::from(&batch(2, 1)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let response: ProduceResponse = conn.call(ApiKey::Produce, 7, &produce("crc", 0, bad.freeze(), -1)).await;
    assert_eq!(produced(&response), (2, -1));
    let cut = batch(2, 1).slice(..40);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 3, &produce("crc", 0, cut, 1)).await;
    assert_eq!(produced(&response), (2, -1));
    let response: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch("crc", 0, 0, 0, 1 << 20)).await;
    assert_eq!(fetched(&response).1, 0, "nothing was stored");
}

/// Backend errors reach the client as their Kafka codes: an unknown topic when the cluster
/// does not create topics, a stale leader epoch, an invalid topic name.
#[tokio::test]
async fn backend_errors_become_kafka_error_codes() {
    let listener = start(|_, memory| memory.auto_create_partitions = None).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("nope")))]));
    let response: MetadataResponse = conn.call(ApiKey::Metadata, 8, &request).await;
    assert_eq!(response.topics[0].error_code, 3);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 7, &produce("nope", 0, batch(1, 1), -1)).await;
    assert_eq!(produced(&response).0, 3);
    let request = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default().with_name(topic("bad name!")).with_num_partitions(1).with_replication_factor(1),
        CreatableTopic::default().with_name(topic("ok")).with_num_partitions(0).with_replication_factor(1),
        CreatableTopic::default().with_name(topic("ok")).with_num_partitions(1).with_replication_factor(3),
        CreatableTopic::default()
            .with_name(topic("ok"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default().with_name(s("cleanup.policy")).with_value(Some(s("compact"))),
            ]),
        CreatableTopic::default().with_name(topic("ok")).with_num_partitions(1).with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 5, &request).await;
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![17, 37, 38, 40, 0]);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 5, &request).await;
    assert_eq!(response.topics[4].error_code, 36, "TOPIC_ALREADY_EXISTS");
    let mut stale = fetch("ok", 0, 0, 0, 1 << 20);
    stale.topics[0].partitions[0].current_leader_epoch = 0;
    let response: FetchResponse = conn.call(ApiKey::Fetch, 11, &stale).await;
    assert_eq!(fetched(&response).0, 74, "FENCED_LEADER_EPOCH");
}

/// One connection more than connections_max is closed at once; once one closes, a new
/// connection is served again.
#[tokio::test]
async fn connections_past_the_limit_are_closed() {
    let listener = start(|config, _| config.connections_max = 2).await;
    let addr = listener.local_addr();
    let mut first = Conn::open(addr).await;
    let mut second = Conn::open(addr).await;
    for conn in [&mut first, &mut second] {
        let _: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    }
    let mut third = Conn::open(addr).await;
    third.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert!(third.closed().await, "the third connection is refused");
    drop(first);
    // The first's slot frees once its task sees the close; poll, bounded, until it has.
    let deadline = Instant::now() + ANSWER_WAIT_MAX;
    loop {
        let mut conn = Conn::open(addr).await;
        conn.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
        if conn.recv_frame().await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "a slot never freed up after a connection closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// ListOffsets by time finds the first record at or after the timestamp.
#[tokio::test]
async fn list_offsets_by_timestamp_finds_the_first_record_at_or_after_it() {
    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    create(&mut conn, "times").await;
    for t0 in [1000, 2000] {
        let _: ProduceResponse = conn.call(ApiKey::Produce, 7, &produce("times", 0, batch(3, t0), -1)).await;
    }
    for (at, offset, timestamp) in [(0, 0, 1000), (1001, 1, 1001), (1003, 3, 2000), (2002, 5, 2002), (2003, -1, -1)] {
        let request = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic("times"))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(at)]),
        ]);
        let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 4, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset, p.timestamp), (0, offset, timestamp), "at {at}");
    }
}

/// With a rustls configuration the listener speaks TLS: a TLS client is served, and a
/// client that speaks plain Kafka to it is closed without an answer.
#[tokio::test]
async fn a_tls_listener_serves_tls_clients_and_closes_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    keel::net::certs::generate(dir.path(), &[1], &[], false).unwrap();
    let server = keel::net::tls::NodeTls::load(dir.path(), 1, false).unwrap().server;
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let backend = Arc::new(MemoryBackend::new(MemoryConfig::new(local_broker(addr))));
    let _listener = serve_on(socket, KafkaConfig::new(addr), backend, Some(server)).unwrap();

    let connector = tokio_rustls::TlsConnector::from(keel::net::tls::client_config(dir.path()).unwrap());
    let name = rustls::pki_types::ServerName::try_from(keel::net::tls::node_name(1)).unwrap();
    let tls = connector.connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    let mut conn = Conn { stream: Box::new(tls), next_id: 1 };
    let response: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);

    let mut plain = Conn::open(addr).await;
    plain.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert!(plain.closed().await, "plain Kafka on a TLS listener is closed");
}

/// The memory backend, but each produce's placement takes longer the earlier it comes: if
/// the front end placed a connection's batches concurrently, later ones would overtake.
struct EarlierIsSlower {
    inner: MemoryBackend,
    produced: std::sync::atomic::AtomicU64,
}

impl KafkaBackend for EarlierIsSlower {
    fn metadata(&self, topics: Option<Vec<String>>, auto_create: bool) -> BackendFuture<'_, ClusterMetadata> {
        self.inner.metadata(topics, auto_create)
    }
    fn produce(&self, batch: ProduceBatch) -> BackendFuture<'_, PendingCommit> {
        let n = self.produced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let delay = Duration::from_millis(10 * 10u64.saturating_sub(n));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.inner.produce(batch).await
        })
    }
    fn fetch(&self, position: PartitionPosition, max: usize, whole: bool) -> BackendFuture<'_, FetchedRecords> {
        self.inner.fetch(position, max, whole)
    }
    fn wait_for_commit(&self, positions: Vec<PartitionPosition>, timeout: Duration) -> BackendFuture<'_, ()> {
        self.inner.wait_for_commit(positions, timeout)
    }
    fn list_offset(&self, position: PartitionPosition, query: OffsetQuery) -> BackendFuture<'_, ListedOffset> {
        self.inner.list_offset(position, query)
    }
    fn epoch_end_offset(&self, position: PartitionPosition, epoch: Term) -> BackendFuture<'_, EpochEnd> {
        self.inner.epoch_end_offset(position, epoch)
    }
    fn create_topic(&self, topic: NewTopic, validate_only: bool, timeout: Duration) -> BackendFuture<'_, ()> {
        self.inner.create_topic(topic, validate_only, timeout)
    }
    fn delete_topic(&self, name: String, timeout: Duration) -> BackendFuture<'_, ()> {
        self.inner.delete_topic(name, timeout)
    }
    fn topic_settings(&self, name: String) -> BackendFuture<'_, TopicSettingsInForce> {
        self.inner.topic_settings(name)
    }
    fn init_producer_id(&self, current: ProducerSession) -> BackendFuture<'_, ProducerSession> {
        self.inner.init_producer_id(current)
    }
}

/// Batches of pipelined produce requests land in the order of the requests, however long
/// the backend takes to place each.
#[tokio::test]
async fn pipelined_batches_are_placed_in_request_order() {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let inner = MemoryBackend::new(MemoryConfig::new(local_broker(addr)));
    let backend = Arc::new(EarlierIsSlower { inner, produced: Default::default() });
    let _listener = serve_on(socket, KafkaConfig::new(addr), backend, None).unwrap();
    let mut conn = Conn::open(addr).await;
    create(&mut conn, "placed").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(conn.send(ApiKey::Produce, 7, &produce("placed", 0, batch(1, i), -1)).await);
    }
    for (i, &id) in ids.iter().enumerate() {
        let (got, response): (i32, ProduceResponse) = conn.recv(7).await;
        assert_eq!((got, produced(&response)), (id, (0, i as i64)), "request {i} placed in order");
    }
}

/// A connection that sends nothing, or starts a frame and never finishes it, is closed
/// after connection_idle_max.
#[tokio::test]
async fn idle_connections_are_closed() {
    let listener = start(|config, _| config.connection_idle_max = Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut silent = Conn::open(listener.local_addr()).await;
    assert!(silent.closed().await);
    assert!(started.elapsed() >= Duration::from_millis(200), "not before connection_idle_max");
    let mut trickling = Conn::open(listener.local_addr()).await;
    trickling.raw(&[0, 0, 0, 100, 0, 18]).await;
    assert!(trickling.closed().await);
    let mut busy = Conn::open(listener.local_addr()).await;
    let _: ApiVersionsResponse = busy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
}

/// The group APIs at every advertised version: the in-memory backend has no group
/// coordinator, so each is answered, in its version's form, with COORDINATOR_NOT_AVAILABLE
/// (15) where the version has a place for it.
#[tokio::test]
async fn every_group_api_version_is_answered_without_a_coordinator() {
    use kafka_protocol::messages::GroupId;
    use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
    use kafka_protocol::messages::describe_groups_response::DescribeGroupsResponse;
    use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
    use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
    use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
    use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
    use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
    use kafka_protocol::messages::join_group_response::JoinGroupResponse;
    use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
    use kafka_protocol::messages::leave_group_response::LeaveGroupResponse;
    use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
    use kafka_protocol::messages::list_groups_response::ListGroupsResponse;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_commit_response::OffsetCommitResponse;
    use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
    use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponse;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
    use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
    const NOT_AVAILABLE: i16 = 15;

    let listener = start(|_, _| {}).await;
    let mut conn = Conn::open(listener.local_addr()).await;
    let group = || GroupId(s("g"));
    for v in 0..=3 {
        let request = FindCoordinatorRequest::default().with_key(s("g"));
        let response: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, v, &request).await;
        assert_eq!((response.error_code, response.node_id.0), (NOT_AVAILABLE, -1), "find coordinator v{v}");
    }
    for v in 0..=6 {
        let protocol =
            JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"m"));
        let request = JoinGroupRequest::default()
            .with_group_id(group())
            .with_session_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![protocol]);
        let response: JoinGroupResponse = conn.call(ApiKey::JoinGroup, v, &request).await;
        assert_eq!((response.error_code, response.generation_id), (NOT_AVAILABLE, -1), "join group v{v}");
    }
    for v in 0..=4 {
        let request = SyncGroupRequest::default().with_group_id(group()).with_member_id(s("m"));
        let response: SyncGroupResponse = conn.call(ApiKey::SyncGroup, v, &request).await;
        assert_eq!(response.error_code, NOT_AVAILABLE, "sync group v{v}");
        let request = HeartbeatRequest::default().with_group_id(group()).with_member_id(s("m"));
        let response: HeartbeatResponse = conn.call(ApiKey::Heartbeat, v, &request).await;
        assert_eq!(response.error_code, NOT_AVAILABLE, "heartbeat v{v}");
        let request = LeaveGroupRequest::default().with_group_id(group());
        let request = if v >= 3 {
            request.with_members(vec![MemberIdentity::default().with_member_id(s("m"))])
        } else {
            request.with_member_id(s("m"))
        };
        let response: LeaveGroupResponse = conn.call(ApiKey::LeaveGroup, v, &request).await;
        assert_eq!(response.error_code, NOT_AVAILABLE, "leave group v{v}");
    }
    for v in 2..=8 {
        let partition = OffsetCommitRequestPartition::default().with_partition_index(1).with_committed_offset(5);
        let request = OffsetCommitRequest::default().with_group_id(group()).with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(topic("t")).with_partitions(vec![partition]),
        ]);
        let response: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, v, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.error_code), (1, NOT_AVAILABLE), "offset commit v{v}");
    }
    for v in 1..=7 {
        let asked = OffsetFetchRequestTopic::default().with_name(topic("t")).with_partition_indexes(vec![1]);
        let request = OffsetFetchRequest::default().with_group_id(group()).with_topics(Some(vec![asked]));
        let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, v, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.error_code, p.committed_offset), (NOT_AVAILABLE, -1), "offset fetch v{v}");
    }
    for v in 0..=5 {
        let request = DescribeGroupsRequest::default().with_groups(vec![group()]);
        let response: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, v, &request).await;
        assert_eq!(response.groups[0].error_code, NOT_AVAILABLE, "describe groups v{v}");
    }
    for v in 0..=4 {
        let response: ListGroupsResponse = conn.call(ApiKey::ListGroups, v, &ListGroupsRequest::default()).await;
        assert_eq!((response.error_code, response.groups.len()), (NOT_AVAILABLE, 0), "list groups v{v}");
    }
}
