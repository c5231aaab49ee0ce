//! Proves the test harness gives us a real Kafka-protocol broker and a real
//! PostgreSQL. Needs `KAFKA_BROKERS` and `DATABASE_URL` (set by
//! scripts/services).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test through scripts/test (or scripts/services -- cargo test)")
    })
}

fn consumer(brokers: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &str) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(err, _)| panic!("produce {payload}: {err}"));
}

#[tokio::test]
#[ignore = "needs a Kafka-protocol broker: run through scripts/test"]
async fn a_record_is_read_back_by_a_consumer_group_that_resumes_after_its_commit() {
    let brokers = env("KAFKA_BROKERS");
    let topic = format!("harness-{}", uuid::Uuid::now_v7().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    produce(&producer, &topic, "room-a", "first").await;

    let group = format!("harness-group-{}", uuid::Uuid::now_v7().simple());
    let first = consumer(&brokers, &group, &topic);
    let record = tokio::time::timeout(Duration::from_secs(30), first.recv())
        .await
        .expect("a record within 30 s")
        .expect("consume");
    assert_eq!(record.payload(), Some(&b"first"[..]));
    assert_eq!(record.key(), Some(&b"room-a"[..]));
    first
        .commit_message(&record, CommitMode::Sync)
        .expect("commit offset");
    drop(record);
    drop(first);

    // A new member of the same group starts after the committed offset.
    produce(&producer, &topic, "room-a", "second").await;
    let second = consumer(&brokers, &group, &topic);
    let record = tokio::time::timeout(Duration::from_secs(30), second.recv())
        .await
        .expect("a record within 30 s")
        .expect("consume");
    assert_eq!(
        record.payload(),
        Some(&b"second"[..]),
        "the group resumed from its committed offset"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run through scripts/test"]
async fn postgres_answers_queries() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&env("DATABASE_URL"))
        .await
        .expect("connect to DATABASE_URL");
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert!(
        version.starts_with("15."),
        "PostgreSQL 15 expected, got {version}"
    );
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("CREATE TEMP TABLE harness (n int primary key) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .expect("create");
    sqlx::query("INSERT INTO harness SELECT generate_series(1, 10)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    let sum: i64 = sqlx::query_scalar("SELECT sum(n) FROM harness")
        .fetch_one(&mut *tx)
        .await
        .expect("sum");
    assert_eq!(sum, 55);
}
