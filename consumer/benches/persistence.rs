//! Persistence throughput: how fast the consumer stores a backlog of
//! message records, next to the ceiling of a raw COPY of the same rows into
//! the same table. Prints figures; asserts nothing about speed.
//!
//!     scripts/services -- cargo bench -p consumer --bench persistence
//!
//! BENCH_ROWS (default 100000) sets the backlog size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use consumer::metrics::Metrics;
use consumer::store::migrate;
use consumer::worker::{Health, Settings, Worker};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use realchat_protocol::MessageRecord;
use realchat_protocol::record::RECORD_VERSION;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ROOMS: u64 = 100;

fn records(count: u64) -> Vec<MessageRecord> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..count)
        .map(|i| MessageRecord {
            v: RECORD_VERSION,
            id: Uuid::now_v7(),
            room: format!("bench-{}", i % ROOMS),
            seq: i / ROOMS + 1,
            user: format!("user{}", i % 1000),
            body: "a typical chat message of about sixty bytes, give or take a few".into(),
            sent_at_ms: now,
            produced_at_ms: now,
            origin_node: "bench".into(),
            client_id: format!("c{i}"),
        })
        .collect()
}

async fn row_count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let brokers =
        std::env::var("KAFKA_BROKERS").context("KAFKA_BROKERS (run through scripts/services)")?;
    let database =
        std::env::var("DATABASE_URL").context("DATABASE_URL (run through scripts/services)")?;
    let count: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);

    // A database and a topic of the benchmark's own.
    let admin_pool = PgPool::connect(&database).await?;
    let name = format!("bench_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin_pool)
        .await?;
    let url = format!(
        "{}/{name}",
        database.rsplit_once('/').context("database URL")?.0
    );
    let pool = PgPool::connect(&url).await?;
    migrate(&pool).await?;
    let topic = format!("bench-{}", Uuid::now_v7().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    admin
        .create_topics(
            [&NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;

    // The backlog.
    let records = records(count);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in &records {
        let payload = record.encode();
        deliveries.push(
            producer
                .send_result(FutureRecord::to(&topic).key(&record.room).payload(&payload))
                .map_err(|(e, _)| e)?,
        );
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    let produce_secs = started.elapsed().as_secs_f64();

    // The consumer, in process, working off the backlog.
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(
        Settings {
            brokers: brokers.clone(),
            topic: topic.clone(),
            group: format!("bench-{}", Uuid::now_v7().simple()),
            dead_letter_topic: format!("{topic}.dlq"),
            batch_size: 1000,
            batch_linger: Duration::from_millis(50),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(45),
            kafka_options: Vec::new(),
            max_backoff: Duration::from_secs(1),
        },
        pool.clone(),
        metrics.clone(),
        Arc::new(Health::default()),
    )?;
    let started = Instant::now();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    while row_count(&pool, "messages").await < count as i64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consume_secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = running.await;
    let rendered = metrics.render();
    let stat = |name: &str| {
        rendered
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let (batches, storing) = (
        stat("consumer_batch_seconds_count"),
        stat("consumer_batch_seconds_sum"),
    );

    // The ceiling: COPY the same rows into a table of the same shape.
    sqlx::query("CREATE TABLE messages_copy (LIKE messages INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let mut csv = String::with_capacity(records.len() * 200);
    let at = chrono::Utc::now().to_rfc3339();
    for (i, r) in records.iter().enumerate() {
        csv.push_str(&format!(
            "{},{},{},{},\"{}\",{at},{at},{},{},0,{i}\n",
            r.id, r.room, r.seq, r.user, r.body, r.origin_node, r.client_id
        ));
    }
    let started = Instant::now();
    let mut connection = pool.acquire().await?;
    let mut copy = connection
        .copy_in_raw(
            "COPY messages_copy (id, room, seq, user_name, body, sent_at, produced_at, origin_node, client_id, kafka_partition, kafka_offset) FROM STDIN (FORMAT csv)",
        )
        .await?;
    copy.send(csv.as_bytes()).await?;
    copy.finish().await?;
    let copy_secs = started.elapsed().as_secs_f64();
    assert_eq!(row_count(&pool, "messages_copy").await, count as i64);

    let consumer_rate = count as f64 / consume_secs;
    let copy_rate = count as f64 / copy_secs;
    println!("| what | rows | seconds | rows/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| produce backlog to Kafka (idempotent, acks=all, lz4) | {count} | {produce_secs:.2} | {:.0} |",
        count as f64 / produce_secs
    );
    println!(
        "| consumer: Kafka -> PostgreSQL (batches of 1000, one transaction each) | {count} | {consume_secs:.2} | {consumer_rate:.0} |"
    );
    println!(
        "| raw COPY of the same rows into the same table (ceiling) | {count} | {copy_secs:.2} | {copy_rate:.0} |"
    );
    println!(
        "consumer / COPY ceiling = {:.0}%",
        100.0 * consumer_rate / copy_rate
    );
    println!(
        "consumer detail: {batches:.0} batches, {:.0} records each on average; storing them took {storing:.2} s of the {consume_secs:.2} s (the rest is fetching from the broker)",
        count as f64 / batches.max(1.0)
    );

    drop(connection);
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin_pool)
        .await?;
    Ok(())
}
