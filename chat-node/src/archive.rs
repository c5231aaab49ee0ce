//! Message history from PostgreSQL, where the consumer workers persist the
//! Kafka topic: pages for the history API, and the part of a replay that
//! Redis no longer holds.

use std::time::Duration;

use realchat_protocol::ChatMessage;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
#[error("message history (PostgreSQL) unavailable: {0}")]
pub struct ArchiveError(#[from] sqlx::Error);

pub struct Archive {
    pool: PgPool,
}

type MessageRow = (
    Uuid,
    String,
    i64,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
);

fn message(row: MessageRow) -> ChatMessage {
    let (id, room, seq, user, body, sent_at) = row;
    ChatMessage {
        room,
        seq: u64::try_from(seq).unwrap_or(0),
        id,
        user,
        body,
        ts: sent_at.timestamp_millis(),
    }
}

fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Archive {
    /// A lazily connecting pool: the node starts (and serves live chat)
    /// while PostgreSQL is down; history requests then fail clearly.
    pub fn connect_lazy(url: &str) -> Result<Archive, ArchiveError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)?;
        Ok(Archive { pool })
    }

    /// Up to `limit` messages with `seq < before` (all when `None`), newest
    /// first.
    pub async fn page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, ArchiveError> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, room, seq, user_name, body, sent_at FROM messages
             WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(room)
        .bind(before.map_or(i64::MAX, to_i64))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    /// Up to `limit` messages with `seq > since`, oldest first, and the
    /// highest seq persisted for the room.
    pub async fn after(
        &self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<ChatMessage>, u64), ArchiveError> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, room, seq, user_name, body, sent_at FROM messages
             WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(room)
        .bind(to_i64(since))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let persisted: Option<i64> =
            sqlx::query_scalar("SELECT max(seq) FROM messages WHERE room = $1")
                .bind(room)
                .fetch_one(&self.pool)
                .await?;
        Ok((
            rows.into_iter().map(message).collect(),
            persisted.map_or(0, |s| u64::try_from(s).unwrap_or(0)),
        ))
    }
}
