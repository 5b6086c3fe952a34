//! A node: one process hosting many Raft groups. Starting it checks the configuration and
//! the data directory, starts the QUIC endpoint, the links to the other nodes, the router
//! that hands each peer frame to its group, the ticker that drives every group's clock,
//! the groups themselves, the client service and /metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::clients::ClientService;
use super::config::{self, ClusterEntry, ConfigError, NodeConfig};
use super::controller::DEFAULT_TOPIC;
use super::controller::{Bootstrap, Controller};
use super::disk::FreeSpace;
use super::group::{self, Event, Group, GroupError, GroupParts, GroupReplica, LeaderHint, PeerSender};
use super::layout::{Layout, LayoutError};
use super::metadata::MetadataMachine;
use super::produce::{ProduceError, ProduceResult};
use super::registry::{GroupHandle, Registry};
use super::status::GroupStatus;
use crate::broker::leaders::LeaderTable;
use crate::broker::{Broker, METADATA_GROUP};
use crate::metrics as m;
use crate::net::endpoint::{alpn, node_endpoint};
use crate::net::peer::{Lane, Peers, SendError};
use crate::net::tls::{ALPN_CLIENT, ALPN_PEER, CA_CERT, NodeTls};
use crate::net::{Connection, node_codec, peer_codec};
use crate::producers::ProducerConfig;
use crate::raft::{self, Membership, MembershipChange, Message, NodeId};
use crate::replica::backend::SharedLog;
use crate::replica::hard_state::HardStateFile;
use crate::replica::retention::Retention;
use crate::replica::{Committed, Replica};

/// How long a node that joins keeps asking its bootstrap nodes to add it.
pub const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often it asks again meanwhile.
const JOIN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Peer frames waiting to be routed to their groups.
const INBOUND_FRAMES_MAX: usize = 4096;
/// How often a peer's host name is looked up again while its link is down.
const PEER_LOOKUP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);
/// How often every group gets `Event::Housekeeping`.
const HOUSEKEEPING_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);
/// Ticks a group stays idle (every member caught up, nothing proposed) before it goes
/// quiet: 100 ticks of 10 ms, a second, so a group that is written to keeps its timers.
const QUIESCE_AFTER_TICKS: u32 = 100;
/// How often a node tells the others about the groups it leads (and at once on a change).
const LEADERS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);
/// The group of the topic `default`'s one partition on a new cluster (the first group the
/// metadata allocates; tests read its files).
pub const DEFAULT_GROUP: u64 = 1;
/// Largest segment of a `__consumer_offsets` partition (unless four largest entries need
/// more): the partition is trimmed by whole segments (`offsets_floor.rs`).
pub const OFFSETS_SEGMENT_BYTES_MAX: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("certificates in {dir}: {source}")]
    Tls { dir: std::path::PathBuf, source: crate::net::tls::TlsError },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "the data directory {dir} is in use by another running node (its log is locked); \
         stop that node, or give this one its own --dir"
    )]
    DataDirLocked { dir: std::path::PathBuf },
    #[error(transparent)]
    State(#[from] crate::replica::hard_state::StateError),
    #[error("cannot open the log of group {group}: {source}")]
    Log { group: u64, source: segments::Error },
    #[error("cannot start group {group}: {source}")]
    Replica { group: u64, source: crate::replica::ReplicaError },
    #[error("group {0} is already hosted on this node")]
    GroupExists(u64),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::ListenError),
    #[error(
        "cannot join the cluster through {bootstrap}: no node accepted this node within {waited:?} (last: {last}); \
         check that those nodes run and answer at those addresses, and that this node's certificate \
         (node-{id}.pem) was made by `keel certs --node {id}` with the cluster's CA; then start it again"
    )]
    Join { id: NodeId, bootstrap: String, waited: std::time::Duration, last: String },
    #[error("the cluster refused to add this node: {0}")]
    JoinRefused(String),
}

/// A running node. Dropping it does not stop it; call `shutdown`.
pub struct NodeHandle {
    pub id: NodeId,
    pub cluster_id: u64,
    pub local_addr: SocketAddr,
    shared: Arc<NodeShared>,
    broker: Arc<Broker>,
    failed: mpsc::Receiver<(u64, GroupError)>,
    endpoint: quinn::Endpoint,
    /// The Kafka listener (`--kafka`); dropping it closes its connections.
    kafka: Option<crate::kafka::KafkaListener>,
}

/// What the node's tasks share: the groups, the links, the settings.
pub struct NodeShared {
    config: NodeConfig,
    pub(crate) layout: Layout,
    pub(crate) registry: Arc<Registry>,
    pub(crate) peers: Peers,
    sender: Arc<dyn PeerSender>,
    leaders: Arc<LeaderTable>,
    tasks: Mutex<BTreeMap<u64, JoinHandle<()>>>,
    failed: mpsc::Sender<(u64, GroupError)>,
}

/// A replica to start: its group, initial configuration and settings.
pub struct GroupSpec {
    pub group: u64,
    /// The configuration of a new replica (ignored when the replica exists on disk).
    pub voters: Membership,
    pub retention: Retention,
    /// This group's gauges are the node's single-group gauges (the metadata group).
    pub node_gauges: bool,
    pub metadata: Option<MetadataMachine>,
    /// A partition of `__consumer_offsets`: small segments, trimmed below checkpoints.
    pub consumer_offsets: bool,
    /// The limits of a partition's producer table: the cluster settings of the metadata the
    /// controller applied (the metadata group keeps no producer table).
    pub producers: ProducerConfig,
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

/// A group's messages leave through the node's links: entries on the bulk lane, the rest
/// on the control lane (`net/peer.rs`).
struct LinkSender(Peers);

impl PeerSender for LinkSender {
    fn send(&self, to: NodeId, group: u64, msg: &Message) -> Result<(), SendError> {
        self.0.send(to, group, peer_codec::lane(msg), peer_codec::encode(group, msg))
    }

    fn learn_address(&self, id: NodeId, address: SocketAddr) {
        if self.0.address(id).is_none() {
            self.0.add(id, address);
        }
    }

    fn alive(&self, id: NodeId) -> bool {
        self.0.alive(id)
    }
}

impl NodeHandle {
    pub async fn start(mut config: NodeConfig) -> Result<NodeHandle, StartError> {
        config.limits.fit_segment(config.segment_bytes)?;
        if config.metadata_segment_bytes < config::METADATA_SEGMENT_BYTES_MIN {
            return Err(ConfigError::MetadataSegmentTooSmall(config.metadata_segment_bytes).into());
        }
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
        // Checked before the layout is made: a refused start leaves no data directory.
        let has_metadata = super::layout::group_dir(&config.data_dir, METADATA_GROUP).exists();
        if config.entry == ClusterEntry::Existing && !has_metadata {
            return Err(ConfigError::NoCluster { dir: config.data_dir.clone() }.into());
        }
        let layout = Layout::open(&config.data_dir, cluster_id, config.id)?;

        let endpoint = node_endpoint(config.listen, &tls)?;
        let local_addr =
            endpoint.local_addr().map_err(|source| crate::net::NetError::Bind { addr: config.listen, source })?;
        let (peers, inbound) = Peers::start(endpoint.clone(), config.id, cluster_id, &config.peers, INBOUND_FRAMES_MAX);
        let registry = Arc::new(Registry::default());
        let leaders = Arc::new(LeaderTable::default());
        let (failed_tx, failed) = mpsc::channel(16);
        let shared = Arc::new(NodeShared {
            config: config.clone(),
            layout,
            registry: registry.clone(),
            sender: Arc::new(LinkSender(peers.clone())),
            peers: peers.clone(),
            leaders: leaders.clone(),
            tasks: Mutex::new(BTreeMap::new()),
            failed: failed_tx,
        });
        let entry_bytes_max = u32::try_from(config.limits.batch_bytes_max + 1024).unwrap_or(u32::MAX);
        tokio::spawn(super::registry::route(inbound, registry.clone(), leaders.clone(), entry_bytes_max));
        tokio::spawn(super::registry::tick(registry.clone(), config.tick, HOUSEKEEPING_PERIOD, peers.clone()));
        tokio::spawn(tell_leaders(peers.clone(), leaders.clone(), config.id));

        // Group 0, the metadata group: its voters are the initial members. A node that joins
        // starts outside its configuration (so it never campaigns); the metadata leader adds
        // it as a learner.
        let initial = config.entry == ClusterEntry::Initial;
        let voters = if initial { config.peers.keys().copied().collect() } else { Default::default() };
        let voters = Membership { voters, ..Membership::default() };
        let (machine, metadata) = MetadataMachine::new();
        shared.start_group(GroupSpec {
            group: METADATA_GROUP,
            voters,
            retention: Retention::default(),
            node_gauges: true,
            metadata: Some(machine),
            consumer_offsets: false,
            producers: ProducerConfig::default(),
        })?;
        let broker = Arc::new(Broker {
            node_id: config.id,
            cluster_id,
            // How the others reach this node: its --peers address (it may listen on 0.0.0.0).
            own_address: config.peers.get(&config.id).map_or_else(|| local_addr.to_string(), |a| a.to_string()),
            kafka_address: config.kafka.as_ref().map(|k| k.advertised.clone()),
            forwarder: crate::broker::Forwarder::new(config.tls_dir.clone()),
            registry: registry.clone(),
            metadata,
            leaders,
            limits: config.limits.clone(),
            free_space: FreeSpace::watch(&config.data_dir, config.limits.disk_free_bytes_min),
            producer_ids: Default::default(),
            moves: Default::default(),
        });
        let bootstrap = Bootstrap {
            // Only a new cluster's initial members set it up.
            members: if initial { config.peers.clone() } else { BTreeMap::new() },
            settings: Bootstrap::settings(&config),
            default_partitions: config.default_partitions,
        };
        tokio::spawn(Controller::new(shared.clone(), broker.clone(), bootstrap).run());
        tokio::spawn(broker.clone().drive_moves_every());
        if let Some(period) = config.leader_balance_every {
            tokio::spawn(broker.clone().balance_leaders_every(period));
        }
        let groups = crate::broker::groups::Coordinators::new(broker.clone());
        tokio::spawn(groups.clone().run());

        let service = Arc::new(ClientService {
            broker: broker.clone(),
            groups: groups.clone(),
            connections: Arc::new(Semaphore::new(config.limits.client_connections_max)),
            streams: std::sync::atomic::AtomicU64::new(1),
        });
        tokio::spawn(accept_loop(endpoint.clone(), peers.clone(), service));
        if let ClusterEntry::Join { bootstrap, voter } = &config.entry {
            if has_metadata {
                info!("this node joined its cluster before (its data directory holds the metadata): --join is ignored");
            } else {
                join(&config, &broker, &peers, bootstrap, *voter).await?;
            }
        }
        let kafka = match &config.kafka {
            Some(k) => Some(start_kafka(k, &config, broker.clone(), groups).await?),
            None => None,
        };
        info!(id = config.id, addr = %local_addr, cluster = format!("{cluster_id:016x}"), "node started");
        Ok(NodeHandle { id: config.id, cluster_id, local_addr, shared, broker, failed, endpoint, kafka })
    }

    /// Where the Kafka listener listens, if the node has one.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka.as_ref().map(|k| k.local_addr())
    }

    /// Starts a replica of group `group` on this node (creating its directory on first
    /// start), with `voters` as the group's initial configuration. The topics layer drives
    /// this from the metadata group; tests call it directly, and such a group, which no
    /// metadata names, has the default producer limits on every node.
    pub fn create_group(&self, group: u64, voters: Membership) -> Result<(), StartError> {
        let spec = GroupSpec {
            group,
            voters,
            retention: Retention::default(),
            node_gauges: false,
            metadata: None,
            consumer_offsets: false,
            producers: ProducerConfig::default(),
        };
        self.shared.start_group(spec)
    }

    /// Stops this node's replica of `group` and deletes its data.
    pub async fn remove_group(&self, group: u64) -> Result<(), StartError> {
        self.shared.remove_group(group).await
    }

    /// The broker service over this node's groups.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Where node `id` listens, as this node knows it (its own address for itself).
    pub fn address_of(&self, id: NodeId) -> Option<SocketAddr> {
        if id == self.id { Some(self.local_addr) } else { self.shared.peers.address(id) }
    }

    /// The groups this node hosts.
    pub fn groups(&self) -> Vec<u64> {
        self.shared.registry.ids()
    }

    /// One group hosted here.
    pub fn group(&self, group: u64) -> Option<Arc<GroupHandle>> {
        self.shared.registry.get(group)
    }

    /// This node's replica of the topic `default`'s partition, once the metadata made it.
    fn default_group(&self) -> Option<Arc<GroupHandle>> {
        self.broker.replica(DEFAULT_TOPIC, 0).ok()
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
        let peers = self.shared.peers.clone();
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
                    }
                }
            }
        });
    }

    /// This node's view of the topic `default`'s partition.
    pub async fn status(&self) -> Option<GroupStatus> {
        self.default_group()?.status().await
    }

    pub fn leader(&self) -> LeaderHint {
        self.default_group().map(|g| g.leader()).unwrap_or_default()
    }

    pub fn committed(&self) -> Committed {
        self.default_group().map(|g| g.committed()).unwrap_or_default()
    }

    /// The `default` partition's log, for reading what this replica holds (tests compare
    /// replicas byte for byte).
    pub fn log(&self) -> Option<SharedLog> {
        Some(self.default_group()?.log.clone())
    }

    /// Appends records as one batch to the topic `default` through this node, which must
    /// lead its partition; returns the base offset once committed.
    pub async fn produce(&self, records: &[crate::batch::Record]) -> ProduceResult {
        let group =
            self.default_group().ok_or_else(|| ProduceError::Busy("topic default is not hosted here yet".into()))?;
        group.produce(records).await
    }

    /// Proposes a membership change of the default group through this node (the leader);
    /// returns the index of its configuration entry. `addresses` says where new members
    /// listen: the entry carries them, so every replica, and any later leader, can reach them.
    pub async fn change_membership(
        &self,
        changes: Vec<MembershipChange>,
        addresses: Vec<(NodeId, SocketAddr)>,
    ) -> Result<u64, String> {
        let group = self.default_group().ok_or("topic default is not hosted here yet")?;
        group.change_membership(changes, addresses).await
    }

    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), String> {
        let group = self.default_group().ok_or("topic default is not hosted here yet")?;
        group.transfer_leadership(to).await
    }

    /// Stops gracefully: every group leader hands over leadership first; everything is
    /// made durable.
    pub async fn shutdown(self) -> Result<(), GroupError> {
        let handles: Vec<Arc<GroupHandle>> =
            self.shared.registry.ids().into_iter().filter_map(|g| self.shared.registry.get(g)).collect();
        // Concurrently: each leader hands its groups over before the node goes.
        let mut stops = tokio::task::JoinSet::new();
        for h in handles {
            stops.spawn(async move {
                let (reply, rx) = oneshot::channel();
                if h.events.send(Event::Shutdown(reply)).await.is_ok() {
                    let _ = rx.await;
                }
            });
        }
        while stops.join_next().await.is_some() {}
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.shared.tasks.lock().expect("tasks lock")).into_values().collect();
        for task in tasks {
            let _ = task.await;
        }
        self.endpoint.close(0u32.into(), b"node stopped");
        let mut failed = self.failed;
        match failed.try_recv() {
            Ok((_, e)) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// Resolves when a group stopped by itself (a storage failure): the node must stop.
    pub async fn stopped(&mut self) -> Result<(), GroupError> {
        match self.failed.recv().await {
            Some((group, e)) => {
                error!(group, error = %e, "a group failed");
                Err(e)
            }
            None => Ok(()),
        }
    }
}

impl NodeShared {
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Opens a group's directory, starts its replica and its task, registers it.
    pub fn start_group(self: &Arc<Self>, spec: GroupSpec) -> Result<(), StartError> {
        let group = spec.group;
        if self.registry.get(group).is_some() {
            return Err(StartError::GroupExists(group));
        }
        let config = &self.config;
        let dir = self.layout.group_dir(group);
        let log_dir = super::layout::group_log_dir(self.layout.dir(), group);
        // The metadata log has small segments of its own (trimmed after snapshots), and
        // commands no larger than one of them holds.
        let (segment_bytes, entry_bytes_max) = match spec.metadata {
            Some(_) => (
                config.metadata_segment_bytes,
                config::metadata_entry_bytes_max(config.metadata_segment_bytes, &config.limits),
            ),
            // A partition of `__consumer_offsets` is trimmed by whole segments below its
            // coordinator's checkpoints: small ones let it shrink well before a data
            // partition's segment would fill, while still holding several largest entries.
            None if spec.consumer_offsets => {
                let entry_bytes_max = config.limits.batch_bytes_max + 1024;
                let small = OFFSETS_SEGMENT_BYTES_MAX.max(4 * entry_bytes_max as u64);
                (config.segment_bytes.min(small), entry_bytes_max)
            }
            None => (config.segment_bytes, config.limits.batch_bytes_max + 1024),
        };
        let seg_config = segments::Config {
            segment_bytes,
            entry_bytes_max: u32::try_from(entry_bytes_max).unwrap_or(u32::MAX),
            // A partition's data entries are Kafka batches: the time index keys on their
            // maxTimestamp (ListOffsets by time).
            timestamp: spec.metadata.is_none().then_some(batch_timestamp as segments::TimestampFn),
            ..segments::Config::default()
        };
        let (log, report) = segments::Log::open(&log_dir, seg_config).map_err(|e| match e {
            segments::Error::Locked { .. } => StartError::DataDirLocked { dir: config.data_dir.clone() },
            source => StartError::Log { group, source },
        })?;
        info!(group, %report, "log opened");
        let hard = HardStateFile::open(&dir, spec.voters)?;
        let mut raft_config = raft::Config::new(config.id, rand::random());
        raft_config.append_bytes_max = entry_bytes_max;
        raft_config.uncommitted_bytes_max =
            raft_config.uncommitted_bytes_max.max(4 * raft_config.append_bytes_max as u64);
        // An idle group goes quiet (no heartbeats, no timers); the ticker wakes it from the
        // node's pings when a node goes down (`registry::tick`).
        raft_config.quiesce_after_ticks = Some(QUIESCE_AFTER_TICKS);
        let replica: GroupReplica = Replica::open(raft_config, SharedLog::new(log), hard)
            .map_err(|source| StartError::Replica { group, source })?;
        let log = replica.log().clone();
        let (driver, published) = Group::new(GroupParts {
            group,
            replica,
            peers: self.sender.clone(),
            retention: spec.retention,
            node_gauges: spec.node_gauges,
            stamp_batches: spec.metadata.is_none(),
            consumer_offsets: spec.consumer_offsets,
            producers: spec.producers,
            metadata: spec.metadata,
            leaders: self.leaders.clone(),
        });
        let (events_tx, events_rx) = mpsc::channel(group::EVENTS_MAX);
        let handle = Arc::new(GroupHandle {
            id: group,
            events: events_tx.clone(),
            log,
            committed: published.committed,
            leader: published.leader,
            quiet: published.quiet,
        });
        self.registry.insert(handle);
        let this = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = driver.run(events_rx, events_tx).await {
                this.registry.remove(group);
                let _ = this.failed.send((group, e)).await;
            }
        });
        self.tasks.lock().expect("tasks lock").insert(group, task);
        Ok(())
    }

    /// Stops this node's replica of `group` and deletes its data.
    pub async fn remove_group(&self, group: u64) -> Result<(), StartError> {
        let task = self.tasks.lock().expect("tasks lock").remove(&group);
        if let Some(handle) = self.registry.remove(group) {
            let (reply, rx) = oneshot::channel();
            if handle.events.send(Event::Shutdown(reply)).await.is_ok() {
                let _ = rx.await;
            }
        }
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(self.layout.remove_group(group)?)
    }
}

/// The time index's key for a partition's entry: a data entry's batch's maxTimestamp.
fn batch_timestamp(entry: &segments::Entry) -> Option<u64> {
    if entry.kind() != raft::kind::DATA {
        return None;
    }
    crate::batch::index_timestamp(&entry.as_bytes()[segments::HEADER_LEN..])
}

/// Asks the cluster, through any of `bootstrap`, to add this node (registered as a broker,
/// then a learner of the metadata group), retrying every `JOIN_RETRY` for `JOIN_TIMEOUT`;
/// then links to the brokers the cluster names, so that the metadata leader's connection
/// is accepted before this node has any metadata of its own.
async fn join(
    config: &NodeConfig,
    broker: &Broker,
    peers: &Peers,
    bootstrap: &[String],
    voter: bool,
) -> Result<(), StartError> {
    let id = config.id;
    let started = tokio::time::Instant::now();
    let deadline = started + JOIN_TIMEOUT;
    let mut said = None;
    let last = loop {
        let mut client_config = crate::client::ClientConfig::new(bootstrap.to_vec(), &config.tls_dir);
        client_config.as_node = Some(id);
        client_config.timeout = JOIN_TIMEOUT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let attempt = async {
            let client = crate::client::Client::connect(client_config).await?;
            refuse_a_node_reborn(&client, bootstrap, id, &broker.own_address).await?;
            client.add_node(id, &broker.own_address, broker.kafka_address.as_deref(), voter).await?;
            client.metadata(None).await
        };
        let why = match attempt.await {
            Ok(metadata) => {
                for b in metadata.brokers.iter().filter(|b| b.id != id) {
                    match b.address.parse::<SocketAddr>() {
                        Ok(addr) => peers.add(b.id, addr),
                        Err(_) => warn!(node = b.id, address = %b.address, "a broker's address is not IP:PORT"),
                    }
                }
                info!(
                    ?bootstrap,
                    voter,
                    brokers = metadata.brokers.len(),
                    "joined the cluster: waiting for the metadata"
                );
                return Ok(());
            }
            // Refusals that asking again will not change.
            Err(crate::client::ClientError::Invalid(why)) => return Err(StartError::JoinRefused(why)),
            Err(e) => e.to_string(),
        };
        if said.as_ref() != Some(&why) {
            warn!(?bootstrap, error = %why, "cannot join the cluster yet; retrying for up to {JOIN_TIMEOUT:?}");
            said = Some(why.clone());
        }
        if tokio::time::Instant::now() + JOIN_RETRY >= deadline {
            break why;
        }
        tokio::time::sleep(JOIN_RETRY).await;
    };
    Err(StartError::Join { id, bootstrap: bootstrap.join(","), waited: started.elapsed(), last })
}

/// A node joins with an empty data directory. If a node of its id and address ran there
/// before, it lost its data: it would have forgotten its votes and the entries it
/// acknowledged, and could help elect a leader that lacks them (Raft assumes stable
/// storage). Refused, saying what to do. It ran before if it is a voter of the metadata
/// group, or a learner the metadata leader has replicated entries to while its broker is
/// not removed (such a node may vote in partition groups). A node registered by `keel node
/// add` is a learner that no entry reached until it runs, so its first join passes; a
/// removed node hosts nothing and may join again; another address is another node, which
/// the registration refuses.
async fn refuse_a_node_reborn(
    client: &crate::client::Client,
    bootstrap: &[String],
    id: NodeId,
    address: &str,
) -> Result<(), crate::client::ClientError> {
    for addr in bootstrap {
        let Ok(view) = client.status_from(addr).await else { continue };
        // Only the metadata leader knows how far each member got.
        let leader = match view.leader_address() {
            Some(leader) if view.leader != Some(view.node_id) => client.status_from(leader).await.ok(),
            _ => None,
        };
        let view = leader.unwrap_or(view);
        let Some(member) = view.members.iter().find(|m| m.id == id && m.address == address) else { return Ok(()) };
        // As the metadata leader has it: a follower may not have applied the removal yet.
        let removed = || async {
            let metadata = client.metadata_from_leader(None).await.ok();
            metadata.and_then(|m| m.broker(id).map(|b| b.state == "removed")).unwrap_or(false)
        };
        let reached = member.match_index.is_some_and(|m| m > 0);
        let what = if member.voter {
            "a voter of the cluster's metadata group"
        } else if reached && !removed().await {
            "a learner of the cluster's metadata group that has received its entries (it may vote in partition \
             groups)"
        } else {
            return Ok(());
        };
        return Err(crate::client::ClientError::Invalid(format!(
            "node {id} is {what}, and this data directory is empty: a node that lost its data must not come back \
             under its old id (it would forget its votes and the records it acknowledged). Decommission node {id} \
             (`keel node decommission {id}`), then join with a new id, or with this one once it is removed"
        )));
    }
    Ok(())
}

/// Tells every peer what this node knows of the groups it leads: once a second, and soon
/// after its leadership of a group changed.
async fn tell_leaders(peers: Peers, leaders: Arc<LeaderTable>, me: NodeId) {
    let mut ticker = tokio::time::interval(LEADERS_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = leaders.own_changed() => {
                // Changes come in bursts (a node's groups elect together): say them at once.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let frames = node_codec::encode_leaders(&leaders.led_by(me));
        for peer in peers.ids() {
            for frame in &frames {
                let _ = peers.send(peer, METADATA_GROUP, Lane::Control, vec![frame.clone()]);
            }
        }
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
                    let reason = crate::net::endpoint::handshake_failure_reason(&e);
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

/// Serves Kafka clients on `k.listen` over this node's broker service: plain TCP, or TLS
/// with the node's certificate (Kafka clients verify it against the cluster CA and need no
/// certificate of their own, as with Kafka's default `ssl.client.auth=none`).
async fn start_kafka(
    k: &super::config::KafkaListenerConfig,
    config: &NodeConfig,
    broker: Arc<Broker>,
    groups: Arc<crate::broker::groups::Coordinators>,
) -> Result<crate::kafka::KafkaListener, StartError> {
    let tls = if k.tls {
        let node = NodeTls::load(&config.tls_dir, config.id, false)
            .map_err(|source| StartError::Tls { dir: config.tls_dir.clone(), source })?;
        let mut server = (*node.server).clone();
        server.alpn_protocols.clear();
        Some(Arc::new(server))
    } else {
        None
    };
    let listener = crate::kafka::serve(
        crate::kafka::KafkaConfig::new(k.listen),
        crate::broker::kafka::KafkaService::new(broker, groups),
        tls,
    )
    .await?;
    info!(addr = %listener.local_addr(), advertised = %k.advertised, tls = k.tls, "serving Kafka clients");
    Ok(listener)
}
