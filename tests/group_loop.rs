//! One node's group loop driven by hand: the other two nodes are played by the test,
//! which injects their messages as `Event::Peer`, so exact interleavings of elections and
//! client batches can be set up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::batch::{BatchBuilder, Compression, Record};
use keel::net::peer::SendError;
use keel::producers::{ProducerConfig, ProducerError};
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
            consumer_offsets: false,
            leaders: Default::default(),
            producers: ProducerConfig::default(),
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
        self.produce_records(stream, Bytes::from_static(payload), 1).await
    }

    async fn produce_records(&self, stream: u64, payload: Bytes, records: u32) -> oneshot::Receiver<ProduceResult> {
        let (reply, rx) = oneshot::channel();
        let event =
            Event::Propose { payload, record_count: records, stream, received: std::time::Instant::now(), reply };
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

/// Producer 7's batch of `records` records from `first_seq` at epoch `epoch`, sent to node 1.
async fn send(h: &Harness, epoch: i16, first_seq: i32, records: u32) -> oneshot::Receiver<ProduceResult> {
    h.produce_records(0, idempotent_batch(7, epoch, first_seq, records), records).await
}

async fn answer(rx: oneshot::Receiver<ProduceResult>) -> ProduceResult {
    tokio::time::timeout(Duration::from_secs(5), rx).await.expect("answered in time").unwrap()
}

/// Node 1 leads term 1 with node 2's vote; its bootstrap configuration (entry 1) committed.
async fn leading_partition() -> Harness {
    let h = Harness::partition().await;
    h.win(2, 1).await;
    h.peer(2, Message::AppendResponse { term: 1, index: 1, reject: None }).await;
    h.wait_for("entry 1 committed", |v| v.commit_index == 1).await;
    h
}

/// Kafka's duplicate rule (KIP-98): a retry of a committed batch is answered with the
/// offsets it got, and a retry of a batch still in flight with the answer it gets; neither
/// is appended again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_answered_with_its_original_offsets_and_appended_once() {
    let h = leading_partition().await;
    let a = send(&h, 0, 0, 3).await;
    h.wait_for("A appended", |v| v.last_index == 2).await;
    h.peer(2, Message::AppendResponse { term: 1, index: 2, reject: None }).await;
    assert_eq!(answer(a).await, Ok((0, 3)));

    // The answer was lost: the producer sends A again.
    assert_eq!(answer(send(&h, 0, 0, 3).await).await, Ok((0, 3)), "a committed batch's retry");
    // B is sent twice before it commits.
    let b = send(&h, 0, 3, 2).await;
    h.wait_for("B appended", |v| v.last_index == 3).await;
    let b_again = send(&h, 0, 3, 2).await;
    assert_eq!(h.status().await.last_index, 3, "B's retry was not proposed");
    h.peer(2, Message::AppendResponse { term: 1, index: 3, reject: None }).await;
    assert_eq!(answer(b).await, Ok((3, 2)));
    assert_eq!(answer(b_again).await, Ok((3, 2)), "an in-flight batch's retry");
    let v = h.status().await;
    assert_eq!((v.last_index, v.log_end_offset), (3, 5), "5 records in 2 entries after the no-op");
}

/// A gap in a producer's sequence is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), and so is an
/// older epoch once a newer one wrote (INVALID_PRODUCER_EPOCH); nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_and_a_fenced_epoch_are_refused_and_not_appended() {
    let h = leading_partition().await;
    let a = send(&h, 0, 0, 3).await;
    h.wait_for("A appended", |v| v.last_index == 2).await;
    // Batch 3..5 was lost; 5.. arrives while A is still in flight, then after A committed.
    let refused = Err(ProducerError::OutOfOrderSequence { producer_id: 7, first_seq: 5, expected: 3 }.into());
    assert_eq!(answer(send(&h, 0, 5, 1).await).await, refused, "a gap after a batch in flight");
    h.peer(2, Message::AppendResponse { term: 1, index: 2, reject: None }).await;
    assert_eq!(answer(a).await, Ok((0, 3)));
    assert_eq!(answer(send(&h, 0, 5, 1).await).await, refused, "a gap after a committed batch");
    assert_eq!(h.status().await.last_index, 2, "no gap appended");

    // A new session (epoch 1) starts at 0; the old one can write no more.
    let new_session = send(&h, 1, 0, 1).await;
    h.wait_for("the new session's batch appended", |v| v.last_index == 3).await;
    let old = answer(send(&h, 0, 3, 1).await).await;
    assert_eq!(old, Err(ProducerError::InvalidProducerEpoch { producer_id: 7, epoch: 0, current: 1 }.into()));
    h.peer(2, Message::AppendResponse { term: 1, index: 3, reject: None }).await;
    assert_eq!(answer(new_session).await, Ok((3, 1)));
    assert_eq!(h.status().await.last_index, 3);
}

/// A leader that crashed after committing A never answered it; the producer retries at the
/// new leader, a replica that applied the same log: it answers with A's offsets, once its
/// own term's first entry is committed (before, its table may lack entries: busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_answers_a_retry_of_a_batch_its_predecessor_committed_as_a_duplicate() {
    let h = Harness::partition().await;
    // Node 2 leads term 1: its configuration at 1, producer 7's batch A at 2, committed.
    let entries = vec![
        Entry::encode(EntryMeta { index: 1, term: 1, kind: raft::kind::NOOP, base_offset: 0, record_count: 0 }, &[]),
        data_entry(2, 1, 0, &idempotent_batch(7, 0, 0, 3), 3),
    ];
    h.peer(2, Message::Append { term: 1, prev_index: 0, prev_term: 0, commit: 2, entries }).await;
    h.wait_for("A committed here", |v| v.commit_index == 2 && v.producers_tracked == 1).await;

    // Node 2 dies; node 1 wins term 2 with node 3's vote. Its no-op (entry 3) is not committed.
    h.win(3, 2).await;
    let early = answer(send(&h, 0, 0, 3).await).await;
    assert!(matches!(early, Err(ProduceError::Busy(_))), "before its no-op commits: {early:?}");
    h.peer(3, Message::AppendResponse { term: 2, index: 3, reject: None }).await;
    h.wait_for("the no-op committed", |v| v.commit_index == 3).await;
    assert_eq!(answer(send(&h, 0, 0, 3).await).await, Ok((0, 3)), "A's retry");
    assert_eq!(h.status().await.last_index, 3, "A was not appended again");
    // The producer goes on from A.
    let b = send(&h, 0, 3, 1).await;
    h.wait_for("B appended", |v| v.last_index == 4).await;
    h.peer(3, Message::AppendResponse { term: 2, index: 4, reject: None }).await;
    assert_eq!(answer(b).await, Ok((3, 1)));
}
