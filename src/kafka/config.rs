//! The Kafka listener's settings and limits.

use std::net::SocketAddr;
use std::time::Duration;

/// Where the Kafka listener listens and every bound it enforces.
///
/// The address clients are told to use (`--kafka-advertised`) is not here: it is part of
/// the cluster metadata that the backend answers with, since every node must list every
/// broker's advertised address.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub listen: SocketAddr,
    /// Largest request frame. Kafka's `socket.request.max.bytes` is 100 MiB; keel's is
    /// smaller because no entry can be larger than the node's batch limit (4 MiB by
    /// default), so a request bigger than a handful of batches can only be refused, and the
    /// bytes are held in memory while a request is served.
    pub request_bytes_max: usize,
    /// Bytes of requests one connection may have read and not yet answered (pipelining).
    /// At least `request_bytes_max`, or a largest request could never be read.
    pub connection_bytes_in_flight_max: usize,
    /// Requests one connection may have read and not yet answered. Their answers wait in
    /// memory to be written in order, so a connection holds at most this many responses
    /// (each at most `fetch_response_bytes_max` plus headers).
    pub connection_requests_in_flight_max: usize,
    /// Bytes of requests all connections together may have read and not yet answered
    /// (Kafka's `queued.max.request.bytes`).
    pub bytes_in_flight_max: usize,
    /// Open connections; one more is closed as soon as it is accepted.
    pub connections_max: usize,
    /// Largest fetch response: a client asking for more gets this much.
    pub fetch_response_bytes_max: usize,
    /// Longest long poll a fetch may ask for (`max_wait_ms`).
    pub fetch_wait_max: Duration,
    /// Longest wait for a produce to commit, whatever the request's `timeout_ms`.
    pub produce_timeout_max: Duration,
    /// Longest wait for a topic to be created or deleted, whatever the request's `timeout_ms`.
    pub admin_timeout_max: Duration,
    /// Time a TLS client has to finish its handshake.
    pub tls_handshake_timeout: Duration,
    /// A connection that sends no request for this long, or takes this long to send one,
    /// is closed (Kafka's `connections.max.idle.ms`; clients reconnect when they need to).
    pub connection_idle_max: Duration,
}

impl KafkaConfig {
    pub fn new(listen: SocketAddr) -> KafkaConfig {
        KafkaConfig {
            listen,
            request_bytes_max: 16 << 20,
            connection_bytes_in_flight_max: 64 << 20,
            connection_requests_in_flight_max: 16,
            bytes_in_flight_max: 512 << 20,
            connections_max: 1024,
            fetch_response_bytes_max: 32 << 20,
            fetch_wait_max: Duration::from_secs(30),
            produce_timeout_max: Duration::from_secs(60),
            admin_timeout_max: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            connection_idle_max: Duration::from_secs(600),
        }
    }

    /// Checks that the limits can all be met together.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        let request = self.request_bytes_max;
        if request < 64 {
            return Err(KafkaConfigError::RequestTooSmall(request));
        }
        if self.connection_bytes_in_flight_max < request || self.bytes_in_flight_max < request {
            return Err(KafkaConfigError::InFlightBelowRequest {
                request,
                connection: self.connection_bytes_in_flight_max,
                total: self.bytes_in_flight_max,
            });
        }
        if self.connection_requests_in_flight_max == 0 || self.connections_max == 0 {
            return Err(KafkaConfigError::ZeroLimit);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("kafka request_bytes_max {0} is too small for any request; use at least 64 (default 16 MiB)")]
    RequestTooSmall(usize),
    #[error(
        "kafka bytes in flight (per connection {connection}, in all {total}) must be at least \
         request_bytes_max {request}, or the largest request could never be read: raise them"
    )]
    InFlightBelowRequest { request: usize, connection: usize, total: usize },
    #[error("kafka connections_max and connection_requests_in_flight_max must be at least 1")]
    ZeroLimit,
}
