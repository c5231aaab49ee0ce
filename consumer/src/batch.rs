//! A batch of consumed records: rows to insert, dead letters to divert, and
//! the offsets to commit once both are done.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::decode::{DeadLetter, Row, Source, decode};

#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub dead_letters: Vec<DeadLetter>,
    /// Per partition, the offset of the next record to read (last + 1).
    next_offsets: BTreeMap<i32, i64>,
}

impl Batch {
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        partition: i32,
        offset: i64,
    ) {
        let next = self.next_offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        match decode(key, payload, Source { partition, offset }) {
            Ok(row) => self.rows.push(row),
            Err(dead) => self.dead_letters.push(dead),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len() + self.dead_letters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offsets to commit after the batch is stored: (partition, next offset).
    pub fn commit_offsets(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.next_offsets.iter().map(|(p, o)| (*p, *o))
    }
}

/// Exponential backoff with jitter for retries against a failing database:
/// 100 ms doubling to `max`, each wait drawn from [half, full].
pub fn backoff(attempt: u32, max: Duration, entropy: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(16))
        .min(max);
    let half = base / 2;
    let spread = half.as_millis().max(1) as u64;
    half + Duration::from_millis(u64::from(entropy) % spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use realchat_protocol::MessageRecord;
    use realchat_protocol::record::RECORD_VERSION;

    fn payload(seq: u64) -> Vec<u8> {
        MessageRecord {
            v: RECORD_VERSION,
            id: uuid::Uuid::now_v7(),
            room: "r".into(),
            seq,
            user: "u".into(),
            body: "b".into(),
            sent_at_ms: 1,
            produced_at_ms: 1,
            origin_node: "n".into(),
            client_id: "c".into(),
        }
        .encode()
    }

    #[test]
    fn commits_the_next_offset_of_every_partition_including_dead_letters() {
        let mut batch = Batch::default();
        batch.push(None, Some(&payload(1)), 0, 10);
        batch.push(None, Some(b"poison"), 0, 11);
        batch.push(None, Some(&payload(2)), 2, 5);
        batch.push(None, Some(&payload(3)), 0, 12);
        assert_eq!(batch.rows.len(), 3);
        assert_eq!(batch.dead_letters.len(), 1);
        assert_eq!(batch.dead_letters[0].source.offset, 11);
        assert_eq!(
            batch.commit_offsets().collect::<Vec<_>>(),
            vec![(0, 13), (2, 6)]
        );
        assert_eq!(batch.len(), 4);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let max = Duration::from_secs(5);
        for attempt in 0..20 {
            for entropy in [0, 7, 999_999] {
                let wait = backoff(attempt, max, entropy);
                assert!(wait <= max, "{attempt}: {wait:?}");
                assert!(wait >= Duration::from_millis(50));
            }
        }
        assert!(backoff(10, max, 0) >= Duration::from_millis(2500));
        assert!(backoff(0, max, 0) < Duration::from_millis(100));
    }
}
