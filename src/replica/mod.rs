//! What turns the Raft core and a segments log into one durable replica: the hard-state
//! and identity files, and the core's view of the log.

pub mod hard_state;
pub mod store;
