//! Turning Kafka records into rows, or into dead letters with a reason.
//!
//! Pure: no I/O, so every rule is tested without services.

use chrono::{DateTime, Utc};
use realchat_protocol::{Limits, MessageRecord};
use uuid::Uuid;

/// Where a record came from in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
}

/// A message ready to be inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: Uuid,
    pub room: String,
    pub seq: i64,
    pub user: String,
    pub body: String,
    pub sent_at: DateTime<Utc>,
    pub produced_at: DateTime<Utc>,
    pub origin_node: String,
    pub client_id: String,
    pub source: Source,
}

/// A record that cannot be stored, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
    pub source: Source,
}

/// Decodes one record. Anything that is not a valid, current-version
/// message record becomes a dead letter; it must never block its partition.
pub fn decode(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    source: Source,
) -> Result<Row, DeadLetter> {
    let dead = |reason: String| DeadLetter {
        key: key.map(<[u8]>::to_vec),
        payload: payload.map(<[u8]>::to_vec).unwrap_or_default(),
        reason,
        source: source.clone(),
    };
    let Some(payload) = payload else {
        return Err(dead("record has no payload".into()));
    };
    let record = MessageRecord::decode(payload).map_err(|err| dead(err.to_string()))?;
    Limits::default()
        .check_room(&record.room)
        .map_err(|err| dead(format!("invalid room: {}", err.message)))?;
    let seq = i64::try_from(record.seq)
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(|| dead(format!("invalid seq {}", record.seq)))?;
    let time = |ms: i64, what: &str| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| dead(format!("invalid {what} {ms}")))
    };
    Ok(Row {
        sent_at: time(record.sent_at_ms, "sent_at_ms")?,
        produced_at: time(record.produced_at_ms, "produced_at_ms")?,
        id: record.id,
        room: record.room,
        seq,
        user: record.user,
        body: record.body,
        origin_node: record.origin_node,
        client_id: record.client_id,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use realchat_protocol::record::RECORD_VERSION;

    fn record() -> MessageRecord {
        MessageRecord {
            v: RECORD_VERSION,
            id: Uuid::now_v7(),
            room: "lobby".into(),
            seq: 7,
            user: "ann".into(),
            body: "hi".into(),
            sent_at_ms: 1_700_000_000_000,
            produced_at_ms: 1_700_000_000_001,
            origin_node: "n".into(),
            client_id: "c".into(),
        }
    }

    fn source() -> Source {
        Source {
            partition: 1,
            offset: 42,
        }
    }

    #[test]
    fn a_valid_record_becomes_a_row() {
        let rec = record();
        let row = decode(Some(b"lobby"), Some(&rec.encode()), source()).unwrap();
        assert_eq!((row.id, row.seq, row.room.as_str()), (rec.id, 7, "lobby"));
        assert_eq!(row.sent_at.timestamp_millis(), rec.sent_at_ms);
        assert_eq!(row.source, source());
    }

    #[test]
    fn bad_records_become_dead_letters_with_reasons() {
        let dead = decode(Some(b"k"), Some(b"not json"), source()).unwrap_err();
        assert!(dead.reason.contains("not valid JSON"), "{}", dead.reason);
        assert_eq!(dead.payload, b"not json");
        assert_eq!(dead.key.as_deref(), Some(&b"k"[..]));

        assert!(
            decode(None, None, source())
                .unwrap_err()
                .reason
                .contains("no payload")
        );

        let mut rec = record();
        rec.v = 99;
        assert!(
            decode(None, Some(&rec.encode()), source())
                .unwrap_err()
                .reason
                .contains("version 99")
        );

        let mut rec = record();
        rec.room = "bad room".into();
        assert!(
            decode(None, Some(&rec.encode()), source())
                .unwrap_err()
                .reason
                .contains("invalid room")
        );

        let mut rec = record();
        rec.seq = 0;
        assert!(
            decode(None, Some(&rec.encode()), source())
                .unwrap_err()
                .reason
                .contains("invalid seq")
        );
    }
}
