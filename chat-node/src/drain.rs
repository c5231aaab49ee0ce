//! Graceful shutdown: on SIGTERM readiness turns false, new WebSocket
//! connections are refused, sessions finish the frame they are handling and
//! close with 1012 (reconnect elsewhere), and the node waits for them up to
//! the drain timeout.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

#[derive(Clone, Default)]
pub struct Drain {
    /// Readiness is false and new sessions are refused.
    refusing: CancellationToken,
    /// Open sessions are being closed.
    started: CancellationToken,
    sessions: TaskTracker,
}

impl Drain {
    /// True once SIGTERM arrived: readiness is false, /ws answers 503.
    pub fn is_draining(&self) -> bool {
        self.refusing.is_cancelled()
    }

    /// First step: stop taking new sessions (existing ones carry on).
    pub fn refuse_new(&self) {
        self.refusing.cancel();
    }

    pub async fn refusing(&self) {
        self.refusing.cancelled().await
    }

    /// Second step: close the open sessions.
    pub fn start(&self) {
        self.refuse_new();
        self.started.cancel();
    }

    /// Resolves once sessions are being closed.
    pub async fn started(&self) {
        self.started.cancelled().await
    }

    /// Wraps a session so that the drain can wait for it.
    pub fn track<F: Future>(&self, session: F) -> TrackedFuture<F> {
        self.sessions.track_future(session)
    }

    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Waits for every session to end; false if `timeout` passed first.
    pub async fn wait_for_sessions(&self, timeout: Duration) -> bool {
        self.sessions.close();
        tokio::time::timeout(timeout, self.sessions.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tracked_sessions_up_to_the_timeout() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        let quick = tokio::spawn(drain.track(tokio::time::sleep(Duration::from_millis(10))));
        drain.start();
        assert!(drain.is_draining());
        assert!(drain.wait_for_sessions(Duration::from_secs(5)).await);
        quick.await.unwrap();

        let drain = Drain::default();
        let _stuck = tokio::spawn(drain.track(std::future::pending::<()>()));
        assert_eq!(drain.open_sessions(), 1);
        assert!(!drain.wait_for_sessions(Duration::from_millis(50)).await);
    }
}
