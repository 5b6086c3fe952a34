//! The tokio runtime around the replicas: the node (`node.rs`) hosts many Raft groups
//! (`registry.rs` routes peer frames and ticks to them), each driven by its own task
//! (`group.rs`); `clients.rs` serves clients, `produce.rs` keeps the produce requests
//! waiting for their entries to commit.

pub mod clients;
pub mod config;
pub mod controller;
pub mod disk;
pub mod group;
mod group_metrics;
pub mod layout;
pub mod metadata;
pub mod node;
mod offsets_floor;
pub mod produce;
pub mod producer_state;
pub mod registry;
pub mod status;

pub use crate::replica::retention::Retention;
pub use config::{Limits, NodeConfig};
pub use node::{NodeHandle, StartError};
