//! The Kafka listener: accepts TCP connections (TLS on them when given a rustls
//! configuration), within a limit on open connections, and serves each on its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::backend::KafkaBackend;
use super::config::{KafkaConfig, KafkaConfigError};
use super::connection::{self, Shared};
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Config(#[from] KafkaConfigError),
    #[error("cannot listen for Kafka clients on {addr}: {source}; is another process using the port?")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running Kafka listener. Dropping it (or `shutdown`) stops accepting and closes every
/// connection it serves.
pub struct KafkaListener {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl KafkaListener {
    /// The address it listens on (the port the OS picked, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown(self) {}
}

impl Drop for KafkaListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts serving Kafka clients on `config.listen` over `backend`: plain TCP, or TLS with
/// `tls` (a rustls server configuration the caller builds: certificates, client
/// authentication, one crypto provider). Must run inside a tokio runtime.
pub async fn serve(
    config: KafkaConfig,
    backend: Arc<dyn KafkaBackend>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<KafkaListener, ListenError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| ListenError::Bind { addr, source })?;
    serve_on(listener, config, backend, tls)
}

/// As `serve`, on a listener the caller bound (`config.listen` is not used): for a caller
/// that must know the port before the backend can name it in the metadata.
pub fn serve_on(
    listener: TcpListener,
    config: KafkaConfig,
    backend: Arc<dyn KafkaBackend>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<KafkaListener, ListenError> {
    config.validate()?;
    let addr = config.listen;
    let local_addr = listener.local_addr().map_err(|source| ListenError::Bind { addr, source })?;
    let connections = Arc::new(Semaphore::new(config.connections_max));
    let shared =
        Arc::new(Shared { backend, bytes_in_flight: Arc::new(Semaphore::new(config.bytes_in_flight_max)), config });
    let task = tokio::spawn(accept(listener, shared, connections, tls.map(tokio_rustls::TlsAcceptor::from)));
    tracing::info!("serving Kafka clients on {local_addr}");
    Ok(KafkaListener { local_addr, task })
}

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Owning the connections' tasks here means they end with the listener.
    let mut served = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        tracing::warn!(
                            "kafka: refused a connection from {peer}: {} open (connections_max)",
                            shared.config.connections_max
                        );
                        continue;
                    };
                    served.spawn(connection_task(shared.clone(), stream, peer, tls.clone(), permit));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little instead of spinning.
                    tracing::warn!("kafka: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = served.join_next(), if !served.is_empty() => {}
        }
    }
}

async fn connection_task(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    _permit: OwnedSemaphorePermit,
) {
    let _open = metrics::OpenConnection::kafka();
    // Requests and answers are small and latency-bound: no Nagle delay.
    let _ = stream.set_nodelay(true);
    match tls {
        None => connection::serve(shared, stream, peer).await,
        Some(acceptor) => {
            let timeout = shared.config.tls_handshake_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => connection::serve(shared, stream, peer).await,
                Ok(Err(e)) => tracing::debug!("kafka: TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("kafka: TLS handshake with {peer} took longer than {timeout:?}"),
            }
        }
    }
}
