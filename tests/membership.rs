//! Membership change through the library API (Raft §6), on in-process nodes over loopback
//! QUIC: a fourth node joins as a learner, catches up byte for byte, is promoted to voter
//! through a joint configuration; a voter is removed; then leadership moves to a node that
//! learned the new member's address only from the configuration entry in its log.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::batch::Record;
use keel::raft::{Membership, MembershipChange};
use keel::server::node::DEFAULT_GROUP;
use keel::server::registry::GroupHandle;
use keel::server::{Limits, NodeConfig, NodeHandle, Retention};
use segments::Entry;

const DEADLINE: Duration = Duration::from_secs(20);

struct Nodes {
    root: tempfile::TempDir,
    addrs: BTreeMap<u64, SocketAddr>,
    handles: BTreeMap<u64, NodeHandle>,
}

impl Nodes {
    fn new(count: u64) -> Nodes {
        let root = tempfile::Builder::new().prefix("keel-membership-").tempdir_in(common::test_tmp()).expect("tmp");
        keel::net::certs::generate(&root.path().join("tls"), &(1..=count).collect::<Vec<_>>(), &[], false)
            .expect("certificates");
        let ports = common::free_ports(count as usize);
        let addrs = (1..=count).map(|id| (id, SocketAddr::from(([127, 0, 0, 1], ports[id as usize - 1])))).collect();
        Nodes { root, addrs, handles: BTreeMap::new() }
    }

    /// Starts node `id` knowing the nodes `peers` (itself included).
    async fn start(&mut self, id: u64, peers: &[u64]) {
        let config = NodeConfig {
            id,
            data_dir: self.root.path().join(format!("node-{id}")),
            listen: self.addrs[&id],
            peers: peers.iter().map(|p| (*p, self.addrs[p])).collect(),
            entry: Default::default(),
            tls_dir: self.root.path().join("tls"),
            metrics: None,
            require_client_cert: true,
            limits: Limits::default(),
            retention: Retention::default(),
            tick: Duration::from_millis(10),
            segment_bytes: 16 << 20,
            metadata_segment_bytes: keel::server::config::METADATA_SEGMENT_BYTES,
            auto_create_topics: false,
            default_partitions: 1,
            producers: Default::default(),
            kafka: None,
            leader_balance_every: None,
        };
        self.handles.insert(id, NodeHandle::start(config).await.expect("node starts"));
    }

    fn node(&self, id: u64) -> &NodeHandle {
        &self.handles[&id]
    }

    /// Node `id`'s replica of the group under test: the topic `default`'s partition.
    fn group(&self, id: u64) -> Option<Arc<GroupHandle>> {
        self.node(id).group(DEFAULT_GROUP)
    }

    async fn wait_leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(id) = among.iter().copied().find(|id| self.group(*id).is_some_and(|g| g.leader().me)) {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `id` has committed at least `index`.
    async fn wait_commit(&self, id: u64, index: u64, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        let committed = |id| self.group(id).map_or(0, |g| g.committed().index);
        while committed(id) < index {
            let now = committed(id);
            assert!(Instant::now() < deadline, "{what}: node {id} committed {now}, not {index}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Proposes `changes` through `leader`, retrying while the previous change is still in flight.
    async fn change(&self, leader: u64, changes: Vec<MembershipChange>, addresses: Vec<(u64, SocketAddr)>) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .group(leader)
                .expect("the leader hosts the group")
                .change_membership(changes.clone(), addresses.clone())
                .await
            {
                Ok(index) => return index,
                Err(e) if e.starts_with("busy") => {
                    assert!(Instant::now() < deadline, "{changes:?} refused for {DEADLINE:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{changes:?} refused: {e}"),
            }
        }
    }

    async fn produce(&self, leader: u64, tag: u64) -> u64 {
        let records: Vec<Record> = (0..10).map(|i| Record::new(format!("{tag}-{i}-{}", "m".repeat(200)))).collect();
        let (offset, _) = self.group(leader).expect("hosted").produce(&records).await.expect("produce");
        offset
    }

    /// The committed entries of node `id`, as bytes.
    fn committed_entries(&self, id: u64) -> Vec<Bytes> {
        let group = self.group(id).expect("hosted");
        let commit = group.committed().index;
        let log = group.log.read();
        let mut out: Vec<Entry> = Vec::new();
        let mut next = log.first_index();
        while next <= commit {
            log.read(next, 1 << 20, &mut out).expect("read");
            next = out.last().expect("an entry").index() + 1;
        }
        out.into_iter().filter(|e| e.index() <= commit).map(|e| Bytes::copy_from_slice(e.as_bytes())).collect()
    }

    async fn shutdown_all(mut self) {
        for (_, node) in std::mem::take(&mut self.handles) {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_is_promoted_and_a_voter_leaves_raft_6() {
    let mut nodes = Nodes::new(4);
    for id in 1..=3 {
        nodes.start(id, &[1, 2, 3]).await;
    }
    let leader = nodes.wait_leader(&[1, 2, 3]).await;
    for tag in 0..30 {
        nodes.produce(leader, tag).await;
    }

    // Node 4 joins: it knows the cluster, but its log is empty, so it wins no vote; the
    // leader adds it as a learner (the address travels in the configuration entry).
    nodes.start(4, &[1, 2, 3, 4]).await;
    // It learns no metadata (it is no member of the metadata group): the test gives it an
    // empty replica of the group, as a move of the partition would (issue 17).
    nodes.node(4).create_group(DEFAULT_GROUP, Membership::default()).expect("an empty replica");
    let learner = nodes.change(leader, vec![MembershipChange::AddLearner(4)], vec![(4, nodes.addrs[&4])]).await;
    nodes.wait_commit(4, learner, "the learner catches up").await;
    let view = nodes.group(leader).expect("hosted").status().await.expect("status");
    let member = view.members.iter().find(|m| m.id == 4).expect("node 4 is a member");
    assert!(!member.voter, "node 4 is a learner first");

    // Promotion goes through C_old,new; the leader then appends C_new by itself.
    nodes.change(leader, vec![MembershipChange::PromoteLearner(4)], vec![]).await;
    for tag in 30..40 {
        nodes.produce(leader, tag).await;
    }
    let commit = nodes.group(leader).expect("hosted").committed().index;
    nodes.wait_commit(4, commit, "the new voter follows").await;
    let view = nodes.group(leader).expect("hosted").status().await.expect("status");
    assert_eq!(view.members.iter().filter(|m| m.voter).count(), 4, "{:?}", view.members);
    let (on_leader, on_new) = (nodes.committed_entries(leader), nodes.committed_entries(4));
    assert!(on_new.len() as u64 >= commit, "node 4 holds {} entries, not {commit}", on_new.len());
    for (i, (a, b)) in on_leader.iter().zip(&on_new).enumerate() {
        assert_eq!(a, b, "entry {} differs between node {leader} and node 4", i + 1);
    }

    // Remove a voter that is not the leader; the other three go on committing.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (removed, successor) = (others[0], others[1]);
    let removal = nodes.change(leader, vec![MembershipChange::RemoveVoter(removed)], vec![]).await;
    nodes.wait_commit(leader, removal, "the removal commits").await;
    nodes.handles.remove(&removed).expect("running").shutdown().await.expect("clean shutdown");
    for tag in 40..50 {
        nodes.produce(leader, tag).await;
    }

    // Leadership moves to a node that never saw node 4's address in a request: it learned it
    // from its log, so it reaches node 4, and node 4 keeps receiving what it commits.
    let deadline = Instant::now() + DEADLINE;
    while nodes.wait_leader(&[leader, successor, 4]).await != successor {
        assert!(Instant::now() < deadline, "leadership did not move to node {successor}");
        let _ = nodes.group(leader).expect("hosted").transfer_leadership(successor).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for tag in 50..60 {
        nodes.produce(successor, tag).await;
    }
    let commit = nodes.group(successor).expect("hosted").committed().index;
    nodes.wait_commit(4, commit, "node 4 under the new leader").await;
    let view = nodes.group(successor).expect("hosted").status().await.expect("status");
    assert!(view.members.iter().any(|m| m.id == 4), "node 4 is a member: {:?}", view.members);
    let four = nodes.node(successor).address_of(4);
    assert_eq!(four, Some(nodes.addrs[&4]), "the new leader knows where node 4 listens");
    assert!(view.members.iter().all(|m| m.id != removed), "node {removed} is gone: {:?}", view.members);
    nodes.shutdown_all().await;
}
