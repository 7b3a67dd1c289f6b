// The open thread's state and every change the page makes to it, as pure functions
// (a new state each time, no DOM). The snapshot is the truth after every (re)connect;
// later frames apply on top of it exactly once (docs/protocol.md, "Exactly once on resume").

import { cpLen, cpSliceFrom } from "./format.js";

/** The state of a thread just opened (`null`: the empty "new chat" page). */
export function openThread(threadId = null) {
  return {
    threadId,
    messages: [], // stored messages in seq order, then optimistic (local) user messages
    hasEarlier: false, // the thread has older messages than the first one held
    activeTurn: null, // {turn_id, message_id} of the running turn
    thinking: {}, // message id -> latest agent_thinking text, while that message streams
    pending: {}, // turn_id -> {content, fromComposer, autoTitle}: sent, not yet stored
    connection: "idle", // the socket's state, as ThreadSocket names it
    notFound: false, // the server refused the thread (close code 4404)
    outOfSync: false, // a frame left a gap that only a fresh snapshot can fill
  };
}

// --- messages --------------------------------------------------------------

/** A message of a snapshot or of the HTTP API, as the page holds it. */
export function storedMessage(raw) {
  const { metadata, ...fields } = raw;
  const content = raw.content || "";
  return {
    ...fields,
    content,
    length: cpLen(content),
    actions: raw.actions || [],
    usage: raw.usage ?? null,
    error: metadata?.error ?? null,
  };
}

/** A message made on the page, before the server sent it: the fields every message has. */
function newMessage(fields) {
  return { content: "", length: 0, actions: [], usage: null, error: null, ...fields };
}

/** A user message shown at once, before the server has stored it. */
export function optimisticMessage(turnId, content) {
  const fields = { id: localId(turnId), local: true, seq: Infinity, role: "user", turn_id: turnId, status: "sending" };
  return newMessage({ ...fields, content, length: cpLen(content) });
}

const localId = (turnId) => `local-${turnId}`;

/** The message with this id; `id` may be the string of a DOM data attribute. */
export function findMessage(state, id) {
  return state.messages.find((m) => String(m.id) === String(id)) || null;
}

/** The pending entry of a turn sent from this page, or null. */
export function pendingEntry(state, turnId) {
  return turnId != null && Object.hasOwn(state.pending, turnId) ? state.pending[turnId] : null;
}

/** The newest stored message: the only answer that offers Retry. */
export function newestStored(state) {
  return state.messages.filter((m) => !m.local).at(-1) ?? null;
}

/** The user message `answer` replies to (the same turn), or null when it is not loaded. */
export function questionOf(state, answer) {
  return state.messages.find((m) => m.role === "user" && m.turn_id === answer.turn_id) || null;
}

/** `messages` with `message` placed by seq among the stored ones; optimistic ones stay last. */
function insertBySeq(messages, message) {
  const stored = messages.filter((m) => !m.local);
  const local = messages.filter((m) => m.local);
  let index = stored.length;
  while (index > 0 && stored[index - 1].seq > message.seq) index -= 1;
  return [...stored.slice(0, index), message, ...stored.slice(index), ...local];
}

/** `object` without the given keys. */
function omit(object, keys) {
  const drop = new Set(keys.map(String));
  return Object.fromEntries(Object.entries(object).filter(([key]) => !drop.has(key)));
}

// --- changes the page makes ---------------------------------------------------

/** The state after sending a user message: shown as "sending", pending until stored. */
export function addPendingMessage(state, turnId, content, { fromComposer = false, autoTitle = false, parent } = {}) {
  const entry = { content, fromComposer, autoTitle };
  if (parent !== undefined) entry.parent = parent; // an edit: the answer it follows (null: a new first message)
  return {
    ...state,
    messages: [...state.messages, optimisticMessage(turnId, content)],
    pending: { ...state.pending, [turnId]: entry },
  };
}

/** The state with older messages (from the HTTP API) put before the ones held. */
export function prependEarlier(state, rawMessages) {
  const first = state.messages.find((m) => !m.local);
  const firstSeq = first ? first.seq : Infinity;
  const older = rawMessages.filter((m) => m.seq < firstSeq).map(storedMessage);
  return { ...state, messages: [...older, ...state.messages], hasEarlier: false };
}

export function setConnection(state, connection) {
  return { ...state, connection };
}

/** The state once the server said the thread does not exist or is not the user's. */
export function markNotFound(state) {
  return { ...state, notFound: true, connection: "idle" };
}

// --- frames from the server ------------------------------------------------------

/** The state after one server frame; frames of another thread and unknown types change nothing. */
export function applyFrame(state, frame) {
  if (frame.thread_id !== undefined && frame.thread_id !== state.threadId) return state;
  const apply = FRAME_HANDLERS.get(frame.type);
  return apply ? apply(state, frame, frame.data || {}) : state;
}

/** Replace what the snapshot covers; keep earlier messages loaded with "show earlier". */
function applySnapshot(state, frame) {
  const incoming = (frame.messages || []).map(storedMessage);
  const firstSeq = incoming.length ? incoming[0].seq : Infinity;
  const earlier = earlierOnPath(state.messages.filter((m) => !m.local && m.seq < firstSeq), incoming[0]);
  const stored = [...earlier, ...incoming];
  const acknowledged = incoming.filter((m) => m.role === "user").map((m) => m.turn_id);
  const pending = omit(state.pending, acknowledged);
  // A message sent just before the connection dropped may not have reached the
  // server: it stays "sending" and is sent again (pendingFrames) with its turn_id.
  const resent = Object.entries(pending).map(([turnId, entry]) => optimisticMessage(turnId, entry.content));
  const streaming = stored.filter((m) => m.status === "streaming" && m.id in state.thinking);
  return {
    ...state,
    messages: [...stored, ...resent],
    hasEarlier: hasEarlierThan(stored[0]),
    activeTurn: frame.active_turn || null,
    thinking: Object.fromEntries(streaming.map((m) => [m.id, state.thinking[m.id]])),
    pending,
    outOfSync: false,
  };
}

/** Whether messages come before `first` on its path: it has a parent (a server without versions: its seq is not 1). */
function hasEarlierThan(first) {
  if (!first) return false;
  return first.parent_id !== undefined ? first.parent_id !== null : first.seq > 1;
}

/** The earlier messages held that lead to `first` (the active path may have changed: versions). */
function earlierOnPath(earlier, first) {
  if (!first || first.parent_id === undefined) return earlier;
  const byId = new Map(earlier.map((m) => [m.id, m]));
  const path = [];
  for (let id = first.parent_id; id != null && byId.has(id); id = byId.get(id).parent_id) path.unshift(byId.get(id));
  return path;
}

/** The stored user message replaces its optimistic copy (same turn_id), once.
 *
 * A message that does not follow the last message held (an edit, from this
 * page or another) starts another branch: only a fresh snapshot shows the path.
 */
function applyUserMessage(state, frame, data) {
  const raw = data.message || frame.message;
  if (!raw) return state;
  const message = storedMessage(raw);
  const messages = state.messages.filter((m) => m.id !== localId(message.turn_id));
  const known = messages.some((m) => m.id === message.id);
  const leaf = messages.filter((m) => !m.local).at(-1)?.id ?? null;
  const branched = !known && message.parent_id !== undefined && message.parent_id !== leaf;
  return {
    ...state,
    messages: known || branched ? messages : insertBySeq(messages, message),
    pending: omit(state.pending, [message.turn_id]),
    outOfSync: state.outOfSync || branched,
  };
}

/** The state holding the frame's answer: an empty streaming message after its question if new. */
function withAnswer(state, frame) {
  if (state.messages.some((m) => m.id === frame.message_id)) return state;
  const stored = state.messages.filter((m) => !m.local);
  const question = stored.find((m) => m.role === "user" && m.turn_id === frame.turn_id);
  const seq = (question ? question.seq : stored.at(-1)?.seq ?? 0) + 1;
  // The page's clock until a snapshot brings the stored time (events carry none).
  const created_at = new Date().toISOString();
  const answer = newMessage({ id: frame.message_id, seq, role: "assistant", turn_id: frame.turn_id, status: "streaming", created_at });
  return { ...state, messages: insertBySeq(state.messages, answer) };
}

/** `change` applied to the frame's answer, created first if new. */
function changeAnswer(state, frame, change) {
  const next = withAnswer(state, frame);
  return { ...next, messages: next.messages.map((m) => (m.id === frame.message_id ? change(m) : m)) };
}

/** The answer's thinking line ends: text, a tool call or the end of the turn came. */
function endThinking(state, messageId) {
  return { ...state, thinking: omit(state.thinking, [messageId]) };
}

/** A new answer; one whose question the page does not hold by turn_id is a regenerate: take a fresh snapshot. */
function applyAgentStarted(state, frame) {
  const activeTurn = { turn_id: frame.turn_id, message_id: frame.message_id };
  const known = state.messages.some((m) => m.id === frame.message_id);
  const question = state.messages.some((m) => m.role === "user" && m.turn_id === frame.turn_id);
  if (!known && !question && state.messages.some((m) => !m.local)) return { ...state, activeTurn, outOfSync: true };
  return { ...withAnswer(state, frame), activeTurn };
}

function applyThinking(state, frame, data) {
  return { ...state, thinking: { ...state.thinking, [frame.message_id]: data.text || "" } };
}

/** Append only the part of the delta beyond the content held; a gap marks the state out of sync. */
function applyDelta(state, frame, data) {
  const held = state.messages.find((m) => m.id === frame.message_id);
  const length = held ? held.length : 0;
  const offset = data.offset;
  if (typeof offset !== "number" || offset > length) return { ...state, outOfSync: true }; // never guess
  const delta = data.delta || "";
  const end = offset + cpLen(delta);
  if (end <= length) return held ? state : withAnswer(state, frame); // all of it held already
  const next = changeAnswer(state, frame, (m) => ({ ...m, content: m.content + cpSliceFrom(delta, m.length - offset), length: end }));
  return endThinking(next, frame.message_id);
}

/** A new pending action at the answer's current length; a repeated event changes nothing. */
function applyToolExecuting(state, frame, data) {
  const next = changeAnswer(state, frame, (m) => {
    if (m.actions.some((a) => a.id === data.action_id)) return m;
    const action = {
      id: data.action_id,
      call_id: data.call_id,
      tool: data.tool,
      input: data.input,
      output: null,
      status: "pending",
      position: data.position ?? m.length,
      started_at: null,
      finished_at: null,
    };
    return { ...m, actions: [...m.actions, action] };
  });
  return endThinking(next, frame.message_id);
}

/** The action's result; an action the page never saw start is added with it. */
function applyToolCompleted(state, frame, data) {
  const result = { status: data.status, output: data.output, duration_ms: data.duration_ms };
  return changeAnswer(state, frame, (m) => {
    if (m.actions.some((a) => a.id === data.action_id)) {
      return { ...m, actions: m.actions.map((a) => (a.id === data.action_id ? { ...a, ...result } : a)) };
    }
    const action = { id: data.action_id, call_id: data.call_id, tool: data.tool, input: data.input ?? null, position: m.length };
    return { ...m, actions: [...m.actions, { ...action, ...result }] };
  });
}

/** The final status, usage and error as the server sent them; the turn is no longer active. */
function applyAgentCompleted(state, frame, data) {
  const next = changeAnswer(state, frame, (m) => ({
    ...m,
    status: data.status,
    usage: data.usage || m.usage,
    error: data.error || m.error,
    // The server ends a still pending tool as an error in the database when the
    // turn ends, without a tool_completed event: show what a reload would show.
    actions: m.actions.map((a) => (a.status === "pending" ? { ...a, status: "error" } : a)),
  }));
  const active = next.activeTurn?.turn_id === frame.turn_id ? null : next.activeTurn;
  return { ...endThinking(next, frame.message_id), activeTurn: active };
}

/** A refused user_message leaves the page: its optimistic copy and pending entry go. */
function applyRefusal(state, frame) {
  if (!pendingEntry(state, frame.turn_id)) return state;
  return {
    ...state,
    messages: state.messages.filter((m) => m.id !== localId(frame.turn_id)),
    pending: omit(state.pending, [frame.turn_id]),
  };
}

const FRAME_HANDLERS = new Map([
  ["snapshot", applySnapshot],
  ["user_message", applyUserMessage],
  ["agent_started", applyAgentStarted],
  ["agent_thinking", applyThinking],
  ["message_delta", applyDelta],
  ["tool_executing", applyToolExecuting],
  ["tool_completed", applyToolCompleted],
  ["agent_completed", applyAgentCompleted],
  ["error", applyRefusal],
]);
