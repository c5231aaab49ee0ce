//! Protection of the node and of other users: send rate limits, cutting off
//! clients that do not read, and the graceful drain on SIGTERM.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, Ended, Node, http_get};
use serde_json::json;

#[tokio::test]
async fn sends_over_the_rate_limit_are_refused_then_abuse_disconnects() {
    // A refill of one token per 1000 s: the burst is all this test gets.
    let node = Node::start(&[
        "--send-rate",
        "0.001",
        "--send-burst",
        "10",
        "--send-abuse-limit",
        "20",
    ]);
    let mut ann = Client::dev(&node, "ann").await;
    ann.join("r").await;
    // Pipeline 15 sends: 10 fit in the burst, 5 are refused.
    for i in 0..15 {
        ann.send(json!({"type": "send", "room": "r", "client_id": format!("c{i}"), "body": "x"}))
            .await;
    }
    let (mut acks, mut limited) = (0, 0);
    for _ in 0..15 {
        let frame = ann.recv().await;
        match frame["type"].as_str().unwrap() {
            "ack" => acks += 1,
            "error" => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                assert!(frame["ref"].as_str().unwrap().starts_with('c'));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((acks, limited), (10, 5));

    // Keep hammering: the 20th refusal in a row makes the node hang up with
    // 1008. Exactly 15 more, so that nothing is written after the close (a
    // write to the closed socket could reset the connection before the
    // close frame is read).
    for i in 0..15 {
        ann.send(json!({"type": "send", "room": "r", "client_id": format!("d{i}"), "body": "x"}))
            .await;
    }
    match ann.until_end(Duration::from_secs(5)).await {
        Ended::Closed(Some((code, reason))) => {
            assert_eq!(code, 1008);
            assert!(reason.contains("rate limit"), "{reason}");
        }
        other => panic!("expected 1008, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off_and_the_others_keep_receiving() {
    let node = Node::start(&[
        "--outbound-queue",
        "64",
        "--send-rate",
        "100000",
        "--send-burst",
        "100000",
    ]);
    let mut sender = Client::dev(&node, "sender").await;
    let mut reader = Client::dev(&node, "reader").await;
    let mut stalled = Client::dev(&node, "stalled").await;
    sender.join("r").await;
    reader.join("r").await;
    stalled.join("r").await;
    // Drain presence noise so that `reader` sees only messages below.
    reader.expect("presence").await;
    let rss_before = node.rss_kib();

    // 3,000 messages of 4 KiB: ~12 MiB that the stalled client never reads.
    const COUNT: u64 = 3000;
    let body = "m".repeat(4000);
    let sending = async {
        for i in 0..COUNT {
            sender.say("r", &format!("c{i}"), &body).await;
        }
    };
    let receiving = async {
        for expected in 1..=COUNT {
            // `stalled` leaving (when cut off) shows up as presence.
            let message = reader.expect_skipping_presence("message").await;
            assert_eq!(message["seq"], expected);
        }
    };
    tokio::join!(sending, receiving);

    // The stalled client was disconnected rather than buffered without bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(&node, "chat_slow_client_disconnects_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its session ends once the close frame is written or the grace runs out.
    while common::metric(&node, "chat_connections").await != 2.0 {
        assert!(Instant::now() < deadline, "the stalled session never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth_kib = node.rss_kib().saturating_sub(rss_before);
    assert!(
        growth_kib < 8 * 1024,
        "server RSS grew by {growth_kib} KiB while a client stalled on ~12 MiB of messages"
    );
    // When it finally reads, the stalled client finds its connection ended
    // (with 4002 if the close frame made it through the full socket).
    match stalled.until_end(Duration::from_secs(10)).await {
        Ended::Closed(Some((code, _))) => assert_eq!(code, 4002),
        Ended::Closed(None) | Ended::Dropped => {}
    }
    // The others are unaffected.
    sender.say("r", "after", "still flowing").await;
    assert_eq!(reader.expect("message").await["body"], "still flowing");
}

#[tokio::test]
async fn sigterm_drains_refusing_new_connections_and_closing_sessions_with_1012() {
    let mut node = Node::start(&["--drain-delay-secs", "1", "--drain-timeout-secs", "5"]);
    let mut ann = Client::dev(&node, "ann").await;
    let mut bob = Client::dev(&node, "bob").await;
    ann.join("r").await;
    bob.join("r").await;
    ann.expect("presence").await;
    assert_eq!(http_get(&node.http("/readyz")).await.0, 200);

    let started = Instant::now();
    node.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // During the drain delay: not ready, no new sessions, old ones still work.
    let (status, body) = http_get(&node.http("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(&node.http("/ws")).await.0, 503);
    match tokio_tungstenite::connect_async(node.url("name=late")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("a new WebSocket must be refused while draining: {other:?}"),
    }
    let ack = ann.say("r", "in-flight", "sent while draining").await;
    assert_eq!(bob.expect("message").await["id"], ack["id"]);

    for client in [&mut ann, &mut bob] {
        match client.until_end(Duration::from_secs(5)).await {
            Ended::Closed(Some((code, _))) => assert_eq!(code, 1012),
            other => panic!("expected 1012, got {other:?}"),
        }
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = node.child.wait().expect("wait");
        (status, node)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "node exited with {status}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "drain took {:?}",
        started.elapsed()
    );
}
