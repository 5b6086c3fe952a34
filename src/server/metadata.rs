//! The metadata group's state machine as its task runs it: every committed entry of group 0
//! is a `metadata::Command`, applied in index order to a `MetadataState` that the node's
//! other parts watch (`watch::Receiver<Arc<MetadataState>>`). A command proposed here is
//! answered once its own entry is applied, with what applying it did or why it was refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use crate::codec::DecodeError;
use crate::ids::Index;
use crate::metadata::{Applied, Command, MetaError, MetadataState};
use crate::raft::{NodeId, Snapshot, kind};
use crate::replica::backend::SharedLog;

/// How long a proposed command waits for its entry to be applied.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries read from the log per read while applying.
const APPLY_READ_BYTES: usize = 1 << 20;

/// Why a metadata command was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("this node does not lead the metadata group")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Busy(String),
    /// Applied and refused by the state machine: the message names the rule.
    #[error(transparent)]
    Refused(#[from] MetaError),
    #[error("the outcome is unknown: {0}")]
    OutcomeUnknown(String),
}

pub type CommandResult = Result<Applied, CommandError>;

struct Waiter {
    term: u64,
    deadline: Instant,
    reply: oneshot::Sender<CommandResult>,
}

/// The state machine of group 0 and the commands waiting for their entries.
pub struct MetadataMachine {
    state: Arc<MetadataState>,
    applied: u64,
    published: watch::Sender<Arc<MetadataState>>,
    waiters: BTreeMap<u64, Waiter>,
}

impl MetadataMachine {
    pub fn new() -> (MetadataMachine, watch::Receiver<Arc<MetadataState>>) {
        let state = Arc::new(MetadataState::new());
        let (published, rx) = watch::channel(state.clone());
        (MetadataMachine { state, applied: 0, published, waiters: BTreeMap::new() }, rx)
    }

    pub fn state(&self) -> &Arc<MetadataState> {
        &self.state
    }

    /// The index of the last entry applied (or of the snapshot restored).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Starts over from a snapshot: the state it holds, applied through its index (a
    /// replica's kept snapshot at start, or one a leader sent). Entries after it are
    /// applied from the log as they commit.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), DecodeError> {
        let state = MetadataState::restore(snapshot.data.clone())?;
        self.state = Arc::new(state);
        self.applied = snapshot.meta.index();
        self.published.send_replace(self.state.clone());
        Ok(())
    }

    /// Waits for the entry a command was proposed as.
    pub fn wait(&mut self, index: u64, term: u64, reply: oneshot::Sender<CommandResult>) {
        self.waiters.insert(index, Waiter { term, deadline: Instant::now() + COMMAND_TIMEOUT, reply });
    }

    /// Applies the entries after the last applied one through `commit`, in order, and
    /// publishes the new state. Entries that are not commands (no-ops, configurations)
    /// change nothing. A log that was reset past `applied` (a snapshot or reset from the
    /// leader) is replayed from its start.
    pub fn apply_committed(&mut self, log: &SharedLog, commit: u64) {
        if commit <= self.applied {
            return;
        }
        let mut changed = false;
        let mut entries = Vec::new();
        while self.applied < commit {
            entries.clear();
            let read = log.read().read(self.applied + 1, APPLY_READ_BYTES, &mut entries);
            if let Err(e) = read {
                // The group's repair finds and cuts damage; the entries come back from the
                // leader and are applied then.
                warn!(index = self.applied + 1, error = %e, "cannot read metadata entries to apply");
                break;
            }
            for entry in entries.iter().take_while(|e| e.index() <= commit) {
                let index = entry.index();
                let result = if entry.kind() == kind::DATA {
                    changed = true;
                    let state = Arc::make_mut(&mut self.state);
                    match Command::decode(entry.payload()) {
                        Ok(command) => {
                            let result = state.apply(Index(index), &command);
                            debug!(index, ?command, ?result, "metadata command applied");
                            result.map_err(CommandError::Refused)
                        }
                        Err(e) => Err(CommandError::Busy(format!("entry {index} is not a metadata command: {e}"))),
                    }
                } else {
                    Err(CommandError::OutcomeUnknown(format!("entry {index} holds no command")))
                };
                self.applied = index;
                if let Some(waiter) = self.waiters.remove(&index) {
                    let answer = if entry.term() == waiter.term {
                        result
                    } else {
                        Err(CommandError::NotLeader { leader: None })
                    };
                    let _ = waiter.reply.send(answer);
                }
            }
            if entries.is_empty() {
                break;
            }
        }
        if changed {
            self.published.send_replace(self.state.clone());
        }
    }

    /// Answers the commands whose wait is over: their outcome is unknown.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self.waiters.iter().filter(|(_, w)| w.deadline <= now).map(|(i, _)| *i).collect();
        for index in expired {
            let waiter = self.waiters.remove(&index).expect("present");
            let why = format!("entry {index} was not applied within {COMMAND_TIMEOUT:?}");
            let _ = waiter.reply.send(Err(CommandError::OutcomeUnknown(why)));
        }
    }
}
