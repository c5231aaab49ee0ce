//! Proves the test harness gives us a real Redis: a message published on a
//! channel reaches a subscriber. Needs `REDIS_URL` (set by scripts/services).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use futures_util::StreamExt;
use std::time::Duration;

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .expect("REDIS_URL is not set: run this test through scripts/test (or scripts/services -- cargo test)")
}

#[tokio::test]
#[ignore = "needs Redis: run through scripts/test"]
async fn a_published_message_reaches_a_subscriber() {
    let client = redis::Client::open(redis_url()).expect("REDIS_URL is a redis URL");
    let mut pubsub = client.get_async_pubsub().await.expect("connect subscriber");
    let channel = format!("realchat-test-{}", std::process::id());
    pubsub.subscribe(&channel).await.expect("subscribe");
    let mut publisher = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect publisher");
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("hello from the harness")
        .query_async(&mut publisher)
        .await
        .expect("publish");
    assert_eq!(receivers, 1, "exactly our subscriber is listening");
    let mut messages = pubsub.on_message();
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("message within 5 s")
        .expect("stream open");
    assert_eq!(message.get_channel_name(), channel);
    assert_eq!(
        message.get_payload::<String>().unwrap(),
        "hello from the harness"
    );
}
