//! WebSocket frames: one JSON object per text frame, tagged by `type`.
//!
//! Parsing is tolerant of unknown fields (newer clients may send more) but
//! strict about the fields a frame needs; every failure becomes a
//! [`FrameError`] that names the problem, so the server can answer with an
//! `error` frame and keep the connection open.

use serde::{Deserialize, Serialize};

use crate::record::ChatMessage;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticate with a JWT when it was not given as the `token` query
    /// parameter. Only valid as the first frame.
    Auth { token: String },
    /// Join a room; with `since`, replay the messages with `seq > since`.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Leave a room.
    Leave { room: String },
    /// Send a message. `client_id` makes retries idempotent.
    Send {
        room: String,
        client_id: String,
        body: String,
    },
    /// Tell the room that this user is typing.
    Typing { room: String },
    /// Liveness check at the application level; answered by `pong`.
    Ping,
}

impl ClientFrame {
    /// The frame's `type`, as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Ping => "ping",
        }
    }

    /// Parses one text frame, explaining precisely what is wrong when it
    /// cannot be parsed.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        // Fast path: a well-formed frame is parsed once.
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => Ok(frame),
            Err(_) => Err(diagnose(text)),
        }
    }
}

/// The `type` values a client may send, in documentation order.
pub const CLIENT_FRAME_TYPES: &[&str] = &["auth", "join", "leave", "send", "typing", "ping"];

/// Works out why `text` is not a valid client frame. Only called on the
/// error path, so parsing twice here costs nothing in the common case.
fn diagnose(text: &str) -> FrameError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            return FrameError::new(
                ErrorCode::InvalidJson,
                format!("frame is not valid JSON: {err}"),
            );
        }
    };
    let reference = value
        .get("client_id")
        .or_else(|| value.get("ref"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let Some(object) = value.as_object() else {
        return FrameError::new(ErrorCode::InvalidFrame, "frame must be a JSON object");
    };
    let kind = match object.get("type") {
        None => {
            return FrameError::new(ErrorCode::InvalidFrame, "frame has no `type` field")
                .with_ref(reference);
        }
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(_) => {
            return FrameError::new(ErrorCode::InvalidFrame, "`type` must be a string")
                .with_ref(reference);
        }
    };
    if !CLIENT_FRAME_TYPES.contains(&kind.as_str()) {
        return FrameError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown frame type `{kind}`; expected one of: {}",
                CLIENT_FRAME_TYPES.join(", ")
            ),
        )
        .with_ref(reference);
    }
    let detail = serde_json::from_value::<ClientFrame>(value)
        .err()
        .map(|err| err.to_string())
        .unwrap_or_else(|| "unexpected shape".to_owned());
    FrameError::new(
        ErrorCode::InvalidFrame,
        format!("invalid `{kind}` frame: {detail}"),
    )
    .with_ref(reference)
}

/// Whether a member joined or left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Joined,
    Left,
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session, once the user is known.
    Welcome {
        session: String,
        user: String,
        node: String,
        protocol: u32,
    },
    /// The room was joined. `last_seq` is the newest message's `seq` (0 when
    /// the room is empty); `members` are the users present.
    Joined {
        room: String,
        last_seq: u64,
        members: Vec<String>,
    },
    /// The room was left at the client's request.
    Left { room: String },
    /// A chat message, live or replayed.
    Message(ChatMessage),
    /// The server has stored the message sent with `client_id`.
    Ack {
        client_id: String,
        room: String,
        seq: u64,
        id: String,
    },
    /// A member joined or left the room.
    Presence {
        room: String,
        user: String,
        state: PresenceState,
    },
    /// A member is typing.
    Typing { room: String, user: String },
    /// Closes a replay started by `join {since}`: messages `from..=to` were
    /// sent; `complete` is false when older messages are no longer held.
    Replayed {
        room: String,
        from: u64,
        to: u64,
        complete: bool,
    },
    /// Something the client sent could not be handled; the connection stays
    /// open.
    Error(ErrorFrame),
    /// Answer to `ping`.
    Pong,
}

impl ServerFrame {
    /// Serializes the frame. Serializing these types cannot fail (no maps
    /// with non-string keys, no custom serializers), so this is infallible.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|err| {
            // Unreachable for these types; fall back to a valid frame anyway.
            format!(
                r#"{{"type":"error","code":"internal","message":"serialization failed: {}"}}"#,
                err.to_string().replace('"', "'")
            )
        })
    }
}

/// Body of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    /// What the error refers to: the `client_id` of a failed send, or the
    /// room of a failed join, when known.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Machine-readable error codes, stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// The frame's `type` is not one this server knows.
    UnknownType,
    /// The frame is JSON with a known type but a wrong shape.
    InvalidFrame,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// The room name breaks the naming rules.
    InvalidRoom,
    /// The message body is empty.
    EmptyBody,
    /// The message body is over the size limit.
    BodyTooLarge,
    /// The `client_id` is empty or too long.
    InvalidClientId,
    /// Sending or typing in a room the session has not joined.
    NotJoined,
    /// The token does not allow this room.
    ForbiddenRoom,
    /// The session joined too many rooms.
    TooManyRooms,
    /// Over the send rate limit; the message was not sent.
    RateLimited,
    /// `auth` sent when the session is already authenticated.
    AlreadyAuthenticated,
    /// A backend could not take the message; it was not sent.
    NotSent,
    /// History could not be read.
    HistoryUnavailable,
    /// An unexpected server fault.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation checks and dashboards.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidFrame,
        ErrorCode::BinaryNotSupported,
        ErrorCode::InvalidRoom,
        ErrorCode::EmptyBody,
        ErrorCode::BodyTooLarge,
        ErrorCode::InvalidClientId,
        ErrorCode::NotJoined,
        ErrorCode::ForbiddenRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::NotSent,
        ErrorCode::HistoryUnavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire (also used as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::InvalidClientId => "invalid_client_id",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::ForbiddenRoom => "forbidden_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::NotSent => "not_sent",
            ErrorCode::HistoryUnavailable => "history_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A problem with one client frame, ready to be sent back as an `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> FrameError {
        FrameError {
            code,
            message: message.into(),
            reference: None,
        }
    }

    pub fn with_ref(mut self, reference: Option<String>) -> FrameError {
        self.reference = reference;
        self
    }

    pub fn into_frame(self) -> ServerFrame {
        ServerFrame::Error(ErrorFrame {
            code: self.code,
            message: self.message,
            reference: self.reference,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_join_with_and_without_since() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","room":"lobby"}"#),
            Ok(ClientFrame::Join {
                room: "lobby".into(),
                since: None
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","room":"lobby","since":7,"extra":true}"#),
            Ok(ClientFrame::Join {
                room: "lobby".into(),
                since: Some(7)
            })
        );
    }

    #[test]
    fn invalid_json_is_named() {
        let err = ClientFrame::parse("{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert!(err.message.contains("line 1"), "{}", err.message);
    }

    #[test]
    fn unknown_type_lists_the_known_ones() {
        let err = ClientFrame::parse(r#"{"type":"shout","room":"a"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert!(err.message.contains("`shout`"));
        assert!(err.message.contains("join, leave, send"));
    }

    #[test]
    fn missing_field_names_the_field_and_keeps_the_client_id() {
        let err =
            ClientFrame::parse(r#"{"type":"send","client_id":"c1","body":"hi"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
        assert!(err.message.contains("`room`"), "{}", err.message);
        assert_eq!(err.reference.as_deref(), Some("c1"));
    }

    #[test]
    fn non_objects_and_missing_types_are_rejected() {
        assert_eq!(
            ClientFrame::parse("[1,2]").unwrap_err().code,
            ErrorCode::InvalidFrame
        );
        let err = ClientFrame::parse(r#"{"room":"a"}"#).unwrap_err();
        assert!(err.message.contains("no `type`"));
        let err = ClientFrame::parse(r#"{"type":5}"#).unwrap_err();
        assert!(err.message.contains("must be a string"));
    }

    #[test]
    fn error_frames_serialize_ref_only_when_known() {
        let frame = FrameError::new(ErrorCode::RateLimited, "slow down").into_frame();
        assert_eq!(
            frame.to_json(),
            r#"{"type":"error","code":"rate_limited","message":"slow down"}"#
        );
        let frame = FrameError::new(ErrorCode::NotSent, "kafka down")
            .with_ref(Some("c9".into()))
            .into_frame();
        assert!(frame.to_json().ends_with(r#""ref":"c9"}"#));
    }

    #[test]
    fn error_code_strings_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }
}
