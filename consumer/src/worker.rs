//! The consume loop: collect a batch (up to a size or a linger time), store
//! it in one transaction, divert dead letters, and only then commit the
//! batch's offsets.
//!
//! Ordering is what makes this safe: a crash at any point leaves the
//! offsets at or before the last stored batch, so the records are read
//! again and the idempotent insert skips what was stored. While PostgreSQL
//! is down the worker pauses its partitions (staying in the group), retries
//! with jittered backoff, and catches up when the database returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, backoff};
use crate::decode::DeadLetter;
use crate::metrics::{Metrics, PartitionLabel};
use crate::store::write_batch;

pub struct Settings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub dead_letter_topic: String,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub session_timeout: Duration,
    /// Also the rebalance timeout: how long a rebalance waits for members
    /// to rejoin (a member that died holds it up until then).
    pub max_poll_interval: Duration,
    pub kafka_options: Vec<(String, String)>,
    /// Longest pause between retries of a failing write.
    pub max_backoff: Duration,
}

/// Whether the worker can do its job, for `/readyz`.
#[derive(Default)]
pub struct Health {
    pub database_ok: AtomicBool,
    pub kafka_ok: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> Result<(), &'static str> {
        match (
            self.database_ok.load(Ordering::Relaxed),
            self.kafka_ok.load(Ordering::Relaxed),
        ) {
            (true, true) => Ok(()),
            (false, _) => Err("PostgreSQL is unreachable"),
            (_, false) => Err("Kafka is unreachable"),
        }
    }
}

/// Logs partition movements, which explain most surprises in operations.
struct RebalanceLog;

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned")
            }
            Rebalance::Error(err) => tracing::warn!(%err, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

type GroupConsumer = StreamConsumer<RebalanceLog>;

fn client_config(settings: &Settings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in &settings.kafka_options {
        config.set(key, value);
    }
    config
}

pub struct Worker {
    settings: Settings,
    consumer: Arc<GroupConsumer>,
    dead_letters: FutureProducer,
    pool: PgPool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Worker {
    pub fn new(
        settings: Settings,
        pool: PgPool,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> anyhow::Result<Worker> {
        let mut config = client_config(&settings);
        config
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // Fails over from a SIGKILLed member (and avoids stop-the-world
            // rebalances on real Kafka).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval.as_millis().to_string(),
            );
        for (key, value) in &settings.kafka_options {
            config.set(key, value);
        }
        let consumer: GroupConsumer = config
            .create_with_context(RebalanceLog)
            .context("creating the Kafka consumer")?;
        consumer
            .subscribe(&[&settings.topic])
            .with_context(|| format!("subscribing to {}", settings.topic))?;
        let mut producer = client_config(&settings);
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4");
        for (key, value) in &settings.kafka_options {
            producer.set(key, value);
        }
        let dead_letters = producer
            .create()
            .context("creating the dead-letter producer")?;
        Ok(Worker {
            settings,
            consumer: Arc::new(consumer),
            dead_letters,
            pool,
            metrics,
            health,
        })
    }

    /// Consumes until `shutdown`, then finishes the batch in hand, commits
    /// what was stored and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let watch = tokio::spawn(watch_health(
            self.consumer.clone(),
            self.pool.clone(),
            self.settings.topic.clone(),
            self.metrics.clone(),
            self.health.clone(),
        ));
        tracing::info!(
            topic = %self.settings.topic,
            group = %self.settings.group,
            batch_size = self.settings.batch_size,
            linger_ms = self.settings.batch_linger.as_millis() as u64,
            "consuming"
        );
        let mut stored_anything = false;
        loop {
            let mut batch = self.collect(&shutdown).await;
            if !batch.is_empty() {
                let started = Instant::now();
                if !self.store(&mut batch, &shutdown).await {
                    tracing::warn!(
                        records = batch.len(),
                        "shutting down with an unstored batch; it will be read again"
                    );
                    break;
                }
                self.commit(&batch, CommitMode::Async);
                stored_anything = true;
                self.metrics.batch_size.observe(batch.len() as f64);
                self.metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        watch.abort();
        if stored_anything {
            // Make the last commits land before leaving the group.
            let consumer = self.consumer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(positions) = consumer.position() {
                    let _ = consumer.commit(&positions, CommitMode::Sync);
                }
            })
            .await;
        }
        tracing::info!("left the consumer group");
        Ok(())
    }

    /// Waits for a first record, then collects until the batch is full or
    /// the linger time has passed since that first record.
    async fn collect(&self, shutdown: &CancellationToken) -> Batch {
        let mut batch = Batch::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let linger = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return batch,
                _ = linger => return batch,
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        self.metrics.records_consumed.inc();
                        batch.push(message.key(), message.payload(), message.partition(), message.offset());
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.settings.batch_linger);
                        if batch.len() >= self.settings.batch_size {
                            return batch;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "Kafka consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    /// Stores the batch: rows in one transaction, dead letters to their
    /// topic. Retries until done; false if shutdown came first.
    ///
    /// While retrying it keeps polling the (paused) consumer so the worker
    /// stays in its group; a record that was already on its way is added to
    /// the batch, never dropped.
    async fn store(&self, batch: &mut Batch, shutdown: &CancellationToken) -> bool {
        let mut attempt = 0;
        let mut paused: Option<TopicPartitionList> = None;
        let written = loop {
            match write_batch(&self.pool, &batch.rows).await {
                Ok(written) => break written,
                Err(err) => {
                    self.metrics.write_failures.inc();
                    self.health.database_ok.store(false, Ordering::Relaxed);
                    if paused.is_none() {
                        // Stop fetching while the database is away; stay in the group.
                        paused = self.consumer.assignment().ok();
                        if let Some(partitions) = &paused {
                            let _ = self.consumer.pause(partitions);
                        }
                    }
                    let wait = backoff(attempt, self.settings.max_backoff, entropy());
                    tracing::warn!(%err, attempt, retry_in_ms = wait.as_millis() as u64, "storing a batch failed; retrying");
                    attempt += 1;
                    let pause = tokio::time::sleep(wait);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return false,
                            _ = &mut pause => break,
                            received = self.consumer.recv() => if let Ok(message) = received {
                                self.metrics.records_consumed.inc();
                                batch.push(message.key(), message.payload(), message.partition(), message.offset());
                            },
                        }
                    }
                }
            }
        };
        if let Some(partitions) = paused {
            tracing::info!(attempts = attempt + 1, "PostgreSQL is back; resuming");
            self.health.database_ok.store(true, Ordering::Relaxed);
            let _ = self.consumer.resume(&partitions);
        }
        self.metrics.rows_written.inc_by(written.inserted as u64);
        self.metrics.rows_replayed.inc_by(written.replayed as u64);
        let conflicts = written.conflicts.into_iter().map(|row| DeadLetter {
            key: Some(row.room.clone().into_bytes()),
            payload: Vec::new(),
            reason: format!(
                "seq conflict: room {} seq {} is already stored under another message id (this one is {})",
                row.room, row.seq, row.id
            ),
            source: row.source,
        });
        let dead_letters: Vec<DeadLetter> = batch
            .dead_letters
            .iter()
            .cloned()
            .chain(conflicts)
            .collect();
        for dead in &dead_letters {
            let mut attempt = 0;
            while let Err(err) = self.divert(dead).await {
                let wait = backoff(attempt, self.settings.max_backoff, entropy());
                tracing::warn!(%err, retry_in_ms = wait.as_millis() as u64, "dead-letter produce failed; retrying");
                attempt += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        true
    }

    /// Sends a record that cannot be stored to the dead-letter topic, with
    /// the reason and its origin in headers.
    async fn divert(&self, dead: &DeadLetter) -> Result<(), rdkafka::error::KafkaError> {
        let partition = dead.source.partition.to_string();
        let offset = dead.source.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "realchat-dlq-reason",
                value: Some(dead.reason.as_bytes()),
            })
            .insert(Header {
                key: "realchat-source-topic",
                value: Some(self.settings.topic.as_bytes()),
            })
            .insert(Header {
                key: "realchat-source-partition",
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: "realchat-source-offset",
                value: Some(offset.as_bytes()),
            });
        let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.settings.dead_letter_topic)
            .payload(&dead.payload)
            .headers(headers);
        if let Some(key) = &dead.key {
            record = record.key(key);
        }
        self.dead_letters
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(err, _)| err)?;
        self.metrics.dead_letters.inc();
        tracing::warn!(reason = %dead.reason, partition = dead.source.partition, offset = dead.source.offset, "record sent to the dead-letter topic");
        Ok(())
    }

    fn commit(&self, batch: &Batch, mode: CommitMode) {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in batch.commit_offsets() {
            let _ =
                offsets.add_partition_offset(&self.settings.topic, partition, Offset::Offset(next));
        }
        if let Err(err) = self.consumer.commit(&offsets, mode) {
            // The records are stored; after a rebalance they are re-read and skipped.
            tracing::warn!(%err, "committing offsets failed");
        }
    }
}

/// Cheap varying number for backoff jitter.
fn entropy() -> u32 {
    chrono::Utc::now().timestamp_subsec_nanos()
}

/// Every few seconds: database reachability, Kafka reachability, the
/// assignment and the lag of each assigned partition.
async fn watch_health(
    consumer: Arc<GroupConsumer>,
    pool: PgPool,
    topic: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3));
    loop {
        ticker.tick().await;
        let database_ok = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
        health.database_ok.store(database_ok, Ordering::Relaxed);
        let (for_lags, topic_for_lags) = (consumer.clone(), topic.clone());
        let lags =
            tokio::task::spawn_blocking(move || partition_lags(&for_lags, &topic_for_lags)).await;
        match lags {
            Ok(Ok(lags)) => {
                health.kafka_ok.store(true, Ordering::Relaxed);
                metrics.assigned_partitions.set(lags.len() as i64);
                metrics.lag.clear();
                for (partition, lag) in lags {
                    metrics
                        .lag
                        .get_or_create(&PartitionLabel { partition })
                        .set(lag);
                }
            }
            _ => health.kafka_ok.store(false, Ordering::Relaxed),
        }
    }
}

fn partition_lags(consumer: &GroupConsumer, topic: &str) -> KafkaResult<Vec<(i32, i64)>> {
    // Also proves the brokers answer: metadata needs a round trip.
    consumer.fetch_metadata(Some(topic), Duration::from_secs(2))?;
    let assignment = consumer.assignment()?;
    let positions = consumer.position()?;
    let committed = consumer.committed(Duration::from_secs(2)).ok();
    let mut lags = Vec::new();
    for element in assignment.elements() {
        let partition = element.partition();
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(2))?;
        let offset_of = |list: &TopicPartitionList| match list
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => Some(offset),
            _ => None,
        };
        let position = offset_of(&positions)
            .or_else(|| committed.as_ref().and_then(offset_of))
            .unwrap_or(0);
        lags.push((partition, (high - position).max(0)));
    }
    Ok(lags)
}

/// Creates `topic` (one partition) if it does not exist. The operator owns
/// topics in Kubernetes; this keeps development setups and tests simple.
pub async fn ensure_topic(settings: &Settings, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = client_config(settings).create()?;
    let results = admin
        .create_topics(
            [&NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}
