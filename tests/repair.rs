//! Storage damage on real `keel serve` processes: a replica that finds a damaged entry
//! serves nothing it cannot trust; it keeps the entries after it and writes it back from
//! a peer's copy, or, for a damaged tail recovery cut at start, fetches the rest again
//! from the leader and until its log is whole again refuses to vote (ARCHITECTURE.md,
//! "Corruption"; FAST'18, "Protocol-Aware Recovery for Consensus-Based Storage").

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Cluster;
use keel::batch::Record;
use keel::client::Offset;
use keel::server::layout::group_log_dir;
use keel::server::node::DEFAULT_GROUP;

/// The smallest segment that holds one largest batch (4 MiB) comfortably.
const SEGMENT_BYTES: &str = "5242880";

/// Produces `batches` batches of 20 records of ~6 KiB; returns (offset, first value) per batch.
async fn produce(cluster: &Cluster, batches: u64) -> Vec<(u64, String)> {
    produce_from(cluster, 0, batches).await
}

/// As `produce`, numbering the batches from `first`.
async fn produce_from(cluster: &Cluster, first: u64, batches: u64) -> Vec<(u64, String)> {
    let client = cluster.client().await;
    let mut acked = Vec::new();
    for batch in first..first + batches {
        let values: Vec<String> = (0..20).map(|i| format!("b{batch}-r{i}-{}", "x".repeat(6000))).collect();
        let offset = client.produce(values.iter().map(|v| Record::new(v.clone())).collect()).await.expect("produce");
        acked.push((offset, values[0].clone()));
    }
    acked
}

/// Waits until every running node in `ids` committed `index`.
async fn wait_committed(cluster: &Cluster, ids: &[u64], index: u64, within: Duration) {
    let deadline = Instant::now() + within;
    for &id in ids {
        while cluster.view(id).await.is_none_or(|v| v.commit_index < index) {
            assert!(Instant::now() < deadline, "node {id} did not commit {index}\n{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The segment files of a node's log, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(group_log_dir(dir, DEFAULT_GROUP))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips a byte in the middle of the `nth` entry of the oldest sealed segment of the log
/// in `dir` (FORMAT.md: entries start at byte 64, `len` at +4, `index` at +16); returns
/// the entry's index. Works on a running node too: its map sees the change at once.
fn damage_sealed_entry(dir: &Path, nth: usize) -> u64 {
    let files = segment_files(dir);
    assert!(files.len() >= 3, "want sealed segments: {files:?}");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&files[0]).expect("open segment");
    let mut position = segments::SEGMENT_HEADER_LEN as u64;
    let mut header = [0u8; 24];
    for _ in 0..nth {
        file.read_exact_at(&mut header, position).expect("entry header");
        position += u64::from(u32::from_le_bytes(header[4..8].try_into().unwrap()));
    }
    file.read_exact_at(&mut header, position).expect("entry header");
    let len = u64::from(u32::from_le_bytes(header[4..8].try_into().unwrap()));
    let index = u64::from_le_bytes(header[16..24].try_into().unwrap());
    let at = position + len / 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).expect("read");
    file.write_all_at(&[byte[0] ^ 0x5a], at).expect("write");
    index
}

/// Flips a byte in the middle of the last entry of the log in `dir` (the newest segment
/// file holding entries), where recovery scans at open and cuts what does not decode;
/// returns the entry's index.
fn damage_last_entry(dir: &Path) -> u64 {
    for path in segment_files(dir).iter().rev() {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open segment");
        let (mut position, mut last) = (segments::SEGMENT_HEADER_LEN as u64, None);
        let mut header = [0u8; 24];
        while file.read_exact_at(&mut header, position).is_ok() {
            let len = u64::from(u32::from_le_bytes(header[4..8].try_into().unwrap()));
            let index = u64::from_le_bytes(header[16..24].try_into().unwrap());
            if len < segments::HEADER_LEN as u64 || last.is_some_and(|(_, i)| index != i + 1) {
                break;
            }
            last = Some((position + len / 2, index));
            position += len;
        }
        if let Some((at, index)) = last {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).expect("read");
            file.write_all_at(&[byte[0] ^ 0x5a], at).expect("write");
            return index;
        }
    }
    panic!("no entries in {}", dir.display())
}

/// Reads every acknowledged batch through node `id` alone, retrying while it repairs.
async fn read_back(cluster: &Cluster, id: u64, acked: &[(u64, String)], within: Duration) {
    let client = cluster.client_of(id).await;
    let mut consumer = client.consumer(Offset::At(0)).max_wait(Duration::from_millis(200));
    let end = acked.last().map_or(0, |(o, _)| o + 20);
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + within;
    while consumer.position().unwrap_or(0) < end {
        assert!(Instant::now() < deadline, "node {id} served {} of {end} records\n{}", seen.len(), cluster.logs());
        match consumer.poll().await {
            Ok(batch) => seen.extend(batch.into_iter().map(|(o, r)| (o, r.value.unwrap_or_default()))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for (offset, value) in acked {
        assert_eq!(seen.get(offset).map(|v| &v[..]), Some(value.as_bytes()), "node {id}, offset {offset}");
    }
}

fn node_log(cluster: &Cluster, id: u64) -> String {
    std::fs::read_to_string(&cluster.node(id).log).unwrap_or_default()
}

// FAST'18's scenario on real processes. While follower G is down, the leader L and
// follower F commit more entries. Then F's disk damages an old entry, and L goes down.
// F restarts: it finds the damage. Had it cut its log there, its shorter log would let
// G, which lacks the newer entries, win an election. F keeps the entries after the
// damaged one instead (a hole), so its log still ends where it did: G cannot win, F
// can, and it writes the damaged entry back from G's copy (FAST'18 §5, CTRL). Nothing
// acknowledged is lost. Run twice: F's lazily written commit index past the damaged
// entry (the scrub after start finds it), and behind it (the start itself reads it,
// looking for configuration entries).
async fn a_damaged_follower_elects_itself_and_loses_nothing(commit_behind_the_damage: bool) {
    let mut cluster = Cluster::start(3, &["--segment-bytes", SEGMENT_BYTES]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let (follower, lagging) = {
        let rest: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        (rest[0], rest[1])
    };
    let mut acked = produce(&cluster, 150).await;
    cluster.kill(lagging);
    acked.extend(produce_from(&cluster, 150, 20).await);
    let last = cluster.view(leader).await.expect("leader view").last_index;
    wait_committed(&cluster, &[leader, follower], last, Duration::from_secs(10)).await;
    cluster.kill(follower);
    let bad = damage_sealed_entry(&cluster.node(follower).dir, 3);
    if commit_behind_the_damage {
        lower_persisted_commit(&cluster.node(follower).dir, bad - 1);
    }
    cluster.kill(leader);
    cluster.restart(lagging);
    cluster.restart(follower);
    let new = cluster.wait_leader(Duration::from_secs(20), &[leader]).await;
    assert_eq!(new, Some(follower), "only the follower holds every committed entry\n{}", cluster.logs());
    read_back(&cluster, follower, &acked, Duration::from_secs(20)).await;
    let log = node_log(&cluster, follower);
    assert!(log.contains("written back from a peer's copy"), "entry {bad}\n{}", cluster.logs());
    assert!(cluster.metric(follower, "keel_storage_repairs_total").unwrap_or(0.0) >= 1.0);
    assert!(cluster.view(follower).await.expect("view").last_index >= last, "nothing was cut");
    cluster.restart(leader);
    read_back(&cluster, lagging, &acked, Duration::from_secs(20)).await;
}

/// Sets the commit index in the hard state of a stopped node's default group to `commit`:
/// the node went down before its lazily written commit index caught up.
fn lower_persisted_commit(dir: &Path, commit: u64) {
    use keel::replica::hard_state::{HardStateFile, HardStateStore};
    let group = keel::server::layout::group_dir(dir, DEFAULT_GROUP);
    let mut hard = HardStateFile::open(&group, keel::raft::Membership::new([1, 2, 3])).expect("hard state");
    let mut next = hard.persisted().clone();
    next.hard_state.commit = next.hard_state.commit.min(commit);
    hard.save(next).expect("save the hard state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_follower_helps_elect_no_leader_that_lacks_what_it_acknowledged() {
    a_damaged_follower_elects_itself_and_loses_nothing(false).await;
}

// As above, found by the start: the entry could be a configuration entry, so F learns it
// from G's copy before it campaigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_follower_whose_commit_index_lagged_still_elects_itself() {
    a_damaged_follower_elects_itself_and_loses_nothing(true).await;
}

// The same with the damage in the tail that recovery scans at open, where an unsynced
// write torn by a power loss looks the same: F synced and acknowledged the last entry,
// and went down (with L) before its lazily written commit index said it committed. Its
// sync mark tells recovery the entry had been synced, so F holds its vote as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_synced_tail_was_damaged_helps_elect_no_leader_that_lacks_it() {
    let mut cluster = Cluster::start(3, &["--segment-bytes", SEGMENT_BYTES]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let (follower, lagging) = {
        let rest: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        (rest[0], rest[1])
    };
    let mut acked = produce(&cluster, 20).await;
    let before = cluster.view(leader).await.expect("leader view").last_index;
    wait_committed(&cluster, &[1, 2, 3], before, Duration::from_secs(10)).await;
    cluster.kill(lagging);
    // Acknowledged by L and F alone: F synced each before L answered.
    acked.extend(produce_from(&cluster, 20, 5).await);
    cluster.kill(follower);
    cluster.kill(leader);
    let bad = damage_last_entry(&cluster.node(follower).dir);
    assert!(bad > before, "the damaged entry {bad} is one the lagging node lacks ({before})");
    cluster.restart(lagging);
    cluster.restart(follower);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.view(follower).await.is_none_or(|v| v.last_index != bad - 1) {
        assert!(Instant::now() < deadline, "no recovery cut at {bad}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node_log(&cluster, follower).contains("a sync had made durable"), "{}", cluster.logs());
    assert_eq!(cluster.wait_leader(Duration::from_secs(3), &[leader]).await, None, "{}", cluster.logs());
    assert_eq!(cluster.metric(follower, "keel_groups_vote_barrier"), Some(1.0), "the follower's barrier is up");
    cluster.restart(leader);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader once the old one is back");
    read_back(&cluster, follower, &acked, Duration::from_secs(20)).await;
    read_back(&cluster, lagging, &acked, Duration::from_secs(20)).await;
}

// Bit rot under running nodes: a follower and the leader each get a flipped byte in a
// sealed segment. Reads through them find it; each writes the entry back from a peer's
// copy. No acknowledged record is lost or served damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_by_a_read_is_repaired_on_followers_and_leaders() {
    let cluster = Cluster::start(3, &["--segment-bytes", SEGMENT_BYTES]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let acked = produce(&cluster, 150).await;
    let last = cluster.view(leader).await.expect("leader view").last_index;
    wait_committed(&cluster, &[1, 2, 3], last, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // Two of three nodes damaged (in different entries): each still votes for the intact
    // third, whose log is at least as up to date as the ones they had.
    damage_sealed_entry(&cluster.node(follower).dir, 5);
    damage_sealed_entry(&cluster.node(leader).dir, 7);
    read_back(&cluster, follower, &acked, Duration::from_secs(30)).await;
    read_back(&cluster, leader, &acked, Duration::from_secs(30)).await;
    for id in [follower, leader] {
        let repairs = cluster.metric(id, "keel_storage_repairs_total").unwrap_or(0.0);
        assert!(repairs >= 1.0, "node {id} did not repair\n{}", cluster.logs());
    }
    let new = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
    assert!(node_log(&cluster, leader).contains("damaged entry in the log"), "{}", cluster.logs());
    // The cluster still takes writes, and the old leader holds them too.
    let more = produce(&cluster, 5).await;
    let end = more.last().map(|(o, _)| o + 20).expect("acked");
    let view = cluster.view(new).await.expect("view");
    wait_committed(&cluster, &[1, 2, 3], view.commit_index, Duration::from_secs(20)).await;
    assert!(view.log_end_offset >= end);
}

// FAST'18, "Protocol-Aware Recovery for Consensus-Based Storage", §5 (CTRL): two of three
// nodes damaged at different entries, the third down for good. Each keeps the intact
// entries after its damaged one, so both still know where their logs end and elect a
// leader; each fetches the one entry it lacks from the other (Raft §5.3, Log Matching,
// proves the copy is its own) and writes it back in place. Cutting the log instead would
// leave each below the other's vote barrier: no leader, and the entries after the lower
// damage lost if the third never returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_damaged_at_different_entries_with_the_third_down_fetch_each_others_copy() {
    let mut cluster = Cluster::start(3, &["--segment-bytes", SEGMENT_BYTES]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let mut acked = produce(&cluster, 150).await;
    let last = cluster.view(leader).await.expect("leader view").last_index;
    wait_committed(&cluster, &[1, 2, 3], last, Duration::from_secs(10)).await;
    cluster.stop_all();
    let (a, b) = (1, 2);
    let bad_a = damage_sealed_entry(&cluster.node(a).dir, 3);
    let bad_b = damage_sealed_entry(&cluster.node(b).dir, 7);
    assert!(bad_a < bad_b, "damage at different entries: {bad_a}, {bad_b}");
    cluster.restart(a);
    cluster.restart(b);
    cluster.wait_leader(Duration::from_secs(20), &[3]).await.expect("a leader of the two damaged nodes");
    read_back(&cluster, a, &acked, Duration::from_secs(30)).await;
    read_back(&cluster, b, &acked, Duration::from_secs(30)).await;
    for id in [a, b] {
        let log = node_log(&cluster, id);
        assert!(log.contains("written back from a peer's copy"), "node {id}\n{}", cluster.logs());
        assert!(!log.contains("cut the log before a damaged entry"), "node {id}\n{}", cluster.logs());
        assert_eq!(cluster.metric(id, "keel_groups_vote_barrier"), Some(0.0), "node {id}");
    }
    // The two commit new records together, and hold the same bytes.
    acked.extend(produce_from(&cluster, 150, 5).await);
    let last = cluster.view(a).await.expect("view").last_index;
    wait_committed(&cluster, &[a, b], last, Duration::from_secs(10)).await;
    read_back(&cluster, a, &acked, Duration::from_secs(10)).await;
    cluster.stop_all();
    let bytes = |id: u64| -> Vec<bytes::Bytes> {
        common::read_log(&cluster.node(id).dir, DEFAULT_GROUP).iter().map(|e| e.as_bytes().clone()).collect()
    };
    let (log_a, log_b) = (bytes(a), bytes(b));
    let through = usize::try_from(last).expect("an index");
    assert!(log_a.len().min(log_b.len()) >= through, "{} and {} entries", log_a.len(), log_b.len());
    // Through what both committed: the one stopped second may have taken over leadership
    // from the first as it stopped, and appended an entry it could not commit alone.
    let differ: Vec<usize> = (0..through).filter(|i| log_a[*i] != log_b[*i]).collect();
    assert!(differ.is_empty(), "the two logs differ at entries {differ:?}");
}
