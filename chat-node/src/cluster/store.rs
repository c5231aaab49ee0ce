//! The cluster store: seq, dedupe window and recent history in Redis, and
//! durability in Kafka.
//!
//! A send goes: reserve the `(user, client_id)` dedupe key → take the
//! room's send lock and the next seq (one atomic script) → produce the
//! record to Kafka and wait for the ack → record the message in the room's
//! recent history, the ack in the dedupe key, and release the lock (one
//! pipeline). Only then is the message fanned out and acknowledged.
//!
//! The lock is what keeps a room's records in seq order in its partition
//! when several nodes send to the room at once: without it, node A could
//! take seq 5, node B seq 6, and B's record reach Kafka first. Within a node,
//! sends to one room queue on an in-process gate instead of polling Redis.
//!
//! A failure before Kafka acknowledged releases the dedupe key, so the
//! client can retry with the same `client_id`; the seq taken is then
//! skipped (the only way a gap appears).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use realchat_protocol::record::RECORD_VERSION;
use realchat_protocol::{ChatMessage, MessageRecord};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::archive::Archive;
use crate::cluster::kafka::MessageLog;
use crate::cluster::keys::{self, Keys};
use crate::dedupe::Acked;
use crate::history::Replay;
use crate::metrics::Metrics;
use crate::store::{Committed, Draft, StoreError};

/// Value of a dedupe key while its send is in flight.
const PENDING: &str = "pending";

/// Highest seq this node has seen per room: the floor for new seqs should
/// Redis lose its counters.
#[derive(Default)]
pub struct SeqFloors {
    rooms: Mutex<HashMap<String, u64>>,
}

impl SeqFloors {
    pub fn observe(&self, room: &str, seq: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        match rooms.get_mut(room) {
            Some(known) => *known = (*known).max(seq),
            None => {
                rooms.insert(room.to_owned(), seq);
            }
        }
    }

    pub fn get(&self, room: &str) -> u64 {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).copied().unwrap_or(0)
    }
}

/// Queues this node's sends per room, so only one of them at a time
/// competes for the room's Redis lock.
#[derive(Default)]
struct RoomGates {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomGates {
    async fn enter(&self, room: &str) -> OwnedMutexGuard<()> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            if gates.len() > 10_000 {
                // Forget idle rooms; a gate in use is held by its Arc.
                gates.retain(|_, gate| Arc::strong_count(gate) > 1);
            }
            gates.entry(room.to_owned()).or_default().clone()
        };
        gate.lock_owned().await
    }
}

/// A short, varying pause between attempts at a contended room lock.
fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(chrono::Utc::now().timestamp_subsec_micros() % 500);
    Duration::from_micros(200 * u64::from(attempt.min(10)) + jitter)
}

pub struct StoreSettings {
    pub history_per_room: usize,
    /// Most messages one replay returns.
    pub replay_limit: usize,
    /// PostgreSQL history, for replays older than Redis holds.
    pub archive: Option<Arc<Archive>>,
    pub history_ttl: Duration,
    pub dedupe_window: Duration,
}

pub struct ClusterStore {
    redis: ConnectionManager,
    keys: Keys,
    log: Arc<MessageLog>,
    node: Arc<str>,
    floors: Arc<SeqFloors>,
    settings: StoreSettings,
    metrics: Arc<Metrics>,
    gates: RoomGates,
    lock_ttl: Duration,
    lock_and_next_seq: redis::Script,
    unlock: redis::Script,
    read_history: redis::Script,
}

impl ClusterStore {
    pub fn new(
        redis: ConnectionManager,
        keys: Keys,
        log: Arc<MessageLog>,
        node: Arc<str>,
        floors: Arc<SeqFloors>,
        settings: StoreSettings,
        metrics: Arc<Metrics>,
    ) -> ClusterStore {
        // Held at most for one produce; expires should a node die holding it.
        let lock_ttl = log.timeout() + Duration::from_secs(2);
        ClusterStore {
            redis,
            keys,
            log,
            node,
            floors,
            settings,
            metrics,
            gates: RoomGates::default(),
            lock_ttl,
            lock_and_next_seq: redis::Script::new(keys::LOCK_AND_NEXT_SEQ),
            unlock: redis::Script::new(keys::UNLOCK),
            read_history: redis::Script::new(keys::READ_HISTORY),
        }
    }

    fn redis_error(&self, step: &'static str, err: redis::RedisError) -> StoreError {
        self.metrics.backend_error(step);
        StoreError::Unavailable(format!("Redis is unavailable ({step}): {err}"))
    }

    pub async fn commit(&self, draft: Draft) -> Result<Committed, StoreError> {
        let mut redis = self.redis.clone();
        let dedupe_key = self.keys.dedupe(&draft.user, &draft.client_id);
        let window = self.settings.dedupe_window.as_secs().max(1);
        let reserved: Option<String> = redis::cmd("SET")
            .arg(&dedupe_key)
            .arg(PENDING)
            .arg("NX")
            .arg("EX")
            .arg(window)
            .query_async(&mut redis)
            .await
            .map_err(|err| self.redis_error("redis_dedupe", err))?;
        if reserved.is_none() {
            let existing: Option<String> = redis::cmd("GET")
                .arg(&dedupe_key)
                .query_async(&mut redis)
                .await
                .map_err(|err| self.redis_error("redis_dedupe", err))?;
            return match existing.as_deref() {
                Some(PENDING) => Err(StoreError::InFlight),
                Some(json) => serde_json::from_str::<Acked>(json)
                    .map(Committed::Duplicate)
                    .map_err(|err| StoreError::Unavailable(format!("corrupt dedupe entry: {err}"))),
                // Expired between SET and GET: treat as in flight; a retry succeeds.
                None => Err(StoreError::InFlight),
            };
        }
        match self
            .commit_reserved(&mut redis, draft, &dedupe_key, window)
            .await
        {
            Ok(message) => Ok(Committed::New(message)),
            Err(err) => {
                // Not in Kafka: release the key so a retry can send it.
                let _: Result<i64, _> = redis::cmd("DEL")
                    .arg(&dedupe_key)
                    .query_async(&mut redis)
                    .await;
                Err(err)
            }
        }
    }

    async fn commit_reserved(
        &self,
        redis: &mut ConnectionManager,
        draft: Draft,
        dedupe_key: &str,
        window: u64,
    ) -> Result<ChatMessage, StoreError> {
        let _gate = self.gates.enter(&draft.room).await;
        let lock_key = self.keys.send_lock(&draft.room);
        let token = Uuid::now_v7().to_string();
        let seq = self
            .lock_and_take_seq(redis, &draft.room, &lock_key, &token)
            .await?;
        self.floors.observe(&draft.room, seq);
        let now = chrono::Utc::now().timestamp_millis();
        let record = MessageRecord {
            v: RECORD_VERSION,
            id: Uuid::now_v7(),
            room: draft.room,
            seq,
            user: draft.user.to_string(),
            body: draft.body,
            sent_at_ms: now,
            produced_at_ms: now,
            origin_node: self.node.to_string(),
            client_id: draft.client_id,
        };
        let started = Instant::now();
        if let Err(err) = self.log.append(&record).await {
            self.metrics.backend_error("kafka_produce");
            let _: Result<i64, _> = self
                .unlock
                .key(&lock_key)
                .arg(&token)
                .invoke_async(redis)
                .await;
            return Err(StoreError::Unavailable(err.to_string()));
        }
        self.metrics
            .kafka_produce_seconds
            .observe(started.elapsed().as_secs_f64());

        let message = record.to_message();
        let acked = Acked {
            room: message.room.clone(),
            seq,
            id: message.id.to_string(),
        };
        // The message is durable now. Failing to record it in Redis only
        // costs replay from Redis (and a retry sees "in flight" until the
        // window ends; the lock expires by itself), so it is logged, not
        // reported as a failed send.
        // Plain EVAL, not EVALSHA: a pipeline cannot load a missing script
        // (as after a Redis restart), and Redis caches compiled scripts anyway.
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(keys::APPEND_HISTORY)
            .arg(2)
            .arg(self.keys.history(&message.room))
            .arg(self.keys.history_floor(&message.room))
            .arg(seq)
            .arg(serde_json::to_string(&message).unwrap_or_default())
            .arg(self.settings.history_per_room)
            .arg(self.settings.history_ttl.as_secs().max(1))
            .ignore()
            .cmd("SET")
            .arg(dedupe_key)
            .arg(serde_json::to_string(&acked).unwrap_or_default())
            .arg("XX")
            .arg("EX")
            .arg(window)
            .ignore()
            .cmd("EVAL")
            .arg(keys::UNLOCK)
            .arg(1)
            .arg(&lock_key)
            .arg(&token)
            .ignore();
        if let Err(err) = pipe.query_async::<()>(redis).await {
            self.metrics.backend_error("redis_history");
            tracing::warn!(room = %message.room, seq, %err, "message is in Kafka but not in the Redis history");
        }
        Ok(message)
    }

    /// Takes the room's send lock and the next seq, waiting (briefly, with
    /// jitter) while another node holds the lock.
    async fn lock_and_take_seq(
        &self,
        redis: &mut ConnectionManager,
        room: &str,
        lock_key: &str,
        token: &str,
    ) -> Result<u64, StoreError> {
        let deadline = Instant::now() + self.lock_ttl;
        let mut attempt = 0;
        loop {
            let seq: i64 = self
                .lock_and_next_seq
                .key(self.keys.seq(room))
                .key(lock_key)
                .arg(self.floors.get(room))
                .arg(token)
                .arg(self.lock_ttl.as_millis() as u64)
                .invoke_async(redis)
                .await
                .map_err(|err| self.redis_error("redis_seq", err))?;
            if let Ok(seq) = u64::try_from(seq) {
                return Ok(seq);
            }
            if Instant::now() >= deadline {
                self.metrics.backend_error("room_lock_timeout");
                return Err(StoreError::Unavailable(format!(
                    "room `{room}` is busy: its send lock stayed taken for {:?}",
                    self.lock_ttl
                )));
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    pub async fn replay(&self, room: &str, since: u64) -> Result<Replay, StoreError> {
        let limit = self.settings.replay_limit.max(1);
        let mut redis = self.redis.clone();
        let raw: Vec<String> = self
            .read_history
            .key(self.keys.history(room))
            .key(self.keys.history_floor(room))
            .key(self.keys.seq(room))
            .arg(since)
            .arg(limit)
            .invoke_async(&mut redis)
            .await
            .map_err(|err| self.redis_error("redis_history", err))?;
        let [last, exists, floor, stored @ ..] = raw.as_slice() else {
            return Err(StoreError::Unavailable("unexpected history reply".into()));
        };
        let last_seq: u64 = last.parse().unwrap_or(0);
        let floor: u64 = floor.parse().unwrap_or(0);
        let mut messages = Vec::with_capacity(stored.len());
        for json in stored {
            match serde_json::from_str::<ChatMessage>(json) {
                Ok(message) => messages.push(message),
                Err(err) => tracing::warn!(room, %err, "skipping an unreadable history entry"),
            }
        }
        // Everything at or below `missing_up_to` may have left Redis:
        // trimmed (the floor), or the whole history expired.
        let missing_up_to = if exists == "1" { floor } else { last_seq };
        if missing_up_to <= since {
            let cut_short =
                messages.len() >= limit && messages.last().is_some_and(|m| m.seq < last_seq);
            return Ok(Replay {
                complete: !cut_short,
                messages,
            });
        }
        let Some(archive) = &self.settings.archive else {
            return Ok(Replay {
                complete: false,
                messages,
            });
        };
        // Fill the gap from PostgreSQL. A room's records are in seq order in
        // its partition and stored batch by batch in that order, so once
        // PostgreSQL holds any seq >= `missing_up_to`, it holds everything
        // before it too.
        match archive.after(room, since, limit).await {
            Ok((older, persisted_up_to)) => {
                let merged = merge_by_seq(older, messages);
                let cut_short = merged.len() > limit;
                let messages: Vec<ChatMessage> = merged.into_iter().take(limit).collect();
                let cut_short = cut_short
                    || (messages.len() == limit
                        && messages.last().is_some_and(|m| m.seq < last_seq));
                Ok(Replay {
                    complete: persisted_up_to >= missing_up_to && !cut_short,
                    messages,
                })
            }
            Err(err) => {
                tracing::warn!(room, %err, "replay could not reach PostgreSQL; replaying what Redis holds");
                Ok(Replay {
                    complete: false,
                    messages,
                })
            }
        }
    }

    /// Recent messages held in Redis with `seq < before`, newest first.
    pub async fn page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let mut redis = self.redis.clone();
        let max = before.map_or("+inf".to_owned(), |b| format!("({b}"));
        let stored: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.history(room))
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut redis)
            .await
            .map_err(|err| self.redis_error("redis_history", err))?;
        Ok(stored
            .iter()
            .filter_map(|json| serde_json::from_str::<ChatMessage>(json).ok())
            .collect())
    }

    pub async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        let mut redis = self.redis.clone();
        let seq: Option<u64> = redis::cmd("GET")
            .arg(self.keys.seq(room))
            .query_async(&mut redis)
            .await
            .map_err(|err| self.redis_error("redis_seq", err))?;
        let seq = seq.unwrap_or(0).max(self.floors.get(room));
        Ok(seq)
    }
}

/// Messages of both lists, each seq once, in seq order.
fn merge_by_seq(a: Vec<ChatMessage>, b: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut by_seq: std::collections::BTreeMap<u64, ChatMessage> = BTreeMap::new();
    for message in a.into_iter().chain(b) {
        by_seq.entry(message.seq).or_insert(message);
    }
    by_seq.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq,
            id: Uuid::now_v7(),
            user: "u".into(),
            body: format!("m{seq}"),
            ts: 0,
        }
    }

    #[test]
    fn merging_keeps_each_seq_once_in_order() {
        let merged = merge_by_seq(
            vec![message(1), message(2), message(3)],
            vec![message(3), message(4)],
        );
        assert_eq!(
            merged.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn seq_floors_only_rise() {
        let floors = SeqFloors::default();
        assert_eq!(floors.get("r"), 0);
        floors.observe("r", 5);
        floors.observe("r", 3);
        assert_eq!(floors.get("r"), 5);
    }
}
