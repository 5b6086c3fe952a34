//! The sequence check the leader runs before it proposes a batch, as one function over what is
//! known of the producer: its committed batches (the table) and, at the leader, the batches
//! it proposed since (the in-flight layer).

use crate::ids::{Index, Offset};

use super::error_code::*;
use super::table::BatchMeta;
use super::{ProducerBatch, WINDOW, sequence_after};

/// What the leader does with a produced batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New or in order: propose it.
    Append,
    /// Committed already: answer success with the original offsets and propose nothing.
    Duplicate { base_offset: Offset, last_offset: Offset },
    /// Proposed already, at `index`, and not committed yet: answer the retry as that entry is
    /// answered (its offsets once it commits, a retriable error if this leader loses it).
    InFlightDuplicate { index: Index },
    /// A gap, a retry older than the window, or a new epoch not starting at 0.
    OutOfOrder { expected: i32 },
    /// The batch's epoch is older than the producer's.
    FencedEpoch { current: i16 },
    /// Producer fields no producer sends (a negative epoch or sequence, no records).
    Invalid(&'static str),
    /// This leader has not yet applied its own term's first entry, so entries of earlier terms
    /// may be missing from its table: retry shortly.
    NotReady,
    /// The leader holds `inflight_batches_max` proposed batches: retry shortly.
    Busy,
}

impl Verdict {
    /// The Kafka error code of the produce answer, once the batch is answered: 0 for the
    /// three that end in success. `NotReady` asks the client to look for the leader again and
    /// `Busy` to retry; idempotent clients retry both with the same sequence, which is safe
    /// since nothing was appended.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            Verdict::Append | Verdict::Duplicate { .. } | Verdict::InFlightDuplicate { .. } => NONE,
            Verdict::OutOfOrder { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
            Verdict::FencedEpoch { .. } => INVALID_PRODUCER_EPOCH,
            Verdict::Invalid(_) => INVALID_RECORD,
            Verdict::NotReady => NOT_LEADER_OR_FOLLOWER,
            Verdict::Busy => REQUEST_TIMED_OUT,
        }
    }
}

/// One batch of a producer's current knowledge, oldest to newest.
#[derive(Clone, Copy, Debug)]
pub(super) enum Seen {
    Committed(BatchMeta),
    InFlight { first_seq: i32, last_seq: i32, index: Index },
}

impl Seen {
    fn sequences(&self) -> (i32, i32) {
        match self {
            Seen::Committed(b) => (b.first_seq, b.last_seq),
            Seen::InFlight { first_seq, last_seq, .. } => (*first_seq, *last_seq),
        }
    }
}

/// Kafka's rules (module docs) for `batch`, given the producer's committed epoch and batches
/// (`None`: not tracked) and the batches proposed after them with their epochs, both oldest
/// first.
pub(super) fn decide(
    batch: &ProducerBatch,
    committed: Option<(i16, impl DoubleEndedIterator<Item = Seen>)>,
    in_flight: impl DoubleEndedIterator<Item = (i16, Seen)> + Clone,
) -> Verdict {
    if !batch.is_idempotent() {
        return Verdict::Append;
    }
    if let Some(reason) = batch.malformed() {
        return Verdict::Invalid(reason);
    }
    let current = match (in_flight.clone().next_back(), &committed) {
        (Some((epoch, _)), _) => epoch,
        (None, Some((epoch, _))) => *epoch,
        // Unknown, perhaps expired: Kafka accepts it at any sequence.
        (None, None) => return Verdict::Append,
    };
    if batch.epoch < current {
        return Verdict::FencedEpoch { current };
    }
    if batch.epoch > current {
        return if batch.first_seq == 0 { Verdict::Append } else { Verdict::OutOfOrder { expected: 0 } };
    }
    let committed = committed.filter(|(epoch, _)| *epoch == current).into_iter().flat_map(|(_, batches)| batches);
    let proposed = in_flight.filter(|(epoch, _)| *epoch == current).map(|(_, seen)| seen);
    let mut window = committed.chain(proposed).rev().take(WINDOW).peekable();
    let Some(newest) = window.peek().copied() else {
        unreachable!("the current epoch is the epoch of a committed or proposed batch")
    };
    let wanted = (batch.first_seq, batch.last_seq());
    if let Some(duplicate) = window.find(|seen| seen.sequences() == wanted) {
        return match duplicate {
            Seen::Committed(b) => Verdict::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset },
            Seen::InFlight { index, .. } => Verdict::InFlightDuplicate { index },
        };
    }
    let expected = sequence_after(newest.sequences().1, 1);
    if batch.first_seq == expected { Verdict::Append } else { Verdict::OutOfOrder { expected } }
}
