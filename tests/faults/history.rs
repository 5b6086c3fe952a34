//! The history: every operation the workload and the nemesis performed, timestamped, as
//! JSON lines (one `Op` per line) written as the run goes, and kept in memory for the
//! checker. A record is named by its id, `w<writer>-<sequence>`; values carry padding
//! after the id and a `|`, which the history leaves out.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One line of the history. `t` is seconds since the run started. Operations on the log
/// name their partition (`part`); histories written before partitions read as `default`/0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// A producer sent one batch: `ids` in order, acknowledged at `offset` (the first one's).
    Send {
        t: f64,
        #[serde(flatten)]
        part: Part,
        writer: u32,
        ids: Vec<String>,
        outcome: Outcome,
        done: f64,
    },
    /// A consumer reading through `node` got `ids` at `offset`, `offset + 1`, ...
    Poll {
        t: f64,
        #[serde(flatten)]
        part: Part,
        consumer: u32,
        node: u64,
        offset: u64,
        ids: Vec<String>,
    },
    /// A poll that failed (the node was down, cut off, repairing...).
    PollFailed {
        t: f64,
        #[serde(flatten)]
        part: Part,
        consumer: u32,
        node: u64,
        offset: u64,
        error: String,
    },
    /// The nemesis started or healed a fault.
    Fault { t: f64, phase: Phase, name: String, detail: String },
    /// After healing: node `node`'s whole committed log of a partition, record by record from offset 0.
    Final {
        t: f64,
        #[serde(flatten)]
        part: Part,
        node: u64,
        ids: Vec<String>,
    },
    /// After healing: a partition's replicas' committed logs compared byte for byte (`Ok`) or not.
    Compare {
        t: f64,
        #[serde(flatten)]
        part: Part,
        nodes: Vec<u64>,
        commit: u64,
        differences: Vec<String>,
    },
    /// Something that fails the run by itself: a node that exited on its own, a cluster
    /// that did not converge after healing, a final read that did not complete.
    Problem { t: f64, what: String },
}

/// A partition of a topic: offsets, and so every check but availability, are per partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Part {
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub partition: u32,
}

fn default_topic() -> String {
    "default".into()
}

impl Part {
    pub fn new(topic: &str, partition: u32) -> Part {
        Part { topic: topic.into(), partition }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Committed at this offset.
    Ok { offset: u64 },
    /// Known not appended.
    Fail { error: String },
    /// May or may not have been appended.
    Unknown { error: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    Heal,
}

impl Op {
    /// The partition an operation on the log concerns.
    pub fn part(&self) -> Option<&Part> {
        match self {
            Op::Send { part, .. }
            | Op::Poll { part, .. }
            | Op::PollFailed { part, .. }
            | Op::Final { part, .. }
            | Op::Compare { part, .. } => Some(part),
            Op::Fault { .. } | Op::Problem { .. } => None,
        }
    }

    pub fn time(&self) -> f64 {
        match self {
            Op::Send { done, .. } => *done,
            Op::Poll { t, .. }
            | Op::PollFailed { t, .. }
            | Op::Fault { t, .. }
            | Op::Final { t, .. }
            | Op::Compare { t, .. }
            | Op::Problem { t, .. } => *t,
        }
    }
}

/// The record id in a value: everything before the first `|`.
pub fn id_of(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == b'|').unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Appends ops to the history file and keeps them for the checker. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    file: BufWriter<File>,
    ops: Vec<Op>,
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        let file = BufWriter::new(File::create(path)?);
        Ok(Recorder { inner: Arc::new(Mutex::new(Inner { file, ops: Vec::new() })), start: Instant::now() })
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn record(&self, op: Op) {
        let mut inner = self.inner.lock().expect("history lock");
        let line = serde_json::to_string(&op).expect("an op serializes");
        let _ = writeln!(inner.file, "{line}");
        inner.ops.push(op);
    }

    /// Flushes the file and hands out every op so far.
    pub fn ops(&self) -> Vec<Op> {
        let mut inner = self.inner.lock().expect("history lock");
        let _ = inner.file.flush();
        inner.ops.clone()
    }
}

/// Reads a history file back (to check it again, or a hand-written one).
pub fn read(path: &Path) -> std::io::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
        .collect()
}
