//! Starting a node: check the configuration and the data directory, open the log, start
//! the QUIC endpoint, the peer links, the group loop, the client service and /metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use segments::Log;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::clients::ClientService;
use super::config::{ConfigError, NodeConfig};
use super::disk::FreeSpace;
use super::group::{self, Committed, Event, Group, GroupError, GroupParts, LeaderHint};
use super::repair;
use crate::metrics as m;
use crate::net::client_codec::ClusterView;
use crate::net::endpoint::{alpn, node_endpoint};
use crate::net::peer::Peers;
use crate::net::tls::{ALPN_CLIENT, ALPN_PEER, CA_CERT, NodeTls};
use crate::net::{Connection, peer_codec};
use crate::raft::{self, Membership, MembershipChange, NodeId};
use crate::replica::hard_state::{HardStateFile, check_identity};

const INBOUND_FRAMES_MAX: usize = 4096;
/// How often a peer's host name is looked up again while its link is down.
const PEER_LOOKUP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("certificates in {dir}: {source}")]
    Tls { dir: std::path::PathBuf, source: crate::net::tls::TlsError },
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir { dir: std::path::PathBuf, source: std::io::Error },
    #[error(
        "the data directory {dir} is in use by another running node (its log is locked); \
         stop that node, or give this one its own --dir"
    )]
    DataDirLocked { dir: std::path::PathBuf },
    #[error(transparent)]
    State(#[from] crate::replica::hard_state::StateError),
    #[error("cannot open the log: {0}")]
    Log(#[from] segments::Error),
    #[error("cannot start Raft: {0}")]
    Raft(#[from] raft::StartError),
    #[error(transparent)]
    Repair(#[from] super::repair::RepairError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// A running node. Dropping it does not stop it; call `shutdown`.
pub struct NodeHandle {
    pub id: NodeId,
    pub cluster_id: u64,
    pub local_addr: SocketAddr,
    events: mpsc::Sender<Event>,
    log: Arc<RwLock<Log>>,
    committed: watch::Receiver<Committed>,
    leader: watch::Receiver<LeaderHint>,
    task: JoinHandle<Result<(), GroupError>>,
    endpoint: quinn::Endpoint,
    peers: Peers,
}

/// The cluster's id: the first 8 bytes of the SHA-256 of its CA certificate. Certificates
/// from another CA make another cluster, and a data directory remembers its cluster.
pub fn cluster_id(tls_dir: &std::path::Path) -> Result<u64, StartError> {
    let path = tls_dir.join(CA_CERT);
    let pem = std::fs::read(&path).map_err(|source| StartError::Tls {
        dir: tls_dir.into(),
        source: crate::net::tls::TlsError::Read { path: path.clone(), source },
    })?;
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(&pem).map_err(|_| StartError::Tls {
        dir: tls_dir.into(),
        source: crate::net::tls::TlsError::Pem { path, what: "CA certificate" },
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes")))
}

impl NodeHandle {
    pub async fn start(mut config: NodeConfig) -> Result<NodeHandle, StartError> {
        config.limits.fit_segment(config.segment_bytes)?;
        if !config.peers.contains_key(&config.id) {
            return Err(ConfigError::SelfMissing(config.id).into());
        }
        let tls = NodeTls::load(&config.tls_dir, config.id, config.require_client_cert)
            .map_err(|source| StartError::Tls { dir: config.tls_dir.clone(), source })?;
        let cluster_id = cluster_id(&config.tls_dir)?;
        // First, so that what start-up finds (a repaired log) is counted too.
        if let Some(addr) = config.metrics {
            crate::metrics::serve(addr, config.peers.keys().copied().filter(|&p| p != config.id))?;
            info!(%addr, "serving /metrics");
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { dir: config.data_dir.clone(), source })?;
        check_identity(&config.data_dir, cluster_id, config.id)?;
        let seg_config = segments::Config {
            segment_bytes: config.segment_bytes,
            entry_bytes_max: u32::try_from(config.limits.batch_bytes_max + 1024).unwrap_or(u32::MAX),
            ..segments::Config::default()
        };
        let (log, report) = Log::open(&config.data_dir.join("log"), seg_config).map_err(|e| match e {
            segments::Error::Locked { .. } => StartError::DataDirLocked { dir: config.data_dir.clone() },
            other => StartError::Log(other),
        })?;
        info!(%report, "log opened");
        let initial = Membership { voters: config.peers.keys().copied().collect(), ..Membership::default() };
        let mut hard = HardStateFile::open(&config.data_dir, initial)?;
        repair::check_commit_within_log(&log, &mut hard)?;
        let mut raft_config = raft::Config::new(config.id, rand::random());
        raft_config.append_bytes_max = config.limits.batch_bytes_max + 1024;
        raft_config.uncommitted_bytes_max =
            raft_config.uncommitted_bytes_max.max(4 * raft_config.append_bytes_max as u64);
        let log = Arc::new(RwLock::new(log));
        let mut next = hard.persisted().clone();
        let commit = next.hard_state.commit;
        let raft = repair::start_core(raft_config, &log, &mut hard, &mut next, commit)?;

        let endpoint = node_endpoint(config.listen, &tls)?;
        let local_addr =
            endpoint.local_addr().map_err(|source| crate::net::NetError::Bind { addr: config.listen, source })?;
        let (peers, mut inbound) =
            Peers::start(endpoint.clone(), config.id, cluster_id, &config.peers, INBOUND_FRAMES_MAX);
        let (events_tx, events_rx) = mpsc::channel(group::EVENTS_MAX);

        // Peer frames become core messages; entries are CRC-checked in the decoder.
        let to_loop = events_tx.clone();
        let entry_bytes_max = u32::try_from(config.limits.batch_bytes_max + 1024).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            while let Some(inbound) = inbound.recv().await {
                match peer_codec::decode(inbound.frame, entry_bytes_max) {
                    Ok((group::GROUP, msg)) => {
                        if to_loop.send(Event::Peer(inbound.from, msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok((other, _)) => warn!(from = inbound.from, group = other, "frame for an unknown group dropped"),
                    Err(e) => {
                        metrics::counter!(m::FRAMES_REJECTED, "protocol" => "peer").increment(1);
                        warn!(from = inbound.from, error = %e, "malformed peer frame dropped");
                    }
                }
            }
        });

        let (group, committed, leader) = Group::new(GroupParts {
            id: config.id,
            cluster_id,
            raft,
            log: log.clone(),
            hard,
            peers: peers.clone(),
            addresses: config.peers.clone(),
            retention: config.retention.clone(),
            tick: config.tick,
        });
        let task = tokio::spawn(group.run(events_rx, events_tx.clone()));

        let service = Arc::new(ClientService {
            events: events_tx.clone(),
            log: log.clone(),
            committed: committed.clone(),
            leader: leader.clone(),
            free_space: FreeSpace::watch(&config.data_dir, config.limits.disk_free_bytes_min),
            connections: Arc::new(Semaphore::new(config.limits.client_connections_max)),
            streams: std::sync::atomic::AtomicU64::new(1),
            limits: config.limits.clone(),
        });
        tokio::spawn(accept_loop(endpoint.clone(), peers.clone(), service));
        info!(id = config.id, addr = %local_addr, cluster = format!("{cluster_id:016x}"), "node started");
        Ok(NodeHandle {
            id: config.id,
            cluster_id,
            local_addr,
            events: events_tx,
            log,
            committed,
            leader,
            task,
            endpoint,
            peers,
        })
    }

    /// Follows peers named by host name (`names` as in `--peers`): while a link is down, its
    /// name is looked up again every few seconds and the link re-addressed. A Compose
    /// container or a Kubernetes pod gets a new address when it restarts; its name follows it.
    pub fn follow_peer_names(&self, names: BTreeMap<NodeId, String>) {
        let names: Vec<(NodeId, String)> =
            names.into_iter().filter(|(id, name)| *id != self.id && name.parse::<SocketAddr>().is_err()).collect();
        if names.is_empty() {
            return;
        }
        let (peers, events) = (self.peers.clone(), self.events.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PEER_LOOKUP_PERIOD);
            loop {
                ticker.tick().await;
                for (id, name) in &names {
                    if peers.connected(*id) {
                        continue;
                    }
                    let Some(addr) = tokio::net::lookup_host(name.as_str()).await.ok().and_then(|mut a| a.next())
                    else {
                        continue;
                    };
                    if peers.address(*id).is_some_and(|known| known != addr) {
                        info!(peer = id, name, %addr, "peer has a new address");
                        peers.add(*id, addr);
                        if events.send(Event::PeerAddress(*id, addr)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// This node's view of the cluster.
    pub async fn status(&self) -> Option<ClusterView> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::Status(reply)).await.ok()?;
        rx.await.ok()
    }

    pub fn leader(&self) -> LeaderHint {
        *self.leader.borrow()
    }

    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// The log, for reading what this replica holds (tests compare replicas byte for byte).
    pub fn log(&self) -> Arc<RwLock<Log>> {
        self.log.clone()
    }

    /// Appends a batch of records (encoded as in `record.rs`) through this node, which must
    /// be the leader; returns the base offset once the entry is committed.
    pub async fn produce(&self, records: bytes::Bytes, record_count: u32) -> group::ProduceResult {
        use crate::net::client_codec::ErrorReply;
        let payload = crate::record::batch_payload(super::clients::now_ms(), &records).freeze();
        let (reply, rx) = oneshot::channel();
        let event = Event::Propose { payload, record_count, stream: 0, received: std::time::Instant::now(), reply };
        let stopped = || ErrorReply::OutcomeUnknown { reason: "the node stopped".into() };
        self.events.send(event).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Proposes a membership change through this node (the leader); returns the index of its
    /// configuration entry. `addresses` says where new members listen: the entry carries
    /// them, so every replica, and any later leader, can reach those members.
    pub async fn change_membership(
        &self,
        changes: Vec<MembershipChange>,
        addresses: Vec<(NodeId, SocketAddr)>,
    ) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::ChangeMembership { changes, addresses, reply }).await.map_err(|_| "stopped")?;
        rx.await.map_err(|_| "stopped".to_string())?
    }

    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::TransferLeadership { to, reply }).await.map_err(|_| "stopped")?;
        rx.await.map_err(|_| "stopped".to_string())?
    }

    /// Stops gracefully: a leader hands over leadership first; everything is made durable.
    pub async fn shutdown(self) -> Result<(), GroupError> {
        let (reply, rx) = oneshot::channel();
        if self.events.send(Event::Shutdown(reply)).await.is_ok() {
            let _ = rx.await;
        }
        let result = self.task.await.unwrap_or(Ok(()));
        self.endpoint.close(0u32.into(), b"node stopped");
        result
    }

    /// Resolves when the node stopped by itself (a storage failure).
    pub async fn stopped(&mut self) -> Result<(), GroupError> {
        (&mut self.task).await.unwrap_or(Ok(()))
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, peers: Peers, service: Arc<ClientService>) {
    while let Some(incoming) = endpoint.accept().await {
        let peers = peers.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn: Connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    let reason = handshake_failure_reason(&e.to_string());
                    m::handshake_failure(reason);
                    warn!(%remote, error = %e, reason, "refused a connection");
                    return;
                }
            };
            match alpn(&conn).as_deref() {
                Some(ALPN_PEER) => {
                    if peers.accept(conn.clone()).await.is_ok() {
                        let _open = m::OpenConnection::new("peer");
                        conn.closed().await;
                    } else {
                        m::handshake_failure("peer_identity");
                    }
                }
                Some(ALPN_CLIENT) => service.serve(conn).await,
                _ => {
                    m::handshake_failure("wrong_alpn");
                    conn.close(0x20u32.into(), b"unknown application protocol");
                }
            }
        });
    }
}

fn handshake_failure_reason(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("certificate") || e.contains("unknownissuer") || e.contains("unknown ca") {
        "bad_certificate"
    } else if e.contains("application protocol") {
        "wrong_alpn"
    } else if e.contains("timed out") {
        "timeout"
    } else {
        "other"
    }
}
