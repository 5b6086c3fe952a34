//! Checks every array count in a request against the bytes that are really there, before
//! the kafka-protocol codecs decode it.
//!
//! The codecs reserve room for an array as soon as they read its count
//! (`Vec::with_capacity(count)`), so a forged count of two billion makes them ask for
//! hundreds of gigabytes, and a failed allocation aborts the whole process, not the
//! connection. This walks the request by the same layout the codecs use (Kafka's message
//! schemas, for the versions keel advertises) and refuses any count that more elements than
//! the remaining bytes could hold. A test walks a request encoded by the codecs for every
//! advertised version and checks that the walk ends exactly at its end.

use kafka_protocol::messages::ApiKey;

/// A field's wire type.
#[derive(Clone, Copy)]
enum T {
    I8,
    I16,
    I32,
    I64,
    /// A string, nullable or not: the null length is accepted either way.
    Str,
    /// Bytes (the records of a produce), nullable.
    Bytes,
    /// An array of structs, nullable.
    Arr(&'static [F]),
    /// An array of i32, nullable.
    I32s,
    /// An array of strings, nullable.
    Strs,
}

/// A field present in versions `min..=max`.
#[derive(Clone, Copy)]
struct F(T, i16, i16);

const ALL: i16 = i16::MAX;
use T::*;

const METADATA_TOPIC: &[F] = &[F(Str, 0, ALL)];
const METADATA: &[F] = &[F(Arr(METADATA_TOPIC), 0, ALL), F(I8, 4, ALL), F(I8, 8, 10), F(I8, 8, ALL)];

const PRODUCE_PARTITION: &[F] = &[F(I32, 0, ALL), F(Bytes, 0, ALL)];
const PRODUCE_TOPIC: &[F] = &[F(Str, 0, ALL), F(Arr(PRODUCE_PARTITION), 0, ALL)];
const PRODUCE: &[F] = &[F(Str, 0, ALL), F(I16, 0, ALL), F(I32, 0, ALL), F(Arr(PRODUCE_TOPIC), 0, ALL)];

const FETCH_PARTITION: &[F] = &[F(I32, 0, ALL), F(I32, 9, ALL), F(I64, 0, ALL), F(I64, 5, ALL), F(I32, 0, ALL)];
const FETCH_TOPIC: &[F] = &[F(Str, 0, ALL), F(Arr(FETCH_PARTITION), 0, ALL)];
const FETCH_FORGOTTEN: &[F] = &[F(Str, 0, ALL), F(I32s, 0, ALL)];
const FETCH: &[F] = &[
    F(I32, 0, ALL),
    F(I32, 0, ALL),
    F(I32, 0, ALL),
    F(I32, 3, ALL),
    F(I8, 4, ALL),
    F(I32, 7, ALL),
    F(I32, 7, ALL),
    F(Arr(FETCH_TOPIC), 0, ALL),
    F(Arr(FETCH_FORGOTTEN), 7, ALL),
    F(Str, 11, ALL),
];

const LIST_OFFSETS_PARTITION: &[F] = &[F(I32, 0, ALL), F(I32, 4, ALL), F(I64, 0, ALL)];
const LIST_OFFSETS_TOPIC: &[F] = &[F(Str, 0, ALL), F(Arr(LIST_OFFSETS_PARTITION), 0, ALL)];
const LIST_OFFSETS: &[F] = &[F(I32, 0, ALL), F(I8, 2, ALL), F(Arr(LIST_OFFSETS_TOPIC), 0, ALL)];

const CREATE_ASSIGNMENT: &[F] = &[F(I32, 0, ALL), F(I32s, 0, ALL)];
const CREATE_CONFIG: &[F] = &[F(Str, 0, ALL), F(Str, 0, ALL)];
const CREATE_TOPIC: &[F] =
    &[F(Str, 0, ALL), F(I32, 0, ALL), F(I16, 0, ALL), F(Arr(CREATE_ASSIGNMENT), 0, ALL), F(Arr(CREATE_CONFIG), 0, ALL)];
const CREATE_TOPICS: &[F] = &[F(Arr(CREATE_TOPIC), 0, ALL), F(I32, 0, ALL), F(I8, 1, ALL)];

const DELETE_TOPICS: &[F] = &[F(Strs, 0, 5), F(I32, 0, ALL)];

const DESCRIBE_RESOURCE: &[F] = &[F(I8, 0, ALL), F(Str, 0, ALL), F(Strs, 0, ALL)];
const DESCRIBE_CONFIGS: &[F] = &[F(Arr(DESCRIBE_RESOURCE), 0, ALL), F(I8, 1, ALL), F(I8, 3, ALL)];

const EPOCH_PARTITION: &[F] = &[F(I32, 0, ALL), F(I32, 2, ALL), F(I32, 0, ALL)];
const EPOCH_TOPIC: &[F] = &[F(Str, 0, ALL), F(Arr(EPOCH_PARTITION), 0, ALL)];
const EPOCH: &[F] = &[F(I32, 3, ALL), F(Arr(EPOCH_TOPIC), 0, ALL)];

// The group APIs' layouts, from Kafka's message schemas; FindCoordinator (to v3) and
// Heartbeat have no arrays.
const JOIN_PROTOCOL: &[F] = &[F(Str, 0, ALL), F(Bytes, 0, ALL)];
const JOIN_GROUP: &[F] = &[
    F(Str, 0, ALL),
    F(I32, 0, ALL),
    F(I32, 1, ALL),
    F(Str, 0, ALL),
    F(Str, 5, ALL),
    F(Str, 0, ALL),
    F(Arr(JOIN_PROTOCOL), 0, ALL),
    F(Str, 8, ALL),
];
const SYNC_ASSIGNMENT: &[F] = &[F(Str, 0, ALL), F(Bytes, 0, ALL)];
const SYNC_GROUP: &[F] = &[
    F(Str, 0, ALL),
    F(I32, 0, ALL),
    F(Str, 0, ALL),
    F(Str, 3, ALL),
    F(Str, 5, ALL),
    F(Str, 5, ALL),
    F(Arr(SYNC_ASSIGNMENT), 0, ALL),
];
const LEAVE_MEMBER: &[F] = &[F(Str, 3, ALL), F(Str, 3, ALL), F(Str, 5, ALL)];
const LEAVE_GROUP: &[F] = &[F(Str, 0, ALL), F(Str, 0, 2), F(Arr(LEAVE_MEMBER), 3, ALL)];
const COMMIT_PARTITION: &[F] = &[F(I32, 0, ALL), F(I64, 0, ALL), F(I32, 6, ALL), F(I64, 1, 1), F(Str, 0, ALL)];
const COMMIT_TOPIC: &[F] = &[F(Str, 0, ALL), F(Arr(COMMIT_PARTITION), 0, ALL)];
const OFFSET_COMMIT: &[F] =
    &[F(Str, 0, ALL), F(I32, 1, ALL), F(Str, 1, ALL), F(Str, 7, ALL), F(I64, 2, 4), F(Arr(COMMIT_TOPIC), 0, ALL)];
const FETCH_OFFSETS_TOPIC: &[F] = &[F(Str, 0, 7), F(I32s, 0, 7)];
const OFFSET_FETCH: &[F] = &[F(Str, 0, 7), F(Arr(FETCH_OFFSETS_TOPIC), 0, 7), F(I8, 7, ALL)];
const DESCRIBE_GROUPS: &[F] = &[F(Strs, 0, ALL), F(I8, 3, ALL)];
const LIST_GROUPS: &[F] = &[F(Strs, 4, ALL), F(Strs, 5, ALL)];

/// The layout of a request body and the first version that encodes it flexibly (KIP-482).
const INIT_PRODUCER_ID: &[F] = &[F(Str, 0, ALL), F(I32, 0, ALL), F(I64, 3, ALL), F(I16, 3, ALL)];

fn layout(api: ApiKey) -> Option<(&'static [F], i16)> {
    Some(match api {
        ApiKey::Metadata => (METADATA, 9),
        ApiKey::Produce => (PRODUCE, 9),
        ApiKey::Fetch => (FETCH, 12),
        ApiKey::ListOffsets => (LIST_OFFSETS, 6),
        ApiKey::CreateTopics => (CREATE_TOPICS, 5),
        ApiKey::DeleteTopics => (DELETE_TOPICS, 4),
        ApiKey::DescribeConfigs => (DESCRIBE_CONFIGS, 4),
        ApiKey::OffsetForLeaderEpoch => (EPOCH, 4),
        ApiKey::JoinGroup => (JOIN_GROUP, 6),
        ApiKey::SyncGroup => (SYNC_GROUP, 4),
        ApiKey::LeaveGroup => (LEAVE_GROUP, 4),
        ApiKey::OffsetCommit => (OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (OFFSET_FETCH, 6),
        ApiKey::DescribeGroups => (DESCRIBE_GROUPS, 5),
        ApiKey::ListGroups => (LIST_GROUPS, 3),
        ApiKey::InitProducerId => (INIT_PRODUCER_ID, 2),
        // ApiVersions, FindCoordinator (to v3) and Heartbeat have no arrays.
        _ => return None,
    })
}

/// Refuses a request body whose array counts promise more than its bytes can hold.
pub fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    walk(api, version, body).map(|_| ())
}

/// Walks a body; on success, the number of bytes its fields took.
fn walk(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, String> {
    let Some((fields, flexible_from)) = layout(api) else {
        return Ok(body.len());
    };
    let mut walker = Walker { buf: body, version, flexible: version >= flexible_from };
    walker.fields(fields)?;
    Ok(body.len() - walker.buf.len())
}

struct Walker<'a> {
    buf: &'a [u8],
    version: i16,
    flexible: bool,
}

impl Walker<'_> {
    fn present(&self, f: &F) -> bool {
        (f.1..=f.2).contains(&self.version)
    }

    fn fields(&mut self, fields: &[F]) -> Result<(), String> {
        let version = self.version;
        for f in fields.iter().filter(|f| (f.1..=f.2).contains(&version)) {
            self.one(f.0)?;
        }
        if self.flexible {
            self.tagged_fields()?;
        }
        Ok(())
    }

    fn one(&mut self, t: T) -> Result<(), String> {
        match t {
            I8 => self.skip(1),
            I16 => self.skip(2),
            I32 => self.skip(4),
            I64 => self.skip(8),
            Str => {
                let len = if self.flexible { self.compact_len()? } else { self.i16()?.max(-1).into() };
                self.skip(usize::try_from(len).unwrap_or(0))
            }
            Bytes => {
                let len = if self.flexible { self.compact_len()? } else { self.i32()?.into() };
                self.skip(usize::try_from(len).unwrap_or(0))
            }
            Arr(fields) => {
                let min = self.min_size(fields);
                for _ in 0..self.count(min)? {
                    self.fields(fields)?;
                }
                Ok(())
            }
            I32s => {
                let n = self.count(4)?;
                self.skip(n * 4)
            }
            Strs => {
                let min = if self.flexible { 1 } else { 2 };
                for _ in 0..self.count(min)? {
                    self.one(Str)?;
                }
                Ok(())
            }
        }
    }

    /// The fewest bytes a struct of these fields takes in this version.
    fn min_size(&self, fields: &[F]) -> usize {
        let varint_or = |fixed: usize| if self.flexible { 1 } else { fixed };
        let size: usize = fields
            .iter()
            .filter(|f| self.present(f))
            .map(|f| match f.0 {
                I8 => 1,
                I16 => 2,
                I32 => 4,
                I64 => 8,
                Str => varint_or(2),
                Bytes | Arr(_) | I32s | Strs => varint_or(4),
            })
            .sum();
        size + usize::from(self.flexible)
    }

    /// An array's element count (null: none), refused when `min_item` bytes per element
    /// would take more than what is left.
    fn count(&mut self, min_item: usize) -> Result<usize, String> {
        let n: i64 = if self.flexible { self.compact_len()? } else { self.i32()?.into() };
        if n < -1 {
            return Err(format!("array length {n}"));
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(format!("array of {n} elements in {} bytes", self.buf.len()));
        }
        Ok(n)
    }

    fn tagged_fields(&mut self) -> Result<(), String> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }

    /// A compact length: the varint holds length + 1, so 0 is null (-1).
    fn compact_len(&mut self) -> Result<i64, String> {
        Ok(i64::from(self.uvarint()?) - 1)
    }

    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let [b, rest @ ..] = self.buf else { return Err("truncated varint".into()) };
            self.buf = rest;
            value |= u32::from(b & 0x7f).checked_shl(shift).ok_or("varint too long")?;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 5 bytes".into())
    }

    fn i16(&mut self) -> Result<i16, String> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.buf.len() {
            return Err(format!("truncated: {n} bytes needed, {} left", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
