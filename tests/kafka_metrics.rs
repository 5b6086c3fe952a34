//! The Kafka front end's metrics, scraped from a live `/metrics`: requests by api and
//! error, the latency histogram by api, open connections; every series there before the
//! first request.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use keel::kafka::memory::{MemoryBackend, MemoryConfig, local_broker};
use keel::kafka::{KafkaConfig, serve_on};

async fn scrape(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || common::scrape(&addr)).await.unwrap()
}

/// The value of the series whose line starts with `series` (name and labels), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Scrapes until `series` has `want`, for at most ten seconds.
async fn wait_for(addr: &str, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr).await;
        if value(&text, series) == Some(want) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never became {want}; last scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_errors_latency_and_connections_are_exported() {
    let metrics = format!("127.0.0.1:{}", common::free_tcp_ports(1)[0]);
    keel::metrics::serve(metrics.parse().unwrap(), []).unwrap();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let backend = Arc::new(MemoryBackend::new(MemoryConfig::new(local_broker(addr))));
    let _listener = serve_on(socket, KafkaConfig::new(addr), backend, None).unwrap();

    let before = wait_for(&metrics, "keel_kafka_connections ", 0.0).await;
    for series in [
        r#"keel_kafka_requests_total{api="produce",error="not_leader_or_follower"} "#,
        r#"keel_kafka_requests_total{api="unsupported",error="unsupported_version"} "#,
        r#"keel_kafka_request_seconds_count{api="fetch"} "#,
    ] {
        assert_eq!(value(&before, series), Some(0.0), "{series} registered at zero");
    }
    assert!(before.contains(r#"keel_kafka_request_seconds_bucket{api="metadata",le="0.001"} 0"#), "explicit buckets");

    // An ApiVersions v0 request, answered; then an unknown api key, which closes.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff]).await.unwrap();
    let len = conn.read_i32().await.unwrap();
    let mut answer = vec![0; len as usize];
    conn.read_exact(&mut answer).await.unwrap();
    wait_for(&metrics, "keel_kafka_connections ", 1.0).await;
    conn.write_all(&[0, 0, 0, 10, 3, 231, 0, 0, 0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 0, "closed");

    let after = wait_for(&metrics, "keel_kafka_connections ", 0.0).await;
    assert_eq!(value(&after, r#"keel_kafka_requests_total{api="api_versions",error="none"} "#), Some(1.0));
    assert_eq!(
        value(&after, r#"keel_kafka_requests_total{api="unsupported",error="unsupported_version"} "#),
        Some(1.0)
    );
    assert_eq!(value(&after, r#"keel_kafka_request_seconds_count{api="api_versions"} "#), Some(1.0));
}
