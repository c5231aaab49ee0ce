//! A standalone node over real WebSocket connections: rooms, sequencing,
//! idempotent retries, replay and every validation rule of the protocol.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, Ended, Node, http_get};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn members_of_a_room_exchange_messages_in_seq_order_and_others_see_nothing() {
    let node = Node::start(&[]);
    let mut ann = Client::dev(&node, "ann").await;
    let mut bob = Client::dev(&node, "bob").await;
    let mut cy = Client::dev(&node, "cy").await;

    let joined = ann.join("lobby").await;
    assert_eq!(joined["last_seq"], 0);
    assert_eq!(joined["members"], json!(["ann"]));
    let joined = bob.join("lobby").await;
    assert_eq!(joined["members"], json!(["ann", "bob"]));
    let presence = ann.expect("presence").await;
    assert_eq!(
        presence,
        json!({"type": "presence", "room": "lobby", "user": "bob", "state": "joined"})
    );
    cy.join("elsewhere").await;

    let mut last_seq = 0;
    for i in 0..5 {
        let (sender, receiver) = if i % 2 == 0 {
            (&mut ann, &mut bob)
        } else {
            (&mut bob, &mut ann)
        };
        let body = format!("hello {i}");
        let ack = sender.say("lobby", &format!("c{i}"), &body).await;
        let seq = ack["seq"].as_u64().unwrap();
        assert!(
            seq > last_seq,
            "seq must strictly increase: {seq} after {last_seq}"
        );
        last_seq = seq;
        let message = receiver.expect("message").await;
        assert_eq!(message["seq"], seq);
        assert_eq!(message["id"], ack["id"]);
        assert_eq!(message["body"], body);
        assert_eq!(message["user"], sender.user);
        assert_eq!(message["room"], "lobby");
        assert!(message["ts"].as_i64().unwrap() > 1_700_000_000_000);
        let id = uuid::Uuid::parse_str(message["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");
    }
    // The sender gets its ack, not a copy of its own message.
    ann.expect_silence(Duration::from_millis(200)).await;
    cy.expect_silence(Duration::from_millis(300)).await;

    bob.send(json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(bob.expect("left").await["room"], "lobby");
    let presence = ann.expect("presence").await;
    assert_eq!(presence["state"], "left");
    assert_eq!(presence["user"], "bob");
}

#[tokio::test]
async fn a_retried_send_returns_the_original_ack_and_creates_no_second_message() {
    let node = Node::start(&[]);
    let mut ann = Client::dev(&node, "ann").await;
    let mut bob = Client::dev(&node, "bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("presence").await;

    let first = ann.say("r", "same-id", "once").await;
    assert_eq!(bob.expect("message").await["seq"], first["seq"]);
    let retry = ann.say("r", "same-id", "once").await;
    assert_eq!(retry, first, "a retry gets the original ack");
    bob.expect_silence(Duration::from_millis(300)).await;

    // After a reconnect, the retry is still recognised.
    drop(ann);
    bob.expect("presence").await;
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("r").await;
    bob.expect("presence").await;
    assert_eq!(ann.say("r", "same-id", "once").await, first);
    // Another user's identical client_id is a different message.
    let other = bob.say("r", "same-id", "mine").await;
    assert_ne!(other["seq"], first["seq"]);
}

#[tokio::test]
async fn join_with_since_replays_what_was_missed() {
    let node = Node::start(&[]);
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("r").await;
    for i in 1..=5 {
        ann.say("r", &format!("c{i}"), &format!("m{i}")).await;
    }
    let mut bob = Client::dev(&node, "bob").await;
    bob.send(json!({"type": "join", "room": "r", "since": 2}))
        .await;
    let joined = bob.expect("joined").await;
    assert_eq!(joined["last_seq"], 5);
    for seq in 3..=5 {
        let message = bob.expect("message").await;
        assert_eq!(message["seq"], seq);
        assert_eq!(message["body"], format!("m{seq}"));
    }
    let replayed = bob.expect("replayed").await;
    assert_eq!(
        replayed,
        json!({"type": "replayed", "room": "r", "from": 3, "to": 5, "complete": true})
    );

    // Nothing missed: an empty, complete replay.
    let mut cy = Client::dev(&node, "cy").await;
    cy.send(json!({"type": "join", "room": "r", "since": 5}))
        .await;
    cy.expect("joined").await;
    assert_eq!(
        cy.expect("replayed").await,
        json!({"type": "replayed", "room": "r", "from": 6, "to": 5, "complete": true})
    );
}

#[tokio::test]
async fn replay_older_than_the_buffer_says_incomplete() {
    let node = Node::start(&["--history-per-room", "3"]);
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("r").await;
    for i in 1..=6 {
        ann.say("r", &format!("c{i}"), &format!("m{i}")).await;
    }
    let mut bob = Client::dev(&node, "bob").await;
    bob.send(json!({"type": "join", "room": "r", "since": 1}))
        .await;
    bob.expect("joined").await;
    for seq in 4..=6 {
        assert_eq!(bob.expect("message").await["seq"], seq);
    }
    let replayed = bob.expect("replayed").await;
    assert_eq!(
        replayed["complete"], false,
        "seqs 2 and 3 were evicted: {replayed}"
    );
}

/// Sends `frame` and expects an error with `code`; the connection stays
/// usable afterwards.
async fn expect_error(client: &mut Client, frame: String, code: &str, mentions: &str) {
    client.send_text(frame.clone()).await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], code, "for {frame}: {error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(mentions),
        "for {frame}: `{message}` should mention `{mentions}`"
    );
    client.send(json!({"type": "ping"})).await;
    client.expect("pong").await;
}

#[tokio::test]
async fn invalid_frames_get_error_frames_and_the_connection_stays_open() {
    let node = Node::start(&[]);
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("ok").await;

    expect_error(
        &mut ann,
        "{not json".into(),
        "invalid_json",
        "not valid JSON",
    )
    .await;
    expect_error(
        &mut ann,
        r#"{"type":"shout"}"#.into(),
        "unknown_type",
        "shout",
    )
    .await;
    expect_error(
        &mut ann,
        r#"{"room":"ok"}"#.into(),
        "invalid_frame",
        "no `type`",
    )
    .await;
    expect_error(
        &mut ann,
        r#"{"type":"join"}"#.into(),
        "invalid_frame",
        "`room`",
    )
    .await;
    expect_error(
        &mut ann,
        r#"{"type":"join","room":""}"#.into(),
        "invalid_room",
        "empty",
    )
    .await;
    let long = "r".repeat(65);
    expect_error(
        &mut ann,
        format!(r#"{{"type":"join","room":"{long}"}}"#),
        "invalid_room",
        "65",
    )
    .await;
    expect_error(
        &mut ann,
        r#"{"type":"join","room":"a b"}"#.into(),
        "invalid_room",
        "' '",
    )
    .await;
    let big = "x".repeat(4097);
    let frame = format!(r#"{{"type":"send","room":"ok","client_id":"c1","body":"{big}"}}"#);
    expect_error(&mut ann, frame, "body_too_large", "4097").await;
    let frame = r#"{"type":"send","room":"ok","client_id":"c2","body":"   "}"#;
    expect_error(&mut ann, frame.into(), "empty_body", "empty").await;
    let frame = r#"{"type":"send","room":"ok","client_id":"","body":"hi"}"#;
    expect_error(&mut ann, frame.into(), "invalid_client_id", "client_id").await;
    let frame = r#"{"type":"send","room":"nope","client_id":"c3","body":"hi"}"#;
    expect_error(&mut ann, frame.into(), "not_joined", "join it first").await;
    expect_error(
        &mut ann,
        r#"{"type":"leave","room":"nope"}"#.into(),
        "not_joined",
        "nope",
    )
    .await;
    expect_error(
        &mut ann,
        r#"{"type":"auth","token":"x"}"#.into(),
        "already_authenticated",
        "auth",
    )
    .await;

    // The failed send's error names its client_id so a client can match it.
    ann.send_text(format!(
        r#"{{"type":"send","room":"ok","client_id":"c9","body":"{big}"}}"#
    ))
    .await;
    assert_eq!(ann.expect("error").await["ref"], "c9");

    ann.ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(ann.expect("error").await["code"], "binary_not_supported");

    // A valid send still works after all of that, with seq 1: nothing
    // invalid consumed a seq.
    assert_eq!(ann.say("ok", "fine", "still here").await["seq"], 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let node = Node::start(&[]);
    let mut ann = Client::dev(&node, "ann").await;
    let body = "x".repeat(70 * 1024);
    ann.send_text(format!(
        r#"{{"type":"send","room":"r","client_id":"c","body":"{body}"}}"#
    ))
    .await;
    match ann.until_end(Duration::from_secs(5)).await {
        Ended::Closed(Some((code, reason))) => {
            assert_eq!(code, 1009);
            assert!(reason.contains("65536"), "{reason}");
        }
        other => panic!("expected close 1009, got {other:?}"),
    }

    // Far beyond the limit, the WebSocket layer stops reading; still 1009.
    let mut bob = Client::dev(&node, "bob").await;
    bob.send_text("y".repeat(400 * 1024)).await;
    match bob.until_end(Duration::from_secs(5)).await {
        Ended::Closed(Some((code, _))) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn too_many_rooms_is_refused() {
    let node = Node::start(&["--max-rooms-per-connection", "2"]);
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("a").await;
    ann.join("b").await;
    ann.join("a").await; // rejoining is fine
    ann.send(json!({"type": "join", "room": "c"})).await;
    let error = ann.expect("error").await;
    assert_eq!(error["code"], "too_many_rooms");
    assert_eq!(error["ref"], "c");
}

#[tokio::test]
async fn typing_reaches_the_others_in_the_room() {
    let node = Node::start(&[]);
    let mut ann = Client::dev(&node, "ann").await;
    let mut bob = Client::dev(&node, "bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("presence").await;
    ann.send(json!({"type": "typing", "room": "r"})).await;
    assert_eq!(
        bob.expect("typing").await,
        json!({"type": "typing", "room": "r", "user": "ann"})
    );
    // Repeats within a second are throttled.
    ann.send(json!({"type": "typing", "room": "r"})).await;
    bob.expect_silence(Duration::from_millis(300)).await;
    ann.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn serves_the_ui_health_and_metrics() {
    let node = Node::start(&[]);
    let (status, body) = http_get(&node.http("/")).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>RealChat</title>"));
    let (status, body) = http_get(&node.http("/app.js")).await;
    assert_eq!(status, 200);
    assert!(body.contains("new WebSocket"));
    assert_eq!(http_get(&node.http("/healthz")).await.0, 200);
    assert_eq!(http_get(&node.http("/readyz")).await.0, 200);

    let mut ann = Client::dev(&node, "ann").await;
    ann.join("r").await;
    ann.say("r", "c1", "hi").await;
    ann.send_text("nonsense".into()).await;
    ann.expect("error").await;
    assert_eq!(common::metric(&node, "chat_connections").await, 1.0);
    assert_eq!(common::metric(&node, "chat_rooms").await, 1.0);
    assert_eq!(
        common::metric(&node, "chat_messages_received_total").await,
        1.0
    );
    assert_eq!(
        common::metric(&node, "chat_send_ack_seconds_count").await,
        1.0
    );
    assert_eq!(
        common::metric(&node, r#"chat_rejected_total{reason="invalid_json"}"#).await,
        1.0
    );
}
