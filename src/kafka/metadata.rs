//! Metadata (v0–8): the brokers, and the topics with their partitions, leaders and epochs.

use std::sync::Arc;

use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};

use super::backend::{ClusterMetadata, KafkaBackend};
use super::errors::ErrorCode;
use super::frame::FrameError;
use super::wire::{self, Answer, FirstError, Request};

pub async fn serve(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: MetadataRequest = req.decode()?;
    // v0 has no null list: an empty one asks for every topic. From v1 on, null does.
    let names: Option<Vec<String>> = match request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => {
            Some(topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect())
        }
        _ => None,
    };
    // Before v4 a request cannot say, and Kafka creates topics for it when allowed.
    let auto_create = version < 4 || request.allow_auto_topic_creation;
    let mut first = FirstError::new();
    let response = match backend.metadata(names, auto_create).await {
        Ok(cluster) => response(&cluster, &mut first),
        Err(e) => {
            // The whole request failed: no topics, and the brokers we cannot list.
            first.note((&e).into());
            tracing::warn!("kafka metadata: {e}");
            MetadataResponse::default().with_controller_id((-1).into())
        }
    };
    req.answer(&response, first.0)
}

fn response(cluster: &ClusterMetadata, first: &mut FirstError) -> MetadataResponse {
    let brokers = cluster
        .brokers
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(wire::broker_id(b.id))
                .with_host(wire::str_bytes(&b.host))
                .with_port(b.port.into())
                .with_rack(b.rack.as_deref().map(wire::str_bytes))
        })
        .collect();
    let topics = cluster
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = p.error.as_ref().map_or(ErrorCode::None, ErrorCode::from);
                    let ids = |nodes: &[crate::ids::NodeId]| nodes.iter().map(|&n| wire::broker_id(n)).collect();
                    MetadataResponsePartition::default()
                        .with_error_code(first.note(error))
                        .with_partition_index(i32::try_from(p.index).unwrap_or(i32::MAX))
                        .with_leader_id(p.leader.map_or((-1).into(), wire::broker_id))
                        .with_leader_epoch(wire::epoch(p.leader_epoch))
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.in_sync))
                        .with_offline_replicas(ids(&p.offline))
                })
                .collect();
            let error = t.error.as_ref().map_or(ErrorCode::None, ErrorCode::from);
            MetadataResponseTopic::default()
                .with_error_code(first.note(error))
                .with_name(Some(wire::topic_name(&t.name)))
                .with_is_internal(t.internal)
                .with_partitions(partitions)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(wire::str_bytes(&cluster.cluster_id)))
        .with_controller_id(wire::broker_id(cluster.controller))
        .with_topics(topics)
}
