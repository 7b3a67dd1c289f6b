// Builders of server frames and messages for the store tests, shaped as docs/protocol.md says.

export const THREAD = 7;

export function userMessage(fields = {}) {
  return {
    id: 10,
    seq: 1,
    role: "user",
    turn_id: "t1",
    status: "completed",
    content: "hello",
    metadata: {},
    actions: [],
    usage: null,
    created_at: "2026-01-01T10:00:00Z",
    ...fields,
  };
}

export function answer(fields = {}) {
  return {
    id: 11,
    seq: 2,
    role: "assistant",
    turn_id: "t1",
    status: "streaming",
    content: "",
    metadata: { streaming: true },
    actions: [],
    usage: null,
    ...fields,
  };
}

export function snapshot(messages = [], activeTurn = null, threadId = THREAD) {
  return { type: "snapshot", thread_id: threadId, messages, active_turn: activeTurn };
}

/** A turn event (agent_started, message_delta ...) of turn t1, answer 11, unless told otherwise. */
export function turnFrame(type, data = {}, { turn = "t1", message = 11 } = {}) {
  return { type, thread_id: THREAD, turn_id: turn, message_id: message, data };
}

export const started = (opts) => turnFrame("agent_started", { agent: "local", model: "local" }, opts);
export const thinking = (text, opts) => turnFrame("agent_thinking", { text }, opts);
export const delta = (offset, text, opts) => turnFrame("message_delta", { offset, delta: text, emitted_at: 0 }, opts);
export const completed = (status, data = {}, opts) =>
  turnFrame("agent_completed", { status, usage: null, error: null, ...data }, opts);

export function toolExecuting(actionId, data = {}, opts) {
  return turnFrame("tool_executing", { action_id: actionId, call_id: `c${actionId}`, tool: "calculator", input: { expression: "2+3" }, ...data }, opts);
}

export function toolCompleted(actionId, data = {}, opts) {
  const result = { action_id: actionId, call_id: `c${actionId}`, tool: "calculator", status: "success", output: 5, duration_ms: 12 };
  return turnFrame("tool_completed", { ...result, ...data }, opts);
}

export function userMessageEvent(message) {
  return { type: "user_message", thread_id: THREAD, turn_id: message.turn_id, data: { message } };
}

export function refusal(code, turnId) {
  return { type: "error", thread_id: THREAD, code, message: `refused: ${code}`, ...(turnId ? { turn_id: turnId } : {}) };
}

/** `value` and everything in it frozen, so that any change to it throws (ES modules are strict). */
export function deepFreeze(value) {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}
