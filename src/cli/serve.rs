//! `keel serve`: run one node until Ctrl-C or SIGTERM, then stop gracefully.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel::producers::ProducerConfig;
use keel::server::config::{self, ConfigError};
use keel::server::{Limits, NodeConfig, NodeHandle, Retention};

use super::Usage;
use super::args::{LogFormat, ServeArgs};

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let args = with_config_file(args)?;
    super::logging::init(args.log_format.unwrap_or(LogFormat::Text));
    let (config, peer_names) = node_config(&args)?;
    raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut node = NodeHandle::start(config).await?;
        node.follow_peer_names(peer_names);
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
    // One way of naming the node: the flags' or variables' if they give one, else the file's.
    if args.id.is_none() && !args.id_from_hostname {
        args.id_from_hostname = file.id_from_hostname;
    }
    macro_rules! fill {
        ($($field:ident),*) => { $( if args.$field.is_none() { args.$field = file.$field; } )* };
    }
    fill!(
        id,
        dir,
        listen,
        peers,
        join,
        tls,
        metrics,
        retention_bytes,
        retention_ms,
        segment_bytes,
        record_bytes_max,
        default_partitions,
        producer_id_expiration_ms,
        producers_max,
        disk_free_bytes_min,
        kafka,
        kafka_advertised,
        log_format,
        leader_balance_ms,
        metadata_segment_bytes
    );
    args.allow_anonymous_clients |= file.allow_anonymous_clients;
    args.auto_create_topics |= file.auto_create_topics;
    args.kafka_tls |= file.kafka_tls;
    args.voter |= file.voter;
    Ok(args)
}

/// A node holds a few files open per Raft group it hosts: the soft limit on open files
/// (often 1 024) is raised to the hard one, as servers of many files do.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!(soft = limit.rlim_cur, "cannot raise the limit on open files");
            }
        }
    }
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

/// How long `keel serve` waits at start for the peers' names to resolve.
const PEER_LOOKUP_WAIT: Duration = Duration::from_secs(60);

/// The node's settings, and the peers' addresses as written (for `follow_peer_names`).
fn node_config(args: &ServeArgs) -> anyhow::Result<(NodeConfig, BTreeMap<u64, String>)> {
    let id = if args.id_from_hostname {
        let name = hostname().context("--id-from-hostname: cannot read the host name")?;
        id_from_hostname(&name).ok_or_else(|| {
            Usage(format!("--id-from-hostname: host name `{name}` does not end in -N (as keel-0, keel-1, ...)"))
        })?
    } else {
        required(&args.id, "id", "KEEL_ID", "id")?
    };
    let data_dir = required(&args.dir, "dir", "KEEL_DIR", "dir")?;
    let listen = socket(&required(&args.listen, "listen", "KEEL_LISTEN", "listen")?, "--listen")?;
    let (entry, peer_names) = match (&args.peers, &args.join) {
        (Some(_), Some(_)) => {
            let why = "--peers and --join are exclusive: --peers starts a new cluster's members, --join adds a node \
                       to a running cluster";
            return Err(Usage(why.into()).into());
        }
        (Some(peers), None) => {
            if args.voter {
                return Err(Usage("--voter goes with --join (the members of --peers are voters)".into()).into());
            }
            (config::ClusterEntry::Initial, config::parse_peer_names(peers)?)
        }
        // A node that joins, or restarts after joining, knows only itself: the metadata
        // names the others.
        (None, join) => {
            let entry = match join {
                Some(join) => {
                    if listen.ip().is_unspecified() {
                        return Err(ConfigError::JoinUnspecifiedListen(listen).into());
                    }
                    let bootstrap: Vec<String> =
                        join.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
                    if bootstrap.is_empty() {
                        return Err(Usage(format!("--join `{join}` names no HOST:PORT")).into());
                    }
                    config::ClusterEntry::Join { bootstrap, voter: args.voter }
                }
                None => config::ClusterEntry::Existing,
            };
            (entry, BTreeMap::from([(id, listen.to_string())]))
        }
    };
    let peers = resolve_peers(&peer_names)?;
    let tls_dir = required(&args.tls, "tls", "KEEL_TLS", "tls")?;
    let metrics = args.metrics.as_deref().map(|m| socket(m, "--metrics")).transpose()?;
    let mut limits = Limits::default();
    if let Some(max) = args.record_bytes_max {
        limits.record_bytes_max = max as usize;
        limits.batch_bytes_max = limits.batch_bytes_max.max(max as usize + 64 * 1024);
    }
    if let Some(min) = args.disk_free_bytes_min {
        limits.disk_free_bytes_min = min;
    }
    let segment_bytes = args.segment_bytes.unwrap_or(segments::Config::default().segment_bytes);
    let config = NodeConfig {
        id,
        data_dir,
        listen,
        peers,
        entry,
        tls_dir,
        metrics,
        require_client_cert: !args.allow_anonymous_clients,
        limits,
        retention: Retention { bytes: args.retention_bytes, age: args.retention_ms.map(Duration::from_millis) },
        tick: Duration::from_millis(10),
        segment_bytes,
        metadata_segment_bytes: args.metadata_segment_bytes.unwrap_or(config::METADATA_SEGMENT_BYTES),
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions.unwrap_or(1),
        producers: producer_limits(args)?,
        kafka: kafka_listener(args)?,
        leader_balance_every: match args.leader_balance_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => Some(config::LEADER_BALANCE_EVERY_DEFAULT),
        },
    };
    Ok((config, peer_names))
}

/// The producer limits a new cluster starts with; the defaults are `producers::*_DEFAULT`.
fn producer_limits(args: &ServeArgs) -> anyhow::Result<ProducerConfig> {
    let defaults = ProducerConfig::default();
    let expiration_ms = args.producer_id_expiration_ms.unwrap_or(defaults.producer_id_expiration_ms());
    let producers_max = args.producers_max.map_or(defaults.producers_max(), |max| max as usize);
    ProducerConfig::new(expiration_ms, producers_max).map_err(|e| Usage(e.to_string()).into())
}

/// The Kafka listener's settings: `--kafka`, advertised as `--kafka-advertised` (or as
/// `--kafka` itself when that is a specific address).
fn kafka_listener(args: &ServeArgs) -> anyhow::Result<Option<config::KafkaListenerConfig>> {
    let Some(listen) = args.kafka.as_deref() else {
        if args.kafka_advertised.is_some() || args.kafka_tls {
            return Err(Usage("--kafka-advertised and --kafka-tls need --kafka ADDR".into()).into());
        }
        return Ok(None);
    };
    let listen = socket(listen, "--kafka")?;
    let advertised = match &args.kafka_advertised {
        Some(a) => {
            let (host, port) = a.rsplit_once(':').unwrap_or((a, ""));
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(Usage(format!("--kafka-advertised `{a}` is not HOST:PORT")).into());
            }
            a.clone()
        }
        None if listen.ip().is_unspecified() => {
            let why = format!(
                "--kafka {listen} listens on every address: \
                 say which one Kafka clients reach with --kafka-advertised HOST:PORT"
            );
            return Err(Usage(why).into());
        }
        None => listen.to_string(),
    };
    Ok(Some(config::KafkaListenerConfig { listen, advertised, tls: args.kafka_tls }))
}

/// Resolves the peers' addresses, waiting up to `PEER_LOOKUP_WAIT` for names that do not
/// resolve yet: in Compose or a StatefulSet a peer's name exists only once its container
/// or pod does.
fn resolve_peers(names: &BTreeMap<u64, String>) -> anyhow::Result<BTreeMap<u64, SocketAddr>> {
    let deadline = Instant::now() + PEER_LOOKUP_WAIT;
    let mut said = false;
    loop {
        match config::resolve_peers(names) {
            Err(e @ ConfigError::Resolve { .. }) if Instant::now() < deadline => {
                if !said {
                    tracing::warn!(error = %e, "waiting up to {PEER_LOOKUP_WAIT:?} for the peers' names to resolve");
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            result => return Ok(result?),
        }
    }
}

/// The node id of a StatefulSet pod: its host name's trailing ordinal plus one (keel-0 is 1).
fn id_from_hostname(name: &str) -> Option<u64> {
    let (_, ordinal) = name.rsplit_once('-')?;
    ordinal.parse::<u64>().ok()?.checked_add(1)
}

fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most buf.len() bytes into buf, which outlives the call.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::id_from_hostname;

    #[test]
    fn a_statefulset_pod_name_gives_its_ordinal_plus_one() {
        assert_eq!(id_from_hostname("keel-0"), Some(1));
        assert_eq!(id_from_hostname("my-keel-12"), Some(13));
        assert_eq!(id_from_hostname("keel"), None);
        assert_eq!(id_from_hostname("keel-x"), None);
        assert_eq!(id_from_hostname("keel-"), None);
    }
}
