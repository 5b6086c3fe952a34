//! A cluster of real `keel serve` processes on loopback, for end-to-end tests.
#![allow(dead_code)]

pub mod load;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel::client::{Client, ClientConfig};
use keel::net::client_codec::ClusterView;
use keel::server::layout::group_log_dir;
use segments::{Entry, Log};

pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Ports that were free a moment ago (bound and released), distinct from each other.
pub fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    sockets.iter().map(|s| s.local_addr().expect("addr").port()).collect()
}

pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub metrics: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// Where the node serves Kafka clients, for a cluster started with `start_kafka`.
    pub kafka: Option<String>,
    child: Option<Child>,
    extra: Vec<String>,
    /// How it comes into the cluster: `--peers` (an initial member), `--join` (the first
    /// start of a node added later), or nothing (a joined node restarting).
    entry: Vec<String>,
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub tls: PathBuf,
    pub nodes: Vec<Node>,
    pub peers: String,
}

impl Cluster {
    /// Makes certificates and starts `n` nodes; `extra` flags go to every `keel serve`.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, extra, false)
    }

    /// As `start`, each node also serving Kafka clients (`--kafka`) on a port of its own.
    pub fn start_kafka(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, extra, true)
    }

    fn start_with(n: u64, extra: &[&str], kafka: bool) -> Cluster {
        let root = tempfile::Builder::new().prefix("keel-test-").tempdir_in(test_tmp()).expect("tempdir");
        let tls = root.path().join("tls");
        let ids: Vec<String> = (1..=n).flat_map(|i| ["--node".to_string(), i.to_string()]).collect();
        let status = Command::new(KEEL).args(["certs", "--dir"]).arg(&tls).args(&ids).stdout(Stdio::null()).status();
        assert!(status.expect("keel certs").success(), "keel certs failed");
        let ports = free_ports(n as usize);
        let metrics = free_tcp_ports(n as usize);
        let kafka_ports = if kafka { free_tcp_ports(n as usize) } else { Vec::new() };
        let peers: Vec<String> = (1..=n).map(|i| format!("{i}=127.0.0.1:{}", ports[i as usize - 1])).collect();
        let mut cluster = Cluster { root, tls, nodes: Vec::new(), peers: peers.join(",") };
        for id in 1..=n {
            let kafka = kafka_ports.get(id as usize - 1).map(|port| format!("127.0.0.1:{port}"));
            let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            if let Some(addr) = &kafka {
                extra.extend(["--kafka".to_string(), addr.clone()]);
            }
            let node = Node {
                id,
                addr: format!("127.0.0.1:{}", ports[id as usize - 1]),
                metrics: format!("127.0.0.1:{}", metrics[id as usize - 1]),
                dir: cluster.root.path().join(format!("node-{id}")),
                log: cluster.root.path().join(format!("node-{id}.log")),
                kafka,
                child: None,
                extra,
                entry: vec!["--peers".into(), cluster.peers.clone()],
            };
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        cluster
    }

    /// Adds node `id` (the next id: ids are consecutive) to the test's nodes without
    /// starting it: its certificate made by `keel certs` with the cluster's CA, its first
    /// start `keel serve --join` through the running nodes, with `extra` flags (`--voter`).
    pub fn prepare_join(&mut self, id: u64, extra: &[&str]) -> &Node {
        assert_eq!(id as usize, self.nodes.len() + 1, "joined nodes take the next id");
        let status = Command::new(KEEL)
            .args(["certs", "--dir"])
            .arg(&self.tls)
            .args(["--node", &id.to_string()])
            .stdout(Stdio::null())
            .status();
        assert!(status.expect("keel certs").success(), "keel certs --node {id} failed");
        let running: Vec<String> = self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.addr.clone()).collect();
        self.nodes.push(Node {
            id,
            addr: format!("127.0.0.1:{}", free_ports(1)[0]),
            metrics: format!("127.0.0.1:{}", free_tcp_ports(1)[0]),
            dir: self.root.path().join(format!("node-{id}")),
            log: self.root.path().join(format!("node-{id}.log")),
            kafka: None,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            entry: vec!["--join".into(), running.join(",")],
        });
        self.node(id)
    }

    /// Starts a node `prepare_join` added; restarted later, it is given neither --join nor
    /// --peers (its data directory holds the metadata).
    pub fn start_joined(&mut self, id: u64) {
        self.spawn(id as usize - 1);
        let node = &mut self.nodes[id as usize - 1];
        node.entry.clear();
        node.extra.retain(|flag| flag != "--voter");
    }

    /// `prepare_join` then `start_joined`.
    pub fn join(&mut self, id: u64, extra: &[&str]) {
        self.prepare_join(id, extra);
        self.start_joined(id);
    }

    fn spawn(&mut self, i: usize) {
        let tls = self.tls.clone();
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("node log");
        let child = Command::new(KEEL)
            .arg("serve")
            .args(["--id", &node.id.to_string(), "--listen", &node.addr, "--metrics", &node.metrics])
            .args(&node.entry)
            .arg("--dir")
            .arg(&node.dir)
            .arg("--tls")
            .arg(&tls)
            .args(&node.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn keel serve");
        node.child = Some(child);
    }

    /// Whether the test has node `id` running (started and not stopped or killed).
    pub fn running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn bootstrap(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn bootstrap_arg(&self) -> String {
        self.bootstrap().join(",")
    }

    pub async fn client(&self) -> Client {
        Client::connect(ClientConfig::new(self.bootstrap(), &self.tls)).await.expect("client")
    }

    pub async fn client_of(&self, id: u64) -> Client {
        Client::connect(ClientConfig::new([self.node(id).addr.clone()], &self.tls)).await.expect("client")
    }

    /// Restarts node `id` (it must be stopped).
    pub fn restart(&mut self, id: u64) {
        assert!(self.nodes[id as usize - 1].child.is_none(), "node {id} is still running");
        self.spawn(id as usize - 1);
    }

    pub fn pid(&self, id: u64) -> i32 {
        self.node(id).child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, id: u64, signal: i32) {
        // SAFETY: kill(2) on a child process this test started and has not reaped.
        unsafe {
            libc::kill(self.pid(id), signal);
        }
    }

    /// SIGSTOP, returning once every thread of the node is stopped (at most 2 s): a signal
    /// is delivered when a thread next enters the kernel, which on a loaded machine can be
    /// after the test's next request has been served.
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid(id));
        let stopped = || {
            std::fs::read_dir(&tasks).into_iter().flatten().flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !stopped() {
            assert!(Instant::now() < deadline, "node {id} did not stop within 2 s of SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// kill -9, and reap.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for a clean exit; returns the exit status.
    pub fn stop(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.nodes[id as usize - 1].child.take()?;
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn stop_all(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.stop(id, Duration::from_secs(10));
        }
    }

    /// Node `id`'s own view of its replica of the topic `default`'s partition (the log
    /// these tests write), if it answers.
    pub async fn view(&self, id: u64) -> Option<ClusterView> {
        let client = self.client_of(id).await;
        let status = client.partition_status_from(&self.node(id).addr, "default", 0);
        tokio::time::timeout(Duration::from_secs(2), status).await.ok()?.ok()
    }

    /// Node `id`'s own view of the metadata group (what `keel status` shows), if it answers.
    pub async fn status(&self, id: u64) -> Option<ClusterView> {
        let client = self.client_of(id).await;
        tokio::time::timeout(Duration::from_secs(2), client.status_from(&self.node(id).addr)).await.ok()?.ok()
    }

    /// Waits until the new cluster has set itself up: a leader, the topics `default` and
    /// `__consumer_offsets`, every partition led, as node `id` sees it (at most 30 s); the
    /// metadata it saw then.
    pub async fn wait_set_up(&self, id: u64) -> keel::net::client_codec::ClusterMetadata {
        self.wait_leader(Duration::from_secs(20), &[]).await.expect("leader");
        let client = self.client_of(id).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), client.metadata(None)).await
                && m.topic(keel::metadata::CONSUMER_OFFSETS).is_some()
                && m.topics.iter().flat_map(|t| &t.partitions).all(|p| p.leader.is_some())
            {
                return m;
            }
            assert!(Instant::now() < deadline, "the cluster did not set itself up in 30 s\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a running node reports itself leader; returns its id.
    /// Waits for the cluster's own set-up, then creates `topic` with `partitions`
    /// partitions of 3 replicas. A metadata leader elected a moment ago may not have
    /// applied the brokers yet, and refuses a topic it cannot place: asked again, a settled
    /// one creates it.
    pub async fn create_topic_once_set_up(&self, client: &Client, topic: &str, partitions: u32) {
        self.wait_set_up(1).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.create_topic(topic, Some(partitions), Some(3), &[]).await {
                Ok(_) => return,
                Err(keel::client::ClientError::Invalid(why)) if Instant::now() < deadline => {
                    println!("create topic: {why}; again")
                }
                Err(e) => panic!("create topic: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_leader(&self, timeout: Duration, excluding: &[u64]) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for node in &self.nodes {
                if node.child.is_none() || excluding.contains(&node.id) {
                    continue;
                }
                if let Some(v) = self.view(node.id).await
                    && v.role == "leader"
                {
                    return Some(node.id);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// A metric's value (summed over labels) from node `id`'s `/metrics`, if it answers.
    pub fn metric(&self, id: u64, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&self.node(id).metrics).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let values = text.lines().filter(|l| l.starts_with(name) && !l[name.len()..].starts_with('_'));
        let values: Vec<f64> = values.filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- node {} ---\n", n.id));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Where test clusters keep their data: on the real disk (fsync matters), under target/.
pub fn test_tmp() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf();
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir
}

/// Starts `keel` with `args`, its stdin, stdout and stderr piped.
pub fn spawn_keel(args: &[&str]) -> Child {
    Command::new(KEEL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel")
}

/// Runs `keel` with `args` and `stdin`, returning (status, stdout, stderr).
pub fn keel(args: &[&str], stdin: &[u8]) -> (std::process::ExitStatus, String, String) {
    use std::io::Write;
    let mut child = spawn_keel(args);
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("keel output");
    let _ = writer.join();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// GETs `http://addr/metrics` (plain HTTP/1.0, no client library needed).
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("response");
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// The value of an unlabelled sample in a Prometheus exposition.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Every entry of a stopped node's replica of `group` (its data directory `dir`).
pub fn read_log(dir: &Path, group: u64) -> Vec<Entry> {
    let (log, _) = Log::open(&group_log_dir(dir, group), segments::Config::default()).expect("open log");
    let mut out = Vec::new();
    let mut next = log.first_index();
    while next <= log.last_index() {
        let before = out.len();
        log.read(next, 4 << 20, &mut out).expect("read");
        next = out.last().map_or(next, |e: &Entry| e.index() + 1);
        assert!(out.len() > before);
    }
    out
}

/// Reads `topic`/`partition` from offset 0 until it holds an offset at or past `end - 1`
/// (20 s at most) and checks that every record of `want` is there at its offset.
pub async fn assert_acked_read_back(
    client: &Client,
    topic: &str,
    partition: u32,
    want: &std::collections::BTreeMap<u64, &String>,
) {
    let end = want.keys().last().map_or(0, |o| o + 1);
    let mut consumer = client.consumer_of(topic, partition, keel::client::Offset::At(0));
    let mut got = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.keys().last().is_none_or(|o| o + 1 < end) {
        assert!(Instant::now() < deadline, "{topic}/{partition}: read only {} records", got.len());
        for (offset, record) in consumer.poll().await.expect("poll") {
            got.insert(offset, String::from_utf8_lossy(record.value_bytes()).into_owned());
        }
    }
    for (offset, value) in want {
        assert_eq!(got.get(offset), Some(*value), "{topic}/{partition}: acked record at {offset} lost");
    }
}
