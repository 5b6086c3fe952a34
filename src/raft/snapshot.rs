//! Snapshots (Raft §7) for groups whose state machine is not the log itself (the metadata
//! group): the caller keeps its state machine's bytes at an index it applied and may drop
//! the entries up to there; a leader that must send a follower entries it no longer has
//! sends the snapshot instead, in chunks, one in flight at a time. It goes on with the
//! snapshot it began while its log still continues it, so that newer snapshots cannot
//! restart a transfer again and again. The follower accumulates the chunks (bounded by
//! `snapshot_bytes_max`), checks the whole against its length and CRC, and asks its caller
//! to install it (`Ready::snapshot`) with the log reset to start right after it. It
//! acknowledges, as for any reset, only once the install is durable.
//!
//! A log whose caller keeps no snapshot (`LogStore::snapshot` is `None`: a data partition,
//! whose state machine is the log) is reset to the leader's log start instead
//! (`Message::Reset`): the same install with no bytes, in one message.

use bytes::Bytes;

use super::{LogStart, LogStore, Membership, Message, NodeId, Raft};

/// What a snapshot covers and how to check its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The log after the snapshot: it covers every entry through `start.index - 1`, whose
    /// term is `start.prev_term`; the next entry's first record offset is `start.offset`.
    pub start: LogStart,
    /// The configuration committed when it was taken, and the index of its entry (which may
    /// come after the snapshot's last index: it is committed, so the log still agrees).
    pub membership_index: u64,
    pub membership: Membership,
    /// The length of the state machine's bytes, and their CRC-32 (IEEE, as `crc32fast`).
    pub bytes: u64,
    pub crc: u32,
}

impl SnapshotMeta {
    /// The last index the snapshot covers.
    pub fn index(&self) -> u64 {
        self.start.index - 1
    }

    /// The term of the entry at `index()`.
    pub fn term(&self) -> u64 {
        self.start.prev_term
    }
}

/// A state machine's bytes at an index its caller applied, with what describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

impl Snapshot {
    /// The snapshot of `data`, the state machine once every entry before `start.index`
    /// was applied, with the configuration committed then.
    pub fn new(start: LogStart, membership: (u64, Membership), data: Bytes) -> Snapshot {
        let meta = SnapshotMeta {
            start,
            membership_index: membership.0,
            membership: membership.1,
            bytes: data.len() as u64,
            crc: crc32fast::hash(&data),
        };
        Snapshot { meta, data }
    }

    /// Whether the bytes are those the metadata describes.
    pub fn is_intact(&self) -> bool {
        self.data.len() as u64 == self.meta.bytes && crc32fast::hash(&self.data) == self.meta.crc
    }
}

/// A snapshot a follower is receiving: the bytes so far, and their running CRC.
#[derive(Debug)]
pub(super) struct Receiving {
    meta: SnapshotMeta,
    data: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl Raft {
    /// The follower needs entries before our first index and we keep a snapshot: send it
    /// the chunk it needs next, unless one is in flight. Returns whether one left.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId, snapshot: &Snapshot) -> bool {
        let chunk_max = self.config.snapshot_chunk_bytes() as u64;
        let Some(pr) = self.lead.progress.get_mut(&to) else { return false };
        let send = pr.sending_snapshot(snapshot);
        if send.inflight.is_some() {
            return false;
        }
        let (offset, meta) = (send.acked, &snapshot.meta);
        let len = (meta.bytes - offset).min(chunk_max);
        send.inflight = Some(offset + len);
        let data = snapshot.data.slice(offset as usize..(offset + len) as usize);
        let msg = Message::Snapshot { term: self.term, meta: meta.clone(), offset, data };
        self.send(to, msg);
        true
    }

    /// The follower holds `received` bytes of the snapshot ending at `index`: the next
    /// chunk starts there, and goes now if this answers the chunk in flight (else at the
    /// next heartbeat answer; see `Progress::snapshot_acked`).
    pub(super) fn handle_snapshot_response(&mut self, from: NodeId, index: u64, received: u64, store: &impl LogStore) {
        if self.role != super::Role::Leader {
            return;
        }
        let Some(pr) = self.lead.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if pr.snapshot_acked(index, received) {
            self.send_append(from, store, false);
        }
    }

    /// A chunk of the leader's snapshot. Checked like a Reset; accumulated while it
    /// continues what we hold of the same snapshot; installed once whole and intact.
    pub(super) fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        store: &impl LogStore,
    ) {
        if !self.heard_from_leader(from) {
            return;
        }
        if meta.start.index == 0 || meta.start.prev_term > self.term || meta.membership.validate().is_err() {
            tracing::warn!(id = self.config.id, from, ?meta.start, "malformed Snapshot dropped");
            return;
        }
        let index = meta.index();
        if self.follows_without_install(from, meta.start, store) {
            self.receiving = None;
            return;
        }
        if meta.bytes > self.config.snapshot_bytes_max {
            tracing::error!(
                id = self.config.id,
                from,
                bytes = meta.bytes,
                max = self.config.snapshot_bytes_max,
                "refusing a snapshot larger than snapshot_bytes_max; raise it on this node to let it catch up"
            );
            self.receiving = None;
            return;
        }
        match self.receive_chunk(meta, offset, &data) {
            Ok(snapshot) => {
                tracing::info!(id = self.config.id, from, index, bytes = snapshot.meta.bytes, "installing a snapshot");
                let membership = (snapshot.meta.membership_index, snapshot.meta.membership.clone());
                let start = snapshot.meta.start;
                self.log.install(snapshot);
                self.log_replaced(from, start, membership, store);
            }
            Err(received) => self.send(from, Message::SnapshotResponse { term: self.term, index, received }),
        }
    }

    /// Adds a chunk to the snapshot being received. The whole snapshot once complete and
    /// intact; else how many bytes of it we hold, for the leader to resume from.
    fn receive_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) -> Result<Snapshot, u64> {
        if self.receiving.as_ref().is_none_or(|r| r.meta != meta) {
            if offset != 0 {
                // Another snapshot's chunk, or ours after we lost the start: start over.
                return Err(0);
            }
            // Grows with the chunks, never ahead of them: `meta.bytes` is only a claim.
            self.receiving = Some(Receiving { meta, data: Vec::new(), crc: crc32fast::Hasher::new() });
        }
        let r = self.receiving.as_mut().expect("set above");
        let have = r.data.len() as u64;
        if offset != have {
            // A duplicate, or a gap after a lost chunk.
            return Err(have);
        }
        if have + data.len() as u64 > r.meta.bytes {
            tracing::warn!(id = self.config.id, have, len = data.len(), "a snapshot chunk overruns its length");
            self.receiving = None;
            return Err(0);
        }
        r.data.extend_from_slice(data);
        r.crc.update(data);
        if (r.data.len() as u64) < r.meta.bytes {
            return Err(r.data.len() as u64);
        }
        let r = self.receiving.take().expect("checked above");
        if r.crc.finalize() != r.meta.crc {
            tracing::warn!(
                id = self.config.id,
                index = r.meta.index(),
                "a received snapshot failed its CRC; starting over"
            );
            return Err(0);
        }
        Ok(Snapshot { meta: r.meta, data: r.data.into() })
    }

    /// A snapshot was installed or a Reset taken: the log restarts at `start` with the
    /// configuration committed at `membership`; acknowledged once that is durable.
    pub(super) fn log_replaced(
        &mut self,
        from: NodeId,
        start: LogStart,
        membership: (u64, Membership),
        store: &impl LogStore,
    ) {
        self.configs.reset(membership.clone());
        self.forget_holes_after(0);
        self.report_membership(membership);
        self.membership_changed(store);
        let prev = start.index - 1;
        self.ack.matched = self.ack.matched.max(prev);
        self.answer_append(from, prev);
    }
}
