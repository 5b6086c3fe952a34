//! Real crashes: a child process appends and syncs in a loop, printing each synced
//! index; the parent kills it with SIGKILL at a random moment, reopens the log and
//! checks that every synced entry is intact and the rest is a clean prefix.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segments::Config;

use crate::common::*;

const CHILD_DIR: &str = "SEGMENTS_CRASH_CHILD_DIR";
const CHILD_TERM: &str = "SEGMENTS_CRASH_CHILD_TERM";
const PAYLOAD_MAX: usize = 900;
const ROUNDS: u64 = 10;

fn config() -> Config {
    Config { segment_bytes: 64 << 10, entry_bytes_max: 1024, index_interval_bytes: 512, timestamp: Some(timestamp) }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The child's side: runs only when the parent re-executes this binary for it.
#[test]
fn child_appends_and_syncs_until_killed() {
    let (Ok(dir), Ok(term)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_TERM)) else { return };
    let term: u64 = term.parse().unwrap();
    let (mut log, _) = open(dir.as_ref(), config());
    let mut rng = XorShift(term.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut stdout = std::io::stdout().lock();
    loop {
        append_made(&mut log, 1 + rng.next() % 20, term, PAYLOAD_MAX);
        if rng.next().is_multiple_of(3) {
            log.sync().unwrap();
            writeln!(stdout, "{}", log.synced_index()).unwrap();
            stdout.flush().unwrap();
        }
    }
}

#[test]
fn synced_entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut terms: Vec<u64> = Vec::new(); // terms of the entries known to be in the log
    let mut synced = 0; // the highest index the last child reported synced
    let deadline = Instant::now() + Duration::from_secs(20);
    // Round r checks what the child of round r - 1 left, then starts a child of its own.
    for round in 1..=ROUNDS + 1 {
        let (log, report) = open(dir.path(), config());
        let all = check_consistent(&log);
        assert!(all.len() as u64 >= synced, "round {round}: synced entry {synced} lost; {report}");
        for (i, e) in all.iter().enumerate() {
            assert!(is_made(e, PAYLOAD_MAX), "round {round}: entry {} is not what was written", e.index());
            let want = terms.get(i).copied().unwrap_or(round - 1);
            assert_eq!(e.term(), want, "round {round}: entry {} changed or is not a clean prefix", e.index());
        }
        terms = all.iter().map(|e| e.term()).collect();
        eprintln!("round {round}: {} entries after recovery, {synced} reported synced; {report}", all.len());
        drop(log);
        if round > ROUNDS || Instant::now() > deadline {
            break;
        }

        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash::child_appends_and_syncs_until_killed", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_TERM, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let synced = BufReader::new(stdout).lines().map_while(Result::ok).filter_map(|l| l.trim().parse().ok());
            synced.inspect(|_| _ = first_tx.send(())).max()
        });
        // The kill comes at a random moment after the child's first sync (on a busy
        // machine, opening the log and the first fsyncs can take a while).
        let _ = first_rx.recv_timeout(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let reported = reader.join().unwrap();
        assert!(reported.is_some(), "round {round}: the child synced nothing before it was killed");
        synced = reported.unwrap_or(0);
    }
    assert!(synced > 0 && terms.len() as u64 >= synced);
}
