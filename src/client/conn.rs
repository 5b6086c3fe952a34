//! Connections to the nodes of one cluster, reused across requests, and one request/response
//! exchange on its own QUIC stream.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Endpoint;

use super::{ClientConfig, ClientError};
use crate::net::Connection;
use crate::net::client_codec::{ClusterView, Request, Response};
use crate::net::endpoint::{client_endpoint, connect, read_frame, write_frame};
use crate::net::tls::{ANY_NODE_NAME, client_config};

/// How long a request to the leader may go unanswered before the client asks the other
/// nodes whether the leader moved (a killed or paused leader is otherwise noticed only at
/// the connection's idle timeout, 4 s).
pub(super) const LEADER_CHECK_AFTER: Duration = Duration::from_millis(1000);
/// How long each of those questions may take.
const LEADER_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

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
}

impl Failure {
    pub(super) fn message(&self) -> &str {
        match self {
            Failure::NotSent(m) | Failure::Lost(m) => m,
        }
    }
}

#[derive(Clone)]
pub(super) struct Nodes {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    bootstrap: Vec<String>,
    conns: Mutex<HashMap<SocketAddr, Connection>>,
    leader: Mutex<Option<SocketAddr>>,
}

impl Nodes {
    pub(super) fn new(config: &ClientConfig) -> Result<Nodes, ClientError> {
        if config.bootstrap.is_empty() {
            return Err(ClientError::Config("no bootstrap address given (--bootstrap HOST:PORT)".into()));
        }
        let tls = client_config(&config.tls_dir).map_err(|e| ClientError::Config(e.to_string()))?;
        let endpoint = client_endpoint(tls).map_err(|e| ClientError::Config(e.to_string()))?;
        let inner = Inner {
            endpoint,
            bootstrap: config.bootstrap.clone(),
            conns: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
        };
        Ok(Nodes { inner: Arc::new(inner) })
    }

    /// Every bootstrap address that resolves.
    pub(super) fn bootstrap(&self) -> Vec<SocketAddr> {
        self.inner.bootstrap.iter().filter_map(|a| resolve(a).ok()).collect()
    }

    pub(super) fn leader(&self) -> Option<SocketAddr> {
        *self.inner.leader.lock().expect("leader lock")
    }

    pub(super) fn set_leader(&self, addr: Option<SocketAddr>) {
        *self.inner.leader.lock().expect("leader lock") = addr;
    }

    /// Forgets the leader if it is still `addr` (a failure at `addr` says nothing against a
    /// leader learned since).
    pub(super) fn forget_leader(&self, addr: SocketAddr) {
        let mut leader = self.inner.leader.lock().expect("leader lock");
        if *leader == Some(addr) {
            *leader = None;
        }
    }

    async fn conn(&self, addr: SocketAddr) -> Result<Connection, Failure> {
        let existing = self.inner.conns.lock().expect("conns lock").get(&addr).cloned();
        if let Some(conn) = existing
            && conn.close_reason().is_none()
        {
            return Ok(conn);
        }
        let conn = connect(&self.inner.endpoint, addr, ANY_NODE_NAME)
            .await
            .map_err(|e| Failure::NotSent(format!("cannot connect to {addr}: {e}")))?;
        self.inner.conns.lock().expect("conns lock").insert(addr, conn.clone());
        Ok(conn)
    }

    /// Opens a stream to `addr` for a sequence of requests (a producer's session).
    /// Opens a stream to `addr`, the leader as far as this client knows (see `connect_to_leader`).
    pub(super) async fn open_stream(
        &self,
        addr: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), Failure> {
        let conn = self.connect_to_leader(addr).await?;
        conn.open_bi().await.map_err(|e| {
            self.inner.conns.lock().expect("conns lock").remove(&addr);
            Failure::NotSent(format!("connection to {addr} failed: {e}"))
        })
    }

    /// Sends one request to `addr` and waits up to `timeout` for its response.
    pub(super) async fn request(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let conn = self.conn(addr).await?;
        self.exchange(&conn, addr, request, timeout).await
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
                return Err(Failure::NotSent(format!("connection to {addr} failed: {e}")));
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
        // Say why the node closed the connection (a refused certificate shows up only here).
        result.map_err(|failure| match (failure, conn.close_reason()) {
            (Failure::Lost(_), Some(reason)) => Failure::Lost(format!("{addr} closed the connection: {reason}")),
            (failure, _) => failure,
        })
    }

    pub(super) async fn metadata_at(&self, addr: &str, timeout: Duration) -> Result<ClusterView, ClientError> {
        let addr = resolve(addr)?;
        match self.request(addr, &Request::Metadata, timeout).await {
            Ok(Response::Metadata(view)) => Ok(view),
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(other) => Err(ClientError::Unavailable(format!("unexpected answer from {addr}: {other:?}"))),
            Err(f) => Err(ClientError::Unavailable(f.message().to_string())),
        }
    }

    /// The leader another node names, when it is not `target`: asked while a request to
    /// `target` goes unanswered. The other nodes are asked at once; the first answer naming
    /// a leader elsewhere wins, and the rest are dropped.
    async fn leader_elsewhere(&self, target: SocketAddr) -> Option<SocketAddr> {
        let mut asks = tokio::task::JoinSet::new();
        for addr in self.bootstrap().into_iter().filter(|a| *a != target) {
            let nodes = self.clone();
            asks.spawn(async move { nodes.request(addr, &Request::Metadata, LEADER_CHECK_TIMEOUT).await });
        }
        while let Some(answer) = asks.join_next().await {
            let Ok(Ok(Response::Metadata(view))) = answer else { continue };
            if let Some(addr) = view.leader_address().and_then(|a| resolve(a).ok())
                && addr != target
            {
                return Some(addr);
            }
        }
        None
    }

    /// Leaves `old` for `leader`: the connection to `old` is closed, so that a request
    /// already sent there and not yet read is dropped rather than appended later, behind
    /// what this client sends to `leader` next.
    pub(super) fn leave(&self, old: SocketAddr, leader: SocketAddr) {
        if let Some(conn) = self.inner.conns.lock().expect("conns lock").remove(&old) {
            conn.close(0u32.into(), b"the leader moved");
        }
        self.set_leader(Some(leader));
    }

    /// `request` to `target`, the leader as far as this client knows. While it goes
    /// unanswered the other nodes are asked where the leader is; once one names another
    /// node, `target` is left: the request ends "not sent" if it was still connecting, and
    /// "lost" (its outcome unknown) if it had left.
    pub(super) async fn request_to_leader(
        &self,
        target: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let conn = self.connect_to_leader(target).await?;
        match self.unless_leader_moves(target, self.exchange(&conn, target, request, timeout)).await {
            Ok(result) => result,
            Err(leader) => {
                self.leave(target, leader);
                Err(Failure::Lost(format!("{target} did not answer; another node names {leader} the leader")))
            }
        }
    }

    /// A connection to `target`, given up (nothing was sent) once another node names a
    /// different leader while it is still being made.
    async fn connect_to_leader(&self, target: SocketAddr) -> Result<Connection, Failure> {
        match self.unless_leader_moves(target, self.conn(target)).await {
            Ok(conn) => conn,
            Err(leader) => {
                self.set_leader(Some(leader));
                Err(Failure::NotSent(format!("cannot reach {target}; another node names {leader} the leader")))
            }
        }
    }

    /// Runs `work` against `target`; each `LEADER_CHECK_AFTER` it goes on, asks the other
    /// nodes where the leader is, and once one names another node drops `work` and returns
    /// that node's address.
    async fn unless_leader_moves<T>(
        &self,
        target: SocketAddr,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, SocketAddr> {
        tokio::pin!(work);
        let mut check = tokio::time::Instant::now() + LEADER_CHECK_AFTER;
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                _ = tokio::time::sleep_until(check) => {
                    if let Some(leader) = self.leader_check(target).await {
                        return Err(leader);
                    }
                    check = tokio::time::Instant::now() + LEADER_CHECK_AFTER;
                }
            }
        }
    }

    /// `leader_elsewhere`, within `LEADER_CHECK_TIMEOUT` (a node that is down does not
    /// answer at all).
    pub(super) async fn leader_check(&self, target: SocketAddr) -> Option<SocketAddr> {
        tokio::time::timeout(LEADER_CHECK_TIMEOUT, self.leader_elsewhere(target)).await.ok().flatten()
    }

    pub(super) async fn metadata_any(&self, timeout: Duration) -> Result<ClusterView, ClientError> {
        let mut last = ClientError::Unavailable("no bootstrap address resolves".into());
        for addr in &self.inner.bootstrap {
            match self.metadata_at(addr, timeout).await {
                Ok(view) => return Ok(view),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

pub(super) fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    addr.to_socket_addrs()
        .map_err(|e| ClientError::Config(format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Config(format!("{addr} resolves to no address")))
}
