//! HTTP surface of a node: the WebSocket endpoint, the browser UI and the
//! operational endpoints, plus the shared state every session uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use realchat_protocol::Limits;

use crate::auth::Authenticator;
use crate::cluster::health::BackendHealth;
use crate::drain::Drain;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::rooms::SessionId;
use crate::session::{self, ConnectParams};
use crate::ui;

/// Per-connection settings, from the node's configuration.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub outbound_queue: usize,
    pub max_rooms_per_connection: usize,
    pub send_rate: f64,
    pub send_burst: u32,
    pub send_abuse_limit: u32,
    pub auth_timeout: Duration,
}

pub struct AppState {
    pub node: Arc<str>,
    pub hub: Hub,
    pub auth: Authenticator,
    pub limits: Limits,
    pub settings: SessionSettings,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    /// Reachability of Redis and Kafka (cluster mode only).
    pub backends: Option<Arc<BackendHealth>>,
    next_session: AtomicU64,
}

impl AppState {
    pub fn new(
        node: Arc<str>,
        hub: Hub,
        auth: Authenticator,
        limits: Limits,
        settings: SessionSettings,
        metrics: Arc<Metrics>,
        backends: Option<Arc<BackendHealth>>,
    ) -> AppState {
        AppState {
            node,
            hub,
            auth,
            limits,
            settings,
            metrics,
            drain: Drain::default(),
            backends,
            next_session: AtomicU64::new(1),
        }
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/app.js", get(ui::app_js))
        .route("/style.css", get(ui::style_css))
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ConnectParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if state.drain.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "node is draining: connect to another node\n",
        )
            .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // Frames up to twice the limit are read and refused with a clear 1009;
    // larger ones are cut off by the WebSocket layer (also answered by 1009).
    let read_limit = state.limits.max_frame_bytes.saturating_mul(2);
    let drain = state.drain.clone();
    ws.max_message_size(read_limit)
        .max_frame_size(read_limit)
        .on_upgrade(move |socket| drain.track(session::run(socket, state, params)))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.drain.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if let Some(Err(problem)) = state.backends.as_ref().map(|b| b.ready()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {problem}\n"),
        )
            .into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
