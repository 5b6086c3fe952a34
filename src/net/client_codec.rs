//! The client protocol (`keel-client/1`): one request and one response per bidirectional
//! stream, each a frame (see `frame.rs`). Fetch responses carry entries as the exact bytes
//! stored on disk; the client checks each entry's CRC.

use bytes::{BufMut, Bytes};
use segments::Entry;

use super::frame::{self, DecodeError, FrameBuilder, FrameError, Reader, put_bytes};

/// Largest request a node reads (a produce batch plus framing).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 16 << 20;

mod kind {
    pub const PRODUCE: u8 = 1;
    pub const FETCH: u8 = 2;
    pub const METADATA: u8 = 3;
    pub const DISK: u8 = 4;
    pub const PRODUCED: u8 = 101;
    pub const FETCHED: u8 = 102;
    pub const METADATA_OK: u8 = 103;
    pub const DISK_OK: u8 = 104;
    pub const ERROR: u8 = 127;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Records encoded as in `record.rs` (without the batch's append-time prefix).
    Produce {
        record_count: u32,
        records: Bytes,
    },
    /// Committed records from `offset`; waits up to `max_wait_ms` at the end of the log.
    Fetch {
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    Metadata,
    /// The node's free disk space and its reserve (see `DiskView`).
    Disk,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Produced {
        base_offset: u64,
        record_count: u32,
    },
    /// Entries whose records include `offset` and what follows (the first entry may start
    /// before it: the client trims). `high_watermark` is the offset after the last
    /// committed record this node can serve.
    Fetched {
        log_start_offset: u64,
        high_watermark: u64,
        entries: Vec<Entry>,
    },
    Metadata(ClusterView),
    Disk(DiskView),
    Error(ErrorReply),
}

/// One node's disk: a node refuses produce while `free_bytes` is below `reserve_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskView {
    /// Free bytes (available to the node's user) on the file system of its data directory.
    pub free_bytes: u64,
    /// The node's `disk_free_bytes_min`.
    pub reserve_bytes: u64,
}

impl DiskView {
    /// Whether the node refuses produce (it still serves reads).
    pub fn refuses_produce(&self) -> bool {
        self.free_bytes < self.reserve_bytes
    }
}

/// One node's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: u64,
    pub node_id: u64,
    pub role: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub last_index: u64,
    pub log_start_offset: u64,
    /// The offset after the last committed record.
    pub log_end_offset: u64,
    pub members: Vec<MemberView>,
}

impl ClusterView {
    /// The address of the leader this node knows of, as its membership lists it.
    pub fn leader_address(&self) -> Option<&str> {
        let leader = self.leader?;
        self.members.iter().find(|m| m.id == leader).map(|m| m.address.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    /// Known on the leader: the highest index replicated to this member.
    pub match_index: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorReply {
    #[error("this node is not the leader (leader: {})", leader_text(*leader, address))]
    NotLeader { leader: Option<u64>, address: Option<String> },
    #[error("the outcome is unknown: {reason}; the records may or may not have been appended")]
    OutcomeUnknown { reason: String },
    #[error("offset {requested} is out of range: valid offsets are {start}..={end} (end = next offset to be written)")]
    OffsetOutOfRange { requested: u64, start: u64, end: u64 },
    #[error("{0}")]
    Refused(String),
    #[error("the node is busy: {0}; retry later")]
    Busy(String),
    /// The leader's disk is below its reserve: produce is refused until space is freed.
    #[error(
        "disk nearly full on node {node}: {} MiB free, below the {} MiB reserve (disk_free_bytes_min); \
         free space on it or lower its retention_bytes",
        free_bytes >> 20,
        reserve_bytes >> 20
    )]
    DiskFull { node: u64, free_bytes: u64, reserve_bytes: u64 },
    #[error("the node failed: {0}")]
    Internal(String),
}

fn leader_text(leader: Option<u64>, address: &Option<String>) -> String {
    match (leader, address) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        _ => "not known yet".into(),
    }
}

mod error_code {
    pub const NOT_LEADER: u8 = 1;
    pub const OUTCOME_UNKNOWN: u8 = 2;
    pub const OUT_OF_RANGE: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const BUSY: u8 = 5;
    pub const INTERNAL: u8 = 6;
    pub const DISK_FULL: u8 = 7;
}

impl Request {
    pub fn encode(&self) -> Vec<Bytes> {
        match self {
            Request::Produce { record_count, records } => {
                let mut b = FrameBuilder::new(kind::PRODUCE, 4);
                b.body().put_u32_le(*record_count);
                b.finish_with(vec![records.clone()])
            }
            Request::Fetch { offset, max_bytes, max_wait_ms } => {
                let mut b = FrameBuilder::new(kind::FETCH, 16);
                b.body().put_u64_le(*offset);
                b.body().put_u32_le(*max_bytes);
                b.body().put_u32_le(*max_wait_ms);
                vec![b.finish()]
            }
            Request::Metadata => vec![FrameBuilder::new(kind::METADATA, 0).finish()],
            Request::Disk => vec![FrameBuilder::new(kind::DISK, 0).finish()],
        }
    }

    pub fn decode(frame: Bytes) -> Result<Request, FrameError> {
        let (k, mut r) = frame::open(frame)?;
        let req = match k {
            kind::PRODUCE => Request::Produce { record_count: r.u32("record count")?, records: r.rest() },
            kind::FETCH => Request::Fetch {
                offset: r.u64("offset")?,
                max_bytes: r.u32("max bytes")?,
                max_wait_ms: r.u32("max wait")?,
            },
            kind::METADATA => Request::Metadata,
            kind::DISK => Request::Disk,
            other => return Err(FrameError::Kind(other)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Response {
    pub fn encode(&self) -> Vec<Bytes> {
        match self {
            Response::Produced { base_offset, record_count } => {
                let mut b = FrameBuilder::new(kind::PRODUCED, 12);
                b.body().put_u64_le(*base_offset);
                b.body().put_u32_le(*record_count);
                vec![b.finish()]
            }
            Response::Fetched { log_start_offset, high_watermark, entries } => {
                let mut b = FrameBuilder::new(kind::FETCHED, 20);
                b.body().put_u64_le(*log_start_offset);
                b.body().put_u64_le(*high_watermark);
                b.body().put_u32_le(entries.len() as u32);
                b.finish_with(entries.iter().map(|e| e.as_bytes().clone()).collect())
            }
            Response::Metadata(view) => {
                let mut b = FrameBuilder::new(kind::METADATA_OK, 128);
                encode_view(b.body(), view);
                vec![b.finish()]
            }
            Response::Disk(disk) => {
                let mut b = FrameBuilder::new(kind::DISK_OK, 16);
                b.body().put_u64_le(disk.free_bytes);
                b.body().put_u64_le(disk.reserve_bytes);
                vec![b.finish()]
            }
            Response::Error(err) => {
                let mut b = FrameBuilder::new(kind::ERROR, 64);
                encode_error(b.body(), err);
                vec![b.finish()]
            }
        }
    }

    /// Decodes a response; `entry_bytes_max` bounds each entry's length field.
    pub fn decode(frame: Bytes, entry_bytes_max: u32) -> Result<Response, FrameError> {
        let (k, mut r) = frame::open(frame)?;
        let resp = match k {
            kind::PRODUCED => Response::Produced { base_offset: r.u64("base offset")?, record_count: r.u32("count")? },
            kind::FETCHED => {
                let log_start_offset = r.u64("log start")?;
                let high_watermark = r.u64("high watermark")?;
                let n = r.count(segments::HEADER_LEN, "entry count")?;
                let mut rest = r.rest();
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let (entry, len) = Entry::decode_prefix(&rest, entry_bytes_max)
                        .map_err(|_| DecodeError::Invalid { what: "entry (bad length or CRC)" })?;
                    entries.push(entry);
                    let _ = rest.split_to(len);
                }
                r = Reader::new(rest);
                Response::Fetched { log_start_offset, high_watermark, entries }
            }
            kind::METADATA_OK => Response::Metadata(decode_view(&mut r)?),
            kind::DISK_OK => {
                Response::Disk(DiskView { free_bytes: r.u64("free bytes")?, reserve_bytes: r.u64("reserve")? })
            }
            kind::ERROR => Response::Error(decode_error(&mut r)?),
            other => return Err(FrameError::Kind(other)),
        };
        r.end()?;
        Ok(resp)
    }
}

fn put_opt_u64(buf: &mut bytes::BytesMut, v: Option<u64>) {
    buf.put_u8(v.is_some() as u8);
    buf.put_u64_le(v.unwrap_or(0));
}

fn opt_u64(r: &mut Reader, what: &'static str) -> Result<Option<u64>, FrameError> {
    let some = r.bool(what)?;
    let v = r.u64(what)?;
    Ok(some.then_some(v))
}

fn encode_view(buf: &mut bytes::BytesMut, v: &ClusterView) {
    buf.put_u64_le(v.cluster_id);
    buf.put_u64_le(v.node_id);
    put_bytes(buf, v.role.as_bytes());
    put_opt_u64(buf, v.leader);
    buf.put_u64_le(v.term);
    buf.put_u64_le(v.commit_index);
    buf.put_u64_le(v.last_index);
    buf.put_u64_le(v.log_start_offset);
    buf.put_u64_le(v.log_end_offset);
    buf.put_u32_le(v.members.len() as u32);
    for m in &v.members {
        buf.put_u64_le(m.id);
        put_bytes(buf, m.address.as_bytes());
        buf.put_u8(m.voter as u8);
        put_opt_u64(buf, m.match_index);
    }
}

fn decode_view(r: &mut Reader) -> Result<ClusterView, FrameError> {
    let mut v = ClusterView {
        cluster_id: r.u64("cluster id")?,
        node_id: r.u64("node id")?,
        role: r.string("role")?,
        leader: opt_u64(r, "leader")?,
        term: r.u64("term")?,
        commit_index: r.u64("commit index")?,
        last_index: r.u64("last index")?,
        log_start_offset: r.u64("log start")?,
        log_end_offset: r.u64("log end")?,
        members: Vec::new(),
    };
    let n = r.count(8 + 4 + 1 + 9, "member count")?;
    for _ in 0..n {
        v.members.push(MemberView {
            id: r.u64("member id")?,
            address: r.string("member address")?,
            voter: r.bool("member voter")?,
            match_index: opt_u64(r, "member match")?,
        });
    }
    Ok(v)
}

fn encode_error(buf: &mut bytes::BytesMut, err: &ErrorReply) {
    match err {
        ErrorReply::NotLeader { leader, address } => {
            buf.put_u8(error_code::NOT_LEADER);
            put_opt_u64(buf, *leader);
            put_bytes(buf, address.as_deref().unwrap_or("").as_bytes());
        }
        ErrorReply::OutcomeUnknown { reason } => {
            buf.put_u8(error_code::OUTCOME_UNKNOWN);
            put_bytes(buf, reason.as_bytes());
        }
        ErrorReply::OffsetOutOfRange { requested, start, end } => {
            buf.put_u8(error_code::OUT_OF_RANGE);
            buf.put_u64_le(*requested);
            buf.put_u64_le(*start);
            buf.put_u64_le(*end);
        }
        ErrorReply::DiskFull { node, free_bytes, reserve_bytes } => {
            buf.put_u8(error_code::DISK_FULL);
            buf.put_u64_le(*node);
            buf.put_u64_le(*free_bytes);
            buf.put_u64_le(*reserve_bytes);
        }
        ErrorReply::Refused(msg) | ErrorReply::Busy(msg) | ErrorReply::Internal(msg) => {
            let code = match err {
                ErrorReply::Refused(_) => error_code::REFUSED,
                ErrorReply::Busy(_) => error_code::BUSY,
                _ => error_code::INTERNAL,
            };
            buf.put_u8(code);
            put_bytes(buf, msg.as_bytes());
        }
    }
}

fn decode_error(r: &mut Reader) -> Result<ErrorReply, FrameError> {
    Ok(match r.u8("error code")? {
        error_code::NOT_LEADER => {
            let leader = opt_u64(r, "leader")?;
            let address = r.string("leader address")?;
            ErrorReply::NotLeader { leader, address: (!address.is_empty()).then_some(address) }
        }
        error_code::OUTCOME_UNKNOWN => ErrorReply::OutcomeUnknown { reason: r.string("reason")? },
        error_code::OUT_OF_RANGE => {
            ErrorReply::OffsetOutOfRange { requested: r.u64("offset")?, start: r.u64("start")?, end: r.u64("end")? }
        }
        error_code::REFUSED => ErrorReply::Refused(r.string("message")?),
        error_code::BUSY => ErrorReply::Busy(r.string("message")?),
        error_code::INTERNAL => ErrorReply::Internal(r.string("message")?),
        error_code::DISK_FULL => ErrorReply::DiskFull {
            node: r.u64("node")?,
            free_bytes: r.u64("free bytes")?,
            reserve_bytes: r.u64("reserve")?,
        },
        _ => return Err(DecodeError::Invalid { what: "error code" }.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use segments::EntryMeta;

    fn join(chunks: Vec<Bytes>) -> Bytes {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let len = frame::check_len(all[..4].try_into().unwrap(), 1 << 24).unwrap();
        assert_eq!(len, all.len() - 4, "length prefix covers the whole frame");
        Bytes::from(all).slice(4..)
    }

    #[test]
    fn every_message_round_trips() {
        let requests = [
            Request::Produce { record_count: 2, records: Bytes::from_static(b"abc") },
            Request::Fetch { offset: 7, max_bytes: 1 << 20, max_wait_ms: 500 },
            Request::Metadata,
            Request::Disk,
        ];
        for req in requests {
            assert_eq!(Request::decode(join(req.encode())).unwrap(), req);
        }
        let entry = Entry::encode(EntryMeta { index: 3, term: 2, kind: 0, base_offset: 9, record_count: 1 }, b"x");
        let responses = [
            Response::Produced { base_offset: 5, record_count: 3 },
            Response::Fetched { log_start_offset: 0, high_watermark: 10, entries: vec![entry.clone(), entry] },
            Response::Metadata(ClusterView {
                cluster_id: 1,
                node_id: 2,
                role: "leader".into(),
                leader: Some(2),
                members: vec![MemberView { id: 1, address: "127.0.0.1:7000".into(), voter: true, match_index: None }],
                ..ClusterView::default()
            }),
            Response::Error(ErrorReply::NotLeader { leader: Some(1), address: Some("127.0.0.1:7000".into()) }),
            Response::Error(ErrorReply::OffsetOutOfRange { requested: 9, start: 10, end: 20 }),
            Response::Error(ErrorReply::Busy("too many bytes in flight".into())),
            Response::Error(ErrorReply::DiskFull { node: 2, free_bytes: 137 << 20, reserve_bytes: 256 << 20 }),
            Response::Disk(DiskView { free_bytes: 1 << 40, reserve_bytes: 256 << 20 }),
        ];
        for resp in responses {
            assert_eq!(Response::decode(join(resp.encode()), 1 << 20).unwrap(), resp);
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Request::decode(Bytes::from(bytes.clone()));
            let _ = Response::decode(Bytes::from(bytes), 1 << 20);
        }

        #[test]
        fn decoding_a_truncated_response_fails_cleanly(cut in 0usize..200) {
            let entry = Entry::encode(EntryMeta { index: 1, term: 1, kind: 0, base_offset: 0, record_count: 1 }, b"v");
            let fetched = Response::Fetched { log_start_offset: 0, high_watermark: 1, entries: vec![entry] };
            let frame = join(fetched.encode());
            let cut = cut.min(frame.len().saturating_sub(1));
            prop_assert!(Response::decode(frame.slice(..cut), 1 << 20).is_err());
        }
    }
}
