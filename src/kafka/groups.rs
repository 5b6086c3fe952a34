//! The consumer group APIs: FindCoordinator (v0–3), JoinGroup (v0–6), SyncGroup (v0–4),
//! Heartbeat (v0–4), LeaveGroup (v0–4), OffsetCommit (v2–8), OffsetFetch (v1–7),
//! DescribeGroups (v0–5) and ListGroups (v0–4).
//!
//! Each request becomes a `GroupCall` for the backend, whose group coordinator
//! (`crate::groups`) decides everything; this file only moves fields on and off the wire,
//! setting each response field only in the versions that have it.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{BrokerId, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::backend::{BackendError, GroupAnswer, GroupCall, KafkaBackend};
use super::errors::{ErrorCode, group_code};
use super::frame::FrameError;
use super::wire::{self, Answer, FirstError, Request};
use crate::groups::{self as g, GroupError};

/// FindCoordinator's key type for a consumer group (1 names a transaction).
const KEY_TYPE_GROUP: i8 = 0;

fn text(s: &StrBytes) -> String {
    s.to_string()
}

fn group_id(id: &str) -> GroupId {
    GroupId(wire::str_bytes(id))
}

/// The backend's answer to a call, or the group error to answer with.
async fn call(backend: &Arc<dyn KafkaBackend>, call: GroupCall) -> Result<GroupAnswer, GroupError> {
    backend.group_call(call).await.map_err(group_error)
}

/// A backend error where a group error is answered: its own, or one the client retries.
fn group_error(e: BackendError) -> GroupError {
    match e {
        BackendError::Group(e) => e,
        other => GroupError::CoordinatorNotAvailable { reason: other.to_string() },
    }
}

/// An answer of the wrong kind is the backend's bug: the request is answered as refused.
fn mismatch() -> GroupError {
    GroupError::CoordinatorNotAvailable { reason: "the backend answered another request".into() }
}

pub async fn find_coordinator(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: FindCoordinatorRequest = req.decode()?;
    let found = if request.key_type == KEY_TYPE_GROUP {
        backend.find_coordinator(text(&request.key)).await.map_err(group_error)
    } else {
        Err(GroupError::InvalidRequest { what: "keel coordinates consumer groups only (no transactions)" })
    };
    let mut response = FindCoordinatorResponse::default();
    let error = match found {
        Ok(broker) => {
            response = response
                .with_node_id(wire::broker_id(broker.id))
                .with_host(wire::str_bytes(&broker.host))
                .with_port(i32::from(broker.port));
            ErrorCode::None
        }
        Err(e) => {
            let code = ErrorCode::from(&e);
            response = response.with_error_code(code.code()).with_node_id(BrokerId(-1)).with_port(-1);
            if version >= 1 {
                response = response.with_error_message(Some(wire::str_bytes(&e.to_string())));
            }
            code
        }
    };
    if version == 0 {
        response = response.with_error_message(None);
    }
    req.answer(&response, error)
}

pub async fn join_group(
    backend: Arc<dyn KafkaBackend>,
    client_id: String,
    mut req: Request,
) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: JoinGroupRequest = req.decode()?;
    let join = g::JoinRequest {
        group_id: text(&request.group_id.0),
        member_id: text(&request.member_id),
        group_instance_id: request.group_instance_id.as_ref().map(text),
        protocol_type: text(&request.protocol_type),
        protocols: request
            .protocols
            .iter()
            .map(|p| g::Protocol { name: text(&p.name), metadata: p.metadata.clone() })
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { -1 },
        require_known_member_id: version >= 4,
        client_id,
        client_host: String::new(),
    };
    let failed = |error: GroupError, member_id: String| g::JoinResponse {
        error: Some(error),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id,
        members: Vec::new(),
    };
    let answer = match call(&backend, GroupCall::Join(join.clone())).await {
        Ok(GroupAnswer::Join(r)) => r,
        Ok(_) => failed(mismatch(), join.member_id),
        Err(e) => failed(e, join.member_id),
    };
    let members = answer
        .members
        .iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(wire::str_bytes(&m.member_id))
                .with_metadata(m.metadata.clone());
            if version >= 5 {
                member.with_group_instance_id(m.group_instance_id.as_deref().map(wire::str_bytes))
            } else {
                member
            }
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(g::error_code(&answer.error))
        .with_generation_id(answer.generation_id)
        // Not nullable before v7: an empty name stands for none.
        .with_protocol_name(Some(wire::str_bytes(answer.protocol_name.as_deref().unwrap_or_default())))
        .with_leader(wire::str_bytes(&answer.leader))
        .with_member_id(wire::str_bytes(&answer.member_id))
        .with_members(members);
    req.answer(&response, group_code(&answer.error))
}

pub async fn sync_group(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: SyncGroupRequest = req.decode()?;
    let sync = g::SyncRequest {
        group_id: text(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: text(&request.member_id),
        group_instance_id: if version >= 3 { request.group_instance_id.as_ref().map(text) } else { None },
        assignments: request.assignments.iter().map(|a| (text(&a.member_id), a.assignment.clone())).collect(),
    };
    let (error, assignment) = match call(&backend, GroupCall::Sync(sync)).await {
        Ok(GroupAnswer::Sync(r)) => (r.error, r.assignment),
        Ok(_) => (Some(mismatch()), Bytes::new()),
        Err(e) => (Some(e), Bytes::new()),
    };
    let response = SyncGroupResponse::default().with_error_code(g::error_code(&error)).with_assignment(assignment);
    req.answer(&response, group_code(&error))
}

pub async fn heartbeat(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: HeartbeatRequest = req.decode()?;
    let beat = g::HeartbeatRequest {
        group_id: text(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: text(&request.member_id),
        group_instance_id: if version >= 3 { request.group_instance_id.as_ref().map(text) } else { None },
    };
    let error = match call(&backend, GroupCall::Heartbeat(beat)).await {
        Ok(GroupAnswer::Heartbeat(r)) => r.error,
        Ok(_) => Some(mismatch()),
        Err(e) => Some(e),
    };
    let response = HeartbeatResponse::default().with_error_code(g::error_code(&error));
    req.answer(&response, group_code(&error))
}

pub async fn leave_group(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: LeaveGroupRequest = req.decode()?;
    let members = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| g::LeavingMember {
                member_id: text(&m.member_id),
                group_instance_id: m.group_instance_id.as_ref().map(text),
            })
            .collect()
    } else {
        vec![g::LeavingMember { member_id: text(&request.member_id), group_instance_id: None }]
    };
    let leave = g::LeaveRequest { group_id: text(&request.group_id.0), members };
    let answer = match call(&backend, GroupCall::Leave(leave)).await {
        Ok(GroupAnswer::Leave(r)) => r,
        Ok(_) => g::LeaveResponse { error: Some(mismatch()), members: Vec::new() },
        Err(e) => g::LeaveResponse { error: Some(e), members: Vec::new() },
    };
    let mut response = LeaveGroupResponse::default();
    let error = if version >= 3 {
        let members = answer
            .members
            .iter()
            .map(|(m, e)| {
                MemberResponse::default()
                    .with_member_id(wire::str_bytes(&m.member_id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(wire::str_bytes))
                    .with_error_code(g::error_code(e))
            })
            .collect();
        response = response.with_members(members);
        answer.error
    } else {
        // Before v3 the one member's error is the request's.
        answer.error.or_else(|| answer.members.into_iter().find_map(|(_, e)| e))
    };
    req.answer(&response.with_error_code(g::error_code(&error)), group_code(&error))
}

pub async fn offset_commit(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: OffsetCommitRequest = req.decode()?;
    let mut offsets = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            offsets.push(g::CommitOffset {
                topic: text(&topic.name.0),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                metadata: p.committed_metadata.as_ref().map(text),
            });
        }
    }
    let commit = g::CommitRequest {
        group_id: text(&request.group_id.0),
        generation_id: request.generation_id_or_member_epoch,
        member_id: text(&request.member_id),
        group_instance_id: if version >= 7 { request.group_instance_id.as_ref().map(text) } else { None },
        offsets,
    };
    // One result per partition of the request, in its order.
    let results: Vec<Option<GroupError>> = match call(&backend, GroupCall::Commit(commit.clone())).await {
        Ok(GroupAnswer::Commit(r)) if r.partitions.len() == commit.offsets.len() => {
            r.partitions.into_iter().map(|p| p.error).collect()
        }
        Ok(_) => vec![Some(mismatch()); commit.offsets.len()],
        Err(e) => vec![Some(e); commit.offsets.len()],
    };
    let mut first = FirstError::new();
    let mut results = results.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let error = results.next().flatten();
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(first.note(group_code(&error)))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    req.answer(&OffsetCommitResponse::default().with_topics(topics), first.0)
}

pub async fn offset_fetch(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: OffsetFetchRequest = req.decode()?;
    let partitions: Option<Vec<(String, Vec<i32>)>> = request
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (text(&t.name.0), t.partition_indexes.clone())).collect());
    let fetch = GroupCall::FetchOffsets { group_id: text(&request.group_id.0), partitions: partitions.clone() };
    let fetched = match call(&backend, fetch).await {
        Ok(GroupAnswer::FetchOffsets(offsets)) => Ok(offsets),
        Ok(_) => Err(mismatch()),
        Err(e) => Err(e),
    };
    let partition = |index: i32, offset: i64, epoch: i32, metadata: &str, code: ErrorCode| {
        let p = OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_metadata(Some(wire::str_bytes(metadata)))
            .with_error_code(code.code());
        if version >= 5 { p.with_committed_leader_epoch(epoch) } else { p }
    };
    let (topics, error) = match fetched {
        Ok(offsets) => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for o in offsets {
                let p = partition(o.partition, o.offset, o.leader_epoch, &o.metadata, ErrorCode::None);
                match topics.last_mut() {
                    Some(t) if t.name.0.as_str() == o.topic => t.partitions.push(p),
                    _ => topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(wire::topic_name(&o.topic))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            (topics, ErrorCode::None)
        }
        Err(e) => {
            // v1 has no top-level error: every partition asked for carries it.
            let code = ErrorCode::from(&e);
            let topics = partitions
                .unwrap_or_default()
                .iter()
                .map(|(name, indexes)| {
                    let ps = indexes.iter().map(|i| partition(*i, -1, -1, "", code)).collect();
                    OffsetFetchResponseTopic::default().with_name(wire::topic_name(name)).with_partitions(ps)
                })
                .collect();
            (topics, code)
        }
    };
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response = response.with_error_code(error.code());
    }
    req.answer(&response, error)
}

pub async fn describe_groups(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: DescribeGroupsRequest = req.decode()?;
    let mut first = FirstError::new();
    let mut groups = Vec::with_capacity(request.groups.len());
    for id in &request.groups {
        let id = text(&id.0);
        let described = match call(&backend, GroupCall::Describe { group_id: id.clone() }).await {
            Ok(GroupAnswer::Describe(d)) => Ok(d),
            Ok(_) => Err(mismatch()),
            Err(e) => Err(e),
        };
        let group = match described {
            Ok(d) => {
                let members = d
                    .members
                    .iter()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(wire::str_bytes(&m.member_id))
                            .with_client_id(wire::str_bytes(&m.client_id))
                            .with_client_host(wire::str_bytes(&m.client_host))
                            .with_member_metadata(m.metadata.clone())
                            .with_member_assignment(m.assignment.clone());
                        if version >= 4 {
                            member.with_group_instance_id(m.group_instance_id.as_deref().map(wire::str_bytes))
                        } else {
                            member
                        }
                    })
                    .collect();
                DescribedGroup::default()
                    .with_group_id(group_id(&d.group_id))
                    .with_group_state(wire::str_bytes(d.state.name()))
                    .with_protocol_type(wire::str_bytes(&d.protocol_type))
                    .with_protocol_data(wire::str_bytes(&d.protocol_name))
                    .with_members(members)
            }
            Err(e) => DescribedGroup::default()
                .with_error_code(first.note(ErrorCode::from(&e)))
                .with_group_id(group_id(&id))
                .with_group_state(wire::str_bytes(g::GroupState::Dead.name())),
        };
        groups.push(group);
    }
    req.answer(&DescribeGroupsResponse::default().with_groups(groups), first.0)
}

pub async fn list_groups(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: ListGroupsRequest = req.decode()?;
    let states: Vec<String> = if version >= 4 { request.states_filter.iter().map(text).collect() } else { vec![] };
    let (groups, error) = match backend.list_groups().await.map_err(group_error) {
        Ok(groups) => (groups, ErrorCode::None),
        Err(e) => (Vec::new(), ErrorCode::from(&e)),
    };
    let listed = groups
        .iter()
        .filter(|l| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(l.state.name())))
        .map(|l| {
            let group = ListedGroup::default()
                .with_group_id(group_id(&l.group_id))
                .with_protocol_type(wire::str_bytes(&l.protocol_type));
            if version >= 4 { group.with_group_state(wire::str_bytes(l.state.name())) } else { group }
        })
        .collect();
    let response = ListGroupsResponse::default().with_error_code(error.code()).with_groups(listed);
    req.answer(&response, error)
}
