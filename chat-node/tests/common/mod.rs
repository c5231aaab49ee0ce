//! Test support: a real `chat-node` process on a free loopback port, and a
//! WebSocket client that speaks the protocol as JSON values.

#![allow(dead_code)]

pub mod services;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A chat node process, killed when dropped.
pub struct Node {
    pub child: Child,
    pub addr: String,
    logs: mpsc::Receiver<String>,
}

impl Node {
    /// Starts a standalone node with `args` on 127.0.0.1:0 and waits until
    /// it reports the address it bound.
    pub fn start(args: &[&str]) -> Node {
        Node::start_with_env(args, &[])
    }

    /// Starts the node binary with `args` and environment `env` (nothing of
    /// the caller's service environment leaks in).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-node"));
        for var in ["REDIS_URL", "KAFKA_BROKERS", "DATABASE_URL"] {
            command.env_remove(var);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,chat_node=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chat-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[node] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("chat-node did not report its address");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        Node {
            child,
            addr,
            logs: rx,
        }
    }

    pub fn url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.addr)
        } else {
            format!("ws://{}/ws?{query}", self.addr)
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines printed so far.
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    /// Resident memory of the node process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP GET over a raw socket (status code and body), so tests need
/// no HTTP client crate.
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .expect("path");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Reads one metric's value from a node's /metrics.
pub async fn metric(node: &Node, name: &str) -> f64 {
    let (_, body) = http_get(&node.http("/metrics")).await;
    body.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended, as seen by the client.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<(u16, String)>),
    Dropped,
}

pub struct Client {
    pub ws: Ws,
    pub user: String,
}

impl Client {
    /// Connects without reading anything.
    pub async fn connect_raw(url: &str) -> Ws {
        let (ws, _) = tokio::time::timeout(TIMEOUT, connect_async(url))
            .await
            .expect("connect timeout")
            .expect("connect");
        ws
    }

    /// Connects in dev mode as `name` and reads the welcome.
    pub async fn dev(node: &Node, name: &str) -> Client {
        let ws = Client::connect_raw(&node.url(&format!("name={name}"))).await;
        let mut client = Client {
            ws,
            user: name.to_owned(),
        };
        let welcome = client.expect("welcome").await;
        assert_eq!(welcome["user"], name);
        client
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send frame");
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send text");
    }

    /// The next text frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no frame within {TIMEOUT:?}", self.user))
                .unwrap_or_else(|| panic!("{}: connection ended", self.user))
                .unwrap_or_else(|e| panic!("{}: read error {e}", self.user));
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("server sent JSON");
                }
                Message::Close(frame) => panic!("{}: closed unexpectedly: {frame:?}", self.user),
                _ => continue,
            }
        }
    }

    /// The next frame, which must be of type `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(
            frame["type"], kind,
            "{}: expected {kind}, got {frame}",
            self.user
        );
        frame
    }

    /// The next frame of type `kind`, skipping presence and typing noise.
    pub async fn expect_skipping_presence(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(
                frame["type"] == "presence" || frame["type"] == "typing",
                "{}: expected {kind}, got {frame}",
                self.user
            );
        }
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("{}: expected silence, got {message:?}", self.user);
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room})).await;
        let joined = self.expect_skipping_presence("joined").await;
        assert_eq!(joined["room"], room);
        joined
    }

    /// Sends a message and returns its ack.
    pub async fn say(&mut self, room: &str, client_id: &str, body: &str) -> Value {
        self.send(json!({"type": "send", "room": room, "client_id": client_id, "body": body}))
            .await;
        let ack = self.expect_skipping_presence("ack").await;
        assert_eq!(ack["client_id"], client_id);
        ack
    }

    /// Sends a message and returns its ack, ignoring whatever else arrives
    /// meanwhile (other members' messages, presence).
    pub async fn say_ignoring_others(&mut self, room: &str, client_id: &str, body: &str) -> Value {
        self.send(json!({"type": "send", "room": room, "client_id": client_id, "body": body}))
            .await;
        loop {
            let frame = self.recv().await;
            match frame["type"].as_str() {
                Some("ack") if frame["client_id"] == client_id => return frame,
                Some("error") => panic!("{}: send {client_id} failed: {frame}", self.user),
                _ => {}
            }
        }
    }

    /// Reads until the connection ends; returns how it ended.
    pub async fn until_end(&mut self, within: Duration) -> Ended {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("{}: connection still open after {within:?}", self.user),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(
                        frame.map(|CloseFrame { code, reason }| {
                            (u16::from(code), reason.to_string())
                        }),
                    );
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
