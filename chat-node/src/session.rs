//! One WebSocket connection: authentication, then a loop that reads client
//! frames one at a time and answers them.
//!
//! Frames are handled sequentially, so a send is always finished (stored and
//! acknowledged, or reported as failed) before the next frame is read; this
//! is what lets a drain close a session without losing an in-flight send.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use realchat_protocol::{ClientFrame, ErrorCode, FrameError, PROTOCOL_VERSION, ServerFrame};
use serde::Deserialize;

use crate::auth::{AuthError, Identity, dev_identity};
use crate::outbound::{Closer, Outbox, close_code, write_loop};
use crate::ratelimit::{TokenBucket, Verdict};
use crate::rooms::SessionId;
use crate::server::AppState;
use crate::store::Draft;

/// Query parameters of `GET /ws`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// JWT, instead of a first `auth` frame.
    pub token: Option<String>,
    /// Display name in dev mode (auth off).
    pub name: Option<String>,
}

/// Typing notices are forwarded at most this often per room and session.
const TYPING_INTERVAL: Duration = Duration::from_millis(1000);
/// How long the writer gets to flush after the session ends.
const WRITER_GRACE: Duration = Duration::from_secs(3);

pub async fn run(socket: WebSocket, state: Arc<AppState>, params: ConnectParams) {
    let id = state.next_session_id();
    let (sink, mut stream) = socket.split();
    let closer = Closer::default();
    let (outbox, rx) = Outbox::new(state.settings.outbound_queue, closer.clone());
    let writer = tokio::spawn(write_loop(sink, rx, closer.clone()));
    state.metrics.connections.inc();

    match authenticate(&state, params, &mut stream).await {
        Ok(identity) => {
            let mut session = Session::new(id, identity, outbox, closer.clone(), state.clone());
            session.run(&mut stream).await;
            session.leave_all().await;
        }
        Err(err) => {
            tracing::info!(session = id, error = %err, "connection refused");
            state.metrics.auth_failures.inc();
            closer.close(close_code::UNAUTHORIZED, err.to_string());
        }
    }

    if closer
        .reason()
        .is_some_and(|(code, _)| code == close_code::TOO_SLOW)
    {
        tracing::info!(session = id, "client too slow: disconnected with 4002");
        state.metrics.slow_client_disconnects.inc();
    }
    closer.close(1000, "bye");
    // The writer sends the close frame; a peer that does not read cannot hold
    // the session open past the grace period.
    let _ = tokio::time::timeout(WRITER_GRACE, writer).await;
    state.metrics.connections.dec();
}

/// Establishes who is connecting: from the `token` query parameter or a
/// first `auth` frame when auth is on, from the `name` parameter otherwise.
async fn authenticate(
    state: &AppState,
    params: ConnectParams,
    stream: &mut SplitStream<WebSocket>,
) -> Result<Identity, AuthError> {
    if !state.auth.is_enabled() {
        let guest = format!("guest-{}", &uuid::Uuid::now_v7().simple().to_string()[26..]);
        return Ok(dev_identity(params.name.as_deref(), &guest));
    }
    if let Some(token) = params.token {
        return state.auth.verify(&token);
    }
    let first_text = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => return Some(text),
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Binary(_) | Message::Close(_) => return None,
            }
        }
        None
    };
    let text = tokio::time::timeout(state.settings.auth_timeout, first_text)
        .await
        .ok()
        .flatten()
        .ok_or(AuthError::Missing)?;
    if text.len() > state.limits.max_frame_bytes {
        return Err(AuthError::Missing);
    }
    match ClientFrame::parse(&text) {
        Ok(ClientFrame::Auth { token }) => state.auth.verify(&token),
        _ => Err(AuthError::Missing),
    }
}

struct Session {
    id: SessionId,
    user: Arc<str>,
    identity: Identity,
    rooms: HashSet<String>,
    send_budget: TokenBucket,
    last_typing: HashMap<String, Instant>,
    outbox: Outbox,
    closer: Closer,
    state: Arc<AppState>,
}

impl Session {
    fn new(
        id: SessionId,
        identity: Identity,
        outbox: Outbox,
        closer: Closer,
        state: Arc<AppState>,
    ) -> Session {
        let settings = &state.settings;
        let send_budget = TokenBucket::new(
            settings.send_rate,
            settings.send_burst,
            settings.send_abuse_limit,
            Instant::now(),
        );
        Session {
            id,
            user: Arc::from(identity.user.as_str()),
            identity,
            rooms: HashSet::new(),
            send_budget,
            last_typing: HashMap::new(),
            outbox,
            closer,
            state,
        }
    }

    async fn run(&mut self, stream: &mut SplitStream<WebSocket>) {
        let welcome = ServerFrame::Welcome {
            session: uuid::Uuid::now_v7().to_string(),
            user: self.user.to_string(),
            node: self.state.node.to_string(),
            protocol: PROTOCOL_VERSION,
        };
        self.reply(&welcome).await;
        let max_frame = self.state.limits.max_frame_bytes;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.closer.closed() => return,
                _ = self.state.drain.started() => {
                    self.closer.close(close_code::RESTART, "server restarting: reconnect");
                    return;
                }
                next = stream.next() => next,
            };
            match next {
                None => return,
                Some(Err(err)) => {
                    if is_too_big(&err) {
                        self.close_too_big(None);
                    }
                    return;
                }
                Some(Ok(Message::Text(text))) => {
                    if text.len() > max_frame {
                        self.close_too_big(Some(text.len()));
                        return;
                    }
                    self.handle_text(&text).await;
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if bytes.len() > max_frame {
                        self.close_too_big(Some(bytes.len()));
                        return;
                    }
                    self.fail(FrameError::new(
                        ErrorCode::BinaryNotSupported,
                        "binary frames are not part of the protocol; send JSON text frames",
                    ))
                    .await;
                }
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }

    fn close_too_big(&self, size: Option<usize>) {
        let limit = self.state.limits.max_frame_bytes;
        let reason = match size {
            Some(size) => format!("frame of {size} bytes exceeds the {limit}-byte limit"),
            None => format!("frame exceeds the {limit}-byte limit"),
        };
        self.state.metrics.reject("frame_too_big");
        self.closer.close(close_code::TOO_BIG, reason);
    }

    async fn handle_text(&mut self, text: &str) {
        let result = match ClientFrame::parse(text) {
            Ok(frame) => self.handle(frame).await,
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            self.fail(err).await;
        }
    }

    async fn handle(&mut self, frame: ClientFrame) -> Result<(), FrameError> {
        match frame {
            ClientFrame::Auth { .. } => Err(FrameError::new(
                ErrorCode::AlreadyAuthenticated,
                "this session is already authenticated; auth is only valid as the first frame",
            )),
            ClientFrame::Join { room, since } => self.join(room, since).await,
            ClientFrame::Leave { room } => self.leave(room).await,
            ClientFrame::Send {
                room,
                client_id,
                body,
            } => self.send(room, client_id, body).await,
            ClientFrame::Typing { room } => self.typing(room).await,
            ClientFrame::Ping => {
                self.reply(&ServerFrame::Pong).await;
                Ok(())
            }
        }
    }

    async fn join(&mut self, room: String, since: Option<u64>) -> Result<(), FrameError> {
        let limits = self.state.limits;
        limits.check_room(&room)?;
        if !self.identity.rooms.allows(&room) {
            return Err(FrameError::new(
                ErrorCode::ForbiddenRoom,
                format!("your token does not allow room `{room}`"),
            )
            .with_ref(Some(room)));
        }
        let max_rooms = self.state.settings.max_rooms_per_connection;
        if !self.rooms.contains(&room) && self.rooms.len() >= max_rooms {
            return Err(FrameError::new(
                ErrorCode::TooManyRooms,
                format!("a connection may be in at most {max_rooms} rooms; leave one first"),
            )
            .with_ref(Some(room)));
        }
        let hub = &self.state.hub;
        let info = hub
            .join(&room, self.id, self.user.clone(), self.outbox.clone())
            .await
            .map_err(|err| {
                FrameError::new(
                    ErrorCode::HistoryUnavailable,
                    format!("could not join: {err}"),
                )
                .with_ref(Some(room.clone()))
            })?;
        self.rooms.insert(room.clone());
        self.reply(&ServerFrame::Joined {
            room: room.clone(),
            last_seq: info.last_seq,
            members: info.members,
        })
        .await;
        let Some(since) = since else {
            return Ok(());
        };
        let replay = hub.replay(&room, since).await.map_err(|err| {
            FrameError::new(
                ErrorCode::HistoryUnavailable,
                format!("could not replay: {err}"),
            )
            .with_ref(Some(room.clone()))
        })?;
        let from = replay.messages.first().map_or(since + 1, |m| m.seq);
        let to = replay.messages.last().map_or(since, |m| m.seq);
        for message in replay.messages {
            self.reply(&ServerFrame::Message(message)).await;
        }
        self.reply(&ServerFrame::Replayed {
            room,
            from,
            to,
            complete: replay.complete,
        })
        .await;
        Ok(())
    }

    async fn leave(&mut self, room: String) -> Result<(), FrameError> {
        if !self.rooms.remove(&room) {
            return Err(not_joined(&room, "leave"));
        }
        self.state.hub.leave(&room, self.id, &self.user).await;
        self.last_typing.remove(&room);
        self.reply(&ServerFrame::Left { room }).await;
        Ok(())
    }

    async fn send(
        &mut self,
        room: String,
        client_id: String,
        body: String,
    ) -> Result<(), FrameError> {
        let started = Instant::now();
        match self.send_budget.check(started) {
            Verdict::Allow => {}
            Verdict::Reject => {
                let settings = &self.state.settings;
                return Err(FrameError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "over the send rate limit ({}/s, burst {}); the message was not sent",
                        settings.send_rate, settings.send_burst
                    ),
                )
                .with_ref(Some(client_id)));
            }
            Verdict::Disconnect => {
                self.state.metrics.reject("rate_limit_abuse");
                self.closer
                    .close(close_code::POLICY, "send rate limit exceeded repeatedly");
                return Ok(());
            }
        }
        let limits = self.state.limits;
        limits.check_client_id(&client_id)?;
        limits
            .check_room(&room)
            .map_err(|err| err.with_ref(Some(client_id.clone())))?;
        if !self.rooms.contains(&room) {
            return Err(not_joined(&room, "send to").with_ref(Some(client_id)));
        }
        limits.check_body(&body, &client_id)?;
        let draft = Draft {
            room,
            user: self.user.clone(),
            client_id: client_id.clone(),
            body,
        };
        match self.state.hub.send(draft, self.id).await {
            Ok(acked) => {
                self.reply(&ServerFrame::Ack {
                    client_id,
                    room: acked.room,
                    seq: acked.seq,
                    id: acked.id,
                })
                .await;
                self.state
                    .metrics
                    .send_ack_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(err) => {
                tracing::warn!(session = self.id, error = %err, "send failed");
                Err(FrameError::new(
                    ErrorCode::NotSent,
                    format!("the message was not sent: {err}; retry with the same client_id"),
                )
                .with_ref(Some(client_id)))
            }
        }
    }

    async fn typing(&mut self, room: String) -> Result<(), FrameError> {
        if !self.rooms.contains(&room) {
            return Err(not_joined(&room, "type in"));
        }
        let now = Instant::now();
        if let Some(last) = self.last_typing.get(&room)
            && now.duration_since(*last) < TYPING_INTERVAL
        {
            return Ok(());
        }
        self.last_typing.insert(room.clone(), now);
        self.state.hub.typing(&room, self.id, &self.user).await;
        Ok(())
    }

    async fn leave_all(&mut self) {
        for room in std::mem::take(&mut self.rooms) {
            self.state.hub.leave(&room, self.id, &self.user).await;
        }
    }

    async fn reply(&self, frame: &ServerFrame) {
        self.outbox.send(Utf8Bytes::from(frame.to_json())).await;
    }

    async fn fail(&self, err: FrameError) {
        self.state.metrics.reject(err.code.as_str());
        self.reply(&err.into_frame()).await;
    }
}

fn not_joined(room: &str, action: &str) -> FrameError {
    FrameError::new(
        ErrorCode::NotJoined,
        format!("cannot {action} room `{room}`: join it first"),
    )
    .with_ref(Some(room.to_owned()))
}

/// Whether a read failed because the peer sent a frame over the size limit.
fn is_too_big(err: &axum::Error) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)))
}
