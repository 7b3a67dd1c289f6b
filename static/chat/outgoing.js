// The frames the chat page sends (docs/protocol.md, "Client to server"), as
// pure functions of their fields, and the check of the server's size limit.

export const MAX_FRAME_BYTES = 8192;

/** A user_message frame; `parent` (an edit: an answer's id, or null) is sent only when given. */
export function userMessageFrame(turnId, content, parent) {
  const frame = { type: "user_message", content, turn_id: turnId };
  if (parent !== undefined) frame.parent_id = parent;
  return frame;
}

export function regenerateFrame(turnId, messageId) {
  return { type: "regenerate", message_id: messageId, turn_id: turnId };
}

export function switchVersionFrame(messageId) {
  return { type: "switch_version", message_id: messageId };
}

/** Whether the server would refuse `frame` as over 8192 bytes of UTF-8. */
export function frameTooLarge(frame) {
  return new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES;
}

/** The user_message frames to send again after a snapshot: those the server has not stored. */
export function pendingFrames(state) {
  return Object.entries(state.pending).map(([turnId, entry]) => userMessageFrame(turnId, entry.content, entry.parent));
}
