//! The records a coordinator appends to its partition of `__consumer_offsets`: committed
//! offsets and group metadata, each a key and a value, encoded by hand.
//!
//! Every record is keyed, and the latest record of a key is all that matters for it: a
//! compacted partition (`compaction.rs`), with only the latest record of each key, replays
//! to the same state as the whole one. A **tombstone** is a record whose value is null or empty (every value
//! this codec writes starts with a version byte, so an empty value is never a real one):
//! an offset that expired, or a group that was deleted.
//!
//! Conventions: integers are **little-endian**; `i32` and `i64` are two's complement. The
//! batch and entry around a record carry a CRC, so a record has none of its own. Key and
//! value each start with a version byte; this describes version 1, and a decoder refuses a
//! version it does not know. Decoding never panics, counts are checked against the bytes
//! left before anything is allocated (`codec::Reader::count`), and a key or value with
//! bytes after its last field is refused, so each decoded record has exactly one encoding
//! and two keys are equal exactly when their bytes are.
//!
//! ## Field types
//!
//! | type | bytes |
//! |---|---|
//! | `u8`, `u32`, `u64` | 1, 4, 8 bytes |
//! | `i32`, `i64` | 4, 8 bytes, two's complement |
//! | `str` | `u32` length, then that many bytes of UTF-8 |
//! | `bytes` | `u32` length, then that many bytes |
//! | `opt<str>` | `u8` 0 (absent), or `u8` 1 then a `str` |
//!
//! ## Key
//!
//! ```text
//! offset size field
//!      0    1 version   RECORD_VERSION = 1
//!      1    1 kind      1 offset commit, 2 group metadata
//!      2    . kind 1:   str group, str topic, u32 partition
//!               kind 2:   str group
//! ```
//!
//! A key of kind 3 (the bytes `1 3`, nothing after) is a **checkpoint marker**, not a
//! `StoredRecord`: its value is the version byte then a `u64`, the offset of the first
//! record of a checkpoint (the coordinator's whole state, written as records) that is
//! committed in full before the marker. Replay skips it; every replica reads it to learn
//! below which offset the partition may be trimmed (`checkpoint_floor`).
//!
//! ## Value of an offset commit (kind 1)
//!
//! ```text
//! offset size field
//!      0    1 version             RECORD_VERSION = 1
//!      1    8 offset              i64: the next offset the group will read
//!      9    4 leader epoch        i32: -1 when the client gave none
//!     13    8 commit time         u64: ms since the Unix epoch, the coordinator's clock
//!     21    . metadata            str: the client's string, "" when it gave none
//! ```
//!
//! ## Value of a group metadata record (kind 2)
//!
//! Written when a rebalance ends: with the members and the assignment the leader sent once
//! SyncGroup completes, and with no members when the group became empty.
//!
//! ```text
//! offset size field
//!      0    1 version             RECORD_VERSION = 1
//!      1    4 generation          i32
//!      5    8 written at          u64: ms since the Unix epoch, the coordinator's clock
//!     13    . protocol type       str ("consumer" for consumers; "" before any member joined)
//!       .   . protocol name       opt<str>: the assignor chosen for this generation
//!       .   . leader              opt<str>: the leader's member id
//!       .   4 member count        u32, then each member:
//!               str member id, opt<str> group.instance.id, str client id, str client host,
//!               u32 session timeout (ms), u32 rebalance timeout (ms),
//!               bytes subscription (its metadata for the chosen protocol),
//!               bytes assignment (as the leader sent it; keel never reads it)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader, put_bytes};

pub const RECORD_VERSION: u8 = 1;

const KIND_OFFSET: u8 = 1;
const KIND_GROUP: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;

/// Smallest encoding of one member in a group record, for bounding the count.
const MEMBER_LEN_MIN: usize = 4 + 1 + 4 + 4 + 4 + 4 + 4 + 4;

/// One record of a `__consumer_offsets` partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredRecord {
    /// A committed offset; `None` is its tombstone (the offset expired).
    Offset { key: OffsetKey, value: Option<OffsetValue> },
    /// A group's metadata; `None` is its tombstone (the group was deleted).
    Group { group: String, value: Option<GroupValue> },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub written_at_ms: u64,
    pub members: Vec<MemberValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

impl StoredRecord {
    /// The group this record belongs to.
    pub fn group(&self) -> &str {
        match self {
            StoredRecord::Offset { key, .. } => &key.group,
            StoredRecord::Group { group, .. } => group,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        match self {
            StoredRecord::Offset { value, .. } => value.is_none(),
            StoredRecord::Group { value, .. } => value.is_none(),
        }
    }

    /// The record's key: what compaction keeps the latest record of.
    pub fn key(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(RECORD_VERSION);
        match self {
            StoredRecord::Offset { key, .. } => {
                b.put_u8(KIND_OFFSET);
                put_bytes(&mut b, key.group.as_bytes());
                put_bytes(&mut b, key.topic.as_bytes());
                b.put_u32_le(key.partition);
            }
            StoredRecord::Group { group, .. } => {
                b.put_u8(KIND_GROUP);
                put_bytes(&mut b, group.as_bytes());
            }
        }
        b.freeze()
    }

    /// The record's value; `None` for a tombstone (send it as a null value).
    pub fn value(&self) -> Option<Bytes> {
        let mut b = BytesMut::new();
        match self {
            StoredRecord::Offset { value: None, .. } | StoredRecord::Group { value: None, .. } => return None,
            StoredRecord::Offset { value: Some(v), .. } => {
                b.put_u8(RECORD_VERSION);
                b.put_i64_le(v.offset);
                b.put_i32_le(v.leader_epoch);
                b.put_u64_le(v.commit_timestamp_ms);
                put_bytes(&mut b, v.metadata.as_bytes());
            }
            StoredRecord::Group { value: Some(v), .. } => {
                b.put_u8(RECORD_VERSION);
                b.put_i32_le(v.generation);
                b.put_u64_le(v.written_at_ms);
                put_bytes(&mut b, v.protocol_type.as_bytes());
                put_opt_str(&mut b, v.protocol_name.as_deref());
                put_opt_str(&mut b, v.leader.as_deref());
                b.put_u32_le(u32::try_from(v.members.len()).expect("members are bounded by members_per_group_max"));
                for m in &v.members {
                    put_bytes(&mut b, m.member_id.as_bytes());
                    put_opt_str(&mut b, m.instance_id.as_deref());
                    put_bytes(&mut b, m.client_id.as_bytes());
                    put_bytes(&mut b, m.client_host.as_bytes());
                    b.put_u32_le(m.session_timeout_ms);
                    b.put_u32_le(m.rebalance_timeout_ms);
                    put_bytes(&mut b, &m.subscription);
                    put_bytes(&mut b, &m.assignment);
                }
            }
        }
        Some(b.freeze())
    }

    /// Bytes of key and value together: what the record adds to an append.
    pub fn encoded_len(&self) -> usize {
        self.key().len() + self.value().map_or(0, |v| v.len())
    }

    /// Reads a record from its key and value; a null or empty value is a tombstone.
    pub fn decode(key: Bytes, value: Option<Bytes>) -> Result<StoredRecord, DecodeError> {
        let value = value.filter(|v| !v.is_empty());
        let mut k = Reader::new(key);
        read_version(&mut k, "__consumer_offsets key version (this node knows 1)")?;
        let record = match k.u8("__consumer_offsets key kind")? {
            KIND_OFFSET => {
                let key = OffsetKey {
                    group: k.string("offset key group")?,
                    topic: k.string("offset key topic")?,
                    partition: k.u32("offset key partition")?,
                };
                StoredRecord::Offset { key, value: value.map(decode_offset_value).transpose()? }
            }
            KIND_GROUP => {
                let group = k.string("group key group")?;
                StoredRecord::Group { group, value: value.map(decode_group_value).transpose()? }
            }
            _ => return Err(DecodeError::Invalid { what: "__consumer_offsets key kind" }),
        };
        k.end()?;
        Ok(record)
    }
}

/// The key and value of the marker saying that the checkpoint starting at `floor` is
/// committed: replaying from `floor` gives what replaying from the start gives.
pub fn checkpoint_marker(floor: u64) -> (Bytes, Bytes) {
    let key = Bytes::from_static(&[RECORD_VERSION, KIND_CHECKPOINT]);
    let mut value = BytesMut::with_capacity(9);
    value.put_u8(RECORD_VERSION);
    value.put_u64_le(floor);
    (key, value.freeze())
}

/// The floor of a checkpoint marker; `None` for any other record, or a marker that does
/// not decode (a replica then keeps what it has: trimming less is always safe).
pub fn checkpoint_floor(key: &[u8], value: Option<&[u8]>) -> Option<u64> {
    if key != [RECORD_VERSION, KIND_CHECKPOINT] {
        return None;
    }
    match value? {
        [RECORD_VERSION, floor @ ..] => Some(u64::from_le_bytes(floor.try_into().ok()?)),
        _ => None,
    }
}

fn decode_offset_value(bytes: Bytes) -> Result<OffsetValue, DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r, "offset value version (this node knows 1)")?;
    let value = OffsetValue {
        offset: r.u64("committed offset")? as i64,
        leader_epoch: r.u32("committed leader epoch")? as i32,
        commit_timestamp_ms: r.u64("commit timestamp")?,
        metadata: r.string("offset metadata")?,
    };
    r.end()?;
    Ok(value)
}

fn decode_group_value(bytes: Bytes) -> Result<GroupValue, DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r, "group value version (this node knows 1)")?;
    let generation = r.u32("generation")? as i32;
    let written_at_ms = r.u64("group record time")?;
    let protocol_type = r.string("protocol type")?;
    let protocol_name = opt_str(&mut r, "protocol name")?;
    let leader = opt_str(&mut r, "leader")?;
    let count = r.count(MEMBER_LEN_MIN, "member count")?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(MemberValue {
            member_id: r.string("member id")?,
            instance_id: opt_str(&mut r, "group instance id")?,
            client_id: r.string("client id")?,
            client_host: r.string("client host")?,
            session_timeout_ms: r.u32("session timeout")?,
            rebalance_timeout_ms: r.u32("rebalance timeout")?,
            subscription: r.bytes("subscription")?,
            assignment: r.bytes("assignment")?,
        });
    }
    r.end()?;
    Ok(GroupValue { generation, protocol_type, protocol_name, leader, written_at_ms, members })
}

fn read_version(r: &mut Reader, what: &'static str) -> Result<(), DecodeError> {
    if r.u8(what)? == RECORD_VERSION { Ok(()) } else { Err(DecodeError::Invalid { what }) }
}

// `metadata/codec.rs` has the same two helpers, private; `crate::codec` could hold them for both.
fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    b.put_u8(u8::from(s.is_some()));
    if let Some(s) = s {
        put_bytes(b, s.as_bytes());
    }
}

fn opt_str(r: &mut Reader, what: &'static str) -> Result<Option<String>, DecodeError> {
    if r.bool(what)? { Ok(Some(r.string(what)?)) } else { Ok(None) }
}
