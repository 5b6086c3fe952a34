//! The walk must follow the codecs' layout exactly, for every advertised version: a request
//! the codecs encode, with one element in every array, is walked to its last byte.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::describe_configs_request::{DescribeConfigsRequest, DescribeConfigsResource};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{ApiKey, BrokerId, GroupId, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::*;
use crate::kafka::versions::APIS;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(text: &str) -> TopicName {
    TopicName(s(text))
}

fn encode<T: Encodable>(message: T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    message.encode(&mut buf, version).unwrap_or_else(|e| panic!("encoding v{version}: {e}"));
    buf.freeze()
}

/// A request of `api` at `version` with one element in every array it has.
pub fn populated(api: ApiKey, v: i16) -> Bytes {
    match api {
        ApiKey::Metadata => encode(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("t")))])),
            v,
        ),
        ApiKey::Produce => encode(
            ProduceRequest::default().with_acks(-1).with_timeout_ms(5).with_topic_data(vec![
                TopicProduceData::default().with_name(topic("t")).with_partition_data(vec![
                    PartitionProduceData::default().with_index(3).with_records(Some(Bytes::from_static(b"records"))),
                ]),
            ]),
            v,
        ),
        ApiKey::Fetch => {
            let partitions = vec![FetchPartition::default().with_partition(1).with_fetch_offset(9)];
            let mut request = FetchRequest::default()
                .with_topics(vec![FetchTopic::default().with_topic(topic("t")).with_partitions(partitions)]);
            if v >= 7 {
                request = request.with_forgotten_topics_data(vec![
                    ForgottenTopic::default().with_topic(topic("f")).with_partitions(vec![1, 2]),
                ]);
            }
            if v >= 11 {
                request = request.with_rack_id(s("rack"));
            }
            encode(request, v)
        }
        ApiKey::ListOffsets => encode(
            ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2)]),
            ]),
            v,
        ),
        ApiKey::CreateTopics => encode(
            CreateTopicsRequest::default().with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic("t"))
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_assignments(vec![
                        CreatableReplicaAssignment::default().with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
                    ])
                    .with_configs(vec![
                        CreatableTopicConfig::default().with_name(s("retention.ms")).with_value(Some(s("1"))),
                    ]),
            ]),
            v,
        ),
        ApiKey::DeleteTopics => {
            encode(DeleteTopicsRequest::default().with_topic_names(vec![topic("a"), topic("b")]), v)
        }
        ApiKey::DescribeConfigs => encode(
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configuration_keys(Some(vec![s("retention.ms")])),
            ]),
            v,
        ),
        ApiKey::OffsetForLeaderEpoch => encode(
            OffsetForLeaderEpochRequest::default().with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![OffsetForLeaderPartition::default().with_leader_epoch(4)]),
            ]),
            v,
        ),
        ApiKey::JoinGroup => {
            let protocol =
                JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"m"));
            let mut request = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![protocol]);
            if v >= 5 {
                request = request.with_group_instance_id(Some(s("i")));
            }
            encode(request, v)
        }
        ApiKey::SyncGroup => {
            let assignment =
                SyncGroupRequestAssignment::default().with_member_id(s("m")).with_assignment(Bytes::from_static(b"a"));
            encode(SyncGroupRequest::default().with_group_id(GroupId(s("g"))).with_assignments(vec![assignment]), v)
        }
        ApiKey::LeaveGroup => {
            let request = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
            if v >= 3 {
                encode(request.with_members(vec![MemberIdentity::default().with_member_id(s("m"))]), v)
            } else {
                encode(request.with_member_id(s("m")), v)
            }
        }
        ApiKey::OffsetCommit => {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(2)
                .with_committed_offset(7)
                .with_committed_metadata(Some(s("x")));
            let topic = OffsetCommitRequestTopic::default().with_name(topic("t")).with_partitions(vec![partition]);
            encode(OffsetCommitRequest::default().with_group_id(GroupId(s("g"))).with_topics(vec![topic]), v)
        }
        ApiKey::OffsetFetch => {
            let topic = OffsetFetchRequestTopic::default().with_name(topic("t")).with_partition_indexes(vec![1, 2]);
            encode(OffsetFetchRequest::default().with_group_id(GroupId(s("g"))).with_topics(Some(vec![topic])), v)
        }
        ApiKey::DescribeGroups => encode(DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]), v),
        ApiKey::ListGroups => {
            let request = ListGroupsRequest::default();
            encode(if v >= 4 { request.with_states_filter(vec![s("Stable")]) } else { request }, v)
        }
        ApiKey::InitProducerId => {
            let request = InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s("tx"))));
            // The current id and epoch are on the wire from v3 (KIP-360).
            let request = if v >= 3 { request.with_producer_id(ProducerId(7)).with_producer_epoch(2) } else { request };
            encode(request, v)
        }
        other => panic!("no populated request for {other:?}"),
    }
}

#[test]
fn the_walk_follows_the_codecs_for_every_advertised_version() {
    for api in APIS.iter().filter(|a| layout(a.key).is_some()) {
        for version in api.min..=api.max {
            let body = populated(api.key, version);
            assert_eq!(walk(api.key, version, &body), Ok(body.len()), "{:?} v{version}", api.key);
        }
    }
}

/// A forged count is refused before the codecs would reserve room for it.
#[test]
fn forged_array_counts_are_refused() {
    // Metadata v1: the topics count is the body's first field.
    let mut body = populated(ApiKey::Metadata, 1).to_vec();
    body[..4].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(check(ApiKey::Metadata, 1, &body).unwrap_err().contains("elements"));
    // Produce v7: the partition count inside the first topic (after acks, timeout, the
    // transactional id, the topic count and the topic's name).
    let mut body = populated(ApiKey::Produce, 7).to_vec();
    let at = 2 + 2 + 4 + 4 + 2 + 1;
    assert_eq!(&body[at..at + 4], &1i32.to_be_bytes());
    body[at..at + 4].copy_from_slice(&0x4000_0000i32.to_be_bytes());
    assert!(check(ApiKey::Produce, 7, &body).is_err());
    // DeleteTopics v4 (flexible): a compact count of 2^32 - 2 elements.
    let mut body = vec![0xfe, 0xff, 0xff, 0xff, 0x0f];
    body.extend_from_slice(&populated(ApiKey::DeleteTopics, 4)[1..]);
    assert!(check(ApiKey::DeleteTopics, 4, &body).is_err());
    // Truncated bodies are refused, never read past.
    let body = populated(ApiKey::Fetch, 11);
    for len in 0..body.len() {
        assert!(check(ApiKey::Fetch, 11, &body[..len]).is_err(), "{len}");
    }
}

/// Decodes `body` as the request of `api` at `version`, as the handlers do.
fn decode(api: ApiKey, version: i16, body: &[u8]) -> bool {
    use kafka_protocol::protocol::Decodable;
    fn ok<T: Decodable>(body: &[u8], version: i16) -> bool {
        T::decode(&mut Bytes::copy_from_slice(body), version).is_ok()
    }
    match api {
        ApiKey::Metadata => ok::<MetadataRequest>(body, version),
        ApiKey::Produce => ok::<ProduceRequest>(body, version),
        ApiKey::Fetch => ok::<FetchRequest>(body, version),
        ApiKey::ListOffsets => ok::<ListOffsetsRequest>(body, version),
        ApiKey::CreateTopics => ok::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => ok::<DeleteTopicsRequest>(body, version),
        ApiKey::DescribeConfigs => ok::<DescribeConfigsRequest>(body, version),
        ApiKey::OffsetForLeaderEpoch => ok::<OffsetForLeaderEpochRequest>(body, version),
        ApiKey::JoinGroup => ok::<JoinGroupRequest>(body, version),
        ApiKey::SyncGroup => ok::<SyncGroupRequest>(body, version),
        ApiKey::LeaveGroup => ok::<LeaveGroupRequest>(body, version),
        ApiKey::OffsetCommit => ok::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch => ok::<OffsetFetchRequest>(body, version),
        ApiKey::DescribeGroups => ok::<DescribeGroupsRequest>(body, version),
        ApiKey::ListGroups => ok::<ListGroupsRequest>(body, version),
        ApiKey::InitProducerId => ok::<InitProducerIdRequest>(body, version),
        other => panic!("no decoder for {other:?}"),
    }
}

proptest::proptest! {
    /// Damaged requests (bytes flipped, cut short) never panic or abort: the guard refuses
    /// them or the codecs return an error, and whatever the guard lets through decodes
    /// without an allocation larger than the body could justify.
    #[test]
    fn damaged_requests_are_refused_without_panicking(
        which in 0usize..64,
        flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..6),
        cut in 0usize..4096,
    ) {
        let candidates: Vec<(ApiKey, i16)> = APIS
            .iter()
            .filter(|a| layout(a.key).is_some())
            .flat_map(|a| (a.min..=a.max).map(move |v| (a.key, v)))
            .collect();
        let (api, version) = candidates[which % candidates.len()];
        let mut body = populated(api, version).to_vec();
        for (at, byte) in flips {
            let at = at % body.len();
            body[at] = byte;
        }
        body.truncate(cut.max(1).min(body.len()));
        if check(api, version, &body).is_ok() {
            let _ = decode(api, version, &body);
        }
    }
}
