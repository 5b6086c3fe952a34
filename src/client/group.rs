//! Consumer groups in keel's client: calls to a group's coordinator, `keel group list` and
//! `describe` (with lag), and [`GroupConsumer`], a consumer that shares the partitions of
//! its topics with the other members of its group and commits how far it got.
//!
//! A group call goes to any node; a node that does not coordinate the group answers
//! `NotLeader` naming the node that does (the leader of the group's partition of
//! `__consumer_offsets`), and the call follows it, as requests for the metadata leader do.
//! The client asks the coordinator itself rather than having a node forward the call: a
//! JoinGroup may wait a whole rebalance, and a forwarding node would hold it that long
//! and add a hop that can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::conn::{Failure, resolve};
use super::{Client, ClientError, Consumer, Offset};
use crate::batch::Record;
use crate::groups::{
    Assignor, CONSUMER_PROTOCOL_TYPE, CommitOffset, CommitRequest, GroupDescription, GroupError, GroupListing,
    HeartbeatRequest, JoinRequest, LeaveRequest, LeavingMember, PartitionLag, Protocol, SyncRequest, decode_assignment,
    decode_subscription, encode_assignment, encode_subscription, lag,
};
use crate::kafka::backend::{GroupAnswer, GroupCall};
use crate::net::client_codec::{Request, Response};

/// A group as `keel group describe` shows it: its state and members, and per partition
/// the committed offset, the end and the lag.
#[derive(Clone, Debug)]
pub struct GroupReport {
    pub description: GroupDescription,
    /// Each member's id and assigned partitions (empty unless the group is stable, or when
    /// its assignment is not a consumer's).
    pub assignments: Vec<(String, Vec<(String, u32)>)>,
    pub partitions: Vec<PartitionLag>,
}

impl GroupReport {
    /// The member a partition is assigned to, if any.
    pub fn owner(&self, topic: &str, partition: u32) -> Option<&str> {
        self.assignments
            .iter()
            .find(|(_, parts)| parts.iter().any(|(t, p)| t == topic && *p == partition))
            .map(|(id, _)| id.as_str())
    }
}

impl Client {
    /// Sends one call to the coordinator of its group, wherever it is, retrying what failed
    /// without effect (no coordinator yet, one still loading) until the deadline. A call
    /// whose connection broke is sent again: every group call may be repeated (a commit
    /// commits the same offsets, a join joins as the same member).
    pub async fn group_call(&self, call: GroupCall, wait: Duration) -> Result<GroupAnswer, ClientError> {
        match self.to_named_node(&Request::Group(call), wait, true).await? {
            Response::Group(answer) => Ok(answer),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Every consumer group of the cluster: each node lists the groups it coordinates, so
    /// every broker is asked. A node that does not answer is skipped (its partitions of
    /// `__consumer_offsets` move to another node, which then lists their groups).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let metadata = self.metadata(Some(&[])).await?;
        let mut all: BTreeMap<String, GroupListing> = BTreeMap::new();
        let mut answered = 0;
        let mut last = String::from("no broker is registered");
        for broker in &metadata.brokers {
            let Ok(addr) = resolve(&broker.address) else { continue };
            match self.nodes.request(addr, &Request::ListGroups, self.config.request_timeout).await {
                Ok(Response::Groups(groups)) => {
                    answered += 1;
                    all.extend(groups.into_iter().map(|g| (g.group_id.clone(), g)));
                }
                Ok(Response::Error(e)) => last = e.to_string(),
                Ok(other) => last = format!("unexpected answer from {addr}: {other:?}"),
                Err(Failure::Certificate(e)) => return Err(e.into()),
                Err(f) => last = f.message(),
            }
        }
        if answered == 0 {
            return Err(ClientError::Unavailable(last));
        }
        Ok(all.into_values().collect())
    }

    /// A group's state, members and assignments, and its committed offsets against the
    /// ends of their partitions (from each partition's leader).
    pub async fn describe_group(&self, group: &str) -> Result<GroupReport, ClientError> {
        let description = match self.group_call(GroupCall::Describe { group_id: group.into() }, Duration::ZERO).await? {
            GroupAnswer::Describe(d) => d,
            other => return Err(unexpected(&other)),
        };
        let assignments: Vec<(String, Vec<(String, u32)>)> = description
            .members
            .iter()
            .map(|m| {
                let parts = if description.protocol_type == CONSUMER_PROTOCOL_TYPE {
                    decode_assignment(&m.assignment).unwrap_or_default()
                } else {
                    Vec::new()
                };
                (m.member_id.clone(), parts)
            })
            .collect();
        let committed = self.committed_offsets(group, None).await?;
        let mut keys: BTreeSet<(String, u32)> = committed.keys().cloned().collect();
        keys.extend(assignments.iter().flat_map(|(_, parts)| parts.iter().cloned()));
        let mut ends = BTreeMap::new();
        for (topic, partition) in keys {
            match self.end_offset(&topic, partition).await {
                Ok(end) => {
                    ends.insert((topic, partition), end);
                }
                // A deleted topic has no end: its lag is unknown.
                Err(ClientError::UnknownTopic(_) | ClientError::UnknownPartition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let partitions = lag(&committed, &ends);
        Ok(GroupReport { description, assignments, partitions })
    }

    /// A group's committed offsets (the next offset to read), of the partitions asked for or
    /// of every partition it has one for (`None`).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Result<BTreeMap<(String, u32), i64>, ClientError> {
        let partitions = partitions.map(|list| {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, p) in list {
                by_topic.entry(topic.clone()).or_default().push(*p as i32);
            }
            by_topic.into_iter().collect()
        });
        let call = GroupCall::FetchOffsets { group_id: group.into(), partitions };
        match self.group_call(call, Duration::ZERO).await? {
            GroupAnswer::FetchOffsets(offsets) => Ok(offsets
                .into_iter()
                .filter(|o| o.offset >= 0)
                .filter_map(|o| Some(((o.topic, u32::try_from(o.partition).ok()?), o.offset)))
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// A consumer in group `group` of `topics` (see [`GroupConsumer`]).
    pub fn group_consumer(&self, group: &str, topics: &[&str], config: GroupConfig) -> GroupConsumer {
        GroupConsumer::new(self.clone(), group, topics, config)
    }
}

fn unexpected(answer: &GroupAnswer) -> ClientError {
    ClientError::Unavailable(format!("unexpected answer from the coordinator: {answer:?}"))
}

/// How a [`GroupConsumer`] takes part in its group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// How long the coordinator waits for a heartbeat before it drops the member and gives
    /// its partitions to the others (Kafka's `session.timeout.ms`, 45 s there; keel's
    /// consumer heartbeats from a task of its own, so it can be short).
    pub session_timeout: Duration,
    /// How long the members have to join again once a rebalance starts.
    pub rebalance_timeout: Duration,
    /// How often the member heartbeats: a third of the session timeout by default.
    pub heartbeat_interval: Duration,
    /// The rule this member offers for dividing partitions, used if it leads the group.
    pub assignor: Assignor,
    /// Where to start in a partition the group has no committed offset for.
    pub from: Offset,
    /// How long a poll waits at the end of the log.
    pub max_wait: Duration,
    /// The group.instance.id of a static member (KIP-345): it keeps its partitions across
    /// restarts within the session timeout.
    pub instance_id: Option<String>,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_millis(3_333),
            assignor: Assignor::Range,
            from: Offset::Earliest,
            max_wait: Duration::from_millis(500),
            instance_id: None,
        }
    }
}

/// One record a [`GroupConsumer`] read.
#[derive(Clone, Debug)]
pub struct GroupRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub record: Record,
}

/// A member of a consumer group: joins the group on its first poll, reads the partitions
/// its group's leader assigns it (from the group's committed offset, or from
/// [`GroupConfig::from`] where there is none), commits what the caller says it handled,
/// and heartbeats from a task of its own; when the group rebalances, the next poll joins
/// again and reads the new assignment from the committed offsets. Delivery is at least
/// once: records read and not committed before a rebalance are read again by their
/// partition's next owner. [`GroupConsumer::leave`] hands its partitions over at once;
/// dropping it without leaving lets them go only when its session times out.
///
/// The subscription and assignment are Kafka's ConsumerProtocol, so Kafka's tools describe
/// the group, and Kafka consumers offering the same assignor can share it.
pub struct GroupConsumer {
    client: Client,
    group: String,
    topics: Vec<String>,
    config: GroupConfig,
    member_id: String,
    generation: i32,
    /// Set by the heartbeat task when the coordinator says the group rebalances (or no
    /// longer knows this member): the next poll joins again.
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    consumers: Vec<Consumer>,
    /// The position last committed, per partition read.
    committed: BTreeMap<(String, u32), u64>,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

impl GroupConsumer {
    fn new(client: Client, group: &str, topics: &[&str], config: GroupConfig) -> GroupConsumer {
        GroupConsumer {
            client,
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            config,
            member_id: String::new(),
            generation: -1,
            rejoin: Arc::new(AtomicBool::new(true)),
            heartbeat: None,
            consumers: Vec::new(),
            committed: BTreeMap::new(),
        }
    }

    /// The member id the coordinator gave this consumer (empty before the first join).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The partitions this member reads in its current generation.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.consumers.iter().map(|c| c.partition().clone()).collect()
    }

    /// Whether the next poll will join the group (again) first.
    pub fn must_join(&self) -> bool {
        self.rejoin.load(Ordering::Relaxed)
    }

    /// Per assigned partition, the next offset this member will read.
    pub fn positions(&self) -> Vec<((String, u32), Option<u64>)> {
        self.consumers.iter().map(|c| (c.partition().clone(), c.position())).collect()
    }

    /// The next records of the assigned partitions, joining the group first if it must;
    /// empty when nothing arrived within the max wait.
    pub async fn poll(&mut self) -> Result<Vec<GroupRecord>, ClientError> {
        if self.rejoin.load(Ordering::Relaxed) {
            self.join().await?;
        }
        if self.consumers.is_empty() {
            // Nothing assigned (more members than partitions): wait as a poll would.
            tokio::time::sleep(self.config.max_wait).await;
            return Ok(Vec::new());
        }
        let polls = self.consumers.iter_mut().map(|c| async move {
            let partition = c.partition().clone();
            c.poll().await.map(|records| (partition, records))
        });
        let mut out = Vec::new();
        for result in futures_util::future::join_all(polls).await {
            let ((topic, partition), records) = result?;
            out.extend(records.into_iter().map(|(offset, record)| GroupRecord {
                topic: topic.clone(),
                partition,
                offset,
                record,
            }));
        }
        Ok(out)
    }

    /// Commits the position of every assigned partition that moved since its last commit:
    /// everything polled so far counts as handled. A commit the group refuses because it
    /// rebalanced (or dropped this member) makes the next poll join again, and is
    /// returned as [`ClientError::Group`]: those records will be read again.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let positions: BTreeMap<(String, u32), u64> =
            self.consumers.iter().filter_map(|c| Some((c.partition().clone(), c.position()?))).collect();
        self.commit_offsets(&positions).await
    }

    /// Commits `offsets` (per partition, the next offset to read: the offset after the last
    /// record handled), skipping those already committed. Refusals as for `commit`.
    pub async fn commit_offsets(&mut self, offsets: &BTreeMap<(String, u32), u64>) -> Result<(), ClientError> {
        let offsets: Vec<CommitOffset> = offsets
            .iter()
            .filter(|(key, position)| self.committed.get(*key) != Some(*position))
            .map(|((topic, partition), position)| CommitOffset {
                topic: topic.clone(),
                partition: *partition as i32,
                offset: *position as i64,
                leader_epoch: -1,
                metadata: None,
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let call = GroupCall::Commit(CommitRequest {
            group_id: self.group.clone(),
            generation_id: self.generation,
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            offsets: offsets.clone(),
        });
        let results = match self.client.group_call(call, Duration::ZERO).await? {
            GroupAnswer::Commit(r) => r.partitions,
            other => return Err(unexpected(&other)),
        };
        let mut refused = None;
        for (offset, result) in offsets.iter().zip(results) {
            match result.error {
                None => {
                    self.committed.insert((offset.topic.clone(), offset.partition as u32), offset.offset as u64);
                }
                Some(e) => refused = Some(e),
            }
        }
        match refused {
            None => Ok(()),
            Some(e) => {
                if rejoins(&e) {
                    self.rejoin.store(true, Ordering::Relaxed);
                }
                if matches!(e, GroupError::UnknownMemberId) {
                    self.member_id.clear();
                }
                Err(ClientError::Group(e))
            }
        }
    }

    /// Leaves the group, so that its partitions go to the other members at once.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        if self.member_id.is_empty() {
            return Ok(());
        }
        let member = LeavingMember { member_id: self.member_id.clone(), group_instance_id: None };
        let call = GroupCall::Leave(LeaveRequest { group_id: self.group.clone(), members: vec![member] });
        match self.client.group_call(call, Duration::ZERO).await? {
            GroupAnswer::Leave(r) => match r.error.or_else(|| r.members.into_iter().find_map(|(_, e)| e)) {
                // Already dropped: nothing to leave.
                None | Some(GroupError::UnknownMemberId) => Ok(()),
                Some(e) => Err(ClientError::Group(e)),
            },
            other => Err(unexpected(&other)),
        }
    }

    /// Joins (or rejoins) the group until a generation is complete, then starts reading the
    /// assignment from the committed offsets.
    async fn join(&mut self) -> Result<(), ClientError> {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        self.consumers.clear();
        let assignment = loop {
            self.rejoin.store(false, Ordering::Relaxed);
            let joined =
                match self.client.group_call(GroupCall::Join(self.join_request()), self.rebalance_wait()).await? {
                    GroupAnswer::Join(r) => r,
                    other => return Err(unexpected(&other)),
                };
            match joined.error {
                None => {}
                Some(GroupError::MemberIdRequired) => {
                    self.member_id = joined.member_id;
                    continue;
                }
                Some(GroupError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(GroupError::RebalanceInProgress) => continue,
                Some(e) => return Err(ClientError::Group(e)),
            }
            self.member_id = joined.member_id.clone();
            self.generation = joined.generation_id;
            let assignments = if joined.leader == self.member_id {
                let protocol = joined.protocol_name.as_deref().unwrap_or(self.config.assignor.name());
                self.assign(protocol, &joined.members).await?
            } else {
                Vec::new()
            };
            let sync = GroupCall::Sync(SyncRequest {
                group_id: self.group.clone(),
                generation_id: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: self.config.instance_id.clone(),
                assignments,
            });
            let synced = match self.client.group_call(sync, self.rebalance_wait()).await? {
                GroupAnswer::Sync(r) => r,
                other => return Err(unexpected(&other)),
            };
            match synced.error {
                None => break synced.assignment,
                Some(e) if rejoins(&e) => {
                    if matches!(e, GroupError::UnknownMemberId) {
                        self.member_id.clear();
                    }
                    continue;
                }
                Some(e) => return Err(ClientError::Group(e)),
            }
        };
        let partitions = decode_assignment(&assignment).map_err(|e| {
            ClientError::Unavailable(format!("the group's leader sent an assignment keel cannot read: {e}"))
        })?;
        let committed = self.client.committed_offsets(&self.group, Some(&partitions)).await?;
        self.committed.clear();
        for (topic, partition) in partitions {
            let key = (topic.clone(), partition);
            let from = match committed.get(&key) {
                Some(&offset) => {
                    self.committed.insert(key, offset as u64);
                    Offset::At(offset as u64)
                }
                None => self.config.from,
            };
            let consumer = self.client.consumer_of(&topic, partition, from).max_wait(self.config.max_wait);
            self.consumers.push(consumer);
        }
        self.heartbeat = Some(tokio::spawn(heartbeat(
            self.client.clone(),
            HeartbeatRequest {
                group_id: self.group.clone(),
                generation_id: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: self.config.instance_id.clone(),
            },
            self.config.heartbeat_interval,
            self.rejoin.clone(),
        )));
        Ok(())
    }

    fn join_request(&self) -> JoinRequest {
        JoinRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
            protocols: vec![Protocol {
                name: self.config.assignor.name().into(),
                metadata: encode_subscription(&self.topics),
            }],
            session_timeout_ms: self.config.session_timeout.as_millis() as i32,
            rebalance_timeout_ms: self.config.rebalance_timeout.as_millis() as i32,
            require_known_member_id: true,
            client_id: "keel".into(),
            client_host: String::new(),
        }
    }

    /// How long a join or sync may wait for the other members.
    fn rebalance_wait(&self) -> Duration {
        self.config.rebalance_timeout
    }

    /// The leader's part: divides the partitions of every member's topics among them.
    async fn assign(
        &self,
        protocol: &str,
        members: &[crate::groups::JoinedMember],
    ) -> Result<Vec<(String, bytes::Bytes)>, ClientError> {
        let assignor = Assignor::by_name(protocol).ok_or_else(|| {
            ClientError::Unavailable(format!("the group chose assignor {protocol:?}, which keel's consumer lacks"))
        })?;
        let subscriptions: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|m| (m.member_id.clone(), decode_subscription(&m.metadata).unwrap_or_default()))
            .collect();
        let mut counts = BTreeMap::new();
        for topic in subscriptions.iter().flat_map(|(_, topics)| topics).collect::<BTreeSet<_>>() {
            match self.client.partitions(topic).await {
                Ok(n) => {
                    counts.insert(topic.clone(), n);
                }
                // A member subscribed to a topic that does not exist gets none of it.
                Err(ClientError::UnknownTopic(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(assignor
            .assign(&subscriptions, &counts)
            .into_iter()
            .map(|(member, partitions)| (member, encode_assignment(&partitions)))
            .collect())
    }
}

/// Whether a refusal means the member must join again.
fn rejoins(e: &GroupError) -> bool {
    matches!(e, GroupError::RebalanceInProgress | GroupError::UnknownMemberId)
        || matches!(e.code(), 22 /* ILLEGAL_GENERATION */)
}

/// Heartbeats every `interval` until the coordinator says to rejoin (then sets `rejoin`
/// and ends) or the consumer stops the task.
async fn heartbeat(client: Client, request: HeartbeatRequest, interval: Duration, rejoin: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(interval).await;
        match client.group_call(GroupCall::Heartbeat(request.clone()), Duration::ZERO).await {
            Ok(GroupAnswer::Heartbeat(r)) if r.error.is_some() => {
                rejoin.store(true, Ordering::Relaxed);
                return;
            }
            // Answered, or not in time: beat again at the next interval.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_mean_join_again() {
        assert!(rejoins(&GroupError::RebalanceInProgress));
        assert!(rejoins(&GroupError::UnknownMemberId));
        assert!(rejoins(&GroupError::IllegalGeneration { given: 1, current: 2 }));
        assert!(rejoins(&GroupError::Remote { code: 22, message: String::new() }));
        assert!(!rejoins(&GroupError::InvalidGroupId { rule: "x" }));
    }
}
