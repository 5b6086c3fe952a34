//! Idempotent producing on keel's client (issue 16): a producer session is a producer id and
//! epoch from InitProducerId (any node answers, from the ids the metadata group gave it);
//! every batch of a session to a partition takes the next sequence numbers, stamped in its
//! header before it is first sent and never changed after, so a retry of a batch whose
//! outcome is unknown is the same batch: the leader appends it once and answers a
//! duplicate with the original offsets (`producers/`).
//!
//! Each partition a client writes to gets sessions of its own (a `Producer`'s pipeline one,
//! one-batch calls one per call in flight, taken from a pool), so that a session whose
//! sequence became uncertain is replaced without touching the others. A session is
//! uncertain once one of its batches is given up while its outcome is unknown: a later
//! batch would find a gap if that one was never appended. It is then bumped (KIP-360: the
//! same id, the next epoch, sequences from 0), which also fences what the old epoch still
//! has in flight; the rest of the session's records are re-stamped and sent on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::ClientError;
use super::conn::{Failure, Nodes, Partition};
use crate::net::client_codec::{ErrorReply, Request, Response};
use crate::producers::sequence_after;

/// Idle sessions the one-batch calls keep per partition: as many as calls ran at once on
/// it, up to this.
const IDLE_SESSIONS_MAX: usize = 16;
/// Partitions whose idle sessions a client keeps; past it, they are dropped (and new ones
/// asked for when needed).
const SESSION_PARTITIONS_MAX: usize = 10_000;

/// A producer id and the epoch its batches carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Session {
    pub producer_id: i64,
    pub epoch: i16,
}

/// One partition's sequence within a session.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sequencer {
    pub session: Session,
    /// The sequence the next batch takes.
    next: i32,
    /// Whether a batch of this session was acknowledged. Until then one batch is in flight
    /// at a time: the partition does not know the session yet and would take a later batch
    /// at any sequence, even after the first was refused.
    confirmed: bool,
}

impl Sequencer {
    pub fn new(session: Session) -> Sequencer {
        Sequencer { session, next: 0, confirmed: false }
    }

    /// Stamps `request`, a produce of `records` records, with the session and its next
    /// sequence; returns that sequence.
    pub fn stamp(&mut self, request: &mut Request, records: i32) -> i32 {
        let first = self.next;
        if let Request::Produce { batch, .. } = request {
            let mut bytes = batch.to_vec();
            crate::batch::stamp_producer(&mut bytes, self.session.producer_id, self.session.epoch, first);
            *batch = Bytes::from(bytes);
        }
        self.next = sequence_after(first, records);
        first
    }

    pub fn confirmed(&mut self) {
        self.confirmed = true;
    }

    /// Batches this session may have in flight, of `window` at most.
    pub fn in_flight_max(&self, window: usize) -> usize {
        if self.confirmed { window } else { 1 }
    }
}

/// InitProducerId from any node: a new session (`current` `None`) or `current` with its
/// epoch bumped. Every known node is asked at once, the first session given wins (a node
/// just killed does not hold the others up); retried until `deadline` while nodes are busy
/// or unreachable: asking twice costs an unused id, nothing more (a bump is the same
/// epoch from every node).
pub(super) async fn init_producer_id(
    nodes: &Nodes,
    request_timeout: Duration,
    current: Option<Session>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Session, ClientError> {
    let (producer_id, epoch) = current.map_or((-1, -1), |s| (s.producer_id, s.epoch));
    let request = Request::InitProducerId { producer_id, epoch };
    let mut last = String::from("no node answered");
    loop {
        let wait = request_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let mut asks = tokio::task::JoinSet::new();
        for addr in nodes.known() {
            let (nodes, request) = (nodes.clone(), request.clone());
            asks.spawn(async move { (addr, nodes.request(addr, &request, wait).await) });
        }
        while let Some(Ok((addr, answer))) = asks.join_next().await {
            match answer {
                Ok(Response::ProducerSession { producer_id, epoch }) => return Ok(Session { producer_id, epoch }),
                Ok(Response::Error(ErrorReply::Busy(why))) => last = format!("{addr} is busy: {why}"),
                Ok(Response::Error(e)) => return Err(e.into()),
                Ok(other) => last = format!("unexpected answer from {addr}: {other:?}"),
                Err(Failure::Certificate(e)) => return Err(e.into()),
                Err(failure) => last = failure.message(),
            }
        }
        if Instant::now() + Duration::from_millis(50) >= deadline {
            let last = format!("no producer id: {last}");
            return Err(ClientError::TimedOut { after: timeout, last });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The idle sessions of the one-batch calls, per partition. A call takes one (or asks for
/// a new one), and gives it back only if every batch it sent is settled.
#[derive(Default)]
pub(super) struct SessionPool {
    idle: Mutex<HashMap<Partition, Vec<Sequencer>>>,
}

impl SessionPool {
    pub fn take(&self, partition: &Partition) -> Option<Sequencer> {
        self.idle.lock().expect("session pool lock").get_mut(partition).and_then(Vec::pop)
    }

    pub fn give_back(&self, partition: &Partition, sequencer: Sequencer) {
        let mut idle = self.idle.lock().expect("session pool lock");
        if idle.len() >= SESSION_PARTITIONS_MAX && !idle.contains_key(partition) {
            idle.clear();
        }
        let sessions = idle.entry(partition.clone()).or_default();
        if sessions.len() < IDLE_SESSIONS_MAX {
            sessions.push(sequencer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, BatchHeader, Compression, Record};

    #[test]
    fn batches_take_consecutive_sequences_and_one_is_in_flight_until_confirmed() {
        let mut seq = Sequencer::new(Session { producer_id: 42, epoch: 3 });
        assert_eq!(seq.in_flight_max(5), 1);
        let mut sent = Vec::new();
        for n in [3, 1, 2] {
            let mut builder = BatchBuilder::new(Compression::None);
            for i in 0..n {
                builder.push(&Record::new(format!("r{i}"))).unwrap();
            }
            let mut request = Request::Produce { topic: "t".into(), partition: 0, batch: builder.finish() };
            let first = seq.stamp(&mut request, n);
            let Request::Produce { batch, .. } = request else { unreachable!() };
            crate::batch::check(&batch, &crate::batch::Limits { batch_bytes_max: 1 << 20, record_bytes_max: 1 << 20 })
                .expect("a stamped batch keeps a valid CRC");
            let h = BatchHeader::parse(&batch).unwrap();
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 3, first));
            sent.push(first);
        }
        assert_eq!(sent, [0, 3, 4]);
        seq.confirmed();
        assert_eq!(seq.in_flight_max(5), 5);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_idle_sessions() {
        let pool = SessionPool::default();
        let p: Partition = ("t".into(), 0);
        for id in 0..(IDLE_SESSIONS_MAX as i64 + 4) {
            pool.give_back(&p, Sequencer::new(Session { producer_id: id, epoch: 0 }));
        }
        let mut taken = 0;
        while pool.take(&p).is_some() {
            taken += 1;
        }
        assert_eq!(taken, IDLE_SESSIONS_MAX);
        assert!(pool.take(&("t".into(), 1)).is_none());
    }
}
