//! Consumer group calls on `keel-client/2`: the bodies of `Request::Group`,
//! `Response::Group` and `Response::Groups`. One request kind carries every group call
//! (join, sync, heartbeat, leave, commit, fetch offsets, describe) as the coordinator takes
//! it (`kafka::backend::GroupCall`), so keel's client and the Kafka front end reach the same
//! coordinator through the same type and the codec has one place per field.
//!
//! Every field is little-endian; strings and byte strings are a u32 length and the bytes;
//! an optional string is a u8 flag (1: present) and a string (empty when absent); a list
//! is a u32 count and its items. An error is an i16 Kafka error code (0: none) and its
//! message. Integers Kafka declares signed (generation ids, partitions, offsets) travel
//! as their two's-complement bits.
//!
//! ```text
//! call      u8 tag (1 join, 2 sync, 3 heartbeat, 4 leave, 5 commit, 6 fetch offsets,
//!           7 describe), then group_id and the fields of the call in declaration order
//! answer    u8 tag (the call's), then the fields of the answer in declaration order
//! listings  count, then per group: group_id, protocol_type, u8 state
//! ```

use bytes::{BufMut, BytesMut};

use super::frame::{DecodeError, FrameError, Reader, put_bytes};
use crate::groups::{
    CommitOffset, CommitRequest, CommitResponse, FetchedOffset, GroupDescription, GroupError, GroupListing, GroupState,
    HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, JoinedMember, LeaveRequest, LeaveResponse,
    LeavingMember, MemberDescription, PartitionResult, Protocol, SyncRequest, SyncResponse,
};
use crate::kafka::backend::{GroupAnswer, GroupCall};

mod tag {
    pub const JOIN: u8 = 1;
    pub const SYNC: u8 = 2;
    pub const HEARTBEAT: u8 = 3;
    pub const LEAVE: u8 = 4;
    pub const COMMIT: u8 = 5;
    pub const FETCH_OFFSETS: u8 = 6;
    pub const DESCRIBE: u8 = 7;
}

type Result<T> = std::result::Result<T, FrameError>;

pub(super) fn encode_call(buf: &mut BytesMut, call: &GroupCall) {
    match call {
        GroupCall::Join(j) => {
            buf.put_u8(tag::JOIN);
            put_str(buf, &j.group_id);
            put_str(buf, &j.member_id);
            put_opt_str(buf, j.group_instance_id.as_deref());
            put_str(buf, &j.protocol_type);
            buf.put_u32_le(j.protocols.len() as u32);
            for p in &j.protocols {
                put_str(buf, &p.name);
                put_bytes(buf, &p.metadata);
            }
            buf.put_i32_le(j.session_timeout_ms);
            buf.put_i32_le(j.rebalance_timeout_ms);
            buf.put_u8(j.require_known_member_id as u8);
            put_str(buf, &j.client_id);
            put_str(buf, &j.client_host);
        }
        GroupCall::Sync(s) => {
            buf.put_u8(tag::SYNC);
            put_str(buf, &s.group_id);
            buf.put_i32_le(s.generation_id);
            put_str(buf, &s.member_id);
            put_opt_str(buf, s.group_instance_id.as_deref());
            buf.put_u32_le(s.assignments.len() as u32);
            for (member, assignment) in &s.assignments {
                put_str(buf, member);
                put_bytes(buf, assignment);
            }
        }
        GroupCall::Heartbeat(h) => {
            buf.put_u8(tag::HEARTBEAT);
            put_str(buf, &h.group_id);
            buf.put_i32_le(h.generation_id);
            put_str(buf, &h.member_id);
            put_opt_str(buf, h.group_instance_id.as_deref());
        }
        GroupCall::Leave(l) => {
            buf.put_u8(tag::LEAVE);
            put_str(buf, &l.group_id);
            buf.put_u32_le(l.members.len() as u32);
            for m in &l.members {
                put_leaving(buf, m);
            }
        }
        GroupCall::Commit(c) => {
            buf.put_u8(tag::COMMIT);
            put_str(buf, &c.group_id);
            buf.put_i32_le(c.generation_id);
            put_str(buf, &c.member_id);
            put_opt_str(buf, c.group_instance_id.as_deref());
            buf.put_u32_le(c.offsets.len() as u32);
            for o in &c.offsets {
                put_str(buf, &o.topic);
                buf.put_i32_le(o.partition);
                buf.put_i64_le(o.offset);
                buf.put_i32_le(o.leader_epoch);
                put_opt_str(buf, o.metadata.as_deref());
            }
        }
        GroupCall::FetchOffsets { group_id, partitions } => {
            buf.put_u8(tag::FETCH_OFFSETS);
            put_str(buf, group_id);
            buf.put_u8(partitions.is_some() as u8);
            let partitions = partitions.as_deref().unwrap_or(&[]);
            buf.put_u32_le(partitions.len() as u32);
            for (topic, numbers) in partitions {
                put_str(buf, topic);
                buf.put_u32_le(numbers.len() as u32);
                for n in numbers {
                    buf.put_i32_le(*n);
                }
            }
        }
        GroupCall::Describe { group_id } => {
            buf.put_u8(tag::DESCRIBE);
            put_str(buf, group_id);
        }
    }
}

pub(super) fn decode_call(r: &mut Reader) -> Result<GroupCall> {
    let t = r.u8("group call")?;
    let group_id = r.string("group id")?;
    Ok(match t {
        tag::JOIN => {
            let member_id = r.string("member id")?;
            let group_instance_id = opt_str(r, "group instance id")?;
            let protocol_type = r.string("protocol type")?;
            let n = r.count(8, "protocol count")?;
            let protocols = (0..n)
                .map(|_| Ok(Protocol { name: r.string("protocol name")?, metadata: r.bytes("protocol metadata")? }))
                .collect::<Result<_>>()?;
            GroupCall::Join(JoinRequest {
                group_id,
                member_id,
                group_instance_id,
                protocol_type,
                protocols,
                session_timeout_ms: i32_(r, "session timeout")?,
                rebalance_timeout_ms: i32_(r, "rebalance timeout")?,
                require_known_member_id: r.bool("require known member id")?,
                client_id: r.string("client id")?,
                client_host: r.string("client host")?,
            })
        }
        tag::SYNC => {
            let generation_id = i32_(r, "generation")?;
            let member_id = r.string("member id")?;
            let group_instance_id = opt_str(r, "group instance id")?;
            let n = r.count(8, "assignment count")?;
            let assignments =
                (0..n).map(|_| Ok((r.string("member id")?, r.bytes("assignment")?))).collect::<Result<_>>()?;
            GroupCall::Sync(SyncRequest { group_id, generation_id, member_id, group_instance_id, assignments })
        }
        tag::HEARTBEAT => GroupCall::Heartbeat(HeartbeatRequest {
            group_id,
            generation_id: i32_(r, "generation")?,
            member_id: r.string("member id")?,
            group_instance_id: opt_str(r, "group instance id")?,
        }),
        tag::LEAVE => {
            let n = r.count(4 + 1 + 4, "member count")?;
            let members = (0..n).map(|_| leaving(r)).collect::<Result<_>>()?;
            GroupCall::Leave(LeaveRequest { group_id, members })
        }
        tag::COMMIT => {
            let generation_id = i32_(r, "generation")?;
            let member_id = r.string("member id")?;
            let group_instance_id = opt_str(r, "group instance id")?;
            let n = r.count(4 + 4 + 8 + 4 + 1 + 4, "offset count")?;
            let offsets = (0..n)
                .map(|_| {
                    Ok(CommitOffset {
                        topic: r.string("topic")?,
                        partition: i32_(r, "partition")?,
                        offset: r.u64("offset")? as i64,
                        leader_epoch: i32_(r, "leader epoch")?,
                        metadata: opt_str(r, "offset metadata")?,
                    })
                })
                .collect::<Result<_>>()?;
            GroupCall::Commit(CommitRequest { group_id, generation_id, member_id, group_instance_id, offsets })
        }
        tag::FETCH_OFFSETS => {
            let some = r.bool("partitions given")?;
            let n = r.count(4 + 4, "topic count")?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let topic = r.string("topic")?;
                let count = r.count(4, "partition count")?;
                let numbers = (0..count).map(|_| i32_(r, "partition")).collect::<Result<_>>()?;
                topics.push((topic, numbers));
            }
            GroupCall::FetchOffsets { group_id, partitions: some.then_some(topics) }
        }
        tag::DESCRIBE => GroupCall::Describe { group_id },
        _ => return Err(DecodeError::Invalid { what: "group call" }.into()),
    })
}

pub(super) fn encode_answer(buf: &mut BytesMut, answer: &GroupAnswer) {
    match answer {
        GroupAnswer::Join(j) => {
            buf.put_u8(tag::JOIN);
            put_error(buf, j.error.as_ref());
            buf.put_i32_le(j.generation_id);
            put_opt_str(buf, j.protocol_type.as_deref());
            put_opt_str(buf, j.protocol_name.as_deref());
            put_str(buf, &j.leader);
            put_str(buf, &j.member_id);
            buf.put_u32_le(j.members.len() as u32);
            for m in &j.members {
                put_str(buf, &m.member_id);
                put_opt_str(buf, m.group_instance_id.as_deref());
                put_bytes(buf, &m.metadata);
            }
        }
        GroupAnswer::Sync(s) => {
            buf.put_u8(tag::SYNC);
            put_error(buf, s.error.as_ref());
            put_bytes(buf, &s.assignment);
        }
        GroupAnswer::Heartbeat(h) => {
            buf.put_u8(tag::HEARTBEAT);
            put_error(buf, h.error.as_ref());
        }
        GroupAnswer::Leave(l) => {
            buf.put_u8(tag::LEAVE);
            put_error(buf, l.error.as_ref());
            buf.put_u32_le(l.members.len() as u32);
            for (m, error) in &l.members {
                put_leaving(buf, m);
                put_error(buf, error.as_ref());
            }
        }
        GroupAnswer::Commit(c) => {
            buf.put_u8(tag::COMMIT);
            buf.put_u32_le(c.partitions.len() as u32);
            for p in &c.partitions {
                put_str(buf, &p.topic);
                buf.put_i32_le(p.partition);
                put_error(buf, p.error.as_ref());
            }
        }
        GroupAnswer::FetchOffsets(offsets) => {
            buf.put_u8(tag::FETCH_OFFSETS);
            buf.put_u32_le(offsets.len() as u32);
            for o in offsets {
                put_str(buf, &o.topic);
                buf.put_i32_le(o.partition);
                buf.put_i64_le(o.offset);
                buf.put_i32_le(o.leader_epoch);
                put_str(buf, &o.metadata);
            }
        }
        GroupAnswer::Describe(d) => {
            buf.put_u8(tag::DESCRIBE);
            put_str(buf, &d.group_id);
            buf.put_u8(state_code(d.state));
            put_str(buf, &d.protocol_type);
            put_str(buf, &d.protocol_name);
            buf.put_u32_le(d.members.len() as u32);
            for m in &d.members {
                put_str(buf, &m.member_id);
                put_opt_str(buf, m.group_instance_id.as_deref());
                put_str(buf, &m.client_id);
                put_str(buf, &m.client_host);
                put_bytes(buf, &m.metadata);
                put_bytes(buf, &m.assignment);
            }
        }
    }
}

pub(super) fn decode_answer(r: &mut Reader) -> Result<GroupAnswer> {
    Ok(match r.u8("group answer")? {
        tag::JOIN => {
            let error = error(r)?;
            let generation_id = i32_(r, "generation")?;
            let protocol_type = opt_str(r, "protocol type")?;
            let protocol_name = opt_str(r, "protocol name")?;
            let leader = r.string("leader")?;
            let member_id = r.string("member id")?;
            let n = r.count(4 + 1 + 4 + 4, "member count")?;
            let members = (0..n)
                .map(|_| {
                    Ok(JoinedMember {
                        member_id: r.string("member id")?,
                        group_instance_id: opt_str(r, "group instance id")?,
                        metadata: r.bytes("member metadata")?,
                    })
                })
                .collect::<Result<_>>()?;
            GroupAnswer::Join(JoinResponse {
                error,
                generation_id,
                protocol_type,
                protocol_name,
                leader,
                member_id,
                members,
            })
        }
        tag::SYNC => GroupAnswer::Sync(SyncResponse { error: error(r)?, assignment: r.bytes("assignment")? }),
        tag::HEARTBEAT => GroupAnswer::Heartbeat(HeartbeatResponse { error: error(r)? }),
        tag::LEAVE => {
            let top = error(r)?;
            let n = r.count(4 + 1 + 4 + 2 + 4, "member count")?;
            let members = (0..n).map(|_| Ok((leaving(r)?, error(r)?))).collect::<Result<_>>()?;
            GroupAnswer::Leave(LeaveResponse { error: top, members })
        }
        tag::COMMIT => {
            let n = r.count(4 + 4 + 2 + 4, "partition count")?;
            let partitions = (0..n)
                .map(|_| {
                    Ok(PartitionResult {
                        topic: r.string("topic")?,
                        partition: i32_(r, "partition")?,
                        error: error(r)?,
                    })
                })
                .collect::<Result<_>>()?;
            GroupAnswer::Commit(CommitResponse { partitions })
        }
        tag::FETCH_OFFSETS => {
            let n = r.count(4 + 4 + 8 + 4 + 4, "offset count")?;
            let offsets = (0..n)
                .map(|_| {
                    Ok(FetchedOffset {
                        topic: r.string("topic")?,
                        partition: i32_(r, "partition")?,
                        offset: r.u64("offset")? as i64,
                        leader_epoch: i32_(r, "leader epoch")?,
                        metadata: r.string("offset metadata")?,
                    })
                })
                .collect::<Result<_>>()?;
            GroupAnswer::FetchOffsets(offsets)
        }
        tag::DESCRIBE => {
            let group_id = r.string("group id")?;
            let state = state(r)?;
            let protocol_type = r.string("protocol type")?;
            let protocol_name = r.string("protocol name")?;
            let n = r.count(4 + 1 + 4 + 4 + 4 + 4 + 4, "member count")?;
            let members = (0..n)
                .map(|_| {
                    Ok(MemberDescription {
                        member_id: r.string("member id")?,
                        group_instance_id: opt_str(r, "group instance id")?,
                        client_id: r.string("client id")?,
                        client_host: r.string("client host")?,
                        metadata: r.bytes("member metadata")?,
                        assignment: r.bytes("member assignment")?,
                    })
                })
                .collect::<Result<_>>()?;
            GroupAnswer::Describe(GroupDescription { group_id, state, protocol_type, protocol_name, members })
        }
        _ => return Err(DecodeError::Invalid { what: "group answer" }.into()),
    })
}

pub(super) fn encode_listings(buf: &mut BytesMut, groups: &[GroupListing]) {
    buf.put_u32_le(groups.len() as u32);
    for g in groups {
        put_str(buf, &g.group_id);
        put_str(buf, &g.protocol_type);
        buf.put_u8(state_code(g.state));
    }
}

pub(super) fn decode_listings(r: &mut Reader) -> Result<Vec<GroupListing>> {
    let n = r.count(4 + 4 + 1, "group count")?;
    (0..n)
        .map(|_| {
            Ok(GroupListing {
                group_id: r.string("group id")?,
                protocol_type: r.string("protocol type")?,
                state: state(r)?,
            })
        })
        .collect()
}

/// A group error as its Kafka code and message (code 0: none).
pub(super) fn put_error(buf: &mut BytesMut, error: Option<&GroupError>) {
    buf.put_i16_le(error.map_or(0, GroupError::code));
    put_str(buf, &error.map(ToString::to_string).unwrap_or_default());
}

pub(super) fn error(r: &mut Reader) -> Result<Option<GroupError>> {
    let code = r.u16("group error code")? as i16;
    let message = r.string("group error message")?;
    Ok((code != 0).then(|| GroupError::from_wire(code, message)))
}

fn state_code(state: GroupState) -> u8 {
    match state {
        GroupState::Empty => 0,
        GroupState::PreparingRebalance => 1,
        GroupState::CompletingRebalance => 2,
        GroupState::Stable => 3,
        GroupState::Dead => 4,
    }
}

fn state(r: &mut Reader) -> Result<GroupState> {
    Ok(match r.u8("group state")? {
        0 => GroupState::Empty,
        1 => GroupState::PreparingRebalance,
        2 => GroupState::CompletingRebalance,
        3 => GroupState::Stable,
        4 => GroupState::Dead,
        _ => return Err(DecodeError::Invalid { what: "group state" }.into()),
    })
}

fn put_leaving(buf: &mut BytesMut, m: &LeavingMember) {
    put_str(buf, &m.member_id);
    put_opt_str(buf, m.group_instance_id.as_deref());
}

fn leaving(r: &mut Reader) -> Result<LeavingMember> {
    Ok(LeavingMember { member_id: r.string("member id")?, group_instance_id: opt_str(r, "group instance id")? })
}

fn put_str(buf: &mut BytesMut, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_opt_str(buf: &mut BytesMut, s: Option<&str>) {
    buf.put_u8(s.is_some() as u8);
    put_str(buf, s.unwrap_or(""));
}

fn opt_str(r: &mut Reader, what: &'static str) -> Result<Option<String>> {
    let some = r.bool(what)?;
    let s = r.string(what)?;
    Ok(some.then_some(s))
}

fn i32_(r: &mut Reader, what: &'static str) -> Result<i32> {
    Ok(r.u32(what)? as i32)
}
