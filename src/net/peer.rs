//! Links to the other nodes of the cluster: one QUIC connection per pair of nodes, shared
//! by every Raft group the two nodes host, with long-lived ordered streams per direction.
//!
//! The node with the lower id dials; the higher one accepts. Each side sends on its own
//! unidirectional streams: `Lane::Control` carries votes, heartbeats and responses at a
//! higher stream priority, so a vote never waits behind a megabyte of entries, and
//! `BULK_LANES` bulk streams carry AppendEntries (large, ordered, pipelined). A group's
//! entries always take the same bulk stream (so they stay in order), and each bulk stream
//! sends its groups' frames in turn, one frame each, so a group with a backlog delays
//! another group by one frame on its stream, and the transport interleaves the streams.
//! Raft tolerates lost, duplicated and reordered messages, so a full queue drops a frame
//! instead of blocking the caller, and a broken connection loses what was queued on it.
//!
//! Every link sends a ping on its control stream every `PING_PERIOD`; a node heard of by
//! no frame for `PEER_DOWN_AFTER` is taken as down (`Peers::alive`), which is how the
//! groups of a quiet cluster learn that a leader's node went away.
//!
//! A dialer proves who it is twice: its certificate chain (checked by TLS against the
//! cluster CA) and a hello naming its node id, which must match a name in that
//! certificate. The dialer checks the acceptor the same way through the TLS server name.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use quinn::{Endpoint, VarInt};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::endpoint::{Connection, NetError, connect, peer_certificates, read_frame, write_frame};
use super::frame::{self, FrameBuilder};
use super::tls::{node_name, verify_node_identity};
use crate::metrics as m;

pub type NodeId = u64;

/// Frames queued per peer and lane before new ones are dropped.
pub const LANE_FRAMES_MAX: usize = 1024;
/// Frames one group may have queued on a bulk lane before its new ones are dropped.
pub const GROUP_FRAMES_MAX: usize = 256;
/// Bulk streams per link; a group's entries take stream `group % BULK_LANES`.
pub const BULK_LANES: usize = 4;
/// How often a link pings its peer.
pub const PING_PERIOD: Duration = Duration::from_millis(100);
/// A peer that sent nothing, not even a ping, for this long is taken as down.
pub const PEER_DOWN_AFTER: Duration = Duration::from_millis(500);
/// Largest frame accepted from a peer.
pub const PEER_FRAME_BYTES_MAX: usize = 64 << 20;
const HELLO_BYTES_MAX: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

const KIND_HELLO: u8 = 1;
const KIND_HELLO_OK: u8 = 2;
const KIND_HELLO_REJECT: u8 = 3;
/// A frame on the control stream that only says "alive"; never handed to a group. Outside
/// the range of `peer_codec`'s kinds.
const KIND_PING: u8 = 0xF0;
/// Application close code: the hello was refused.
pub const CLOSE_REFUSED: u32 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    Control,
    Bulk,
}

impl Lane {
    fn priority(self) -> i32 {
        match self {
            Lane::Control => 10,
            Lane::Bulk => 0,
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no link to node {0}")]
    UnknownPeer(NodeId),
    #[error("queue to node {0} is full")]
    QueueFull(NodeId),
}

/// A frame received from a peer (without its length prefix).
pub struct Inbound {
    pub from: NodeId,
    pub frame: Bytes,
}

struct Link {
    addr: Arc<Mutex<SocketAddr>>,
    control: mpsc::Sender<Vec<Bytes>>,
    bulk: Vec<Arc<FairQueue>>,
    conn: watch::Sender<Option<Connection>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A bulk lane's queue: one FIFO per group, served in turn, one frame at a time.
#[derive(Default)]
struct FairQueue {
    state: Mutex<FairState>,
    ready: Notify,
}

#[derive(Default)]
struct FairState {
    groups: HashMap<u64, VecDeque<Vec<Bytes>>>,
    /// Groups with frames queued, in the order they are served.
    turn: VecDeque<u64>,
    frames: usize,
}

impl FairQueue {
    /// Queues a frame of `group`; false when the lane or the group's share of it is full.
    fn push(&self, group: u64, frame: Vec<Bytes>) -> bool {
        let mut state = self.state.lock().expect("lane lock");
        if state.frames >= LANE_FRAMES_MAX {
            return false;
        }
        let queue = state.groups.entry(group).or_default();
        if queue.len() >= GROUP_FRAMES_MAX {
            return false;
        }
        let first = queue.is_empty();
        queue.push_back(frame);
        if first {
            state.turn.push_back(group);
        }
        state.frames += 1;
        drop(state);
        self.ready.notify_one();
        true
    }

    /// The next frame: the oldest of the group whose turn it is.
    async fn pop(&self) -> Vec<Bytes> {
        loop {
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }

    fn try_pop(&self) -> Option<Vec<Bytes>> {
        let mut state = self.state.lock().expect("lane lock");
        let group = state.turn.pop_front()?;
        let queue = state.groups.get_mut(&group).expect("a group in turn has frames");
        let frame = queue.pop_front().expect("a group in turn has frames");
        if queue.is_empty() {
            state.groups.remove(&group);
        } else {
            state.turn.push_back(group);
        }
        state.frames -= 1;
        Some(frame)
    }
}

/// Where a lane's writer takes its frames from.
enum LaneQueue {
    Fifo(mpsc::Receiver<Vec<Bytes>>),
    Fair(Arc<FairQueue>),
}

impl LaneQueue {
    /// None when the link is gone.
    async fn next(&mut self) -> Option<Vec<Bytes>> {
        match self {
            LaneQueue::Fifo(rx) => rx.recv().await,
            LaneQueue::Fair(queue) => Some(queue.pop().await),
        }
    }

    /// A frame already queued, without waiting.
    fn try_next(&mut self) -> Option<Vec<Bytes>> {
        match self {
            LaneQueue::Fifo(rx) => rx.try_recv().ok(),
            LaneQueue::Fair(queue) => queue.try_pop(),
        }
    }
}

/// Frames a lane hands to its stream in one write, and the bytes they may add up to: the
/// frames queued while a write was in progress go out together, in one call and fewer
/// packets, which is what keeps many groups' small messages cheap.
const WRITE_FRAMES_MAX: usize = 64;
const WRITE_BYTES_MAX: usize = 256 << 10;

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(conn) = self.conn.borrow().as_ref() {
            conn.close(VarInt::from_u32(0), b"peer removed");
        }
    }
}

struct Shared {
    id: NodeId,
    cluster_id: u64,
    endpoint: Endpoint,
    inbound: mpsc::Sender<Inbound>,
    links: Mutex<BTreeMap<NodeId, Link>>,
    /// When each peer was last heard from (any frame, pings included).
    heard: Mutex<BTreeMap<NodeId, Instant>>,
}

/// The set of links to peers. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    shared: Arc<Shared>,
}

impl Peers {
    /// Starts links to `peers` (this node's own id is skipped). Frames from peers arrive
    /// on the returned receiver, which is bounded: a slow consumer slows the senders.
    pub fn start(
        endpoint: Endpoint,
        id: NodeId,
        cluster_id: u64,
        peers: &BTreeMap<NodeId, SocketAddr>,
        inbound_frames_max: usize,
    ) -> (Peers, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(inbound_frames_max);
        let shared = Arc::new(Shared {
            id,
            cluster_id,
            endpoint,
            inbound: tx,
            links: Mutex::new(BTreeMap::new()),
            heard: Mutex::new(BTreeMap::new()),
        });
        let this = Peers { shared };
        for (&peer, &addr) in peers {
            this.add(peer, addr);
        }
        (this, rx)
    }

    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Adds (or re-addresses) a link.
    pub fn add(&self, peer: NodeId, addr: SocketAddr) {
        if peer == self.shared.id {
            return;
        }
        let mut links = self.shared.links.lock().expect("links lock");
        if let Some(link) = links.get(&peer) {
            *link.addr.lock().expect("addr lock") = addr;
            return;
        }
        let (control_tx, control_rx) = mpsc::channel(LANE_FRAMES_MAX);
        let (conn_tx, conn_rx) = watch::channel(None);
        let addr = Arc::new(Mutex::new(addr));
        let bulk: Vec<Arc<FairQueue>> = (0..BULK_LANES).map(|_| Arc::new(FairQueue::default())).collect();
        let mut tasks = vec![
            tokio::spawn(write_lane(peer, Lane::Control, LaneQueue::Fifo(control_rx), conn_rx.clone())),
            tokio::spawn(ping(control_tx.clone())),
        ];
        for queue in &bulk {
            tasks.push(tokio::spawn(write_lane(peer, Lane::Bulk, LaneQueue::Fair(queue.clone()), conn_rx.clone())));
        }
        if self.shared.id < peer {
            tasks.push(tokio::spawn(dial_loop(self.shared.clone(), peer, addr.clone(), conn_tx.clone())));
        }
        links.insert(peer, Link { addr, control: control_tx, bulk, conn: conn_tx, tasks });
    }

    pub fn remove(&self, peer: NodeId) {
        self.shared.links.lock().expect("links lock").remove(&peer);
    }

    pub fn address(&self, peer: NodeId) -> Option<SocketAddr> {
        self.shared.links.lock().expect("links lock").get(&peer).map(|l| *l.addr.lock().expect("addr lock"))
    }

    /// Queues one frame of `group` (given as chunks; the first carries the length prefix).
    pub fn send(&self, to: NodeId, group: u64, lane: Lane, frame: Vec<Bytes>) -> Result<(), SendError> {
        let links = self.shared.links.lock().expect("links lock");
        let link = links.get(&to).ok_or(SendError::UnknownPeer(to))?;
        let queued = match lane {
            Lane::Control => link.control.try_send(frame).is_ok(),
            Lane::Bulk => link.bulk[(group % BULK_LANES as u64) as usize].push(group, frame),
        };
        if queued { Ok(()) } else { Err(SendError::QueueFull(to)) }
    }

    /// Whether `peer` was heard from (any frame, a ping at least) within `PEER_DOWN_AFTER`.
    pub fn alive(&self, peer: NodeId) -> bool {
        let heard = self.shared.heard.lock().expect("heard lock");
        heard.get(&peer).is_some_and(|at| at.elapsed() < PEER_DOWN_AFTER)
    }

    /// The peers this node has links to.
    pub fn ids(&self) -> Vec<NodeId> {
        self.shared.links.lock().expect("links lock").keys().copied().collect()
    }

    /// Whether a connection to `peer` is up.
    pub fn connected(&self, peer: NodeId) -> bool {
        let links = self.shared.links.lock().expect("links lock");
        links.get(&peer).is_some_and(|l| l.conn.borrow().as_ref().is_some_and(|c| c.close_reason().is_none()))
    }

    /// Takes over a connection that arrived with the peer ALPN: checks the dialer's hello
    /// and certificate, then uses the connection for that peer's link.
    pub async fn accept(&self, conn: Connection) -> Result<NodeId, NetError> {
        match self.check_hello(&conn).await {
            Ok((peer, mut send)) => {
                let mut ok = FrameBuilder::new(KIND_HELLO_OK, 0);
                ok.body().put_u64_le(self.shared.id);
                write_frame(&mut send, &mut [ok.finish()]).await?;
                let _ = send.finish();
                let link_conn = {
                    let links = self.shared.links.lock().expect("links lock");
                    links.get(&peer).map(|l| l.conn.clone())
                };
                let Some(link_conn) = link_conn else {
                    return Err(NetError::Protocol(format!("node {peer} is not a member")));
                };
                info!(peer, addr = %conn.remote_address(), "peer connected");
                spawn_readers(self.shared.clone(), peer, conn.clone());
                if let Some(old) = link_conn.send_replace(Some(conn)) {
                    old.close(VarInt::from_u32(0), b"replaced by a newer connection");
                }
                Ok(peer)
            }
            Err((reason, send)) => {
                warn!(addr = %conn.remote_address(), %reason, "refused peer");
                if let Some(mut send) = send {
                    let mut reject = FrameBuilder::new(KIND_HELLO_REJECT, reason.len() + 4);
                    frame::put_bytes(reject.body(), reason.as_bytes());
                    let _ = write_frame(&mut send, &mut [reject.finish()]).await;
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
                }
                conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
                Err(NetError::Protocol(reason))
            }
        }
    }

    async fn check_hello(
        &self,
        conn: &Connection,
    ) -> Result<(NodeId, quinn::SendStream), (String, Option<quinn::SendStream>)> {
        let accept = tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await;
        let (send, mut recv) = match accept {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err((format!("no hello stream: {e}"), None)),
            Err(_) => return Err(("no hello within 5 s".into(), None)),
        };
        let hello = match read_frame(&mut recv, HELLO_BYTES_MAX).await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(("empty hello".into(), Some(send))),
            Err(e) => return Err((format!("bad hello: {e}"), Some(send))),
        };
        let parsed = (|| {
            let (kind, mut r) = frame::open(hello)?;
            if kind != KIND_HELLO {
                return Err(frame::FrameError::Kind(kind));
            }
            let fields = (r.u64("cluster id")?, r.u64("node id")?, r.u64("target id")?);
            r.end()?;
            Ok(fields)
        })();
        let (cluster_id, from, to) = match parsed {
            Ok(f) => f,
            Err(e) => return Err((format!("bad hello: {e}"), Some(send))),
        };
        if cluster_id != self.shared.cluster_id {
            let reason = format!(
                "cluster id {cluster_id:016x} is not this cluster's ({:016x}): certificates from another CA?",
                self.shared.cluster_id
            );
            return Err((reason, Some(send)));
        }
        if to != self.shared.id {
            return Err((format!("hello addressed to node {to}, but this is node {}", self.shared.id), Some(send)));
        }
        let Some(chain) = peer_certificates(conn) else {
            return Err(("a peer must present a certificate".into(), Some(send)));
        };
        if let Err(e) = verify_node_identity(&chain, from) {
            return Err((format!("claims to be node {from}, but {e}"), Some(send)));
        }
        if from >= self.shared.id {
            return Err((format!("node {from} must wait for node {} to dial it", self.shared.id), Some(send)));
        }
        Ok((from, send))
    }
}

/// Dials `peer` whenever there is no live connection, with exponential backoff.
async fn dial_loop(
    shared: Arc<Shared>,
    peer: NodeId,
    addr: Arc<Mutex<SocketAddr>>,
    conn_tx: watch::Sender<Option<Connection>>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    loop {
        let target = *addr.lock().expect("addr lock");
        match dial(&shared, peer, target).await {
            Ok(conn) => {
                info!(peer, addr = %target, "connected to peer");
                backoff = BACKOFF_MIN;
                last_error.clear();
                spawn_readers(shared.clone(), peer, conn.clone());
                conn_tx.send_replace(Some(conn.clone()));
                let _open = m::OpenConnection::new("peer");
                let reason = conn.closed().await;
                info!(peer, %reason, "peer connection closed");
            }
            Err(e) => {
                // A peer that is down fails the same way every time: say it once.
                let error = e.to_string();
                if error != last_error {
                    warn!(peer, addr = %target, %error, "cannot connect to peer; retrying with backoff");
                    last_error = error;
                } else {
                    debug!(peer, addr = %target, %error, "dial failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn dial(shared: &Shared, peer: NodeId, addr: SocketAddr) -> Result<Connection, NetError> {
    let conn = connect(&shared.endpoint, addr, &node_name(peer)).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|source| NetError::Connection { addr, source })?;
    let mut hello = FrameBuilder::new(KIND_HELLO, 24);
    hello.body().put_u64_le(shared.cluster_id);
    hello.body().put_u64_le(shared.id);
    hello.body().put_u64_le(peer);
    write_frame(&mut send, &mut [hello.finish()]).await?;
    let _ = send.finish();
    let reply = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv, HELLO_BYTES_MAX))
        .await
        .map_err(|_| NetError::Protocol(format!("node {peer} did not answer the hello")))??
        .ok_or_else(|| NetError::Protocol(format!("node {peer} closed the hello stream")))?;
    let (kind, mut r) = frame::open(reply)?;
    match kind {
        KIND_HELLO_OK if r.u64("node id").map_err(frame::FrameError::from)? == peer => Ok(conn),
        KIND_HELLO_REJECT => {
            let reason = r.string("reason").map_err(frame::FrameError::from)?;
            warn!(peer, %reason, "peer refused this node");
            Err(NetError::Protocol(format!("node {peer} refused us: {reason}")))
        }
        _ => Err(NetError::Protocol(format!("unexpected hello reply from node {peer}"))),
    }
}

/// Reads every unidirectional stream the peer opens on `conn` and forwards its frames.
fn spawn_readers(shared: Arc<Shared>, peer: NodeId, conn: Connection) {
    tokio::spawn(async move {
        while let Ok(mut stream) = conn.accept_uni().await {
            let inbound = shared.inbound.clone();
            let conn = conn.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    match read_frame(&mut stream, PEER_FRAME_BYTES_MAX).await {
                        Ok(Some(frame)) => {
                            shared.heard.lock().expect("heard lock").insert(peer, Instant::now());
                            if frame.get(1) == Some(&KIND_PING) {
                                continue;
                            }
                            if inbound.send(Inbound { from: peer, frame }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(NetError::Frame(e)) => {
                            metrics::counter!(m::FRAMES_REJECTED, "protocol" => "peer").increment(1);
                            warn!(peer, error = %e, "closing peer connection after a bad frame");
                            conn.close(VarInt::from_u32(0x11), b"bad frame");
                            return;
                        }
                        // The stream or the connection ended (the writer moved to a new
                        // connection, or this one broke): the connection's owner hears of it.
                        Err(e) => {
                            debug!(peer, error = %e, "peer stream ended");
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Queues a ping on the control lane every `PING_PERIOD` (dropped if the lane is full:
/// then other frames say the node is alive).
async fn ping(control: mpsc::Sender<Vec<Bytes>>) {
    let mut ticker = tokio::time::interval(PING_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let _ = control.try_send(vec![FrameBuilder::new(KIND_PING, 0).finish()]);
    }
}

/// Writes one lane's queue to its stream on the current connection, reopening the stream
/// on each new connection.
async fn write_lane(peer: NodeId, lane: Lane, mut queue: LaneQueue, mut conn_rx: watch::Receiver<Option<Connection>>) {
    loop {
        let conn = loop {
            if let Some(c) = conn_rx.borrow_and_update().clone()
                && c.close_reason().is_none()
            {
                break c;
            }
            if conn_rx.changed().await.is_err() {
                return;
            }
        };
        let mut stream = match conn.open_uni().await {
            Ok(s) => s,
            Err(_) => {
                let _ = conn_rx.changed().await;
                continue;
            }
        };
        let _ = stream.set_priority(lane.priority());
        loop {
            tokio::select! {
                frame = queue.next() => {
                    let Some(mut chunks) = frame else { return };
                    let mut frames = 1;
                    let mut bytes: usize = chunks.iter().map(Bytes::len).sum();
                    while frames < WRITE_FRAMES_MAX && bytes < WRITE_BYTES_MAX {
                        let Some(more) = queue.try_next() else { break };
                        bytes += more.iter().map(Bytes::len).sum::<usize>();
                        chunks.extend(more);
                        frames += 1;
                    }
                    if let Err(e) = write_frame(&mut stream, &mut chunks).await {
                        debug!(peer, ?lane, error = %e, "peer stream write failed");
                        break;
                    }
                }
                changed = conn_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::certs;
    use crate::net::endpoint::{alpn, node_endpoint};
    use crate::net::tls::{ALPN_PEER, NodeTls};

    fn frame(n: u64) -> Vec<Bytes> {
        let mut b = FrameBuilder::new(42, 8);
        b.body().put_u64_le(n);
        vec![b.finish()]
    }

    fn value(inbound: &Inbound) -> u64 {
        let (_, mut r) = frame::open(inbound.frame.clone()).unwrap();
        r.u64("n").unwrap()
    }

    /// Starts node `id` of a cluster whose certificates are in `tls_dir`; its accept loop
    /// hands peer connections to its links.
    fn start(
        tls_dir: &std::path::Path,
        id: NodeId,
        as_id: NodeId,
        addrs: &BTreeMap<NodeId, SocketAddr>,
    ) -> (Peers, mpsc::Receiver<Inbound>) {
        let tls = NodeTls::load(tls_dir, as_id, true).unwrap();
        let endpoint = node_endpoint(addrs[&id], &tls).unwrap();
        let (peers, rx) = Peers::start(endpoint.clone(), id, 7, addrs, 64);
        let acceptor = peers.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await
                        && alpn(&conn).as_deref() == Some(ALPN_PEER)
                    {
                        let _ = acceptor.accept(conn).await;
                    }
                });
            }
        });
        (peers, rx)
    }

    fn free_addrs(n: u64) -> BTreeMap<NodeId, SocketAddr> {
        (1..=n)
            .map(|id| {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                (id, sock.local_addr().unwrap())
            })
            .collect()
    }

    async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Option<Inbound> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn two_nodes_exchange_frames_in_order_on_each_lane() {
        let dir = tempfile::tempdir().unwrap();
        certs::generate(dir.path(), &[1, 2], &[], false).unwrap();
        let addrs = free_addrs(2);
        let (p1, mut rx1) = start(dir.path(), 1, 1, &addrs);
        let (p2, mut rx2) = start(dir.path(), 2, 2, &addrs);
        for n in 0..100 {
            // Frames may be dropped until the link is up; retry the first one.
            while n == 0 && p1.send(2, 1, Lane::Bulk, frame(n)).is_ok() {
                if let Some(got) = recv(&mut rx2).await {
                    assert_eq!(value(&got), 0);
                    break;
                }
            }
            if n > 0 {
                p1.send(2, 1, Lane::Bulk, frame(n)).unwrap();
                let got = recv(&mut rx2).await.expect("frame from node 1");
                assert_eq!((got.from, value(&got)), (1, n));
            }
        }
        p2.send(1, 1, Lane::Control, frame(99)).unwrap();
        let got = recv(&mut rx1).await.expect("frame from node 2");
        assert_eq!((got.from, value(&got)), (2, 99));
    }

    fn payload(frame: Option<Vec<Bytes>>) -> u64 {
        let frame = frame.expect("a frame");
        let (_, mut r) = frame::open(frame[0].slice(4..)).unwrap();
        r.u64("n").unwrap()
    }

    #[test]
    fn a_bulk_lane_serves_its_groups_in_turn() {
        let lane = FairQueue::default();
        for n in 0..10 {
            assert!(lane.push(1, frame(n)));
        }
        assert!(lane.push(2, frame(100)));
        // Group 2's one frame waits for one of group 1's ten, not for all of them.
        assert_eq!(payload(lane.try_pop()), 0);
        assert_eq!(payload(lane.try_pop()), 100);
        assert_eq!((1..10).map(|_| payload(lane.try_pop())).collect::<Vec<_>>(), (1..10).collect::<Vec<_>>());
        assert!(lane.try_pop().is_none());
    }

    #[test]
    fn one_group_cannot_fill_a_bulk_lane() {
        let lane = FairQueue::default();
        for n in 0..GROUP_FRAMES_MAX as u64 {
            assert!(lane.push(1, frame(n)));
        }
        assert!(!lane.push(1, frame(0)), "group 1 is over its share");
        assert!(lane.push(2, frame(0)), "group 2 still has room");
    }

    #[tokio::test]
    async fn a_peer_that_stops_is_taken_as_down() {
        let dir = tempfile::tempdir().unwrap();
        certs::generate(dir.path(), &[1, 2], &[], false).unwrap();
        let addrs = free_addrs(2);
        let (p1, _rx1) = start(dir.path(), 1, 1, &addrs);
        let (p2, _rx2) = start(dir.path(), 2, 2, &addrs);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(p1.alive(2) && p2.alive(1)) {
            assert!(Instant::now() < deadline, "the pings never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p2.shared.endpoint.close(VarInt::from_u32(0), b"stopped");
        let deadline = Instant::now() + PEER_DOWN_AFTER + Duration::from_secs(2);
        while p1.alive(2) {
            assert!(Instant::now() < deadline, "node 1 still takes node 2 as alive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_node_cannot_claim_another_nodes_id() {
        let dir = tempfile::tempdir().unwrap();
        certs::generate(dir.path(), &[1, 2, 3], &[], false).unwrap();
        let addrs = free_addrs(2);
        // Node 1's process presents node 3's (valid) certificate.
        let (p1, _rx1) = start(dir.path(), 1, 3, &addrs);
        let (_p2, mut rx2) = start(dir.path(), 2, 2, &addrs);
        for _ in 0..20 {
            let _ = p1.send(2, 1, Lane::Control, frame(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(rx2.try_recv().is_err(), "node 2 accepted frames from an impostor");
        assert!(!p1.connected(2));
    }

    #[tokio::test]
    async fn a_node_with_a_certificate_from_another_ca_is_refused() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        certs::generate(ours.path(), &[1, 2], &[], false).unwrap();
        certs::generate(theirs.path(), &[1, 2], &[], false).unwrap();
        let addrs = free_addrs(2);
        let (p1, _rx1) = start(theirs.path(), 1, 1, &addrs);
        let (_p2, mut rx2) = start(ours.path(), 2, 2, &addrs);
        for _ in 0..20 {
            let _ = p1.send(2, 1, Lane::Control, frame(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(rx2.try_recv().is_err(), "node 2 accepted frames from another cluster's node");
        assert!(!p1.connected(2));
    }

    #[tokio::test]
    async fn certificates_issued_later_by_the_same_ca_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        certs::generate(dir.path(), &[1], &[], false).unwrap();
        let written = certs::generate(dir.path(), &[2], &[], false).unwrap();
        assert!(!written.ca_created, "the existing CA must be reused");
        let addrs = free_addrs(2);
        let (p1, _rx1) = start(dir.path(), 1, 1, &addrs);
        let (_p2, mut rx2) = start(dir.path(), 2, 2, &addrs);
        let mut got = None;
        for _ in 0..50 {
            let _ = p1.send(2, 1, Lane::Control, frame(5));
            if let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(100), rx2.recv()).await {
                got = Some(value(&f));
                break;
            }
        }
        assert_eq!(got, Some(5));
    }
}
