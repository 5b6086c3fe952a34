//! One node's group loop driven by hand: the other two nodes are played by the test,
//! which injects their messages as `Event::Peer`, so exact interleavings of elections and
//! client batches can be set up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::net::client_codec::ErrorReply;
use keel::net::peer::Peers;
use keel::net::tls::NodeTls;
use keel::raft::{self, Membership, Message};
use keel::replica::hard_state::HardStateFile;
use keel::server::group::{Event, Group, GroupParts, ProduceResult};
use keel::server::{Retention, repair};
use segments::{Entry, EntryMeta, Log};
use tokio::sync::{mpsc, oneshot};

struct Harness {
    events: mpsc::Sender<Event>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        keel::net::certs::generate(&tls_dir, &[1, 2, 3], &[], false).unwrap();
        let tls = NodeTls::load(&tls_dir, 1, false).unwrap();
        let endpoint = keel::net::endpoint::node_endpoint("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
        // Peers at addresses nobody listens on: what node 1 sends is lost; the test plays them.
        let addresses: BTreeMap<u64, SocketAddr> = [
            (1, "127.0.0.1:9".parse().unwrap()),
            (2, "127.0.0.1:9".parse().unwrap()),
            (3, "127.0.0.1:9".parse().unwrap()),
        ]
        .into();
        let peers_cfg: BTreeMap<u64, SocketAddr> =
            addresses.iter().filter(|(id, _)| **id != 1).map(|(a, b)| (*a, *b)).collect();
        let (peers, _inbound) = Peers::start(endpoint, 1, 7, &peers_cfg, 64);
        let seg = segments::Config { segment_bytes: 8 << 20, entry_bytes_max: 1 << 20, ..segments::Config::default() };
        let (log, _) = Log::open(&dir.path().join("log"), seg).unwrap();
        let initial = Membership { voters: [1, 2, 3].into(), ..Membership::default() };
        let mut hard = HardStateFile::open(dir.path(), initial).unwrap();
        let log = Arc::new(RwLock::new(log));
        let mut next = hard.persisted().clone();
        let config = raft::Config::new(1, 42);
        let raft = repair::start_core(config, &log, &mut hard, &mut next, 0).unwrap();
        let parts = GroupParts {
            id: 1,
            cluster_id: 7,
            raft,
            log,
            hard,
            peers,
            addresses,
            retention: Retention { bytes: None, age: None },
            tick: Duration::from_millis(20),
        };
        let (group, _committed, _leader) = Group::new(parts);
        let (tx, rx) = mpsc::channel(1024);
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let r = group.run(rx, tx2).await;
            eprintln!("group ended: {:?}", r.err());
        });
        Harness { events: tx, _dir: dir }
    }

    async fn peer(&self, from: u64, msg: Message) {
        self.events.send(Event::Peer(from, msg)).await.unwrap();
    }

    async fn status(&self) -> keel::net::client_codec::ClusterView {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Status(tx)).await.unwrap();
        rx.await.unwrap()
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&keel::net::client_codec::ClusterView) -> bool) {
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
        self.wait_for("pre-candidate", |v| v.role == "candidate" && v.term == term - 1).await;
        self.peer(voter, Message::PreVoteResponse { term, granted: true }).await;
        self.wait_for("candidate", |v| v.role == "candidate" && v.term == term).await;
        self.peer(voter, Message::VoteResponse { term, granted: true }).await;
        self.wait_for("leader", |v| v.role == "leader" && v.term == term).await;
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
    h.wait_for("follower of term 2", |v| v.role == "follower" && v.term == 2 && v.last_index == 2).await;

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
    let a_refused = matches!(a, Err(ErrorReply::NotLeader { .. }) | Err(ErrorReply::Busy(_)));
    assert!(
        !(a_refused && b.is_ok()),
        "A was answered {a:?} (resend from here) but B, sent after it on the same stream, committed: {b:?}"
    );
}
