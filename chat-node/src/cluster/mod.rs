//! Cluster mode: many nodes behave as one chat through Redis (seq, dedupe,
//! recent history, presence, live fanout) and Kafka (durability).

pub mod fanout;
pub mod health;
pub mod kafka;
pub mod keys;
pub mod presence;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};

use crate::metrics::Metrics;
use crate::rooms::LocalRooms;
use fanout::{FanoutContext, RedisFanout};
use health::BackendHealth;
use kafka::MessageLog;
use keys::Keys;
use presence::RedisPresence;
use store::{ClusterStore, SeqFloors, StoreSettings};

pub struct ClusterSettings {
    pub redis_url: String,
    pub redis_prefix: String,
    pub kafka_brokers: String,
    pub kafka_topic: String,
    pub kafka_options: Vec<(String, String)>,
    pub kafka_produce_timeout: Duration,
    pub kafka_create_topic_partitions: i32,
    pub store: StoreSettings,
    pub presence_ttl: Duration,
}

pub struct Cluster {
    pub store: ClusterStore,
    pub fanout: RedisFanout,
    pub presence: RedisPresence,
    pub health: Arc<BackendHealth>,
    pub log: Arc<MessageLog>,
    /// Every Redis connection, for health checks.
    pub connections: Vec<ConnectionManager>,
}

/// Redis location without credentials, for logs and errors.
fn redis_location(info: &redis::ConnectionInfo) -> String {
    info.addr().to_string()
}

pub async fn connect(
    settings: ClusterSettings,
    node: Arc<str>,
    rooms: Arc<LocalRooms>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Cluster> {
    let info = settings
        .redis_url
        .as_str()
        .into_connection_info()
        .context("REDIS_URL is not a valid Redis URL")?;
    let location = redis_location(&info);
    // RESP3: pub/sub pushes arrive on a multiplexed connection, which then
    // resubscribes by itself after a reconnect.
    let redis_settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(redis_settings))
        .with_context(|| format!("Redis at {location}"))?;
    // Fail fast while Redis is away, so senders hear about it within seconds.
    let connection = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let commands = client
        .get_connection_manager_with_config(connection.clone())
        .await
        .with_context(|| format!("connecting to Redis at {location}"))?;

    let log = Arc::new(
        MessageLog::new(
            &settings.kafka_brokers,
            &settings.kafka_topic,
            &settings.kafka_options,
            settings.kafka_produce_timeout,
        )
        .context("configuring the Kafka producer")?,
    );
    if settings.kafka_create_topic_partitions > 0 {
        log.ensure_topic(settings.kafka_create_topic_partitions, 1)
            .await
            .with_context(|| format!("creating Kafka topic {}", settings.kafka_topic))?;
    }

    let keys = Keys::new(&settings.redis_prefix);
    let floors = Arc::new(SeqFloors::default());
    let fanout = RedisFanout::start(
        client.clone(),
        connection.clone(),
        commands.clone(),
        FanoutContext {
            keys: keys.clone(),
            node: node.clone(),
            rooms,
            floors: floors.clone(),
            metrics: metrics.clone(),
        },
    )
    .await
    .with_context(|| format!("connecting the Redis subscriber to {location}"))?;
    let presence = RedisPresence::new(
        commands.clone(),
        keys.clone(),
        node.clone(),
        settings.presence_ttl,
        metrics.clone(),
    );
    let store = ClusterStore::new(
        commands.clone(),
        keys,
        log.clone(),
        node,
        floors,
        settings.store,
        metrics,
    );
    tracing::info!(
        redis = %location,
        prefix = %settings.redis_prefix,
        kafka = %settings.kafka_brokers,
        topic = %settings.kafka_topic,
        "cluster mode: Redis fanout and presence, durable sends through Kafka"
    );
    let health = Arc::new(BackendHealth::default());
    let connections = vec![commands];
    health.check(&connections, &log).await;
    Ok(Cluster {
        store,
        fanout,
        presence,
        health,
        log,
        connections,
    })
}
