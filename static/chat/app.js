// The chat page: thread list, the open thread's messages over its WebSocket,
// and the composer. The server's snapshot is the truth after every (re)connect;
// live events are applied on top of it exactly once.

import { api } from "./api.js";
import { copyText } from "./markdown.js";
import { cpLen, cpSliceFrom, threadTitle } from "./format.js";
import { Sidebar } from "./sidebar.js";
import { ThreadSocket } from "./socket.js";
import { MessageView } from "./views.js";

const MAX_FRAME_BYTES = 8192;
const STICK_DISTANCE_PX = 48;

const $ = (id) => document.getElementById(id);
const dom = {
  app: $("app"),
  messages: $("messages"),
  scroller: $("scroller"),
  welcome: $("welcome"),
  missing: $("thread-missing"),
  title: $("thread-title"),
  conn: $("conn"),
  form: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  jump: $("jump-bottom"),
  toasts: $("toasts"),
  dialog: $("confirm-dialog"),
  newChat: $("new-chat"),
  backdrop: $("sidebar-backdrop"),
};

const state = {
  threadId: null,
  messages: [], // ordered by seq; optimistic user messages (local) last
  hasEarlier: false,
  activeTurn: null, // {turn_id, message_id}
  thinking: new Map(), // message id -> latest agent_thinking text
  pending: new Map(), // turn_id -> {content, frame, autoTitle}: sent, not yet acknowledged by user_message
  socket: null,
  ready: null, // {promise, resolve}: resolved by the next snapshot
  openCards: new Set(),
  stick: true,
};

const views = new Map(); // message id -> MessageView
const dirty = new Set();
let renderQueued = false;

// --- helpers -------------------------------------------------------------

function newTurnId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function prepare(message) {
  const content = message.content || "";
  return {
    ...message,
    content,
    len: cpLen(content),
    metadata: message.metadata || {},
    actions: (message.actions || []).map((a) => ({ ...a })),
  };
}

const findMessage = (id) => state.messages.find((m) => m.id === id) || null;

function toast(text, { error = false, timeout = 6000 } = {}) {
  const node = document.createElement("div");
  node.className = `toast${error ? " toast-error" : ""}`;
  node.dataset.testid = "toast";
  node.setAttribute("role", error ? "alert" : "status");
  const span = document.createElement("span");
  span.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.onclick = () => node.remove();
  node.append(span, close);
  dom.toasts.append(node);
  while (dom.toasts.children.length > 3) dom.toasts.firstElementChild.remove();
  if (timeout) setTimeout(() => node.remove(), timeout);
}

function confirmDialog(title, text, okLabel) {
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  dom.dialog.querySelector("[value=ok]").textContent = okLabel;
  return new Promise((resolve) => {
    dom.dialog.addEventListener("close", () => resolve(dom.dialog.returnValue === "ok"), { once: true });
    dom.dialog.returnValue = "";
    dom.dialog.showModal();
  });
}

// --- rendering -----------------------------------------------------------

function markDirty(id) {
  dirty.add(id);
  scheduleRender();
}

function markAllDirty() {
  for (const m of state.messages) dirty.add(m.id);
  dirty.add("*");
  scheduleRender();
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const run = () => {
    if (!renderQueued) return;
    renderQueued = false;
    flush();
  };
  requestAnimationFrame(run);
  setTimeout(run, 100); // hidden tabs get no animation frames
}

const viewContext = {
  openCards: state.openCards,
  isLast: (message) => {
    const last = state.messages.filter((m) => !m.local).at(-1);
    return last !== undefined && last.id === message.id;
  },
};

function flush() {
  const stick = state.stick;
  const structural = dirty.has("*");
  for (const id of dirty) {
    if (id === "*") continue;
    const message = findMessage(id);
    if (!message) continue;
    let view = views.get(id);
    if (!view) {
      view = new MessageView(message, viewContext);
      views.set(id, view);
    }
    view.update(message, state.thinking.get(id));
  }
  dirty.clear();
  if (structural) {
    const wanted = new Set(state.messages.map((m) => m.id));
    for (const [id, view] of views) {
      if (!wanted.has(id)) {
        view.root.remove();
        views.delete(id);
      }
    }
    const nodes = [];
    if (state.hasEarlier) nodes.push(loadEarlierButton());
    for (const m of state.messages) nodes.push(views.get(m.id).root);
    nodes.forEach((node, index) => {
      if (dom.messages.children[index] !== node) dom.messages.insertBefore(node, dom.messages.children[index] || null);
    });
    while (dom.messages.children.length > nodes.length) dom.messages.lastElementChild.remove();
  }
  const empty = state.messages.length === 0 && (state.threadId === null || state.socket?.state === "connected");
  dom.welcome.hidden = !empty || !dom.missing.hidden;
  updateComposer();
  if (stick) scrollToBottom();
  updateJumpButton();
}

let earlierButton = null;
function loadEarlierButton() {
  if (!earlierButton) {
    earlierButton = document.createElement("div");
    earlierButton.className = "load-earlier";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-small";
    button.textContent = "Show earlier messages";
    button.dataset.testid = "load-earlier";
    button.onclick = loadEarlier;
    earlierButton.append(button);
  }
  return earlierButton;
}

function scrollToBottom() {
  dom.scroller.scrollTop = dom.scroller.scrollHeight;
}

function distanceFromBottom() {
  const s = dom.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight;
}

function updateJumpButton() {
  dom.jump.hidden = state.stick || distanceFromBottom() < STICK_DISTANCE_PX;
}

function updateComposer() {
  dom.send.disabled = !dom.input.value.trim();
  dom.stop.hidden = !state.activeTurn;
}

const CONN_LABELS = {
  idle: "",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Disconnected",
};

function setConnState(connState) {
  dom.conn.dataset.state = connState;
  dom.conn.querySelector(".conn-label").textContent = CONN_LABELS[connState] ?? connState;
  dom.conn.title = CONN_LABELS[connState] ?? connState;
}

function setTitle() {
  const thread = state.threadId === null ? null : sidebar.get(state.threadId);
  const title = state.threadId === null ? "New chat" : threadTitle(thread);
  dom.title.textContent = title;
  document.title = state.threadId === null ? "Chat" : `${title} · Chat`;
}

// --- socket frames -------------------------------------------------------

function onFrame(frame) {
  if (frame.thread_id !== undefined && frame.thread_id !== state.threadId) return;
  const data = frame.data || {};
  switch (frame.type) {
    case "snapshot":
      return applySnapshot(frame);
    case "user_message":
      return onUserMessage(data.message || frame.message);
    case "agent_started":
      return onAgentStarted(frame, data);
    case "agent_thinking":
      state.thinking.set(frame.message_id, data.text || "");
      return markDirty(frame.message_id);
    case "message_delta":
      return onDelta(frame, data);
    case "tool_executing":
      return onToolExecuting(frame, data);
    case "tool_completed":
      return onToolCompleted(frame, data);
    case "agent_completed":
      return onAgentCompleted(frame, data);
    case "error":
      return onErrorFrame(frame);
    default:
      return undefined; // events this page does not know are ignored, as the protocol allows
  }
}

function applySnapshot(frame) {
  const incoming = (frame.messages || []).map(prepare);
  const firstSeq = incoming.length ? incoming[0].seq : Infinity;
  // Messages loaded with "show earlier" stay; everything the snapshot covers is replaced.
  const earlier = state.messages.filter((m) => !m.local && m.seq < firstSeq);
  state.hasEarlier = (earlier.length ? earlier[0].seq : firstSeq) > 1 && firstSeq !== Infinity;
  const acknowledged = new Set(incoming.filter((m) => m.role === "user").map((m) => m.turn_id));
  const stillPending = [];
  for (const [turnId, entry] of state.pending) {
    if (acknowledged.has(turnId)) state.pending.delete(turnId);
    else stillPending.push([turnId, entry]);
  }
  state.messages = [...earlier, ...incoming];
  state.activeTurn = frame.active_turn || null;
  for (const id of [...state.thinking.keys()]) {
    if (findMessage(id)?.status !== "streaming") state.thinking.delete(id);
  }
  // A message sent just before the connection dropped may not have reached the
  // server: send it again with the same turn_id, which the server stores once.
  for (const [turnId, entry] of stillPending) {
    state.messages.push(optimisticMessage(turnId, entry.content));
    state.socket.send(entry.frame);
  }
  markAllDirty();
  state.ready?.resolve(true);
  state.ready = null;
}

function optimisticMessage(turnId, content) {
  return {
    id: `local-${turnId}`,
    local: true,
    seq: Infinity,
    role: "user",
    turn_id: turnId,
    status: "sending",
    content,
    len: cpLen(content),
    metadata: {},
    actions: [],
  };
}

function insertBySeq(message) {
  const locals = state.messages.filter((m) => m.local);
  const stored = state.messages.filter((m) => !m.local);
  let index = stored.length;
  while (index > 0 && stored[index - 1].seq > message.seq) index -= 1;
  stored.splice(index, 0, message);
  state.messages = [...stored, ...locals];
  dirty.add("*");
}

function onUserMessage(raw) {
  if (!raw) return;
  const message = prepare(raw);
  const localId = `local-${message.turn_id}`;
  const hadLocal = state.messages.some((m) => m.id === localId);
  state.messages = state.messages.filter((m) => m.id !== localId);
  const entry = state.pending.get(message.turn_id);
  state.pending.delete(message.turn_id);
  if (!findMessage(message.id)) insertBySeq(message);
  if (hadLocal) dirty.add("*");
  markDirty(message.id);
  sidebar.touch(state.threadId, message.created_at);
  if (entry?.autoTitle) autoTitle(state.threadId, message.content);
}

function ensureAssistant(frame, data = {}) {
  let message = findMessage(frame.message_id);
  if (!message) {
    const stored = state.messages.filter((m) => !m.local);
    const user = stored.find((m) => m.role === "user" && m.turn_id === frame.turn_id);
    message = prepare({
      id: frame.message_id,
      seq: (user ? user.seq : stored.at(-1)?.seq ?? 0) + 1,
      role: "assistant",
      turn_id: frame.turn_id,
      status: "streaming",
      content: "",
      metadata: { streaming: true, agent: data.agent, model: data.model },
      actions: [],
      usage: null,
    });
    insertBySeq(message);
  }
  return message;
}

function onAgentStarted(frame, data) {
  ensureAssistant(frame, data);
  state.activeTurn = { turn_id: frame.turn_id, message_id: frame.message_id };
  markDirty(frame.message_id);
}

function onDelta(frame, data) {
  let message = findMessage(frame.message_id);
  if (!message) {
    if (data.offset !== 0) return resync();
    message = ensureAssistant(frame);
  }
  const delta = data.delta || "";
  const offset = data.offset;
  if (typeof offset !== "number" || offset > message.len) return resync(); // a gap: never guess
  const end = offset + cpLen(delta);
  if (end <= message.len) return undefined; // already have all of it
  message.content += cpSliceFrom(delta, message.len - offset);
  message.len = end;
  state.thinking.delete(message.id);
  markDirty(message.id);
  return undefined;
}

function onToolExecuting(frame, data) {
  const message = ensureAssistant(frame);
  state.thinking.delete(message.id);
  let action = message.actions.find((a) => a.id === data.action_id);
  if (!action) {
    action = {
      id: data.action_id,
      call_id: data.call_id,
      tool: data.tool,
      input: data.input,
      output: null,
      status: "pending",
      position: data.position ?? message.len,
      started_at: new Date().toISOString(),
      finished_at: null,
    };
    message.actions.push(action);
  }
  markDirty(message.id);
}

function onToolCompleted(frame, data) {
  const message = ensureAssistant(frame);
  let action = message.actions.find((a) => a.id === data.action_id);
  if (!action) {
    action = { id: data.action_id, call_id: data.call_id, tool: data.tool, input: data.input, position: message.len };
    message.actions.push(action);
  }
  Object.assign(action, {
    status: data.status,
    output: data.output,
    duration_ms: data.duration_ms,
    finished_at: new Date().toISOString(),
  });
  markDirty(message.id);
}

function onAgentCompleted(frame, data) {
  const message = ensureAssistant(frame);
  message.status = data.status;
  message.usage = data.usage || message.usage || null;
  message.metadata = {
    ...message.metadata,
    streaming: false,
    cancelled: data.status === "cancelled",
    has_error: data.status === "failed" || data.status === "interrupted",
  };
  if (data.error) message.metadata.error = data.error;
  if (!message.content) {
    message.content = "(no text response)";
    message.len = cpLen(message.content);
  }
  for (const action of message.actions) {
    if (action.status === "pending") action.status = "error";
  }
  state.thinking.delete(message.id);
  if (state.activeTurn?.turn_id === frame.turn_id) state.activeTurn = null;
  // The Retry button belongs to the newest answer only.
  markAllDirty();
}

function onErrorFrame(frame) {
  const entry = frame.turn_id ? state.pending.get(frame.turn_id) : null;
  if (entry) {
    state.pending.delete(frame.turn_id);
    state.messages = state.messages.filter((m) => m.id !== `local-${frame.turn_id}`);
    dirty.add("*");
    scheduleRender();
    if (entry.fromComposer && !dom.input.value.trim()) {
      dom.input.value = entry.content;
      autosize();
    }
  }
  if (frame.code === "turn_not_found") return; // a Stop that arrived after the turn ended
  toast(errorText(frame), { error: true });
}

function errorText(frame) {
  switch (frame.code) {
    case "rate_limited": {
      const wait = Math.ceil(Number(frame.retry_after) || 0);
      return `You are sending messages too quickly. Try again${wait ? ` in ${wait} s` : " shortly"}.`;
    }
    case "message_too_large":
      return "That message is too long to send.";
    case "invalid_message":
      return `The message was refused: ${frame.message || "invalid message"}.`;
    default:
      return frame.message || "Something went wrong.";
  }
}

let resyncing = false;
function resync() {
  // The page missed something it cannot rebuild from the events: take a fresh snapshot.
  if (resyncing || !state.socket) return;
  resyncing = true;
  state.socket.restart();
  setTimeout(() => {
    resyncing = false;
  }, 1000);
}

// --- threads and navigation ------------------------------------------------

const sidebar = new Sidebar($("thread-list"), {
  onOpen: (id) => navigate(id),
  onRename: (id, title) => renameThread(id, title),
  onDelete: (id) => deleteThread(id),
});

async function loadThreads() {
  try {
    const data = await api.listThreads();
    sidebar.setThreads(data.threads || []);
    sidebar.setActive(state.threadId);
    setTitle();
  } catch (error) {
    toast(`Could not load your chats: ${error.message}`, { error: true });
  }
}

function threadIdFromPath() {
  const match = location.pathname.match(/^\/threads\/(\d+)\/?$/);
  return match ? Number(match[1]) : null;
}

function navigate(id, { replace = false } = {}) {
  const url = id === null ? "/" : `/threads/${id}/`;
  if (location.pathname !== url) {
    if (replace) history.replaceState({ threadId: id }, "", url);
    else history.pushState({ threadId: id }, "", url);
  }
  openThread(id);
  closeSidebar();
}

function openThread(id) {
  if (state.socket) state.socket.stop();
  state.socket = null;
  state.threadId = id;
  state.messages = [];
  state.hasEarlier = false;
  state.activeTurn = null;
  state.thinking.clear();
  state.pending.clear();
  state.stick = true;
  dom.missing.hidden = true;
  dom.form.closest(".composer-wrap").hidden = false;
  for (const view of views.values()) view.root.remove();
  views.clear();
  sidebar.setActive(id);
  setTitle();
  setConnState("idle");
  if (id !== null) {
    state.ready = deferred();
    const socket = new ThreadSocket(id, {
      onFrame,
      onState: (connState) => {
        setConnState(connState);
        scheduleRender();
      },
      onFatal: (code) => onFatalClose(code),
    });
    state.socket = socket;
    socket.start();
  }
  markAllDirty();
  if (window.matchMedia("(pointer: fine)").matches) dom.input.focus({ preventScroll: true });
}

function onFatalClose(code) {
  state.ready?.resolve(false);
  state.ready = null;
  if (code === 4401) {
    window.location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
    return;
  }
  dom.missing.hidden = false;
  dom.welcome.hidden = true;
  dom.form.closest(".composer-wrap").hidden = true;
  dom.title.textContent = "Conversation not found";
  setConnState("idle");
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function newChat() {
  try {
    const thread = await api.createThread();
    sidebar.upsert(thread);
    navigate(thread.id);
  } catch (error) {
    toast(`Could not start a new chat: ${error.message}`, { error: true });
  }
}

async function renameThread(id, title) {
  const thread = sidebar.get(id);
  const previous = thread?.title;
  if (thread) sidebar.upsert({ ...thread, title });
  setTitle();
  try {
    const saved = await api.renameThread(id, title);
    if (saved) sidebar.upsert(saved);
  } catch (error) {
    if (thread) sidebar.upsert({ ...thread, title: previous });
    toast(`Could not rename the chat: ${error.message}`, { error: true });
  }
  setTitle();
}

async function deleteThread(id) {
  const thread = sidebar.get(id);
  const ok = await confirmDialog(
    "Delete chat?",
    `“${threadTitle(thread)}” and all its messages will be deleted. This cannot be undone.`,
    "Delete",
  );
  if (!ok) return;
  try {
    await api.deleteThread(id);
  } catch (error) {
    if (error.status !== 404) {
      toast(`Could not delete the chat: ${error.message}`, { error: true });
      return;
    }
  }
  sidebar.remove(id);
  if (state.threadId === id) navigate(null);
}

async function autoTitle(id, content) {
  const thread = sidebar.get(id);
  if (!thread || (thread.title || "").trim()) return;
  await renameThread(id, titleFrom(content));
}

function titleFrom(content) {
  const line = content.trim().split("\n")[0].trim();
  return line.length > 60 ? `${line.slice(0, 57).trimEnd()}…` : line || "New chat";
}

async function loadEarlier() {
  if (state.threadId === null) return;
  const threadId = state.threadId;
  try {
    const thread = await api.getThread(threadId);
    if (state.threadId !== threadId) return;
    const stored = state.messages.filter((m) => !m.local);
    const firstSeq = stored.length ? stored[0].seq : Infinity;
    const older = (thread.messages || []).filter((m) => m.seq < firstSeq).map(prepare);
    const keepTop = dom.scroller.scrollHeight - dom.scroller.scrollTop;
    state.messages = [...older, ...state.messages];
    state.hasEarlier = false;
    state.stick = false;
    markAllDirty();
    flush();
    dom.scroller.scrollTop = dom.scroller.scrollHeight - keepTop;
  } catch (error) {
    toast(`Could not load earlier messages: ${error.message}`, { error: true });
  }
}

// --- sending ---------------------------------------------------------------

async function sendMessage(content, { fromComposer = false } = {}) {
  if (!content.trim()) return false;
  let autoTitleNeeded = false;
  if (state.threadId === null) {
    try {
      const thread = await api.createThread(titleFrom(content));
      sidebar.upsert(thread);
      navigate(thread.id);
    } catch (error) {
      toast(`Could not start a new chat: ${error.message}`, { error: true });
      return false;
    }
  } else {
    autoTitleNeeded = !(sidebar.get(state.threadId)?.title || "").trim();
  }
  if (state.socket?.state !== "connected" && state.ready) {
    // Opening a chat: wait briefly for its first snapshot.
    await Promise.race([state.ready.promise, new Promise((r) => setTimeout(r, 5000))]);
  }
  const turnId = newTurnId();
  const frame = { type: "user_message", content, turn_id: turnId };
  if (new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
    toast("That message is too long to send. Shorten it and try again.", { error: true });
    return false;
  }
  if (!state.socket || state.socket.state !== "connected" || !state.socket.send(frame)) {
    toast("Not connected, so the message was not sent. It is still in the box: send it again when the connection is back.", {
      error: true,
    });
    return false;
  }
  state.pending.set(turnId, { content, frame, fromComposer, autoTitle: autoTitleNeeded });
  state.messages.push(optimisticMessage(turnId, content));
  state.stick = true;
  markAllDirty();
  return true;
}

async function submitComposer() {
  const content = dom.input.value;
  if (!content.trim()) return;
  dom.send.disabled = true;
  const sent = await sendMessage(content, { fromComposer: true });
  if (sent && dom.input.value === content) {
    dom.input.value = "";
    autosize();
  }
  updateComposer();
}

function stopTurn() {
  const turn = state.activeTurn;
  if (!turn) return;
  if (!state.socket?.send({ type: "cancel", turn_id: turn.turn_id })) {
    toast("Not connected: the answer could not be stopped. Try again when the connection is back.", { error: true });
  }
}

function retry(messageId) {
  const assistant = findMessage(messageId);
  if (!assistant) return;
  const user = state.messages.find((m) => m.role === "user" && m.turn_id === assistant.turn_id);
  if (!user) {
    toast("The question of this answer is not loaded, so it cannot be retried.", { error: true });
    return;
  }
  sendMessage(user.content);
}

function autosize() {
  dom.input.style.height = "auto";
  dom.input.style.height = `${Math.min(dom.input.scrollHeight, window.innerHeight * 0.4)}px`;
  updateComposer();
}

// --- sidebar drawer (phone width) ---------------------------------------------

function openSidebar() {
  dom.app.classList.add("sidebar-visible");
  dom.backdrop.hidden = false;
}

function closeSidebar() {
  dom.app.classList.remove("sidebar-visible");
  dom.backdrop.hidden = true;
}

// --- wiring ------------------------------------------------------------------

dom.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submitComposer();
});
dom.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    submitComposer();
  }
});
dom.input.addEventListener("input", autosize);
dom.stop.addEventListener("click", stopTurn);
dom.newChat.addEventListener("click", newChat);
$("sidebar-open").addEventListener("click", openSidebar);
$("sidebar-close").addEventListener("click", closeSidebar);
dom.backdrop.addEventListener("click", closeSidebar);
dom.jump.addEventListener("click", () => {
  state.stick = true;
  dom.scroller.scrollTo({ top: dom.scroller.scrollHeight, behavior: "smooth" });
  updateJumpButton();
});
dom.scroller.addEventListener(
  "scroll",
  () => {
    state.stick = distanceFromBottom() < STICK_DISTANCE_PX;
    updateJumpButton();
  },
  { passive: true },
);
for (const button of document.querySelectorAll(".suggestion")) {
  button.addEventListener("click", () => {
    dom.input.value = button.dataset.prompt;
    autosize();
    submitComposer();
  });
}
dom.messages.addEventListener("click", async (event) => {
  const target = event.target.closest("[data-action]");
  if (!target) return;
  const article = target.closest("[data-message-id]");
  const message = article ? findMessage(article.dataset.messageId) ?? findMessage(Number(article.dataset.messageId)) : null;
  if (target.dataset.action === "copy-code") {
    const code = target.closest(".code-block")?.querySelector("pre")?.textContent ?? "";
    flashCopied(target, await copyText(code));
  } else if (target.dataset.action === "copy-answer" && message) {
    flashCopied(target, await copyText(message.content));
  } else if (target.dataset.action === "retry" && message) {
    retry(message.id);
  }
});

function flashCopied(button, ok) {
  const label = button.querySelector("span");
  if (label) {
    label.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      label.textContent = "Copy";
    }, 1500);
  } else {
    button.title = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.title = "Copy answer";
    }, 1500);
  }
}

window.addEventListener("popstate", () => openThread(threadIdFromPath()));
window.addEventListener("focus", () => loadThreads());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeSidebar();
});

const initial = dom.app.dataset.threadId ? Number(dom.app.dataset.threadId) : threadIdFromPath();
history.replaceState({ threadId: initial }, "", location.pathname);
openThread(initial);
loadThreads();
dom.app.dataset.ready = "true"; // the page's handlers are in place (tests wait for this)
