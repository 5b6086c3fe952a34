//! Raft messages on the wire between peers. Each frame names the Raft group it belongs to
//! (one group today; many later, sharing the connection). Entries travel as the exact bytes
//! stored on disk, and the receiver checks each entry's CRC before the core sees it.

use bytes::{BufMut, Bytes};
use segments::Entry;

use super::frame::{self, DecodeError, FrameBuilder, FrameError, Reader, put_bytes};
use super::peer::Lane;
use crate::raft::{Conflict, LogStart, Membership, Message, SnapshotMeta};

mod kind {
    pub const PRE_VOTE: u8 = 10;
    pub const PRE_VOTE_RESPONSE: u8 = 11;
    pub const VOTE: u8 = 12;
    pub const VOTE_RESPONSE: u8 = 13;
    pub const APPEND: u8 = 14;
    pub const APPEND_RESPONSE: u8 = 15;
    pub const HEARTBEAT: u8 = 16;
    pub const HEARTBEAT_RESPONSE: u8 = 17;
    pub const TIMEOUT_NOW: u8 = 18;
    pub const RESET: u8 = 19;
    pub const QUIESCE: u8 = 20;
    pub const SNAPSHOT: u8 = 21;
    pub const SNAPSHOT_RESPONSE: u8 = 22;
    pub const REFETCH: u8 = 23;
    pub const REFETCH_RESPONSE: u8 = 24;
}

/// Which stream a message travels on. Every Append (empty ones too), Reset and snapshot
/// chunk shares the ordered bulk lane: an empty Append that overtook the entries before it
/// would be rejected and throw the leader's pipeline back to probing. Votes, heartbeats,
/// Quiesce (which stands for a heartbeat) and every other response take the control lane,
/// so they never wait behind a large batch; a RefetchResponse carries an entry, so it is bulk.
pub fn lane(msg: &Message) -> Lane {
    match msg {
        Message::Append { .. } | Message::Reset { .. } | Message::Snapshot { .. } | Message::RefetchResponse { .. } => {
            Lane::Bulk
        }
        _ => Lane::Control,
    }
}

/// Encodes a message as frame chunks: a head, then the entries' own bytes (no copies).
pub fn encode(group: u64, msg: &Message) -> Vec<Bytes> {
    let k = match msg {
        Message::PreVote { .. } => kind::PRE_VOTE,
        Message::PreVoteResponse { .. } => kind::PRE_VOTE_RESPONSE,
        Message::Vote { .. } => kind::VOTE,
        Message::VoteResponse { .. } => kind::VOTE_RESPONSE,
        Message::Append { .. } => kind::APPEND,
        Message::AppendResponse { .. } => kind::APPEND_RESPONSE,
        Message::Heartbeat { .. } => kind::HEARTBEAT,
        Message::HeartbeatResponse { .. } => kind::HEARTBEAT_RESPONSE,
        Message::TimeoutNow { .. } => kind::TIMEOUT_NOW,
        Message::Reset { .. } => kind::RESET,
        Message::Quiesce { .. } => kind::QUIESCE,
        Message::Snapshot { .. } => kind::SNAPSHOT,
        Message::SnapshotResponse { .. } => kind::SNAPSHOT_RESPONSE,
        Message::Refetch { .. } => kind::REFETCH,
        Message::RefetchResponse { .. } => kind::REFETCH_RESPONSE,
    };
    let mut frame = FrameBuilder::new(k, 64);
    let b = frame.body();
    b.put_u64_le(group);
    b.put_u64_le(msg.term());
    let mut tail: Vec<Bytes> = Vec::new();
    match msg {
        Message::PreVote { last_index, last_term, .. } => {
            b.put_u64_le(*last_index);
            b.put_u64_le(*last_term);
        }
        Message::Vote { last_index, last_term, transfer, .. } => {
            b.put_u64_le(*last_index);
            b.put_u64_le(*last_term);
            b.put_u8(*transfer as u8);
        }
        Message::PreVoteResponse { granted, .. } | Message::VoteResponse { granted, .. } => b.put_u8(*granted as u8),
        Message::Append { prev_index, prev_term, commit, entries, .. } => {
            b.put_u64_le(*prev_index);
            b.put_u64_le(*prev_term);
            b.put_u64_le(*commit);
            b.put_u32_le(u32::try_from(entries.len()).expect("bounded by append_entries_max"));
            tail = entries.iter().map(|e| e.as_bytes().clone()).collect();
        }
        Message::AppendResponse { index, reject, .. } => {
            b.put_u64_le(*index);
            b.put_u8(reject.is_some() as u8);
            let c = reject.unwrap_or(Conflict { index: 0, term: 0 });
            b.put_u64_le(c.index);
            b.put_u64_le(c.term);
        }
        Message::Heartbeat { commit, .. } => b.put_u64_le(*commit),
        Message::HeartbeatResponse { .. } | Message::TimeoutNow { .. } => {}
        Message::Reset { start, membership_index, membership, .. } => {
            put_start(b, start, *membership_index, membership)
        }
        Message::Quiesce { commit, .. } => b.put_u64_le(*commit),
        Message::Snapshot { meta, offset, data, .. } => {
            put_start(b, &meta.start, meta.membership_index, &meta.membership);
            b.put_u64_le(meta.bytes);
            b.put_u32_le(meta.crc);
            b.put_u64_le(*offset);
            b.put_u32_le(u32::try_from(data.len()).expect("bounded by snapshot_chunk_bytes_max"));
            tail = vec![data.clone()];
        }
        Message::SnapshotResponse { index, received, .. } => {
            b.put_u64_le(*index);
            b.put_u64_le(*received);
        }
        Message::Refetch { index, last_index, .. } => {
            b.put_u64_le(*index);
            b.put_u64_le(*last_index);
        }
        Message::RefetchResponse { proof_index, proof_term, entries, .. } => {
            b.put_u64_le(*proof_index);
            b.put_u64_le(*proof_term);
            b.put_u32_le(u32::try_from(entries.len()).expect("one entry"));
            tail = entries.iter().map(|e| e.as_bytes().clone()).collect();
        }
    }
    frame.finish_with(tail)
}

/// A log start and the configuration that goes with it (Reset, Snapshot).
fn put_start(b: &mut bytes::BytesMut, start: &LogStart, membership_index: u64, membership: &Membership) {
    b.put_u64_le(start.index);
    b.put_u64_le(start.prev_term);
    b.put_u64_le(start.offset);
    b.put_u64_le(membership_index);
    put_bytes(b, &membership.encode());
}

fn read_start(r: &mut Reader) -> Result<(LogStart, u64, Membership), FrameError> {
    let start = LogStart { index: r.u64("start index")?, prev_term: r.u64("prev term")?, offset: r.u64("offset")? };
    let membership_index = r.u64("membership index")?;
    let membership =
        Membership::decode(&r.bytes("membership")?).map_err(|_| DecodeError::Invalid { what: "membership" })?;
    Ok((start, membership_index, membership))
}

/// Decodes a frame (without its length prefix) into its group and message. Entries are
/// CRC-checked here and bounded by `entry_bytes_max`; any bad byte is an error.
pub fn decode(frame: Bytes, entry_bytes_max: u32) -> Result<(u64, Message), FrameError> {
    let (k, mut r) = frame::open(frame)?;
    let group = r.u64("group")?;
    let term = r.u64("term")?;
    let msg = match k {
        kind::PRE_VOTE => Message::PreVote { term, last_index: r.u64("last index")?, last_term: r.u64("last term")? },
        kind::VOTE => Message::Vote {
            term,
            last_index: r.u64("last index")?,
            last_term: r.u64("last term")?,
            transfer: r.bool("transfer")?,
        },
        kind::PRE_VOTE_RESPONSE => Message::PreVoteResponse { term, granted: r.bool("granted")? },
        kind::VOTE_RESPONSE => Message::VoteResponse { term, granted: r.bool("granted")? },
        kind::APPEND => {
            let prev_index = r.u64("prev index")?;
            let prev_term = r.u64("prev term")?;
            let commit = r.u64("commit")?;
            let n = r.count(segments::HEADER_LEN, "entry count")?;
            let entries = decode_entries(&mut r, n, entry_bytes_max)?;
            Message::Append { term, prev_index, prev_term, commit, entries }
        }
        kind::APPEND_RESPONSE => {
            let index = r.u64("index")?;
            let rejected = r.bool("reject")?;
            let conflict = Conflict { index: r.u64("conflict index")?, term: r.u64("conflict term")? };
            Message::AppendResponse { term, index, reject: rejected.then_some(conflict) }
        }
        kind::HEARTBEAT => Message::Heartbeat { term, commit: r.u64("commit")? },
        kind::HEARTBEAT_RESPONSE => Message::HeartbeatResponse { term },
        kind::TIMEOUT_NOW => Message::TimeoutNow { term },
        kind::RESET => {
            let (start, membership_index, membership) = read_start(&mut r)?;
            Message::Reset { term, start, membership_index, membership }
        }
        kind::QUIESCE => Message::Quiesce { term, commit: r.u64("commit")? },
        kind::SNAPSHOT => {
            let (start, membership_index, membership) = read_start(&mut r)?;
            let (bytes, crc, offset) = (r.u64("snapshot bytes")?, r.u32("snapshot crc")?, r.u64("chunk offset")?);
            // A slice of the frame, bounded like an entry before the core holds on to it.
            let data = r.bytes("snapshot chunk")?;
            if data.len() > entry_bytes_max as usize {
                return Err(DecodeError::Invalid { what: "snapshot chunk longer than an entry may be" }.into());
            }
            let meta = SnapshotMeta { start, membership_index, membership, bytes, crc };
            Message::Snapshot { term, meta, offset, data }
        }
        kind::SNAPSHOT_RESPONSE => {
            Message::SnapshotResponse { term, index: r.u64("snapshot index")?, received: r.u64("received")? }
        }
        kind::REFETCH => Message::Refetch { term, index: r.u64("refetch index")?, last_index: r.u64("last index")? },
        kind::REFETCH_RESPONSE => {
            let proof_index = r.u64("proof index")?;
            let proof_term = r.u64("proof term")?;
            let n = r.count(segments::HEADER_LEN, "entry count")?;
            let entries = decode_entries(&mut r, n, entry_bytes_max)?;
            Message::RefetchResponse { term, proof_index, proof_term, entries }
        }
        other => return Err(FrameError::Kind(other)),
    };
    r.end()?;
    Ok((group, msg))
}

fn decode_entries(r: &mut Reader, n: usize, entry_bytes_max: u32) -> Result<Vec<Entry>, FrameError> {
    let mut rest = r.rest();
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let (entry, len) =
            Entry::decode_prefix(&rest, entry_bytes_max).map_err(|_| DecodeError::Invalid { what: "entry" })?;
        entries.push(entry);
        let _ = rest.split_to(len);
    }
    *r = Reader::new(rest);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use segments::EntryMeta;

    fn join(chunks: Vec<Bytes>) -> Bytes {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let len = frame::check_len(all[..4].try_into().unwrap(), 1 << 24).unwrap();
        assert_eq!(len, all.len() - 4);
        Bytes::from(all).slice(4..)
    }

    fn entry(index: u64) -> Entry {
        Entry::encode(EntryMeta { index, term: 2, kind: 0, base_offset: index * 10, record_count: 10 }, b"batch")
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::PreVote { term: 3, last_index: 10, last_term: 2 },
            Message::PreVoteResponse { term: 3, granted: true },
            Message::Vote { term: 3, last_index: 10, last_term: 2, transfer: true },
            Message::VoteResponse { term: 3, granted: false },
            Message::Append { term: 3, prev_index: 4, prev_term: 2, commit: 4, entries: vec![entry(5), entry(6)] },
            Message::Append { term: 3, prev_index: 4, prev_term: 2, commit: 4, entries: vec![] },
            Message::AppendResponse { term: 3, index: 6, reject: None },
            Message::AppendResponse { term: 3, index: 6, reject: Some(Conflict { index: 2, term: 1 }) },
            Message::Heartbeat { term: 3, commit: 9 },
            Message::HeartbeatResponse { term: 3 },
            Message::TimeoutNow { term: 3 },
            Message::Reset {
                term: 3,
                start: LogStart { index: 100, prev_term: 2, offset: 5000 },
                membership_index: 50,
                membership: Membership { voters: [1, 2, 3].into(), ..Membership::default() },
            },
            Message::Quiesce { term: 3, commit: 41 },
            Message::Snapshot {
                term: 3,
                meta: SnapshotMeta {
                    start: LogStart { index: 100, prev_term: 2, offset: 5000 },
                    membership_index: 50,
                    membership: Membership { voters: [1, 2, 3].into(), ..Membership::default() },
                    bytes: 10,
                    crc: 0xdead_beef,
                },
                offset: 4,
                data: Bytes::from_static(b"chunk"),
            },
            Message::SnapshotResponse { term: 3, index: 99, received: 4 },
            Message::Refetch { term: 3, index: 5, last_index: 40 },
            Message::RefetchResponse { term: 3, proof_index: 40, proof_term: 2, entries: vec![entry(5)] },
            Message::RefetchResponse { term: 3, proof_index: 40, proof_term: 2, entries: vec![] },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for msg in samples() {
            assert_eq!(decode(join(encode(7, &msg)), 1 << 20).unwrap(), (7, msg));
        }
    }

    #[test]
    fn a_corrupt_entry_is_refused() {
        let msg = Message::Append { term: 3, prev_index: 4, prev_term: 2, commit: 4, entries: vec![entry(5)] };
        let frame = join(encode(1, &msg));
        let mut bytes = frame.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(decode(Bytes::from(bytes), 1 << 20).is_err());
    }

    #[test]
    fn a_snapshot_chunk_longer_than_an_entry_may_be_is_refused() {
        let msg = samples().into_iter().find(|m| matches!(m, Message::Snapshot { .. })).unwrap();
        let Message::Snapshot { data, .. } = &msg else { unreachable!() };
        let frame = join(encode(1, &msg));
        assert!(decode(frame.clone(), data.len() as u32).is_ok());
        assert!(decode(frame, data.len() as u32 - 1).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Bytes::from(bytes), 1 << 20);
        }

        #[test]
        fn decoding_truncated_or_mutated_frames_never_panics(
            which in 0usize..15,
            cut in 0usize..400,
            flip in 0usize..400,
        ) {
            let frame = join(encode(1, &samples()[which]));
            let cut = cut.min(frame.len());
            prop_assert!(cut == frame.len() || decode(frame.slice(..cut), 1 << 20).is_err());
            let mut bytes = frame.to_vec();
            if !bytes.is_empty() {
                let i = flip % bytes.len();
                bytes[i] ^= 0xff;
                let _ = decode(Bytes::from(bytes), 1 << 20);
            }
        }
    }
}
