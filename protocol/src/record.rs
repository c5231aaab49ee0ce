//! Messages as stored and fanned out.
//!
//! [`ChatMessage`] is what a client sees in a `message` frame.
//! [`MessageRecord`] is the durable form written to Kafka (key = room): it
//! carries what the consumer needs to store the message idempotently and
//! what operators need to trace it, and a version field so that the format
//! can evolve while old records are still in the topic.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A chat message as delivered to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    /// Strictly increasing per room.
    pub seq: u64,
    /// UUIDv7: unique and time-ordered.
    pub id: Uuid,
    pub user: String,
    pub body: String,
    /// Milliseconds since the Unix epoch when the server accepted it.
    pub ts: i64,
}

/// Current version of [`MessageRecord`].
pub const RECORD_VERSION: u16 = 1;

/// The Kafka record of one message (JSON value, key = room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Record format version; readers reject versions they do not know.
    pub v: u16,
    pub id: Uuid,
    pub room: String,
    pub seq: u64,
    pub user: String,
    pub body: String,
    /// When the node accepted the send (ms since epoch); the `ts` users see.
    pub sent_at_ms: i64,
    /// When the node produced the record (ms since epoch).
    pub produced_at_ms: i64,
    /// The chat node that accepted the send.
    pub origin_node: String,
    /// The sender's idempotency key.
    pub client_id: String,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON for version {RECORD_VERSION}: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("record version {0} is not supported (this build reads {RECORD_VERSION})")]
    UnsupportedVersion(u16),
}

impl MessageRecord {
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of strings and numbers always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<MessageRecord, RecordError> {
        #[derive(Deserialize)]
        struct Version {
            v: u16,
        }
        let Version { v } = serde_json::from_slice(bytes)?;
        if v != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The message as clients see it.
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage {
            room: self.room.clone(),
            seq: self.seq,
            id: self.id,
            user: self.user.clone(),
            body: self.body.clone(),
            ts: self.sent_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MessageRecord {
        MessageRecord {
            v: RECORD_VERSION,
            id: Uuid::now_v7(),
            room: "lobby".into(),
            seq: 3,
            user: "ann".into(),
            body: "hello".into(),
            sent_at_ms: 1_700_000_000_000,
            produced_at_ms: 1_700_000_000_005,
            origin_node: "node-a".into(),
            client_id: "c1".into(),
        }
    }

    #[test]
    fn round_trips() {
        let rec = record();
        assert_eq!(MessageRecord::decode(&rec.encode()).unwrap(), rec);
        assert_eq!(rec.to_message().ts, rec.sent_at_ms);
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        let mut rec = record();
        rec.v = 9;
        assert!(matches!(
            MessageRecord::decode(&rec.encode()),
            Err(RecordError::UnsupportedVersion(9))
        ));
        assert!(matches!(
            MessageRecord::decode(b"\xff\x00"),
            Err(RecordError::Malformed(_))
        ));
    }
}
