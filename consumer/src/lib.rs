//! RealChat consumer workers: the Kafka message topic → PostgreSQL.
//!
//! [`decode`] and [`batch`] are pure (records → rows or dead letters, and
//! the offsets a batch may commit); [`store`] writes a batch in one
//! transaction; [`worker`] is the consume/store/commit loop; [`http`] and
//! [`metrics`] are for operations.

pub mod batch;
pub mod decode;
pub mod http;
pub mod metrics;
pub mod store;
pub mod worker;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// Connects to PostgreSQL, retrying (with backoff) until it answers or
/// `shutdown` fires, so a worker started before its database waits instead
/// of crash-looping.
pub async fn connect_database(url: &str, shutdown: &CancellationToken) -> anyhow::Result<PgPool> {
    let mut attempt = 0;
    loop {
        let connected = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await;
        match connected {
            Ok(pool) => return Ok(pool),
            Err(err) => {
                let wait = batch::backoff(
                    attempt,
                    Duration::from_secs(5),
                    chrono::Utc::now().timestamp_subsec_nanos(),
                );
                tracing::warn!(%err, retry_in_ms = wait.as_millis() as u64, "PostgreSQL not reachable yet");
                attempt += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down before PostgreSQL was reachable: {err}"),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
