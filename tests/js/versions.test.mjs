// Versions on the chat page (static/chat/store.js, outgoing.js, format.js): edit and regenerate frames, "2 / 3", branch changes.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { versionPosition } from "../../static/chat/format.js";
import { pendingFrames, regenerateFrame, switchVersionFrame, userMessageFrame } from "../../static/chat/outgoing.js";
import { addPendingMessage, applyFrame, openThread } from "../../static/chat/store.js";
import { THREAD, answer, deepFreeze, snapshot, started, userMessage, userMessageEvent } from "./frames.mjs";

function apply(state, ...frames) {
  return frames.reduce((current, frame) => applyFrame(deepFreeze(current), deepFreeze(frame)), state);
}

const question = userMessage({ parent_id: null, versions: [10] });
const reply = answer({ status: "completed", content: "hi", parent_id: 10, versions: [11] });

describe("frames to the server", () => {
  test("an edit names its parent, null included; a plain message names none", () => {
    assert.deepEqual(userMessageFrame("t", "x"), { type: "user_message", content: "x", turn_id: "t" });
    assert.equal(userMessageFrame("t", "x", null).parent_id, null);
    assert.equal(userMessageFrame("t", "x", 11).parent_id, 11);
    assert.deepEqual(regenerateFrame("t", 11), { type: "regenerate", message_id: 11, turn_id: "t" });
    assert.deepEqual(switchVersionFrame(11), { type: "switch_version", message_id: 11 });
  });

  test("a pending edit is sent again with its parent after a reconnect", () => {
    const state = addPendingMessage(openThread(THREAD), "t9", "edited", { parent: null });
    assert.deepEqual(pendingFrames(state), [{ type: "user_message", content: "edited", turn_id: "t9", parent_id: null }]);
  });
});

describe("versionPosition", () => {
  test("'2 / 3' with the neighbours; nothing for a message with one version", () => {
    assert.deepEqual(versionPosition({ id: 5, versions: [4, 5, 6] }), { index: 1, count: 3, previous: 4, next: 6 });
    assert.equal(versionPosition({ id: 5, versions: [5] }), null);
    assert.equal(versionPosition({ id: 5 }), null);
  });
});

describe("branch changes", () => {
  test("a user message after the last one held is added; one after an earlier answer asks for a snapshot", () => {
    const held = apply(openThread(THREAD), snapshot([question, reply]));
    const next = apply(held, userMessageEvent(userMessage({ id: 12, seq: 3, turn_id: "t2", parent_id: 11 })));
    assert.equal(next.outOfSync, false);
    assert.deepEqual(next.messages.map((m) => m.id), [10, 11, 12]);
    const edit = apply(held, userMessageEvent(userMessage({ id: 12, seq: 3, turn_id: "t2", parent_id: null })));
    assert.equal(edit.outOfSync, true);
    assert.deepEqual(edit.messages.map((m) => m.id), [10, 11]);
  });

  test("an answer whose question is not held (a regenerate) asks for a snapshot", () => {
    const held = apply(openThread(THREAD), snapshot([question, reply]));
    const state = apply(held, started({ turn: "r1", message: 13 }));
    assert.equal(state.outOfSync, true);
    assert.deepEqual(state.activeTurn, { turn_id: "r1", message_id: 13 });
  });

  test("a snapshot of another path keeps only the earlier messages that lead to it", () => {
    const held = apply(openThread(THREAD), snapshot([question, reply]));
    const other = apply(held, snapshot([userMessage({ id: 14, seq: 4, turn_id: "t3", parent_id: null, versions: [10, 14] })]));
    assert.deepEqual(other.messages.map((m) => m.id), [14]);
    assert.equal(other.hasEarlier, false); // a first message, though its seq is 4
    const later = apply(openThread(THREAD), snapshot([answer({ id: 20, seq: 20, parent_id: 19, versions: [20] })]));
    assert.equal(later.hasEarlier, true);
  });
});
