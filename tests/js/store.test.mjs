// applyFrame and the other state changes of the chat page (static/chat/store.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  addPendingMessage,
  applyFrame,
  findMessage,
  markNotFound,
  newestStored,
  openThread,
  pendingEntry,
  prependEarlier,
  questionOf,
  setConnection,
  storedMessage,
} from "../../static/chat/store.js";
import { frameTooLarge, pendingFrames } from "../../static/chat/outgoing.js";
import {
  THREAD,
  answer,
  completed,
  deepFreeze,
  delta,
  refusal,
  snapshot,
  started,
  thinking,
  toolCompleted,
  toolExecuting,
  userMessage,
  userMessageEvent,
} from "./frames.mjs";

/** Apply frames in order, each to a frozen state, so that a change in place would throw. */
function apply(state, ...frames) {
  return frames.reduce((current, frame) => applyFrame(deepFreeze(current), deepFreeze(frame)), state);
}

/** The open thread after its snapshot. */
function opened(messages = [], activeTurn = null) {
  return apply(openThread(THREAD), snapshot(messages, activeTurn));
}

const streamingTurn = () => opened([userMessage(), answer()], { turn_id: "t1", message_id: 11 });
const answerOf = (state, id = 11) => findMessage(state, id);

describe("snapshot", () => {
  test("a snapshot replaces the messages and the active turn", () => {
    const before = apply(streamingTurn(), delta(0, "partial "));
    const state = apply(before, snapshot([userMessage(), answer({ status: "completed", content: "all of it" })]));
    assert.deepEqual(state.messages.map((m) => [m.id, m.content]), [[10, "hello"], [11, "all of it"]]);
    assert.equal(state.activeTurn, null);
  });

  test("a snapshot's messages get their length in code points", () => {
    const state = opened([answer({ content: "a😀b" })]);
    assert.equal(answerOf(state).length, 3);
  });

  test("a message keeps the server's error and drops the metadata flags", () => {
    const error = { code: "provider_error", message: "down", retryable: true };
    const state = opened([answer({ status: "failed", metadata: { streaming: false, has_error: true, error } })]);
    assert.deepEqual(answerOf(state).error, error);
    assert.equal("metadata" in answerOf(state), false);
  });

  test("a snapshot starting after seq 1 says there are earlier messages", () => {
    assert.equal(opened([userMessage({ seq: 5 })]).hasEarlier, true);
    assert.equal(opened([userMessage({ seq: 1 })]).hasEarlier, false);
    assert.equal(opened([]).hasEarlier, false);
  });

  test("messages loaded with show-earlier stay before a new snapshot", () => {
    const first = opened([userMessage({ id: 30, seq: 3 })]);
    const withEarlier = prependEarlier(first, [userMessage({ id: 1, seq: 1, content: "oldest" }), userMessage({ id: 30, seq: 3 })]);
    const state = apply(withEarlier, snapshot([userMessage({ id: 30, seq: 3, content: "again" })]));
    assert.deepEqual(state.messages.map((m) => m.id), [1, 30]);
    assert.equal(state.hasEarlier, false);
  });

  test("a snapshot acknowledges pending messages it holds and keeps the others sending, to be sent again", () => {
    let state = opened();
    state = addPendingMessage(state, "stored-turn", "first");
    state = addPendingMessage(state, "lost-turn", "second");
    state = apply(state, snapshot([userMessage({ turn_id: "stored-turn", content: "first" })]));
    assert.deepEqual(state.messages.map((m) => [m.content, m.status]), [["first", "completed"], ["second", "sending"]]);
    assert.deepEqual(Object.keys(state.pending), ["lost-turn"]);
    assert.deepEqual(pendingFrames(state), [{ type: "user_message", content: "second", turn_id: "lost-turn" }]);
  });

  test("a snapshot keeps the thinking line of a message only while it streams", () => {
    let state = apply(streamingTurn(), thinking("Looking it up"), thinking("Still going", { message: 12, turn: "t2" }));
    state = apply(state, snapshot([userMessage(), answer(), answer({ id: 12, seq: 4, status: "completed" })]));
    assert.deepEqual(state.thinking, { 11: "Looking it up" });
  });

  test("a snapshot ends the out-of-sync mark a gap set", () => {
    const gap = apply(streamingTurn(), delta(5, "later"));
    assert.equal(gap.outOfSync, true);
    assert.equal(apply(gap, snapshot([userMessage(), answer({ content: "hello later" })])).outOfSync, false);
  });
});

describe("frames in general", () => {
  test("a frame of another thread changes nothing", () => {
    const state = streamingTurn();
    assert.equal(applyFrame(state, { ...delta(0, "x"), thread_id: THREAD + 1 }), state);
    assert.equal(applyFrame(state, snapshot([], null, THREAD + 1)), state);
  });

  test("frame types the page does not know change nothing", () => {
    const state = streamingTurn();
    for (const type of ["pong", "future_event", "constructor", "__proto__"]) {
      assert.equal(applyFrame(state, { type, thread_id: THREAD }), state, type);
    }
  });

  test("a whole turn leaves the frozen states it went through unchanged", () => {
    const frames = [started(), thinking("…"), toolExecuting(1), toolCompleted(1), delta(0, "5 "), delta(2, "it is"), completed("completed")];
    const state = apply(opened([userMessage()]), ...frames);
    assert.equal(answerOf(state).content, "5 it is");
  });
});

describe("user_message", () => {
  test("the stored message replaces the optimistic one with the same turn_id", () => {
    let state = addPendingMessage(opened(), "t1", "hello", { fromComposer: true });
    assert.equal(state.messages[0].status, "sending");
    state = apply(state, userMessageEvent(userMessage()));
    assert.deepEqual(state.messages.map((m) => [m.id, m.status, Boolean(m.local)]), [[10, "completed", false]]);
    assert.equal(pendingEntry(state, "t1"), null);
  });

  test("a user message held already is not added twice", () => {
    const state = apply(opened([userMessage()]), userMessageEvent(userMessage()));
    assert.equal(state.messages.length, 1);
  });

  test("a user message sent from another tab goes by seq, before this page's optimistic messages", () => {
    let state = addPendingMessage(opened([userMessage(), answer({ status: "completed" })]), "mine", "from here");
    state = apply(state, userMessageEvent(userMessage({ id: 12, seq: 3, turn_id: "other-tab", content: "from there" })));
    assert.deepEqual(state.messages.map((m) => m.content), ["hello", "", "from there", "from here"]);
  });
});

describe("agent_started", () => {
  test("agent_started adds an empty streaming answer after its question and makes the turn active", () => {
    const state = apply(opened([userMessage()]), started());
    assert.deepEqual(
      state.messages.map((m) => [m.id, m.seq, m.role, m.status, m.content]),
      [[10, 1, "user", "completed", "hello"], [11, 2, "assistant", "streaming", ""]],
    );
    assert.deepEqual(state.activeTurn, { turn_id: "t1", message_id: 11 });
  });

  test("agent_started for an answer held already keeps it as it is", () => {
    const before = apply(streamingTurn(), delta(0, "some text"));
    const state = apply(before, started());
    assert.equal(state.messages.length, 2);
    assert.equal(answerOf(state).content, "some text");
  });
});

describe("message_delta", () => {
  test("contiguous deltas append in order", () => {
    const state = apply(streamingTurn(), delta(0, "one "), delta(4, "two "), delta(8, "three"));
    assert.equal(answerOf(state).content, "one two three");
    assert.equal(answerOf(state).length, 13);
  });

  test("a repeated delta changes nothing", () => {
    const before = apply(streamingTurn(), delta(0, "one "), delta(4, "two "));
    assert.equal(applyFrame(before, delta(4, "two ")), before);
    assert.equal(applyFrame(before, delta(0, "one ")), before);
  });

  test("after a reconnect, a delta overlapping the snapshot appends only the part beyond it", () => {
    const state = apply(
      opened([userMessage(), answer({ content: "one two " })], { turn_id: "t1", message_id: 11 }),
      delta(4, "two three "),
      delta(14, "four"),
    );
    assert.equal(answerOf(state).content, "one two three four");
  });

  test("a reconnect mid-answer rebuilds the final content exactly", () => {
    const words = ["alpha ", "beta ", "gamma ", "delta ", "epsilon"];
    const offsets = words.map((_, i) => words.slice(0, i).join("").length);
    let state = apply(streamingTurn(), delta(offsets[0], words[0]), delta(offsets[1], words[1]));
    // The socket drops; the server committed three words by the snapshot, then sends the batch the socket missed.
    state = apply(state, snapshot([userMessage(), answer({ content: words.slice(0, 3).join("") })], { turn_id: "t1", message_id: 11 }));
    state = apply(state, delta(offsets[2], words[2] + words[3]), delta(offsets[4], words[4]), completed("completed"));
    assert.equal(answerOf(state).content, words.join(""));
  });

  test("offsets count an emoji as one code point", () => {
    let state = apply(streamingTurn(), delta(0, "😀 "), delta(2, "ok"));
    assert.equal(answerOf(state).content, "😀 ok");
    assert.equal(answerOf(state).length, 4);
    state = apply(state, delta(3, "k 🎉"), delta(2, "ok 🎉!"));
    assert.equal(answerOf(state).content, "😀 ok 🎉!");
    assert.equal(answerOf(state).length, 7);
  });

  test("a delta overlapping astral characters is cut at a code point, never inside a pair", () => {
    const state = apply(opened([userMessage(), answer({ content: "𝔸𝔹" })]), delta(1, "𝔹ℂ𝔻"));
    assert.equal(answerOf(state).content, "𝔸𝔹ℂ𝔻");
  });

  test("a delta past the content held changes no text and marks the state out of sync", () => {
    const before = apply(streamingTurn(), delta(0, "one "));
    const state = apply(before, delta(9, "three"));
    assert.equal(answerOf(state).content, "one ");
    assert.equal(state.outOfSync, true);
  });

  test("a delta without a numeric offset marks the state out of sync", () => {
    const state = apply(streamingTurn(), turnFrameWithoutOffset());
    assert.equal(state.outOfSync, true);
    assert.equal(answerOf(state).content, "");
  });

  test("a first delta at offset 0 of an answer never announced creates the answer", () => {
    const state = apply(opened([userMessage()]), delta(0, "hi"));
    assert.deepEqual([answerOf(state).seq, answerOf(state).status, answerOf(state).content], [2, "streaming", "hi"]);
  });

  test("a later delta of an answer never announced asks for a snapshot", () => {
    const state = apply(opened([userMessage()]), delta(3, "lo"));
    assert.equal(answerOf(state), null);
    assert.equal(state.outOfSync, true);
  });

  test("new text ends the thinking line", () => {
    const state = apply(streamingTurn(), thinking("Thinking hard"));
    assert.equal(state.thinking[11], "Thinking hard");
    assert.equal(apply(state, delta(0, "x")).thinking[11], undefined);
  });
});

function turnFrameWithoutOffset() {
  const frame = delta(0, "x");
  return { ...frame, data: { delta: "x" } };
}

describe("tool_executing and tool_completed", () => {
  test("tool_executing adds a pending action at the position the server gives", () => {
    const state = apply(streamingTurn(), delta(0, "Let me see. "), toolExecuting(1, { position: 12 }));
    const [action] = answerOf(state).actions;
    assert.deepEqual([action.id, action.tool, action.status, action.position, action.output], [1, "calculator", "pending", 12, null]);
  });

  test("tool_executing without a position places the action at the answer's length", () => {
    const state = apply(streamingTurn(), delta(0, "ab😀"), toolExecuting(1));
    assert.equal(answerOf(state).actions[0].position, 3);
  });

  test("tool_completed after its tool_executing gives the action its result", () => {
    const state = apply(streamingTurn(), toolExecuting(1), toolCompleted(1, { status: "error", output: { error: "1/0" }, duration_ms: 3 }));
    const [action] = answerOf(state).actions;
    assert.deepEqual([action.status, action.output, action.duration_ms, action.input], ["error", { error: "1/0" }, 3, { expression: "2+3" }]);
  });

  test("a repeated tool_executing after tool_completed leaves the action finished", () => {
    const state = apply(streamingTurn(), toolExecuting(1), toolCompleted(1), toolExecuting(1));
    assert.deepEqual(answerOf(state).actions.map((a) => [a.id, a.status]), [[1, "success"]]);
  });

  test("tool_completed of an action never seen starting adds it finished", () => {
    const state = apply(streamingTurn(), delta(0, "abc"), toolCompleted(4));
    const [action] = answerOf(state).actions;
    assert.deepEqual([action.id, action.status, action.output, action.position], [4, "success", 5, 3]);
  });

  test("actions keep the order of their calls, each result on its own action", () => {
    const state = apply(streamingTurn(), toolExecuting(1), toolExecuting(2, { tool: "clock" }), toolCompleted(2, { tool: "clock" }), toolCompleted(1));
    assert.deepEqual(answerOf(state).actions.map((a) => [a.id, a.tool, a.status]), [[1, "calculator", "success"], [2, "clock", "success"]]);
  });

  test("a tool call ends the thinking line", () => {
    const state = apply(streamingTurn(), thinking("Calling the calculator"), toolExecuting(1));
    assert.equal(state.thinking[11], undefined);
  });
});

describe("agent_completed", () => {
  for (const status of ["completed", "cancelled", "failed", "interrupted"]) {
    test(`agent_completed ${status} sets the server's status and ends the active turn`, () => {
      const state = apply(streamingTurn(), delta(0, "text"), completed(status));
      assert.equal(answerOf(state).status, status);
      assert.equal(state.activeTurn, null);
    });
  }

  test("agent_completed derives no flags of its own: no metadata, no cancelled or has_error", () => {
    const state = apply(streamingTurn(), completed("cancelled"));
    const message = answerOf(state);
    for (const key of ["metadata", "cancelled", "has_error", "streaming"]) assert.equal(key in message, false, key);
  });

  test("agent_completed keeps the usage and error the server sent", () => {
    const usage = { model: "local", prompt_tokens: 4, completion_tokens: 3, total_tokens: 7, cost_micros: 0 };
    const error = { code: "provider_error", message: "The model failed.", retryable: true };
    const state = apply(streamingTurn(), completed("failed", { usage, error }));
    assert.deepEqual(answerOf(state).usage, usage);
    assert.deepEqual(answerOf(state).error, error);
  });

  test("agent_completed without usage keeps the usage held", () => {
    const usage = { model: "local", prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, cost_micros: 0 };
    const state = apply(opened([userMessage(), answer({ usage })]), completed("completed"));
    assert.deepEqual(answerOf(state).usage, usage);
  });

  test("agent_completed writes no text of its own: an empty answer's text comes from the server's delta", () => {
    let state = apply(streamingTurn(), completed("completed", { content_length: 0 }));
    assert.equal(answerOf(state).content, "");
    state = apply(streamingTurn(), delta(0, "(no text response)"), completed("completed", { content_length: 18 }));
    assert.equal(answerOf(state).content, "(no text response)");
  });

  test("a tool still pending when the turn ends shows as an error, as the server stores it", () => {
    const state = apply(streamingTurn(), toolExecuting(1), toolExecuting(2), toolCompleted(1), completed("cancelled"));
    assert.deepEqual(answerOf(state).actions.map((a) => a.status), ["success", "error"]);
  });

  test("agent_completed of another turn leaves the active turn running", () => {
    const state = apply(streamingTurn(), completed("completed", {}, { turn: "t0", message: 9 }));
    assert.deepEqual(state.activeTurn, { turn_id: "t1", message_id: 11 });
  });

  test("agent_completed ends the thinking line", () => {
    const state = apply(streamingTurn(), thinking("…"), completed("failed"));
    assert.deepEqual(state.thinking, {});
  });

  test("agent_completed of an answer never announced adds it with its final status", () => {
    const state = apply(opened([userMessage()]), completed("interrupted"));
    assert.deepEqual([answerOf(state).seq, answerOf(state).status], [2, "interrupted"]);
  });
});

describe("error frames", () => {
  test("a refused message leaves the page: its optimistic copy and pending entry go", () => {
    let state = addPendingMessage(opened([userMessage()]), "t2", "too fast", { fromComposer: true });
    state = apply(state, refusal("rate_limited", "t2"));
    assert.deepEqual(state.messages.map((m) => m.id), [10]);
    assert.deepEqual(state.pending, {});
  });

  test("an error frame without a turn_id, or of a turn not sent from here, changes nothing", () => {
    const state = addPendingMessage(opened(), "t2", "waiting");
    assert.equal(applyFrame(state, refusal("invalid_json")), state);
    assert.equal(applyFrame(state, refusal("turn_not_found", "t9")), state);
    assert.equal(applyFrame(state, refusal("turn_not_found", "__proto__")), state);
  });
});

describe("changes the page makes", () => {
  test("a sent message shows at once as sending, last, with its pending entry", () => {
    const state = addPendingMessage(opened([userMessage()]), "t2", "next", { fromComposer: true, autoTitle: true });
    const last = state.messages.at(-1);
    assert.deepEqual([last.id, last.status, last.local, last.content], ["local-t2", "sending", true, "next"]);
    assert.deepEqual(pendingEntry(state, "t2"), { content: "next", fromComposer: true, autoTitle: true });
  });

  test("show-earlier puts older messages first and skips those held", () => {
    const state = prependEarlier(opened([userMessage({ id: 3, seq: 3 })]), [userMessage({ id: 1, seq: 1 }), userMessage({ id: 2, seq: 2 }), userMessage({ id: 3, seq: 3 })]);
    assert.deepEqual(state.messages.map((m) => m.id), [1, 2, 3]);
    assert.equal(state.hasEarlier, false);
  });

  test("the newest stored message ignores optimistic ones; an answer's question is its turn's user message", () => {
    const state = addPendingMessage(opened([userMessage(), answer({ status: "failed" })]), "t2", "again");
    assert.equal(newestStored(state).id, 11);
    assert.equal(questionOf(state, answerOf(state)).id, 10);
    assert.equal(questionOf(state, { turn_id: "unknown" }), null);
  });

  test("a message is found by the string id of a data attribute", () => {
    assert.equal(findMessage(opened([userMessage()]), "10").id, 10);
    assert.equal(findMessage(opened([userMessage()]), "99"), null);
  });

  test("the connection state and a refused thread are recorded", () => {
    assert.equal(setConnection(opened(), "reconnecting").connection, "reconnecting");
    const state = markNotFound(setConnection(opened(), "closed"));
    assert.deepEqual([state.notFound, state.connection], [true, "idle"]);
  });

  test("a new thread's state is empty and in sync", () => {
    assert.deepEqual(openThread(3), {
      threadId: 3,
      messages: [],
      hasEarlier: false,
      activeTurn: null,
      thinking: {},
      pending: {},
      connection: "idle",
      notFound: false,
      outOfSync: false,
    });
  });

  test("a frame over 8192 bytes of UTF-8 is too large, counting bytes, not characters", () => {
    const frame = (content) => ({ type: "user_message", content, turn_id: "t" });
    const overhead = JSON.stringify(frame("")).length;
    assert.equal(frameTooLarge(frame("a".repeat(8192 - overhead))), false);
    assert.equal(frameTooLarge(frame("a".repeat(8193 - overhead))), true);
    assert.equal(frameTooLarge(frame("é".repeat(4100))), true);
  });

  test("a stored message copies the server's fields and counts its length in code points", () => {
    const message = storedMessage(userMessage({ content: "naïve 😀" }));
    assert.deepEqual([message.id, message.seq, message.turn_id, message.length, message.error], [10, 1, "t1", 7, null]);
  });
});
