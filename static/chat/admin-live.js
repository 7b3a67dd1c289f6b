// Admin "Live turns": every running turn, updated in place (text, actions, elapsed time),
// with a Cancel button. The staff socket (/ws/staff/live/) pushes starts, ends and the new
// text once a second; while it is down the page polls the JSON endpoint once a second and
// opens the socket again with backoff.

import { requestJson } from "./api.js";
import { el } from "./dom.js";
import { formatDuration, formatValue } from "./format.js";
import { applyCards, applyProgress, fromTurns, ordered, pruned } from "./live-state.js";

const POLL_MS = 1000;
const MAX_POLL_MS = 15000; // the longest wait between polls while the server cannot be reached
const MAX_RECONNECT_MS = 30000; // the longest wait before opening the socket again
const TICK_MS = 250; // elapsed times tick between updates
const STICK_DISTANCE_PX = 24; // a turn's text follows new words when scrolled this close to its end

const root = document.getElementById("live-turns");
const list = document.getElementById("live-list");
const summary = document.getElementById("live-summary");
const dot = document.getElementById("live-dot");
const canCancel = root?.dataset.canCancel === "1";

const recentSeconds = Number(root?.dataset.recentSeconds || 120);

const cards = new Map(); // message id -> the card's nodes
let clockOffset = 0; // server time minus browser time
let state = fromTurns(JSON.parse(document.getElementById("live-initial")?.textContent || "[]"));
let turns = []; // the cards shown, in page order
let failures = 0;
let socket = null;
let socketUp = false;
let reconnects = 0;
let polling = false;
let resyncing = false;

const cancelUrl = (id) => root.dataset.cancelUrl.replace(/\/0\/cancel\/$/, `/${id}/cancel/`);

/** Seconds the turn has run: ticking on the server's clock while it runs. */
function elapsed(turn) {
  if (!turn.running) return turn.elapsed_seconds;
  return Math.max(0, (Date.now() + clockOffset - Date.parse(turn.started_at)) / 1000);
}

/** "label <b>value</b>"; the bold part is updated later. */
function field(label, testid) {
  const span = el("span", "chat-field");
  const value = el("b", "", testid ? { "data-testid": testid } : {});
  span.append(`${label} `, value);
  return { span, value };
}

/** A turn's card: a head of fields and a Cancel button, the question, the text, the actions. */
function createCard() {
  const node = el("article", "chat-turn", { "data-testid": "live-turn" });
  const head = el("div", "chat-turn-head");
  const status = el("span", "chat-badge", { "data-testid": "live-status" });
  const user = field("user", "live-user");
  const threadLink = el("a", "", { "data-testid": "live-thread" });
  const thread = el("span", "chat-field");
  thread.append("thread ", threadLink);
  const turnCode = el("code", "", { "data-testid": "live-turn-id" });
  const turnId = el("span", "chat-field");
  turnId.append("turn ", turnCode);
  const model = field("model");
  const time = field("elapsed", "live-elapsed");
  const length = field("text", "live-length");
  const tokens = field("tokens", "live-tokens");
  const messageLink = el("a", "", { text: "details" });
  head.append(status, user.span, thread, turnId, model.span, time.span, length.span, tokens.span, el("span", "chat-spacer"), messageLink);
  let cancel = null;
  if (canCancel) {
    cancel = el("button", "button chat-cancel", { type: "button", text: "Cancel turn", "data-testid": "live-cancel" });
    cancel.addEventListener("click", () => cancelTurn(Number(node.dataset.messageId), cancel));
    head.append(cancel);
  }
  const question = el("p", "chat-turn-question");
  const text = el("pre", "chat-pre chat-pre-text chat-turn-text", { "data-testid": "live-text" });
  const actions = el("ul", "chat-turn-actions", { "data-testid": "live-actions" });
  node.append(head, question, text, actions);
  return { node, status, user, threadLink, turnCode, time, length, tokens, model, messageLink, cancel, question, text, actions };
}

function tokensText(turn) {
  if (turn.usage) return `${turn.usage.total_tokens} (${turn.usage.prompt_tokens} + ${turn.usage.completion_tokens})`;
  return turn.running ? `counting… (≈${turn.words} words so far)` : "-";
}

function updateCard(card, turn) {
  const { node } = card;
  node.dataset.messageId = String(turn.message_id);
  node.dataset.turnId = turn.turn_id;
  node.dataset.status = turn.status;
  node.classList.toggle("running", turn.running);
  node.classList.toggle("finished", !turn.running);
  card.status.className = `chat-badge chat-badge-${turn.status}`;
  card.status.textContent = turn.cancel_requested && turn.running ? "cancelling" : turn.status;
  card.user.value.textContent = turn.user;
  card.threadLink.textContent = `#${turn.thread_id}${turn.thread_title ? ` ${turn.thread_title}` : ""}`;
  card.threadLink.href = `../../thread/${turn.thread_id}/change/`;
  card.turnCode.textContent = turn.turn_id;
  card.model.value.textContent = [turn.agent, turn.model].filter(Boolean).join(" / ") || "?";
  card.time.value.textContent = formatDuration(elapsed(turn) * 1000);
  card.length.value.textContent = `${turn.length} chars`;
  card.tokens.value.textContent = tokensText(turn);
  card.messageLink.href = `../${turn.message_id}/change/`;
  if (card.cancel) {
    card.cancel.hidden = !turn.running;
    if (!turn.running) card.cancel.disabled = false;
  }
  card.question.textContent = turn.question ? `Q: ${turn.question}` : "";
  updateText(card.text, (turn.truncated ? "…" : "") + turn.text);
  updateActions(card, turn.actions);
}

/** New text; the box keeps following the end if the reader had not scrolled up. */
function updateText(box, text) {
  if (box.textContent === text) return;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < STICK_DISTANCE_PX;
  box.textContent = text;
  if (atBottom) box.scrollTop = box.scrollHeight;
}

/** The list of tool calls, redrawn only when an action or its status changed. */
function updateActions(card, actions) {
  const key = JSON.stringify(actions.map((a) => [a.id, a.status]));
  if (card.actionKey === key) return;
  card.actionKey = key;
  card.actions.replaceChildren(...actions.map(actionItem));
}

function actionItem(action) {
  const item = el("li", "", { "data-testid": "live-action", "data-status": action.status });
  const badge = el("span", `chat-badge chat-badge-${action.status}`, { text: action.status });
  item.append(badge, el("b", "", { text: action.tool }), el("code", "", { text: formatValue(action.input, 0) }));
  if (action.status !== "pending") item.append(" → ", el("code", "", { text: formatValue(action.output, 0) }));
  if (action.duration_ms != null) item.append(el("span", "chat-quiet", { text: `${action.duration_ms} ms` }));
  return item;
}

const serverNow = () => Date.now() + clockOffset;

function render() {
  turns = ordered(state, serverNow(), recentSeconds);
  const running = turns.filter((t) => t.running).length;
  summary.textContent =
    `${running} running turn${running === 1 ? "" : "s"}` +
    (turns.length > running ? `, ${turns.length - running} finished recently` : "");
  const seen = new Set();
  turns.forEach((turn, index) => {
    seen.add(turn.message_id);
    let card = cards.get(turn.message_id);
    if (!card) {
      card = createCard();
      cards.set(turn.message_id, card);
    }
    updateCard(card, turn);
    if (list.children[index] !== card.node) list.insertBefore(card.node, list.children[index] || null);
  });
  for (const [id, card] of cards) {
    if (seen.has(id)) continue;
    card.node.remove();
    cards.delete(id);
  }
  renderEmpty();
}

function renderEmpty() {
  let empty = list.querySelector(".chat-empty");
  if (!turns.length && !empty) {
    empty = el("div", "chat-empty", { text: "No turn is running right now.", "data-testid": "live-empty" });
    list.append(empty);
  } else if (turns.length && empty) {
    empty.remove();
  }
}

function setMode(mode) {
  root.dataset.mode = mode;
  dot.classList.toggle("stale", mode === "offline");
  dot.classList.toggle("polling", mode === "polling");
  note.textContent =
    mode === "socket"
      ? "Live: starts and ends as they happen, text every second."
      : "Live updates are unavailable; reading every second.";
}

/** Read every card from the data endpoint; the answer replaces the page's state. */
async function readAll() {
  const data = await requestJson("GET", root.dataset.dataUrl);
  clockOffset = Date.parse(data.now) - Date.now();
  state = fromTurns(data.turns);
  render();
}

/** Poll once a second while the socket is down, backing off while the server cannot be reached. */
async function poll() {
  if (socketUp) {
    polling = false;
    return;
  }
  polling = true;
  try {
    await readAll();
    failures = 0;
    setMode("polling");
  } catch {
    failures += 1;
    setMode("offline");
    summary.textContent = "Cannot reach the server; retrying…";
  }
  setTimeout(poll, Math.min(POLL_MS * 2 ** Math.min(failures, 4), MAX_POLL_MS));
}

function startPolling() {
  if (!polling) poll();
}

/** A piece that cannot be placed (a lost start or piece): read everything once. */
async function resync() {
  if (resyncing) return;
  resyncing = true;
  try {
    await readAll();
  } catch {
    // The next push or poll catches up.
  } finally {
    resyncing = false;
  }
}

function onFrame(frame) {
  if (frame.now) clockOffset = Date.parse(frame.now) - Date.now();
  if (frame.type === "live_snapshot") {
    state = fromTurns(frame.turns);
  } else if (frame.type === "live_update") {
    state = applyCards(state, frame.turns);
    const result = applyProgress(state, frame.progress);
    state = pruned(result.state, serverNow(), recentSeconds);
    if (result.stale) resync();
  } else {
    return;
  }
  render();
}

/** Open the staff socket; when it closes, poll and open it again with backoff. */
function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}${root.dataset.socketPath}`);
  socket.addEventListener("message", (event) => {
    if (!socketUp) {
      socketUp = true;
      reconnects = 0;
      setMode("socket");
    }
    onFrame(JSON.parse(event.data));
  });
  socket.addEventListener("close", () => {
    socket = null;
    socketUp = false;
    startPolling();
    reconnects += 1;
    setTimeout(connect, Math.min(POLL_MS * 2 ** Math.min(reconnects, 5), MAX_RECONNECT_MS));
  });
}

/** Ask the server to cancel the turn; an answer other than "cancelled" means it no longer runs. */
async function cancelTurn(messageId, button) {
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    const data = await requestJson("POST", cancelUrl(messageId));
    if (!data?.cancelled) button.textContent = "Not running";
  } catch (error) {
    if (error.status) {
      button.textContent = "Not running";
      return;
    }
    button.disabled = false;
    button.textContent = "Cancel turn";
  }
}

function tick() {
  if (turns.some((t) => !t.running && serverNow() - Date.parse(t.updated_at) > recentSeconds * 1000)) render();
  for (const turn of turns) {
    const card = cards.get(turn.message_id);
    if (card && turn.running) card.time.value.textContent = formatDuration(elapsed(turn) * 1000);
  }
}

const note = root ? root.querySelector("[data-testid=live-mode]") : null;

if (root) {
  setInterval(tick, TICK_MS);
  render();
  connect();
}
