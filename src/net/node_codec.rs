//! Messages from node to node that belong to no Raft group, on the peer links' control
//! stream beside the groups' messages (`peer_codec.rs`), told apart by their frame kind.
//!
//! `LEADERS` (kind 100): what the sender knows of the groups it leads (`broker/leaders.rs`).
//!
//! ```text
//! count:u32, then per group:
//!   group:u64 term:u64 leader:u64 (0: none) has_offsets:u8
//!   [log_start_offset:u64 high_watermark:u64 in_sync_count:u8 in_sync:u64*]   if has_offsets = 1
//! ```
//! All integers little-endian.

use bytes::{BufMut, Bytes};

use super::frame::{self, DecodeError, FrameBuilder, FrameError};
use crate::broker::leaders::{LeaderReport, Offsets};

const LEADERS: u8 = 100;
/// Reports in one frame; a node leading more groups sends several frames.
pub const REPORTS_PER_FRAME_MAX: usize = 4096;
/// Replicas listed as in sync for one group.
const IN_SYNC_MAX: usize = 16;
/// The smallest report: group, term, leader, flag.
const REPORT_BYTES_MIN: usize = 8 + 8 + 8 + 1;

/// A node-level message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMessage {
    Leaders(Vec<LeaderReport>),
}

/// Whether a frame (without its length prefix) holds a node-level message.
pub fn is_node_frame(frame: &[u8]) -> bool {
    frame.get(1) == Some(&LEADERS)
}

/// Encodes reports as frames of at most `REPORTS_PER_FRAME_MAX` reports each.
pub fn encode_leaders(reports: &[LeaderReport]) -> Vec<Bytes> {
    reports
        .chunks(REPORTS_PER_FRAME_MAX)
        .map(|chunk| {
            let mut frame = FrameBuilder::new(LEADERS, 4 + chunk.len() * 48);
            let b = frame.body();
            b.put_u32_le(chunk.len() as u32);
            for r in chunk {
                b.put_u64_le(r.group);
                b.put_u64_le(r.term);
                b.put_u64_le(r.leader.unwrap_or(0));
                match &r.offsets {
                    None => b.put_u8(0),
                    Some(o) => {
                        b.put_u8(1);
                        b.put_u64_le(o.log_start_offset);
                        b.put_u64_le(o.high_watermark);
                        let in_sync = &o.in_sync[..o.in_sync.len().min(IN_SYNC_MAX)];
                        b.put_u8(in_sync.len() as u8);
                        for id in in_sync {
                            b.put_u64_le(*id);
                        }
                    }
                }
            }
            frame.finish()
        })
        .collect()
}

/// Decodes a node-level frame (without its length prefix); any bad byte is an error.
pub fn decode(frame: Bytes) -> Result<NodeMessage, FrameError> {
    let (kind, mut r) = frame::open(frame)?;
    if kind != LEADERS {
        return Err(FrameError::Kind(kind));
    }
    let count = r.count(REPORT_BYTES_MIN, "report count")?;
    if count > REPORTS_PER_FRAME_MAX {
        return Err(DecodeError::Invalid { what: "report count" }.into());
    }
    let mut reports = Vec::with_capacity(count);
    for _ in 0..count {
        let (group, term, leader) = (r.u64("group")?, r.u64("term")?, r.u64("leader")?);
        let offsets = match r.u8("has offsets")? {
            0 => None,
            1 => {
                let (log_start_offset, high_watermark) = (r.u64("log start")?, r.u64("high watermark")?);
                let n = usize::from(r.u8("in sync count")?);
                if n > IN_SYNC_MAX {
                    return Err(DecodeError::Invalid { what: "in sync count" }.into());
                }
                let in_sync = (0..n).map(|_| r.u64("in sync")).collect::<Result<Vec<_>, _>>()?;
                Some(Offsets { log_start_offset, high_watermark, in_sync })
            }
            _ => return Err(DecodeError::Invalid { what: "has offsets" }.into()),
        };
        reports.push(LeaderReport { group, term, leader: (leader != 0).then_some(leader), offsets });
    }
    r.end()?;
    Ok(NodeMessage::Leaders(reports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leader_reports_round_trip() {
        let reports = vec![
            LeaderReport { group: 1, term: 3, leader: Some(2), offsets: None },
            LeaderReport {
                group: 9,
                term: 1,
                leader: Some(1),
                offsets: Some(Offsets { log_start_offset: 4, high_watermark: 99, in_sync: vec![1, 3] }),
            },
        ];
        let frames = encode_leaders(&reports);
        assert_eq!(frames.len(), 1);
        assert!(is_node_frame(&frames[0][4..]));
        assert_eq!(decode(frames[0].slice(4..)).unwrap(), NodeMessage::Leaders(reports));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = vec![frame::FRAME_VERSION, LEADERS];
            frame.extend(bytes);
            let _ = decode(Bytes::from(frame));
        }
    }
}
