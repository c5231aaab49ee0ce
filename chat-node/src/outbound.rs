//! The server → client half of a session: a bounded queue drained by a
//! writer task.
//!
//! Frames are serialized once and shared (`Utf8Bytes` is reference counted),
//! so fanning a message out to a thousand members costs a thousand pointer
//! copies, not a thousand serializations. The queue is bounded: a client that
//! stops reading fills it, and instead of buffering without limit the node
//! closes that connection with 4002.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Close codes used by the node, beyond the standard ones.
pub mod close_code {
    /// Standard: the frame was larger than the node accepts.
    pub const TOO_BIG: u16 = 1009;
    /// Standard: policy violation (persistent rate-limit abuse).
    pub const POLICY: u16 = 1008;
    /// Standard: service restart; reconnect, possibly to another node.
    pub const RESTART: u16 = 1012;
    /// Authentication failed or was missing.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The client did not read fast enough; its queue overflowed.
    pub const TOO_SLOW: u16 = 4002;
}

/// Asks a session to close with a given code; the first request wins.
#[derive(Clone, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<Mutex<Option<(u16, String)>>>,
}

/// A close frame's reason may hold at most 123 bytes (RFC 6455 5.5.1); a
/// longer one would make the close itself fail.
const MAX_CLOSE_REASON: usize = 123;

impl Closer {
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        if let Ok(mut slot) = self.reason.lock()
            && slot.is_none()
        {
            let mut reason = reason.into();
            if reason.len() > MAX_CLOSE_REASON {
                let mut end = MAX_CLOSE_REASON;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason.truncate(end);
            }
            *slot = Some((code, reason));
        }
        self.token.cancel();
    }

    pub async fn closed(&self) {
        self.token.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn reason(&self) -> Option<(u16, String)> {
        self.reason.lock().ok().and_then(|slot| slot.clone())
    }
}

/// Result of queueing a frame to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// The queue was full: the session is being closed with 4002.
    Overflowed,
    /// The session is already gone.
    Closed,
}

/// The sending end of a session's queue, held by room registries.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    closer: Closer,
}

impl Outbox {
    pub fn new(capacity: usize, closer: Closer) -> (Outbox, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Outbox { tx, closer }, rx)
    }

    /// Queues a frame without waiting: a full queue means a client that does
    /// not keep up, and it is cut off rather than allowed to slow the sender.
    pub fn push(&self, frame: Utf8Bytes) -> Queued {
        match self.tx.try_send(frame) {
            Ok(()) => Queued::Yes,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer
                    .close(close_code::TOO_SLOW, "too slow: outbound queue full");
                Queued::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Queued::Closed,
        }
    }
}

impl Outbox {
    /// Queues a frame of the session's own (a reply, a replayed message),
    /// waiting for room in the queue. Only the session's own task waits, so
    /// a slow reader slows down its own requests without affecting others.
    pub async fn send(&self, frame: Utf8Bytes) -> Queued {
        tokio::select! {
            biased;
            _ = self.closer.closed() => Queued::Closed,
            sent = self.tx.send(frame) => match sent {
                Ok(()) => Queued::Yes,
                Err(_) => Queued::Closed,
            },
        }
    }
}

/// How long a closing session may spend flushing queued frames and the
/// close frame before the socket is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes queued frames to the socket until the session closes, batching
/// whatever is already queued into one flush.
pub async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Utf8Bytes>,
    closer: Closer,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = closer.closed() => break,
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let write = async {
            sink.feed(Message::Text(first)).await?;
            while let Ok(frame) = rx.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await
        };
        let result = tokio::select! {
            biased;
            // A blocked write (client not reading) must not outlive a close.
            _ = closer.closed() => break,
            result = write => result,
        };
        if result.is_err() {
            // The peer is gone; nothing more can be written.
            closer.close(1006, "connection lost");
            return;
        }
    }
    let (code, reason) = closer.reason().unwrap_or((1000, "closing".to_owned()));
    let finish = async {
        if code != close_code::TOO_SLOW {
            // Deliver what was already queued (e.g. acks of in-flight sends
            // during a drain) before the close frame.
            while let Ok(frame) = rx.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
        }
        sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, finish).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_the_session_as_too_slow() {
        let closer = Closer::default();
        let (outbox, _rx) = Outbox::new(2, closer.clone());
        assert_eq!(outbox.push("a".into()), Queued::Yes);
        assert_eq!(outbox.push("b".into()), Queued::Yes);
        assert!(!closer.is_closed());
        assert_eq!(outbox.push("c".into()), Queued::Overflowed);
        assert!(closer.is_closed());
        assert_eq!(closer.reason().unwrap().0, close_code::TOO_SLOW);
    }

    #[tokio::test]
    async fn the_first_close_reason_wins() {
        let closer = Closer::default();
        closer.close(close_code::RESTART, "draining");
        closer.close(close_code::TOO_SLOW, "late");
        assert_eq!(
            closer.reason(),
            Some((close_code::RESTART, "draining".to_owned()))
        );
    }

    #[test]
    fn close_reasons_fit_in_a_close_frame() {
        let closer = Closer::default();
        closer.close(close_code::UNAUTHORIZED, "é".repeat(100));
        let (_, reason) = closer.reason().unwrap();
        assert!(reason.len() <= MAX_CLOSE_REASON);
        assert!(reason.len() >= MAX_CLOSE_REASON - 1);
    }

    #[tokio::test]
    async fn a_dropped_receiver_reports_closed() {
        let (outbox, rx) = Outbox::new(2, Closer::default());
        drop(rx);
        assert_eq!(outbox.push("a".into()), Queued::Closed);
    }
}
