//! Serves the Kafka protocol over the in-memory backend, for pointing real Kafka clients at
//! the front end before the broker service exists (`tests/kafka/README.md`).
//!
//! `cargo run --example kafka_memory -- [LISTEN_ADDR] [AUTO_CREATE_PARTITIONS] [TLS_DIR]`
//! (default `127.0.0.1:9092`, 1, plain TCP). With TLS_DIR (made by `keel certs --dir
//! TLS_DIR --node 1 --host 127.0.0.1`) it speaks TLS with node 1's certificate. It prints
//! `listening on ADDR` once it accepts clients, and serves until it is stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use keel::kafka::memory::{MemoryBackend, MemoryConfig, local_broker};
use keel::kafka::{KafkaConfig, serve_on};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9092").parse()?;
    let partitions: u32 = args.next().as_deref().unwrap_or("1").parse()?;
    let tls = match args.next() {
        Some(dir) => Some(keel::net::tls::NodeTls::load(dir.as_ref(), 1, false)?.server),
        None => None,
    };
    // Bound first, so that the advertised port is the one the OS gave (for port 0).
    let socket = tokio::net::TcpListener::bind(listen).await?;
    let addr = socket.local_addr()?;
    let mut memory = MemoryConfig::new(local_broker(addr));
    memory.auto_create_partitions = Some(partitions);
    let listener = serve_on(socket, KafkaConfig::new(addr), Arc::new(MemoryBackend::new(memory)), tls)?;
    println!("listening on {}", listener.local_addr());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
