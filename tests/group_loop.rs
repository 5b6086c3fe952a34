//! One node's group loop driven by hand: the other two nodes are played by the test,
//! which injects their messages as `Event::Peer`, so exact interleavings of elections and
//! client batches can be set up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::batch::{BatchBuilder, Compression, Record};
use keel::net::peer::SendError;
use keel::raft::{self, Membership, Message, Role};
use keel::replica::Replica;
use keel::replica::backend::SharedLog;
use keel::replica::hard_state::HardStateFile;
use keel::server::Retention;
use keel::server::group::{Event, Group, GroupParts, PeerSender};
use keel::server::produce::{ProduceError, ProduceResult};
use keel::server::status::GroupStatus;
use segments::{Entry, EntryMeta, Log};
use tokio::sync::{mpsc, oneshot};

/// What node 1 sends is lost: the test plays the other nodes.
struct Nowhere;

impl PeerSender for Nowhere {
    fn send(&self, _to: u64, _group: u64, _msg: &Message) -> Result<(), SendError> {
        Ok(())
    }

    fn learn_address(&self, _id: u64, _address: SocketAddr) {}

    fn alive(&self, _id: u64) -> bool {
        true
    }
}

struct Harness {
    events: mpsc::Sender<Event>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_in(tempfile::tempdir().unwrap(), false).await
    }

    /// A partition's replica: data entries are Kafka batches, stamped and tracked by the
    /// producer table.
    async fn partition() -> Harness {
        Harness::start_in(tempfile::tempdir().unwrap(), true).await
    }

    /// Starts node 1 on the files in `dir` (a new or a stopped harness's).
    async fn start_in(dir: tempfile::TempDir, stamp_batches: bool) -> Harness {
        let seg = segments::Config { segment_bytes: 8 << 20, entry_bytes_max: 1 << 20, ..segments::Config::default() };
        let (log, _) = Log::open(&dir.path().join("log"), seg).unwrap();
        let initial = Membership { voters: [1, 2, 3].into(), ..Membership::default() };
        let hard = HardStateFile::open(dir.path(), initial).unwrap();
        let replica = Replica::open(raft::Config::new(1, 42), SharedLog::new(log), hard).unwrap();
        let parts = GroupParts {
            group: 1,
            replica,
            peers: Arc::new(Nowhere),
            retention: Retention::default(),
            node_gauges: true,
            metadata: None,
            stamp_batches,
            leaders: Default::default(),
        };
        let (group, _published) = Group::new(parts);
        let (tx, rx) = mpsc::channel(1024);
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let r = group.run(rx, tx2).await;
            eprintln!("group ended: {:?}", r.err());
        });
        // The node's clock, as the node's ticker would drive it.
        let ticks = tx.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            loop {
                ticker.tick().await;
                if ticks.send(Event::Tick).await.is_err() {
                    return;
                }
            }
        });
        Harness { events: tx, dir }
    }

    /// Stops the group cleanly and gives back a copy of its files: the stopped task's fsync
    /// helper keeps the log itself open (and locked) until the process ends.
    async fn stop(self) -> tempfile::TempDir {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Shutdown(tx)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx).await.expect("stopped in time").unwrap();
        let copy = tempfile::tempdir().unwrap();
        copy_dir(self.dir.path(), copy.path());
        copy
    }

    async fn peer(&self, from: u64, msg: Message) {
        self.events.send(Event::Peer(from, msg)).await.unwrap();
    }

    async fn status(&self) -> GroupStatus {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Status(tx)).await.unwrap();
        rx.await.unwrap()
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&GroupStatus) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.status().await;
            if f(&v) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {v:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Wins an election for node 1 with node `voter`'s (pre-)vote. `term` is the term it wins.
    async fn win(&self, voter: u64, term: u64) {
        self.wait_for("pre-candidate", |v| v.role == Role::PreCandidate && v.term == term - 1).await;
        self.peer(voter, Message::PreVoteResponse { term, granted: true }).await;
        self.wait_for("candidate", |v| v.role == Role::Candidate && v.term == term).await;
        self.peer(voter, Message::VoteResponse { term, granted: true }).await;
        self.wait_for("leader", |v| v.role == Role::Leader && v.term == term).await;
    }

    async fn produce(&self, stream: u64, payload: &'static [u8]) -> oneshot::Receiver<ProduceResult> {
        let (reply, rx) = oneshot::channel();
        let event = Event::Propose {
            payload: Bytes::from_static(payload),
            record_count: 1,
            stream,
            received: std::time::Instant::now(),
            reply,
        };
        self.events.send(event).await.unwrap();
        rx
    }
}

/// A batch pending at a leader that then lost its index to another leader's entry is
/// answered `NotLeader` ("not appended: resend it and everything after it"). A later batch
/// of the same stream, proposed after this node became leader again, must not be appended
/// meanwhile, or the producer's resend would land behind its successor and duplicate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_batch_was_pending_at_a_lost_leadership_is_refused_after() {
    let h = Harness::start().await;
    // Term 1: node 1 leads with node 2's vote; the bootstrap configuration is entry 1.
    h.win(2, 1).await;
    h.peer(2, Message::AppendResponse { term: 1, index: 1, reject: None }).await;
    h.wait_for("entry 1 committed", |v| v.commit_index == 1).await;

    // Batch A of stream 7 is appended at index 2 in term 1, and nobody acknowledges it.
    let a = h.produce(7, b"A").await;
    h.wait_for("A appended", |v| v.last_index == 2).await;

    // Node 2 leads term 2 (elected by node 3) and overwrites index 2 with its no-op on node 1;
    // then it dies before it hears the acknowledgement.
    let noop =
        Entry::encode(EntryMeta { index: 2, term: 2, kind: raft::kind::NOOP, base_offset: 0, record_count: 0 }, &[]);
    h.peer(2, Message::Append { term: 2, prev_index: 1, prev_term: 1, commit: 1, entries: vec![noop] }).await;
    h.wait_for("follower of term 2", |v| v.role == Role::Follower && v.term == 2 && v.last_index == 2).await;

    // Node 1 times out and wins term 3 with node 3's vote; its no-op is entry 3.
    h.win(3, 3).await;
    // Batch B of the same stream, while A is still pending: either refused at once, or
    // appended at index 4 (then node 3's acknowledgement below commits it).
    let mut b = h.produce(7, b"B").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let early = loop {
        if let Ok(answer) = b.try_recv() {
            break Some(answer);
        }
        if h.status().await.last_index == 4 {
            break None;
        }
        assert!(Instant::now() < deadline, "B was neither answered nor appended");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Node 3 acknowledges the whole log: entries 2.. commit.
    let last = h.status().await.last_index;
    h.peer(3, Message::AppendResponse { term: 3, index: last, reject: None }).await;

    let a = tokio::time::timeout(Duration::from_secs(5), a).await.expect("A answered").unwrap();
    let b = match early {
        Some(answer) => answer,
        None => tokio::time::timeout(Duration::from_secs(5), b).await.expect("B answered").unwrap(),
    };
    eprintln!("A: {a:?}\nB: {b:?}");
    // The promise: once A is answered "not appended, resend it" (NotLeader), no later batch
    // of its stream may be in the log.
    let a_refused = matches!(a, Err(ProduceError::NotLeader { .. }) | Err(ProduceError::Busy(_)));
    assert!(
        !(a_refused && b.is_ok()),
        "A was answered {a:?} (resend from here) but B, sent after it on the same stream, committed: {b:?}"
    );
}

/// An idempotent producer's batch of `records` records from sequence `first_seq`.
fn idempotent_batch(producer_id: i64, epoch: i16, first_seq: i32, records: u32) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None).producer(producer_id, epoch, first_seq);
    for i in 0..records {
        let record = Record { timestamp_ms: 1_000, ..Record::new(format!("record {i}")) };
        builder.push(&record).unwrap();
    }
    builder.finish()
}

/// A data entry of leader `term` holding `batch` at `index`, its first record at `base_offset`.
fn data_entry(index: u64, term: u64, base_offset: u64, batch: &[u8], records: u32) -> Entry {
    let meta = EntryMeta { index, term, kind: raft::kind::DATA, base_offset, record_count: records };
    Entry::encode(meta, batch)
}

/// Every replica applies committed batches to its producer table, and a replica that starts
/// again rebuilds the table from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_tracks_the_producers_of_committed_batches_and_rebuilds_them_on_start() {
    let h = Harness::partition().await;
    // Node 2 leads term 1; its bootstrap configuration is entry 1, then two producers' batches.
    assert_eq!(h.status().await.producers_tracked, 0);
    let entries = vec![
        Entry::encode(EntryMeta { index: 1, term: 1, kind: raft::kind::NOOP, base_offset: 0, record_count: 0 }, &[]),
        data_entry(2, 1, 0, &idempotent_batch(7, 0, 0, 3), 3),
        data_entry(3, 1, 3, &idempotent_batch(8, 0, 0, 2), 2),
    ];
    h.peer(2, Message::Append { term: 1, prev_index: 0, prev_term: 0, commit: 3, entries }).await;
    h.wait_for("both producers tracked", |v| v.commit_index == 3 && v.producers_tracked == 2).await;

    let h = Harness::start_in(h.stop().await, true).await;
    h.wait_for("both producers rebuilt", |v| v.producers_tracked == 2).await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
