//! The chat operations a session performs — send, join, leave, typing,
//! replay — composed from the store (seq, dedupe, history), the fanout
//! transport and the local room registry.
//!
//! The send path is ordered for durability: the store commits the message
//! (and, in cluster mode, makes it durable) before anyone sees it; only then
//! is it fanned out and acknowledged.

use std::sync::Arc;

use realchat_protocol::{ChatMessage, PresenceState, ServerFrame};

use crate::archive::{Archive, ArchiveError};
use crate::dedupe::Acked;
use crate::fanout::{Fanout, FanoutError};
use crate::history::Replay;
use crate::metrics::Metrics;
use crate::outbound::Outbox;
use crate::presence::Presence;
use crate::rooms::{Delivery, LocalRooms, SessionId};
use crate::store::{Committed, Draft, Store, StoreError};

/// A send that failed; the message was not stored or not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a session needs to answer a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    pub last_seq: u64,
    pub members: Vec<String>,
}

/// Where a history page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistorySource {
    /// PostgreSQL: everything persisted.
    Postgres,
    /// The node's recent history (memory, or Redis in cluster mode).
    Recent,
}

/// Why a history page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Hub {
    archive: Option<Arc<Archive>>,
    store: Store,
    fanout: Fanout,
    presence: Presence,
    rooms: Arc<LocalRooms>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(
        store: Store,
        fanout: Fanout,
        presence: Presence,
        rooms: Arc<LocalRooms>,
        metrics: Arc<Metrics>,
        archive: Option<Arc<Archive>>,
    ) -> Hub {
        Hub {
            archive,
            store,
            fanout,
            presence,
            rooms,
            metrics,
        }
    }

    /// Stores and fans out a message; returns the ack for the sender. The
    /// sending session gets the ack instead of a copy of its own message.
    pub async fn send(&self, draft: Draft, sender: SessionId) -> Result<Acked, SendError> {
        match self.store.commit(draft).await? {
            Committed::Duplicate(acked) => Ok(acked),
            Committed::New(message) => {
                let acked = Acked {
                    room: message.room.clone(),
                    seq: message.seq,
                    id: message.id.to_string(),
                };
                self.metrics.messages_received.inc();
                let room = message.room.clone();
                // The message is stored: a fanout failure delays live
                // delivery (members catch up by replay) but does not unsend.
                self.publish(&room, &ServerFrame::Message(message), Some(sender))
                    .await;
                Ok(acked)
            }
        }
    }

    /// Adds the session to the room and announces the user if it is new
    /// there.
    pub async fn join(
        &self,
        room: &str,
        session: SessionId,
        user: Arc<str>,
        outbox: Outbox,
    ) -> Result<JoinInfo, StoreError> {
        // Membership first, so nothing published from here on is missed.
        let joined = self.rooms.join(room, session, user.clone(), outbox);
        if joined.first_on_node {
            self.metrics.rooms.set(self.rooms.room_count() as i64);
            self.fanout.watch(room).await;
        }
        let last_seq = match self.store.last_seq(room).await {
            Ok(seq) => seq,
            Err(err) => {
                self.forget(room, session);
                return Err(err);
            }
        };
        if joined.first_for_user {
            match self.presence.add(room, &user).await {
                Ok(true) => {
                    let frame = ServerFrame::Presence {
                        room: room.to_owned(),
                        user: user.to_string(),
                        state: PresenceState::Joined,
                    };
                    self.publish(room, &frame, Some(session)).await;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(room, %err, "could not record presence"),
            }
        }
        let members = match self.presence.members(room).await {
            Ok(members) => members,
            Err(err) => {
                tracing::warn!(room, %err, "could not read presence; listing local members");
                self.rooms.users(room).into_iter().collect()
            }
        };
        Ok(JoinInfo { last_seq, members })
    }

    /// Drops a session from a room's local membership.
    fn forget(&self, room: &str, session: SessionId) -> Option<crate::rooms::Left> {
        let left = self.rooms.leave(room, session)?;
        if left.last_on_node {
            self.metrics.rooms.set(self.rooms.room_count() as i64);
            self.fanout.unwatch(room);
        }
        Some(left)
    }

    /// Removes the session from the room; announces the user's departure
    /// when it was their last session there. Returns false if the session
    /// was not a member.
    pub async fn leave(&self, room: &str, session: SessionId, user: &str) -> bool {
        let Some(left) = self.forget(room, session) else {
            return false;
        };
        if left.last_for_user {
            match self.presence.remove(room, user).await {
                Ok(true) => self.announce_departure(room, user, Some(session)).await,
                Ok(false) => {}
                Err(err) => tracing::warn!(room, %err, "could not record the departure"),
            }
        }
        true
    }

    async fn announce_departure(&self, room: &str, user: &str, skip: Option<SessionId>) {
        let frame = ServerFrame::Presence {
            room: room.to_owned(),
            user: user.to_owned(),
            state: PresenceState::Left,
        };
        self.publish(room, &frame, skip).await;
    }

    /// Cluster mode: beats this node's presence heartbeat and reaps the
    /// presence of nodes that died, announcing their users' departures.
    pub async fn maintain_presence(&self) {
        let Presence::Redis(presence) = &self.presence else {
            return;
        };
        if let Err(err) = presence.heartbeat().await {
            tracing::warn!(%err, "presence heartbeat failed");
        }
        match presence.reap_dead_nodes().await {
            Ok(departures) => {
                for (room, user) in departures {
                    self.announce_departure(&room, &user, None).await;
                }
            }
            Err(err) => tracing::warn!(%err, "could not reap dead nodes"),
        }
    }

    pub async fn typing(&self, room: &str, session: SessionId, user: &str) {
        let frame = ServerFrame::Typing {
            room: room.to_owned(),
            user: user.to_owned(),
        };
        self.publish(room, &frame, Some(session)).await;
    }

    pub async fn replay(&self, room: &str, since: u64) -> Result<Replay, StoreError> {
        self.store.replay(room, since).await
    }

    /// A page of history, newest first: from PostgreSQL when configured,
    /// otherwise from the recent history this node's store holds.
    pub async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<ChatMessage>, HistorySource), HistoryError> {
        match &self.archive {
            Some(archive) => Ok((
                archive.page(room, before, limit).await?,
                HistorySource::Postgres,
            )),
            None => Ok((
                self.store.page(room, before, limit).await?,
                HistorySource::Recent,
            )),
        }
    }

    async fn publish(&self, room: &str, frame: &ServerFrame, skip: Option<SessionId>) {
        let published = self.fanout.publish(room, frame, skip).await;
        self.count(frame, published.local);
        if let Err(FanoutError::Unavailable(why)) = published.remote {
            tracing::warn!(room, %why, "live fanout to other nodes failed; their members catch up by replay");
        }
    }

    fn count(&self, frame: &ServerFrame, delivery: Delivery) {
        // Overflowed sessions are counted once, when they close (session.rs).
        if matches!(frame, ServerFrame::Message(ChatMessage { .. })) {
            self.metrics.messages_delivered.inc_by(delivery.delivered);
        }
    }
}
