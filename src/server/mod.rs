//! The tokio runtime around the Raft core: the group loop, the client service, start-up.

pub mod clients;
pub mod config;
mod disk;
pub mod group;
pub mod node;
pub mod repair;

pub use config::{Limits, NodeConfig, Retention};
pub use node::{NodeHandle, StartError};
