//! `keel serve` with a bad configuration exits at once, non-zero, with a message that names
//! the problem and what to do: its own id missing from --peers, certificates it cannot
//! read, a data directory another node process holds, a data directory that belongs to
//! another node id or to another cluster, producer limits out of range.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;

/// How long a refused start may take.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// Runs `keel serve` with `args`; it must exit non-zero within `EXIT_WITHIN`. Returns stderr.
fn serve_fails(args: &[&str]) -> String {
    let mut child = Command::new(common::KEEL)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel serve");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > EXIT_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel serve {args:?} still runs after {EXIT_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    assert!(!status.success(), "keel serve {args:?} exited 0\n{stderr}");
    stderr
}

fn certs(dir: &Path, nodes: &[u64]) {
    let ids: Vec<String> = nodes.iter().flat_map(|n| ["--node".to_string(), n.to_string()]).collect();
    let mut args = vec!["certs", "--dir", dir.to_str().expect("utf-8 path")];
    args.extend(ids.iter().map(String::as_str));
    let (status, _, err) = common::keel(&args, b"");
    assert!(status.success(), "keel certs: {err}");
}

fn assert_says(stderr: &str, phrases: &[&str]) {
    for phrase in phrases {
        assert!(stderr.contains(phrase), "the message does not say `{phrase}`:\n{stderr}");
    }
}

fn listen() -> String {
    format!("127.0.0.1:{}", common::free_ports(1)[0])
}

/// Node 1 of a one-node cluster, with its certificates and nothing started.
struct OneNode {
    root: tempfile::TempDir,
    dir: std::path::PathBuf,
    /// The flags every start takes: id, addresses, certificates, data directory.
    flags: Vec<String>,
}

impl OneNode {
    fn new() -> OneNode {
        let root = tempfile::tempdir_in(common::test_tmp()).expect("tmp");
        let tls = root.path().join("tls");
        certs(&tls, &[1]);
        let dir = root.path().join("data");
        let listen = listen();
        let peers = format!("1={listen}");
        let (tls, dir_arg) = (tls.to_str().unwrap(), dir.to_str().unwrap());
        let flags = ["--id", "1", "--listen", &listen, "--peers", &peers, "--tls", tls, "--dir", dir_arg];
        OneNode { flags: flags.map(String::from).to_vec(), root, dir }
    }

    /// `serve_fails` with the node's flags and `extra`.
    fn serve_fails(&self, extra: &[&str]) -> String {
        let mut args: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        serve_fails(&args)
    }
}

#[test]
fn own_id_missing_from_peers() {
    let root = tempfile::tempdir_in(common::test_tmp()).expect("tmp");
    let tls = root.path().join("tls");
    certs(&tls, &[1, 2, 3, 4]);
    let dir = root.path().join("data");
    let (listen, tls_arg, dir_arg) = (listen(), tls.to_str().unwrap(), dir.to_str().unwrap());
    let peers = "1=127.0.0.1:17001,2=127.0.0.1:17002,3=127.0.0.1:17003";
    let err = serve_fails(&["--id", "4", "--listen", &listen, "--peers", peers, "--tls", tls_arg, "--dir", dir_arg]);
    assert_says(&err, &["id 4 is not in --peers", "list every voter, this node included"]);
    assert!(!dir.exists(), "a refused start created the data directory");
}

#[test]
fn producer_limits_out_of_range() {
    let node = OneNode::new();
    let config = node.root.path().join("keel.toml");
    std::fs::write(&config, "producers_max = 0\n").expect("write the config file");
    let err = node.serve_fails(&["--config", config.to_str().unwrap()]);
    assert_says(&err, &["producers_max must be from 1 to 1048576 producers per partition, not 0"]);
    let err = node.serve_fails(&["--producer-id-expiration-ms", "0"]);
    assert_says(&err, &["producer_id_expiration_ms must be from 1", "a producer idle for longer is forgotten"]);
    assert!(!node.dir.exists(), "a refused start created the data directory");
}

#[test]
fn certificates_that_cannot_be_read() {
    let root = tempfile::tempdir_in(common::test_tmp()).expect("tmp");
    let tls = root.path().join("tls");
    certs(&tls, &[1, 2]);
    let dir = root.path().join("data");
    let listen = listen();
    let peers = format!("1={listen},2=127.0.0.1:17002,3=127.0.0.1:17003");
    let serve = |id: &str, tls: &Path| {
        let (tls, dir) = (tls.to_str().unwrap(), dir.to_str().unwrap());
        serve_fails(&["--id", id, "--listen", &listen, "--peers", &peers, "--tls", tls, "--dir", dir])
    };
    // No such directory.
    let err = serve("1", &root.path().join("no-tls-here"));
    assert_says(&err, &["no-tls-here", "ca.pem", "cannot read", "keel certs --dir"]);
    // No certificate for this node id.
    let err = serve("3", &tls);
    assert_says(&err, &["node-3.pem", "cannot read", "keel certs --dir DIR --node ID"]);
    // A key file that is not a key.
    std::fs::write(tls.join("node-2.key"), "not a key\n").expect("write");
    let err = serve("2", &tls);
    assert_says(&err, &["node-2.key", "no usable private key", "as written by `keel certs`"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_locked_by_a_running_node() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let node = cluster.node(1);
    let (listen, tls, dir) = (listen(), cluster.tls.to_str().unwrap(), node.dir.to_str().unwrap());
    let err = serve_fails(&["--id", "1", "--listen", &listen, "--peers", &cluster.peers, "--tls", tls, "--dir", dir]);
    assert_says(&err, &[dir, "in use by another running node", "stop that node, or give this one its own --dir"]);
    assert_eq!(cluster.view(1).await.expect("the first node still answers").role, "leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_node_id() {
    let mut cluster = Cluster::start(2, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    assert!(cluster.stop(1, Duration::from_secs(10)).is_some_and(|s| s.success()), "node 1 stops");
    let (listen, tls, dir) = (listen(), cluster.tls.to_str().unwrap(), cluster.node(1).dir.to_str().unwrap());
    let err = serve_fails(&["--id", "2", "--listen", &listen, "--peers", &cluster.peers, "--tls", tls, "--dir", dir]);
    assert_says(&err, &["belongs to node 1, not node 2", "point --dir at node 2's data"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    assert!(cluster.stop(1, Duration::from_secs(10)).is_some_and(|s| s.success()), "node 1 stops");
    let other = cluster.root.path().join("other-ca");
    certs(&other, &[1]);
    let (listen, tls, dir) = (listen(), other.to_str().unwrap(), cluster.node(1).dir.to_str().unwrap());
    let err = serve_fails(&["--id", "1", "--listen", &listen, "--peers", &cluster.peers, "--tls", tls, "--dir", dir]);
    assert_says(
        &err,
        &["belongs to cluster", "certificates are for cluster", "use the data directory of this cluster"],
    );
}

#[test]
fn kafka_listener_flags_that_do_not_add_up() {
    let node = OneNode::new();
    let serve = |extra: &[&str]| node.serve_fails(extra);
    // A wildcard address names no host a client could reach.
    let err = serve(&["--kafka", "0.0.0.0:9092"]);
    assert_says(&err, &["listens on every address", "--kafka-advertised HOST:PORT"]);
    let err = serve(&["--kafka", "127.0.0.1:9092", "--kafka-advertised", "no-port"]);
    assert_says(&err, &["--kafka-advertised `no-port` is not HOST:PORT"]);
    let err = serve(&["--kafka-tls"]);
    assert_says(&err, &["need --kafka ADDR"]);
    // The port is taken: said at start, not found out by the first client.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().unwrap().to_string();
    let err = serve(&["--kafka", &taken]);
    assert_says(&err, &["cannot listen for Kafka clients", &taken]);
}

#[test]
fn a_node_with_neither_peers_nor_join_needs_a_cluster_in_its_data_directory() {
    let root = tempfile::tempdir_in(common::test_tmp()).expect("tmp");
    let tls = root.path().join("tls");
    certs(&tls, &[1, 4]);
    let dir = root.path().join("data");
    let (listen, tls_arg, dir_arg) = (listen(), tls.to_str().unwrap(), dir.to_str().unwrap());
    let err = serve_fails(&["--id", "4", "--listen", &listen, "--tls", tls_arg, "--dir", dir_arg]);
    assert_says(&err, &["holds no cluster yet", "--peers", "--join HOST:PORT"]);
    assert!(!dir.exists(), "a refused start created the data directory");
    let both = ["--peers", "4=127.0.0.1:17004", "--join", "127.0.0.1:17001"];
    let err =
        serve_fails(&[&["--id", "4", "--listen", &listen, "--tls", tls_arg, "--dir", dir_arg][..], &both].concat());
    assert_says(&err, &["--join"]);
    let wildcard = ["--id", "4", "--listen", "0.0.0.0:17004", "--join", "127.0.0.1:17001", "--tls", tls_arg];
    let err = serve_fails(&[&wildcard[..], &["--dir", dir_arg]].concat());
    assert_says(&err, &["listens on every address", "the address the others reach it at"]);
}
