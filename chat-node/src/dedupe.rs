//! The idempotency window for sends: a `send` retried with the same
//! `(user, client_id)` within the window gets the original `ack` back
//! instead of creating a second message.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a first send was acknowledged with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Acked {
    pub room: String,
    pub seq: u64,
    pub id: String,
}

/// Remembers acks for `window`, forgetting them in insertion order so the
/// cost of expiry is amortised O(1) per send.
#[derive(Debug)]
pub struct DedupeWindow {
    window: Duration,
    acks: HashMap<(String, String), Acked>,
    expiry: VecDeque<(Instant, (String, String))>,
}

impl DedupeWindow {
    pub fn new(window: Duration) -> DedupeWindow {
        DedupeWindow {
            window,
            acks: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// The ack of an earlier send with this key, if still in the window.
    pub fn get(&mut self, user: &str, client_id: &str, now: Instant) -> Option<Acked> {
        self.expire(now);
        self.acks
            .get(&(user.to_owned(), client_id.to_owned()))
            .cloned()
    }

    /// Records the ack of a new message.
    pub fn insert(&mut self, user: &str, client_id: &str, acked: Acked, now: Instant) {
        self.expire(now);
        let key = (user.to_owned(), client_id.to_owned());
        self.expiry.push_back((now + self.window, key.clone()));
        self.acks.insert(key, acked);
    }

    pub fn len(&self) -> usize {
        self.acks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((deadline, _)) = self.expiry.front() {
            if *deadline > now {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.acks.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(seq: u64) -> Acked {
        Acked {
            room: "r".into(),
            seq,
            id: format!("id{seq}"),
        }
    }

    #[test]
    fn remembers_within_the_window_per_user() {
        let start = Instant::now();
        let mut window = DedupeWindow::new(Duration::from_secs(300));
        window.insert("ann", "c1", acked(1), start);
        assert_eq!(
            window.get("ann", "c1", start + Duration::from_secs(299)),
            Some(acked(1))
        );
        assert_eq!(window.get("bob", "c1", start), None, "keys are per user");
        assert_eq!(window.get("ann", "c2", start), None);
    }

    #[test]
    fn forgets_after_the_window() {
        let start = Instant::now();
        let mut window = DedupeWindow::new(Duration::from_secs(300));
        window.insert("ann", "c1", acked(1), start);
        window.insert("ann", "c2", acked(2), start + Duration::from_secs(100));
        assert_eq!(
            window.get("ann", "c1", start + Duration::from_secs(300)),
            None
        );
        assert_eq!(window.len(), 1);
        assert!(
            window
                .get("ann", "c2", start + Duration::from_secs(399))
                .is_some()
        );
        assert!(
            window
                .get("ann", "c2", start + Duration::from_secs(400))
                .is_none()
        );
        assert!(window.is_empty());
    }
}
