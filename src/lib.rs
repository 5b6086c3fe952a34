//! keel: a replicated, append-only log service for stream pipelines.
//!
//! See ARCHITECTURE.md for the map of this crate.

pub mod batch;
pub mod broker;
pub mod client;
pub mod codec;
pub mod groups;
pub mod ids;
pub mod kafka;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod producers;
pub mod raft;
pub mod replica;
pub mod server;
