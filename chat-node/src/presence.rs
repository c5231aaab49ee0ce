//! Who is present in a room: this node's members in standalone mode, every
//! node's in cluster mode.

use std::sync::Arc;

use crate::cluster::presence::{PresenceError, RedisPresence};
use crate::rooms::LocalRooms;

pub enum Presence {
    Local(Arc<LocalRooms>),
    Redis(Box<RedisPresence>),
}

impl Presence {
    /// Records that the user's first local session joined; true if the user
    /// was not present in the room anywhere before.
    pub async fn add(&self, room: &str, user: &str) -> Result<bool, PresenceError> {
        match self {
            // Local membership was already updated by the caller.
            Presence::Local(_) => Ok(true),
            Presence::Redis(redis) => redis.add(room, user).await,
        }
    }

    /// Records that the user's last local session left; true if the user is
    /// now absent from the room everywhere.
    pub async fn remove(&self, room: &str, user: &str) -> Result<bool, PresenceError> {
        match self {
            Presence::Local(_) => Ok(true),
            Presence::Redis(redis) => redis.remove(room, user).await,
        }
    }

    pub async fn members(&self, room: &str) -> Result<Vec<String>, PresenceError> {
        match self {
            Presence::Local(rooms) => Ok(rooms.users(room).into_iter().collect()),
            Presence::Redis(redis) => redis.members(room).await,
        }
    }
}
