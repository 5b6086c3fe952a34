//! Real Kafka clients against real `keel serve` processes: kcat (librdkafka),
//! confluent-kafka, kafka-python 2 and 3 and aiokafka 0.12 and 0.14, from the pinned
//! environment `.ci/kafka-clients` installs. The scripts they run are in `tests/kafka/`
//! (its README is the compatibility checklist). Outside CI, without the clients, each test
//! says so and passes; in CI (`CI` set) their absence fails it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, keel};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv() -> PathBuf {
    std::env::var_os("KAFKA_VENV").map_or_else(|| repo().join("target/kafka-venv"), PathBuf::from)
}

/// Whether the clients are installed; in CI their absence is a failure.
fn clients_installed() -> bool {
    let kcat = Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    let installed = kcat.is_ok_and(|s| s.success()) && venv().join("main/.installed").exists();
    if !installed {
        assert!(std::env::var_os("CI").is_none(), "the Kafka clients are not installed: run .ci/kafka-clients");
        eprintln!("skipped: the Kafka clients are not installed (run .ci/kafka-clients)");
    }
    installed
}

/// The tests of this file run one at a time: each starts three nodes and real clients, and
/// two at once on a 2-core machine starve each other into timeouts that test nothing.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The right to run, once the clients are installed (`None`: skip).
async fn serial() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if !clients_installed() {
        return None;
    }
    Some(SERIAL.lock().await)
}

fn kafka_addr(cluster: &Cluster, id: u64) -> String {
    cluster.node(id).kafka.clone().expect("a Kafka listener")
}

/// Runs a command to its end (at most `limit`), returning whether it succeeded, its
/// standard output and its standard error (read as it comes, so that a full pipe never stalls it).
/// The command runs in a process group of its own, killed whole at the end: a script's
/// helpers that outlive it (a failed check leaves them running) would otherwise hold its
/// pipes open and the reads here would never end.
fn run(command: &mut Command, limit: Duration) -> (bool, String, String) {
    use std::os::unix::process::CommandExt;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).spawn().expect("spawn");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) with the negated id of the group this function created; no memory is shared.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
    let late = if Instant::now() > deadline { format!("timed out after {limit:?}\n") } else { String::new() };
    (ok, out, format!("{late}{err}"))
}

/// The lines a script prints, as they come.
fn lines_of(script: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a script to end (killed after `limit`); its last lines go to `seen`. Answers
/// its exit status and its standard error.
fn finish(
    script: &mut std::process::Child,
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = script.kill();
            seen.push(format!("the script did not end within {limit:?}"));
            break script.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        seen.push(line);
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut script.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kafka_client_check_passes_against_three_nodes() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &["--auto-create-topics"]);
    cluster.wait_set_up(1).await;
    // Bootstrapped from one node: the clients find the partitions' leaders on the others.
    let mut command = Command::new(repo().join("tests/kafka/run-all"));
    command.arg(kafka_addr(&cluster, 2)).env("KAFKA_VENV", venv());
    let (ok, out, err) = run(&mut command, Duration::from_secs(600));
    println!("{out}");
    assert!(ok, "a Kafka client check failed:\n{out}\n{err}\n{}", cluster.logs());
}

/// `--kafka-tls`: kcat checks each node's certificate against the cluster CA (and its host
/// name) on every connection, bootstrap and leaders alike; a client that does not speak TLS
/// gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_over_tls_trusts_the_cluster_ca() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &["--auto-create-topics", "--kafka-tls"]);
    cluster.wait_set_up(1).await;
    let mut command = Command::new(repo().join("tests/kafka/kcat.sh"));
    command.arg(kafka_addr(&cluster, 3)).env("KAFKA_CA", cluster.tls.join("ca.pem"));
    let (ok, out, err) = run(&mut command, Duration::from_secs(120));
    println!("{out}");
    assert!(ok, "kcat over TLS failed:\n{out}\n{err}");
    // Plain TCP to a TLS listener: no metadata comes back.
    let mut plain = Command::new("kcat");
    plain.args(["-b", &kafka_addr(&cluster, 3), "-L", "-m", "3"]);
    let (ok, out, _) = run(&mut plain, Duration::from_secs(30));
    assert!(!ok || !out.contains("brokers:"), "a plaintext client was served by a TLS listener: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_and_keel_read_each_others_records() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &["--auto-create-topics"]);
    cluster.wait_set_up(1).await;
    let kafka = kafka_addr(&cluster, 1);
    let boot = cluster.bootstrap_arg();
    let tls = cluster.tls.to_str().unwrap().to_string();
    let lines: String = (0..2_000).map(|i| format!("line {i} {}\n", "z".repeat(i % 300))).collect();

    // keel produce, then kcat reads.
    let (status, _, err) =
        keel(&["produce", "--bootstrap", &boot, "--tls", &tls, "--topic", "from-keel"], lines.as_bytes());
    assert!(status.success(), "keel produce: {err}");
    let mut kcat = Command::new("kcat");
    kcat.args(["-b", &kafka, "-C", "-t", "from-keel", "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
    let (ok, out, err) = run(&mut kcat, Duration::from_secs(60));
    assert!(ok, "kcat -C: {err}");
    assert!(out == lines, "kcat read other records than keel produced ({} bytes, not {})", out.len(), lines.len());

    // kcat produces with each compression, then keel consume reads.
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("from-kcat-{codec}");
        let mut kcat = Command::new("kcat");
        kcat.args(["-b", &kafka, "-P", "-t", &topic, "-z", codec, "-X", "acks=all", "-X", "linger.ms=20"]);
        let mut child = kcat.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), lines.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kcat -P -z {codec}: {}", String::from_utf8_lossy(&out.stderr));
        let (status, out, err) =
            keel(&["consume", "--bootstrap", &boot, "--tls", &tls, "--topic", &topic, "--from", "earliest"], b"");
        assert!(status.success(), "keel consume of {codec} batches: {err}");
        assert!(out == lines, "keel consume read other records than kcat produced with {codec}");
    }
}

/// A Python check that the test acts on as it runs: it prints `leader N`, then `producing`.
struct Script {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// A script a failed assertion leaves behind is stopped, not left running past its test.
impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Script {
    fn start(name: &str, bootstrap: String) -> Script {
        Script::start_in("main", name, bootstrap)
    }

    /// `name` run by the Python of the virtual environment `env` (`main`, `kp3`, ...).
    fn start_in(env: &str, name: &str, bootstrap: String) -> Script {
        let mut child = Command::new(venv().join(env).join("bin/python"))
            .arg(repo().join("tests/kafka").join(name))
            .arg(bootstrap)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Script { child, lines, seen: Vec::new() }
    }

    /// Reads until the script says it is producing (at most 90 s); the leader it named.
    fn leader_once_producing(&mut self) -> u64 {
        let mut leader = None;
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) else {
                if self.child.try_wait().unwrap().is_some() {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err);
                    panic!("the script ended early: {:?}\n{err}", self.seen);
                }
                continue;
            };
            self.seen.push(line.clone());
            if let Some(id) = line.strip_prefix("leader ") {
                leader = Some(id.parse::<u64>().expect("a broker id"));
            }
            if line == "producing" {
                return leader.unwrap_or_else(|| panic!("the script named no leader: {:?}", self.seen));
            }
        }
        panic!("the script did not start producing within 90 s: {:?}", self.seen);
    }

    /// Waits for the script's end (at most `limit`): whether it succeeded, what it printed
    /// and its standard error.
    fn finish(mut self, limit: Duration) -> (bool, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the script did not end within {limit:?}: {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status.success(), self.seen.join("\n"), err)
    }
}

/// kill -9 of a partition's leader while confluent-kafka produces to it with acks=all:
/// every record with a successful delivery report is read back at its reported offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_record_a_kafka_client_saw_acknowledged() {
    let Some(_one_at_a_time) = serial().await else { return };
    let mut cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let mut script = Script::start("failover.py", format!("{},{}", kafka_addr(&cluster, 1), kafka_addr(&cluster, 2)));
    let leader = script.leader_once_producing();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(leader);
    let (ok, out, err) = script.finish(Duration::from_secs(300));
    println!("killed node {leader}\n{out}");
    assert!(ok, "{out}\n{err}\n{}", cluster.logs());
}

/// The retries the nodes answered as duplicates and the batches they refused out of order,
/// summed over the nodes (a node restarted meanwhile counts from its restart).
fn producer_checks(cluster: &Cluster) -> (f64, f64) {
    let sum = |name| -> f64 { (1..=3).filter_map(|id| cluster.metric(id, name)).sum() };
    (sum("keel_producer_duplicates_total"), sum("keel_producer_out_of_order_total"))
}

/// An idempotent confluent-kafka producer while each node in turn, partition leaders among
/// them, is stopped (SIGSTOP) and let go on: a batch that a stopped leader replicated but
/// never answered is committed by the next leader, and the client's retry of it must be
/// answered as a duplicate; a batch that reaches the next leader before an earlier one's
/// retry must be refused as out of order. Every record is consumed exactly once, in order
/// per partition (`idempotent.py`). With the leader's sequence check turned off, 4 runs of 4
/// failed here with 33 or 34 records written twice and out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_writes_each_record_once_across_a_paused_leader() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let bootstrap = (1..=3).map(|id| kafka_addr(&cluster, id)).collect::<Vec<_>>().join(",");
    let mut script = Script::start("idempotent.py", bootstrap);
    let leader = script.leader_once_producing();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The leader of partition 0 first, then the others; each longer than an election and
    // the client's request timeout (2 s).
    for id in [leader, leader % 3 + 1, (leader + 1) % 3 + 1] {
        cluster.pause(id);
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.signal(id, libc::SIGCONT);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (ok, out, err) = script.finish(Duration::from_secs(300));
    let (duplicates, gaps) = producer_checks(&cluster);
    println!("paused node {leader}, then the others, 4 s each\n{out}");
    println!("{duplicates} retries answered as duplicates, {gaps} batches refused out of order");
    assert!(ok, "{out}\n{err}\n{}", cluster.logs());
}

/// kafka-python 3, idempotent by default, while the leader of partition 0 is killed -9 and
/// restarted, then another node paused and let go on (`idempotent_kp3.py`): every record
/// is acknowledged, and consumed exactly once, in order per partition, at the offset its
/// send reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_3_writes_each_record_once_across_a_killed_and_a_paused_leader() {
    let Some(_one_at_a_time) = serial().await else { return };
    let mut cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let bootstrap = (1..=3).map(|id| kafka_addr(&cluster, id)).collect::<Vec<_>>().join(",");
    let mut script = Script::start_in("kp3", "idempotent_kp3.py", bootstrap);
    let leader = script.leader_once_producing();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(leader);
    // Longer than an election and the client's request timeout (2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = leader % 3 + 1;
    cluster.pause(other);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.signal(other, libc::SIGCONT);
    let (ok, out, err) = script.finish(Duration::from_secs(300));
    let (duplicates, gaps) = producer_checks(&cluster);
    println!("killed node {leader}, then paused node {other}\n{out}");
    println!("{duplicates} retries answered as duplicates, {gaps} batches refused out of order");
    assert!(ok, "{out}\n{err}\n{}", cluster.logs());
}

/// confluent-kafka consumer groups (`tests/kafka/groups.py`): two members split a
/// 6-partition topic, one leaves and the other takes every partition, and a new member
/// resumes at the offsets the group committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_splits_partitions_and_resumes_from_committed_offsets() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let mut command = Command::new(venv().join("main/bin/python"));
    command.arg(repo().join("tests/kafka/groups.py")).arg(kafka_addr(&cluster, 2));
    let (ok, out, err) = run(&mut command, Duration::from_secs(300));
    println!("{out}");
    assert!(ok, "the consumer group check failed:\n{out}\n{err}\n{}", cluster.logs());
    // Every partition of __consumer_offsets has a coordinator on its leader; the group went
    // through at least three generations (two members, one, a new one) and committed.
    let total = |name: &str| (1..=3).filter_map(|id| cluster.metric(id, name)).sum::<f64>();
    let offsets_partitions = f64::from(keel::server::controller::OFFSETS_PARTITIONS);
    assert_eq!(total("keel_group_coordinators"), offsets_partitions, "coordinators over the nodes");
    assert!(total("keel_group_rebalances_total") >= 3.0, "rebalances: {}", total("keel_group_rebalances_total"));
    let commits = total("keel_group_offset_commits_total");
    assert!(commits >= 6.0, "offset commits: {commits}");
}

/// kafka-python 2 and 3 consumer groups (`tests/kafka/kafka_python_groups.py`): a member
/// reads and commits, a new member resumes at the committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_consumer_groups_resume_from_committed_offsets() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    for env in ["main", "kp3"] {
        let mut command = Command::new(venv().join(env).join("bin/python"));
        command.arg(repo().join("tests/kafka/kafka_python_groups.py")).arg(kafka_addr(&cluster, 3));
        let (ok, out, err) = run(&mut command, Duration::from_secs(300));
        println!("{out}");
        assert!(ok, "kafka-python ({env}) consumer groups failed:\n{out}\n{err}\n{}", cluster.logs());
    }
}

/// kill -9 of the node that coordinates a confluent-kafka consumer group: a new member
/// finds the new coordinator and resumes at the committed offsets, none gone back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_keeps_its_offsets_when_its_coordinator_is_killed() {
    let Some(_one_at_a_time) = serial().await else { return };
    let mut cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let bootstrap = (1..=3).map(|id| kafka_addr(&cluster, id)).collect::<Vec<_>>().join(",");
    let mut script = Command::new(venv().join("main/bin/python"))
        .arg(repo().join("tests/kafka/groups.py"))
        .arg(&bootstrap)
        .arg("--failover")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let rx = lines_of(&mut script);
    let mut seen = Vec::new();
    let mut coordinator = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    while coordinator.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            if script.try_wait().unwrap().is_some() {
                break;
            }
            continue;
        };
        seen.push(line.clone());
        coordinator = line.strip_prefix("coordinator ").map(|id| id.parse::<u64>().expect("a broker id"));
    }
    let Some(coordinator) = coordinator else {
        let _ = script.kill();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut script.stderr.take().unwrap(), &mut err).unwrap();
        panic!("the script named no coordinator: {seen:?}\n{err}\n{}", cluster.logs());
    };
    cluster.kill(coordinator);
    std::io::Write::write_all(&mut script.stdin.take().unwrap(), b"killed\n").unwrap();
    let (status, err) = finish(&mut script, &rx, &mut seen, Duration::from_secs(240));
    println!("killed node {coordinator}\n{}", seen.join("\n"));
    assert!(status.success(), "{}\n{err}\n{}", seen.join("\n"), cluster.logs());
}

/// Three confluent-kafka consumers, each its own process, in one group on a 6-partition
/// topic (`tests/kafka/group_members.py`): every partition assigned once, 60 000 records
/// produced while they run each consumed at least once, one member killed -9 and its
/// partitions reassigned within the session timeout and a few seconds; then `keel group
/// describe` shows the offsets the group committed as confluent-kafka reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kafka_consumers_share_a_topic_and_keel_describes_their_group() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let mut command = Command::new(venv().join("main/bin/python"));
    command.arg(repo().join("tests/kafka/group_members.py")).arg(kafka_addr(&cluster, 1));
    let (ok, out, err) = run(&mut command, Duration::from_secs(240));
    println!("{out}");
    assert!(ok, "the three-member group check failed:\n{out}\n{err}\n{}", cluster.logs());
    let line = out.lines().find_map(|l| l.strip_prefix("group ")).expect("the script names its group");
    let mut words = line.split_whitespace();
    let (group, topic) = (words.next().expect("group"), words.next().expect("topic"));
    let committed: Vec<(u64, i64)> = words
        .map(|w| w.split_once(':').map(|(p, o)| (p.parse().unwrap(), o.parse().unwrap())).expect("p:offset"))
        .collect();
    assert_eq!(committed.len(), 6, "{line}");

    let (bootstrap, tls) = (cluster.bootstrap_arg(), cluster.tls.to_string_lossy().into_owned());
    let args = ["group", "describe", group, "--bootstrap", &bootstrap, "--tls", &tls, "--format", "json"];
    let (status, stdout, stderr) = keel(&args, b"");
    assert!(status.success(), "keel group describe: {stderr}");
    let described: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    for (partition, offset) in committed {
        let shown = described["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .find(|p| p["topic"] == topic && p["partition"] == partition)
            .unwrap_or_else(|| panic!("partition {partition} missing: {described}"));
        assert_eq!(shown["committed"], offset, "partition {partition}: {described}");
        assert!(shown["end"].as_u64().is_some_and(|end| end as i64 >= offset), "{described}");
    }
}

/// A Kafka fetch that waits for more bytes (`fetch.min.bytes`) reads its partitions again
/// each round; what it sends is counted once: kcat reading a topic whose one batch is all it
/// holds makes `keel_topic_fetch_bytes_total` equal to the batch bytes produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_kafka_fetch_counts_the_bytes_it_sends_once() {
    let Some(_one_at_a_time) = serial().await else { return };
    let cluster = Cluster::start_kafka(3, &[]);
    cluster.wait_set_up(1).await;
    let client = cluster.client().await;
    client.create_topic("counted", Some(1), Some(3), &[]).await.expect("create topic");
    let records = ["a", "b", "c"].map(keel::batch::Record::new).to_vec();
    client.produce_to("counted", 0, records).await.expect("produce");
    let leader =
        client.metadata(Some(&["counted"])).await.expect("metadata").topic("counted").expect("topic").partitions[0]
            .leader
            .expect("a leader");
    let series = |name: &str| format!("{name}{{topic=\"counted\"}}");
    let produced = cluster.metric(leader, &series("keel_topic_produce_bytes_total")).expect("produce bytes");
    assert!(produced > 0.0);

    let mut kcat = Command::new("kcat");
    kcat.args(["-b", &kafka_addr(&cluster, leader), "-C", "-t", "counted", "-p", "0", "-o", "beginning", "-e", "-q"]);
    kcat.args(["-X", "fetch.min.bytes=1000000", "-X", "fetch.wait.max.ms=300"]);
    let (ok, out, err) = run(&mut kcat, Duration::from_secs(60));
    assert!(ok && out == "a\nb\nc\n", "kcat -C: {out}{err}");
    let fetched: f64 = (1..=3).filter_map(|id| cluster.metric(id, &series("keel_topic_fetch_bytes_total"))).sum();
    assert_eq!(fetched, produced, "fetch bytes counted once per byte sent");
}
