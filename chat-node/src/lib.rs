//! RealChat chat node.
//!
//! A node accepts WebSocket sessions ([`session`]), and composes the chat
//! operations ([`hub`]) from three replaceable parts: the [`store`] (seq,
//! dedupe, history), the [`fanout`] transport and the local room registry
//! ([`rooms`]). Standalone mode wires in-process implementations of all
//! three; nothing else is needed to run a usable chat.

pub mod auth;
pub mod config;
pub mod dedupe;
pub mod drain;
pub mod fanout;
pub mod history;
pub mod hub;
pub mod metrics;
pub mod outbound;
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

use crate::auth::Authenticator;
use crate::config::Config;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::metrics::Metrics;
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
    let rooms = Arc::new(LocalRooms::new());
    tracing::warn!(
        history_per_room = config.history_per_room,
        "standalone mode: in-process fanout; history is in memory only and is lost when this node stops"
    );
    let store = Store::Memory(MemoryStore::new(
        config.history_per_room,
        Duration::from_secs(config.dedupe_window_secs),
    ));
    let hub = Hub::new(
        store,
        Fanout::InProcess(rooms.clone()),
        rooms,
        metrics.clone(),
    );
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
    ));
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
