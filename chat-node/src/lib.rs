//! RealChat chat node.
//!
//! A node accepts WebSocket sessions ([`session`]), and composes the chat
//! operations ([`hub`]) from replaceable parts: the [`store`] (seq, dedupe,
//! history), the [`fanout`] transport, [`presence`] and the local room
//! registry ([`rooms`]). Standalone mode wires in-process implementations;
//! nothing else is needed to run a usable chat. With Redis and Kafka
//! configured, [`cluster`] mode makes any number of nodes behave as one.

pub mod archive;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod dedupe;
pub mod drain;
pub mod fanout;
pub mod history;
pub mod hub;
pub mod metrics;
pub mod outbound;
pub mod presence;
pub mod ratelimit;
pub mod rooms;
pub mod server;
pub mod session;
pub mod store;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::archive::Archive;
use crate::auth::Authenticator;
use crate::cluster::ClusterSettings;
use crate::cluster::health::BackendHealth;
use crate::cluster::kafka::MessageLog;
use crate::cluster::store::StoreSettings;
use crate::config::Config;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::rooms::LocalRooms;
use crate::server::{AppState, SessionSettings};
use crate::store::{MemoryStore, Store};

/// Builds the authenticator from the configured key, if any.
pub fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    if let Some(secret) = &config.jwt_hs256_secret {
        return Authenticator::hs256(secret.as_bytes()).context("JWT_HS256_SECRET");
    }
    if let Some(pem) = &config.jwt_rs256_public_key {
        return Authenticator::rs256(pem.as_bytes()).context("JWT_RS256_PUBLIC_KEY");
    }
    if let Some(path) = &config.jwt_rs256_public_key_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading JWT_RS256_PUBLIC_KEY_FILE {}", path.display()))?;
        return Authenticator::rs256(&pem)
            .with_context(|| format!("JWT key in {}", path.display()));
    }
    Ok(Authenticator::Disabled)
}

/// The parts that differ between standalone and cluster mode.
struct Backends {
    hub: Hub,
    cluster: Option<ClusterRuntime>,
}

/// What cluster mode runs in the background.
struct ClusterRuntime {
    health: Arc<BackendHealth>,
    connections: Vec<redis::aio::ConnectionManager>,
    log: Arc<MessageLog>,
    presence_interval: Duration,
}

async fn backends(
    config: &Config,
    node: &Arc<str>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Backends> {
    let rooms = Arc::new(LocalRooms::new());
    let dedupe_window = Duration::from_secs(config.dedupe_window_secs);
    let archive = match &config.database_url {
        Some(url) => {
            tracing::info!("history from PostgreSQL (persisted by the consumer workers)");
            Some(Arc::new(
                Archive::connect_lazy(url).context("DATABASE_URL")?,
            ))
        }
        None => None,
    };
    match (&config.redis_url, &config.kafka_brokers) {
        (None, None) => {
            tracing::warn!(
                history_per_room = config.history_per_room,
                "standalone mode: in-process fanout; history is in memory only and is lost when this node stops"
            );
            let store = Store::Memory(MemoryStore::new(
                config.history_per_room,
                config.replay_limit,
                dedupe_window,
            ));
            let hub = Hub::new(
                store,
                Fanout::InProcess(rooms.clone()),
                Presence::Local(rooms.clone()),
                rooms,
                metrics.clone(),
                archive,
            );
            Ok(Backends { hub, cluster: None })
        }
        (Some(redis_url), Some(kafka_brokers)) => {
            let presence_ttl = Duration::from_secs(config.presence_ttl_secs.max(2));
            let settings = ClusterSettings {
                redis_url: redis_url.clone(),
                redis_prefix: config.redis_prefix.clone(),
                kafka_brokers: kafka_brokers.clone(),
                kafka_topic: config.kafka_topic.clone(),
                kafka_options: config.kafka_options.clone(),
                kafka_produce_timeout: Duration::from_millis(config.kafka_produce_timeout_ms),
                kafka_create_topic_partitions: config.kafka_create_topic_partitions,
                store: StoreSettings {
                    history_per_room: config.history_per_room,
                    replay_limit: config.replay_limit,
                    archive: archive.clone(),
                    history_ttl: Duration::from_secs(config.redis_history_ttl_secs),
                    dedupe_window,
                },
                presence_ttl,
            };
            let cluster =
                cluster::connect(settings, node.clone(), rooms.clone(), metrics.clone()).await?;
            let hub = Hub::new(
                Store::Cluster(Box::new(cluster.store)),
                Fanout::Redis {
                    rooms: rooms.clone(),
                    redis: cluster.fanout,
                },
                Presence::Redis(Box::new(cluster.presence)),
                rooms,
                metrics.clone(),
                archive,
            );
            Ok(Backends {
                hub,
                cluster: Some(ClusterRuntime {
                    health: cluster.health,
                    connections: cluster.connections,
                    log: cluster.log,
                    // Beat well within the TTL so one missed beat is harmless.
                    presence_interval: presence_ttl / 4,
                }),
            })
        }
        (Some(_), None) => anyhow::bail!(
            "REDIS_URL is set but KAFKA_BROKERS is not: cluster mode needs both (set neither for standalone mode)"
        ),
        (None, Some(_)) => anyhow::bail!(
            "KAFKA_BROKERS is set but REDIS_URL is not: cluster mode needs both (set neither for standalone mode)"
        ),
    }
}

/// Serves until `shutdown` resolves, then drains: readiness turns false, new
/// connections are refused, sessions close with 1012, and the node waits for
/// them up to the drain timeout.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node: Arc<str> = Arc::from(config.node_name());
    let auth = authenticator(&config)?;
    if auth.is_enabled() {
        tracing::info!("authentication is on: connections must present a JWT");
    } else {
        tracing::warn!("authentication is off (dev mode): users pick their own display names");
    }
    let metrics = Arc::new(Metrics::new());
    let Backends { hub, cluster } = backends(&config, &node, &metrics).await?;
    let settings = SessionSettings {
        outbound_queue: config.outbound_queue,
        max_rooms_per_connection: config.max_rooms_per_connection,
        send_rate: config.send_rate,
        send_burst: config.send_burst,
        send_abuse_limit: config.send_abuse_limit,
        auth_timeout: Duration::from_secs(config.auth_timeout_secs),
    };
    let state = Arc::new(AppState::new(
        node.clone(),
        hub,
        auth,
        config.limits(),
        settings,
        metrics,
        cluster.as_ref().map(|c| c.health.clone()),
    ));
    if let Some(runtime) = cluster {
        let ClusterRuntime {
            health,
            connections,
            log,
            presence_interval,
        } = runtime;
        tokio::spawn(async move { health.watch(connections, &log).await });
        let state = state.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(presence_interval);
            loop {
                ticker.tick().await;
                state.hub.maintain_presence().await;
            }
        });
    }
    let drain = state.drain.clone();
    let drain_timeout = config.drain_timeout();
    let drain_delay = Duration::from_secs(config.drain_delay_secs);
    let graceful = {
        let drain = drain.clone();
        async move {
            shutdown.await;
            tracing::info!(
                sessions = drain.open_sessions(),
                delay_secs = drain_delay.as_secs(),
                timeout_secs = drain_timeout.as_secs(),
                "draining: readiness is false and new connections are refused; sessions will close with 1012"
            );
            drain.refuse_new();
            tokio::time::sleep(drain_delay).await;
            drain.start();
            if drain.wait_for_sessions(drain_timeout).await {
                tracing::info!("drain complete");
            } else {
                tracing::warn!(
                    sessions = drain.open_sessions(),
                    "drain timed out; closing anyway"
                );
            }
        }
    };
    tracing::info!(node = %node, "chat node ready");
    let server = axum::serve(listener, server::router(state)).with_graceful_shutdown(graceful);
    // Idle keep-alive HTTP connections must not hold the process past the
    // drain timeout.
    let deadline = async {
        drain.refusing().await;
        tokio::time::sleep(drain_delay + drain_timeout + Duration::from_secs(2)).await;
    };
    tokio::select! {
        result = server => result.context("HTTP server failed")?,
        _ = deadline => tracing::warn!("HTTP connections still open at the deadline; exiting"),
    }
    Ok(())
}
