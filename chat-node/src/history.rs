//! Per-room message log held in memory: sequencing plus a bounded buffer of
//! recent messages for replay.
//!
//! Standalone nodes keep history only here (it is lost on restart, and the
//! node says so in its log). The log is pure data so that the replay rules —
//! what `join {since}` returns and whether it is complete — can be tested
//! without a server.

use std::collections::VecDeque;

use realchat_protocol::ChatMessage;

/// Result of asking for the messages after a given `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub messages: Vec<ChatMessage>,
    /// False when messages after `since` were already dropped from the buffer.
    pub complete: bool,
}

/// One room's sequence counter and its most recent messages.
#[derive(Debug)]
pub struct RoomLog {
    last_seq: u64,
    capacity: usize,
    recent: VecDeque<ChatMessage>,
}

impl RoomLog {
    pub fn new(capacity: usize) -> RoomLog {
        RoomLog {
            last_seq: 0,
            capacity: capacity.max(1),
            recent: VecDeque::new(),
        }
    }

    /// The `seq` of the newest message (0 for an empty room).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Reserves the next `seq`. Seqs start at 1 and never repeat.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Stores a message whose `seq` came from [`RoomLog::next_seq`], evicting
    /// the oldest message when the buffer is full.
    pub fn push(&mut self, message: ChatMessage) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(message);
    }

    /// Up to `limit` messages with `seq < before` (all when `None`), newest
    /// first.
    pub fn before(&self, before: Option<u64>, limit: usize) -> Vec<ChatMessage> {
        self.recent
            .iter()
            .rev()
            .filter(|m| before.is_none_or(|before| m.seq < before))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Messages with `seq > since`, oldest first, at most `limit` of them.
    ///
    /// The replay is complete when nothing between `since` and the first
    /// returned message was evicted and the limit did not cut it short.
    pub fn since(&self, since: u64, limit: usize) -> Replay {
        let messages: Vec<ChatMessage> = self
            .recent
            .iter()
            .filter(|m| m.seq > since)
            .take(limit)
            .cloned()
            .collect();
        let oldest_held = self.recent.front().map(|m| m.seq);
        let gap_before = match oldest_held {
            // Something after `since` was evicted if the oldest held message
            // is more than one past `since`.
            Some(oldest) => oldest > since + 1,
            // Nothing held: complete only if nothing was ever sent after `since`.
            None => self.last_seq > since,
        };
        let cut_short = messages.last().is_some_and(|m| m.seq < self.last_seq);
        Replay {
            complete: !gap_before && !cut_short,
            messages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn log_with(capacity: usize, count: u64) -> RoomLog {
        let mut log = RoomLog::new(capacity);
        for _ in 0..count {
            let seq = log.next_seq();
            log.push(ChatMessage {
                room: "r".into(),
                seq,
                id: Uuid::now_v7(),
                user: "u".into(),
                body: format!("m{seq}"),
                ts: 0,
            });
        }
        log
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        replay.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn replays_everything_after_since() {
        let log = log_with(10, 5);
        let replay = log.since(2, 100);
        assert_eq!(seqs(&replay), vec![3, 4, 5]);
        assert!(replay.complete);
        assert!(log.since(5, 100).complete);
        assert!(log.since(5, 100).messages.is_empty());
    }

    #[test]
    fn eviction_makes_old_replays_incomplete() {
        let log = log_with(3, 5); // holds 3, 4, 5
        let replay = log.since(1, 100);
        assert_eq!(seqs(&replay), vec![3, 4, 5]);
        assert!(!replay.complete, "seq 2 was evicted");
        assert!(log.since(2, 100).complete, "nothing missing after 2");
    }

    #[test]
    fn limit_makes_replay_incomplete() {
        let log = log_with(10, 5);
        let replay = log.since(0, 2);
        assert_eq!(seqs(&replay), vec![1, 2]);
        assert!(!replay.complete);
    }

    #[test]
    fn pages_go_newest_first() {
        let log = log_with(10, 5);
        assert_eq!(
            log.before(None, 2)
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            vec![5, 4]
        );
        assert_eq!(
            log.before(Some(4), 10)
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        assert!(log.before(Some(1), 10).is_empty());
    }

    #[test]
    fn empty_room() {
        let log = RoomLog::new(10);
        assert_eq!(log.last_seq(), 0);
        assert!(log.since(0, 10).complete);
    }
}
