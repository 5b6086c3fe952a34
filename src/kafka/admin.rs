//! CreateTopics (v2–5), DeleteTopics (v1–5) and DescribeConfigs (v1–4): topics and the
//! settings keel has for them, under Kafka's names.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};

use super::backend::{BackendError, KafkaBackend, NewTopic, TopicSettingOverrides, TopicSettingsInForce};
use super::config::KafkaConfig;
use super::errors::ErrorCode;
use super::frame::FrameError;
use super::wire::{self, Answer, FirstError, Request};

/// The topic settings keel has, by their Kafka names.
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources and types (the Kafka protocol's numbering).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

pub async fn create_topics(
    backend: Arc<dyn KafkaBackend>,
    config: &KafkaConfig,
    mut req: Request,
) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: CreateTopicsRequest = req.decode()?;
    let timeout = timeout(request.timeout_ms, config);
    let validate_only = request.validate_only;
    let results = join_all(request.topics.iter().map(|topic| {
        let backend = &backend;
        async move {
            let new = new_topic(topic)?;
            let name = new.name.clone();
            backend.create_topic(new, validate_only, timeout).await.map_err(|e| (ErrorCode::from(&e), Some(e)))?;
            // v5 answers with the topic's settings; a topic only validated has none yet.
            if version >= 5 && !validate_only {
                return Ok(backend.topic_settings(name).await.ok());
            }
            Ok(None)
        }
    }))
    .await;
    let mut first = FirstError::new();
    let topics = request
        .topics
        .iter()
        .zip(results)
        .map(|(topic, result)| {
            let r = CreatableTopicResult::default().with_name(topic.name.clone());
            match result {
                Ok(settings) => {
                    let r =
                        r.with_num_partitions(topic.num_partitions).with_replication_factor(topic.replication_factor);
                    match settings {
                        Some(s) if version >= 5 => r.with_configs(Some(
                            entries(&s, None)
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(e.name)
                                        .with_value(e.value)
                                        .with_config_source(e.config_source)
                                })
                                .collect(),
                        )),
                        _ => r,
                    }
                }
                Err((code, why)) => r
                    .with_error_code(first.note(code))
                    .with_error_message(why.map(|e| wire::str_bytes(&e.to_string())))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    let response = CreateTopicsResponse::default().with_topics(topics);
    req.answer(&response, first.0)
}

/// A CreateTopics entry as keel's `NewTopic`; -1 partitions or replicas take the defaults.
fn new_topic(topic: &CreatableTopic) -> Result<NewTopic, (ErrorCode, Option<BackendError>)> {
    let invalid = |e: BackendError| (ErrorCode::from(&e), Some(e));
    let partitions = match topic.num_partitions {
        -1 => None,
        n => Some(u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
            invalid(BackendError::InvalidPartitions(format!("{n} partitions; a topic needs at least one")))
        })?),
    };
    let replication_factor = match topic.replication_factor {
        -1 => None,
        n => Some(u16::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
            invalid(BackendError::InvalidReplicationFactor(format!("{n}; a topic needs at least one replica")))
        })?),
    };
    if !topic.assignments.is_empty() {
        // keel places replicas itself (least-loaded nodes, spread leaders).
        return Err((ErrorCode::InvalidReplicaAssignment, None));
    }
    let mut settings = TopicSettingOverrides::default();
    for config in &topic.configs {
        let value = config.value.as_ref().map(|v| v.as_str());
        apply(&mut settings, config.name.as_str(), value).map_err(invalid)?;
    }
    Ok(NewTopic { name: topic.name.0.to_string(), partitions, replication_factor, settings })
}

/// Sets one Kafka topic config on `settings`; a name keel has no setting for, or a value
/// it cannot hold, is `InvalidConfig`, so nobody believes a setting took effect.
pub fn apply(settings: &mut TopicSettingOverrides, name: &str, value: Option<&str>) -> Result<(), BackendError> {
    let bad = |why: &str| BackendError::InvalidConfig(format!("{name}={}: {why}", value.unwrap_or("null")));
    let Some(value) = value else {
        return Err(bad("a value is required"));
    };
    let number = || value.trim().parse::<i64>().map_err(|_| bad("not a number"));
    // -1 means unlimited for the retention settings, as in Kafka.
    let limit = || match number()? {
        -1 => Ok(None),
        n => u64::try_from(n).map(Some).map_err(|_| bad("use -1 for unlimited or a positive number")),
    };
    match name {
        RETENTION_MS => settings.retention_ms = Some(limit()?),
        RETENTION_BYTES => settings.retention_bytes = Some(limit()?),
        MAX_MESSAGE_BYTES => {
            settings.max_message_bytes = Some(u32::try_from(number()?).map_err(|_| bad("not a positive size"))?)
        }
        SEGMENT_BYTES => {
            settings.segment_bytes = Some(u64::try_from(number()?).map_err(|_| bad("not a positive size"))?)
        }
        CLEANUP_POLICY if value == "delete" => {}
        CLEANUP_POLICY => return Err(bad("keel only deletes old segments (cleanup.policy=delete); no compaction")),
        _ => return Err(bad("keel has no such topic setting")),
    }
    Ok(())
}

pub async fn delete_topics(
    backend: Arc<dyn KafkaBackend>,
    config: &KafkaConfig,
    mut req: Request,
) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: DeleteTopicsRequest = req.decode()?;
    let timeout = timeout(request.timeout_ms, config);
    let names: Vec<String> = request.topic_names.iter().map(|n| n.0.to_string()).collect();
    let results = join_all(names.iter().map(|name| backend.delete_topic(name.clone(), timeout))).await;
    let mut first = FirstError::new();
    let responses = names
        .iter()
        .zip(results)
        .map(|(name, result)| {
            let r = DeletableTopicResult::default().with_name(Some(wire::topic_name(name)));
            match result {
                Ok(()) => r,
                Err(e) => {
                    let r = r.with_error_code(first.note((&e).into()));
                    if version >= 5 { r.with_error_message(Some(wire::str_bytes(&e.to_string()))) } else { r }
                }
            }
        })
        .collect();
    let response = DeleteTopicsResponse::default().with_responses(responses);
    req.answer(&response, first.0)
}

pub async fn describe_configs(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: DescribeConfigsRequest = req.decode()?;
    let results = join_all(request.resources.iter().map(|resource| {
        let backend = &backend;
        async move {
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let keys: Option<Vec<&str>> =
                        resource.configuration_keys.as_ref().map(|keys| keys.iter().map(|k| k.as_str()).collect());
                    backend
                        .topic_settings(resource.resource_name.to_string())
                        .await
                        .map(|settings| entries(&settings, keys.as_deref()))
                        .map_err(|e| (ErrorCode::from(&e), e.to_string()))
                }
                // keel's node settings are not Kafka broker configs: none are listed.
                RESOURCE_BROKER => Ok(Vec::new()),
                other => Err((ErrorCode::InvalidRequest, format!("resource type {other} has no configs in keel"))),
            }
        }
    }))
    .await;
    let mut first = FirstError::new();
    let results = request
        .resources
        .iter()
        .zip(results)
        .map(|(resource, result)| {
            let r = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match result {
                Ok(entries) => r.with_configs(
                    entries
                        .into_iter()
                        .map(|e| {
                            let entry = DescribeConfigsResourceResult::default()
                                .with_name(e.name)
                                .with_value(e.value)
                                .with_read_only(e.name_is_read_only)
                                .with_config_source(e.config_source);
                            if version >= 3 { entry.with_config_type(e.config_type) } else { entry }
                        })
                        .collect(),
                ),
                Err((code, why)) => r.with_error_code(first.note(code)).with_error_message(Some(wire::str_bytes(&why))),
            }
        })
        .collect();
    let response = DescribeConfigsResponse::default().with_results(results);
    req.answer(&response, first.0)
}

/// One config entry as both CreateTopics v5 and DescribeConfigs list it.
struct Entry {
    name: kafka_protocol::protocol::StrBytes,
    value: Option<kafka_protocol::protocol::StrBytes>,
    name_is_read_only: bool,
    config_source: i8,
    config_type: i8,
}

/// A topic's settings as Kafka config entries; `keys` keeps only those asked for.
fn entries(settings: &TopicSettingsInForce, keys: Option<&[&str]>) -> Vec<Entry> {
    let o = &settings.overrides;
    let unlimited = |v: Option<u64>| v.map_or("-1".to_owned(), |v| v.to_string());
    let all = [
        (RETENTION_MS, unlimited(settings.retention_ms), o.retention_ms.is_some(), TYPE_LONG),
        (RETENTION_BYTES, unlimited(settings.retention_bytes), o.retention_bytes.is_some(), TYPE_LONG),
        (MAX_MESSAGE_BYTES, settings.max_message_bytes.to_string(), o.max_message_bytes.is_some(), TYPE_INT),
        (SEGMENT_BYTES, settings.segment_bytes.to_string(), o.segment_bytes.is_some(), TYPE_INT),
        (CLEANUP_POLICY, "delete".to_owned(), false, TYPE_LIST),
    ];
    all.into_iter()
        .filter(|(name, ..)| keys.is_none_or(|keys| keys.contains(name)))
        .map(|(name, value, set, config_type)| Entry {
            name: wire::str_bytes(name),
            value: Some(wire::str_bytes(&value)),
            // cleanup.policy cannot be anything else in keel.
            name_is_read_only: name == CLEANUP_POLICY,
            config_source: if set { SOURCE_TOPIC } else { SOURCE_DEFAULT },
            config_type,
        })
        .collect()
}

fn timeout(timeout_ms: i32, config: &KafkaConfig) -> Duration {
    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)).min(config.admin_timeout_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs_parse_into_keel_settings_and_unknown_ones_are_refused() {
        let mut s = TopicSettingOverrides::default();
        apply(&mut s, RETENTION_MS, Some("-1")).unwrap();
        apply(&mut s, RETENTION_BYTES, Some("1048576")).unwrap();
        apply(&mut s, MAX_MESSAGE_BYTES, Some("2000000")).unwrap();
        apply(&mut s, CLEANUP_POLICY, Some("delete")).unwrap();
        assert_eq!(s.retention_ms, Some(None));
        assert_eq!(s.retention_bytes, Some(Some(1 << 20)));
        assert_eq!(s.max_message_bytes, Some(2_000_000));
        for (name, value) in [(CLEANUP_POLICY, "compact"), ("min.insync.replicas", "2"), (RETENTION_MS, "soon")] {
            assert!(matches!(apply(&mut s, name, Some(value)), Err(BackendError::InvalidConfig(_))), "{name}");
        }
        assert!(apply(&mut s, RETENTION_MS, None).is_err());
        assert!(apply(&mut s, RETENTION_BYTES, Some("-2")).is_err());
    }
}
