//! Which sessions on this node are in which rooms, and local delivery.
//!
//! Every fanout transport ends here: the in-process one calls
//! [`LocalRooms::deliver`] directly, a cluster transport calls it for the
//! events its subscriber receives. Membership is also what tells a cluster
//! transport when to subscribe to a room (first local member) and when to
//! unsubscribe (last local member).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;

use crate::outbound::{Outbox, Queued};

pub type SessionId = u64;

struct Member {
    user: Arc<str>,
    outbox: Outbox,
}

/// What a join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The session was not yet in the room.
    pub new_session: bool,
    /// No other session of this user is in the room on this node.
    pub first_for_user: bool,
    /// The room had no members on this node before.
    pub first_on_node: bool,
}

/// What a leave changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// No session of this user remains in the room on this node.
    pub last_for_user: bool,
    /// The room has no members left on this node.
    pub last_on_node: bool,
}

/// Outcome of delivering one frame to a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: u64,
    /// Sessions cut off because their queue was full.
    pub overflowed: u64,
}

#[derive(Default)]
pub struct LocalRooms {
    rooms: RwLock<HashMap<String, HashMap<SessionId, Member>>>,
}

impl LocalRooms {
    pub fn new() -> LocalRooms {
        LocalRooms::default()
    }

    pub fn join(&self, room: &str, session: SessionId, user: Arc<str>, outbox: Outbox) -> Joined {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let first_on_node = !rooms.contains_key(room);
        let members = rooms.entry(room.to_owned()).or_default();
        let first_for_user = !members.values().any(|m| m.user == user);
        let new_session = members.insert(session, Member { user, outbox }).is_none();
        Joined {
            new_session,
            first_for_user: first_for_user && new_session,
            first_on_node,
        }
    }

    /// Removes the session from the room; `None` if it was not a member.
    pub fn leave(&self, room: &str, session: SessionId) -> Option<Left> {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let members = rooms.get_mut(room)?;
        let member = members.remove(&session)?;
        let last_for_user = !members.values().any(|m| m.user == member.user);
        let last_on_node = members.is_empty();
        if last_on_node {
            rooms.remove(room);
        }
        Some(Left {
            last_for_user,
            last_on_node,
        })
    }

    /// Distinct users present in the room on this node, sorted.
    pub fn users(&self, room: &str) -> BTreeSet<String> {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms
            .get(room)
            .map(|members| members.values().map(|m| m.user.to_string()).collect())
            .unwrap_or_default()
    }

    pub fn has_members(&self, room: &str) -> bool {
        self.rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(room)
    }

    /// Rooms with at least one local member.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Number of rooms with at least one local member.
    pub fn room_count(&self) -> usize {
        self.rooms.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queues `frame` to every local member of `room` except `skip`.
    pub fn deliver(&self, room: &str, frame: &Utf8Bytes, skip: Option<SessionId>) -> Delivery {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        let mut outcome = Delivery::default();
        let Some(members) = rooms.get(room) else {
            return outcome;
        };
        for (session, member) in members {
            if Some(*session) == skip {
                continue;
            }
            match member.outbox.push(frame.clone()) {
                Queued::Yes => outcome.delivered += 1,
                Queued::Overflowed => outcome.overflowed += 1,
                Queued::Closed => {}
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Closer;

    #[test]
    fn tracks_first_and_last_members() {
        let rooms = LocalRooms::new();
        let (a, _ra) = Outbox::new(8, Closer::default());
        let (b, _rb) = Outbox::new(8, Closer::default());
        let j = rooms.join("r", 1, "ann".into(), a.clone());
        assert!(j.first_on_node && j.first_for_user && j.new_session);
        let j = rooms.join("r", 2, "ann".into(), b);
        assert!(!j.first_on_node && !j.first_for_user);
        assert!(
            !rooms.join("r", 1, "ann".into(), a).new_session,
            "joining twice is a no-op"
        );
        assert_eq!(
            rooms.users("r").into_iter().collect::<Vec<_>>(),
            vec!["ann"]
        );
        let l = rooms.leave("r", 1).unwrap();
        assert!(!l.last_for_user && !l.last_on_node);
        let l = rooms.leave("r", 2).unwrap();
        assert!(l.last_for_user && l.last_on_node);
        assert_eq!(rooms.room_count(), 0);
        assert_eq!(rooms.leave("r", 2), None);
    }

    #[tokio::test]
    async fn delivers_to_members_of_the_room_only() {
        let rooms = LocalRooms::new();
        let (a, mut ra) = Outbox::new(8, Closer::default());
        let (b, mut rb) = Outbox::new(8, Closer::default());
        let (c, mut rc) = Outbox::new(8, Closer::default());
        rooms.join("r", 1, "ann".into(), a);
        rooms.join("r", 2, "bob".into(), b);
        rooms.join("other", 3, "cy".into(), c);
        let outcome = rooms.deliver("r", &"hello".into(), Some(2));
        assert_eq!(outcome.delivered, 1);
        assert_eq!(ra.recv().await.unwrap().as_str(), "hello");
        assert!(rb.try_recv().is_err(), "skipped");
        assert!(rc.try_recv().is_err(), "other room");
    }
}
