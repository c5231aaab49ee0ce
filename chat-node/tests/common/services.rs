//! Test support for cluster mode: the harness's shared services, private
//! Redis and Kafka-protocol brokers that a test may stop and restart, and
//! reading a topic back.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use realchat_protocol::MessageRecord;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test through scripts/test (or scripts/services -- cargo test)")
    })
}

/// A name no other test run uses, for topics and Redis prefixes.
pub fn unique(kind: &str) -> String {
    format!("{kind}-{}", uuid::Uuid::now_v7().simple())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(kind));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Appends to a log file in `dir` (kept for post-mortems while the test runs).
fn log_file(dir: &std::path::Path, name: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A Redis server of the test's own, on a fixed port across restarts.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
            dir: temp_dir("redis"),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server abruptly (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tansu broker of the test's own (SQLite engine), restartable on the
/// same port and data.
pub struct PrivateKafka {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl PrivateKafka {
    pub fn start() -> PrivateKafka {
        let mut kafka = PrivateKafka {
            port: free_port(),
            child: None,
            dir: temp_dir("kafka"),
        };
        kafka.restart();
        kafka
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into()))
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "tansu.log"))
            .spawn()
            .expect("tansu (set TANSU_BIN; scripts/services exports it)");
        self.child = Some(child);
        wait_for_port(self.port, "tansu");
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("kept the broker's data and log in {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A record read back from Kafka with where it was.
#[derive(Debug, Clone)]
pub struct Stored {
    pub partition: i32,
    pub offset: i64,
    pub record: MessageRecord,
}

/// Reads `topic` from the beginning until `expected` records arrived and
/// then `quiet` passed without more (so duplicates would be seen).
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    quiet: Duration,
) -> Vec<Stored> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wait = if records.len() >= expected {
            quiet
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Ok(Ok(message)) => {
                let payload = message.payload().expect("payload");
                records.push(Stored {
                    partition: message.partition(),
                    offset: message.offset(),
                    record: MessageRecord::decode(payload).expect("a valid record"),
                });
            }
        }
    }
    records
}

/// Asserts that, in every partition, each room's seqs strictly increase in
/// offset order.
pub fn assert_seq_order_per_partition(records: &[Stored]) {
    let mut last: BTreeMap<(i32, String), (u64, i64)> = BTreeMap::new();
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|s| (s.partition, s.offset));
    for stored in sorted {
        let key = (stored.partition, stored.record.room.clone());
        if let Some((seq, offset)) = last.get(&key) {
            assert!(
                stored.record.seq > *seq,
                "room {} in partition {}: seq {} at offset {} follows seq {seq} at offset {offset}",
                stored.record.room,
                stored.partition,
                stored.record.seq,
                stored.offset
            );
        }
        last.insert(key, (stored.record.seq, stored.offset));
    }
}
