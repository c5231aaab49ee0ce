//! Getting room events to every member, wherever its session lives.
//!
//! Frames are serialized once per event here, then shared by every local
//! recipient. Both transports deliver straight to this node's members;
//! [`Fanout::Redis`] also publishes the event to the other nodes, whose
//! subscribers deliver it through their own [`LocalRooms`].

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use realchat_protocol::ServerFrame;

use crate::cluster::fanout::RedisFanout;
use crate::rooms::{Delivery, LocalRooms, SessionId};

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("fanout unavailable: {0}")]
    Unavailable(String),
}

pub enum Fanout {
    InProcess(Arc<LocalRooms>),
    Redis {
        rooms: Arc<LocalRooms>,
        redis: RedisFanout,
    },
}

/// Where an event went.
pub struct Published {
    /// Delivery to this node's members (always attempted).
    pub local: Delivery,
    /// Publishing to the other nodes (cluster mode).
    pub remote: Result<(), FanoutError>,
}

impl Fanout {
    /// Delivers `frame` to the members of `room` on every node, except
    /// session `skip` of this node.
    pub async fn publish(
        &self,
        room: &str,
        frame: &ServerFrame,
        skip: Option<SessionId>,
    ) -> Published {
        let bytes = Utf8Bytes::from(frame.to_json());
        match self {
            Fanout::InProcess(rooms) => Published {
                local: rooms.deliver(room, &bytes, skip),
                remote: Ok(()),
            },
            Fanout::Redis { rooms, redis } => {
                let local = rooms.deliver(room, &bytes, skip);
                let seq = match frame {
                    ServerFrame::Message(message) => Some(message.seq),
                    _ => None,
                };
                Published {
                    local,
                    remote: redis.publish(room, &bytes, seq).await,
                }
            }
        }
    }

    /// Called when a room gets its first local member.
    pub async fn watch(&self, room: &str) {
        if let Fanout::Redis { redis, .. } = self {
            redis.watch(room).await;
        }
    }

    /// Called when a room loses its last local member.
    pub fn unwatch(&self, room: &str) {
        if let Fanout::Redis { redis, .. } = self {
            redis.unwatch(room);
        }
    }
}
