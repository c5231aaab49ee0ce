//! Getting room events to every member, wherever its session lives.
//!
//! Frames are serialized once per event here, then shared by every local
//! recipient. [`Fanout::InProcess`] delivers straight to this node's members;
//! a cluster transport publishes to the other nodes too and delivers what it
//! receives through the same [`LocalRooms`].

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use realchat_protocol::ServerFrame;

use crate::rooms::{Delivery, LocalRooms, SessionId};

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("fanout unavailable: {0}")]
    Unavailable(String),
}

pub enum Fanout {
    InProcess(Arc<LocalRooms>),
}

impl Fanout {
    /// Delivers `frame` to the members of `room`, except session `skip` of
    /// this node.
    pub async fn publish(
        &self,
        room: &str,
        frame: &ServerFrame,
        skip: Option<SessionId>,
    ) -> Result<Delivery, FanoutError> {
        match self {
            Fanout::InProcess(rooms) => {
                let bytes = Utf8Bytes::from(frame.to_json());
                Ok(rooms.deliver(room, &bytes, skip))
            }
        }
    }
}
