//! The Kafka protocol front end: a TCP (or TLS) listener that lets Kafka clients and
//! tools produce to and consume from keel, over a `KafkaBackend` that does the work.
//!
//! `listener.rs` accepts connections within the limits; `connection.rs` serves one
//! (pipelined, answered in order); `frame.rs` reads frames and encodes answers;
//! `guard.rs` checks array counts before the codecs allocate; `versions.rs` lists what is
//! advertised; one file per API group (`metadata.rs`, `produce.rs`, `fetch.rs`,
//! `offsets.rs`, `admin.rs`, `producer_id.rs`); `errors.rs` maps backend errors to Kafka codes;
//! `backend.rs` is the contract with the broker service; `memory.rs` an in-memory backend
//! for tests and development.

mod admin;
pub mod backend;
pub mod config;
mod connection;
pub mod errors;
mod fetch;
pub mod frame;
mod groups;
mod guard;
pub mod listener;
pub mod memory;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
pub mod versions;
mod wire;

pub use backend::{BackendError, KafkaBackend};
pub use config::KafkaConfig;
pub use listener::{KafkaListener, ListenError, serve, serve_on};
