//! The durable message log: an idempotent Kafka producer writing
//! [`MessageRecord`]s keyed by room, so that a room's messages stay ordered
//! in one partition.

use std::sync::RwLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use realchat_protocol::MessageRecord;

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("Kafka did not take the message: {0}")]
    Produce(KafkaError),
    #[error("Kafka is unreachable or the topic `{topic}` is unavailable: {reason}")]
    Unavailable { topic: String, reason: String },
    #[error("invalid Kafka setting: {0}")]
    Config(KafkaError),
}

pub struct MessageLog {
    /// Replaced as soon as a produce times out or fails fatally. An
    /// idempotent producer whose message expired has a sequence gap; when
    /// the broker returns it must bump its epoch, which some brokers handle
    /// badly (tansu 0.6 panics and stops serving produce). A fresh producer
    /// id avoids that, and costs nothing: the expired messages were already
    /// reported as not sent.
    producer: RwLock<FutureProducer>,
    brokers: String,
    options: Vec<(String, String)>,
    topic: String,
    timeout: Duration,
}

impl MessageLog {
    /// Creates the producer. `options` are extra librdkafka properties (for
    /// example SASL and TLS settings) and override the defaults.
    pub fn new(
        brokers: &str,
        topic: &str,
        options: &[(String, String)],
        timeout: Duration,
    ) -> Result<MessageLog, LogError> {
        let producer = create_producer(brokers, options, timeout)?;
        Ok(MessageLog {
            producer: RwLock::new(producer),
            brokers: brokers.to_owned(),
            options: options.to_vec(),
            topic: topic.to_owned(),
            timeout,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How long a produce may take before it fails.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Writes a record and waits for the broker's acknowledgement; returns
    /// (partition, offset).
    pub async fn append(&self, record: &MessageRecord) -> Result<(i32, i64), LogError> {
        let payload = record.encode();
        let producer = self.producer();
        let delivery = producer.send(
            FutureRecord::to(&self.topic)
                .key(&record.room)
                .payload(&payload),
            self.timeout,
        );
        // librdkafka's own timeout does not cover a request in flight on a
        // connection that died; this deadline does.
        match tokio::time::timeout(self.timeout + DELIVERY_GRACE, delivery).await {
            Ok(Ok(delivered)) => Ok((delivered.partition, delivered.offset)),
            Ok(Err((err, _))) => {
                let timed_out = matches!(
                    err.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut)
                );
                if timed_out || producer.client().fatal_error().is_some() {
                    self.replace(&producer, &err.to_string());
                }
                Err(LogError::Produce(err))
            }
            Err(_) => {
                let reason = format!(
                    "no delivery report within {:?}",
                    self.timeout + DELIVERY_GRACE
                );
                self.replace(&producer, &reason);
                Err(LogError::Unavailable {
                    topic: self.topic.clone(),
                    reason,
                })
            }
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a fresh producer (new producer id) in place of `failed`,
    /// unless a concurrent failure already replaced it.
    fn replace(&self, failed: &FutureProducer, reason: &str) {
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if current.client().native_ptr() != failed.client().native_ptr() {
            return;
        }
        match create_producer(&self.brokers, &self.options, self.timeout) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *current, fresh);
                tracing::warn!(%reason, "replaced the Kafka producer after a failed produce");
                // Destroying a client can block while it gives up on brokers.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(err) => tracing::error!(%err, "could not create a new Kafka producer"),
        }
    }

    /// Checks that the brokers answer and the topic exists.
    pub async fn check(&self) -> Result<(), LogError> {
        let producer = self.producer();
        let topic = self.topic.clone();
        let unavailable = |reason: String| LogError::Unavailable {
            topic: self.topic.clone(),
            reason,
        };
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
        })
        .await
        .map_err(|err| unavailable(err.to_string()))?
        .map_err(|err| unavailable(err.to_string()))?;
        match metadata.topics().first() {
            Some(topic) if topic.error().is_none() && !topic.partitions().is_empty() => Ok(()),
            Some(topic) => Err(unavailable(format!(
                "topic metadata error {:?}",
                topic.error().map(RDKafkaErrorCode::from)
            ))),
            None => Err(unavailable("topic not found".into())),
        }
    }

    /// Creates the topic when it does not exist (development and tests; in
    /// Kubernetes the operator owns the topic).
    pub async fn ensure_topic(&self, partitions: i32, replication: i32) -> Result<(), LogError> {
        let admin: AdminClient<DefaultClientContext> = client_config(&self.brokers, &self.options)
            .create()
            .map_err(LogError::Config)?;
        let topic = NewTopic::new(
            &self.topic,
            partitions,
            TopicReplication::Fixed(replication),
        );
        let results = admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(LogError::Produce)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Unavailable {
                        topic: name,
                        reason: format!("could not create the topic: {code}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Time beyond the produce timeout that a delivery report may take.
const DELIVERY_GRACE: Duration = Duration::from_secs(1);

fn create_producer(
    brokers: &str,
    options: &[(String, String)],
    timeout: Duration,
) -> Result<FutureProducer, LogError> {
    let mut config = client_config(brokers, &[]);
    config
        // Exactly-once per partition across retries, and acknowledged by
        // every in-sync replica before the sender gets its ack.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // lz4: snappy records are not readable from every broker we test against.
        .set("compression.type", "lz4")
        .set("linger.ms", "2")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        // A request in flight to a broker that died fails within the same time.
        .set("request.timeout.ms", timeout.as_millis().to_string());
    // The operator's settings (SASL, TLS, tuning) override the defaults.
    for (key, value) in options {
        config.set(key, value);
    }
    config.create().map_err(LogError::Config)
}

fn client_config(brokers: &str, options: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}
