//! Where a room's messages get their `seq`, are deduplicated and are kept
//! for replay.
//!
//! [`Store::Memory`] is the standalone implementation: one lock around the
//! room logs and the dedupe window, so that "check the dedupe window, take a
//! seq, record the message" is atomic. [`Store::Cluster`] keeps seq, dedupe
//! and recent history in Redis and makes every message durable in Kafka
//! before it counts as sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use realchat_protocol::ChatMessage;
use uuid::Uuid;

use crate::cluster::store::ClusterStore;
use crate::dedupe::{Acked, DedupeWindow};
use crate::history::{Replay, RoomLog};

/// A message as sent, before the store gives it a seq and an id.
#[derive(Debug, Clone)]
pub struct Draft {
    pub room: String,
    pub user: Arc<str>,
    pub client_id: String,
    pub body: String,
}

/// The outcome of committing a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// A new message, to be fanned out.
    New(ChatMessage),
    /// A retry of a message already stored: answer with its original ack.
    Duplicate(Acked),
}

/// Why the store could not take a message or answer a query.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Unavailable(String),
    #[error("a send with this client_id is still in progress")]
    InFlight,
}

pub enum Store {
    Memory(MemoryStore),
    Cluster(Box<ClusterStore>),
}

impl Store {
    pub async fn commit(&self, draft: Draft) -> Result<Committed, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.commit(draft, Instant::now())),
            Store::Cluster(store) => store.commit(draft).await,
        }
    }

    pub async fn replay(&self, room: &str, since: u64) -> Result<Replay, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.replay(room, since)),
            Store::Cluster(store) => store.replay(room, since).await,
        }
    }

    /// Recent messages with `seq < before`, newest first.
    pub async fn page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.page(room, before, limit)),
            Store::Cluster(store) => store.page(room, before, limit).await,
        }
    }

    pub async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.last_seq(room)),
            Store::Cluster(store) => store.last_seq(room).await,
        }
    }
}

struct MemoryState {
    rooms: HashMap<String, RoomLog>,
    dedupe: DedupeWindow,
}

/// Standalone store: everything in this process, lost on restart.
pub struct MemoryStore {
    state: Mutex<MemoryState>,
    history_per_room: usize,
    replay_limit: usize,
}

impl MemoryStore {
    pub fn new(
        history_per_room: usize,
        replay_limit: usize,
        dedupe_window: Duration,
    ) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(MemoryState {
                rooms: HashMap::new(),
                dedupe: DedupeWindow::new(dedupe_window),
            }),
            history_per_room,
            replay_limit: replay_limit.max(1),
        }
    }

    pub fn commit(&self, draft: Draft, now: Instant) -> Committed {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(acked) = state.dedupe.get(&draft.user, &draft.client_id, now) {
            return Committed::Duplicate(acked);
        }
        let capacity = self.history_per_room;
        let log = state
            .rooms
            .entry(draft.room.clone())
            .or_insert_with(|| RoomLog::new(capacity));
        let message = ChatMessage {
            seq: log.next_seq(),
            id: Uuid::now_v7(),
            ts: chrono::Utc::now().timestamp_millis(),
            room: draft.room,
            user: draft.user.to_string(),
            body: draft.body,
        };
        log.push(message.clone());
        let acked = Acked {
            room: message.room.clone(),
            seq: message.seq,
            id: message.id.to_string(),
        };
        state
            .dedupe
            .insert(&draft.user, &draft.client_id, acked, now);
        Committed::New(message)
    }

    pub fn replay(&self, room: &str, since: u64) -> Replay {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.rooms.get(room) {
            Some(log) => log.since(since, self.replay_limit),
            None => Replay {
                messages: Vec::new(),
                complete: true,
            },
        }
    }

    pub fn page(&self, room: &str, before: Option<u64>, limit: usize) -> Vec<ChatMessage> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .rooms
            .get(room)
            .map(|log| log.before(before, limit))
            .unwrap_or_default()
    }

    pub fn last_seq(&self, room: &str) -> u64 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.rooms.get(room).map_or(0, RoomLog::last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(room: &str, user: &str, client_id: &str) -> Draft {
        Draft {
            room: room.into(),
            user: user.into(),
            client_id: client_id.into(),
            body: "hi".into(),
        }
    }

    #[test]
    fn seqs_are_per_room_and_retries_are_deduplicated() {
        let store = MemoryStore::new(100, 1000, Duration::from_secs(300));
        let now = Instant::now();
        let Committed::New(first) = store.commit(draft("a", "ann", "c1"), now) else {
            panic!("first send must be new");
        };
        assert_eq!(first.seq, 1);
        let Committed::New(other_room) = store.commit(draft("b", "ann", "c2"), now) else {
            panic!("new client id must be new");
        };
        assert_eq!(other_room.seq, 1, "seq is per room");
        match store.commit(draft("a", "ann", "c1"), now) {
            Committed::Duplicate(acked) => {
                assert_eq!((acked.seq, acked.id), (1, first.id.to_string()))
            }
            other => panic!("retry must be a duplicate, got {other:?}"),
        }
        let Committed::New(bobs) = store.commit(draft("a", "bob", "c1"), now) else {
            panic!("same client id from another user is a new message");
        };
        assert_eq!(bobs.seq, 2);
        assert!(bobs.id > first.id, "UUIDv7 ids are time ordered");
        assert_eq!(store.last_seq("a"), 2);
        assert_eq!(store.replay("a", 1).messages, vec![bobs]);
    }

    #[test]
    fn retries_after_the_window_are_new_messages() {
        let store = MemoryStore::new(100, 1000, Duration::from_secs(300));
        let now = Instant::now();
        store.commit(draft("a", "ann", "c1"), now);
        let later = now + Duration::from_secs(301);
        assert!(
            matches!(store.commit(draft("a", "ann", "c1"), later), Committed::New(m) if m.seq == 2)
        );
    }
}
