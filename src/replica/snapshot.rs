//! A replica's snapshot (Raft §7, `raft/snapshot.rs`): the state machine's bytes at an
//! index, for a group whose state machine is not the log (the metadata group). It is kept
//! beside the hard state (`HardStateStore::save_snapshot`); this file has its byte format,
//! the core's view of the log with the snapshot beside it, and the start-up step that
//! makes the log agree with the snapshot after a crash in the middle of an install.
//!
//! The file `snapshot`, beside `hard-state`, is a `segments::state_file` (magic, kind 3,
//! version 1, length, payload, CRC-32 of it all; written to a temporary file, fsync'd,
//! renamed over the old one, the directory fsync'd: a crash leaves the old snapshot or the
//! new one, never a mix). The payload, little-endian:
//!
//! ```text
//! offset   size  field
//!      0      8  start.index       the first index after the snapshot (its last index + 1)
//!      8      8  start.prev_term   the term of the snapshot's last entry
//!     16      8  start.offset      the record offset after it
//!     24      8  membership_index  the index of the configuration entry below
//!     32      8  bytes (B)         length of the state machine's bytes
//!     40      4  crc               CRC-32 (IEEE) of those bytes
//!     44      4  M                 length of the configuration
//!     48      M  configuration     `Membership::encode`
//!   48+M      B  data              the state machine's bytes
//! ```
//!
//! Installing a snapshot from a leader takes three steps, in this order (`Replica::
//! apply_ready`): the snapshot file is replaced (durable on return), the hard state with the
//! snapshot's configuration is saved, the log is reset to start right after the snapshot
//! (durable at the next sync). A crash after the first step leaves a snapshot ahead of the
//! log: `restart_log_after_snapshot` finishes the install on the next start.

use bytes::BufMut;

use super::backend::{DamageSeen, LogBackend, StorageError};
use super::hard_state::{HardStateStore, StateError};
use crate::codec::{DecodeError, Reader};
use crate::raft::{Entry, LogStart, LogStore, Membership, Snapshot, SnapshotMeta, StoreError};

pub const SNAPSHOT_FILE: &str = "snapshot";
pub const KIND_SNAPSHOT: u8 = 3;
pub const SNAPSHOT_VERSION: u8 = 1;

/// Why a snapshot could not be taken or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot snapshot at index {index}: only entries committed and durable here (through {committed}) may be")]
    NotCommitted { index: u64, committed: u64 },
    #[error("cannot snapshot at index {index}: the log starts at {first_index} and no longer says what it held")]
    Compacted { index: u64, first_index: u64 },
    #[error("cannot snapshot at index {index}: the snapshot kept already covers up to {kept}")]
    Older { index: u64, kept: u64 },
    #[error("a snapshot of {bytes} bytes is over snapshot_bytes_max ({max}); followers would refuse it")]
    TooLarge { bytes: u64, max: u64 },
    #[error(
        "the log starts at {first_index}, after the snapshot kept (which ends at {index}): entries between are lost; \
         remove this replica's directory so that it is sent everything again"
    )]
    LogPastSnapshot { index: u64, first_index: u64 },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The core's view of a replica's log with its snapshot beside it.
pub struct WithSnapshot<'a, V> {
    log: V,
    snapshot: Option<&'a Snapshot>,
}

impl<'a, V> WithSnapshot<'a, V> {
    pub fn new(log: V, snapshot: Option<&'a Snapshot>) -> Self {
        WithSnapshot { log, snapshot }
    }
}

impl<V: LogStore> LogStore for WithSnapshot<'_, V> {
    fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }

    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        self.log.entries(from, max_bytes, max_count, out)
    }

    fn next_offset(&self) -> u64 {
        self.log.next_offset()
    }

    fn start(&self) -> LogStart {
        self.log.start()
    }

    fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot
    }
}

impl<V: DamageSeen> DamageSeen for WithSnapshot<'_, V> {
    fn damage_seen(&self) -> Option<u64> {
        self.log.damage_seen()
    }
}

/// At start: finishes an install a crash interrupted. A log that does not hold the
/// snapshot's last entry restarts right after the snapshot (Raft §7: an entry there of
/// another term was never committed), durably; a persisted configuration older than the
/// snapshot's gives way to it.
pub fn restart_log_after_snapshot<L: LogBackend, H: HardStateStore>(
    log: &mut L,
    hard: &mut H,
) -> Result<(), SnapshotError> {
    let Some(meta) = hard.snapshot().map(|s| s.meta.clone()) else { return Ok(()) };
    let (first_index, holds) = {
        let view = log.view();
        (view.first_index(), view.term(meta.index()) == Some(meta.term()))
    };
    if first_index > meta.start.index {
        return Err(SnapshotError::LogPastSnapshot { index: meta.index(), first_index });
    }
    if !holds {
        tracing::warn!(index = meta.index(), "the log does not reach the snapshot kept: restarting it after it");
        log.write(Some(meta.start), None, &[])?;
        log.sync_now()?;
    }
    let mut next = hard.persisted().clone();
    if meta.membership_index > next.membership_index {
        next.membership_index = meta.membership_index;
        next.membership = meta.membership;
        hard.save(next)?;
    }
    Ok(())
}

pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let meta = &snapshot.meta;
    let membership = meta.membership.encode();
    let mut out = Vec::with_capacity(48 + membership.len() + snapshot.data.len());
    out.put_u64_le(meta.start.index);
    out.put_u64_le(meta.start.prev_term);
    out.put_u64_le(meta.start.offset);
    out.put_u64_le(meta.membership_index);
    out.put_u64_le(meta.bytes);
    out.put_u32_le(meta.crc);
    out.put_u32_le(u32::try_from(membership.len()).expect("a configuration is bounded by MEMBERS_MAX"));
    out.put_slice(&membership);
    out.put_slice(&snapshot.data);
    out
}

/// Decodes `encode`'s bytes; the data must be as long as the metadata says, with its CRC.
pub fn decode(version: u8, payload: Vec<u8>) -> Result<Snapshot, DecodeError> {
    if version != SNAPSHOT_VERSION {
        return Err(DecodeError::Invalid { what: "snapshot version" });
    }
    let mut r = Reader::new(payload.into());
    let start = LogStart { index: r.u64("start index")?, prev_term: r.u64("prev term")?, offset: r.u64("offset")? };
    let membership_index = r.u64("membership index")?;
    let (bytes, crc) = (r.u64("snapshot bytes")?, r.u32("snapshot crc")?);
    let membership =
        Membership::decode(&r.bytes("membership")?).map_err(|_| DecodeError::Invalid { what: "membership" })?;
    let data = r.rest();
    let snapshot = Snapshot { meta: SnapshotMeta { start, membership_index, membership, bytes, crc }, data };
    if start.index == 0 || !snapshot.is_intact() {
        return Err(DecodeError::Invalid { what: "snapshot data (length or CRC)" });
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_snapshot_round_trips_and_damage_is_refused() {
        let start = LogStart { index: 41, prev_term: 3, offset: 700 };
        let snapshot = Snapshot::new(start, (12, Membership::new([1, 2, 3])), Bytes::from_static(b"state machine"));
        let bytes = encode(&snapshot);
        assert_eq!(decode(SNAPSHOT_VERSION, bytes.clone()), Ok(snapshot));
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(decode(SNAPSHOT_VERSION, damaged).is_err(), "the data's CRC is checked");
        assert!(decode(SNAPSHOT_VERSION, bytes[..bytes.len() - 1].to_vec()).is_err(), "and its length");
        assert!(decode(SNAPSHOT_VERSION + 1, bytes).is_err());
    }
}
