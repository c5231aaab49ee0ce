//! Every setting of a chat node: a flag with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use realchat_protocol::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-node",
    version,
    about = "RealChat chat node: WebSocket chat server with rooms, replay, presence and a browser UI",
    long_about = "RealChat chat node: WebSocket chat server with rooms, replay, presence and a browser UI.\n\n\
With no backing services configured it runs standalone: in-process fanout and in-memory history."
)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket connections.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Name of this node, sent to clients in `welcome` (default: host name).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// HS256 secret for JWT authentication. With no JWT key, auth is off (dev mode).
    #[arg(long, env = "JWT_HS256_SECRET", hide_env_values = true, conflicts_with_all = ["jwt_rs256_public_key", "jwt_rs256_public_key_file"])]
    pub jwt_hs256_secret: Option<String>,

    /// RS256 public key (PEM) for JWT authentication.
    #[arg(
        long,
        env = "JWT_RS256_PUBLIC_KEY",
        conflicts_with = "jwt_rs256_public_key_file"
    )]
    pub jwt_rs256_public_key: Option<String>,

    /// File holding the RS256 public key (PEM) for JWT authentication.
    #[arg(long, env = "JWT_RS256_PUBLIC_KEY_FILE")]
    pub jwt_rs256_public_key_file: Option<PathBuf>,

    /// Seconds a connection may take to send its `auth` frame.
    #[arg(long, env = "AUTH_TIMEOUT_SECS", default_value_t = 10)]
    pub auth_timeout_secs: u64,

    /// Largest message body in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4096)]
    pub max_body_bytes: usize,

    /// Largest WebSocket frame in bytes; larger frames close the connection with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,

    /// Most rooms one connection may be in at once.
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,

    /// Messages kept in memory per room for replay.
    #[arg(long, env = "HISTORY_PER_ROOM", default_value_t = 1000)]
    pub history_per_room: usize,

    /// Most messages one `join {since}` replays (from memory, Redis or PostgreSQL).
    #[arg(long, env = "REPLAY_LIMIT", default_value_t = 1000)]
    pub replay_limit: usize,

    /// Seconds during which a retried send (same user and client_id) returns the original ack.
    #[arg(long, env = "DEDUPE_WINDOW_SECS", default_value_t = 300)]
    pub dedupe_window_secs: u64,

    /// Sustained sends per second allowed per connection.
    #[arg(long, env = "SEND_RATE", default_value_t = 20.0)]
    pub send_rate: f64,

    /// Sends allowed in a burst per connection.
    #[arg(long, env = "SEND_BURST", default_value_t = 40)]
    pub send_burst: u32,

    /// Rate-limited sends in a row after which the connection is closed with 1008.
    #[arg(long, env = "SEND_ABUSE_LIMIT", default_value_t = 50)]
    pub send_abuse_limit: u32,

    /// Frames queued per connection before a client that does not read is closed with 4002.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// PostgreSQL URL of the persisted messages (written by the consumer): serves the
    /// history API and replays older than Redis holds.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        help_heading = "Cluster mode"
    )]
    pub database_url: Option<String>,

    /// Redis URL; with KAFKA_BROKERS, turns on cluster mode.
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        help_heading = "Cluster mode"
    )]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel of this chat cluster (one per cluster sharing a Redis).
    #[arg(
        long,
        env = "REDIS_PREFIX",
        default_value = "realchat",
        help_heading = "Cluster mode"
    )]
    pub redis_prefix: String,

    /// Seconds a room's recent history lives in Redis after its last message.
    #[arg(
        long,
        env = "REDIS_HISTORY_TTL_SECS",
        default_value_t = 86400,
        help_heading = "Cluster mode"
    )]
    pub redis_history_ttl_secs: u64,

    /// Seconds after which a node that stopped beating is considered dead and its members dropped.
    #[arg(
        long,
        env = "PRESENCE_TTL_SECS",
        default_value_t = 20,
        help_heading = "Cluster mode"
    )]
    pub presence_ttl_secs: u64,

    /// Kafka bootstrap servers; with REDIS_URL, turns on cluster mode.
    #[arg(long, env = "KAFKA_BROKERS", help_heading = "Cluster mode")]
    pub kafka_brokers: Option<String>,

    /// Kafka topic of the message records.
    #[arg(
        long,
        env = "KAFKA_TOPIC",
        default_value = "realchat.messages",
        help_heading = "Cluster mode"
    )]
    pub kafka_topic: String,

    /// Extra librdkafka setting KEY=VALUE (e.g. security.protocol=SASL_SSL); repeatable, comma separated in the env var.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = realchat_protocol::kafka::parse_option, help_heading = "Cluster mode")]
    pub kafka_options: Vec<(String, String)>,

    /// Milliseconds to wait for Kafka to acknowledge a message before the send fails.
    #[arg(
        long,
        env = "KAFKA_PRODUCE_TIMEOUT_MS",
        default_value_t = 5000,
        help_heading = "Cluster mode"
    )]
    pub kafka_produce_timeout_ms: u64,

    /// Create the topic with this many partitions if it is missing (0: it must exist; the operator creates it).
    #[arg(
        long,
        env = "KAFKA_CREATE_TOPIC_PARTITIONS",
        default_value_t = 0,
        help_heading = "Cluster mode"
    )]
    pub kafka_create_topic_partitions: i32,

    /// Seconds between readiness turning false on SIGTERM and closing sessions,
    /// so that load balancers stop routing new connections here first.
    #[arg(long, env = "DRAIN_DELAY_SECS", default_value_t = 0)]
    pub drain_delay_secs: u64,

    /// Seconds to drain on SIGTERM before exiting.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 25)]
    pub drain_timeout_secs: u64,
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_frame_bytes: self.max_frame_bytes,
            ..Limits::default()
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn node_name(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| {
                    format!("node-{}", &uuid::Uuid::now_v7().simple().to_string()[24..])
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_protocol_document() {
        let config = Config::try_parse_from(["chat-node"]).unwrap();
        assert_eq!(config.limits(), Limits::default());
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.outbound_queue, 1024);
        assert_eq!((config.send_rate, config.send_burst), (20.0, 40));
        assert_eq!(config.drain_timeout(), Duration::from_secs(25));
    }

    #[test]
    fn kafka_options_are_key_value_pairs() {
        let config = Config::try_parse_from([
            "chat-node",
            "--kafka-option",
            "security.protocol=SASL_SSL",
            "--kafka-option",
            "sasl.mechanism=PLAIN",
        ])
        .unwrap();
        assert_eq!(
            config.kafka_options[0],
            ("security.protocol".into(), "SASL_SSL".into())
        );
        assert_eq!(config.kafka_options.len(), 2);
        assert!(Config::try_parse_from(["chat-node", "--kafka-option", "novalue"]).is_err());
    }

    #[test]
    fn only_one_jwt_key_may_be_given() {
        let both = Config::try_parse_from([
            "chat-node",
            "--jwt-hs256-secret",
            "s",
            "--jwt-rs256-public-key-file",
            "/k.pem",
        ]);
        assert!(both.is_err());
    }
}
