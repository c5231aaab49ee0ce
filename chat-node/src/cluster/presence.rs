//! Who is in which room across all nodes.
//!
//! Each node records `node<US>user` entries in a per-room Redis set and
//! beats a heartbeat key with a TTL. When a node dies without cleaning up,
//! its heartbeat expires and any other node reaps its entries, announcing
//! the departures; an atomic script makes sure only one node announces them.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::cluster::keys::{self, Keys, presence_entry, split_entry};
use crate::metrics::Metrics;

/// Presence failures are not fatal to a join; they are reported and counted.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(String);

pub struct RedisPresence {
    redis: ConnectionManager,
    keys: Keys,
    node: Arc<str>,
    heartbeat_ttl: Duration,
    metrics: Arc<Metrics>,
    add: redis::Script,
    remove: redis::Script,
    reap: redis::Script,
}

impl RedisPresence {
    pub fn new(
        redis: ConnectionManager,
        keys: Keys,
        node: Arc<str>,
        heartbeat_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> RedisPresence {
        RedisPresence {
            redis,
            keys,
            node,
            heartbeat_ttl,
            metrics,
            add: redis::Script::new(keys::PRESENCE_ADD),
            remove: redis::Script::new(keys::PRESENCE_REMOVE),
            reap: redis::Script::new(keys::REAP_NODE),
        }
    }

    fn failed(&self, err: redis::RedisError) -> PresenceError {
        self.metrics.backend_error("redis_presence");
        PresenceError(err.to_string())
    }

    /// Records the user in the room; true if no node had them there before.
    pub async fn add(&self, room: &str, user: &str) -> Result<bool, PresenceError> {
        let mut redis = self.redis.clone();
        let newly: i64 = self
            .add
            .key(self.keys.members(room))
            .key(self.keys.node_rooms(&self.node))
            .key(self.keys.nodes())
            .arg(presence_entry(&self.node, user))
            .arg(user)
            .arg(room)
            .arg(&*self.node)
            .invoke_async(&mut redis)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(newly == 1)
    }

    /// Removes this node's entry; true if the user is now absent everywhere.
    pub async fn remove(&self, room: &str, user: &str) -> Result<bool, PresenceError> {
        let mut redis = self.redis.clone();
        let gone: i64 = self
            .remove
            .key(self.keys.members(room))
            .arg(presence_entry(&self.node, user))
            .arg(user)
            .invoke_async(&mut redis)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(gone == 1)
    }

    /// Distinct users present in the room on any node, sorted.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, PresenceError> {
        let mut redis = self.redis.clone();
        let entries: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.members(room))
            .query_async(&mut redis)
            .await
            .map_err(|err| self.failed(err))?;
        let mut users: Vec<String> = entries
            .iter()
            .filter_map(|e| split_entry(e).map(|(_, user)| user.to_owned()))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Refreshes this node's heartbeat.
    pub async fn heartbeat(&self) -> Result<(), PresenceError> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.keys.node_alive(&self.node))
            .arg(1)
            .arg("EX")
            .arg(self.heartbeat_ttl.as_secs().max(1))
            .ignore()
            .cmd("SADD")
            .arg(self.keys.nodes())
            .arg(&*self.node)
            .ignore()
            .query_async::<()>(&mut redis)
            .await
            .map_err(|err| self.failed(err))
    }

    /// Reaps the entries of nodes whose heartbeat expired; returns the
    /// `(room, user)` pairs of users who left a room because of it.
    pub async fn reap_dead_nodes(&self) -> Result<Vec<(String, String)>, PresenceError> {
        let mut redis = self.redis.clone();
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut redis)
            .await
            .map_err(|err| self.failed(err))?;
        let mut departures = Vec::new();
        for node in nodes.iter().filter(|n| n.as_str() != &*self.node) {
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.keys.node_alive(node))
                .query_async(&mut redis)
                .await
                .map_err(|err| self.failed(err))?;
            if alive {
                continue;
            }
            let gone: Vec<String> = self
                .reap
                .key(self.keys.node_rooms(node))
                .key(self.keys.nodes())
                .arg(node)
                .arg(self.keys.members_prefix())
                .invoke_async(&mut redis)
                .await
                .map_err(|err| self.failed(err))?;
            if !gone.is_empty() {
                tracing::info!(
                    node,
                    departures = gone.len() / 2,
                    "reaped the presence of a dead node"
                );
            }
            departures.extend(
                gone.chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone())),
            );
        }
        Ok(departures)
    }
}
