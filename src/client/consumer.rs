//! Consuming: fetch committed records by offset from any node, long-polling at the end of
//! the log, failing over to another node when one cannot serve — or is behind: a node
//! that has not caught up yet answers "out of range" for an offset the cluster holds.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{Failure, Partition};
use super::{Client, ClientError};
use crate::batch::{BatchReader, Record};
use crate::net::client_codec::{Request, Response};
use crate::raft::kind;

/// Pause after a pass over every node in which none served the fetch.
const PASS_PAUSE: Duration = Duration::from_millis(100);
/// How large a compressed batch may inflate in the consumer.
const INFLATED_BYTES_MAX: usize = 64 << 20;

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// The first record the cluster still holds.
    Earliest,
    /// The offset after the last committed record: only new records.
    Latest,
    At(u64),
}

/// Reads one partition of a topic.
pub struct Consumer {
    client: Client,
    partition: Partition,
    from: Offset,
    next: Option<u64>,
    node: usize,
    max_bytes: u32,
    max_wait: Duration,
    high_watermark: u64,
    /// The highest offset known to be committed (a high watermark a node gave, or where
    /// `earliest`/`latest` resolved): a node that calls an offset up to it out of range
    /// is behind, not right.
    committed_seen: u64,
    /// The next fetch, sent while the caller handles the last one's records (only when
    /// the last one ended below the high watermark, so it does not wait).
    ahead: Option<Ahead>,
    /// Whether any record was returned yet (until then, `earliest` follows retention).
    read_any: bool,
}

struct Ahead {
    offset: u64,
    node: usize,
    addr: SocketAddr,
    fetch: JoinHandle<Result<Response, Failure>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.fetch.abort();
        }
    }
}

impl Consumer {
    pub(super) fn new(client: Client, partition: Partition, from: Offset) -> Consumer {
        let next = match from {
            Offset::At(o) => Some(o),
            _ => None,
        };
        Consumer {
            client,
            partition,
            from,
            next,
            node: 0,
            max_bytes: 4 << 20,
            max_wait: Duration::from_millis(500),
            high_watermark: 0,
            committed_seen: 0,
            ahead: None,
            read_any: false,
        }
    }

    /// How long a poll waits at the end of the log.
    pub fn max_wait(mut self, wait: Duration) -> Consumer {
        self.max_wait = wait;
        self
    }

    pub fn max_bytes(mut self, bytes: u32) -> Consumer {
        self.max_bytes = bytes;
        self
    }

    /// Prefer the `n`-th bootstrap node (consumers spread over replicas).
    pub fn prefer_node(mut self, n: usize) -> Consumer {
        self.node = n;
        self
    }

    /// The bootstrap node (its index) that answered the last fetch, or the preferred one
    /// before any did.
    pub fn node_index(&self) -> usize {
        self.node
    }

    /// The next offset this consumer will read, once known.
    pub fn position(&self) -> Option<u64> {
        self.next
    }

    /// The offset after the last committed record, as of the last poll.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// Resolves `earliest`/`latest` into an offset.
    pub async fn start(&mut self) -> Result<u64, ClientError> {
        if let Some(next) = self.next {
            return Ok(next);
        }
        let (topic, partition) = (&self.partition.0, self.partition.1);
        let next = match self.from {
            Offset::Earliest => self.client.start_offset(topic, partition).await?,
            // From the leader: a follower's end may lag it by a heartbeat.
            Offset::Latest => self.client.end_offset(topic, partition).await?,
            Offset::At(o) => o,
        };
        self.next = Some(next);
        // Where `earliest` or `latest` resolved is committed (the log's start or end).
        self.committed_seen = self.committed_seen.max(next);
        Ok(next)
    }

    /// The next records (offset and record), waiting up to the max wait at the end of the
    /// log; an empty vector means nothing new arrived in time. Nodes are tried in turn;
    /// one that is down or behind the position is passed over, and while none serves, the
    /// poll keeps trying until the client's timeout ([`ClientError::TimedOut`]). An offset
    /// that no node holds and that was never known committed is out of range at once.
    pub async fn poll(&mut self) -> Result<Vec<(u64, Record)>, ClientError> {
        let offset = self.start().await?;
        if let Some(ahead) = self.ahead.take() {
            // Sent for where this poll starts; if it failed, the loop below asks again.
            if ahead.offset != offset {
                ahead.fetch.abort();
            } else if let Ok(Ok(Response::Fetched { high_watermark, entries, .. })) = ahead.fetch.await {
                return self.fetched(offset, (ahead.node, ahead.addr), high_watermark, entries);
            }
        }
        let nodes = self.client.nodes.bootstrap();
        if nodes.is_empty() {
            return Err(ClientError::Config("no bootstrap address resolves".into()));
        }
        let request = self.request(offset);
        let timeout = self.max_wait + self.client.config.request_timeout;
        let deadline = Instant::now() + self.client.config.timeout;
        let mut last = String::new();
        let mut out_of_range = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let node = (self.node + attempt - 1) % nodes.len();
            let addr = nodes[node];
            // A fetch may always wait its max wait at the end of the log.
            let bound = timeout.min(deadline.saturating_duration_since(Instant::now()) + self.max_wait);
            match self.client.nodes.request(addr, &request, bound).await {
                Ok(Response::Fetched { high_watermark, entries, .. }) => {
                    return self.fetched(offset, (node, addr), high_watermark, entries);
                }
                Ok(Response::Error(e)) => {
                    let err: ClientError = e.into();
                    match err {
                        ClientError::OffsetOutOfRange { requested, start, .. }
                            if requested < start && self.from == Offset::Earliest && !self.read_any =>
                        {
                            // Retention moved the start between resolving `earliest` and reading.
                            self.next = Some(start);
                            return Ok(Vec::new());
                        }
                        // Another node may hold it (this one may be behind, or its retention
                        // may have run before another's).
                        ClientError::OffsetOutOfRange { .. } => out_of_range = Some(err),
                        ClientError::Refused(_) => return Err(err),
                        other => last = other.to_string(),
                    }
                }
                Ok(other) => last = format!("unexpected answer from {addr}: {other:?}"),
                Err(Failure::Certificate(e)) => return Err(e.into()),
                Err(f) => last = f.message(),
            }
            if attempt % nodes.len() != 0 {
                continue;
            }
            // A whole pass and no node served the fetch.
            if let Some(err) = out_of_range.take() {
                // A node is behind only at its end: below its start, retention deleted the
                // offset, and no node that answered holds it.
                let below_start =
                    matches!(err, ClientError::OffsetOutOfRange { requested, start, .. } if requested < start);
                if offset > self.committed_seen || below_start {
                    return Err(err);
                }
                last = format!("{err}, though offset {offset} is committed: waiting for a node to catch up");
            }
            if Instant::now() >= deadline {
                return Err(ClientError::TimedOut { after: self.client.config.timeout, last });
            }
            tokio::time::sleep(PASS_PAUSE).await;
        }
    }

    fn request(&self, offset: u64) -> Request {
        Request::Fetch {
            topic: self.partition.0.clone(),
            partition: self.partition.1,
            offset,
            max_bytes: self.max_bytes,
            max_wait_ms: self.max_wait.as_millis() as u32,
        }
    }

    /// The partition this consumer reads.
    pub fn partition(&self) -> &(String, u32) {
        &self.partition
    }

    /// A fetch from `node` (the n-th bootstrap address, and its address) answered: sends the
    /// next one to the same node if the log goes on, then decodes this one.
    fn fetched(
        &mut self,
        offset: u64,
        (node, addr): (usize, SocketAddr),
        high_watermark: u64,
        entries: Vec<segments::Entry>,
    ) -> Result<Vec<(u64, Record)>, ClientError> {
        self.node = node;
        self.high_watermark = high_watermark;
        self.committed_seen = self.committed_seen.max(high_watermark);
        let after = entries.last().map(|e| e.next_offset()).filter(|&next| next > offset && next < high_watermark);
        if let Some(next) = after {
            let (nodes, request) = (self.client.nodes.clone(), self.request(next));
            let timeout = self.max_wait + self.client.config.request_timeout;
            let fetch = tokio::spawn(async move { nodes.request(addr, &request, timeout).await });
            self.ahead = Some(Ahead { offset: next, node, addr, fetch });
        }
        self.take(offset, entries)
    }

    /// Records at or after `offset` from fetched entries (the first entry may start earlier).
    fn take(&mut self, offset: u64, entries: Vec<segments::Entry>) -> Result<Vec<(u64, Record)>, ClientError> {
        let mut out = Vec::new();
        let mut next = offset;
        for entry in entries.iter().filter(|e| e.kind() == kind::DATA) {
            let base = entry.base_offset();
            let batch = BatchReader::new(entry.payload(), INFLATED_BYTES_MAX)
                .map_err(|e| ClientError::Unavailable(format!("bad batch at offset {base}: {e}")))?;
            if batch.header().base_offset != base as i64 {
                let stamped = batch.header().base_offset;
                return Err(ClientError::Unavailable(format!("the batch at offset {base} says {stamped}")));
            }
            for (i, read) in batch.enumerate() {
                let record = read.map_err(|e| ClientError::Unavailable(format!("bad record: {e}")))?.record;
                let at = base + i as u64;
                if at >= next {
                    if at != next {
                        return Err(ClientError::Unavailable(format!(
                            "gap in the log: expected offset {next}, got {at}"
                        )));
                    }
                    out.push((at, record));
                    next = at + 1;
                }
            }
        }
        self.read_any |= !out.is_empty();
        self.next = Some(next);
        Ok(out)
    }
}
