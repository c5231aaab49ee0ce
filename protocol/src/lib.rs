//! The RealChat wire protocol and record formats.
//!
//! Two formats cross process boundaries and both live here so that every
//! binary agrees on them:
//!
//! * [`frames`]: the JSON text frames exchanged over the `/ws` WebSocket
//!   (documented, versioned, in `docs/protocol.md`);
//! * [`record`]: the durable message record written to Kafka by chat nodes
//!   and read by consumers (and [`kafka`]: how both take extra Kafka
//!   settings).
//!
//! [`limits`] holds the validation rules (room names, body and frame sizes)
//! so that the server and tools reject the same inputs with the same errors.

pub mod frames;
pub mod kafka;
pub mod limits;
pub mod record;

pub use frames::{ClientFrame, ErrorCode, ErrorFrame, FrameError, PresenceState, ServerFrame};
pub use limits::Limits;
pub use record::{ChatMessage, MessageRecord};

/// Version of the WebSocket protocol spoken by this build; sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
