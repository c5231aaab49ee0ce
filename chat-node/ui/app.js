// RealChat browser client. Speaks the protocol in docs/protocol.md.
//
// State per room: messages keyed by seq (so live and replayed frames merge
// and render in seq order whatever order they arrive in), members, and the
// last seq seen, which is what a reconnect asks to replay from.

const $ = (id) => document.getElementById(id);
const store = window.localStorage;

const state = {
  ws: null,
  user: null,
  rooms: new Map(),        // name -> { messages: Map<seq, msg>, members: Set, lastSeq, unread, typing: Map<user, timer> }
  current: null,
  pending: new Map(),      // client_id -> { room, body, failed, error }
  reconnectDelay: 500,
  reconnectTimer: null,
  closedForGood: false,
};

function room(name) {
  if (!state.rooms.has(name)) {
    state.rooms.set(name, { messages: new Map(), members: new Set(), lastSeq: 0, unread: 0, typing: new Map(), notice: "", loadingOlder: false, noOlder: false });
  }
  return state.rooms.get(name);
}

function setStatus(text) {
  const el = $("status");
  el.textContent = text;
  el.className = `status status-${text}`;
}

function toast(text) {
  const el = document.createElement("div");
  el.className = "toast";
  el.textContent = text;
  $("toasts").append(el);
  setTimeout(() => el.remove(), 5000);
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

// ---- connection -----------------------------------------------------------

function connect() {
  clearTimeout(state.reconnectTimer);
  const params = new URLSearchParams();
  const token = store.getItem("realchat.token");
  const name = store.getItem("realchat.name");
  if (token) params.set("token", token);
  if (name) params.set("name", name);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  setStatus(state.user ? "reconnecting" : "connecting");
  const ws = new WebSocket(`${scheme}://${location.host}/ws?${params}`);
  state.ws = ws;
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    handle(frame);
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    setStatus("offline");
    enableComposer(false);
    onClose(event.code, event.reason);
  };
}

function onClose(code, reason) {
  if (code === 4001) {
    // Authentication failed: reconnecting with the same token cannot help.
    $("login-error").textContent = `Sign-in refused: ${reason || "invalid token"}`;
    showLogin();
    return;
  }
  if (state.closedForGood) return;
  if (code === 1008) toast(`Disconnected: ${reason || "policy violation"}`);
  if (code === 4002) toast("Disconnected for reading too slowly; reconnecting");
  // 1012: the node is restarting — reconnect promptly (through the ingress,
  // to another node); otherwise back off with jitter.
  const base = code === 1012 ? 200 : state.reconnectDelay;
  const delay = base / 2 + Math.random() * base;
  state.reconnectDelay = Math.min(state.reconnectDelay * 2, 10000);
  state.reconnectTimer = setTimeout(connect, delay);
}

function onWelcome(frame) {
  state.user = frame.user;
  state.reconnectDelay = 500;
  setStatus("online");
  $("whoami").textContent = `signed in as ${frame.user}`;
  $("node").textContent = `node ${frame.node}`;
  // Rejoin every room, replaying what was missed while away.
  for (const [name, r] of state.rooms) send({ type: "join", room: name, since: r.lastSeq });
  // Resend unacknowledged messages with their original client_id: the
  // server's dedupe window makes this exactly-once.
  for (const [clientId, p] of state.pending) {
    if (!p.failed) send({ type: "send", room: p.room, client_id: clientId, body: p.body });
  }
  enableComposer(Boolean(state.current));
}

// ---- frames ---------------------------------------------------------------

function handle(frame) {
  switch (frame.type) {
    case "welcome": return onWelcome(frame);
    case "joined": {
      const r = room(frame.room);
      r.members = new Set(frame.members);
      renderRooms();
      if (frame.room === state.current) renderMembers();
      return;
    }
    case "left": return;
    case "message": return addMessage(frame);
    case "ack": {
      const p = state.pending.get(frame.client_id);
      state.pending.delete(frame.client_id);
      if (p) addMessage({ room: frame.room, seq: frame.seq, id: frame.id, user: state.user, body: p.body, ts: Date.now() });
      return;
    }
    case "presence": {
      const r = room(frame.room);
      if (frame.state === "joined") r.members.add(frame.user); else r.members.delete(frame.user);
      if (frame.room === state.current) { renderMembers(); systemLine(`${frame.user} ${frame.state === "joined" ? "joined" : "left"}`); }
      return;
    }
    case "typing": {
      const r = room(frame.room);
      clearTimeout(r.typing.get(frame.user));
      r.typing.set(frame.user, setTimeout(() => { r.typing.delete(frame.user); renderTyping(); }, 3000));
      renderTyping();
      return;
    }
    case "replayed": {
      const r = room(frame.room);
      r.notice = frame.complete ? "" : "Some older messages are no longer available here; scroll up for history.";
      if (frame.room === state.current) renderNotice();
      if (r.messages.size < 30) loadOlder(frame.room);
      return;
    }
    case "error": return onError(frame);
    default: return;
  }
}

function onError(frame) {
  const p = frame.ref && state.pending.get(frame.ref);
  if (p) {
    p.failed = true;
    p.error = frame.message;
    if (p.room === state.current) renderMessages();
    return;
  }
  toast(frame.message);
}

function addMessage(msg) {
  const r = room(msg.room);
  if (r.messages.has(msg.seq)) return;
  r.messages.set(msg.seq, msg);
  r.lastSeq = Math.max(r.lastSeq, msg.seq);
  if (msg.room === state.current) {
    renderMessages();
  } else {
    r.unread += 1;
    renderRooms();
  }
}

// ---- older history ----------------------------------------------------------

// Fetches the page before the oldest message shown, from the history API
// (PostgreSQL when the cluster persists messages).
async function loadOlder(name) {
  const r = state.rooms.get(name);
  if (!r || r.loadingOlder || r.noOlder) return;
  const seqs = [...r.messages.keys()];
  const oldest = seqs.length ? Math.min(...seqs) : r.lastSeq + 1;
  if (oldest <= 1) { r.noOlder = true; return; }
  r.loadingOlder = true;
  try {
    const headers = {};
    const token = store.getItem("realchat.token");
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(`/api/rooms/${encodeURIComponent(name)}/messages?before=${oldest}&limit=50`, { headers });
    if (!response.ok) return;
    const page = await response.json();
    if (page.messages.length === 0 || page.next_before === null) r.noOlder = true;
    const list = $("messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const msg of page.messages) if (!r.messages.has(msg.seq)) r.messages.set(msg.seq, msg);
    if (name === state.current) {
      renderMessages();
      list.scrollTop = list.scrollHeight - fromBottom; // keep the reader's place
    }
  } catch {
    // Offline or no history service: scrolling up simply shows nothing more.
  } finally {
    r.loadingOlder = false;
  }
}

// ---- rendering ------------------------------------------------------------

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren();
  for (const [name, r] of state.rooms) {
    const li = document.createElement("li");
    li.className = name === state.current ? "active" : "";
    li.dataset.room = name;
    const label = document.createElement("span");
    label.textContent = `# ${name}`;
    li.append(label);
    if (r.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = r.unread;
      li.append(badge);
    }
    const close = document.createElement("button");
    close.className = "close";
    close.title = `Leave ${name}`;
    close.textContent = "×";
    close.onclick = (event) => { event.stopPropagation(); leaveRoom(name); };
    li.append(close);
    li.onclick = () => switchRoom(name);
    list.append(li);
  }
}

function renderMessages() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  const r = state.current && state.rooms.get(state.current);
  if (!r) return;
  const ordered = [...r.messages.values()].sort((a, b) => a.seq - b.seq);
  for (const msg of ordered) list.append(messageItem(msg));
  for (const [clientId, p] of state.pending) {
    if (p.room !== state.current) continue;
    const li = messageItem({ user: state.user, body: p.body, ts: null });
    li.classList.add(p.failed ? "failed" : "pending");
    if (p.failed) {
      const retry = document.createElement("button");
      retry.className = "retry";
      retry.textContent = "Retry";
      retry.title = p.error || "";
      retry.onclick = () => { p.failed = false; send({ type: "send", room: p.room, client_id: clientId, body: p.body }); renderMessages(); };
      li.append(retry);
    }
    list.append(li);
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function messageItem(msg) {
  const li = document.createElement("li");
  if (msg.seq) li.dataset.seq = msg.seq;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = msg.ts ? new Date(msg.ts).toLocaleTimeString() : "sending…";
  const user = document.createElement("span");
  user.className = "user";
  user.textContent = msg.user;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = msg.body;
  li.append(meta, user, body);
  return li;
}

function systemLine(text) {
  const li = document.createElement("li");
  li.className = "system";
  li.textContent = text;
  $("messages").append(li);
}

function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  const r = state.current && state.rooms.get(state.current);
  if (!r) return;
  for (const name of [...r.members].sort()) {
    const li = document.createElement("li");
    li.textContent = name;
    list.append(li);
  }
}

function renderTyping() {
  const r = state.current && state.rooms.get(state.current);
  const who = r ? [...r.typing.keys()] : [];
  $("typing").textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
}

function renderNotice() {
  const r = state.current && state.rooms.get(state.current);
  $("notice").hidden = !(r && r.notice);
  $("notice").textContent = r ? r.notice : "";
}

function enableComposer(on) {
  $("send-body").disabled = !on;
  $("send-button").disabled = !on;
}

// ---- actions --------------------------------------------------------------

function joinRoom(name) {
  room(name);
  send({ type: "join", room: name, since: state.rooms.get(name).lastSeq });
  switchRoom(name);
  saveRooms();
}

function leaveRoom(name) {
  send({ type: "leave", room: name });
  state.rooms.delete(name);
  if (state.current === name) state.current = state.rooms.keys().next().value || null;
  saveRooms();
  switchRoom(state.current);
}

function switchRoom(name) {
  state.current = name;
  const r = name && state.rooms.get(name);
  if (r) r.unread = 0;
  $("room-title").textContent = name ? `# ${name}` : "No room";
  enableComposer(Boolean(name && state.ws && state.ws.readyState === WebSocket.OPEN));
  renderRooms();
  renderMessages();
  renderMembers();
  renderTyping();
  renderNotice();
  if (name) $("send-body").focus();
}

function saveRooms() {
  store.setItem("realchat.rooms", JSON.stringify([...state.rooms.keys()]));
}

function sendMessage() {
  const input = $("send-body");
  const body = input.value.trim();
  if (!body || !state.current) return;
  const clientId = crypto.randomUUID();
  state.pending.set(clientId, { room: state.current, body, failed: false });
  send({ type: "send", room: state.current, client_id: clientId, body });
  input.value = "";
  renderMessages();
}

let lastTyping = 0;
function typing() {
  const now = Date.now();
  if (state.current && now - lastTyping > 2000) {
    lastTyping = now;
    send({ type: "typing", room: state.current });
  }
}

function showLogin() {
  $("login-name").value = store.getItem("realchat.name") || "";
  $("login-token").value = store.getItem("realchat.token") || "";
  if (!$("login").open) $("login").showModal();
}

// ---- wiring ---------------------------------------------------------------

$("login-form").addEventListener("submit", () => {
  const name = $("login-name").value.trim();
  const token = $("login-token").value.trim();
  if (name) store.setItem("realchat.name", name); else store.removeItem("realchat.name");
  if (token) store.setItem("realchat.token", token); else store.removeItem("realchat.token");
  $("login-error").textContent = "";
  if (state.ws) state.ws.close();
  connect();
});

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("join-room").value.trim();
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(name)) { toast("Room names are 1–64 letters, digits or _ . : -"); return; }
  $("join-room").value = "";
  joinRoom(name);
});

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 40 && state.current) loadOlder(state.current);
});

$("send-form").addEventListener("submit", (event) => { event.preventDefault(); sendMessage(); });
$("send-body").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); sendMessage(); } else { typing(); }
});

for (const name of JSON.parse(store.getItem("realchat.rooms") || "[]")) room(name);
if (state.rooms.size === 0) room("lobby");
state.current = state.rooms.keys().next().value;

if (store.getItem("realchat.name") || store.getItem("realchat.token")) {
  connect();
  switchRoom(state.current);
} else {
  switchRoom(state.current);
  showLogin();
}
