//! `keel serve`: run one node until Ctrl-C or SIGTERM, then stop gracefully.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel::server::{Limits, NodeConfig, NodeHandle, Retention};

use super::Usage;
use super::args::{LogFormat, ServeArgs};

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let args = with_config_file(args)?;
    super::logging::init(args.log_format.unwrap_or(LogFormat::Text));
    let config = node_config(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut node = NodeHandle::start(config).await?;
        tokio::select! {
            stopped = node.stopped() => {
                stopped.context("the node stopped")?;
                Ok(ExitCode::SUCCESS)
            }
            _ = super::signals::terminate() => {
                tracing::info!("stopping: transferring leadership and syncing");
                node.shutdown().await.context("graceful shutdown failed")?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Fills every setting not given as a flag or variable from the --config TOML file.
fn with_config_file(mut args: ServeArgs) -> anyhow::Result<ServeArgs> {
    let Some(path) = args.config.clone() else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read --config {}", path.display()))?;
    let file: ServeArgs =
        toml::from_str(&text).with_context(|| format!("{} is not a valid keel config", path.display()))?;
    macro_rules! fill {
        ($($field:ident),*) => { $( if args.$field.is_none() { args.$field = file.$field; } )* };
    }
    fill!(
        id,
        dir,
        listen,
        peers,
        tls,
        metrics,
        retention_bytes,
        retention_ms,
        segment_bytes,
        record_bytes_max,
        log_format
    );
    args.allow_anonymous_clients |= file.allow_anonymous_clients;
    Ok(args)
}

fn required<T: Clone>(value: &Option<T>, flag: &str, var: &str, key: &str) -> anyhow::Result<T> {
    match value {
        Some(v) => Ok(v.clone()),
        None => Err(Usage(format!("missing --{flag} (or {var}, or `{key}` in the --config file)")).into()),
    }
}

fn socket(text: &str, what: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("{what}: `{text}` is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{what}: `{text}` resolves to no address"))
}

fn node_config(args: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let id = required(&args.id, "id", "KEEL_ID", "id")?;
    let data_dir = required(&args.dir, "dir", "KEEL_DIR", "dir")?;
    let listen = socket(&required(&args.listen, "listen", "KEEL_LISTEN", "listen")?, "--listen")?;
    let peers = keel::server::config::parse_peers(&required(&args.peers, "peers", "KEEL_PEERS", "peers")?)?;
    let tls_dir = required(&args.tls, "tls", "KEEL_TLS", "tls")?;
    let metrics = args.metrics.as_deref().map(|m| socket(m, "--metrics")).transpose()?;
    let mut limits = Limits::default();
    if let Some(max) = args.record_bytes_max {
        limits.record_bytes_max = max as usize;
        limits.batch_bytes_max = limits.batch_bytes_max.max(max as usize + 64 * 1024);
    }
    let segment_bytes = args.segment_bytes.unwrap_or(segments::Config::default().segment_bytes);
    Ok(NodeConfig {
        id,
        data_dir,
        listen,
        peers,
        tls_dir,
        metrics,
        require_client_cert: !args.allow_anonymous_clients,
        limits,
        retention: Retention { bytes: args.retention_bytes, age: args.retention_ms.map(Duration::from_millis) },
        tick: Duration::from_millis(10),
        segment_bytes,
    })
}
