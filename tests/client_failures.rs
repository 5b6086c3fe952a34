//! What the client commands and the Rust client do when the cluster cannot take their
//! requests: nodes down, a disk below its reserve, certificates that do not fit. Each says
//! why at once (or after a few seconds of silence) and gives up within its timeout.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, keel, spawn_keel};
use keel::batch::Record;
use keel::client::{CertificateError, Client, ClientConfig, ClientError};

/// A `keel` process whose stderr lines are kept with the time each arrived.
struct Watched {
    child: Child,
    started: Instant,
    stderr: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Watched {
    fn spawn(args: &[&str]) -> Watched {
        let mut child = spawn_keel(args);
        let started = Instant::now();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (lines, pipe) = (stderr.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((started.elapsed(), line));
            }
        });
        Watched { child, started, stderr }
    }

    /// When a stderr line containing `text` arrived, waiting up to `within` for it.
    fn said(&self, text: &str, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((at, _)) = self.stderr.lock().unwrap().iter().find(|(_, l)| l.contains(text)) {
                return Some(*at);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `within` for the exit; returns (status, time since start, stdout, stderr).
    fn exit(mut self, within: Duration) -> (std::process::ExitStatus, Duration, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("keel did not exit within {within:?}; stderr: {:?}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.started.elapsed();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut out).unwrap();
        // The reader thread ends with the pipe; give it a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let err: Vec<String> = self.stderr.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
        (status, took, out, err.join("\n"))
    }
}

/// Regression (issue 18): `keel status` waited for a down node's QUIC handshake to time
/// out, 4 s, exactly when an operator runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_a_node_down_answers_within_its_timeout_and_names_it_unreachable() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let down = if leader == 3 { 2 } else { 3 };
    cluster.kill(down);
    let boot = cluster.bootstrap_arg();
    let started = Instant::now();
    let (status, out, err) = keel(&["status", "--bootstrap", &boot, "--tls", cluster.tls.to_str().unwrap()], b"");
    let took = started.elapsed();
    assert!(status.success(), "{err}");
    assert!(took <= Duration::from_millis(1500), "status took {took:?} with node {down} down");
    let row = out.lines().find(|l| l.trim_start().starts_with(&format!("{down} "))).expect("a row per node");
    assert!(row.contains("unreachable"), "{out}");
    // Every live node must answer here: a generous timeout (CI runs several clusters on 2 cores).
    let tls = cluster.tls.to_str().unwrap();
    let args = ["status", "--bootstrap", &boot, "--tls", tls, "--format", "json", "--timeout", "10s"];
    let (status, out, err) = keel(&args, b"");
    assert!(status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for node in json["nodes"].as_array().unwrap() {
        let role = node["role"].as_str().unwrap();
        assert_eq!(role == "unreachable", node["id"] == down, "{out}");
    }
    println!("keel status with node {down} down took {took:?}");
}

/// Regression (issue 18): with every node down, `keel produce` printed nothing and, while
/// its stdin stayed open, never gave up. It now says so after a few seconds, and after
/// --timeout reports the pending records as not acknowledged and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_produce_and_consume_say_so_and_give_up_after_their_timeout() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    for id in 1..=3 {
        cluster.kill(id);
    }
    let boot = cluster.bootstrap_arg();
    let tls = cluster.tls.to_str().unwrap();
    let addresses: Vec<String> = cluster.bootstrap();
    // stdin stays open, as when a person types: the record must still be answered.
    let mut produce =
        Watched::spawn(&["produce", "--print-offsets", "--timeout", "6s", "--bootstrap", &boot, "--tls", tls]);
    produce.child.stdin.as_mut().unwrap().write_all(b"one\ntwo\n").unwrap();
    let said = produce.said("no node answers at", Duration::from_secs(6)).expect("says that no node answers");
    assert!(said <= Duration::from_secs(5), "said after {said:?}");
    let line = produce.stderr.lock().unwrap().iter().find(|(_, l)| l.contains("no node answers")).unwrap().1.clone();
    for addr in &addresses {
        assert!(line.contains(addr.as_str()), "the notice names every address: {line}");
    }
    let (status, took, out, err) = produce.exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(took >= Duration::from_secs(6) && took <= Duration::from_secs(8), "gave up after {took:?}");
    assert_eq!(out, "-\n-\n", "each pending record is reported as not acknowledged");
    assert!(err.contains("2 of 2 records were not acknowledged"), "{err}");
    assert!(err.contains("gave up after 6s"), "{err}");

    let consume = Watched::spawn(&["consume", "--timeout", "5s", "--bootstrap", &boot, "--tls", tls]);
    assert!(consume.said("no node answers at", Duration::from_secs(5)).is_some(), "consume says so too");
    let (status, took, _, err) = consume.exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(took <= Duration::from_secs(7), "consume gave up after {took:?}");
    assert!(err.contains("gave up after 5s"), "{err}");

    // The Rust client: the same deadline on every call.
    let mut config = ClientConfig::new(addresses, &cluster.tls);
    config.timeout = Duration::from_secs(2);
    let client = Client::connect(config).await.expect("client");
    let started = Instant::now();
    let result = client.produce(vec![Record::new("x")]).await;
    assert!(matches!(result, Err(ClientError::TimedOut { .. })), "{result:?}");
    assert!(result.unwrap_err().known_failed(), "nothing was sent");
    let result = client.metadata(None).await;
    assert!(matches!(result, Err(ClientError::TimedOut { .. })), "{result:?}");
    assert!(started.elapsed() <= Duration::from_secs(5), "two calls took {:?}", started.elapsed());
}

/// Regression (issue 18): with the leader's disk below its reserve, produce and bench
/// retried "busy" forever and printed nothing. The node's reason reaches the user at once,
/// the records fail after --timeout, and `keel status` and the metrics show the node
/// refusing produce. (A reserve larger than any disk makes every node refuse.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_below_its_reserve_is_said_at_once_and_produce_fails_after_its_timeout() {
    const RESERVE: u64 = 1 << 50;
    let reserve = RESERVE.to_string();
    let cluster = Cluster::start(3, &["--disk-free-bytes-min", &reserve]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let boot = cluster.bootstrap_arg();
    let tls = cluster.tls.to_str().unwrap();
    let mut produce =
        Watched::spawn(&["produce", "--print-offsets", "--timeout", "4s", "--bootstrap", &boot, "--tls", tls]);
    produce.child.stdin.take().unwrap().write_all(b"a\nb\nc\n").unwrap();
    let expected = format!("disk nearly full on node {leader}: ");
    let said = produce.said(&expected, Duration::from_secs(4)).expect("the node's reason is shown");
    assert!(said <= Duration::from_millis(1500), "shown after {said:?}");
    let (status, took, out, err) = produce.exit(Duration::from_secs(8));
    assert!(!status.success());
    assert!(took <= Duration::from_secs(6), "gave up after {took:?}");
    assert_eq!(out, "-\n-\n-\n");
    assert!(err.contains(&format!("below the {} MiB reserve (disk_free_bytes_min)", RESERVE >> 20)), "{err}");
    assert!(err.contains("3 of 3 records were not acknowledged"), "{err}");
    let notices = err.lines().filter(|l| l.starts_with("warning: disk nearly full")).count();
    assert_eq!(notices, 1, "said once, not at every retry: {err}");

    let bench = Watched::spawn(&[
        "bench",
        "--records",
        "100",
        "--size",
        "64",
        "--timeout",
        "3s",
        "--bootstrap",
        &boot,
        "--tls",
        tls,
    ]);
    let (status, took, _, err) = bench.exit(Duration::from_secs(10));
    assert!(!status.success(), "bench must fail: {err}");
    assert!(err.contains("disk nearly full on node"), "{err}");
    assert!(took <= Duration::from_secs(6), "bench gave up after {took:?}");

    let (status, out, err) =
        keel(&["status", "--bootstrap", &boot, "--tls", tls, "--format", "json", "--timeout", "10s"], b"");
    assert!(status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for node in json["nodes"].as_array().unwrap() {
        assert_eq!(node["refuses_produce"], true, "{out}");
        assert_eq!(node["disk_reserve_bytes"], RESERVE, "{out}");
        assert!(node["disk_free_bytes"].as_u64().unwrap() > 0, "{out}");
    }
    let (_, text, _) = keel(&["status", "--bootstrap", &boot, "--tls", tls, "--timeout", "10s"], b"");
    assert!(text.contains(&format!("node {leader} refuses produce")), "{text}");
    assert_eq!(cluster.metric(leader, "keel_disk_nearly_full"), Some(1.0));
    assert_eq!(cluster.metric(leader, "keel_disk_reserve_bytes"), Some(RESERVE as f64));
    // Reads go on.
    let (status, _, err) = keel(&["consume", "--from", "earliest", "--bootstrap", &boot, "--tls", tls], b"");
    assert!(status.success(), "{err}");
}

/// Regression (issue 18): a --tls directory without a client certificate made produce
/// report an alarming "outcome unknown"; one from another cluster made it hang. Each
/// mistake now fails every client command within 2 s, naming the cause and the fix, and
/// the Rust client returns a certificate error without retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_mistakes_fail_every_command_at_once_naming_the_cause() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let boot = cluster.bootstrap_arg();
    let mistakes = tempfile::tempdir_in(common::test_tmp()).unwrap();
    let only_ca = mistakes.path().join("only-ca");
    std::fs::create_dir_all(&only_ca).unwrap();
    std::fs::copy(cluster.tls.join("ca.pem"), only_ca.join("ca.pem")).unwrap();
    let foreign = mistakes.path().join("foreign");
    keel::net::certs::generate(&foreign, &[1], &[], false).unwrap();
    let cases = [
        (&only_ca, format!("no client certificate in {} (client.pem, client.key)", only_ca.display())),
        (&foreign, format!("the server's certificate is not signed by {}/ca.pem", foreign.display())),
    ];
    let commands: [&[&str]; 4] =
        [&["produce"], &["consume"], &["status"], &["bench", "--records", "10", "--size", "64"]];
    for (dir, cause) in &cases {
        for command in commands {
            let mut args = command.to_vec();
            args.extend(["--bootstrap", &boot, "--tls", dir.to_str().unwrap()]);
            let started = Instant::now();
            let (status, _, err) = keel(&args, b"a record\n");
            let took = started.elapsed();
            assert!(!status.success(), "{command:?} with {}", dir.display());
            assert!(took <= Duration::from_secs(2), "{command:?} with {} took {took:?}", dir.display());
            assert!(err.contains(cause.as_str()), "{command:?} with {}: {err}", dir.display());
            assert!(!err.contains("outcome is unknown"), "{command:?}: {err}");
        }
    }
    let client = Client::connect(ClientConfig::new(cluster.bootstrap(), &only_ca)).await.unwrap();
    let started = Instant::now();
    match client.produce(vec![Record::new("x")]).await {
        Err(ClientError::Certificate(CertificateError::NoClientCertificate { dir })) => assert_eq!(dir, only_ca),
        other => panic!("without a client certificate: {other:?}"),
    }
    let client = Client::connect(ClientConfig::new(cluster.bootstrap(), &foreign)).await.unwrap();
    match client.produce(vec![Record::new("x")]).await {
        Err(e @ ClientError::Certificate(CertificateError::ServerCertificateRefused { .. })) => {
            assert!(e.known_failed())
        }
        other => panic!("with another cluster's CA: {other:?}"),
    }
    assert!(started.elapsed() <= Duration::from_secs(2), "not retried: {:?}", started.elapsed());
}
