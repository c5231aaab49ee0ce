//! Validation of what clients send: room names, bodies, client ids.
//!
//! The defaults are the documented protocol limits; operators may tighten or
//! loosen sizes per deployment, but the room-name alphabet is fixed because
//! room names become Redis channel names and Kafka keys.

use crate::frames::{ErrorCode, FrameError};

/// Size limits applied to client input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest room name, in bytes (all allowed characters are ASCII).
    pub max_room_len: usize,
    /// Largest message body, in bytes of UTF-8.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame, in bytes; larger frames close the connection
    /// with 1009.
    pub max_frame_bytes: usize,
    /// Longest `client_id`, in bytes.
    pub max_client_id_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_room_len: 64,
            max_body_bytes: 4 * 1024,
            max_frame_bytes: 64 * 1024,
            max_client_id_len: 128,
        }
    }
}

impl Limits {
    /// Room names are 1..=max_room_len characters of `[A-Za-z0-9_.:-]`.
    pub fn check_room(&self, room: &str) -> Result<(), FrameError> {
        let invalid = |why: String| {
            Err(FrameError::new(ErrorCode::InvalidRoom, why).with_ref(Some(truncate(room, 80))))
        };
        if room.is_empty() {
            return invalid("room name is empty".into());
        }
        if room.len() > self.max_room_len {
            return invalid(format!(
                "room name is {} characters; at most {} are allowed",
                room.chars().count(),
                self.max_room_len
            ));
        }
        if let Some(bad) = room.chars().find(|c| !is_room_char(*c)) {
            return invalid(format!(
                "room name contains {bad:?}; allowed are letters, digits and _ . : -"
            ));
        }
        Ok(())
    }

    /// Bodies are non-empty and at most `max_body_bytes` of UTF-8.
    pub fn check_body(&self, body: &str, client_id: &str) -> Result<(), FrameError> {
        let reference = Some(client_id.to_owned());
        if body.trim().is_empty() {
            return Err(
                FrameError::new(ErrorCode::EmptyBody, "message body is empty").with_ref(reference),
            );
        }
        if body.len() > self.max_body_bytes {
            return Err(FrameError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "message body is {} bytes; at most {} are allowed",
                    body.len(),
                    self.max_body_bytes
                ),
            )
            .with_ref(reference));
        }
        Ok(())
    }

    /// Client ids are non-empty and at most `max_client_id_len` bytes.
    pub fn check_client_id(&self, client_id: &str) -> Result<(), FrameError> {
        if client_id.is_empty() || client_id.len() > self.max_client_id_len {
            return Err(FrameError::new(
                ErrorCode::InvalidClientId,
                format!(
                    "client_id must be 1 to {} bytes, got {}",
                    self.max_client_id_len,
                    client_id.len()
                ),
            )
            .with_ref(Some(truncate(client_id, 80))));
        }
        Ok(())
    }
}

fn is_room_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Cuts `s` to at most `max` bytes on a character boundary, so echoing bad
/// input back in an error stays small.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        let limits = Limits::default();
        for ok in ["a", "lobby", "team-eng.ops:1_x", &"r".repeat(64)] {
            assert!(limits.check_room(ok).is_ok(), "{ok}");
        }
        let err = limits.check_room("").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRoom);
        assert!(err.message.contains("empty"));
        let err = limits.check_room(&"r".repeat(65)).unwrap_err();
        assert!(err.message.contains("65 characters"), "{}", err.message);
        let err = limits.check_room("has space").unwrap_err();
        assert!(err.message.contains("' '"), "{}", err.message);
        assert!(limits.check_room("ümlaut").is_err());
        assert!(limits.check_room("a/b").is_err());
    }

    #[test]
    fn bodies() {
        let limits = Limits::default();
        assert!(limits.check_body("hi", "c").is_ok());
        assert!(limits.check_body(&"x".repeat(4096), "c").is_ok());
        let err = limits.check_body(&"x".repeat(4097), "c7").unwrap_err();
        assert_eq!(err.code, ErrorCode::BodyTooLarge);
        assert!(err.message.contains("4097 bytes"));
        assert_eq!(err.reference.as_deref(), Some("c7"));
        assert_eq!(
            limits.check_body("  \n", "c").unwrap_err().code,
            ErrorCode::EmptyBody
        );
    }

    #[test]
    fn client_ids() {
        let limits = Limits::default();
        assert!(limits.check_client_id("abc").is_ok());
        assert!(limits.check_client_id("").is_err());
        assert!(limits.check_client_id(&"c".repeat(129)).is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
