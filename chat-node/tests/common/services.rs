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

    /// Whether the broker hit the group-coordinator panic of tansu 0.6.0
    /// (`tansu-storage` service.rs: `unreachable!()` after a failed
    /// `UpdateGroup`), which leaves a consumer group stuck mid-rebalance.
    pub fn group_coordinator_panicked(&self) -> bool {
        std::fs::read_to_string(self.dir.join("tansu.log"))
            .map(|log| log.contains("entered unreachable code") && log.contains("UpdateGroup"))
            .unwrap_or(false)
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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
/// A PostgreSQL tool, run as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn pg_command(tool: &str) -> Command {
    let program = format!("/usr/lib/postgresql/15/bin/{tool}");
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &program]);
        command
    } else {
        Command::new(&program)
    }
}

/// Runs a PostgreSQL tool and insists that it succeeds.
fn pg_tool(tool: &str, args: &[&str]) {
    let status = pg_command(tool)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|err| panic!("{tool}: {err}"));
    assert!(status.success(), "{tool} {args:?} failed");
}

/// A PostgreSQL 15 server of the test's own, stoppable and restartable.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let dir = temp_dir("postgres");
        let data = dir.join("data");
        if is_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        pg_tool(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        let postgres = PrivatePostgres {
            port: free_port(),
            dir,
        };
        postgres.restart();
        pg_tool(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &postgres.port.to_string(),
                "-U",
                "postgres",
                "-qc",
                "CREATE DATABASE realchat",
            ],
        );
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/realchat", self.port)
    }

    pub fn stop(&self) {
        let data = self.dir.join("data");
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn restart(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-l",
                log.to_str().unwrap_or_default(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let stop = [
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "stop",
        ];
        // Best effort: the server may already be stopped.
        let _ = pg_command("pg_ctl").args(stop).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A binary of this workspace built next to the test (scripts/test builds
/// every target first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// A consumer worker process, killed (SIGKILL) when dropped.
pub struct ConsumerProcess {
    pub child: Child,
    pub addr: String,
}

impl ConsumerProcess {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ConsumerProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(workspace_bin("consumer"))
            .arg("run")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("REDIS_URL")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn consumer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[consumer] {line}");
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("consumer did not report its address");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        ConsumerProcess { child, addr }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (as Kubernetes stops a pod); returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child
            .wait()
            .map(|status| status.success())
            .unwrap_or(false)
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
