//! Connections to the nodes of one cluster, reused across requests; one request/response
//! exchange on its own QUIC stream; and the search for a partition's leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Endpoint;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::CertificateError;
use super::notice::Notices;
use super::{ClientConfig, ClientError};
use crate::net::Connection;
use crate::net::client_codec::{ClusterMetadata, ClusterView, DiskView, Request, Response};
use crate::net::endpoint::{NetError, client_endpoint, connect, read_frame, tls_refusal, write_frame};
use crate::net::tls::{ANY_NODE_NAME, client_config_as};

/// How long a request to the leader may go unanswered before the client asks the other
/// nodes whether the leader moved (a killed or paused leader is otherwise noticed only at
/// the connection's idle timeout, 4 s).
pub(super) const LEADER_CHECK_AFTER: Duration = Duration::from_millis(1000);
/// How long each of those questions may take.
const LEADER_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a handshake with the node believed to lead may take before the client looks
/// for the leader among all nodes instead. A handshake takes milliseconds on a LAN; a
/// leader that was just killed, still named by nodes that have not noticed, never
/// completes one. (A live node that is slow to shake hands is found by the search, whose
/// questions wait up to `SEARCH_ASK_TIMEOUT`.)
const LEADER_HANDSHAKE_MAX: Duration = Duration::from_millis(300);
/// While a search has not found what it looks for, each node is asked again this often.
const SEARCH_PERIOD: Duration = Duration::from_millis(50);
/// How long one question of a search may take, handshake included.
const SEARCH_ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Nodes a search asks at once, and member addresses remembered: a cluster's membership
/// is far smaller.
const NODES_MAX: usize = 64;

/// Largest response accepted (a fetch is bounded well below this by the node).
pub(super) const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Largest entry accepted in a fetch response.
pub(super) const ENTRY_BYTES_MAX: u32 = 64 << 20;

/// How a request failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The request never reached a node: it certainly had no effect.
    NotSent(String),
    /// The request may have reached the node; its effect is unknown.
    Lost(String),
    /// TLS refused the handshake: nothing reached the node, and trying again cannot help.
    Certificate(CertificateError),
}

impl Failure {
    pub(super) fn message(&self) -> String {
        match self {
            Failure::NotSent(m) | Failure::Lost(m) => m.clone(),
            Failure::Certificate(e) => e.to_string(),
        }
    }

    /// The error of a request that had no effect on the log (metadata, fetch).
    pub(super) fn into_read_error(self) -> ClientError {
        match self {
            Failure::Certificate(e) => ClientError::Certificate(e),
            other => ClientError::Unavailable(other.message()),
        }
    }
}

/// A topic's partition: what a leader leads.
pub(super) type Partition = (String, u32);

#[derive(Clone)]
pub(super) struct Nodes {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    bootstrap: Vec<String>,
    tls_dir: PathBuf,
    connect_timeout: Duration,
    /// Every call's deadline (`ClientConfig::timeout`), for the errors that say so.
    timeout: Duration,
    conns: Mutex<HashMap<SocketAddr, Connection>>,
    /// Each partition's leader, as far as this client knows.
    leaders: Mutex<HashMap<Partition, SocketAddr>>,
    /// The brokers' addresses learned from the nodes' metadata (a bootstrap list may name
    /// only some), by node id.
    members: Mutex<BTreeMap<u64, SocketAddr>>,
    /// One leader search at a time: concurrent callers wait for its result.
    search: tokio::sync::Mutex<()>,
    notices: Notices,
}

impl Nodes {
    pub(super) fn new(config: &ClientConfig) -> Result<Nodes, ClientError> {
        if config.bootstrap.is_empty() {
            return Err(ClientError::Config("no bootstrap address given (--bootstrap HOST:PORT)".into()));
        }
        let tls = client_config_as(&config.tls_dir, config.as_node).map_err(|e| ClientError::Config(e.to_string()))?;
        let endpoint = client_endpoint(tls).map_err(|e| ClientError::Config(e.to_string()))?;
        let inner = Inner {
            endpoint,
            bootstrap: config.bootstrap.clone(),
            tls_dir: config.tls_dir.clone(),
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            conns: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            members: Mutex::new(BTreeMap::new()),
            search: tokio::sync::Mutex::new(()),
            notices: Notices::new(),
        };
        Ok(Nodes { inner: Arc::new(inner) })
    }

    pub(super) fn notices(&self) -> &Notices {
        &self.inner.notices
    }

    /// Every bootstrap address that resolves.
    pub(super) fn bootstrap(&self) -> Vec<SocketAddr> {
        self.inner.bootstrap.iter().filter_map(|a| resolve(a).ok()).collect()
    }

    /// The bootstrap addresses and the members' addresses learned since.
    pub(super) fn known(&self) -> Vec<SocketAddr> {
        let mut all: BTreeSet<SocketAddr> = self.bootstrap().into_iter().collect();
        all.extend(self.inner.members.lock().expect("members lock").values().copied());
        all.into_iter().collect()
    }

    /// Remembers the brokers' addresses that `metadata` lists.
    fn learn(&self, metadata: &ClusterMetadata) {
        let mut members = self.inner.members.lock().expect("members lock");
        for b in &metadata.brokers {
            if let Ok(addr) = b.address.parse::<SocketAddr>()
                && (members.len() < NODES_MAX || members.contains_key(&b.id))
            {
                members.insert(b.id, addr);
            }
        }
    }

    /// Where node `id` serves clients, as learned from metadata.
    fn address_of(&self, id: u64) -> Option<SocketAddr> {
        self.inner.members.lock().expect("members lock").get(&id).copied()
    }

    pub(super) fn leader(&self, partition: &Partition) -> Option<SocketAddr> {
        self.inner.leaders.lock().expect("leaders lock").get(partition).copied()
    }

    pub(super) fn set_leader(&self, partition: &Partition, addr: Option<SocketAddr>) {
        let mut leaders = self.inner.leaders.lock().expect("leaders lock");
        match addr {
            Some(addr) => leaders.insert(partition.clone(), addr),
            None => leaders.remove(partition),
        };
    }

    /// Forgets the leader if it is still `addr` (a failure at `addr` says nothing against a
    /// leader learned since).
    pub(super) fn forget_leader(&self, partition: &Partition, addr: SocketAddr) {
        let mut leaders = self.inner.leaders.lock().expect("leaders lock");
        if leaders.get(partition) == Some(&addr) {
            leaders.remove(partition);
        }
    }

    /// Forgets `addr` as the leader of every partition (its connection broke).
    fn forget_node(&self, addr: SocketAddr) {
        self.inner.leaders.lock().expect("leaders lock").retain(|_, a| *a != addr);
    }

    /// How a request to `addr` failed when its connection broke with `error`: a TLS
    /// refusal is told apart (nothing reached the node); anything else is `otherwise`.
    fn broken(&self, error: &quinn::ConnectionError, otherwise: impl FnOnce() -> Failure) -> Failure {
        match tls_refusal(error) {
            Some(refusal) => Failure::Certificate(CertificateError::new(&self.inner.tls_dir, refusal)),
            None => otherwise(),
        }
    }

    /// A connection to `addr`, reused if one is open; a new handshake may take `bound`.
    async fn conn(&self, addr: SocketAddr, bound: Duration) -> Result<Connection, Failure> {
        let existing = self.inner.conns.lock().expect("conns lock").get(&addr).cloned();
        if let Some(conn) = existing
            && conn.close_reason().is_none()
        {
            return Ok(conn);
        }
        let conn = match tokio::time::timeout(bound, connect(&self.inner.endpoint, addr, ANY_NODE_NAME)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(NetError::Connection { source, .. })) => {
                return Err(self.broken(&source, || Failure::NotSent(format!("cannot connect to {addr}: {source}"))));
            }
            Ok(Err(e)) => return Err(Failure::NotSent(format!("cannot connect to {addr}: {e}"))),
            Err(_) => return Err(Failure::NotSent(format!("{addr} did not complete a handshake within {bound:?}"))),
        };
        self.inner.conns.lock().expect("conns lock").insert(addr, conn.clone());
        Ok(conn)
    }

    /// Opens a stream for a sequence of requests (a producer's session) to `addr`, the
    /// leader as far as this client knows (see `connect_to_leader`).
    pub(super) async fn open_stream(
        &self,
        partition: &Partition,
        addr: SocketAddr,
    ) -> Result<(Connection, quinn::SendStream, quinn::RecvStream), Failure> {
        let conn = self.connect_to_leader(partition, addr).await?;
        match conn.open_bi().await {
            Ok((send, recv)) => Ok((conn, send, recv)),
            Err(e) => {
                self.inner.conns.lock().expect("conns lock").remove(&addr);
                Err(self.broken(&e, || Failure::NotSent(format!("connection to {addr} failed: {e}"))))
            }
        }
    }

    /// Why the session on `conn` to `addr` broke with `why`: a TLS refusal if that is what
    /// closed the connection.
    pub(super) fn session_broke(&self, conn: &Connection, why: String) -> Failure {
        match conn.close_reason() {
            Some(reason) => self.broken(&reason, || Failure::Lost(why)),
            None => Failure::Lost(why),
        }
    }

    /// Sends one request to `addr` and waits for its response, all within `timeout`
    /// (the handshake, if one is needed, within `connect_timeout` of it).
    pub(super) async fn request(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let deadline = Instant::now() + timeout;
        let result = match self.conn(addr, self.inner.connect_timeout.min(timeout)).await {
            Ok(conn) => self.exchange(&conn, addr, request, deadline.saturating_duration_since(Instant::now())).await,
            Err(failure) => Err(failure),
        };
        match &result {
            Ok(_) => self.inner.notices.answered(addr),
            Err(Failure::Certificate(_)) => {}
            Err(_) => self.inner.notices.unanswered(|| self.known()),
        }
        result
    }

    /// One request and its response on a new stream of `conn`, a connection to `addr`.
    async fn exchange(
        &self,
        conn: &Connection,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                self.inner.conns.lock().expect("conns lock").remove(&addr);
                return Err(self.broken(&e, || Failure::NotSent(format!("connection to {addr} failed: {e}"))));
            }
        };
        let exchange = async {
            write_frame(&mut send, &mut request.encode()).await.map_err(|e| Failure::Lost(e.to_string()))?;
            let _ = send.finish();
            let frame = read_frame(&mut recv, RESPONSE_BYTES_MAX)
                .await
                .map_err(|e| Failure::Lost(format!("{addr}: {e}")))?
                .ok_or_else(|| Failure::Lost(format!("{addr} closed the stream without answering")))?;
            Response::decode(frame, ENTRY_BYTES_MAX)
                .map_err(|e| Failure::Lost(format!("bad response from {addr}: {e}")))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Lost(format!("{addr} did not answer within {timeout:?}"))),
        };
        // Say why the node closed the connection: a refused certificate shows up only here
        // (the client's side of the handshake completes before the node checks it).
        result.map_err(|failure| match (failure, conn.close_reason()) {
            (Failure::Lost(_), Some(reason)) => {
                self.broken(&reason, || Failure::Lost(format!("{addr} closed the connection: {reason}")))
            }
            (failure, _) => failure,
        })
    }

    /// The metadata of the node at `addr` (the topics asked for); the brokers' addresses
    /// are remembered.
    pub(super) async fn metadata_of(
        &self,
        addr: SocketAddr,
        topics: Option<Vec<String>>,
        timeout: Duration,
    ) -> Result<ClusterMetadata, Failure> {
        match self.request(addr, &Request::Metadata { topics }, timeout).await? {
            Response::Metadata(metadata) => {
                self.learn(&metadata);
                Ok(metadata)
            }
            Response::Error(e) => Err(Failure::NotSent(format!("{addr}: {e}"))),
            other => Err(Failure::NotSent(format!("unexpected answer from {addr}: {other:?}"))),
        }
    }

    /// The status view of the node at `addr`: its view of the metadata group (`Status`),
    /// or of one partition's group (`PartitionStatus`).
    pub(super) async fn status_at(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<ClusterView, ClientError> {
        let addr = resolve(addr)?;
        match self.request(addr, request, timeout).await {
            Ok(Response::Status(view)) => Ok(view),
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(other) => Err(ClientError::Unavailable(format!("unexpected answer from {addr}: {other:?}"))),
            Err(f) => Err(f.into_read_error()),
        }
    }

    pub(super) async fn disk_at(&self, addr: &str, timeout: Duration) -> Result<DiskView, ClientError> {
        let addr = resolve(addr)?;
        match self.request(addr, &Request::Disk, timeout).await {
            Ok(Response::Disk(disk)) => Ok(disk),
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(other) => Err(ClientError::Unavailable(format!("unexpected answer from {addr}: {other:?}"))),
            Err(f) => Err(f.into_read_error()),
        }
    }

    /// The metadata of the first node to answer (every known node is asked at once, again
    /// every `SEARCH_PERIOD`), until `deadline`.
    pub(super) async fn any_metadata(
        &self,
        topics: Option<Vec<String>>,
        deadline: Instant,
    ) -> Result<ClusterMetadata, ClientError> {
        let (tx, mut rx) = mpsc::channel(NODES_MAX);
        let mut asks = tokio::task::JoinSet::new();
        for addr in self.known().into_iter().take(NODES_MAX) {
            asks.spawn(self.clone().keep_asking(addr, topics.clone(), tx.clone()));
        }
        if asks.is_empty() {
            return Err(ClientError::Config("no bootstrap address resolves".into()));
        }
        let mut last = "no node answered".to_string();
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((_, Ok(metadata)))) => return Ok(metadata),
                Ok(Some((_, Err(Failure::Certificate(e))))) => return Err(e.into()),
                Ok(Some((_, Err(failure)))) => last = failure.message(),
                _ => return Err(ClientError::TimedOut { after: self.inner.timeout, last }),
            }
        }
    }

    /// Looks for `partition`'s leader: asks every known node for the topic's metadata at
    /// once, each again every `SEARCH_PERIOD`, until a node answers that it leads the
    /// partition in the highest term any answer gave (a deposed leader that has not noticed
    /// yet answers with an older term), or `deadline`. A leader that a node names is asked
    /// too. An unknown topic or partition ends the search at once.
    pub(super) async fn search(&self, partition: &Partition, deadline: Instant) -> Result<SocketAddr, ClientError> {
        let (topic, index) = partition;
        let (tx, mut rx) = mpsc::channel(NODES_MAX);
        let mut asks = tokio::task::JoinSet::new();
        let mut asked = BTreeSet::new();
        let topics = Some(vec![topic.clone()]);
        for addr in self.known().into_iter().take(NODES_MAX) {
            asked.insert(addr);
            asks.spawn(self.clone().keep_asking(addr, topics.clone(), tx.clone()));
        }
        if asked.is_empty() {
            return Err(ClientError::Config("no bootstrap address resolves".into()));
        }
        let mut term = 0;
        let mut last = "no node answered".to_string();
        let mut unknown = 0;
        loop {
            let Ok(Some((addr, answer))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                return Err(ClientError::TimedOut { after: self.inner.timeout, last });
            };
            let metadata = match answer {
                Ok(metadata) => metadata,
                Err(Failure::Certificate(e)) => return Err(e.into()),
                Err(failure) => {
                    last = failure.message();
                    continue;
                }
            };
            let Some(t) = metadata.topic(topic) else {
                // Every node that answered knows no such topic: it does not exist (a node
                // just restarted may not have learned the metadata yet, so ask them all).
                unknown += 1;
                if unknown >= asked.len() {
                    return Err(ClientError::UnknownTopic(topic.clone()));
                }
                last = format!("{addr} knows no topic {topic:?}");
                continue;
            };
            let count = t.partitions.len() as u32;
            let Some(p) = t.partitions.iter().find(|p| p.partition == *index) else {
                return Err(ClientError::UnknownPartition { topic: topic.clone(), partition: *index, count });
            };
            term = term.max(p.leader_term);
            if p.leader == Some(metadata.node_id) && p.leader_term == term {
                self.set_leader(partition, Some(addr));
                self.inner.notices.leader_found();
                return Ok(addr);
            }
            match p.leader.and_then(|id| self.address_of(id)) {
                Some(named) => {
                    last = format!("{addr} names {named} the leader of {topic}/{index}, which has not answered yet");
                    if asked.len() < NODES_MAX && asked.insert(named) {
                        asks.spawn(self.clone().keep_asking(named, topics.clone(), tx.clone()));
                    }
                }
                None => {
                    last = format!("{addr} knows no leader of {topic}/{index}");
                    self.inner.notices.leaderless(addr);
                }
            }
        }
    }

    /// Asks `addr` for its metadata until the receiver is dropped.
    async fn keep_asking(
        self,
        addr: SocketAddr,
        topics: Option<Vec<String>>,
        answers: mpsc::Sender<(SocketAddr, Result<ClusterMetadata, Failure>)>,
    ) {
        loop {
            let answer = self.metadata_of(addr, topics.clone(), SEARCH_ASK_TIMEOUT).await;
            if answers.send((addr, answer)).await.is_err() {
                return;
            }
            tokio::time::sleep(SEARCH_PERIOD).await;
        }
    }

    /// The leader, searched for if not known, by one caller at a time (the others then
    /// take its result); gives up at `deadline`.
    pub(super) async fn find_leader(
        &self,
        partition: &Partition,
        deadline: Instant,
    ) -> Result<SocketAddr, ClientError> {
        let timed_out = || ClientError::TimedOut { after: self.inner.timeout, last: "looking for the leader".into() };
        let _one = tokio::time::timeout_at(deadline, self.inner.search.lock()).await.map_err(|_| timed_out())?;
        if let Some(leader) = self.leader(partition) {
            return Ok(leader);
        }
        self.search(partition, deadline).await
    }

    /// The leader of `partition` another node names, when it is not `target`: asked while
    /// a request to `target` goes unanswered. The other nodes are asked at once; the first
    /// answer naming a leader elsewhere wins, and the rest are dropped.
    async fn leader_elsewhere(&self, partition: &Partition, target: SocketAddr) -> Option<SocketAddr> {
        let mut asks = tokio::task::JoinSet::new();
        for addr in self.known().into_iter().filter(|a| *a != target) {
            let (nodes, topics) = (self.clone(), Some(vec![partition.0.clone()]));
            asks.spawn(async move { nodes.metadata_of(addr, topics, LEADER_CHECK_TIMEOUT).await });
        }
        while let Some(answer) = asks.join_next().await {
            let Ok(Ok(metadata)) = answer else { continue };
            let p = metadata.topic(&partition.0).and_then(|t| t.partitions.iter().find(|p| p.partition == partition.1));
            if let Some(addr) = p.and_then(|p| p.leader).and_then(|id| self.address_of(id))
                && addr != target
            {
                return Some(addr);
            }
        }
        None
    }

    /// Leaves `old` for `leader` as `partition`'s leader: the connection to `old` is closed,
    /// so that a request already sent there and not yet read is dropped rather than
    /// appended later, behind what this client sends to `leader` next.
    pub(super) fn leave(&self, partition: &Partition, old: SocketAddr, leader: SocketAddr) {
        if let Some(conn) = self.inner.conns.lock().expect("conns lock").remove(&old) {
            conn.close(0u32.into(), b"the leader moved");
        }
        self.forget_node(old);
        self.set_leader(partition, Some(leader));
    }

    /// Gives `addr` up as a leader and closes the connection to it, dropping what it still
    /// carries (see `leave`).
    pub(super) fn abandon(&self, addr: SocketAddr) {
        if let Some(conn) = self.inner.conns.lock().expect("conns lock").remove(&addr) {
            conn.close(0u32.into(), b"no answer in time");
        }
        self.forget_node(addr);
    }

    /// `request` to `target`, the leader as far as this client knows, answered within
    /// `timeout`. While it goes unanswered the other nodes are asked where the leader is;
    /// once one names another node, `target` is left and the request ends "lost" (its
    /// outcome unknown).
    pub(super) async fn request_to_leader(
        &self,
        partition: &Partition,
        target: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let conn = self.connect_to_leader(partition, target).await?;
        match self.unless_leader_moves(partition, target, self.exchange(&conn, target, request, timeout)).await {
            Ok(result) => result,
            Err(leader) => {
                self.leave(partition, target, leader);
                Err(Failure::Lost(format!("{target} did not answer; another node names {leader} the leader")))
            }
        }
    }

    /// A connection to `target`, given up (nothing was sent, and the leader is forgotten)
    /// when a new handshake takes longer than `LEADER_HANDSHAKE_MAX`.
    async fn connect_to_leader(&self, partition: &Partition, target: SocketAddr) -> Result<Connection, Failure> {
        let result = self.conn(target, LEADER_HANDSHAKE_MAX.min(self.inner.connect_timeout)).await;
        if let Err(Failure::NotSent(_)) = &result {
            self.forget_leader(partition, target);
        }
        result
    }

    /// Runs `work` against `target`; each `LEADER_CHECK_AFTER` it goes on, asks the other
    /// nodes where the leader is, and once one names another node drops `work` and returns
    /// that node's address.
    async fn unless_leader_moves<T>(
        &self,
        partition: &Partition,
        target: SocketAddr,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, SocketAddr> {
        tokio::pin!(work);
        let mut check = Instant::now() + LEADER_CHECK_AFTER;
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                _ = tokio::time::sleep_until(check) => {
                    if let Some(leader) = self.leader_check(partition, target).await {
                        return Err(leader);
                    }
                    check = Instant::now() + LEADER_CHECK_AFTER;
                }
            }
        }
    }

    /// `leader_elsewhere`, within `LEADER_CHECK_TIMEOUT` (a node that is down does not
    /// answer at all).
    pub(super) async fn leader_check(&self, partition: &Partition, target: SocketAddr) -> Option<SocketAddr> {
        tokio::time::timeout(LEADER_CHECK_TIMEOUT, self.leader_elsewhere(partition, target)).await.ok().flatten()
    }
}

pub(super) fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    addr.to_socket_addrs()
        .map_err(|e| ClientError::Config(format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Config(format!("{addr} resolves to no address")))
}
