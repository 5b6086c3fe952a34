//! Produce requests waiting for their entry to commit, and the ordered streams they came on.
//!
//! A producer sends its batches on one stream, in order, several in flight. Once a batch of
//! a stream is refused, every later batch of that stream is refused too, so a producer that
//! resends from the refused batch keeps its records in order. A batch pending at a node
//! that stops leading may still be answered "not appended, resend it": its stream is
//! refused from then on, or its successors could be appended before the resent batch.
//!
//! An idempotent producer's retry of a batch still waiting here is answered with it
//! (`join`): the leader's producer check found it in flight (`producers::Verdict`).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics as m;
use crate::producers::ProducerError;
use crate::raft::NodeId;

/// How long a produce waits for its entry to commit before the outcome is reported unknown.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// After losing leadership, how long a pending produce waits to learn its fate.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3);
/// Retries of one pending batch answered with it; a client retries a batch only after its
/// request timed out, so more means a client gone wrong, and it is told to retry later.
pub const RETRIES_PER_BATCH_MAX: usize = 4;

/// Why a batch was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// Not appended: send it to the leader (if one is known).
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    /// Not appended now; the same request may succeed later.
    #[error("{0}")]
    Busy(String),
    /// Not appended, and sending it again will not help.
    #[error("{0}")]
    Refused(String),
    /// It may or may not be in the log.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Not appended: an idempotent producer's batch breaks its sequence or epoch.
    #[error(transparent)]
    Producer(#[from] crate::producers::ProducerError),
}

/// The base offset and record count of an acknowledged batch, or why it was not.
pub type ProduceResult = Result<(u64, u32), ProduceError>;

struct Pending {
    term: u64,
    /// The client stream it came on (0: none).
    stream: u64,
    record_count: u32,
    base_offset: u64,
    bytes: usize,
    received: Instant,
    deadline: Instant,
    reply: oneshot::Sender<ProduceResult>,
    /// Retries of the batch that arrived while it was pending (`join`).
    retries: Vec<oneshot::Sender<ProduceResult>>,
}

impl Pending {
    /// Answers the batch and every retry of it alike.
    fn answer(self, result: ProduceResult) {
        for retry in self.retries {
            let _ = retry.send(result.clone());
        }
        let _ = self.reply.send(result);
    }
}

/// A batch just proposed, to answer once its entry commits.
pub struct Proposed {
    pub index: u64,
    pub term: u64,
    pub base_offset: u64,
    pub record_count: u32,
    pub bytes: usize,
    pub stream: u64,
    pub received: Instant,
    pub reply: oneshot::Sender<ProduceResult>,
}

#[derive(Default)]
pub struct ProduceTable {
    pending: BTreeMap<u64, Pending>,
    /// Client streams with a refused batch: their later batches are refused too.
    refused_streams: HashSet<u64>,
}

impl ProduceTable {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether batches of `stream` are refused (an earlier one was).
    pub fn is_refused(&self, stream: u64) -> bool {
        stream != 0 && self.refused_streams.contains(&stream)
    }

    /// Refuses a batch that could not be proposed; its stream's later batches follow.
    pub fn refuse(&mut self, stream: u64, reply: oneshot::Sender<ProduceResult>, error: ProduceError) {
        m::produce_error(error_kind(&error));
        if stream != 0 {
            self.refused_streams.insert(stream);
        }
        let _ = reply.send(Err(error));
    }

    /// A stream ended: forget whether it was refused.
    pub fn stream_ended(&mut self, stream: u64) {
        self.refused_streams.remove(&stream);
    }

    pub fn add(&mut self, p: Proposed) {
        let pending = Pending {
            term: p.term,
            stream: p.stream,
            record_count: p.record_count,
            base_offset: p.base_offset,
            bytes: p.bytes,
            received: p.received,
            deadline: p.received + PRODUCE_TIMEOUT,
            reply: p.reply,
            retries: Vec::new(),
        };
        self.pending.insert(p.index, pending);
    }

    /// A retry of the batch pending at `index`: it gets the same answer. A batch no longer
    /// pending (answered outcome unknown, not yet committed) or retried too often is
    /// answered busy, and the client's next retry meets the producer table.
    pub fn join(&mut self, index: u64, reply: oneshot::Sender<ProduceResult>) {
        match self.pending.get_mut(&index) {
            Some(p) if p.retries.len() < RETRIES_PER_BATCH_MAX => p.retries.push(reply),
            _ => {
                let why = format!("the batch is still being committed at entry {index}; retry shortly");
                m::produce_error("busy");
                let _ = reply.send(Err(ProduceError::Busy(why)));
            }
        }
    }

    /// The entries through `commit` committed: answer their producers. `term_of` is the
    /// term of the entry now at an index; a batch whose index another leader's entry won
    /// was not appended.
    pub fn committed(&mut self, commit: u64, term_of: impl Fn(u64) -> Option<u64>, leader: Option<NodeId>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > commit {
                break;
            }
            let index = *entry.key();
            let p = entry.remove();
            let result = match term_of(index) {
                Some(term) if term == p.term => {
                    metrics::counter!(m::PRODUCE_RECORDS).increment(u64::from(p.record_count));
                    metrics::counter!(m::PRODUCE_BYTES).increment(p.bytes as u64);
                    metrics::histogram!(m::PRODUCE_LATENCY).record(p.received.elapsed().as_secs_f64());
                    Ok((p.base_offset, p.record_count))
                }
                Some(_) => {
                    m::produce_error("not_leader");
                    Err(ProduceError::NotLeader { leader })
                }
                None => {
                    m::produce_error("outcome_unknown");
                    Err(ProduceError::OutcomeUnknown("the log was reset past the entry".into()))
                }
            };
            p.answer(result);
        }
    }

    /// The node stopped leading: pending batches wait a little longer to learn their fate,
    /// and their streams are refused from now on.
    pub fn leadership_lost(&mut self, now: Instant) {
        let grace = now + ORPHAN_GRACE;
        for p in self.pending.values_mut() {
            p.deadline = p.deadline.min(grace);
        }
        self.refuse_pending_streams();
    }

    /// Answers the batches whose deadline passed: their outcome is unknown.
    pub fn expire(&mut self, now: Instant, leading: bool) {
        let expired: Vec<u64> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(i, _)| *i).collect();
        for index in expired {
            let p = self.pending.remove(&index).expect("present");
            let reason = if leading {
                format!("entry {index} was not committed within {PRODUCE_TIMEOUT:?}")
            } else {
                format!("leadership was lost before entry {index} was known to be committed")
            };
            m::produce_error("outcome_unknown");
            p.answer(Err(ProduceError::OutcomeUnknown(reason)));
        }
    }

    /// Answers every pending batch with an unknown outcome (the replica cut its log or stops).
    pub fn fail_all(&mut self, reason: &str) {
        self.refuse_pending_streams();
        for (_, p) in std::mem::take(&mut self.pending) {
            m::produce_error("outcome_unknown");
            p.answer(Err(ProduceError::OutcomeUnknown(reason.to_string())));
        }
    }

    fn refuse_pending_streams(&mut self) {
        let streams = self.pending.values().map(|p| p.stream).filter(|&s| s != 0);
        self.refused_streams.extend(streams);
    }
}

/// The `kind` label of `keel_produce_errors_total` for an error.
pub fn error_kind(error: &ProduceError) -> &'static str {
    match error {
        ProduceError::NotLeader { .. } => "not_leader",
        ProduceError::Busy(_) => "busy",
        ProduceError::Refused(_) => "refused",
        ProduceError::OutcomeUnknown(_) => "outcome_unknown",
        ProduceError::Producer(ProducerError::OutOfOrderSequence { .. }) => "out_of_order_sequence",
        ProduceError::Producer(ProducerError::InvalidProducerEpoch { .. }) => "invalid_producer_epoch",
    }
}
