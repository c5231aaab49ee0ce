//! Cluster mode with the real services: two chat-node processes sharing
//! Redis and a Kafka-protocol broker behave as one chat, and survive Redis
//! and Kafka outages without silent loss.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::services::{
    self, PrivateKafka, PrivateRedis, assert_seq_order_per_partition, read_topic, unique,
};
use common::{Client, Node, http_get};
use serde_json::{Value, json};

/// Where a cluster node finds its services.
#[derive(Clone)]
struct Backends {
    redis: String,
    kafka: String,
    prefix: String,
    topic: String,
}

impl Backends {
    fn shared() -> Backends {
        Backends {
            redis: services::env("REDIS_URL"),
            kafka: services::env("KAFKA_BROKERS"),
            prefix: unique("cluster"),
            topic: unique("messages"),
        }
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
        ];
        args.extend_from_slice(extra);
        Node::start_with_env(
            &args,
            &[("REDIS_URL", &self.redis), ("KAFKA_BROKERS", &self.kafka)],
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// One member's part in the exchange: sends `count` messages (pipelined),
/// then reads until it has its acks and every message of the others.
async fn converse(
    mut client: Client,
    room: String,
    count: usize,
    expected_from_others: usize,
) -> (Vec<Value>, Vec<Value>) {
    for i in 0..count {
        client
            .send(json!({"type": "send", "room": room, "client_id": format!("{}-{i}", client.user), "body": format!("{} says {i}", client.user)}))
            .await;
    }
    let (mut acks, mut messages) = (Vec::new(), Vec::new());
    while acks.len() < count || messages.len() < expected_from_others {
        let frame = client.recv().await;
        match frame["type"].as_str().unwrap() {
            "ack" => acks.push(frame),
            "message" => {
                assert_eq!(
                    frame["room"],
                    room.as_str(),
                    "{}: message of another room: {frame}",
                    client.user
                );
                assert_ne!(
                    frame["user"],
                    client.user.as_str(),
                    "senders get acks, not copies"
                );
                messages.push(frame);
            }
            "presence" => {}
            other => panic!("{}: unexpected {other}: {frame}", client.user),
        }
    }
    // No more messages may come: every message exactly once. (Presence of
    // members that finished and left is fine.)
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(frame) = tokio::time::timeout_at(deadline, client.recv()).await {
        assert_eq!(
            frame["type"], "presence",
            "{}: unexpected after the exchange: {frame}",
            client.user
        );
    }
    (acks, messages)
}

#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn members_on_two_nodes_receive_every_message_of_their_rooms_exactly_once() {
    let backends = Backends::shared();
    let node_a = backends.node("node-a", &[]);
    let node_b = backends.node("node-b", &[]);
    const ROOMS: [&str; 3] = ["red", "green", "blue"];
    const PER_CLIENT: usize = 10;
    const CLIENTS_PER_ROOM: usize = 4;

    let mut quiet = Client::dev(&node_a, "quiet").await;
    quiet.join("elsewhere").await;
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for room in ROOMS {
        for n in 0..CLIENTS_PER_ROOM {
            let node = if n % 2 == 0 { &node_a } else { &node_b };
            let mut client = Client::dev(node, &format!("{room}{n}")).await;
            client.join(room).await;
            clients.push((room, client));
        }
    }
    // Every member has joined before anyone sends.
    for (room, client) in clients {
        let expected = (CLIENTS_PER_ROOM - 1) * PER_CLIENT;
        tasks.push(tokio::spawn(converse(
            client,
            room.to_owned(),
            PER_CLIENT,
            expected,
        )));
    }
    let mut acked_ids = HashSet::new();
    let mut seqs_by_room: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for task in tasks {
        let (acks, messages) = task.await.unwrap();
        let ids: HashSet<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), messages.len(), "a message arrived twice");
        for ack in acks {
            assert!(acked_ids.insert(ack["id"].as_str().unwrap().to_owned()));
            let seqs = seqs_by_room
                .entry(ack["room"].as_str().unwrap().to_owned())
                .or_default();
            assert!(seqs.insert(ack["seq"].as_u64().unwrap()), "seq acked twice");
        }
    }
    quiet.expect_silence(Duration::from_millis(200)).await;
    let total = ROOMS.len() * CLIENTS_PER_ROOM * PER_CLIENT;
    assert_eq!(acked_ids.len(), total);
    for (room, seqs) in &seqs_by_room {
        let expected: BTreeSet<u64> = (1..=(CLIENTS_PER_ROOM * PER_CLIENT) as u64).collect();
        assert_eq!(seqs, &expected, "room {room}: seqs are 1..=n without gaps");
    }

    // Every acknowledged message is in Kafka exactly once, in seq order.
    let records = read_topic(
        &backends.kafka,
        &backends.topic,
        total,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(records.len(), total, "records in the topic");
    let in_kafka: HashSet<String> = records.iter().map(|s| s.record.id.to_string()).collect();
    assert_eq!(in_kafka, acked_ids);
    assert_seq_order_per_partition(&records);
    for stored in &records {
        assert!(["node-a", "node-b"].contains(&stored.record.origin_node.as_str()));
        assert!(stored.record.client_id.starts_with(&stored.record.room));
    }

    for node in [&node_a, &node_b] {
        assert!(common::metric(node, "chat_kafka_produce_seconds_count").await >= 60.0);
        assert!(common::metric(node, "chat_redis_publish_seconds_count").await >= 60.0);
        assert!(common::metric(node, "chat_fanout_in_total").await >= 60.0);
        assert!(common::metric(node, "chat_fanout_out_total").await >= 60.0);
        assert_eq!(http_get(&node.http("/readyz")).await.0, 200);
    }
}

#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn a_retry_on_the_other_node_returns_the_original_ack() {
    let backends = Backends::shared();
    let node_a = backends.node("node-a", &[]);
    let node_b = backends.node("node-b", &[]);
    let mut ann = Client::dev(&node_a, "ann").await;
    ann.join("r").await;
    let first = ann.say("r", "retry-me", "exactly once").await;
    drop(ann);
    // Reconnected through another node, the same retry.
    let mut ann = Client::dev(&node_b, "ann").await;
    ann.join("r").await;
    assert_eq!(ann.say("r", "retry-me", "exactly once").await, first);
    let next = ann.say("r", "new-id", "second").await;
    assert_eq!(next["seq"], 2);
    let records = read_topic(&backends.kafka, &backends.topic, 2, Duration::from_secs(2)).await;
    assert_eq!(records.len(), 2, "the retry produced no second record");
}

#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn join_with_since_replays_on_the_other_node() {
    let backends = Backends::shared();
    let node_a = backends.node("node-a", &["--history-per-room", "4"]);
    let node_b = backends.node("node-b", &["--history-per-room", "4"]);
    let mut ann = Client::dev(&node_a, "ann").await;
    ann.join("r").await;
    for i in 1..=6 {
        ann.say("r", &format!("c{i}"), &format!("m{i}")).await;
    }
    let mut bob = Client::dev(&node_b, "bob").await;
    bob.send(json!({"type": "join", "room": "r", "since": 3}))
        .await;
    assert_eq!(bob.expect("joined").await["last_seq"], 6);
    for seq in 4..=6 {
        let message = bob.expect("message").await;
        assert_eq!(
            (message["seq"].as_u64(), message["body"].as_str()),
            (Some(seq), Some(format!("m{seq}").as_str()))
        );
    }
    assert_eq!(
        bob.expect("replayed").await,
        json!({"type": "replayed", "room": "r", "from": 4, "to": 6, "complete": true})
    );

    // Older than the 4 messages Redis holds: incomplete.
    bob.send(json!({"type": "join", "room": "r", "since": 1}))
        .await;
    bob.expect("joined").await;
    for seq in 3..=6 {
        assert_eq!(bob.expect("message").await["seq"], seq);
    }
    let replayed = bob.expect("replayed").await;
    assert_eq!(replayed["complete"], false, "seq 2 was trimmed: {replayed}");
}

#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn presence_spans_nodes_and_a_killed_node_drops_its_members() {
    let backends = Backends::shared();
    let node_a = backends.node("node-a", &["--presence-ttl-secs", "4"]);
    let mut node_b = backends.node("node-b", &["--presence-ttl-secs", "4"]);
    let mut ann = Client::dev(&node_a, "ann").await;
    ann.join("r").await;
    let mut bob = Client::dev(&node_b, "bob").await;
    let joined = bob.join("r").await;
    assert_eq!(
        joined["members"],
        json!(["ann", "bob"]),
        "members across nodes"
    );
    assert_eq!(
        ann.expect("presence").await,
        json!({"type": "presence", "room": "r", "user": "bob", "state": "joined"})
    );

    // A second session of bob on node A is not a new presence.
    let mut bob_again = Client::dev(&node_a, "bob").await;
    bob_again.join("r").await;
    ann.expect_silence(Duration::from_millis(300)).await;
    drop(bob_again);
    ann.expect_silence(Duration::from_millis(300)).await;

    // Node B dies without draining: bob is dropped by node A's reaper.
    let killed = Instant::now();
    node_b.child.kill().unwrap();
    node_b.child.wait().unwrap();
    let presence = ann.expect_skipping_presence("presence").await;
    assert_eq!(
        presence,
        json!({"type": "presence", "room": "r", "user": "bob", "state": "left"})
    );
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed.elapsed()
    );
    let mut cy = Client::dev(&node_a, "cy").await;
    assert_eq!(cy.join("r").await["members"], json!(["ann", "cy"]));
}

/// Sends until one is acknowledged (the service is back), within `within`.
async fn send_until_acked(client: &mut Client, room: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "sends still failing after {within:?}"
        );
        client
            .send(json!({"type": "send", "room": room, "client_id": format!("probe-{attempt}"), "body": "probe"}))
            .await;
        let frame = client.expect_skipping_presence_or_messages().await;
        if frame["type"] == "ack" {
            return frame;
        }
        assert_eq!(frame["code"], "not_sent", "{frame}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    unreachable!()
}

impl Client {
    /// The next ack or error, skipping presence and messages.
    async fn expect_skipping_presence_or_messages(&mut self) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == "ack" || frame["type"] == "error" {
                return frame;
            }
        }
    }
}

/// True once a message sent by `from` reaches `to` (live), retrying sends.
async fn deliveries_resume(from: &mut Client, to: &mut Client, room: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut attempt = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "live delivery {} -> {} did not resume",
            from.user,
            to.user
        );
        attempt += 1;
        let body = format!("after the outage {attempt}");
        from.send(json!({"type": "send", "room": room, "client_id": format!("resume-{attempt}"), "body": body}))
            .await;
        let ack = from.expect_skipping_presence_or_messages().await;
        if ack["type"] != "ack" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let wait_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < wait_until {
            match tokio::time::timeout(Duration::from_millis(200), to.recv()).await {
                Ok(frame) if frame["type"] == "message" && frame["body"] == body.as_str() => return,
                _ => {}
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn a_redis_restart_fails_sends_loudly_then_delivery_resumes_on_both_nodes() {
    let mut redis = PrivateRedis::start();
    let backends = Backends {
        redis: redis.url(),
        ..Backends::shared()
    };
    let node_a = backends.node("node-a", &[]);
    let node_b = backends.node("node-b", &[]);
    let mut ann = Client::dev(&node_a, "ann").await;
    let mut bob = Client::dev(&node_b, "bob").await;
    ann.join("r").await;
    bob.join("r").await;
    let before = ann.say("r", "before", "before the outage").await;
    assert_eq!(
        bob.expect_skipping_presence("message").await["id"],
        before["id"]
    );

    redis.kill();
    ann.send(json!({"type": "send", "room": "r", "client_id": "during", "body": "lost?"}))
        .await;
    let error = ann.expect_skipping_presence_or_messages().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "not_sent");
    assert_eq!(error["ref"], "during");
    assert!(
        error["message"].as_str().unwrap().contains("Redis"),
        "{error}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&node_a.http("/readyz")).await.0 != 503 {
        assert!(Instant::now() < deadline, "readyz stayed 200 without Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    redis.restart();
    let after = send_until_acked(&mut ann, "r", Duration::from_secs(30)).await;
    assert!(
        after["seq"].as_u64().unwrap() > before["seq"].as_u64().unwrap(),
        "seqs continue after Redis lost its data: {after}"
    );
    deliveries_resume(&mut ann, &mut bob, "r", Duration::from_secs(30)).await;
    deliveries_resume(&mut bob, &mut ann, "r", Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&node_b.http("/readyz")).await.0 != 200 {
        assert!(Instant::now() < deadline, "node B not ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        common::metric(&node_a, r#"chat_backend_errors_total{kind="redis_dedupe"}"#).await >= 1.0
    );
}

#[tokio::test]
#[ignore = "needs Redis and a tansu binary: run through scripts/test"]
async fn a_stopped_kafka_fails_sends_and_readiness_until_it_returns() {
    let mut kafka = PrivateKafka::start();
    let backends = Backends {
        kafka: kafka.brokers(),
        ..Backends::shared()
    };
    let node = backends.node("node-a", &["--kafka-produce-timeout-ms", "2000"]);
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("r").await;
    ann.say("r", "before", "before").await;
    assert_eq!(http_get(&node.http("/readyz")).await.0, 200);

    kafka.kill();
    let started = Instant::now();
    ann.send(json!({"type": "send", "room": "r", "client_id": "during", "body": "x"}))
        .await;
    let error = ann.expect("error").await;
    assert_eq!(error["code"], "not_sent");
    assert!(
        error["message"].as_str().unwrap().contains("Kafka"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(&node.http("/readyz")).await;
        if status == 503 {
            assert!(body.contains("Kafka"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "readyz stayed 200 without Kafka");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    kafka.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&node.http("/readyz")).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready after Kafka returned");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ack = send_until_acked(&mut ann, "r", Duration::from_secs(60)).await;
    let records = read_topic(&kafka.brokers(), &backends.topic, 2, Duration::from_secs(1)).await;
    let ids: Vec<String> = records.iter().map(|s| s.record.id.to_string()).collect();
    assert!(
        ids.contains(&ack["id"].as_str().unwrap().to_owned()),
        "the acked message is in Kafka"
    );
}

/// Not a pass/fail test of speed: measures and prints cross-node latency
/// (one message at a time, sent on node A, received on node B).
#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn cross_node_latency_is_measured() {
    let backends = Backends::shared();
    // One sender measures as fast as it can: lift its rate limit.
    let unlimited = ["--send-rate", "100000", "--send-burst", "100000"];
    let node_a = backends.node("node-a", &unlimited);
    let node_b = backends.node("node-b", &unlimited);
    let mut ann = Client::dev(&node_a, "ann").await;
    let mut bob = Client::dev(&node_b, "bob").await;
    ann.join("lat").await;
    bob.join("lat").await;
    let (mut to_ack, mut to_delivery) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let sent = Instant::now();
        ann.send(
            json!({"type": "send", "room": "lat", "client_id": format!("l{i}"), "body": "ping"}),
        )
        .await;
        // Whichever comes first; both are needed.
        let mut acked = None;
        let mut delivered = None;
        while acked.is_none() || delivered.is_none() {
            tokio::select! {
                frame = ann.recv(), if acked.is_none() => {
                    assert_ne!(frame["type"], "error", "{frame}");
                    if frame["type"] == "ack" { acked = Some(sent.elapsed()) }
                }
                frame = bob.recv(), if delivered.is_none() => if frame["type"] == "message" { delivered = Some(sent.elapsed()) },
            }
        }
        to_ack.push(acked.unwrap().as_secs_f64() * 1000.0);
        to_delivery.push(delivered.unwrap().as_secs_f64() * 1000.0);
    }
    to_ack.sort_by(f64::total_cmp);
    to_delivery.sort_by(f64::total_cmp);
    eprintln!(
        "LATENCY two nodes, 200 sequential sends: send->ack p50 {:.2} ms p99 {:.2} ms; send->delivery (other node) p50 {:.2} ms p99 {:.2} ms",
        percentile(&to_ack, 0.5),
        percentile(&to_ack, 0.99),
        percentile(&to_delivery, 0.5),
        percentile(&to_delivery, 0.99)
    );
    assert_eq!(to_ack.len(), 200);
}

/// Subscribers of a channel, as Redis counts them.
async fn subscribers(redis_url: &str, channel: &str) -> i64 {
    let client = redis::Client::open(redis_url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut connection)
        .await
        .unwrap();
    counts.first().map_or(0, |(_, n)| *n)
}

#[tokio::test]
#[ignore = "needs Redis and Kafka: run through scripts/test"]
async fn a_node_stays_subscribed_while_any_member_remains_and_clusters_do_not_cross_talk() {
    let backends = Backends::shared();
    let node_a = backends.node("node-a", &[]);
    let node_b = backends.node("node-b", &[]);
    // Another chat cluster on the same Redis, with the same room name.
    let other = Backends {
        prefix: unique("other-cluster"),
        ..backends.clone()
    };
    let node_c = other.node("node-c", &[]);
    let channel = format!("{}:room:r", backends.prefix);

    let mut ann = Client::dev(&node_a, "ann").await;
    let mut bob = Client::dev(&node_b, "bob").await;
    let mut cy = Client::dev(&node_b, "cy").await;
    let mut eve = Client::dev(&node_c, "eve").await;
    ann.join("r").await;
    bob.join("r").await;
    cy.join("r").await;
    eve.join("r").await;
    assert_eq!(
        subscribers(&backends.redis, &channel).await,
        2,
        "one subscription per node"
    );

    // One of node B's two members leaves: node B must stay subscribed.
    bob.send(json!({"type": "leave", "room": "r"})).await;
    bob.expect_skipping_presence("left").await;
    let ack = ann.say("r", "c1", "still there?").await;
    assert_eq!(
        cy.expect_skipping_presence("message").await["id"],
        ack["id"]
    );
    assert_eq!(subscribers(&backends.redis, &channel).await, 2);
    eve.expect_silence(Duration::from_millis(500)).await;

    // The last member on node B leaves: node B unsubscribes.
    cy.send(json!({"type": "leave", "room": "r"})).await;
    cy.expect_skipping_presence("left").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers(&backends.redis, &channel).await != 1 {
        assert!(
            Instant::now() < deadline,
            "node B kept a subscription without members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
