//! Producer ids on this node: InitProducerId (KIP-360) for either protocol, from the blocks of
//! ids the metadata group allocated to the node (`producers::IdBlocks`, KIP-730).
//!
//! A node asks the metadata leader for a block when few ids are left, and while it waits an
//! InitProducerId that finds none is answered busy (Kafka clients retry
//! COORDINATOR_LOAD_IN_PROGRESS). Fencing at InitProducerId is left to produce: the producer
//! tables live in the partitions' group tasks, and every batch of an older epoch is refused
//! there (INVALID_PRODUCER_EPOCH) anyway.

use std::sync::Mutex;

use tracing::{info, warn};

use super::{Broker, BrokerError};
use crate::metadata::{Applied, Command};
use crate::producers::{ID_BLOCK_IDS_DEFAULT, IdBlocks, InitOutcome, ProducerError, init_producer_id};

/// Ask for a new block once fewer ids than this are left, so that a block is usually there
/// before the last one runs out.
pub const ID_REFILL_BELOW: u64 = 100;
/// Blocks a node holds at most: the one in use and the next.
pub const ID_BLOCKS_MAX: usize = 2;

/// The producer ids this node may hand out.
pub struct ProducerIds {
    blocks: Mutex<IdBlocks>,
}

impl Default for ProducerIds {
    fn default() -> ProducerIds {
        ProducerIds { blocks: Mutex::new(IdBlocks::new(ID_REFILL_BELOW, ID_BLOCKS_MAX)) }
    }
}

impl ProducerIds {
    fn blocks(&self) -> std::sync::MutexGuard<'_, IdBlocks> {
        self.blocks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// InitProducerId's answer from the ids at hand; `allocated_below` is the metadata
    /// group's next producer id as this node knows it.
    fn init(&self, current: (i64, i16), allocated_below: u64) -> InitOutcome {
        let mut blocks = self.blocks();
        let allocated_below = allocated_below.max(blocks.high_water());
        init_producer_id(current, std::iter::empty(), allocated_below, &mut blocks)
    }

    /// Whether this caller should ask for a block now; if so, no other caller will until
    /// `refilled`.
    fn claim_refill(&self) -> bool {
        let mut blocks = self.blocks();
        let wants = blocks.wants_block();
        if wants {
            blocks.block_requested();
        }
        wants
    }

    fn refilled(&self, block: Result<(u64, u32), BrokerError>) {
        let mut blocks = self.blocks();
        match block.map(|(first, count)| (first, count, blocks.add(first, count))) {
            Ok((first, count, Ok(()))) => info!(first, count, "producer ids allocated to this node"),
            Ok((first, count, Err(e))) => {
                warn!(first, count, error = %e, "a block of producer ids was not taken");
                blocks.request_lost();
            }
            Err(e) => {
                warn!(error = %e, "no block of producer ids could be allocated; the next InitProducerId asks again");
                blocks.request_lost();
            }
        }
    }
}

impl Broker {
    /// Asks for a block of producer ids ahead of need (the controller, once the metadata is
    /// set up and when the node runs low): InitProducerId then never waits for the
    /// metadata leader, which may be the node that just died.
    pub async fn refill_producer_ids(&self) {
        if self.metadata_ready() && self.producer_ids.claim_refill() {
            let block = self.allocate_producer_ids_anywhere().await;
            self.producer_ids.refilled(block);
        }
    }

    /// InitProducerId without a transactional id: `current` is `(-1, -1)` for a new producer,
    /// or the id and epoch a producer holds to have its epoch bumped (KIP-360).
    pub async fn init_producer_id(&self, current: (i64, i16)) -> Result<(i64, i16), BrokerError> {
        let mut outcome = self.producer_ids.init(current, self.state().next_producer_id());
        if self.producer_ids.claim_refill() {
            let block = self.allocate_producer_ids_anywhere().await;
            self.producer_ids.refilled(block);
            if outcome == InitOutcome::NoIds {
                outcome = self.producer_ids.init(current, self.state().next_producer_id());
            }
        }
        match outcome {
            InitOutcome::Granted { producer_id, epoch } => Ok((producer_id, epoch)),
            InitOutcome::Fenced { producer_id, known_epoch } => {
                Err(BrokerError::Producer(ProducerError::InvalidProducerEpoch {
                    producer_id,
                    epoch: current.1,
                    current: known_epoch,
                }))
            }
            InitOutcome::NoIds => Err(BrokerError::Busy("this node is being allocated producer ids".into())),
            InitOutcome::Invalid(why) => Err(BrokerError::Invalid(why.into())),
        }
    }

    /// Allocates a block of producer ids to `node`, on the metadata leader.
    pub async fn allocate_producer_ids(&self, node: u64, count: u32) -> Result<(u64, u32), BrokerError> {
        match self.command(Command::AllocateProducerIds { node: crate::ids::NodeId(node), count }).await? {
            Applied::ProducerIds { first, count, .. } => Ok((first, count)),
            other => Err(BrokerError::Internal(format!("AllocateProducerIds was applied as {other:?}"))),
        }
    }

    /// A block of ids for this node, through the metadata leader wherever it is.
    async fn allocate_producer_ids_anywhere(&self) -> Result<(u64, u32), BrokerError> {
        if self.leads_metadata() {
            return self.allocate_producer_ids(self.node_id, ID_BLOCK_IDS_DEFAULT).await;
        }
        let client = self.controller_client().await?;
        client
            .allocate_producer_ids(self.node_id, ID_BLOCK_IDS_DEFAULT)
            .await
            .map_err(|e| BrokerError::Busy(e.to_string()))
    }
}
