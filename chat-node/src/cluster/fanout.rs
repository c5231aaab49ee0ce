//! Live fanout between nodes through Redis pub/sub.
//!
//! Each node holds one subscriber connection (RESP3, multiplexed) and is
//! subscribed to the channel of every room that has a local member: it
//! subscribes when a room's first local member joins and unsubscribes when
//! the last one leaves. The redis client resubscribes by itself after a
//! reconnect, and a periodic reconcile repairs anything a failed command
//! left behind.
//!
//! A node delivers its own events to its local members directly and
//! publishes them for the others; on receipt it ignores its own echoes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::keys::Keys;
use crate::cluster::store::SeqFloors;
use crate::fanout::FanoutError;
use crate::metrics::Metrics;
use crate::rooms::LocalRooms;

/// How often every subscription is compared with local membership.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a join waits for its room's subscription to be confirmed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// An event as published on a room channel.
#[derive(Deserialize)]
struct Envelope<'a> {
    /// Origin node.
    #[serde(borrow)]
    o: Cow<'a, str>,
    /// Seq of a message event.
    #[serde(default)]
    s: Option<u64>,
    /// The server frame, delivered verbatim.
    #[serde(borrow)]
    f: &'a RawValue,
}

fn envelope(node: &str, seq: Option<u64>, frame: &str) -> String {
    let node = serde_json::to_string(node).unwrap_or_else(|_| "\"?\"".into());
    match seq {
        Some(seq) => format!(r#"{{"o":{node},"s":{seq},"f":{frame}}}"#),
        None => format!(r#"{{"o":{node},"f":{frame}}}"#),
    }
}

enum Request {
    /// Make the subscription of this room match its local membership.
    Sync(String, Option<oneshot::Sender<()>>),
}

/// What the fanout tasks share with the rest of the node.
pub struct FanoutContext {
    pub keys: Keys,
    pub node: Arc<str>,
    pub rooms: Arc<LocalRooms>,
    pub floors: Arc<SeqFloors>,
    pub metrics: Arc<Metrics>,
}

pub struct RedisFanout {
    publisher: ConnectionManager,
    keys: Keys,
    node: Arc<str>,
    metrics: Arc<Metrics>,
    requests: mpsc::UnboundedSender<Request>,
}

impl RedisFanout {
    /// Connects the subscriber and starts the tasks that keep subscriptions
    /// in line with local membership and deliver what arrives.
    pub async fn start(
        client: redis::Client,
        connection: redis::aio::ConnectionManagerConfig,
        publisher: ConnectionManager,
        context: FanoutContext,
    ) -> Result<RedisFanout, redis::RedisError> {
        let FanoutContext {
            keys,
            node,
            rooms,
            floors,
            metrics,
        } = context;
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let config = connection
            .set_push_sender(push_tx)
            .set_automatic_resubscription();
        let subscriber = client.get_connection_manager_with_config(config).await?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        tokio::spawn(receive(
            push_rx,
            keys.clone(),
            node.clone(),
            rooms.clone(),
            floors,
            metrics.clone(),
        ));
        tokio::spawn(keep_subscriptions(
            subscriber,
            requests_rx,
            keys.clone(),
            rooms,
            metrics.clone(),
        ));
        Ok(RedisFanout {
            publisher,
            keys,
            node,
            metrics,
            requests,
        })
    }

    /// Publishes an already serialized frame to the other nodes.
    pub async fn publish(
        &self,
        room: &str,
        frame: &Utf8Bytes,
        seq: Option<u64>,
    ) -> Result<(), FanoutError> {
        let payload = envelope(&self.node, seq, frame.as_str());
        let started = Instant::now();
        let mut publisher = self.publisher.clone();
        let published: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(self.keys.channel(room))
            .arg(payload)
            .query_async(&mut publisher)
            .await;
        match published {
            Ok(_) => {
                self.metrics
                    .redis_publish_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.fanout_out.inc();
                Ok(())
            }
            Err(err) => {
                self.metrics.backend_error("redis_publish");
                Err(FanoutError::Unavailable(format!(
                    "Redis publish failed: {err}"
                )))
            }
        }
    }

    /// Ensures this node is subscribed to `room`, waiting briefly for the
    /// subscription so that a joining member does not miss what follows.
    pub async fn watch(&self, room: &str) {
        let (done, wait) = oneshot::channel();
        if self
            .requests
            .send(Request::Sync(room.to_owned(), Some(done)))
            .is_ok()
        {
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, wait).await;
        }
    }

    /// Lets the subscription of `room` go if no local member is left.
    pub fn unwatch(&self, room: &str) {
        let _ = self.requests.send(Request::Sync(room.to_owned(), None));
    }
}

async fn keep_subscriptions(
    mut subscriber: ConnectionManager,
    mut requests: mpsc::UnboundedReceiver<Request>,
    keys: Keys,
    rooms: Arc<LocalRooms>,
    metrics: Arc<Metrics>,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut ticker = tokio::time::interval(RECONCILE_INTERVAL);
    loop {
        let mut dirty: HashMap<String, Vec<oneshot::Sender<()>>> = HashMap::new();
        tokio::select! {
            request = requests.recv() => {
                let Some(Request::Sync(room, waiter)) = request else { return };
                dirty.entry(room).or_default().extend(waiter);
                // Take whatever else is queued, so a burst of joins is one pass.
                while let Ok(Request::Sync(room, waiter)) = requests.try_recv() {
                    dirty.entry(room).or_default().extend(waiter);
                }
            }
            _ = ticker.tick() => {
                // An idle connection whose reconnect attempts ran out while
                // Redis was away reconnects (and resubscribes) on a command.
                let ping = redis::cmd("PING");
                if let Err(err) = ping.query_async::<String>(&mut subscriber).await {
                    tracing::debug!(%err, "Redis subscriber not reachable yet");
                }
                for room in rooms.room_names().into_iter().chain(subscribed.iter().cloned()) {
                    dirty.entry(room).or_default();
                }
            }
        }
        for (room, waiters) in dirty {
            let wanted = rooms.has_members(&room);
            let have = subscribed.contains(&room);
            let channel = keys.channel(&room);
            let result = match (wanted, have) {
                (true, false) => subscriber.subscribe(&channel).await.map(|()| {
                    subscribed.insert(room.clone());
                }),
                (false, true) => subscriber.unsubscribe(&channel).await.map(|()| {
                    subscribed.remove(&room);
                }),
                _ => Ok(()),
            };
            if let Err(err) = result {
                // Retried at the next reconcile.
                metrics.backend_error("redis_subscribe");
                tracing::warn!(room, %err, "could not change the room subscription; will retry");
            }
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
    }
}

async fn receive(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    keys: Keys,
    node: Arc<str>,
    rooms: Arc<LocalRooms>,
    floors: Arc<SeqFloors>,
    metrics: Arc<Metrics>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message => {
                let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
                    continue;
                };
                let (Ok(channel), Ok(payload)) = (
                    redis::from_redis_value_ref::<String>(channel),
                    redis::from_redis_value_ref::<String>(payload),
                ) else {
                    continue;
                };
                let Some(room) = keys.room_of_channel(&channel) else {
                    continue;
                };
                let envelope: Envelope = match serde_json::from_str(&payload) {
                    Ok(envelope) => envelope,
                    Err(err) => {
                        metrics.backend_error("fanout_decode");
                        tracing::warn!(room, %err, "ignoring an unreadable fanout event");
                        continue;
                    }
                };
                if *envelope.o == *node {
                    continue;
                }
                metrics.fanout_in.inc();
                if let Some(seq) = envelope.s {
                    floors.observe(room, seq);
                }
                let frame = Utf8Bytes::from(envelope.f.get().to_owned());
                let delivery = rooms.deliver(room, &frame, None);
                if envelope.s.is_some() {
                    metrics.messages_delivered.inc_by(delivery.delivered);
                }
            }
            PushKind::Disconnection => {
                metrics.backend_error("redis_subscriber_disconnected");
                tracing::warn!(
                    "Redis subscriber disconnected; it reconnects and resubscribes by itself"
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_the_frame_verbatim() {
        let frame = r#"{"type":"typing","room":"r","user":"ann"}"#;
        let text = envelope("node-\"a\"", Some(7), frame);
        let parsed: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.o, "node-\"a\"");
        assert_eq!(parsed.s, Some(7));
        assert_eq!(parsed.f.get(), frame);
        let text = envelope("n", None, frame);
        let parsed: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.s, None);
    }
}
