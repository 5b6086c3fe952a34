//! Everything that knows QUIC and TLS: certificates, the endpoint, frames and codecs.

pub mod certs;
pub mod client_codec;
pub mod endpoint;
pub mod frame;
mod group_codec;
pub mod node_codec;
pub mod peer;
pub mod peer_codec;
pub mod tls;

pub use endpoint::{Connection, NetError};
