// Text helpers shared by the chat page and the admin pages. Pure: no DOM, no
// globals, so node's test runner imports them as they are.

/** Length in Unicode code points, as the server counts offsets (Python's len). */
export function cpLen(text) {
  const pairs = text.match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g);
  return text.length - (pairs ? pairs.length : 0);
}

/** `text` without its first `count` code points. */
export function cpSliceFrom(text, count) {
  if (count <= 0) return text;
  if (cpLen(text) === text.length) return text.slice(count);
  return [...text].slice(count).join("");
}

const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** `text` with the characters HTML gives a meaning to written as entities. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

/** A duration for people: "850 ms", "4.2 s", "12 s", "3 min 5 s". */
export function formatDuration(ms) {
  if (ms == null || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** A tool's input or output as text; `indent` spaces per JSON level (0: one line). */
export function formatValue(value, indent = 2) {
  if (value == null) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, indent || undefined);
  } catch {
    return String(value);
  }
}

/** A tool input in a few words: the value of a single plain field, else compact JSON. */
export function inputSummary(input) {
  if (input == null) return "";
  if (typeof input !== "object") return String(input);
  const entries = Object.entries(input);
  if (entries.length === 1 && typeof entries[0][1] !== "object") return String(entries[0][1]);
  return JSON.stringify(input);
}

/** Split the answer into text pieces and tool calls, by each call's code-point position. */
export function answerParts(message) {
  const actions = [...(message.actions || [])].sort((a, b) => (a.position ?? 0) - (b.position ?? 0) || a.id - b.id);
  if (!actions.length) return [{ kind: "text", key: "s0", text: message.content }];
  const points = [...message.content];
  const parts = [];
  let cursor = 0;
  actions.forEach((action, index) => {
    const at = Math.min(Math.max(action.position ?? points.length, cursor), points.length);
    if (at > cursor) parts.push({ kind: "text", key: `s${index}`, text: points.slice(cursor, at).join("") });
    parts.push({ kind: "action", key: `a${action.id}`, action });
    cursor = at;
  });
  if (cursor < points.length) parts.push({ kind: "text", key: `s${actions.length}`, text: points.slice(cursor).join("") });
  return parts;
}

/** A thread's title as shown; an untitled thread is a "New chat". */
export function threadTitle(thread) {
  return (thread?.title || "").trim() || "New chat";
}

/** A title for a new thread from its first message: its first line, at most 60 characters. */
export function titleFrom(content) {
  const line = content.trim().split("\n")[0].trim();
  return line.length > 60 ? `${line.slice(0, 57).trimEnd()}…` : line || "New chat";
}

/** What to tell the user about an `error` frame (a refused client frame). */
export function refusalText(frame) {
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

/** "2 / 3": the message's place among its versions, or null when it has no other version. */
export function versionPosition(message) {
  const versions = message.versions || [];
  const index = versions.indexOf(message.id);
  if (versions.length < 2 || index < 0) return null;
  return { index, count: versions.length, previous: versions[index - 1] ?? null, next: versions[index + 1] ?? null };
}
