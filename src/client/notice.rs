//! What a client tells its user while it keeps trying: that no node answers, that no node
//! knows a leader, that the leader refuses produce for a reason that may pass. The client
//! goes on retrying until each call's deadline either way; a notice only says why it waits.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::net::client_codec::ErrorReply;

/// How long the cluster stays silent (or leaderless) before a notice says so.
pub const NOTICE_AFTER: Duration = Duration::from_secs(3);
/// Notices a slow subscriber may fall behind by; it then misses the oldest.
const NOTICES_MAX: usize = 64;

/// Something the user should know while the client keeps trying (see [`super::Client::notices`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Notice {
    /// No node answered anything for `silent_for`.
    #[error("no node answers at {}; retrying", list(addresses))]
    NoNodeAnswers { addresses: Vec<SocketAddr>, silent_for: Duration },
    /// A node answered again after [`Notice::NoNodeAnswers`].
    #[error("{address} answers again")]
    NodeAnswers { address: SocketAddr },
    /// Nodes answer, but for a while none has known a leader: fewer than a majority of the
    /// voters are up, or they cannot reach each other.
    #[error(
        "nodes at {} answer but know no leader (a majority of the voters must be up and connected); retrying",
        list(answering)
    )]
    NoLeader { answering: Vec<SocketAddr> },
    /// The leader refused produce for a reason that can pass (its disk is nearly full).
    #[error("{reason}; retrying")]
    ProduceRefused { reason: String },
    /// An idempotent producer's session on a partition was bumped to a new epoch, its
    /// sequences restarted, and the records not yet appended sent on in it.
    #[error("renewed the idempotent producer session for {topic}/{partition}: {why}")]
    ProducerSessionRenewed { topic: String, partition: u32, why: String },
}

fn list(addresses: &[SocketAddr]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Decides when to send each notice: once per episode, not once per failed request.
pub(super) struct Notices {
    tx: broadcast::Sender<Notice>,
    state: Mutex<State>,
}

struct State {
    last_answer: Instant,
    said_silent: bool,
    leaderless_since: Option<Instant>,
    leaderless: Vec<SocketAddr>,
    said_leaderless: bool,
    said_refusal: Option<String>,
}

impl Notices {
    pub(super) fn new() -> Notices {
        let state = State {
            last_answer: Instant::now(),
            said_silent: false,
            leaderless_since: None,
            leaderless: Vec::new(),
            said_leaderless: false,
            said_refusal: None,
        };
        Notices { tx: broadcast::channel(NOTICES_MAX).0, state: Mutex::new(state) }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("notices lock")
    }

    fn send(&self, notice: Notice) {
        // Nobody listening is fine: notices are advice.
        let _ = self.tx.send(notice);
    }

    /// Says `notice` as it is (something that happened once, not an episode).
    pub(super) fn say(&self, notice: Notice) {
        self.send(notice);
    }

    /// A node at `address` answered.
    pub(super) fn answered(&self, address: SocketAddr) {
        let mut state = self.state();
        state.last_answer = Instant::now();
        if std::mem::take(&mut state.said_silent) {
            drop(state);
            self.send(Notice::NodeAnswers { address });
        }
    }

    /// A request got no answer; `addresses` are the nodes the client knows.
    pub(super) fn unanswered(&self, addresses: impl FnOnce() -> Vec<SocketAddr>) {
        let mut state = self.state();
        let silent_for = state.last_answer.elapsed();
        if silent_for >= NOTICE_AFTER && !state.said_silent {
            state.said_silent = true;
            drop(state);
            self.send(Notice::NoNodeAnswers { addresses: addresses(), silent_for });
        }
    }

    /// The node at `address` answered that it knows no leader.
    pub(super) fn leaderless(&self, address: SocketAddr) {
        let mut state = self.state();
        let since = *state.leaderless_since.get_or_insert_with(Instant::now);
        if !state.leaderless.contains(&address) {
            state.leaderless.push(address);
        }
        if since.elapsed() >= NOTICE_AFTER && !state.said_leaderless {
            state.said_leaderless = true;
            let answering = state.leaderless.clone();
            drop(state);
            self.send(Notice::NoLeader { answering });
        }
    }

    pub(super) fn leader_found(&self) {
        let mut state = self.state();
        state.leaderless_since = None;
        state.leaderless.clear();
        state.said_leaderless = false;
    }

    /// The leader refused a produce with `refusal`, which may pass; said once per node and
    /// kind of refusal (not again as the figures in it change), until a produce succeeds.
    pub(super) fn produce_refused(&self, refusal: &ErrorReply) {
        let key = match refusal {
            ErrorReply::DiskFull { node, .. } => format!("disk full on node {node}"),
            other => other.to_string(),
        };
        let mut state = self.state();
        if state.said_refusal.as_ref() != Some(&key) {
            state.said_refusal = Some(key);
            drop(state);
            self.send(Notice::ProduceRefused { reason: refusal.to_string() });
        }
    }

    /// A produce was acknowledged: a refusal said before is over.
    pub(super) fn produce_accepted(&self) {
        self.state().said_refusal = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn silence_is_said_once_after_a_few_seconds_and_its_end_once() {
        let notices = Notices::new();
        let mut rx = notices.subscribe();
        notices.unanswered(|| vec![addr(1)]);
        assert!(rx.try_recv().is_err(), "one failure at once is not silence");
        notices.state().last_answer = Instant::now().checked_sub(NOTICE_AFTER).expect("uptime");
        notices.unanswered(|| vec![addr(1), addr(2)]);
        notices.unanswered(|| vec![addr(1), addr(2)]);
        let said = rx.try_recv().expect("a notice");
        assert_eq!(said.to_string(), "no node answers at 127.0.0.1:1,127.0.0.1:2; retrying");
        assert!(rx.try_recv().is_err(), "said once");
        notices.answered(addr(2));
        notices.answered(addr(2));
        assert_eq!(rx.try_recv().expect("a notice"), Notice::NodeAnswers { address: addr(2) });
        assert!(rx.try_recv().is_err(), "said once");
    }

    #[test]
    fn no_leader_is_said_once_after_a_few_seconds_naming_who_answered() {
        let notices = Notices::new();
        let mut rx = notices.subscribe();
        notices.leaderless(addr(1));
        assert!(rx.try_recv().is_err(), "an election takes less than a few seconds");
        notices.state().leaderless_since = Some(Instant::now().checked_sub(NOTICE_AFTER).expect("uptime"));
        notices.leaderless(addr(2));
        notices.leaderless(addr(2));
        assert_eq!(rx.try_recv().expect("a notice"), Notice::NoLeader { answering: vec![addr(1), addr(2)] });
        assert!(rx.try_recv().is_err(), "said once");
        notices.leader_found();
        notices.leaderless(addr(1));
        assert!(rx.try_recv().is_err(), "a new episode starts its own few seconds");
    }

    #[test]
    fn a_refusal_is_said_at_once_and_again_only_in_a_new_episode() {
        let notices = Notices::new();
        let mut rx = notices.subscribe();
        let full = |free_bytes| ErrorReply::DiskFull { node: 2, free_bytes, reserve_bytes: 256 << 20 };
        notices.produce_refused(&full(100 << 20));
        notices.produce_refused(&full(99 << 20));
        let said = rx.try_recv().expect("said at once");
        assert!(said.to_string().starts_with("disk nearly full on node 2: 100 MiB free, below the 256 MiB reserve"));
        assert!(rx.try_recv().is_err(), "not again as the free space changes");
        notices.produce_accepted();
        notices.produce_refused(&full(99 << 20));
        assert!(rx.try_recv().is_ok(), "a new episode is said again");
    }
}
