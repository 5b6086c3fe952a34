//! Producer ids on a node: the blocks the metadata group allocated to it (`IdBlocks`), and the
//! answer to InitProducerId (`init_producer_id`).
//!
//! The metadata group hands out ids in blocks, in order, never twice
//! (`metadata::Command::AllocateProducerIds`, KIP-730's AllocateProducerIds); a node hands out
//! the ids of its blocks one by one. The blocks live in memory only: a node that restarts
//! asks for a new block and its unused ids are never handed out, which costs nothing in a
//! space of 2^63 ids.

use std::collections::VecDeque;

use crate::metadata::PRODUCER_ID_LIMIT;

use super::ProducerTable;
use super::error_code::*;

/// Ids a node asks for at a time: Kafka's block size (`ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const ID_BLOCK_IDS_DEFAULT: u32 = 1000;

/// Why a block of ids was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdBlockError {
    #[error(
        "producer ids {first}..{end} are not above the ids this node already has (below {next}): \
         was the block applied twice?"
    )]
    NotAbove { first: u64, end: u64, next: u64 },
    #[error("producer ids {first}..{end} go past the largest producer id {PRODUCER_ID_LIMIT}")]
    PastLimit { first: u64, end: u64 },
    #[error(
        "this node already holds {blocks_max} blocks of producer ids: ask for a block only when wants_block() says so"
    )]
    Full { blocks_max: usize },
    #[error("an empty block of producer ids")]
    Empty,
}

/// The producer ids this node may hand out, from the blocks the metadata group gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdBlocks {
    /// Unused ids, `next..end` per block, in ascending order.
    blocks: VecDeque<(u64, u64)>,
    /// Ask for a new block once fewer ids than this are left.
    refill_below: u64,
    blocks_max: usize,
    /// A block was asked for and has not arrived yet.
    requested: bool,
    /// Every id below this one was handed to this node already, used or not.
    high_water: u64,
}

impl IdBlocks {
    /// No ids yet; asks for a block whenever fewer than `refill_below` are left, and holds at
    /// most `blocks_max` (at least 1) blocks.
    pub fn new(refill_below: u64, blocks_max: usize) -> IdBlocks {
        IdBlocks {
            blocks: VecDeque::new(),
            refill_below,
            blocks_max: blocks_max.max(1),
            requested: false,
            high_water: 0,
        }
    }

    /// Every id below this one was handed to this node (or allocated before its blocks).
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// Ids left to hand out.
    pub fn remaining(&self) -> u64 {
        self.blocks.iter().map(|(next, end)| end - next).sum()
    }

    /// Whether the node should propose `AllocateProducerIds` now: few ids are left, there is
    /// room for a block, and none is on its way.
    pub fn wants_block(&self) -> bool {
        !self.requested && self.blocks.len() < self.blocks_max && self.remaining() < self.refill_below
    }

    /// The node proposed `AllocateProducerIds` for itself.
    pub fn block_requested(&mut self) {
        self.requested = true;
    }

    /// The proposal was refused or lost (the metadata leader changed): ask again.
    pub fn request_lost(&mut self) {
        self.requested = false;
    }

    /// Takes the block `first..first + count` that the metadata group allocated to this node
    /// (`Applied::ProducerIds`).
    pub fn add(&mut self, first: u64, count: u32) -> Result<(), IdBlockError> {
        let end = first.saturating_add(count.into());
        if count == 0 {
            return Err(IdBlockError::Empty);
        }
        if end > PRODUCER_ID_LIMIT {
            return Err(IdBlockError::PastLimit { first, end });
        }
        if first < self.high_water {
            return Err(IdBlockError::NotAbove { first, end, next: self.high_water });
        }
        if self.blocks.len() >= self.blocks_max {
            return Err(IdBlockError::Full { blocks_max: self.blocks_max });
        }
        self.blocks.push_back((first, end));
        self.high_water = end;
        self.requested = false;
        Ok(())
    }

    /// The next unused id, if any is left.
    pub fn take(&mut self) -> Option<i64> {
        let (next, end) = self.blocks.front_mut()?;
        let id = *next;
        *next += 1;
        if next == end {
            self.blocks.pop_front();
        }
        Some(i64::try_from(id).expect("blocks end at or below PRODUCER_ID_LIMIT = i64::MAX"))
    }
}

/// The answer to InitProducerId for a producer without a transactional id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// Produce as `producer_id` at `epoch`, from sequence 0.
    Granted { producer_id: i64, epoch: i16 },
    /// A partition of this node already saw `producer_id` at a newer epoch than the one the
    /// client holds: another session of it took over. Kafka: INVALID_PRODUCER_EPOCH (47).
    Fenced { producer_id: i64, known_epoch: i16 },
    /// No id is left on this node until the metadata group allocates a block: retry shortly.
    /// Kafka: COORDINATOR_LOAD_IN_PROGRESS (14), which clients retry.
    NoIds,
    /// The request names no valid producer. Kafka: INVALID_REQUEST (42).
    Invalid(&'static str),
}

impl InitOutcome {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            InitOutcome::Granted { .. } => NONE,
            InitOutcome::NoIds => COORDINATOR_LOAD_IN_PROGRESS,
            InitOutcome::Invalid(_) => INVALID_REQUEST,
            InitOutcome::Fenced { .. } => INVALID_PRODUCER_EPOCH,
        }
    }
}

/// InitProducerId (transactional id null) from the `(producer_id, epoch)` the client holds —
/// `(-1, -1)` for a new producer — the producer tables of the partitions this node hosts, and
/// `allocated_below`, the metadata group's next producer id (every id below it was allocated).
///
/// A new producer gets a new id at epoch 0. A client that names its current id and epoch
/// (InitProducerId v3+, KIP-360) gets the epoch bumped: the batches its previous session left
/// in flight are then fenced, and it starts again from sequence 0. An epoch that cannot be
/// bumped (`i16::MAX`) gets a new id at epoch 0 instead. The tables are the committed state
/// of this node's partitions only, so fencing is best effort here; produce fences for certain.
pub fn init_producer_id<'t>(
    current: (i64, i16),
    tables: impl IntoIterator<Item = &'t ProducerTable>,
    allocated_below: u64,
    ids: &mut IdBlocks,
) -> InitOutcome {
    let new_id = |ids: &mut IdBlocks| match ids.take() {
        Some(producer_id) => InitOutcome::Granted { producer_id, epoch: 0 },
        None => InitOutcome::NoIds,
    };
    let (producer_id, epoch) = current;
    match (producer_id, epoch) {
        (-1, -1) => return new_id(ids),
        (-1, _) | (_, -1) => return InitOutcome::Invalid("a producer id and its epoch must both be -1 or both be set"),
        _ if producer_id < 0 || epoch < 0 => return InitOutcome::Invalid("a negative producer id or epoch"),
        _ if producer_id.unsigned_abs() >= allocated_below => {
            return InitOutcome::Invalid("the producer id was never allocated; ask for a new one with -1, -1");
        }
        _ => {}
    }
    let known_epoch = tables.into_iter().filter_map(|t| t.epoch_of(producer_id)).max();
    if let Some(known_epoch) = known_epoch.filter(|&known| known > epoch) {
        return InitOutcome::Fenced { producer_id, known_epoch };
    }
    match epoch.checked_add(1) {
        Some(epoch) => InitOutcome::Granted { producer_id, epoch },
        None => new_id(ids),
    }
}
