//! Reachability of Redis and Kafka, checked in the background so that
//! `/readyz` answers instantly and reflects what sends would meet.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::cluster::kafka::MessageLog;

const CHECK_INTERVAL: Duration = Duration::from_secs(2);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct BackendHealth {
    redis_ok: AtomicBool,
    kafka_ok: AtomicBool,
    problem: Mutex<Option<String>>,
}

impl BackendHealth {
    /// Ok when both backends answered the last check; otherwise what failed.
    pub fn ready(&self) -> Result<(), String> {
        if self.redis_ok.load(Ordering::Relaxed) && self.kafka_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(self
            .problem
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_else(|| "backends not checked yet".into()))
    }

    /// Checks both backends once.
    pub async fn check(&self, redis: &[ConnectionManager], log: &MessageLog) {
        let mut problems = Vec::new();
        let mut redis_ok = true;
        for connection in redis {
            // Pinging also makes an idle connection notice a restart and reconnect.
            let mut connection = connection.clone();
            let ping = redis::cmd("PING");
            match tokio::time::timeout(CHECK_TIMEOUT, ping.query_async::<String>(&mut connection))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    redis_ok = false;
                    problems.push(format!("Redis unreachable: {err}"));
                }
                Err(_) => {
                    redis_ok = false;
                    problems.push("Redis did not answer PING within 2s".to_owned());
                }
            }
        }
        let kafka_ok = match log.check().await {
            Ok(()) => true,
            Err(err) => {
                problems.push(err.to_string());
                false
            }
        };
        let was_ready = self.ready().is_ok();
        self.redis_ok.store(redis_ok, Ordering::Relaxed);
        self.kafka_ok.store(kafka_ok, Ordering::Relaxed);
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        match (&problem, was_ready) {
            (Some(problem), true) => tracing::warn!(%problem, "backends unhealthy: not ready"),
            (None, false) => tracing::info!("Redis and Kafka reachable: ready"),
            _ => {}
        }
        if let Ok(mut slot) = self.problem.lock() {
            *slot = problem;
        }
    }

    /// Checks forever at a fixed interval.
    pub async fn watch(&self, redis: Vec<ConnectionManager>, log: &MessageLog) {
        let mut ticker = tokio::time::interval(CHECK_INTERVAL);
        loop {
            ticker.tick().await;
            self.check(&redis, log).await;
        }
    }
}
