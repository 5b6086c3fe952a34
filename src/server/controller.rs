//! The node's controller: it turns what the metadata says into what the node runs. Each
//! time the metadata changes (and every half second), it
//! - on a new cluster's first metadata leader, proposes the initial state: the initial
//!   members as brokers, the cluster settings, and the topic `default`;
//! - keeps a link to every broker the registry names (links belong to the node);
//! - starts a replica of every group the metadata places on this node, and deletes the
//!   replicas it no longer does (a deleted topic, a moved partition) — only for groups the
//!   applied metadata knows (`MetadataState::local_plan`), and never one its group still counts as a voter;
//! - hands each data group its topic's settings (retention) when they change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::config::NodeConfig;
use super::group::Event;
use super::node::{GroupSpec, NodeShared};
use crate::broker::{Broker, BrokerError, METADATA_GROUP};
use crate::ids::{GroupId, NodeId as Node};
use crate::metadata::{
    CONSUMER_OFFSETS, CleanupPolicy, ClusterSettings, Command, MetadataState, TopicConfig, TopicDefaults,
};
use crate::raft::{Membership, NodeId};
use crate::replica::retention::Retention;

/// How often the controller looks again even when the metadata did not change.
const RECONCILE_PERIOD: Duration = Duration::from_millis(500);
/// The topic every cluster has from its first start.
pub const DEFAULT_TOPIC: &str = "default";
/// Partitions of `__consumer_offsets` (Kafka has 50; keel hosts a Raft group for each).
/// Fixed once created: a group's coordinator is found by hashing into them.
pub const OFFSETS_PARTITIONS: u32 = 16;

/// What a new cluster's first metadata leader proposes.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The initial members and the address each serves peers and clients on.
    pub members: BTreeMap<NodeId, SocketAddr>,
    pub settings: ClusterSettings,
    /// Partitions of the topic `default`.
    pub default_partitions: u32,
}

impl Bootstrap {
    /// The settings a node's configuration gives a new cluster.
    pub fn settings(config: &NodeConfig) -> ClusterSettings {
        let retention = &config.retention;
        let age = retention.age.map_or(-1, |a| i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
        let bytes = retention.bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let topic_defaults = TopicDefaults { retention_bytes: bytes, retention_ms: age, ..TopicDefaults::default() };
        ClusterSettings {
            auto_create_topics: config.auto_create_topics,
            topic_defaults,
            producer_id_expiration_ms: config.producers.producer_id_expiration_ms(),
            producers_max: u32::try_from(config.producers.producers_max())
                .expect("producers_max <= PRODUCERS_MAX_LIMIT"),
            ..ClusterSettings::default()
        }
    }
}

pub struct Controller {
    pub node: Arc<NodeShared>,
    pub broker: Arc<Broker>,
    pub bootstrap: Bootstrap,
    /// The retention each hosted data group was last given.
    retention: BTreeMap<u64, Retention>,
    /// When this node last asked to register its addresses (it retries now and then).
    registered_at: Option<std::time::Instant>,
}

/// How often a node asks again to register its addresses while the metadata does not
/// show them yet.
const REGISTER_RETRY: Duration = Duration::from_secs(2);

impl Controller {
    pub fn new(node: Arc<NodeShared>, broker: Arc<Broker>, bootstrap: Bootstrap) -> Controller {
        Controller { node, broker, bootstrap, retention: BTreeMap::new(), registered_at: None }
    }

    pub async fn run(mut self) {
        let mut metadata = self.broker.metadata.clone();
        let mut ticker = tokio::time::interval(RECONCILE_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = metadata.changed() => if changed.is_err() { return },
                _ = ticker.tick() => {}
            }
            let state = metadata.borrow_and_update().clone();
            self.reconcile(&state).await;
        }
    }

    async fn reconcile(&mut self, state: &MetadataState) {
        self.bootstrap_if_new(state).await;
        self.register_self(state).await;
        // Off the loop: it may wait for a metadata leader.
        let broker = self.broker.clone();
        tokio::spawn(async move { broker.refill_producer_ids().await });
        self.link_brokers(state);
        self.host_replicas(state).await;
        self.configure_groups(state).await;
    }

    fn leads_metadata(&self) -> bool {
        self.broker.metadata_group().is_some_and(|g| g.leader().me)
    }

    /// A new cluster: its first metadata leader registers the initial members, sets the
    /// cluster settings, then creates `default`. Every step is refused harmlessly if another
    /// leader did it first. Until `default` exists the cluster answers as starting
    /// (`server/clients.rs`).
    async fn bootstrap_if_new(&self, state: &MetadataState) {
        if !self.leads_metadata() {
            return;
        }
        if state.brokers().next().is_none() {
            let commands: Vec<Command> = self
                .bootstrap
                .members
                .iter()
                .map(|(id, addr)| Command::RegisterBroker {
                    node: Node(*id),
                    address: addr.to_string(),
                    kafka_address: None,
                    voter: true,
                })
                .collect();
            for command in commands {
                if let Err(e) = self.broker.command(command).await {
                    warn!(error = %e, "bootstrapping the metadata");
                    return;
                }
            }
            info!(members = self.bootstrap.members.len(), "a new cluster: brokers registered");
        }
        // The settings go in before `default`, whichever leader finishes the set-up: a first
        // leader lost after registering the brokers must not leave the built-in defaults
        // (the producer limits among them are fixed once a partition exists).
        let state = self.broker.state();
        if state.topic(DEFAULT_TOPIC).is_none() && *state.settings() != self.bootstrap.settings {
            let command = Command::SetClusterSettings(self.bootstrap.settings.clone());
            if let Err(e) = self.broker.command(command).await {
                warn!(error = %e, "setting the new cluster's settings");
                return;
            }
        }
        // Applied by now (a command is answered once applied): the brokers are there.
        let state = self.broker.state();
        if state.topic(DEFAULT_TOPIC).is_none() && state.active_brokers().len() == self.bootstrap.members.len() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let partitions = Some(self.bootstrap.default_partitions);
            match state.create_topic(DEFAULT_TOPIC, partitions, None, TopicConfig::default(), false, now) {
                Ok(command) => match self.broker.command(command).await {
                    Ok(_) => info!(topic = DEFAULT_TOPIC, "created"),
                    Err(BrokerError::Refused(why)) => info!(%why, "topic default not created"),
                    Err(e) => warn!(error = %e, "creating the topic default"),
                },
                Err(e) => warn!(error = %e, "placing the topic default"),
            }
        }
        self.create_offsets_topic().await;
    }

    /// Creates `__consumer_offsets` once `default` exists (so clusters made before consumer
    /// groups get it too): keel partitions, the default replication factor (at most 3, at
    /// most the brokers), never trimmed by the cluster's retention, compacted by policy.
    async fn create_offsets_topic(&self) {
        let state = self.broker.state();
        if state.topic(DEFAULT_TOPIC).is_none() || state.topic(CONSUMER_OFFSETS).is_some() {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let config = TopicConfig {
            cleanup_policy: Some(CleanupPolicy::Compact),
            retention_ms: Some(-1),
            retention_bytes: Some(-1),
            ..TopicConfig::default()
        };
        let partitions = Some(OFFSETS_PARTITIONS);
        match state.create_topic(CONSUMER_OFFSETS, partitions, None, config, true, now) {
            Ok(command) => match self.broker.command(command).await {
                Ok(_) => info!(topic = CONSUMER_OFFSETS, "created"),
                Err(BrokerError::Refused(why)) => info!(%why, "topic __consumer_offsets not created"),
                Err(e) => warn!(error = %e, "creating the topic __consumer_offsets"),
            },
            Err(e) => warn!(error = %e, "placing the topic __consumer_offsets"),
        }
    }

    /// Once the cluster is set up, makes the registry show this node's addresses as they
    /// are (the first leader registered the initial members without their Kafka listeners).
    async fn register_self(&mut self, state: &MetadataState) {
        let Some(me) = state.broker(Node(self.node.id())) else { return };
        if me.address == self.broker.own_address && me.kafka_address == self.broker.kafka_address {
            return;
        }
        if self.registered_at.is_some_and(|at| at.elapsed() < REGISTER_RETRY) {
            return;
        }
        self.registered_at = Some(std::time::Instant::now());
        match self.broker.register_self().await {
            Ok(()) => info!(kafka = ?self.broker.kafka_address, "registered this node's addresses"),
            Err(e) => warn!(error = %e, "cannot register this node's addresses yet; will retry"),
        }
    }

    /// Links to every registered broker, re-addressed if its address changed.
    fn link_brokers(&self, state: &MetadataState) {
        for b in state.brokers() {
            if b.id.get() == self.node.id() {
                continue;
            }
            match b.address.parse::<SocketAddr>() {
                Ok(addr) if self.node.peers.address(b.id.get()) != Some(addr) => self.node.peers.add(b.id.get(), addr),
                Ok(_) => {}
                Err(_) => warn!(node = b.id.get(), address = %b.address, "a broker's address is not IP:PORT"),
            }
        }
    }

    /// Starts the replicas the metadata places here (a replica already on disk is opened)
    /// and deletes those it no longer does, running or only on disk.
    async fn host_replicas(&mut self, state: &MetadataState) {
        let running: BTreeSet<u64> = self.node.registry.ids().into_iter().collect();
        let mut local = running.clone();
        match self.node.layout.groups() {
            Ok(on_disk) => local.extend(on_disk),
            Err(e) => warn!(error = %e, "cannot list the groups on disk"),
        }
        local.remove(&METADATA_GROUP);
        let me = Node(self.node.id());
        let plan = state.local_plan(me, local.iter().map(|g| GroupId(*g)));
        let start = state.groups_hosted_by(me).into_iter().filter(|g| !running.contains(&g.get()));
        for group in start {
            let Some((topic, partition, p)) = state.group(group) else { continue };
            let me = Node(self.node.id());
            // A replica that joins by a move starts outside the configuration: the group's
            // leader adds it (issue 17); one placed from the start is a voter at once.
            let voters =
                if p.replicas.contains(&me) { p.replicas.iter().map(|n| n.get()).collect() } else { [].into() };
            // Every replica of the group takes the producer limits from the applied metadata
            // that names the group: those settings precede its topic in the metadata log and
            // cannot change while a partition exists (`metadata/apply.rs`), so every replica,
            // whenever it starts, has the same ones.
            let producers = state.settings().producer_config().expect("applied settings passed check");
            let spec = GroupSpec {
                group: group.get(),
                voters: Membership { voters, ..Membership::default() },
                retention: retention_of(state, &topic.name),
                node_gauges: false,
                metadata: None,
                consumer_offsets: topic.name == CONSUMER_OFFSETS,
                producers,
            };
            match self.node.start_group(spec) {
                Ok(()) => info!(group = group.get(), topic = %topic.name, partition, "hosting a replica"),
                Err(e) => warn!(group = group.get(), error = %e, "cannot start a replica"),
            }
        }
        for group in plan.delete {
            // A replica moved off this node is deleted only once its own log shows a
            // configuration whose voters leave this node out (a removed follower may hold the
            // joint one, where it is only an outgoing voter). The metadata drops a node once a
            // configuration without it committed (`broker/moves.rs`), but if that and the
            // group ever disagreed, deleting a voter the group still counts could lose
            // acknowledged records; keeping a replica too long costs only disk.
            // A leader removed by the move hands its leadership over first.
            if state.group(group).is_some()
                && let Some(handle) = self.node.registry.get(group.get())
            {
                let voter = handle.status().await.is_some_and(|s| s.membership.voters.contains(&self.node.id()));
                if voter || handle.leader().me {
                    warn!(group = group.get(), "not deleting a replica that is a voter or the leader of its group");
                    continue;
                }
            }
            match self.node.remove_group(group.get()).await {
                Ok(()) => info!(group = group.get(), "deleted a replica the metadata no longer places here"),
                Err(e) => warn!(group = group.get(), error = %e, "cannot delete a replica"),
            }
            self.retention.remove(&group.get());
            self.broker.leaders.forget(group.get());
        }
    }

    /// Gives each hosted data group its topic's retention when it changes.
    async fn configure_groups(&mut self, state: &MetadataState) {
        for group in self.node.registry.ids() {
            if group == METADATA_GROUP {
                continue;
            }
            let Some((topic, ..)) = state.group(GroupId(group)) else { continue };
            let retention = retention_of(state, &topic.name);
            if self.retention.get(&group) == Some(&retention) {
                continue;
            }
            if let Some(handle) = self.node.registry.get(group)
                && handle.events.send(Event::Configure { retention: retention.clone() }).await.is_ok()
            {
                self.retention.insert(group, retention);
            }
        }
    }
}

/// A topic's retention as its effective config says.
fn retention_of(state: &MetadataState, topic: &str) -> Retention {
    let Some(config) = state.effective_config(topic) else { return Retention::default() };
    Retention { bytes: config.retention_bytes, age: config.retention_ms.map(Duration::from_millis) }
}
