//! Persistence end to end with the real services: chat nodes → Kafka →
//! consumer workers → PostgreSQL → history API and replay. Includes killed
//! consumers, a PostgreSQL outage and a poison record.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::services::{self, ConsumerProcess, PrivateKafka, PrivatePostgres, unique};
use common::{Client, Node, http_get};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sqlx::PgPool;

/// One test's slice of the shared services: its own topic, Redis prefix,
/// consumer group and room names, so tests run side by side.
#[derive(Clone)]
struct Setup {
    redis: String,
    kafka: String,
    database: String,
    prefix: String,
    topic: String,
    group: String,
    /// Prefix of this test's room names.
    rooms: String,
}

impl Setup {
    fn new() -> Setup {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Setup {
            redis: services::env("REDIS_URL"),
            kafka: services::env("KAFKA_BROKERS"),
            database: services::env("DATABASE_URL"),
            prefix: unique("persist"),
            topic: unique("messages"),
            group: unique("group"),
            rooms: format!("t{}", &id[20..]),
        }
    }

    fn room(&self, name: &str) -> String {
        format!("{}-{name}", self.rooms)
    }

    fn node(&self, id: &str, extra: &[&str]) -> Node {
        let mut args = vec![
            "--node-id",
            id,
            "--redis-prefix",
            &self.prefix,
            "--kafka-topic",
            &self.topic,
            "--kafka-create-topic-partitions",
            "3",
            "--send-rate",
            "1000",
            "--send-burst",
            "1000",
        ];
        args.extend_from_slice(extra);
        Node::start_with_env(
            &args,
            &[
                ("REDIS_URL", &self.redis),
                ("KAFKA_BROKERS", &self.kafka),
                ("DATABASE_URL", &self.database),
            ],
        )
    }

    fn consumer(&self, extra: &[&str]) -> ConsumerProcess {
        self.consumer_with_database(&self.database, extra)
    }

    fn consumer_with_database(&self, database: &str, extra: &[&str]) -> ConsumerProcess {
        let dlq = format!("{}.dlq", self.topic);
        let mut args = vec![
            "--topic",
            &self.topic,
            "--group",
            &self.group,
            "--dead-letter-topic",
            &dlq,
            "--session-timeout-ms",
            "6000",
            "--max-poll-interval-ms",
            "15000",
            "--max-backoff-ms",
            "1000",
        ];
        args.extend_from_slice(extra);
        ConsumerProcess::start(
            &args,
            &[("KAFKA_BROKERS", &self.kafka), ("DATABASE_URL", database)],
        )
    }

    async fn pool(&self) -> PgPool {
        PgPool::connect(&self.database).await.unwrap()
    }

    /// Rows of this test's rooms: (room, seq) in order, and the row count.
    async fn stored(&self, pool: &PgPool) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT room, seq FROM messages WHERE room LIKE $1 ORDER BY room, seq")
            .bind(format!("{}-%", self.rooms))
            .fetch_all(pool)
            .await
            .unwrap_or_default()
    }

    async fn wait_for_rows(
        &self,
        pool: &PgPool,
        expected: usize,
        within: Duration,
    ) -> Vec<(String, i64)> {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.stored(pool).await;
            if rows.len() >= expected || Instant::now() >= deadline {
                // A little longer, so that duplicates would show.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return self.stored(pool).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asserts exactly the acknowledged messages are stored: per room, the
/// stored seqs equal the acked seqs (no loss, no duplicates).
fn assert_exactly(rows: &[(String, i64)], acked: &BTreeMap<String, Vec<u64>>) {
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (room, seq) in rows {
        stored.entry(room.clone()).or_default().push(*seq as u64);
    }
    let mut acked = acked.clone();
    for seqs in acked.values_mut() {
        seqs.sort_unstable();
    }
    assert_eq!(
        stored, acked,
        "stored rows must be exactly the acknowledged messages"
    );
}

async fn metric(addr_url: String, name: &str) -> f64 {
    let (_, body) = http_get(&addr_url).await;
    body.lines()
        .find_map(|line| {
            line.rsplit_once(' ')
                .filter(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
#[ignore = "needs Redis, Kafka and PostgreSQL: run through scripts/test"]
async fn messages_sent_through_nodes_are_stored_exactly_once_and_paged_by_the_history_api() {
    let setup = Setup::new();
    let node_a = setup.node("node-a", &[]);
    let node_b = setup.node("node-b", &[]);
    let _consumer = setup.consumer(&["--batch-size", "16", "--batch-linger-ms", "20"]);
    let rooms = [setup.room("a"), setup.room("b"), setup.room("c")];
    let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ann = Client::dev(&node_a, "ann").await;
    let mut bob = Client::dev(&node_b, "bob").await;
    for room in &rooms {
        ann.join(room).await;
        bob.join(room).await;
    }
    for i in 0..20 {
        for room in &rooms {
            let sender = if i % 2 == 0 { &mut ann } else { &mut bob };
            let ack = sender
                .say_ignoring_others(room, &format!("{room}-{i}"), &format!("message {i}"))
                .await;
            acked
                .entry(room.clone())
                .or_default()
                .push(ack["seq"].as_u64().unwrap());
        }
    }
    let pool = setup.pool().await;
    let rows = setup
        .wait_for_rows(&pool, 60, Duration::from_secs(60))
        .await;
    assert_exactly(&rows, &acked);

    // The history API pages through them, newest first.
    let room = &rooms[0];
    let mut before: Option<u64> = None;
    let mut seen = Vec::new();
    loop {
        let query = match before {
            Some(b) => format!("/api/rooms/{room}/messages?limit=7&before={b}"),
            None => format!("/api/rooms/{room}/messages?limit=7"),
        };
        let (status, body) = http_get(&node_b.http(&query)).await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["source"], "postgres");
        let seqs: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "newest first: {seqs:?}"
        );
        seen.extend(seqs);
        match page["next_before"].as_u64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (1..=20).rev().collect::<Vec<u64>>());
    let (status, body) =
        http_get(&node_a.http(&format!("/api/rooms/{room}/messages?limit=500"))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit must be 1 to 200"));
}

/// Sends `count` messages to `room` one after another, returning the seqs
/// acknowledged.
async fn stream(mut client: Client, room: String, count: usize, pause: Duration) -> Vec<u64> {
    let mut acked = Vec::new();
    for i in 0..count {
        let ack = client
            .say_ignoring_others(
                &room,
                &format!("{room}-{}-s{i}", client.user),
                &format!("steady {i}"),
            )
            .await;
        acked.push(ack["seq"].as_u64().unwrap());
        tokio::time::sleep(pause).await;
    }
    acked
}

/// Waits until a worker holds `partitions` partitions.
async fn holds(worker: &ConsumerProcess, partitions: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if metric(worker.http("/metrics"), "consumer_assigned_partitions").await == partitions {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

#[tokio::test]
#[ignore = "needs Redis, Kafka and PostgreSQL: run through scripts/test"]
async fn killed_consumers_lose_nothing_and_a_stopped_one_is_taken_over() {
    // A broker of its own: group rebalances are what this test is about.
    let kafka = PrivateKafka::start();
    let setup = Setup {
        kafka: kafka.brokers(),
        ..Setup::new()
    };
    let node = setup.node("node-a", &[]);
    let pool = setup.pool().await;
    let worker_args = ["--batch-size", "25", "--batch-linger-ms", "100"];
    let mut first = setup.consumer(&worker_args);
    let rooms = [setup.room("x"), setup.room("y"), setup.room("z")];
    let mut senders = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        let mut client = Client::dev(&node, &format!("sender{n}")).await;
        client.join(room).await;
        senders.push(tokio::spawn(stream(
            client,
            room.clone(),
            150,
            Duration::from_millis(10),
        )));
    }
    // SIGKILL mid-stream, with batches in flight; a restarted worker and a
    // second one take over and share the partitions.
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.stored(&pool).await.len() < 60 {
        assert!(
            Instant::now() < deadline,
            "the first consumer stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let restarted = setup.consumer(&worker_args);
    let second = setup.consumer(&worker_args);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = metric(restarted.http("/metrics"), "consumer_assigned_partitions").await;
        let b = metric(second.http("/metrics"), "consumer_assigned_partitions").await;
        if a >= 1.0 && b >= 1.0 && a + b == 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not shared: {a} + {b}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (room, sender) in rooms.iter().zip(senders) {
        acked.insert(room.clone(), sender.await.unwrap());
    }
    let rows = setup
        .wait_for_rows(&pool, 450, Duration::from_secs(90))
        .await;
    assert_exactly(&rows, &acked);
    drop((restarted, second));

    // Two workers share the partitions; one stops as Kubernetes stops a pod
    // (SIGTERM: finish the batch, commit, leave the group) and the survivor
    // must take over every partition and store a second wave of messages.
    // tansu 0.6's coordinator sometimes leaves such a rebalance unfinished
    // (the survivor is revoked and never reassigned; see the closing
    // notes), so a stalled attempt is reported and retried with a fresh
    // group; every attempt stalling fails the test.
    let mut taken_over = false;
    for attempt in 1..=3 {
        let group_setup = Setup {
            group: unique("group"),
            ..setup.clone()
        };
        let mut leaving = group_setup.consumer(&worker_args);
        let survivor = group_setup.consumer(&worker_args);
        let shared = async {
            let deadline = Instant::now() + Duration::from_secs(45);
            loop {
                let a = metric(leaving.http("/metrics"), "consumer_assigned_partitions").await;
                let b = metric(survivor.http("/metrics"), "consumer_assigned_partitions").await;
                if a >= 1.0 && b >= 1.0 && a + b == 3.0 {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        if !shared.await {
            eprintln!(
                "WARNING: attempt {attempt}: the two workers never shared the partitions (broker rebalance stalled)"
            );
            continue;
        }
        assert!(leaving.terminate(), "the consumer exits cleanly on SIGTERM");
        let mut wave = Vec::new();
        for (n, room) in rooms.iter().enumerate() {
            let mut client = Client::dev(&node, &format!("wave{attempt}-{n}")).await;
            client.join(room).await;
            wave.push(tokio::spawn(stream(
                client,
                room.clone(),
                30,
                Duration::from_millis(10),
            )));
        }
        for (room, sender) in rooms.iter().zip(wave) {
            acked.get_mut(room).unwrap().extend(sender.await.unwrap());
        }
        if holds(&survivor, 3.0, Duration::from_secs(45)).await {
            let expected: usize = acked.values().map(Vec::len).sum();
            let rows = setup
                .wait_for_rows(&pool, expected, Duration::from_secs(90))
                .await;
            assert_exactly(&rows, &acked);
            taken_over = true;
            break;
        }
        eprintln!(
            "WARNING: attempt {attempt}: the survivor was not given the stopped worker's partitions (broker rebalance stalled)"
        );
        // Let a fresh group store the wave before the next attempt counts rows.
        let _catch_up = setup.consumer(&worker_args);
        let expected: usize = acked.values().map(Vec::len).sum();
        let rows = setup
            .wait_for_rows(&pool, expected, Duration::from_secs(90))
            .await;
        assert_exactly(&rows, &acked);
    }
    assert!(
        taken_over,
        "in three attempts the survivor never took over the stopped worker's partitions"
    );
}

#[tokio::test]
#[ignore = "needs Redis, Kafka and PostgreSQL: run through scripts/test"]
async fn a_postgres_outage_under_a_steady_stream_is_caught_up_exactly() {
    let setup = Setup::new();
    let postgres = PrivatePostgres::start();
    let node = setup.node("node-a", &[]);
    let consumer = setup.consumer_with_database(&postgres.url(), &["--batch-linger-ms", "20"]);
    let room = setup.room("steady");
    let mut client = Client::dev(&node, "steady").await;
    client.join(&room).await;
    // ~30 s of traffic: one message every 100 ms.
    let sender = tokio::spawn(stream(
        client,
        room.clone(),
        300,
        Duration::from_millis(100),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(&consumer.http("/readyz")).await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "the consumer stayed ready without PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    postgres.restart();
    let acked = sender.await.unwrap();
    assert_eq!(acked.len(), 300, "sends never depended on PostgreSQL");
    let pool = PgPool::connect(&postgres.url()).await.unwrap();
    let setup_here = Setup {
        database: postgres.url(),
        ..setup.clone()
    };
    let rows = setup_here
        .wait_for_rows(&pool, 300, Duration::from_secs(60))
        .await;
    assert_exactly(&rows, &BTreeMap::from([(room, acked)]));
    assert!(metric(consumer.http("/metrics"), "consumer_write_failures_total").await >= 1.0);
    assert_eq!(http_get(&consumer.http("/readyz")).await.0, 200);
}

#[tokio::test]
#[ignore = "needs Redis, Kafka and PostgreSQL: run through scripts/test"]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_the_rest_is_stored() {
    let setup = Setup::new();
    let node = setup.node("node-a", &[]);
    let room = setup.room("p");
    let mut ann = Client::dev(&node, "ann").await;
    ann.join(&room).await;
    ann.say(&room, "before", "before the poison").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &setup.kafka)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&setup.topic)
                .key(&room)
                .payload("{this is not a record"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    for i in 0..5 {
        ann.say(&room, &format!("after{i}"), "after the poison")
            .await;
    }
    let consumer = setup.consumer(&[]);
    let pool = setup.pool().await;
    let rows = setup.wait_for_rows(&pool, 6, Duration::from_secs(60)).await;
    assert_eq!(rows.len(), 6, "every valid record is stored: {rows:?}");

    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &setup.kafka)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader
        .subscribe(&[&format!("{}.dlq", setup.topic)])
        .unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.payload(), Some(&b"{this is not a record"[..]));
    let headers = dead.headers().unwrap();
    let reason = headers
        .iter()
        .find(|h| h.key == "realchat-dlq-reason")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).to_string())
        .unwrap();
    assert!(reason.contains("not valid JSON"), "{reason}");
    assert_eq!(
        metric(consumer.http("/metrics"), "consumer_dead_letters_total").await,
        1.0
    );
}

#[tokio::test]
#[ignore = "needs Redis, Kafka and PostgreSQL: run through scripts/test"]
async fn replay_after_a_long_disconnect_comes_from_postgres_complete() {
    let setup = Setup::new();
    // Redis keeps only the 5 newest messages of a room.
    let node = setup.node("node-a", &["--history-per-room", "5"]);
    let _consumer = setup.consumer(&["--batch-linger-ms", "20"]);
    let room = setup.room("long");
    let mut ann = Client::dev(&node, "ann").await;
    ann.join(&room).await;
    for i in 1..=20 {
        ann.say(&room, &format!("c{i}"), &format!("m{i}")).await;
    }
    let pool = setup.pool().await;
    assert_eq!(
        setup
            .wait_for_rows(&pool, 20, Duration::from_secs(60))
            .await
            .len(),
        20
    );

    let mut bob = Client::dev(&node, "bob").await;
    bob.send(json!({"type": "join", "room": room, "since": 2}))
        .await;
    bob.expect("joined").await;
    for seq in 3..=20 {
        let message = bob.expect("message").await;
        assert_eq!(message["seq"], seq);
        assert_eq!(message["body"], format!("m{seq}"));
    }
    let replayed = bob.expect("replayed").await;
    assert_eq!(
        replayed,
        json!({"type": "replayed", "room": room, "from": 3, "to": 20, "complete": true})
    );
}
