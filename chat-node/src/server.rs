//! HTTP surface of a node: the WebSocket endpoint, the browser UI and the
//! operational endpoints, plus the shared state every session uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use realchat_protocol::Limits;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthError, Authenticator};
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
        .route("/api/rooms/{room}/messages", get(history))
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

/// Most messages one history request may ask for.
pub const MAX_HISTORY_PAGE: usize = 200;

#[derive(Debug, Deserialize)]
struct HistoryParams {
    before: Option<u64>,
    limit: Option<usize>,
    token: Option<String>,
}

fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// `GET /api/rooms/{room}/messages?before=SEQ&limit=N`: a page of history,
/// newest first, authorized like a join when auth is on (token as a Bearer
/// header or `token` parameter).
async fn history(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(params): Query<HistoryParams>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = state.limits.check_room(&room) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_room", err.message);
    }
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_HISTORY_PAGE {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            format!("limit must be 1 to {MAX_HISTORY_PAGE}, got {limit}"),
        );
    }
    if state.auth.is_enabled() {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let Some(token) = bearer.or(params.token) else {
            return api_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                AuthError::Missing.to_string(),
            );
        };
        match state.auth.verify(&token) {
            Err(err) => {
                return api_error(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string());
            }
            Ok(identity) if !identity.rooms.allows(&room) => {
                return api_error(
                    StatusCode::FORBIDDEN,
                    "forbidden_room",
                    format!("your token does not allow room `{room}`"),
                );
            }
            Ok(_) => {}
        }
    }
    match state.hub.history(&room, params.before, limit).await {
        Ok((messages, source)) => {
            let next_before = (messages.len() == limit)
                .then(|| messages.last().map(|m| m.seq))
                .flatten();
            Json(json!({
                "room": room,
                "messages": messages,
                "next_before": next_before,
                "source": source,
            }))
            .into_response()
        }
        Err(err) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_unavailable",
            err.to_string(),
        ),
    }
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
